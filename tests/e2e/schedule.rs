//! `hokan schedule`: month previews of the bundled policies (reviewed snapshots), the rules
//! they show checked one by one in the JSON, and bad input.

use crate::cli::text;
use crate::standin_site::hokan_command;
use hokan_e2e::repo_root;
use serde_json::Value;
use std::process::Output;

fn schedule(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec!["schedule"];
    all.extend_from_slice(args);
    hokan_command(dir.path(), &all, &[])
        .current_dir(repo_root())
        .output()
        .unwrap()
}

fn preview_json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = schedule(&a);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn slots<'a>(doc: &'a Value, site: &str, job: &str) -> Vec<&'a Value> {
    doc["preview"]["slots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["site"] == site && s["job"] == job)
        .collect()
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

/// The month around the October daylight-saving change, for every bundled policy.
const OCTOBER: [&str; 5] = [
    "policies",
    "--from",
    "2026-10-15T00:00:00Z",
    "--until",
    "2026-11-15T00:00:00Z",
];

#[test]
fn a_month_of_the_bundled_policies() {
    let out = schedule(&OCTOBER);
    assert!(out.status.success(), "{}", text(&out.stderr));
    insta::assert_snapshot!("schedule_october_all_sites", text(&out.stdout));
}

#[test]
fn the_spring_change_in_london() {
    let out = schedule(&[
        "policies/london-branch.toml",
        "--from",
        "2026-03-25T00:00:00Z",
        "--until",
        "2026-04-02T00:00:00Z",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    insta::assert_snapshot!("schedule_march_london", text(&out.stdout));
}

/// When London's backups start (UTC) from `from` until `until`.
fn london_starts(from: &str, until: &str) -> Vec<String> {
    let doc = preview_json(&[
        "policies/london-branch.toml",
        "--from",
        from,
        "--until",
        until,
    ]);
    slots(&doc, "london-branch", "mailwise")
        .iter()
        .map(|s| s["start"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn daylight_saving_nights_run_once_at_the_right_instant() {
    let starts = london_starts("2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z");
    // 01:30 GMT; 01:30 does not exist on the 29th and runs at 02:30 BST (01:30 UTC, the
    // same distance after midnight); then 01:30 BST.
    assert_eq!(
        starts,
        [
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-30T00:30:00Z"
        ]
    );
    let starts = london_starts("2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z");
    // 01:30 happens twice on the 25th: one run, the first time (01:30 BST = 00:30 UTC).
    assert_eq!(
        starts,
        [
            "2026-10-24T00:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-26T01:30:00Z"
        ]
    );
}

#[test]
fn the_rules_hold_over_the_month() {
    let doc = preview_json(&OCTOBER);
    let p = &doc["preview"];
    // Tokyo: mailwise's database check runs 01:50-02:20 every night (it starts before the
    // 02:00 window); no backup overlaps it, and every backup fits 02:00-04:00 JST.
    let checks: Vec<&Value> = p["activities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["site"] == "tokyo-hq")
        .collect();
    assert_eq!(checks.len(), 31);
    assert!(checks.iter().all(|c| c.get("not_run").is_none()));
    let tokyo = slots(&doc, "tokyo-hq", "mailwise");
    assert_eq!(tokyo.len(), 31);
    for s in &tokyo {
        assert_eq!(s["outcome"], "runs", "{s}");
        let (start, end) = (ts(&s["start"]), ts(&s["estimated_end"]));
        for c in &checks {
            let (cs, ce) = (ts(&c["start"]), ts(&c["end"]));
            assert!(end <= cs || ce <= start, "{s} overlaps {c}");
        }
        let local = start.to_zoned(jiff::tz::db().get("Asia/Tokyo").unwrap());
        assert!(local.hour() >= 2 && (end.to_zoned(local.time_zone().clone()).hour() < 4));
    }
    // London: the check starts on the window's end. mailwise skips it only while a window is
    // set ("あらかじめ設定済みのメンテナンスモードの時間帯"), and hokan sets its window only while
    // a backup runs: between runs none is, so the check runs every night, clear of the backups.
    let london: Vec<&Value> = p["activities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["site"] == "london-branch")
        .collect();
    assert!(!london.is_empty());
    assert!(
        london.iter().all(|a| a.get("not_run").is_none()),
        "{london:?}"
    );
    for s in &slots(&doc, "london-branch", "mailwise") {
        let (start, end) = (ts(&s["start"]), ts(&s["estimated_end"]));
        for c in &london {
            let (cs, ce) = (ts(&c["start"]), ts(&c["end"]));
            assert!(end <= cs || ce <= start, "{s} overlaps {c}");
        }
    }
    // Nagoya: every backup waits for SearchPro's index build; the first of the month it is
    // held back by the account clean-up (01:00-05:00), past its hour of start delay.
    let tw = slots(&doc, "nagoya-teamware", "teamware");
    for s in &tw {
        let local_day = &s["slot_local"].as_str().unwrap()[..10];
        if local_day == "2026-11-01" {
            assert_eq!(s["outcome"], "skipped", "{s}");
            let why = s["reason"].as_str().unwrap();
            assert!(why.contains("user-management"), "{why}");
            assert!(why.contains("maximum start delay of 1h"), "{why}");
        } else {
            assert_eq!(s["outcome"], "runs", "{s}");
            assert!(
                s["waited_for"][0]
                    .as_str()
                    .unwrap()
                    .starts_with("teamware's searchpro-indexing until"),
                "{s}"
            );
        }
    }
    // Osaka: the two jobs share gm-master and never overlap.
    let master = slots(&doc, "osaka-groupmax", "groupmax-master");
    let mail1 = slots(&doc, "osaka-groupmax", "groupmax-mail1");
    assert_eq!((master.len(), mail1.len()), (31, 31));
    for (m, s) in master.iter().zip(&mail1) {
        assert!(ts(&m["estimated_end"]) <= ts(&s["start"]), "{m} {s}");
    }
    // Kyoto: the full backup weekly, on Sundays.
    let kyoto = slots(&doc, "kyoto-exchange", "exchange");
    assert_eq!(kyoto.len(), 5);
    assert!(kyoto.iter().all(|s| s["op"] == "backup-full"));
}

#[test]
fn the_same_input_gives_the_same_preview() {
    let a = schedule(&OCTOBER);
    let b = schedule(&OCTOBER);
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn bad_scheduling_fields_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("site.toml");
    let write = |extra: &str| {
        std::fs::write(
            &policy,
            format!(
                r#"
[site]
name = "s"
timezone = "Asia/Tokyo"

[[servers]]
name = "mw1"
role = "mailwise"

[jobs.mailwise]
plugin = "mailwise"
servers = ["mw1"]
roots = {{ data = "data" }}
schedule = "daily at 02:10"
{extra}
"#
            ),
        )
        .unwrap();
    };
    let run = |args: &[&str]| {
        hokan_command(dir.path(), args, &[])
            .arg(&policy)
            .output()
            .unwrap()
    };
    for (extra, field, words) in [
        (
            r#"window = "02:00-04:00 on sat""#,
            "jobs.mailwise.window",
            "every day",
        ),
        (
            r#"activities = { defrag = "daily at 03:00" }"#,
            "jobs.mailwise.activities.defrag",
            "it declares: db-check",
        ),
        (
            r#"schedule_op = "restore-everything""#,
            "jobs.mailwise.schedule_op",
            "not an operation of mailwise",
        ),
        (
            "window = \"02:00-03:00\"\nestimate = \"2h\"",
            "jobs.mailwise.estimate",
            "longer than the window",
        ),
        (
            r#"window = "02:05-02:15""#,
            "jobs.mailwise.window",
            "10-minute steps",
        ),
    ] {
        write(extra);
        let out = run(&["schedule", "--from", "2026-11-01T00:00:00Z"]);
        assert_eq!(out.status.code(), Some(1), "{extra}");
        let err = text(&out.stderr);
        assert!(err.contains(field) && err.contains(words), "{extra}: {err}");
        assert!(err.contains("site.toml:10:1"), "{err}");
        let out = run(&["validate"]);
        assert_eq!(out.status.code(), Some(1), "{extra}");
    }
    // A window off the 10-minute steps is narrowed, with a warning.
    write(r#"window = "02:05-04:00""#);
    let out = run(&["schedule", "--from", "2026-11-01T00:00:00Z", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("runs are fitted in 02:10-04:00"),
        "{}",
        text(&out.stderr)
    );
    // Policy-level errors name the line.
    for (extra, words) in [
        (
            r#"estimate = "soon""#,
            "jobs.mailwise.estimate: `soon` is not a length of time",
        ),
        (r#"window = "2am-4am""#, "jobs.mailwise.window"),
        (
            r#"activities = { db-check = "hourly" }"#,
            "jobs.mailwise.activities.db-check",
        ),
    ] {
        write(extra);
        let out = run(&["schedule", "--from", "2026-11-01T00:00:00Z"]);
        assert_eq!(out.status.code(), Some(1), "{extra}");
        assert!(
            text(&out.stderr).contains(words),
            "{extra}: {}",
            text(&out.stderr)
        );
    }
    std::fs::write(
        &policy,
        "[site]\nname = \"s\"\ntimezone = \"Mars/Olympus\"\n",
    )
    .unwrap();
    let out = run(&["validate"]);
    assert!(
        text(&out.stderr).contains("site.timezone: `Mars/Olympus` is not a time zone"),
        "{}",
        text(&out.stderr)
    );
    // The command line.
    write("");
    for (args, words) in [
        (
            vec!["schedule", "--from", "yesterday"],
            "--from `yesterday` is not an RFC 3339",
        ),
        (
            vec![
                "schedule",
                "--from",
                "2026-11-02T00:00:00Z",
                "--until",
                "2026-11-01T00:00:00Z",
            ],
            "must be later than --from",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains(words), "{}", text(&out.stderr));
    }
}
