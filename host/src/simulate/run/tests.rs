//! The simulator's effects and invariants, on small hand-built worlds and plans: what a copy
//! puts in the set, what a full disk or a crash leaves, and that each invariant breaks when a
//! plan breaks it.

use super::*;
use crate::plan::testing::{copy, exec, plan};
use crate::plan::{Action, Location};
use crate::simulate::world::FileNode;

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
    Context {
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
    for fault in scenarios(&p, FaultMode::EachStep) {
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
