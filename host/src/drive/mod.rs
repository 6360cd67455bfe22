//! The one interpreter of a plan's steps, shared by the dry run and the real run.
//!
//! A plan says what to do; the rules for *how* it is carried out live here, once, so that
//! `hokan simulate` predicts `hokan run`:
//! - a step whose `when` conditions do not all hold is skipped; a condition that cannot be
//!   evaluated fails the step without running it;
//! - a failed step is tried again `retries` times, then aborts the body, or with `continue` is
//!   recorded (`steps_failed`) and the body goes on;
//! - a manual gate nobody confirmed (refused, or with no terminal to ask on) is never retried
//!   and always aborts, whatever its `on-error`: a person's step cannot be skipped by a plan;
//! - the steps of a `together` group start at the same time; the body aborts after the group
//!   when one of them failed so;
//! - a backup set is completed when the body finished and no step that writes the set failed
//!   (even one allowed to), before the cleanup, so a set is never lost to a failing cleanup;
//! - once a step marked as a point of no return (`commits_set`) has succeeded, the set is never
//!   discarded: when the body fails after it, or a step that writes the set fails, the set is
//!   completed all the same and marked kept, and the run needs attention; a run that dies after
//!   it is recovered by finishing the set;
//! - the cleanup always runs, in order, each step whatever the previous one did;
//! - after a crash, recovery runs the cleanup steps that had not finished, from what the run had
//!   recorded (the journal, for a real run), and keeps the set only if it had been completed.
//!
//! What a step *does* is the [`Effects`] backend's: the modelled world for `simulate`, cap-std
//! roots and transports for `execute`. The seam passes plan items and condition values, never
//! paths or file handles, so a backend on another machine (a server's agent) fits it too.

#[cfg(test)]
mod tests;

use crate::plan::model::PlanWindow;
use crate::plan::{Action, Condition, Invariant, Item, OnError, Plan, Step};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Mutex;

/// Which part of a run a step ran in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The plan's steps.
    Body,
    /// The plan's cleanup, in the same run.
    Cleanup,
    /// The cleanup, run by recovery after the run died.
    Recovery,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// It did what it says.
    Ok,
    /// Its `when` conditions did not hold.
    Skipped,
    /// It failed on every attempt, or a `when` condition could not be evaluated.
    Failed,
    /// It ran past its time limit.
    TimedOut,
    /// A manual gate nobody confirmed.
    NotConfirmed,
    /// The server it acts on could not be reached, even after reconnecting with backoff. A
    /// cleanup step that ends so is left for `hokan recover`, which runs it again: the product
    /// on that server may still be in maintenance, and only that server's return can fix it.
    Unreachable,
}

impl StepStatus {
    /// Whether the step did not do its job (a skipped step did not have one).
    pub fn failed(self) -> bool {
        matches!(
            self,
            StepStatus::Failed
                | StepStatus::TimedOut
                | StepStatus::NotConfirmed
                | StepStatus::Unreachable
        )
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// The body finished.
    Completed,
    /// A step failed and the body stopped; the cleanup ran.
    Failed,
    /// The run died; recovery ran its cleanup.
    Recovered,
}

/// How a run ended, with what needs a person's attention: the finish record of a run's journal,
/// and what a dry run predicts of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Completed, failed or recovered.
    pub status: RunStatus,
    /// The step that failed, or the last one that ended before the run died.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The body was stopped on request (SIGTERM) before `step`, not by a failure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// The backup set written, when one was completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// Why the set was kept though the run did not finish it whole: what failed after which
    /// point of no return. Such a set is listed as `kept`, not as good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_kept: Option<String>,
    /// Cleanup steps that failed: the product may need a person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanup_failed: Vec<String>,
    /// Cleanup steps whose server could not be reached, each as "`step`: why", naming the
    /// server. The run is not over: its journal stays among the unfinished ones, and
    /// `hokan recover` runs these steps again once the server answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanup_deferred: Vec<String>,
    /// Plan invariants that did not hold at the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invariants_broken: Vec<String>,
    /// Body steps that failed but let the run go on (`on-error: continue`): the run did its
    /// job, but something the plan wanted done is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps_failed: Vec<String>,
    /// What the steps that did their job warned of (a file a copy could not keep as it was, a
    /// command that must not be killed running past its limit, nothing left to remove), each
    /// naming its step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// What the plan left changed on purpose, by its invariants that applied at the end
    /// ([`left_on_purpose`]): "the store is left stopped, the repair did not finish". A person
    /// must finish it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_on_purpose: Vec<String>,
}

impl Outcome {
    /// An outcome with `status` and nothing else to report yet.
    pub fn new(status: RunStatus) -> Outcome {
        Outcome {
            status,
            step: None,
            reason: None,
            stopped: false,
            set: None,
            set_kept: None,
            cleanup_failed: Vec::new(),
            cleanup_deferred: Vec::new(),
            invariants_broken: Vec::new(),
            steps_failed: Vec::new(),
            warnings: Vec::new(),
            left_on_purpose: Vec::new(),
        }
    }

    /// A completed run with nothing to report.
    pub fn completed() -> Outcome {
        Outcome::new(RunStatus::Completed)
    }

    /// The run's end in a line, for a history or an alert: how it ended, why, its set.
    pub fn summary(&self) -> String {
        let mut s = match self.status {
            RunStatus::Completed => "completed".to_string(),
            RunStatus::Failed => format!(
                "failed: {}",
                self.reason.as_deref().unwrap_or("a step failed")
            ),
            RunStatus::Recovered => match &self.reason {
                Some(why) => format!("recovered: {why}"),
                None => format!(
                    "recovered: the run died{}",
                    self.step
                        .as_deref()
                        .map(|s| format!(" after `{s}`"))
                        .unwrap_or_default()
                ),
            },
        };
        match (&self.set, &self.set_kept) {
            (Some(set), Some(why)) => s += &format!("; backup set {set} KEPT, incomplete: {why}"),
            (Some(set), None) => s += &format!("; backup set {set} complete"),
            (None, Some(why)) => s += &format!("; {why}"),
            (None, None) => {}
        }
        let mut attention: Vec<String> = Vec::new();
        attention.extend(
            self.steps_failed
                .iter()
                .map(|s| format!("step `{s}` failed")),
        );
        attention.extend(
            self.cleanup_failed
                .iter()
                .map(|s| format!("cleanup step `{s}` failed")),
        );
        attention.extend(
            self.cleanup_deferred
                .iter()
                .map(|d| format!("cleanup step {d}; it is left for `hokan recover` to run again")),
        );
        attention.extend(self.invariants_broken.iter().cloned());
        attention.extend(
            self.left_on_purpose
                .iter()
                .map(|l| format!("left so on purpose: {l}")),
        );
        if !attention.is_empty() {
            s += &format!("; needs attention: {}", attention.join("; "));
        }
        s
    }

    /// Whether someone must look at the product: a cleanup step failed or could not reach its
    /// server, an invariant broke, a step allowed to fail did, a set was kept after a point of
    /// no return, or the plan left something changed on purpose.
    pub fn needs_attention(&self) -> bool {
        self.set_kept.is_some()
            || !self.cleanup_failed.is_empty()
            || !self.cleanup_deferred.is_empty()
            || !self.invariants_broken.is_empty()
            || !self.steps_failed.is_empty()
            || !self.left_on_purpose.is_empty()
    }
}

/// What a command did, wherever it ran (locally, or on a remote server through its agent).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Output {
    /// Exit code; `None` when a signal ended it (or the time limit did).
    pub code: Option<i32>,
    /// It ran past its time limit and was killed.
    pub timed_out: bool,
    /// It ran past its time limit and was waited for, not killed ([`AtLimit::Report`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overran: bool,
    /// Standard output, capped at `execute::transport::OUTPUT_CAP` bytes by the local transport.
    pub stdout: String,
    /// Standard error, capped at `execute::transport::OUTPUT_CAP` bytes by the local transport.
    pub stderr: String,
}

impl Output {
    /// The last line of output (stderr first), for one-line summaries.
    pub fn last_line(&self) -> Option<&str> {
        [&self.stderr, &self.stdout]
            .into_iter()
            .filter_map(|s| s.lines().rev().map(str::trim).find(|l| !l.is_empty()))
            .next()
    }
}

/// What a manual gate's operator said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Confirmed; how (`confirmed on the terminal`, `--yes`).
    Confirmed(String),
    /// Not confirmed (refused, or nobody could be asked); why, and what to do.
    NotConfirmed(String),
}

/// One attempt of a step that did its job.
#[derive(Debug, Clone, Default)]
pub struct Done {
    /// What it did, in a line.
    pub summary: String,
    /// A command's output, when it ran one.
    pub output: Option<Output>,
    /// What the operator must hear of though the step did its job (a file a copy could not
    /// keep as it was, a command that ran past its limit, nothing left to remove): they go
    /// into the run's outcome, each naming the step.
    pub warnings: Vec<String>,
}

impl From<String> for Done {
    fn from(summary: String) -> Done {
        Done {
            summary,
            ..Done::default()
        }
    }
}

/// One attempt of a step that did not.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Why, naming what failed.
    pub message: String,
    /// [`StepStatus::Failed`] or [`StepStatus::TimedOut`] ([`StepStatus::NotConfirmed`] is the
    /// driver's, from [`Effects::gate`]).
    pub status: StepStatus,
    /// A command's output, when it ran one.
    pub output: Option<Output>,
}

impl Failure {
    /// A plain failure.
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            status: StepStatus::Failed,
            output: None,
        }
    }

    /// A step that ran past its time limit.
    pub fn timed_out(message: impl Into<String>) -> Failure {
        Failure {
            status: StepStatus::TimedOut,
            ..Failure::new(message)
        }
    }
}

/// How a step ended, as the driver hands it to the backend to record.
#[derive(Debug, Clone)]
pub struct StepEnd {
    /// How it ended.
    pub status: StepStatus,
    /// Attempts made; 0 when it did not run.
    pub attempts: u32,
    /// What it did, or why it failed or was skipped.
    pub summary: String,
    /// The last attempt's command output.
    pub output: Option<Output>,
}

/// Whether the run goes on after a step, or a group, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// On to the next step.
    Go,
    /// The run died right there (a dry run's injected crash: a real run's process is simply
    /// gone). Recovery takes over from what was recorded.
    Crash,
}

/// What the driver decided about the backup set when the body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetEnd {
    /// The body finished and every step that writes the set succeeded: complete it.
    Complete,
    /// The set is not known whole, but a point of no return has passed: complete it all the
    /// same, marked kept. Why, in a line, naming what failed and the point of no return.
    Kept(String),
    /// The set is not whole: remove it after the cleanup. Why, in a line.
    Discard(String),
}

/// The steps a run started, those that succeeded and the cleanup steps that ended: what `step-*`
/// conditions read and what recovery resumes from. A real run's journal records rebuild it.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    started: HashSet<String>,
    succeeded: HashSet<String>,
    /// Every step that ended (skipped included).
    ended: HashSet<String>,
    /// Each cleanup step that ended, with how it last did.
    cleanup: Vec<(String, StepStatus)>,
    set_completed: bool,
}

impl Progress {
    /// The step started running (not when it was skipped or its condition unreadable).
    pub fn started(&mut self, step: &str) {
        self.started.insert(step.to_string());
    }

    /// The step ended so in `phase`.
    pub fn ended(&mut self, step: &str, phase: Phase, status: StepStatus) {
        if status == StepStatus::Ok {
            self.succeeded.insert(step.to_string());
        } else {
            // A cleanup step retried by recovery that fails again has not succeeded.
            self.succeeded.remove(step);
        }
        if phase != Phase::Body {
            match self.cleanup.iter_mut().find(|(s, _)| s == step) {
                Some(entry) => entry.1 = status,
                None => self.cleanup.push((step.to_string(), status)),
            }
        }
        self.ended.insert(step.to_string());
    }

    /// The backup set was completed (its manifest is on disk, for a real run).
    pub fn set_completed(&mut self) {
        self.set_completed = true;
    }

    /// The value of a `step-*` condition; `None` for a condition on the site, which the backend
    /// evaluates.
    pub fn holds(&self, c: &Condition) -> Option<bool> {
        match c {
            Condition::StepStarted { step } => Some(self.started.contains(step)),
            Condition::StepNotSucceeded { step } => Some(!self.succeeded.contains(step)),
            Condition::StepSucceeded { step } => Some(self.succeeded.contains(step)),
            Condition::StepNotStarted { step } => Some(!self.started.contains(step)),
            _ => None,
        }
    }
}

/// What a step does, and what a run keeps: the part of a run that differs between the modelled
/// world and a real site. Every method is called by the driver, which owns the order and the
/// rules; none of them decides what runs next.
pub trait Effects: Sync {
    /// The run's [`Progress`], which the driver keeps and the backend reads for `step-*`
    /// conditions inside its own checks (an assertion, a wait, an invariant).
    fn progress(&self) -> &Mutex<Progress>;

    /// Evaluates a condition on the site (never a `step-*` one): `Err` when it cannot be.
    fn holds(&self, c: &Condition, target: Option<&str>) -> Result<bool, Failure>;

    /// One attempt of a step's action (never a manual one: see [`Effects::gate`]).
    fn act(&self, s: &Step) -> Result<Done, Failure>;

    /// A manual step: asks the operator, or says why nobody can be asked.
    fn gate(&self, s: &Step, instructions: &str, reference: Option<&str>) -> Gate;

    /// Before the attempt after `attempt`: a real run waits a little.
    fn pause(&self, _s: &Step, _attempt: u32) {}

    /// The step is about to run (its conditions held).
    fn started(&self, s: &Step, phase: Phase);

    /// The step ended (or was skipped): record it.
    fn ended(&self, s: &Step, phase: Phase, end: StepEnd);

    /// A step, or every step of a group, ended and was recorded: where a run may die. A crash
    /// after one step of a group happens once the group ended: its steps started together, so
    /// the others ran too.
    fn item_ended(&self, _steps: &[Step]) -> Flow {
        Flow::Go
    }

    /// Runs the steps of a group at the same time, each through `each`. By default, a thread
    /// each.
    fn together(
        &self,
        steps: &[Step],
        each: &(dyn Fn(&Step) -> StepStatus + Sync),
    ) -> Vec<StepStatus> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = steps.iter().map(|s| scope.spawn(move || each(s))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(StepStatus::Failed))
                .collect()
        })
    }

    /// Asked before each body step (or group): `Some(why)` stops the run there, as if that step
    /// had failed, so that the step in progress finishes and the cleanup runs (SIGTERM).
    fn stop_requested(&self) -> Option<String> {
        None
    }

    /// Asked after each body step (or group): `Some(why)` when the run cannot safely go on (its
    /// journal cannot be written, so a crash could not be recovered).
    fn halted(&self) -> Option<String> {
        None
    }

    /// The run's clock, milliseconds since the Unix epoch: the wall clock for a real run, the
    /// modelled one for a dry run. Read for the plan's window.
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// Waits until the run's clock reads `ms` (the plan's window has not begun yet).
    fn wait_until_ms(&self, ms: i64) {
        let left = ms.saturating_sub(self.now_ms());
        if left > 0 {
            std::thread::sleep(std::time::Duration::from_millis(left as u64));
        }
    }

    /// The body ended and the driver decided the set's fate ([`SetEnd`]). `Ok(Some(id))` when
    /// the set was completed (or kept); `Ok(None)` for an operation that writes no set or a set
    /// discarded; `Err(why)` when it could not be completed, which fails the run.
    fn body_ended(&self, set: &SetEnd) -> Result<Option<String>, String>;

    /// The cleanup ran: a backend removes a set that was neither completed nor kept, and
    /// applies retention after a good one.
    fn cleaned_up(&self, _outcome: &Outcome) {}

    /// Recovery ran the cleanup of a run that died: what becomes of its set. `completed` says
    /// whether the run had completed it; `kept`, when a point of no return had passed, why the
    /// set must be finished and kept instead of removed. `Ok(Some(id))` for a set that is
    /// there; `Err(why)` when what is left of it could not be removed or finished.
    fn recovered_set(&self, completed: bool, kept: Option<&str>) -> Result<Option<String>, String>;
}

/// How [`run`] ended.
#[derive(Debug)]
pub enum Ran {
    /// Body, set and cleanup ran; the outcome so far (the backend adds its invariants).
    Finished(Box<Outcome>),
    /// The run died right after a step or group ([`Flow::Crash`]); [`recover`] takes over.
    Crashed,
}

/// Runs `plan` through `fx`: body, the set's completion, cleanup.
pub fn run<E: Effects>(plan: &Plan, fx: &E) -> Ran {
    let d = Driver::new(fx);
    let Some(mut outcome) = d.body(plan) else {
        return Ran::Crashed;
    };
    let set = d.set_end(plan, &outcome);
    match fx.body_ended(&set) {
        Ok(Some(id)) => {
            fx.progress()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_completed();
            outcome.set = Some(id);
            if let SetEnd::Kept(why) = &set {
                outcome.set_kept = Some(why.clone());
            }
        }
        Ok(None) => {}
        Err(e) => {
            if let SetEnd::Kept(why) = &set {
                // Never removed: what it holds exists nowhere else.
                outcome.set_kept = Some(format!(
                    "{why}; but it could not be completed ({e}): its partial directory is left as it is, copy it somewhere safe"
                ));
            }
            outcome.status = RunStatus::Failed;
            outcome.reason = Some(e);
        }
    }
    for s in &plan.cleanup {
        d.step(s, Phase::Cleanup);
        if fx.item_ended(std::slice::from_ref(s)) == Flow::Crash {
            return Ran::Crashed;
        }
    }
    outcome.cleanup_failed = d.cleanup_failed(plan);
    outcome.cleanup_deferred = d.take_deferred();
    outcome.warnings = d.take_warnings();
    fx.cleaned_up(&outcome);
    Ran::Finished(Box::new(outcome))
}

/// A deferred run's outcome once recovery has run its deferred cleanup: the run ended as it
/// had (its status, reason and set stand: the body did not die), with the cleanup as it is now.
/// The invariants are left to whoever finishes the run (the executor, the simulator), which
/// checks them again.
pub fn after_deferred(earlier: Outcome, recovered: Outcome) -> Outcome {
    let mut warnings = earlier.warnings;
    warnings.extend(recovered.warnings);
    Outcome {
        cleanup_failed: recovered.cleanup_failed,
        cleanup_deferred: recovered.cleanup_deferred,
        invariants_broken: Vec::new(),
        left_on_purpose: Vec::new(),
        warnings,
        ..earlier
    }
}

/// Recovers a run that died: runs the cleanup steps that had not ended (by `fx`'s progress, from
/// the journal), and settles its set.
pub fn recover<E: Effects>(plan: &Plan, fx: &E) -> Outcome {
    let d = Driver::new(fx);
    let (cleaned, last, completed) = {
        let p = fx.progress().lock().unwrap_or_else(|p| p.into_inner());
        // A cleanup step that could not reach its server is run again, like one that never
        // ended; one that ran and failed is not (it did what it could, a person looks).
        let cleaned: Vec<String> = p
            .cleanup
            .iter()
            .filter(|(_, st)| *st != StepStatus::Unreachable)
            .map(|(s, _)| s.clone())
            .collect();
        // The last step in the plan's order that ended: the steps of a group end in any order.
        let last = plan
            .all_steps()
            .filter(|s| p.ended.contains(&s.id))
            .last()
            .map(|s| s.id.clone());
        (cleaned, last, p.set_completed)
    };
    let point = point_of_no_return(
        plan,
        &fx.progress().lock().unwrap_or_else(|p| p.into_inner()),
    )
    .map(str::to_string);
    let mut outcome = Outcome::new(RunStatus::Recovered);
    outcome.step = last;
    for s in plan.cleanup.iter().filter(|s| !cleaned.contains(&s.id)) {
        d.step(s, Phase::Recovery);
        // A real recovery can die too; it is recovered again, by the next `hokan recover`.
        if fx.item_ended(std::slice::from_ref(s)) == Flow::Crash {
            break;
        }
    }
    outcome.cleanup_failed = d.cleanup_failed(plan);
    outcome.cleanup_deferred = d.take_deferred();
    outcome.warnings = d.take_warnings();
    let kept = point.filter(|_| !completed).map(|p| {
        format!("the run died after the point of no return `{p}`; recovery finished the set")
    });
    match fx.recovered_set(completed, kept.as_deref()) {
        Ok(set) => {
            outcome.set_kept = kept.filter(|_| set.is_some());
            outcome.set = set;
        }
        Err(e) => outcome.cleanup_failed.push(e),
    }
    outcome
}

/// Whether a plan invariant applies at the end of a run: every one of its `when` conditions
/// holds, the `step-*` ones by the run's `progress`, the others on the site by `site`. One rule
/// for the dry run and the real run.
pub fn applies(
    inv: &Invariant,
    progress: &Progress,
    site: impl Fn(&Condition) -> Result<bool, Failure>,
) -> Result<bool, Failure> {
    for c in &inv.when {
        let holds = match progress.holds(c) {
            Some(v) => v,
            None => site(c)?,
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The plan invariants by which a run may leave a service changed on purpose: a `service-is`
/// invariant with a `when` made of `step-*` conditions only, all holding by `progress` ("the
/// store is stopped when eseutil /p began and the repair did not finish"). When the backend
/// finds such a service changed, the built-in "services as found" does not hold it against the
/// run, the invariant itself checks the state, and the run needs attention
/// ([`Outcome::left_on_purpose`], by [`on_purpose`]).
pub fn left_on_purpose<'p>(plan: &'p Plan, progress: &Progress) -> Vec<&'p Invariant> {
    plan.invariants
        .iter()
        .filter(|i| matches!(i.condition, Condition::ServiceIs { .. }))
        .filter(|i| {
            !i.when.is_empty()
                && i.when
                    .iter()
                    .all(|c| progress.holds(c).is_some_and(|held| held))
        })
        .collect()
}

/// The line of [`Outcome::left_on_purpose`] for `service` on `target` (`None`: the host's
/// own), which a backend found changed since the run began: `Some` when one of `left` (from
/// [`left_on_purpose`]) says the run leaves it so, `None` when the change breaks "services as
/// found". Only the backend knows how a service was found, so it asks this for each change.
pub fn on_purpose(left: &[&Invariant], target: Option<&str>, service: &str) -> Option<String> {
    left.iter()
        .find(|i| {
            i.target.as_deref() == target
                && matches!(&i.condition, Condition::ServiceIs { service: s, .. } if s == service)
        })
        .map(|i| format!("{}: {}", i.id, i.description))
}

/// The first step of `plan` marked as a point of no return that succeeded, by `progress`.
pub fn point_of_no_return<'p>(plan: &'p Plan, progress: &Progress) -> Option<&'p str> {
    plan.all_steps()
        .find(|s| s.commits_set && progress.succeeded.contains(&s.id))
        .map(|s| s.id.as_str())
}

struct Driver<'a, E: Effects> {
    fx: &'a E,
    /// The warnings of the steps that did their job, each naming its step.
    warnings: Mutex<Vec<String>>,
    /// The cleanup steps that could not reach their server, as "`step`: why".
    deferred: Mutex<Vec<String>>,
}

impl<'a, E: Effects> Driver<'a, E> {
    fn new(fx: &'a E) -> Self {
        Driver {
            fx,
            warnings: Mutex::new(Vec::new()),
            deferred: Mutex::new(Vec::new()),
        }
    }

    fn take_deferred(&self) -> Vec<String> {
        std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<E: Effects> Driver<'_, E> {
    /// The body; `None` when the run died in it.
    fn body(&self, plan: &Plan) -> Option<Outcome> {
        let mut outcome = Outcome::completed();
        let bound = plan
            .window
            .as_ref()
            .map(|w| w.bound(plan))
            .unwrap_or_default();
        for item in &plan.steps {
            let members: &[Step] = match item {
                Item::Step(s) => std::slice::from_ref(s),
                Item::Group(g) => &g.steps,
            };
            if let Some(w) = &plan.window
                && members.iter().any(|s| bound.contains(&s.id.as_str()))
                && let Err(why) = self.enter_window(w, members)
            {
                outcome.status = RunStatus::Failed;
                outcome.step = members.first().map(|s| s.id.clone());
                outcome.reason = Some(why);
                return Some(outcome);
            }
            if let Some(why) = self.fx.stop_requested() {
                let first = members.first().map_or("?", |s| s.id.as_str());
                outcome.status = RunStatus::Failed;
                outcome.step = members.first().map(|s| s.id.clone());
                outcome.reason = Some(format!("stopped before step `{first}`: {why}"));
                outcome.stopped = true;
                return Some(outcome);
            }
            let statuses: Vec<StepStatus> = match item {
                Item::Step(s) => vec![self.step(s, Phase::Body)],
                Item::Group(g) => self
                    .fx
                    .together(&g.steps, &|s: &Step| self.step(s, Phase::Body)),
            };
            if self.fx.item_ended(members) == Flow::Crash {
                return None;
            }
            let mut abort = None;
            for (s, st) in members.iter().zip(statuses) {
                if !st.failed() {
                    continue;
                }
                if s.on_error == OnError::Continue && st != StepStatus::NotConfirmed {
                    outcome.steps_failed.push(s.id.clone());
                } else if abort.is_none() {
                    abort = Some((s, st));
                }
            }
            if let Some((s, st)) = abort {
                outcome.status = RunStatus::Failed;
                outcome.step = Some(s.id.clone());
                outcome.reason = Some(if st == StepStatus::NotConfirmed {
                    format!(
                        "stopped at the manual step `{}` ({}): nobody confirmed it",
                        s.id, s.title
                    )
                } else {
                    format!("step `{}` failed: {}", s.id, s.title)
                });
                return Some(outcome);
            }
            if let Some(why) = self.fx.halted() {
                outcome.status = RunStatus::Failed;
                outcome.reason = Some(why);
                return Some(outcome);
            }
        }
        Some(outcome)
    }

    /// Before a body step the plan's window binds: waits for the window to begin; `Err` when it
    /// has ended, so that no data step runs while users may be back.
    fn enter_window(&self, w: &PlanWindow, members: &[Step]) -> Result<(), String> {
        let now = self.fx.now_ms();
        let first = members.first().map_or("?", |s| s.id.as_str());
        if now >= w.window.end_ms {
            return Err(format!(
                "the window the plan set ended at {} before step `{first}`: no step that reads \
                 or changes the data runs after it (users may be back)",
                instant(w.window.end_ms)
            ));
        }
        if now < w.window.start_ms {
            tracing::info!(
                "waiting for the window the plan set, from {}, before step `{first}`",
                instant(w.window.start_ms)
            );
            self.fx.wait_until_ms(w.window.start_ms);
        }
        Ok(())
    }

    /// The set is whole when the body finished and no step that writes it failed; otherwise it
    /// is kept when a point of no return has passed, and discarded when none has.
    fn set_end(&self, plan: &Plan, outcome: &Outcome) -> SetEnd {
        let failed_writers: Vec<&str> = outcome
            .steps_failed
            .iter()
            .filter(|id| plan.all_steps().any(|s| &s.id == *id && writes_set(s)))
            .map(String::as_str)
            .collect();
        let why = if outcome.status != RunStatus::Completed {
            match &outcome.step {
                Some(step) => format!("`{step}` failed"),
                None => outcome
                    .reason
                    .clone()
                    .unwrap_or_else(|| "the body did not finish".into()),
            }
        } else if !failed_writers.is_empty() {
            format!(
                "`{}` failed, so the set lacks what {} write",
                failed_writers.join("`, `"),
                if failed_writers.len() == 1 {
                    "it was to"
                } else {
                    "they were to"
                }
            )
        } else {
            return SetEnd::Complete;
        };
        match point_of_no_return(plan, &self.progress()) {
            Some(point) => SetEnd::Kept(format!("{why} after the point of no return `{point}`")),
            None => SetEnd::Discard(why),
        }
    }

    /// The cleanup steps whose last end was a failure, in the plan's order: after a recovery,
    /// those that failed before the run died too. Those that could not reach their server are
    /// not among them: they are deferred, not done.
    fn cleanup_failed(&self, plan: &Plan) -> Vec<String> {
        let p = self.progress();
        plan.cleanup
            .iter()
            .filter(|s| {
                p.cleanup
                    .iter()
                    .any(|(id, st)| id == &s.id && st.failed() && *st != StepStatus::Unreachable)
            })
            .map(|s| s.id.clone())
            .collect()
    }

    /// Runs one step: its conditions, its attempts, its record.
    fn step(&self, s: &Step, phase: Phase) -> StepStatus {
        let end = match self.conditions(s) {
            Err(end) => end,
            Ok(()) => {
                self.progress().started(&s.id);
                self.fx.started(s, phase);
                self.attempts(s)
            }
        };
        let status = end.status;
        self.progress().ended(&s.id, phase, status);
        if phase != Phase::Body && status == StepStatus::Unreachable {
            self.deferred
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("`{}`: {}", s.id, end.summary));
        }
        self.fx.ended(s, phase, end);
        status
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.fx.progress().lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err` with the step's end when a `when` condition is false (skipped) or cannot be read
    /// (failed, without running).
    fn conditions(&self, s: &Step) -> Result<(), StepEnd> {
        for c in &s.when {
            // Read before asking the backend, whose own checks lock the progress too.
            let known = self.progress().holds(c);
            let value = match known {
                Some(v) => Ok(v),
                None => self.fx.holds(c, s.target.as_deref()),
            };
            let (status, summary) = match value {
                Ok(true) => continue,
                Ok(false) => (StepStatus::Skipped, format!("skipped: \"{c}\" is false")),
                // Unreadable because its server is down: deferred in a cleanup, like a step
                // that could not reach it.
                Err(f) => (
                    if f.status == StepStatus::Unreachable {
                        StepStatus::Unreachable
                    } else {
                        StepStatus::Failed
                    },
                    format!("cannot evaluate \"{c}\": {}", f.message),
                ),
            };
            return Err(StepEnd {
                status,
                attempts: 0,
                summary,
                output: None,
            });
        }
        Ok(())
    }

    fn attempts(&self, s: &Step) -> StepEnd {
        if let Action::Manual {
            instructions,
            reference,
        } = &s.action
        {
            // Asked once: a person who said no is not asked again by a retry.
            let (status, summary) = match self.fx.gate(s, instructions, reference.as_deref()) {
                Gate::Confirmed(how) => (StepStatus::Ok, how),
                Gate::NotConfirmed(why) => (StepStatus::NotConfirmed, why),
            };
            return StepEnd {
                status,
                attempts: 1,
                summary,
                output: None,
            };
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fx.act(s) {
                Ok(d) => {
                    self.warnings
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(d.warnings.into_iter().map(|w| format!("{}: {w}", s.id)));
                    return StepEnd {
                        status: StepStatus::Ok,
                        attempts: attempt,
                        summary: d.summary,
                        output: d.output,
                    };
                }
                Err(f) if attempt <= s.retries => {
                    tracing::info!("{}: attempt {attempt} failed: {}", s.id, f.message);
                    self.fx.pause(s, attempt);
                }
                Err(f) => {
                    return StepEnd {
                        status: if f.status == StepStatus::Ok {
                            StepStatus::Failed
                        } else {
                            f.status
                        },
                        attempts: attempt,
                        summary: f.message,
                        output: f.output,
                    };
                }
            }
        }
    }
}

/// What becomes of a step's command at its time limit: one rule for the real run (the
/// transport) and the dry run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtLimit {
    /// Killed, with everything it started; the step has timed out.
    Kill,
    /// Reported and waited for: the command must never be killed (`no-kill`: mailwise's
    /// mwsave, "退避処理の実行中は、途中でサーバーマシンが強制終了しないように注意"). Only a
    /// person stops it.
    Report,
}

impl AtLimit {
    /// The rule for `s`'s command.
    pub fn of(s: &Step) -> AtLimit {
        if s.no_kill {
            AtLimit::Report
        } else {
            AtLimit::Kill
        }
    }
}

/// The warning of a step whose command ran past its limit (`limit`, for people) and was waited
/// for, not killed.
pub fn overran(command: &str, limit: &str) -> String {
    format!(
        "`{command}` ran past its time limit of {limit}; it must never be killed, so hokan \
         reported it and waited for it to end"
    )
}

/// An instant for messages, in UTC (RFC 3339); the milliseconds as they are when out of range.
pub fn instant(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

/// How a `remove-files` step ended, from what it removed and the entries it chose that are not
/// regular files: one rule for the real run and the dry run. Nothing matching is done but
/// reported as a warning (the manual may say the files must go: Groupmax's journal); an entry
/// that is not a file fails the step, since what the plan wanted gone is still there.
pub fn removed_files(
    step: &str,
    dir: &crate::plan::Location,
    removed: &[crate::tree::Bytes],
    not_files: &[crate::tree::Bytes],
) -> Result<Done, Failure> {
    let list = |names: &[crate::tree::Bytes]| {
        names
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !not_files.is_empty() {
        return Err(Failure::new(format!(
            "{} in {dir} matched but {} not a regular file, so it was left: look at it and \
             remove it by hand if it must go{}",
            list(not_files),
            if not_files.len() == 1 { "is" } else { "are" },
            if removed.is_empty() {
                String::new()
            } else {
                format!(" (removed: {})", list(removed))
            }
        )));
    }
    if removed.is_empty() {
        let none =
            format!("none found: no file in {dir} matched when `{step}` ran; nothing removed");
        return Ok(Done {
            summary: none.clone(),
            output: None,
            warnings: vec![none],
        });
    }
    Ok(format!("- {} in {dir}", list(removed)).into())
}

/// Whether a step writes the backup set, so that its failure leaves the set incomplete: a file
/// action or copy whose destination is in the `set` root, or a command run in it.
pub fn writes_set(s: &Step) -> bool {
    let in_set = |l: &crate::plan::Location| l.root == "set";
    match &s.action {
        Action::WriteFile { path, .. } | Action::Remove { path } | Action::EnsureDir { path } => {
            in_set(path)
        }
        Action::Rename { from, to } => in_set(from) || in_set(to),
        Action::CopyTree { to, .. } => in_set(to),
        Action::Exec(e) => e.cwd.as_deref() == Some("set"),
        Action::Service { .. }
        | Action::WaitUntil { .. }
        | Action::Verify { .. }
        | Action::Assert { .. }
        | Action::Manual { .. } => false,
        Action::RemoveFiles { dir, .. } => in_set(dir),
    }
}
