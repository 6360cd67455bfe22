//! Facts from the real filesystem, read-only, through cap-std.

use super::{DirEntry, EntryKind, FactError, FactSource, FileStat, Topology};
use crate::plan::Location;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, FileType, Metadata};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// One granted root: where it is, and a capability on it when it exists.
struct GrantedRoot {
    path: PathBuf,
    dir: Option<Dir>,
}

/// Answers facts from real directories. Each root is opened once as a capability, so neither
/// `..` nor a symlink can lead a fact outside it. A root whose directory does not exist yet (a
/// backup set about to be made) reads as empty, with the free space of its nearest parent.
pub struct RealFacts {
    roots: BTreeMap<String, GrantedRoot>,
    now_ms: i64,
    topology: Topology,
    /// The set a backup links from (being read while the plugin plans), and what it holds by
    /// the fingerprint the link rule compares.
    previous: std::sync::Arc<crate::sets::PreviousLoad>,
    fingerprints: std::sync::OnceLock<std::collections::HashSet<Fingerprint>>,
}

/// A source file as a backup saw it: what must be the same for it to be linked, not copied.
type Fingerprint = (u64, crate::tree::Time, u64, crate::tree::Time);

impl RealFacts {
    /// Opens every root. `roots` maps root names to directories.
    pub fn open(
        roots: impl IntoIterator<Item = (String, PathBuf)>,
        topology: Topology,
    ) -> std::io::Result<Self> {
        let mut map = BTreeMap::new();
        for (name, path) in roots {
            let dir = match Dir::open_ambient_dir(&path, ambient_authority()) {
                Ok(d) => Some(d),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("cannot open root `{name}` at {}: {e}", path.display()),
                    ));
                }
            };
            map.insert(name, GrantedRoot { path, dir });
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Ok(RealFacts {
            roots: map,
            now_ms,
            topology,
            previous: std::sync::Arc::new(crate::sets::PreviousLoad::ready(None)),
            fingerprints: std::sync::OnceLock::new(),
        })
    }

    /// Answers `backup-size` against the set a backup links from: its files that were copied
    /// from a live tree, by inode, ctime, size and mtime.
    pub fn with_previous_set(
        mut self,
        previous: std::sync::Arc<crate::sets::PreviousLoad>,
    ) -> Self {
        self.previous = previous;
        self
    }

    fn fingerprints(&self) -> &std::collections::HashSet<Fingerprint> {
        self.fingerprints.get_or_init(|| match self.previous.get() {
            Some(p) => p
                .link
                .files
                .values()
                .map(|f| (f.source.ino, f.source.ctime, f.size, f.mtime))
                .collect(),
            None => Default::default(),
        })
    }

    /// Where a location is on this machine: its root's directory joined with its path, once
    /// the root is granted and the path checked (relative, no `..`). For a command's working
    /// directory; facts themselves go through the root's capability.
    pub fn local_path(&self, p: &Location) -> Result<PathBuf, FactError> {
        let root = super::granted(&self.roots, p)?;
        Ok(if p.path.is_empty() {
            root.path.clone()
        } else {
            root.path.join(&p.path)
        })
    }

    /// The names of the granted roots.
    pub fn root_names(&self) -> impl Iterator<Item = &str> {
        self.roots.keys().map(String::as_str)
    }

    /// A root's state for `hokan servers check`: whether it was opened, can be listed and
    /// written (as this process's user, on its mount), and its volume's free space.
    pub fn check_root(&self, name: &str) -> crate::remote::RootCheck {
        use rustix::fs::{Access, AtFlags};
        let Some(root) = self.roots.get(name) else {
            return crate::remote::RootCheck {
                exists: false,
                readable: false,
                writable: false,
                free_bytes: None,
            };
        };
        let can = |how| {
            root.dir
                .as_ref()
                .is_some_and(|d| rustix::fs::accessat(d, ".", how, AtFlags::EACCESS).is_ok())
        };
        crate::remote::RootCheck {
            exists: root.dir.is_some(),
            readable: can(Access::READ_OK | Access::EXEC_OK)
                && root.dir.as_ref().is_some_and(|d| d.entries().is_ok()),
            writable: can(Access::WRITE_OK | Access::EXEC_OK),
            free_bytes: available_space(&root.path).ok(),
        }
    }

    /// Fixes the clock the plugin sees (tests, reproducible plans).
    pub fn with_now_ms(mut self, now_ms: i64) -> Self {
        self.now_ms = now_ms;
        self
    }

    /// The root's capability and the path inside it; `Ok(None)` when the root does not exist.
    fn resolve<'a>(&'a self, p: &'a Location) -> Result<Option<(&'a Dir, &'a str)>, FactError> {
        let root = super::granted(&self.roots, p)?;
        let rel = if p.path.is_empty() {
            "."
        } else {
            p.path.as_str()
        };
        Ok(root.dir.as_ref().map(|d| (d, rel)))
    }

    fn missing(p: &Location) -> FactError {
        FactError::NotFound(p.to_string())
    }
}

fn io_err(p: &Location, e: std::io::Error) -> FactError {
    match e.kind() {
        std::io::ErrorKind::NotFound => FactError::NotFound(p.to_string()),
        _ => FactError::Io(format!("{p}: {e}")),
    }
}

fn kind(t: FileType) -> EntryKind {
    if t.is_symlink() {
        EntryKind::Symlink
    } else if t.is_dir() {
        EntryKind::Dir
    } else if t.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

fn file_stat(m: &Metadata) -> FileStat {
    let mtime_ms = m
        .modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    FileStat {
        kind: kind(m.file_type()),
        size: if m.is_file() { m.len() } else { 0 },
        mtime_ms,
        readonly: m.permissions().readonly(),
    }
}

fn tree_size(dir: &Dir) -> std::io::Result<u64> {
    let mut total = 0u64;
    for entry in dir.entries()? {
        let entry = entry?;
        let t = entry.file_type()?;
        if t.is_dir() {
            total = total.saturating_add(tree_size(&entry.open_dir()?)?);
        } else if t.is_file() {
            total = total.saturating_add(entry.metadata()?.len());
        }
    }
    Ok(total)
}

/// Free space of the volume holding `path`, or of its nearest existing ancestor.
pub fn available_space(path: &Path) -> std::io::Result<u64> {
    let mut p = path;
    loop {
        match fs4::available_space(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                p = p.parent().ok_or(e)?;
            }
            other => return other,
        }
    }
}

/// A name as a plugin sees it. Plugins speak UTF-8 (WIT strings), so a name that is not UTF-8
/// (a Shift_JIS attachment) is shown with its other bytes as `\xNN`: the plugin still sees that
/// the entry exists, counts it and can report it, and a path it builds from that form names no
/// real file, which the host then refuses by name. Copies never go through this: they walk the
/// real names as bytes.
pub(crate) fn plugin_name(name: std::ffi::OsString) -> String {
    name.into_string().unwrap_or_else(|n| {
        use std::os::unix::ffi::OsStringExt;
        crate::tree::Bytes(n.into_vec()).to_string()
    })
}

/// The device (filesystem) holding `path`, or its nearest existing ancestor.
fn device_of(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut p = path;
    loop {
        match std::fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                p = p.parent().ok_or(e)?;
            }
            other => return other.map(|m| m.dev()),
        }
    }
}

impl FactSource for RealFacts {
    fn exists(&self, p: &Location) -> Result<bool, FactError> {
        let Some((dir, rel)) = self.resolve(p)? else {
            return Ok(false);
        };
        match dir.symlink_metadata(rel) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(p, e)),
        }
    }

    fn list_dir(&self, p: &Location) -> Result<Vec<DirEntry>, FactError> {
        let (dir, rel) = self.resolve(p)?.ok_or_else(|| Self::missing(p))?;
        let mut out = Vec::new();
        for entry in dir.read_dir(rel).map_err(|e| io_err(p, e))? {
            let entry = entry.map_err(|e| io_err(p, e))?;
            let meta = entry.metadata().map_err(|e| io_err(p, e))?;
            out.push(DirEntry {
                name: plugin_name(entry.file_name()),
                kind: kind(meta.file_type()),
                size: if meta.is_file() { meta.len() } else { 0 },
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn stat(&self, p: &Location) -> Result<FileStat, FactError> {
        let (dir, rel) = self.resolve(p)?.ok_or_else(|| Self::missing(p))?;
        dir.symlink_metadata(rel)
            .map(|m| file_stat(&m))
            .map_err(|e| io_err(p, e))
    }

    fn tree_size(&self, p: &Location) -> Result<u64, FactError> {
        let (dir, rel) = self.resolve(p)?.ok_or_else(|| Self::missing(p))?;
        let meta = dir.symlink_metadata(rel).map_err(|e| io_err(p, e))?;
        if !meta.is_dir() {
            return Ok(if meta.is_file() { meta.len() } else { 0 });
        }
        let sub = dir.open_dir(rel).map_err(|e| io_err(p, e))?;
        tree_size(&sub).map_err(|e| io_err(p, e))
    }

    /// The tree's regular files, each inode once (hard links stay links), less those the set a
    /// backup links from holds unchanged. The tree is walked while that set is still being read.
    fn backup_size(&self, p: &Location) -> Result<u64, FactError> {
        let Some((dir, rel)) = self.resolve(p)? else {
            return Err(Self::missing(p));
        };
        let rel = if rel == "." {
            crate::tree::RelPath::root()
        } else {
            crate::tree::RelPath::from(rel)
        };
        let err = |e: std::io::Error| io_err(p, e);
        let top = std::os::fd::AsFd::as_fd(dir);
        let parent = crate::tree::scan::open_path(top, &rel.parent()).map_err(err)?;
        let name = if rel.is_empty() {
            b".".to_vec()
        } else {
            rel.file_name().to_vec()
        };
        let opts = crate::tree::ScanOptions {
            xattrs: crate::tree::scan::Attrs::None,
            skip: &|_| false,
        };
        let nodes = crate::tree::scan(std::os::fd::AsFd::as_fd(&parent), &name, opts)
            .map_err(|e| io_err(p, e.source))?;
        let previous = self.fingerprints();
        Ok(nodes
            .iter()
            .filter(|n| n.meta.kind == crate::tree::Kind::File && n.first.is_none())
            .filter(|n| {
                let m = &n.meta;
                !previous.contains(&(m.ino, m.ctime, m.size, m.mtime))
            })
            .fold(0u64, |a, n| a.saturating_add(n.meta.size)))
    }

    fn free_space(&self, root: &str) -> Result<u64, FactError> {
        let r = self
            .roots
            .get(root)
            .ok_or_else(|| FactError::RootNotGranted(root.to_string()))?;
        available_space(&r.path).map_err(|e| FactError::Io(format!("{}: {e}", r.path.display())))
    }

    fn same_volume(&self, a: &str, b: &str) -> Result<bool, FactError> {
        let device = |root: &str| -> Result<u64, FactError> {
            let r = self
                .roots
                .get(root)
                .ok_or_else(|| FactError::RootNotGranted(root.to_string()))?;
            device_of(&r.path).map_err(|e| FactError::Io(format!("{}: {e}", r.path.display())))
        };
        Ok(device(a)? == device(b)?)
    }

    fn read(&self, p: &Location, max_bytes: u32) -> Result<Vec<u8>, FactError> {
        let (dir, rel) = self.resolve(p)?.ok_or_else(|| Self::missing(p))?;
        let file = dir.open(rel).map_err(|e| io_err(p, e))?;
        let len = file.metadata().map_err(|e| io_err(p, e))?.len();
        if len > u64::from(max_bytes) {
            return Err(FactError::TooLarge(len));
        }
        let mut buf = Vec::with_capacity(len as usize);
        file.take(u64::from(max_bytes) + 1)
            .read_to_end(&mut buf)
            .map_err(|e| io_err(p, e))?;
        if buf.len() as u64 > u64::from(max_bytes) {
            return Err(FactError::TooLarge(buf.len() as u64));
        }
        Ok(buf)
    }

    fn now_ms(&self) -> i64 {
        self.now_ms
    }

    fn topology(&self) -> Topology {
        self.topology.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(dir: &Path) -> RealFacts {
        RealFacts::open(
            [
                ("data".to_string(), dir.join("data")),
                ("set".to_string(), dir.join("not/yet")),
            ],
            Topology::default(),
        )
        .unwrap()
    }

    #[test]
    fn backup_size_counts_only_what_the_newest_set_cannot_link() {
        use crate::sets::manifest;
        use crate::tree::{RelPath, Source};
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data/mw/data");
        std::fs::create_dir_all(&data).unwrap();
        for (name, len) in [("same.odb", 1000), ("changed.odb", 300), ("new.odb", 20)] {
            std::fs::write(data.join(name), vec![1u8; len]).unwrap();
        }
        // The "previous set" recorded what the backup saw of two of them.
        let set = tmp.path().join("set");
        std::fs::create_dir_all(set.join("data")).unwrap();
        let mut known = manifest::Known::new();
        for name in ["same.odb", "changed.odb"] {
            std::fs::copy(data.join(name), set.join("data").join(name)).unwrap();
            let m = crate::tree::meta::stat_at(
                std::os::fd::AsFd::as_fd(&crate::tree::meta::open_dir(&data).unwrap()),
                name.as_bytes(),
            )
            .unwrap();
            let copy = set.join("data").join(name);
            std::fs::File::options()
                .write(true)
                .open(&copy)
                .unwrap()
                .set_modified(
                    std::time::UNIX_EPOCH + std::time::Duration::new(m.mtime.0 as u64, m.mtime.1),
                )
                .unwrap();
            known.insert(
                RelPath::from(format!("data/{name}").as_str()),
                (
                    String::new(),
                    Some(Source {
                        ino: m.ino,
                        ctime: m.ctime,
                    }),
                ),
            );
        }
        let head = manifest::Manifest {
            format_version: manifest::FORMAT_VERSION.into(),
            hokan_version: "0".into(),
            site: "s".into(),
            job: "j".into(),
            set: "20261121T021000Z".into(),
            operation: "backup".into(),
            plugin: crate::plan::document::PluginRef {
                name: "p".into(),
                version: "1".into(),
                sha256: String::new(),
            },
            started: String::new(),
            kept: None,
            finished: String::new(),
            digest: String::new(),
            owners: false,
            entries: vec![],
        };
        manifest::write(&set, head, &known, Vec::new()).unwrap();
        std::fs::write(data.join("changed.odb"), vec![2u8; 300]).unwrap();
        let loc = Location::new("data", "mw/data");
        assert_eq!(
            facts(tmp.path()).backup_size(&loc).unwrap(),
            1320,
            "no set: everything"
        );
        let previous = crate::sets::Previous::read(tmp.path(), "set").unwrap();
        let previous = std::sync::Arc::new(crate::sets::PreviousLoad::ready(Some(previous)));
        let f = facts(tmp.path()).with_previous_set(previous);
        assert_eq!(
            f.backup_size(&loc).unwrap(),
            320,
            "the unchanged file is linked"
        );
        assert_eq!(f.tree_size(&loc).unwrap(), 1320);
    }

    #[test]
    fn reads_inside_the_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("data/mw/data")).unwrap();
        std::fs::write(tmp.path().join("data/mw/data/a.odb"), b"12345").unwrap();
        std::fs::write(tmp.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), tmp.path().join("data/link"))
            .unwrap();
        let f = facts(tmp.path());
        let loc = |p: &str| Location::new("data", p);
        assert!(f.exists(&loc("mw/data/a.odb")).unwrap());
        assert_eq!(f.tree_size(&loc("mw")).unwrap(), 5);
        assert_eq!(f.read(&loc("mw/data/a.odb"), 5).unwrap(), b"12345");
        assert_eq!(
            f.read(&loc("mw/data/a.odb"), 4),
            Err(FactError::TooLarge(5))
        );
        assert!(matches!(
            f.read(&loc("../secret"), 10),
            Err(FactError::InvalidPath(_))
        ));
        assert!(matches!(
            f.read(&loc("/etc/passwd"), 10),
            Err(FactError::InvalidPath(_))
        ));
        // The symlink is seen as a symlink and cannot be followed out of the root.
        assert_eq!(f.stat(&loc("link")).unwrap().kind, EntryKind::Symlink);
        assert!(f.read(&loc("link"), 10).is_err());
        assert!(matches!(
            f.exists(&Location::new("other", "")),
            Err(FactError::RootNotGranted(_))
        ));
    }

    #[test]
    fn roots_in_one_filesystem_share_a_volume() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("data")).unwrap();
        let f = facts(tmp.path());
        // `set` does not exist yet: its nearest existing parent counts.
        assert!(f.same_volume("data", "set").unwrap());
        assert!(matches!(
            f.same_volume("data", "elsewhere"),
            Err(FactError::RootNotGranted(_))
        ));
        // /proc is another filesystem than any temporary directory.
        let other = RealFacts::open(
            [
                ("data".to_string(), tmp.path().join("data")),
                ("proc".to_string(), std::path::PathBuf::from("/proc")),
            ],
            Topology::default(),
        )
        .unwrap();
        assert!(!other.same_volume("data", "proc").unwrap());
    }

    #[test]
    fn a_root_not_made_yet_is_empty_with_its_parents_free_space() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("data")).unwrap();
        let f = facts(tmp.path());
        assert!(!f.exists(&Location::new("set", "data")).unwrap());
        assert!(f.free_space("set").unwrap() > 0);
    }
}
