//! The daemon's run history: one row per slot of a job, in SQLite in the state directory.
//!
//! A slot's row is written before its run starts, so a slot is never run twice: a restart finds
//! the row. Rows end in a final status, except `running` (the run was going on when the daemon
//! stopped; the restart recovers it) and `interrupted` (a shutdown stopped it; it may be tried
//! again while its maximum start delay lasts).

use jiff::Timestamp;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The history could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("run history {path}: {source}")]
pub struct HistoryError {
    /// The database file.
    pub path: PathBuf,
    /// What SQLite said.
    #[source]
    pub source: rusqlite::Error,
}

/// How a slot ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotStatus {
    /// Its run is going on.
    Running,
    /// Its run completed.
    Completed,
    /// A step failed; the cleanup ran.
    Failed,
    /// The product needs a person (a cleanup step failed, an invariant broke).
    Attention,
    /// The plugin refused to plan.
    Refused,
    /// The policy or plugin is wrong; nothing ran.
    BadInput,
    /// It was held back (see its reason).
    Skipped,
    /// A shutdown stopped its run (the cleanup ran), or the daemon died during it (recovered).
    Interrupted,
}

impl SlotStatus {
    /// How a run that journaled its end ended: from its outcome, never from its words.
    /// `stopped`: the daemon asked it to stop.
    pub fn of_outcome(o: &crate::execute::Outcome, stopped: bool) -> SlotStatus {
        use crate::execute::RunStatus;
        if o.needs_attention() {
            SlotStatus::Attention
        } else {
            match o.status {
                RunStatus::Completed => SlotStatus::Completed,
                RunStatus::Failed if o.stopped || stopped => SlotStatus::Interrupted,
                RunStatus::Failed => SlotStatus::Failed,
                RunStatus::Recovered => SlotStatus::Interrupted,
            }
        }
    }

    /// How a run that never journaled its end ended, by its exit status ([`crate::exit`]):
    /// bad input and refusals end before the journal; anything else died.
    pub fn of_exit(code: Option<i32>, stopped: bool) -> SlotStatus {
        let code = code.and_then(|c| u8::try_from(c).ok());
        match code {
            Some(crate::exit::OK) => SlotStatus::Completed,
            Some(crate::exit::BAD_INPUT | crate::exit::USAGE) => SlotStatus::BadInput,
            Some(crate::exit::REFUSED) => SlotStatus::Refused,
            Some(crate::exit::ATTENTION) => SlotStatus::Attention,
            _ if stopped => SlotStatus::Interrupted,
            _ => SlotStatus::Failed,
        }
    }

    /// Its name in the database and in `hokan status`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Running => "running",
            SlotStatus::Completed => "completed",
            SlotStatus::Failed => "failed",
            SlotStatus::Attention => "attention",
            SlotStatus::Refused => "refused",
            SlotStatus::BadInput => "bad-input",
            SlotStatus::Skipped => "skipped",
            SlotStatus::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> SlotStatus {
        match s {
            "running" => SlotStatus::Running,
            "completed" => SlotStatus::Completed,
            "failed" => SlotStatus::Failed,
            "attention" => SlotStatus::Attention,
            "refused" => SlotStatus::Refused,
            "bad-input" => SlotStatus::BadInput,
            "skipped" => SlotStatus::Skipped,
            _ => SlotStatus::Interrupted,
        }
    }

    /// The slot is done with: it is never run again.
    pub fn is_final(self) -> bool {
        !matches!(self, SlotStatus::Running | SlotStatus::Interrupted)
    }
}

/// One slot of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotRow {
    /// The row's id.
    pub id: i64,
    /// The site.
    pub site: String,
    /// The job.
    pub job: String,
    /// The operation.
    pub op: String,
    /// The slot (the calendar's instant).
    pub slot: Timestamp,
    /// How it stands.
    pub status: SlotStatus,
    /// How many times a run was started for it.
    pub attempts: u32,
    /// When its last run started.
    pub started: Option<Timestamp>,
    /// When it ended (or was skipped).
    pub finished: Option<Timestamp>,
    /// The run's process, while it runs.
    pub pid: Option<u32>,
    /// What happened, in a line.
    pub summary: Option<String>,
    /// The run's output.
    pub log: Option<PathBuf>,
}

/// The history database.
pub struct History {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS slots (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL,
    job TEXT NOT NULL,
    op TEXT NOT NULL,
    slot TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started TEXT,
    finished TEXT,
    pid INTEGER,
    summary TEXT,
    log TEXT,
    UNIQUE (site, job, slot)
);
CREATE TABLE IF NOT EXISTS seen (
    site TEXT NOT NULL,
    job TEXT NOT NULL,
    until TEXT NOT NULL,
    PRIMARY KEY (site, job)
);
";

const COLUMNS: &str =
    "id, site, job, op, slot, status, attempts, started, finished, pid, summary, log";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SlotRow> {
    let ts = |s: Option<String>| s.and_then(|s| s.parse::<Timestamp>().ok());
    Ok(SlotRow {
        id: r.get(0)?,
        site: r.get(1)?,
        job: r.get(2)?,
        op: r.get(3)?,
        slot: ts(Some(r.get(4)?)).unwrap_or(Timestamp::UNIX_EPOCH),
        status: SlotStatus::parse(&r.get::<_, String>(5)?),
        attempts: r.get(6)?,
        started: ts(r.get(7)?),
        finished: ts(r.get(8)?),
        pid: r.get(9)?,
        summary: r.get(10)?,
        log: r.get::<_, Option<Value>>(11)?.and_then(path_of),
    })
}

/// A path as a column: text when it is UTF-8, so that `sqlite3` shows it, its bytes otherwise
/// (a path is bytes, and a lossy text would name another file).
fn path_value(p: &Path) -> Value {
    use std::os::unix::ffi::OsStrExt;
    match p.to_str() {
        Some(s) => Value::Text(s.to_string()),
        None => Value::Blob(p.as_os_str().as_bytes().to_vec()),
    }
}

fn path_of(v: Value) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    match v {
        Value::Text(s) => Some(PathBuf::from(s)),
        Value::Blob(b) => Some(PathBuf::from(std::ffi::OsString::from_vec(b))),
        _ => None,
    }
}

impl History {
    /// Opens (or makes) `history.sqlite` in `state`.
    pub fn open(state: &Path) -> Result<History, HistoryError> {
        let path = state.join("history.sqlite");
        let err = |source| HistoryError {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        // Every write is on disk before the run it records starts.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(History { conn, path })
    }

    fn err(&self, source: rusqlite::Error) -> HistoryError {
        HistoryError {
            path: self.path.clone(),
            source,
        }
    }

    /// The row of a slot, if it has one.
    pub fn slot(
        &self,
        site: &str,
        job: &str,
        slot: Timestamp,
    ) -> Result<Option<SlotRow>, HistoryError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM slots WHERE site = ?1 AND job = ?2 AND slot = ?3"),
                params![site, job, slot.to_string()],
                row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Records that a run of the slot starts now, unless the slot is already done with (then
    /// `false`: it must not run).
    pub fn begin(
        &mut self,
        site: &str,
        job: &str,
        op: &str,
        slot: Timestamp,
        now: Timestamp,
        log: &Path,
    ) -> Result<Option<i64>, HistoryError> {
        let path = &self.path;
        let e = |source| HistoryError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(e)?;
        let existing: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, status FROM slots WHERE site = ?1 AND job = ?2 AND slot = ?3",
                params![site, job, slot.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(e)?;
        let (now, log) = (now.to_string(), path_value(log));
        let id = match existing {
            Some((_, s)) if SlotStatus::parse(&s) != SlotStatus::Interrupted => return Ok(None),
            Some((id, _)) => {
                tx.execute(
                    "UPDATE slots SET status = 'running', attempts = attempts + 1, started = ?2, \
                     finished = NULL, pid = NULL, summary = NULL, log = ?3 WHERE id = ?1",
                    params![id, now, log],
                )
                .map_err(e)?;
                id
            }
            None => {
                tx.execute(
                    "INSERT INTO slots (site, job, op, slot, status, attempts, started, log) \
                     VALUES (?1, ?2, ?3, ?4, 'running', 1, ?5, ?6)",
                    params![site, job, op, slot.to_string(), now, log],
                )
                .map_err(e)?;
                tx.last_insert_rowid()
            }
        };
        tx.commit().map_err(e)?;
        Ok(Some(id))
    }

    /// Notes the process of a running slot.
    pub fn set_pid(&self, id: i64, pid: u32) -> Result<(), HistoryError> {
        self.conn
            .execute("UPDATE slots SET pid = ?2 WHERE id = ?1", params![id, pid])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records how a slot's run ended.
    pub fn finish(
        &self,
        id: i64,
        status: SlotStatus,
        summary: &str,
        now: Timestamp,
    ) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "UPDATE slots SET status = ?2, summary = ?3, finished = ?4, pid = NULL WHERE id = ?1",
                params![id, status.as_str(), summary, now.to_string()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records that a slot was held back, unless it already has a final row.
    pub fn skip(
        &self,
        site: &str,
        job: &str,
        op: &str,
        slot: Timestamp,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "INSERT INTO slots (site, job, op, slot, status, finished, summary) VALUES (?1, ?2, ?3, ?4, 'skipped', ?5, ?6)
                 ON CONFLICT (site, job, slot) DO UPDATE SET status = 'skipped', finished = ?5, summary = ?6 WHERE status = 'interrupted'",
                params![site, job, op, slot.to_string(), now.to_string(), reason],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Rows with a status, oldest slot first.
    pub fn with_status(&self, status: SlotStatus) -> Result<Vec<SlotRow>, HistoryError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM slots WHERE status = ?1 ORDER BY slot, site, job"
            ))
            .map_err(|e| self.err(e))?;
        st.query_map(params![status.as_str()], row)
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// The `n` slots that ended last, newest first.
    pub fn last(&self, n: u32) -> Result<Vec<SlotRow>, HistoryError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM slots WHERE finished IS NOT NULL ORDER BY finished DESC, id DESC LIMIT ?1"
            ))
            .map_err(|e| self.err(e))?;
        st.query_map(params![n], row)
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// Every row, oldest slot first (for tests and exports).
    pub fn all(&self) -> Result<Vec<SlotRow>, HistoryError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM slots ORDER BY slot, site, job"
            ))
            .map_err(|e| self.err(e))?;
        st.query_map([], row)
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// Up to when the daemon has looked at a job's calendar.
    pub fn seen_until(&self, site: &str, job: &str) -> Result<Option<Timestamp>, HistoryError> {
        self.conn
            .query_row(
                "SELECT until FROM seen WHERE site = ?1 AND job = ?2",
                params![site, job],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|s| s.and_then(|s| s.parse().ok()))
            .map_err(|e| self.err(e))
    }

    /// Notes that the daemon has looked at a job's calendar up to `until`.
    pub fn set_seen_until(
        &self,
        site: &str,
        job: &str,
        until: Timestamp,
    ) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "INSERT INTO seen (site, job, until) VALUES (?1, ?2, ?3) ON CONFLICT (site, job) DO UPDATE SET until = ?3",
                params![site, job, until.to_string()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        format!("2026-11-21T{s}:00Z").parse().unwrap()
    }

    #[test]
    fn a_slot_runs_once_and_an_interrupted_one_may_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        let log = Path::new("/tmp/x.log");
        let id = h
            .begin("s", "j", "backup", t("02:10"), t("02:10"), log)
            .unwrap()
            .unwrap();
        assert_eq!(
            h.begin("s", "j", "backup", t("02:10"), t("02:11"), log)
                .unwrap(),
            None
        );
        h.finish(id, SlotStatus::Interrupted, "SIGTERM", t("02:12"))
            .unwrap();
        // Reopened, as after a restart.
        drop(h);
        let mut h = History::open(dir.path()).unwrap();
        let again = h
            .begin("s", "j", "backup", t("02:10"), t("02:13"), log)
            .unwrap();
        assert_eq!(again, Some(id));
        h.finish(id, SlotStatus::Completed, "completed", t("02:20"))
            .unwrap();
        assert_eq!(
            h.begin("s", "j", "backup", t("02:10"), t("02:21"), log)
                .unwrap(),
            None
        );
        let r = h.slot("s", "j", t("02:10")).unwrap().unwrap();
        assert_eq!((r.status, r.attempts), (SlotStatus::Completed, 2));
        // A skip never overwrites a final row.
        h.skip("s", "j", "backup", t("02:10"), "late", t("03:00"))
            .unwrap();
        assert_eq!(
            h.slot("s", "j", t("02:10")).unwrap().unwrap().status,
            SlotStatus::Completed
        );
        h.skip("s", "j", "backup", t("03:10"), "late", t("04:20"))
            .unwrap();
        assert_eq!(h.last(5).unwrap()[0].summary.as_deref(), Some("late"));
        assert_eq!(h.seen_until("s", "j").unwrap(), None);
        h.set_seen_until("s", "j", t("05:00")).unwrap();
        h.set_seen_until("s", "j", t("06:00")).unwrap();
        assert_eq!(h.seen_until("s", "j").unwrap(), Some(t("06:00")));
    }

    #[test]
    fn a_log_path_that_is_not_utf8_comes_back_as_it_was() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        let log = Path::new(std::ffi::OsStr::from_bytes(b"/var/log/\x83e\x83X\x83g.log"));
        h.begin("s", "j", "backup", t("02:10"), t("02:10"), log)
            .unwrap()
            .unwrap();
        let row = h.slot("s", "j", t("02:10")).unwrap().unwrap();
        assert_eq!(row.log.as_deref(), Some(log));
    }
}
