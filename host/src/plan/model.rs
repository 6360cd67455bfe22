//! The plan model in the host's own terms.
//!
//! These types mirror the `plan-types` interface of the contract; `runtime` converts the WIT
//! values into them and nothing else in the host sees WIT types. Their serde form is the
//! documented plan document (`docs/plan-format.md`): change it only with a new `format_version`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A location inside a granted root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    /// The root's name, as granted by the site policy.
    pub root: String,
    /// Relative path inside the root, `/`-separated; empty for the root itself.
    pub path: String,
}

impl Location {
    /// A location from a root name and a relative path.
    pub fn new(root: impl Into<String>, path: impl Into<String>) -> Self {
        Location {
            root: root.into(),
            path: path.into(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:/{}", self.root, self.path)
    }
}

/// State of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceState {
    /// The service is running.
    Running,
    /// The service is stopped.
    Stopped,
}

/// A command invocation by logical name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    /// Logical command name; the policy maps it to an executable.
    pub command: String,
    /// Arguments after the mapped executable's own.
    pub args: Vec<String>,
    /// Root to run in, if any.
    pub cwd: Option<String>,
    /// Exit codes that count as success; empty means only 0.
    pub success_codes: Vec<i32>,
}

impl Exec {
    /// Whether the command's exit code counts as success: one of `success_codes`, or 0 when it
    /// names none.
    pub fn succeeded(&self, code: i32) -> bool {
        if self.success_codes.is_empty() {
            code == 0
        } else {
            self.success_codes.contains(&code)
        }
    }
}

/// A condition on the site, evaluated by the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Condition {
    /// Something exists at the path.
    Exists {
        /// Where.
        path: Location,
    },
    /// Nothing exists at the path.
    Absent {
        /// Where.
        path: Location,
    },
    /// The root's volume has at least `bytes` free.
    FreeSpaceAtLeast {
        /// Which root's volume.
        root: String,
        /// How many bytes must be free.
        bytes: u64,
    },
    /// A mapped service is in a state.
    ServiceIs {
        /// Logical service name.
        service: String,
        /// The required state.
        state: ServiceState,
    },
    /// A mapped command succeeds.
    CommandSucceeds(Exec),
    /// A step of this run has started, whatever came of it.
    StepStarted {
        /// The step's id.
        step: String,
    },
    /// A step of this run has not finished successfully (not reached, failed, or interrupted).
    StepNotSucceeded {
        /// The step's id.
        step: String,
    },
    /// A step of this run finished successfully. Since contract 0.8.0.
    StepSucceeded {
        /// The step's id.
        step: String,
    },
    /// A step of this run has not started (not reached, or skipped). Since contract 0.8.0.
    StepNotStarted {
        /// The step's id.
        step: String,
    },
}

impl Condition {
    /// The root a condition reads, if it reads one: it is read on the machine that root is on.
    pub fn root(&self) -> Option<&str> {
        match self {
            Condition::Exists { path } | Condition::Absent { path } => Some(&path.root),
            Condition::FreeSpaceAtLeast { root, .. } => Some(root),
            Condition::CommandSucceeds(e) => e.cwd.as_deref(),
            _ => None,
        }
    }

    /// The step a `step-*` condition reads, `None` for a condition on the site.
    pub fn step(&self) -> Option<&str> {
        match self {
            Condition::StepStarted { step }
            | Condition::StepNotSucceeded { step }
            | Condition::StepSucceeded { step }
            | Condition::StepNotStarted { step } => Some(step),
            _ => None,
        }
    }
}

/// A data check the host performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum VerifyCheck {
    /// Every file below `to` equals its counterpart below `from`.
    CopyMatches {
        /// The original.
        from: Location,
        /// The copy.
        to: Location,
    },
    /// Every file in `dir` ending in `suffix` has a partner named with `partner_suffix` appended.
    PairedFiles {
        /// The directory to check (not recursive).
        dir: Location,
        /// Suffix of the files that need a partner.
        suffix: String,
        /// What the partner's name adds.
        partner_suffix: String,
    },
    /// Every page of an ESE database has a good checksum.
    EsePages {
        /// The database file.
        path: Location,
    },
    /// The full logs in `set_logs` follow on with none missing, and include every one
    /// `store_logs` holds up to the set's newest ([`crate::ese::logs::check_set`]). Since
    /// contract 0.8.0.
    EseLogSet {
        /// The set's logs directory.
        set_logs: Location,
        /// The store's logs directory, as it is when the step runs.
        store_logs: Location,
    },
}

/// The closed set of things a plan can ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// Writes a small file atomically.
    WriteFile {
        /// Where.
        path: Location,
        /// The bytes to write.
        #[serde(with = "contents")]
        contents: Vec<u8>,
    },
    /// Removes a file or a tree; nothing there is success.
    Remove {
        /// What.
        path: Location,
    },
    /// Renames within one root.
    Rename {
        /// The existing name.
        from: Location,
        /// The new name; must not exist.
        to: Location,
    },
    /// Creates a directory and its parents.
    EnsureDir {
        /// Where.
        path: Location,
    },
    /// Copies a tree to a new destination and records what it wrote.
    CopyTree {
        /// The source.
        from: Location,
        /// The destination; must not exist.
        to: Location,
    },
    /// Runs a mapped command.
    Exec(Exec),
    /// Brings a mapped service to a state.
    Service {
        /// Logical service name.
        service: String,
        /// The wanted state.
        state: ServiceState,
    },
    /// Polls a condition until it holds or the step times out.
    WaitUntil {
        /// The condition.
        condition: Condition,
        /// Time between polls.
        interval_ms: u64,
    },
    /// Checks data.
    Verify {
        /// The check.
        check: VerifyCheck,
    },
    /// Requires a condition to hold now.
    Assert {
        /// The condition.
        condition: Condition,
        /// What to tell the operator when it does not.
        message: String,
    },
    /// A person's step; an approval gate in real runs.
    Manual {
        /// What to do.
        instructions: String,
        /// Where the procedure comes from.
        reference: Option<String>,
    },
    /// Removes the regular files directly in `dir` whose names match `patterns` and not
    /// `except`, chosen when the step runs. Since contract 0.8.0.
    RemoveFiles {
        /// The directory.
        dir: Location,
        /// Names to remove; `*` stands for any run of characters.
        patterns: Vec<String>,
        /// Names to keep though a pattern matches them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        except: Vec<String>,
        /// Whether names match ignoring ASCII case.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ignore_case: bool,
    },
}

impl Action {
    /// Every root the action reads or changes (a command's working directory included), each
    /// once: an action on a root that is on a server needs that server.
    pub fn roots(&self) -> Vec<&str> {
        let mut out: Vec<&str> = match self {
            Action::WriteFile { path, .. }
            | Action::Remove { path }
            | Action::EnsureDir { path }
            | Action::RemoveFiles { dir: path, .. } => vec![&path.root],
            Action::Rename { from, to }
            | Action::CopyTree { from, to }
            | Action::Verify {
                check: VerifyCheck::CopyMatches { from, to },
            }
            | Action::Verify {
                check:
                    VerifyCheck::EseLogSet {
                        set_logs: from,
                        store_logs: to,
                    },
            } => vec![&from.root, &to.root],
            Action::Verify {
                check: VerifyCheck::PairedFiles { dir: path, .. } | VerifyCheck::EsePages { path },
            } => vec![&path.root],
            Action::Exec(e) => e.cwd.as_deref().into_iter().collect(),
            Action::WaitUntil { condition, .. } | Action::Assert { condition, .. } => {
                condition.root().into_iter().collect()
            }
            Action::Service { .. } | Action::Manual { .. } => vec![],
        };
        out.dedup();
        out
    }

    /// The action's kind as it appears in the plan document.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::WriteFile { .. } => "write-file",
            Action::Remove { .. } => "remove",
            Action::Rename { .. } => "rename",
            Action::EnsureDir { .. } => "ensure-dir",
            Action::CopyTree { .. } => "copy-tree",
            Action::Exec(_) => "exec",
            Action::Service { .. } => "service",
            Action::WaitUntil { .. } => "wait-until",
            Action::Verify { .. } => "verify",
            Action::Assert { .. } => "assert",
            Action::Manual { .. } => "manual",
            Action::RemoveFiles { .. } => "remove-files",
        }
    }
}

/// What happens when a step fails after its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Stop; run the cleanup.
    Abort,
    /// Record the failure and go on.
    Continue,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Unique within the plan.
    pub id: String,
    /// One line for the operator.
    pub title: String,
    /// The server it runs on; `None` is the host's own.
    pub target: Option<String>,
    /// What to do when it fails.
    pub on_error: OnError,
    /// Time limit.
    pub timeout_ms: Option<u64>,
    /// Extra attempts after a failure.
    pub retries: u32,
    /// Runs only when all of these hold at that moment; empty means always.
    pub when: Vec<Condition>,
    /// A point of no return: once it has succeeded, the backup set is never discarded (what
    /// it holds exists nowhere else any more). Plans of contracts before 0.7.0 have none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub commits_set: bool,
    /// Its command must never be killed: at the time limit the host reports it and keeps
    /// waiting (mailwise's mwsave). Plans of contracts before 0.8.0 have none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_kill: bool,
    /// What the step does.
    pub action: Action,
}

/// Steps that run at the same time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Unique within the plan.
    pub group: String,
    /// One line for the operator.
    pub title: String,
    /// The steps, started together.
    pub steps: Vec<Step>,
}

/// One element of a plan's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(
    clippy::large_enum_variant,
    reason = "plans hold at most a few thousand items; boxing would only add noise to every plan built"
)]
pub enum Item {
    /// A single step.
    Step(Step),
    /// A concurrent group.
    Group(Group),
}

/// A condition the end state must satisfy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invariant {
    /// Unique within the plan's invariants.
    pub id: String,
    /// What it means, for people.
    pub description: String,
    /// Where it is evaluated; `None` is the host's own server.
    pub target: Option<String>,
    /// The condition.
    pub condition: Condition,
    /// The invariant applies only when all of these hold at the end; empty means always.
    /// Plans of contracts before 0.8.0 have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// A plan as a plugin returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Plan {
    /// The body, in order.
    pub steps: Vec<Item>,
    /// Always runs after the body, in order.
    pub cleanup: Vec<Step>,
    /// End-state conditions.
    pub invariants: Vec<Invariant>,
    /// What the operator must know before approving.
    pub warnings: Vec<String>,
    /// The period its data steps must run in (the product's maintenance window as the plan
    /// sets it). Plans of contracts before 0.8.0 have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<PlanWindow>,
}

/// A period between two instants, milliseconds since the Unix epoch: `start_ms` is in it,
/// `end_ms` is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeWindow {
    /// The first instant in it.
    pub start_ms: i64,
    /// The first instant after it.
    pub end_ms: i64,
}

/// The period a plan's data steps must run in: for the body steps from `from_step` to
/// `until_step` (both included), none starts before `window.start_ms` (the run waits) nor at
/// or after `window.end_ms` (the run stops there, the cleanup runs). The maintenance window the
/// plan sets, during which users are kept out (mailwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanWindow {
    /// The period.
    pub window: TimeWindow,
    /// The first body step it binds.
    pub from_step: String,
    /// The last body step it binds.
    pub until_step: String,
}

impl PlanWindow {
    /// The ids of the body steps it binds, in order (group members in place).
    pub fn bound<'p>(&self, plan: &'p Plan) -> Vec<&'p str> {
        let ids: Vec<&str> = plan.body_steps().map(|s| s.id.as_str()).collect();
        let Some(from) = ids.iter().position(|id| *id == self.from_step) else {
            return Vec::new();
        };
        let until = ids
            .iter()
            .position(|id| *id == self.until_step)
            .unwrap_or(ids.len() - 1);
        ids.get(from..=until.max(from))
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }
}

impl Plan {
    /// The body's steps, group members in place.
    pub fn body_steps(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().flat_map(|item| match item {
            Item::Step(s) => std::slice::from_ref(s),
            Item::Group(g) => g.steps.as_slice(),
        })
    }

    /// Every step of the plan: body (group members in place), then cleanup.
    pub fn all_steps(&self) -> impl Iterator<Item = &Step> {
        self.body_steps().chain(self.cleanup.iter())
    }
}

/// `write-file` contents: text when they are UTF-8, else hex, so plan documents stay readable.
mod contents {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Repr {
        Text(String),
        Hex(String),
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Repr::Text(text.to_owned()),
            Err(_) => Repr::Hex(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(t.into_bytes()),
            Repr::Hex(h) => (0..h.len())
                .step_by(2)
                .map(|i| {
                    h.get(i..i + 2)
                        .and_then(|b| u8::from_str_radix(b, 16).ok())
                        .ok_or_else(|| serde::de::Error::custom("contents.hex is not hex"))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_names_every_root_it_touches_once() {
        let l = |root: &str| Location::new(root, "x");
        let exec = |cwd: Option<&str>| Exec {
            command: "c".into(),
            args: vec![],
            cwd: cwd.map(Into::into),
            success_codes: vec![],
        };
        let cases: Vec<(Action, Vec<&str>)> = vec![
            (
                Action::CopyTree {
                    from: l("data"),
                    to: l("set"),
                },
                vec!["data", "set"],
            ),
            (
                Action::Rename {
                    from: l("data"),
                    to: l("data"),
                },
                vec!["data"],
            ),
            (
                Action::Verify {
                    check: VerifyCheck::EseLogSet {
                        set_logs: l("set"),
                        store_logs: l("logs"),
                    },
                },
                vec!["set", "logs"],
            ),
            (Action::Exec(exec(Some("dump"))), vec!["dump"]),
            (Action::Exec(exec(None)), vec![]),
            (
                Action::Assert {
                    condition: Condition::FreeSpaceAtLeast {
                        root: "set".into(),
                        bytes: 1,
                    },
                    message: "m".into(),
                },
                vec!["set"],
            ),
            (
                Action::Assert {
                    condition: Condition::StepStarted { step: "s".into() },
                    message: "m".into(),
                },
                vec![],
            ),
        ];
        for (a, roots) in cases {
            assert_eq!(a.roots(), roots, "{a:?}");
        }
    }
}
