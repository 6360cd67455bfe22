//! Carrying out a validated plan for real.
//!
//! The rules are the simulator's (`simulate::run`), so a dry run predicts a real run:
//! - a step whose `when` conditions do not all hold is skipped;
//! - a failed step is retried `retries` times, then aborts the body (or, with `continue`, is
//!   recorded and the body goes on); a manual gate the operator did not confirm always aborts;
//! - the steps of a group run at the same time, each on its own thread;
//! - the cleanup always runs, in order, each step whatever the previous one did;
//! - `copy-tree` is all or nothing: when it fails, what it had written is removed;
//! - a backup set is written as `.<id>.partial` and gets its id, with its manifest, only when the
//!   body finished: before the cleanup, so a set is never lost to a failing cleanup;
//! - every step is journaled before and after it runs; after a crash, [`recover`] runs the
//!   cleanup steps that had not finished and removes the partial set.
//!
//! File actions go through cap-std ([`fs`]); commands through a [`transport::Transport`].

pub mod fs;
pub mod journal;
pub mod lock;
mod prepare;
pub mod transport;

pub use prepare::{PrepareError, RunRequest, instance, prepare_run, resolve_recovery, run_id};

pub use crate::drive::{Gate, Outcome, Phase, RunStatus, StepStatus};

use crate::drive::{self, Done, Effects, Failure, Flow, Progress, Ran, SetEnd, StepEnd};
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

/// The backup set a run writes or reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetSpec {
    /// Its id.
    pub id: String,
    /// The job's sets directory.
    pub job_dir: PathBuf,
    /// The run writes it (a backup) rather than reads it.
    pub writes: bool,
    /// The newest good set before this one, whose unchanged files are linked.
    pub previous: Option<String>,
    /// The retention applied after a successful backup.
    pub retention: Retention,
}

impl SetSpec {
    /// Where the set is while it is written.
    pub fn partial(&self) -> PathBuf {
        self.job_dir.join(sets::partial_name(&self.id))
    }

    /// Where the complete set is.
    pub fn path(&self) -> PathBuf {
        self.job_dir.join(&self.id)
    }
}

/// Everything a run needs, journaled as its first record so that recovery does not need the
/// plugin or the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The run's id.
    pub run: String,
    /// The product instance it locks (`<site>.<plugin>.<servers>`).
    pub instance: String,
    /// The process that ran it.
    pub pid: u32,
    /// When it started (RFC 3339).
    pub started: String,
    /// The hokan that ran it.
    pub hokan_version: String,
    /// The validated plan.
    pub document: PlanDocument,
    /// Root names to directories; for a backup, `set` is the partial set.
    pub roots: BTreeMap<String, PathBuf>,
    /// The policy's command mappings.
    pub commands: BTreeMap<String, CommandMap>,
    /// The policy's service mappings.
    pub services: BTreeMap<String, ServiceMap>,
    /// Server name to transport name, for the servers that have one.
    pub transports: BTreeMap<String, String>,
    /// Server name to address (journals written before 0.3 lack it).
    #[serde(default)]
    pub addresses: BTreeMap<String, String>,
    /// The set written or read.
    pub set: Option<SetSpec>,
    /// The policy the run read, for its recovery to resolve commands, services and roots from
    /// (journals written before 0.6 lack it: recover them with `hokan recover POLICY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// What the built-in safety invariants need to know of the product (journals written before
    /// 0.6 lack it, and get only the plan's own invariants).
    #[serde(default)]
    pub safety: SafetySpec,
}

/// Where a run's policy is: the file read, and the file it stands for (they differ for the
/// daemon's runs, which read the version the daemon validated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// The text that was read.
    pub file: PathBuf,
    /// The file it stands for: relative paths in it are relative to this one's directory.
    pub origin: PathBuf,
}

/// What the plugin says about the product that the safety invariants check at a run's end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetySpec {
    /// Files whose existence means the product is in maintenance mode.
    pub markers: Vec<Location>,
    /// The operation's purpose is to leave the product in maintenance mode.
    pub leaves_maintenance: bool,
}

/// A service the plan starts or stops, as the run found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSeen {
    /// The service.
    pub service: String,
    /// The server its steps target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Whether its status command said it was running.
    pub running: bool,
}

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
    /// None: the product has no test hooks.
    #[cfg(not(feature = "test-hooks"))]
    pub fn from_env() -> TestFaults {
        TestFaults::default()
    }

    /// Reads the faults from the environment (the test crate's build).
    #[cfg(feature = "test-hooks")]
    pub fn from_env() -> TestFaults {
        TestFaults {
            kill_after: std::env::var("HOKAN_TEST_KILL_AFTER").ok(),
            space_left: std::env::var("HOKAN_TEST_SPACE_LEFT")
                .ok()
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
    roots: Roots,
    journal: Mutex<Journal>,
    journal_failed: Mutex<Option<String>>,
    observer: &'a dyn Observer,
    faults: &'a TestFaults,
    written: Mutex<BTreeMap<(String, RelPath), Written>>,
    /// Warnings of this run's copies, for the outcome.
    warnings: Mutex<Vec<String>>,
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
    /// Broken invariants found when the body ended (`hokan:source-unchanged`), for the outcome.
    broken_at_body_end: Mutex<Vec<String>>,
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
    let setup = || -> Result<(Roots, Option<sets::SetLock>), String> {
        let mut roots = spec.roots.clone();
        if writes.is_some() {
            // The set is written as its partial directory, made below.
            roots.remove("set");
        }
        let mut opened = Roots::open(&roots).map_err(|e| e.to_string())?;
        if let Some(set) = writes {
            let (dir, path) = make_partial(set)?;
            opened.0.insert("set".into(), fs::Root { dir, path });
        }
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
        Ran::Finished(outcome) => outcome,
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
    let ex = Executor::new(spec, opened, journal, observer, faults, None);
    *ex.progress.lock().unwrap_or_else(|p| p.into_inner()) = progress;
    *ex.observed.lock().unwrap_or_else(|p| p.into_inner()) =
        run.records.iter().find_map(|r| match r {
            Record::Observed { markers, services } => Some((markers.clone(), services.clone())),
            _ => None,
        });
    let outcome = drive::recover(&spec.document.plan, &ex);
    ex.finish(outcome)
}

/// The real site's effects: cap-std roots, transports, the journal, the set on disk.
impl Effects for Executor<'_> {
    fn progress(&self) -> &Mutex<Progress> {
        &self.progress
    }

    fn holds(&self, c: &Condition, target: Option<&str>) -> Result<bool, Failure> {
        self.check(c, target, None)
    }

    fn act(&self, s: &Step) -> Result<Done, Failure> {
        self.counted(s)
    }

    fn gate(&self, s: &Step, instructions: &str, reference: Option<&str>) -> Gate {
        // While a person works, any root may change, the set included.
        self.writing.fetch_add(1, Ordering::SeqCst);
        self.writes.fetch_add(1, Ordering::SeqCst);
        let gate = self.observer.gate(s, instructions, reference);
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.writing.fetch_sub(1, Ordering::SeqCst);
        gate
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
        completed
    }

    fn cleaned_up(&self, outcome: &Outcome) {
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
        roots: Roots,
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
            warnings: Mutex::new(Vec::new()),
            observed: Mutex::new(None),
            copies_into_set: Mutex::new(Vec::new()),
            link_dest,
            writes: AtomicU64::new(0),
            writing: AtomicU64::new(0),
            set_walks: Mutex::new(Vec::new()),
            progress: Mutex::default(),
            started_at: Mutex::default(),
            broken_at_body_end: Mutex::default(),
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
        outcome.warnings =
            std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()));
        let safety = self.released_and_restored();
        outcome.invariants_broken.extend(safety);
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
            match self.check(&inv.condition, inv.target.as_deref(), None) {
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
        let r = Record::Finish {
            outcome: outcome.clone(),
            at: rfc3339(SystemTime::now()),
        };
        let mut journal = self.journal.into_inner().unwrap_or_else(|p| p.into_inner());
        journal.append(&r)?;
        self.observer.record(&r);
        journal.close()?;
        Ok(outcome)
    }

    /// The services the plan starts or stops that have a status command, with their targets.
    fn watched_services(&self) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for s in self.spec.document.plan.all_steps() {
            if let Action::Service { service, .. } = &s.action {
                let key = (service.clone(), s.target.clone());
                let has_status = self
                    .spec
                    .services
                    .get(service)
                    .is_some_and(|m| m.status.is_some());
                if has_status && !out.contains(&key) {
                    out.push(key);
                }
            }
        }
        out
    }

    /// Journals what the safety invariants compare the end with: which maintenance markers are
    /// already there (an operator's own maintenance window is not the run's to release), and
    /// which services are running.
    fn observe(&self) {
        let markers: Vec<Location> = self
            .spec
            .safety
            .markers
            .iter()
            .filter(|m| self.roots.exists(m).unwrap_or(false))
            .cloned()
            .collect();
        let services: Vec<ServiceSeen> = self
            .watched_services()
            .into_iter()
            .filter_map(|(service, target)| {
                let running = self
                    .service_running(&service, target.as_deref(), Some(30_000))
                    .ok()?;
                Some(ServiceSeen {
                    service,
                    target,
                    running,
                })
            })
            .collect();
        *self.observed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((markers.clone(), services.clone()));
        self.log(Record::Observed { markers, services });
    }

    /// The built-in safety invariants the simulator checks after every dry run that hold after
    /// the cleanup, checked on the real product: maintenance released, services in their first
    /// state; each broken one as a line for `invariants_broken`.
    fn released_and_restored(&self) -> Vec<String> {
        use crate::plan::safety::{MAINTENANCE_RELEASED, SERVICES_RESTORED};
        let mut out = Vec::new();
        let Some((markers_before, services_before)) = self
            .observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return out;
        };
        if !self.spec.safety.leaves_maintenance {
            let left: Vec<String> = self
                .spec
                .safety
                .markers
                .iter()
                .filter(|m| !markers_before.contains(m))
                .filter(|m| self.roots.exists(m).unwrap_or(false))
                .map(|m| format!("{m} still exists"))
                .collect();
            if !left.is_empty() {
                out.push(MAINTENANCE_RELEASED.broken(&left.join(", ")));
            }
        }
        let changed: Vec<String> = services_before
            .iter()
            .filter_map(|s| {
                let now = self
                    .service_running(&s.service, s.target.as_deref(), Some(30_000))
                    .ok()?;
                let on = s
                    .target
                    .as_deref()
                    .map(|t| format!(" on {t}"))
                    .unwrap_or_default();
                (now != s.running).then(|| {
                    format!(
                        "{}{on} was {}, is {}",
                        s.service,
                        if s.running { "running" } else { "stopped" },
                        if now { "running" } else { "stopped" }
                    )
                })
            })
            .collect();
        if !changed.is_empty() {
            out.push(SERVICES_RESTORED.broken(&changed.join(", ")));
        }
        out
    }

    /// `hokan:source-unchanged`: every file this run copied into the new set is still what it
    /// copied (a file gone since is fine once the set that holds it is complete: Exchange
    /// truncates its logs). `set_complete`: the body succeeded, so the set is being completed.
    fn sources_changed(&self, set_complete: bool) -> Vec<String> {
        use crate::plan::safety::SOURCE_UNCHANGED;
        let mut out = Vec::new();
        if self
            .observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            return out;
        }
        let copies = self
            .copies_into_set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        for (from, to) in &copies {
            let to_path = RelPath::from(to.path.as_str());
            // By stat alone: what is compared is the fingerprint, and ctime moves with every
            // attribute change.
            let now = match self.roots.scan(from, crate::tree::Attrs::None) {
                Ok(n) => n,
                // Gone after it was copied (Exchange truncates its logs): fine when the set
                // that holds it is complete.
                Err(e) if e.source.kind() == std::io::ErrorKind::NotFound && set_complete => {
                    continue;
                }
                Err(e) => {
                    changed.push(format!("{from} cannot be read: {e}"));
                    continue;
                }
            };
            // Maintenance markers come and go with the procedure, as in the simulator.
            let from_path = RelPath::from(from.path.as_str());
            let markers: Vec<RelPath> = self
                .spec
                .safety
                .markers
                .iter()
                .filter(|m| m.root == from.root)
                .filter_map(|m| RelPath::from(m.path.as_str()).strip_prefix(&from_path))
                .collect();
            let files: Vec<&crate::tree::Node> = now
                .iter()
                .filter(|n| n.meta.kind == crate::tree::Kind::File && n.first.is_none())
                .filter(|n| !markers.contains(&n.path))
                .collect();
            if files.is_empty() && set_complete {
                continue;
            }
            let differ = files
                .iter()
                .filter(|n| {
                    let w = written.get(&(to.root.clone(), n.path.under(&to_path)));
                    !w.is_some_and(|w| {
                        w.source
                            == crate::tree::Source {
                                ino: n.meta.ino,
                                ctime: n.meta.ctime,
                            }
                            && (w.size, w.mtime) == (n.meta.size, n.meta.mtime)
                    })
                })
                .count();
            let copied = written
                .keys()
                .filter(|(root, _)| root == &to.root)
                .filter_map(|(_, p)| p.strip_prefix(&to_path))
                .filter(|rel| !markers.contains(rel))
                .count();
            let gone = copied.saturating_sub(files.len() - differ);
            if differ > 0 || gone > 0 {
                changed.push(format!(
                    "{from}: {} file(s) changed, added or removed since they were copied",
                    differ.max(gone)
                ));
            }
        }
        if !changed.is_empty() {
            out.push(SOURCE_UNCHANGED.broken(&changed.join("; ")));
        }
        out
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
        self.writing.fetch_add(1, Ordering::SeqCst);
        self.writes.fetch_add(1, Ordering::SeqCst);
        let done = self.act_inner(s);
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.writing.fetch_sub(1, Ordering::SeqCst);
        done
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
            Action::Exec(e) => {
                let out = self.exec(e, s.target.as_deref(), s.timeout_ms)?;
                let code = out.code.unwrap_or(-1);
                let line = out
                    .last_line()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                if e.succeeded(code) {
                    Ok(Done {
                        summary: format!("exit {code}{line}"),
                        output: Some(out),
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
        let copied = fs::copy_tree(
            &self.roots,
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
            if let Some(root) = self.roots.0.get("set") {
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
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(
                copied
                    .warnings
                    .into_iter()
                    .map(|w| format!("{}: {w}", s.id)),
            );
        Ok(format!(
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
        )
        .into())
    }

    fn transport(&self, target: Option<&str>) -> Result<&dyn Transport, Failure> {
        match target {
            None => Ok(&Local),
            Some(server) => match self.spec.transports.get(server).map(String::as_str) {
                Some("local") => Ok(&Local),
                Some(other) => Err(Failure::new(format!(
                    "server `{server}` uses the transport `{other}`, which this hokan does not have"
                ))),
                None => Err(Failure::new(format!(
                    "server `{server}` has no transport configured; set `transport` in its [[servers]] table"
                ))),
            },
        }
    }

    /// What a command learns about its run from its environment: which server the step
    /// targets, so that one wrapper script can serve every server of an instance.
    fn command_env(&self, target: Option<&str>) -> Vec<(&'static str, String)> {
        let doc = &self.spec.document;
        let mut env = vec![
            ("HOKAN_SITE", doc.site.clone()),
            ("HOKAN_JOB", doc.job.clone()),
            ("HOKAN_OPERATION", doc.operation.clone()),
            ("HOKAN_RUN", self.spec.run.clone()),
            ("HOKAN_SERVER", target.unwrap_or_default().to_string()),
        ];
        if let Some(address) = target.and_then(|t| self.spec.addresses.get(t)) {
            env.push(("HOKAN_SERVER_ADDRESS", address.clone()));
        }
        env
    }

    fn exec(
        &self,
        e: &Exec,
        target: Option<&str>,
        timeout_ms: Option<u64>,
    ) -> Result<Output, Failure> {
        let map = self.spec.commands.get(&e.command).ok_or_else(|| {
            Failure::new(format!(
                "the command `{}` is not mapped in the policy (jobs.{}.commands)",
                e.command, self.spec.document.job
            ))
        })?;
        let args: Vec<String> = map.args.iter().chain(&e.args).cloned().collect();
        let cwd = match &e.cwd {
            Some(root) => Some(
                self.roots
                    .path(&Location::new(root.clone(), ""))
                    .map_err(|e| Failure::new(e.to_string()))?,
            ),
            None => None,
        };
        let out = self
            .transport(target)?
            .run(&Invocation {
                program: &map.program,
                args: &args,
                cwd: cwd.as_deref(),
                timeout: timeout_ms.map(Duration::from_millis),
                env: &self.command_env(target),
            })
            .map_err(|err| {
                Failure::new(format!(
                    "{err} (the policy maps `{}` to it in jobs.{}.commands)",
                    e.command, self.spec.document.job
                ))
            })?;
        if out.timed_out {
            return Err(Failure {
                message: format!(
                    "`{}` was still running at its time limit of {} and was killed",
                    e.command,
                    dur(timeout_ms.unwrap_or(0))
                ),
                status: StepStatus::TimedOut,
                output: Some(out),
            });
        }
        Ok(out)
    }

    fn run_line(
        &self,
        line: &[String],
        target: Option<&str>,
        timeout_ms: Option<u64>,
    ) -> Result<Output, Failure> {
        let (program, args) = line
            .split_first()
            .ok_or_else(|| Failure::new("an empty command line in the policy"))?;
        let out = self
            .transport(target)?
            .run(&Invocation {
                program,
                args,
                cwd: None,
                timeout: timeout_ms.map(Duration::from_millis),
                env: &self.command_env(target),
            })
            .map_err(|e| Failure::new(e.to_string()))?;
        if out.timed_out {
            return Err(Failure {
                message: format!(
                    "`{}` ran past its time limit and was killed",
                    line.join(" ")
                ),
                status: StepStatus::TimedOut,
                output: Some(out),
            });
        }
        Ok(out)
    }

    fn service_map(&self, service: &str) -> Result<&ServiceMap, Failure> {
        self.spec.services.get(service).ok_or_else(|| {
            Failure::new(format!(
                "the service `{service}` is not mapped in the policy (jobs.{}.services)",
                self.spec.document.job
            ))
        })
    }

    fn service(&self, s: &Step, service: &str, state: ServiceState) -> Result<Done, Failure> {
        let map = self.service_map(service)?;
        let line = match state {
            ServiceState::Running => &map.start,
            ServiceState::Stopped => &map.stop,
        };
        let out = self.run_line(line, s.target.as_deref(), s.timeout_ms)?;
        let code = out.code.unwrap_or(-1);
        if code != 0 {
            return Err(Failure {
                message: format!("`{}` exited with {code}", line.join(" ")),
                status: StepStatus::Failed,
                output: Some(out),
            });
        }
        let want = state == ServiceState::Running;
        if map.status.is_some()
            && self.service_running(service, s.target.as_deref(), s.timeout_ms)? != want
        {
            return Err(Failure {
                message: format!(
                    "`{}` succeeded but the status command says `{service}` is {}",
                    line.join(" "),
                    if want { "not running" } else { "still running" }
                ),
                status: StepStatus::Failed,
                output: Some(out),
            });
        }
        Ok(Done {
            summary: format!(
                "service {service}: {}",
                if want { "started" } else { "stopped" }
            ),
            output: Some(out),
        })
    }

    fn service_running(
        &self,
        service: &str,
        target: Option<&str>,
        timeout_ms: Option<u64>,
    ) -> Result<bool, Failure> {
        let map = self.service_map(service)?;
        let status = map.status.as_ref().ok_or_else(|| {
            Failure::new(format!(
                "the service `{service}` has no `status` command in the policy (jobs.{}.services.{service}); add one so its state can be checked",
                self.spec.document.job
            ))
        })?;
        Ok(self.run_line(status, target, timeout_ms)?.code == Some(0))
    }

    fn check(
        &self,
        c: &Condition,
        target: Option<&str>,
        timeout_ms: Option<u64>,
    ) -> Result<bool, Failure> {
        let fail = |e: fs::FsError| Failure::new(e.to_string());
        match c {
            Condition::Exists { path } => self.roots.exists(path).map_err(fail),
            Condition::Absent { path } => self.roots.exists(path).map(|e| !e).map_err(fail),
            Condition::FreeSpaceAtLeast { root, bytes } => {
                let path = self
                    .roots
                    .path(&Location::new(root.clone(), ""))
                    .map_err(fail)?;
                let free = crate::facts::available_space(&path)
                    .map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
                Ok(free >= *bytes)
            }
            Condition::ServiceIs { service, state } => Ok(self
                .service_running(service, target, timeout_ms)?
                == (*state == ServiceState::Running)),
            Condition::CommandSucceeds(e) => {
                let out = self.exec(e, target, timeout_ms)?;
                Ok(e.succeeded(out.code.unwrap_or(-1)))
            }
            Condition::StepStarted { .. } | Condition::StepNotSucceeded { .. } => Ok(self
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .holds(c)
                .unwrap_or(false)),
        }
    }

    fn verify(&self, s: &Step, check: &VerifyCheck) -> Result<Done, Failure> {
        match check {
            VerifyCheck::CopyMatches { from, to } => self.copy_matches(from, to),
            VerifyCheck::PairedFiles {
                dir,
                suffix,
                partner_suffix,
            } => {
                let names = fs::names(&self.roots, dir).map_err(|e| Failure::new(e.to_string()))?;
                let names: std::collections::BTreeSet<&[u8]> =
                    names.iter().map(|n| n.as_bytes()).collect();
                let ours = |n: &&&[u8]| n.ends_with(suffix.as_bytes());
                let lonely: Vec<String> = names
                    .iter()
                    .filter(ours)
                    .filter(|n| {
                        !names.contains([**n, partner_suffix.as_bytes()].concat().as_slice())
                    })
                    .map(|n| crate::tree::Bytes(n.to_vec()).to_string())
                    .collect();
                if lonely.is_empty() {
                    let n = names.iter().filter(ours).count();
                    Ok(format!("{n} file(s) have their {partner_suffix}").into())
                } else {
                    Err(Failure::new(format!(
                        "in {dir}, no {partner_suffix} for: {}",
                        lonely.join(", ")
                    )))
                }
            }
            VerifyCheck::EsePages { path } => self.ese_pages(s, path),
        }
    }

    /// Every page of the ESE database at `path` has a good checksum. Bad pages fail the step
    /// with `-1018 JET_errReadVerifyFailure`, each with its page number and offset.
    fn ese_pages(&self, s: &Step, path: &Location) -> Result<Done, Failure> {
        let file = self
            .roots
            .open_file(path)
            .map_err(|e| Failure::new(e.to_string()))?;
        let len = file
            .metadata()
            .map_err(|e| Failure::new(format!("{path}: {e}")))?
            .len();
        let mut progress = |done: u64| {
            self.observer
                .progress(&s.id, ProgressUnit::Bytes, done, len)
        };
        let report = crate::ese::check(file, Some(len), &mut progress)
            .map_err(|e| Failure::new(format!("{path}: {e}")))?;
        if report.is_clean() {
            return Ok(format!(
                "{path}: {} pages of {} bytes good ({}; {}, {} unused)",
                report.pages,
                report.header.page_size,
                report.header.state,
                report.formats(),
                report.uninitialized
            )
            .into());
        }
        const SHOWN: usize = 10;
        let mut lines: Vec<String> = report
            .bad
            .iter()
            .take(SHOWN)
            .map(|b| b.to_string())
            .collect();
        if report.bad_count > SHOWN as u64 {
            lines.push(format!("... and {} more", report.bad_count - SHOWN as u64));
        }
        Err(Failure::new(format!(
            "{path} is physically corrupt: {} of {} pages fail their checksum; do not keep it as a good backup (`hokan ese-check` lists every page)\n{}",
            report.bad_count,
            report.pages + 2,
            lines.join("\n")
        )))
    }

    /// `to` is a faithful copy of `from`: the same entries, each of the same kind, mode, owner
    /// (when root), mtime, link target, attributes and hard links, and every file with the same
    /// contents. A file this run copied is compared by the digest taken then; a file it linked
    /// from the previous set, by the fingerprint that let it link (the source's size, mtime,
    /// ctime and inode, and the copy's inode), checked again now, as rsync's `--link-dest` does.
    fn copy_matches(&self, from: &Location, to: &Location) -> Result<Done, Failure> {
        use rayon::prelude::*;
        let err = |e: fs::FsError| Failure::new(e.to_string());
        let all = crate::tree::Attrs::All;
        let (orig, copy) = rayon::join(|| self.roots.scan(from, all), || self.walk_of_set(to));
        let (orig, copy) = (orig.map_err(err)?, copy.map_err(err)?);
        let sockets = orig
            .iter()
            .filter(|n| n.meta.kind == crate::tree::Kind::Socket)
            .count();
        let orig: BTreeMap<&RelPath, &crate::tree::Node> = orig
            .iter()
            .filter(|n| n.meta.kind != crate::tree::Kind::Socket)
            .map(|n| (&n.path, n))
            .collect();
        let copy: BTreeMap<&RelPath, &crate::tree::Node> =
            copy.iter().map(|n| (&n.path, n)).collect();
        let written = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let to_path = RelPath::from(to.path.as_str());
        let owners = crate::tree::meta::is_root();
        let mut problems: Vec<(RelPath, String)> = orig
            .keys()
            .filter(|p| !copy.contains_key(*p))
            .map(|p| {
                (
                    (*p).clone(),
                    format!("{} is missing from the copy", fs::join(to, p)),
                )
            })
            .collect();
        problems.extend(copy.keys().filter(|p| !orig.contains_key(*p)).map(|p| {
            (
                (*p).clone(),
                format!(
                    "{} has no original at {}",
                    fs::join(to, p),
                    fs::join(from, p)
                ),
            )
        }));
        let pairs: Vec<(&RelPath, &crate::tree::Node, &crate::tree::Node)> = orig
            .iter()
            .filter_map(|(p, o)| Some((*p, *o, *copy.get(p)?)))
            .collect();
        let checked: Vec<(RelPath, String)> = pairs
            .par_iter()
            .flat_map_iter(|&(rel, o, c)| {
                // Named only when something differs: most pairs do not.
                let names = || (fs::join(from, rel), fs::join(to, rel));
                let mut out: Vec<(RelPath, String)> = crate::tree::differences(o, c, owners, false)
                    .into_iter()
                    .map(|d| {
                        let (oname, cname) = names();
                        (rel.clone(), format!("{cname} {d} as {oname} is"))
                    })
                    .collect();
                let file = o.meta.kind == crate::tree::Kind::File && o.first.is_none();
                if out.is_empty() && file {
                    let w = written
                        .get(&(to.root.clone(), rel.under(&to_path)))
                        .filter(|w| {
                            (w.ino, w.size, w.mtime) == (c.meta.ino, c.meta.size, c.meta.mtime)
                        });
                    let problem = match w {
                        Some(w)
                            if w.linked
                                && w.source
                                    == crate::tree::Source {
                                        ino: o.meta.ino,
                                        ctime: o.meta.ctime,
                                    } =>
                        {
                            None
                        }
                        _ => {
                            let copy_digest = match w {
                                Some(w) => Ok(w.digest.clone()),
                                None => self.roots.digest(to, rel, c.meta.size),
                            };
                            match (self.roots.digest(from, rel, o.meta.size), copy_digest) {
                                (Ok(a), Ok(b)) if a == b => None,
                                (Ok(_), Ok(_)) => {
                                    let (oname, cname) = names();
                                    Some(format!("{cname} differs from {oname}"))
                                }
                                (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
                            }
                        }
                    };
                    out.extend(problem.map(|p| (rel.clone(), p)));
                }
                out
            })
            .collect();
        problems.extend(checked);
        problems.sort();
        if problems.is_empty() {
            let files = orig
                .values()
                .filter(|n| n.meta.kind == crate::tree::Kind::File)
                .count();
            let mut summary = format!("{} entries match ({files} file(s))", orig.len());
            if sockets > 0 {
                summary.push_str(&format!("; {sockets} socket(s) in {from} are not copied"));
            }
            Ok(summary.into())
        } else {
            let n = problems.len();
            let shown: Vec<String> = problems.into_iter().take(10).map(|(_, p)| p).collect();
            Err(Failure::new(format!(
                "{n} difference(s) between {from} and {to}: {}",
                shown.join("; ")
            )))
        }
    }

    /// A walk of `l`; kept for the manifest when `l` is in the new set and no step that may
    /// write ran while it was taken.
    fn walk_of_set(&self, l: &Location) -> Result<Arc<Vec<crate::tree::Node>>, fs::FsError> {
        let before = self.writes.load(Ordering::SeqCst);
        let idle = self.writing.load(Ordering::SeqCst) == 0;
        let nodes = Arc::new(self.roots.scan(l, crate::tree::Attrs::All)?);
        let into_new_set = l.root == "set" && self.spec.set.as_ref().is_some_and(|s| s.writes);
        if into_new_set && idle && self.writes.load(Ordering::SeqCst) == before {
            self.set_walks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((RelPath::from(l.path.as_str()), before, nodes.clone()));
        }
        Ok(nodes)
    }

    /// Syncs the new set, writes its manifest, and gives it its id; `kept`: why it is kept,
    /// for a set completed after a point of no return though the run failed.
    fn complete_set(&self, set: &SetSpec, kept: Option<&str>) -> Result<(), String> {
        let partial = set.partial();
        let root = self
            .roots
            .0
            .get("set")
            .ok_or_else(|| format!("{} is not open", partial.display()))?;
        syncfs(std::os::fd::AsFd::as_fd(&root.dir))
            .map_err(|e| format!("cannot sync {}: {e}", partial.display()))?;
        let known: manifest::Known = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((root, _), _)| root == "set")
            .map(|((_, path), w)| (path.clone(), (w.digest.clone(), Some(w.source))))
            .collect();
        let d = &self.spec.document;
        let head = Manifest {
            format_version: manifest::FORMAT_VERSION.into(),
            hokan_version: env!("CARGO_PKG_VERSION").into(),
            site: d.site.clone(),
            job: d.job.clone(),
            set: set.id.clone(),
            operation: d.operation.clone(),
            plugin: d.plugin.clone(),
            started: self.spec.started.clone(),
            kept: kept.map(str::to_string),
            finished: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            digest: String::new(),
            owners: crate::tree::meta::is_root(),
            entries: vec![],
        };
        // The verify steps' walks of the set's top-level trees, when nothing has written since.
        let now = self.writes.load(Ordering::SeqCst);
        let taken = std::mem::take(&mut *self.set_walks.lock().unwrap_or_else(|p| p.into_inner()));
        let mut walks: Vec<(RelPath, Vec<crate::tree::Node>)> = taken
            .into_iter()
            .filter(|(path, at, nodes)| {
                *at == now
                    && path.components().count() == 1
                    && nodes
                        .first()
                        .is_some_and(|n| n.meta.kind == crate::tree::Kind::Dir)
            })
            .map(|(path, _, nodes)| (path, Arc::unwrap_or_clone(nodes)))
            .collect();
        walks.sort_by(|a, b| a.0.cmp(&b.0));
        walks.dedup_by(|a, b| a.0 == b.0);
        let m = manifest::write(&partial, head, &known, walks).map_err(|e| e.to_string())?;
        std::fs::rename(&partial, set.path())
            .and_then(|()| std::fs::File::open(&set.job_dir)?.sync_all())
            .map_err(|e| {
                format!(
                    "cannot rename {} to {}: {e}",
                    partial.display(),
                    set.path().display()
                )
            })?;
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let in_set = written.iter().filter(|((r, _), _)| r == "set");
        let (mut copied, mut linked) = (0, 0);
        for (_, w) in in_set {
            if w.linked {
                linked += 1;
            } else {
                copied += w.size;
            }
        }
        drop(written);
        self.log(Record::SetComplete {
            set: set.id.clone(),
            path: set.path(),
            files: m.files().len() as u64,
            bytes_copied: copied,
            files_linked: linked,
            kept: kept.map(str::to_string),
        });
        Ok(())
    }

    fn prune(&self, set: &SetSpec) {
        if !set.retention.is_set() {
            return;
        }
        let ids = match sets::list(&set.job_dir) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!("cannot list {} to prune: {e}", set.job_dir.display());
                return;
            }
        };
        // Never the set just written, nor the newest one by completion: with the clock set
        // back, ids alone could name either as old.
        let newest = sets::by_completion(&set.job_dir)
            .ok()
            .and_then(|v| v.last().cloned());
        let mut pruned = Vec::new();
        for id in set.retention.prune(&ids) {
            if id == set.id || Some(&id) == newest.as_ref() {
                continue;
            }
            let dir = set.job_dir.join(&id);
            // A set a restore is reading is left for the next run's retention.
            let _held = match sets::SetLock::try_exclusive(&dir) {
                Ok(Some(l)) => l,
                Ok(None) => {
                    tracing::warn!(
                        "not pruning the set {} now: it is being read",
                        dir.display()
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!("cannot prune the set {}: {e}", dir.display());
                    continue;
                }
            };
            // The manifest goes first, so a set half-removed is never listed as good.
            let r = std::fs::remove_file(dir.join(manifest::MANIFEST))
                .and_then(|()| sets::remove_tree(&dir));
            match r {
                Ok(()) => pruned.push(id),
                Err(e) => tracing::warn!("cannot prune the set {}: {e}", dir.display()),
            }
        }
        if !pruned.is_empty() {
            self.log(Record::Pruned { sets: pruned });
        }
    }
}

/// Makes a backup's partial set: the job's directories as needed, each opened without following
/// a link, then the partial directory itself created exclusively (never one that is already
/// there, which could hold planted files), owner-only until the set is complete.
fn make_partial(set: &SetSpec) -> Result<(cap_std::fs::Dir, PathBuf), String> {
    use std::os::fd::AsFd;
    let partial = set.partial();
    let err = |e: std::io::Error| format!("cannot make the partial set {}: {e}", partial.display());
    std::fs::create_dir_all(&set.job_dir).map_err(err)?;
    let job = crate::tree::meta::open_dir(&set.job_dir).map_err(err)?;
    let name = sets::partial_name(&set.id);
    match rustix::fs::mkdirat(
        job.as_fd(),
        name.as_str(),
        rustix::fs::Mode::from_raw_mode(0o700),
    ) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => {
            return Err(format!(
                "{} already exists and is not this run's; nothing of it is used: look at what it holds, remove it, and run again",
                partial.display()
            ));
        }
        Err(e) => return Err(err(e.into())),
    }
    let fd = crate::tree::meta::open_dir_at(job.as_fd(), name.as_bytes()).map_err(err)?;
    Ok((
        cap_std::fs::Dir::from_std_file(std::fs::File::from(fd)),
        partial,
    ))
}

/// Flushes the filesystem holding `fd` to disk: syncfs(2). Since Linux 5.8 it reports every
/// writeback error on the filesystem since `fd` was opened, whoever else has seen it: a set is
/// synced through the handle opened when it was made, before anything was written into it.
fn syncfs(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs(2) on a file descriptor we hold; it touches no memory.
    if unsafe { libc::syncfs(fd.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
