//! The TeamWARE plugin: plan snapshots for a single server and a three-server system, with and
//! without the Web service; dry runs with every fault; real runs against the stand-ins, whose
//! recorded calls must follow the guide's orders, also after a crash at any step and `hokan
//! recover`; and bad topologies.

use crate::cli::text;
use crate::standin_site::{StandinSite, assert_phases, killed, ok, wait_for_next_second};

/// A system of a directory server and, for `apps > 0`, that many application servers, every
/// one with the Web service when `web`.
fn policy(apps: usize, web: bool) -> String {
    let mut p = String::from("[site]\nname = \"tw-site\"\ntimezone = \"Asia/Tokyo\"\n");
    let props = if web {
        "properties = { web_service = true }\n"
    } else {
        ""
    };
    let mut names = vec!["tw-dir".to_string()];
    p.push_str(&format!(
        "\n[[servers]]\nname = \"tw-dir\"\nrole = \"directory\"\n{props}"
    ));
    for i in 1..=apps {
        p.push_str(&format!(
            "\n[[servers]]\nname = \"tw-app{i}\"\nrole = \"application\"\n{props}"
        ));
        names.push(format!("tw-app{i}"));
    }
    p.push_str(&format!(
        "\n[jobs.teamware]\nplugin = \"teamware\"\nservers = {names:?}\nbackup_root = \"backups\"\n\
         commands = {{ to = \"{{standins}}/teamware/to\", tobkweb = \"{{standins}}/teamware/tobkweb\", \
         diff-backup = \"{{standins}}/teamware/diff-backup\" }}\n"
    ));
    p
}

fn topology(apps: usize, web: bool) -> String {
    let w = if web { " web" } else { "" };
    let mut t = format!("directory tw-dir{w}\n");
    for i in 1..=apps {
        t.push_str(&format!("application tw-app{i}{w}\n"));
    }
    t
}

fn site(apps: usize, web: bool) -> StandinSite {
    StandinSite::new(&policy(apps, web), &topology(apps, web))
}

fn servers(apps: usize) -> Vec<String> {
    let mut v: Vec<String> = (1..=apps).map(|i| format!("tw-app{i}")).collect();
    v.push("tw-dir".into());
    v
}

/// Every server serves clients, has no backup area and no Web service backup files.
fn all_normal(site: &StandinSite, apps: usize, context: &str) {
    site.assert_unset(
        &servers(apps),
        &["suspended", "backup_area", "web_files", "backing_up"],
        context,
    );
}

#[test]
fn plans_for_one_and_three_servers_with_and_without_the_web_service() {
    for (apps, web, name) in [
        (0, false, "single-server"),
        (0, true, "single-server-web"),
        (2, false, "three-servers"),
        (2, true, "three-servers-web"),
    ] {
        let site = site(apps, web);
        insta::assert_snapshot!(name, site.plan_text("teamware", "backup"));
    }
    // Each server's backup into a directory of its own, carried into the set (as over ssh;
    // here the servers are the host).
    let site = site(2, true);
    let mut dumps = Vec::new();
    for s in servers(2) {
        std::fs::create_dir(site.path(&format!("dump-{s}"))).unwrap();
        dumps.push(format!("{s} = \"dump-{s}\""));
    }
    site.edit_policy(&[(
        "backup_root = \"backups\"\n".into(),
        format!(
            "backup_root = \"backups\"\nroots = {{ dump = {{ servers = {{ {} }} }} }}\n",
            dumps.join(", ")
        ),
    )]);
    insta::assert_snapshot!(
        "three-servers-web-dump",
        site.plan_text("teamware", "backup")
    );
}

#[test]
fn a_dry_run_with_every_fault_keeps_service_resumed_and_the_area_released() {
    for (apps, web) in [(0, false), (2, true)] {
        let site = site(apps, web);
        let out = site.simulate_each_step(&["--json"]);
        ok(&out);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let scenarios = report["runs"][0]["scenarios"].as_array().unwrap();
        let ids = site.step_ids("teamware", "backup");
        let body: Vec<&String> = ids.iter().filter(|i| !i.starts_with("cleanup-")).collect();
        for id in &body {
            // A failure and a crash at every step of the body were tried...
            for kind in ["fail", "crash-after"] {
                let s = scenarios
                    .iter()
                    .find(|s| s["fault"]["kind"] == kind && s["fault"]["step"] == id.as_str())
                    .unwrap_or_else(|| panic!("no {kind} scenario for {id}"));
                // ...and each left every server in service with its area released and no
                // tobkweb files: the simulator checks the modelled states against the start.
                let restored = s["invariants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|i| i["id"] == "hokan:services-restored")
                    .unwrap();
                assert_eq!(restored["held"], true, "{kind} at {id}: {restored}");
            }
        }
        assert!(
            scenarios.iter().all(|s| s["invariants"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["held"] == true)),
            "an invariant broke:\n{}",
            text(&out.stdout)
        );
    }
}

/// The calls of a backup of tw-dir, tw-app1 and tw-app2, all with the Web service, in the
/// guide's seven steps and their server orders.
fn assert_guides_order(site: &StandinSite) {
    assert_phases(
        &site.calls(),
        &[
            &["tw-app1: to tran suspend", "tw-app2: to tran suspend"],
            &["tw-dir: to tran suspend"],
            &[
                "tw-app1: to backup on",
                "tw-app2: to backup on",
                "tw-dir: to backup on",
            ],
            &["tw-app1: tobkweb arc", "tw-app2: tobkweb arc"],
            &["tw-dir: tobkweb arc"],
            &["tw-dir: to tran resume"],
            &["tw-app1: to tran resume", "tw-app2: to tran resume"],
            &[
                "tw-app1: diff-backup tw-app1",
                "tw-app2: diff-backup tw-app2",
                "tw-dir: diff-backup tw-dir",
            ],
            &[
                "tw-app1: tobkweb rm",
                "tw-app2: tobkweb rm",
                "tw-dir: tobkweb rm",
            ],
            &[
                "tw-app1: to backup off",
                "tw-app2: to backup off",
                "tw-dir: to backup off",
            ],
        ],
    );
}

/// The site's one set: a folder per server holding what its utility wrote (the stand-in's
/// backup and Web service data, byte for byte), and it verifies.
fn assert_one_good_set(site: &StandinSite) {
    let sets = std::fs::read_dir(site.path("backups/tw-site/teamware"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect::<Vec<_>>();
    assert_eq!(sets.len(), 1, "{sets:?}");
    let mut expected: Vec<String> = vec!["manifest.json".into()];
    for s in servers(2) {
        for (file, says) in [
            ("database.bak", "TeamWARE Office differential backup of"),
            ("web.bak", "Web service data of"),
        ] {
            assert_eq!(
                std::fs::read_to_string(sets[0].join(&s).join(file)).unwrap(),
                format!("{says} {s}\n"),
                "{s}/{file}"
            );
            expected.push(format!("{s}/{file}"));
        }
    }
    expected.sort();
    let set = sets[0].strip_prefix(site.path("")).unwrap();
    let files: Vec<String> = site.files(set.to_str().unwrap()).into_iter().collect();
    assert_eq!(files, expected, "nothing more, nothing less in the set");
    ok(&site.hokan(&["verify", sets[0].to_str().unwrap()], &[]));
}

#[test]
fn a_real_backup_calls_the_servers_in_the_guides_order() {
    let site = site(2, true);
    ok(&site.run("teamware", "backup", &[], &[]));
    assert_guides_order(&site);
    all_normal(&site, 2, "after the backup");
    assert_one_good_set(&site);
}

/// Each server its own sshd and agent, its utility writing into its own `dump` directory,
/// carried into the set on the host; every step on the server it names, one login each.
#[test]
fn three_servers_with_the_web_service_over_ssh_in_the_guides_order() {
    let site = site(2, true);
    let sshds = site.servers(3);
    let names = ["tw-dir", "tw-app1", "tw-app2"];
    let mut edits = Vec::new();
    let mut dumps = Vec::new();
    for (sshd, name) in sshds.iter().zip(names) {
        let role = if name == "tw-dir" {
            "directory"
        } else {
            "application"
        };
        edits.push((
            format!("[[servers]]\nname = \"{name}\"\nrole = \"{role}\"\n"),
            sshd.server_toml(name, role),
        ));
        std::fs::create_dir(site.path(&format!("dump-{name}"))).unwrap();
        dumps.push(format!(
            "{name} = \"{}\"",
            site.path(&format!("dump-{name}")).display()
        ));
    }
    site.edit_policy(&edits);
    // Without a directory on the servers, each utility would write into the set on the host:
    // the plan is refused before anything runs, naming every such step.
    let refused = site.run("teamware", "backup", &[], &[]);
    let said = text(&refused.stdout) + &text(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    for name in names {
        assert!(
            said.contains(&format!(
                "step `backup-{name}`: `diff-backup` runs on `{name}` but its working directory \
                 `set` is on the host"
            )),
            "{said}"
        );
    }
    assert!(site.calls().is_empty(), "{:?}", site.calls());
    site.edit_policy(&[(
        "backup_root = \"backups\"\n".into(),
        format!(
            "backup_root = \"backups\"\nroots = {{ dump = {{ servers = {{ {} }} }} }}\n",
            dumps.join(", ")
        ),
    )]);
    // The dry run over the same servers: every fault, a server going down after each step on
    // it included, keeps every invariant.
    let sim = site.simulate_each_step(&["--json"]);
    ok(&sim);
    let report: serde_json::Value = serde_json::from_slice(&sim.stdout).unwrap();
    let scenarios = report["runs"][0]["scenarios"].as_array().unwrap();
    let down = scenarios
        .iter()
        .filter(|s| s["fault"]["kind"] == "server-down-after")
        .count();
    assert!(down > 20, "{down} server-down scenarios");
    for sc in scenarios {
        for i in sc["invariants"].as_array().unwrap() {
            assert_eq!(i["held"], true, "{}: {i}", sc["fault"]);
        }
    }

    // A folder in a dump that is not this run's: the backup is refused before anything
    // changes, and the folder is left as it was.
    std::fs::create_dir_all(site.path("dump-tw-app1/tw-app1")).unwrap();
    std::fs::write(site.path("dump-tw-app1/tw-app1/stale.bak"), "old\n").unwrap();
    let refused = site.run("teamware", "backup", &[], &[]);
    let said = text(&refused.stdout) + &text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(5), "{said}");
    assert!(
        said.contains("tw-app1/ in the `dump` directory on tw-app1 is not this run's"),
        "{said}"
    );
    assert!(site.calls().is_empty(), "{:?}", site.calls());
    assert_eq!(
        std::fs::read_to_string(site.path("dump-tw-app1/tw-app1/stale.bak")).unwrap(),
        "old\n"
    );
    std::fs::remove_dir_all(site.path("dump-tw-app1/tw-app1")).unwrap();
    wait_for_next_second();

    let logins_before: Vec<usize> = sshds
        .iter()
        .map(|d| d.log().matches("Accepted publickey").count())
        .collect();
    let out = site.run("teamware", "backup", &[], &[]);
    let logs: Vec<String> = sshds.iter().map(|d| d.log()).collect();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        logs.join("\n")
    );
    assert_guides_order(&site);
    all_normal(&site, 2, "after the backup over ssh");
    assert_one_good_set(&site);
    for (i, (sshd, name)) in sshds.iter().zip(names).enumerate() {
        // Each server's commands ran there, through its own agent and ledger...
        let ledger: Vec<String> = std::fs::read_dir(sshd.ledger())
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("command.json")).ok())
            .collect();
        // suspend, backup on, tobkweb arc, resume, the backup, tobkweb rm, backup off.
        assert_eq!(ledger.len(), 7, "{name}: {ledger:?}");
        assert!(
            ledger
                .iter()
                .any(|c| c.contains("diff-backup") && c.contains(&format!("\"{name}\""))),
            "{name}: {ledger:?}"
        );
        for other in names.iter().filter(|o| **o != name) {
            assert!(
                !ledger.iter().any(|c| c.contains(&format!("\"{other}\""))),
                "{name} ran {other}'s backup: {ledger:?}"
            );
        }
        // ...its dump is empty again...
        assert_eq!(
            std::fs::read_dir(site.path(&format!("dump-{name}")))
                .unwrap()
                .count(),
            0,
            "{name}'s dump"
        );
        // ...and the run logged in once.
        assert_eq!(
            sshd.log().matches("Accepted publickey").count(),
            logins_before[i] + 1,
            "{name}: one login for the whole run"
        );
    }
}

#[test]
fn a_single_server_without_the_web_service() {
    let site = site(0, false);
    ok(&site.run("teamware", "backup", &[], &[]));
    assert_eq!(
        site.calls(),
        [
            "tw-dir: to tran suspend",
            "tw-dir: to backup on",
            "tw-dir: to tran resume",
            "tw-dir: diff-backup tw-dir",
            "tw-dir: to backup off",
        ]
    );
    all_normal(&site, 0, "after the backup");
}

#[test]
fn a_failed_backup_resumes_service_and_releases_the_area() {
    let site = site(2, true);
    // Web service files are left on tw-app2 from an earlier backup: `tobkweb arc` refuses.
    std::fs::write(site.path("standins/tw-app2.web_files"), "1\n").unwrap();
    let out = site.run("teamware", "backup", &[], &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let log = std::fs::read_to_string(site.path("calls.log")).unwrap();
    let accepted: Vec<String> = log
        .lines()
        .filter(|l| !l.contains("REFUSED"))
        .map(str::to_string)
        .collect();
    // The cleanup resumed service in the guide's order (directory server first), removed the
    // Web service files of both application servers (tobkweb arc ran on both), and released
    // every server's area.
    let tail: Vec<&str> = accepted
        .iter()
        .skip_while(|l| !l.ends_with("tobkweb arc"))
        .skip(1)
        .map(String::as_str)
        .collect();
    assert_phases(
        &tail.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        &[
            &["tw-dir: to tran resume"],
            &["tw-app1: to tran resume"],
            &["tw-app2: to tran resume"],
            &["tw-app1: tobkweb rm"],
            &["tw-app2: tobkweb rm"],
            &["tw-app1: to backup off"],
            &["tw-app2: to backup off"],
            &["tw-dir: to backup off"],
        ],
    );
    assert!(site.files("backups").is_empty(), "no set is left");
    all_normal(&site, 2, "after the failed backup");
}

#[test]
fn a_crash_after_any_step_and_recover_leave_every_server_in_service() {
    let site = site(2, true);
    let ids = site.step_ids("teamware", "backup");
    for (n, id) in ids.iter().enumerate() {
        site.clear_calls();
        let out = site.run("teamware", "backup", &[], &[("HOKAN_TEST_KILL_AFTER", id)]);
        assert!(
            killed(&out),
            "the run was not killed after {id}: {}",
            text(&out.stderr)
        );
        if n == 0 {
            // Nothing runs on the instance until it is recovered.
            let refused = site.run("teamware", "backup", &[], &[]);
            assert_eq!(refused.status.code(), Some(1), "after {id}");
        }
        ok(&site.hokan(&["recover"], &[]));
        all_normal(&site, 2, &format!("recovered after {id}"));
        let _ = site.calls(); // no stand-in refused a call
        let sets = site.path("backups/tw-site/teamware");
        for e in std::fs::read_dir(&sets).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "a partial set is left after {id}");
            assert!(e.path().join("manifest.json").is_file(), "{name}");
        }
        wait_for_next_second();
    }
}

#[test]
fn bad_topologies_name_the_field() {
    // No directory server among the job's servers.
    let p = policy(2, false).replace("servers = [\"tw-dir\", ", "servers = [");
    let site = StandinSite::new(&p, "");
    let e = site.plan("teamware", "backup").unwrap_err();
    assert!(
        e.contains(
            "jobs.teamware.servers: teamware needs exactly 1 server(s) with role `directory`"
        ),
        "{e}"
    );
    let out = site.run("teamware", "backup", &[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("jobs.teamware.servers"),
        "{}",
        text(&out.stderr)
    );

    // The job names a server the site does not have.
    let p = policy(2, false).replace("\"tw-app2\"]", "\"tw-app3\"]");
    let site = StandinSite::new(&p, "");
    let e = site.plan("teamware", "backup").unwrap_err();
    assert!(
        e.contains("jobs.teamware.servers: `tw-app3` is not a server of this site"),
        "{e}"
    );

    // A property that is not a yes/no.
    let p = policy(0, true).replace("web_service = true", "web_service = \"perhaps\"");
    let site = StandinSite::new(&p, "");
    let e = site.plan("teamware", "backup").unwrap_err();
    assert!(
        e.contains("servers.tw-dir.properties.web_service must be true or false, not `perhaps`"),
        "{e}"
    );

    // A role the plugin does not know.
    let p = policy(1, false).replace("role = \"application\"", "role = \"app\"");
    let site = StandinSite::new(&p, "");
    let e = site.plan("teamware", "backup").unwrap_err();
    assert!(
        e.contains(
            "servers.tw-app1.role: `app` is not a role of teamware (it has: directory, application)"
        ),
        "{e}"
    );
}
