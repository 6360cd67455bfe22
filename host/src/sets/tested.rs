//! Restore tests: a set restored into a scratch directory beside it, never over the live
//! product, checked there, and the result recorded beside the set.
//!
//! An operation a plugin names [`OPERATION`] is a restore test. Its plan reads the set (`set`)
//! and restores it into the root [`SCRATCH_ROOT`], which the host makes empty for the run and
//! removes after it; every other root is read-only to it, and it runs no command or service, so
//! it cannot touch the live product. After its steps (the product's own checks of a restored
//! tree: ESE pages, database/mirror pairs) the host checks the scratch tree against the set's
//! manifest: every entry back, with its bytes and metadata, and nothing else. The result is
//! recorded in `<set id>.restore-test.json` in the job's sets directory, which `hokan sets`
//! shows, retention reads (the newest set that passed is never pruned) and alerts use.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The operation name that makes an operation a restore test.
pub const OPERATION: &str = "restore-test";

/// The root a restore test restores into.
pub const SCRATCH_ROOT: &str = "scratch";

/// The scratch directory of a restore test started at `stamp` (a set id's form), in the job's
/// sets directory: on the volume that holds the sets, so that it has room for one, and under
/// a name no set listing takes for a set.
pub fn scratch_dir(job_dir: &Path, stamp: &str) -> PathBuf {
    job_dir.join(format!(".restore-test.{stamp}"))
}

/// Whether a name in a sets directory is a restore test's scratch directory.
pub fn is_scratch(name: &[u8]) -> bool {
    name.starts_with(b".restore-test.")
}

/// A restore test's result, as recorded beside its set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tested {
    /// The set.
    pub set: String,
    /// When the test ended (RFC 3339, UTC).
    pub tested_at: String,
    /// The restored tree matched the set's manifest and passed the product's checks.
    pub ok: bool,
    /// Why not, when it did not: the failed step and its reason, or the manifest's problems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The run that tested it.
    pub run: String,
}

/// Where the result of set `id`'s last restore test is kept.
pub fn record_path(job_dir: &Path, id: &str) -> PathBuf {
    job_dir.join(format!("{id}.restore-test.json"))
}

/// Records a result, replacing the set's earlier one: written under a temporary name, synced
/// and renamed, so a record is whole or absent.
pub fn record(job_dir: &Path, t: &Tested) -> std::io::Result<()> {
    let mut json = serde_json::to_vec_pretty(t).map_err(std::io::Error::other)?;
    json.push(b'\n');
    crate::durable::write_whole(&record_path(job_dir, &t.set), &json)
}

/// Set `id`'s last restore test, if it had one; a record that cannot be read counts as none
/// (the set is then not known to restore).
pub fn last(job_dir: &Path, id: &str) -> Option<Tested> {
    let text = std::fs::read(record_path(job_dir, id)).ok()?;
    serde_json::from_slice::<Tested>(&text)
        .ok()
        .filter(|t| t.set == id)
}

/// The sets a restore test may read: those of `catalog`, each taken as it is. A restore test
/// is not refused a set that no longer matches its manifest, as a restore is: finding that out,
/// naming the file, and recording it against the set is what the test is for.
pub struct Unchecked<'a>(pub &'a dyn super::Catalog);

impl super::Catalog for Unchecked<'_> {
    fn good(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.0.good(dir)
    }

    fn kept(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.0.kept(dir)
    }

    fn verify(&self, _dir: &Path, _id: &str) -> Result<(), String> {
        Ok(())
    }
}

/// The newest of `ids` (oldest first) whose last restore test passed.
pub fn newest_passed(job_dir: &Path, ids: &[String]) -> Option<String> {
    ids.iter()
        .rev()
        .find(|id| last(job_dir, id).is_some_and(|t| t.ok))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_is_recorded_replaced_and_read_back_for_its_own_set_only() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = ["20261201T171000Z", "20261202T171000Z", "20261203T171000Z"]
            .map(String::from)
            .to_vec();
        assert_eq!(newest_passed(dir.path(), &ids), None);
        let t = |set: &str, ok: bool| Tested {
            set: set.into(),
            tested_at: "2026-12-04T03:00:00Z".into(),
            ok,
            problem: (!ok).then(|| "Priv.edb: page 7 at offset 32768 is bad".into()),
            run: "r".into(),
        };
        record(dir.path(), &t(&ids[0], true)).unwrap();
        record(dir.path(), &t(&ids[2], false)).unwrap();
        assert_eq!(newest_passed(dir.path(), &ids), Some(ids[0].clone()));
        assert_eq!(last(dir.path(), &ids[2]), Some(t(&ids[2], false)));
        // A later test that passes replaces the failure.
        record(dir.path(), &t(&ids[2], true)).unwrap();
        assert_eq!(newest_passed(dir.path(), &ids), Some(ids[2].clone()));
        // A record copied under another set's name is not that set's.
        std::fs::copy(
            record_path(dir.path(), &ids[0]),
            record_path(dir.path(), &ids[1]),
        )
        .unwrap();
        assert_eq!(last(dir.path(), &ids[1]), None);
        // Nothing but the records is left.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(
            names.iter().all(|n| n.ends_with(".restore-test.json")),
            "{names:?}"
        );
        assert!(is_scratch(b".restore-test.20261204T030000Z"));
        assert!(!is_scratch(b"20261204T030000Z"));
    }
}
