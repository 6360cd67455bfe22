//! The run journal: one JSON-lines file per run, appended and fsync'd before and after every
//! step, so that after a crash `hokan recover` knows what the run was, which steps finished, and
//! what its cleanup still has to do. `docs/execution.md` documents the records.
//!
//! Layout in the state directory: `runs/<run id>.jsonl` while a run is unfinished, moved to
//! `runs/done/` once its `finish` record is on disk; `runs/quarantine/` for journals that cannot
//! be trusted (garbage in the middle, or a file someone else owns or can write), which are never
//! acted on and are reported until a person removes them; `locks/<instance>.lock` (see
//! [`super::lock`]).
//!
//! A journal whose last line is torn (the host died while writing it) is read without that line,
//! and the line is cut off before anything is appended, so the journal stays whole.

use super::{Outcome, Phase, RunSpec, StepStatus};
use crate::execute::transport::Output;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One line of a journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    /// The run, with everything recovery needs to run its cleanup without the plugin.
    Start(Box<RunSpec>),
    /// What the run found before its first step, for the safety invariants at its end (and at
    /// its recovery's end).
    Observed {
        /// The product's maintenance markers that were already there.
        markers: Vec<crate::plan::Location>,
        /// The services the plan starts or stops, and whether each was running.
        services: Vec<super::ServiceSeen>,
    },
    /// A step is about to run.
    StepStart {
        /// The step.
        step: String,
        /// Body, cleanup or recovery.
        phase: Phase,
        /// RFC 3339.
        at: String,
    },
    /// A step ended.
    StepEnd {
        /// The step.
        step: String,
        /// Body, cleanup or recovery.
        phase: Phase,
        /// How it ended.
        status: StepStatus,
        /// Attempts made.
        attempts: u32,
        /// Wall time.
        duration_ms: u64,
        /// What it did or why it failed, in one line.
        summary: String,
        /// The last command's output, when it ran one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Output>,
    },
    /// A command is about to be started on a server through its agent's ledger, under `id`:
    /// journaled first, so that a recovery after hokan died can ask that ledger how it ended.
    RemoteCommand {
        /// The server.
        server: String,
        /// Its ledger id there.
        id: String,
        /// The program, for messages.
        program: String,
        /// Its time limit, from `at`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// It must never be killed, even past its limit.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        never_kill: bool,
        /// RFC 3339.
        at: String,
    },
    /// How a command of [`Record::RemoteCommand`] ended, as its server's ledger says: journaled
    /// by the run when it learns it, or by the recovery that asked.
    RemoteExit {
        /// The server.
        server: String,
        /// Its ledger id there.
        id: String,
        /// Its exit code; `None` when a signal (or its time limit) ended it, or it never ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        /// What the ledger knows beyond the code: "never started", or why it could not run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// What it printed (capped by the ledger), when a recovery learnt its end: no step
        /// records it then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Output>,
    },
    /// The backup set got its final name: it is complete.
    SetComplete {
        /// The set's id.
        set: String,
        /// Its directory.
        path: PathBuf,
        /// Files in it.
        files: u64,
        /// Bytes of its files, linked ones too: the set's size (journals before 0.1 of the
        /// operators' metrics lack it).
        #[serde(default)]
        bytes: u64,
        /// Bytes copied (linked files not counted).
        bytes_copied: u64,
        /// Files hard-linked from the previous set.
        files_linked: u64,
        /// Why it is kept though its run failed (after a point of no return), for such a set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kept: Option<String>,
    },
    /// Old sets removed by the job's retention rules.
    Pruned {
        /// Their ids.
        sets: Vec<String>,
    },
    /// The run ended, but cleanup steps could not reach their server
    /// ([`Outcome::cleanup_deferred`]): the journal stays among the unfinished ones, so that
    /// `hokan recover` runs those steps again, and a new run of the job waits for that.
    Deferred {
        /// How it ended, so far.
        outcome: Outcome,
        /// RFC 3339.
        at: String,
    },
    /// The run is over.
    Finish {
        /// How it ended.
        outcome: Outcome,
        /// RFC 3339.
        at: String,
    },
}

/// A journal that cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[error("journal {}: {message}", path.display())]
pub struct JournalError {
    /// The journal file.
    pub path: PathBuf,
    /// What went wrong and what to do.
    pub message: String,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

/// Makes sure the state directory can be trusted before anything in it is acted on, creating it
/// owner-only (0700) when it does not exist. A state directory that another user owns, or that
/// others can write, is refused, as ssh refuses a loose key: whoever can write it can forge a
/// journal that `hokan recover` would carry out as this user.
pub fn check_state_dir(state: &Path) -> Result<(), JournalError> {
    let err = |message: String| JournalError {
        path: state.to_path_buf(),
        message,
    };
    if !state.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state)
            .map_err(|e| {
                err(format!(
                    "cannot create the state directory: {e}; choose another with --state-dir"
                ))
            })?;
    }
    let me = rustix::process::geteuid().as_raw();
    for dir in [state.to_path_buf(), runs_dir(state), state.join("locks")] {
        let m = match std::fs::metadata(&dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(format!("{}: {e}", dir.display()))),
        };
        let mode = m.permissions().mode() & 0o7777;
        let why = if !m.is_dir() {
            Some("is not a directory".to_string())
        } else if m.uid() != me {
            Some(format!(
                "belongs to uid {}, not to this user ({me})",
                m.uid()
            ))
        } else if mode & 0o022 != 0 {
            Some(format!("can be written by others (mode {mode:04o})"))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(JournalError {
                path: dir.clone(),
                message: format!(
                    "the state directory {why}: anyone who can write it can make `hokan recover` run any command as this user, so it is not used. \
                     Use a directory only this user can write (`chmod 700 {0}` if it is yours, or another --state-dir)",
                    dir.display()
                ),
            });
        }
    }
    Ok(())
}

/// Where unfinished runs' journals are.
pub fn runs_dir(state: &Path) -> PathBuf {
    state.join("runs")
}

impl Journal {
    /// Creates the journal of a new run with its first record. The record is written and synced
    /// under a temporary name, which no reader lists, and only then does the journal appear
    /// under its own name: a journal that is listed always says whose it is, so a recovery
    /// never mistakes a run that is starting for one that died before it began.
    pub fn create(state: &Path, run: &str, first: &Record) -> Result<Journal, JournalError> {
        let dir = runs_dir(state);
        let path = dir.join(format!("{run}.jsonl"));
        let tmp = dir.join(format!(".{run}.jsonl.tmp"));
        let err = |e: std::io::Error| JournalError {
            path: path.clone(),
            message: format!("{e}; check that the state directory is writable (--state-dir)"),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join("done"))
            .map_err(err)?;
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(err)?;
        let mut j = Journal {
            path: tmp.clone(),
            file,
        };
        let placed = j.append(first).and_then(|()| {
            // A hard link never replaces: a second run of the same id fails here.
            std::fs::hard_link(&tmp, &path)
                .and_then(|()| std::fs::remove_file(&tmp))
                .and_then(|()| File::open(&dir)?.sync_all())
                .map_err(err)
        });
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        j.path = path;
        Ok(j)
    }

    /// Opens an unfinished run's journal to append to it, first cutting off a torn last line
    /// (appending after one would bury it in the middle, where it is garbage).
    pub fn reopen(path: &Path) -> Result<Journal, JournalError> {
        let err = |e: std::io::Error| JournalError {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let bytes = std::fs::read(path).map_err(err)?;
        let (_, whole) = parse(&bytes).map_err(|message| JournalError {
            path: path.to_path_buf(),
            message,
        })?;
        let file = OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(err)?;
        if whole < bytes.len() {
            tracing::warn!(
                "{}: cut off a torn last record ({} bytes) before appending",
                path.display(),
                bytes.len() - whole
            );
            file.set_len(whole as u64)
                .and_then(|()| file.sync_data())
                .map_err(err)?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and waits until it is on disk.
    pub fn append(&mut self, r: &Record) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(r).expect("journal records serialize");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| JournalError {
                path: self.path.clone(),
                message: format!("cannot append: {e}"),
            })
    }

    /// Moves a finished run's journal out of the unfinished ones.
    pub fn close(self) -> Result<PathBuf, JournalError> {
        let done = self
            .path
            .parent()
            .map(|d| d.join("done"))
            .unwrap_or_default()
            .join(self.path.file_name().unwrap_or_default());
        std::fs::rename(&self.path, &done).map_err(|e| JournalError {
            path: self.path.clone(),
            message: format!("cannot move it to {}: {e}", done.display()),
        })?;
        Ok(done)
    }
}

/// The records of a journal's bytes, and how many bytes are whole lines. A last line that is
/// torn (no newline, or not a record) is left out; any other bad line is an error naming it.
fn parse(bytes: &[u8]) -> Result<(Vec<Record>, usize), String> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut line_no = 0;
    while pos < bytes.len() {
        line_no += 1;
        let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            break; // torn: the newline never made it to disk
        };
        let line = &bytes[pos..pos + nl];
        let end = pos + nl + 1;
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => out.push(r),
            Err(_) if bytes[end..].iter().all(u8::is_ascii_whitespace) => break,
            Err(e) => return Err(format!("line {line_no}: {e}")),
        }
        pos = end;
    }
    Ok((out, pos))
}

/// Reads a journal. A torn last line (the host died while writing it) is ignored; any other
/// unreadable line is an error.
pub fn read(path: &Path) -> Result<Vec<Record>, JournalError> {
    let err = |message: String| JournalError {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    parse(&bytes).map(|(r, _)| r).map_err(err)
}

/// Where journals that cannot be trusted are moved.
pub fn quarantine_dir(state: &Path) -> PathBuf {
    runs_dir(state).join("quarantine")
}

/// The journals in quarantine, for reports.
pub fn quarantined(state: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(quarantine_dir(state))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Why a journal may not be acted on, if it may not: as ssh refuses a loose key, a journal
/// that another user owns or that others can write could have been forged to run anything.
fn untrusted(path: &Path) -> Option<String> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    let me = rustix::process::geteuid().as_raw();
    if !m.file_type().is_file() {
        Some("it is not a regular file".into())
    } else if m.uid() != me {
        Some(format!(
            "it belongs to uid {}, not to this user ({me})",
            m.uid()
        ))
    } else if m.permissions().mode() & 0o022 != 0 {
        Some(format!(
            "others can write it (mode {:04o})",
            m.permissions().mode() & 0o7777
        ))
    } else {
        None
    }
}

fn quarantine(state: &Path, path: &Path, why: &str) -> Result<(), JournalError> {
    let dir = quarantine_dir(state);
    let to = dir.join(path.file_name().unwrap_or_default());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .and_then(|()| std::fs::rename(path, &to))
        .map_err(|e| JournalError {
            path: path.to_path_buf(),
            message: format!("{why}, and it cannot be moved to {}: {e}", dir.display()),
        })?;
    tracing::error!(
        "{}: {why}; moved to {}: it is not recovered, check its run's product by hand",
        path.display(),
        to.display()
    );
    Ok(())
}

/// How the run of `site`'s `job`, operation `op`, by process `pid` ended: the finish record of
/// its journal (the newest such run's), and the journal's path. `None` when no finished journal
/// has that run: it ended before journaling (bad input, a refusal) or has not finished.
///
/// A run's id, and so its journal's name, ends with `-<site>-<job>-<op>-<pid>` ([`super::run_id`]),
/// which is how the daemon, which knows those of each child it started, finds it.
pub fn finished_run(
    state: &Path,
    site: &str,
    job: &str,
    op: &str,
    pid: u32,
) -> Option<FinishedRun> {
    ended_in(
        &runs_dir(state).join("done"),
        site,
        job,
        op,
        pid,
        |r| match r {
            Record::Finish { outcome, .. } => Some(outcome),
            _ => None,
        },
    )
}

/// The run of `site`, `job`, `op` and `pid` whose cleanup was deferred ([`Record::Deferred`]):
/// it ended, set and all, but its journal waits among the unfinished ones for `hokan recover`.
pub fn deferred_run(
    state: &Path,
    site: &str,
    job: &str,
    op: &str,
    pid: u32,
) -> Option<FinishedRun> {
    ended_in(&runs_dir(state), site, job, op, pid, |r| match r {
        Record::Deferred { outcome, .. } => Some(outcome),
        _ => None,
    })
}

/// Whether a run's journal waits for `hokan recover` because its cleanup was deferred
/// ([`Record::Deferred`]: a server it needed could not be reached): the daemon runs recovery
/// again until none does. A journal that cannot be read counts as not waiting; `hokan recover`
/// quarantines and reports it.
pub fn waiting_for_recovery(state: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(runs_dir(state)) else {
        return false;
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .any(|p| {
            read(&p).is_ok_and(|records| {
                records.iter().any(|r| matches!(r, Record::Deferred { .. }))
                    && !records.iter().any(|r| matches!(r, Record::Finish { .. }))
            })
        })
}

/// The newest journal in `dir` of that run, with the outcome `end` reads from its last record
/// that has one, and the good set it completed.
fn ended_in(
    dir: &Path,
    site: &str,
    job: &str,
    op: &str,
    pid: u32,
    end: impl Fn(Record) -> Option<Outcome>,
) -> Option<FinishedRun> {
    let suffix = format!("-{site}-{job}-{op}-{pid}.jsonl");
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
        })
        .collect();
    // Run ids start with their time: the newest last.
    names.sort();
    let path = names.pop()?;
    let records = read(&path).ok()?;
    let set = records.iter().find_map(|r| match r {
        Record::SetComplete {
            set,
            bytes,
            kept: None,
            ..
        } => Some((set.clone(), *bytes)),
        _ => None,
    });
    let outcome = records.into_iter().rev().find_map(end)?;
    Some(FinishedRun {
        journal: path,
        outcome,
        set,
    })
}

/// A run that journaled its end, as [`finished_run`] finds it.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    /// Its journal.
    pub journal: PathBuf,
    /// How it ended.
    pub outcome: Outcome,
    /// The good set it completed and the set's size in bytes (a set kept incomplete after a
    /// point of no return is not one).
    pub set: Option<(String, u64)>,
}

/// An unfinished run found in the state directory.
#[derive(Debug, Clone)]
pub struct Unfinished {
    /// Its journal.
    pub path: PathBuf,
    /// Its records.
    pub records: Vec<Record>,
}

impl Unfinished {
    /// The run's start record.
    pub fn spec(&self) -> Option<&RunSpec> {
        match self.records.first() {
            Some(Record::Start(s)) => Some(s),
            _ => None,
        }
    }
}

/// The runs in the state directory that have no `finish` record, oldest first. A journal that cannot be read, or cannot be
/// trusted, is moved to quarantine (see [`quarantined`]) and the others are still returned: one
/// bad file never wedges every instance.
pub fn unfinished(state: &Path) -> Result<Vec<Unfinished>, JournalError> {
    let dir = runs_dir(state);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(JournalError {
                path: dir,
                message: e.to_string(),
            });
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        if let Some(why) = untrusted(&path) {
            quarantine(state, &path, &format!("not trusted: {why}"))?;
            continue;
        }
        // Finished journals not yet moved are left to whoever holds their instance's lock
        // (their run, about to move it, or a recovery): moving one here would race that run.
        match reread_path(&path, false) {
            Ok(Some(u)) => out.push(u),
            Ok(None) => {}
            Err(e) => quarantine(state, &path, &format!("cannot be read: {}", e.message))?,
        }
    }
    Ok(out)
}

fn reread_path(path: &Path, tidy: bool) -> Result<Option<Unfinished>, JournalError> {
    let records = match read(path) {
        Err(e) if !path.exists() => {
            let _ = e;
            return Ok(None);
        }
        other => other?,
    };
    if records.iter().any(|r| matches!(r, Record::Finish { .. })) {
        if tidy {
            Journal::reopen(path)?.close()?;
        }
        Ok(None)
    } else {
        Ok(Some(Unfinished {
            path: path.to_path_buf(),
            records,
        }))
    }
}

/// The run read again (under its instance's lock): `None` when it has finished since it was
/// listed, or its journal is gone (another recovery finished it).
/// A finished journal still among the unfinished ones is moved now.
pub fn reread(run: &Unfinished) -> Result<Option<Unfinished>, JournalError> {
    reread_path(&run.path, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_directory_others_can_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        check_state_dir(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_state_dir(&state).unwrap_err().to_string();
        assert!(e.contains("can be written by others (mode 0777)"), "{e}");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(state.join("runs")).unwrap();
        std::fs::set_permissions(state.join("runs"), std::fs::Permissions::from_mode(0o757))
            .unwrap();
        assert!(check_state_dir(&state).is_err());
    }

    #[test]
    fn only_an_unfinished_run_whose_cleanup_was_deferred_waits_for_recovery() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!waiting_for_recovery(tmp.path()), "no runs directory");
        let step = Record::StepStart {
            step: "a".into(),
            phase: Phase::Body,
            at: "t".into(),
        };
        // A run going (or dead, for `hokan recover` at start) is not one.
        let mut j = Journal::create(tmp.path(), "r1", &step).unwrap();
        assert!(!waiting_for_recovery(tmp.path()));
        j.append(&Record::Deferred {
            outcome: Outcome::new(crate::drive::RunStatus::Failed),
            at: "t".into(),
        })
        .unwrap();
        assert!(waiting_for_recovery(tmp.path()));
        // Recovered: finished, whether or not it was moved yet.
        j.append(&Record::Finish {
            outcome: Outcome::new(crate::drive::RunStatus::Failed),
            at: "t".into(),
        })
        .unwrap();
        assert!(!waiting_for_recovery(tmp.path()));
        j.close().unwrap();
        assert!(!waiting_for_recovery(tmp.path()));
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_finished_runs_are_moved() {
        let tmp = tempfile::tempdir().unwrap();
        let start = Record::StepStart {
            step: "a".into(),
            phase: Phase::Body,
            at: "t".into(),
        };
        let j = Journal::create(tmp.path(), "r1", &start).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(j.path())
            .unwrap()
            .write_all(b"{\"record\":\"step-e")
            .unwrap();
        assert_eq!(read(j.path()).unwrap(), vec![start.clone()]);
        // Appending after a torn line first cuts it off.
        let end = Record::Finish {
            outcome: Outcome::completed(),
            at: "t".into(),
        };
        let path = j.path().to_path_buf();
        drop(j);
        let mut again = Journal::reopen(&path).unwrap();
        again.append(&start).unwrap();
        assert_eq!(read(&path).unwrap(), vec![start.clone(), start.clone()]);
        let _ = end;
        let j = again;
        let found = unfinished(tmp.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].spec().is_none());

        let j2 = Journal::create(
            tmp.path(),
            "r2",
            &Record::Finish {
                outcome: Outcome::completed(),
                at: "t".into(),
            },
        )
        .unwrap();
        // A finished journal is not listed, and is moved only by its instance's lock holder:
        // its own run is about to move it.
        assert_eq!(unfinished(tmp.path()).unwrap().len(), 1);
        assert!(j2.path().exists());
        let r2 = Unfinished {
            path: j2.path().to_path_buf(),
            records: vec![],
        };
        assert!(reread(&r2).unwrap().is_none());
        assert!(tmp.path().join("runs/done/r2.jsonl").exists());

        // Garbage in the middle: quarantined, and the other journal is still found.
        std::fs::write(tmp.path().join("runs/r0.jsonl"), "not json\n{}\n").unwrap();
        let found = unfinished(tmp.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, j.path());
        assert_eq!(
            quarantined(tmp.path()),
            [tmp.path().join("runs/quarantine/r0.jsonl")]
        );

        // A journal others can write is not acted on.
        let loose = tmp.path().join("runs/r9.jsonl");
        std::fs::write(&loose, "").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(unfinished(tmp.path()).unwrap().len(), 1);
        assert_eq!(quarantined(tmp.path()).len(), 2);
    }

    #[test]
    fn a_deferred_run_stays_unfinished_and_is_found_with_its_set() {
        let tmp = tempfile::tempdir().unwrap();
        let name = "20261203T010000Z-s-j-backup-42";
        let mut j = Journal::create(
            tmp.path(),
            name,
            &Record::StepStart {
                step: "a".into(),
                phase: Phase::Body,
                at: "t".into(),
            },
        )
        .unwrap();
        j.append(&Record::SetComplete {
            set: "S1".into(),
            path: "/b/S1".into(),
            files: 1,
            bytes: 7,
            bytes_copied: 7,
            files_linked: 0,
            kept: None,
        })
        .unwrap();
        let mut outcome = Outcome::completed();
        outcome.set = Some("S1".into());
        outcome.cleanup_deferred = vec!["`off`: server `s2` is down".into()];
        j.append(&Record::Deferred {
            outcome: outcome.clone(),
            at: "t".into(),
        })
        .unwrap();
        drop(j);
        // Left for `hokan recover`: listed, not finished, and read again as it is.
        assert_eq!(unfinished(tmp.path()).unwrap().len(), 1);
        let u = &unfinished(tmp.path()).unwrap()[0];
        assert!(reread(u).unwrap().is_some());
        assert!(finished_run(tmp.path(), "s", "j", "backup", 42).is_none());
        let d = deferred_run(tmp.path(), "s", "j", "backup", 42).unwrap();
        assert_eq!(d.outcome, outcome);
        assert_eq!(d.set, Some(("S1".to_string(), 7)));
        assert!(deferred_run(tmp.path(), "s", "j", "backup", 43).is_none());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn journal_bytes() -> impl Strategy<Value = Vec<u8>> {
        let good = serde_json::to_vec(&Record::StepStart {
            step: "s".into(),
            phase: Phase::Body,
            at: "t".into(),
        })
        .unwrap();
        (
            0usize..4,
            prop::collection::vec(any::<u8>(), 0..64),
            0usize..80,
        )
            .prop_map(move |(n, junk, cut)| {
                let mut b = Vec::new();
                for _ in 0..n {
                    b.extend_from_slice(&good);
                    b.push(b'\n');
                }
                b.extend_from_slice(&junk);
                let keep = b.len().saturating_sub(cut);
                b.truncate(keep.max(b.len() / 2));
                b
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Torn, truncated and garbage journals never panic, never wedge the other journals,
        /// and a journal that can be reopened stays readable after an append.
        #[test]
        fn bad_journals_neither_panic_nor_wedge_the_others(bytes in journal_bytes()) {
            let tmp = tempfile::tempdir().unwrap();
            let good = Journal::create(tmp.path(), "a-good", &Record::StepStart { step: "x".into(), phase: Phase::Body, at: "t".into() }).unwrap();
            let bad = runs_dir(tmp.path()).join("b-bad.jsonl");
            std::fs::write(&bad, &bytes).unwrap();
            let _ = parse(&bytes);
            let found = unfinished(tmp.path()).unwrap();
            prop_assert!(found.iter().any(|u| u.path == good.path()));
            if bad.exists() {
                let mut j = Journal::reopen(&bad).unwrap();
                j.append(&Record::StepStart { step: "y".into(), phase: Phase::Recovery, at: "t".into() }).unwrap();
                let records = read(&bad).unwrap();
                let is_recovery_record = matches!(records.last(), Some(Record::StepStart { phase: Phase::Recovery, .. }));
                prop_assert!(is_recovery_record);
            } else {
                prop_assert_eq!(quarantined(tmp.path()).len(), 1);
            }
        }
    }
}
