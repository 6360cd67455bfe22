//! Read-only facts about a site, as a plugin sees them while planning.
//!
//! [`FactSource`] is served by the real filesystem ([`RealFacts`], through cap-std, read-only)
//! and, for dry runs, by a simulated world. The runtime answers the plugin's `facts` imports from
//! whichever source a call was given.

mod real;
mod routed;

pub(crate) use real::plugin_name;
pub use real::{RealFacts, available_space};
pub use routed::Routed;

use serde::{Deserialize, Serialize};

/// What kind of entry a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// Anything else (device, socket...).
    Other,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The entry's file name.
    pub name: String,
    /// Its kind.
    pub kind: EntryKind,
    /// Size in bytes for files, 0 otherwise.
    pub size: u64,
}

/// Metadata of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Its kind.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ms since the Unix epoch.
    pub mtime_ms: i64,
    /// Whether the file is read-only.
    pub readonly: bool,
}

/// A server of the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    /// Its name in the policy.
    pub name: String,
    /// Its product role.
    pub role: String,
    /// How to reach it.
    pub address: String,
    /// What the policy says about it, the plugin's defaults applied.
    pub properties: std::collections::BTreeMap<String, String>,
}

/// The site as the policy describes it, for the job being planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Topology {
    /// The site's name.
    pub site: String,
    /// IANA time zone name.
    pub timezone: String,
    /// All servers of the site.
    pub servers: Vec<Server>,
    /// The job.
    pub job: String,
    /// The servers of the job's product instance.
    pub job_servers: Vec<String>,
}

/// Why a fact could not be given. Mirrors the contract's `fact-error` (and crosses the agent
/// protocol as it is, so a remote fact fails as a local one would).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum FactError {
    /// The root is not granted to the job.
    #[error("root `{0}` is not granted to this job")]
    RootNotGranted(String),
    /// The path is malformed or leaves its root.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// Nothing at the path.
    #[error("{0} does not exist")]
    NotFound(String),
    /// Over the caller's size limit.
    #[error("file too large ({0} bytes)")]
    TooLarge(u64),
    /// Not UTF-8.
    #[error("{0} is not UTF-8 text")]
    NotText(String),
    /// Any other I/O failure.
    #[error("I/O error: {0}")]
    Io(String),
}

/// What a fact request names: its root's entry in `roots`, once the root is known to be granted
/// and the path to be relative and free of `..`.
pub fn granted<'a, T>(
    roots: &'a std::collections::BTreeMap<String, T>,
    p: &crate::plan::Location,
) -> Result<&'a T, FactError> {
    let root = roots
        .get(&p.root)
        .ok_or_else(|| FactError::RootNotGranted(p.root.clone()))?;
    crate::plan::check_relative(&p.path)
        .map_err(|why| FactError::InvalidPath(format!("`{}` {why}", p.path)))?;
    Ok(root)
}

/// A read-only view of a site's granted roots.
pub trait FactSource: Send + Sync {
    /// Whether anything exists at `p`.
    fn exists(&self, p: &crate::plan::Location) -> Result<bool, FactError>;
    /// Entries of a directory, sorted by name.
    fn list_dir(&self, p: &crate::plan::Location) -> Result<Vec<DirEntry>, FactError>;
    /// Metadata of `p`, not following symlinks.
    fn stat(&self, p: &crate::plan::Location) -> Result<FileStat, FactError>;
    /// Total size of the files below `p`.
    fn tree_size(&self, p: &crate::plan::Location) -> Result<u64, FactError>;
    /// The bytes a backup of `p` would copy (files the previous set does not hold unchanged);
    /// without a previous set to link from, [`FactSource::tree_size`].
    fn backup_size(&self, p: &crate::plan::Location) -> Result<u64, FactError> {
        self.tree_size(p)
    }
    /// Bytes available on the volume of a root.
    fn free_space(&self, root: &str) -> Result<u64, FactError>;
    /// Whether two roots are on the same volume.
    fn same_volume(&self, a: &str, b: &str) -> Result<bool, FactError>;
    /// A file's bytes, refused above `max_bytes`.
    fn read(&self, p: &crate::plan::Location, max_bytes: u32) -> Result<Vec<u8>, FactError>;
    /// The time of this planning, ms since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// The site's topology for this job.
    fn topology(&self) -> Topology;
}

/// No facts at all: every question is refused as outside the grants. What `describe()` is
/// given (a description must not depend on the site), and what a test gives a plugin that
/// should need none.
pub struct NoFacts;

impl FactSource for NoFacts {
    fn exists(&self, p: &crate::plan::Location) -> Result<bool, FactError> {
        Err(FactError::RootNotGranted(p.root.clone()))
    }
    fn list_dir(&self, p: &crate::plan::Location) -> Result<Vec<DirEntry>, FactError> {
        Err(FactError::RootNotGranted(p.root.clone()))
    }
    fn stat(&self, p: &crate::plan::Location) -> Result<FileStat, FactError> {
        Err(FactError::RootNotGranted(p.root.clone()))
    }
    fn tree_size(&self, p: &crate::plan::Location) -> Result<u64, FactError> {
        Err(FactError::RootNotGranted(p.root.clone()))
    }
    fn free_space(&self, root: &str) -> Result<u64, FactError> {
        Err(FactError::RootNotGranted(root.into()))
    }
    fn same_volume(&self, a: &str, _: &str) -> Result<bool, FactError> {
        Err(FactError::RootNotGranted(a.into()))
    }
    fn read(&self, p: &crate::plan::Location, _: u32) -> Result<Vec<u8>, FactError> {
        Err(FactError::RootNotGranted(p.root.clone()))
    }
    fn now_ms(&self) -> i64 {
        0
    }
    fn topology(&self) -> Topology {
        Topology::default()
    }
}
