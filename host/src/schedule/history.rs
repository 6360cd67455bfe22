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
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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

    /// Every status, in the order of their declaration.
    pub const ALL: [SlotStatus; 8] = [
        SlotStatus::Running,
        SlotStatus::Completed,
        SlotStatus::Failed,
        SlotStatus::Attention,
        SlotStatus::Refused,
        SlotStatus::BadInput,
        SlotStatus::Skipped,
        SlotStatus::Interrupted,
    ];

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
    /// The good backup set its run completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// That set's size: the bytes of its files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_bytes: Option<u64>,
    /// The run's journal, once it ended with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<PathBuf>,
}

/// One job's history in short, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobHistory {
    /// The site.
    pub site: String,
    /// The job.
    pub job: String,
    /// The last run that ended (skipped slots had no run).
    pub last_run: Option<SlotRow>,
    /// The last run that completed.
    pub last_success: Option<SlotRow>,
    /// The last run that wrote a good set.
    pub last_set: Option<SlotRow>,
    /// How many of its slots are in each status (running ones included).
    pub ended: BTreeMap<SlotStatus, u64>,
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

const COLUMNS: &str = "id, site, job, op, slot, status, attempts, started, finished, pid, summary, \
                       log, set_id, set_bytes, journal";

/// Columns added since the first schema, with their types: a history written by an older hokan
/// gets them when it is opened (empty for its old rows).
const ADDED: &[(&str, &str, &str)] = &[
    ("slots", "set_id", "TEXT"),
    ("slots", "set_bytes", "INTEGER"),
    ("slots", "journal", ""),
];

/// How long an open or a write waits for another process's write (the daemon's, or another
/// `hokan`'s) before it gives up with "database is locked".
const BUSY: Duration = Duration::from_secs(10);

/// Switches the file to WAL, waiting as long as [`BUSY`] for others doing the same.
///
/// A new file is still in rollback mode, where the switch needs the file to itself. When two
/// connections ask together, each already holds the shared lock the other must wait out, and
/// SQLite answers the second SQLITE_BUSY at once, without the busy handler, to break the
/// deadlock. That one lets go and asks again; once the file is WAL the switch is a no-op.
fn wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = Instant::now() + BUSY;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            done => return done,
        }
    }
}

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
        set: r.get(12)?,
        set_bytes: r.get::<_, Option<i64>>(13)?.map(|b| b.max(0) as u64),
        journal: r.get::<_, Option<Value>>(14)?.and_then(path_of),
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
        let mut conn = Connection::open(&path).map_err(err)?;
        // First, so that everything below waits for the daemon's write in progress instead of
        // failing at once with "database is locked": `hokan status` and the daemon open the
        // same file, and switching a new file to WAL needs it to themselves.
        conn.busy_timeout(BUSY).map_err(err)?;
        // Every write is on disk before the run it records starts.
        wal(&conn).map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        // One writer at a time makes or upgrades the schema: two processes that both found a
        // column missing would otherwise both add it, and the second would fail.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch(SCHEMA).map_err(err)?;
        tx.execute_batch(crate::notify::outbox::SCHEMA)
            .map_err(err)?;
        for (table, column, kind) in ADDED {
            let has = tx
                .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")
                .and_then(|mut st| st.exists(params![table, column]))
                .map_err(err)?;
            if !has {
                tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
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

    /// Records the good set a slot's run completed, and its size.
    pub fn set_written(&self, id: i64, set: &str, bytes: u64) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "UPDATE slots SET set_id = ?2, set_bytes = ?3 WHERE id = ?1",
                params![id, set, i64::try_from(bytes).unwrap_or(i64::MAX)],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records the journal of a slot's run, for the status page's view of its steps.
    pub fn set_journal(&self, id: i64, journal: &Path) -> Result<(), HistoryError> {
        self.conn
            .execute(
                "UPDATE slots SET journal = ?2 WHERE id = ?1",
                params![id, path_value(journal)],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// The row with id `id`.
    pub fn row(&self, id: i64) -> Result<Option<SlotRow>, HistoryError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM slots WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The rows of slots at or after `from`, oldest slot first.
    pub fn since(&self, from: Timestamp) -> Result<Vec<SlotRow>, HistoryError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM slots WHERE slot >= ?1 ORDER BY slot, site, job"
            ))
            .map_err(|e| self.err(e))?;
        st.query_map(params![from.to_string()], row)
            .and_then(Iterator::collect)
            .map_err(|e| self.err(e))
    }

    /// What the history says of each job that has rows: its last run, last success, last set
    /// and how many slots ended each way. Sorted by site and job. What `/metrics` serves.
    pub fn jobs(&self) -> Result<Vec<JobHistory>, HistoryError> {
        let mut out: BTreeMap<(String, String), JobHistory> = BTreeMap::new();
        fn entry<'a>(
            out: &'a mut BTreeMap<(String, String), JobHistory>,
            site: &str,
            job: &str,
        ) -> &'a mut JobHistory {
            out.entry((site.to_string(), job.to_string()))
                .or_insert_with(|| JobHistory {
                    site: site.to_string(),
                    job: job.to_string(),
                    ..JobHistory::default()
                })
        }
        let mut counts = self
            .conn
            .prepare("SELECT site, job, status, COUNT(*) FROM slots GROUP BY site, job, status")
            .map_err(|e| self.err(e))?;
        let rows = counts
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    SlotStatus::parse(&r.get::<_, String>(2)?),
                    r.get::<_, i64>(3)?,
                ))
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(|e| self.err(e))?;
        for (site, job, status, n) in rows {
            *entry(&mut out, &site, &job)
                .ended
                .entry(status)
                .or_default() += n.max(0) as u64;
        }
        // The newest row of each job matching `filter`, by when it ended. `finished` is RFC 3339
        // text written by one clock; it sorts in time order but for two ends within one second
        // of which one fell on the whole second.
        let newest = |filter: &str| -> Result<Vec<SlotRow>, HistoryError> {
            let mut st = self
                .conn
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM (SELECT {COLUMNS}, ROW_NUMBER() OVER                      (PARTITION BY site, job ORDER BY finished DESC, id DESC) AS n                      FROM slots WHERE finished IS NOT NULL AND {filter}) WHERE n = 1"
                ))
                .map_err(|e| self.err(e))?;
            st.query_map([], row)
                .and_then(Iterator::collect)
                .map_err(|e| self.err(e))
        };
        for r in newest("started IS NOT NULL AND status != 'running'")? {
            let e = entry(&mut out, &r.site, &r.job);
            e.last_run = Some(r);
        }
        for r in newest("status = 'completed'")? {
            let e = entry(&mut out, &r.site, &r.job);
            e.last_success = Some(r);
        }
        for r in newest("set_bytes IS NOT NULL")? {
            let e = entry(&mut out, &r.site, &r.job);
            e.last_set = Some(r);
        }
        Ok(out.into_values().collect())
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

    /// Runs `f` in one transaction: what it writes is on disk together or not at all (a slot's
    /// end and the event about it).
    pub fn atomically<T>(
        &self,
        f: impl FnOnce(&History) -> Result<T, HistoryError>,
    ) -> Result<T, HistoryError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let out = f(self)?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Queues `e` for each of `channels` in the outbox (see [`crate::notify::outbox`]).
    pub fn enqueue(
        &self,
        e: &crate::notify::Event,
        channels: &[&crate::notify::Channel],
    ) -> Result<usize, HistoryError> {
        crate::notify::outbox::enqueue(&self.conn, e, channels, crate::notify::outbox::now_ms())
            .map_err(|e| self.err(e))
    }

    /// The newest deliveries of the outbox, newest event first.
    pub fn deliveries(
        &self,
        limit: u32,
    ) -> Result<Vec<crate::notify::outbox::Delivery>, HistoryError> {
        crate::notify::outbox::deliveries(&self.conn, limit).map_err(|e| self.err(e))
    }

    /// Every attempt at delivering one event.
    pub fn delivery_log(
        &self,
        event: &str,
    ) -> Result<Vec<crate::notify::outbox::LogEntry>, HistoryError> {
        crate::notify::outbox::log(&self.conn, event).map_err(|e| self.err(e))
    }

    /// How many deliveries wait in the outbox, and how many were given up.
    pub fn delivery_counts(&self) -> Result<(u64, u64), HistoryError> {
        let pending = crate::notify::outbox::pending(&self.conn).map_err(|e| self.err(e))?;
        let given_up = crate::notify::outbox::given_up(&self.conn).map_err(|e| self.err(e))?;
        Ok((pending, given_up))
    }

    /// When the job's newest good set was completed by a run the daemon recorded, and when its
    /// first slot was: what the dead-man check measures from.
    pub fn good_and_first(
        &self,
        site: &str,
        job: &str,
    ) -> Result<(Option<Timestamp>, Option<Timestamp>), HistoryError> {
        self.conn
            .query_row(
                "SELECT (SELECT max(finished) FROM slots WHERE site = ?1 AND job = ?2 AND status = 'completed' AND set_id IS NOT NULL),
                        (SELECT min(slot) FROM slots WHERE site = ?1 AND job = ?2)",
                params![site, job],
                |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<String>>(1)?)),
            )
            .map(|(a, b)| {
                (
                    a.and_then(|s| s.parse().ok()),
                    b.and_then(|s| s.parse().ok()),
                )
            })
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
    use jiff::SignedDuration;

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
    fn each_job_s_last_run_success_and_set_and_its_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::open(dir.path()).unwrap();
        let log = Path::new("/tmp/x.log");
        let mut run = |job: &str, slot: &str, status: SlotStatus, set: Option<u64>| {
            let id = h
                .begin("s", job, "backup", t(slot), t(slot), log)
                .unwrap()
                .unwrap();
            if let Some(bytes) = set {
                h.set_written(id, &format!("set-{slot}"), bytes).unwrap();
            }
            h.finish(
                id,
                status,
                status.as_str(),
                t(slot) + SignedDuration::from_mins(5),
            )
            .unwrap();
        };
        run("a", "01:00", SlotStatus::Completed, Some(100));
        run("a", "02:00", SlotStatus::Attention, Some(200));
        run("a", "03:00", SlotStatus::Failed, None);
        run("b", "01:00", SlotStatus::Completed, None);
        h.skip("s", "a", "backup", t("04:00"), "held back", t("04:00"))
            .unwrap();
        let jobs = h.jobs().unwrap();
        assert_eq!(
            jobs.iter().map(|j| j.job.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let a = &jobs[0];
        // The skipped slot had no run: the last run is the failed one.
        let last = a.last_run.as_ref().unwrap();
        assert_eq!((last.status, last.slot), (SlotStatus::Failed, t("03:00")));
        assert_eq!(a.last_success.as_ref().unwrap().slot, t("01:00"));
        let set = a.last_set.as_ref().unwrap();
        assert_eq!(
            (set.set.as_deref(), set.set_bytes),
            (Some("set-02:00"), Some(200))
        );
        let counts: Vec<(SlotStatus, u64)> = a.ended.iter().map(|(s, n)| (*s, *n)).collect();
        assert_eq!(
            counts,
            [
                (SlotStatus::Completed, 1),
                (SlotStatus::Failed, 1),
                (SlotStatus::Attention, 1),
                (SlotStatus::Skipped, 1)
            ]
        );
        assert_eq!(jobs[1].last_set, None);
    }

    #[test]
    fn opening_waits_for_another_process_writing_instead_of_failing() {
        // The daemon making the file, holding its write lock, while `hokan status` opens it.
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Connection::open(dir.path().join("history.sqlite")).unwrap();
        let tx = writer
            .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
            .unwrap();
        tx.execute_batch("CREATE TABLE busy (x)").unwrap();
        let (opened_tx, opened) = std::sync::mpsc::channel();
        let state = dir.path().to_path_buf();
        let reader = std::thread::spawn(move || {
            let h = History::open(&state);
            opened_tx.send(()).unwrap();
            h.map(|h| h.all().unwrap().len())
        });
        // Still waiting while the lock is held ...
        assert!(opened.recv_timeout(Duration::from_millis(300)).is_err());
        tx.commit().unwrap();
        // ... and opens, with its schema, once it is let go.
        assert_eq!(reader.join().unwrap().unwrap(), 0);
        // Several opening a new file at once switch it to WAL and make its schema once between
        // them. Started together, many rounds: the race this covers is in the first milliseconds.
        for _ in 0..20 {
            let fresh = tempfile::tempdir().unwrap();
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let threads: Vec<_> = (0..6)
                .map(|_| {
                    let (p, start) = (fresh.path().to_path_buf(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        History::open(&p).map(|_| ())
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn a_history_written_before_sets_were_recorded_opens_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let old = Connection::open(dir.path().join("history.sqlite")).unwrap();
        old.execute_batch(SCHEMA).unwrap();
        old.execute(
            "INSERT INTO slots (site, job, op, slot, status, finished, summary) \
             VALUES ('s', 'j', 'backup', ?1, 'completed', ?1, 'completed')",
            params![t("02:10").to_string()],
        )
        .unwrap();
        drop(old);
        let h = History::open(dir.path()).unwrap();
        let r = h.slot("s", "j", t("02:10")).unwrap().unwrap();
        assert_eq!((r.status, r.set), (SlotStatus::Completed, None));
        h.set_written(r.id, "20261121T021000Z", 7).unwrap();
        drop(h);
        // Opened again: the columns are not added twice.
        let h = History::open(dir.path()).unwrap();
        let r = h.slot("s", "j", t("02:10")).unwrap().unwrap();
        assert_eq!(r.set_bytes, Some(7));
        h.set_journal(r.id, Path::new("/var/lib/hokan/runs/done/r.jsonl"))
            .unwrap();
        let by_id = h.row(r.id).unwrap().unwrap();
        assert_eq!(
            by_id.journal.as_deref(),
            Some(Path::new("/var/lib/hokan/runs/done/r.jsonl"))
        );
        assert_eq!(h.since(t("02:10")).unwrap(), [by_id]);
        assert!(h.since(t("02:11")).unwrap().is_empty());
        assert_eq!(h.row(r.id + 1).unwrap(), None);
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
