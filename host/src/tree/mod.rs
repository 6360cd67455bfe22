//! Trees of files as a backup must see them: walked through directory handles, names as bytes,
//! every kind of entry recognised without being opened, and all the metadata that `cp -a` and
//! `rsync -aHAXS` keep. Backups, restores, manifests and `verify` all go through here, so what
//! a set records and what a restore brings back are decided in one place.

pub mod bytes;
pub mod copy;
pub mod digest;
pub mod meta;
pub mod scan;

pub use bytes::{Bytes, RelPath};
pub use copy::{
    Copied, CopyError, CopyOptions, End, Feed, Fetched, LinkDest, PrevFile, Source, Written,
    copy_from_feed, copy_tree,
};
pub use meta::{Kind, Meta, Time, Xattrs};
pub use scan::{Attrs, Node, ScanError, ScanOptions, check_walk, scan};

/// How two entries that should be the same differ, one phrase each; empty when they do not.
/// `want` is what should be there (the source, or the manifest), `have` what is. Owners are
/// compared only when `owners` (a set written without root cannot hold them); directory
/// mtimes only when `dir_times` (adding a file to a directory moves its mtime, and a live tree's
/// directories are compared by their entries instead).
pub fn differences(want: &Node, have: &Node, owners: bool, dir_times: bool) -> Vec<String> {
    let (w, h) = (&want.meta, &have.meta);
    if w.kind != h.kind {
        return vec![format!(
            "is a {}, not a {}",
            h.kind.describe(),
            w.kind.describe()
        )];
    }
    let mut out = Vec::new();
    if w.kind == Kind::File && w.size != h.size {
        out.push(format!("is {} bytes, not {}", h.size, w.size));
    }
    if w.kind != Kind::Symlink && w.mode != h.mode {
        out.push(format!("has mode {:04o}, not {:04o}", h.mode, w.mode));
    }
    if owners && (w.uid, w.gid) != (h.uid, h.gid) {
        out.push(format!(
            "belongs to {}:{}, not {}:{}",
            h.uid, h.gid, w.uid, w.gid
        ));
    }
    if (w.kind != Kind::Dir || dir_times) && w.mtime != h.mtime {
        out.push(format!("has mtime {}, not {}", h.mtime, w.mtime));
    }
    if want.target != have.target {
        out.push(format!(
            "links to {}, not {}",
            have.target.clone().unwrap_or_default(),
            want.target.clone().unwrap_or_default()
        ));
    }
    if matches!(w.kind, Kind::CharDevice | Kind::BlockDevice) && w.rdev != h.rdev {
        out.push(format!(
            "is device {}:{}, not {}:{}",
            rustix::fs::major(h.rdev),
            rustix::fs::minor(h.rdev),
            rustix::fs::major(w.rdev),
            rustix::fs::minor(w.rdev)
        ));
    }
    if want.xattrs != have.xattrs {
        let names = |a: &Xattrs, b: &Xattrs| {
            a.keys()
                .filter(|k| !b.contains_key(*k))
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        let (lost, extra) = (
            names(&want.xattrs, &have.xattrs),
            names(&have.xattrs, &want.xattrs),
        );
        let changed: Vec<String> = want
            .xattrs
            .iter()
            .filter(|(k, v)| have.xattrs.get(*k).is_some_and(|x| x != *v))
            .map(|(k, _)| k.to_string())
            .collect();
        let mut parts = Vec::new();
        for (what, list) in [("missing", lost), ("extra", extra), ("changed", changed)] {
            if !list.is_empty() {
                parts.push(format!("{what}: {}", list.join(", ")));
            }
        }
        out.push(format!("extended attributes differ ({})", parts.join("; ")));
    }
    if want.first != have.first {
        out.push(match (&want.first, &have.first) {
            (Some(a), None) => format!("is not a hard link to {a}"),
            (None, Some(b)) => format!("is a hard link to {b}, which it should not be"),
            (Some(a), Some(b)) => format!("is a hard link to {b}, not to {a}"),
            (None, None) => unreachable!(),
        });
    }
    out
}

/// Helpers for the host's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    /// Rewrites `path` with `bytes` and gives it back its mtime: a change that only the ctime
    /// shows, as an application that restores mtimes makes.
    pub fn rewrite_keeping_mtime(path: &std::path::Path, bytes: &[u8]) {
        let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
        std::fs::write(path, bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
}
