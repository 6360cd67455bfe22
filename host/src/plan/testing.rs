//! Plans built by hand for the unit tests of what carries them out (the driver, the
//! simulator): short builders, so that a test reads as the plan it runs.

use super::model::Exec;
use super::{Action, Item, Location, OnError, Plan, Step};

/// Runs command `id` (mapped to itself), aborting on failure.
pub(crate) fn exec(id: &str) -> Step {
    Step {
        id: id.into(),
        title: format!("run {id}"),
        target: None,
        on_error: OnError::Abort,
        timeout_ms: None,
        retries: 0,
        when: vec![],
        commits_set: false,
        no_kill: false,
        action: Action::Exec(Exec {
            command: id.into(),
            args: vec![],
            cwd: None,
            success_codes: vec![],
        }),
    }
}

/// Step `id` doing `action`, aborting on failure.
pub(crate) fn step(id: &str, action: Action) -> Step {
    Step { action, ..exec(id) }
}

/// Copies `d` into `to_root` (`set`: the backup; otherwise out of the set).
pub(crate) fn copy(id: &str, to_root: &str) -> Step {
    Step {
        action: Action::CopyTree {
            from: Location::new(if to_root == "set" { "data" } else { "set" }, "d"),
            to: Location::new(to_root, "d"),
        },
        ..exec(id)
    }
}

/// A manual gate.
pub(crate) fn manual(id: &str) -> Step {
    Step {
        action: Action::Manual {
            instructions: "do it".into(),
            reference: None,
        },
        ..exec(id)
    }
}

/// `s`, going on when it fails.
pub(crate) fn cont(s: Step) -> Step {
    Step {
        on_error: OnError::Continue,
        ..s
    }
}

/// A plan of `body` steps and `cleanup`.
pub(crate) fn plan(body: Vec<Step>, cleanup: Vec<Step>) -> Plan {
    Plan {
        steps: body.into_iter().map(Item::Step).collect(),
        cleanup,
        invariants: vec![],
        warnings: vec![],
        window: None,
    }
}
