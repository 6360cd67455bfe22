//! `hokan simulate`: dry runs of the bundled policies in their bundled world, with every fault
//! injected; plugins that break the safety invariants; refusals; bad input.

use crate::cli::text;
use hokan::planner::PluginDir;
use hokan::policy::Policy;
use hokan::runtime::{Limits, Plugin, Runtime};
use hokan::simulate::{self, FaultMode, OpReport, World, report};
use hokan_e2e::hokan_bin;
use hokan_e2e::{MailwiseTree, plugin_dir, repo_root};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

struct Bundled {
    rt: Runtime,
    policy: Policy,
    world: Arc<World>,
    plugin: Plugin,
    _cache: tempfile::TempDir,
}

/// The bundled tokyo-hq policy, its bundled world, and mailwise, loaded once.
fn bundled() -> &'static Bundled {
    static B: OnceLock<Bundled> = OnceLock::new();
    B.get_or_init(|| {
        let (rt, cache) = crate::runtime(Limits::default());
        let policy = Policy::load(&repo_root().join("policies/tokyo-hq.toml")).unwrap();
        let world = World::load(&repo_root().join("policies/worlds/tokyo-hq.toml")).unwrap();
        let plugin = hokan::planner::load_plugin(
            &rt,
            &PluginDir(plugin_dir()),
            &policy,
            policy.job("mailwise").unwrap(),
        )
        .unwrap();
        Bundled {
            rt,
            policy,
            world: Arc::new(world),
            plugin,
            _cache: cache,
        }
    })
}

fn simulate_bundled(job: &str, op: &str, mode: FaultMode) -> OpReport {
    let b = bundled();
    let job = b.policy.job(job).unwrap();
    simulate::simulate_op(&b.rt.bind(&b.plugin), &b.policy, job, op, &b.world, mode)
        .unwrap_or_else(|e| panic!("{op}: {e}"))
}

#[test]
fn transcripts_of_every_mailwise_operation() {
    for (job, op) in [
        ("mailwise", "backup"),
        ("mailwise", "restore"),
        ("mailwise-dr", "restore-elsewhere"),
        ("mailwise", "maintenance-on"),
        ("mailwise", "maintenance-off"),
        ("mailwise", "archive"),
    ] {
        let r = simulate_bundled(job, op, FaultMode::None);
        assert_eq!(r.refused, None, "{op}");
        let normal = &r.scenarios[0];
        assert_eq!(normal.broken().count(), 0, "{}", report::transcript(normal));
        insta::assert_snapshot!(format!("transcript-{op}"), report::transcript(normal));
    }
}

#[test]
fn fault_matrix_of_the_backup_and_the_restore() {
    for op in ["backup", "restore"] {
        let r = simulate_bundled("mailwise", op, FaultMode::EachStep);
        // Every step fails once and crashes once; those with a time limit also time out.
        let steps: Vec<_> = r.scenarios[0].steps.iter().collect();
        assert!(
            r.scenarios.len() > 2 * steps.len(),
            "{}",
            report::matrix(&r)
        );
        assert_eq!(r.broken().count(), 0, "{}", report::matrix(&r));
        insta::assert_snapshot!(format!("matrix-{op}"), report::matrix(&r));
    }
}

#[test]
fn a_crash_during_the_restore_swap_puts_the_previous_data_back() {
    let r = simulate_bundled("mailwise", "restore", FaultMode::EachStep);
    let t = r
        .scenarios
        .iter()
        .find(|t| t.scenario == "crash-after place-data")
        .expect("the scenario exists");
    let ran: Vec<(&str, simulate::StepStatus)> = t
        .steps
        .iter()
        .filter(|s| s.phase == simulate::Phase::Recovery)
        .map(|s| (s.id.as_str(), s.status))
        .collect();
    use simulate::StepStatus::{Ok, Skipped};
    assert_eq!(
        ran,
        [
            ("unplace-data", Ok),
            ("put-back-data", Ok),
            ("put-back-file", Ok),
            ("discard-staging", Ok),
            ("maintenance-off", Ok),
            ("maintenance-off-command", Skipped),
        ],
        "{}",
        report::transcript(t)
    );
}

// ---- The command line ----

fn hokan(cache: &Path, args: &[&str]) -> Output {
    Command::new(hokan_bin())
        .arg("--plugin-dir")
        .arg(plugin_dir())
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env_remove("HOKAN_LOG")
        .output()
        .unwrap()
}

/// A site in a temporary directory: `site.toml` and `worlds/site.toml`.
struct SimSite {
    dir: tempfile::TempDir,
}

impl SimSite {
    fn new(policy: &str, world: &str) -> SimSite {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("site.toml"), policy).unwrap();
        std::fs::create_dir(dir.path().join("worlds")).unwrap();
        std::fs::write(dir.path().join("worlds/site.toml"), world).unwrap();
        SimSite { dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        let policy = self.dir.path().join("site.toml");
        let mut all = vec!["simulate", policy.to_str().unwrap()];
        all.extend_from_slice(args);
        hokan(&self.dir.path().join("cache"), &all)
    }
}

fn careless_policy() -> String {
    format!(
        r#"
[site]
name = "s"

[[servers]]
name = "m1"
role = "mailwise"

[jobs.careless]
plugin = "{}"
backup_root = "backups"
roots = {{ data = "mw-site" }}
commands = {{ maintenance-mode = "/bin/true" }}
"#,
        plugin_dir().join("fixtures/careless.wasm").display()
    )
}

const CARELESS_WORLD: &str = r#"
now = "2026-11-21T02:10:00Z"

[[dir]]
path = "../mw-site"
[dir.files]
"mw/data/a.odb" = "1 MiB"
"mw/file/ws1/1.eml" = "2 KiB"

[[dir]]
path = "../backups/s/careless/20261121T011000Z"
[dir.files]
"data/a.odb" = "1 MiB"
"file/ws1/1.eml" = "2 KiB"
"#;

#[test]
fn a_plugin_that_forgets_maintenance_in_its_cleanup_is_caught() {
    let site = SimSite::new(&careless_policy(), CARELESS_WORLD);
    let out = site.run(&["--op", "backup", "--faults", "each-step", "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scenarios = doc["runs"][0]["scenarios"].as_array().unwrap();
    let broken = |name: &str| -> Vec<String> {
        let t = scenarios
            .iter()
            .find(|t| t["scenario"] == name)
            .unwrap_or_else(|| panic!("no scenario {name}"));
        t["invariants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["held"] == false)
            .map(|i| {
                format!(
                    "{}: {}",
                    i["id"].as_str().unwrap(),
                    i["detail"].as_str().unwrap()
                )
            })
            .collect()
    };
    // The normal run is fine: the mistake shows only when something fails.
    assert!(broken("normal").is_empty());
    assert_eq!(
        broken("fail copy-data"),
        ["hokan:maintenance-released: data:/mw/data/maint still exists"]
    );
    assert_eq!(broken("crash-after copy-file").len(), 1);
    // The failed copy left no half-written set marked complete.
    let t = scenarios
        .iter()
        .find(|t| t["scenario"] == "fail copy-data")
        .unwrap();
    assert_eq!(t["set_complete"], false);
    // The outcome a real run's journal would end with.
    assert_eq!(t["outcome"]["status"], "failed");
    assert_eq!(t["outcome"]["step"], "copy-data");
    assert!(
        t["outcome"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("step `copy-data` failed"),
        "{t:#}"
    );

    // For people: the matrix names the scenario, and the broken scenario's transcript follows.
    let out = site.run(&["--op", "backup", "--faults", "each-step"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("fail copy-data") && stdout.contains("BROKEN: hokan:maintenance-released"),
        "{stdout}"
    );
}

#[test]
fn a_plugin_that_deletes_the_data_before_restoring_is_caught() {
    let site = SimSite::new(&careless_policy(), CARELESS_WORLD);
    let out = site.run(&["--op", "restore"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "BROKEN hokan:previous-data-kept: the data the site had is kept (in place or renamed) \
             at every step (after step `clear-data`, 1 file(s) the site had at the start are \
             gone, neither in place nor renamed: data:/mw/data/a.odb)"
        ),
        "{stdout}"
    );
}

#[test]
fn junit_has_a_test_case_per_scenario() {
    let site = SimSite::new(&careless_policy(), CARELESS_WORLD);
    let junit = site.dir.path().join("out/junit.xml");
    std::fs::create_dir(site.dir.path().join("out")).unwrap();
    let out = site.run(&["--faults", "each-step", "--junit", junit.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml"));
    let cases = xml.matches("<testcase ").count();
    let failures = xml.matches("<failure ").count();
    // backup: 3 steps x 2 + 1 exec... counted from the JSON report of the same run.
    let json = site.run(&["--faults", "each-step", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(cases as u64, doc["summary"]["scenarios"].as_u64().unwrap());
    assert_eq!(failures as u64, doc["summary"]["broken"].as_u64().unwrap());
    assert!(
        xml.contains(r#"<testsuite name="s/careless/restore""#),
        "{xml}"
    );
    assert!(xml.contains(r#"name="fail copy-data""#), "{xml}");
}

fn mailwise_policy() -> &'static str {
    r#"
[site]
name = "s"

[[servers]]
name = "m1"
role = "mailwise"

[jobs.mailwise]
plugin = "mailwise"
backup_root = "backups"
roots = { data = "mw-site" }
commands = { maintenance-mode = "/bin/true", mwsave = "/bin/true" }
"#
}

/// A mailwise world whose data volume has `free` free; mw/data is 1 GiB, the mail 3 GiB.
fn archive_world(free: &str) -> String {
    format!(
        r#"
now = "2026-11-21T02:10:00Z"

[[dir]]
path = "../mw-site"
free = "{free}"
[dir.files]
"mw/data/a.odb" = "512 MiB"
"mw/data/a.odb.mrr" = "512 MiB"
"mw/file/ws1/1.eml" = "3 GiB"
"mwsave" = {{ text = "mwsave, made by mailwise for ws1\n" }}

[[dir]]
path = "../backups/s/mailwise/20261121T011000Z"
[dir.files]
"data/a.odb" = "512 MiB"
"data/a.odb.mrr" = "512 MiB"
"file/ws1/1.eml" = "3 GiB"
"#
    )
}

#[test]
fn the_archive_refuses_without_free_space_and_runs_with_it() {
    // The manual: free space for both twice mw/data (2 GiB) and the mail spaces (3 GiB), so
    // 5 GiB and mailwise's 10 MB. 4 GiB would do for either rule alone: not enough.
    let tight = SimSite::new(mailwise_policy(), &archive_world("4 GiB"));
    let out = tight.run(&["--op", "archive", "--faults", "each-step"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("refused to plan in this world")
            && stdout.contains("archive needs 5379194880 bytes free on the data volume"),
        "{stdout}"
    );
    let roomy = SimSite::new(mailwise_policy(), &archive_world("5140 MiB"));
    let out = roomy.run(&["--op", "archive", "--faults", "each-step"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("every invariant held"));
}

#[test]
fn the_real_tree_can_be_the_world() {
    let site = SimSite::new(mailwise_policy(), "");
    MailwiseTree::default().build(&site.dir.path().join("mw-site"));
    let out = site.run(&["--from-tree", "--op", "backup", "--faults", "each-step"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("+ set:/back10 (2 file(s), 8.0 KiB)"),
        "{}",
        text(&out.stdout)
    );
    // Read-only: nothing was created on disk.
    assert!(!site.dir.path().join("backups").exists());
    assert!(!site.dir.path().join("mw-site/mw/data/maint").exists());
}

/// Asserts `out` exited with `code` and said `needle` on stderr.
fn fails_with(out: &Output, code: i32, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(needle), "wanted {needle:?} in:\n{err}");
}

#[test]
fn bad_input_is_named() {
    let bad_world = SimSite::new(
        mailwise_policy(),
        "now = \"2026-11-21T02:10:00Z\"\n[[dir]]\npath = \"../mw-site\"\nfree = \"plenty\"\n",
    );
    fails_with(
        &bad_world.run(&[]),
        1,
        "worlds/site.toml:4:8: dir[0].free: `plenty` is not a size",
    );

    let site = SimSite::new(mailwise_policy(), &archive_world("4 GiB"));
    fails_with(
        &site.run(&["--job", "nope"]),
        1,
        "no policy has a job `nope`",
    );
    let out = site.run(&["--op", "fly"]);
    fails_with(&out, 1, "jobs.mailwise: mailwise has no operation `fly`");
    fails_with(&out, 1, "site.toml:");
    fails_with(
        &site.run(&["--world", "/nonexistent/world.toml"]),
        1,
        "/nonexistent/world.toml: cannot read the world fixture",
    );
    std::fs::remove_file(site.dir.path().join("worlds/site.toml")).unwrap();
    fails_with(&site.run(&[]), 1, "there is no world to simulate it in");
    fails_with(&site.run(&["--faults", "sometimes"]), 2, "sometimes");
}

/// A standby server where mailwise was installed but has no mail yet: no mw/file at all.
#[test]
fn a_restore_onto_a_fresh_install_without_mail_holds_in_every_scenario() {
    let world = format!(
        "{}\n[[dir]]\npath = \"../mw-site\"\n[dir.files]\n\"mw/data/a.odb\" = \"1 KiB\"\n\"mw/data/a.odb.mrr\" = \"1 KiB\"\n",
        archive_world("4 GiB").replace("path = \"../mw-site\"", "path = \"../mw-old\"")
    );
    let site = SimSite::new(mailwise_policy(), &world);
    let out = site.run(&["--op", "restore-elsewhere", "--faults", "each-step"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(!stdout.contains("keep-file"), "nothing to keep: {stdout}");
    assert!(stdout.contains("place-file"), "{stdout}");

    // No mw/data at all: mailwise is not installed there.
    let bare = SimSite::new(
        mailwise_policy(),
        &archive_world("4 GiB")
            .replace("\"mw/data/a.odb.mrr\" = \"512 MiB\"\n", "")
            .replace("\"mw/data/a.odb\" = \"512 MiB\"\n", ""),
    );
    let out = bare.run(&["--op", "restore"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("install mailwise on this server first"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_restore_refuses_while_an_earlier_one_left_its_staging_directory() {
    let world = archive_world("4 GiB").replace(
        "\"mw/file/ws1/1.eml\" = \"3 GiB\"\n",
        "\"mw/file/ws1/1.eml\" = \"3 GiB\"\n\"mw/hokan-restore/data/a.odb\" = \"1 KiB\"\n",
    );
    let site = SimSite::new(mailwise_policy(), &world);
    let out = site.run(&["--op", "restore"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(
            "data:/mw/hokan-restore exists: an earlier restore stopped before its cleanup ran"
        ),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn worlds_with_files_of_exabytes_neither_panic_nor_wrap() {
    // Every bundled world with each GiB-sized file made 8 EiB: two of them no longer add up in
    // 64 bits. This panicked in the host's tree size; a plugin's sums wrapped.
    let dir = tempfile::tempdir().unwrap();
    let policies = repo_root().join("policies");
    std::fs::create_dir(dir.path().join("worlds")).unwrap();
    for e in std::fs::read_dir(&policies).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let name = p.file_name().unwrap();
            let text = std::fs::read_to_string(&p).unwrap();
            std::fs::write(dir.path().join(name), text).unwrap();
            let world = std::fs::read_to_string(policies.join("worlds").join(name)).unwrap();
            let huge = world
                .lines()
                .map(|l| match l.split_once("= \"") {
                    Some((k, v)) if v.ends_with(" GiB\"") => format!("{k}= \"8 EiB\""),
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(dir.path().join("worlds").join(name), huge).unwrap();
        }
    }
    let tokyo = std::fs::read_to_string(dir.path().join("worlds/tokyo-hq.toml")).unwrap();
    assert!(
        tokyo.contains("\"mw/data/mail.odb\" = \"8 EiB\""),
        "{tokyo}"
    );
    let out = hokan(
        &dir.path().join("cache"),
        &[
            "simulate",
            dir.path().to_str().unwrap(),
            "--faults",
            "each-step",
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Exit 3: the plugins refuse to plan (no medium holds 16 EiB); every other run goes on.
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    // The sums say so instead of wrapping round to a small number that would pass.
    assert!(
        stdout.contains("this backup needs 18446744073709551615"),
        "{stdout}"
    );
}

/// Paths are compared by what they name: the bundled world given by its absolute path finds
/// the same sets as given relatively (it used to say "there is no backup set ... yet").
#[test]
fn a_world_given_by_its_absolute_path_is_the_same_world() {
    let root = hokan_e2e::repo_root();
    let run = |world: &str| {
        let out = std::process::Command::new(hokan_e2e::hokan_bin())
            .current_dir(&root)
            .args([
                "simulate",
                "policies/tokyo-hq.toml",
                "--job",
                "mailwise",
                "--op",
                "archive",
                "--world",
                world,
                "--json",
                "--plugin-dir",
            ])
            .arg(hokan_e2e::plugin_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{world}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        r["runs"][0].clone()
    };
    let absolute = root.join("policies/worlds/tokyo-hq.toml");
    let (a, b) = (
        run("policies/worlds/tokyo-hq.toml"),
        run(absolute.to_str().unwrap()),
    );
    assert!(a["set"].is_string(), "{a:#}");
    assert_eq!(a, b);
}
