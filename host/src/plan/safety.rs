//! The built-in safety invariants, checked after every dry run (`simulate`) and every real run
//! (`execute`): their ids and what each promises are defined once, here, so a transcript and a
//! real run's "needs attention" say the same thing.

/// An invariant's id and its promise.
pub struct Safety {
    /// `hokan:...`.
    pub id: &'static str,
    /// What holds when it holds.
    pub description: &'static str,
}

impl Safety {
    /// The line a real run reports when it is broken.
    pub fn broken(&self, detail: &str) -> String {
        format!("{}: {} ({detail})", self.id, self.description)
    }
}

/// Services end as the run found them.
pub const SERVICES_RESTORED: Safety = Safety {
    id: "hokan:services-restored",
    description: "services and modelled product states are in the state the run found them in",
};

/// No maintenance marker the run made is left behind.
pub const MAINTENANCE_RELEASED: Safety = Safety {
    id: "hokan:maintenance-released",
    description: "the product is not left in maintenance mode",
};

/// A backup leaves its sources as they were.
pub const SOURCE_UNCHANGED: Safety = Safety {
    id: "hokan:source-unchanged",
    description: "the data the backup copies is byte-for-byte unchanged by the run, or, where the procedure deletes it after copying, in the complete set as it was",
};

/// Once a step marked as a point of no return has succeeded, the backup set is kept (complete,
/// or kept incomplete): the product no longer holds what the set does.
pub const SET_KEPT: Safety = Safety {
    id: "hokan:set-kept-after-point-of-no-return",
    description: "once a point of no return has passed, the backup set is kept: what it holds exists nowhere else",
};

/// A command that must never be killed (`no-kill`) was not: hokan reported it at its limit
/// and waited, and only a person may stop it.
pub const NEVER_KILLED: Safety = Safety {
    id: "hokan:never-killed",
    description: "no command that must never be killed was killed by hokan",
};

/// The steps a plan's window binds ran inside it: none started before it began, none ended
/// after it ended (mailwise's maintenance window, while users are kept out).
pub const INSIDE_WINDOW: Safety = Safety {
    id: "hokan:inside-window",
    description: "the steps that read or change the data ran inside the window the plan set",
};
