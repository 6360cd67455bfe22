//! Carrying out a validated plan for real: the real site's side of [`crate::drive`].
//!
//! The driver decides what runs and what becomes of the set (the same code a dry run follows);
//! this module is what each step does on the site, and what a real run keeps:
//! - every step is journaled before and after it runs, fsync'd; after a crash, [`recover`]
//!   rebuilds the driver's progress from the journal, and the driver runs the unfinished cleanup;
//! - `copy-tree` is all or nothing: when it fails, what it had written is removed;
//! - a backup set is written as `.<id>.partial` and gets its id, with its manifest, only when the
//!   driver says it is complete (or kept after a point of no return), before the cleanup;
//! - the built-in safety invariants are checked on the real product (`invariants`).
//!
//! Submodules: `spec` (what is journaled), `commands` (transports and services), `verify`
//! (conditions and verify steps), `complete` (the set's completion and retention).
//!
//! File actions go through cap-std ([`fs`]); commands through a [`transport::Transport`].

mod commands;
mod complete;
pub mod fs;
mod invariants;
pub mod journal;
pub mod lock;
pub mod places;
mod prepare;
pub(crate) use prepare::executable;
mod spec;
#[cfg(test)]
mod tests;
pub mod transport;
mod verify;

pub use spec::{PolicyRef, RunSpec, SafetySpec, ServiceSeen, SetSpec};

use complete::{make_partial, syncfs};

pub use prepare::{PrepareError, RunRequest, instance, prepare_run, resolve_recovery, run_id};

pub use crate::drive::{Gate, Outcome, Phase, RunStatus, StepStatus};

use crate::drive::{self, AtLimit, Done, Effects, Failure, Flow, Progress, Ran, SetEnd, StepEnd};
use crate::plan::document::PlanDocument;
use crate::plan::model::{Exec, VerifyCheck};
use crate::plan::{Action, Condition, Location, ServiceState, Step};
use crate::policy::{CommandMap, ServiceMap};
use crate::sets::manifest::{self, Manifest};
use crate::sets::{self, Retention};
use crate::simulate::run::{dur, size};
use crate::tree::RelPath;
use fs::{CopyOptions, LinkDest, Roots, Written};
use journal::{Journal, JournalError, Record};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use transport::{Invocation, Local, Output, Transport};

/// What a progress report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProgressUnit {
    /// Bytes copied (copy-tree).
    Bytes,
    /// Milliseconds waited (wait-until); a total of 0 means no time limit.
    Millis,
}

/// Who watches a run: progress, journal records as they are written, and manual gates.
pub trait Observer: Sync {
    /// A record was journaled.
    fn record(&self, _r: &Record) {}
    /// Progress of a long step: `done` of `total`, counted in `unit`.
    fn progress(&self, _step: &str, _unit: ProgressUnit, _done: u64, _total: u64) {}
    /// A manual step: ask the operator.
    fn gate(&self, step: &Step, instructions: &str, reference: Option<&str>) -> Gate;
    /// Asked before each body step (or group): `Some(why)` stops the run there, as if that step
    /// had failed, so that the step in progress finishes and the cleanup runs (SIGTERM).
    fn stop_requested(&self) -> Option<String> {
        None
    }
}

/// Faults the tests inject through the environment, read only in a build with the `test-hooks`
/// feature (the test crate's); the product ignores the variables.
///
/// - `HOKAN_TEST_KILL_AFTER=<step id>`: the process kills itself (SIGKILL) right after the step
///   is journaled as ended.
/// - `HOKAN_TEST_SPACE_LEFT=<bytes>`: copies fail with ENOSPC once they would write more.
#[derive(Debug, Default)]
pub struct TestFaults {
    kill_after: Option<String>,
    space_left: Option<AtomicU64>,
}

impl TestFaults {
    /// The faults the environment asks for; none in the product (see [`crate::test_hooks`]).
    pub fn from_env() -> TestFaults {
        TestFaults {
            kill_after: crate::test_hooks::var("HOKAN_TEST_KILL_AFTER"),
            space_left: crate::test_hooks::var("HOKAN_TEST_SPACE_LEFT")
                .and_then(|b| b.parse().ok())
                .map(AtomicU64::new),
        }
    }
}

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The journal could not be written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A root or the set could not be opened or made.
    #[error("{0}")]
    Setup(String),
}

/// RFC 3339 UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// One run (or one recovery) in progress.
struct Executor<'a> {
    spec: &'a RunSpec,
    roots: places::Places,
    journal: Mutex<Journal>,
    journal_failed: Mutex<Option<String>>,
    observer: &'a dyn Observer,
    faults: &'a TestFaults,
    written: Mutex<BTreeMap<(String, RelPath), Written>>,
    /// What the run found before its first step (from the journal, in a recovery).
    observed: Mutex<Option<(Vec<Location>, Vec<ServiceSeen>)>>,
    /// This run's copies into the new set, for `hokan:source-unchanged`.
    copies_into_set: Mutex<Vec<(Location, Location)>>,
    /// The previous set, which a backup's copies into the new set link from.
    link_dest: Option<&'a LinkDest>,
    /// Steps that may write are counted as they start and end (`writes`), and those under way
    /// (`writing`): a walk taken while neither moved is still true until `writes` moves.
    writes: AtomicU64,
    writing: AtomicU64,
    /// Walks of trees of the new set taken by verify steps, with the `writes` they were taken
    /// at: the manifest reuses those still true instead of walking them again.
    set_walks: Mutex<Vec<SetWalk>>,
    /// Which steps this run started, which succeeded, which cleanup steps ended: the driver's.
    progress: Mutex<Progress>,
    /// When each step under way started, for its journal record.
    started_at: Mutex<BTreeMap<String, Instant>>,
    /// Why each step that failed failed (its last end's summary), for a restore test's record.
    failures: Mutex<BTreeMap<String, String>>,
    /// Broken invariants found when the body ended (`hokan:source-unchanged`), for the outcome.
    broken_at_body_end: Mutex<Vec<String>>,
    /// Commands started on servers, which numbers their ledger ids.
    commands_started: AtomicU64,
}

/// The driver's progress of a run, rebuilt from its journal records.
fn progress_of(records: &[Record]) -> Progress {
    let mut p = Progress::default();
    for r in records {
        match r {
            Record::StepStart { step, .. } => p.started(step),
            Record::StepEnd {
                step,
                phase,
                status,
                ..
            } => p.ended(step, *phase, *status),
            Record::SetComplete { .. } => p.set_completed(),
            _ => {}
        }
    }
    p
}

/// A walk of a tree of the new set: where, at which count of writing steps, what it found.
type SetWalk = (RelPath, u64, Arc<Vec<crate::tree::Node>>);

/// Runs a prepared plan: journals it, runs body and cleanup, completes the backup set, prunes
/// old sets and checks the plan's invariants. The caller holds the instance's lock. `previous`
/// is the set `spec` names as the one to link from, as planning read it.
pub fn execute(
    spec: &RunSpec,
    previous: Option<&sets::Previous>,
    state: &Path,
    observer: &dyn Observer,
    faults: &TestFaults,
) -> Result<Outcome, ExecError> {
    execute_with(spec, previous, &BTreeMap::new(), state, observer, faults)
}

/// [`execute`], carrying on with the sessions planning opened to the run's servers (by server
/// name): each link whose grants are the session's uses it instead of logging in again.
pub fn execute_with(
    spec: &RunSpec,
    previous: Option<&sets::Previous>,
    sessions: &BTreeMap<String, crate::planner::Connected>,
    state: &Path,
    observer: &dyn Observer,
    faults: &TestFaults,
) -> Result<Outcome, ExecError> {
    let set = spec.set.as_ref();
    let writes = set.filter(|s| s.writes);
    if let Some(set) = writes
        && set.path().exists()
    {
        return Err(ExecError::Setup(format!(
            "the backup set {} already exists; run again in a second",
            set.path().display()
        )));
    }
    // The journal comes first, so that a run that dies at any point after this, the partial
    // set's creation included, is recovered and leaves no partial set behind.
    let mut journal = Journal::create(state, &spec.run, &Record::Start(Box::new(spec.clone())))?;
    let setup = || -> Result<(places::Places, Option<sets::SetLock>), String> {
        let mut roots = spec.roots.clone();
        // Roots on servers are opened there, by their agents, when first acted on.
        roots.retain(|name, _| !spec.remote_roots.contains_key(name));
        if let Some(dir) = scratch(spec) {
            // Made empty for this run (never one left by another), removed after it.
            std::fs::create_dir(dir).map_err(|e| {
                format!(
                    "cannot make the restore test's scratch directory {}: {e}",
                    dir.display()
                )
            })?;
        }
        if writes.is_some() {
            // The set is written as its partial directory, made below.
            roots.remove("set");
        }
        let mut opened = Roots::open(&roots).map_err(|e| e.to_string())?;
        if let Some(set) = writes {
            let (dir, path) = make_partial(set)?;
            opened.0.insert("set".into(), fs::Root { dir, path });
        }
        let links = places::links(&spec.remote_roots, &spec.roots, &spec.ssh)?;
        for link in links.values() {
            if let Some(c) = sessions.get(link.server()) {
                link.adopt(c);
            }
        }
        let opened = places::Places::new(opened, links);
        // A set being read is locked shared for the whole run: retention removes none that is.
        let reading = match set.filter(|s| !s.writes) {
            Some(s) => Some(sets::SetLock::shared(&s.path()).map_err(|e| {
                format!(
                    "cannot lock the set {} for reading: {e}",
                    s.path().display()
                )
            })?),
            None => None,
        };
        Ok((opened, reading))
    };
    let (opened, _reading) = match setup() {
        Ok(x) => x,
        Err(e) => {
            let mut outcome = Outcome::new(RunStatus::Failed);
            outcome.reason = Some(format!("the run could not start: {e}"));
            let r = Record::Finish {
                outcome,
                at: rfc3339(SystemTime::now()),
            };
            journal.append(&r)?;
            journal.close()?;
            return Err(ExecError::Setup(e));
        }
    };
    observer.record(&Record::Start(Box::new(spec.clone())));
    let ex = Executor::new(spec, opened, journal, observer, faults, previous);
    ex.observe();
    let outcome = match drive::run(&spec.document.plan, &ex) {
        Ran::Finished(outcome) => *outcome,
        // A real run dies for real; a backend that says it crashed is recovered as one would be.
        Ran::Crashed => drive::recover(&spec.document.plan, &ex),
    };
    ex.finish(outcome)
}

/// Runs the unfinished cleanup of a run that died, removes its partial set, and marks it
/// finished as `recovered`.
///
/// `spec` is the run's start record with every command, service and root resolved from the
/// current policy ([`resolve_recovery`]); `None` when the run died before its start record.
pub fn recover(
    run: &journal::Unfinished,
    spec: Option<&RunSpec>,
    observer: &dyn Observer,
    faults: &TestFaults,
) -> Result<Outcome, ExecError> {
    let mut journal = Journal::reopen(&run.path)?;
    let Some(spec) = spec else {
        // The run died before its first record was on disk: nothing ran.
        let outcome = Outcome::new(RunStatus::Recovered);
        journal.append(&Record::Finish {
            outcome: outcome.clone(),
            at: rfc3339(SystemTime::now()),
        })?;
        journal.close()?;
        return Ok(outcome);
    };
    let set_done = run
        .records
        .iter()
        .any(|r| matches!(r, Record::SetComplete { .. }));
    let progress = progress_of(&run.records);
    let mut roots = spec.roots.clone();
    if let Some(set) = spec.set.as_ref().filter(|s| s.writes) {
        let done = set_done || set.path().join(manifest::MANIFEST).is_file();
        if done {
            roots.insert("set".into(), set.path());
        } else if drive::point_of_no_return(&spec.document.plan, &progress).is_some() {
            // Recovery finishes it: its cleanup may read it, and its manifest is written there.
            roots.insert("set".into(), set.partial());
        } else {
            roots.remove("set");
        }
    }
    // Recovery opens what it can: a step on a root that is gone fails, the others still run.
    let mut opened = Roots::default();
    roots.retain(|name, _| !spec.remote_roots.contains_key(name));
    for (name, path) in &roots {
        if spec
            .set
            .as_ref()
            .is_some_and(|s| s.writes && *path == s.partial())
        {
            // A set recovery finishes is synced through its handle: a real one, not a path.
            match crate::tree::meta::open_dir(path) {
                Ok(fd) => {
                    let dir = cap_std::fs::Dir::from_std_file(std::fs::File::from(fd));
                    let path = path.clone();
                    opened.0.insert(name.clone(), fs::Root { dir, path });
                }
                Err(e) => tracing::warn!("cannot open the partial set {}: {e}", path.display()),
            }
            continue;
        }
        match Roots::open(&BTreeMap::from([(name.clone(), path.clone())])) {
            Ok(mut r) => {
                opened.0.append(&mut r.0);
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    let remote = places::links(&spec.remote_roots, &spec.roots, &spec.ssh).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        BTreeMap::new()
    });
    let opened = places::Places::new(opened, remote);
    let ex = Executor::new(spec, opened, journal, observer, faults, None);
    *ex.progress.lock().unwrap_or_else(|p| p.into_inner()) = progress;
    *ex.observed.lock().unwrap_or_else(|p| p.into_inner()) =
        run.records.iter().find_map(|r| match r {
            Record::Observed { markers, services } => Some((markers.clone(), services.clone())),
            _ => None,
        });
    // Nothing of the cleanup runs while a command the dead run started on a server still does.
    ex.settle_remote(&run.records);
    let recovered = drive::recover(&spec.document.plan, &ex);
    let outcome = match deferred_outcome(&run.records) {
        Some(earlier) => drive::after_deferred(earlier, recovered),
        None => recovered,
    };
    if let Some(dir) = scratch(spec) {
        // A restore test that died tested nothing: its tree goes, and no result is recorded.
        if let Err(e) = sets::remove_tree(dir) {
            tracing::warn!(
                "cannot remove the restore test's scratch directory {}: {e}",
                dir.display()
            );
        }
    }
    ex.finish(outcome)
}

/// How a run that ended with its cleanup deferred had ended ([`Record::Deferred`]), the last
/// time it was tried.
fn deferred_outcome(records: &[Record]) -> Option<Outcome> {
    records.iter().rev().find_map(|r| match r {
        Record::Deferred { outcome, .. } => Some(outcome.clone()),
        _ => None,
    })
}

/// The scratch directory of a restore test ([`sets::tested`]); `None` for any other run.
fn scratch(spec: &RunSpec) -> Option<&PathBuf> {
    (spec.document.operation == sets::tested::OPERATION)
        .then(|| spec.roots.get(sets::tested::SCRATCH_ROOT))
        .flatten()
}

/// The real site's effects: cap-std roots, transports, the journal, the set on disk.
impl Effects for Executor<'_> {
    fn progress(&self) -> &Mutex<Progress> {
        &self.progress
    }

    fn holds(&self, c: &Condition, target: Option<&str>) -> Result<bool, Failure> {
        let since = Instant::now();
        self.check(c, target, None)
            .map_err(|f| self.unreachable(since, f))
    }

    fn act(&self, s: &Step) -> Result<Done, Failure> {
        let since = Instant::now();
        self.counted(s).map_err(|f| self.unreachable(since, f))
    }

    fn gate(&self, s: &Step, instructions: &str, reference: Option<&str>) -> Gate {
        // While a person works, any root may change, the set included.
        self.writing(|| self.observer.gate(s, instructions, reference))
    }

    fn pause(&self, _s: &Step, attempt: u32) {
        std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
    }

    fn started(&self, s: &Step, phase: Phase) {
        self.started_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(s.id.clone(), Instant::now());
        self.log(Record::StepStart {
            step: s.id.clone(),
            phase,
            at: rfc3339(SystemTime::now()),
        });
    }

    fn ended(&self, s: &Step, phase: Phase, end: StepEnd) {
        let started = self
            .started_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&s.id);
        if end.status.failed() {
            self.failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(s.id.clone(), end.summary.clone());
        }
        self.log(Record::StepEnd {
            step: s.id.clone(),
            phase,
            status: end.status,
            attempts: end.attempts,
            duration_ms: started.map_or(0, |t| t.elapsed().as_millis() as u64),
            summary: end.summary,
            output: end.output,
        });
    }

    fn item_ended(&self, steps: &[Step]) -> Flow {
        if let Some(kill) = &self.faults.kill_after
            && steps.iter().any(|s| s.id == *kill)
        {
            // SAFETY: raise(3) only signals this process.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
        Flow::Go
    }

    fn stop_requested(&self) -> Option<String> {
        self.observer.stop_requested()
    }

    fn wait_until_ms(&self, ms: i64) {
        // A second at a time, so that a stop request ends the wait; the next step's stop check
        // then stops the run.
        loop {
            let left = ms.saturating_sub(self.now_ms());
            if left <= 0 || self.observer.stop_requested().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(left.min(1000) as u64));
        }
    }

    fn halted(&self) -> Option<String> {
        self.journal_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|e| {
                format!(
                    "the journal cannot be written ({e}); stopped so that a crash could still be recovered"
                )
            })
    }

    fn body_ended(&self, end: &SetEnd) -> Result<Option<String>, String> {
        // A kept set holds what it copied as surely as a complete one.
        let complete = !matches!(end, SetEnd::Discard(_));
        let kept = match end {
            SetEnd::Kept(why) => Some(why.as_str()),
            _ => None,
        };
        // The sources are compared with their copies before the cleanup, while the product is
        // still quiesced: what its users do once maintenance ends is not a change under the
        // backup. The comparison reads the sources and the completion the set: side by side.
        let (changed, completed) = rayon::join(
            || self.sources_changed(complete),
            || match self.spec.set.as_ref().filter(|s| s.writes && complete) {
                Some(set) => self.complete_set(set, kept).map(|()| Some(set.id.clone())),
                None => Ok(None),
            },
        );
        self.broken_at_body_end
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(changed);
        if matches!(end, SetEnd::Complete) {
            self.check_restored()?;
        }
        completed
    }

    fn cleaned_up(&self, outcome: &Outcome) {
        self.restore_tested(outcome);
        if let Some(set) = self.spec.set.as_ref().filter(|s| s.writes) {
            if outcome.set.is_none() && outcome.set_kept.is_none() {
                // Never listed (it has no id as its name), and useless: remove it.
                let _ = sets::remove_tree(&set.partial());
            } else if outcome.status == RunStatus::Completed {
                self.prune(set);
            }
        }
    }

    fn recovered_set(
        &self,
        _completed: bool,
        kept: Option<&str>,
    ) -> Result<Option<String>, String> {
        let Some(set) = self.spec.set.as_ref().filter(|s| s.writes) else {
            return Ok(None);
        };
        // The disk is the truth: the set is renamed to its id, manifest and all, before its
        // completion is journaled, so a run can die between the two.
        if !set.path().join(manifest::MANIFEST).is_file()
            && let Some(why) = kept
        {
            // What it holds exists nowhere else: finish it instead of removing it.
            self.complete_set(set, Some(why)).map_err(|e| {
                format!(
                    "cannot finish the set {} kept after its point of no return: {e}; it is left as it is, copy it somewhere safe",
                    set.partial().display()
                )
            })?;
        }
        let there = set.path().join(manifest::MANIFEST).is_file();
        sets::remove_tree(&set.partial()).map_err(|e| {
            format!(
                "cannot remove the partial set {}: {e}",
                set.partial().display()
            )
        })?;
        Ok(there.then(|| set.id.clone()))
    }
}

impl<'a> Executor<'a> {
    fn new(
        spec: &'a RunSpec,
        roots: places::Places,
        journal: Journal,
        observer: &'a dyn Observer,
        faults: &'a TestFaults,
        previous: Option<&'a sets::Previous>,
    ) -> Executor<'a> {
        let link_dest = previous
            .filter(|p| {
                spec.set
                    .as_ref()
                    .is_some_and(|s| s.writes && s.previous.as_ref() == Some(&p.id))
            })
            .map(|p| &p.link);
        Executor {
            spec,
            roots,
            journal: Mutex::new(journal),
            journal_failed: Mutex::new(None),
            observer,
            faults,
            written: Mutex::new(BTreeMap::new()),
            observed: Mutex::new(None),
            copies_into_set: Mutex::new(Vec::new()),
            link_dest,
            writes: AtomicU64::new(0),
            writing: AtomicU64::new(0),
            set_walks: Mutex::new(Vec::new()),
            progress: Mutex::default(),
            started_at: Mutex::default(),
            failures: Mutex::default(),
            broken_at_body_end: Mutex::default(),
            commands_started: AtomicU64::new(0),
        }
    }

    fn log(&self, r: Record) {
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = j.append(&r) {
            tracing::error!("{e}");
            self.journal_failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e.to_string());
        }
        self.observer.record(&r);
    }

    fn finish(self, mut outcome: Outcome) -> Result<Outcome, ExecError> {
        outcome.invariants_broken.extend(std::mem::take(
            &mut *self
                .broken_at_body_end
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        ));
        let (safety, on_purpose) = self.released_and_restored();
        outcome.invariants_broken.extend(safety);
        outcome.left_on_purpose.extend(on_purpose);
        if self.spec.set.as_ref().is_some_and(|s| s.writes) && outcome.set.is_none() {
            let progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(point) = drive::point_of_no_return(&self.spec.document.plan, &progress) {
                outcome
                    .invariants_broken
                    .push(crate::plan::safety::SET_KEPT.broken(&format!(
                        "the point of no return `{point}` passed, yet the set is not there"
                    )));
            }
        }
        for inv in &self.spec.document.plan.invariants {
            let applies = {
                let progress = self
                    .progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                drive::applies(inv, &progress, |c| {
                    self.check(c, inv.target.as_deref(), None)
                })
            };
            let held = match applies {
                Ok(true) => self.check(&inv.condition, inv.target.as_deref(), None),
                Ok(false) => Ok(true),
                Err(e) => Err(e),
            };
            match held {
                Ok(true) => {}
                Ok(false) => outcome
                    .invariants_broken
                    .push(format!("{}: {}", inv.id, inv.description)),
                Err(e) => outcome.invariants_broken.push(format!(
                    "{}: {} (cannot check: {})",
                    inv.id, inv.description, e.message
                )),
            }
        }
        let at = rfc3339(SystemTime::now());
        let deferred = !outcome.cleanup_deferred.is_empty();
        let r = if deferred {
            Record::Deferred {
                outcome: outcome.clone(),
                at,
            }
        } else {
            Record::Finish {
                outcome: outcome.clone(),
                at,
            }
        };
        let mut journal = self.journal.into_inner().unwrap_or_else(|p| p.into_inner());
        journal.append(&r)?;
        self.observer.record(&r);
        // A deferred run stays unfinished, for `hokan recover`.
        if !deferred {
            journal.close()?;
        }
        Ok(outcome)
    }

    /// `f` as [`StepStatus::Unreachable`] when a server was given up on since `since`: however
    /// the error was worded on its way up, that is why the step failed (or its condition could
    /// not be read), and in a cleanup it is left for recovery to run again.
    fn unreachable(&self, since: Instant, mut f: Failure) -> Failure {
        let down = self.roots.unreachable_since(since);
        if !down.is_empty() && f.status == StepStatus::Failed {
            f.status = StepStatus::Unreachable;
            // Named once: the link's own error usually says "server `x`: ..." already.
            let unnamed: Vec<String> = down
                .iter()
                .map(|(s, _)| format!("`{s}`"))
                .filter(|s| !f.message.contains(&format!("server {s}")))
                .collect();
            if !unnamed.is_empty() {
                f.message = format!(
                    "server {} could not be reached: {}",
                    unnamed.join(", "),
                    f.message
                );
            }
        }
        f
    }

    fn deadline(s: &Step) -> Option<Instant> {
        s.timeout_ms
            .map(|t| Instant::now() + Duration::from_millis(t))
    }

    /// One attempt of a step's action, counted as writing unless it only reads.
    fn counted(&self, s: &Step) -> Result<Done, Failure> {
        // Only verifies, assertions and waits only read; anything else (a command, a service, a
        // manual step) may change any root, the set included.
        let reads = matches!(
            s.action,
            Action::Verify { .. } | Action::Assert { .. } | Action::WaitUntil { .. }
        );
        if reads {
            return self.act_inner(s);
        }
        self.writing(|| self.act_inner(s))
    }

    /// Runs `f` counted as a step that may write: `writes` moves as it starts and ends, and
    /// `writing` says it is under way, so no walk taken meanwhile is reused for the manifest.
    fn writing<T>(&self, f: impl FnOnce() -> T) -> T {
        self.writing.fetch_add(1, Ordering::SeqCst);
        self.writes.fetch_add(1, Ordering::SeqCst);
        let out = f();
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.writing.fetch_sub(1, Ordering::SeqCst);
        out
    }

    fn act_inner(&self, s: &Step) -> Result<Done, Failure> {
        let fail = |e: fs::FsError| Failure::new(e.to_string());
        match &s.action {
            Action::WriteFile { path, contents } => {
                self.roots.write_file(path, contents).map_err(fail)?;
                Ok(format!("+ {path} ({})", size(contents.len() as u64)).into())
            }
            Action::Remove { path } => Ok(if self.roots.remove(path).map_err(fail)? {
                format!("- {path}")
            } else {
                format!("{path} was already absent")
            }
            .into()),
            Action::Rename { from, to } => {
                self.roots.rename(from, to).map_err(fail)?;
                Ok(format!("{from} -> {to}").into())
            }
            Action::EnsureDir { path } => Ok(if self.roots.ensure_dir(path).map_err(fail)? {
                format!("+ {path}/")
            } else {
                format!("{path} was already there")
            }
            .into()),
            Action::CopyTree { from, to } => self.copy(s, from, to),
            Action::RemoveFiles {
                dir,
                patterns,
                except,
                ignore_case,
            } => {
                let chosen = crate::plan::pattern::Selection {
                    patterns: patterns.clone(),
                    except: except.clone(),
                    ignore_case: *ignore_case,
                };
                let removed = self.roots.remove_files(dir, &chosen).map_err(fail)?;
                drive::removed_files(&s.id, dir, &removed.files, &removed.not_files)
            }
            Action::Exec(e) => {
                let out = self.exec(e, s.target.as_deref(), s.timeout_ms, AtLimit::of(s))?;
                let warnings = if out.overran {
                    vec![drive::overran(&e.command, &dur(s.timeout_ms.unwrap_or(0)))]
                } else {
                    Vec::new()
                };
                let code = out.code.unwrap_or(-1);
                let line = out
                    .last_line()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                if e.succeeded(code) {
                    Ok(Done {
                        summary: format!("exit {code}{line}"),
                        output: Some(out),
                        warnings,
                    })
                } else {
                    Err(Failure {
                        message: format!("`{}` exited with {code}{line}", e.command),
                        status: StepStatus::Failed,
                        output: Some(out),
                    })
                }
            }
            Action::Service { service, state } => self.service(s, service, *state),
            Action::WaitUntil {
                condition,
                interval_ms,
            } => {
                let start = Instant::now();
                let deadline = Self::deadline(s);
                let interval = Duration::from_millis((*interval_ms).clamp(50, 60_000));
                loop {
                    if self.check(condition, s.target.as_deref(), s.timeout_ms)? {
                        return Ok(format!(
                            "held after {}",
                            dur(start.elapsed().as_millis() as u64)
                        )
                        .into());
                    }
                    if deadline.is_some_and(|d| Instant::now() + interval > d) {
                        return Err(Failure {
                            message: format!(
                                "{condition} still did not hold after {}",
                                dur(s.timeout_ms.unwrap_or(0))
                            ),
                            status: StepStatus::TimedOut,
                            output: None,
                        });
                    }
                    self.observer.progress(
                        &s.id,
                        ProgressUnit::Millis,
                        start.elapsed().as_millis() as u64,
                        s.timeout_ms.unwrap_or(0),
                    );
                    std::thread::sleep(interval);
                }
            }
            Action::Verify { check } => self.verify(s, check),
            Action::Assert { condition, message } => {
                if self.check(condition, s.target.as_deref(), s.timeout_ms)? {
                    Ok(format!("{condition}").into())
                } else {
                    Err(Failure::new(format!(
                        "{message} ({condition} does not hold)"
                    )))
                }
            }
            // The driver asks the operator (`Effects::gate`), once.
            Action::Manual { .. } => Err(Failure::new("a manual step is asked, not acted")),
        }
    }

    fn copy(&self, s: &Step, from: &Location, to: &Location) -> Result<Done, Failure> {
        let into_new_set = to.root == "set" && self.spec.set.as_ref().is_some_and(|x| x.writes);
        let progress = |done: u64, total: u64| {
            self.observer
                .progress(&s.id, ProgressUnit::Bytes, done, total)
        };
        let copied = self
            .roots
            .copy(
                from,
                to,
                &CopyOptions {
                    link_dest: self.link_dest.filter(|_| into_new_set),
                    progress: &progress,
                    deadline: Self::deadline(s),
                    space_left: self.faults.space_left.as_ref(),
                    owners: crate::tree::meta::is_root(),
                },
            )
            .map_err(|e| Failure {
                status: if e.source.kind() == std::io::ErrorKind::TimedOut {
                    StepStatus::TimedOut
                } else {
                    StepStatus::Failed
                },
                message: e.to_string(),
                output: None,
            })?;
        if into_new_set {
            self.copies_into_set
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((from.clone(), to.clone()));
            // Writeback of what the copy wrote starts now, while the steps after it (verifies,
            // which only read) run; the sync that makes the set durable before it is named then
            // has little left. Errors are that sync's to report (see `syncfs`): this one has a
            // handle of its own.
            if let Some(root) = self.roots.local.0.get("set") {
                let path = root.path.clone();
                std::thread::spawn(move || {
                    if let Ok(f) = std::fs::File::open(path) {
                        let _ = syncfs(std::os::fd::AsFd::as_fd(&f));
                    }
                });
            }
        }
        let linked = copied.files.iter().filter(|w| w.linked).count();
        let n = copied.files.len();
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        for w in copied.files {
            written.insert((to.root.clone(), w.path.clone()), w);
        }
        drop(written);
        let warned = copied.warnings.len();
        let first = copied.warnings.first().cloned();
        let summary = format!(
            "+ {to} ({n} file(s), {} copied{}{})",
            size(copied.bytes),
            if linked > 0 {
                format!(", {linked} unchanged linked")
            } else {
                String::new()
            },
            match (warned, first) {
                (0, _) | (_, None) => String::new(),
                (1, Some(w)) => format!("; warning: {w}"),
                (n, Some(w)) => format!("; {n} warnings, the first: {w}"),
            }
        );
        Ok(Done {
            summary,
            output: None,
            warnings: copied.warnings,
        })
    }
}
