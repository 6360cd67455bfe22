//! Checks a plan against what the site policy granted, before anything simulates or runs it.

use super::model::{Action, Condition, Item, Location, Plan, Step, VerifyCheck};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

/// What a job's policy grants a plan.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Root name to whether the plan may write below it.
    pub roots: BTreeMap<String, bool>,
    /// Logical command names the policy maps.
    pub commands: BTreeSet<String>,
    /// Logical service names the policy maps.
    pub services: BTreeSet<String>,
    /// Servers a step may target.
    pub servers: BTreeSet<String>,
    /// The roots on a server reached over ssh, by name, with that server; every other root
    /// is the host's.
    pub root_servers: BTreeMap<String, String>,
    /// The job's servers reached over ssh; the others run their commands on the host.
    pub ssh_servers: BTreeSet<String>,
}

/// Why a command cannot run in its working directory, if it cannot: `runs_on` is the server
/// reached over ssh it runs on (`None`: the host), `cwd_on` the one its working directory
/// `cwd` is on. A command runs in a root of its own machine. The plan's validation and the
/// executor both ask this.
pub fn cwd_elsewhere(
    program: &str,
    runs_on: Option<&str>,
    cwd: &dyn fmt::Display,
    cwd_on: Option<&str>,
) -> Option<String> {
    let machine = |m: Option<&str>| m.map_or("the host".to_string(), |s| format!("`{s}`"));
    (runs_on != cwd_on).then(|| {
        format!(
            "`{program}` runs on {} but its working directory {cwd} is on {}; a command runs \
             in a root of its own server",
            machine(runs_on),
            machine(cwd_on)
        )
    })
}

/// One rule a plan broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The step, group or invariant concerned (`None` for the plan as a whole).
    pub at: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "step `{at}`: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// A plan that must not be simulated or executed, with every reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the plan breaks {} rule(s):\n{}", .violations.len(), list(.violations))]
pub struct ValidationError {
    /// Every rule broken, in plan order.
    pub violations: Vec<Violation>,
}

fn list(v: &[Violation]) -> String {
    v.iter()
        .map(|v| format!("  - {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks every rule; returns all violations at once so a plugin author fixes them in one pass.
pub fn validate(plan: &Plan, grants: &Grants) -> Result<(), ValidationError> {
    let mut v = Validator {
        grants,
        out: Vec::new(),
        at: None,
        step_refs: Vec::new(),
    };
    let mut ids = HashSet::new();
    for item in &plan.steps {
        match item {
            Item::Step(s) => v.step(s, &mut ids),
            Item::Group(g) => {
                v.at = Some(g.group.clone());
                v.id(&g.group, &mut ids);
                if g.steps.is_empty() {
                    v.fail("a concurrent group must have at least one step");
                }
                for s in &g.steps {
                    v.step(s, &mut ids);
                }
            }
        }
    }
    for s in &plan.cleanup {
        v.step(s, &mut ids);
    }
    let mut inv_ids = HashSet::new();
    for inv in &plan.invariants {
        v.at = Some(format!("invariant {}", inv.id));
        v.id(&inv.id, &mut inv_ids);
        v.target(inv.target.as_deref());
        v.condition(&inv.condition);
        for c in &inv.when {
            v.condition(c);
        }
    }
    if let Some(w) = &plan.window {
        v.at = Some("window".into());
        let body: Vec<&str> = plan.body_steps().map(|s| s.id.as_str()).collect();
        let at = |id: &str| body.iter().position(|b| *b == id);
        match (at(&w.from_step), at(&w.until_step)) {
            (Some(a), Some(b)) if a <= b => {}
            (Some(_), Some(_)) => v.fail(format!(
                "the window's until-step `{}` comes before its from-step `{}`",
                w.until_step, w.from_step
            )),
            _ => v.fail(format!(
                "the window names the steps `{}` and `{}`; both must be body steps of this plan",
                w.from_step, w.until_step
            )),
        }
        if w.window.end_ms <= w.window.start_ms {
            v.fail("the window ends before it starts");
        }
    }
    for (at, step) in std::mem::take(&mut v.step_refs) {
        if !ids.contains(&step) {
            v.at = at;
            v.fail(format!(
                "a condition names the step `{step}`, which is not a step of this plan"
            ));
        }
    }
    if v.out.is_empty() {
        Ok(())
    } else {
        Err(ValidationError { violations: v.out })
    }
}

struct Validator<'a> {
    grants: &'a Grants,
    out: Vec<Violation>,
    at: Option<String>,
    /// Step ids named by conditions, with where: checked once every id is known.
    step_refs: Vec<(Option<String>, String)>,
}

impl Validator<'_> {
    fn fail(&mut self, message: impl Into<String>) {
        self.out.push(Violation {
            at: self.at.clone(),
            message: message.into(),
        });
    }

    fn id(&mut self, id: &str, seen: &mut HashSet<String>) {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            self.fail("ids must be non-empty and use only letters, digits, `-`, `_` and `.`");
        }
        if !seen.insert(id.to_string()) {
            self.fail(format!(
                "the id `{id}` is used more than once; ids must be unique"
            ));
        }
    }

    fn target(&mut self, target: Option<&str>) {
        if let Some(t) = target
            && !self.grants.servers.contains(t)
        {
            let known: Vec<_> = self.grants.servers.iter().map(String::as_str).collect();
            self.fail(format!(
                "targets server `{t}`, which is not one of this job's servers ({}); add it to \
                 the job's `servers` in the policy",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ));
        }
    }

    fn step(&mut self, s: &Step, ids: &mut HashSet<String>) {
        self.at = Some(s.id.clone());
        self.id(&s.id, ids);
        self.target(s.target.as_deref());
        if s.retries > 100 {
            self.fail(format!("{} retries is too many (at most 100)", s.retries));
        }
        for c in &s.when {
            self.condition(c);
        }
        if s.no_kill && !matches!(s.action, Action::Exec(_)) {
            self.fail(format!(
                "no-kill is for a step that runs a command, not for a {} step",
                s.action.kind()
            ));
        }
        self.action(&s.action);
        // A step that names no server runs where its working directory is.
        if let (Action::Exec(e), Some(target)) = (&s.action, s.target.as_deref())
            && let Some(cwd) = e.cwd.as_deref()
        {
            let runs_on = self.grants.ssh_servers.contains(target).then_some(target);
            let cwd_on = self.grants.root_servers.get(cwd).map(String::as_str);
            if let Some(why) = cwd_elsewhere(&e.command, runs_on, &format!("`{cwd}`"), cwd_on) {
                self.fail(format!(
                    "{why}: the plugin needs a root on `{target}` to run it in, which the \
                     policy grants with a root on that server (docs/remote.md)"
                ));
            }
        }
    }

    fn action(&mut self, a: &Action) {
        match a {
            Action::WriteFile { path, .. }
            | Action::Remove { path }
            | Action::EnsureDir { path } => {
                self.location(path, true);
                if path.path.is_empty() && !matches!(a, Action::EnsureDir { .. }) {
                    self.fail(format!(
                        "{} cannot act on the root `{}` itself",
                        a.kind(),
                        path.root
                    ));
                }
            }
            Action::Rename { from, to } => {
                self.location(from, true);
                self.location(to, true);
                if from.root != to.root {
                    self.fail(format!(
                        "rename from root `{}` to root `{}`: a rename stays within one root; \
                         use copy-tree to move data between roots",
                        from.root, to.root
                    ));
                }
                if from.path.is_empty() || to.path.is_empty() {
                    self.fail("rename cannot move a root itself");
                }
            }
            Action::CopyTree { from, to } => {
                self.location(from, false);
                self.location(to, true);
                if to.path.is_empty() {
                    self.fail("copy-tree needs a destination below its root, not the root itself");
                }
            }
            Action::Exec(e) => self.exec(&e.command, e.cwd.as_deref()),
            Action::Service { service, .. } => self.service(service),
            Action::WaitUntil { condition, .. } | Action::Assert { condition, .. } => {
                self.condition(condition)
            }
            Action::Verify { check } => match check {
                VerifyCheck::CopyMatches { from, to } => {
                    self.location(from, false);
                    self.location(to, false);
                }
                VerifyCheck::PairedFiles { dir, .. } => self.location(dir, false),
                VerifyCheck::EsePages { path } => self.location(path, false),
                VerifyCheck::EseLogSet {
                    set_logs,
                    store_logs,
                } => {
                    self.location(set_logs, false);
                    self.location(store_logs, false);
                }
            },
            Action::Manual { instructions, .. } => {
                if instructions.trim().is_empty() {
                    self.fail("a manual step must tell the operator what to do");
                }
            }
            Action::RemoveFiles {
                dir,
                patterns,
                except,
                ..
            } => {
                self.location(dir, true);
                if patterns.is_empty() {
                    self.fail("remove-files needs at least one pattern of the names to remove");
                }
                for p in patterns.iter().chain(except) {
                    if p.is_empty() || p.contains(['/', '\\', '\0']) || p == "." || p == ".." {
                        self.fail(format!(
                            "remove-files pattern `{}` is not a file name pattern: it must be \
                             non-empty, not `.` or `..`, and contain no `/`, `\\` or NUL",
                            p.escape_debug()
                        ));
                    }
                }
            }
        }
    }

    fn condition(&mut self, c: &Condition) {
        match c {
            Condition::Exists { path } | Condition::Absent { path } => self.location(path, false),
            Condition::FreeSpaceAtLeast { root, .. } => self.root(root, false),
            Condition::ServiceIs { service, .. } => self.service(service),
            Condition::CommandSucceeds(e) => self.exec(&e.command, e.cwd.as_deref()),
            Condition::StepStarted { step }
            | Condition::StepNotSucceeded { step }
            | Condition::StepSucceeded { step }
            | Condition::StepNotStarted { step } => {
                self.step_refs.push((self.at.clone(), step.clone()));
            }
        }
    }

    fn exec(&mut self, command: &str, cwd: Option<&str>) {
        if !self.grants.commands.contains(command) {
            self.fail(format!(
                "runs the command `{command}`, which the policy does not map; add it to the \
                 job's [commands] table with the executable to run"
            ));
        }
        if let Some(root) = cwd {
            self.root(root, false);
        }
    }

    fn service(&mut self, service: &str) {
        if !self.grants.services.contains(service) {
            self.fail(format!(
                "controls the service `{service}`, which the policy does not map; add it to the \
                 job's [services] table"
            ));
        }
    }

    fn root(&mut self, root: &str, write: bool) {
        match self.grants.roots.get(root) {
            None => self.fail(format!(
                "uses the root `{root}`, which this job does not grant; add it to the job's \
                 [roots] table"
            )),
            Some(false) if write => self.fail(format!(
                "writes below the root `{root}`, which is granted read-only for this operation"
            )),
            Some(_) => {}
        }
    }

    fn location(&mut self, loc: &Location, write: bool) {
        self.root(&loc.root, write);
        if let Err(why) = check_relative(&loc.path) {
            self.fail(format!(
                "the path `{}` in root `{}` {why}",
                loc.path, loc.root
            ));
        }
    }
}

/// Checks that a plan path is relative and stays inside its root. Used for facts requests too.
pub fn check_relative(path: &str) -> Result<(), &'static str> {
    if path.starts_with('/') || path.starts_with('\\') {
        return Err("is absolute; plan paths are relative to their root");
    }
    if path.len() >= 2 && path.as_bytes()[1] == b':' {
        return Err("has a drive letter; plan paths are relative to their root");
    }
    if path.contains('\\') {
        return Err("contains `\\`; plan paths use `/` as separator");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    if path.split('/').any(|c| c == "..") {
        return Err("contains `..`; plan paths may not leave their root");
    }
    if !path.is_empty() && path.split('/').any(|c| c.is_empty() || c == ".") {
        return Err("has an empty or `.` component; write each path in its plain form");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::model::{Exec, Group};
    use crate::plan::testing::step;

    fn grants() -> Grants {
        Grants {
            roots: [("data".to_string(), true), ("set".to_string(), false)].into(),
            commands: ["mwsave".to_string()].into(),
            services: BTreeSet::new(),
            servers: ["mw1".to_string()].into(),
            ..Grants::default()
        }
    }

    #[test]
    fn a_command_on_a_server_over_ssh_runs_in_a_root_of_that_server() {
        let grants = Grants {
            roots: [
                ("set".to_string(), true),
                ("dump@mw1".to_string(), true),
                ("local".to_string(), true),
            ]
            .into(),
            commands: ["prog".to_string()].into(),
            servers: ["mw1".to_string(), "here".to_string()].into(),
            root_servers: [("dump@mw1".to_string(), "mw1".to_string())].into(),
            ssh_servers: ["mw1".to_string()].into(),
            ..Grants::default()
        };
        let run = |target: Option<&str>, cwd: &str| {
            let mut s = crate::plan::testing::exec("prog");
            s.target = target.map(str::to_string);
            if let Action::Exec(e) = &mut s.action {
                e.cwd = Some(cwd.to_string());
            }
            match validate(&crate::plan::testing::plan(vec![s], vec![]), &grants) {
                Ok(()) => vec![],
                Err(e) => e.violations.iter().map(|v| v.to_string()).collect(),
            }
        };
        // On the server, in the set on the host: refused before anything runs.
        let refused = run(Some("mw1"), "set");
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0]
                .contains("`prog` runs on `mw1` but its working directory `set` is on the host"),
            "{refused:?}"
        );
        // On the host, in a root on the server: refused the other way round.
        let refused = run(Some("here"), "dump@mw1");
        assert!(
            refused[0]
                .contains("runs on the host but its working directory `dump@mw1` is on `mw1`"),
            "{refused:?}"
        );
        // Each in a root of its own machine, or naming no server (it runs where its working
        // directory is): fine.
        assert_eq!(run(Some("mw1"), "dump@mw1"), Vec::<String>::new());
        assert_eq!(run(Some("here"), "set"), Vec::<String>::new());
        assert_eq!(run(None, "dump@mw1"), Vec::<String>::new());
        assert_eq!(run(None, "local"), Vec::<String>::new());
    }

    fn remove(root: &str, path: &str) -> Action {
        Action::Remove {
            path: Location::new(root, path),
        }
    }

    fn messages(plan: &Plan) -> Vec<String> {
        match validate(plan, &grants()) {
            Ok(()) => vec![],
            Err(e) => e.violations.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn a_clean_plan_passes() {
        let plan = Plan {
            steps: vec![Item::Step(step("a", remove("data", "mw/data/maint")))],
            ..Plan::default()
        };
        assert_eq!(messages(&plan), Vec::<String>::new());
    }

    #[test]
    fn every_violation_names_its_step() {
        let mut exec = step(
            "run",
            Action::Exec(Exec {
                command: "rm".into(),
                args: vec![],
                cwd: None,
                success_codes: vec![],
            }),
        );
        exec.target = Some("elsewhere".into());
        let plan = Plan {
            steps: vec![
                Item::Step(step("abs", remove("data", "/etc/passwd"))),
                Item::Step(step("up", remove("data", "mw/../../etc"))),
                Item::Step(step("up", remove("nope", "x"))),
                Item::Step(step("ro", remove("set", "data"))),
                Item::Step(exec),
                Item::Group(Group {
                    group: "g".into(),
                    title: "empty".into(),
                    steps: vec![],
                }),
            ],
            ..Plan::default()
        };
        let m = messages(&plan);
        assert_eq!(m.len(), 8, "{m:#?}");
        assert!(
            m[0].starts_with("step `abs`: the path `/etc/passwd`") && m[0].contains("absolute")
        );
        assert!(m[1].starts_with("step `up`:") && m[1].contains("`..`"));
        assert!(m[2].contains("`up` is used more than once"));
        assert!(m[3].contains("root `nope`, which this job does not grant"));
        assert!(m[4].starts_with("step `ro`:") && m[4].contains("read-only"));
        assert!(m[5].starts_with("step `run`:") && m[5].contains("server `elsewhere`"));
        assert!(m[6].contains("command `rm`, which the policy does not map"));
        assert!(m[7].starts_with("step `g`:") && m[7].contains("at least one step"));
    }

    #[test]
    fn step_conditions_must_name_a_step_of_the_plan() {
        let mut undo = step("undo", remove("data", "maint"));
        undo.when = vec![
            Condition::StepStarted { step: "do".into() },
            Condition::StepNotSucceeded {
                step: "redo".into(),
            },
        ];
        let plan = Plan {
            steps: vec![Item::Step(step("do", remove("data", "x")))],
            cleanup: vec![undo],
            ..Plan::default()
        };
        assert_eq!(
            messages(&plan),
            ["step `undo`: a condition names the step `redo`, which is not a step of this plan"]
        );
    }

    #[test]
    fn no_kill_is_for_commands_and_remove_files_for_plain_names() {
        let remove_files = |patterns: &[&str]| Action::RemoveFiles {
            dir: Location::new("data", "journal"),
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            except: vec!["../x".into()],
            ignore_case: false,
        };
        let mut never = step("never", remove("data", "x"));
        never.no_kill = true;
        let mut mwsave = crate::plan::testing::exec("mwsave");
        mwsave.no_kill = true;
        let mut inv_when = crate::plan::Invariant {
            id: "left".into(),
            description: "left".into(),
            target: None,
            condition: Condition::Absent {
                path: Location::new("data", "x"),
            },
            when: vec![Condition::StepSucceeded {
                step: "nowhere".into(),
            }],
        };
        inv_when.when.push(Condition::StepNotStarted {
            step: "mwsave".into(),
        });
        let plan = Plan {
            steps: vec![
                Item::Step(never),
                Item::Step(mwsave),
                Item::Step(step("none", remove_files(&[]))),
                Item::Step(step("bad", remove_files(&["a/b", "*.jnl"]))),
                Item::Step(step(
                    "ro",
                    Action::RemoveFiles {
                        dir: Location::new("set", "data"),
                        patterns: vec!["*".into()],
                        except: vec![],
                        ignore_case: true,
                    },
                )),
            ],
            invariants: vec![inv_when],
            ..Plan::default()
        };
        let m = messages(&plan);
        assert_eq!(m.len(), 7, "{m:#?}");
        assert!(m[0].starts_with("step `never`: no-kill is for a step that runs a command"));
        assert!(m[1].starts_with("step `none`:") && m[1].contains("at least one pattern"));
        assert!(
            m[2].contains("pattern `../x` is not a file name pattern"),
            "{m:#?}"
        );
        assert!(m[3].starts_with("step `bad`:") && m[3].contains("pattern `a/b`"));
        assert!(m[4].contains("pattern `../x`"));
        assert!(m[5].starts_with("step `ro`:") && m[5].contains("read-only"));
        assert!(
            m[6].contains("invariant left") && m[6].contains("the step `nowhere`"),
            "an invariant's `when` is checked too: {m:#?}"
        );
    }

    #[test]
    fn relative_paths() {
        assert!(check_relative("").is_ok());
        assert!(check_relative("mw/data").is_ok());
        for bad in [
            "/x", "\\x", "C:x", "a/../b", "..", "a//b", "./a", "a\\b", "a/\0",
        ] {
            assert!(check_relative(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn rename_stays_in_its_root() {
        let plan = Plan {
            steps: vec![Item::Step(step(
                "mv",
                Action::Rename {
                    from: Location::new("data", "a"),
                    to: Location::new("set", "a"),
                },
            ))],
            ..Plan::default()
        };
        let m = messages(&plan);
        assert!(
            m.iter().any(|m| m.contains("stays within one root")),
            "{m:#?}"
        );
    }
}
