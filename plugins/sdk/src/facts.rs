//! Read-only facts about the site, answered by the host.
//!
//! Every function fails with a [`FactError`] that converts into [`PlanError`] with `?`, so a plan
//! that cannot read what it needs stops with the host's explanation.

use crate::bindings::hokan::policy::facts as raw;
use crate::{DirEntry, EntryKind, FileStat, LocalTime, Path, PlanError, Topology};

pub use raw::FactError;

/// Whether anything exists at `p`.
pub fn exists(p: &Path) -> Result<bool, FactError> {
    raw::exists(p)
}

/// Whether `p` is a directory.
pub fn is_dir(p: &Path) -> Result<bool, FactError> {
    match raw::stat(p) {
        Ok(st) => Ok(st.kind == EntryKind::Dir),
        Err(FactError::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The entries of a directory, sorted by name.
pub fn list_dir(p: &Path) -> Result<Vec<DirEntry>, FactError> {
    raw::list_dir(p)
}

/// The names of the subdirectories of `p` that are `prefix` followed by a decimal number,
/// with that number, in numeric order (`back1`, `back2`, `back10`).
pub fn numbered_dirs(p: &Path, prefix: &str) -> Result<Vec<(u32, String)>, FactError> {
    let mut found: Vec<(u32, String)> = list_dir(p)?
        .into_iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .filter_map(|e| {
            let digits = e.name.strip_prefix(prefix)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((digits.parse().ok()?, e.name))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Metadata of `p`.
pub fn stat(p: &Path) -> Result<FileStat, FactError> {
    raw::stat(p)
}

/// Total size of the files below `p`.
pub fn tree_size(p: &Path) -> Result<u64, FactError> {
    raw::tree_size(p)
}

/// The bytes a backup of `p` would copy: [`tree_size`] less the files the job's newest set
/// holds unchanged, which the host links instead (contract 0.6.0). Use it for the space check
/// of a backup; use [`tree_size`] for anything that needs the whole size.
pub fn backup_size(p: &Path) -> Result<u64, FactError> {
    raw::backup_size(p)
}

/// Bytes free on the volume of `root`.
pub fn free_space(root: &str) -> Result<u64, FactError> {
    raw::free_space(root)
}

/// Whether two roots are on the same volume (one disk failure takes both).
pub fn same_volume(a: &str, b: &str) -> Result<bool, FactError> {
    raw::same_volume(a, b)
}

/// A small text file (at most `max_bytes`).
pub fn read_text(p: &Path, max_bytes: u32) -> Result<String, FactError> {
    raw::read_text(p, max_bytes)
}

/// A small file as bytes (at most `max_bytes`).
pub fn read_bytes(p: &Path, max_bytes: u32) -> Result<Vec<u8>, FactError> {
    raw::read_bytes(p, max_bytes)
}

/// The time of this plan call, milliseconds since the Unix epoch (UTC).
pub fn now_ms() -> i64 {
    raw::now_ms()
}

/// The site and the job's servers.
pub fn topology() -> Topology {
    raw::site_topology()
}

/// What the site's clocks show at `ms` (milliseconds since the Unix epoch), in its time zone,
/// by the host's time zone database: for a product that keeps times of day.
pub fn site_time(ms: i64) -> Result<LocalTime, FactError> {
    raw::site_time(ms)
}

/// The host's explanation of a failed fact, in a sentence.
pub fn explain(e: &FactError) -> String {
    match e {
        FactError::RootNotGranted(r) => format!("root `{r}` is not granted to this job"),
        FactError::InvalidPath(m) => format!("invalid path: {m}"),
        FactError::NotFound(p) => format!("{p} does not exist"),
        FactError::TooLarge(n) => format!("file too large ({n} bytes)"),
        FactError::NotText(p) => format!("{p} is not UTF-8 text"),
        FactError::Io(m) => format!("I/O error: {m}"),
    }
}

impl From<FactError> for PlanError {
    fn from(e: FactError) -> Self {
        PlanError::Facts(explain(&e))
    }
}
