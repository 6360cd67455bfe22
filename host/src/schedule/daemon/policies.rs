//! The policy files the daemon schedules from: each file's last good version, re-read when the
//! file changes, and the snapshots that runs read.
//!
//! A policy edited into something that does not load (a typo at 3 a.m.) must not unschedule the
//! site's backups: the file keeps its previous version, and the error is reported (as an event
//! and in `hokan status`) until the file is fixed.

use super::event::Event;
use crate::planner::PluginDir;
use crate::policy::Policy;
use crate::schedule::{Describer, ScheduledJob, load};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A file's modification time and size: a change to either means it is read again.
type Stamp = (SystemTime, u64);

/// A policy file as last read.
struct PolicyFile {
    stamp: Stamp,
    /// The version in use (the last good one).
    version: Option<Version>,
    error: Option<String>,
}

/// A version of a policy file that loaded: its text (what runs read) and its scheduled jobs
/// (checked against their plugins when it was read).
struct Version {
    text: String,
    jobs: Vec<ScheduledJob>,
}

/// The policy files of the daemon's policy directory (or its one policy file).
#[derive(Default)]
pub(super) struct Policies {
    files: BTreeMap<PathBuf, PolicyFile>,
}

impl Policies {
    /// Reads the files under `path` that changed since the last call (all of them if `force`),
    /// telling `emit` what happened. Returns the scheduled jobs of every file's version in use
    /// when any of them changed, `None` when nothing did.
    pub(super) fn reload(
        &mut self,
        path: &Path,
        force: bool,
        describe: Describer<'_>,
        plugin_dir: &Path,
        emit: &dyn Fn(Event),
    ) -> Option<Vec<ScheduledJob>> {
        let files = match policy_files(path) {
            Ok(f) => f,
            Err(e) => {
                // Nothing changes until the directory can be read again.
                emit(Event::PoliciesUnreadable { error: e });
                return None;
            }
        };
        let mut changed = force;
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !files.iter().any(|(f, _)| f == *p))
            .cloned()
            .collect();
        for p in gone {
            emit(Event::PolicyGone { path: p.clone() });
            self.files.remove(&p);
            changed = true;
        }
        for (path, stamp) in files {
            if self.files.get(&path).is_some_and(|f| f.stamp == stamp) && !force {
                continue;
            }
            changed = true;
            let loaded = read_version(&path, describe, plugin_dir);
            let entry = self.files.entry(path.clone()).or_insert(PolicyFile {
                stamp,
                version: None,
                error: None,
            });
            entry.stamp = stamp;
            match loaded {
                Ok(v) => {
                    if !force {
                        emit(Event::Reloaded { path: path.clone() });
                    }
                    entry.version = Some(v);
                    entry.error = None;
                }
                Err(e) => {
                    let kept = if entry.version.is_some() {
                        "the previous version is kept"
                    } else {
                        "its jobs are not scheduled"
                    };
                    emit(Event::PolicyRefused {
                        error: e.clone(),
                        kept,
                    });
                    entry.error = Some(format!("{e} ({kept})"));
                }
            }
        }
        changed.then(|| {
            self.files
                .values()
                .filter_map(|f| f.version.as_ref())
                .flat_map(|v| v.jobs.iter().cloned())
                .collect()
        })
    }

    /// What is wrong with the files whose latest text did not load, and what was kept.
    pub(super) fn errors(&self) -> Vec<String> {
        self.files
            .values()
            .filter_map(|f| f.error.clone())
            .collect()
    }

    /// The text of the version in use for `file`, saved under `policies/` in the state directory
    /// (named by its hash), for a run to read: a run reads the version the daemon validated,
    /// even if the file changed since.
    pub(super) fn snapshot(&self, file: &Path, state: &Path) -> Result<PathBuf, String> {
        let text = self
            .files
            .get(file)
            .and_then(|f| f.version.as_ref())
            .map(|v| v.text.as_str())
            .ok_or_else(|| format!("no usable version of {}", file.display()))?;
        let dir = state.join("policies");
        let hash = blake3::hash(text.as_bytes()).to_hex();
        let path = dir.join(format!("{}.toml", &hash[..16]));
        if !path.exists() {
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, text))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(path)
    }
}

/// A policy file's text and scheduled jobs, or what is wrong with it.
fn read_version(
    path: &Path,
    describe: Describer<'_>,
    plugin_dir: &Path,
) -> Result<Version, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the policy: {e}", path.display()))?;
    let p = Policy::parse(path, &text).map_err(|e| e.to_string())?;
    let dir = PluginDir(plugin_dir.to_path_buf());
    let l = load(describe, &dir, std::slice::from_ref(&p));
    if l.errors.is_empty() {
        Ok(Version { text, jobs: l.jobs })
    } else {
        Err(l.errors.join("; "))
    }
}

/// The policy files under `path` with their modification time and size.
fn policy_files(path: &Path) -> Result<Vec<(PathBuf, Stamp)>, String> {
    Ok(crate::policy::files(path)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            Some((p, (m.modified().ok()?, m.len())))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::testing::description;
    use std::cell::RefCell;

    const POLICY: &str = r#"
[site]
name = "hq"
timezone = "Asia/Tokyo"

[[servers]]
name = "a"
role = "mail"

[jobs.mail]
plugin = "mail"
servers = ["a"]
schedule = "daily at 02:00"
"#;

    struct Fixture {
        dir: tempfile::TempDir,
        events: RefCell<Vec<Event>>,
        policies: Policies,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("policies")).unwrap();
            Fixture {
                dir,
                events: RefCell::new(Vec::new()),
                policies: Policies::default(),
            }
        }
        fn state(&self) -> PathBuf {
            self.dir.path().join("state")
        }
        fn file(&self) -> PathBuf {
            self.dir.path().join("policies/hq.toml")
        }
        fn reload(&mut self, force: bool) -> Option<Vec<String>> {
            let d = description("mail", &["backup"]);
            let events = &self.events;
            self.policies
                .reload(
                    &self.dir.path().join("policies"),
                    force,
                    &|_, _| Ok(d.clone()),
                    Path::new("/plugins"),
                    &|e| events.borrow_mut().push(e),
                )
                .map(|jobs| {
                    jobs.into_iter()
                        .map(|j| format!("{}/{}", j.site, j.job))
                        .collect()
                })
        }
    }

    #[test]
    fn a_policy_edited_into_something_wrong_keeps_its_last_good_version() {
        let mut f = Fixture::new();
        std::fs::write(f.file(), POLICY).unwrap();
        assert_eq!(f.reload(true), Some(vec!["hq/mail".to_string()]));
        // Nothing changed: nothing to reschedule.
        assert_eq!(f.reload(false), None);
        let good = std::fs::read_to_string(f.policies.snapshot(&f.file(), &f.state()).unwrap());
        assert_eq!(good.unwrap(), POLICY);

        // A typo: the job stays scheduled as it was, and the operator hears why.
        std::fs::write(f.file(), POLICY.replace("daily at 02:00", "daily at 25:00")).unwrap();
        assert_eq!(f.reload(false), Some(vec!["hq/mail".to_string()]));
        let refused = f.events.borrow().iter().find_map(|e| match e {
            Event::PolicyRefused { error, kept } => Some((error.clone(), *kept)),
            _ => None,
        });
        let (error, kept) = refused.expect("the refusal is an event");
        assert!(error.contains("jobs.mail.schedule"), "{error}");
        assert_eq!(kept, "the previous version is kept");
        assert_eq!(f.policies.errors().len(), 1);
        // Runs still read the version that was checked, not the broken file.
        let snap = f.policies.snapshot(&f.file(), &f.state()).unwrap();
        assert_eq!(std::fs::read_to_string(snap).unwrap(), POLICY);

        // Fixed: the new version is used and the error is gone.
        let fixed = POLICY.replace("daily at 02:00", "daily at 03:00");
        std::fs::write(f.file(), &fixed).unwrap();
        assert_eq!(f.reload(false), Some(vec!["hq/mail".to_string()]));
        assert!(f.policies.errors().is_empty());
        assert!(
            f.events
                .borrow()
                .contains(&Event::Reloaded { path: f.file() })
        );
        let snap = f.policies.snapshot(&f.file(), &f.state()).unwrap();
        assert_eq!(std::fs::read_to_string(snap).unwrap(), fixed);
    }

    #[test]
    fn a_new_file_that_does_not_load_schedules_nothing_and_a_removed_one_unschedules() {
        let mut f = Fixture::new();
        std::fs::write(f.file(), "[site\n").unwrap();
        assert_eq!(f.reload(true), Some(vec![]));
        assert!(f.events.borrow().iter().any(|e| matches!(
            e,
            Event::PolicyRefused {
                kept: "its jobs are not scheduled",
                ..
            }
        )));
        assert!(f.policies.snapshot(&f.file(), &f.state()).is_err());

        std::fs::write(f.file(), POLICY).unwrap();
        assert_eq!(f.reload(false), Some(vec!["hq/mail".to_string()]));
        std::fs::remove_file(f.file()).unwrap();
        assert_eq!(f.reload(false), Some(vec![]));
        assert!(
            f.events
                .borrow()
                .contains(&Event::PolicyGone { path: f.file() })
        );
    }
}
