//! The faults a dry run injects, one per run: each step failing, hanging until its time limit,
//! the host dying right after it, and the server a step ran on (one reached over ssh) going
//! down right after it.

use crate::plan::{Condition, Plan, Step};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The servers reached over ssh, and the roots on them: where a step acts, for the faults that
/// take a server down. The executor's rule: a step needs the server it names and the servers
/// its roots are on (a command without one runs where its working directory is).
#[derive(Debug, Clone, Default)]
pub struct RemoteServers {
    /// Their names.
    pub servers: BTreeSet<String>,
    /// Root names to the server each is on.
    pub roots: BTreeMap<String, String>,
}

impl RemoteServers {
    /// The servers reached over ssh that step `s` needs.
    pub fn of_step<'a>(&'a self, s: &'a Step) -> BTreeSet<&'a str> {
        let named = s.target.as_deref().filter(|t| self.servers.contains(*t));
        let on_roots = s
            .action
            .roots()
            .into_iter()
            .filter_map(|r| self.roots.get(r).map(String::as_str));
        named.into_iter().chain(on_roots).collect()
    }

    /// The servers reached over ssh that reading `c` for a step on `target` needs.
    pub fn of_condition<'a>(
        &'a self,
        c: &'a Condition,
        target: Option<&'a str>,
    ) -> BTreeSet<&'a str> {
        let named = target.filter(|t| self.servers.contains(*t));
        let on_root = c.root().and_then(|r| self.roots.get(r)).map(String::as_str);
        named.into_iter().chain(on_root).collect()
    }
}

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
    /// The server the step ran on stops answering right after it and stays down to the run's
    /// end: its later steps and conditions cannot be reached, and its cleanup steps are
    /// deferred. Then it is back, and `hokan recover` runs what was deferred, as the daemon
    /// or an operator would.
    ServerDownAfter {
        /// The step.
        step: String,
        /// Its server.
        server: String,
    },
}

impl Fault {
    /// The step it concerns.
    pub fn step(&self) -> &str {
        match self {
            Fault::Fail { step }
            | Fault::Timeout { step }
            | Fault::CrashAfter { step }
            | Fault::ServerDownAfter { step, .. } => step,
        }
    }

    /// `fail copy-data`, `timeout maintenance-on`, `crash-after keep-data`.
    pub fn label(&self) -> String {
        match self {
            Fault::Fail { step } => format!("fail {step}"),
            Fault::Timeout { step } => format!("timeout {step}"),
            Fault::CrashAfter { step } => format!("crash-after {step}"),
            Fault::ServerDownAfter { step, server } => {
                format!("server-down-after {step} ({server})")
            }
        }
    }
}

/// Which faults to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Only the normal run.
    None,
    /// The normal run, then each step failing, timing out (where it has a timeout), the host
    /// crashing right after it, and, for a step on a server in `remote`, that server going down
    /// right after it.
    EachStep,
}

/// The runs to make for a plan: the normal one (`None`), then one per fault. A step that needs
/// a server in `remote` also gets one with that server going down right after it.
pub fn scenarios(plan: &Plan, mode: FaultMode, remote: &RemoteServers) -> Vec<Option<Fault>> {
    let mut out = vec![None];
    if mode == FaultMode::EachStep {
        for s in plan.all_steps() {
            out.push(Some(Fault::Fail { step: s.id.clone() }));
            if s.timeout_ms.is_some() {
                out.push(Some(Fault::Timeout { step: s.id.clone() }));
            }
            out.push(Some(Fault::CrashAfter { step: s.id.clone() }));
            for server in remote.of_step(s) {
                out.push(Some(Fault::ServerDownAfter {
                    step: s.id.clone(),
                    server: server.to_string(),
                }));
            }
        }
    }
    out
}
