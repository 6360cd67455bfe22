//! The simulator's effects and invariants, on small hand-built worlds and plans: what a copy
//! puts in the set, what a full disk or a crash leaves, and that each invariant breaks when a
//! plan breaks it.

use super::*;
use crate::plan::testing::{copy, exec, plan, step};
use crate::plan::{Action, Location};
use crate::simulate::world::FileNode;
use std::collections::BTreeSet;

/// `/site/data/d` holds two files; the set is `/backups/S1`.
fn world(free: u64) -> World {
    let mut w = World::new("test", 0, free);
    for (name, size) in [("a", 400), ("b", 600)] {
        let content = w.new_content();
        let file = FileNode {
            size,
            content,
            mtime_ms: 0,
            readonly: false,
            damaged: false,
            text: None,
        };
        w.put_file(&format!("/site/data/d/{name}"), file).unwrap();
    }
    w.mkdir_p("/backups").unwrap();
    w
}

fn roots() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("data".to_string(), "/site/data".to_string()),
        ("set".to_string(), "/backups/S1".to_string()),
    ])
}

fn context<'a>(roots: &'a BTreeMap<String, String>, plan: &'a Plan) -> Context<'a> {
    static NONE: std::sync::OnceLock<RemoteServers> = std::sync::OnceLock::new();
    Context {
        remote: NONE.get_or_init(RemoteServers::default),
        job: "job",
        roots,
        keep: Vec::new(),
        set_use: SetUse::Writes,
        markers: &[],
        leaves_maintenance: false,
        behaviours: &[],
        plan,
    }
}

fn statuses(t: &Transcript) -> Vec<(String, StepStatus)> {
    t.steps.iter().map(|s| (s.id.clone(), s.status)).collect()
}

fn broken(t: &Transcript) -> Vec<&str> {
    t.broken().map(|i| i.id.as_str()).collect()
}

#[test]
fn a_backup_completes_its_set_and_a_full_disk_leaves_it_incomplete() {
    let (roots, p) = (
        roots(),
        plan(vec![exec("prepare"), copy("copy", "set")], vec![]),
    );
    let ctx = context(&roots, &p);
    let t = run(&world(1 << 30), &ctx, None);
    assert_eq!(t.outcome.status, RunStatus::Completed, "{t:#?}");
    assert_eq!(t.set_complete, Some(true));
    assert!(broken(&t).is_empty(), "{:?}", broken(&t));
    assert_eq!(
        statuses(&t),
        [
            ("prepare".into(), StepStatus::Ok),
            ("copy".into(), StepStatus::Ok)
        ]
    );

    // 900 bytes free where the set goes: the copy fails, the run aborts, the set is not good.
    let mut small = world(1 << 30);
    small.set_volume("/backups", 900);
    let t = run(&small, &ctx, None);
    assert_eq!(t.outcome.status, RunStatus::Failed);
    assert_eq!(t.outcome.step.as_deref(), Some("copy"));
    let note = t
        .steps
        .iter()
        .find(|s| s.id == "copy")
        .and_then(|s| s.note.clone());
    assert!(
        note.as_deref().is_some_and(|n| n.contains("space")),
        "{note:?}"
    );
    assert_eq!(t.set_complete, Some(false));
    assert!(broken(&t).is_empty(), "{:?}", broken(&t));
}

#[test]
fn every_injected_fault_ends_as_the_driver_says_and_breaks_no_invariant() {
    let (roots, p) = (
        roots(),
        plan(vec![copy("copy", "set"), exec("after")], vec![exec("tidy")]),
    );
    let ctx = context(&roots, &p);
    let w = world(1 << 30);
    for fault in scenarios(&p, FaultMode::EachStep, &RemoteServers::default()) {
        let t = run(&w, &ctx, fault.as_ref());
        assert!(broken(&t).is_empty(), "{}: {:?}", t.scenario, broken(&t));
        // Cleanup always runs, whatever happened to the body.
        assert!(
            t.steps.iter().any(|s| s.id == "tidy"),
            "{}: {:?}",
            t.scenario,
            statuses(&t)
        );
        // The set is complete only if the body ended well; a crash anywhere in the body (even
        // after its last step, before the set was completed) leaves a partial set that
        // recovery removes. Cleanup's fate does not touch the set.
        let expected = match &fault {
            None => Some(true),
            Some(f) if f.step() == "tidy" => Some(true),
            Some(_) => Some(false),
        };
        assert_eq!(t.set_complete, expected, "{}", t.scenario);
    }
}

#[test]
fn a_backup_that_changes_its_source_breaks_the_invariant_naming_the_step() {
    let touch = crate::plan::testing::step(
        "touch",
        Action::WriteFile {
            path: Location::new("data", "d/a"),
            contents: b"changed".to_vec(),
        },
    );
    let (roots, p) = (roots(), plan(vec![copy("copy", "set"), touch], vec![]));
    let ctx = context(&roots, &p);
    let t = run(&world(1 << 30), &ctx, None);
    assert_eq!(broken(&t), [crate::plan::safety::SOURCE_UNCHANGED.id]);
    let detail = t.broken().next().and_then(|i| i.detail.clone()).unwrap();
    assert!(
        detail.contains("/site/data/d: 1 file(s) changed"),
        "{detail}"
    );
}

/// A source the run made itself (a program's output in a staging directory, carried into the
/// set, then removed) is not the product's data: left behind as copied, when its removal
/// fails, it keeps the invariant; changed after the copy, it breaks it.
#[test]
fn a_source_the_run_made_and_left_as_copied_is_no_change() {
    let write = |id: &str, contents: &[u8]| {
        step(
            id,
            Action::WriteFile {
                path: Location::new("data", "d/out"),
                contents: contents.to_vec(),
            },
        )
    };
    let remove = step(
        "empty",
        Action::Remove {
            path: Location::new("data", "d"),
        },
    );
    let mut w = World::new("test", 0, 1 << 30);
    w.mkdir_p("/site/data").unwrap();
    w.mkdir_p("/backups").unwrap();
    let roots = roots();
    let p = plan(
        vec![write("program", b"backup"), copy("copy", "set")],
        vec![remove.clone()],
    );
    let ctx = context(&roots, &p);
    for fault in [
        None,
        Some(Fault::Fail {
            step: "empty".into(),
        }),
    ] {
        let t = run(&w, &ctx, fault.as_ref());
        assert_eq!(t.set_complete, Some(true), "{}", t.scenario);
        assert!(broken(&t).is_empty(), "{}: {:?}", t.scenario, broken(&t));
    }
    let p = plan(
        vec![
            write("program", b"backup"),
            copy("copy", "set"),
            write("again", b"changed"),
        ],
        vec![],
    );
    let ctx = context(&roots, &p);
    let t = run(&w, &ctx, None);
    assert_eq!(broken(&t), [crate::plan::safety::SOURCE_UNCHANGED.id]);
}

#[test]
fn a_point_of_no_return_keeps_the_set_through_a_later_failure_and_a_crash() {
    let mut commit = exec("commit");
    commit.commits_set = true;
    let (roots, p) = (
        roots(),
        plan(vec![copy("copy", "set"), commit, exec("check")], vec![]),
    );
    let ctx = context(&roots, &p);
    let w = world(1 << 30);
    // The failure after the point of no return: the set is kept (not complete, not gone), and
    // the outcome says why.
    let t = run(
        &w,
        &ctx,
        Some(&Fault::Fail {
            step: "check".into(),
        }),
    );
    assert_eq!((t.set_complete, t.set_kept), (Some(false), true), "{t:#?}");
    assert!(t.outcome.set.is_some());
    assert!(
        t.outcome
            .set_kept
            .as_deref()
            .is_some_and(|why| why.contains("`check`") && why.contains("`commit`")),
        "{:?}",
        t.outcome.set_kept
    );
    assert!(broken(&t).is_empty(), "{:?}", broken(&t));
    // Before the point of no return, the same failure discards the set.
    let t = run(
        &w,
        &ctx,
        Some(&Fault::Fail {
            step: "copy".into(),
        }),
    );
    assert_eq!(t.set_complete, Some(false));
    assert!(t.outcome.set_kept.is_none() && !t.set_kept && t.outcome.set.is_none());
    // A crash right after it: recovery keeps the set.
    let t = run(
        &w,
        &ctx,
        Some(&Fault::CrashAfter {
            step: "commit".into(),
        }),
    );
    assert_eq!(t.outcome.status, RunStatus::Recovered);
    assert!(t.outcome.set.is_some(), "{t:#?}");
    assert!(broken(&t).is_empty(), "{:?}", broken(&t));
}

fn file(w: &mut World, path: &str) {
    let content = w.new_content();
    let f = FileNode {
        size: 10,
        content,
        mtime_ms: 0,
        readonly: false,
        damaged: false,
        text: None,
    };
    w.put_file(path, f).unwrap();
}

fn remove_gm1(except: &[&str]) -> Step {
    step(
        "clear",
        Action::RemoveFiles {
            dir: Location::new("data", "journal"),
            patterns: vec!["gm1".into(), "gm1.*".into()],
            except: except.iter().map(|s| s.to_string()).collect(),
            ignore_case: true,
        },
    )
}

#[test]
fn remove_files_takes_what_matches_in_the_world_when_it_runs() {
    let mut w = world(1 << 30);
    for f in ["GM1", "gm1.001", "gm1.keep", "gm10.jnl"] {
        file(&mut w, &format!("/site/data/journal/{f}"));
    }
    let roots = roots();
    let p = plan(vec![remove_gm1(&["*.keep"])], vec![]);
    let t = run(&w, &context(&roots, &p), None);
    assert_eq!(t.outcome.status, RunStatus::Completed, "{t:#?}");
    let left: Vec<&str> = t.steps[0].changes.iter().map(String::as_str).collect();
    assert_eq!(
        left,
        ["- data:/journal/GM1", "- data:/journal/gm1.001"],
        "{t:#?}"
    );
    assert!(t.outcome.warnings.is_empty(), "{:?}", t.outcome.warnings);

    // Nothing matches: done, and the outcome says none was found.
    let mut w = world(1 << 30);
    file(&mut w, "/site/data/journal/gm10.jnl");
    let t = run(&w, &context(&roots, &p), None);
    assert_eq!(t.outcome.status, RunStatus::Completed);
    assert_eq!(t.outcome.warnings.len(), 1, "{:?}", t.outcome.warnings);
    assert!(t.outcome.warnings[0].starts_with("clear: none found"));

    // A directory that matches is left, and the step fails naming it.
    let mut w = world(1 << 30);
    w.mkdir_p("/site/data/journal/gm1.d").unwrap();
    let t = run(&w, &context(&roots, &p), None);
    assert_eq!(t.outcome.status, RunStatus::Failed);
    assert!(
        t.steps[0]
            .note
            .as_deref()
            .is_some_and(|n| n.contains("gm1.d") && n.contains("not a regular file")),
        "{t:#?}"
    );
}

#[test]
fn a_command_that_must_not_be_killed_is_waited_for_and_never_killed() {
    let slow = CommandBehaviour {
        command: "mwsave".into(),
        args_prefix: vec![],
        exit_code: 0,
        output: String::new(),
        duration_ms: 5_000,
        effects: vec![],
    };
    let limited = |no_kill: bool| Step {
        timeout_ms: Some(1_000),
        no_kill,
        ..exec("mwsave")
    };
    let roots = roots();
    let behaviours = [slow];
    for no_kill in [false, true] {
        let p = plan(vec![limited(no_kill)], vec![]);
        let ctx = Context {
            behaviours: &behaviours,
            ..context(&roots, &p)
        };
        let t = run(&world(1 << 30), &ctx, None);
        let never_killed = t.invariants.iter().find(|i| i.id == "hokan:never-killed");
        if no_kill {
            // Past its limit it is reported and waited for, to its end.
            assert_eq!(statuses(&t), [("mwsave".into(), StepStatus::Ok)]);
            assert_eq!(t.duration_ms, 5_000);
            assert!(
                t.outcome.warnings[0].contains("ran past its time limit"),
                "{t:#?}"
            );
            assert!(never_killed.is_some_and(|i| i.held), "{t:#?}");
            // Hung, it is still not killed: the operator stops it, and the step fails.
            let hang = Fault::Timeout {
                step: "mwsave".into(),
            };
            let t = run(&world(1 << 30), &ctx, Some(&hang));
            assert_eq!(statuses(&t), [("mwsave".into(), StepStatus::Failed)]);
            assert!(broken(&t).is_empty(), "{:?}", broken(&t));
        } else {
            assert_eq!(statuses(&t), [("mwsave".into(), StepStatus::TimedOut)]);
            assert!(
                never_killed.is_none(),
                "only plans with such a command check it"
            );
        }
    }
}

#[test]
fn the_plans_window_is_waited_for_kept_to_and_checked() {
    use crate::plan::model::{PlanWindow, TimeWindow};
    let slow = CommandBehaviour {
        command: "copy".into(),
        args_prefix: vec![],
        exit_code: 0,
        output: String::new(),
        duration_ms: 5_000,
        effects: vec![],
    };
    let behaviours = [slow];
    let roots = roots();
    let with = |start_ms: i64, end_ms: i64| {
        let mut p = plan(
            vec![exec("prepare"), exec("copy"), exec("after")],
            vec![exec("tidy")],
        );
        p.window = Some(PlanWindow {
            window: TimeWindow { start_ms, end_ms },
            from_step: "copy".into(),
            until_step: "copy".into(),
        });
        p
    };
    let run_it = |p: &Plan| {
        let ctx = Context {
            behaviours: &behaviours,
            ..context(&roots, p)
        };
        run(&world(1 << 30), &ctx, None)
    };
    let inside = |t: &Transcript| {
        t.invariants
            .iter()
            .find(|i| i.id == "hokan:inside-window")
            .map(|i| i.held)
    };
    // The world's clock reads 0: a window from 60 s is waited for, and the copy fits in it.
    let t = run_it(&with(60_000, 120_000));
    assert_eq!(t.outcome.status, RunStatus::Completed, "{t:#?}");
    let copy = t.steps.iter().find(|s| s.id == "copy").unwrap();
    assert_eq!(copy.at_ms, 60_000);
    assert_eq!(inside(&t), Some(true));
    // Too short for the copy: it ran past the end, and the invariant says so.
    let t = run_it(&with(0, 1_000));
    assert_eq!(inside(&t), Some(false), "{t:#?}");
    // Already over: the run stops before the copy, and the cleanup runs.
    let t = run_it(&with(-10_000, -1));
    assert_eq!(t.outcome.status, RunStatus::Failed);
    assert_eq!(t.outcome.step.as_deref(), Some("copy"));
    assert!(
        t.outcome
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("window the plan set ended"))
    );
    assert!(t.steps.iter().all(|s| s.id != "copy"), "{:?}", statuses(&t));
    assert!(t.steps.iter().any(|s| s.id == "tidy"));
}

#[test]
fn a_server_down_after_a_step_defers_its_cleanup_there_until_recovery_once_it_is_back() {
    let on = |s: Step| Step {
        target: Some("mw1".into()),
        ..s
    };
    let marker = Location::new("data", "maint");
    let set_maint = on(step(
        "maintenance-on",
        Action::WriteFile {
            path: marker.clone(),
            contents: b"on".to_vec(),
        },
    ));
    let release = on(step(
        "maintenance-off",
        Action::Remove {
            path: marker.clone(),
        },
    ));
    let (roots, mut p) = (
        roots(),
        plan(
            vec![set_maint, on(exec("work")), copy("copy", "set")],
            vec![release, exec("tidy")],
        ),
    );
    p.invariants.push(crate::plan::Invariant {
        id: "released".into(),
        description: "maintenance is released".into(),
        target: Some("mw1".into()),
        condition: crate::plan::Condition::Absent { path: marker },
        when: vec![],
    });
    // mw1 is reached over ssh; `data` is on it.
    let remote = RemoteServers {
        servers: BTreeSet::from(["mw1".to_string()]),
        roots: BTreeMap::from([("data".to_string(), "mw1".to_string())]),
    };
    let ctx = Context {
        remote: &remote,
        ..context(&roots, &p)
    };
    let faults = scenarios(&p, FaultMode::EachStep, &remote);
    // One per step that needs the server: those naming it, and the copy out of its root (the
    // host's own `tidy` needs none).
    let down: Vec<String> = faults
        .iter()
        .flatten()
        .filter(|f| matches!(f, Fault::ServerDownAfter { .. }))
        .map(Fault::label)
        .collect();
    assert_eq!(
        down,
        [
            "server-down-after maintenance-on (mw1)",
            "server-down-after work (mw1)",
            "server-down-after copy (mw1)",
            "server-down-after maintenance-off (mw1)"
        ]
    );
    let fault = Fault::ServerDownAfter {
        step: "maintenance-on".into(),
        server: "mw1".into(),
    };
    let t = run(&world(1 << 30), &ctx, Some(&fault));
    assert!(t.fault_reached);
    let phases: Vec<(Phase, &str, StepStatus)> = t
        .steps
        .iter()
        .map(|s| (s.phase, s.id.as_str(), s.status))
        .collect();
    assert_eq!(
        phases,
        [
            (Phase::Body, "maintenance-on", StepStatus::Ok),
            (Phase::Body, "work", StepStatus::Unreachable),
            (Phase::Cleanup, "maintenance-off", StepStatus::Unreachable),
            (Phase::Cleanup, "tidy", StepStatus::Ok),
            // Back: the recovery runs what could not reach it, and nothing else again.
            (Phase::Recovery, "maintenance-off", StepStatus::Ok),
        ],
        "{t:#?}"
    );
    // The run ended as it had (the body failed, no set), its cleanup now done.
    assert_eq!(t.outcome.status, RunStatus::Failed);
    assert!(t.outcome.cleanup_deferred.is_empty(), "{:?}", t.outcome);
    assert_eq!(t.set_complete, Some(false));
    assert!(broken(&t).is_empty(), "{:?}", broken(&t));
    // Wherever the server goes down, maintenance is released in the end (by the cleanup, or
    // by the recovery once it is back), and the run says what it did.
    for fault in faults
        .iter()
        .flatten()
        .filter(|f| matches!(f, Fault::ServerDownAfter { .. }))
    {
        let t = run(&world(1 << 30), &ctx, Some(fault));
        assert!(broken(&t).is_empty(), "{}: {:?}", t.scenario, broken(&t));
        assert!(t.outcome.cleanup_deferred.is_empty(), "{}", t.scenario);
    }
}
