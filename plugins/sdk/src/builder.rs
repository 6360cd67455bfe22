//! A plan builder that keeps the manual's order and the host's rules in view.

use crate::bindings::hokan::policy::plan_types as pt;
use crate::{Action, Condition, OnError, Path, Plan, PlanItem, ServiceState, Step, StepGroup};
use std::time::Duration;

impl Action {
    /// Writes a small file, replacing it atomically.
    pub fn write_file(path: Path, contents: impl Into<Vec<u8>>) -> Action {
        Action::WriteFile(pt::WriteFile {
            path,
            contents: contents.into(),
        })
    }
    /// Removes a file or a whole tree.
    pub fn remove(path: Path) -> Action {
        Action::Remove(path)
    }
    /// Renames within one root.
    pub fn rename(from: Path, to: Path) -> Action {
        Action::Rename(pt::Rename { from, to })
    }
    /// Creates a directory and its parents.
    pub fn ensure_dir(path: Path) -> Action {
        Action::EnsureDir(path)
    }
    /// Copies a tree to a destination that must not exist yet.
    pub fn copy_tree(from: Path, to: Path) -> Action {
        Action::CopyTree(pt::CopyTree { from, to })
    }
    /// Runs a mapped command; success is exit code 0.
    pub fn exec<S: Into<String>>(command: &str, args: impl IntoIterator<Item = S>) -> Action {
        Action::Exec(exec(command, args))
    }
    /// Runs a mapped command with the given root as its working directory.
    pub fn exec_in<S: Into<String>>(
        cwd: &str,
        command: &str,
        args: impl IntoIterator<Item = S>,
    ) -> Action {
        let mut e = exec(command, args);
        e.cwd = Some(cwd.into());
        Action::Exec(e)
    }
    /// Starts a mapped service.
    pub fn start(service: &str) -> Action {
        Action::Service(pt::Service {
            service: service.into(),
            state: ServiceState::Running,
        })
    }
    /// Stops a mapped service.
    pub fn stop(service: &str) -> Action {
        Action::Service(pt::Service {
            service: service.into(),
            state: ServiceState::Stopped,
        })
    }
    /// Polls a condition every `interval` until it holds (the step's timeout bounds the wait).
    pub fn wait_until(condition: Condition, interval: Duration) -> Action {
        Action::WaitUntil(pt::WaitUntil {
            condition,
            interval_ms: interval.as_millis() as u64,
        })
    }
    /// Verifies that a copy equals its source, file by file.
    pub fn verify_copy(from: Path, to: Path) -> Action {
        Action::Verify(pt::Verify::CopyMatches(pt::CopyTree { from, to }))
    }
    /// Verifies that every file in `dir` ending in `suffix` has its partner (name + `partner_suffix`).
    pub fn verify_pairs(dir: Path, suffix: &str, partner_suffix: &str) -> Action {
        Action::Verify(pt::Verify::PairedFiles(pt::PairedFiles {
            dir,
            suffix: suffix.into(),
            partner_suffix: partner_suffix.into(),
        }))
    }
    /// Verifies every page checksum of an ESE database.
    pub fn verify_ese_pages(file: Path) -> Action {
        Action::Verify(pt::Verify::EsePages(file))
    }
    /// Checks the transaction logs a backup program put in `set_logs` against the store's
    /// `store_logs` as they are when the step runs: they follow on with none missing, and hold
    /// every log the store still has up to their newest (Exchange, after an online backup).
    pub fn verify_ese_log_set(set_logs: Path, store_logs: Path) -> Action {
        Action::Verify(pt::Verify::EseLogSet(pt::EseLogSet {
            set_logs,
            store_logs,
        }))
    }
    /// Requires a condition to hold now; `message` tells the operator what to do when it does not.
    pub fn assert(condition: Condition, message: &str) -> Action {
        Action::Assert(pt::Assert {
            condition,
            message: message.into(),
        })
    }
    /// Removes the regular files directly in `dir` whose names match one of `patterns` and
    /// none of `except` (`*` is any run of characters), chosen when the step runs, so a file
    /// written after planning goes too; `ignore_case` matches ignoring ASCII case. The host
    /// reports what it removed, or "none found".
    pub fn remove_files(
        dir: Path,
        patterns: impl IntoIterator<Item = String>,
        except: impl IntoIterator<Item = String>,
        ignore_case: bool,
    ) -> Action {
        Action::RemoveFiles(pt::RemoveFiles {
            dir,
            patterns: patterns.into_iter().collect(),
            except: except.into_iter().collect(),
            ignore_case,
        })
    }
    /// A step a person performs; real runs wait for an acknowledgement.
    pub fn manual(instructions: &str, reference: Option<&str>) -> Action {
        Action::Manual(pt::Manual {
            instructions: instructions.into(),
            reference: reference.map(Into::into),
        })
    }
}

fn exec<S: Into<String>>(command: &str, args: impl IntoIterator<Item = S>) -> pt::Exec {
    pt::Exec {
        command: command.into(),
        args: args.into_iter().map(Into::into).collect(),
        cwd: None,
        success_codes: Vec::new(),
    }
}

impl Condition {
    /// Something exists at `path`.
    pub fn exists(path: Path) -> Condition {
        Condition::Exists(path)
    }
    /// Nothing exists at `path`.
    pub fn absent(path: Path) -> Condition {
        Condition::Absent(path)
    }
    /// The volume of `root` has at least `bytes` free.
    pub fn free_space_at_least(root: &str, bytes: u64) -> Condition {
        Condition::FreeSpaceAtLeast(pt::FreeSpace {
            root: root.into(),
            bytes,
        })
    }
    /// A mapped service is running.
    pub fn running(service: &str) -> Condition {
        Condition::ServiceIs(pt::Service {
            service: service.into(),
            state: ServiceState::Running,
        })
    }
    /// A mapped service is stopped.
    pub fn stopped(service: &str) -> Condition {
        Condition::ServiceIs(pt::Service {
            service: service.into(),
            state: ServiceState::Stopped,
        })
    }
    /// A mapped command succeeds.
    pub fn command_succeeds<S: Into<String>>(
        command: &str,
        args: impl IntoIterator<Item = S>,
    ) -> Condition {
        Condition::CommandSucceeds(exec(command, args))
    }
    /// The step `id` of this run has started, whatever came of it: for cleanup that undoes
    /// what the body began.
    pub fn step_started(id: &str) -> Condition {
        Condition::StepStarted(id.into())
    }
    /// The step `id` of this run has not finished successfully (not reached, failed, or
    /// interrupted): for cleanup that must not repeat what the body already did.
    pub fn step_not_succeeded(id: &str) -> Condition {
        Condition::StepNotSucceeded(id.into())
    }
    /// The step `id` of this run finished successfully: to go on only after a step allowed to
    /// fail did not ("start the store only if the repair finished").
    pub fn step_succeeded(id: &str) -> Condition {
        Condition::StepSucceeded(id.into())
    }
    /// The step `id` of this run has not started (not reached, or skipped): for cleanup that
    /// may undo only until a step began ("start the store again unless eseutil /p began").
    pub fn step_not_started(id: &str) -> Condition {
        Condition::StepNotStarted(id.into())
    }
}

fn new_step(id: &str, title: &str, action: Action) -> Step {
    Step {
        id: id.into(),
        title: title.into(),
        target: None,
        action,
        timeout_ms: None,
        retries: 0,
        on_error: OnError::Abort,
        when: Vec::new(),
        commits_set: false,
        no_kill: false,
    }
}

/// Adjusts the step just added: `plan.step(..).timeout(..).on("server1")`.
pub struct StepBuilder<'a>(&'a mut Step);

impl StepBuilder<'_> {
    /// Runs the step on a server of the topology instead of the host's own.
    pub fn on(self, server: &str) -> Self {
        self.0.target = Some(server.into());
        self
    }
    /// Fails the step when it has not finished after `limit`.
    pub fn timeout(self, limit: Duration) -> Self {
        self.0.timeout_ms = Some(limit.as_millis() as u64);
        self
    }
    /// Retries a failed step up to `n` more times.
    pub fn retries(self, n: u32) -> Self {
        self.0.retries = n;
        self
    }
    /// Runs the step only when `condition` holds at that moment; called again, only when all
    /// the conditions hold.
    pub fn when(self, condition: Condition) -> Self {
        self.0.when.push(condition);
        self
    }
    /// On failure, records it and goes on with the next step instead of aborting.
    pub fn continue_on_error(self) -> Self {
        self.0.on_error = OnError::Continue;
        self
    }
    /// Marks a point of no return: once this step has succeeded, the product holds no longer
    /// what the new set holds (logs deleted, a journal cleared), so the host never discards the
    /// set. A later failure still completes it, with its manifest, and the run needs attention;
    /// a crash after it is recovered by finishing the set, not removing it.
    pub fn commits_set(self) -> Self {
        self.0.commits_set = true;
        self
    }
    /// The step's command must never be killed (a program the manual says must not be
    /// interrupted): at its time limit the host reports that it still runs and keeps waiting,
    /// reporting again each time the limit passes once more; only a person stops it. For a
    /// step that runs a command.
    pub fn no_kill(self) -> Self {
        self.0.no_kill = true;
        self
    }
}

/// Adjusts the invariant just added: `plan.invariant(..).when(..)`.
pub struct InvariantBuilder<'a>(&'a mut pt::Invariant);

impl InvariantBuilder<'_> {
    /// The invariant applies only when `condition` holds at the end; called again, only when
    /// all the conditions hold. With `step-*` conditions and a service's state, it says what a
    /// run leaves changed on purpose ("the store is stopped when the repair began and did not
    /// finish"): the host then does not hold that service against the run, and reports that
    /// the run needs attention.
    pub fn when(self, condition: Condition) -> Self {
        self.0.when.push(condition);
        self
    }
}

/// The steps of a group that run at the same time.
pub struct GroupBuilder {
    steps: Vec<Step>,
}

impl GroupBuilder {
    /// Adds a step to the group.
    pub fn step(&mut self, id: &str, title: &str, action: Action) -> StepBuilder<'_> {
        self.steps.push(new_step(id, title, action));
        StepBuilder(self.steps.last_mut().expect("just pushed"))
    }
}

/// Builds a [`Plan`] in the manual's order.
#[derive(Default)]
pub struct PlanBuilder {
    steps: Vec<PlanItem>,
    cleanup: Vec<Step>,
    invariants: Vec<pt::Invariant>,
    warnings: Vec<String>,
    window: Option<pt::PlanWindow>,
}

impl PlanBuilder {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a step to the body.
    pub fn step(&mut self, id: &str, title: &str, action: Action) -> StepBuilder<'_> {
        self.steps.push(PlanItem::Step(new_step(id, title, action)));
        match self.steps.last_mut() {
            Some(PlanItem::Step(s)) => StepBuilder(s),
            _ => unreachable!("just pushed a step"),
        }
    }

    /// Appends a group of steps that run at the same time.
    pub fn group(&mut self, id: &str, title: &str, fill: impl FnOnce(&mut GroupBuilder)) {
        let mut g = GroupBuilder { steps: Vec::new() };
        fill(&mut g);
        self.steps.push(PlanItem::Group(StepGroup {
            id: id.into(),
            title: title.into(),
            steps: g.steps,
        }));
    }

    /// Appends steps that may run at the same time: a group when there are several, a plain
    /// step when there is one, nothing when there are none. For "on every server, in any
    /// order".
    pub fn together(&mut self, id: &str, title: &str, fill: impl FnOnce(&mut GroupBuilder)) {
        let mut g = GroupBuilder { steps: Vec::new() };
        fill(&mut g);
        match g.steps.len() {
            0 => {}
            1 => self
                .steps
                .push(PlanItem::Step(g.steps.pop().expect("one step"))),
            _ => self.steps.push(PlanItem::Group(StepGroup {
                id: id.into(),
                title: title.into(),
                steps: g.steps,
            })),
        }
    }

    /// Appends a step to the cleanup, which always runs after the body, in order.
    pub fn cleanup(&mut self, id: &str, title: &str, action: Action) -> StepBuilder<'_> {
        self.cleanup.push(new_step(id, title, action));
        StepBuilder(self.cleanup.last_mut().expect("just pushed"))
    }

    /// Appends a cleanup step that undoes the body step `began` unless `undone_by` (the body's
    /// own undo) succeeded: it runs only when `began` started and `undone_by` did not succeed,
    /// in this run or, after a crash, in the run `hokan recover` finishes.
    pub fn cleanup_undo(
        &mut self,
        id: &str,
        title: &str,
        action: Action,
        began: &str,
        undone_by: &str,
    ) -> StepBuilder<'_> {
        self.cleanup(id, title, action)
            .when(Condition::step_started(began))
            .when(Condition::step_not_succeeded(undone_by))
    }

    /// Declares a condition the end state must satisfy, whatever happened.
    pub fn invariant(
        &mut self,
        id: &str,
        description: &str,
        condition: Condition,
    ) -> InvariantBuilder<'_> {
        self.invariants.push(pt::Invariant {
            id: id.into(),
            description: description.into(),
            target: None,
            condition,
            when: Vec::new(),
        });
        InvariantBuilder(self.invariants.last_mut().expect("just pushed"))
    }

    /// Declares a condition the end state of `server` must satisfy, whatever happened (for a
    /// service's state, which is asked on its server).
    pub fn invariant_on(
        &mut self,
        server: &str,
        id: &str,
        description: &str,
        condition: Condition,
    ) -> InvariantBuilder<'_> {
        self.invariants.push(pt::Invariant {
            id: id.into(),
            description: description.into(),
            target: Some(server.into()),
            condition,
            when: Vec::new(),
        });
        InvariantBuilder(self.invariants.last_mut().expect("just pushed"))
    }

    /// Tells the operator something before they approve the plan.
    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// The window the plan's data steps must run in, `from_step` to `until_step` (body steps,
    /// both included): the maintenance window the plan sets, while users are kept out. The
    /// host waits for it to begin before the first of them, and starts none after it ended.
    pub fn window(&mut self, window: crate::TimeWindow, from_step: &str, until_step: &str) {
        self.window = Some(pt::PlanWindow {
            window,
            from_step: from_step.into(),
            until_step: until_step.into(),
        });
    }

    /// The finished plan.
    pub fn build(self) -> Plan {
        Plan {
            steps: self.steps,
            cleanup: self.cleanup,
            invariants: self.invariants,
            warnings: self.warnings,
            window: self.window,
        }
    }
}
