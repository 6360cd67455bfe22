//! `manifest.json`: what a backup set holds, and the check that it still holds it.
//!
//! A set's manifest lists every entry in the set: directories, files, hard links, symbolic
//! links, FIFOs and devices, each with mode, numeric owner, mtime in nanoseconds and extended
//! attributes; files also with size, digest ([`crate::tree::digest`]), the inode of the set's
//! copy and what the backup saw of the source (inode and ctime, for the next backup's change
//! check). Names are bytes ([`crate::tree::Bytes`]). It is written last, just before the set
//! gets its final name, so a set with a manifest is complete. `docs/execution.md` documents the
//! format.

use crate::plan::document::PluginRef;
use crate::tree::{self, Bytes, Kind, Meta, Node, RelPath, ScanOptions, Source, Time, Xattrs};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The manifest's file name inside a set.
pub const MANIFEST: &str = "manifest.json";
const MANIFEST_TMP: &str = ".manifest.json.tmp";
/// The version of the manifest's shape.
pub const FORMAT_VERSION: &str = "2";

/// The contents of a backup set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_VERSION`] for manifests this host writes.
    pub format_version: String,
    /// The hokan that wrote the set.
    pub hokan_version: String,
    /// The site.
    pub site: String,
    /// The job whose set it is.
    pub job: String,
    /// The set's id (its directory name).
    pub set: String,
    /// The operation that wrote it.
    pub operation: String,
    /// The plugin that planned it.
    pub plugin: PluginRef,
    /// When the run started (RFC 3339, UTC).
    pub started: String,
    /// Why the set is kept though the run did not finish it: a step had passed its point of no
    /// return (the product no longer holds what the set does), then something failed. Such a
    /// set is never listed as good, never pruned, and is restored from only by name. Written
    /// before `finished`, so that the head alone tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
    /// When the set was complete (RFC 3339, UTC, nanoseconds): "newest" means newest by this.
    pub finished: String,
    /// How file contents are digested ([`tree::digest::ALGORITHM`]).
    pub digest: String,
    /// Whether the set's entries carry their owners: only a set written as root does, and only
    /// then does `verify` compare them.
    pub owners: bool,
    /// Every entry of the set except the manifest, in path order.
    pub entries: Vec<Entry>,
}

/// One entry of a set; paths are relative to the set, `/`-separated, bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Where.
    pub path: RelPath,
    /// What kind of entry.
    pub kind: Kind,
    /// Another name of the same inode, listed earlier: this entry is a hard link to it, and
    /// its other fields are that inode's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardlink: Option<RelPath>,
    /// Permission bits with set-uid, set-gid and sticky.
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Time,
    /// Bytes (files).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Digest of the contents (files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The inode of the set's copy (files): linking checks it before trusting the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// What the backup saw of the source (files copied from a live tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// A link's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Bytes>,
    /// A device's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Extended attributes, POSIX ACLs included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: Xattrs,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Entry {
    fn of(n: &Node, digest: Option<String>, source: Option<Source>) -> Entry {
        let m = &n.meta;
        let file = m.kind == Kind::File;
        Entry {
            path: n.path.clone(),
            kind: m.kind,
            hardlink: n.first.clone(),
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            mtime: m.mtime,
            size: if file { m.size } else { 0 },
            digest,
            ino: file.then_some(m.ino),
            source,
            target: n.target.clone(),
            rdev: matches!(m.kind, Kind::CharDevice | Kind::BlockDevice).then_some(m.rdev),
            xattrs: n.xattrs.clone(),
        }
    }

    /// The entry as the scan of a faithful set would find it (times and modes as recorded).
    pub fn node(&self) -> Node {
        Node {
            path: self.path.clone(),
            meta: Meta {
                kind: self.kind,
                mode: self.mode,
                uid: self.uid,
                gid: self.gid,
                size: self.size,
                mtime: self.mtime,
                atime: Time::default(),
                ctime: Time::default(),
                ino: self.ino.unwrap_or(0),
                dev: 0,
                nlink: 0,
                rdev: self.rdev.unwrap_or(0),
                blocks: 0,
            },
            target: self.target.clone(),
            xattrs: self.xattrs.clone(),
            first: self.hardlink.clone(),
        }
    }

    /// Whether this is a regular file's first name (the one that has contents to check).
    pub fn is_file(&self) -> bool {
        self.kind == Kind::File && self.hardlink.is_none()
    }
}

/// A set that cannot be read or checked.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// A file of the set could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The manifest is not one hokan wrote.
    #[error("{}: not a hokan manifest: {message}; the set is incomplete or damaged, do not restore from it", path.display())]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SetError + '_ {
    move |source| SetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn scan_err(dir: &Path) -> impl FnOnce(tree::ScanError) -> SetError + '_ {
    move |e| SetError::Io {
        path: dir.join(e.path.as_path()),
        source: e.source,
    }
}

impl Manifest {
    /// Reads the manifest of the set in `dir`.
    pub fn read(dir: &Path) -> Result<Manifest, SetError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read(&path).map_err(io_err(&path))?;
        let parsed = serde_json::from_slice::<Manifest>(&text);
        // A manifest of another format may not parse at all: its version explains why.
        let version = match &parsed {
            Ok(m) => Some(m.format_version.clone()),
            Err(_) => {
                #[derive(Deserialize)]
                struct Version {
                    format_version: Option<String>,
                }
                serde_json::from_slice::<Version>(&text)
                    .ok()
                    .and_then(|v| v.format_version)
            }
        };
        if let Some(v) = version.filter(|v| v != FORMAT_VERSION) {
            return Err(SetError::BadManifest {
                path,
                message: format!(
                    "format_version {v} is not {FORMAT_VERSION}; use the hokan that wrote it{}",
                    if v == "1" {
                        " (format 1 recorded neither owners nor times to the nanosecond; \
                         run a new backup with this hokan)"
                    } else {
                        ""
                    }
                ),
            });
        }
        parsed.map_err(|e| SetError::BadManifest {
            path: path.clone(),
            message: e.to_string(),
        })
    }

    /// When the set in `dir` was completed, read without building its entries (retention and
    /// restores ask this of every set).
    pub fn finished(dir: &Path) -> Result<String, SetError> {
        Manifest::head(dir).map(|h| h.finished)
    }

    /// The head of the set in `dir`'s manifest: when it was completed and whether it is kept
    /// incomplete, read without building its entries (listing asks this of every set).
    pub fn head(dir: &Path) -> Result<Head, SetError> {
        let path = dir.join(MANIFEST);
        let file = std::fs::File::open(&path).map_err(io_err(&path))?;
        let mut found = None;
        let mut kept = None;
        // Every run orders a job's sets by completion, several times, and a set of a 100,000
        // file tree has a manifest of tens of MiB: reading stops at `finished`, which hokan
        // writes before the entries (a manifest written otherwise is read to the end).
        let read = serde::de::DeserializeSeed::deserialize(
            Finished {
                finished: &mut found,
                kept: &mut kept,
            },
            &mut serde_json::Deserializer::from_reader(std::io::BufReader::new(file)),
        );
        match (found, read) {
            (Some(finished), _) => Ok(Head { finished, kept }),
            (None, r) => Err(SetError::BadManifest {
                path,
                message: match r {
                    Err(e) => e.to_string(),
                    Ok(()) => "it has no `finished` field".into(),
                },
            }),
        }
    }

    /// The regular files by path (first names of hard-linked files only).
    pub fn files(&self) -> BTreeMap<&RelPath, &Entry> {
        self.entries
            .iter()
            .filter(|e| e.is_file())
            .map(|e| (&e.path, e))
            .collect()
    }
}

/// Reads a manifest's top-level object up to its `finished` field, puts that field in the
/// `Option`, and then stops the parse with an error (the caller looks at the `Option` first).
/// What [`Manifest::head`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// When the set was completed.
    pub finished: String,
    /// Why it is kept incomplete, for such a set.
    pub kept: Option<String>,
}

struct Finished<'a> {
    finished: &'a mut Option<String>,
    kept: &'a mut Option<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Finished<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Finished<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a manifest (a JSON object)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "finished" {
                *self.finished = Some(map.next_value()?);
                return Err(serde::de::Error::custom("stopped after `finished`"));
            }
            if key == "kept" {
                *self.kept = map.next_value()?;
                continue;
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Opens a set directory without following a link to it.
fn open_set(dir: &Path) -> Result<std::os::fd::OwnedFd, SetError> {
    tree::meta::open_dir(dir).map_err(io_err(dir))
}

/// Every entry below the set directory `fd` (the manifest left out), in walk order. `walked`:
/// walks of some of its top-level directories, still true, which are not walked again.
fn scan_set(
    fd: &std::os::fd::OwnedFd,
    dir: &Path,
    walked: Vec<(RelPath, Vec<Node>)>,
) -> Result<Vec<Node>, SetError> {
    let skip = |p: &RelPath| {
        matches!(p.as_bytes(), b"manifest.json" | b".manifest.json.tmp")
            || walked.iter().any(|(w, _)| w == p)
    };
    let nodes = tree::scan(
        fd.as_fd(),
        b".",
        ScanOptions {
            xattrs: tree::scan::Attrs::All,
            skip: &skip,
        },
    )
    .map_err(scan_err(dir))?;
    let mut nodes = if walked.is_empty() {
        nodes
    } else {
        tree::scan::merge(nodes, walked)
    };
    nodes.remove(0); // the set directory itself
    Ok(nodes)
}

/// The digest of the regular file at `path` below `set`, opened without following links or
/// blocking on a FIFO put in its place.
pub fn digest_at(
    set: std::os::fd::BorrowedFd<'_>,
    path: &RelPath,
    size: u64,
) -> std::io::Result<String> {
    let parent = tree::scan::open_path(set, &path.parent())?;
    let (f, _) = tree::meta::open_file_at(parent.as_fd(), path.file_name())?;
    tree::digest::digest(&f, size)
}

/// One way a set differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum Problem {
    /// The file's contents changed.
    Mismatch {
        /// Which file.
        path: RelPath,
        /// The manifest's digest.
        expected: String,
        /// The digest now.
        actual: String,
    },
    /// The manifest lists it; the set lacks it.
    Missing {
        /// Which entry.
        path: RelPath,
    },
    /// The set has it; the manifest does not.
    Extra {
        /// Which entry.
        path: RelPath,
    },
    /// It is there, but of another kind, mode, owner, time, target or attributes.
    Changed {
        /// Which entry.
        path: RelPath,
        /// What differs.
        detail: String,
    },
    /// It could not be read.
    Unreadable {
        /// Which file.
        path: RelPath,
        /// Why.
        error: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Mismatch {
                path,
                expected,
                actual,
            } => write!(
                f,
                "{path}: contents differ from the manifest (digest {} expected, {} found)",
                &expected[..expected.len().min(16)],
                &actual[..actual.len().min(16)]
            ),
            Problem::Missing { path } => write!(f, "{path}: missing (the manifest lists it)"),
            Problem::Extra { path } => write!(f, "{path}: extra (not in the manifest)"),
            Problem::Changed { path, detail } => write!(f, "{path}: {detail}"),
            Problem::Unreadable { path, error } => write!(f, "{path}: cannot be read: {error}"),
        }
    }
}

impl Problem {
    /// The entry it is about.
    pub fn path(&self) -> &RelPath {
        match self {
            Problem::Mismatch { path, .. }
            | Problem::Missing { path }
            | Problem::Extra { path }
            | Problem::Changed { path, .. }
            | Problem::Unreadable { path, .. } => path,
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The set's manifest.
    #[serde(skip)]
    pub manifest: Manifest,
    /// Files read.
    pub files: u64,
    /// Bytes they hold.
    pub bytes: u64,
    /// Every difference, in path order.
    pub problems: Vec<Problem>,
}

impl Verification {
    /// Whether the set matches its manifest exactly.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the set in `dir` against its manifest: every entry's kind, mode, owner (for a set
/// written as root), mtime, link target, device number, attributes and hard links, and every
/// file's contents, read again. Nothing in the set is opened but regular files, so a FIFO put
/// there cannot hang it. Problems with the set's entries are collected, not returned as errors;
/// only an unreadable manifest or directory is an error.
pub fn verify(dir: &Path) -> Result<Verification, SetError> {
    verify_against(Manifest::read(dir)?, dir)
}

/// Checks the tree in `dir` against `manifest`, as [`verify`] checks a set against its own:
/// a restore test checks the tree it restored from a set against the set's manifest, so that
/// every entry must have come back whole, with its metadata, and nothing else.
pub fn verify_against(manifest: Manifest, dir: &Path) -> Result<Verification, SetError> {
    use rayon::prelude::*;
    let fd = open_set(dir)?;
    let found = scan_set(&fd, dir, Vec::new())?;
    let found: BTreeMap<&RelPath, &Node> = found.iter().map(|n| (&n.path, n)).collect();
    let listed: BTreeMap<&RelPath, &Entry> =
        manifest.entries.iter().map(|e| (&e.path, e)).collect();
    let mut problems: Vec<Problem> = Vec::new();
    let mut to_hash = Vec::new();
    for (path, want) in &listed {
        let Some(have) = found.get(path) else {
            problems.push(Problem::Missing {
                path: (*path).clone(),
            });
            continue;
        };
        let diffs = tree::differences(&want.node(), have, manifest.owners, true);
        let kind_ok = want.kind == have.meta.kind;
        if !diffs.is_empty() {
            problems.push(Problem::Changed {
                path: (*path).clone(),
                detail: diffs.join("; "),
            });
        }
        if kind_ok && want.is_file() {
            to_hash.push((*path, want.size, want.digest.as_deref().unwrap_or("")));
        }
    }
    for path in found.keys().filter(|p| !listed.contains_key(*p)) {
        problems.push(Problem::Extra {
            path: (*path).clone(),
        });
    }
    let hashed: Vec<(Option<Problem>, u64)> = to_hash
        .par_iter()
        .map(
            |&(path, size, want)| match digest_at(fd.as_fd(), path, size) {
                Err(e) => (
                    Some(Problem::Unreadable {
                        path: path.clone(),
                        error: e.to_string(),
                    }),
                    0,
                ),
                Ok(actual) if actual != want => (
                    Some(Problem::Mismatch {
                        path: path.clone(),
                        expected: want.to_string(),
                        actual,
                    }),
                    size,
                ),
                Ok(_) => (None, size),
            },
        )
        .collect();
    let files = hashed.len() as u64;
    let bytes = hashed.iter().map(|(_, b)| b).sum();
    problems.extend(hashed.into_iter().filter_map(|(p, _)| p));
    problems.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(Verification {
        manifest,
        files,
        bytes,
        problems,
    })
}

/// What a copy into the set already knows of a file: its digest and what it saw of the source.
pub type Known = BTreeMap<RelPath, (String, Option<Source>)>;

/// Writes a manifest for the finished tree in `dir`: files whose digest `known` gives (by path)
/// keep it, the others are read now; `walked` are walks of top-level directories of the set
/// that are still true (a verify step's), which are not walked again. The manifest is written
/// under a temporary name, synced and renamed, so it is either whole or absent.
pub fn write(
    dir: &Path,
    mut head: Manifest,
    known: &Known,
    walked: Vec<(RelPath, Vec<Node>)>,
) -> Result<Manifest, SetError> {
    use rayon::prelude::*;
    let fd = open_set(dir)?;
    let nodes = scan_set(&fd, dir, walked)?;
    head.entries = nodes
        .par_iter()
        .map(|n| -> Result<Entry, SetError> {
            if n.meta.kind != Kind::File || n.first.is_some() {
                return Ok(Entry::of(n, None, None));
            }
            let (digest, source) = match known.get(&n.path) {
                Some((d, s)) => (d.clone(), *s),
                None => (
                    digest_at(fd.as_fd(), &n.path, n.meta.size)
                        .map_err(io_err(&dir.join(n.path.as_path())))?,
                    None,
                ),
            };
            Ok(Entry::of(n, Some(digest), source))
        })
        .collect::<Result<_, _>>()?;
    head.entries.sort_by(|a, b| a.path.cmp(&b.path));
    head.digest = tree::digest::ALGORITHM.into();
    let tmp = dir.join(MANIFEST_TMP);
    let mut json = Vec::with_capacity(256 * (head.entries.len() + 1));
    let mut ser = serde_json::Serializer::with_formatter(&mut json, Lines::default());
    head.serialize(&mut ser).expect("a manifest serializes");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        std::io::Write::write_all(&mut f, &json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(MANIFEST))?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(&dir.join(MANIFEST))(e)
    })?;
    Ok(head)
}

/// The manifest's layout: each field of the head on a line of its own, and each entry on one
/// line, compact. A set of 10,000 files has a manifest of about 2 MiB, written, read and parsed
/// on every backup: indenting every field made it twice that and its writing twice as slow,
/// and `grep` or `less` still show one entry per line (`jq .` indents it).
#[derive(Default)]
struct Lines {
    depth: usize,
}

impl Lines {
    /// Before a member: on a line of its own at `depth` (1: the head's fields, 2: the
    /// entries), compact deeper.
    fn separate<W: ?Sized + std::io::Write>(
        &self,
        w: &mut W,
        depth: usize,
        first: bool,
    ) -> std::io::Result<()> {
        match (self.depth == depth, first) {
            (true, true) => w.write_all(b"\n"),
            (true, false) => w.write_all(b",\n"),
            (false, true) => Ok(()),
            (false, false) => w.write_all(b","),
        }
    }
}

impl serde_json::ser::Formatter for Lines {
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.depth += 1;
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.depth -= 1;
        w.write_all(if self.depth == 0 { b"\n}\n" } else { b"}" })
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.separate(w, 1, first)
    }

    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.depth += 1;
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.depth -= 1;
        w.write_all(if self.depth == 1 { b"\n]" } else { b"]" })
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.separate(w, 2, first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    fn head() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION.into(),
            hokan_version: "0".into(),
            site: "s".into(),
            job: "j".into(),
            set: "20261121T021000Z".into(),
            operation: "backup".into(),
            plugin: PluginRef {
                name: "p".into(),
                version: "1".into(),
                sha256: "0".into(),
            },
            started: String::new(),
            kept: None,
            finished: String::new(),
            digest: String::new(),
            owners: tree::meta::is_root(),
            entries: vec![],
        }
    }

    fn problems(d: &Path) -> Vec<String> {
        verify(d)
            .unwrap()
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn finished_is_read_without_the_entries_and_wherever_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(d.join("data/a"), b"alpha").unwrap();
        let m = write(d, head(), &Known::new(), Vec::new()).unwrap();
        assert_eq!(Manifest::finished(d).unwrap(), m.finished);
        let path = d.join(MANIFEST);
        let text = std::fs::read_to_string(&path).unwrap();
        // The entries after `finished` are not read: a manifest cut short there still says it.
        let cut = text.find("\"entries\"").unwrap();
        std::fs::write(&path, &text[..cut + 14]).unwrap();
        assert_eq!(Manifest::finished(d).unwrap(), m.finished);
        // `finished` after the entries is found too.
        let mut v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).unwrap();
        let finished = v.remove("finished").unwrap();
        v.insert("finished".into(), finished);
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(Manifest::finished(d).unwrap(), m.finished);
        // No `finished`, or no JSON: an error naming the file.
        v.remove("finished");
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
        let e = Manifest::finished(d).unwrap_err().to_string();
        assert!(e.contains("manifest.json") && e.contains("finished"), "{e}");
        std::fs::write(&path, b"[1, 2").unwrap();
        let e = Manifest::finished(d).unwrap_err().to_string();
        assert!(e.contains("manifest.json"), "{e}");
    }

    #[test]
    fn a_set_verifies_until_it_is_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("data/sub")).unwrap();
        std::fs::write(d.join("data/a.odb"), b"alpha").unwrap();
        std::fs::write(d.join("data/sub/b"), b"beta").unwrap();
        std::fs::hard_link(d.join("data/sub/b"), d.join("data/sub/c")).unwrap();
        std::os::unix::fs::symlink("a.odb", d.join("data/link")).unwrap();
        let sjis = std::ffi::OsStr::from_bytes(b"\x83e\x83X\x83g\\x");
        std::fs::write(d.join("data").join(sjis), b"sjis").unwrap();
        let m = write(d, head(), &Known::new(), Vec::new()).unwrap();
        assert_eq!(
            m.entries
                .iter()
                .map(|e| e.path.to_string())
                .collect::<Vec<_>>(),
            [
                "data",
                "data/a.odb",
                "data/link",
                "data/sub",
                "data/sub/b",
                "data/sub/c",
                "data/\\x83e\\x83X\\x83g\\\\x",
            ]
        );
        assert_eq!(m.entries[5].hardlink, Some(RelPath::from("data/sub/b")));
        // A verify step's walk of `data`, reused, gives the same entries.
        let set = open_set(d).unwrap();
        let walk = tree::scan(set.as_fd(), b"data", ScanOptions::default()).unwrap();
        let again = write(
            d,
            head(),
            &Known::new(),
            vec![(RelPath::from("data"), walk)],
        )
        .unwrap();
        assert_eq!(again.entries, m.entries);
        // The name that is not UTF-8 survives the JSON.
        let again = Manifest::read(d).unwrap();
        assert_eq!(again, m);
        // One line per field of the head, one per entry.
        let text = std::fs::read_to_string(d.join(MANIFEST)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let entry_lines = lines.iter().filter(|l| l.starts_with("{\"path\":"));
        assert_eq!(entry_lines.count(), m.entries.len(), "{text}");
        assert!(lines.contains(&"\"set\":\"20261121T021000Z\","), "{text}");
        assert_eq!(
            (lines[0], lines[lines.len() - 2], lines[lines.len() - 1]),
            ("{", "]", "}")
        );
        let v = verify(d).unwrap();
        assert!(v.ok(), "{:?}", v.problems);
        assert_eq!((v.files, v.bytes), (3, 13));

        // One flipped byte, one file gone, one file added, one link retargeted, a mode.
        crate::tree::testing::rewrite_keeping_mtime(&d.join("data/a.odb"), b"alphA");
        std::fs::remove_file(d.join("data/sub/c")).unwrap();
        std::fs::write(d.join("data/new"), b"").unwrap();
        std::fs::remove_file(d.join("data/link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("data/link")).unwrap();
        std::fs::set_permissions(
            d.join("data/sub/b"),
            std::fs::Permissions::from_mode(0o6777),
        )
        .unwrap();
        let text = problems(d);
        let has = |needle: &str| {
            assert!(
                text.iter().any(|t| t.contains(needle)),
                "{needle:?} not in {text:#?}"
            )
        };
        has("data/a.odb: contents differ from the manifest");
        has("links to /etc/passwd, not a.odb");
        has("data/new: extra (not in the manifest)");
        has("data/sub/c: missing (the manifest lists it)");
        has("data/sub/b: has mode 6777, not 0644");
    }

    #[test]
    fn a_fifo_planted_in_a_set_is_reported_not_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("f"), b"x").unwrap();
        write(d, head(), &Known::new(), Vec::new()).unwrap();
        std::fs::remove_file(d.join("f")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("f").as_path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let text = problems(d);
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(
            text[0].contains("is a named pipe (FIFO), not a file"),
            "{text:?}"
        );
    }

    #[test]
    fn known_digests_are_trusted_and_bad_or_old_manifests_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("f"), b"x").unwrap();
        let known = Known::from([(RelPath::from("f"), ("feed".to_string(), None))]);
        let m = write(d, head(), &known, Vec::new()).unwrap();
        assert_eq!(m.entries[0].digest.as_deref(), Some("feed"));
        assert!(!verify(d).unwrap().ok());
        std::fs::write(d.join(MANIFEST), b"{\"format_version\": \"2\"").unwrap();
        let e = verify(d).unwrap_err().to_string();
        assert!(e.contains("manifest.json: not a hokan manifest"), "{e}");
        std::fs::write(
            d.join(MANIFEST),
            b"{\"format_version\": \"1\", \"entries\": []}",
        )
        .unwrap();
        let e = verify(d).unwrap_err().to_string();
        assert!(e.contains("format_version 1 is not 2"), "{e}");
    }
}
