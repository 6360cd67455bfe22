//! The faults a dry run injects, one per run: each step failing, hanging until its time limit,
//! and the host dying right after it.

use crate::plan::Plan;
use serde::Serialize;

/// A failure injected into one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// The step fails on every attempt.
    Fail {
        /// The step.
        step: String,
    },
    /// The step hangs until its timeout, on every attempt.
    Timeout {
        /// The step.
        step: String,
    },
    /// The host dies right after the step; recovery then runs the unfinished cleanup.
    CrashAfter {
        /// The step.
        step: String,
    },
}

impl Fault {
    /// The step it concerns.
    pub fn step(&self) -> &str {
        match self {
            Fault::Fail { step } | Fault::Timeout { step } | Fault::CrashAfter { step } => step,
        }
    }

    /// `fail copy-data`, `timeout maintenance-on`, `crash-after keep-data`.
    pub fn label(&self) -> String {
        match self {
            Fault::Fail { step } => format!("fail {step}"),
            Fault::Timeout { step } => format!("timeout {step}"),
            Fault::CrashAfter { step } => format!("crash-after {step}"),
        }
    }
}

/// Which faults to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Only the normal run.
    None,
    /// The normal run, then each step failing, timing out (where it has a timeout), and the
    /// host crashing right after it.
    EachStep,
}

/// The runs to make for a plan: the normal one (`None`), then one per fault.
pub fn scenarios(plan: &Plan, mode: FaultMode) -> Vec<Option<Fault>> {
    let mut out = vec![None];
    if mode == FaultMode::EachStep {
        for s in plan.all_steps() {
            out.push(Some(Fault::Fail { step: s.id.clone() }));
            if s.timeout_ms.is_some() {
                out.push(Some(Fault::Timeout { step: s.id.clone() }));
            }
            out.push(Some(Fault::CrashAfter { step: s.id.clone() }));
        }
    }
    out
}
