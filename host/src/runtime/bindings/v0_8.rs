//! `hokan:policy@0.8.0`, the current version: commands that must never be killed (`no-kill`),
//! `remove-files` chosen when the step runs, the `step-succeeded` and `step-not-started`
//! conditions, and invariants that apply `when` their conditions hold.

use super::super::{
    CommandBehaviour, Conflict, Description, Limits, MaintenanceMarker, ModelledState, NameInfo,
    OperationInfo, ParamInfo, PlanRefusal, PlanRequest, RoleInfo, RootInfo, SetUse, SimEffect,
    State, WindowRules,
};
use super::{MAX_FACT_READ, MAX_LOG_LINES};
use crate::facts as domain_facts;
use crate::plan::model as m;

wasmtime::component::bindgen!({
    path: "../wit/0.8.0",
    world: "hokan:policy/plugin-world",
});

use self::hokan::policy::{facts as wf, log as wl, plan_types as wt, types as wty};
use exports::hokan::policy::plugin as wp;

super::contract!(
    facts_since_0_6: { super::backup_size!(); super::site_time!(); },
    commits_set: |s: &wt::Step| s.commits_set,
    since_0_8: (b) {
        no_kill: |s: &wt::Step| s.no_kill,
        invariant_when: |i| i
            .when
            .into_iter()
            .map(|c| b.condition(c))
            .collect::<Result<Vec<_>, String>>(),
        conditions: {
            wt::Condition::StepSucceeded(id) => m::Condition::StepSucceeded {
                step: b.string(id)?,
            },
            wt::Condition::StepNotStarted(id) => m::Condition::StepNotStarted {
                step: b.string(id)?,
            },
        },
        actions: {
            wt::Action::RemoveFiles(r) => m::Action::RemoveFiles {
                dir: b.location(r.dir)?,
                patterns: b.strings(r.patterns)?,
                except: b.strings(r.except)?,
                ignore_case: r.ignore_case,
            },
        },
        verifies: {
            wt::Verify::EseLogSet(l) => m::VerifyCheck::EseLogSet {
                set_logs: b.location(l.set_logs)?,
                store_logs: b.location(l.store_logs)?,
            },
        },
        plan_window: |b: &mut Budget, p: &mut wt::Plan| {
            p.window
                .take()
                .map(|w| {
                    Ok::<_, String>(m::PlanWindow {
                        window: m::TimeWindow {
                            start_ms: w.window.start_ms,
                            end_ms: w.window.end_ms,
                        },
                        from_step: b.string(w.from_step)?,
                        until_step: b.string(w.until_step)?,
                    })
                })
                .transpose()
        },
        request: (r) {
            window: r.window.map(|w| wty::TimeWindow {
                start_ms: w.start_ms,
                end_ms: w.end_ms,
            }),
        },
    },
);
