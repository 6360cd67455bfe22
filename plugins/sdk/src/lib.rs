//! Write hokan product plugins.
//!
//! A plugin turns a product's manual into a plan: it looks at the site through read-only
//! [`facts`], then describes with a [`PlanBuilder`] what the host should do, step by step, in the
//! manual's order. The host validates the plan against the site policy and then simulates or
//! executes it; a plugin never writes or runs anything itself.
//!
//! ```ignore
//! use hokan_sdk::prelude::*;
//!
//! struct MyProduct;
//!
//! impl Plugin for MyProduct {
//!     fn describe() -> Description { /* ... */ }
//!     fn plan(req: Request) -> Result<Plan, PlanError> {
//!         let data = Root::new("data");
//!         let mut plan = PlanBuilder::new();
//!         plan.step("maint-on", "Set maintenance mode",
//!             Action::write_file(data.join("maint"), b"hokan\n"));
//!         plan.cleanup("maint-off", "Release maintenance mode", Action::remove(data.join("maint")));
//!         Ok(plan.build())
//!     }
//! }
//!
//! hokan_sdk::export_plugin!(MyProduct);
//! ```
#![deny(missing_docs)]

#[allow(missing_docs, clippy::all)]
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/0.8.0",
        world: "hokan:policy/plugin-world",
        default_bindings_module: "hokan_sdk::bindings",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        generate_all,
    });
}

mod builder;
pub mod facts;
mod path;
pub mod restore_test;

pub use bindings::exports::hokan::policy::plugin::{
    CommandBehaviour, Conflict, Description, MaintenanceMarker, ModelledState, NameInfo,
    OperationInfo, ParamInfo, PlanError, Request, RoleInfo, RootInfo, ServiceChange, SetUse,
    SimEffect, WindowRules,
};
pub use bindings::hokan::policy::log::Level;
pub use bindings::hokan::policy::plan_types::{
    Action, Condition, OnError, Plan, PlanItem, Step, StepGroup,
};
pub use bindings::hokan::policy::types::{
    DirEntry, EntryKind, FileStat, LocalTime, Server, ServiceState, TimeWindow, Topology,
};
pub use builder::{GroupBuilder, InvariantBuilder, PlanBuilder, StepBuilder};
pub use path::{Path, Root};

/// What every plugin implements; [`export_plugin!`] connects it to the host.
pub trait Plugin {
    /// What the plugin is, its operations, and what the site must grant and map.
    fn describe() -> Description;
    /// Plans one operation.
    fn plan(req: Request) -> Result<Plan, PlanError>;
}

/// Sends a message to the host's log, tagged with the plugin's name.
pub fn log(level: Level, message: &str) {
    bindings::hokan::policy::log::log(level, message);
}

impl Request {
    /// A parameter's value, if the policy or the plugin's defaults gave one.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A parameter that must be present.
    pub fn required_param(&self, name: &str) -> Result<&str, PlanError> {
        self.param(name).ok_or_else(|| {
            PlanError::BadParameter(format!(
                "parameter `{name}` is required for operation `{}`",
                self.operation
            ))
        })
    }

    /// A yes/no parameter (`true`/`false`, `yes`/`no`, `1`/`0`); absent means `default`.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, PlanError> {
        match self.param(name) {
            None => Ok(default),
            Some(v) => parse_flag(v).ok_or_else(|| {
                PlanError::BadParameter(format!(
                    "parameter `{name}` must be true or false, not `{v}`"
                ))
            }),
        }
    }
}

/// Describes a root the plugin needs.
pub fn root_info(name: &str, description: &str, writable: bool) -> RootInfo {
    RootInfo {
        name: name.into(),
        description: description.into(),
        writable,
        required: true,
    }
}

/// Describes a root the site may grant or leave out (the plan asks facts whether it has it):
/// a directory some sites need and others do not, like a staging directory on a server
/// reached over ssh.
pub fn optional_root_info(name: &str, description: &str, writable: bool) -> RootInfo {
    RootInfo {
        required: false,
        ..root_info(name, description, writable)
    }
}

/// Describes a parameter.
pub fn param_info(name: &str, description: &str, default: Option<&str>) -> ParamInfo {
    ParamInfo {
        name: name.into(),
        description: description.into(),
        default: default.map(Into::into),
    }
}

/// Describes a server role: a job's servers must include `min..=max` of them (`max` none: any
/// number); `properties` are what the site may say about such a server, with defaults.
pub fn role_info(
    name: &str,
    description: &str,
    min: u32,
    max: Option<u32>,
    properties: Vec<ParamInfo>,
) -> RoleInfo {
    RoleInfo {
        name: name.into(),
        description: description.into(),
        min,
        max,
        properties,
    }
}

/// Describes a product state a dry run tracks like a service, and its state before a run.
pub fn modelled_state(name: &str, description: &str, normal: ServiceState) -> ModelledState {
    ModelledState {
        name: name.into(),
        description: description.into(),
        normal,
    }
}

/// Declares work that must not overlap `operations` (for the scheduler).
pub fn conflict(
    activity: &str,
    description: &str,
    operations: &[&str],
    reference: Option<&str>,
) -> Conflict {
    Conflict {
        activity: activity.into(),
        description: description.into(),
        operations: operations.iter().map(|o| (*o).into()).collect(),
        reference: reference.map(Into::into),
        typical_minutes: 0,
        skipped_in_window: false,
    }
}

impl Conflict {
    /// How long the activity usually runs, when the site's policy does not say.
    pub fn typical_minutes(mut self, minutes: u32) -> Self {
        self.typical_minutes = minutes;
        self
    }

    /// The product does not start the activity inside the maintenance window or on its end.
    pub fn skipped_in_window(mut self) -> Self {
        self.skipped_in_window = true;
        self
    }
}

/// Maintenance windows on any minute, on any days: what most products allow.
pub const ANY_WINDOW: WindowRules = WindowRules {
    step_minutes: 1,
    daily: false,
};

impl Topology {
    /// The job's servers with `role`, in the order the job lists them.
    pub fn job_servers_with_role(&self, role: &str) -> Vec<&Server> {
        self.job_servers
            .iter()
            .filter_map(|n| self.servers.iter().find(|s| &s.name == n))
            .filter(|s| s.role == role)
            .collect()
    }

    /// The job's servers, in the order the job lists them.
    pub fn job_server_list(&self) -> Vec<&Server> {
        self.job_servers
            .iter()
            .filter_map(|n| self.servers.iter().find(|s| &s.name == n))
            .collect()
    }
}

impl Server {
    /// A property the site gave for the server (or the role's default).
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A yes/no property; absent means `default`. An error names the server's field.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, PlanError> {
        match self.property(name) {
            None => Ok(default),
            Some(v) => parse_flag(v).ok_or_else(|| {
                PlanError::BadParameter(format!(
                    "servers.{}.properties.{name} must be true or false, not `{v}`",
                    self.name
                ))
            }),
        }
    }
}

fn parse_flag(v: &str) -> Option<bool> {
    match v {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Describes a logical command or service name the policy maps.
pub fn name_info(name: &str, description: &str) -> NameInfo {
    NameInfo {
        name: name.into(),
        description: description.into(),
    }
}

/// How a command behaves in a dry run: `args_prefix` selects the invocations it models.
/// Add effects with [`CommandBehaviour::effect`].
pub fn behaviour(
    command: &str,
    args_prefix: &[&str],
    exit_code: i32,
    duration: std::time::Duration,
) -> CommandBehaviour {
    CommandBehaviour {
        command: command.into(),
        args_prefix: args_prefix.iter().map(|a| (*a).into()).collect(),
        exit_code,
        output: String::new(),
        duration_ms: duration.as_millis().try_into().unwrap_or(u64::MAX),
        effects: Vec::new(),
    }
}

impl CommandBehaviour {
    /// Adds a change the command makes when it runs.
    pub fn effect(mut self, effect: SimEffect) -> Self {
        self.effects.push(effect);
        self
    }

    /// Sets what the command prints.
    pub fn output(mut self, output: &str) -> Self {
        self.output = output.into();
        self
    }
}

impl SimEffect {
    /// The command creates an empty file (and its parents).
    pub fn create_file(p: Path) -> SimEffect {
        SimEffect::CreateFile(p)
    }
    /// The command removes a file or tree.
    pub fn remove(p: Path) -> SimEffect {
        SimEffect::Remove(p)
    }
    /// The command brings a service to a state.
    pub fn service(service: &str, state: ServiceState) -> SimEffect {
        SimEffect::Service(ServiceChange {
            service: service.into(),
            state,
        })
    }
}

/// Describes an operation.
pub fn operation(name: &str, description: &str, sets: SetUse) -> OperationInfo {
    OperationInfo {
        name: name.into(),
        description: description.into(),
        sets,
        leaves_maintenance: false,
    }
}

/// Describes an operation whose purpose is to leave the product in maintenance mode.
pub fn maintenance_operation(name: &str, description: &str) -> OperationInfo {
    OperationInfo {
        leaves_maintenance: true,
        ..operation(name, description, SetUse::None)
    }
}

/// Everything a plugin usually needs.
pub mod prelude {
    pub use crate::facts::{self, FactError};
    pub use crate::{
        ANY_WINDOW, Action, Condition, Description, Level, MaintenanceMarker, OnError, Path, Plan,
        PlanBuilder, PlanError, Plugin, Request, Root, Server, ServiceState, SetUse, SimEffect,
        Topology, WindowRules, behaviour, conflict, log, maintenance_operation, modelled_state,
        name_info, operation, optional_root_info, param_info, role_info, root_info,
    };
}

#[doc(hidden)]
pub fn __describe<P: Plugin>() -> Description {
    P::describe()
}

#[doc(hidden)]
pub fn __plan<P: Plugin>(req: Request) -> Result<Plan, PlanError> {
    P::plan(req)
}

/// Exports a type implementing [`Plugin`] as the component's `hokan:policy/plugin` interface.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ident) => {
        impl $crate::bindings::exports::hokan::policy::plugin::Guest for $ty {
            fn describe() -> $crate::Description {
                $crate::__describe::<$ty>()
            }
            fn plan(
                req: $crate::Request,
            ) -> ::core::result::Result<$crate::Plan, $crate::PlanError> {
                $crate::__plan::<$ty>(req)
            }
        }
        // The component exports exist only in the wasm build; a native build (the plugin's own
        // unit tests) keeps the trait impl, type-checked, without them.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::bindings::__export_world!($ty);
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            let _describe: fn() -> $crate::Description = <$ty as $crate::Plugin>::describe;
            let _plan: fn(
                $crate::Request,
            ) -> ::core::result::Result<$crate::Plan, $crate::PlanError> =
                <$ty as $crate::Plugin>::plan;
        };
    };
}
