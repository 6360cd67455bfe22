//! Walking a tree through directory handles: each directory is opened relative to its parent
//! with `O_NOFOLLOW`, each entry is looked at with `fstatat(AT_SYMLINK_NOFOLLOW)`, so names
//! are bytes, a path may be longer than `PATH_MAX`, and no link is ever followed.

use super::bytes::{Bytes, RelPath};
use super::meta::{self, Kind, Meta, Xattrs};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// What to collect.
#[derive(Clone, Copy)]
pub struct ScanOptions<'a> {
    /// Read extended attributes.
    pub xattrs: bool,
    /// Entries to leave out (with everything below them), by path from the top.
    pub skip: &'a dyn Fn(&RelPath) -> bool,
}

impl Default for ScanOptions<'_> {
    fn default() -> Self {
        ScanOptions {
            xattrs: true,
            skip: &|_| false,
        }
    }
}

/// Walks `name` in `parent` (`.` for `parent` itself). The order is fixed: an entry, then (for
/// a directory) its other entries by name, then its directories by name, each followed by its
/// own contents. A hard link's `first` is the name that comes earlier in that order.
pub fn scan(
    parent: BorrowedFd<'_>,
    name: &[u8],
    opts: ScanOptions<'_>,
) -> Result<Vec<Node>, ScanError> {
    let mut w = Walk {
        opts,
        out: Vec::new(),
        inodes: HashMap::new(),
    };
    let top = w.node(parent, name, RelPath::root())?;
    let is_dir = top.meta.kind == Kind::Dir;
    w.out.push(top);
    if is_dir {
        let fd = meta::open_dir_at(parent, name).map_err(at(&RelPath::root()))?;
        w.children(fd.as_fd(), &RelPath::root())?;
    }
    Ok(w.out)
}

fn at(path: &RelPath) -> impl FnOnce(io::Error) -> ScanError + '_ {
    move |source| ScanError {
        path: path.clone(),
        source,
    }
}

struct Walk<'a> {
    opts: ScanOptions<'a>,
    out: Vec<Node>,
    inodes: HashMap<(u64, u64), RelPath>,
}

impl Walk<'_> {
    fn node(&mut self, dir: BorrowedFd<'_>, name: &[u8], path: RelPath) -> Result<Node, ScanError> {
        let m = meta::stat_at(dir, name).map_err(at(&path))?;
        let target = if m.kind == Kind::Symlink {
            let t =
                rustix::fs::readlinkat(dir, name, Vec::new()).map_err(|e| at(&path)(e.into()))?;
            Some(Bytes(t.into_bytes()))
        } else {
            None
        };
        let xattrs = if self.opts.xattrs {
            meta::xattrs_at(dir, name).map_err(at(&path))?
        } else {
            Xattrs::new()
        };
        let first = if m.kind != Kind::Dir && m.nlink > 1 {
            match self.inodes.get(&(m.dev, m.ino)) {
                Some(p) => Some(p.clone()),
                None => {
                    self.inodes.insert((m.dev, m.ino), path.clone());
                    None
                }
            }
        } else {
            None
        };
        Ok(Node {
            path,
            meta: m,
            target,
            xattrs,
            first,
        })
    }

    fn children(&mut self, dir: BorrowedFd<'_>, path: &RelPath) -> Result<(), ScanError> {
        let names = meta::names(dir).map_err(at(path))?;
        let mut dirs = Vec::new();
        for name in names {
            let child = path.join(&name);
            if (self.opts.skip)(&child) {
                continue;
            }
            let n = self.node(dir, &name, child)?;
            if n.meta.kind == Kind::Dir {
                dirs.push((name, n));
            } else {
                self.out.push(n);
            }
        }
        for (name, n) in dirs {
            let child = n.path.clone();
            self.out.push(n);
            let fd = meta::open_dir_at(dir, &name).map_err(at(&child))?;
            self.children(fd.as_fd(), &child)?;
        }
        Ok(())
    }
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
                xattrs: false,
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
        assert_eq!(nodes[4].first, Some(RelPath::from("z")));
        assert!(nodes[2].first.is_none());
        let fd = open_path(root.as_fd(), &RelPath::from("top/b")).unwrap();
        assert_eq!(meta::names(fd.as_fd()).unwrap().len(), 2);
        assert!(open_path(root.as_fd(), &RelPath::from("top/a-link")).is_err());
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
}
