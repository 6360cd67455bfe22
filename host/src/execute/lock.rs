//! One lock per (site, product instance): a kernel lock (`flock`) on a file in the state
//! directory, `locks/<instance>.lock`. The kernel releases it when its holder exits, however it
//! exits, so a lock is stale exactly when nobody holds it and there is no takeover to race: the
//! file is never removed, only locked. It holds its holder's pid and run id, for messages.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A lock that could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("{instance} is busy: run {run} (pid {pid}) holds {}; wait for it to finish", path.display())]
    Held {
        /// The product instance.
        instance: String,
        /// Its holder's pid (0 when it had not written it yet).
        pid: i32,
        /// Its holder's run id.
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
    file: File,
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
    /// Takes the lock of `instance` for the run `run`, or says who holds it. Never waits.
    pub fn take(state: &Path, instance: &str, run: &str) -> Result<Lock, LockError> {
        let dir = state.join("locks");
        let path = dir.join(format!("{instance}.lock"));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let mut lines = text.lines();
                let pid = lines
                    .next()
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or(0);
                let holder = lines.next().unwrap_or("(starting)").to_string();
                return Err(LockError::Held {
                    instance: instance.to_string(),
                    pid,
                    run: holder,
                    path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}\n{run}", std::process::id()))
            .and_then(|()| file.sync_data())
            .map_err(io)?;
        Ok(Lock { file })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // The holder's lines go first, so a reader never names a run that is over.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_names_its_run_and_a_dead_holder_leaves_none() {
        let tmp = tempfile::tempdir().unwrap();
        let lock = Lock::take(tmp.path(), "site.mailwise.mw1", "run-1").unwrap();
        let e = Lock::take(tmp.path(), "site.mailwise.mw1", "run-2").unwrap_err();
        assert!(
            matches!(e, LockError::Held { ref run, pid, .. } if run == "run-1" && pid == std::process::id() as i32),
            "{e}"
        );
        assert!(e.to_string().contains("is busy: run run-1"), "{e}");
        drop(lock);
        let _l = Lock::take(tmp.path(), "site.mailwise.mw1", "run-3").unwrap();
        let text =
            std::fs::read_to_string(tmp.path().join("locks/site.mailwise.mw1.lock")).unwrap();
        assert!(text.ends_with("\nrun-3\n"), "{text}");
        // A lock file left by a holder that is gone (killed, power cut) holds nothing.
        std::fs::write(tmp.path().join("locks/other.lock"), "999999\nrun-0\n").unwrap();
        let _o = Lock::take(tmp.path(), "other", "run-4").unwrap();
    }

    #[test]
    fn of_many_threads_exactly_one_holds_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        for _ in 0..20 {
            let holders: Vec<bool> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|i| {
                        let p = tmp.path();
                        s.spawn(move || {
                            let l = Lock::take(p, "i", &format!("run-{i}"));
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            l.is_ok()
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(holders.iter().filter(|h| **h).count(), 1, "{holders:?}");
        }
    }
}
