//! The modelled world a dry run happens in: files by absolute path, free space per volume,
//! service states per server, and command behaviours.
//!
//! A world is loaded from a fixture file ([`World::load`], format in `docs/simulation.md`) or
//! scanned read-only from real directories ([`World::scan`]). Everything is ordered
//! (`BTreeMap`), so a run over the same world and plan is the same run every time.

use crate::describe::{CommandBehaviour, SimEffect};
use crate::facts::{DirEntry, EntryKind, FactError, FactSource, FileStat, Topology};
use crate::plan::{Location, ServiceState, check_relative};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Bound, Range};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

/// The server name of the host's own machine, for steps with no target.
pub const HOST: &str = "(host)";

/// An entry of the modelled filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A file.
    File(FileNode),
}

/// A modelled file. Its content is an identity: a copy carries its original's, a new or
/// changed file gets a fresh one, so "byte-for-byte the same" is an identity comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNode {
    /// Size in bytes.
    pub size: u64,
    /// Content identity.
    pub content: u64,
    /// Modification time, ms since the Unix epoch.
    pub mtime_ms: i64,
    /// Read-only.
    pub readonly: bool,
    /// Has a bad page (for page-checksum verification).
    pub damaged: bool,
    /// The bytes, when the fixture gave them (facts can read them).
    pub text: Option<Arc<[u8]>>,
}

/// A service as the world models it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceModel {
    /// Its current state.
    pub state: ServiceState,
    /// A start request fails.
    pub fails_to_start: bool,
    /// A stop request fails.
    pub fails_to_stop: bool,
}

/// A command behaviour from a fixture, for one job or for all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOverride {
    /// The job it applies to; `None` is every job.
    pub job: Option<String>,
    /// The behaviour.
    pub behaviour: CommandBehaviour,
}

/// The modelled site.
#[derive(Debug, Clone)]
pub struct World {
    /// Where it came from, for messages.
    pub origin: String,
    /// The clock at the start of a run, ms since the Unix epoch.
    pub now_ms: i64,
    /// Copy throughput, bytes per second.
    pub copy_rate: u64,
    nodes: BTreeMap<String, Node>,
    /// Volume mount paths to free bytes.
    volumes: BTreeMap<String, u64>,
    /// Free bytes of paths on no declared volume.
    default_free: u64,
    services: BTreeMap<(String, String), ServiceModel>,
    /// Fixture command behaviours, before the plugins' own.
    pub commands: Vec<CommandOverride>,
    next_content: u64,
}

/// Why a world fixture or scan cannot be used. Displays as `file:line:column: field: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct WorldError {
    /// The fixture file or scanned directory.
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// The field concerned, when known.
    pub field: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for WorldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((l, c)) = self.position {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// What a path names from the current directory, as the world's keys are: made absolute
/// against it and cleaned lexically. A policy or a world given by a relative path and the same
/// given by an absolute one name the same directories.
pub fn absolute(p: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    normalize(&cwd, p)
}

/// A path made absolute against `base` (absolute: see [`absolute`] for the current
/// directory) and cleaned lexically (`.` and `..` resolved, no
/// trailing `/`), as the world's keys are. Symlinks are not followed: the world has none.
pub fn normalize(base: &Path, p: &Path) -> String {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut parts: Vec<String> = Vec::new();
    for c in joined.components() {
        match c {
            // A name that is not UTF-8 as the real facts show it to a plugin, with `\xNN`
            // escapes: two such names stay two paths (a lossy text made them one).
            Component::Normal(s) => parts.push(match s.to_str() {
                Some(t) => t.to_string(),
                None => crate::tree::Bytes::from(s).to_string(),
            }),
            Component::ParentDir => {
                parts.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    format!("/{}", parts.join("/"))
}

fn join(dir: &str, rel: &str) -> String {
    match (dir, rel) {
        (d, "") => d.to_string(),
        ("/", r) => format!("/{r}"),
        (d, r) => format!("{d}/{r}"),
    }
}

fn parent(p: &str) -> Option<&str> {
    match p.rfind('/') {
        Some(0) if p.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => Some(&p[..i]),
    }
}

/// The keys strictly below `dir`.
fn below(dir: &str) -> (Bound<String>, Bound<String>) {
    if dir == "/" {
        return (Bound::Excluded("/".into()), Bound::Unbounded);
    }
    // '0' is the character after '/'.
    (
        Bound::Included(format!("{dir}/")),
        Bound::Excluded(format!("{dir}0")),
    )
}

/// The largest file whose contents a scan of real directories reads.
pub const SCAN_READS_UP_TO: u64 = 64 * 1024;

impl World {
    /// An empty world at `now_ms` with `free` bytes everywhere.
    pub fn new(origin: impl Into<String>, now_ms: i64, free: u64) -> World {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_string(), Node::Dir);
        World {
            origin: origin.into(),
            now_ms,
            copy_rate: 100 * 1024 * 1024,
            nodes,
            volumes: BTreeMap::new(),
            default_free: free,
            services: BTreeMap::new(),
            commands: Vec::new(),
            next_content: 1,
        }
    }

    /// A fresh content identity.
    pub fn new_content(&mut self) -> u64 {
        self.next_content += 1;
        self.next_content
    }

    /// The entry at an absolute path.
    pub fn node(&self, p: &str) -> Option<&Node> {
        self.nodes.get(p)
    }

    /// The entry at an absolute path, or why it cannot be looked up: as on a real file system
    /// (ENOTDIR), a path through a file is an error, not an absence.
    pub fn lookup(&self, p: &str) -> Result<Option<&Node>, String> {
        if let Some(n) = self.nodes.get(p) {
            return Ok(Some(n));
        }
        let mut at = p;
        while let Some(up) = parent(at) {
            match self.nodes.get(up) {
                Some(Node::File(_)) => return Err(format!("{up} is a file, not a directory")),
                Some(Node::Dir) => return Ok(None),
                None => at = up,
            }
        }
        Ok(None)
    }

    /// Whether a directory is at `p`.
    pub fn is_dir(&self, p: &str) -> bool {
        matches!(self.nodes.get(p), Some(Node::Dir))
    }

    /// Creates a directory and its parents; refuses when a file is in the way.
    pub fn mkdir_p(&mut self, p: &str) -> Result<(), String> {
        let mut at = p;
        let mut missing = Vec::new();
        loop {
            match self.nodes.get(at) {
                Some(Node::Dir) => break,
                Some(Node::File(_)) => return Err(format!("{at} is a file, not a directory")),
                None => missing.push(at.to_string()),
            }
            match parent(at) {
                Some(up) => at = up,
                None => break,
            }
        }
        for m in missing {
            self.nodes.insert(m, Node::Dir);
        }
        Ok(())
    }

    /// Puts a file at `p` (parents created), accounting its size on the volume.
    pub fn put_file(&mut self, p: &str, file: FileNode) -> Result<(), String> {
        if let Some(up) = parent(p) {
            self.mkdir_p(up)?;
        }
        let size = file.size;
        // A file replaced gives its space back; a write that does not fit changes nothing.
        let replaced = match self.nodes.get(p) {
            Some(Node::File(old)) => old.size,
            Some(Node::Dir) => return Err(format!("{p} is a directory")),
            None => 0,
        };
        let free = self.free(p);
        if free.saturating_add(replaced) < size {
            return Err(format!(
                "no space left on the volume of {p}: {size} bytes needed, {free} free"
            ));
        }
        self.add_free(p, replaced);
        self.take_free(p, size);
        self.nodes.insert(p.to_string(), Node::File(file));
        Ok(())
    }

    /// Puts a file that is already there when the world begins: its size is not taken from
    /// the free space the fixture or the scan states.
    fn insert_file(&mut self, p: &str, file: FileNode) -> Result<(), String> {
        if let Some(up) = parent(p) {
            self.mkdir_p(up)?;
        }
        if self.is_dir(p) {
            return Err(format!("{p} is already a directory"));
        }
        self.nodes.insert(p.to_string(), Node::File(file));
        Ok(())
    }

    /// Removes `p` and everything below it, giving their space back. Nothing there is fine.
    pub fn remove(&mut self, p: &str) -> (usize, u64) {
        let mut keys: Vec<String> = self.nodes.range(below(p)).map(|(k, _)| k.clone()).collect();
        if self.nodes.contains_key(p) && p != "/" {
            keys.push(p.to_string());
        }
        let (mut files, mut bytes) = (0, 0u64);
        for k in keys {
            if let Some(Node::File(f)) = self.nodes.remove(&k) {
                files += 1;
                bytes = bytes.saturating_add(f.size);
                self.add_free(&k, f.size);
            }
        }
        (files, bytes)
    }

    /// Renames `from` (and what is below it) to `to`; `to` must not exist, its parent must.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), String> {
        if !self.nodes.contains_key(from) {
            return Err(format!("{from} does not exist"));
        }
        if self.nodes.contains_key(to) {
            return Err(format!("{to} already exists"));
        }
        if to.starts_with(&format!("{from}/")) {
            return Err(format!("cannot move {from} into itself"));
        }
        match parent(to).map(|p| self.nodes.get(p)) {
            Some(Some(Node::Dir)) => {}
            _ => return Err(format!("the directory {to} would go in does not exist")),
        }
        let keys: Vec<String> = std::iter::once(from.to_string())
            .chain(self.nodes.range(below(from)).map(|(k, _)| k.clone()))
            .collect();
        for k in keys {
            let node = self.nodes.remove(&k).expect("listed above");
            self.nodes.insert(format!("{to}{}", &k[from.len()..]), node);
        }
        Ok(())
    }

    /// The files below `dir` by path relative to it.
    pub fn files_below(&self, dir: &str) -> Vec<(&str, &FileNode)> {
        // One file is a tree of itself, under the empty relative path (as a real copy-tree).
        if let Some(Node::File(f)) = self.nodes.get(dir) {
            return vec![("", f)];
        }
        let cut = if dir == "/" { 1 } else { dir.len() + 1 };
        self.nodes
            .range(below(dir))
            .filter_map(|(k, n)| match n {
                Node::File(f) => Some((&k[cut..], f)),
                Node::Dir => None,
            })
            .collect()
    }

    /// The content identity of every file below `dir`, by path relative to it.
    pub fn contents_below(&self, dir: &str) -> BTreeMap<&str, u64> {
        self.files_below(dir)
            .into_iter()
            .map(|(r, f)| (r, f.content))
            .collect()
    }

    /// Every entry below `dir` (directories too), relative to it.
    pub fn entries_below(&self, dir: &str) -> Vec<(String, Node)> {
        let cut = if dir == "/" { 1 } else { dir.len() + 1 };
        self.nodes
            .range(below(dir))
            .map(|(k, n)| (k[cut..].to_string(), n.clone()))
            .collect()
    }

    /// The direct children of `dir`, sorted by name.
    pub fn children(&self, dir: &str) -> Vec<(&str, &Node)> {
        let cut = if dir == "/" { 1 } else { dir.len() + 1 };
        self.nodes
            .range(below(dir))
            .filter(|(k, _)| !k[cut..].contains('/'))
            .map(|(k, n)| (&k[cut..], n))
            .collect()
    }

    /// Total size of the files below `dir` (or of the file itself).
    pub fn tree_size(&self, p: &str) -> u64 {
        match self.nodes.get(p) {
            Some(Node::File(f)) => f.size,
            _ => self
                .files_below(p)
                .iter()
                .fold(0u64, |a, (_, f)| a.saturating_add(f.size)),
        }
    }

    /// The declared volume holding `p` (the deepest), if any.
    pub fn volume_of(&self, p: &str) -> Option<&str> {
        // Volumes nest; the deepest one holding `p` counts.
        self.volumes
            .keys()
            .filter(|v| {
                v.as_str() == "/"
                    || p.strip_prefix(v.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .max_by_key(|v| v.len())
            .map(String::as_str)
    }

    /// Free bytes on the volume holding `p`.
    pub fn free(&self, p: &str) -> u64 {
        match self.volume_of(p) {
            Some(v) => self.volumes[v],
            None => self.default_free,
        }
    }

    fn take_free(&mut self, p: &str, bytes: u64) {
        let slot = match self.volume_of(p).map(str::to_string) {
            Some(v) => self.volumes.get_mut(&v).expect("found above"),
            None => &mut self.default_free,
        };
        *slot = slot.saturating_sub(bytes);
    }

    fn add_free(&mut self, p: &str, bytes: u64) {
        let slot = match self.volume_of(p).map(str::to_string) {
            Some(v) => self.volumes.get_mut(&v).expect("found above"),
            None => &mut self.default_free,
        };
        *slot = slot.saturating_add(bytes);
    }

    /// Declares the directory `p` as a volume with `free` bytes available.
    pub fn set_volume(&mut self, p: &str, free: u64) {
        self.volumes.insert(p.to_string(), free);
    }

    /// A service's model on a server; services not described are running and well-behaved.
    pub fn service(&self, server: &str, service: &str) -> ServiceModel {
        self.services
            .get(&(server.to_string(), service.to_string()))
            .cloned()
            .unwrap_or(ServiceModel {
                state: ServiceState::Running,
                fails_to_start: false,
                fails_to_stop: false,
            })
    }

    /// Sets a service's state.
    pub fn set_service_state(&mut self, server: &str, service: &str, state: ServiceState) {
        let mut m = self.service(server, service);
        m.state = state;
        self.services
            .insert((server.to_string(), service.to_string()), m);
    }

    /// Describes a service.
    pub fn set_service(&mut self, server: &str, service: &str, model: ServiceModel) {
        self.services
            .insert((server.to_string(), service.to_string()), model);
    }

    /// Every service the world knows the state of, by (server, service).
    pub fn services(&self) -> &BTreeMap<(String, String), ServiceModel> {
        &self.services
    }

    /// The behaviour of a command invocation for a job: the fixture's first, then the plugin's.
    pub fn behaviour<'a>(
        &'a self,
        job: &str,
        plugin: &'a [CommandBehaviour],
        command: &str,
        args: &[String],
    ) -> Option<&'a CommandBehaviour> {
        let matches = |b: &CommandBehaviour| {
            b.command == command
                && b.args_prefix.len() <= args.len()
                && b.args_prefix.iter().zip(args).all(|(p, a)| p == a)
        };
        self.commands
            .iter()
            .filter(|o| o.job.as_deref().is_none_or(|j| j == job))
            .map(|o| &o.behaviour)
            .find(|b| matches(b))
            .or_else(|| plugin.iter().find(|b| matches(b)))
    }

    /// The immediate subdirectories of `dir` that look like backup sets, oldest first.
    pub fn set_ids(&self, dir: &str) -> Vec<String> {
        self.children(dir)
            .into_iter()
            .filter(|(n, node)| matches!(node, Node::Dir) && crate::sets::is_id(n))
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// Scans real directories into a world, read-only: names, sizes, mtimes and free space, and
    /// the contents of files of at most [`SCAN_READS_UP_TO`] bytes (what plugins read as facts:
    /// configuration, checkpoints); larger files' contents are not read. `now_ms` is the clock
    /// plans see.
    pub fn scan<'a>(
        dirs: impl IntoIterator<Item = &'a Path>,
        now_ms: i64,
    ) -> Result<World, WorldError> {
        let mut w = World::new("a scan of the real directories", now_ms, 0);
        for dir in dirs {
            let key = absolute(dir);
            let free = crate::facts::available_space(dir).unwrap_or(0);
            w.set_volume(&key, free);
            if !dir.exists() {
                continue;
            }
            let err = |e: std::io::Error| WorldError {
                file: dir.to_path_buf(),
                position: None,
                field: None,
                message: format!("cannot scan it: {e}"),
            };
            w.mkdir_p(&key).map_err(|m| WorldError {
                file: dir.to_path_buf(),
                position: None,
                field: None,
                message: m,
            })?;
            let mut stack = vec![(dir.to_path_buf(), key)];
            while let Some((real, key)) = stack.pop() {
                for entry in std::fs::read_dir(&real).map_err(err)? {
                    let entry = entry.map_err(err)?;
                    // As the plugin's facts show it, so the model and the real view agree.
                    let name = crate::facts::plugin_name(entry.file_name());
                    let k = join(&key, &name);
                    let meta = entry.metadata().map_err(err)?;
                    if meta.is_dir() {
                        w.nodes.insert(k.clone(), Node::Dir);
                        stack.push((entry.path(), k));
                    } else if meta.is_file() {
                        let content = w.new_content();
                        let text = if meta.len() <= SCAN_READS_UP_TO {
                            Some(Arc::from(std::fs::read(entry.path()).map_err(err)?))
                        } else {
                            None
                        };
                        let mtime_ms = meta
                            .modified()
                            .ok()
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_millis() as i64);
                        w.nodes.insert(
                            k,
                            Node::File(FileNode {
                                size: meta.len(),
                                content,
                                mtime_ms,
                                readonly: meta.permissions().readonly(),
                                damaged: false,
                                text,
                            }),
                        );
                    }
                }
            }
        }
        Ok(w)
    }

    /// Adds a root of a server reached over ssh to a scanned world, through its agent's facts
    /// (`root` is its name there): the same names, sizes, mtimes, free space and small files'
    /// contents as [`World::scan`] reads locally, at `path`, its path on that server. Symlinks
    /// are left out, as [`World::scan`] leaves them out.
    pub fn scan_remote(
        &mut self,
        path: &str,
        facts: &dyn crate::facts::FactSource,
        root: &str,
    ) -> Result<(), WorldError> {
        use crate::facts::EntryKind;
        use crate::plan::Location;
        let err = |m: String| WorldError {
            file: PathBuf::from(path),
            position: None,
            field: None,
            message: format!("cannot scan it on its server: {m}"),
        };
        let key = normalize(Path::new("/"), Path::new(path));
        self.set_volume(&key, facts.free_space(root).unwrap_or(0));
        match facts.exists(&Location::new(root, "")) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err(err(e.to_string())),
        }
        self.mkdir_p(&key).map_err(err)?;
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let entries = facts
                .list_dir(&Location::new(root, rel.clone()))
                .map_err(|e| err(e.to_string()))?;
            for e in entries {
                let rel = if rel.is_empty() {
                    e.name.clone()
                } else {
                    format!("{rel}/{}", e.name)
                };
                let k = join(&key, &rel);
                let at = Location::new(root, rel.clone());
                match e.kind {
                    EntryKind::Dir => {
                        self.nodes.insert(k, Node::Dir);
                        stack.push(rel);
                    }
                    EntryKind::File => {
                        let st = facts.stat(&at).map_err(|e| err(e.to_string()))?;
                        let text = if st.size <= SCAN_READS_UP_TO {
                            let bytes = facts
                                .read(&at, SCAN_READS_UP_TO as u32)
                                .map_err(|e| err(e.to_string()))?;
                            Some(Arc::from(bytes))
                        } else {
                            None
                        };
                        let content = self.new_content();
                        self.nodes.insert(
                            k,
                            Node::File(FileNode {
                                size: st.size,
                                content,
                                mtime_ms: st.mtime_ms,
                                readonly: st.readonly,
                                damaged: false,
                                text,
                            }),
                        );
                    }
                    EntryKind::Symlink | EntryKind::Other => {}
                }
            }
        }
        Ok(())
    }

    /// Loads a world fixture.
    pub fn load(file: &Path) -> Result<World, WorldError> {
        let text = std::fs::read_to_string(file).map_err(|e| WorldError {
            file: file.to_path_buf(),
            position: None,
            field: None,
            message: format!("cannot read the world fixture: {e}"),
        })?;
        World::parse(file, &text)
    }

    /// Parses a world fixture; relative paths in it are relative to `file`'s directory.
    pub fn parse(file: &Path, text: &str) -> Result<World, WorldError> {
        fixture::parse(file, text)
    }
}

mod facts;
mod fixture;

pub use facts::{WorldFacts, parse_location};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b"), Path::new("../c/./d/")),
            "/a/c/d"
        );
        assert_eq!(normalize(Path::new("/a"), Path::new("/x/../y")), "/y");
        assert_eq!(normalize(Path::new("/"), Path::new("..")), "/");
        // Names that are not UTF-8 stay apart.
        use std::os::unix::ffi::OsStrExt;
        let name = |b: &'static [u8]| Path::new(std::ffi::OsStr::from_bytes(b));
        assert_eq!(normalize(Path::new("/"), name(b"a\x83")), "/a\\x83");
        assert_ne!(
            normalize(Path::new("/"), name(b"a\x83")),
            normalize(Path::new("/"), name(b"a\x84"))
        );
    }

    #[test]
    fn files_move_and_free_space_follows() {
        let mut w = World::new("t", 0, 1000);
        w.set_volume("/data", 100);
        let f = |size, content| FileNode {
            size,
            content,
            mtime_ms: 0,
            readonly: false,
            damaged: false,
            text: None,
        };
        w.put_file("/data/a/x", f(60, 1)).unwrap();
        assert_eq!(w.free("/data/a"), 40);
        assert_eq!(w.free("/elsewhere"), 1000);
        let err = w.put_file("/data/a/y", f(50, 2)).unwrap_err();
        assert!(err.contains("no space left"), "{err}");
        // Replacing a file counts its space; a replacement that does not fit changes nothing.
        assert!(w.put_file("/data/a/x", f(101, 4)).is_err());
        assert_eq!(w.free("/data"), 40);
        w.put_file("/data/a/x", f(100, 5)).unwrap();
        assert_eq!(w.free("/data"), 0);
        w.put_file("/data/a/x", f(60, 1)).unwrap();
        w.rename("/data/a", "/data/b").unwrap();
        assert!(w.node("/data/a/x").is_none() && w.node("/data/b/x").is_some());
        assert!(w.rename("/data/b", "/data/b/c").is_err());
        assert!(w.rename("/data/b", "/nowhere/b").is_err());
        assert_eq!(w.remove("/data/b"), (1, 60));
        assert_eq!(w.free("/data"), 100);
        // "/data2" is not below "/data".
        w.put_file("/data2/z", f(5, 3)).unwrap();
        assert_eq!(
            w.children("/").iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["data", "data2"]
        );
        assert_eq!(w.files_below("/data").len(), 0);
    }

    #[test]
    fn fixture_errors_name_file_line_and_field() {
        let bad = [
            (
                "now = \"yesterday\"\n",
                "w.toml:1:7: now: `yesterday` is not a UTC time",
            ),
            (
                "now = \"2026-11-21T02:10:00Z\"\n[[dir]]\npath = \"/d\"\nfree = \"lots\"\n",
                "w.toml:4:8: dir[0].free: `lots` is not a size",
            ),
            (
                "now = \"2026-11-21T02:10:00Z\"\n[[dir]]\npath = \"/d\"\n[dir.files]\n\"../x\" = 3\n",
                "w.toml:5:1: dir[0].files.\"../x\": the path",
            ),
            (
                "now = \"2026-11-21T02:10:00Z\"\n[[command]]\ncommand = \"c\"\neffects = [{ create-file = \"nowhere\" }]\n",
                "w.toml:4:12: command[0].effects[0]: `nowhere` is not a location",
            ),
            (
                "now = \"2026-11-21T02:10:00Z\"\nsurprise = 1\n",
                "w.toml:2:1: unknown field `surprise`",
            ),
        ];
        for (text, want) in bad {
            let e = World::parse(Path::new("w.toml"), text)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{e}\nwanted: {want}");
        }
    }

    #[test]
    fn hex_contents_are_read_and_volumes_tell_roots_apart() {
        let w = World::parse(
            Path::new("/site/worlds/w.toml"),
            r#"
now = "2026-11-21T02:10:00Z"
[[dir]]
path = "../db"
free = "10 GiB"
[dir.files]
"Edb.chk" = { hex = "c3cdab89 00ff" }
[[dir]]
path = "../logs"
free = "5 GiB"
"#,
        )
        .unwrap();
        let roots = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let f = WorldFacts::new(
            Arc::new(w),
            roots(&[
                ("db", "/site/db"),
                ("logs", "/site/logs"),
                ("sub", "/site/db/x"),
            ]),
            Topology::default(),
        );
        let chk = f.read(&Location::new("db", "Edb.chk"), 100).unwrap();
        assert_eq!(chk, [0xc3, 0xcd, 0xab, 0x89, 0x00, 0xff]);
        assert!(!f.same_volume("db", "logs").unwrap());
        assert!(f.same_volume("db", "sub").unwrap());
        assert!(f.same_volume("nope", "db").is_err());
        for (bad, says) in [("\"abc\"", "3 digits"), ("\"zz\"", "`zz`")] {
            let text = format!(
                "now = \"2026-11-21T02:10:00Z\"\n[[dir]]\npath = \"d\"\n[dir.files]\n\"f\" = {{ hex = {bad} }}\n"
            );
            let e = World::parse(Path::new("w.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn a_fixture_describes_files_volumes_services_and_commands() {
        let w = World::parse(
            Path::new("/site/worlds/w.toml"),
            r#"
now = "2026-11-21T02:10:00Z"
free = "1 GiB"

[[dir]]
path = "../data"
free = "10 MiB"
[dir.files]
"mw/data/a.odb" = "4 KiB"
"mw/data/config" = { text = "x=1" }
"mw/back1/" = {}

[[service]]
server = "s1"
name = "db"
state = "stopped"
fails_to = "start"

[[command]]
job = "j"
command = "ctl"
args_prefix = ["on"]
exit_code = 3
duration = "2m"
effects = [{ create-file = "data:/mw/x" }, { service = { service = "db", state = "running" } }]
"#,
        )
        .unwrap();
        assert_eq!(w.free("/site/data/mw"), 10 * 1024 * 1024);
        assert_eq!(w.free("/elsewhere"), 1 << 30);
        assert_eq!(w.tree_size("/site/data/mw/data"), 4096 + 3);
        assert!(w.is_dir("/site/data/mw/back1"));
        assert!(w.service("s1", "db").fails_to_start);
        assert_eq!(w.service("s1", "db").state, ServiceState::Stopped);
        let b = w
            .behaviour("j", &[], "ctl", &["on".into(), "--x".into()])
            .unwrap();
        assert_eq!(
            (b.exit_code, b.duration_ms, b.effects.len()),
            (3, 120_000, 2)
        );
        assert!(
            w.behaviour("other-job", &[], "ctl", &["on".into()])
                .is_none()
        );
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    #[test]
    fn the_documented_fixture_parses() {
        let doc = include_str!("../../../../docs/simulation.md");
        let start = doc
            .find("```toml\n")
            .expect("docs/simulation.md has a TOML example")
            + 8;
        let end = start + doc[start..].find("```").unwrap();
        let w = World::parse(Path::new("/site/worlds/w.toml"), &doc[start..end])
            .unwrap_or_else(|e| panic!("docs/simulation.md's example: {e}"));
        assert!(w.service("gmx1", "groupmax-mail").fails_to_start);
        assert!(
            matches!(w.node("/site/data/mailwise/db/priv.edb"), Some(Node::File(f)) if f.damaged)
        );
        assert_eq!(
            w.set_ids("/site/backups/tokyo-hq/mailwise"),
            ["20261121T011000Z"]
        );
        assert_eq!(w.commands[0].behaviour.effects.len(), 3);
    }
}
