//! Notifications through real receivers on loopback: a webhook receiver (here, answering 503
//! to its first three requests as a receiver that is down would), a heartbeat check, and
//! Debian's aiosmtpd as the SMTP server. A stand-in mailwise run fails under `hokan daemon` on
//! a fast clock; a second job has never written a set and trips the dead-man check.

use crate::standin_site::hokan_command;
use base64::Engine;
use hmac::Mac;
use hokan::schedule::history::{History, SlotStatus};
use hokan_e2e::{MailwiseTree, repo_root};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    status: u16,
    at: Instant,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP receiver on loopback that answers 503 to the first `down` requests to `/hook`.
fn receiver(down: usize) -> (String, Arc<Mutex<Vec<Request>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let got: Arc<Mutex<Vec<Request>>> = Arc::default();
    let seen = got.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.trim_end().split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let mut all = seen.lock().unwrap();
            let hooks_so_far = all.iter().filter(|q: &&Request| q.path == "/hook").count();
            let status = if path == "/hook" && hooks_so_far < down {
                503
            } else {
                200
            };
            all.push(Request {
                path,
                headers,
                body,
                status,
                at: Instant::now(),
            });
            drop(all);
            let reason = if status == 200 {
                "OK"
            } else {
                "Service Unavailable"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (addr, got)
}

/// Debian's aiosmtpd on a free loopback port, keeping what it receives in a Maildir.
struct Smtp {
    child: Child,
    port: u16,
    maildir: PathBuf,
}

impl Smtp {
    fn start(dir: &Path) -> Smtp {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let maildir = dir.join("maildir");
        let child = Command::new("aiosmtpd")
            .args(["-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("aiosmtpd.log")).unwrap())
            .spawn()
            .expect("aiosmtpd (Debian's python3-aiosmtpd; `cargo xtask test` installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd does not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Smtp {
            child,
            port,
            maildir,
        }
    }

    /// The messages received, as text.
    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in rd.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap());
                }
            }
        }
        out
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        // Stopped by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn policy(dir: &Path, hook: &str) -> String {
    let standins = repo_root().join("tests/fixtures/standins");
    format!(
        r#"[site]
name = "n"
timezone = "Asia/Tokyo"

[[servers]]
name = "mw1"
role = "mailwise"

# The site's own channel: a heartbeat check for the nightly backup.
[[notify]]
name = "hc"
kind = "heartbeat"
url = "http://{hook}/ping"
jobs = ["nightly"]
retry_after = "200ms"

[jobs.nightly]
plugin = "mailwise"
servers = ["mw1"]
schedule = "daily at 02:00"
estimate = "10m"
backup_root = "../backups"
roots = {{ data = "../data" }}
commands = {{ maintenance-mode = "{broken}" }}

# Never due in the test: its newest good set (it has none) only grows old.
[jobs.weekly]
plugin = "mailwise"
servers = ["mw1"]
schedule = "daily at 23:00"
estimate = "10m"
backup_root = "../backups-weekly"
roots = {{ data = "../data" }}
commands = {{ maintenance-mode = "{m}" }}
stale_after = "2h"
"#,
        broken = dir.join("broken-maintenance").display(),
        m = standins.join("mw-maintenance").display(),
    )
}

#[test]
fn a_failed_run_and_a_stale_job_reach_webhook_email_and_heartbeat_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    MailwiseTree::default().build(&d.join("data"));
    // The product's maintenance switch fails: the run fails at the step that sets it.
    let broken = d.join("broken-maintenance");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho 'maintenance mode cannot be set: the mailwise service does not answer' >&2\nexit 2\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (hook, got) = receiver(3);
    let smtp = Smtp::start(d);
    let pol = d.join("pol");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(pol.join("n.toml"), policy(d, &hook)).unwrap();
    std::fs::write(
        pol.join("webhook.secret"),
        "whsec_c2VjcmV0LWZvci10aGUtdGVzdA==\n",
    )
    .unwrap();
    std::fs::write(
        pol.join("host.toml"),
        format!(
            r#"[[notify]]
name = "ops"
kind = "webhook"
url = "http://{hook}/hook"
secret_file = "webhook.secret"
retry_after = "200ms"

[[notify]]
name = "mail"
kind = "email"
server = "127.0.0.1:{port}"
tls = "none"
from = "hokan@example.com"
to = ["ops@example.com"]
severity = "critical"
retry_after = "200ms"
"#,
            port = smtp.port
        ),
    )
    .unwrap();
    let validate = hokan_command(d, &["validate", pol.to_str().unwrap()], &[])
        .output()
        .unwrap();
    let says = String::from_utf8_lossy(&validate.stdout);
    assert!(
        validate.status.success()
            && says.contains("host.toml (host settings, 2 notification channel(s))"),
        "{says}{}",
        String::from_utf8_lossy(&validate.stderr)
    );

    // 01:59:50 in Tokyo, ten minutes of clock a real second.
    let log = d.join("daemon.log");
    let mut daemon = hokan_command(
        d,
        &["daemon", pol.to_str().unwrap()],
        &[("HOKAN_TEST_CLOCK", "2026-11-20T16:59:50Z*600")],
    )
    .stdout(std::fs::File::create(&log).unwrap())
    .stderr(std::fs::File::create(d.join("daemon.err")).unwrap())
    .spawn()
    .unwrap();
    let state = d.join("state");
    let daemon_log = || {
        format!(
            "{}{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(d.join("daemon.err")).unwrap_or_default()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut run_recorded = None;
    loop {
        if run_recorded.is_none()
            && state.join("history.sqlite").exists()
            && History::open(&state)
                .unwrap()
                .all()
                .unwrap()
                .iter()
                .any(|r| r.job == "nightly" && r.status.is_final())
        {
            run_recorded = Some(Instant::now());
        }
        let accepted = got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == "/hook" && r.status == 200)
            .count();
        if run_recorded.is_some() && accepted >= 2 && smtp.messages().len() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: {:#?}\n{:?}\n{}",
            got.lock().unwrap(),
            smtp.messages(),
            daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Whatever else would come (a repeat), comes within a few retries.
    std::thread::sleep(Duration::from_secs(3));
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let stop = Instant::now() + Duration::from_secs(60);
    while daemon.try_wait().unwrap().is_none() {
        assert!(Instant::now() < stop, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The run's own outcome: failed at its step, recorded before any channel took the event.
    let rows = History::open(&state).unwrap().all().unwrap();
    let nightly = rows.iter().find(|r| r.job == "nightly").unwrap();
    assert_eq!(nightly.status, SlotStatus::Failed, "{nightly:#?}");
    let requests = got.lock().unwrap().clone();
    let hooks: Vec<&Request> = requests.iter().filter(|r| r.path == "/hook").collect();
    let first_ok = hooks.iter().find(|r| r.status == 200).unwrap();
    assert!(run_recorded.unwrap() <= first_ok.at + Duration::from_millis(100));

    // The webhook: three refusals, then each event accepted once, signed.
    assert_eq!(
        hooks.iter().filter(|r| r.status == 503).count(),
        3,
        "{hooks:#?}"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode("c2VjcmV0LWZvci10aGUtdGVzdA==")
        .unwrap();
    let mut accepted: Vec<serde_json::Value> = Vec::new();
    for r in hooks.iter().filter(|r| r.status == 200) {
        let id = r.header("webhook-id").unwrap();
        let ts = r.header("webhook-timestamp").unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(&r.body);
        let want = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(r.header("webhook-signature"), Some(want.as_str()), "{r:#?}");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["data"]["id"], id);
        accepted.push(v);
    }
    let kinds: Vec<&str> = accepted
        .iter()
        .map(|v| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "run-failed").count(),
        1,
        "{accepted:#?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "no-good-set").count(),
        1,
        "{accepted:#?}"
    );
    assert_eq!(
        accepted.len(),
        2,
        "nothing else is warning or worse: {accepted:#?}"
    );
    let failed = accepted.iter().find(|v| v["type"] == "run-failed").unwrap();
    let data = &failed["data"];
    assert_eq!(data["site"], "n");
    assert_eq!(data["job"], "nightly");
    assert_eq!(data["status"], "failed");
    assert_eq!(data["severity"], "critical");
    assert!(
        data["step"]
            .as_str()
            .is_some_and(|s| s.contains("maintenance")),
        "{data:#}"
    );
    assert!(
        data["reason"]
            .as_str()
            .is_some_and(|s| s.contains("the mailwise service does not answer")),
        "{data:#}"
    );
    let stale = &accepted
        .iter()
        .find(|v| v["type"] == "no-good-set")
        .unwrap()["data"];
    assert_eq!(stale["job"], "weekly");
    assert!(
        stale["reason"]
            .as_str()
            .unwrap()
            .contains("more than 2h ago"),
        "{stale:#}"
    );

    // The heartbeat: the failed run pinged /fail, once.
    let pings: Vec<&Request> = requests
        .iter()
        .filter(|r| r.path.starts_with("/ping"))
        .collect();
    assert_eq!(pings.len(), 1, "{pings:#?}");
    assert_eq!(pings[0].path, "/ping/fail");
    assert!(String::from_utf8_lossy(&pings[0].body).contains("run failed"));

    // The email: one message per critical event, with the site, job, step and reason.
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let mail = mails
        .iter()
        .find(|m| m.contains("run failed"))
        .unwrap_or_else(|| panic!("{mails:#?}"));
    assert!(
        mail.contains("Subject: [hokan] CRITICAL n/nightly: run failed at step"),
        "{mail}"
    );
    for want in [
        "site       n",
        "job        nightly",
        "step       ",
        "the mailwise service does not answer",
    ] {
        assert!(mail.contains(want), "{want} in\n{mail}");
    }
    let id = data["id"].as_str().unwrap();
    assert!(
        mail.contains(&format!("Message-ID: <{id}@hokan>")),
        "{mail}"
    );

    // The outbox says the same: delivered, with every attempt in the log.
    let list = hokan_command(d, &["notifications", "--json"], &[])
        .output()
        .unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert!(list.iter().all(|d| d["state"] == "delivered"), "{list:#?}");
    let hook_row = list
        .iter()
        .find(|d| d["event"]["id"] == id && d["channel"] == "host/ops")
        .unwrap();
    assert_eq!(hook_row["attempts"], 4);
    let attempts = hokan_command(d, &["notifications", "--event", id], &[])
        .output()
        .unwrap();
    let attempts = String::from_utf8_lossy(&attempts.stdout);
    assert_eq!(attempts.matches("HTTP 503").count(), 3, "{attempts}");
    assert!(attempts.contains("n/hc"), "{attempts}");
}
