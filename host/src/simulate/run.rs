//! Carrying out a plan in a modelled [`World`]: the effect of every action, the injected
//! faults, the transcript and the invariant report.
//!
//! How the steps are driven (conditions, retries, abort and continue, groups, gates, the set's
//! completion, cleanup and recovery after a crash) is [`crate::drive`]'s, the same code a real
//! run follows; this module is only the world's side of it.

use super::world::{FileNode, HOST, Node, World};
use crate::describe::{CommandBehaviour, SetUse, SimEffect};
use crate::drive::{self, Done, Effects, Failure, Flow, Gate, Progress, Ran, SetEnd, StepEnd};
pub use crate::drive::{Outcome, Phase, RunStatus, StepStatus};
use crate::plan::model::{Exec, VerifyCheck};
use crate::plan::pattern;
use crate::plan::{Action, Condition, Location, Plan, ServiceState, Step};
use crate::tree::Bytes;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard};

pub use super::faults::{Fault, FaultMode, RemoteServers, scenarios};

mod invariants;
#[cfg(test)]
mod tests;

/// One step of a transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    /// Body, cleanup or recovery.
    pub phase: Phase,
    /// The step's id.
    pub id: String,
    /// Its action's kind.
    pub kind: &'static str,
    /// How it ended.
    pub status: StepStatus,
    /// Attempts made (0 when skipped).
    pub attempts: u32,
    /// Simulated time it started, ms after the run began.
    pub at_ms: u64,
    /// Simulated time it took, all attempts.
    pub duration_ms: u64,
    /// What it changed in the world.
    pub changes: Vec<String>,
    /// What happened, when there is more to say: an error, a command's output, a gate.
    pub note: Option<String>,
}

/// One invariant's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvariantResult {
    /// `hokan:...` for the built-in safety invariants, else the plan's id.
    pub id: String,
    /// What it means.
    pub description: String,
    /// Whether it held.
    pub held: bool,
    /// Why it broke (or what it checked), naming paths and steps.
    pub detail: Option<String>,
}

/// One run of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transcript {
    /// `normal`, or the fault's label.
    pub scenario: String,
    /// The fault injected.
    pub fault: Option<Fault>,
    /// Whether the faulted step was reached (a skipped or never-reached step cannot fail).
    pub fault_reached: bool,
    /// How it ended, as a real run's journal would say (its invariants aside: see
    /// `invariants`).
    pub outcome: Outcome,
    /// Whether the backup set ended up complete; `None` when the operation writes none.
    pub set_complete: Option<bool>,
    /// Whether the set, not complete, was kept all the same after a point of no return.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub set_kept: bool,
    /// Simulated time of the whole run.
    pub duration_ms: u64,
    /// Every step, in the order they ran.
    pub steps: Vec<StepRecord>,
    /// Every invariant, built-in first.
    pub invariants: Vec<InvariantResult>,
}

impl Transcript {
    /// The invariants that broke.
    pub fn broken(&self) -> impl Iterator<Item = &InvariantResult> {
        self.invariants.iter().filter(|i| !i.held)
    }
}

/// What a run needs to know about the job besides its plan.
pub struct Context<'a> {
    /// The job's name (selects fixture command behaviours).
    pub job: &'a str,
    /// Root names to normalized absolute paths, `set` included.
    pub roots: &'a BTreeMap<String, String>,
    /// For restores, the files the site must keep at every step ([`files_to_keep`]).
    pub keep: Vec<KeptFile>,
    /// How the operation uses backup sets.
    pub set_use: SetUse,
    /// The plugin's maintenance markers.
    pub markers: &'a [Location],
    /// The operation means to leave the product in maintenance mode.
    pub leaves_maintenance: bool,
    /// The plugin's command behaviours.
    pub behaviours: &'a [CommandBehaviour],
    /// The plan.
    pub plan: &'a Plan,
    /// The servers reached over ssh and the roots on them, which a server-down fault cuts off.
    pub remote: &'a RemoteServers,
}

/// A file a restore must keep: its root's name, its path in the root, its content identity.
pub type KeptFile = (String, String, u64);

/// The world path of a location, given the roots.
fn abs_in(roots: &BTreeMap<String, String>, l: &Location) -> String {
    let root = roots
        .get(&l.root)
        .map(String::as_str)
        .unwrap_or("/nonexistent-root");
    match l.path.trim_end_matches('/') {
        "" => root.to_string(),
        p => format!("{root}/{p}"),
    }
}

/// Every file the `writable` roots (the backup set aside) hold in `world`, maintenance markers
/// aside: what a restore must keep, in place or renamed, at every step. Computed once per plan,
/// not per scenario.
pub fn files_to_keep<'w>(
    world: &World,
    roots: &BTreeMap<String, String>,
    writable: impl IntoIterator<Item = &'w String>,
    markers: &[Location],
) -> Vec<KeptFile> {
    let markers: Vec<String> = markers.iter().map(|m| abs_in(roots, m)).collect();
    let mut keep = Vec::new();
    for root in writable.into_iter().filter(|r| r.as_str() != "set") {
        if let Some(dir) = roots.get(root) {
            for (rel, f) in world.files_below(dir) {
                if !markers.contains(&format!("{dir}/{rel}")) {
                    keep.push((root.clone(), rel.to_string(), f.content));
                }
            }
        }
    }
    keep
}

impl Context<'_> {
    fn abs(&self, l: &Location) -> String {
        abs_in(self.roots, l)
    }

    fn is_marker(&self, abs: &str) -> bool {
        self.markers.iter().any(|m| self.abs(m) == abs)
    }
}

/// Runs `ctx.plan` in a copy of `world`, with `fault` injected.
pub fn run(world: &World, ctx: &Context<'_>, fault: Option<&Fault>) -> Transcript {
    let progress = Mutex::new(Progress::default());
    let sim = Sim {
        progress: &progress,
        run: Mutex::new(Run::new(world, ctx, fault, &progress)),
    };
    let outcome = match drive::run(ctx.plan, &sim) {
        Ran::Finished(outcome)
            if sim.run().down.is_some() && !outcome.cleanup_deferred.is_empty() =>
        {
            // The server is back; `hokan recover` runs the steps that could not reach it, and
            // the run ends as it had, with its cleanup as it is now.
            sim.run().down = None;
            let recovered = drive::recover(ctx.plan, &sim);
            drive::after_deferred(*outcome, recovered)
        }
        Ran::Finished(outcome) => *outcome,
        Ran::Crashed => drive::recover(ctx.plan, &sim),
    };
    let run = sim.run.into_inner().unwrap_or_else(|p| p.into_inner());
    run.finish(outcome)
}

/// The modelled world as the driver's [`Effects`]: a run's state behind a lock (the driver may
/// run a group's steps on threads; the world runs them one after the other, each from the
/// group's start time).
struct Sim<'a> {
    progress: &'a Mutex<Progress>,
    run: Mutex<Run<'a>>,
}

impl<'a> Sim<'a> {
    fn run(&self) -> MutexGuard<'_, Run<'a>> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Effects for Sim<'_> {
    fn progress(&self) -> &Mutex<Progress> {
        self.progress
    }

    fn holds(&self, c: &Condition, target: Option<&str>) -> Result<bool, Failure> {
        let run = self.run();
        if let Some(down) = run
            .down
            .filter(|d| run.ctx.remote.of_condition(c, target).contains(d))
        {
            return Err(unreachable(down));
        }
        run.holds(c, target)
    }

    fn now_ms(&self) -> i64 {
        self.run().now()
    }

    fn wait_until_ms(&self, ms: i64) {
        let mut run = self.run();
        let at = (ms - run.initial.now_ms).max(0) as u64;
        run.clock = run.clock.max(at);
    }

    fn act(&self, s: &Step) -> Result<Done, Failure> {
        let mut run = self.run();
        let injected = run.fault.filter(|f| f.step() == s.id);
        if injected.is_some() {
            run.fault_reached = true;
        }
        if let Some(down) = run.down.filter(|d| run.ctx.remote.of_step(s).contains(d)) {
            return Err(unreachable(down));
        }
        match injected {
            Some(Fault::Fail { .. }) => run.inject(s, false).map(|()| Vec::new()),
            Some(Fault::Timeout { .. }) => run.inject(s, true).map(|()| Vec::new()),
            _ => run.act(s),
        }
        .map(|warnings| Done {
            warnings,
            ..Done::default()
        })
    }

    fn gate(&self, s: &Step, _instructions: &str, _reference: Option<&str>) -> Gate {
        let mut run = self.run();
        match run.fault.filter(|f| f.step() == s.id) {
            Some(Fault::Fail { .. } | Fault::Timeout { .. }) => {
                run.fault_reached = true;
                Gate::NotConfirmed("injected: the operator did not confirm".into())
            }
            _ => Gate::Confirmed("gate: the operator confirmed (real runs ask)".into()),
        }
    }

    fn started(&self, _s: &Step, _phase: Phase) {
        let mut run = self.run();
        run.started_at = run.clock;
        run.changes.clear();
        run.note = None;
    }

    fn ended(&self, s: &Step, phase: Phase, end: StepEnd) {
        self.run().ended(s, phase, end);
    }

    fn item_ended(&self, steps: &[Step]) -> Flow {
        let mut run = self.run();
        match run.fault {
            Some(Fault::CrashAfter { step })
                if !run.crashed && steps.iter().any(|s| s.id == *step) =>
            {
                run.fault_reached = true;
                run.crashed = true;
                Flow::Crash
            }
            Some(Fault::ServerDownAfter { step, server })
                if !run.went_down && steps.iter().any(|s| s.id == *step) =>
            {
                run.fault_reached = true;
                run.went_down = true;
                run.down = Some(server);
                Flow::Go
            }
            _ => Flow::Go,
        }
    }

    fn together(
        &self,
        steps: &[Step],
        each: &(dyn Fn(&Step) -> StepStatus + Sync),
    ) -> Vec<StepStatus> {
        // Started together: each member starts at the group's start; the group ends when its
        // slowest member does.
        let start = self.run().clock;
        let mut end = start;
        let mut out = Vec::with_capacity(steps.len());
        for s in steps {
            self.run().clock = start;
            out.push(each(s));
            end = end.max(self.run().clock);
        }
        self.run().clock = end;
        out
    }

    fn body_ended(&self, set: &SetEnd) -> Result<Option<String>, String> {
        let mut run = self.run();
        if run.ctx.set_use != SetUse::Writes {
            return Ok(None);
        }
        run.set_complete = Some(*set == SetEnd::Complete);
        run.set_kept = matches!(set, SetEnd::Kept(_));
        Ok((!matches!(set, SetEnd::Discard(_))).then(|| run.set_id()))
    }

    fn recovered_set(&self, completed: bool, kept: Option<&str>) -> Result<Option<String>, String> {
        let mut run = self.run();
        if run.ctx.set_use != SetUse::Writes {
            return Ok(None);
        }
        if !completed {
            run.set_complete = Some(false);
            run.set_kept = kept.is_some();
        }
        Ok((completed || kept.is_some()).then(|| run.set_id()))
    }
}

/// What a step or condition on a server that is down gets: the driver defers it in a cleanup,
/// as it does a real one that could not reach its server.
fn unreachable(server: &str) -> Failure {
    Failure {
        status: StepStatus::Unreachable,
        ..Failure::new(format!(
            "injected: server `{server}` cannot be reached (its connection failed, and so did \
             the reconnections)"
        ))
    }
}

struct Copy {
    step: String,
    from: String,
    to: String,
    ok: bool,
    /// The source's files (relative path, content) when it was copied.
    source: Vec<(String, u64)>,
}

struct Run<'a> {
    ctx: &'a Context<'a>,
    initial: &'a World,
    world: World,
    fault: Option<&'a Fault>,
    fault_reached: bool,
    clock: u64,
    records: Vec<StepRecord>,
    copies: Vec<Copy>,
    kept_broken: Option<String>,
    /// The driver's progress, for `step-*` conditions in assertions, waits and invariants.
    progress: &'a Mutex<Progress>,
    /// When the step being run started.
    started_at: u64,
    /// What became of the set, once the driver settled it.
    set_complete: Option<bool>,
    /// The set was kept, incomplete, after a point of no return.
    set_kept: bool,
    /// The injected crash happened (only once: recovery runs to its end).
    crashed: bool,
    /// The server the injected fault took down, while it is down.
    down: Option<&'a str>,
    /// It went down (only once: it is back for the recovery, which may run the step again).
    went_down: bool,
    /// Changes of the step being run.
    changes: Vec<String>,
    note: Option<String>,
    /// The steps whose command hokan killed at its time limit.
    killed: Vec<String>,
}

/// Simulated time for people: `850 ms`, `3.0 s`, `1 min 03 s`, `2 h 05 min`.
pub fn dur(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {:02} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {:02} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// Bytes for people: `4.0 KiB`.
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

impl<'a> Run<'a> {
    fn new(
        initial: &'a World,
        ctx: &'a Context<'a>,
        fault: Option<&'a Fault>,
        progress: &'a Mutex<Progress>,
    ) -> Self {
        let mut world = initial.clone();
        if ctx.set_use == SetUse::Writes
            && let Some(set) = ctx.roots.get("set")
        {
            // The host makes the new set's directory before the plan runs.
            let _ = world.mkdir_p(set);
        }
        Run {
            ctx,
            initial,
            world,
            fault,
            fault_reached: false,
            clock: 0,
            records: Vec::new(),
            copies: Vec::new(),
            kept_broken: None,
            progress,
            started_at: 0,
            set_complete: None,
            set_kept: false,
            crashed: false,
            down: None,
            went_down: false,
            changes: Vec::new(),
            note: None,
            killed: Vec::new(),
        }
    }

    /// The new set's id: the last component of its root.
    fn set_id(&self) -> String {
        let set = self.ctx.roots.get("set").map_or("", String::as_str);
        set.rsplit('/').next().unwrap_or(set).to_string()
    }

    /// Records a step as the driver ended it.
    fn ended(&mut self, s: &Step, phase: Phase, end: StepEnd) {
        let ran = end.attempts > 0;
        let at_ms = if ran { self.started_at } else { self.clock };
        let note = match end.status {
            StepStatus::Ok => self
                .note
                .take()
                .or_else(|| (!end.summary.is_empty()).then_some(end.summary)),
            StepStatus::Skipped => Some(end.summary),
            _ => Some(match self.note.take() {
                Some(n) if ran => format!("{}; {n}", end.summary),
                _ => end.summary,
            }),
        };
        self.records.push(StepRecord {
            phase,
            id: s.id.clone(),
            kind: s.action.kind(),
            status: end.status,
            attempts: end.attempts,
            at_ms,
            duration_ms: self.clock - at_ms,
            changes: if ran {
                std::mem::take(&mut self.changes)
            } else {
                Vec::new()
            },
            note,
        });
        // Only these can lose a file; a copy only adds (or removes its own partial copy).
        if ran
            && matches!(
                s.action,
                Action::Remove { .. }
                    | Action::Rename { .. }
                    | Action::WriteFile { .. }
                    | Action::Exec(_)
            )
        {
            self.check_kept(&s.id);
        }
    }

    /// Restores: every file the writable roots had at the start must still be there, at its
    /// path or (renamed) elsewhere in the same root.
    fn check_kept(&mut self, step: &str) {
        if self.ctx.keep.is_empty() || self.kept_broken.is_some() {
            return;
        }
        let mut present: BTreeMap<&str, HashSet<u64>> = BTreeMap::new();
        let mut lost = Vec::new();
        for (root, rel, content) in &self.ctx.keep {
            let set = present.entry(root).or_insert_with(|| {
                let dir = self.ctx.roots.get(root).map_or("", String::as_str);
                self.world
                    .files_below(dir)
                    .into_iter()
                    .map(|(_, f)| f.content)
                    .collect()
            });
            if !set.contains(content) {
                lost.push(Location::new(root.clone(), rel.clone()).to_string());
            }
        }
        if !lost.is_empty() {
            self.kept_broken = Some(format!(
                "after step `{step}`, {} file(s) the site had at the start are gone, neither in \
                 place nor renamed: {}{}",
                lost.len(),
                lost.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
                if lost.len() > 3 { ", ..." } else { "" }
            ));
        }
    }

    fn holds(&self, c: &Condition, target: Option<&str>) -> Result<bool, Failure> {
        let ctx = self.ctx;
        let node = |l: &Location| {
            self.world
                .lookup(&ctx.abs(l))
                .map_err(|e| Failure::new(format!("{l}: {e}")))
        };
        Ok(match c {
            Condition::Exists { path } => node(path)?.is_some(),
            Condition::Absent { path } => node(path)?.is_none(),
            Condition::FreeSpaceAtLeast { root, bytes } => {
                self.world.free(&ctx.abs(&Location::new(root.clone(), ""))) >= *bytes
            }
            Condition::ServiceIs { service, state } => {
                self.world.service(target.unwrap_or(HOST), service).state == *state
            }
            Condition::CommandSucceeds(e) => {
                e.succeeded(self.behaviour(e).map_or(0, |b| b.exit_code))
            }
            Condition::StepStarted { .. }
            | Condition::StepNotSucceeded { .. }
            | Condition::StepSucceeded { .. }
            | Condition::StepNotStarted { .. } => self
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .holds(c)
                .unwrap_or(false),
        })
    }

    fn behaviour(&self, e: &Exec) -> Option<&'a CommandBehaviour> {
        // The world outlives the run's borrow of it only through `initial`, whose command
        // overrides are the same as the working copy's.
        self.initial
            .behaviour(self.ctx.job, self.ctx.behaviours, &e.command, &e.args)
    }

    fn change(&mut self, c: String) {
        self.changes.push(c);
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, Failure> {
        Err(Failure::new(message))
    }

    /// One attempt of a step's action: the warnings of a step that did its job.
    fn act(&mut self, s: &Step) -> Result<Vec<String>, Failure> {
        let ctx = self.ctx;
        let target = s.target.as_deref().unwrap_or(HOST);
        let timeout = s.timeout_ms;
        match &s.action {
            Action::WriteFile { path, contents } => {
                let content = self.world.new_content();
                let file = FileNode {
                    size: contents.len() as u64,
                    content,
                    mtime_ms: self.now(),
                    readonly: false,
                    damaged: false,
                    text: Some(contents.clone().into()),
                };
                match self.world.put_file(&ctx.abs(path), file) {
                    Ok(()) => self.change(format!("+ {path} ({})", size(contents.len() as u64))),
                    Err(e) => return self.fail(e),
                }
            }
            Action::Remove { path } => {
                let abs = ctx.abs(path);
                if self.world.node(&abs).is_none() {
                    self.note = Some(format!("{path} was already absent"));
                } else {
                    let was_dir = self.world.is_dir(&abs);
                    let (files, bytes) = self.world.remove(&abs);
                    self.change(if !was_dir {
                        format!("- {path}")
                    } else if files == 0 {
                        format!("- {path}/ (empty)")
                    } else {
                        format!("- {path} ({files} file(s), {})", size(bytes))
                    });
                }
            }
            Action::Rename { from, to } => match self.world.rename(&ctx.abs(from), &ctx.abs(to)) {
                Ok(()) => self.change(format!("{from} -> {to}")),
                Err(e) => return self.fail(format!("cannot rename {from}: {e}")),
            },
            Action::EnsureDir { path } => {
                let abs = ctx.abs(path);
                if !self.world.is_dir(&abs) {
                    match self.world.mkdir_p(&abs) {
                        Ok(()) => self.change(format!("+ {path}/")),
                        Err(e) => return self.fail(e),
                    }
                }
            }
            Action::CopyTree { from, to } => {
                return self.copy(s, from, to, None).map(|()| Vec::new());
            }
            Action::Exec(e) => {
                let (code, output, ms, effects) = match self.behaviour(e) {
                    Some(b) => (
                        b.exit_code,
                        b.output.clone(),
                        b.duration_ms,
                        b.effects.as_slice(),
                    ),
                    None => (0, String::new(), 0, &[][..]),
                };
                let mut warnings = Vec::new();
                if let Some(limit) = timeout.filter(|&t| ms > t) {
                    match drive::AtLimit::of(s) {
                        drive::AtLimit::Kill => {
                            self.clock = self.clock.saturating_add(limit);
                            self.effects(effects, target, e.cwd.as_deref());
                            self.killed.push(s.id.clone());
                            return Err(Failure::timed_out(format!(
                                "`{}` was still running at its time limit of {} (it takes {})",
                                e.command,
                                dur(limit),
                                dur(ms)
                            )));
                        }
                        drive::AtLimit::Report => {
                            warnings.push(drive::overran(&e.command, &dur(limit)));
                        }
                    }
                }
                self.clock = self.clock.saturating_add(ms);
                self.effects(effects, target, e.cwd.as_deref());
                let out = output.trim();
                self.note = Some(if out.is_empty() {
                    format!("exit {code}")
                } else {
                    format!("exit {code}: {out}")
                });
                if !e.succeeded(code) {
                    return self.fail(format!("`{}` exited with {code}", e.command));
                }
                return Ok(warnings);
            }
            Action::Service { service, state } => {
                let m = self.world.service(target, service);
                let refuses = match state {
                    ServiceState::Running => m.fails_to_start,
                    ServiceState::Stopped => m.fails_to_stop,
                };
                self.clock = self.clock.saturating_add(2000);
                if refuses {
                    return self.fail(format!(
                        "service `{service}` on {target} did not reach {}",
                        state_name(*state)
                    ));
                }
                if m.state != *state {
                    self.world.set_service_state(target, service, *state);
                    self.change(format!(
                        "service {service} on {target}: {} -> {}",
                        state_name(m.state),
                        state_name(*state)
                    ));
                }
            }
            Action::WaitUntil { condition, .. } => {
                if !self.holds(condition, s.target.as_deref())? {
                    // Nothing in the modelled world changes on its own.
                    return match timeout {
                        Some(t) => {
                            self.clock = self.clock.saturating_add(t);
                            Err(Failure::timed_out(format!(
                                "{condition} still did not hold after {}",
                                dur(t)
                            )))
                        }
                        None => self.fail(format!(
                            "{condition} does not hold and nothing will make it; with no time \
                             limit a real run would wait forever"
                        )),
                    };
                }
            }
            Action::Verify { check } => self.verify(check)?,
            Action::Assert { condition, message } => {
                if !self.holds(condition, s.target.as_deref())? {
                    return self.fail(format!("{message} ({condition} does not hold)"));
                }
            }
            // The driver asks the operator (`Effects::gate`).
            Action::Manual { .. } => return self.fail("a manual step is asked, not acted"),
            Action::RemoveFiles {
                dir,
                patterns,
                except,
                ignore_case,
            } => {
                let abs = ctx.abs(dir);
                if !self.world.is_dir(&abs) {
                    return self.fail(format!("cannot open {dir}: not a directory"));
                }
                let chosen: Vec<(String, bool)> = self
                    .world
                    .children(&abs)
                    .into_iter()
                    .filter(|(name, _)| {
                        pattern::selects(patterns, except, name.as_bytes(), *ignore_case)
                    })
                    .map(|(name, n)| (name.to_string(), matches!(n, Node::File(_))))
                    .collect();
                let mut removed = Vec::new();
                let mut not_files = Vec::new();
                for (name, file) in chosen {
                    if file {
                        self.world.remove(&format!("{abs}/{name}"));
                        self.change(format!("- {dir}/{name}"));
                        removed.push(Bytes::from(name.as_str()));
                    } else {
                        not_files.push(Bytes::from(name.as_str()));
                    }
                }
                let done = drive::removed_files(&s.id, dir, &removed, &not_files)?;
                self.note = Some(done.summary.clone());
                return Ok(done.warnings);
            }
        }
        Ok(Vec::new())
    }

    fn now(&self) -> i64 {
        self.initial.now_ms + self.clock as i64
    }

    fn effects(&mut self, effects: &[SimEffect], target: &str, cwd: Option<&str>) {
        // `{server}` in an effect's path is the server the command ran on; the root `{cwd}` is
        // the root it ran in (a command that writes relative to its working directory, which
        // the plan chooses: TeamWARE's into the set, or into a directory on its server).
        let on_target = |l: &Location| {
            let root = match (l.root.as_str(), cwd) {
                ("{cwd}", Some(cwd)) => cwd.to_string(),
                ("{cwd}", None) => return None,
                (root, _) => root.to_string(),
            };
            Some(Location::new(root, l.path.replace("{server}", target)))
        };
        for e in effects {
            match e {
                SimEffect::CreateFile(l) => {
                    let Some(l) = &on_target(l) else { continue };
                    let content = self.world.new_content();
                    let file = FileNode {
                        size: 0,
                        content,
                        mtime_ms: self.now(),
                        readonly: false,
                        damaged: false,
                        text: None,
                    };
                    if self.world.node(&self.ctx.abs(l)).is_none()
                        && self.world.put_file(&self.ctx.abs(l), file).is_ok()
                    {
                        self.change(format!("+ {l}"));
                    }
                }
                SimEffect::Remove(l) => {
                    let Some(l) = &on_target(l) else { continue };
                    let abs = self.ctx.abs(l);
                    if self.world.node(&abs).is_some() {
                        self.world.remove(&abs);
                        self.change(format!("- {l}"));
                    }
                }
                SimEffect::Service { service, state } => {
                    let before = self.world.service(target, service).state;
                    if before != *state {
                        self.world.set_service_state(target, service, *state);
                        self.change(format!(
                            "service {service} on {target}: {} -> {}",
                            state_name(before),
                            state_name(*state)
                        ));
                    }
                }
            }
        }
    }

    /// Copies a tree; `stop_after` files, when given, then fails (an injected I/O error).
    fn copy(
        &mut self,
        s: &Step,
        from: &Location,
        to: &Location,
        stop_after: Option<usize>,
    ) -> Result<(), Failure> {
        let (src, dst) = (self.ctx.abs(from), self.ctx.abs(to));
        let files: Vec<(String, FileNode)> = match self.world.node(&src) {
            None => return self.fail(format!("{from} does not exist")),
            Some(Node::File(f)) => vec![(String::new(), f.clone())],
            Some(Node::Dir) => self
                .world
                .files_below(&src)
                .into_iter()
                .map(|(r, f)| (r.to_string(), f.clone()))
                .collect(),
        };
        if self.world.node(&dst).is_some() {
            return self.fail(format!("{to} already exists; copy-tree never overwrites"));
        }
        let source: Vec<(String, u64)> =
            files.iter().map(|(r, f)| (r.clone(), f.content)).collect();
        let dirs: Vec<String> = match self.world.node(&src) {
            Some(Node::Dir) => self
                .world
                .entries_below(&src)
                .into_iter()
                .filter(|(_, n)| matches!(n, Node::Dir))
                .map(|(r, _)| r)
                .collect(),
            _ => vec![],
        };
        let mut written = 0u64;
        let mut error = None;
        if matches!(self.world.node(&src), Some(Node::Dir))
            && let Err(e) = self.world.mkdir_p(&dst)
        {
            error = Some(e);
        }
        for d in &dirs {
            if error.is_none() {
                error = self.world.mkdir_p(&format!("{dst}/{d}")).err();
            }
        }
        let mut copied = 0;
        for (rel, f) in &files {
            if error.is_some() {
                break;
            }
            if stop_after == Some(copied) {
                error = Some(format!(
                    "injected I/O error after {copied} of {} file(s)",
                    files.len()
                ));
                break;
            }
            let p = if rel.is_empty() {
                dst.clone()
            } else {
                format!("{dst}/{rel}")
            };
            match self.world.put_file(&p, f.clone()) {
                Ok(()) => {
                    written = written.saturating_add(f.size);
                    copied += 1;
                }
                Err(e) => error = Some(e),
            }
        }
        if error.is_none() && stop_after.is_some() {
            error = Some(format!(
                "injected I/O error after {copied} of {} file(s)",
                files.len()
            ));
        }
        self.clock = self
            .clock
            .saturating_add(written.saturating_mul(1000) / self.initial.copy_rate.max(1) + 1);
        let into_set = to.root == "set";
        if let Some(e) = error {
            // All or nothing: the host removes its partial copy.
            self.world.remove(&dst);
            if into_set {
                self.copies.push(Copy {
                    step: s.id.clone(),
                    from: src,
                    to: dst,
                    ok: false,
                    source,
                });
            }
            return self.fail(format!(
                "copy to {to} failed after {} ({e}); the partial copy was removed",
                size(written)
            ));
        }
        self.change(format!(
            "+ {to} ({} file(s), {})",
            files.len(),
            size(written)
        ));
        if into_set {
            self.copies.push(Copy {
                step: s.id.clone(),
                from: src,
                to: dst,
                ok: true,
                source,
            });
        }
        Ok(())
    }

    fn inject(&mut self, s: &Step, timeout: bool) -> Result<(), Failure> {
        let limit = s.timeout_ms.unwrap_or(0);
        match &s.action {
            Action::CopyTree { from, to } => {
                let n = self.world.files_below(&self.ctx.abs(from)).len().max(1);
                let r = self.copy(s, from, to, Some(n / 2));
                if timeout {
                    self.clock = self.clock.saturating_add(limit);
                    return Err(Failure::timed_out(format!(
                        "injected: the copy hung until its limit of {}; the partial copy was removed",
                        dur(limit)
                    )));
                }
                r
            }
            Action::Exec(e) if timeout && drive::AtLimit::of(s) == drive::AtLimit::Report => {
                // A command that must never be killed hangs: hokan reports it at its limit and
                // keeps waiting, until the operator decides to stop it.
                self.clock = self.clock.saturating_add(limit);
                Err(Failure::new(format!(
                    "injected: `{}` hung past its limit of {}; hokan reported it and kept \
                     waiting (it must never be killed), until the operator stopped it",
                    e.command,
                    dur(limit)
                )))
            }
            Action::Exec(e) if timeout => {
                // The nastiest hang: the command did its work, then never returned.
                let effects = self.behaviour(e).map_or(&[][..], |b| b.effects.as_slice());
                self.effects(
                    effects,
                    s.target.as_deref().unwrap_or(HOST),
                    e.cwd.as_deref(),
                );
                self.clock = self.clock.saturating_add(limit);
                self.killed.push(s.id.clone());
                Err(Failure::timed_out(format!(
                    "injected: `{}` did its work, then hung until its limit of {}",
                    e.command,
                    dur(limit)
                )))
            }
            _ if timeout => {
                self.clock = self.clock.saturating_add(limit);
                Err(Failure::timed_out(format!(
                    "injected: hung until its limit of {}",
                    dur(limit)
                )))
            }
            Action::Exec(e) => self.fail(format!("injected: `{}` exited with 1", e.command)),
            _ => self.fail("injected failure"),
        }
    }

    fn verify(&mut self, check: &VerifyCheck) -> Result<(), Failure> {
        let ctx = self.ctx;
        match check {
            VerifyCheck::CopyMatches { from, to } => {
                let (a, b) = (ctx.abs(from), ctx.abs(to));
                if self.world.node(&b).is_none() {
                    return self.fail(format!("{to} does not exist"));
                }
                let (want, have) = (self.world.contents_below(&a), self.world.contents_below(&b));
                let mut bad: Vec<String> = want
                    .iter()
                    .filter(|(r, c)| have.get(*r) != Some(c))
                    .map(|(r, _)| format!("{to}/{r}"))
                    .collect();
                bad.extend(
                    have.keys()
                        .filter(|r| !want.contains_key(*r))
                        .map(|r| format!("{to}/{r} (extra)")),
                );
                self.clock +=
                    self.world.tree_size(&b).saturating_mul(1000) / self.initial.copy_rate.max(1);
                if !bad.is_empty() {
                    return self.fail(format!("{} file(s) differ: {}", bad.len(), bad.join(", ")));
                }
                self.note = Some(format!("{} file(s) match", want.len()));
            }
            VerifyCheck::PairedFiles {
                dir,
                suffix,
                partner_suffix,
            } => {
                let d = ctx.abs(dir);
                if !self.world.is_dir(&d) {
                    return self.fail(format!("{dir} is not a directory"));
                }
                let names: HashSet<&str> = self
                    .world
                    .children(&d)
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect();
                let lone: Vec<&str> = names
                    .iter()
                    .filter(|n| {
                        n.ends_with(suffix.as_str())
                            && !names.contains(format!("{n}{partner_suffix}").as_str())
                    })
                    .copied()
                    .collect();
                if !lone.is_empty() {
                    let mut lone = lone;
                    lone.sort();
                    return self.fail(format!(
                        "without their {partner_suffix} partner: {}",
                        lone.join(", ")
                    ));
                }
            }
            VerifyCheck::EseLogSet {
                set_logs,
                store_logs,
            } => {
                let generations = |l: &Location| -> Vec<u32> {
                    self.world
                        .children(&ctx.abs(l))
                        .into_iter()
                        .filter(|(_, n)| matches!(n, Node::File(_)))
                        .filter_map(|(name, _)| crate::ese::logs::generation(name.as_bytes()))
                        .collect()
                };
                match crate::ese::logs::check_set(&generations(set_logs), &generations(store_logs))
                {
                    Ok(summary) => self.note = Some(summary),
                    Err(why) => return self.fail(why),
                }
            }
            VerifyCheck::EsePages { path } => match self.world.node(&ctx.abs(path)) {
                Some(Node::File(f)) if f.damaged => {
                    return self.fail(format!("{path} has pages with bad checksums"));
                }
                Some(Node::File(_)) => {}
                _ => return self.fail(format!("{path} is not a file")),
            },
        }
        Ok(())
    }
}

fn state_name(s: ServiceState) -> &'static str {
    match s {
        ServiceState::Running => "running",
        ServiceState::Stopped => "stopped",
    }
}
