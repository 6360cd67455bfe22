//! Servers reached over ssh, against real OpenSSH servers (Debian's sshd on 127.0.0.1, one per
//! "server", stopped by PID): the system ssh starts `hokan agent` there, with the site's pinned
//! host keys as the only trust.

use hokan_e2e::sshd::Sshd;
use hokan_e2e::{MailwiseTree, hokan_bin, plugin_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `hokan ARGS` with its plugins, cache and state in `dir`.
fn hokan_command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(hokan_bin());
    c.arg("--plugin-dir")
        .arg(plugin_dir())
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .env_remove("HOKAN_LOG");
    c
}

fn hokan(dir: &Path, args: &[&str]) -> Output {
    hokan_command(dir, args).output().unwrap()
}

/// A JSON array of strings, which it must be.
fn str_array(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A mailwise site on the host: its data at `root` (a string the policy's `roots.data` takes
/// as is), its sets under `backups` on the host, and `servers` as its `[[servers]]` tables.
fn mailwise_policy(servers: &str, root: &str, known_hosts: &str) -> String {
    format!(
        r#"[site]
name = "remote-site"
timezone = "Asia/Tokyo"
known_hosts = "{known_hosts}"

{servers}
[jobs.mailwise]
plugin = "mailwise"
servers = ["mw1"]
backup_root = "backups"
roots = {{ data = {root} }}
commands = {{ maintenance-mode = "{standin}" }}
params = {{ maintenance_method = "command" }}
"#,
        standin = standin().display()
    )
}

/// The stand-in for mailwise's maintenance-mode command, present on the "server" because the
/// server is this machine.
fn standin() -> PathBuf {
    hokan_e2e::repo_root().join("tests/fixtures/standins/mw-maintenance")
}

/// A site whose mailwise data is on `sshd`'s "server" (a tree in its directory), pinned in
/// `known_hosts`; and the same site with the same tree on the host, to compare with.
struct Remote {
    sshd: Sshd,
    host: tempfile::TempDir,
    data: PathBuf,
}

impl Remote {
    fn new() -> Remote {
        let sshd = Sshd::start();
        let data = sshd.dir.path().join("srv/mailwise");
        MailwiseTree::default().build(&data);
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("known_hosts"), sshd.known_hosts_line()).unwrap();
        let r = Remote { sshd, host, data };
        r.write("site.toml", &r.remote_policy("known_hosts"));
        r.write(
            "local.toml",
            &mailwise_policy(
                "[[servers]]\nname = \"mw1\"\nrole = \"mailwise\"\n",
                &format!("\"{}\"", r.data.display()),
                "known_hosts",
            ),
        );
        r
    }

    fn remote_policy(&self, known_hosts: &str) -> String {
        mailwise_policy(
            &self.sshd.server_toml("mw1", "mailwise"),
            &format!("{{ server = \"mw1\", path = \"{}\" }}", self.data.display()),
            known_hosts,
        )
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.host.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn hokan(&self, args: &[&str]) -> Output {
        hokan(self.host.path(), args)
    }

    fn policy(&self, name: &str) -> String {
        self.host.path().join(name).to_string_lossy().into_owned()
    }
}

#[test]
fn a_plan_over_ssh_is_the_plan_of_the_same_tree_on_the_host() {
    let r = Remote::new();
    // The plan as JSON, without the set's id (the second it was made in).
    let plan = |policy: &str, op: &str| {
        let out = r.hokan(&[
            "plan",
            &r.policy(policy),
            "--job",
            "mailwise",
            "--op",
            op,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{policy} {op}: {}\n{}",
            text(&out.stderr),
            r.sshd.log()
        );
        let mut doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc.as_object_mut().unwrap().remove("set");
        doc
    };
    for op in ["backup", "maintenance-off"] {
        // The maintenance window is set from the clock in 10-minute steps; planning over ssh
        // before and after the local plan, one of the two was made in the same step.
        let before = plan("site.toml", op);
        let here = plan("local.toml", op);
        let after = plan("site.toml", op);
        assert!(
            here == before || here == after,
            "{op}: the plan over ssh differs from the local one:\n{before}\n{here}"
        );
        // A real plan, not two empty ones: the backup copies the databases it found there.
        if op == "backup" {
            let steps = here["steps"].as_array().unwrap();
            assert!(
                steps
                    .iter()
                    .any(|s| s["action"]["kind"] == "copy-tree"
                        && s["action"]["from"]["root"] == "data"),
                "{here}"
            );
        }
    }
    // Planning is read-only on both sides.
    assert!(!r.host.path().join("backups").exists());
    assert!(
        r.sshd.log().contains("Accepted publickey"),
        "{}",
        r.sshd.log()
    );
}

#[test]
fn an_unknown_host_key_is_refused_with_the_fingerprint_to_pin_and_a_changed_one_as_a_warning() {
    let r = Remote::new();
    std::fs::write(r.host.path().join("empty_known_hosts"), "").unwrap();
    let p = r.write("unpinned.toml", &r.remote_policy("empty_known_hosts"));
    let args = |p: &Path| {
        vec![
            "plan".to_string(),
            p.to_string_lossy().into_owned(),
            "--job".into(),
            "mailwise".into(),
            "--op".into(),
            "backup".into(),
        ]
    };
    let run = |p: &Path| {
        let a = args(p);
        r.hokan(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = run(&p);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("server `mw1`"), "{err}");
    assert!(err.contains("is not pinned in"), "{err}");
    assert!(
        err.contains(&r.sshd.fingerprint()),
        "the fingerprint {} to compare: {err}",
        r.sshd.fingerprint()
    );
    let pin = format!(
        "pin them by adding these lines to {}:\n",
        r.host.path().join("empty_known_hosts").display()
    );
    assert!(err.contains(&pin), "{err}");
    // Nothing was written to the pinned file: the key is never accepted silently.
    assert_eq!(
        std::fs::read_to_string(r.host.path().join("empty_known_hosts")).unwrap(),
        ""
    );

    // The operator compares the fingerprint and adds the lines the message gives; the plan
    // then goes through.
    let lines: String = err[err.find(&pin).unwrap() + pin.len()..]
        .lines()
        .take_while(|l| l.starts_with("  "))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    assert_eq!(lines, r.sshd.known_hosts_line(), "{err}");
    std::fs::write(r.host.path().join("empty_known_hosts"), &lines).unwrap();
    let out = run(&p);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Another key pinned for the address: refused, and said to be a possible interception.
    let other = tempfile::tempdir().unwrap();
    let key = other.path().join("k");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let pub_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut it = pub_key.split_whitespace();
    std::fs::write(
        r.host.path().join("wrong_known_hosts"),
        format!(
            "[127.0.0.1]:{} {} {}\n",
            r.sshd.port,
            it.next().unwrap(),
            it.next().unwrap()
        ),
    )
    .unwrap();
    let p = r.write("wrong.toml", &r.remote_policy("wrong_known_hosts"));
    let out = run(&p);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is NOT the one pinned"), "{err}");
    assert!(err.contains(&r.sshd.fingerprint()), "{err}");
    assert!(
        err.contains(&format!(
            "remove the old line (`ssh-keygen -f {} -R '[127.0.0.1]:{}'`)",
            r.host.path().join("wrong_known_hosts").display(),
            r.sshd.port
        )),
        "{err}"
    );
}

#[test]
fn servers_check_reports_a_ready_server_and_names_every_problem_of_a_broken_one() {
    let r = Remote::new();
    let out = r.hokan(&["servers", "check", &r.policy("site.toml")]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        stdout.starts_with(&format!(
            "remote-site/mw1 (ssh 127.0.0.1): ready, agent hokan {version}\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "  root mailwise.data  {}  readable, writable (the plugin writes it), ",
            r.data.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "  program mailwise.commands.maintenance-mode  {}  present\n",
            standin().display()
        )),
        "{stdout}"
    );

    // The same server with its root gone, a program that is not there, and a second server
    // that does not listen.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let broken = r
        .remote_policy("known_hosts")
        .replace(
            &r.data.display().to_string(),
            &format!("{}/gone", r.data.display()),
        )
        .replace(
            &standin().display().to_string(),
            "/opt/mailwise/bin/mwmaint",
        )
        + &format!(
            "\n[[servers]]\nname = \"mw2\"\nrole = \"mailwise\"\naddress = \"127.0.0.1\"\n\
             transport = \"ssh\"\nport = {dead_port}\n"
        );
    r.write("broken.toml", &broken);
    let out = r.hokan(&["servers", "check", &r.policy("broken.toml"), "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = reports.as_array().unwrap();
    assert_eq!(reports.len(), 2);
    let mw1 = &reports[0];
    assert_eq!(mw1["server"], "mw1");
    assert_eq!(mw1["agent"], version);
    let problems = str_array(&mw1["problems"]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("jobs.mailwise.roots.data: ")
            && problems[0].contains("/gone does not exist on `mw1`"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with("jobs.mailwise.commands.maintenance-mode: /opt/mailwise/bin/mwmaint is not an executable file on `mw1`"),
        "{problems:?}"
    );
    assert_eq!(mw1["roots"][0]["exists"], false);
    assert_eq!(mw1["programs"][0]["present"], false);
    let mw2 = &reports[1];
    assert_eq!(mw2["agent"], serde_json::Value::Null);
    let p = mw2["problems"][0].as_str().unwrap();
    assert!(
        p.starts_with("server `mw2`: ssh could not reach 127.0.0.1: ") && p.contains("refused"),
        "{p}"
    );
}

#[test]
fn a_wrong_agent_path_says_what_is_missing_and_where() {
    let r = Remote::new();
    let policy = r
        .remote_policy("known_hosts")
        .replace(&hokan_bin().display().to_string(), "/opt/no such/hokan");
    let p = r.write("noagent.toml", &policy);
    let out = r.hokan(&[
        "plan",
        &p.to_string_lossy(),
        "--job",
        "mailwise",
        "--op",
        "backup",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("server `mw1`: `/opt/no such/hokan agent` did not answer as hokan's agent")
            && err.contains("exit 127")
            && err.contains("/opt/no such/hokan: No such file or directory"),
        "{err}"
    );
}

/// The events of a `hokan run --json`.
fn events(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every entry below `dir` with what a restore must bring back: kind, mode, mtime, owner,
/// link target and bytes (names as bytes).
fn metadata_tree(dir: &Path) -> Vec<(Vec<u8>, String)> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("-> {:?}", std::fs::read_link(&p).unwrap())
            } else {
                // FNV-1a of the bytes: equal trees have equal lines.
                let h = std::fs::read(&p)
                    .unwrap()
                    .iter()
                    .fold(0xcbf29ce484222325u64, |h, b| {
                        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
                    });
                format!("{h:016x}")
            };
            let mtime = if m.is_dir() {
                0
            } else {
                m.mtime_nsec() + m.mtime() * 1_000_000_000
            };
            out.push((
                p.strip_prefix(dir).unwrap().as_os_str().as_bytes().to_vec(),
                format!("{what} {:o} {}:{} {mtime}", m.mode(), m.uid(), m.gid()),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn mailwise_backup_verify_incremental_and_restore_with_its_data_on_a_server() {
    let r = Remote::new();
    let policy = r.policy("site.toml");
    let run = |op: &str| {
        let out = r.hokan(&[
            "run", &policy, "--job", "mailwise", "--op", op, "--yes", "--json",
        ]);
        assert!(
            out.status.success(),
            "{op}: {}\n{}\n{}",
            text(&out.stderr),
            text(&out.stdout),
            r.sshd.log()
        );
        events(&out)
    };
    let before = metadata_tree(&r.data);
    let logins = || r.sshd.log().matches("Accepted publickey").count();
    let ev = run("backup");
    assert_eq!(
        ev.last().unwrap()["outcome"]["status"],
        "completed",
        "{ev:#?}"
    );
    // One login for the whole run: it planned, acted and verified on the same session.
    assert_eq!(logins(), 1, "{}", r.sshd.log());
    let done = ev.iter().find(|e| e["record"] == "set-complete").unwrap();
    let first = done["set"].as_str().unwrap().to_string();
    assert_eq!(done["files_linked"], 0);
    assert_eq!(
        metadata_tree(&r.data),
        before,
        "the backup changed the server's tree"
    );
    assert!(
        !r.data.join("mw/data/maint").exists(),
        "maintenance is released"
    );
    // Its commands ran on the server, through the agent's ledger there.
    let ledger: Vec<_> = std::fs::read_dir(r.sshd.ledger()).unwrap().collect();
    assert!(
        !ledger.is_empty(),
        "no command went through the server's ledger"
    );
    let sets = r.host.path().join("backups/remote-site/mailwise");
    let set = sets.join(&first);
    // The set holds the server's tree byte for byte, and verifies on the host.
    assert_eq!(
        std::fs::read(set.join("file/ws2/0001.eml")).unwrap(),
        std::fs::read(r.data.join("mw/file/ws2/0001.eml")).unwrap()
    );
    let out = r.hokan(&["verify", set.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).starts_with("ok: "),
        "{}",
        text(&out.stdout)
    );

    // A second backup of the unchanged tree links every file but the maintenance marker.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let ev = run("backup");
    let done = ev.iter().find(|e| e["record"] == "set-complete").unwrap();
    let second = done["set"].as_str().unwrap().to_string();
    assert_eq!(
        done["files"],
        done["files_linked"].as_u64().unwrap() + 1,
        "only the maintenance marker is new: {done}"
    );
    use std::os::unix::fs::MetadataExt;
    let ino = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(sets.join(&first).join("back1/data/mail.odb")),
        ino(sets.join(&second).join("back1/data/mail.odb"))
    );

    // A restore over changed data on the server: the set comes back there, the changed data
    // is kept beside it, maintenance is released.
    std::fs::write(
        r.data.join("mw/file/ws1/0000.eml"),
        b"changed after the backup",
    )
    .unwrap();
    let ev = run("restore");
    assert_eq!(
        ev.last().unwrap()["outcome"]["status"],
        "completed",
        "{ev:#?}"
    );
    assert_eq!(
        std::fs::read(r.data.join("mw/file/ws1/0000.eml")).unwrap(),
        std::fs::read(sets.join(&second).join("file/ws1/0000.eml")).unwrap()
    );
    assert_eq!(
        std::fs::read(r.data.join("mw/file_bak/ws1/0000.eml")).unwrap(),
        b"changed after the backup"
    );
    assert!(!r.data.join("mw/data/maint").exists());
    assert!(!r.data.join("mw/hokan-restore").exists());
    // What came back is the set's tree with every file's mode, owner and mtime.
    let restored: Vec<_> = metadata_tree(&r.data.join("mw/file"));
    let backed: Vec<_> = metadata_tree(&sets.join(&second).join("file"));
    assert_eq!(restored, backed);
    assert_eq!(
        metadata_tree(&r.data.join("mw/data"))
            .into_iter()
            .filter(|(p, _)| p != b"maint")
            .collect::<Vec<_>>(),
        metadata_tree(&sets.join(&second).join("data"))
            .into_iter()
            .filter(|(p, _)| p != b"maint")
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_server_down_at_cleanup_leaves_the_run_for_recover_which_releases_maintenance_once_it_is_back()
{
    let mut r = Remote::new();
    let (policy, status) = down_during_maintenance_on(&mut r);
    let dir = r.host.path().to_path_buf();
    let maint = r.data.join("mw/data/maint");
    let stdout = std::fs::read(dir.join("run.out")).unwrap();
    let ev: Vec<serde_json::Value> = text(&stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let end = ev.last().unwrap();
    assert_eq!(
        status.code(),
        Some(4),
        "needs attention: {end:#}\n{}",
        std::fs::read_to_string(dir.join("run.err")).unwrap_or_default()
    );
    let outcome = &end["outcome"];
    assert_eq!(outcome["status"], "failed", "{end:#}");
    // Both of its cleanup steps, the second because its condition cannot be read there.
    let deferred = str_array(&outcome["cleanup_deferred"]);
    assert_eq!(deferred.len(), 2, "{end:#}");
    assert!(deferred[0].starts_with("`maintenance-off`: "), "{end:#}");
    assert!(
        deferred[1].starts_with("`maintenance-off-command`: cannot evaluate"),
        "{end:#}"
    );
    for d in &deferred {
        assert!(
            d.contains("server `mw1`") && d.contains("Connection refused"),
            "names the server and why: {d}"
        );
    }
    assert!(
        outcome["reason"]
            .as_str()
            .unwrap()
            .contains("maintenance-on"),
        "{end:#}"
    );
    assert!(outcome.get("set").is_none(), "no set from a failed run");
    // Maintenance is still set on the server, and the run is not over: its journal waits for
    // `hokan recover`, and a new run of the job refuses until then.
    assert!(maint.exists());
    let state = dir.join("state");
    let waiting: Vec<_> = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(waiting.len(), 1);
    let again = backup(&r, &policy, &[]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("did not finish")
            && text(&again.stderr).contains("hokan recover"),
        "{}",
        text(&again.stderr)
    );

    // Still down: recovery tries, says so, and leaves the run for the next one.
    let rec = r.hokan(&["recover", "--json"]);
    assert_eq!(rec.status.code(), Some(4), "{}", text(&rec.stdout));
    assert!(maint.exists());
    assert!(waiting[0].path().exists());

    // Back: recovery releases maintenance mode and finishes the run as it had ended.
    r.sshd.restart();
    let rec = r.hokan(&["recover"]);
    assert!(
        rec.status.success(),
        "{}\n{}\n{}",
        text(&rec.stdout),
        text(&rec.stderr),
        r.sshd.log()
    );
    assert!(!maint.exists(), "maintenance is released on the server");
    assert!(!waiting[0].path().exists());
    let done = state.join("runs/done").join(waiting[0].file_name());
    let records = std::fs::read_to_string(&done).unwrap();
    let finish: serde_json::Value = serde_json::from_str(records.lines().last().unwrap()).unwrap();
    assert_eq!(finish["record"], "finish", "{finish:#}");
    assert_eq!(finish["outcome"]["status"], "failed", "{finish:#}");
    assert!(
        finish["outcome"].get("cleanup_deferred").is_none(),
        "{finish:#}"
    );
    // The command cut off by the outage ran to its end on the server: the ledger has its exit.
    let on = ledger_entry_of_on(&r).expect("maintenance-on is in the server's ledger");
    let exit: serde_json::Value =
        serde_json::from_slice(&std::fs::read(on.join("exit.json")).unwrap()).unwrap();
    assert_eq!(exit["code"], 0, "{exit}");
    // And the next backup runs whole.
    let ok = backup(&r, &policy, &["--yes"]);
    assert!(ok.status.success(), "{}", text(&ok.stdout));
    assert!(!maint.exists());
}

/// A backup of `r`'s site whose server goes down in the middle of maintenance-on and stays
/// down through the cleanup: the policy it ran, and how it ended. Setting maintenance mode takes
/// a few seconds on this "server", long enough to take the server down while it runs; the
/// command, detached, finishes there all the same.
fn down_during_maintenance_on(r: &mut Remote) -> (PathBuf, std::process::ExitStatus) {
    let policy = slowed_maintenance(r, "down", "", "sleep 3");
    let mut run = spawn_backup(r, &policy);
    let maint = r.data.join("mw/data/maint");
    wait_while_running(r, &mut run, "maintenance mode", || maint.exists());
    r.sshd.stop();
    (policy, run.wait().unwrap())
}

/// A maintenance-mode command for `r`'s server that runs `on_first` (shell) before it sets
/// maintenance mode, written there; and the policy that maps it, as `name`.
fn slowed_maintenance(r: &Remote, name: &str, on_first: &str, on_after: &str) -> PathBuf {
    let script = r.sshd.dir.path().join(format!("{name}-maintenance"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = on ]; then {on_first}\n\"{0}\" \"$@\" || exit; {on_after}\nexit 0; fi\nexec \"{0}\" \"$@\"\n",
            standin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    r.write(
        &format!("{name}.toml"),
        &r.remote_policy("known_hosts").replace(
            &standin().display().to_string(),
            &script.display().to_string(),
        ),
    )
}

/// `hokan run POLICY --job mailwise --op backup` with `extra`.
fn backup(r: &Remote, policy: &Path, extra: &[&str]) -> Output {
    let p = policy.to_str().unwrap();
    r.hokan(&[&["run", p, "--job", "mailwise", "--op", "backup"], extra].concat())
}

/// `hokan run POLICY --job mailwise --op backup --yes --json` in the background, its stdout and
/// stderr in `run.out` and `run.err` beside the policy.
fn spawn_backup(r: &Remote, policy: &Path) -> std::process::Child {
    spawn_op(r, policy, "backup")
}

/// [`spawn_backup`] of any operation.
fn spawn_op(r: &Remote, policy: &Path, op: &str) -> std::process::Child {
    let dir = r.host.path();
    let p = policy.to_str().unwrap();
    hokan_command(dir, &["run", p, "--job", "mailwise", "--op", op])
        .args(["--yes", "--json"])
        .stdout(std::fs::File::create(dir.join("run.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("run.err")).unwrap())
        .spawn()
        .unwrap()
}

/// Waits (bounded) until `done` holds while `run` is still going.
fn wait_while_running(
    r: &Remote,
    run: &mut std::process::Child,
    what: &str,
    done: impl Fn() -> bool,
) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < until && run.try_wait().unwrap().is_none(),
            "{what} never happened: {}",
            std::fs::read_to_string(r.host.path().join("run.err")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The server's ledger entry of mailwise's `maintenance-mode on`.
fn ledger_entry_of_on(r: &Remote) -> Option<PathBuf> {
    std::fs::read_dir(r.sshd.ledger())
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|d| {
            std::fs::read_to_string(d.join("command.json"))
                .is_ok_and(|c| c.contains("\"on\",\"--start\""))
        })
}

#[test]
fn hokan_killed_while_a_remote_command_runs_is_recovered_after_that_command_ends() {
    let r = Remote::new();
    // Maintenance mode takes 3 s to set: a cleanup that did not wait for the command would
    // release it before it is set, and it would stay set.
    let policy = slowed_maintenance(&r, "late", "sleep 3", "");
    let mut run = spawn_backup(&r, &policy);
    wait_while_running(
        &r,
        &mut run,
        "maintenance-on starting on the server",
        || ledger_entry_of_on(&r).is_some_and(|d| d.join("pid").exists()),
    );
    run.kill().unwrap();
    run.wait().unwrap();
    let maint = r.data.join("mw/data/maint");
    assert!(!maint.exists(), "still setting maintenance mode");

    let rec = r.hokan(&["recover"]);
    let said = text(&rec.stdout);
    assert!(rec.status.success(), "{said}\n{}", text(&rec.stderr));
    let entry = ledger_entry_of_on(&r).unwrap();
    assert!(entry.join("exit.json").exists(), "recovery waited for it");
    assert!(
        !maint.exists(),
        "set, then released by the cleanup after it: {said}"
    );
    let id = entry.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        said.contains(&format!("the ledger on `mw1`: command {id} exited 0")),
        "{said}"
    );
    // The journal has the command's real exit before any step of the cleanup.
    let done: Vec<PathBuf> = std::fs::read_dir(r.host.path().join("state/runs/done"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(done.len(), 1);
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&done[0])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let exit = records
        .iter()
        .position(|r| r["record"] == "remote-exit" && r["id"] == id.as_str())
        .expect("the command's exit is journaled");
    assert_eq!(records[exit]["code"], 0, "{:#}", records[exit]);
    let first_cleanup = records
        .iter()
        .position(|r| r["record"] == "step-start" && r["phase"] == "recovery")
        .unwrap();
    assert!(exit < first_cleanup);
    assert_eq!(records.last().unwrap()["outcome"]["status"], "recovered");
    // Nothing is left: no set, no run waiting.
    let sets = r.host.path().join("backups/remote-site/mailwise");
    assert!(
        std::fs::read_dir(&sets).map_or(true, |d| d.count() == 0),
        "no partial set is left"
    );
}

#[test]
fn install_agent_puts_this_hokan_on_a_server_once_replaces_a_broken_one_and_refuses_the_unsafe() {
    let r = Remote::new();
    let agent = r.sshd.dir.path().join("opt/hokan dir/hokan");
    let bin = hokan_bin().display().to_string();
    let with_agent = |name: &str, agent: &str, known_hosts: &str| {
        r.write(
            name,
            &r.remote_policy(known_hosts).replace(
                &format!("agent = \"{bin}\""),
                &format!("agent = \"{agent}\""),
            ),
        )
    };
    let policy = with_agent("install.toml", agent.to_str().unwrap(), "known_hosts");
    let install = |policy: &Path, extra: &[&str]| {
        let p = policy.to_str().unwrap();
        r.hokan(&[&["servers", "install-agent", p, "--server", "mw1"], extra].concat())
    };
    // None there: copied whole, executable, and it answers; the server is then ready.
    let out = install(&policy, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("installed hokan {}", env!("CARGO_PKG_VERSION"))),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read(&agent).unwrap(),
        std::fs::read(hokan_bin()).unwrap()
    );
    let check = r.hokan(&["servers", "check", policy.to_str().unwrap()]);
    assert!(check.status.success(), "{}", text(&check.stdout));
    // Already this version: nothing copied.
    let before = std::fs::metadata(&agent).unwrap().modified().unwrap();
    let out = install(&policy, &[]);
    assert!(out.status.success() && text(&out.stdout).contains("nothing copied"));
    assert_eq!(
        std::fs::metadata(&agent).unwrap().modified().unwrap(),
        before
    );
    // A broken one is replaced.
    std::fs::write(&agent, "#!/bin/sh\necho not hokan\n").unwrap();
    let out = install(&policy, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("before: server `mw1`"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read(&agent).unwrap(),
        std::fs::read(hokan_bin()).unwrap()
    );

    // A bare name has no file to write to: said, with the fix.
    let bare = with_agent("bare.toml", "hokan", "known_hosts");
    let out = install(&bare, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("set `agent` in its [[servers]] table to the absolute path"),
        "{}",
        text(&out.stderr)
    );
    // An unpinned host key: refused, nothing written.
    std::fs::write(r.host.path().join("empty_known_hosts"), "").unwrap();
    let elsewhere = r.sshd.dir.path().join("elsewhere/hokan");
    let unpinned = with_agent(
        "unpinned.toml",
        elsewhere.to_str().unwrap(),
        "empty_known_hosts",
    );
    let out = install(&unpinned, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not pinned"),
        "{}",
        text(&out.stderr)
    );
    assert!(!elsewhere.exists());
    // A server the policy does not have.
    let p = policy.to_str().unwrap();
    let out = r.hokan(&["servers", "install-agent", p, "--server", "mw9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no server `mw9`") && text(&out.stderr).contains("mw1"));
}

#[test]
fn simulate_from_tree_models_the_servers_tree_as_it_models_the_hosts() {
    let r = Remote::new();
    let sim = |policy: &str| {
        let out = r.hokan(&[
            "simulate",
            &r.policy(policy),
            "--from-tree",
            "--op",
            "backup",
            "--faults",
            "each-step",
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{policy}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let sessions = || r.sshd.log().matches("Accepted publickey").count();
    let before = sessions();
    let over_ssh = sim("site.toml");
    assert_eq!(sessions(), before + 1, "one agent session for the scan");
    assert!(
        over_ssh.contains("+ set:/back10 (2 file(s), 8.0 KiB)"),
        "{over_ssh}"
    );
    assert!(over_ssh.contains("every invariant held"), "{over_ssh}");
    // The same tree scanned on the host: the same scenarios with the same outcomes (the set's
    // id, from the clock, may differ).
    let here = sim("local.toml");
    let strip = |s: &str| {
        s.lines()
            .map(|l| {
                l.split_whitespace()
                    .map(|w| {
                        let id = w.trim_end_matches([')', ',']);
                        if id.len() == 16 && id.contains('T') && id.ends_with('Z') {
                            "ID"
                        } else {
                            w
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
    };
    // Over ssh the server can also go down after each step that needs it: every such scenario
    // keeps the invariants, its cleanup there deferred and finished by the recovery once the
    // server is back. The rest is the host's report, scenario for scenario.
    let down: Vec<&str> = over_ssh
        .lines()
        .filter(|l| l.contains("server-down-after"))
        .collect();
    assert_eq!(down.len(), 15, "{over_ssh}");
    assert!(down.iter().all(|l| l.ends_with(" ok")), "{down:#?}");
    // Down once maintenance mode is set: both of the cleanup's steps there wait for the
    // server (as `a_server_down_at_cleanup_...` sees them wait for real).
    assert!(
        down.iter().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.join(" ")
                == "server-down-after maintenance-on (mw1) aborted at maintenance-on-confirmed; 2 \
                    cleanup step(s) deferred, run by the recovery once the server was back ok"
        }),
        "{down:#?}"
    );
    assert!(!here.contains("server-down-after"), "{here}");
    let common = |s: &str| -> Vec<String> {
        strip(s)
            .into_iter()
            .filter(|l| !l.contains("server-down-after") && !l.contains("scenario(s)"))
            .collect()
    };
    assert_eq!(common(&over_ssh), common(&here));
    assert!(!r.data.join("mw/data/maint").exists(), "read-only");
}

/// The policy's ssh settings for `sshd`, pinned.
fn ssh_of(sshd: &Sshd, known_hosts: &Path) -> hokan::policy::Ssh {
    std::fs::write(known_hosts, sshd.known_hosts_line()).unwrap();
    hokan::policy::Ssh {
        address: "127.0.0.1".into(),
        user: None,
        port: Some(sshd.port),
        identity: Some(sshd.identity()),
        agent: hokan_bin().to_string_lossy().into_owned(),
        known_hosts: known_hosts.to_path_buf(),
    }
}

#[test]
fn over_ssh_the_agent_serves_nothing_outside_the_roots_it_was_granted() {
    use hokan::facts::{FactError, FactSource};
    use hokan::plan::Location;
    let sshd = Sshd::start();
    let server = sshd.dir.path();
    std::fs::create_dir_all(server.join("srv/data/mw")).unwrap();
    std::fs::write(server.join("srv/data/mw/conf.ini"), "[mw]\n").unwrap();
    std::fs::create_dir_all(server.join("srv/other")).unwrap();
    std::fs::write(server.join("srv/other/secret"), "not granted").unwrap();
    std::os::unix::fs::symlink(server.join("srv/other"), server.join("srv/data/out")).unwrap();
    std::os::unix::fs::symlink("../../other/secret", server.join("srv/data/mw/rel")).unwrap();
    let host = tempfile::tempdir().unwrap();
    let ssh = ssh_of(&sshd, &host.path().join("known_hosts"));
    let roots = std::collections::BTreeMap::from([(
        "data".to_string(),
        server.join("srv/data").to_string_lossy().into_owned(),
    )]);
    let s = hokan::remote::ssh::Session::connect("mw1", &ssh, roots).unwrap();
    let at = |p: &str| Location::new("data", p);
    assert_eq!(s.read(&at("mw/conf.ini"), 64).unwrap(), b"[mw]\n");
    for p in [
        "../other/secret",
        "mw/../../other/secret",
        "/etc/passwd",
        &server.join("srv/other/secret").to_string_lossy(),
    ] {
        assert!(
            matches!(s.read(&at(p), 64), Err(FactError::InvalidPath(_))),
            "{p}: {:?}",
            s.read(&at(p), 64)
        );
    }
    // Symlinks out of the root, absolute and relative, are not followed.
    for p in ["out/secret", "mw/rel"] {
        let r = s.read(&at(p), 64);
        assert!(r.is_err(), "{p}: {r:?}");
    }
    assert!(
        s.list_dir(&at("out")).is_err(),
        "a symlinked directory is not listed"
    );
    // A root the handshake did not grant.
    assert_eq!(
        s.exists(&Location::new("other", "secret")),
        Err(FactError::RootNotGranted("other".into()))
    );
}

#[test]
fn over_ssh_an_agent_refuses_a_protocol_it_does_not_speak_naming_both() {
    let sshd = Sshd::start();
    let host = tempfile::tempdir().unwrap();
    let ssh = ssh_of(&sshd, &host.path().join("known_hosts"));
    let child = Command::new("ssh")
        .args(hokan::remote::ssh::argv(&ssh).unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (reason, out) = super::remote::offer_protocol_99(child);
    assert!(
        reason.contains("the host's hokan 0.2.0 speaks agent protocol 99")
            && reason.contains(&format!("speaks {}", hokan::remote::PROTOCOL)),
        "{reason}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "the agent's exit, passed on by ssh"
    );
}

/// A server whose key may run only `hokan agent --ledger <its dir>/ledger` (the forced
/// command the docs show), with a root `data`; a session to it.
fn ledger_server() -> (Sshd, tempfile::TempDir, hokan::remote::ssh::Session) {
    let sshd = Sshd::start();
    let ledger = sshd.dir.path().join("ledger");
    sshd.force_command(&format!(
        "{} agent --ledger {}",
        hokan_bin().display(),
        ledger.display()
    ));
    std::fs::create_dir_all(sshd.dir.path().join("srv/data")).unwrap();
    let host = tempfile::tempdir().unwrap();
    let mut ssh = ssh_of(&sshd, &host.path().join("known_hosts"));
    ssh.agent = "ignored-by-the-forced-command".into();
    let session = connect(&sshd, &ssh);
    (sshd, host, session)
}

fn connect(sshd: &Sshd, ssh: &hokan::policy::Ssh) -> hokan::remote::ssh::Session {
    let roots = std::collections::BTreeMap::from([(
        "data".to_string(),
        sshd.dir
            .path()
            .join("srv/data")
            .to_string_lossy()
            .into_owned(),
    )]);
    hokan::remote::ssh::Session::connect("mw1", ssh, roots).unwrap()
}

fn remote_cmd<'a>(
    argv: &'a [String],
    cwd: Option<&'a hokan::plan::Location>,
    env: &'a [(String, String)],
    timeout: Option<std::time::Duration>,
) -> hokan::remote::ssh::RemoteCommand<'a> {
    hokan::remote::ssh::RemoteCommand {
        argv,
        cwd,
        env,
        timeout,
        at_limit: hokan::drive::AtLimit::Kill,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_remote_command_gets_its_argv_as_a_list_its_root_as_cwd_and_its_environment() {
    let (sshd, _host, s) = ledger_server();
    let hostile = [
        "a; touch /tmp/hokan-pwned",
        "$(id)",
        "`id`",
        "two  words",
        "'q' \"d\"",
        "*",
    ];
    let mut argv = strings(&[
        "/bin/sh",
        "-c",
        "pwd; echo \"$HOKAN_SERVER\"; printf '<%s>\\n' \"$@\"; exit 3",
        "sh",
    ]);
    argv.extend(strings(&hostile));
    let cwd = hokan::plan::Location::new("data", "");
    let env = vec![("HOKAN_SERVER".to_string(), "mw1".to_string())];
    let out = s
        .exec("run1.step1.1", remote_cmd(&argv, Some(&cwd), &env, None))
        .unwrap();
    assert_eq!(out.code, Some(3), "{out:?}");
    let mut want = format!("{}\nmw1\n", sshd.dir.path().join("srv/data").display());
    for h in hostile {
        want.push_str(&format!("<{h}>\n"));
    }
    assert_eq!(out.stdout, want, "each argument arrived as it was sent");
    assert!(!Path::new("/tmp/hokan-pwned").exists());
    // Recorded in the server's ledger, and asking again runs nothing twice.
    let entry = sshd.dir.path().join("ledger/run1.step1.1");
    assert!(entry.join("exit.json").exists());
    let again = s
        .exec("run1.step1.1", remote_cmd(&argv, Some(&cwd), &env, None))
        .unwrap();
    assert_eq!(again.stdout, out.stdout);
    // A working directory outside the roots is refused before anything runs.
    let outside = hokan::plan::Location::new("data", "../..");
    let e = s
        .exec(
            "run1.step2.1",
            remote_cmd(&argv, Some(&outside), &env, None),
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("its working directory: invalid path"),
        "{e}"
    );
    let e = s
        .exec(
            "run1.step3.1",
            remote_cmd(&strings(&["/nonexistent/mwsave"]), None, &[], None),
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("cannot run /nonexistent/mwsave"),
        "{e}"
    );
}

#[test]
fn a_remote_command_past_its_limit_is_killed_with_everything_it_started() {
    let (sshd, _host, s) = ledger_server();
    let marker = sshd.dir.path().join("srv/data/still-running");
    let script = format!("(sleep 3; touch {}) & sleep 30", marker.display());
    let argv = strings(&["/bin/sh", "-c", &script]);
    let t = std::time::Instant::now();
    let out = s
        .exec(
            "run2.sleep.1",
            remote_cmd(
                &argv,
                None,
                &[],
                Some(std::time::Duration::from_millis(300)),
            ),
        )
        .unwrap();
    assert!(out.timed_out && out.code.is_none(), "{out:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(
        !marker.exists(),
        "the command's background child was killed with it"
    );
}

#[test]
fn a_command_outlives_its_ssh_session_and_the_ledger_gives_its_real_exit_to_a_new_one() {
    let (sshd, host, s) = ledger_server();
    let done = sshd.dir.path().join("srv/data/done");
    let script = format!(
        "sleep 2; echo finished > {}; echo bye; exit 7",
        done.display()
    );
    let argv = strings(&["/bin/sh", "-c", &script]);
    // Started, then the connection dies mid-command: kill -9 sshd's session process.
    let first = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| s.exec("run3.cmd.1", remote_cmd(&argv, None, &[], None)));
        // The session process is the listening sshd's child; wait until the command runs.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !sshd.dir.path().join("ledger/run3.cmd.1/pid").exists() {
            assert!(
                std::time::Instant::now() < until,
                "the command never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let children = Command::new("pgrep")
            .args(["-P", &sshd.pid().to_string()])
            .output()
            .unwrap();
        let pids = text(&children.stdout);
        assert!(!pids.trim().is_empty(), "no session process");
        for pid in pids.split_whitespace() {
            Command::new("kill").args(["-9", pid]).status().unwrap();
        }
        waiting.join().unwrap()
    });
    assert!(
        matches!(first, Err(hokan::remote::ssh::ActionError::Connection(_))),
        "{first:?}"
    );
    assert!(!done.exists(), "killed before the command finished");
    // A new session asks the ledger, with the same id: nothing is started twice, and the
    // command's real end comes back.
    let mut ssh = ssh_of(&sshd, &host.path().join("known_hosts"));
    ssh.agent = "ignored".into();
    let again = connect(&sshd, &ssh);
    let out = again
        .exec("run3.cmd.1", remote_cmd(&argv, None, &[], None))
        .unwrap();
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(7), "bye\n"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&done).unwrap(),
        "finished\n",
        "it ran once, to its end"
    );
    // Recovery's question starts nothing: the same end, and no command for an id never used.
    let settled = again
        .settle("run3.cmd.1", "sh", None, hokan::drive::AtLimit::Kill)
        .unwrap()
        .unwrap();
    assert_eq!(settled.code, Some(7));
    assert!(
        again
            .settle("run3.cmd.2", "sh", None, hokan::drive::AtLimit::Kill)
            .unwrap()
            .is_none()
    );
    assert!(
        !sshd.ledger().join("run3.cmd.2").exists(),
        "nothing was started for the unknown id"
    );
}

#[test]
fn file_actions_on_a_server_change_only_its_writable_roots_and_never_leave_them() {
    use hokan::plan::Location;
    use hokan::remote::ssh::{ActionError, Session};
    let sshd = Sshd::start();
    let srv = sshd.dir.path().join("srv");
    for d in ["data", "conf", "outside"] {
        std::fs::create_dir_all(srv.join(d)).unwrap();
    }
    std::fs::write(srv.join("conf/mw.ini"), "[mw]\n").unwrap();
    std::fs::write(srv.join("outside/keep"), "untouched").unwrap();
    std::os::unix::fs::symlink(srv.join("outside"), srv.join("data/out")).unwrap();
    let host = tempfile::tempdir().unwrap();
    let ssh = ssh_of(&sshd, &host.path().join("known_hosts"));
    let roots = std::collections::BTreeMap::from([
        (
            "data".to_string(),
            srv.join("data").to_string_lossy().into_owned(),
        ),
        (
            "conf".to_string(),
            srv.join("conf").to_string_lossy().into_owned(),
        ),
    ]);
    let s = Session::connect_granting(
        "mw1",
        &ssh,
        roots.clone(),
        std::collections::BTreeSet::from(["data".to_string()]),
    )
    .unwrap();
    let at = |p: &str| Location::new("data", p);
    // mailwise's maintenance marker, made, renamed and removed.
    assert!(s.ensure_dir(&at("mw/data")).unwrap());
    assert!(!s.ensure_dir(&at("mw/data")).unwrap(), "already there");
    s.write_file(&at("mw/data/maint"), b"23:00-23:20\n")
        .unwrap();
    assert_eq!(
        std::fs::read(srv.join("data/mw/data/maint")).unwrap(),
        b"23:00-23:20\n"
    );
    s.write_file(&at("mw/data/other"), b"x").unwrap();
    let e = s
        .rename(&at("mw/data/maint"), &at("mw/data/other"))
        .unwrap_err();
    assert!(
        matches!(&e, ActionError::Failed(m) if m.contains("already exists")),
        "{e}"
    );
    s.rename(&at("mw/data/maint"), &at("mw/data/maint.old"))
        .unwrap();
    assert!(s.remove(&at("mw/data/maint.old")).unwrap());
    assert!(
        !s.remove(&at("mw/data/maint.old")).unwrap(),
        "nothing there"
    );
    // Out of the root: `..`, an absolute path, through a symlink; into a read-only root.
    for p in ["../outside/keep", "/tmp/x", "out/keep", "out/new"] {
        let e = s.write_file(&at(p), b"overwritten").unwrap_err();
        assert!(matches!(e, ActionError::Failed(_)), "{p}: {e}");
        let e = s.remove(&at(p));
        assert!(matches!(e, Err(ActionError::Failed(_))), "{p}: {e:?}");
    }
    assert_eq!(
        std::fs::read_to_string(srv.join("outside/keep")).unwrap(),
        "untouched"
    );
    assert!(!srv.join("outside/new").exists());
    let e = s
        .write_file(&Location::new("conf", "mw.ini"), b"changed")
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("the root `conf` is read-only to this connection"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(srv.join("conf/mw.ini")).unwrap(),
        "[mw]\n"
    );
    // A planning session writes nothing at all.
    drop(s);
    let read_only = Session::connect("mw1", &ssh, roots).unwrap();
    let e = read_only.write_file(&at("x"), b"x").unwrap_err();
    assert!(
        e.to_string().contains("read-only to this connection"),
        "{e}"
    );
    assert!(!srv.join("data/x").exists());
}

/// The size of the big file a slow link carries.
const BIG: u64 = 48 << 20;

/// The policy of `r`'s site with its server reached over a slow link: the agent's input and
/// output pass through `pv` at 16 MiB/s, as over a customer's WAN. Its mail space gets a file of
/// [`BIG`] bytes (not zeros, which would be holes), so that copying it takes seconds: long
/// enough to cut the connection in the middle.
fn slow_link(r: &Remote) -> PathBuf {
    use std::io::Write;
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 | 1)
        .collect();
    let mut big = std::fs::File::create(r.data.join("mw/file/ws1/big.eml")).unwrap();
    for _ in 0..BIG >> 20 {
        big.write_all(&block).unwrap();
    }
    let agent = r.sshd.dir.path().join("slow-agent");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\npv -q -L 16m | \"{}\" \"$@\" | pv -q -L 16m\n",
            hokan_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    r.write(
        "slow.toml",
        &r.remote_policy("known_hosts").replace(
            &format!("agent = \"{}\"", hokan_bin().display()),
            &format!("agent = \"{}\"", agent.display()),
        ),
    )
}

/// The length of the first file named `name` at or below `dir` (hidden directories too).
fn length_of(dir: &Path, name: &str) -> Option<u64> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let m = e.metadata().ok()?;
        if m.is_dir() {
            if let Some(len) = length_of(&e.path(), name) {
                return Some(len);
            }
        } else if e.file_name() == name {
            return Some(m.len());
        }
    }
    None
}

/// The records of a run spawned by [`spawn_op`], and what it logged.
fn spawned_output(r: &Remote) -> (Vec<serde_json::Value>, String) {
    let dir = r.host.path();
    let out = std::fs::read_to_string(dir.join("run.out")).unwrap();
    let ev = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (ev, std::fs::read_to_string(dir.join("run.err")).unwrap())
}

#[test]
fn a_backup_whose_connection_drops_in_the_middle_of_a_copy_copies_again_and_leaves_nothing_partial()
{
    let r = Remote::new();
    let policy = slow_link(&r);
    let before = metadata_tree(&r.data);
    let sets = r.host.path().join("backups/remote-site/mailwise");
    let mut run = spawn_backup(&r, &policy);
    wait_while_running(&r, &mut run, "the big file half copied", || {
        length_of(&sets, "big.eml").is_some_and(|len| len > 0 && len < BIG)
    });
    r.sshd.drop_sessions();
    let status = run.wait().unwrap();
    let (ev, err) = spawned_output(&r);
    assert!(status.success(), "{err}\n{ev:#?}");
    assert!(
        err.contains("server `mw1`: the connection failed in the middle of the copy of")
            && err.contains("copying it again over a new connection"),
        "says what happened: {err}"
    );
    let end = ev.last().unwrap();
    assert_eq!(end["outcome"]["status"], "completed", "{end:#}");
    let id = end["outcome"]["set"].as_str().unwrap();
    // One set, complete: the cut copy left nothing in it, nor any partial set beside it.
    let listed: Vec<_> = std::fs::read_dir(&sets)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(listed, [id], "only the complete set is there");
    let set = sets.join(id);
    let out = r.hokan(&["verify", set.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(
        std::fs::read(set.join("file/ws1/big.eml")).unwrap(),
        std::fs::read(r.data.join("mw/file/ws1/big.eml")).unwrap()
    );
    assert_eq!(
        metadata_tree(&r.data),
        before,
        "the server's tree is as it was"
    );
    assert!(
        !r.data.join("mw/data/maint").exists(),
        "maintenance is released"
    );
}

#[test]
fn a_restore_whose_connection_drops_in_the_middle_of_a_copy_leaves_no_partial_file_on_the_server() {
    let r = Remote::new();
    let policy = slow_link(&r);
    let ok = backup(&r, &r.host.path().join("site.toml"), &["--yes"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    std::fs::write(
        r.data.join("mw/file/ws1/big.eml"),
        b"changed after the backup",
    )
    .unwrap();
    let staging = r.data.join("mw/hokan-restore");
    let mut run = spawn_op(&r, &policy, "restore");
    wait_while_running(&r, &mut run, "the big file half restored", || {
        length_of(&staging, "big.eml").is_some_and(|len| len > 0 && len < BIG)
    });
    r.sshd.drop_sessions();
    let status = run.wait().unwrap();
    let (ev, err) = spawned_output(&r);
    assert!(status.success(), "{err}\n{ev:#?}");
    assert!(
        err.contains("copying it again over a new connection"),
        "says what happened: {err}"
    );
    assert_eq!(ev.last().unwrap()["outcome"]["status"], "completed");
    // The agent removed what it had made of the cut copy (the new one could not have been made
    // over it), and what came back is the set, whole, with the changed data kept beside it.
    let sets = r.host.path().join("backups/remote-site/mailwise");
    let set = std::fs::read_dir(&sets)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        metadata_tree(&r.data.join("mw/file")),
        metadata_tree(&set.join("file"))
    );
    assert_eq!(
        std::fs::read(r.data.join("mw/file/ws1/big.eml")).unwrap(),
        std::fs::read(set.join("file/ws1/big.eml")).unwrap()
    );
    assert_eq!(
        std::fs::read(r.data.join("mw/file_bak/ws1/big.eml")).unwrap(),
        b"changed after the backup"
    );
    assert!(!staging.exists());
    assert!(
        !r.data.join("mw/data/maint").exists(),
        "maintenance is released"
    );
}

#[test]
fn a_connection_dropped_while_a_remote_command_runs_is_reconnected_and_the_ledger_gives_its_exit() {
    let r = Remote::new();
    let policy = slowed_maintenance(&r, "cut", "sleep 2", "");
    let mut run = spawn_backup(&r, &policy);
    wait_while_running(&r, &mut run, "maintenance-on running on the server", || {
        ledger_entry_of_on(&r).is_some_and(|d| d.join("pid").exists())
    });
    r.sshd.drop_sessions();
    let status = run.wait().unwrap();
    let (ev, err) = spawned_output(&r);
    assert!(status.success(), "{err}\n{ev:#?}");
    let entry = ledger_entry_of_on(&r).unwrap();
    let id = entry.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        err.contains(&format!("reconnecting to ask its ledger (id {id})")),
        "{err}"
    );
    // The command ran once, to its end: its exit is the ledger's, journaled, and the run went on.
    let exit = ev
        .iter()
        .find(|e| e["record"] == "remote-exit" && e["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no remote-exit of {id}: {ev:#?}"));
    assert_eq!(exit["code"], 0, "{exit:#}");
    let starts = ev
        .iter()
        .filter(|e| e["record"] == "remote-command" && e["id"] == id.as_str())
        .count();
    assert_eq!(starts, 1, "started once, not again after the reconnect");
    let end = ev.last().unwrap();
    assert_eq!(end["outcome"]["status"], "completed", "{end:#}");
    let set = r
        .host
        .path()
        .join("backups/remote-site/mailwise")
        .join(end["outcome"]["set"].as_str().unwrap());
    let out = r.hokan(&["verify", set.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        !r.data.join("mw/data/maint").exists(),
        "maintenance is released"
    );
}

#[test]
fn the_daemon_runs_recovery_again_until_a_server_down_at_cleanup_is_back() {
    let mut r = Remote::new();
    let (policy, status) = down_during_maintenance_on(&mut r);
    let dir = r.host.path().to_path_buf();
    let maint = r.data.join("mw/data/maint");
    assert_eq!(status.code(), Some(4), "needs attention");
    assert!(maint.exists(), "left set: the server went down");
    // The daemon, started while the server is still down, recovers at once (and cannot), then
    // tries again every second.
    let policies = dir.join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::copy(&policy, policies.join("site.toml")).unwrap();
    std::fs::copy(dir.join("known_hosts"), policies.join("known_hosts")).unwrap();
    let log = dir.join("daemon.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut daemon = hokan_command(
        &dir,
        &[
            "daemon",
            policies.to_str().unwrap(),
            "--recover-every",
            "1s",
        ],
    )
    .stdout(f.try_clone().unwrap())
    .stderr(f)
    .stdin(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    let until = |what: &str, secs: u64, done: &dyn Fn() -> bool| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !done() {
            assert!(
                std::time::Instant::now() < end,
                "{what} never happened; the daemon said:\n{}",
                said()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    until("a retry that still cannot reach the server", 60, &|| {
        said().contains("still needs attention")
    });
    assert!(maint.exists());
    // The server is back: the next retry releases maintenance mode and finishes the run.
    r.sshd.restart();
    until("maintenance released by a retry", 60, &|| !maint.exists());
    let runs = dir.join("state/runs");
    until("the run's journal finished", 30, &|| {
        std::fs::read_dir(&runs)
            .unwrap()
            .flatten()
            .all(|e| e.path().extension().is_none_or(|x| x != "jsonl"))
    });
    until("the daemon saying so", 30, &|| {
        said().contains("finished it")
    });
    // And it stops, with no recovery cut off.
    let ok = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert!(daemon.wait().unwrap().success(), "{}", said());
    let done: Vec<_> = std::fs::read_dir(runs.join("done"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(done.len(), 1);
    let records = std::fs::read_to_string(done[0].path()).unwrap();
    let finish: serde_json::Value = serde_json::from_str(records.lines().last().unwrap()).unwrap();
    assert_eq!(finish["record"], "finish", "{finish:#}");
}
