//! Metadata as `rsync -aHAXS` keeps it: type, permission bits, numeric owner, nanosecond times,
//! device numbers and extended attributes (POSIX ACLs are the `system.posix_acl_*` attributes),
//! read and written relative to open directory handles, never following a final link.

use super::bytes::Bytes;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// A time as seconds and nanoseconds since the Unix epoch; in JSON `[seconds, nanoseconds]`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Time(pub i64, pub u32);

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:09}", self.0, self.1)
    }
}

/// What kind of file a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A named pipe. Never opened: opening one blocks until a writer comes.
    Fifo,
    /// A Unix socket. Never opened, and not re-created (a socket exists only while a server
    /// listens on it).
    Socket,
    /// A character device. Never opened: `/dev/zero`'s kind reads without end.
    CharDevice,
    /// A block device. Never opened.
    BlockDevice,
}

impl Kind {
    /// The kind's name in messages.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File => "file",
            Kind::Symlink => "symbolic link",
            Kind::Fifo => "named pipe (FIFO)",
            Kind::Socket => "socket",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
        }
    }

    fn of(mode: u32) -> Kind {
        match FileType::from_raw_mode(mode) {
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharacterDevice => Kind::CharDevice,
            FileType::BlockDevice => Kind::BlockDevice,
            _ => Kind::File,
        }
    }
}

/// One `lstat`, in the units the manifest keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The kind.
    pub kind: Kind,
    /// Permission bits with set-uid, set-gid and sticky (`0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Length in bytes (a link's is its target's length).
    pub size: u64,
    /// Last modification.
    pub mtime: Time,
    /// Last access (restored, never compared).
    pub atime: Time,
    /// Last status change: any write, chmod, chown, link or xattr change moves it, and nobody
    /// can set it back, which is why change detection trusts it.
    pub ctime: Time,
    /// Inode number.
    pub ino: u64,
    /// Device of the filesystem.
    pub dev: u64,
    /// Hard links to the inode.
    pub nlink: u64,
    /// Device number, for devices.
    pub rdev: u64,
    /// 512-byte blocks allocated: fewer than the size needs means the file has holes.
    pub blocks: u64,
}

impl Meta {
    /// The metadata in a stat buffer. The casts are no-ops on x86_64, but `struct stat`'s field
    /// types differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    pub fn of(st: &Stat) -> Meta {
        Meta {
            kind: Kind::of(st.st_mode as u32),
            mode: st.st_mode as u32 & 0o7777,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: st.st_size.max(0) as u64,
            mtime: Time(st.st_mtime as i64, st.st_mtime_nsec as u32),
            atime: Time(st.st_atime as i64, st.st_atime_nsec as u32),
            ctime: Time(st.st_ctime as i64, st.st_ctime_nsec as u32),
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
            rdev: st.st_rdev as u64,
            blocks: st.st_blocks.max(0) as u64,
        }
    }

    /// Whether the file takes less space than its length: it has holes.
    pub fn sparse(&self) -> bool {
        self.kind == Kind::File && self.blocks.saturating_mul(512) < self.size
    }
}

/// The metadata of `name` in `dir`, not following a final link.
pub fn stat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Meta> {
    Ok(Meta::of(&rustix::fs::statat(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
    )?))
}

/// The metadata of an open file.
pub fn stat_fd(fd: impl AsFd) -> io::Result<Meta> {
    Ok(Meta::of(&rustix::fs::fstat(fd)?))
}

/// Opens the directory at `path`, refusing a link as its last component (a set, a job's sets
/// directory: places a link must not redirect).
pub fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the directory `name` in `dir`, refusing a link to one.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens the regular file `name` in `dir` for reading, never blocking: a link, a FIFO or a
/// device put there after it was listed is refused, not opened (`O_NONBLOCK` makes the open of
/// a FIFO return at once; `fstat` then tells what it is). Returns that `fstat` too: a copy
/// compares it with the file after reading it.
pub fn open_file_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<(std::fs::File, Meta)> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let m = stat_fd(&fd)?;
    if m.kind != Kind::File {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is a {}, not a regular file", m.kind.describe()),
        ));
    }
    Ok((std::fs::File::from(fd), m))
}

/// The names in an open directory, sorted bytewise, without `.` and `..`.
pub fn names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    Ok(entries(dir)?.into_iter().map(|(name, _)| name).collect())
}

/// The entries of an open directory with the kind the listing gives (`d_type`, `Unknown` on a
/// filesystem that gives none), sorted bytewise by name, without `.` and `..`.
pub fn entries(dir: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, FileType)>> {
    // A handle of its own: the caller's may be an `O_PATH` one, and its offset is the caller's.
    let fd = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // One large buffer: rustix's `Dir` starts with less than 1 KiB and grows slowly, and ext4
    // rebuilds an indexed directory's hash-order tree on every getdents, so listing a directory
    // of 1,000 mails took dozens of calls.
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut listing = rustix::fs::RawDir::new(&fd, buf.spare_capacity_mut());
    let mut out = Vec::new();
    while let Some(e) = listing.next() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push((n.to_vec(), e.file_type()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Whether this process can set any owner (restores and sets keep owners only then).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Extended attributes by name.
pub type Xattrs = BTreeMap<Bytes, Bytes>;

/// A path that reaches `name` in `dir` without resolving anything but the directory handle
/// itself, for the xattr calls that have no `*at` form. `.` (the directory itself) has none:
/// the `l*` calls would act on `/proc`'s own link, so callers use the `f*` calls on `dir`.
fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    p
}

/// Where xattr calls act. With Linux 6.13's `*xattrat` calls, a name in the directory handle,
/// looked up once like `fstatat`; before them, the directory itself reopened for reading (a
/// root's handle may be an `O_PATH` one, which the `f*xattr` calls refuse), or an entry in it by
/// a path through `/proc`, which costs two and a half times the lookup (scans, verifies and
/// manifests of a 10,000-file tree list every entry's attributes).
enum Target<'a> {
    At(BorrowedFd<'a>, std::ffi::CString),
    Open(BorrowedFd<'a>),
    Fd(OwnedFd),
    Path(Vec<u8>),
}

impl<'a> Target<'a> {
    fn of(dir: BorrowedFd<'a>, name: &[u8]) -> io::Result<Target<'a>> {
        if xattrat::available() {
            let name = std::ffi::CString::new(name)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a name"))?;
            return Ok(Target::At(dir, name));
        }
        Ok(if name == b"." {
            Target::Fd(rustix::fs::openat(
                dir,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?)
        } else {
            Target::Path(proc_path(dir, name))
        })
    }

    fn list(&self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            Target::At(dir, name) => xattrat::list(*dir, name, buf),
            Target::Open(fd) => rustix::fs::flistxattr(fd, buf),
            Target::Fd(fd) => rustix::fs::flistxattr(fd, buf),
            Target::Path(p) => rustix::fs::llistxattr(p.as_slice(), buf),
        }
    }

    fn get(&self, attr: &[u8], buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            Target::At(dir, name) => xattrat::get(*dir, name, attr, buf),
            Target::Open(fd) => rustix::fs::fgetxattr(fd, attr, buf),
            Target::Fd(fd) => rustix::fs::fgetxattr(fd, attr, buf),
            Target::Path(p) => rustix::fs::lgetxattr(p.as_slice(), attr, buf),
        }
    }

    fn set(&self, attr: &[u8], value: &[u8]) -> rustix::io::Result<()> {
        let flags = rustix::fs::XattrFlags::empty();
        match self {
            Target::At(dir, name) => xattrat::set(*dir, name, attr, value),
            Target::Open(fd) => rustix::fs::fsetxattr(fd, attr, value, flags),
            Target::Fd(fd) => rustix::fs::fsetxattr(fd, attr, value, flags),
            Target::Path(p) => rustix::fs::lsetxattr(p.as_slice(), attr, value, flags),
        }
    }
}

/// `setxattrat`, `getxattrat` and `listxattrat` (Linux 6.13), which neither libc nor rustix
/// wrap yet. Their numbers come from the kernel's unified syscall table, the same on x86_64 and
/// arm64; elsewhere, on an older kernel, or under a seccomp filter that refuses them, the
/// callers fall back to `/proc` paths.
mod xattrat {
    use rustix::io::{Errno, Result};
    use std::ffi::CStr;
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::sync::OnceLock;

    /// `struct xattr_args` of `<linux/xattr.h>`.
    #[repr(C)]
    struct Args {
        value: u64,
        size: u32,
        flags: u32,
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    const NUMBERS: Option<(libc::c_long, libc::c_long, libc::c_long)> = Some((463, 464, 465));
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const NUMBERS: Option<(libc::c_long, libc::c_long, libc::c_long)> = None;

    /// Whether the calls work here, asked once of the kernel.
    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            let Some((_, _, list)) = NUMBERS else {
                return false;
            };
            // SAFETY: a NULL buffer of size 0 asks only for the list's length.
            let r = unsafe {
                libc::syscall(
                    list,
                    libc::AT_FDCWD,
                    c"/".as_ptr(),
                    0,
                    std::ptr::null_mut::<u8>(),
                    0usize,
                )
            };
            r >= 0
                || !matches!(
                    Errno::from_raw_os_error(errno()),
                    Errno::NOSYS | Errno::PERM
                )
        })
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    fn result(r: libc::c_long) -> Result<usize> {
        if r < 0 {
            Err(Errno::from_raw_os_error(errno()))
        } else {
            Ok(r as usize)
        }
    }

    fn numbers() -> (libc::c_long, libc::c_long, libc::c_long) {
        NUMBERS.expect("only used when available()")
    }

    pub(super) fn list(dir: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> Result<usize> {
        // SAFETY: `name` is NUL-terminated and `buf` is valid for its length.
        result(unsafe {
            libc::syscall(
                numbers().2,
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                buf.as_mut_ptr(),
                buf.len(),
            )
        })
    }

    fn attr_name(attr: &[u8]) -> Result<std::ffi::CString> {
        std::ffi::CString::new(attr).map_err(|_| Errno::INVAL)
    }

    pub(super) fn get(
        dir: BorrowedFd<'_>,
        name: &CStr,
        attr: &[u8],
        buf: &mut [u8],
    ) -> Result<usize> {
        let attr = attr_name(attr)?;
        let mut args = Args {
            value: buf.as_mut_ptr() as u64,
            size: u32::try_from(buf.len()).unwrap_or(u32::MAX),
            flags: 0,
        };
        // SAFETY: the names are NUL-terminated, `args` describes `buf`, and its size is passed.
        result(unsafe {
            libc::syscall(
                numbers().1,
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                attr.as_ptr(),
                &mut args as *mut Args,
                std::mem::size_of::<Args>(),
            )
        })
    }

    pub(super) fn set(dir: BorrowedFd<'_>, name: &CStr, attr: &[u8], value: &[u8]) -> Result<()> {
        let attr = attr_name(attr)?;
        let size = u32::try_from(value.len()).map_err(|_| Errno::TOOBIG)?;
        let args = Args {
            value: value.as_ptr() as u64,
            size,
            flags: 0,
        };
        // SAFETY: as in `get`; the kernel only reads `value`.
        result(unsafe {
            libc::syscall(
                numbers().0,
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW as libc::c_uint,
                attr.as_ptr(),
                &args as *const Args,
                std::mem::size_of::<Args>(),
            )
        })
        .map(drop)
    }
}

fn unsupported(e: &rustix::io::Errno) -> bool {
    *e == rustix::io::Errno::NOTSUP || *e == rustix::io::Errno::NOSYS
}

/// The extended attributes of `name` in `dir` (not following a final link). A filesystem
/// without them has none.
pub fn xattrs_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Xattrs> {
    read_xattrs(&Target::of(dir, name)?)
}

/// The extended attributes of an open file (not an `O_PATH` handle).
pub fn xattrs_fd(fd: BorrowedFd<'_>) -> io::Result<Xattrs> {
    read_xattrs(&Target::Open(fd))
}

fn read_xattrs(at: &Target<'_>) -> io::Result<Xattrs> {
    // Most entries have no attributes: their listing allocates nothing.
    let mut small = [0u8; 1024];
    let mut large = Vec::new();
    let list: &[u8] = match at.list(&mut small[..]) {
        Ok(n) => &small[..n],
        Err(e) if unsupported(&e) => return Ok(Xattrs::new()),
        Err(e) if e == rustix::io::Errno::RANGE => loop {
            let want = at.list(&mut [0u8; 0][..])?;
            large.resize(want.max(large.len() * 2).max(2048), 0);
            match at.list(&mut large[..]) {
                Ok(n) => break &large[..n],
                // Grown since it was measured.
                Err(e) if e == rustix::io::Errno::RANGE => continue,
                Err(e) => return Err(e.into()),
            }
        },
        Err(e) => return Err(e.into()),
    };
    let mut out = Xattrs::new();
    for attr in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 256];
        let n = loop {
            match at.get(attr, &mut value[..]) {
                Ok(n) => break Some(n),
                // Removed since it was listed.
                Err(e) if e == rustix::io::Errno::NODATA => break None,
                Err(e) if e == rustix::io::Errno::RANGE => {
                    let want = at.get(attr, &mut [0u8; 0][..])?;
                    value.resize(want.max(value.len() * 2), 0);
                }
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(n) = n {
            value.truncate(n);
            out.insert(Bytes(attr.to_vec()), Bytes(value));
        }
    }
    Ok(out)
}

/// Sets every attribute of `attrs` on `name` in `dir` (`.` for `dir` itself). Returns the
/// attributes that could not be set, with why: the caller decides whether that fails the copy.
pub fn set_xattrs_at(dir: BorrowedFd<'_>, name: &[u8], attrs: &Xattrs) -> Vec<(Bytes, io::Error)> {
    let at = match Target::of(dir, name) {
        Ok(t) => t,
        Err(e) => {
            return attrs
                .keys()
                .map(|k| (k.clone(), io::Error::new(e.kind(), e.to_string())))
                .collect();
        }
    };
    attrs
        .iter()
        .filter_map(|(k, v)| {
            at.set(k.as_bytes(), v.as_bytes())
                .err()
                .map(|e| (k.clone(), io::Error::from(e)))
        })
        .collect()
}

/// Sets owner (when `owners`), extended attributes, permission bits and times on an open file
/// or directory, in the order that keeps each: chown clears set-uid bits and capabilities, an
/// ACL rewrites the group bits, so the attributes come after the owner, the mode after them, and
/// the times last. `xattrs` sets the attributes (see [`set_xattrs_at`]).
pub fn apply_fd(
    fd: BorrowedFd<'_>,
    m: &Meta,
    owners: bool,
    xattrs: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    if owners {
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(m.uid)),
            Some(rustix::fs::Gid::from_raw(m.gid)),
        )?;
    }
    xattrs()?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode))?;
    rustix::fs::futimens(fd, &timestamps(m))?;
    Ok(())
}

/// [`apply_fd`] for an entry that cannot be opened (a link, a FIFO, a device); a link has no
/// mode of its own.
pub fn apply_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    m: &Meta,
    owners: bool,
    xattrs: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    if owners {
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(m.uid)),
            Some(rustix::fs::Gid::from_raw(m.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    xattrs()?;
    if m.kind != Kind::Symlink {
        rustix::fs::chmodat(dir, name, Mode::from_raw_mode(m.mode), AtFlags::empty())?;
    }
    rustix::fs::utimensat(dir, name, &timestamps(m), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn timestamps(m: &Meta) -> rustix::fs::Timestamps {
    let ts = |t: Time| rustix::fs::Timespec {
        tv_sec: t.0,
        tv_nsec: t.1 as _,
    };
    rustix::fs::Timestamps {
        last_access: ts(m.atime),
        last_modification: ts(m.mtime),
    }
}

/// Makes a FIFO or a device like `m` as `name` in `dir`.
pub fn make_node(dir: BorrowedFd<'_>, name: &[u8], m: &Meta) -> io::Result<()> {
    let ft = match m.kind {
        Kind::Fifo => FileType::Fifo,
        Kind::CharDevice => FileType::CharacterDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a {} is not made with mknod", other.describe()),
            ));
        }
    };
    rustix::fs::mknodat(dir, name, ft, Mode::from_raw_mode(m.mode & 0o777), m.rdev)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_sees_kinds_without_opening_and_xattrs_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("p").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o640),
            0,
        )
        .unwrap();
        let dir = rustix::fs::open(d, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert_eq!(
            names(dir.as_fd()).unwrap(),
            [b"f".to_vec(), b"l".to_vec(), b"p".to_vec()]
        );
        assert_eq!(stat_at(dir.as_fd(), b"l").unwrap().kind, Kind::Symlink);
        let p = stat_at(dir.as_fd(), b"p").unwrap();
        assert_eq!((p.kind, p.mode), (Kind::Fifo, 0o640));
        // Opening the FIFO neither blocks nor reads it.
        let e = open_file_at(dir.as_fd(), b"p").unwrap_err();
        assert!(e.to_string().contains("named pipe"), "{e}");
        assert!(
            open_file_at(dir.as_fd(), b"l").is_err(),
            "a link was followed"
        );

        let attrs = Xattrs::from([(Bytes::from("user.hokan"), Bytes(vec![0, 1, 255]))]);
        let failed = set_xattrs_at(dir.as_fd(), b"f", &attrs);
        if failed.is_empty() {
            assert_eq!(xattrs_at(dir.as_fd(), b"f").unwrap(), attrs);
        } else {
            // tmpfs without user xattrs: nothing to compare, but the failure is reported.
            assert_eq!(failed.len(), 1);
        }
        assert!(xattrs_at(dir.as_fd(), b"p").is_ok());
        // The directory itself, as `.`: through its handle, not /proc's link to it.
        if set_xattrs_at(dir.as_fd(), b".", &attrs).is_empty() {
            assert_eq!(xattrs_at(dir.as_fd(), b".").unwrap(), attrs);
        }
        // A root's handle is an O_PATH one (cap-std's): its own attributes still read.
        let path_only =
            rustix::fs::open(d, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert!(xattrs_at(path_only.as_fd(), b".").is_ok());
    }

    #[test]
    fn every_way_of_reaching_attributes_reads_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        let dir = rustix::fs::open(
            tmp.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        // A list longer than the first buffer, and a value longer than the first guess.
        let mut attrs: Xattrs = (0..45)
            .map(|i| {
                (
                    Bytes(format!("user.hokan-attribute-{i:03}").into_bytes()),
                    Bytes(vec![i]),
                )
            })
            .collect();
        attrs.insert(Bytes::from("user.hokan-large"), Bytes(vec![7; 600]));
        if !set_xattrs_at(dir.as_fd(), b"f", &attrs).is_empty() {
            return; // a filesystem without user attributes
        }
        let file = std::fs::File::open(tmp.path().join("f")).unwrap();
        let mut ways = vec![
            Target::Path(proc_path(dir.as_fd(), b"f")),
            Target::Open(file.as_fd()),
        ];
        if xattrat::available() {
            ways.push(Target::At(dir.as_fd(), c"f".to_owned()));
        }
        for way in &ways {
            assert_eq!(read_xattrs(way).unwrap(), attrs);
        }
    }
}
