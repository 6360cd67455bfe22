//! What a plugin says about itself and what it is asked: its description (operations, roots,
//! commands, services, markers, roles, modelled states, conflicts, window rules), the request
//! to plan and its refusal, and the [`Planner`] through which plans are asked for, with the
//! [`CallError`]s of a call. Plain data, converted from every contract version by
//! `runtime::bindings`, so the modules that read it (the planner, the simulator, the scheduler)
//! do not depend on wasmtime.

use crate::facts::FactSource;
use crate::plan::{Location, Plan};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How an operation uses backup sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SetUse {
    /// No set.
    None,
    /// The host makes a new set, granted as root `set`.
    Writes,
    /// The host grants an existing set read-only as root `set`.
    Reads,
}

/// An operation a plugin offers.
#[derive(Debug, Clone, Serialize)]
pub struct OperationInfo {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// How it uses backup sets.
    pub sets: SetUse,
    /// Its purpose is to leave the product in maintenance mode.
    pub leaves_maintenance: bool,
}

/// A root a plugin needs.
#[derive(Debug, Clone, Serialize)]
pub struct RootInfo {
    /// Its name.
    pub name: String,
    /// What directory the site should grant.
    pub description: String,
    /// Whether plans write below it.
    pub writable: bool,
    /// Whether the policy must grant it.
    pub required: bool,
}

/// A parameter a plugin accepts.
#[derive(Debug, Clone, Serialize)]
pub struct ParamInfo {
    /// Its name.
    pub name: String,
    /// What it means.
    pub description: String,
    /// Its default.
    pub default: Option<String>,
}

/// A command or service name the policy maps.
#[derive(Debug, Clone, Serialize)]
pub struct NameInfo {
    /// The logical name.
    pub name: String,
    /// What it is.
    pub description: String,
}

/// A file whose existence means "in maintenance".
#[derive(Debug, Clone, Serialize)]
pub struct MaintenanceMarker {
    /// Where.
    pub path: Location,
    /// What it means.
    pub description: String,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, Serialize)]
pub struct Description {
    /// Short name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Product and manuals.
    pub product: String,
    /// One paragraph.
    pub summary: String,
    /// Operations.
    pub operations: Vec<OperationInfo>,
    /// Roots it needs.
    pub roots: Vec<RootInfo>,
    /// Parameters.
    pub parameters: Vec<ParamInfo>,
    /// Commands to map.
    pub commands: Vec<NameInfo>,
    /// Services to map.
    pub services: Vec<NameInfo>,
    /// Maintenance markers.
    pub maintenance_markers: Vec<MaintenanceMarker>,
    /// How its commands behave in a dry run, unless a world fixture says otherwise.
    pub command_behaviours: Vec<CommandBehaviour>,
    /// The product's server roles (empty: the plugin does not care).
    pub roles: Vec<RoleInfo>,
    /// Product states a dry run tracks like services.
    pub modelled_states: Vec<ModelledState>,
    /// Work that must not overlap some operations.
    pub conflicts: Vec<Conflict>,
    /// How the product keeps maintenance windows.
    pub window_rules: WindowRules,
}

/// How a product keeps maintenance windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WindowRules {
    /// Windows start and end on multiples of this many minutes (at least 1).
    pub step_minutes: u32,
    /// Windows repeat every day.
    pub daily: bool,
}

impl Default for WindowRules {
    fn default() -> WindowRules {
        WindowRules {
            step_minutes: 1,
            daily: false,
        }
    }
}

/// A server role of the product.
#[derive(Debug, Clone, Serialize)]
pub struct RoleInfo {
    /// The role, as `[[servers]] role` names it.
    pub name: String,
    /// What such a server is.
    pub description: String,
    /// Fewest servers with this role a job may have.
    pub min: u32,
    /// Most servers with this role a job may have (none: any number).
    pub max: Option<u32>,
    /// Properties such a server may have, with defaults.
    pub properties: Vec<ParamInfo>,
}

/// A product state a dry run tracks like a service.
#[derive(Debug, Clone, Serialize)]
pub struct ModelledState {
    /// Its name in command behaviours' effects.
    pub name: String,
    /// What it means.
    pub description: String,
    /// Its state before a run.
    pub normal: crate::plan::ServiceState,
}

/// Work that must not overlap some of a plugin's operations.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    /// The activity, as site policies name it.
    pub activity: String,
    /// What it is and why it conflicts.
    pub description: String,
    /// The operations it must not overlap.
    pub operations: Vec<String>,
    /// Where the rule comes from.
    pub reference: Option<String>,
    /// Its usual length in minutes when the site does not say (0: the site must say).
    pub typical_minutes: u32,
    /// The product does not start it inside the maintenance window or on its end.
    pub skipped_in_window: bool,
}

/// A change a simulated command makes to the dry-run world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimEffect {
    /// Creates an empty file and its parents.
    CreateFile(Location),
    /// Removes a file or a tree.
    Remove(Location),
    /// Brings a service to a state on the command's server.
    Service {
        /// Logical service name.
        service: String,
        /// Its new state.
        state: crate::plan::ServiceState,
    },
}

/// How a command behaves in a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandBehaviour {
    /// The logical command.
    pub command: String,
    /// Applies to invocations whose arguments start with these.
    pub args_prefix: Vec<String>,
    /// Its exit code.
    pub exit_code: i32,
    /// What it prints.
    pub output: String,
    /// How long it runs.
    pub duration_ms: u64,
    /// What it changes, in order.
    pub effects: Vec<SimEffect>,
}

impl Description {
    /// The operation named `name`.
    pub fn operation(&self, name: &str) -> Option<&OperationInfo> {
        self.operations.iter().find(|o| o.name == name)
    }

    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&RoleInfo> {
        self.roles.iter().find(|r| r.name == name)
    }
}

/// A request to plan one operation.
#[derive(Debug, Clone, Default)]
pub struct PlanRequest {
    /// The operation.
    pub operation: String,
    /// Parameters (policy values over the plugin's defaults).
    pub params: BTreeMap<String, String>,
    /// The backup set used, if any.
    pub set_id: Option<String>,
    /// The window the run was given (a scheduled slot's opening of the job's `window`, or
    /// `hokan run --window`); `None` for a run started without one.
    pub window: Option<crate::plan::model::TimeWindow>,
}

/// A plugin that can be asked for plans. The planner and the simulator ask through this, so
/// that they do not depend on how the plugin runs: the runtime's components
/// (`runtime::Runtime::bind`) are one kind; a plugin on a remote host, or a scripted one in a
/// test, can be others.
pub trait Planner {
    /// What it said about itself.
    fn description(&self) -> &Description;
    /// SHA-256 of its code, hex, for the plan document.
    fn sha256(&self) -> &str;
    /// Asks it for a plan, answering its facts from `facts`. The outer error is the host's (the
    /// plugin misbehaved); the inner one is the plugin's own refusal.
    fn plan(
        &self,
        facts: Arc<dyn FactSource>,
        request: &PlanRequest,
    ) -> Result<Result<Plan, PlanRefusal>, CallError>;
}

/// The two clocks a call is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The plugin's own computing time (`runtime::Limits::call_timeout`).
    OwnTime,
    /// Wall-clock time, facts included (`runtime::Limits::call_wall_timeout`).
    WallTime,
}

impl std::fmt::Display for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Deadline::OwnTime => "its own computing time",
            Deadline::WallTime => "wall-clock time (site facts included)",
        })
    }
}

/// Why a call into a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call ran past its deadline and was interrupted.
    #[error(
        "plugin `{plugin}` did not finish {call}() within {limit:?} of {counting} and was stopped"
    )]
    Timeout {
        /// The plugin.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// The deadline.
        limit: Duration,
        /// Which clock ran out.
        counting: Deadline,
    },
    /// The plugin tried to grow its memory past the cap.
    #[error(
        "plugin `{plugin}` tried to use more than {limit_mib} MiB of memory in {call}() and was stopped"
    )]
    Memory {
        /// The plugin.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// The cap.
        limit_mib: usize,
    },
    /// The plugin trapped (a panic, an out-of-bounds access...).
    #[error("plugin `{plugin}` crashed in {call}(): {message}{}", stderr_note(.stderr))]
    Trap {
        /// The plugin.
        plugin: String,
        /// Which export.
        call: &'static str,
        /// wasmtime's description.
        message: String,
        /// What the plugin wrote to stderr (its panic message).
        stderr: String,
    },
    /// The plan exceeded a size limit.
    #[error("plugin `{plugin}` returned a plan that is too large: {what}")]
    PlanTooLarge {
        /// The plugin.
        plugin: String,
        /// Which limit.
        what: String,
    },
}

fn stderr_note(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!("\n  plugin output: {}", s.replace('\n', "\n  "))
    }
}

/// A plugin's own reason for not planning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanRefusal {
    /// Not an operation of the plugin.
    #[error("the plugin has no operation `{0}`")]
    UnknownOperation(String),
    /// A parameter is wrong.
    #[error("bad parameter: {0}")]
    BadParameter(String),
    /// The manual says not to proceed.
    #[error("refused: {0}")]
    Refused(String),
    /// A fact could not be read.
    #[error("could not read the site: {0}")]
    Facts(String),
}

/// Names for a message: `a, b, c`, or `none`.
pub fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Descriptions made by hand, for the unit tests of what reads them (the scheduler, the
/// linter) without a plugin or wasmtime.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A plugin `name` offering `ops` (none of them using sets), with no conflicts or roles.
    pub(crate) fn description(name: &str, ops: &[&str]) -> Description {
        Description {
            name: name.to_string(),
            version: "1.0.0".to_string(),
            product: format!("{name} (test)"),
            summary: String::new(),
            operations: ops
                .iter()
                .map(|o| OperationInfo {
                    name: o.to_string(),
                    description: String::new(),
                    sets: SetUse::None,
                    leaves_maintenance: false,
                })
                .collect(),
            roots: Vec::new(),
            parameters: Vec::new(),
            commands: Vec::new(),
            services: Vec::new(),
            maintenance_markers: Vec::new(),
            command_behaviours: Vec::new(),
            roles: Vec::new(),
            modelled_states: Vec::new(),
            conflicts: Vec::new(),
            window_rules: WindowRules::default(),
        }
    }

    /// A plugin that answers every request with the same plan or refusal, and counts calls.
    pub(crate) struct Scripted {
        pub(crate) description: Description,
        pub(crate) answer: Result<Plan, PlanRefusal>,
        pub(crate) calls: std::sync::atomic::AtomicUsize,
    }

    impl Scripted {
        pub(crate) fn new(description: Description, answer: Result<Plan, PlanRefusal>) -> Self {
            Scripted {
                description,
                answer,
                calls: Default::default(),
            }
        }
    }

    impl Planner for Scripted {
        fn description(&self) -> &Description {
            &self.description
        }
        fn sha256(&self) -> &str {
            "00"
        }
        fn plan(
            &self,
            _facts: Arc<dyn FactSource>,
            _request: &PlanRequest,
        ) -> Result<Result<Plan, PlanRefusal>, CallError> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(self.answer.clone())
        }
    }

    /// A conflicting activity of `minutes` that the product skips inside its window.
    pub(crate) fn conflict(activity: &str, ops: &[&str], minutes: u32) -> Conflict {
        Conflict {
            activity: activity.to_string(),
            description: String::new(),
            operations: ops.iter().map(|o| o.to_string()).collect(),
            reference: None,
            typical_minutes: minutes,
            skipped_in_window: true,
        }
    }
}
