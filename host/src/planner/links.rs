//! Symbolic links that lead out of the root a copy reads: kept as links, what they point to is
//! not backed up, so the plan warns before the restore finds out.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Warnings, by name, for every symbolic link that a copy would store as a link although it
/// leads out of its root (an archive `mw/back2` moved to another volume and linked): the link
/// is kept, what it points to is not, and the operator must know before the restore finds out.
/// Only the sources of copies are walked, without following anything.
pub fn links_out_of_their_root(
    plan: &crate::plan::Plan,
    roots: &BTreeMap<String, PathBuf>,
) -> Vec<String> {
    use crate::plan::Action;
    use crate::tree::RelPath;
    const SHOWN: usize = 20;
    let mut out = Vec::new();
    let mut more = 0;
    let mut seen = std::collections::BTreeSet::new();
    for s in plan.all_steps() {
        let Action::CopyTree { from, .. } = &s.action else {
            continue;
        };
        let Some(root) = roots.get(&from.root).filter(|_| from.root != "set") else {
            continue;
        };
        if !seen.insert((from.root.clone(), from.path.clone())) {
            continue;
        }
        let Ok(top) = crate::tree::meta::open_dir(root) else {
            continue;
        };
        let from_path = RelPath::from(from.path.as_str());
        let (parent, name) = if from_path.is_empty() {
            (Ok(top), b".".to_vec())
        } else {
            (
                crate::tree::scan::open_path(std::os::fd::AsFd::as_fd(&top), &from_path.parent()),
                from_path.file_name().to_vec(),
            )
        };
        let Ok(parent) = parent else { continue };
        let Ok(links) = crate::tree::scan::symlinks(std::os::fd::AsFd::as_fd(&parent), &name)
        else {
            continue;
        };
        for (path, target) in links {
            let at = path.under(&from_path);
            if !leaves(&at, target.as_bytes()) {
                continue;
            }
            if out.len() == SHOWN {
                more += 1;
                continue;
            }
            out.push(format!(
                "{}:/{at} is a symbolic link to {target}, which is outside the root `{}` ({}): it is backed up as a link, not what it points to; to back that up too, grant it as a root of the job, or move it back under {}",
                from.root,
                from.root,
                root.display(),
                root.display()
            ));
        }
    }
    if more > 0 {
        out.push(format!(
            "... and {more} more symbolic link(s) that lead out of their root"
        ));
    }
    out
}

/// Whether a link at `at` (relative to its root) with `target` resolves outside the root: an
/// absolute target always counts (it names this host's layout, not the root's), a relative one
/// when its `..` climb above the root.
fn leaves(at: &crate::tree::RelPath, target: &[u8]) -> bool {
    if target.starts_with(b"/") {
        return true;
    }
    let mut depth = at.components().count().saturating_sub(1) as i64;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_that_leave_their_root_are_named() {
        use crate::plan::{Action, Location};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        std::fs::create_dir_all(root.join("mw/data")).unwrap();
        std::os::unix::fs::symlink("/mnt/archive/back2", root.join("mw/back2")).unwrap();
        std::os::unix::fs::symlink("../../../etc", root.join("mw/data/up")).unwrap();
        std::os::unix::fs::symlink("../file", root.join("mw/data/sibling")).unwrap();
        let step = crate::plan::testing::step(
            "copy",
            Action::CopyTree {
                from: Location::new("data", "mw"),
                to: Location::new("set", "mw"),
            },
        );
        let plan = crate::plan::testing::plan(vec![step], vec![]);
        let w = links_out_of_their_root(&plan, &BTreeMap::from([("data".to_string(), root)]));
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(w[0].starts_with("data:/mw/back2 is a symbolic link to /mnt/archive/back2, which is outside the root `data`"), "{w:#?}");
        assert!(
            w[1].starts_with("data:/mw/data/up is a symbolic link to ../../../etc"),
            "{w:#?}"
        );
    }
}
