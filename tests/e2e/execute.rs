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

    /// The ids of the sets `hokan sets` lists, with their states.
    fn sets(&self) -> Vec<(String, String)> {
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
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        v.iter()
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
    assert!(
        site.calls()
            .starts_with("mw-maintenance on --start 02:00 --end 04:30 --message "),
        "{}",
        site.calls()
    );
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
    assert!(stdout.contains("3 problem(s)"), "{stdout}");

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
    for (n, step) in ids.iter().enumerate() {
        let out = site.run(
            "mailwise",
            "backup",
            &[],
            &[("HOKAN_TEST_KILL_AFTER", step)],
        );
        assert!(killed(&out), "{step}: not killed: {}", text(&out.stderr));
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
fn one_run_per_instance_and_stale_locks_are_taken_over() {
    let site = RunSite::new();
    std::fs::create_dir_all(site.path("state/locks")).unwrap();
    let lock = site.path("state/locks/test-site.mailwise.mw1.lock");
    // This test process is alive: the lock is held.
    std::fs::write(
        &lock,
        format!("{}\nbackup of job mailwise\n", std::process::id()),
    )
    .unwrap();
    let out = site.run("mailwise", "backup", &[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("test-site.mailwise.mw1 is busy"),
        "{}",
        text(&out.stderr)
    );
    // The standby is another instance.
    MailwiseTree::default().build_set(&site.set_dir("20261121T011000Z"));
    ok(&site.run("standby", "restore-elsewhere", &["--yes"], &[]));
    // A dead holder's lock is stale.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(&lock, format!("{dead}\nbackup of job mailwise\n")).unwrap();
    ok(&site.run("mailwise", "backup", &[], &[]));
    assert!(!lock.exists());
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
