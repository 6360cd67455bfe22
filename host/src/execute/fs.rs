//! File actions inside granted roots. Each root is opened once as a [`cap_std::fs::Dir`] and every
//! file operation goes through it, so neither `..` nor a symbolic link can reach outside the
//! root: cap-std refuses such paths with an error instead of following them.

use crate::plan::Location;
use crate::sets::manifest::{BUFFER, hash_reader, mtime_ms};
use cap_std::fs::Dir;
use std::collections::BTreeMap;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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
        let tmp = path.with_file_name(format!(".{}.hokan-tmp", name.to_string_lossy()));
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
            Ok(m) if m.is_dir() => {
                remove_dir_all(&root.dir, path).map_err(err())?;
                Ok(true)
            }
            Ok(_) => root.dir.remove_file(path).map(|()| true).map_err(err()),
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

    /// A file's size and mtime (ms since the epoch, as copy-tree records it), from a stat
    /// that does not follow a final link.
    pub fn size_and_mtime(&self, l: &Location) -> Result<(u64, i64), FsError> {
        let m = self
            .root(l)?
            .dir
            .symlink_metadata(rel(l))
            .map_err(fs_err(l.to_string()))?;
        let mtime = m
            .modified()
            .map_err(fs_err(l.to_string()))?
            .into_std()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok((m.len(), mtime))
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

/// The names in a directory.
pub fn names(roots: &Roots, l: &Location) -> Result<Vec<String>, FsError> {
    let root = roots.root(l)?;
    let list = || -> io::Result<Vec<String>> {
        root.dir
            .read_dir(rel(l))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    };
    list().map_err(fs_err(format!("cannot list {l}")))
}

/// The files below a location (the location itself when it is a file, as `""`), by path
/// relative to it, with their sizes. Links are not followed.
pub fn files_below(roots: &Roots, l: &Location) -> Result<BTreeMap<String, u64>, FsError> {
    let root = roots.root(l)?;
    // One file is a tree of itself, under the empty relative path.
    if let Ok(m) = root.dir.symlink_metadata(rel(l))
        && m.is_file()
    {
        return Ok(BTreeMap::from([(String::new(), m.len())]));
    }
    let mut nodes = Vec::new();
    walk(&root.dir, rel(l), String::new(), &mut nodes)
        .map_err(fs_err(format!("cannot list {l}")))?;
    Ok(nodes
        .into_iter()
        .filter_map(|n| match n {
            Node::File(p, size) => Some((p, size)),
            _ => None,
        })
        .collect())
}

/// Removes a tree inside `dir`, making read-only directories writable on the way.
fn remove_dir_all(dir: &Dir, path: &Path) -> io::Result<()> {
    use cap_std::fs::PermissionsExt;
    match dir.remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let m = dir.symlink_metadata(path)?;
            if m.is_dir() {
                dir.set_permissions(
                    path,
                    cap_std::fs::Permissions::from_mode(m.permissions().mode() | 0o700),
                )?;
                for entry in dir.read_dir(path)? {
                    let entry = entry?;
                    if entry.file_type()?.is_dir() {
                        remove_dir_all(dir, &path.join(entry.file_name()))?;
                    }
                }
            }
            dir.remove_dir_all(path)
        }
        other => other,
    }
}

/// A file copy-tree wrote: where (in the destination root), and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Path in the destination root.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// The source's mtime, which the copy keeps.
    pub mtime_ms: i64,
    /// BLAKE3 of the copy, hex.
    pub blake3: String,
    /// Hard-linked from the previous set instead of copied.
    pub linked: bool,
}

/// A previous backup set whose unchanged files a new set links to instead of copying.
#[derive(Debug)]
pub struct LinkDest {
    /// The previous set, opened.
    pub dir: Dir,
    /// Its files by path: size, mtime, hash.
    pub files: BTreeMap<String, (u64, i64, String)>,
}

/// What copy-tree did.
#[derive(Debug, Default)]
pub struct Copied {
    /// Each file written or linked.
    pub files: Vec<Written>,
    /// Bytes copied (linked files not counted).
    pub bytes: u64,
}

/// How copy-tree reports and limits itself.
pub struct CopyOptions<'a> {
    /// The previous set, when the destination is a new backup set.
    pub link_dest: Option<&'a LinkDest>,
    /// Called with (bytes done, bytes in all) as files finish.
    pub progress: &'a (dyn Fn(u64, u64) + Sync),
    /// Give up after this instant.
    pub deadline: Option<Instant>,
    /// Test seam: fail with ENOSPC once this many bytes have been written.
    pub space_left: Option<&'a AtomicU64>,
}

enum Node {
    Dir(String, std::fs::Permissions, std::time::SystemTime),
    File(String, u64),
    Link(String),
}

/// Copies the tree at `from` to `to`, which must not exist. Files keep their mode and mtime;
/// links are copied as links, never followed. Each file's BLAKE3 is taken from the copy on disk.
/// On failure the partial copy is removed: a copy-tree is all or nothing.
pub fn copy_tree(
    roots: &Roots,
    from: &Location,
    to: &Location,
    opts: &CopyOptions<'_>,
) -> Result<Copied, FsError> {
    let (src, dst) = (roots.root(from)?, roots.root(to)?);
    let what = format!("cannot copy {from} to {to}");
    if roots.exists(to)? {
        return Err(fs_err(what)(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the destination already exists; copy-tree never overwrites",
        )));
    }
    let mut nodes = Vec::new();
    walk(&src.dir, rel(from), String::new(), &mut nodes).map_err(fs_err(what.clone()))?;
    // The destination's parents are made as needed, as the simulator does.
    if let Some(parent) = rel(to).parent().filter(|p| !p.as_os_str().is_empty()) {
        dst.dir
            .create_dir_all(parent)
            .map_err(fs_err(what.clone()))?;
    }
    // The top is made first and alone: only once it is ours may a failure remove it.
    if let Some(Node::Dir(top, ..)) = nodes.first() {
        dst.dir
            .create_dir(join(rel(to), top))
            .map_err(fs_err(what.clone()))?;
    }
    let result = copy_nodes(src, rel(from), dst, rel(to), &to.path, &nodes, opts);
    if let Err(e) = &result
        && (matches!(nodes.first(), Some(Node::Dir(..)))
            || e.kind() != io::ErrorKind::AlreadyExists)
    {
        let _ = remove_dir_all(&dst.dir, rel(to)).or_else(|_| dst.dir.remove_file(rel(to)));
    }
    result.map_err(fs_err(what))
}

fn walk(dir: &Dir, base: &Path, rel: String, out: &mut Vec<Node>) -> io::Result<()> {
    // Not `base.join("")`: that adds a trailing `/`, which a file (copied alone) refuses.
    let path = join(base, &rel);
    let m = dir.symlink_metadata(&path)?;
    if m.file_type().is_symlink() {
        out.push(Node::Link(rel));
    } else if m.is_dir() {
        let mut names: Vec<_> = dir
            .read_dir(&path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        let perms = std_perms(&m);
        out.push(Node::Dir(rel.clone(), perms, m.modified()?.into_std()));
        for n in names {
            let child = if rel.is_empty() {
                n.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", n.to_string_lossy())
            };
            walk(dir, base, child, out)?;
        }
    } else {
        out.push(Node::File(rel, m.len()));
    }
    Ok(())
}

fn std_perms(m: &cap_std::fs::Metadata) -> std::fs::Permissions {
    use cap_std::fs::PermissionsExt as _;
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(m.permissions().mode())
}

fn join(base: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

fn copy_nodes(
    src: &Root,
    from: &Path,
    dst: &Root,
    to: &Path,
    to_in_root: &str,
    nodes: &[Node],
    opts: &CopyOptions<'_>,
) -> io::Result<Copied> {
    use rayon::prelude::*;
    let total: u64 = nodes
        .iter()
        .map(|n| if let Node::File(_, s) = n { *s } else { 0 })
        .sum();
    // Directories first (writable while the copy fills them), then files in parallel, then the
    // directories' own mode and mtime, deepest first.
    for n in nodes {
        match n {
            Node::Dir(rel, ..) if rel.is_empty() => {} // made by copy_tree
            Node::Dir(rel, ..) => dst.dir.create_dir(join(to, rel))?,
            Node::Link(rel) => {
                let target = src.dir.read_link_contents(join(from, rel))?;
                dst.dir.symlink_contents(target, join(to, rel))?;
            }
            Node::File(..) => {}
        }
    }
    let done = AtomicU64::new(0);
    let files: Vec<Written> = nodes
        .par_iter()
        .filter_map(|n| match n {
            Node::File(rel, size) => Some((rel, *size)),
            _ => None,
        })
        .map(|(rel, size)| {
            if opts.deadline.is_some_and(|d| Instant::now() > d) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the step's time limit ran out",
                ));
            }
            let in_root = if rel.is_empty() {
                to_in_root.to_string()
            } else if to_in_root.is_empty() {
                rel.clone()
            } else {
                format!("{to_in_root}/{rel}")
            };
            let w = copy_file(src, &join(from, rel), dst, &join(to, rel), in_root, opts)?;
            let now = done.fetch_add(size, Ordering::Relaxed) + size;
            (opts.progress)(now, total);
            Ok(w)
        })
        .collect::<io::Result<_>>()?;
    for n in nodes.iter().rev() {
        if let Node::Dir(rel, perms, mtime) = n {
            // Read-only, not O_PATH (as open_dir would): futimens and fchmod need a real fd.
            let d = dst
                .dir
                .open_with(join(to, rel), cap_std::fs::OpenOptions::new().read(true))?
                .into_std();
            d.set_modified(*mtime)?;
            d.set_permissions(perms.clone())?;
        }
    }
    let bytes = files.iter().filter(|w| !w.linked).map(|w| w.size).sum();
    Ok(Copied { files, bytes })
}

fn copy_file(
    src: &Root,
    from: &Path,
    dst: &Root,
    to: &Path,
    in_root: String,
    opts: &CopyOptions<'_>,
) -> io::Result<Written> {
    let mut input = src.dir.open(from)?.into_std();
    let meta = input.metadata()?;
    let (size, mtime) = (meta.len(), mtime_ms(&meta));
    if let Some(prev) = opts.link_dest
        && let Some((psize, pmtime, hash)) = prev.files.get(&in_root)
        && (*psize, *pmtime) == (size, mtime)
        && prev.dir.hard_link(&in_root, &dst.dir, to).is_ok()
    {
        return Ok(Written {
            path: in_root,
            size,
            mtime_ms: mtime,
            blake3: hash.clone(),
            linked: true,
        });
    }
    if let Some(left) = opts.space_left {
        let before = left.fetch_sub(size.min(left.load(Ordering::Relaxed)), Ordering::Relaxed);
        if before < size {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
    }
    let mut out = cap_std::fs::OpenOptions::new();
    out.read(true).write(true).create_new(true);
    let mut output = dst.dir.open_with(to, &out)?.into_std();
    // std::io::copy between files uses copy_file_range on Linux: a reflink where the
    // filesystem shares blocks, an in-kernel copy otherwise, plain reads and writes as a last
    // resort.
    let copied = io::copy(&mut input, &mut output)?;
    if copied != size {
        return Err(io::Error::other(format!(
            "the file changed size while being copied ({size} bytes, then {copied})"
        )));
    }
    output.rewind()?;
    let (blake3, _) = hash_reader(io::BufReader::with_capacity(BUFFER, &mut output).take(size))?;
    output.set_permissions(meta.permissions())?;
    output.set_modified(meta.modified()?)?;
    Ok(Written {
        path: in_root,
        size,
        mtime_ms: mtime,
        blake3,
        linked: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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

    fn opts() -> CopyOptions<'static> {
        CopyOptions {
            link_dest: None,
            progress: &|_, _| {},
            deadline: None,
            space_left: None,
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
        // The link itself is inside the root: removing it removes the link, not its target.
        assert!(roots.remove(&at("escape")).unwrap());
        assert!(secret.exists());
    }

    #[test]
    fn copy_tree_keeps_modes_mtimes_links_and_hashes_what_it_wrote() {
        let (tmp, roots) = setup();
        let root = tmp.path().join("root");
        std::fs::set_permissions(root.join("d/a"), std::fs::Permissions::from_mode(0o444)).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
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
        let mut paths: Vec<&str> = copied.files.iter().map(|w| w.path.as_str()).collect();
        paths.sort();
        assert_eq!(paths, ["copy/a", "copy/sub/b"]);
        let a = copied.files.iter().find(|w| w.path == "copy/a").unwrap();
        assert_eq!(a.blake3, blake3::hash(b"alpha").to_hex().to_string());
        // The stat that lets verify skip a linked file agrees with what the copy recorded.
        for w in &copied.files {
            let src = at(&w.path.replacen("copy", "d", 1));
            assert_eq!(roots.size_and_mtime(&src).unwrap(), (w.size, w.mtime_ms));
        }
        let meta = std::fs::metadata(root.join("copy/a")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        let b = std::fs::metadata(root.join("copy/sub/b")).unwrap();
        assert_eq!(b.modified().unwrap(), old);
        assert_eq!(
            std::fs::read_link(root.join("copy/link")).unwrap(),
            Path::new("a")
        );
        assert_eq!(seen.lock().unwrap().last(), Some(&(300_005, 300_005)));
        // Never over an existing destination.
        let e = copy_tree(&roots, &at("d"), &at("copy"), &opts()).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
    }

    #[test]
    fn one_nested_file_copies_and_lists_alone() {
        let (tmp, roots) = setup();
        let c = copy_tree(&roots, &at("d/sub/b"), &at("staged/b"), &opts()).unwrap();
        assert_eq!(c.files.len(), 1);
        assert_eq!(
            std::fs::read(tmp.path().join("root/staged/b")).unwrap(),
            std::fs::read(tmp.path().join("root/d/sub/b")).unwrap()
        );
        let listed = files_below(&roots, &at("staged/b")).unwrap();
        assert_eq!(listed.keys().collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn a_failed_copy_leaves_nothing_and_unchanged_files_are_linked() {
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
            !root.join("copy").exists(),
            "the partial copy is still there"
        );

        let first = copy_tree(&roots, &at("d"), &at("one"), &opts()).unwrap();
        let prev = LinkDest {
            dir: roots.0["data"].dir.try_clone().unwrap(),
            files: first
                .files
                .iter()
                .map(|w| {
                    let p = w.path.replacen("one/", "two/", 1);
                    (p, (w.size, w.mtime_ms, w.blake3.clone()))
                })
                .collect(),
        };
        // The previous "set" is the root itself here, so link from one/ by renaming the keys
        // back: what matters is that unchanged files are linked and changed ones copied.
        std::fs::rename(root.join("one"), root.join("two")).unwrap();
        std::fs::write(root.join("d/a"), b"ALPHA").unwrap();
        std::fs::create_dir(root.join("new")).unwrap();
        let roots2 = Roots::open(&BTreeMap::from([
            ("data".to_string(), root.clone()),
            ("set".to_string(), root.join("new")),
        ]))
        .unwrap();
        let second = copy_tree(
            &roots2,
            &at("d"),
            &Location::new("set", "two"),
            &CopyOptions {
                link_dest: Some(&prev),
                ..opts()
            },
        );
        // Linking needs the same relative path in the previous set: `two/sub/b` exists there.
        let second = second.unwrap();
        let b = second.files.iter().find(|w| w.path == "two/sub/b").unwrap();
        let a = second.files.iter().find(|w| w.path == "two/a").unwrap();
        assert!(b.linked && !a.linked, "{second:?}");
        assert_eq!(second.bytes, 5);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(root.join("new/two/sub/b")).unwrap().ino(),
            std::fs::metadata(root.join("two/sub/b")).unwrap().ino()
        );
    }
}
