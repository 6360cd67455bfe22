//! A job's view of the modelled world, as the facts its plugin reads while it plans a dry
//! run: the same `FactSource` a real run answers from the real directories.

use super::*;

/// A job's view of the world, as facts for its plugin.
pub struct WorldFacts {
    world: Arc<World>,
    roots: BTreeMap<String, String>,
    topology: Topology,
}

impl WorldFacts {
    /// Facts about `world` through the job's roots (name to normalized absolute path).
    pub fn new(world: Arc<World>, roots: BTreeMap<String, String>, topology: Topology) -> Self {
        WorldFacts {
            world,
            roots,
            topology,
        }
    }

    fn path(&self, p: &Location) -> Result<String, FactError> {
        let root = crate::facts::granted(&self.roots, p)?;
        Ok(join(root, p.path.trim_end_matches('/')))
    }
}

fn stat_of(n: &Node) -> FileStat {
    match n {
        Node::Dir => FileStat {
            kind: EntryKind::Dir,
            size: 0,
            mtime_ms: 0,
            readonly: false,
        },
        Node::File(f) => FileStat {
            kind: EntryKind::File,
            size: f.size,
            mtime_ms: f.mtime_ms,
            readonly: f.readonly,
        },
    }
}

impl FactSource for WorldFacts {
    fn exists(&self, p: &Location) -> Result<bool, FactError> {
        Ok(self.world.node(&self.path(p)?).is_some())
    }

    fn list_dir(&self, p: &Location) -> Result<Vec<DirEntry>, FactError> {
        let at = self.path(p)?;
        match self.world.node(&at) {
            Some(Node::Dir) => Ok(self
                .world
                .children(&at)
                .into_iter()
                .map(|(name, n)| {
                    let s = stat_of(n);
                    DirEntry {
                        name: name.to_string(),
                        kind: s.kind,
                        size: s.size,
                    }
                })
                .collect()),
            Some(Node::File(_)) => Err(FactError::Io(format!("{p} is not a directory"))),
            // A root that does not exist yet (a new backup set) lists as empty.
            None if p.path.is_empty() => Ok(Vec::new()),
            None => Err(FactError::NotFound(p.to_string())),
        }
    }

    fn stat(&self, p: &Location) -> Result<FileStat, FactError> {
        self.world
            .node(&self.path(p)?)
            .map(stat_of)
            .ok_or_else(|| FactError::NotFound(p.to_string()))
    }

    fn tree_size(&self, p: &Location) -> Result<u64, FactError> {
        let at = self.path(p)?;
        match self.world.node(&at) {
            Some(_) => Ok(self.world.tree_size(&at)),
            None if p.path.is_empty() => Ok(0),
            None => Err(FactError::NotFound(p.to_string())),
        }
    }

    fn free_space(&self, root: &str) -> Result<u64, FactError> {
        let at = self
            .roots
            .get(root)
            .ok_or_else(|| FactError::RootNotGranted(root.to_string()))?;
        Ok(self.world.free(at))
    }

    fn same_volume(&self, a: &str, b: &str) -> Result<bool, FactError> {
        let volume = |root: &str| {
            self.roots
                .get(root)
                .map(|at| self.world.volume_of(at))
                .ok_or_else(|| FactError::RootNotGranted(root.to_string()))
        };
        Ok(volume(a)? == volume(b)?)
    }

    fn read(&self, p: &Location, max_bytes: u32) -> Result<Vec<u8>, FactError> {
        match self.world.node(&self.path(p)?) {
            Some(Node::File(f)) if f.size > u64::from(max_bytes) => {
                Err(FactError::TooLarge(f.size))
            }
            Some(Node::File(f)) => Ok(f
                .text
                .as_deref()
                .map(<[u8]>::to_vec)
                // Size-only files read as that many zero bytes.
                .unwrap_or_else(|| vec![0; f.size as usize])),
            Some(Node::Dir) => Err(FactError::Io(format!("{p} is a directory"))),
            None => Err(FactError::NotFound(p.to_string())),
        }
    }

    fn now_ms(&self) -> i64 {
        self.world.now_ms
    }

    fn topology(&self) -> Topology {
        self.topology.clone()
    }
}

/// Parses a location written `root:/path` (or `root:path`).
pub fn parse_location(s: &str) -> Result<Location, String> {
    let (root, path) = s.split_once(':').ok_or_else(|| {
        format!("`{s}` is not a location: write ROOT:/PATH, e.g. data:/mw/data/maint")
    })?;
    let path = path.trim_start_matches('/').trim_end_matches('/');
    check_relative(path).map_err(|why| format!("`{s}`: the path {why}"))?;
    if root.is_empty() {
        return Err(format!("`{s}` names no root: write ROOT:/PATH"));
    }
    Ok(Location::new(root, path))
}
