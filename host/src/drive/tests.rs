//! The driver's rules, against a scripted backend: each step's attempts answer from a script,
//! and the backend records what the driver asked of it, in order.

use super::*;
use crate::plan::model::{Exec, Group};
use crate::plan::testing::{cont, copy, exec, manual, plan};
use crate::plan::{Location, ServiceState};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a scripted step does on each attempt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Try {
    Ok,
    Fail,
    Hang,
    /// Its server could not be reached.
    Down,
}

#[derive(Default)]
struct Script {
    /// Step id to its attempts; the last one repeats. A step not named succeeds.
    attempts: BTreeMap<&'static str, Vec<Try>>,
    /// Gates: step id to whether the operator confirms (default: yes).
    gates: BTreeMap<&'static str, bool>,
    /// Conditions on the site: `exists` paths that exist, and those that cannot be read.
    exists: Vec<&'static str>,
    unreadable: Vec<&'static str>,
    /// `exists` paths on a server that cannot be reached.
    down: Vec<&'static str>,
    crash_after: Option<&'static str>,
    stop_before: Option<usize>,
    completion_fails: bool,
    progress: Mutex<Progress>,
    /// What the driver asked, in order: `start x`, `end x ok 1`, `gate x`, `set complete`, ...
    log: Mutex<Vec<String>>,
    tries: Mutex<BTreeMap<String, usize>>,
    crashed: AtomicBool,
    asked_stop: Mutex<usize>,
}

impl Script {
    fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Effects for Script {
    fn progress(&self) -> &Mutex<Progress> {
        &self.progress
    }

    fn holds(&self, c: &Condition, _target: Option<&str>) -> Result<bool, Failure> {
        match c {
            Condition::Exists { path } if self.unreadable.contains(&path.path.as_str()) => {
                Err(Failure::new(format!("{path}: permission denied")))
            }
            Condition::Exists { path } if self.down.contains(&path.path.as_str()) => Err(Failure {
                status: StepStatus::Unreachable,
                ..Failure::new(format!("server `s2` could not be reached: {path} unread"))
            }),
            Condition::Exists { path } => Ok(self.exists.contains(&path.path.as_str())),
            other => panic!("the script has no value for {other}"),
        }
    }

    fn act(&self, s: &Step) -> Result<Done, Failure> {
        let n = {
            let mut tries = self.tries.lock().unwrap();
            let n = tries.entry(s.id.clone()).or_default();
            *n += 1;
            *n
        };
        let script = self.attempts.get(s.id.as_str());
        let this = script.map_or(Try::Ok, |a| a[(n - 1).min(a.len() - 1)]);
        self.note(format!("act {} #{n}", s.id));
        match this {
            Try::Ok => Ok(format!("{} done", s.id).into()),
            Try::Fail => Err(Failure::new(format!("{} broke", s.id))),
            Try::Hang => Err(Failure::timed_out(format!("{} hung", s.id))),
            Try::Down => Err(Failure {
                status: StepStatus::Unreachable,
                ..Failure::new(format!(
                    "server `s2` could not be reached: {} not run",
                    s.id
                ))
            }),
        }
    }

    fn gate(&self, s: &Step, _instructions: &str, _reference: Option<&str>) -> Gate {
        self.note(format!("gate {}", s.id));
        if self.gates.get(s.id.as_str()).copied().unwrap_or(true) {
            Gate::Confirmed("yes".into())
        } else {
            Gate::NotConfirmed("no terminal".into())
        }
    }

    fn started(&self, s: &Step, phase: Phase) {
        self.note(format!("start {} {phase:?}", s.id));
    }

    fn ended(&self, s: &Step, phase: Phase, end: StepEnd) {
        self.note(format!(
            "end {} {phase:?} {:?} {}",
            s.id, end.status, end.attempts
        ));
    }

    fn item_ended(&self, steps: &[Step]) -> Flow {
        let hit = steps
            .iter()
            .any(|s| self.crash_after == Some(s.id.as_str()));
        if hit && !self.crashed.swap(true, Ordering::SeqCst) {
            return Flow::Crash;
        }
        Flow::Go
    }

    fn stop_requested(&self) -> Option<String> {
        let mut asked = self.asked_stop.lock().unwrap();
        *asked += 1;
        (Some(*asked) == self.stop_before).then(|| "SIGTERM".into())
    }

    fn body_ended(&self, set: &SetEnd) -> Result<Option<String>, String> {
        self.note(format!("set {set:?}"));
        match set {
            SetEnd::Complete | SetEnd::Kept(_) if self.completion_fails => {
                Err("cannot sync the set".into())
            }
            SetEnd::Complete | SetEnd::Kept(_) => Ok(Some("S1".into())),
            SetEnd::Discard(_) => Ok(None),
        }
    }

    fn cleaned_up(&self, outcome: &Outcome) {
        self.note(format!("cleaned up, set {:?}", outcome.set));
    }

    fn recovered_set(&self, completed: bool, kept: Option<&str>) -> Result<Option<String>, String> {
        self.note(format!("recovered, completed {completed}, kept {kept:?}"));
        Ok((completed || kept.is_some()).then(|| "S1".into()))
    }
}

fn finished(r: Ran) -> Outcome {
    match r {
        Ran::Finished(o) => *o,
        Ran::Crashed => panic!("the run crashed"),
    }
}

#[test]
fn a_finished_body_completes_the_set_before_the_cleanup() {
    let fx = Script::default();
    let p = plan(vec![exec("a"), copy("copy", "set")], vec![exec("undo")]);
    let o = finished(run(&p, &fx));
    assert_eq!(o.status, RunStatus::Completed);
    assert_eq!(o.set.as_deref(), Some("S1"));
    assert!(!o.needs_attention());
    assert_eq!(
        fx.log(),
        [
            "start a Body",
            "act a #1",
            "end a Body Ok 1",
            "start copy Body",
            "act copy #1",
            "end copy Body Ok 1",
            "set Complete",
            "start undo Cleanup",
            "act undo #1",
            "end undo Cleanup Ok 1",
            "cleaned up, set Some(\"S1\")",
        ]
    );
}

#[test]
fn a_failed_step_is_retried_then_aborts_and_the_cleanup_still_runs() {
    let fx = Script {
        attempts: BTreeMap::from([("b", vec![Try::Fail, Try::Fail, Try::Fail])]),
        ..Script::default()
    };
    let b = Step {
        retries: 2,
        ..exec("b")
    };
    let p = plan(
        vec![exec("a"), b, exec("c")],
        vec![exec("undo1"), exec("undo2")],
    );
    let o = finished(run(&p, &fx));
    assert_eq!(o.status, RunStatus::Failed);
    assert_eq!(o.step.as_deref(), Some("b"));
    assert_eq!(o.reason.as_deref(), Some("step `b` failed: run b"));
    let log = fx.log();
    assert!(log.contains(&"end b Body Failed 3".to_string()), "{log:?}");
    assert!(
        !log.iter().any(|l| l.contains(" c ")),
        "c never runs: {log:?}"
    );
    assert!(log.iter().any(|l| l.starts_with("set Discard")));
    assert!(log.contains(&"end undo2 Cleanup Ok 1".to_string()));
}

#[test]
fn a_retry_that_succeeds_is_ok_and_a_hang_is_timed_out() {
    let fx = Script {
        attempts: BTreeMap::from([("a", vec![Try::Fail, Try::Ok]), ("h", vec![Try::Hang])]),
        ..Script::default()
    };
    let a = Step {
        retries: 1,
        ..exec("a")
    };
    let p = plan(vec![a, exec("h")], vec![]);
    let o = finished(run(&p, &fx));
    assert!(fx.log().contains(&"end a Body Ok 2".to_string()));
    assert!(fx.log().contains(&"end h Body TimedOut 1".to_string()));
    assert_eq!(o.step.as_deref(), Some("h"));
}

#[test]
fn continue_goes_on_and_only_a_failed_writer_of_the_set_makes_it_incomplete() {
    // A copy out of the set (to media) failing leaves the set whole.
    let fx = Script {
        attempts: BTreeMap::from([("to-media", vec![Try::Fail])]),
        ..Script::default()
    };
    let p = plan(
        vec![
            copy("into", "set"),
            cont(copy("to-media", "media")),
            exec("z"),
        ],
        vec![],
    );
    let o = finished(run(&p, &fx));
    assert_eq!(o.status, RunStatus::Completed);
    assert_eq!(o.steps_failed, ["to-media"]);
    assert!(o.needs_attention());
    assert_eq!(o.set.as_deref(), Some("S1"));
    assert!(fx.log().contains(&"end z Body Ok 1".to_string()));

    // A copy into the set failing, even allowed to, leaves it incomplete.
    let fx = Script {
        attempts: BTreeMap::from([("into", vec![Try::Fail])]),
        ..Script::default()
    };
    let p = plan(vec![cont(copy("into", "set")), exec("z")], vec![]);
    let o = finished(run(&p, &fx));
    assert_eq!(o.status, RunStatus::Completed);
    assert_eq!(o.set, None);
    assert!(
        fx.log().contains(
            &"set Discard(\"`into` failed, so the set lacks what it was to write\")".to_string()
        ),
        "{:?}",
        fx.log()
    );
}

#[test]
fn an_unconfirmed_gate_is_asked_once_and_aborts_even_with_continue() {
    let fx = Script {
        gates: BTreeMap::from([("check", false)]),
        ..Script::default()
    };
    let check = Step {
        retries: 3,
        ..cont(manual("check"))
    };
    let p = plan(vec![check, exec("after")], vec![exec("undo")]);
    let o = finished(run(&p, &fx));
    assert_eq!(o.status, RunStatus::Failed);
    assert_eq!(o.step.as_deref(), Some("check"));
    assert!(o.steps_failed.is_empty());
    assert_eq!(
        o.reason.as_deref(),
        Some("stopped at the manual step `check` (run check): nobody confirmed it")
    );
    let log = fx.log();
    assert_eq!(log.iter().filter(|l| *l == "gate check").count(), 1);
    assert!(log.contains(&"end check Body NotConfirmed 1".to_string()));
    assert!(!log.iter().any(|l| l.contains("after")));
    assert!(log.contains(&"end undo Cleanup Ok 1".to_string()));

    // Confirmed, it is a step like any other.
    let fx = Script::default();
    let p = plan(vec![manual("check"), exec("after")], vec![]);
    assert_eq!(finished(run(&p, &fx)).status, RunStatus::Completed);
}

#[test]
fn when_conditions_skip_or_fail_a_step_without_running_it() {
    let fx = Script {
        exists: vec!["here"],
        unreadable: vec!["locked"],
        ..Script::default()
    };
    let when = |id: &str, path: &str| Step {
        when: vec![Condition::Exists {
            path: Location::new("data", path),
        }],
        ..exec(id)
    };
    let p = plan(
        vec![
            when("runs", "here"),
            when("skipped", "gone"),
            when("unreadable", "locked"),
        ],
        vec![],
    );
    let o = finished(run(&p, &fx));
    let log = fx.log();
    assert!(log.contains(&"end runs Body Ok 1".to_string()));
    assert!(log.contains(&"end skipped Body Skipped 0".to_string()));
    assert!(log.contains(&"end unreadable Body Failed 0".to_string()));
    assert!(
        !log.iter()
            .any(|l| l.contains("act skipped") || l.contains("act unreadable"))
    );
    assert!(!log.iter().any(|l| l.starts_with("start skipped")));
    assert_eq!(o.step.as_deref(), Some("unreadable"));
}

#[test]
fn step_conditions_read_what_this_run_started_and_finished() {
    let fx = Script {
        attempts: BTreeMap::from([("on", vec![Try::Fail])]),
        ..Script::default()
    };
    let if_started = |id: &str, step: &str| Step {
        when: vec![Condition::StepStarted { step: step.into() }],
        ..exec(id)
    };
    let p = plan(
        vec![exec("on")],
        vec![if_started("off", "on"), if_started("never", "nothing")],
    );
    let o = finished(run(&p, &fx));
    assert_eq!(o.status, RunStatus::Failed);
    let log = fx.log();
    assert!(log.contains(&"end off Cleanup Ok 1".to_string()), "{log:?}");
    assert!(log.contains(&"end never Cleanup Skipped 0".to_string()));
    let p = plan(
        vec![cont(exec("on"))],
        vec![Step {
            when: vec![Condition::StepNotSucceeded { step: "on".into() }],
            ..exec("repair")
        }],
    );
    let fx = Script {
        attempts: BTreeMap::from([("on", vec![Try::Fail])]),
        ..Script::default()
    };
    finished(run(&p, &fx));
    assert!(fx.log().contains(&"end repair Cleanup Ok 1".to_string()));
}

#[test]
fn a_group_runs_every_member_then_aborts() {
    let fx = Script {
        attempts: BTreeMap::from([("g1", vec![Try::Fail])]),
        ..Script::default()
    };
    let p = Plan {
        steps: vec![
            Item::Group(Group {
                group: "g".into(),
                title: "both".into(),
                steps: vec![exec("g1"), exec("g2")],
            }),
            Item::Step(exec("after")),
        ],
        cleanup: vec![],
        invariants: vec![],
        warnings: vec![],
        window: None,
    };
    let o = finished(run(&p, &fx));
    assert_eq!(o.step.as_deref(), Some("g1"));
    let log = fx.log();
    assert!(log.contains(&"end g2 Body Ok 1".to_string()));
    assert!(!log.iter().any(|l| l.contains("after")));
}

#[test]
fn a_crash_is_recovered_by_the_cleanup_steps_that_had_not_ended() {
    // In the body: the whole cleanup runs as recovery, and the set is not kept.
    let fx = Script {
        crash_after: Some("b"),
        ..Script::default()
    };
    let p = plan(
        vec![exec("a"), copy("b", "set"), exec("c")],
        vec![exec("u1"), exec("u2")],
    );
    assert!(matches!(run(&p, &fx), Ran::Crashed));
    let o = recover(&p, &fx);
    assert_eq!(o.status, RunStatus::Recovered);
    assert_eq!(o.step.as_deref(), Some("b"));
    assert_eq!(o.set, None);
    let log = fx.log();
    assert!(
        !log.iter()
            .any(|l| l.contains(" c ") || l.starts_with("set "))
    );
    assert!(log.contains(&"end u1 Recovery Ok 1".to_string()));
    assert!(log.contains(&"recovered, completed false, kept None".to_string()));

    // In the cleanup: the set was completed and is kept; recovery runs only what had not ended,
    // and still reports a cleanup step that had failed.
    let fx = Script {
        crash_after: Some("u2"),
        attempts: BTreeMap::from([("u1", vec![Try::Fail])]),
        ..Script::default()
    };
    let p = plan(vec![exec("a")], vec![exec("u1"), exec("u2"), exec("u3")]);
    assert!(matches!(run(&p, &fx), Ran::Crashed));
    let o = recover(&p, &fx);
    assert_eq!(o.set.as_deref(), Some("S1"));
    assert_eq!(o.cleanup_failed, ["u1"]);
    let log = fx.log();
    assert_eq!(log.iter().filter(|l| l.starts_with("act u1")).count(), 1);
    assert!(log.contains(&"end u3 Recovery Ok 1".to_string()));
}

#[test]
fn recovery_resumes_from_a_journal_s_progress() {
    // As `hokan recover` does: a fresh backend whose progress was rebuilt from records.
    let fx = Script::default();
    {
        let mut p = fx.progress.lock().unwrap();
        p.started("a");
        p.ended("a", Phase::Body, StepStatus::Ok);
        p.started("u1");
        p.ended("u1", Phase::Cleanup, StepStatus::Ok);
        p.started("u2");
    }
    let p = plan(vec![exec("a")], vec![exec("u1"), exec("u2")]);
    let o = recover(&p, &fx);
    assert_eq!(o.step.as_deref(), Some("u1"));
    assert_eq!(
        fx.log(),
        [
            "start u2 Recovery",
            "act u2 #1",
            "end u2 Recovery Ok 1",
            "recovered, completed false, kept None",
        ]
    );
}

#[test]
fn a_cleanup_step_whose_server_is_down_is_left_for_recovery_which_runs_only_it_again() {
    let fx = Script {
        attempts: BTreeMap::from([("u2", vec![Try::Down]), ("u3", vec![Try::Fail])]),
        down: vec!["marker"],
        ..Script::default()
    };
    // u4 runs only if a marker on the server is there: with the server down, nobody knows.
    let mut u4 = exec("u4");
    u4.when = vec![Condition::Exists {
        path: Location::new("data", "marker"),
    }];
    let p = plan(
        vec![exec("a")],
        vec![exec("u1"), exec("u2"), exec("u3"), u4],
    );
    let o = finished(run(&p, &fx));
    // The body did its job; the cleanup went on past the server that was down.
    assert_eq!(o.status, RunStatus::Completed);
    assert_eq!(o.set.as_deref(), Some("S1"));
    assert!(fx.log().contains(&"end u3 Cleanup Failed 1".to_string()));
    // Deferred, naming the server, and not counted among the cleanup steps that ran and failed.
    assert_eq!(
        o.cleanup_deferred,
        [
            "`u2`: server `s2` could not be reached: u2 not run",
            "`u4`: cannot evaluate \"data:/marker exists\": server `s2` could not be reached: data:/marker unread"
        ]
    );
    assert_eq!(o.cleanup_failed, ["u3"]);
    assert!(o.needs_attention());
    assert!(
        o.summary()
            .contains("cleanup step `u2`: server `s2` could not be reached: u2 not run; it is left for `hokan recover` to run again"),
        "{}",
        o.summary()
    );

    // `hokan recover`, once the server answers: a fresh backend with the journal's progress.
    let again = Script {
        attempts: BTreeMap::from([("u3", vec![Try::Fail])]),
        progress: Mutex::new(fx.progress.lock().unwrap().clone()),
        ..Script::default()
    };
    let r = recover(&p, &again);
    assert_eq!(
        again.log(),
        [
            "start u2 Recovery",
            "act u2 #1",
            "end u2 Recovery Ok 1",
            "end u4 Recovery Skipped 0",
            "recovered, completed true, kept None",
        ],
        "u1 succeeded and u3 ran and failed: neither runs again"
    );
    assert!(r.cleanup_deferred.is_empty());
    assert_eq!(r.cleanup_failed, ["u3"]);

    // Still down at recovery: deferred again, for the next one.
    let down = Script {
        attempts: BTreeMap::from([("u2", vec![Try::Down])]),
        down: vec!["marker"],
        progress: Mutex::new(fx.progress.lock().unwrap().clone()),
        ..Script::default()
    };
    let r = recover(&p, &down);
    assert_eq!(r.cleanup_deferred.len(), 2, "{r:#?}");
    assert!(r.needs_attention());
}

#[test]
fn a_stop_request_ends_the_body_before_the_next_step() {
    let fx = Script {
        stop_before: Some(2),
        ..Script::default()
    };
    let p = plan(vec![exec("a"), exec("b")], vec![exec("u")]);
    let o = finished(run(&p, &fx));
    assert_eq!(o.status, RunStatus::Failed);
    assert_eq!(o.step.as_deref(), Some("b"));
    assert_eq!(
        o.reason.as_deref(),
        Some("stopped before step `b`: SIGTERM")
    );
    assert!(!fx.log().iter().any(|l| l.contains("act b")));
    assert!(fx.log().contains(&"end u Cleanup Ok 1".to_string()));
}

#[test]
fn a_set_that_cannot_be_completed_fails_the_run() {
    let fx = Script {
        completion_fails: true,
        ..Script::default()
    };
    let p = plan(vec![copy("c", "set")], vec![exec("u")]);
    let o = finished(run(&p, &fx));
    assert_eq!(o.status, RunStatus::Failed);
    assert_eq!(o.reason.as_deref(), Some("cannot sync the set"));
    assert_eq!(o.set, None);
    assert!(fx.log().contains(&"end u Cleanup Ok 1".to_string()));
}

#[test]
fn which_steps_write_the_set() {
    assert!(writes_set(&copy("c", "set")));
    assert!(!writes_set(&copy("c", "media")));
    assert!(!writes_set(&manual("m")));
    let in_set = Step {
        action: Action::Exec(Exec {
            command: "ntbackup".into(),
            args: vec![],
            cwd: Some("set".into()),
            success_codes: vec![],
        }),
        ..exec("b")
    };
    assert!(writes_set(&in_set));
    let service = Step {
        action: Action::Service {
            service: "store".into(),
            state: ServiceState::Stopped,
        },
        ..exec("s")
    };
    assert!(!writes_set(&service));
}

#[test]
fn a_crash_after_a_step_of_a_group_comes_once_the_group_ended() {
    let fx = Script {
        crash_after: Some("g2"),
        ..Script::default()
    };
    let p = Plan {
        steps: vec![
            Item::Group(Group {
                group: "g".into(),
                title: "both".into(),
                steps: vec![exec("g1"), exec("g2"), exec("g3")],
            }),
            Item::Step(exec("after")),
        ],
        cleanup: vec![exec("u")],
        invariants: vec![],
        warnings: vec![],
        window: None,
    };
    assert!(matches!(run(&p, &fx), Ran::Crashed));
    let log = fx.log();
    // Started together, every member ran; nothing after the group did.
    for g in ["g1", "g2", "g3"] {
        assert!(log.contains(&format!("end {g} Body Ok 1")), "{log:?}");
    }
    assert!(!log.iter().any(|l| l.contains("after")));
    // The last step in the plan's order that ended, whatever order the threads ended in.
    let o = recover(&p, &fx);
    assert_eq!(o.step.as_deref(), Some("g3"));
}

fn commits(s: Step) -> Step {
    Step {
        commits_set: true,
        ..s
    }
}

#[test]
fn after_a_point_of_no_return_a_failure_keeps_the_set_and_needs_attention() {
    // The backup program ran (it deleted the logs it backed up), then a check failed.
    let fx = Script {
        attempts: BTreeMap::from([("verify-pages", vec![Try::Fail])]),
        ..Script::default()
    };
    let p = plan(
        vec![exec("stop"), commits(exec("backup")), exec("verify-pages")],
        vec![exec("start")],
    );
    let o = finished(run(&p, &fx));
    assert_eq!(o.status, RunStatus::Failed);
    assert_eq!(o.set.as_deref(), Some("S1"));
    assert_eq!(
        o.set_kept.as_deref(),
        Some("`verify-pages` failed after the point of no return `backup`")
    );
    assert!(o.needs_attention());
    assert!(fx.log().contains(
        &"set Kept(\"`verify-pages` failed after the point of no return `backup`\")".to_string()
    ));

    // Before the point of no return, the same failure discards the set.
    let fx = Script {
        attempts: BTreeMap::from([("stop", vec![Try::Fail])]),
        ..Script::default()
    };
    let o = finished(run(&p, &fx));
    assert_eq!((o.set.as_deref(), o.set_kept.as_deref()), (None, None));

    // A point of no return that failed is none: nothing was committed.
    let fx = Script {
        attempts: BTreeMap::from([("backup", vec![Try::Fail])]),
        ..Script::default()
    };
    let o = finished(run(&p, &fx));
    assert_eq!(o.set, None);
}

#[test]
fn after_a_point_of_no_return_a_failed_copy_into_the_set_is_kept_incomplete() {
    let fx = Script {
        attempts: BTreeMap::from([("copy-logs", vec![Try::Fail])]),
        ..Script::default()
    };
    let p = plan(
        vec![
            commits(exec("clear-journal")),
            cont(copy("copy-logs", "set")),
        ],
        vec![],
    );
    let o = finished(run(&p, &fx));
    assert_eq!(o.status, RunStatus::Completed);
    assert_eq!(o.steps_failed, ["copy-logs"]);
    assert_eq!(o.set.as_deref(), Some("S1"));
    assert_eq!(
        o.set_kept.as_deref(),
        Some(
            "`copy-logs` failed, so the set lacks what it was to write after the point of no return `clear-journal`"
        )
    );
}

#[test]
fn a_crash_after_a_point_of_no_return_is_recovered_by_finishing_the_set() {
    let fx = Script {
        crash_after: Some("backup"),
        ..Script::default()
    };
    let p = plan(
        vec![commits(exec("backup")), exec("verify-pages")],
        vec![exec("start")],
    );
    assert!(matches!(run(&p, &fx), Ran::Crashed));
    let o = recover(&p, &fx);
    assert_eq!(o.status, RunStatus::Recovered);
    assert_eq!(o.set.as_deref(), Some("S1"));
    let why = "the run died after the point of no return `backup`; recovery finished the set";
    assert_eq!(o.set_kept.as_deref(), Some(why));
    assert!(
        fx.log()
            .contains(&format!("recovered, completed false, kept Some({why:?})"))
    );
}

#[test]
fn a_kept_set_that_cannot_be_completed_is_left_in_place() {
    let fx = Script {
        attempts: BTreeMap::from([("verify-pages", vec![Try::Fail])]),
        completion_fails: true,
        ..Script::default()
    };
    let p = plan(vec![commits(exec("backup")), exec("verify-pages")], vec![]);
    let o = finished(run(&p, &fx));
    assert_eq!(o.set, None);
    assert!(o.needs_attention());
    let kept = o.set_kept.expect("said so");
    assert!(
        kept.contains("its partial directory is left as it is"),
        "{kept}"
    );
}

#[test]
fn step_succeeded_and_step_not_started_read_the_run_too() {
    // The repair's shape: `fix` may fail; `start` runs only after it succeeded, and the
    // cleanup's undo only while `fix` never began.
    let when = |id: &str, c: Vec<Condition>| Step {
        when: c,
        ..exec(id)
    };
    let succeeded = |s: &str| Condition::StepSucceeded { step: s.into() };
    let not_started = |s: &str| Condition::StepNotStarted { step: s.into() };
    let p = plan(
        vec![cont(exec("fix")), when("start", vec![succeeded("fix")])],
        vec![when("undo", vec![not_started("fix")])],
    );
    for (fix, start, undo) in [
        (Try::Ok, "end start Body Ok 1", "end undo Cleanup Skipped 0"),
        (
            Try::Fail,
            "end start Body Skipped 0",
            "end undo Cleanup Skipped 0",
        ),
    ] {
        let fx = Script {
            attempts: BTreeMap::from([("fix", vec![fix])]),
            ..Script::default()
        };
        finished(run(&p, &fx));
        let log = fx.log();
        assert!(log.contains(&start.to_string()), "{fix:?}: {log:?}");
        assert!(log.contains(&undo.to_string()), "{fix:?}: {log:?}");
    }
    // Never reached (the body aborted before it): not started.
    let p = plan(
        vec![exec("before"), exec("fix")],
        vec![when("undo", vec![not_started("fix")])],
    );
    let fx = Script {
        attempts: BTreeMap::from([("before", vec![Try::Fail])]),
        ..Script::default()
    };
    finished(run(&p, &fx));
    assert!(fx.log().contains(&"end undo Cleanup Ok 1".to_string()));
}

#[test]
fn an_invariant_applies_only_when_its_conditions_hold_and_one_may_leave_a_service_on_purpose() {
    let stopped = |when: Vec<Condition>| Invariant {
        id: "store-left-stopped".into(),
        description: "the repair did not finish: the store is left stopped".into(),
        target: Some("ex1".into()),
        condition: Condition::ServiceIs {
            service: "store".into(),
            state: ServiceState::Stopped,
        },
        when,
    };
    let began = Condition::StepStarted {
        step: "repair".into(),
    };
    let unfinished = Condition::StepNotSucceeded {
        step: "repair".into(),
    };
    let mut p = plan(vec![exec("repair")], vec![]);
    p.invariants = vec![stopped(vec![began.clone(), unfinished.clone()])];
    let failing = || Script {
        attempts: BTreeMap::from([("repair", vec![Try::Fail])]),
        ..Script::default()
    };

    // The repair began and failed: the invariant applies, and a backend that finds the store
    // changed reports it as left so on purpose, which needs attention.
    let fx = failing();
    let mut o = finished(run(&p, &fx));
    let progress = fx.progress.lock().unwrap().clone();
    assert!(
        applies(&p.invariants[0], &progress, |_| panic!(
            "only step conditions"
        ))
        .unwrap()
    );
    let left = left_on_purpose(&p, &progress);
    let line = on_purpose(&left, Some("ex1"), "store");
    assert_eq!(
        line.as_deref(),
        Some("store-left-stopped: the repair did not finish: the store is left stopped")
    );
    assert_eq!(
        on_purpose(&left, None, "store"),
        None,
        "another server's store is not"
    );
    assert_eq!(on_purpose(&left, Some("ex1"), "mta"), None);
    assert!(
        o.left_on_purpose.is_empty(),
        "the driver cannot know how the store was found"
    );
    o.left_on_purpose.extend(line);
    assert!(o.needs_attention());
    assert!(
        o.summary()
            .contains("left so on purpose: store-left-stopped"),
        "{}",
        o.summary()
    );

    // It succeeded: the invariant does not apply, nothing is left on purpose.
    let fx = Script::default();
    finished(run(&p, &fx));
    let progress = fx.progress.lock().unwrap().clone();
    assert!(!applies(&p.invariants[0], &progress, |_| Ok(true)).unwrap());
    assert!(left_on_purpose(&p, &progress).is_empty());

    // A `when` on the site is the backend's to read; such an invariant leaves nothing on
    // purpose, since only the run's own record can say what it meant to leave.
    p.invariants = vec![stopped(vec![
        began,
        Condition::Exists {
            path: Location::new("data", "flag"),
        },
    ])];
    let fx = failing();
    finished(run(&p, &fx));
    let progress = fx.progress.lock().unwrap().clone();
    assert!(left_on_purpose(&p, &progress).is_empty());
    assert!(applies(&p.invariants[0], &progress, |_| Ok(true)).unwrap());
    assert!(!applies(&p.invariants[0], &progress, |_| Ok(false)).unwrap());
}

#[test]
fn a_command_that_must_not_be_killed_is_reported_at_its_limit() {
    assert_eq!(AtLimit::of(&exec("x")), AtLimit::Kill);
    let mwsave = Step {
        no_kill: true,
        ..exec("mwsave")
    };
    assert_eq!(AtLimit::of(&mwsave), AtLimit::Report);
    assert!(overran("mwsave", "3 h 00 min").contains("must never be killed"));
}

#[test]
fn removed_files_say_what_went_and_none_found_is_a_warning() {
    let dir = Location::new("journal", "");
    let names = |n: &[&str]| -> Vec<crate::tree::Bytes> { n.iter().map(|s| (*s).into()).collect() };
    let d = removed_files("clear", &dir, &names(&["gm1", "gm1.001"]), &[]).unwrap();
    assert!(
        d.summary.contains("gm1, gm1.001") && d.warnings.is_empty(),
        "{d:?}"
    );
    let d = removed_files("clear", &dir, &[], &[]).unwrap();
    assert!(d.summary.starts_with("none found"), "{d:?}");
    assert_eq!(d.warnings, std::slice::from_ref(&d.summary));
    let f = removed_files("clear", &dir, &names(&["gm1"]), &names(&["gm1.d"])).unwrap_err();
    assert!(
        f.message.contains("gm1.d")
            && f.message.contains("not a regular file")
            && f.message.contains("removed: gm1"),
        "{}",
        f.message
    );
}

#[test]
fn the_warnings_of_steps_that_did_their_job_reach_the_outcome_naming_the_step() {
    struct Warns(Script);
    impl Effects for Warns {
        fn progress(&self) -> &Mutex<Progress> {
            self.0.progress()
        }
        fn holds(&self, c: &Condition, t: Option<&str>) -> Result<bool, Failure> {
            self.0.holds(c, t)
        }
        fn act(&self, s: &Step) -> Result<Done, Failure> {
            Ok(Done {
                warnings: vec![format!("{} warned", s.id)],
                ..Done::default()
            })
        }
        fn gate(&self, s: &Step, i: &str, r: Option<&str>) -> Gate {
            self.0.gate(s, i, r)
        }
        fn started(&self, s: &Step, phase: Phase) {
            self.0.started(s, phase)
        }
        fn ended(&self, s: &Step, phase: Phase, end: StepEnd) {
            self.0.ended(s, phase, end)
        }
        fn body_ended(&self, set: &SetEnd) -> Result<Option<String>, String> {
            self.0.body_ended(set)
        }
        fn recovered_set(&self, c: bool, k: Option<&str>) -> Result<Option<String>, String> {
            self.0.recovered_set(c, k)
        }
    }
    let p = plan(vec![exec("a")], vec![exec("b")]);
    let o = finished(run(&p, &Warns(Script::default())));
    assert_eq!(o.warnings, ["a: a warned", "b: b warned"]);
}
