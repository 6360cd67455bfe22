//! What operators watch: `hokan daemon --http` serves `/metrics` and the status page after a
//! scripted night of the bundled policies; Prometheus' own `promtool` accepts the document and
//! its values are the history's; headless Chromium shows each job's last outcome; the alert
//! rules of docs/monitoring.md pass their own promtool tests; and off loopback nothing is
//! served without the bearer token.

use crate::cli::text;
use crate::standin_site::hokan_command;
use hokan::schedule::history::{History, SlotRow, SlotStatus};
use hokan_e2e::{chromium, hokan_bin, promtool, repo_root};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon started by a test, killed if the test fails before it stops it.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, policies: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = dir.join("daemon.log");
        let f = std::fs::File::create(&log).unwrap();
        let mut all = vec!["daemon", policies.to_str().unwrap()];
        all.extend_from_slice(args);
        let child = hokan_command(dir, &all, env)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address it serves HTTP on, once it does.
    fn http_addr(&mut self, state: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(a) = std::fs::read_to_string(state.join("http.addr")) {
                return a.trim().to_string();
            }
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!("the daemon exited ({s}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no http.addr:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the daemon did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over HTTP/1.1 on `addr` (`127.0.0.1:PORT`): the status code and the body.
fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// The bundled policies, copied into `dir/policies` with their paths pointing at `dir/demo`,
/// and the demo sites built there.
fn bundled_site(dir: &Path) -> PathBuf {
    let demo = dir.join("demo");
    let made = Command::new(hokan_bin().with_file_name("make-demo-site"))
        .arg(&demo)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for e in std::fs::read_dir(repo_root().join("policies")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let text = text
            .replace("../target/demo/", &format!("{}/", demo.display()))
            .replace("../tests/", &format!("{}/tests/", repo_root().display()))
            // The daemon's clock runs fast, its runs' clock does not: given a window, a run
            // would wait for the real 02:00.
            .lines()
            .filter(|l| !l.starts_with("window ="))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(policies.join(p.file_name().unwrap()), text).unwrap();
    }
    policies
}

/// Headless Chromium, with no profile, no first-run work and nothing fetched but `url`.
fn browser(dir: &Path, args: &[&str], url: &str) -> std::process::Output {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium {args:?} {url}:\n{}",
        text(&out.stderr)
    );
    out
}

/// The samples of a metrics document: series (name and labels as printed) to value.
fn samples(doc: &str) -> BTreeMap<String, f64> {
    doc.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, v) = l.rsplit_once(' ').unwrap();
            (series.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn secs(t: jiff::Timestamp) -> f64 {
    t.as_nanosecond() as f64 / 1e9
}

/// The night's slots: Osaka's master and mail server at 01:00 and 01:30, Kyoto's weekly full
/// backup at 02:00 on Sunday, Tokyo at 02:10 and Nagoya at 03:00 (JST, 22 November 2026).
const NIGHT: [(&str, &str, &str); 5] = [
    ("osaka-groupmax", "groupmax-master", "2026-11-21T16:00:00Z"),
    ("osaka-groupmax", "groupmax-mail1", "2026-11-21T16:30:00Z"),
    ("kyoto-exchange", "exchange", "2026-11-21T17:00:00Z"),
    ("tokyo-hq", "mailwise", "2026-11-21T17:10:00Z"),
    ("nagoya-teamware", "teamware", "2026-11-21T18:00:00Z"),
];

#[test]
fn metrics_after_a_night_of_the_bundled_policies_match_the_history_and_pass_promtool() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let policies = bundled_site(dir);
    let state = dir.join("state");
    let standins = dir.join("demo/standins");
    // From 00:50 JST, three minutes of the night to a second.
    let mut d = Daemon::start(
        dir,
        &policies,
        &["--http", "127.0.0.1:0"],
        &[
            ("HOKAN_TEST_CLOCK", "2026-11-21T15:50:00Z*180"),
            ("STANDIN_STATE", standins.to_str().unwrap()),
        ],
    );
    let addr = d.http_addr(&state);
    assert!(
        d.log().contains(&format!("serving http://{addr}/metrics")),
        "{}",
        d.log()
    );
    let done = |rows: &[SlotRow]| {
        NIGHT.iter().all(|(site, job, slot)| {
            let slot: jiff::Timestamp = slot.parse().unwrap();
            rows.iter()
                .any(|r| r.site == *site && r.job == *job && r.slot == slot && r.status.is_final())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    let rows = loop {
        let rows = History::open(&state).unwrap().all().unwrap();
        if done(&rows) {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the night did not end:\n{rows:#?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The operator proves Tokyo's newest set by a restore test, between two scrapes.
    let tokyo = policies.join("tokyo-hq.toml");
    let out = hokan_command(
        dir,
        &["restore-test", tokyo.to_str().unwrap(), "--job", "mailwise"],
        &[("STANDIN_STATE", standins.to_str().unwrap())],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let tokyo_sets = dir.join("demo/tokyo-hq/backups/tokyo-hq/mailwise");
    let tested =
        hokan::sets::tested::newest_passed(&tokyo_sets, &hokan::sets::list(&tokyo_sets).unwrap())
            .and_then(|id| hokan::sets::tested::last(&tokyo_sets, &id))
            .expect("the restore test's record");
    let (code, doc) = get(&addr, "/metrics", None);
    assert_eq!(code, 200, "{doc}");

    // The status page, as a browser gets it from the daemon: each bundled site's jobs with
    // their last outcome, and a run's steps one link away.
    let dom = text(&browser(dir, &["--dump-dom"], &format!("http://{addr}/")).stdout);
    for (site, job, slot) in NIGHT {
        let slot: jiff::Timestamp = slot.parse().unwrap();
        let r = rows
            .iter()
            .find(|r| r.site == site && r.job == job && r.slot == slot)
            .unwrap();
        let want = format!(
            "data-site=\"{site}\" data-job=\"{job}\" data-last=\"{}\"",
            r.status.as_str()
        );
        assert!(dom.contains(&want), "no {want} in\n{dom}");
        assert!(dom.contains(&format!("href=\"/runs/{}\"", r.id)), "{dom}");
    }
    assert!(
        dom.contains("data-site=\"london-branch\" data-job=\"mailwise\" data-last=\"none\""),
        "{dom}"
    );
    let tokyo_run = rows
        .iter()
        .find(|r| r.site == "tokyo-hq" && r.started.is_some())
        .unwrap();
    let run_dom = text(
        &browser(
            dir,
            &["--dump-dom"],
            &format!("http://{addr}/runs/{}", tokyo_run.id),
        )
        .stdout,
    );
    for step in [
        "maintenance-on",
        "copy-data",
        "verify-data",
        "maintenance-off",
    ] {
        assert!(
            run_dom.contains(&format!("data-step=\"{step}\" data-status=\"ok\"")),
            "{step}:\n{run_dom}"
        );
    }
    assert_eq!(get(&addr, "/runs/999999", None).0, 404);
    // The screenshot docs/monitoring.md shows, made fresh by every run of the suite.
    let shot = repo_root().join("target/status-page.png");
    // target/ is not there when the build goes to another CARGO_TARGET_DIR.
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    browser(
        dir,
        &[
            "--window-size=1280,1000",
            &format!("--screenshot={}", shot.display()),
        ],
        &format!("http://{addr}/"),
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "an empty screenshot"
    );

    // Nothing runs between the history read and the scrape: the next slots are a day away.
    let rows_now = History::open(&state).unwrap().all().unwrap();
    assert_eq!(
        rows_now, rows,
        "a run ended while the test read the history"
    );
    d.stop();

    // November's report for each site, from the history alone: the night's run, at 100 %.
    for (site, job, _) in NIGHT {
        let file = dir.join(format!("{site}-2026-11.html"));
        let policy = policies.join(format!("{site}.toml"));
        let out = hokan_command(
            dir,
            &[
                "report",
                policy.to_str().unwrap(),
                "--month",
                "2026-11",
                "--out",
                file.to_str().unwrap(),
            ],
            &[],
        )
        .output()
        .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let html = std::fs::read_to_string(&file).unwrap();
        assert!(
            html.contains(&format!(r#"data-job="{job}" data-rate="100.0" data-slots="1" data-failed="0" data-skipped="0""#)),
            "{site} {job}:\n{html}"
        );
        assert!(
            !html.contains("src=") && !html.contains("http"),
            "not self-contained: {html}"
        );
    }
    let tokyo_report = std::fs::read_to_string(dir.join("tokyo-hq-2026-11.html")).unwrap();
    assert!(
        tokyo_report.contains(&format!("passed</span> {}", tested.tested_at)),
        "{tokyo_report}"
    );
    // October had no slot.
    let out = hokan_command(
        dir,
        &["report", tokyo.to_str().unwrap(), "--month", "2026-10"],
        &[],
    )
    .output()
    .unwrap();
    assert!(
        text(&out.stdout).contains(r#"data-job="mailwise" data-rate="" data-slots="0""#),
        "{}",
        text(&out.stdout)
    );

    // Prometheus' own linter accepts the document.
    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{doc}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // Every value is the history's, read here from its rows.
    let m = samples(&doc);
    let v = |name: &str, site: &str, job: &str| {
        m.get(&format!("{name}{{job=\"{job}\",site=\"{site}\"}}"))
            .copied()
    };
    let mut checked = 0;
    for (site, job, _) in NIGHT {
        let mine: Vec<&SlotRow> = rows
            .iter()
            .filter(|r| r.site == site && r.job == job)
            .collect();
        let ended = |r: &&&SlotRow| r.finished.is_some();
        let last_run = mine
            .iter()
            .filter(|r| r.started.is_some() && r.status != SlotStatus::Running)
            .filter(ended)
            .max_by_key(|r| r.finished);
        let success = mine
            .iter()
            .filter(|r| r.status == SlotStatus::Completed)
            .filter_map(|r| r.finished)
            .max();
        assert_eq!(
            v("hokan_job_last_success_timestamp_seconds", site, job),
            Some(success.map_or(0.0, secs)),
            "{site} {job}"
        );
        for st in [
            "completed",
            "failed",
            "attention",
            "refused",
            "bad-input",
            "interrupted",
        ] {
            let n = mine.iter().filter(|r| r.status.as_str() == st).count() as f64;
            let series =
                format!("hokan_job_runs_total{{job=\"{job}\",outcome=\"{st}\",site=\"{site}\"}}");
            assert_eq!(m.get(&series).copied(), Some(n), "{series}\n{doc}");
            let last = f64::from(u8::from(last_run.is_some_and(|r| r.status.as_str() == st)));
            let series =
                format!("hokan_job_last_status{{job=\"{job}\",site=\"{site}\",status=\"{st}\"}}");
            assert_eq!(m.get(&series).copied(), Some(last), "{series}\n{doc}");
        }
        let skipped = mine
            .iter()
            .filter(|r| r.status == SlotStatus::Skipped)
            .count() as f64;
        assert_eq!(v("hokan_job_slots_skipped_total", site, job), Some(skipped));
        if let Some(r) = last_run {
            let took = r
                .finished
                .unwrap()
                .duration_since(r.started.unwrap())
                .as_secs_f64();
            let got = v("hokan_job_last_duration_seconds", site, job).unwrap();
            assert!((got - took).abs() < 1e-3, "{site} {job}: {got} {took}");
        }
        // The set's size is what its manifest's files hold.
        let set = mine
            .iter()
            .filter(|r| r.set.is_some())
            .max_by_key(|r| r.finished);
        assert_eq!(
            last_run.map(|r| r.status),
            Some(SlotStatus::Completed),
            "{site} {job}"
        );
        match set {
            Some(r) => {
                let id = r.set.as_deref().unwrap();
                let dir = std::fs::read_dir(dir.join("demo"))
                    .unwrap()
                    .map(|e| e.unwrap().path().join(format!("backups/{site}/{job}/{id}")))
                    .find(|p| p.exists())
                    .unwrap_or_else(|| panic!("{site} {job}: no set {id}"));
                let bytes: u64 = hokan::sets::Manifest::read(&dir)
                    .unwrap()
                    .files()
                    .values()
                    .map(|e| e.size)
                    .sum();
                assert!(bytes > 0);
                assert_eq!(
                    v("hokan_job_last_set_bytes", site, job),
                    Some(bytes as f64),
                    "{site} {job}"
                );
                checked += 1;
            }
            None => assert_eq!(v("hokan_job_last_set_bytes", site, job), None),
        }
        assert_eq!(v("hokan_job_running", site, job), Some(0.0));
    }
    // The stand-ins are well: every backup of the night completed and wrote a set.
    assert_eq!(checked, NIGHT.len(), "{rows:#?}");
    // From the calendars: daily jobs a day, Kyoto's weekly one a week, London (no run tonight)
    // a day and no success yet.
    assert_eq!(
        v(
            "hokan_job_expected_interval_seconds",
            "tokyo-hq",
            "mailwise"
        ),
        Some(86_400.0)
    );
    assert_eq!(
        v(
            "hokan_job_expected_interval_seconds",
            "kyoto-exchange",
            "exchange"
        ),
        Some(7.0 * 86_400.0)
    );
    assert_eq!(
        v(
            "hokan_job_expected_interval_seconds",
            "london-branch",
            "mailwise"
        ),
        Some(86_400.0)
    );
    assert_eq!(
        v(
            "hokan_job_last_success_timestamp_seconds",
            "london-branch",
            "mailwise"
        ),
        Some(0.0)
    );
    // Restore tests: Tokyo's, when it passed; none elsewhere.
    let tested_at: jiff::Timestamp = tested.tested_at.parse().unwrap();
    assert_eq!(
        v(
            "hokan_job_last_restore_test_pass_timestamp_seconds",
            "tokyo-hq",
            "mailwise"
        ),
        Some(tested_at.as_second() as f64)
    );
    assert_eq!(
        v(
            "hokan_job_last_restore_test_pass_timestamp_seconds",
            "kyoto-exchange",
            "exchange"
        ),
        Some(0.0)
    );
    assert_eq!(m.get("hokan_daemon_jobs").copied(), Some(7.0), "{doc}");
    assert_eq!(m.get("hokan_daemon_policy_errors").copied(), Some(0.0));
}

#[test]
fn the_alert_rules_of_the_docs_pass_their_promtool_tests() {
    let docs = repo_root().join("docs/monitoring");
    for (what, file) in [
        ("rules", "hokan-alerts.yml"),
        ("rules", "hokan-alerts.test.yml"),
    ] {
        let args: &[&str] = if file.contains(".test.") {
            &["test", what]
        } else {
            &["check", what]
        };
        let out = Command::new(promtool())
            .args(args)
            .arg(docs.join(file))
            .current_dir(&docs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {} {file}:\n{}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

#[test]
fn off_loopback_the_daemon_needs_a_token_and_refuses_requests_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    // Without a token it does not start at all.
    let out = hokan_command(
        dir,
        &["daemon", policies.to_str().unwrap(), "--http", "0.0.0.0:0"],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--http-token-file"),
        "{}",
        text(&out.stderr)
    );
    let token = dir.join("token");
    std::fs::write(&token, "0123456789abcdef\n").unwrap();
    let mut d = Daemon::start(
        dir,
        &policies,
        &[
            "--http",
            "0.0.0.0:0",
            "--http-token-file",
            token.to_str().unwrap(),
        ],
        &[],
    );
    let port = d
        .http_addr(&dir.join("state"))
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let addr = format!("127.0.0.1:{port}");
    let (code, body) = get(&addr, "/metrics", None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = get(&addr, "/", None);
    assert_eq!(code, 401, "the status page is refused too: {body}");
    assert!(!body.contains("<html"), "{body}");
    assert_eq!(get(&addr, "/runs/1", None).0, 401);
    assert_eq!(get(&addr, "/", Some("0123456789abcdef")).0, 200);
    assert!(!body.contains("hokan_job"), "{body}");
    assert_eq!(get(&addr, "/metrics", Some("0123456789abcdeX")).0, 401);
    let (code, body) = get(&addr, "/metrics", Some("0123456789abcdef"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hokan_daemon_jobs 0"), "{body}");
    assert!(
        d.log().contains("requests need the bearer token"),
        "{}",
        d.log()
    );
    d.stop();
    assert!(
        !dir.join("state/http.addr").exists(),
        "http.addr outlives the daemon"
    );
}

#[test]
fn a_report_says_what_is_wrong_with_its_month_or_its_history() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let policy = repo_root().join("policies/tokyo-hq.toml");
    let run = |month: &str| {
        hokan_command(
            dir,
            &["report", policy.to_str().unwrap(), "--month", month],
            &[],
        )
        .output()
        .unwrap()
    };
    let out = run("2026-13");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--month `2026-13` is not a month; write it as YYYY-MM"),
        "{}",
        text(&out.stderr)
    );
    let out = run("2026-11");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("there is no run history in"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("--state-dir"),
        "{}",
        text(&out.stderr)
    );
}
