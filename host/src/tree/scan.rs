//! Walking a tree through directory handles: each directory is opened relative to its parent
//! with `O_NOFOLLOW`, each entry is looked at with `fstatat(AT_SYMLINK_NOFOLLOW)`, so names
//! are bytes, a path may be longer than `PATH_MAX`, and no link is ever followed.

use super::bytes::{Bytes, RelPath};
use super::meta::{self, Kind, Meta, Xattrs};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

/// One entry of a tree (also as an agent sends it: [`crate::remote`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// Where, relative to the walk's top (the top itself is the empty path).
    pub path: RelPath,
    /// Its `lstat`.
    pub meta: Meta,
    /// A link's target, byte for byte.
    pub target: Option<Bytes>,
    /// Its extended attributes (empty unless asked for).
    pub xattrs: Xattrs,
    /// An earlier name of the same inode in this walk: a hard link to it.
    pub first: Option<RelPath>,
}

/// A tree that cannot be walked, naming the entry.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ScanError {
    /// The entry, relative to the walk's top.
    pub path: RelPath,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// Whose extended attributes a walk reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attrs {
    /// Nobody's: a walk that compares stats only (ctime moves on every attribute change).
    None,
    /// Every entry's.
    All,
    /// Every entry's but regular files': a copy reads those from the file it opens, or takes
    /// them from the previous set's manifest when it links the file.
    ExceptFiles,
}

/// What to collect.
#[derive(Clone, Copy)]
pub struct ScanOptions<'a> {
    /// Whose extended attributes to read.
    pub xattrs: Attrs,
    /// Entries to leave out (with everything below them), by path from the top.
    pub skip: &'a (dyn Fn(&RelPath) -> bool + Sync),
}

impl Default for ScanOptions<'_> {
    fn default() -> Self {
        ScanOptions {
            xattrs: Attrs::All,
            skip: &|_| false,
        }
    }
}

/// Walks `name` in `parent` (`.` for `parent` itself). The order is fixed: an entry, then (for
/// a directory) its other entries by name, then its directories by name, each followed by its
/// own contents. A hard link's `first` is the name that comes earlier in that order.
///
/// The entries of a directory are looked at side by side, and so are its subdirectories: a walk
/// is a syscall per entry or two, and a backup walks each tree several times (plan, copy,
/// verify, manifest, safety check). The order does not depend on it.
pub fn scan(
    parent: BorrowedFd<'_>,
    name: &[u8],
    opts: ScanOptions<'_>,
) -> Result<Vec<Node>, ScanError> {
    let top = node(&opts, parent, name, RelPath::root())?;
    let is_dir = top.meta.kind == Kind::Dir;
    let mut out = vec![top];
    if is_dir {
        let fd = meta::open_dir_at(parent, name).map_err(at(&RelPath::root()))?;
        out.extend(children(&opts, fd.as_fd(), &RelPath::root())?);
    }
    name_hard_links(&mut out);
    Ok(out)
}

/// Gives each later name of a hard-linked file its `first`, in walk order.
fn name_hard_links(nodes: &mut [Node]) {
    let mut inodes: HashMap<(u64, u64), RelPath> = HashMap::new();
    for n in nodes.iter_mut() {
        n.first = None;
        if n.meta.kind != Kind::Dir && n.meta.nlink > 1 {
            match inodes.entry((n.meta.dev, n.meta.ino)) {
                std::collections::hash_map::Entry::Occupied(e) => n.first = Some(e.get().clone()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(n.path.clone());
                }
            }
        }
    }
}

/// One walk made of several: `base`, a walk that skipped some directories, and `parts`, walks
/// of those directories (each with its top as the empty path), in [`scan`]'s order with hard
/// links named across all of them, as one walk of the whole would give. A set's manifest reuses
/// the walks its verify steps made of the set's trees, when nothing has written since.
pub fn merge(base: Vec<Node>, parts: Vec<(RelPath, Vec<Node>)>) -> Vec<Node> {
    let mut out = base;
    for (top, nodes) in parts {
        out.extend(nodes.into_iter().map(|mut n| {
            n.path = n.path.under(&top);
            n
        }));
    }
    // The walk's order as a sort: level by level, other entries before directories, each by
    // name, and a directory before what it holds. The runs are sorted already.
    out.sort_by(walk_order);
    name_hard_links(&mut out);
    out
}

fn walk_order(a: &Node, b: &Node) -> std::cmp::Ordering {
    let (mut x, mut y) = (
        a.path.components().peekable(),
        b.path.components().peekable(),
    );
    loop {
        match (x.next(), y.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(p), Some(q)) if p == q => {}
            (Some(p), Some(q)) => {
                // Below this level an entry is a directory when it goes on or is one.
                let p_dir = x.peek().is_some() || a.meta.kind == Kind::Dir;
                let q_dir = y.peek().is_some() || b.meta.kind == Kind::Dir;
                return p_dir.cmp(&q_dir).then_with(|| p.cmp(q));
            }
        }
    }
}

fn at(path: &RelPath) -> impl FnOnce(io::Error) -> ScanError + '_ {
    move |source| ScanError {
        path: path.clone(),
        source,
    }
}

fn node(
    opts: &ScanOptions<'_>,
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: RelPath,
) -> Result<Node, ScanError> {
    let m = meta::stat_at(dir, name).map_err(at(&path))?;
    let target = if m.kind == Kind::Symlink {
        let t = rustix::fs::readlinkat(dir, name, Vec::new()).map_err(|e| at(&path)(e.into()))?;
        Some(Bytes(t.into_bytes()))
    } else {
        None
    };
    let wanted = match opts.xattrs {
        Attrs::None => false,
        Attrs::All => true,
        Attrs::ExceptFiles => m.kind != Kind::File,
    };
    let xattrs = if wanted {
        meta::xattrs_at(dir, name).map_err(at(&path))?
    } else {
        Xattrs::new()
    };
    Ok(Node {
        path,
        meta: m,
        target,
        xattrs,
        first: None,
    })
}

/// Everything below the open directory `dir` (at `path`), in walk order.
fn children(
    opts: &ScanOptions<'_>,
    dir: BorrowedFd<'_>,
    path: &RelPath,
) -> Result<Vec<Node>, ScanError> {
    use rayon::prelude::*;
    let names = meta::names(dir).map_err(at(path))?;
    let nodes: Vec<(Vec<u8>, Node)> = names
        .into_par_iter()
        .with_min_len(64)
        .filter_map(|name| {
            let child = path.join(&name);
            if (opts.skip)(&child) {
                return None;
            }
            Some(node(opts, dir, &name, child).map(|n| (name, n)))
        })
        .collect::<Result<_, _>>()?;
    let (dirs, others): (Vec<_>, Vec<_>) = nodes
        .into_iter()
        .partition(|(_, n)| n.meta.kind == Kind::Dir);
    let below: Vec<Vec<Node>> = dirs
        .par_iter()
        .map(|(name, n)| {
            let fd = meta::open_dir_at(dir, name).map_err(at(&n.path))?;
            children(opts, fd.as_fd(), &n.path)
        })
        .collect::<Result<_, _>>()?;
    let mut out: Vec<Node> = others.into_iter().map(|(_, n)| n).collect();
    for ((_, n), below) in dirs.into_iter().zip(below) {
        out.push(n);
        out.extend(below);
    }
    Ok(out)
}

/// The symbolic links at and below `name` in `parent`, each with its target, in walk order. Only
/// directories are opened and only links are looked at: the kind comes from the directory
/// listing (`d_type`), and an entry is stat'ed only on a filesystem that does not give it, so
/// a plan's check for links that leave their root costs a listing, not a stat per file.
pub fn symlinks(parent: BorrowedFd<'_>, name: &[u8]) -> Result<Vec<(RelPath, Bytes)>, ScanError> {
    fn kind(dir: BorrowedFd<'_>, name: &[u8], t: rustix::fs::FileType) -> io::Result<Kind> {
        use rustix::fs::FileType;
        Ok(match t {
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Unknown => meta::stat_at(dir, name)?.kind,
            _ => Kind::File,
        })
    }
    fn walk(
        dir: BorrowedFd<'_>,
        path: &RelPath,
        out: &mut Vec<(RelPath, Bytes)>,
    ) -> Result<(), ScanError> {
        let entries = meta::entries(dir).map_err(at(path))?;
        let mut dirs = Vec::new();
        for (name, t) in entries {
            let child = path.join(&name);
            match kind(dir, &name, t).map_err(at(&child))? {
                Kind::Symlink => {
                    let t = rustix::fs::readlinkat(dir, name.as_slice(), Vec::new())
                        .map_err(|e| at(&child)(e.into()))?;
                    out.push((child, Bytes(t.into_bytes())));
                }
                Kind::Dir => dirs.push((name, child)),
                _ => {}
            }
        }
        for (name, child) in dirs {
            let fd = meta::open_dir_at(dir, &name).map_err(at(&child))?;
            walk(fd.as_fd(), &child, out)?;
        }
        Ok(())
    }
    let root = RelPath::root();
    let mut out = Vec::new();
    match meta::stat_at(parent, name).map_err(at(&root))?.kind {
        Kind::Symlink => {
            let t = rustix::fs::readlinkat(parent, name, Vec::new())
                .map_err(|e| at(&root)(e.into()))?;
            out.push((root, Bytes(t.into_bytes())));
        }
        Kind::Dir => {
            let fd = meta::open_dir_at(parent, name).map_err(at(&root))?;
            walk(fd.as_fd(), &root, &mut out)?;
        }
        _ => {}
    }
    Ok(out)
}

/// Whether `nodes` is a walk as [`scan`] makes it, for a walk that arrived over a connection
/// and will be re-created here: the top first (the empty path), every other entry below a
/// directory listed before it, each path once, hard links only to a file listed before them,
/// and only a directory has entries below it. `Err` says what is wrong, naming the entry.
pub fn check_walk(nodes: &[Node]) -> Result<(), String> {
    let Some(top) = nodes.first() else {
        return Err("the walk is empty: not even its top is listed".into());
    };
    if !top.path.is_empty() {
        return Err(format!("the walk starts at {}, not at its top", top.path));
    }
    if top.meta.kind != Kind::Dir && nodes.len() > 1 {
        return Err(format!(
            "the top is a {} but has entries below it",
            top.meta.kind.describe()
        ));
    }
    let mut seen: HashMap<&RelPath, &Node> = HashMap::with_capacity(nodes.len());
    seen.insert(&top.path, top);
    for n in &nodes[1..] {
        if n.path.is_empty() {
            return Err("the top is listed twice".into());
        }
        match seen.get(&n.path.parent()) {
            Some(p) if p.meta.kind == Kind::Dir => {}
            Some(p) => {
                return Err(format!(
                    "{} is below {}, which is a {}",
                    n.path,
                    p.path,
                    p.meta.kind.describe()
                ));
            }
            None => return Err(format!("{} comes before its directory", n.path)),
        }
        if let Some(first) = &n.first {
            match seen.get(first) {
                Some(f) if f.meta.kind == Kind::File && f.first.is_none() => {}
                _ => {
                    return Err(format!(
                        "{} is a hard link to {first}, which is not a file listed before it",
                        n.path
                    ));
                }
            }
        }
        if n.meta.kind == Kind::Symlink && n.target.is_none() {
            return Err(format!("{} is a symbolic link without a target", n.path));
        }
        if seen.insert(&n.path, n).is_some() {
            return Err(format!("{} is listed twice", n.path));
        }
    }
    Ok(())
}

/// Opens the directory `path` below `dir` one component at a time, each with `O_NOFOLLOW`.
pub fn open_path(dir: BorrowedFd<'_>, path: &RelPath) -> io::Result<std::os::fd::OwnedFd> {
    let mut fd = rustix::io::fcntl_dupfd_cloexec(dir, 0)?;
    for c in path.components() {
        fd = meta::open_dir_at(fd.as_fd(), c)?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn names_are_bytes_order_is_fixed_and_links_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("top");
        let sjis = std::ffi::OsStr::from_bytes(b"\x83e\x83X\x83g");
        std::fs::create_dir_all(d.join("b").join(sjis)).unwrap();
        std::fs::write(d.join("b").join(sjis).join("x"), b"1").unwrap();
        std::fs::write(d.join("z"), b"2").unwrap();
        std::fs::hard_link(d.join("z"), d.join("b/zz")).unwrap();
        std::os::unix::fs::symlink("/etc", d.join("a-link")).unwrap();
        std::fs::write(d.join("skip-me"), b"").unwrap();
        let root = rustix::fs::open(
            tmp.path(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let skip = |p: &RelPath| p.as_bytes() == b"skip-me";
        let nodes = scan(
            root.as_fd(),
            b"top",
            ScanOptions {
                xattrs: Attrs::None,
                skip: &skip,
            },
        )
        .unwrap();
        let paths: Vec<String> = nodes.iter().map(|n| n.path.to_string()).collect();
        assert_eq!(
            paths,
            [
                "",
                "a-link",
                "z",
                "b",
                "b/zz",
                "b/\\x83e\\x83X\\x83g",
                "b/\\x83e\\x83X\\x83g/x"
            ]
        );
        assert_eq!(nodes[1].target.as_ref().unwrap().as_bytes(), b"/etc");
        // The links alone, by the listing's kinds, as the full walk finds them.
        let links = symlinks(root.as_fd(), b"top").unwrap();
        assert_eq!(links, [(RelPath::from("a-link"), Bytes::from("/etc"))]);
        assert!(symlinks(root.as_fd(), b"missing").is_err());
        assert_eq!(nodes[4].first, Some(RelPath::from("z")));
        assert!(nodes[2].first.is_none());
        let fd = open_path(root.as_fd(), &RelPath::from("top/b")).unwrap();
        assert_eq!(meta::names(fd.as_fd()).unwrap().len(), 2);
        assert!(open_path(root.as_fd(), &RelPath::from("top/a-link")).is_err());
    }

    #[test]
    fn walks_of_parts_merge_into_the_walk_of_the_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for dir in ["a/x", "b/y/z", "b/w", "c"] {
            std::fs::create_dir_all(d.join(dir)).unwrap();
        }
        for (f, body) in [
            ("0", "0"),
            ("a/1", "1"),
            ("b/2", "2"),
            ("b/y/z/3", "3"),
            ("c/4", "4"),
        ] {
            std::fs::write(d.join(f), body).unwrap();
        }
        // Hard links within a part, across parts, and between the base and a part.
        std::fs::hard_link(d.join("b/2"), d.join("b/y/2b")).unwrap();
        std::fs::hard_link(d.join("b/y/z/3"), d.join("a/3a")).unwrap();
        std::fs::hard_link(d.join("0"), d.join("b/w/0b")).unwrap();
        std::os::unix::fs::symlink("1", d.join("b/l")).unwrap();
        let root = rustix::fs::open(
            d,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let whole = scan(root.as_fd(), b".", ScanOptions::default()).unwrap();
        let skip = |p: &RelPath| matches!(p.as_bytes(), b"b" | b"c");
        let base = scan(
            root.as_fd(),
            b".",
            ScanOptions {
                skip: &skip,
                ..ScanOptions::default()
            },
        )
        .unwrap();
        let part = |name: &[u8]| {
            (
                RelPath::from(std::str::from_utf8(name).unwrap()),
                scan(root.as_fd(), name, ScanOptions::default()).unwrap(),
            )
        };
        let merged = merge(base, vec![part(b"c"), part(b"b")]);
        // Reading a directory the first time moves its atime (relatime): all else is the same.
        let no_atime = |nodes: &[Node]| {
            let mut v = nodes.to_vec();
            v.iter_mut().for_each(|n| n.meta.atime = Default::default());
            v
        };
        assert_eq!(no_atime(&merged), no_atime(&whole));
        // A part's file is a later name of one in the base.
        let three = merged
            .iter()
            .find(|n| n.path.as_bytes() == b"b/y/z/3")
            .unwrap();
        assert_eq!(three.first, Some(RelPath::from("a/3a")));
    }

    #[test]
    fn a_path_longer_than_path_max_is_walked() {
        let tmp = tempfile::tempdir().unwrap();
        let root = rustix::fs::open(
            tmp.path(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let name = vec![b'n'; 250];
        let mut fd = rustix::io::fcntl_dupfd_cloexec(&root, 0).unwrap();
        rustix::fs::mkdirat(&fd, &b"top"[..], rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
        fd = meta::open_dir_at(fd.as_fd(), b"top").unwrap();
        for _ in 0..20 {
            rustix::fs::mkdirat(&fd, name.as_slice(), rustix::fs::Mode::from_raw_mode(0o755))
                .unwrap();
            fd = meta::open_dir_at(fd.as_fd(), &name).unwrap();
        }
        let f = rustix::fs::openat(
            &fd,
            &b"deep"[..],
            rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY,
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        drop(f);
        let nodes = scan(root.as_fd(), b"top", ScanOptions::default()).unwrap();
        let last = nodes.last().unwrap();
        assert!(last.path.as_bytes().len() > 5000);
        assert!(last.path.as_bytes().ends_with(b"/deep"));
    }

    #[test]
    fn a_walk_from_elsewhere_is_taken_only_in_the_shape_scan_makes() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("top");
        std::fs::create_dir_all(d.join("dir")).unwrap();
        std::fs::write(d.join("dir/f"), b"1").unwrap();
        std::fs::hard_link(d.join("dir/f"), d.join("g")).unwrap();
        std::os::unix::fs::symlink("dir/f", d.join("l")).unwrap();
        let root = rustix::fs::open(
            tmp.path(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let none = |_: &RelPath| false;
        let opts = ScanOptions {
            xattrs: Attrs::None,
            skip: &none,
        };
        let walk = scan(root.as_fd(), b"top", opts).unwrap();
        check_walk(&walk).unwrap();
        let at = |p: &str| walk.iter().position(|n| n.path.to_string() == p).unwrap();
        let refused = |nodes: Vec<Node>| check_walk(&nodes).unwrap_err();

        assert!(refused(Vec::new()).contains("empty"));
        assert!(refused(walk[1..].to_vec()).contains("not at its top"));
        let mut twice = walk.clone();
        twice.push(walk[0].clone());
        assert!(refused(twice).contains("top is listed twice"));
        let mut again = walk.clone();
        again.push(walk[at("dir")].clone());
        assert!(refused(again).contains("dir is listed twice"));
        // An entry before its directory, and one below a file.
        let mut early = walk.clone();
        let f = early.remove(at("dir/f"));
        early.insert(1, f);
        assert!(refused(early).contains("dir/f comes before its directory"));
        let mut below = walk.clone();
        let mut n = walk[at("dir/f")].clone();
        n.path = RelPath::from("l/x");
        below.push(n);
        assert!(refused(below).contains("l/x is below l, which is a"));
        // A hard link to what is not a file listed before it.
        let (first, link) = {
            let g = &walk[at("g")];
            let f = &walk[at("dir/f")];
            if g.first.is_some() {
                (at("dir/f"), at("g"))
            } else {
                assert!(f.first.is_some());
                (at("g"), at("dir/f"))
            }
        };
        let mut dangling = walk.clone();
        dangling[link].first = Some(RelPath::from("dir"));
        assert!(refused(dangling).contains("which is not a file listed before it"));
        let mut swapped = walk.clone();
        swapped.swap(first, link);
        assert!(check_walk(&swapped).is_err());
        // A symbolic link with nothing to point at.
        let mut blank = walk.clone();
        blank[at("l")].target = None;
        assert!(refused(blank).contains("l is a symbolic link without a target"));
        // A top that is not a directory but has entries.
        let mut flat = walk.clone();
        flat[0].meta.kind = Kind::File;
        assert!(refused(flat).contains("the top is a"));
    }
}
