//! The Groupmax plugin: plan snapshots of the manual's four cases; dry runs with every fault;
//! real runs against the stand-ins in the manual's order, with the journal cleared and the set
//! copied to the secondary medium; a crash at any step and `hokan recover`; bad input.

use crate::cli::text;
use crate::standin_site::{StandinSite, assert_phases, killed, ok, wait_for_next_second};
use hokan_e2e::sshd::Sshd;

/// A master management server keeping journals (when `journals`) and a mail server; one job
/// backs up the master, one the mail server, both in `mode`.
fn policy(mode: &str, journals: bool) -> String {
    let services = r#"
[jobs.JOB.services]
address-service = { start = ["{standins}/groupmax/gm-service", "address-service", "start"], stop = ["{standins}/groupmax/gm-service", "address-service", "stop"], status = ["{standins}/groupmax/gm-service", "address-service", "status"] }
object-server = { start = ["{standins}/groupmax/gm-service", "object-server", "start"], stop = ["{standins}/groupmax/gm-service", "object-server", "stop"], status = ["{standins}/groupmax/gm-service", "object-server", "status"] }
"#;
    let commands = r#"APSTOP = "{standins}/groupmax/APSTOP"
NXSMNGSRV = "{standins}/groupmax/NXSMNGSRV"
start-servers = "{standins}/groupmax/start-servers"
nxsrepstat = "{standins}/groupmax/nxsrepstat"
console-closed = "{standins}/groupmax/console-closed"
"#;
    format!(
        r#"[site]
name = "gm-site"
timezone = "Asia/Tokyo"

[[servers]]
name = "gm-master"
role = "master-management"
properties = {{ journals = {journals}, host_name = "gmmaster" }}

[[servers]]
name = "gm-mail1"
role = "mail"
properties = {{ host_name = "gmmail1" }}

[jobs.master]
plugin = "groupmax"
servers = ["gm-master"]
backup_root = "backups"
params = {{ mode = "{mode}" }}
[jobs.master.roots]
data = "master/GroupMail"
mng-journal = "master/mng-journal"
media = "media"
[jobs.master.commands]
{commands}{master_services}
[jobs.mail1]
plugin = "groupmax"
servers = ["gm-master", "gm-mail1"]
backup_root = "backups"
params = {{ mode = "{mode}", stop_command = "NXSMNGSRV" }}
[jobs.mail1.roots]
data = "mail1/GroupMail"
journal = "master/nxsdir/journal"
media = "media"
[jobs.mail1.commands]
{commands}{mail_services}"#,
        master_services = services.replace("JOB", "master"),
        mail_services = services.replace("JOB", "mail1"),
    )
}

const TOPOLOGY: &str = "master-management gm-master\nmail gm-mail1\n";

fn site(mode: &str, journals: bool) -> StandinSite {
    let site = StandinSite::new(&policy(mode, journals), TOPOLOGY);
    write_files(&site);
    std::fs::create_dir_all(site.path("media")).unwrap();
    site
}

/// The servers' files: backup targets and journals.
fn write_files(site: &StandinSite) {
    let files = [
        "master/GroupMail/nxsdir/address/nxsadr.db",
        "master/GroupMail/mail/db/mailbox.db",
        "master/mng-journal/MCH_JOURNAL/00000001.jnl",
        "master/mng-journal/MCH_JOURNAL/00000002.jnl",
        // The journals the master keeps for the other servers: gmmail1's two, and two that
        // are not gmmail1's although their names start alike.
        "master/nxsdir/journal/gmmail1",
        "master/nxsdir/journal/gmmail1.001",
        "master/nxsdir/journal/gmmail10.jnl",
        "master/nxsdir/journal/gmaddr2",
        "mail1/GroupMail/nxsdir/address/nxsadr.db",
        "mail1/GroupMail/mail/db/mailbox.db",
    ];
    for f in files {
        let p = site.path(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("contents of {f}\n")).unwrap();
    }
}

/// Nothing of Groupmax is left stopped on either server.
fn all_running(site: &StandinSite, context: &str) {
    site.assert_unset(
        &["gm-master", "gm-mail1"],
        &[
            "servers_stopped",
            "address-service_stopped",
            "object-server_stopped",
        ],
        context,
    );
}

#[test]
fn plans_of_the_four_cases() {
    for (mode, job, name) in [
        ("by-hand", "master", "case-1-master-by-hand"),
        ("automated", "master", "case-2-master-automated"),
        ("by-hand", "mail1", "case-3-mail-server-by-hand"),
        ("automated", "mail1", "case-4-mail-server-automated"),
    ] {
        let site = site(mode, true);
        insta::assert_snapshot!(name, site.plan_text(job, "backup"));
    }
}

#[test]
fn a_master_without_journals_has_nothing_to_clear() {
    for mode in ["by-hand", "automated"] {
        let site = site(mode, false);
        let text = site.plan_text("master", "backup");
        assert!(
            !text.contains("journal") && !text.contains("manual"),
            "{mode}: {text}"
        );
    }
}

#[test]
fn a_dry_run_with_every_fault_restarts_everything() {
    for mode in ["by-hand", "automated"] {
        let site = site(mode, true);
        let out = site.simulate_each_step(&[]);
        ok(&out);
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("2 operation(s)") && stdout.contains("every invariant held"),
            "{stdout}"
        );
    }
    // After the journal was cleared, the dry run keeps the set, as the real run does
    // (`a_crash_after_any_step_and_recover_leave_everything_running`); before, it does not.
    let site = site("automated", true);
    let out = site.simulate_each_step(&["--job", "mail1", "--json"]);
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let scenarios = report["runs"][0]["scenarios"].as_array().unwrap();
    let find = |name: &str| {
        scenarios
            .iter()
            .find(|t| t["scenario"] == name)
            .unwrap_or_else(|| panic!("no scenario {name}"))
    };
    for name in [
        "crash-after clear-journal",
        "crash-after start-object-server-gm-mail1",
    ] {
        let t = find(name);
        assert_eq!(t["set_kept"], true, "{name}: {t:#}");
        assert!(
            t["outcome"]["set_kept"]
                .as_str()
                .unwrap()
                .contains("the point of no return `clear-journal`"),
            "{name}: {t:#}"
        );
    }
    let before = find("crash-after verify-data");
    assert_eq!(before["set_complete"], false);
    assert!(before.get("set_kept").is_none(), "{before:#}");
}

#[test]
fn case_4_calls_both_servers_in_the_manuals_order() {
    let site = site("automated", true);
    // Replication to gmmail1 is still running at the first check: the backup waits for it.
    std::fs::write(site.path("standins/gmmail1.replication_pending"), "1\n").unwrap();
    let out = site.run("mail1", "backup", &["--json"], &[]);
    ok(&out);
    assert_case_4(&site, &out);
}

/// Case 4's backup of gmmail1 (`out`, its `--json` records) did what the manual says, in its
/// order: the calls on each server, the journal cleared after the copy was verified, the set
/// and the secondary medium.
fn assert_case_4(site: &StandinSite, out: &std::process::Output) {
    assert_phases(
        &site.calls(),
        &[
            &["gm-master: console-closed"],
            &["gm-master: nxsrepstat gmmail1 (pending)"],
            &["gm-master: nxsrepstat gmmail1"],
            &["gm-master: NXSMNGSRV", "gm-mail1: NXSMNGSRV"],
            &[
                "gm-master: gm-service address-service stop",
                "gm-mail1: gm-service address-service stop",
            ],
            &["gm-mail1: gm-service object-server stop"],
            &["gm-mail1: gm-service object-server start"],
            &[
                "gm-master: gm-service address-service start",
                "gm-mail1: gm-service address-service start",
            ],
            &["gm-master: start-servers", "gm-mail1: start-servers"],
        ],
    );
    all_running(site, "after the backup");
    // The journal files were deleted after the copy was verified and before anything started
    // again (the run's own record of its steps).
    let ends: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["record"] == "step-end")
        .map(|e| e["step"].as_str().unwrap_or_default().to_string())
        .collect();
    let at = |id: &str| {
        ends.iter()
            .position(|s| s == id)
            .unwrap_or_else(|| panic!("no step {id} in {ends:?}"))
    };
    assert!(at("verify-data") < at("clear-journal"), "{ends:?}");
    assert!(
        at("clear-journal") < at("start-object-server-gm-mail1"),
        "{ends:?}"
    );
    // Only gmmail1's journal files are gone.
    let journal = site.files("master/nxsdir/journal");
    assert_eq!(
        journal.iter().map(String::as_str).collect::<Vec<_>>(),
        ["gmaddr2", "gmmail10.jnl"]
    );
    // The set holds the mail server's targets, and so does the secondary medium.
    let sets: Vec<String> = site.files("backups/gm-site/mail1").into_iter().collect();
    assert!(
        sets.iter().any(|f| f.ends_with("/data/mail/db/mailbox.db")),
        "{sets:?}"
    );
    let media = site.files("media");
    assert_eq!(media.len(), 2, "{media:?}");
    assert!(media.iter().all(|f| f.contains("/data/")), "{media:?}");
}

#[test]
fn case_4_over_ssh_runs_each_step_on_its_server_in_the_manuals_order() {
    let site = site("automated", true);
    std::fs::write(site.path("standins/gmmail1.replication_pending"), "1\n").unwrap();
    // Two servers, each its own sshd.
    let mut servers = site.servers(2);
    let (mail, master) = (servers.pop().unwrap(), servers.pop().unwrap());
    let on = |server: &str, rel: &str| site.on_server(server, rel);
    site.edit_policy(&[
        (
            "[[servers]]\nname = \"gm-master\"\nrole = \"master-management\"\n".into(),
            master.server_toml("gm-master", "master-management"),
        ),
        (
            "[[servers]]\nname = \"gm-mail1\"\nrole = \"mail\"\n".into(),
            mail.server_toml("gm-mail1", "mail"),
        ),
        (
            "data = \"master/GroupMail\"".into(),
            format!("data = {}", on("gm-master", "master/GroupMail")),
        ),
        (
            "mng-journal = \"master/mng-journal\"".into(),
            format!("mng-journal = {}", on("gm-master", "master/mng-journal")),
        ),
        (
            "data = \"mail1/GroupMail\"".into(),
            format!("data = {}", on("gm-mail1", "mail1/GroupMail")),
        ),
        (
            "journal = \"master/nxsdir/journal\"".into(),
            format!("journal = {}", on("gm-master", "master/nxsdir/journal")),
        ),
    ]);
    let out = site.run("mail1", "backup", &["--json"], &[]);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        text(&out.stderr),
        master.log(),
        mail.log()
    );
    assert_case_4(&site, &out);
    // Every command ran on its own server, through that server's agent and ledger.
    let ledger = |sshd: &Sshd| -> Vec<String> {
        std::fs::read_dir(sshd.ledger())
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path().join("command.json")).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (on_master, on_mail) = (ledger(&master), ledger(&mail));
    assert!(
        on_master.iter().any(|c| c.contains("nxsrepstat")),
        "{on_master:?}"
    );
    assert!(
        !on_mail
            .iter()
            .any(|c| c.contains("nxsrepstat") || c.contains("console-closed")),
        "{on_mail:?}"
    );
    assert!(
        on_mail.iter().any(|c| c.contains("object-server")),
        "{on_mail:?}"
    );
    // The set on the host holds the mail server's files byte for byte, and verifies.
    let sets: Vec<_> = std::fs::read_dir(site.path("backups/gm-site/mail1"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(sets.len(), 1, "{sets:?}");
    for f in ["mail/db/mailbox.db", "nxsdir/address/nxsadr.db"] {
        assert_eq!(
            std::fs::read(sets[0].join("data").join(f)).unwrap(),
            std::fs::read(site.path("mail1/GroupMail").join(f)).unwrap(),
            "{f}"
        );
    }
    ok(&site.hokan(&["verify", sets[0].to_str().unwrap()], &[]));
}

/// "バックアップを取得したサーバのホスト名が付いたファイルを削除します" and "必ず消去してください":
/// the files are those in the directory when the deletion runs. One the master writes while the
/// servers stop (after the plan was made) is deleted too; when there is none, the run says so.
#[test]
fn the_journal_files_deleted_are_those_there_when_the_step_runs() {
    let site = site("automated", true);
    // NXSMNGSRV on the master writes one more journal file for gmmail1 as it stops.
    let wrapper = site.path("NXSMNGSRV-writes-a-journal");
    let journal = site.path("master/nxsdir/journal");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ \"$HOKAN_SERVER\" != gm-master ] || echo late > '{}/GMMAIL1_late.jnl'\nexec '{}' \"$@\"\n",
            journal.display(),
            hokan_e2e::repo_root()
                .join("tests/fixtures/standins/groupmax/NXSMNGSRV")
                .display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let policy = std::fs::read_to_string(site.policy()).unwrap();
    let mapped = policy
        .lines()
        .map(|l| {
            if l.starts_with("NXSMNGSRV = ") {
                format!("NXSMNGSRV = \"{}\"", wrapper.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(site.policy(), mapped).unwrap();
    let plan = site.plan_text("mail1", "backup");
    assert!(!plan.contains("GMMAIL1_late"), "{plan}");
    let out = site.run("mail1", "backup", &[], &[]);
    ok(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("GMMAIL1_late.jnl"), "{stdout}");
    assert_eq!(
        site.files("master/nxsdir/journal")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["gmaddr2", "gmmail10.jnl"]
    );

    // The next backup finds none: done, and the run says so.
    wait_for_next_second();
    site.clear_calls();
    std::fs::remove_file(&wrapper).unwrap();
    std::fs::write(
        site.policy(),
        std::fs::read_to_string(site.policy()).unwrap().replace(
            &wrapper.display().to_string(),
            &format!(
                "{}/tests/fixtures/standins/groupmax/NXSMNGSRV",
                hokan_e2e::repo_root().display()
            ),
        ),
    )
    .unwrap();
    let out = site.run("mail1", "backup", &[], &[]);
    ok(&out);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("warning: clear-journal: none found: no file in journal:/ matched"),
        "{stdout}"
    );
}

/// Cases (2) and (4): "運転席を停止した状態で実行してください。" A scheduled run has nobody to
/// ask, so an automated backup checks that the console is not running before it stops
/// anything, and refuses to go on while it is.
#[test]
fn an_automated_backup_runs_only_with_the_console_stopped() {
    for job in ["master", "mail1"] {
        let site = site("automated", true);
        std::fs::write(site.path("standins/gm-master.console_open"), "1\n").unwrap();
        let out = site.run(job, "backup", &[], &[]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(5), "{job}: {stdout}");
        assert!(
            stdout.contains("the administrator console (運転席) is running on the master")
                && stdout.contains("Exit the console, then run the backup again"),
            "{job}: {stdout}"
        );
        assert_eq!(
            site.calls(),
            ["gm-master: console-closed (running)"],
            "{job}: nothing was stopped"
        );
        assert_eq!(site.files("master/nxsdir/journal").len(), 4, "{job}");
        all_running(&site, job);
    }
    // By hand, the operator closes the console at the gate: no check is planned.
    let site = site("by-hand", true);
    assert!(
        !site
            .step_ids("mail1", "backup")
            .contains(&"console-closed".to_string())
    );
}

#[test]
fn a_failure_after_the_journal_was_cleared_keeps_the_backup() {
    let site = site("automated", true);
    std::fs::write(site.path("standins/gm-master.fail.start-servers"), "").unwrap();
    let out = site.run("mail1", "backup", &[], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("ATTENTION: the step `start-servers-gm-master` failed and the run went on"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ATTENTION: the cleanup step `cleanup-servers-gm-master` failed"),
        "{stdout}"
    );
    // The journal is cleared, so the backup that goes with it is kept, complete, and copied.
    assert!(!site.path("master/nxsdir/journal/gmmail1").exists());
    let sets = std::fs::read_dir(site.path("backups/gm-site/mail1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect::<Vec<_>>();
    assert_eq!(sets.len(), 1, "{sets:?}");
    ok(&site.hokan(&["verify", sets[0].to_str().unwrap()], &[]));
    assert_eq!(site.files("media").len(), 2);
    // Everything else was started again.
    assert_eq!(site.state("gm-mail1", "servers_stopped"), "0");
    assert_eq!(site.state("gm-master", "address-service_stopped"), "0");
}

#[test]
fn case_2_clears_mch_journal_and_case_1_asks_the_operator() {
    let site = site("automated", true);
    ok(&site.run("master", "backup", &[], &[]));
    assert_eq!(
        site.calls(),
        [
            "gm-master: console-closed",
            "gm-master: APSTOP",
            "gm-master: gm-service address-service stop",
            "gm-master: gm-service object-server stop",
            "gm-master: gm-service object-server start",
            "gm-master: gm-service address-service start",
            "gm-master: start-servers",
        ]
    );
    assert!(site.files("master/mng-journal").is_empty());
    assert!(site.path("master/mng-journal/MCH_JOURNAL").is_dir());
    all_running(&site, "case 2");

    // By hand: without a terminal the run stops at the console step, before anything stopped.
    let site = self::site("by-hand", true);
    let out = site.run("master", "backup", &[], &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("clear-journal-in-console")
            || text(&out.stdout).contains("clear-journal-in-console"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(site.calls().is_empty(), "nothing ran before the gate");
    assert_eq!(
        site.files("master/mng-journal").len(),
        2,
        "hokan left the journal alone"
    );
    // Confirmed, the backup runs; the journal is the console's job.
    ok(&site.run("master", "backup", &["--yes"], &[]));
    assert_eq!(site.calls().len(), 6);
    assert_eq!(site.files("master/mng-journal").len(), 2);
    all_running(&site, "case 1");
}

#[test]
fn a_crash_after_any_step_and_recover_leave_everything_running() {
    let site = site("automated", true);
    let ids = site.step_ids("mail1", "backup");
    // The first journal deletion is the point of no return; the cleanup comes after the body.
    let committed = ids
        .iter()
        .position(|i| i == "clear-journal")
        .expect("the plan clears the journal");
    let cleanup = ids
        .iter()
        .position(|i| i.starts_with("cleanup-"))
        .expect("the plan has a cleanup");
    let sets_dir = site.path("backups/gm-site/mail1");
    for (n, id) in ids.iter().enumerate() {
        site.clear_calls();
        // The journal files the last run deleted are back, so that every run plans alike.
        write_files(&site);
        let _ = std::fs::remove_dir_all(&sets_dir);
        let out = site.run("mail1", "backup", &[], &[("HOKAN_TEST_KILL_AFTER", id)]);
        assert!(
            killed(&out),
            "the run was not killed after {id}: {}",
            text(&out.stderr)
        );
        let recovered = site.hokan(&["recover"], &[]);
        if (committed..cleanup).contains(&n) {
            // The journal is gone: the set is finished and kept, and someone must look.
            let stdout = text(&recovered.stdout);
            assert_eq!(recovered.status.code(), Some(4), "after {id}: {stdout}");
            assert!(
                stdout.contains(
                    "KEPT, INCOMPLETE: the run died after the point of no return `clear-journal`"
                ),
                "after {id}: {stdout}"
            );
            let rows = site.sets_json("mail1");
            assert_eq!(rows[0]["state"], "kept", "after {id}: {rows:#}");
            let set = rows[0]["path"].as_str().unwrap();
            ok(&site.hokan(&["verify", set], &[]));
        } else {
            ok(&recovered);
        }
        all_running(&site, &format!("recovered after {id}"));
        let _ = site.calls(); // no stand-in refused a call
        for e in std::fs::read_dir(site.path("backups/gm-site/mail1"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "a partial set is left after {id}");
        }
        wait_for_next_second();
    }
}

#[test]
fn bad_input_names_the_field() {
    // Journals kept, but no MNG_JOURNAL granted.
    let p = policy("automated", true).replace("mng-journal = \"master/mng-journal\"\n", "");
    let site = StandinSite::new(&p, TOPOLOGY);
    let e = site.plan("master", "backup").unwrap_err();
    assert!(
        e.contains("servers.gm-master.properties.journals is true, but job `master` grants no `mng-journal` root: add jobs.master.roots.mng-journal"),
        "{e}"
    );
    // A policy mistake: bad input (exit 1), nothing ran.
    write_files(&site);
    std::fs::create_dir_all(site.path("media")).unwrap();
    let out = site.run("master", "backup", &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("jobs.master.roots.mng-journal"),
        "{}",
        text(&out.stderr)
    );
    assert!(site.calls().is_empty());
    // The automated mail server backup without the master's journal directory.
    let p = policy("automated", true).replace("journal = \"master/nxsdir/journal\"\n", "");
    let site = StandinSite::new(&p, TOPOLOGY);
    let e = site.plan("mail1", "backup").unwrap_err();
    assert!(e.contains("add jobs.mail1.roots.journal"), "{e}");
    // No master management server in the job.
    let p = policy("automated", true).replace(
        "servers = [\"gm-master\", \"gm-mail1\"]",
        "servers = [\"gm-mail1\"]",
    );
    let site = StandinSite::new(&p, TOPOLOGY);
    let e = site.plan("mail1", "backup").unwrap_err();
    assert!(
        e.contains(
            "jobs.mail1.servers: groupmax needs exactly 1 server(s) with role `master-management`"
        ),
        "{e}"
    );
    // A mode the manual does not have.
    let p = policy("nightly", true);
    let site = StandinSite::new(&p, TOPOLOGY);
    let e = site.plan("master", "backup").unwrap_err();
    assert!(
        e.contains("parameter `mode` must be `automated` or `by-hand`, not `nightly`"),
        "{e}"
    );
}

/// The issue's disagreement: a failed copy to the secondary medium (allowed to fail, copying
/// out of the set) leaves the set complete, in the real run and in the dry run alike.
#[test]
fn a_failed_copy_to_media_keeps_a_complete_set_in_both_worlds() {
    let site = site("automated", true);
    // The medium has a file where the job's directory goes: the copy cannot be made.
    std::fs::create_dir_all(site.path("media")).unwrap();
    std::fs::write(site.path("media/mail1"), "not a directory").unwrap();
    let out = site.run("mail1", "backup", &["--json"], &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stdout));
    let finish: serde_json::Value = text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["record"] == "finish")
        .expect("a finish record");
    let real = &finish["outcome"];
    assert_eq!(real["status"], "completed", "{real:#}");
    assert!(
        real["set"].is_string() && real.get("set_kept").is_none(),
        "{real:#}"
    );
    let rows = site.sets_json("mail1");
    assert_eq!(rows[0]["state"], "good", "{rows:#}");
    ok(&site.hokan(&["verify", rows[0]["path"].as_str().unwrap()], &[]));

    // The dry run of the same fault says the same (in the next second: its new set's id must
    // not be the real run's).
    std::fs::remove_file(site.path("media/mail1")).unwrap();
    write_files(&site);
    wait_for_next_second();
    let out = site.simulate_each_step(&["--job", "mail1", "--json"]);
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dry = report["runs"][0]["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["scenario"] == "fail copy-to-media")
        .expect("the scenario")
        .clone();
    assert_eq!(dry["set_complete"], true, "{dry:#}");
    assert_eq!(dry["outcome"]["status"], real["status"]);
    assert_eq!(
        dry["outcome"]["steps_failed"], real["steps_failed"],
        "{dry:#}\n{real:#}"
    );
}

/// The manual, case (3) step 1: "nxsrepstatコマンドを使用して,バックアップサーバへのレプリケー
/// ションが完了しているかを確認します。完了していない場合は運転席の名前データベースウィンドウで
/// 整合性を確保してください。" Replication that does not complete within the limit ends the run
/// before anything is stopped, saying to restore consistency in the console; the cleanup runs.
#[test]
fn replication_that_never_completes_stops_the_run_saying_to_restore_consistency() {
    let site = StandinSite::new(
        &policy("by-hand", true).replace(
            "params = { mode = \"by-hand\", stop_command = \"NXSMNGSRV\" }",
            "params = { mode = \"by-hand\", stop_command = \"NXSMNGSRV\", replication_timeout_minutes = 1 }",
        ),
        TOPOLOGY,
    );
    write_files(&site);
    std::fs::create_dir_all(site.path("media")).unwrap();
    std::fs::write(site.path("standins/gmmail1.replication_pending"), "1000\n").unwrap();
    let out = site.run("mail1", "backup", &["--yes"], &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(
            "FAILED: step `replication-complete` failed: Wait until replication to gm-mail1 \
             (gmmail1) has completed (nxsrepstat); if it has not within 1 minute(s), nothing is \
             stopped: restore consistency in the administrator console's name database window"
        ),
        "{stdout}"
    );
    // Nothing but nxsrepstat ran: no server was stopped, no journal cleared.
    assert!(
        site.calls()
            .iter()
            .all(|c| c.contains("nxsrepstat gmmail1")),
        "{:?}",
        site.calls()
    );
    all_running(&site, "after the refusal");
    assert_eq!(site.files("master/nxsdir/journal").len(), 4);
    assert!(site.sets_json("mail1").as_array().unwrap().is_empty());
}

/// The manual, case (2): "マスタ管理サーバのサーバを停止します。APSTOPコマンドを使用してください。"
/// Only case (4) allows "APSTOPコマンド又はNXSMNGSRVコマンド".
#[test]
fn the_masters_automated_backup_stops_its_servers_with_apstop_only() {
    let text = policy("automated", true).replacen(
        "params = { mode = \"automated\" }",
        "params = { mode = \"automated\", stop_command = \"NXSMNGSRV\" }",
        1,
    );
    assert!(
        text.contains("stop_command = \"NXSMNGSRV\" }\n[jobs.master.roots]"),
        "{text}"
    );
    let site = StandinSite::new(&text, TOPOLOGY);
    write_files(&site);
    std::fs::create_dir_all(site.path("media")).unwrap();
    let err = site.plan("master", "backup").unwrap_err();
    assert!(
        err.contains("case (2)") && err.contains("set stop_command = \"APSTOP\""),
        "{err}"
    );
    // Case (4) may use either.
    assert!(site.plan("mail1", "backup").is_ok());
}
