//! Backup sets: where a job's sets live and how they are named.
//!
//! A set is a directory `<backup_root>/<site>/<job>/<id>/`, where the id is the UTC time the run
//! started (`20261121T021000Z`), so ids sort in time order. A set is written as
//! `.<id>.partial` and renamed to its id only once every copy succeeded and its
//! [`manifest::MANIFEST`] is written: a set directory without a manifest is never listed as good.

pub mod manifest;
pub mod retention;
pub mod tested;

pub use manifest::{Manifest, SetError, Verification};
pub use retention::Retention;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The directory holding a job's sets.
pub fn job_dir(backup_root: &Path, site: &str, job: &str) -> PathBuf {
    backup_root.join(site).join(job)
}

/// The id of a set started at `t`.
pub fn id_at(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Whether `name` has the form of a set id.
pub fn is_id(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// The name a set is written under until it is complete.
pub fn partial_name(id: &str) -> String {
    format!(".{id}.partial")
}

/// What a directory in a job's sets directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SetState {
    /// Named by its id, with a manifest: complete.
    Good,
    /// Named by its id, with a manifest that says it is kept though its run failed after a
    /// point of no return: whole as far as its manifest goes, but not known good. Never linked
    /// from, pruned or chosen by default; restored from by name.
    Kept,
    /// Named by its id but without a manifest: not written by hokan, or damaged. Never used.
    NoManifest,
    /// Still being written, or left by a run that died; `hokan recover` removes it.
    Partial,
}

/// A directory in a job's sets directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    /// The set's id.
    pub id: String,
    /// Its state.
    pub state: SetState,
    /// Its directory.
    pub path: PathBuf,
    /// When it was completed, from its manifest's head (read once, for its state too).
    #[serde(skip)]
    pub finished: Option<String>,
}

/// Every set directory in a job's directory, complete or not, oldest first. A missing directory
/// has none.
pub fn list_all(job_dir: &Path) -> std::io::Result<Vec<Listed>> {
    let entries = match std::fs::read_dir(job_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        // Set ids are ASCII: a name that is not UTF-8 is no set.
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path();
        let (id, state, finished) = if is_id(&name) {
            let head = path
                .join(manifest::MANIFEST)
                .is_file()
                .then(|| Manifest::head(&path));
            let (state, finished) = match head {
                None => (SetState::NoManifest, None),
                Some(Ok(h)) if h.kept.is_some() => (SetState::Kept, Some(h.finished)),
                Some(Ok(h)) => (SetState::Good, Some(h.finished)),
                // A manifest that cannot be read is found out by `hokan sets` and `verify`.
                Some(Err(_)) => (SetState::Good, None),
            };
            (name, state, finished)
        } else if let Some(id) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".partial"))
            .filter(|id| is_id(id))
        {
            (id.to_string(), SetState::Partial, None)
        } else {
            continue;
        };
        out.push(Listed {
            id,
            state,
            path,
            finished,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id).then(a.path.cmp(&b.path)));
    Ok(out)
}

/// Where a restore's sets come from, and how one is checked before it is read: the real sets
/// directory ([`OnDisk`]), or a modelled world's. [`choose`] is the one rule over either.
pub trait Catalog {
    /// The good sets of `dir`, oldest first by completion.
    fn good(&self, dir: &Path) -> std::io::Result<Vec<String>>;
    /// The sets of `dir` kept incomplete after a point of no return: a restore reads one only
    /// when it is named.
    fn kept(&self, _dir: &Path) -> std::io::Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// `Err(why)` when the set does not match its manifest.
    fn verify(&self, dir: &Path, id: &str) -> Result<(), String>;
}

/// The real sets directories: manifests, verified byte for byte.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnDisk;

impl Catalog for OnDisk {
    fn good(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        by_completion(dir)
    }

    fn kept(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        Ok(list_all(dir)?
            .into_iter()
            .filter(|s| s.state == SetState::Kept)
            .map(|s| s.id)
            .collect())
    }

    fn verify(&self, dir: &Path, id: &str) -> Result<(), String> {
        match manifest::verify(&dir.join(id)) {
            Ok(v) if v.ok() => Ok(()),
            Ok(v) => {
                let mut s: Vec<String> =
                    v.problems.iter().take(5).map(ToString::to_string).collect();
                if v.problems.len() > 5 {
                    s.push(format!("and {} more", v.problems.len() - 5));
                }
                Err(s.join("; "))
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The set a restore reads, and the newer ones passed over with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    /// The set's id.
    pub id: String,
    /// Newer sets that did not verify, with why, for the operator.
    pub passed_over: Vec<(String, String)>,
}

/// The set a restore reads: the one named (good or kept), if it verifies, or else the newest
/// good set that verifies. `hokan plan`, `hokan simulate` and `hokan run` all choose here, so
/// the plan shown is the plan run. `Err` says why none can be, and what to do.
pub fn choose(catalog: &dyn Catalog, dir: &Path, wanted: Option<&str>) -> Result<Chosen, String> {
    let listing = |e: std::io::Error| format!("cannot list backup sets in {}: {e}", dir.display());
    // Oldest first by completion, as the manifests record it: after the clock was set back, a
    // set's id no longer says how new it is.
    let good = catalog.good(dir).map_err(listing)?;
    if let Some(id) = wanted {
        if !good.iter().any(|i| i == id)
            && !catalog.kept(dir).map_err(listing)?.iter().any(|i| i == id)
        {
            return Err(format!(
                "there is no complete backup set `{id}` in {}; complete sets: {}",
                dir.display(),
                if good.is_empty() {
                    "none".into()
                } else {
                    good.join(", ")
                }
            ));
        }
        return catalog
            .verify(dir, id)
            .map(|()| Chosen {
                id: id.to_string(),
                passed_over: vec![],
            })
            .map_err(|why| {
                format!(
                    "the backup set {id} does not match its manifest, so it is not restored: \
                     {why}; choose another with --set (`hokan sets` lists them)"
                )
            });
    }
    let mut passed_over = Vec::new();
    for id in good.iter().rev() {
        match catalog.verify(dir, id) {
            Ok(()) => {
                return Ok(Chosen {
                    id: id.clone(),
                    passed_over,
                });
            }
            Err(why) => passed_over.push((id.clone(), why)),
        }
    }
    Err(if good.is_empty() {
        format!(
            "there is no complete backup set in {} yet; run the job's backup first",
            dir.display()
        )
    } else {
        format!(
            "no backup set in {} matches its manifest: {}",
            dir.display(),
            passed_over
                .iter()
                .map(|(id, why)| format!("{id}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

/// The complete sets (those with a manifest) in a job's directory, oldest first.
pub fn list(job_dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(list_all(job_dir)?
        .into_iter()
        .filter(|s| s.state == SetState::Good)
        .map(|s| s.id)
        .collect())
}

/// The complete sets of a job, oldest first by when they were completed (the manifest's
/// `finished`), ids breaking ties; a set whose manifest cannot be read counts as oldest.
pub fn by_completion(job_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut sets: Vec<(String, String)> = list_all(job_dir)?
        .into_iter()
        .filter(|s| s.state == SetState::Good)
        .map(|s| (s.finished.unwrap_or_default(), s.id))
        .collect();
    sets.sort();
    Ok(sets.into_iter().map(|(_, id)| id).collect())
}

/// The set a backup links its unchanged files from, and counts its bytes against before it
/// starts: the job's newest complete set by completion, read once for both.
#[derive(Debug)]
pub struct Previous {
    /// Its id.
    pub id: String,
    /// Its directory, and the files of its manifest that a backup copied from a live tree (only
    /// those have the source fingerprint that decides whether a file is unchanged).
    pub link: crate::tree::LinkDest,
}

impl Previous {
    /// The newest complete set in `job_dir`, read; `None` when the job has none. A set that
    /// cannot be read is an error to warn about: nothing is linked from it.
    pub fn newest(job_dir: &Path) -> Option<Result<Previous, SetError>> {
        let id = by_completion(job_dir).ok()?.pop()?;
        Some(Self::read(job_dir, &id))
    }

    /// The set `id` in `job_dir`, read.
    pub fn read(job_dir: &Path, id: &str) -> Result<Previous, SetError> {
        let dir = &job_dir.join(id);
        let m = Manifest::read(dir)?;
        let fd = crate::tree::meta::open_dir(dir).map_err(|source| SetError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let files = m
            .entries
            .into_iter()
            .filter(|e| e.is_file())
            .filter_map(|e| {
                Some((
                    e.path,
                    crate::tree::PrevFile {
                        size: e.size,
                        mtime: e.mtime,
                        mode: e.mode,
                        uid: e.uid,
                        gid: e.gid,
                        digest: e.digest?,
                        ino: e.ino?,
                        source: e.source?,
                    },
                ))
            })
            .collect();
        Ok(Previous {
            id: id.to_string(),
            link: crate::tree::LinkDest { dir: fd, files },
        })
    }
}

/// The newest set, read on a thread of its own from the start of planning: the plugin plans
/// meanwhile, and the `backup-size` fact and the copies wait for it only when they need it
/// (the manifest of a 10,000-file set takes about 25 ms to read).
#[derive(Debug)]
pub struct PreviousLoad {
    reading: std::sync::Mutex<Option<std::thread::JoinHandle<Option<Previous>>>>,
    read: std::sync::OnceLock<Option<std::sync::Arc<Previous>>>,
}

impl PreviousLoad {
    /// Starts reading the newest set of `job_dir`. A set that cannot be read is warned about,
    /// and nothing is linked from it.
    pub fn start(job_dir: PathBuf) -> Self {
        let reading = std::thread::spawn(move || match Previous::newest(&job_dir) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                tracing::warn!(
                    "the newest set cannot be linked from, so every file is copied: {e}"
                );
                None
            }
            None => None,
        });
        PreviousLoad {
            reading: std::sync::Mutex::new(Some(reading)),
            read: std::sync::OnceLock::new(),
        }
    }

    /// No previous set (not a backup, or `--no-links`), or one read already.
    pub fn ready(previous: Option<Previous>) -> Self {
        PreviousLoad {
            reading: std::sync::Mutex::new(None),
            read: std::sync::OnceLock::from(previous.map(std::sync::Arc::new)),
        }
    }

    /// The set, once read.
    pub fn get(&self) -> Option<&std::sync::Arc<Previous>> {
        self.read
            .get_or_init(|| {
                let reading = self
                    .reading
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                reading
                    .and_then(|h| h.join().ok().flatten())
                    .map(std::sync::Arc::new)
            })
            .as_ref()
    }
}

/// A kernel lock on a set directory: readers (a restore, `verify`) hold it shared for as long
/// as they read, and retention removes a set only if it can hold it exclusively, so a set is
/// never removed under a restore that reads it.
#[derive(Debug)]
pub struct SetLock(#[allow(dead_code)] std::fs::File);

impl SetLock {
    /// Waits for a shared lock on the set in `dir`.
    pub fn shared(dir: &Path) -> std::io::Result<SetLock> {
        let f = std::fs::File::open(dir)?;
        f.lock_shared()?;
        Ok(SetLock(f))
    }

    /// An exclusive lock on the set in `dir`, or `None` when someone reads it.
    pub fn try_exclusive(dir: &Path) -> std::io::Result<Option<SetLock>> {
        let f = std::fs::File::open(dir)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(SetLock(f))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Removes a tree, making read-only directories in it writable first (mailwise keeps its
/// archives read-only). Nothing there is success.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a removable path", path.display()),
        ));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let dir = rustix::fs::open(
        parent,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    );
    match dir {
        Ok(d) => crate::tree::copy::remove_at(std::os::fd::AsFd::as_fd(&d), name.as_bytes()),
        Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ids_are_utc_timestamps() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_227_000); // 2026-11-21T02:10:00Z
        assert_eq!(id_at(t), "20261121T021000Z");
        assert_eq!(id_at(UNIX_EPOCH), "19700101T000000Z");
        assert!(is_id("20261121T021000Z"));
        assert!(!is_id(".20261121T021000Z") && !is_id("latest"));
    }

    #[test]
    fn only_sets_with_a_manifest_are_good() {
        let tmp = tempfile::tempdir().unwrap();
        for d in [
            "20261121T021000Z",
            "20261120T021000Z",
            "20261119T021000Z",
            ".20261122T021000Z.partial",
            "notes",
        ] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        for d in ["20261121T021000Z", "20261120T021000Z"] {
            std::fs::write(tmp.path().join(d).join(manifest::MANIFEST), "{}").unwrap();
        }
        assert_eq!(
            list(tmp.path()).unwrap(),
            ["20261120T021000Z", "20261121T021000Z"]
        );
        let all: Vec<(String, SetState)> = list_all(tmp.path())
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.state))
            .collect();
        assert_eq!(
            all,
            [
                ("20261119T021000Z".to_string(), SetState::NoManifest),
                ("20261120T021000Z".to_string(), SetState::Good),
                ("20261121T021000Z".to_string(), SetState::Good),
                ("20261122T021000Z".to_string(), SetState::Partial),
            ]
        );
        assert!(list(&tmp.path().join("none")).unwrap().is_empty());
    }
}
