//! Restore tests: an operation named [`OPERATION`] restores a backup set into [`SCRATCH`], a
//! directory the host makes empty beside the sets for the run and removes after it, and checks
//! what came back. The host grants it no command, no service and no writable root but the
//! scratch one, so a restore test cannot touch the live product; after its steps the host
//! checks the scratch tree against the set's manifest (every entry, its bytes and metadata,
//! and nothing more), then records the result beside the set.
//!
//! A plugin plans one with [`restore_set`], then adds its product's own checks of the restored
//! tree on [`SCRATCH`] (ESE page checksums, database/mirror pairs).

use crate::{Action, PlanBuilder, PlanError, Root, facts};

/// The operation name the host treats as a restore test. Describe it with `SetUse::Reads`.
pub const OPERATION: &str = "restore-test";

/// The root a restore test restores into.
pub const SCRATCH: Root = Root::new("scratch");

const SET: Root = Root::new("set");

/// The manifest, which the host writes into every set and reads the restored tree against.
const MANIFEST: &str = "manifest.json";

/// Plans the restore of the whole set into [`SCRATCH`]: each of the set's top-level entries (its
/// manifest aside) copied under the same name, then each copy compared with its source. A test
/// that restored only part of a set would pass while a real restore lost the rest, so there is
/// no choosing. Returns the names restored.
pub fn restore_set(plan: &mut PlanBuilder) -> Result<Vec<String>, PlanError> {
    let names: Vec<String> = facts::list_dir(&SET.path())?
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n != MANIFEST)
        .collect();
    if names.is_empty() {
        return Err(PlanError::Refused(
            "the backup set holds nothing but its manifest: there is nothing to restore".into(),
        ));
    }
    let ids = step_ids(&names);
    for (name, id) in names.iter().zip(&ids) {
        plan.step(
            &format!("restore-{id}"),
            &format!("Restore {name} from the set into the scratch directory"),
            Action::copy_tree(SET.join(name), SCRATCH.join(name)),
        );
    }
    for (name, id) in names.iter().zip(&ids) {
        plan.step(
            &format!("verify-{id}"),
            &format!("Check the restored {name} against the set"),
            Action::verify_copy(SET.join(name), SCRATCH.join(name)),
        );
    }
    Ok(names)
}

/// Step ids for names: lower-case letters, digits and `-`, unique.
fn step_ids(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let mut id: String = n
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        if id.is_empty() {
            id.push('x');
        }
        let base = id.clone();
        let mut k = 2;
        while out.contains(&id) {
            id = format!("{base}-{k}");
            k += 1;
        }
        out.push(id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_unique_step_ids() {
        let names: Vec<String> = ["data", "Priv.edb", "priv-edb", "日本"]
            .map(String::from)
            .to_vec();
        assert_eq!(step_ids(&names), ["data", "priv-edb", "priv-edb-2", "--"]);
    }
}
