//! `manifest.json`: what a backup set holds, and the check that it still holds it.
//!
//! A set's manifest lists every directory, file and symbolic link in the set with, for files,
//! size, mtime, mode and BLAKE3 hash. It is written last, just before the set gets its final
//! name, so a set with a manifest is complete. `docs/execution.md` documents the format.

use crate::plan::document::PluginRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The manifest's file name inside a set.
pub const MANIFEST: &str = "manifest.json";
/// The version of the manifest's shape.
pub const FORMAT_VERSION: &str = "1";
/// Read buffer for hashing and copying.
pub(crate) const BUFFER: usize = 1 << 20;

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
    /// When the set was complete (RFC 3339, UTC).
    pub finished: String,
    /// Every entry of the set except the manifest, in path order.
    pub entries: Vec<Entry>,
}

/// One entry of a set; paths are relative to the set, `/`-separated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Entry {
    /// A directory.
    Dir {
        /// Where.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Where.
        path: String,
        /// Bytes.
        size: u64,
        /// Modification time, milliseconds since the Unix epoch.
        mtime_ms: i64,
        /// Permission bits.
        mode: u32,
        /// BLAKE3 of the contents, hex.
        blake3: String,
    },
    /// A symbolic link, kept as a link.
    Symlink {
        /// Where.
        path: String,
        /// What it points to.
        target: String,
    },
}

impl Entry {
    /// The entry's path in the set.
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
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

impl Manifest {
    /// Reads the manifest of the set in `dir`.
    pub fn read(dir: &Path) -> Result<Manifest, SetError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read(&path).map_err(io_err(&path))?;
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| SetError::BadManifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if m.format_version != FORMAT_VERSION {
            return Err(SetError::BadManifest {
                path,
                message: format!(
                    "format_version {} is not {FORMAT_VERSION}; use the hokan that wrote it",
                    m.format_version
                ),
            });
        }
        Ok(m)
    }

    /// The file entries by path.
    pub fn files(&self) -> BTreeMap<&str, &Entry> {
        self.entries
            .iter()
            .filter(|e| matches!(e, Entry::File { .. }))
            .map(|e| (e.path(), e))
            .collect()
    }
}

/// BLAKE3 (hex) and length of everything `r` yields.
pub fn hash_reader(mut r: impl Read) -> std::io::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; BUFFER];
    let mut len = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), len))
}

/// Milliseconds since the epoch of a file's mtime.
pub fn mtime_ms(m: &std::fs::Metadata) -> i64 {
    m.mtime() * 1000 + m.mtime_nsec() / 1_000_000
}

/// Every entry below `dir` (not following links), in path order, files not yet hashed: their
/// `blake3` is empty.
pub fn scan(dir: &Path) -> Result<Vec<Entry>, SetError> {
    let mut out = Vec::new();
    scan_into(dir, "", &mut out)?;
    Ok(out)
}

fn scan_into(base: &Path, rel: &str, out: &mut Vec<Entry>) -> Result<(), SetError> {
    let dir = base.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(&dir))?;
    names.sort();
    for name in names {
        let name = name.to_string_lossy();
        let path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        if rel.is_empty() && name == MANIFEST {
            continue;
        }
        let full = base.join(&path);
        let m = std::fs::symlink_metadata(&full).map_err(io_err(&full))?;
        let mode = m.permissions().mode() & 0o7777;
        if m.is_dir() {
            out.push(Entry::Dir {
                path: path.clone(),
                mode,
            });
            scan_into(base, &path, out)?;
        } else if m.file_type().is_symlink() {
            let target = std::fs::read_link(&full).map_err(io_err(&full))?;
            out.push(Entry::Symlink {
                path,
                target: target.to_string_lossy().into_owned(),
            });
        } else {
            out.push(Entry::File {
                path,
                size: m.len(),
                mtime_ms: mtime_ms(&m),
                mode,
                blake3: String::new(),
            });
        }
    }
    Ok(())
}

/// One way a set differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum Problem {
    /// The file's contents changed.
    Mismatch {
        /// Which file.
        path: String,
        /// The manifest's hash.
        expected: String,
        /// The hash now.
        actual: String,
    },
    /// The manifest lists it; the set lacks it.
    Missing {
        /// Which entry.
        path: String,
    },
    /// The set has it; the manifest does not.
    Extra {
        /// Which entry.
        path: String,
    },
    /// It is there, but a different kind of entry, or a link to elsewhere.
    Changed {
        /// Which entry.
        path: String,
        /// What differs.
        detail: String,
    },
    /// It could not be read.
    Unreadable {
        /// Which file.
        path: String,
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
                "{path}: contents differ from the manifest (blake3 {} expected, {} found)",
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

/// What `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The set's manifest.
    #[serde(skip)]
    pub manifest: Manifest,
    /// Files hashed.
    pub files: u64,
    /// Bytes hashed.
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

/// Re-hashes the set in `dir` against its manifest. Problems with the set's files are
/// collected, not returned as errors; only an unreadable manifest or directory is an error.
pub fn verify(dir: &Path) -> Result<Verification, SetError> {
    use rayon::prelude::*;
    let manifest = Manifest::read(dir)?;
    let found = scan(dir)?;
    let found: BTreeMap<&str, &Entry> = found.iter().map(|e| (e.path(), e)).collect();
    let listed: BTreeMap<&str, &Entry> = manifest.entries.iter().map(|e| (e.path(), e)).collect();
    let mut problems: Vec<Problem> = Vec::new();
    let mut to_hash = Vec::new();
    for (path, want) in &listed {
        let Some(have) = found.get(path) else {
            problems.push(Problem::Missing {
                path: path.to_string(),
            });
            continue;
        };
        match (want, have) {
            (Entry::File { size, blake3, .. }, Entry::File { size: now, .. }) => {
                to_hash.push((*path, *size, *now, blake3.as_str()));
            }
            (Entry::Dir { .. }, Entry::Dir { .. }) => {}
            (Entry::Symlink { target: a, .. }, Entry::Symlink { target: b, .. }) if a == b => {}
            (Entry::Symlink { target: a, .. }, Entry::Symlink { target: b, .. }) => {
                problems.push(Problem::Changed {
                    path: path.to_string(),
                    detail: format!("the link points to {b}, not {a}"),
                })
            }
            _ => problems.push(Problem::Changed {
                path: path.to_string(),
                detail: format!("is a {}, the manifest says {}", kind(have), kind(want)),
            }),
        }
    }
    for path in found.keys().filter(|p| !listed.contains_key(*p)) {
        problems.push(Problem::Extra {
            path: path.to_string(),
        });
    }
    let hashed: Vec<(Option<Problem>, u64)> = to_hash
        .par_iter()
        .map(|&(path, size, now, want)| {
            let full = dir.join(path);
            match std::fs::File::open(&full).and_then(hash_reader) {
                Err(e) => (
                    Some(Problem::Unreadable {
                        path: path.to_string(),
                        error: e.to_string(),
                    }),
                    0,
                ),
                Ok((actual, len)) if actual != want => (
                    Some(if size != now {
                        Problem::Changed {
                            path: path.to_string(),
                            detail: format!(
                                "is {now} bytes, the manifest says {size} (contents differ)"
                            ),
                        }
                    } else {
                        Problem::Mismatch {
                            path: path.to_string(),
                            expected: want.to_string(),
                            actual,
                        }
                    }),
                    len,
                ),
                Ok((_, len)) => (None, len),
            }
        })
        .collect();
    let files = hashed.len() as u64;
    let bytes = hashed.iter().map(|(_, b)| b).sum();
    problems.extend(hashed.into_iter().filter_map(|(p, _)| p));
    problems.sort_by(|a, b| problem_path(a).cmp(problem_path(b)));
    Ok(Verification {
        manifest,
        files,
        bytes,
        problems,
    })
}

fn problem_path(p: &Problem) -> &str {
    match p {
        Problem::Mismatch { path, .. }
        | Problem::Missing { path }
        | Problem::Extra { path }
        | Problem::Changed { path, .. }
        | Problem::Unreadable { path, .. } => path,
    }
}

fn kind(e: &Entry) -> &'static str {
    match e {
        Entry::Dir { .. } => "directory",
        Entry::File { .. } => "file",
        Entry::Symlink { .. } => "symbolic link",
    }
}

/// Writes a manifest for the finished tree in `dir`: files whose hash `known` gives (by path)
/// keep it, the others are hashed now. The manifest is written under a temporary name, synced
/// and renamed, so it is either whole or absent.
pub fn write(
    dir: &Path,
    mut head: Manifest,
    known: &BTreeMap<String, String>,
) -> Result<Manifest, SetError> {
    use rayon::prelude::*;
    let mut entries = scan(dir)?;
    entries
        .par_iter_mut()
        .try_for_each(|e| -> Result<(), SetError> {
            if let Entry::File { path, blake3, .. } = e {
                *blake3 = match known.get(path.as_str()) {
                    Some(h) => h.clone(),
                    None => {
                        let full = dir.join(path.as_str());
                        std::fs::File::open(&full)
                            .and_then(hash_reader)
                            .map_err(io_err(&full))?
                            .0
                    }
                };
            }
            Ok(())
        })?;
    head.entries = entries;
    let tmp = dir.join(format!(".{MANIFEST}.tmp"));
    let json = serde_json::to_vec_pretty(&head).expect("a manifest serializes");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, &json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(MANIFEST))?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(io_err(&dir.join(MANIFEST)))?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            finished: String::new(),
            entries: vec![],
        }
    }

    #[test]
    fn a_set_verifies_until_it_is_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("data/sub")).unwrap();
        std::fs::write(d.join("data/a.odb"), b"alpha").unwrap();
        std::fs::write(d.join("data/sub/b"), b"beta").unwrap();
        std::os::unix::fs::symlink("a.odb", d.join("data/link")).unwrap();
        let m = write(d, head(), &BTreeMap::new()).unwrap();
        assert_eq!(
            m.entries.iter().map(Entry::path).collect::<Vec<_>>(),
            ["data", "data/a.odb", "data/link", "data/sub", "data/sub/b"]
        );
        let v = verify(d).unwrap();
        assert!(v.ok(), "{:?}", v.problems);
        assert_eq!((v.files, v.bytes), (2, 9));

        // One flipped byte, one file gone, one file added, one link retargeted.
        std::fs::write(d.join("data/a.odb"), b"alphA").unwrap();
        std::fs::remove_file(d.join("data/sub/b")).unwrap();
        std::fs::write(d.join("data/new"), b"").unwrap();
        std::fs::remove_file(d.join("data/link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("data/link")).unwrap();
        let v = verify(d).unwrap();
        let text: Vec<String> = v.problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        assert!(text[0].starts_with("data/a.odb: contents differ from the manifest"));
        assert_eq!(
            text[1],
            "data/link: the link points to /etc/passwd, not a.odb"
        );
        assert_eq!(text[2], "data/new: extra (not in the manifest)");
        assert_eq!(text[3], "data/sub/b: missing (the manifest lists it)");
    }

    #[test]
    fn known_hashes_are_trusted_and_a_bad_manifest_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("f"), b"x").unwrap();
        let known = BTreeMap::from([("f".to_string(), "feed".to_string())]);
        let m = write(d, head(), &known).unwrap();
        assert!(matches!(&m.entries[0], Entry::File { blake3, .. } if blake3 == "feed"));
        assert!(!verify(d).unwrap().ok());
        std::fs::write(d.join(MANIFEST), b"{\"format_version\": \"1\"").unwrap();
        let e = verify(d).unwrap_err().to_string();
        assert!(e.contains("manifest.json: not a hokan manifest"), "{e}");
    }
}
