//! `hokan:policy@0.5.0`: without the `backup-size` fact and points of no return.

use super::super::{
    CommandBehaviour, Conflict, Description, Limits, MaintenanceMarker, ModelledState, NameInfo,
    OperationInfo, ParamInfo, PlanRefusal, PlanRequest, RoleInfo, RootInfo, SetUse, SimEffect,
    State, WindowRules,
};
use super::{MAX_FACT_READ, MAX_LOG_LINES};
use crate::facts as domain_facts;
use crate::plan::model as m;

wasmtime::component::bindgen!({
    path: "../wit/0.5.0",
    world: "hokan:policy/plugin-world",
});

use self::hokan::policy::{facts as wf, log as wl, plan_types as wt, types as wty};
use exports::hokan::policy::plugin as wp;

super::contract!(
    facts_since_0_6: {  },
    commits_set: |_: &wt::Step| false,
    since_0_8: none,
);
