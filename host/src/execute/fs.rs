//! File actions inside granted roots. Each root is opened once as a [`cap_std::fs::Dir`] and every
//! file operation goes through it, so neither `..` nor a symbolic link can reach outside the
//! root: cap-std refuses such paths with an error instead of following them.

use crate::plan::Location;
use crate::tree::{self, Bytes, Node, RelPath, ScanOptions};
use cap_std::fs::Dir;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

pub use crate::tree::{Copied, CopyOptions, LinkDest, Written};

/// A granted root, opened.
#[derive(Debug)]
pub struct Root {
    /// The opened directory.
    pub dir: Dir,
    /// Its path, for messages and for commands that run in it.
    pub path: PathBuf,
}

/// The roots of a run by name.
#[derive(Debug, Default)]
pub struct Roots(pub BTreeMap<String, Root>);

/// A file action that failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct FsError {
    /// The location and the operation.
    pub what: String,
    /// The cause.
    #[source]
    pub source: io::Error,
}

fn fs_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> FsError {
    let what = what.into();
    move |source| FsError { what, source }
}

/// The path inside the root; `.` for the root itself.
fn rel(l: &Location) -> &Path {
    if l.path.is_empty() {
        Path::new(".")
    } else {
        Path::new(&l.path)
    }
}

impl Roots {
    /// Opens each root directory once.
    pub fn open(paths: &BTreeMap<String, PathBuf>) -> Result<Roots, FsError> {
        let mut out = BTreeMap::new();
        for (name, path) in paths {
            let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())
                .map_err(fs_err(format!("root `{name}` ({})", path.display())))?;
            out.insert(
                name.clone(),
                Root {
                    dir,
                    path: path.clone(),
                },
            );
        }
        Ok(Roots(out))
    }

    /// The opened root of a location, after checking its path is plain and relative.
    pub fn root(&self, l: &Location) -> Result<&Root, FsError> {
        let not = |m: String| FsError {
            what: l.to_string(),
            source: io::Error::new(io::ErrorKind::PermissionDenied, m),
        };
        crate::plan::check_relative(&l.path).map_err(|why| not(format!("the path {why}")))?;
        self.0
            .get(&l.root)
            .ok_or_else(|| not(format!("the root `{}` is not granted to this run", l.root)))
    }

    /// The real path of a location (for commands' working directories and messages).
    pub fn path(&self, l: &Location) -> Result<PathBuf, FsError> {
        Ok(self.root(l)?.path.join(&l.path))
    }

    /// Whether anything (a link included) is at the location.
    pub fn exists(&self, l: &Location) -> Result<bool, FsError> {
        match self.root(l)?.dir.symlink_metadata(rel(l)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(fs_err(l.to_string())(e)),
        }
    }

    /// Writes a file atomically: a temporary file beside it, synced, then renamed over it.
    pub fn write_file(&self, l: &Location, contents: &[u8]) -> Result<(), FsError> {
        let root = self.root(l)?;
        let path = rel(l);
        let name = path
            .file_name()
            .ok_or_else(|| fs_err(l.to_string())(io::ErrorKind::InvalidInput.into()))?;
        let tmp = path.with_file_name({
            let mut t = std::ffi::OsString::from(".");
            t.push(name);
            t.push(".hokan-tmp");
            t
        });
        let write = || -> io::Result<()> {
            let mut f = root.dir.create(&tmp)?;
            f.write_all(contents)?;
            f.sync_all()?;
            root.dir.rename(&tmp, &root.dir, path)
        };
        write().map_err(|e| {
            let _ = root.dir.remove_file(&tmp);
            fs_err(format!("cannot write {l}"))(e)
        })
    }

    /// Removes a file, a link or a tree. Returns `false` when nothing was there.
    pub fn remove(&self, l: &Location) -> Result<bool, FsError> {
        let root = self.root(l)?;
        let path = rel(l);
        let err = || fs_err(format!("cannot remove {l}"));
        match root.dir.symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(err()(e)),
            Ok(_) => {
                let at = self.locate(l)?;
                tree::copy::remove_at(at.parent(), at.name()).map_err(err())?;
                Ok(true)
            }
        }
    }

    /// Renames within one root; the new name must not exist.
    pub fn rename(&self, from: &Location, to: &Location) -> Result<(), FsError> {
        let (a, b) = (self.root(from)?, self.root(to)?);
        let what = format!("cannot rename {from} to {to}");
        if self.exists(to)? {
            return Err(fs_err(what)(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the new name already exists",
            )));
        }
        a.dir
            .rename(rel(from), &b.dir, rel(to))
            .map_err(fs_err(what))
    }

    /// Opens a file for reading.
    pub fn open_file(&self, l: &Location) -> Result<std::fs::File, FsError> {
        self.root(l)?
            .dir
            .open(rel(l))
            .map(cap_std::fs::File::into_std)
            .map_err(fs_err(format!("cannot read {l}")))
    }

    /// Creates a directory and its parents. Returns `false` when it was already there.
    pub fn ensure_dir(&self, l: &Location) -> Result<bool, FsError> {
        let root = self.root(l)?;
        if root.dir.is_dir(rel(l)) {
            return Ok(false);
        }
        root.dir
            .create_dir_all(rel(l))
            .map(|()| true)
            .map_err(fs_err(format!("cannot create {l}")))
    }
}

/// A location's parent directory, opened, and its name there (`.` for a root itself): what the
/// handle-relative calls of [`crate::tree`] start from.
pub struct Located {
    parent: Dir,
    name: Vec<u8>,
}

impl Located {
    /// The parent directory.
    pub fn parent(&self) -> BorrowedFd<'_> {
        self.parent.as_fd()
    }

    /// The name in it.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The location as a copy's end.
    pub fn end(&self) -> tree::End<'_> {
        tree::End {
            parent: self.parent.as_fd(),
            name: &self.name,
        }
    }
}

impl Roots {
    /// Opens the parent of a location (intermediate links that stay in the root are
    /// followed, as cap-std allows; the last component never is).
    pub fn locate(&self, l: &Location) -> Result<Located, FsError> {
        let root = self.root(l)?;
        let err = fs_err(l.to_string());
        if l.path.is_empty() {
            return Ok(Located {
                parent: root.dir.try_clone().map_err(err)?,
                name: b".".to_vec(),
            });
        }
        let path = RelPath::from(l.path.as_str());
        let parent = path.parent();
        let dir = if parent.is_empty() {
            root.dir.try_clone()
        } else {
            root.dir.open_dir(parent.as_path())
        }
        .map_err(err)?;
        Ok(Located {
            parent: dir,
            name: path.file_name().to_vec(),
        })
    }

    /// Every entry at and below a location, in [`tree::scan`]'s order, with the attributes
    /// `xattrs` asks for; paths are relative to the location.
    pub fn scan(&self, l: &Location, xattrs: tree::Attrs) -> Result<Vec<Node>, FsError> {
        let at = self.locate(l)?;
        let opts = ScanOptions {
            xattrs,
            ..ScanOptions::default()
        };
        tree::scan(at.parent(), at.name(), opts).map_err(|e| FsError {
            what: format!("cannot read {}", join(l, &e.path)),
            source: e.source,
        })
    }

    /// The digest of the regular file `rel` below a location (the location itself when `rel`
    /// is empty), opened without following links or blocking on a FIFO.
    pub fn digest(&self, l: &Location, rel: &RelPath, size: u64) -> Result<String, FsError> {
        let (f, _) = self.open_below(l, rel)?;
        tree::digest::digest(&f, size).map_err(fs_err(format!("cannot read {}", join(l, rel))))
    }

    /// Opens the regular file `rel` below a location (the location itself when `rel` is
    /// empty) without following links or blocking on a FIFO, with its `lstat`.
    pub fn open_below(
        &self,
        l: &Location,
        rel: &RelPath,
    ) -> Result<(std::fs::File, tree::Meta), FsError> {
        let at = self.locate(l)?;
        let r = if rel.is_empty() {
            tree::meta::open_file_at(at.parent(), at.name())
        } else {
            tree::meta::open_dir_at(at.parent(), at.name()).and_then(|top| {
                let parent = tree::scan::open_path(top.as_fd(), &rel.parent())?;
                tree::meta::open_file_at(parent.as_fd(), rel.file_name())
            })
        };
        r.map_err(fs_err(format!("cannot read {}", join(l, rel))))
    }
}

/// A location and a path below it, for messages.
pub fn join(l: &Location, rel: &RelPath) -> String {
    if rel.is_empty() {
        l.to_string()
    } else if l.path.is_empty() {
        format!("{}:/{rel}", l.root)
    } else {
        format!("{l}/{rel}")
    }
}

/// What [`Roots::remove_files`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Removed {
    /// The files removed, by name.
    pub files: Vec<Bytes>,
    /// Entries whose names were chosen but that are not regular files, left where they are.
    pub not_files: Vec<Bytes>,
}

impl Roots {
    /// Removes the regular files directly in the directory `dir` whose names `select` chooses,
    /// as the directory is now: the names are read when this runs, not taken from a plan.
    /// Entries chosen that are not regular files (a directory, a link) are left and listed.
    pub fn remove_files(
        &self,
        dir: &Location,
        select: impl Fn(&[u8]) -> bool,
    ) -> Result<Removed, FsError> {
        let at = self.locate(dir)?;
        let fd = tree::meta::open_dir_at(at.parent(), at.name())
            .map_err(fs_err(format!("cannot open {dir}")))?;
        let names = tree::meta::names(fd.as_fd()).map_err(fs_err(format!("cannot list {dir}")))?;
        let mut out = Removed::default();
        for name in names.into_iter().filter(|n| select(n)) {
            let what = || format!("cannot remove {dir}/{}", Bytes(name.clone()));
            let m = match tree::meta::stat_at(fd.as_fd(), &name) {
                Ok(m) => m,
                // Gone since the listing (the product removed it itself): nothing to remove.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(fs_err(what())(e)),
            };
            if m.kind != tree::Kind::File {
                out.not_files.push(Bytes(name));
                continue;
            }
            match rustix::fs::unlinkat(fd.as_fd(), name.as_slice(), rustix::fs::AtFlags::empty()) {
                Ok(()) => out.files.push(Bytes(name)),
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(fs_err(what())(e.into())),
            }
        }
        if !out.files.is_empty() {
            // The removals are what a later restore depends on (Groupmax's journal): on disk
            // before the step counts as done.
            rustix::fs::fsync(&fd).map_err(|e| fs_err(format!("cannot sync {dir}"))(e.into()))?;
        }
        Ok(out)
    }
}

/// The names in a directory, as bytes.
pub fn names(roots: &Roots, l: &Location) -> Result<Vec<Bytes>, FsError> {
    let at = roots.locate(l)?;
    let list = || -> io::Result<Vec<Bytes>> {
        let fd = tree::meta::open_dir_at(at.parent(), at.name())?;
        Ok(tree::meta::names(fd.as_fd())?
            .into_iter()
            .map(Bytes)
            .collect())
    };
    list().map_err(fs_err(format!("cannot list {l}")))
}

/// Copies the tree at `from` to `to`, which must not exist, keeping everything
/// [`crate::tree::copy`] keeps. The destination's parents are made as needed, as the simulator
/// does. On failure the partial copy is removed: a copy-tree is all or nothing.
pub fn copy_tree(
    roots: &Roots,
    from: &Location,
    to: &Location,
    opts: &CopyOptions<'_>,
) -> Result<Copied, FsError> {
    let what = format!("cannot copy {from} to {to}");
    let src = roots.locate(from)?;
    copy_into(roots, to, what, &|rel| join(from, rel), |dst, to_path| {
        tree::copy_tree(src.end(), dst.end(), to_path, opts)
    })
}

/// Copies a tree walked elsewhere (`nodes`, from `from` on the machine `on`) to `to`, which
/// must not exist, with its files' contents from `feed`: as [`copy_tree`], parents made and
/// all or nothing.
pub fn copy_from_feed(
    roots: &Roots,
    nodes: &[Node],
    feed: &mut dyn tree::Feed,
    (on, from): (&str, &Location),
    to: &Location,
    opts: &CopyOptions<'_>,
) -> Result<Copied, FsError> {
    let what = format!("cannot copy {from} on {on} to {to}");
    copy_into(roots, to, what, &|rel| join(from, rel), |dst, to_path| {
        tree::copy_from_feed(nodes, feed, dst.end(), to_path, opts)
    })
}

/// A copy to `to`: its parents made, then `copy`; on failure what it made is removed.
fn copy_into(
    roots: &Roots,
    to: &Location,
    what: String,
    from: &dyn Fn(&RelPath) -> String,
    copy: impl FnOnce(&Located, &RelPath) -> Result<Copied, tree::CopyError>,
) -> Result<Copied, FsError> {
    let dst = roots.root(to)?;
    if let Some(parent) = Path::new(&to.path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        dst.dir
            .create_dir_all(parent)
            .map_err(fs_err(what.clone()))?;
    }
    let dst = roots.locate(to)?;
    let to_path = RelPath::from(to.path.as_str());
    match copy(&dst, &to_path) {
        Ok(c) => Ok(c),
        Err(e) => {
            // Only a destination that was not there before is ours to remove.
            if e.source.kind() != io::ErrorKind::AlreadyExists || !e.path.is_empty() {
                let _ = tree::copy::remove_at(dst.parent(), dst.name());
            }
            Err(FsError {
                what: if e.path.is_empty() {
                    what
                } else {
                    format!("{what}: {}", from(&e.path))
                },
                source: e.source,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::atomic::AtomicU64;

    fn setup() -> (tempfile::TempDir, Roots) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        std::fs::write(root.join("d/a"), b"alpha").unwrap();
        std::fs::write(root.join("d/sub/b"), vec![7u8; 300_000]).unwrap();
        std::fs::create_dir(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("outside/secret"), b"s").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink("a", root.join("d/link")).unwrap();
        let roots = Roots::open(&BTreeMap::from([("data".to_string(), root)])).unwrap();
        (tmp, roots)
    }

    fn at(p: &str) -> Location {
        Location::new("data", p)
    }

    #[test]
    fn remove_files_removes_only_the_regular_files_chosen_by_name_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let (tmp, roots) = setup();
        let d = tmp.path().join("root/d");
        let odd = std::ffi::OsStr::from_bytes(b"a.\xff");
        std::fs::write(d.join(odd), b"not utf-8").unwrap();
        std::fs::write(d.join("b"), b"kept").unwrap();
        // `a*` chooses a, a.\xff, and the directory and link below, which are not files.
        let chosen = |n: &[u8]| n.starts_with(b"a") || n == b"link" || n == b"sub";
        let r = roots.remove_files(&at("d"), chosen).unwrap();
        let names: Vec<String> = r.files.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["a", "a.\\xff"]);
        let left: Vec<String> = r.not_files.iter().map(ToString::to_string).collect();
        assert_eq!(left, ["link", "sub"]);
        assert!(!d.join("a").exists() && !d.join(odd).exists());
        assert!(d.join("b").exists() && d.join("sub/b").exists());
        assert!(
            std::fs::symlink_metadata(d.join("link")).is_ok(),
            "a link is not removed"
        );
        // Through a link out of the root, nothing is listed, let alone removed.
        assert!(roots.remove_files(&at("escape"), |_| true).is_err());
        assert!(tmp.path().join("outside/secret").exists());
    }

    fn opts() -> CopyOptions<'static> {
        CopyOptions {
            link_dest: None,
            progress: &|_, _| {},
            deadline: None,
            space_left: None,
            owners: tree::meta::is_root(),
        }
    }

    #[test]
    fn neither_dotdot_nor_a_symlink_leaves_the_root() {
        let (tmp, roots) = setup();
        let secret = tmp.path().join("outside/secret");
        for l in ["../outside/secret", "escape/secret"] {
            assert!(roots.remove(&at(l)).is_err(), "{l}");
            assert!(roots.write_file(&at(l), b"x").is_err(), "{l}");
            assert!(roots.ensure_dir(&at(&format!("{l}-dir"))).is_err(), "{l}");
            assert!(
                roots.rename(&at(l), &at("d/stolen")).is_err(),
                "{l} was renamed"
            );
            assert!(
                copy_tree(&roots, &at(l), &at("d/copy"), &opts()).is_err(),
                "{l} was copied"
            );
        }
        assert!(secret.exists(), "a file outside the root was touched");
        assert!(!tmp.path().join("root/d/copy").exists());
        // A link as the top of a copy is copied as a link, never followed.
        copy_tree(&roots, &at("escape"), &at("d/copy"), &opts()).unwrap();
        assert!(
            std::fs::symlink_metadata(tmp.path().join("root/d/copy"))
                .unwrap()
                .is_symlink()
        );
        // The link itself is inside the root: removing it removes the link, not its target.
        assert!(roots.remove(&at("escape")).unwrap());
        assert!(secret.exists());
    }

    #[test]
    fn copy_tree_keeps_modes_mtimes_links_and_digests_what_it_wrote() {
        let (tmp, roots) = setup();
        let root = tmp.path().join("root");
        std::fs::set_permissions(root.join("d/a"), std::fs::Permissions::from_mode(0o4751))
            .unwrap();
        std::fs::set_permissions(root.join("d/sub"), std::fs::Permissions::from_mode(0o555))
            .unwrap();
        let old =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::new(1_000_000, 123_456_789);
        std::fs::File::options()
            .write(true)
            .open(root.join("d/sub/b"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let progress = |done, total| seen.lock().unwrap().push((done, total));
        let copied = copy_tree(
            &roots,
            &at("d"),
            &at("copy"),
            &CopyOptions {
                progress: &progress,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(copied.bytes, 300_005);
        let paths: Vec<String> = copied.files.iter().map(|w| w.path.to_string()).collect();
        assert_eq!(paths, ["copy/a", "copy/sub/b"]);
        assert_eq!(copied.files[0].digest, tree::digest::digest_bytes(b"alpha"));
        let meta = std::fs::metadata(root.join("copy/a")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o4751);
        let sub = std::fs::metadata(root.join("copy/sub")).unwrap();
        assert_eq!(sub.permissions().mode() & 0o7777, 0o555);
        let b = std::fs::metadata(root.join("copy/sub/b")).unwrap();
        assert_eq!(b.modified().unwrap(), old, "nanoseconds are kept");
        assert_eq!(
            std::fs::read_link(root.join("copy/link")).unwrap(),
            Path::new("a")
        );
        assert_eq!(seen.lock().unwrap().last(), Some(&(300_005, 300_005)));
        // Never over an existing destination, and the existing one is left alone.
        let e = copy_tree(&roots, &at("d"), &at("copy"), &opts()).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert!(root.join("copy/sub/b").exists());
    }

    #[test]
    fn one_nested_file_copies_alone() {
        let (tmp, roots) = setup();
        let c = copy_tree(&roots, &at("d/sub/b"), &at("staged/b"), &opts()).unwrap();
        assert_eq!(c.files.len(), 1);
        assert_eq!(
            std::fs::read(tmp.path().join("root/staged/b")).unwrap(),
            std::fs::read(tmp.path().join("root/d/sub/b")).unwrap()
        );
        let nodes = roots.scan(&at("staged/b"), tree::Attrs::All).unwrap();
        assert_eq!(nodes.len(), 1);
        assert!(nodes[0].path.is_empty());
    }

    fn link_dest(roots: &Roots, set: &str, copied: &Copied) -> LinkDest {
        let dir = roots.0["data"].dir.open_dir(set).unwrap();
        LinkDest {
            dir: std::os::fd::OwnedFd::from(dir.into_std_file()),
            files: copied
                .files
                .iter()
                .map(|w| {
                    let m =
                        std::fs::metadata(roots.0["data"].path.join(set).join(w.path.as_path()))
                            .unwrap();
                    (
                        w.path.clone(),
                        tree::PrevFile {
                            size: w.size,
                            mtime: w.mtime,
                            mode: m.mode() & 0o7777,
                            uid: m.uid(),
                            gid: m.gid(),
                            digest: w.digest.clone(),
                            ino: w.ino,
                            source: w.source,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_failed_copy_leaves_nothing_and_only_unchanged_files_are_linked() {
        let (tmp, roots) = setup();
        let root = tmp.path().join("root");
        let left = AtomicU64::new(1000);
        let e = copy_tree(
            &roots,
            &at("d"),
            &at("copy"),
            &CopyOptions {
                space_left: Some(&left),
                ..opts()
            },
        )
        .unwrap_err();
        assert_eq!(e.source.raw_os_error(), Some(libc::ENOSPC), "{e}");
        assert!(
            e.to_string().contains("data:/d/sub/b: No space left"),
            "the file is named: {e}"
        );
        assert!(
            !root.join("copy").exists(),
            "the partial copy is still there"
        );

        // The "previous set" one/ holds a copy of d at `d`.
        std::fs::create_dir_all(root.join("one")).unwrap();
        let first = copy_tree(&roots, &at("d"), &at("one/d"), &opts()).unwrap();
        let first = Copied {
            files: first
                .files
                .into_iter()
                .map(|mut w| {
                    w.path = w.path.strip_prefix(&RelPath::from("one")).unwrap();
                    w
                })
                .collect(),
            ..first
        };
        let prev = link_dest(&roots, "one", &first);
        // a: rewritten with its old size and mtime (only ctime tells); sub/b: untouched.
        crate::tree::testing::rewrite_keeping_mtime(&root.join("d/a"), b"ALPHA");
        std::fs::create_dir(root.join("three")).unwrap();
        let roots2 = Roots::open(&BTreeMap::from([
            ("data".to_string(), root.clone()),
            ("set".to_string(), root.join("three")),
        ]))
        .unwrap();
        let third = copy_tree(
            &roots2,
            &at("d"),
            &Location::new("set", "d"),
            &CopyOptions {
                link_dest: Some(&prev),
                ..opts()
            },
        )
        .unwrap();
        let b = third
            .files
            .iter()
            .find(|w| w.path.to_string() == "d/sub/b")
            .unwrap();
        let a = third
            .files
            .iter()
            .find(|w| w.path.to_string() == "d/a")
            .unwrap();
        assert!(b.linked && !a.linked, "{third:?}");
        assert_eq!(third.bytes, 5);
        assert_eq!(
            std::fs::metadata(root.join("three/d/sub/b")).unwrap().ino(),
            std::fs::metadata(root.join("one/d/sub/b")).unwrap().ino()
        );
        assert_eq!(std::fs::read(root.join("three/d/a")).unwrap(), b"ALPHA");

        // Damage in the previous set's copy (a byte flipped, mtime moved) is not linked.
        std::fs::write(root.join("one/d/sub/b"), vec![8u8; 300_000]).unwrap();
        std::fs::create_dir(root.join("four")).unwrap();
        let roots4 = Roots::open(&BTreeMap::from([
            ("data".to_string(), root.clone()),
            ("set".to_string(), root.join("four")),
        ]))
        .unwrap();
        let fourth = copy_tree(
            &roots4,
            &at("d"),
            &Location::new("set", "d"),
            &CopyOptions {
                link_dest: Some(&prev),
                ..opts()
            },
        )
        .unwrap();
        assert!(fourth.files.iter().all(|w| !w.linked), "{fourth:?}");
        assert!(
            fourth
                .warnings
                .iter()
                .any(|w| w
                    .contains("d/sub/b: the previous set's copy no longer matches its manifest")),
            "{:?}",
            fourth.warnings
        );
        assert_eq!(
            std::fs::read(root.join("four/d/sub/b")).unwrap(),
            vec![7u8; 300_000]
        );
    }
}
