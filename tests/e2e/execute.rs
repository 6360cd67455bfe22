//! `hokan run`, `recover`, `sets` and `verify` against real trees, with mailwise's commands
//! replaced by the stand-in scripts in tests/fixtures/standins (which record their calls).

use crate::cli::text;
use crate::standin_site::{cache, hokan_command, killed, ok, step_ids_of, wait_for_next_second};
use hokan_e2e::hokan_bin;
use hokan_e2e::{MAILWISE_POLICY, MailwiseTree, plugin_dir, repo_root};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A site whose mailwise job runs for real: data in `data/`, a standby in `standby/`, sets in
/// `backups/`, journals in `state/`.
struct RunSite {
    dir: tempfile::TempDir,
}

/// The e2e policy with mailwise's commands mapped to the stand-ins and a retention rule.
fn policy(standins: &Path) -> String {
    let policy = MAILWISE_POLICY
        .replace(
            "/usr/local/bin/mw-maintenance",
            &standins.join("mw-maintenance").to_string_lossy(),
        )
        .replace(
            "/opt/mailwise/mwsave",
            &standins.join("mwsave").to_string_lossy(),
        )
        .replace(
            "backup_root = \"backups\"\n",
            "backup_root = \"backups\"\nretention = { keep_last = 2 }\n",
        );
    assert!(policy.contains("keep_last") && !policy.contains("/usr/local/bin"));
    policy
}

impl RunSite {
    fn new() -> RunSite {
        let dir = tempfile::tempdir().unwrap();
        let standins = repo_root().join("tests/fixtures/standins");
        std::fs::write(dir.path().join("site.toml"), policy(&standins)).unwrap();
        MailwiseTree::default().build(&dir.path().join("data"));
        MailwiseTree {
            mail_spaces: vec![],
            archives: vec![],
            db_bytes: 64,
            ..MailwiseTree::default()
        }
        .build(&dir.path().join("standby"));
        RunSite { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn hokan(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        hokan_command(self.dir.path(), args, env).output().unwrap()
    }

    fn run(&self, job: &str, op: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let policy = self.path("site.toml");
        let mut args = vec!["run", policy.to_str().unwrap(), "--job", job, "--op", op];
        args.extend_from_slice(extra);
        self.hokan(&args, env)
    }

    /// What `hokan sets --json` says of mailwise's sets.
    fn sets_json(&self) -> Vec<serde_json::Value> {
        let policy = self.path("site.toml");
        let out = self.hokan(
            &[
                "sets",
                policy.to_str().unwrap(),
                "--job",
                "mailwise",
                "--json",
            ],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The ids of the sets `hokan sets` lists, with their states.
    fn sets(&self) -> Vec<(String, String)> {
        self.sets_json()
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().unwrap().to_string(),
                    s["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn set_dir(&self, id: &str) -> PathBuf {
        self.path(&format!("backups/test-site/mailwise/{id}"))
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.path("calls.log")).unwrap_or_default()
    }
}

/// Every file and directory below `dir`, with file contents: two equal snapshots mean
/// byte-identical trees.
fn snapshot(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.insert(rel, None);
                walk(base, &p, out);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// The JSON events of a `--json` run.
fn events(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A run given a window (`--window`, as the daemon gives a scheduled one) sets exactly that
/// one in mailwise, the opening that contains now, and its data steps run inside it.
#[test]
fn a_run_given_a_window_sets_that_one() {
    let site = RunSite::new();
    let tz = jiff::tz::db().get(&site_timezone(&site)).unwrap();
    let now = jiff::Timestamp::now().to_zoned(tz);
    // From the last 10-minute step before now to two hours later, in the site's time.
    let start = now.time().minute() as i64 / 10 * 10;
    let hhmm = |h: i64, m: i64| format!("{:02}:{:02}", h.rem_euclid(24), m);
    let (from, until) = (
        hhmm(now.hour() as i64, start),
        hhmm(now.hour() as i64 + 2, start),
    );
    let window = format!("{from}-{until}");
    let out = site.run("mailwise", "backup", &["--window", &window], &[]);
    ok(&out);
    let calls = site.calls();
    assert!(
        calls.starts_with(&format!(
            "mw-maintenance on --start {from} --end {until} --message "
        )),
        "{calls}"
    );
    // One off mailwise's 10-minute steps is refused before anything runs.
    let site = RunSite::new();
    let out = site.run("mailwise", "backup", &["--window", "02:05-04:00"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("10-minute steps"),
        "{}",
        text(&out.stderr)
    );
    assert!(site.calls().is_empty());
}

fn site_timezone(site: &RunSite) -> String {
    let policy = std::fs::read_to_string(site.path("site.toml")).unwrap();
    policy
        .lines()
        .find_map(|l| l.strip_prefix("timezone = "))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "UTC".into())
}

#[test]
fn backup_verify_then_both_restores() {
    let site = RunSite::new();
    let before = snapshot(&site.path("data"));
    let out = site.run("mailwise", "backup", &["--json"], &[]);
    ok(&out);
    let ev = events(&out);
    assert_eq!(ev[0]["record"], "start");
    assert_eq!(ev.last().unwrap()["record"], "finish");
    assert_eq!(ev.last().unwrap()["outcome"]["status"], "completed");
    let done = ev.iter().find(|e| e["record"] == "set-complete").unwrap();
    let first = done["set"].as_str().unwrap().to_string();
    assert_eq!(done["files_linked"], 0);
    // Run without a window, it set one from now for its estimate, in mailwise's steps.
    let calls = site.calls();
    let on: Vec<&str> = calls.split_whitespace().take(6).collect();
    assert_eq!(on[..3], ["mw-maintenance", "on", "--start"], "{calls}");
    assert_eq!(on[4], "--end", "{calls}");
    for t in [on[3], on[5]] {
        assert!(
            t.len() == 5 && t.ends_with('0') && &t[2..3] == ":",
            "{t}: {calls}"
        );
    }
    assert!(!site.path("data/mw/data/maint").exists());
    assert_eq!(
        snapshot(&site.path("data")),
        before,
        "the backup changed the source"
    );
    assert_eq!(site.sets(), [(first.clone(), "good".to_string())]);
    // The set holds what the tree held (with the maintenance marker of the moment).
    let set = site.set_dir(&first);
    assert_eq!(
        std::fs::read(set.join("file/ws2/0001.eml")).unwrap(),
        std::fs::read(site.path("data/mw/file/ws2/0001.eml")).unwrap()
    );
    let out = site.hokan(&["verify", set.to_str().unwrap()], &[]);
    ok(&out);
    assert!(
        text(&out.stdout).starts_with("ok: "),
        "{}",
        text(&out.stdout)
    );

    // A second backup links every unchanged file from the first.
    wait_for_next_second();
    let out = site.run("mailwise", "backup", &["--json"], &[]);
    ok(&out);
    let done = events(&out)
        .into_iter()
        .find(|e| e["record"] == "set-complete")
        .unwrap();
    let second = done["set"].as_str().unwrap().to_string();
    assert_eq!(
        done["files"],
        done["files_linked"].as_u64().unwrap() + 1,
        "only the maintenance marker is new: {done}"
    );
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(&site.set_dir(&first).join("back1/data/mail.odb")),
        ino(&site.set_dir(&second).join("back1/data/mail.odb"))
    );
    ok(&site.hokan(&["verify", site.set_dir(&second).to_str().unwrap()], &[]));

    // Restore over changed data: the set's data comes back, the changed data is kept.
    std::fs::write(
        site.path("data/mw/file/ws1/0000.eml"),
        b"changed after the backup",
    )
    .unwrap();
    let out = site.run("mailwise", "restore", &["--yes"], &[]);
    ok(&out);
    assert!(
        text(&out.stdout).contains("acknowledged with --yes"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read(site.path("data/mw/file/ws1/0000.eml")).unwrap(),
        std::fs::read(site.set_dir(&second).join("file/ws1/0000.eml")).unwrap()
    );
    assert_eq!(
        std::fs::read(site.path("data/mw/file_bak/ws1/0000.eml")).unwrap(),
        b"changed after the backup"
    );
    assert!(!site.path("data/mw/data/maint").exists());
    assert!(!site.path("data/mw/hokan-restore").exists());

    // The standby restores the same job's newest set.
    let out = site.run("standby", "restore-elsewhere", &["--yes"], &[]);
    ok(&out);
    assert_eq!(
        std::fs::read(site.path("standby/mw/data/mail.odb")).unwrap(),
        std::fs::read(site.set_dir(&second).join("data/mail.odb")).unwrap()
    );
    assert!(site.path("standby/mw/back1/data/mail.odb").exists());
    assert!(!site.path("standby/mw/data/maint").exists());
    let calls = site.calls();
    assert_eq!(calls.matches("mw-maintenance on").count(), 4, "{calls}");

    // Retention keeps the last two sets.
    wait_for_next_second();
    ok(&site.run("mailwise", "backup", &[], &[]));
    let ids: Vec<String> = site.sets().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], second);
}

#[test]
fn what_users_change_once_maintenance_ends_is_not_a_change_under_the_backup() {
    use std::os::unix::fs::PermissionsExt;
    // Maintenance mode whose release lets a user write a mail at once, as mailwise's users do:
    // the sources are compared with their copies before the cleanup releases it, so the run
    // does not need attention for what the user did afterwards.
    let site = RunSite::new();
    let real = repo_root().join("tests/fixtures/standins/mw-maintenance");
    let wrapper = site.path("mw-maintenance-then-a-user");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh
set -eu
{} \"$@\"
[ \"$1\" = on ] || exit 0
             setsid sh -c 'i=0; while [ -e mw/data/maint ] && [ $i -lt 2000 ]; do sleep 0.005; \
             i=$((i+1)); done; echo new >> mw/file/ws1/0000.eml; touch user-wrote' \
             </dev/null >/dev/null 2>&1 &
",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = std::fs::read_to_string(site.path("site.toml"))
        .unwrap()
        .replace(&*real.to_string_lossy(), &wrapper.to_string_lossy());
    std::fs::write(site.path("site.toml"), policy).unwrap();
    let out = site.run("mailwise", "backup", &[], &[]);
    let wrote = site.path("data/user-wrote");
    for _ in 0..1000 {
        if wrote.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(wrote.exists(), "the stand-in user never wrote");
    ok(&out);
    assert!(
        !text(&out.stdout).contains("invariant broken"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn no_links_copies_every_file_and_its_space_check_counts_them_all() {
    let site = RunSite::new();
    let backup = |extra: &[&str]| {
        let args: Vec<&str> = ["--json"].iter().chain(extra).copied().collect();
        let out = site.run("mailwise", "backup", &args, &[]);
        ok(&out);
        let ev = events(&out);
        let summary = |step: &str| {
            ev.iter()
                .find(|e| e["record"] == "step-end" && e["step"] == step)
                .unwrap_or_else(|| panic!("no {step} in {ev:#?}"))["summary"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let done = ev.iter().find(|e| e["record"] == "set-complete").unwrap();
        (
            summary("check-space"),
            done["files_linked"].as_u64().unwrap(),
            done["set"].as_str().unwrap().to_string(),
        )
    };
    let (full_space, linked, _) = backup(&[]);
    assert_eq!(linked, 0);
    wait_for_next_second();
    let (incremental_space, linked, incremental) = backup(&[]);
    assert!(linked > 0);
    assert_ne!(incremental_space, full_space, "the links are not counted");
    wait_for_next_second();
    // Told not to link, the backup copies everything, and asks for room for everything.
    let (forced_space, linked, forced) = backup(&["--no-links"]);
    assert_eq!(linked, 0);
    assert_eq!(forced_space, full_space);
    use std::os::unix::fs::MetadataExt;
    let ino = |id: &str| {
        std::fs::metadata(site.set_dir(id).join("back1/data/mail.odb"))
            .unwrap()
            .ino()
    };
    assert_ne!(ino(&incremental), ino(&forced), "the file was linked");
    ok(&site.hokan(&["verify", site.set_dir(&forced).to_str().unwrap()], &[]));
}

#[test]
fn a_corrupted_set_is_reported_and_never_restored() {
    let site = RunSite::new();
    ok(&site.run("mailwise", "backup", &[], &[]));
    let (id, _) = site.sets().remove(0);
    let set = site.set_dir(&id);
    let victim = set.join("file/ws10/0002.eml");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    std::fs::remove_file(set.join("data/config.ini")).unwrap();
    std::fs::write(set.join("data/stray"), b"?").unwrap();
    let out = site.hokan(&["verify", set.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("file/ws10/0002.eml: contents differ from the manifest"),
        "{stdout}"
    );
    assert!(stdout.contains("data/config.ini: missing"), "{stdout}");
    assert!(stdout.contains("data/stray: extra"), "{stdout}");
    // The flipped byte moved the file's mtime, and the two changes moved data/'s.
    assert!(
        stdout.contains("file/ws10/0002.eml: has mtime") && stdout.contains("data: has mtime"),
        "{stdout}"
    );
    assert!(stdout.contains("5 problem(s)"), "{stdout}");

    let before = snapshot(&site.path("data"));
    let out = site.run("mailwise", "restore", &["--yes"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no backup set in")
            && text(&out.stderr).contains("matches its manifest"),
        "{}",
        text(&out.stderr)
    );
    let out = site.run("mailwise", "restore", &["--yes", "--set", &id], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not match its manifest"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(snapshot(&site.path("data")), before);
}

/// `hokan plan` and `hokan run` choose a restore's set with the one rule: the newest that
/// verifies. A damaged newest set is passed over by both, so the plan shown is the plan run.
#[test]
fn the_plan_shown_reads_the_set_the_run_reads() {
    let site = RunSite::new();
    ok(&site.run("mailwise", "backup", &[], &[]));
    wait_for_next_second();
    // Copied afresh, so that damaging the newer set leaves the older one whole.
    ok(&site.run("mailwise", "backup", &["--no-links"], &[]));
    let sets = site.sets();
    let (older, newer) = (sets[0].0.clone(), sets[1].0.clone());
    let victim = site.set_dir(&newer).join("file/ws10/0002.eml");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    let policy = site.path("site.toml");
    let plan = site.hokan(
        &[
            "plan",
            policy.to_str().unwrap(),
            "--job",
            "mailwise",
            "--op",
            "restore",
            "--json",
        ],
        &[],
    );
    ok(&plan);
    let doc: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(
        doc["set"],
        older.as_str(),
        "the plan reads the set that verifies"
    );
    let out = site.run("mailwise", "restore", &["--yes", "--json"], &[]);
    ok(&out);
    assert!(
        text(&out.stderr).contains(&format!("passed over the backup set {newer}")),
        "{}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let start: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["record"] == "start")
        .unwrap_or_else(|| panic!("a start record: {stdout}"));
    assert_eq!(start["document"]["set"], older.as_str(), "{start:#}");
}

/// The step ids of an operation's plan: body (group members in place) and cleanup.
fn step_ids(site: &RunSite, job: &str, op: &str) -> Vec<String> {
    let policy = site.path("site.toml");
    let out = site.hokan(
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
    ok(&out);
    step_ids_of(&serde_json::from_slice(&out.stdout).unwrap())
}

/// After a recovery: every listed good set matches its manifest, and nothing partial is left.
fn sets_are_sound(site: &RunSite) {
    for (id, state) in site.sets() {
        assert_eq!(state, "good", "{id} is listed as {state}");
        ok(&site.hokan(&["verify", site.set_dir(&id).to_str().unwrap()], &[]));
    }
}

#[test]
fn a_backup_killed_after_any_step_is_recovered() {
    let site = RunSite::new();
    let ids = step_ids(&site, "mailwise", "backup");
    assert!(ids.len() >= 10, "{ids:?}");
    let before = snapshot(&site.path("data"));
    let mut partials_seen = 0;
    for (n, step) in ids.iter().enumerate() {
        let out = site.run(
            "mailwise",
            "backup",
            &[],
            &[("HOKAN_TEST_KILL_AFTER", step)],
        );
        assert!(killed(&out), "{step}: not killed: {}", text(&out.stderr));
        // The dead run's partial set is listed as the one `hokan recover` removes.
        for (id, state) in site.sets() {
            if state.starts_with("partial") {
                assert_eq!(state, "partial", "{step}: {id}");
                partials_seen += 1;
            }
        }
        if n == 0 {
            // Nothing runs on the instance until the dead run is recovered.
            let out = site.run("mailwise", "backup", &[], &[]);
            assert_eq!(out.status.code(), Some(1), "{step}");
            assert!(
                text(&out.stderr).contains("hokan recover"),
                "{}",
                text(&out.stderr)
            );
        }
        let out = site.hokan(&["recover", "--yes"], &[]);
        ok(&out);
        assert!(
            text(&out.stdout).contains("recovered: the run had died after"),
            "{step}: {}",
            text(&out.stdout)
        );
        assert!(
            !site.path("data/mw/data/maint").exists(),
            "{step}: still in maintenance mode"
        );
        assert_eq!(
            snapshot(&site.path("data")),
            before,
            "{step}: the source changed"
        );
        sets_are_sound(&site);
        let partial: Vec<_> = std::fs::read_dir(site.path("backups/test-site/mailwise"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        assert!(partial.is_empty(), "{step}: partial sets left: {partial:?}");
        let again = site.hokan(&["recover"], &[]);
        assert!(
            text(&again.stdout).starts_with("nothing to recover"),
            "{step}"
        );
        wait_for_next_second();
    }
    // Every kill after the partial set was made left one.
    assert!(
        partials_seen >= ids.len() / 2,
        "{partials_seen} of {}",
        ids.len()
    );
}

#[test]
fn a_restore_killed_after_any_step_is_recovered() {
    let probe = RunSite::new();
    MailwiseTree::default().build_set(&probe.set_dir("20261121T011000Z"));
    let ids = step_ids(&probe, "mailwise", "restore");
    assert!(ids.len() >= 15, "{ids:?}");
    for step in &ids {
        let site = RunSite::new();
        // The data changed since the set was taken; the set is what is restored.
        std::fs::write(site.path("data/mw/file/ws1/0000.eml"), b"newer mail").unwrap();
        let set = site.set_dir("20261121T011000Z");
        MailwiseTree::default().build_set(&set);
        let set_before = snapshot(&set);
        let data_before = snapshot(&site.path("data/mw"));
        let out = site.run(
            "mailwise",
            "restore",
            &["--yes"],
            &[("HOKAN_TEST_KILL_AFTER", step)],
        );
        assert!(killed(&out), "{step}: not killed: {}", text(&out.stderr));
        ok(&site.hokan(&["recover", "--yes"], &[]));
        assert!(
            !site.path("data/mw/data/maint").exists(),
            "{step}: still in maintenance mode"
        );
        assert!(
            !site.path("data/mw/hokan-restore").exists(),
            "{step}: staging left"
        );
        assert_eq!(snapshot(&set), set_before, "{step}: the set changed");
        sets_are_sound(&site);
        // Nothing of the previous data is lost: each of its files is at its place or in the
        // `_bak` copy beside it.
        let now = snapshot(&site.path("data/mw"));
        for (path, contents) in &data_before {
            let Some(contents) = contents else { continue };
            if path == "data/maint" {
                continue;
            }
            let (top, rest) = path.split_once('/').unwrap();
            let kept = [path.clone(), format!("{top}_bak/{rest}")];
            assert!(
                kept.iter()
                    .any(|k| now.get(k) == Some(&Some(contents.clone()))),
                "{step}: {path} was lost"
            );
        }
        assert!(
            site.path("data/mw/data/mail.odb").exists(),
            "{step}: no database in place"
        );
    }
}

#[test]
fn a_full_destination_fails_cleanly() {
    let site = RunSite::new();
    let before = snapshot(&site.path("data"));
    let out = site.run(
        "mailwise",
        "backup",
        &[],
        &[("HOKAN_TEST_SPACE_LEFT", "10000")],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("No space left on device"), "{stdout}");
    assert!(stdout.contains("cleanup  maintenance-off"), "{stdout}");
    assert!(!site.path("data/mw/data/maint").exists());
    assert_eq!(snapshot(&site.path("data")), before);
    assert!(site.sets().is_empty(), "{:?}", site.sets());
    assert_eq!(
        std::fs::read_dir(site.path("backups/test-site/mailwise"))
            .unwrap()
            .count(),
        0,
        "the partial set is left"
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs with these options at `at`, when this process may (root, and a kernel
    /// that lets it); `None` otherwise.
    fn mount(at: &Path, options: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc_geteuid() } != 0 {
            return None;
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_really_full_destination_fails_cleanly() {
    // The backup medium has room for the bytes (so the plan's space check passes) but for only
    // a few files: the copy hits the kernel's ENOSPC half way.
    let site = RunSite::new();
    let Some(_fs) = Tmpfs::mount(&site.path("backups"), "size=64m,nr_inodes=12") else {
        eprintln!(
            "skipped: mounting a tmpfs needs root; a_full_destination_fails_cleanly covers ENOSPC through the test seam"
        );
        return;
    };
    let before = snapshot(&site.path("data"));
    let out = site.run("mailwise", "backup", &[], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("No space left on device"), "{stdout}");
    assert!(!site.path("data/mw/data/maint").exists());
    assert_eq!(snapshot(&site.path("data")), before);
    assert!(site.sets().is_empty(), "{:?}", site.sets());
    let left: Vec<_> = std::fs::read_dir(site.path("backups/test-site/mailwise"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "the partial set is left: {left:?}");
}

#[test]
fn bad_roots_and_missing_executables_stop_before_anything_runs() {
    let site = RunSite::new();
    let policy = site.path("site.toml");
    let original = std::fs::read_to_string(&policy).unwrap();
    let before = snapshot(&site.path("data"));
    let nothing_ran = |what: &str| {
        assert_eq!(snapshot(&site.path("data")), before, "{what}");
        assert!(!site.path("calls.log").exists(), "{what}: a command ran");
        assert!(!site.path("backups").exists(), "{what}: a set was started");
    };

    // Each change to the policy is refused with exit 1 before anything runs; the error, on
    // stderr, is returned.
    let refused = |from: &str, to: &str, what: &str| -> String {
        std::fs::write(&policy, original.replace(from, to)).unwrap();
        let out = site.run("mailwise", "backup", &[], &[]);
        assert_eq!(out.status.code(), Some(1), "{what}");
        nothing_ran(what);
        text(&out.stderr)
    };

    let e = refused("mw-maintenance\"", "mw-maintenanse\"", "missing executable");
    assert!(
        e.contains("jobs.mailwise.commands.maintenance-mode:")
            && e.contains("mw-maintenanse is not an executable file"),
        "{e}"
    );
    let e = refused("data = \"data\"", "data = \"nowhere\"", "missing root");
    assert!(
        e.contains("jobs.mailwise.roots") && e.contains("nowhere"),
        "{e}"
    );
    std::fs::write(site.path("a-file"), b"").unwrap();
    let e = refused("data = \"data\"", "data = \"a-file\"", "root is a file");
    assert!(e.contains("a-file"), "{e}");

    // Unreadable for anyone but root (root reads everything, so this part needs another user).
    if unsafe { libc_geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&policy, &original).unwrap();
        std::fs::set_permissions(
            site.path("data/mw/file"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        let out = site.run("mailwise", "backup", &[], &[]);
        std::fs::set_permissions(
            site.path("data/mw/file"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_ne!(out.status.code(), Some(0));
        assert!(
            text(&out.stdout).contains("Permission denied")
                || text(&out.stderr).contains("Permission denied")
        );
        assert!(!site.path("data/mw/data/maint").exists());
        assert!(site.sets().is_empty());
    }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn a_manual_gate_without_a_terminal_stops_and_cleans_up() {
    let site = RunSite::new();
    MailwiseTree::default().build_set(&site.set_dir("20261121T011000Z"));
    let out = site.run("mailwise", "restore", &[], &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("WAITING")
            && stdout.contains("waiting for the operator at `check-in-browser`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stopped at the manual step `check-in-browser`"),
        "{stdout}"
    );
    assert!(!site.path("data/mw/data/maint").exists());
}

#[test]
fn one_run_per_instance_and_a_dead_holder_leaves_no_lock() {
    let site = RunSite::new();
    std::fs::create_dir_all(site.path("state/locks")).unwrap();
    let lock = site.path("state/locks/test-site.mailwise.mw1.lock");
    // This test process holds the instance's kernel lock, as a running hokan would.
    let held = std::fs::File::create(&lock).unwrap();
    held.lock().unwrap();
    std::fs::write(&lock, format!("{}\nrun-42\n", std::process::id())).unwrap();
    let out = site.run("mailwise", "backup", &[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("test-site.mailwise.mw1 is busy: run run-42"),
        "{}",
        text(&out.stderr)
    );
    // A recovery meanwhile is no error: a live run is not the recovery's to finish.
    let out = site.hokan(&["recover"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    // The standby is another instance.
    MailwiseTree::default().build_set(&site.set_dir("20261121T011000Z"));
    ok(&site.run("standby", "restore-elsewhere", &["--yes"], &[]));
    // A holder that is gone (killed, power cut) holds nothing, whatever its file says: the
    // kernel released its lock.
    drop(held);
    std::fs::write(&lock, "999999\nrun-0\n").unwrap();
    ok(&site.run("mailwise", "backup", &[], &[]));
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        "",
        "the holder's lines are cleared"
    );
}

#[test]
fn a_manual_gate_on_a_terminal_asks_until_answered() {
    // `script` (util-linux) gives hokan a terminal; what is piped to it is what the operator types.
    let site = RunSite::new();
    MailwiseTree::default().build_set(&site.set_dir("20261121T011000Z"));
    let policy = site.path("site.toml");
    let line = format!(
        "{} --plugin-dir {} --cache-dir {} --state-dir {} run {} --job mailwise --op restore",
        hokan_bin().display(),
        plugin_dir().display(),
        cache().display(),
        site.path("state").display(),
        policy.display()
    );
    let answer = |typed: &str| {
        let mut child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("STANDIN_LOG", site.path("calls.log"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script(1) from util-linux runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(typed.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = answer("stop\n");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stdout));
    let shown = text(&out.stdout);
    assert!(shown.contains("MANUAL STEP `check-in-browser`"), "{shown}");
    assert!(
        shown.contains("the operator stopped at the manual step"),
        "{shown}"
    );
    // The restore itself was done before the gate; move the kept data away to restore again.
    for d in ["data_bak", "file_bak"] {
        std::fs::remove_dir_all(site.path(&format!("data/mw/{d}"))).unwrap();
    }
    let out = answer("not yet\ndone\n");
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert_eq!(
        shown.matches("Type `done` when it is done").count(),
        2,
        "{shown}"
    );
    assert!(shown.contains("confirmed on the terminal"), "{shown}");
}

/// Every entry below `dir`, by path bytes: kind, mode, uid:gid, size, mtime (ns), link target,
/// link count, extended attributes and a hash of the contents (sockets left out: they are not
/// copied, by design, and each is named in a warning).
fn listing(dir: &Path) -> BTreeMap<Vec<u8>, String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            if ft.is_socket() {
                continue;
            }
            let rel = p
                .strip_prefix(base)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let parent = rustix_dir(p.parent().unwrap());
            let xattrs = hokan::tree::meta::xattrs_at(
                std::os::fd::AsFd::as_fd(&parent),
                p.file_name().unwrap().as_bytes(),
            )
            .unwrap();
            let contents = if ft.is_file() {
                // sha256sum streams (the sparse file is large) and is not hokan's own code.
                let out = Command::new("sha256sum").arg(&p).output().unwrap();
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .next()
                    .unwrap_or("?")
                    .to_string()
            } else if ft.is_symlink() {
                format!("-> {:?}", std::fs::read_link(&p).unwrap())
            } else {
                String::new()
            };
            let nlink = if ft.is_dir() { 0 } else { m.nlink() };
            out.insert(
                rel,
                format!(
                    "{:?} {:o} {}:{} {} {}.{} nlink {nlink} {xattrs:?} {contents}",
                    ft,
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    if ft.is_dir() { 0 } else { m.size() },
                    m.mtime(),
                    m.mtime_nsec(),
                ),
            );
            if ft.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn rustix_dir(p: &Path) -> std::fs::File {
    std::fs::File::open(p).unwrap()
}

#[test]
fn damage_in_a_set_does_not_spread_and_quiet_changes_are_backed_up() {
    use std::os::unix::fs::PermissionsExt;
    let site = RunSite::new();
    ok(&site.run("mailwise", "backup", &[], &[]));
    let (first, _) = site.sets().remove(0);
    // A byte flipped in the first set's copy.
    let damaged = site.set_dir(&first).join("file/ws10/0002.eml");
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&damaged, bytes).unwrap();
    // A source file rewritten by an application that puts size and mtime back.
    let quiet = site.path("data/mw/file/ws10/0001.eml");
    let meta = std::fs::metadata(&quiet).unwrap();
    let mut changed = std::fs::read(&quiet).unwrap();
    changed[0] ^= 0x20;
    std::fs::write(&quiet, &changed).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&quiet)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    // A mode-only change.
    let chmodded = site.path("data/mw/data/config.ini");
    std::fs::set_permissions(&chmodded, std::fs::Permissions::from_mode(0o600)).unwrap();

    wait_for_next_second();
    let out = site.run("mailwise", "backup", &[], &[]);
    ok(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .contains("file/ws10/0002.eml: the previous set's copy no longer matches its manifest"),
        "the run does not say the damaged copy was copied afresh: {stdout}"
    );
    let second = site.sets().pop().unwrap().0;
    let set = site.set_dir(&second);
    let verify = site.hokan(&["verify", set.to_str().unwrap()], &[]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
    assert_eq!(
        std::fs::read(set.join("file/ws10/0002.eml")).unwrap(),
        std::fs::read(site.path("data/mw/file/ws10/0002.eml")).unwrap()
    );
    assert_eq!(
        std::fs::read(set.join("file/ws10/0001.eml")).unwrap(),
        changed
    );
    let mode = std::fs::metadata(set.join("data/config.ini"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
    // The first set still fails verify: it was damaged, and is reported, not hidden.
    let verify = site.hokan(&["verify", site.set_dir(&first).to_str().unwrap()], &[]);
    assert_eq!(verify.status.code(), Some(4));
}

#[test]
fn a_clock_behind_the_newest_set_or_a_planted_partial_refuses_the_backup() {
    let site = RunSite::new();
    MailwiseTree::default().build_set(&site.set_dir("29991231T000000Z"));
    let out = site.run("mailwise", "backup", &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("the clock is behind the newest backup set"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(site.sets().len(), 1);
    assert!(!site.path("data/mw/data/maint").exists());
    std::fs::remove_dir_all(site.set_dir("29991231T000000Z")).unwrap();

    // Partials planted for the next few seconds, holding a file to inject.
    let now = std::time::SystemTime::now();
    let planted: Vec<PathBuf> = (0..5)
        .map(|s| {
            let id = hokan::sets::id_at(now + std::time::Duration::from_secs(s));
            let p = site.path(&format!("backups/test-site/mailwise/.{id}.partial"));
            std::fs::create_dir_all(p.join("data")).unwrap();
            std::fs::write(p.join("data/injected"), b"evil").unwrap();
            p
        })
        .collect();
    let out = site.run("mailwise", "backup", &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    // Whichever check meets it first (a partial of a later second counts as a newer set),
    // the planted partial is never filled and never completed.
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("already exists and is not this run's")
            || stderr.contains("the clock is behind the newest backup set"),
        "{stderr}"
    );
    // No run is writing them and recovery will not remove them: listed as left.
    assert!(
        site.sets().iter().all(|(_, state)| state == "partial-left"),
        "a set was completed from a planted partial: {:?}",
        site.sets()
    );
    assert!(planted.iter().all(|p| p.join("data/injected").exists()));
    assert!(!site.path("data/mw/data/maint").exists());
    let out = site.hokan(&["recover"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn every_kind_of_entry_and_its_metadata_comes_back_from_a_restore() {
    use std::os::unix::ffi::OsStrExt;
    let site = RunSite::new();
    let ws = site.path("data/mw/file/ws10");
    // Shift_JIS and EUC-JP names, a backslash, hard links across directories, a symlink, a
    // FIFO, a socket, a sparse file, extended attributes, owners and a set-gid directory.
    let sjis = ws.join(std::ffi::OsStr::from_bytes(b"\x83e\x83X\x83g.eml"));
    std::fs::write(&sjis, b"sjis").unwrap();
    let euc = ws.join(std::ffi::OsStr::from_bytes(b"\xa5\xc6\xa5\xb9\xa5\xc8"));
    std::fs::create_dir(&euc).unwrap();
    std::fs::write(euc.join("a\\b"), b"backslash").unwrap();
    std::fs::hard_link(&sjis, euc.join("same-inode")).unwrap();
    std::os::unix::fs::symlink("../0001.eml", euc.join("link")).unwrap();
    // An archive moved to another volume and linked: kept as a link, and named in a warning.
    std::os::unix::fs::symlink("/mnt/archive/ws10-old", ws.join("moved")).unwrap();
    let status = Command::new("mkfifo")
        .arg(ws.join("pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    let _sock = std::os::unix::net::UnixListener::bind(ws.join("sock")).unwrap();
    let sparse = std::fs::File::create(ws.join("sparse.odb")).unwrap();
    // 1 GiB here; the 5 GiB figure is the benchmark's.
    sparse.set_len(1 << 30).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"tail", (1 << 30) - 4).unwrap();
    drop(sparse);
    let failed = hokan::tree::meta::set_xattrs_at(
        std::os::fd::AsFd::as_fd(&rustix_dir(&ws)),
        sjis.file_name().unwrap().as_bytes(),
        &hokan::tree::Xattrs::from([(
            hokan::tree::Bytes::from("user.hokan"),
            hokan::tree::Bytes(b"kept\xff".to_vec()),
        )]),
    );
    assert!(failed.is_empty(), "{failed:?}");
    // A POSIX ACL on the EUC-JP directory (what `setfacl -m u:1234:r` writes): user::rwx,
    // user:1234:r--, group::r-x, mask::r-x, other::---.
    let entry = |tag: u16, perm: u16, id: u32| {
        [
            tag.to_le_bytes().as_slice(),
            &perm.to_le_bytes(),
            &id.to_le_bytes(),
        ]
        .concat()
    };
    let acl = [
        2u32.to_le_bytes().to_vec(),
        entry(0x01, 7, u32::MAX),
        entry(0x02, 4, 1234),
        entry(0x04, 5, u32::MAX),
        entry(0x10, 5, u32::MAX),
        entry(0x20, 0, u32::MAX),
    ]
    .concat();
    let failed = hokan::tree::meta::set_xattrs_at(
        std::os::fd::AsFd::as_fd(&rustix_dir(&ws)),
        euc.file_name().unwrap().as_bytes(),
        &hokan::tree::Xattrs::from([(
            hokan::tree::Bytes::from("system.posix_acl_access"),
            hokan::tree::Bytes(acl),
        )]),
    );
    assert!(
        failed.is_empty(),
        "the test filesystem keeps no ACLs: {failed:?}"
    );
    if unsafe_geteuid() == 0 {
        // `/dev/zero`'s kind: never opened (it reads without end), re-created as a device.
        let status = Command::new("mknod")
            .arg(ws.join("zero"))
            .args(["c", "1", "5"])
            .status()
            .unwrap();
        assert!(status.success());
        std::os::unix::fs::chown(&sjis, Some(1234), Some(2345)).unwrap();
        std::os::unix::fs::lchown(euc.join("link"), Some(1234), Some(1234)).unwrap();
    }
    std::fs::set_permissions(&euc, std::os::unix::fs::PermissionsExt::from_mode(0o2750)).unwrap();
    let before = listing(&site.path("data/mw/file"));
    // What `rsync -aHAXS` (Debian's, installed by `cargo xtask test`) keeps of the same tree.
    let rsynced = site.path("rsync-copy");
    let status = Command::new("rsync")
        .arg("-aHAXS")
        .arg(format!("{}/", site.path("data/mw/file").display()))
        .arg(&rsynced)
        .status()
        .expect("rsync runs (`cargo xtask test` installs Debian's rsync)");
    assert!(status.success());
    let by_rsync = listing(&rsynced);

    let out = site.run("mailwise", "backup", &[], &[]);
    ok(&out);
    assert!(
        text(&out.stderr).contains(
            "warning: data:/mw/file/ws10/moved is a symbolic link to /mnt/archive/ws10-old, which is outside the root `data`"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("ws10/sock: a socket is not copied"),
        "the socket is not named: {}",
        text(&out.stdout)
    );
    let (id, _) = site.sets().remove(0);
    let set = site.set_dir(&id);
    let used = std::fs::metadata(set.join("file/ws10/sparse.odb")).unwrap();
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&used) * 512 < 1 << 20,
        "the sparse file is not sparse in the set"
    );
    let verify = site.hokan(&["verify", set.to_str().unwrap()], &[]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));

    ok(&site.run("mailwise", "restore", &["--yes"], &[]));
    // The kept data can be put back as the advice says without leaving maintenance on.
    assert!(site.path("data/mw/data_bak").is_dir());
    assert!(!site.path("data/mw/data_bak/maint").exists());
    let after = listing(&site.path("data/mw/file"));
    // hokan keeps at least everything rsync keeps: every entry rsync brought back exactly,
    // hokan's restore brings back exactly too.
    let kept_by_rsync: Vec<&Vec<u8>> = before
        .iter()
        .filter(|(p, line)| by_rsync.get(*p) == Some(line))
        .map(|(p, _)| p)
        .collect();
    assert!(kept_by_rsync.len() > 10, "{by_rsync:#?}");
    for p in kept_by_rsync {
        assert_eq!(
            after.get(p),
            before.get(p),
            "rsync -aHAXS kept {} as it was; hokan did not",
            String::from_utf8_lossy(p)
        );
    }
    for (path, want) in &before {
        assert_eq!(
            after.get(path),
            Some(want),
            "{} differs after the restore",
            String::from_utf8_lossy(path)
        );
    }
    assert_eq!(before.len(), after.len(), "{after:#?}");
}

fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc_geteuid() }
}

#[test]
fn a_real_run_that_leaves_maintenance_on_needs_attention() {
    use std::os::unix::fs::PermissionsExt;
    // The careless fixture releases maintenance mode as the body's last step, not in its
    // cleanup: a copy that fails leaves the product in maintenance mode. The simulator finds
    // that in a dry run; the real run must say it too, with exit 4, not just "failed".
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("mw-site/mw/data")).unwrap();
    std::fs::create_dir_all(d.join("mw-site/mw/file/ws1")).unwrap();
    std::fs::write(d.join("mw-site/mw/data/a.odb"), vec![1u8; 4096]).unwrap();
    std::fs::write(d.join("mw-site/mw/file/ws1/1.eml"), b"mail").unwrap();
    let script = d.join("maintenance-mode");
    std::fs::write(&script, "#!/bin/sh\ntouch mw/data/maint\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        d.join("site.toml"),
        format!(
            "[site]\nname = \"s\"\n\n[jobs.careless]\nplugin = \"{}\"\nbackup_root = \"backups\"\n\
             roots = {{ data = \"mw-site\" }}\ncommands = {{ maintenance-mode = \"{}\" }}\n",
            plugin_dir().join("fixtures/careless.wasm").display(),
            script.display()
        ),
    )
    .unwrap();
    let policy = d.join("site.toml");
    let backup = |env: &[(&str, &str)]| {
        let args = [
            "run",
            policy.to_str().unwrap(),
            "--job",
            "careless",
            "--op",
            "backup",
        ];
        hokan_command(d, &args, env).output().unwrap()
    };
    let out = backup(&[("HOKAN_TEST_SPACE_LEFT", "100")]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("invariant broken: hokan:maintenance-released")
            && stdout.contains("data:/mw/data/maint still exists"),
        "{stdout}"
    );
    // The same plan, when nothing fails, releases it: no attention.
    std::fs::remove_file(d.join("mw-site/mw/data/maint")).unwrap();
    let out = backup(&[]);
    ok(&out);
    assert!(
        !text(&out.stdout).contains("invariant broken"),
        "{}",
        text(&out.stdout)
    );
}

/// The unfinished journal of the site's instance, and its lines.
fn journal_of(site: &RunSite) -> (PathBuf, Vec<serde_json::Value>) {
    let runs = site.path("state/runs");
    let path = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .expect("an unfinished journal");
    let lines = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (path, lines)
}

fn rewrite(path: &Path, lines: &[serde_json::Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn recovery_runs_what_the_policy_maps_never_what_a_journal_says() {
    let site = RunSite::new();
    let killed_run = |site: &RunSite| {
        let out = site.run(
            "mailwise",
            "backup",
            &[],
            &[("HOKAN_TEST_KILL_AFTER", "maintenance-on")],
        );
        assert!(killed(&out), "not killed: {}", text(&out.stderr));
        assert!(site.path("data/mw/data/maint").exists());
    };
    // A journal whose mapping was changed to a shell: the policy's program runs instead.
    killed_run(&site);
    let (path, mut lines) = journal_of(&site);
    let pwned = site.path("pwned");
    lines[0]["commands"]["maintenance-mode"] = serde_json::json!({
        "program": "/bin/sh",
        "args": ["-c", format!("touch {}", pwned.display())],
    });
    // ... and whose data root was pointed at a decoy: the policy's root is cleaned up.
    let decoy = site.path("decoy");
    std::fs::create_dir_all(decoy.join("mw/data")).unwrap();
    std::fs::write(decoy.join("mw/data/maint"), b"decoy").unwrap();
    lines[0]["roots"]["data"] = serde_json::json!(decoy);
    rewrite(&path, &lines);
    let out = site.hokan(&["recover", "--yes"], &[]);
    ok(&out);
    assert!(!pwned.exists(), "recovery ran the journal's program");
    assert!(
        !site.path("data/mw/data/maint").exists(),
        "maintenance is still on"
    );
    assert!(
        decoy.join("mw/data/maint").exists(),
        "recovery acted on the journal's root"
    );

    // A journal that names a command the policy does not map is not recovered at all.
    killed_run(&site);
    let (path, mut lines) = journal_of(&site);
    let cleanup = lines[0]["document"]["cleanup"].as_array_mut().unwrap();
    cleanup.push(serde_json::json!({
        "id": "forged", "title": "forged", "target": null, "on_error": "abort",
        "timeout_ms": null, "retries": 0, "when": [],
        "action": {"kind": "exec", "command": "forged", "args": [], "cwd": null, "success_codes": []},
    }));
    lines[0]["commands"]["forged"] = serde_json::json!({
        "program": "/bin/sh",
        "args": ["-c", format!("touch {}", pwned.display())],
    });
    rewrite(&path, &lines);
    let out = site.hokan(&["recover", "--yes"], &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout)
            .contains("the journal names the command `forged`, which jobs.mailwise.commands"),
        "{}",
        text(&out.stdout)
    );
    assert!(!pwned.exists(), "recovery ran the journal's program");
    // The operator checks the product; the journal is still there to recover by hand.
    assert!(path.exists());
}

#[test]
fn eight_runs_and_eight_recoveries_at_once_hold_the_instance_one_at_a_time() {
    let site = RunSite::new();
    // The stand-ins count their calls.
    let mut ons_before = 0;
    for round in 0..20 {
        let children: Vec<std::process::Child> = (0..16)
            .map(|i| {
                let mut c = if i % 2 == 0 {
                    hokan_command(
                        site.path("").as_path(),
                        &[
                            "run",
                            site.path("site.toml").to_str().unwrap(),
                            "--job",
                            "mailwise",
                            "--op",
                            "backup",
                        ],
                        &[],
                    )
                } else {
                    hokan_command(site.path("").as_path(), &["recover", "--yes"], &[])
                };
                c.stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        // A run that found the instance busy says who holds it; one that got it in the same
        // second as a run that finished says the set of that second exists.
        let busy = outs
            .iter()
            .step_by(2)
            .filter(|o| !o.status.success())
            .inspect(|o| {
                let e = text(&o.stderr);
                assert!(
                    e.contains("is busy: run") || e.contains("started in the same second"),
                    "round {round}: {e}\nquarantine: {:?}\nrecoveries: {:#?}",
                    std::fs::read_dir(site.path("state/runs/quarantine"))
                        .map(|d| d.count())
                        .ok(),
                    outs.iter()
                        .skip(1)
                        .step_by(2)
                        .map(|o| text(&o.stderr))
                        .collect::<Vec<_>>()
                );
            })
            .count();
        let completed = outs
            .iter()
            .step_by(2)
            .filter(|o| o.status.success())
            .count();
        for (i, o) in outs.iter().enumerate() {
            let code = o.status.code();
            assert!(
                code == Some(0) || (i % 2 == 0 && code == Some(1)),
                "round {round}, process {i}: exit {code:?}\n{}\n{}",
                text(&o.stdout),
                text(&o.stderr)
            );
        }
        assert!(completed >= 1, "round {round}: no run got the instance");
        assert_eq!(completed + busy, 8, "round {round}");
        // Each run that held the instance set maintenance mode once; no one else did, and no
        // recovery found anything to redo.
        let ons = site.calls().matches("mw-maintenance on").count();
        assert_eq!(ons - ons_before, completed, "round {round}");
        ons_before = ons;
        assert!(!site.path("data/mw/data/maint").exists(), "round {round}");
        // Sets are named by the second: the next round needs another one.
        wait_for_next_second();
    }
    // Every completed set is good; nothing half-written is listed as good.
    for (id, state) in site.sets() {
        if state == "good" {
            let out = site.hokan(&["verify", site.set_dir(&id).to_str().unwrap()], &[]);
            assert_eq!(out.status.code(), Some(0), "{id}: {}", text(&out.stdout));
        }
    }
}

#[test]
fn retention_never_removes_a_set_being_read() {
    // The policy keeps the last two sets. A restore elsewhere (or `verify`) reading the oldest
    // holds a shared lock on it: the primary job's pruning leaves it for next time.
    let site = RunSite::new();
    ok(&site.run("mailwise", "backup", &[], &[]));
    let (oldest, _) = site.sets().remove(0);
    let reading = hokan::sets::SetLock::shared(&site.set_dir(&oldest)).unwrap();
    for _ in 0..2 {
        wait_for_next_second();
        ok(&site.run("mailwise", "backup", &[], &[]));
    }
    let ids: Vec<String> = site.sets().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids[0], oldest);
    // Once nobody reads it, the next backup prunes it as the rules say.
    drop(reading);
    wait_for_next_second();
    ok(&site.run("mailwise", "backup", &[], &[]));
    let ids: Vec<String> = site.sets().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(!ids.contains(&oldest));
}

/// A database whose mirror is gone is backed up all the same (the manual gives no reason not
/// to, and a damaged database is when a backup matters most: "データベースファイルが破損した場合
/// でも、もう一方のデータベースファイルから復旧できます"); the run needs attention, naming the
/// check; a restore from that set refuses, saying what to do instead.
#[test]
fn a_backup_with_a_missing_mirror_completes_needing_attention_and_its_restore_refuses() {
    let site = RunSite::new();
    std::fs::remove_file(site.path("data/mw/data/address.odb.mrr")).unwrap();
    let out = site.run("mailwise", "backup", &[], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: DAMAGED DATABASES: address.odb"),
        "{stderr}"
    );
    assert!(stdout.contains("step `check-mirrors` failed"), "{stdout}");
    let sets = site.sets();
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(
        sets[0].1, "good",
        "a faithful copy of what there is: {sets:?}"
    );
    let set = site.set_dir(&sets[0].0);
    assert_eq!(
        std::fs::read(set.join("data/address.odb")).unwrap(),
        std::fs::read(site.path("data/mw/data/address.odb")).unwrap()
    );
    assert!(!site.path("data/mw/data/maint").exists());

    wait_for_next_second();
    let before = snapshot(&site.path("data"));
    let out = site.run("mailwise", "restore", &["--yes"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        said.contains("address.odb without its mirror .odb.mrr")
            && said.contains("Restore from an older set whose pairs are whole"),
        "{said}"
    );
    assert_eq!(snapshot(&site.path("data")), before);
}

/// The names in a job's sets directory, dot-files too: what a restore test leaves there.
fn sets_dir_names(site: &RunSite) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(site.path("backups/test-site/mailwise"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// The restore test `hokan sets --json` shows for set `id`.
fn restore_test_of(site: &RunSite, id: &str) -> serde_json::Value {
    site.sets_json()
        .into_iter()
        .find(|s| s["id"] == id)
        .map(|s| s["restore_test"].clone())
        .unwrap_or_else(|| panic!("no set {id}"))
}

/// A restore test restores the newest set into a scratch directory beside the sets, checks it
/// there (every database with its mirror, every entry against the manifest) and records that it
/// passed; the live tree is untouched to the byte and no product command runs. A set damaged
/// since it was written fails, naming the file, and is recorded so; a test killed half way
/// leaves neither its tree nor a result; and retention keeps the newest set that passed.
#[test]
fn a_restore_test_checks_a_set_beside_the_sets_and_never_touches_the_live_tree() {
    let site = RunSite::new();
    let policy = site.path("site.toml");
    let policy = policy.to_str().unwrap();
    ok(&site.run("mailwise", "backup", &[], &[]));
    let (first, _) = site.sets().remove(0);
    let live = listing(&site.path("data"));
    let calls = site.calls();
    let out = site.hokan(&["restore-test", policy, "--job", "mailwise"], &[]);
    ok(&out);
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("restore test of {first}: passed")),
        "{said}"
    );
    assert!(said.contains("check-mirrors"), "{said}");
    assert_eq!(
        listing(&site.path("data")),
        live,
        "a restore test changed the live tree"
    );
    assert_eq!(site.calls(), calls, "a restore test ran a product command");
    assert_eq!(
        sets_dir_names(&site),
        [first.clone(), format!("{first}.restore-test.json")],
        "the scratch directory is left"
    );
    let t = restore_test_of(&site, &first);
    assert_eq!(t["ok"], true, "{t}");
    assert_eq!(t["set"], first.as_str());

    // A mail source damaged in the set, its size kept: the test restores it and finds out.
    let victim = std::fs::read_dir(site.set_dir(&first).join("file"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .and_then(|ws| walk_files(&ws).into_iter().next())
        .expect("a mail source in the set");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[0] ^= 0x55;
    std::fs::write(&victim, &bytes).unwrap();
    let rel = victim
        .strip_prefix(site.set_dir(&first))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let out = site.hokan(
        &["restore-test", policy, "--job", "mailwise", "--set", &first],
        &[],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stdout));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("restore test of {first}: FAILED")),
        "{said}"
    );
    assert!(said.contains(&rel), "the failure names {rel}: {said}");
    let t = restore_test_of(&site, &first);
    assert_eq!(t["ok"], false, "{t}");
    assert!(t["problem"].as_str().unwrap().contains(&rel), "{t}");
    assert_eq!(listing(&site.path("data")), live);
    let shown = site.hokan(&["sets", policy, "--job", "mailwise"], &[]);
    assert!(
        text(&shown.stdout).contains("restore-tested"),
        "{}",
        text(&shown.stdout)
    );
    assert!(
        text(&shown.stdout).contains("FAILED"),
        "{}",
        text(&shown.stdout)
    );

    // Killed after its first copy: recovery removes the scratch tree and records nothing.
    wait_for_next_second();
    ok(&site.run("mailwise", "backup", &[], &[]));
    let second = site.sets().last().unwrap().0.clone();
    let out = site.hokan(
        &["restore-test", policy, "--job", "mailwise"],
        &[("HOKAN_TEST_KILL_AFTER", "restore-data")],
    );
    assert!(killed(&out), "{}", text(&out.stderr));
    assert!(
        sets_dir_names(&site)
            .iter()
            .any(|n| n.starts_with(".restore-test.")),
        "{:?}",
        sets_dir_names(&site)
    );
    ok(&site.hokan(&["recover", policy], &[]));
    assert!(
        !sets_dir_names(&site)
            .iter()
            .any(|n| n.starts_with(".restore-test.")),
        "{:?}",
        sets_dir_names(&site)
    );
    assert_eq!(restore_test_of(&site, &second), serde_json::Value::Null);

    // The second set passes; two more backups, and `keep_last = 2` would prune it: it is the
    // newest set known to restore, so it stays, and the damaged first set goes.
    ok(&site.hokan(&["restore-test", policy, "--job", "mailwise"], &[]));
    for _ in 0..2 {
        wait_for_next_second();
        ok(&site.run("mailwise", "backup", &[], &[]));
    }
    let ids: Vec<String> = site.sets().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids[0], second, "{ids:?}");
    assert!(!ids.contains(&first));
    assert!(
        !sets_dir_names(&site).contains(&format!("{first}.restore-test.json")),
        "a pruned set's record outlives it"
    );
    assert_eq!(listing(&site.path("data")).len(), live.len());
}

/// The regular files below `dir`, in name order.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let mut out = Vec::new();
    for p in entries {
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}
