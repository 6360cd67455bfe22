//! `hokan daemon` on a fast clock (one real second is a minute): jobs on one mailwise run in
//! order, an overlapping one waits or is skipped per its maximum start delay, SIGTERM mid-run
//! leaves mailwise out of maintenance mode, and a restart neither loses nor repeats a slot.

use crate::cli::text;
use crate::standin_site::hokan_command;
use hokan::schedule::history::{History, SlotRow, SlotStatus};
use hokan_e2e::{MailwiseTree, repo_root};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Three jobs on one mailwise (one product instance): `first` at 02:00, `second` at 02:01
/// (it may start up to 30 minutes late), `third` at 02:02 (at most a minute late).
fn policy(standins: &Path) -> String {
    let job = |name: &str, at: &str, delay: &str| {
        format!(
            r#"
[jobs.{name}]
plugin = "mailwise"
servers = ["mw1"]
schedule = "daily at {at}"
estimate = "10m"
max_start_delay = "{delay}"
backup_root = "../backups"
roots = {{ data = "../data" }}
commands = {{ maintenance-mode = "{m}" }}
"#,
            m = standins.join("mw-maintenance").display()
        )
    };
    format!(
        "[site]\nname = \"d\"\ntimezone = \"Asia/Tokyo\"\n\n[[servers]]\nname = \"mw1\"\nrole = \"mailwise\"\n{}{}{}",
        job("first", "02:00", "30m"),
        job("second", "02:01", "30m"),
        job("third", "02:02", "1m"),
    )
}

struct Daemon {
    child: Child,
    out: PathBuf,
}

impl Daemon {
    /// A daemon whose clock starts at `clock` (UTC) and runs 60 times as fast.
    fn start(dir: &Path, clock: &str, n: u32) -> Daemon {
        let out = dir.join(format!("daemon-{n}.log"));
        let f = std::fs::File::create(&out).unwrap();
        let child = hokan_command(
            dir,
            &["daemon", &dir.join("pol").to_string_lossy()],
            &[
                ("HOKAN_TEST_CLOCK", &format!("{clock}*60")),
                // Setting maintenance mode takes 2 s: runs last a few minutes of the clock.
                ("STANDIN_SLOW_ON", "2"),
            ],
        )
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
        Daemon { child, out }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// SIGTERM, then waits for the daemon to exit.
    fn stop(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rows(dir: &Path) -> Vec<SlotRow> {
    if !dir.join("state/history.sqlite").exists() {
        return Vec::new();
    }
    History::open(&dir.join("state")).unwrap().all().unwrap()
}

fn row<'a>(rows: &'a [SlotRow], job: &str, slot: &str) -> &'a SlotRow {
    let slot: jiff::Timestamp = slot.parse().unwrap();
    rows.iter()
        .find(|r| r.job == job && r.slot == slot)
        .unwrap_or_else(|| panic!("no row for {job} {slot}: {rows:#?}"))
}

/// Waits until `done` holds of the history, or fails with the daemon's log.
fn wait_for(dir: &Path, d: &Daemon, what: &str, done: impl Fn(&[SlotRow]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done(&rows(dir)) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{:#?}\n{}",
            rows(dir),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn final_rows(dir: &Path, slots: &[(&str, &str)]) -> bool {
    let r = rows(dir);
    slots.iter().all(|(job, slot)| {
        let slot: jiff::Timestamp = slot.parse().unwrap();
        r.iter()
            .any(|x| x.job == *job && x.slot == slot && x.status.is_final())
    })
}

fn maint(dir: &Path) -> PathBuf {
    dir.join("data/mw/data/maint")
}

fn sets(dir: &Path, job: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join(format!("backups/d/{job}")))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn the_daemon_runs_in_order_stops_gracefully_and_resumes_without_repeats() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("pol")).unwrap();
    let policy_file = dir.join("pol/site.toml");
    std::fs::write(
        &policy_file,
        policy(&repo_root().join("tests/fixtures/standins")),
    )
    .unwrap();
    MailwiseTree::default().build(&dir.join("data"));

    // Night 1 (slots 02:00, 02:01, 02:02 JST = 17:00-17:02Z): the clock starts at 01:59:30.
    let d = Daemon::start(dir, "2026-11-20T16:59:30Z", 1);
    let night1 = [
        ("first", "2026-11-20T17:00:00Z"),
        ("second", "2026-11-20T17:01:00Z"),
        ("third", "2026-11-20T17:02:00Z"),
    ];
    wait_for(dir, &d, "night 1", |_| final_rows(dir, &night1));
    // `hokan status` answers while it runs.
    let st = hokan_command(dir, &["status", "--json"], &[])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", text(&st.stderr));
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["last"].as_array().unwrap().len(), 3, "{st:#}");
    assert_eq!(st["next"].as_array().unwrap().len(), 3, "{st:#}");
    assert!(
        st["next"][0]["slot_local"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-22 02:0")
    );
    assert!(d.stop().success());
    let r = rows(dir);
    let (first, second, third) = (
        row(&r, "first", night1[0].1),
        row(&r, "second", night1[1].1),
        row(&r, "third", night1[2].1),
    );
    assert_eq!(first.status, SlotStatus::Completed, "{first:#?}");
    assert_eq!(second.status, SlotStatus::Completed, "{second:#?}");
    // Status and summary are the run's journal's finish record, not the words on its console.
    for r in [&first, &second] {
        let done = dir.join("state/runs/done");
        let journal = std::fs::read_dir(&done)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.contains(&format!("-{}-{}-{}-", r.site, r.job, r.op))
            })
            .expect("the run's journal");
        let outcome = hokan::execute::journal::read(&journal)
            .unwrap()
            .into_iter()
            .find_map(|rec| match rec {
                hokan::execute::journal::Record::Finish { outcome, .. } => Some(outcome),
                _ => None,
            })
            .expect("a finish record");
        assert_eq!(
            r.summary.as_deref(),
            Some(outcome.summary().as_str()),
            "{r:#?}"
        );
        assert!(
            outcome.summary().starts_with("completed; backup set"),
            "{r:#?}"
        );
    }
    // One instance: `second` waited until `first` had finished.
    assert!(second.started.unwrap() >= first.finished.unwrap(), "{r:#?}");
    // `third` could not start within a minute of 02:02: skipped and reported.
    assert_eq!(third.status, SlotStatus::Skipped, "{third:#?}");
    let why = third.summary.as_deref().unwrap();
    assert!(why.contains("maximum start delay of 1m"), "{why}");
    assert!(
        why.contains("job first (running since") || why.contains("job second (running since"),
        "{why}"
    );
    assert_eq!(third.attempts, 0);
    assert!(!maint(dir).exists());
    assert_eq!(
        (sets(dir, "first").len(), sets(dir, "second").len()),
        (1, 1)
    );

    // Night 2: SIGTERM while `first` is setting maintenance mode.
    let d = Daemon::start(dir, "2026-11-21T16:59:50Z", 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !maint(dir).exists() {
        assert!(Instant::now() < deadline, "no run started:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = d.log();
    let status = d.stop();
    assert!(status.success(), "{log}");
    // The step finished, the run stopped there and its cleanup released maintenance mode.
    assert!(
        !maint(dir).exists(),
        "mailwise was left in maintenance mode"
    );
    let r = rows(dir);
    let interrupted = row(&r, "first", "2026-11-21T17:00:00Z");
    assert_eq!(
        interrupted.status,
        SlotStatus::Interrupted,
        "{interrupted:#?}"
    );
    let summary = interrupted.summary.as_deref().unwrap();
    assert!(summary.contains("SIGTERM"), "{summary}");
    // The journal is closed: nothing to recover; no partial set is left.
    let rec = hokan_command(dir, &["recover"], &[]).output().unwrap();
    assert!(
        text(&rec.stdout).contains("nothing to recover"),
        "{}",
        text(&rec.stdout)
    );
    assert_eq!(sets(dir, "first").len(), 1);
    // Nothing else ran on night 2 yet.
    assert!(
        r.iter()
            .filter(|x| x.slot > "2026-11-21T17:00:00Z".parse().unwrap())
            .count()
            == 0,
        "{r:#?}"
    );

    // A policy that breaks while the daemon runs keeps its previous version.
    // Restart at 02:05 JST: `first` (interrupted, 30 minutes of delay) and `second` (never
    // started) run now; `third` (a minute of delay) is reported missed; night 1 is not touched.
    let d = Daemon::start(dir, "2026-11-21T17:05:00Z", 3);
    let night2 = [
        ("first", "2026-11-21T17:00:00Z"),
        ("second", "2026-11-21T17:01:00Z"),
        ("third", "2026-11-21T17:02:00Z"),
    ];
    // Once it has read the policy, break it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = hokan_command(dir, &["status", "--json"], &[])
            .output()
            .unwrap();
        if out.status.success() {
            let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if st["next"].as_array().is_some_and(|n| n.len() == 3) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not start:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&policy_file, "[site]\nname = \"d\"\nschedule = sometimes\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let out = hokan_command(dir, &["status"], &[]).output().unwrap();
        let t = text(&out.stdout);
        if t.contains("POLICY ERRORS") {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "no policy error reported:\n{t}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        st.contains("site.toml:3") && st.contains("the previous version is kept"),
        "{st}"
    );
    assert!(
        st.contains("d first (backup)") || st.contains("running:\n  d first"),
        "{st}"
    );
    wait_for(dir, &d, "night 2", |_| final_rows(dir, &night2));
    std::fs::write(
        &policy_file,
        policy(&repo_root().join("tests/fixtures/standins")),
    )
    .unwrap();
    assert!(d.stop().success());
    let r = rows(dir);
    let first = row(&r, "first", night2[0].1);
    assert_eq!(
        (first.status, first.attempts),
        (SlotStatus::Completed, 2),
        "{first:#?}"
    );
    let second = row(&r, "second", night2[1].1);
    assert_eq!(
        (second.status, second.attempts),
        (SlotStatus::Completed, 1),
        "{second:#?}"
    );
    let third = row(&r, "third", night2[2].1);
    assert_eq!(third.status, SlotStatus::Skipped, "{third:#?}");
    assert!(
        third.summary.as_deref().unwrap().contains("missed"),
        "{third:#?}"
    );
    // Night 1 ran once each; nothing ran twice.
    for (job, slot) in night1 {
        assert!(row(&r, job, slot).attempts <= 1);
    }
    assert_eq!(r.len(), 6, "{r:#?}");
    assert_eq!(
        (sets(dir, "first").len(), sets(dir, "second").len()),
        (2, 2)
    );
    assert!(!maint(dir).exists());
}
