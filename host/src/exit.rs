//! The exit statuses of the `hokan` binary, in one place: the binary returns them, and the
//! daemon, which runs `hokan run` as a child, reads a run's end from its journal and falls back
//! to these only when the run never journaled (it could not start).

use crate::drive::{Outcome, RunStatus};

/// It did what it was asked.
pub const OK: u8 = 0;
/// Bad input (a policy, a plugin, a world, a journal): the message names the file and field;
/// nothing ran.
pub const BAD_INPUT: u8 = 1;
/// A bad command line (clap's own).
pub const USAGE: u8 = 2;
/// A plugin refused to plan (the message says why); nothing ran.
pub const REFUSED: u8 = 3;
/// Someone must look: an invariant broke, a cleanup step failed or could not reach its server
/// (`hokan recover` runs it again), a step allowed to fail did, a set was kept after a point of
/// no return, a set does not match its manifest.
pub const ATTENTION: u8 = 4;
/// A run's step failed and the body stopped; the cleanup ran.
pub const FAILED: u8 = 5;

/// The exit status of a run that ended so.
pub fn of(o: &Outcome) -> u8 {
    if o.needs_attention() {
        ATTENTION
    } else if o.status == RunStatus::Completed {
        OK
    } else {
        FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_exit_statuses() {
        let mut o = Outcome::completed();
        assert_eq!(of(&o), OK);
        o.steps_failed.push("copy-to-media".into());
        assert_eq!(of(&o), ATTENTION);
        let mut o = Outcome::new(RunStatus::Failed);
        assert_eq!(of(&o), FAILED);
        o.set_kept = Some("`verify-pages` failed after the point of no return `backup`".into());
        assert_eq!(of(&o), ATTENTION);
        assert_eq!(of(&Outcome::new(RunStatus::Recovered)), FAILED);
    }
}
