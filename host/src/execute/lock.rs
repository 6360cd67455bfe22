//! One lock per (site, product instance): a file in the state directory, created exclusively,
//! holding the owner's pid and run. A lock whose pid is no longer alive is stale and is taken
//! over, with a warning.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A lock that could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process holds it.
    #[error(
        "{instance} is busy: run {run} (pid {pid}) holds {}; wait for it to finish, or if that \
         process is not hokan, remove the lock file",
        path.display()
    )]
    Held {
        /// The product instance.
        instance: String,
        /// Its holder's pid.
        pid: i32,
        /// Its holder's run.
        run: String,
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be made.
    #[error("cannot take the lock {}: {source}; check that the state directory is writable (--state-dir)", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

/// Whether a process with this pid exists.
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks that the process exists; it touches no memory.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Lock {
    /// Takes the lock of `instance` for `run`.
    pub fn take(state: &Path, instance: &str, run: &str) -> Result<Lock, LockError> {
        let dir = state.join("locks");
        let path = dir.join(format!("{instance}.lock"));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    writeln!(f, "{}\n{run}", std::process::id())
                        .and_then(|()| f.sync_all())
                        .map_err(io)?;
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut lines = text.lines();
                    let pid: i32 = lines
                        .next()
                        .and_then(|p| p.trim().parse().ok())
                        .unwrap_or(0);
                    let holder = lines.next().unwrap_or("?").to_string();
                    if alive(pid) {
                        return Err(LockError::Held {
                            instance: instance.to_string(),
                            pid,
                            run: holder,
                            path,
                        });
                    }
                    tracing::warn!(
                        "{}: removing the stale lock of run {holder} (pid {pid} is gone)",
                        path.display()
                    );
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(e)),
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(std::io::Error::other(
            "another process keeps taking it; try again",
        )))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_locks_refuse_and_stale_ones_are_taken_over() {
        let tmp = tempfile::tempdir().unwrap();
        let lock = Lock::take(tmp.path(), "site.mailwise.mw1", "run-1").unwrap();
        let e = Lock::take(tmp.path(), "site.mailwise.mw1", "run-2").unwrap_err();
        assert!(
            matches!(e, LockError::Held { ref run, .. } if run == "run-1"),
            "{e}"
        );
        assert!(e.to_string().contains("is busy: run run-1"), "{e}");
        drop(lock);
        // A lock left by a process that is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::write(
            tmp.path().join("locks/site.mailwise.mw1.lock"),
            format!("{dead}\nrun-0\n"),
        )
        .unwrap();
        let _l = Lock::take(tmp.path(), "site.mailwise.mw1", "run-3").unwrap();
        let text =
            std::fs::read_to_string(tmp.path().join("locks/site.mailwise.mw1.lock")).unwrap();
        assert!(text.ends_with("\nrun-3\n"), "{text}");
    }
}
