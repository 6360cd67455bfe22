//! A throwaway multi-server site whose product commands are the stand-ins of
//! `tests/fixtures/standins/` (all servers local): plans it with a fixed clock, runs `hokan`
//! against it, and reads back the calls and the state the stand-ins recorded.

use crate::cli::text;
use hokan::plan::document::PlanDocument;
use hokan::planner::{self, PlanInput, PluginDir};
use hokan::policy::Policy;
use hokan::runtime::{Limits, Runtime};
use hokan_e2e::{hokan_bin, plugin_dir, repo_root};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

/// 2026-11-21T02:10:00Z, the moment every snapshot plan is made.
const NOW_SECS: u64 = 1_795_227_000;

pub struct StandinSite {
    pub dir: tempfile::TempDir,
}

/// One compile cache for every `hokan` the run tests start.
pub fn cache() -> &'static Path {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// `hokan` for a test site in `dir`: the built plugins, the shared compile cache, the site's own
/// state directory, no inherited log level or test hooks, stand-ins logging to `calls.log`, and
/// no terminal.
pub fn hokan_command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(hokan_bin());
    c.arg("--plugin-dir")
        .arg(plugin_dir())
        .arg("--cache-dir")
        .arg(cache())
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .env_remove("HOKAN_LOG")
        .env_remove("HOKAN_TEST_KILL_AFTER")
        .env_remove("HOKAN_TEST_SPACE_LEFT")
        .env("STANDIN_LOG", dir.join("calls.log"))
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

impl StandinSite {
    /// A site with `policy` (where `{standins}` is the stand-ins' folder) and the stand-ins'
    /// `topology` file ("ROLE NAME [web]" lines).
    pub fn new(policy: &str, topology: &str) -> StandinSite {
        let dir = tempfile::tempdir().unwrap();
        let standins = repo_root().join("tests/fixtures/standins");
        std::fs::write(
            dir.path().join("site.toml"),
            policy.replace("{standins}", &standins.to_string_lossy()),
        )
        .unwrap();
        let site = StandinSite { dir };
        std::fs::create_dir_all(site.path("standins")).unwrap();
        std::fs::write(site.path("standins/topology"), topology).unwrap();
        site
    }

    /// `n` real sshd "servers" for this site, their sessions (so the stand-ins the agent starts)
    /// keeping the stand-ins' state and log where the test reads them, every one's host key
    /// pinned in the site's `known_hosts`, which the policy now names.
    pub fn servers(&self, n: usize) -> Vec<hokan_e2e::sshd::Sshd> {
        let (state, log) = (self.path("standins"), self.path("calls.log"));
        let env = [
            ("STANDIN_STATE", state.as_path()),
            ("STANDIN_LOG", log.as_path()),
        ];
        let servers: Vec<_> = (0..n)
            .map(|_| hokan_e2e::sshd::Sshd::start_with_env(&env))
            .collect();
        let pins: String = servers.iter().map(|s| s.known_hosts_line()).collect();
        std::fs::write(self.path("known_hosts"), pins).unwrap();
        self.edit_policy(&[(
            "timezone = \"Asia/Tokyo\"\n".into(),
            "timezone = \"Asia/Tokyo\"\nknown_hosts = \"known_hosts\"\n".into(),
        )]);
        servers
    }

    /// Replaces, once each, what the site's policy says (`was`) by `is`; each must be there.
    pub fn edit_policy(&self, edits: &[(String, String)]) {
        let mut policy = std::fs::read_to_string(self.policy()).unwrap();
        for (was, is) in edits {
            assert!(policy.contains(was), "the policy has {was}");
            policy = policy.replacen(was, is, 1);
        }
        std::fs::write(self.policy(), policy).unwrap();
    }

    /// `rel` in the site's directory as a root on `server`, in the policy's syntax.
    pub fn on_server(&self, server: &str, rel: &str) -> String {
        format!(
            "{{ server = \"{server}\", path = \"{}\" }}",
            self.path(rel).display()
        )
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn policy(&self) -> PathBuf {
        self.path("site.toml")
    }

    /// Runs `hokan` with this site's state directory and the stand-ins' state and log.
    pub fn hokan(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        hokan_command(self.dir.path(), args, env)
            .env("STANDIN_STATE", self.path("standins"))
            .output()
            .unwrap()
    }

    /// `hokan simulate` of the whole policy in a world scanned from the site, with every
    /// fault, plus `extra` arguments.
    pub fn simulate_each_step(&self, extra: &[&str]) -> Output {
        let policy = self.policy();
        let mut args = vec![
            "simulate",
            policy.to_str().unwrap(),
            "--from-tree",
            "--faults",
            "each-step",
        ];
        args.extend_from_slice(extra);
        self.hokan(&args, &[])
    }

    /// `hokan sets --json` of a job: one row per set directory, with its state.
    pub fn sets_json(&self, job: &str) -> serde_json::Value {
        let policy = self.policy();
        let out = self.hokan(
            &["sets", policy.to_str().unwrap(), "--job", job, "--json"],
            &[],
        );
        ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `hokan run` of a job's operation.
    pub fn run(&self, job: &str, op: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let policy = self.policy();
        let mut args = vec!["run", policy.to_str().unwrap(), "--job", job, "--op", op];
        args.extend_from_slice(extra);
        self.hokan(&args, env)
    }

    /// The calls the stand-ins accepted, as "SERVER: COMMAND ARGS"; fails the test on any call
    /// a stand-in refused (out of order).
    pub fn calls(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.path("calls.log")).unwrap_or_default();
        let refused: Vec<&str> = log.lines().filter(|l| l.contains("REFUSED")).collect();
        assert!(
            refused.is_empty(),
            "a stand-in refused a call:\n{}\n\nall calls:\n{log}",
            refused.join("\n")
        );
        log.lines().map(str::to_string).collect()
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.path("calls.log"));
    }

    /// A stand-in's state value for a server (`0` when never set).
    pub fn state(&self, server: &str, key: &str) -> String {
        std::fs::read_to_string(self.path(&format!("standins/{server}.{key}")))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "0".into())
    }

    /// Fails the test unless every `key` is unset (0) on every server: the product is as it
    /// was before the run.
    pub fn assert_unset(&self, servers: &[impl AsRef<str>], keys: &[&str], context: &str) {
        for s in servers {
            for key in keys {
                assert_eq!(
                    self.state(s.as_ref(), key),
                    "0",
                    "{context}: {key} on {}; calls:\n{}",
                    s.as_ref(),
                    self.calls().join("\n")
                );
            }
        }
    }

    /// The step ids of a job's plan, body (group members included) then cleanup.
    pub fn step_ids(&self, job: &str, op: &str) -> Vec<String> {
        let policy = self.policy();
        let out = self.hokan(
            &[
                "plan",
                policy.to_str().unwrap(),
                "--job",
                job,
                "--op",
                op,
                "--json",
            ],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        step_ids_of(&serde_json::from_slice(&out.stdout).unwrap())
    }

    /// The plan of a job's operation as `hokan plan` prints it, made at a fixed time.
    pub fn plan_text(&self, job: &str, op: &str) -> String {
        render(&self.plan(job, op).expect("plans"))
    }

    /// The plan of a job's operation, made at a fixed time, or why not.
    pub fn plan(&self, job: &str, op: &str) -> Result<PlanDocument, String> {
        let rt = runtime();
        let policy = Policy::load(&self.policy()).map_err(|e| e.to_string())?;
        let job = policy.job(job).map_err(|e| e.to_string())?;
        let plugin = planner::load_plugin(rt, &PluginDir(plugin_dir()), &policy, job)
            .map_err(|e| e.to_string())?;
        let errors: Vec<String> = hokan::lint::check_job(&policy, job, plugin.description())
            .into_iter()
            .filter(|f| f.error)
            .map(|f| f.message)
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        let input = PlanInput {
            operation: op,
            set: None,
            now: UNIX_EPOCH + Duration::from_secs(NOW_SECS),
            links: true,
            window: None,
        };
        planner::plan_job(&rt.bind(&plugin), &policy, job, &input).map_err(|e| e.to_string())
    }

    /// The files below `rel`, relative to it, sorted.
    pub fn files(&self, rel: &str) -> BTreeSet<String> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.insert(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.path(rel), &self.path(rel), &mut out);
        out
    }
}

/// The plan as `hokan plan` prints it, the plugin's version aside (the snapshot is about the
/// steps).
fn render(doc: &PlanDocument) -> String {
    hokan::plan::display::render(doc).replacen(&format!(" {} ", doc.plugin.version), " ", 1)
}

fn runtime() -> &'static Runtime {
    static RT: OnceLock<(Runtime, tempfile::TempDir)> = OnceLock::new();
    &RT.get_or_init(|| crate::runtime(Limits::default())).0
}

/// Checks that `calls` is `phases` in order, where the calls of one phase may come in any
/// order (steps that run at the same time).
pub fn assert_phases(calls: &[String], phases: &[&[&str]]) {
    let mut rest = calls;
    for (i, phase) in phases.iter().enumerate() {
        assert!(
            rest.len() >= phase.len(),
            "phase {} ({phase:?}) is missing; the calls were:\n{}",
            i + 1,
            calls.join("\n")
        );
        let (got, tail) = rest.split_at(phase.len());
        let got: BTreeSet<&str> = got.iter().map(String::as_str).collect();
        let want: BTreeSet<&str> = phase.iter().copied().collect();
        assert_eq!(
            got,
            want,
            "phase {} differs; the calls were:\n{}",
            i + 1,
            calls.join("\n")
        );
        rest = tail;
    }
    assert!(
        rest.is_empty(),
        "calls after the last phase:\n{}",
        rest.join("\n")
    );
}

/// The step ids of a plan document (`hokan plan --json`): body, group members included, then
/// cleanup.
pub fn step_ids_of(doc: &serde_json::Value) -> Vec<String> {
    let mut ids = Vec::new();
    for item in doc["steps"].as_array().unwrap() {
        match item["steps"].as_array() {
            Some(members) => ids.extend(
                members
                    .iter()
                    .map(|s| s["id"].as_str().unwrap().to_string()),
            ),
            None => ids.push(item["id"].as_str().unwrap().to_string()),
        }
    }
    for s in doc["cleanup"].as_array().unwrap() {
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    ids
}

/// The process was killed by the test's kill point.
pub fn killed(out: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(9)
}

/// A successful `hokan` run, or the test fails with its output.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Backup sets are named by the second they start in: waits for the next one.
pub fn wait_for_next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap();
    std::thread::sleep(Duration::from_nanos(
        1_000_000_000 - u64::from(now.subsec_nanos()) + 1_000_000,
    ));
}
