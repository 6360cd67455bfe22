//! The run journal: one JSON-lines file per run, appended and fsync'd before and after every
//! step, so that after a crash `hokan recover` knows what the run was, which steps finished, and
//! what its cleanup still has to do. `docs/execution.md` documents the records.
//!
//! Layout in the state directory: `runs/<run id>.jsonl` while a run is unfinished, moved to
//! `runs/done/` once its `finish` record is on disk; `locks/<instance>.lock` while one runs.

use super::{Outcome, Phase, RunSpec, StepStatus};
use crate::execute::transport::Output;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// One line of a journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub enum Record {
    /// The run, with everything recovery needs to run its cleanup without the plugin.
    Start(Box<RunSpec>),
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
    /// The backup set got its final name: it is complete.
    SetComplete {
        /// The set's id.
        set: String,
        /// Its directory.
        path: PathBuf,
        /// Files in it.
        files: u64,
        /// Bytes copied (linked files not counted).
        bytes_copied: u64,
        /// Files hard-linked from the previous set.
        files_linked: u64,
    },
    /// Old sets removed by the job's retention rules.
    Pruned {
        /// Their ids.
        sets: Vec<String>,
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

/// Where unfinished runs' journals are.
pub fn runs_dir(state: &Path) -> PathBuf {
    state.join("runs")
}

impl Journal {
    /// Creates the journal of a new run.
    pub fn create(state: &Path, run: &str) -> Result<Journal, JournalError> {
        let dir = runs_dir(state);
        let path = dir.join(format!("{run}.jsonl"));
        let err = |e: std::io::Error| JournalError {
            path: path.clone(),
            message: format!("{e}; check that the state directory is writable (--state-dir)"),
        };
        std::fs::create_dir_all(dir.join("done")).map_err(err)?;
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(err)?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(err)?;
        Ok(Journal { path, file })
    }

    /// Opens an unfinished run's journal to append to it.
    pub fn reopen(path: &Path) -> Result<Journal, JournalError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| JournalError {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
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

/// Reads a journal. A torn last line (the host died while writing it) is ignored; any other
/// unreadable line is an error.
pub fn read(path: &Path) -> Result<Vec<Record>, JournalError> {
    let err = |message: String| JournalError {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(|e| err(e.to_string()))?;
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(_) if i + 1 == lines.len() => break,
            Err(e) => return Err(err(format!("line {}: {e}", i + 1))),
        }
    }
    Ok(out)
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

/// The runs in the state directory that have no `finish` record, oldest first. Journals that
/// finished but were not yet moved are moved now.
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
        let records = read(&path)?;
        if records.iter().any(|r| matches!(r, Record::Finish { .. })) {
            Journal::reopen(&path)?.close()?;
        } else {
            out.push(Unfinished { path, records });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_ignored_and_finished_runs_are_moved() {
        let tmp = tempfile::tempdir().unwrap();
        let mut j = Journal::create(tmp.path(), "r1").unwrap();
        let start = Record::StepStart {
            step: "a".into(),
            phase: Phase::Body,
            at: "t".into(),
        };
        j.append(&start).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(j.path())
            .unwrap()
            .write_all(b"{\"record\":\"step-e")
            .unwrap();
        assert_eq!(read(j.path()).unwrap(), vec![start.clone()]);
        let found = unfinished(tmp.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].spec().is_none());

        let mut j2 = Journal::create(tmp.path(), "r2").unwrap();
        j2.append(&Record::Finish {
            outcome: Outcome::completed(),
            at: "t".into(),
        })
        .unwrap();
        assert_eq!(unfinished(tmp.path()).unwrap().len(), 1);
        assert!(tmp.path().join("runs/done/r2.jsonl").exists());

        std::fs::write(tmp.path().join("runs/r0.jsonl"), "not json\n{}\n").unwrap();
        let e = unfinished(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("r0.jsonl: line 1:"), "{e}");
    }
}
