//! The outbox: events and their deliveries, in the run history's database.
//!
//! An event is written with one delivery row per channel that wants it, in the transaction that
//! records what it is about, so that a crash never loses one and never raises one twice (an
//! event's id is derived from what it is about; a second insert is ignored). A delivery is
//! `pending` until a channel accepts it, then `delivered`, once: the delivery thread is the only
//! writer of that change, and it makes it only from `pending`. Every attempt is logged.
//!
//! What "exactly once" cannot mean over a network: a receiver that took the event and then lost
//! the connection before answering gets it again. Each delivery carries the event's id
//! (`webhook-id`, `Message-ID`) so that such a receiver drops the repeat.
//!
//! Times here are the machine's real clock in Unix milliseconds (retries wait in real time,
//! whatever clock the daemon schedules by); an event's own `at` is the daemon's.

use super::{Channel, ChannelKind, Event};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

/// The outbox's tables; [`crate::schedule::history::History::open`] makes them.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    site TEXT NOT NULL,
    job TEXT NOT NULL,
    at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    event TEXT NOT NULL REFERENCES events (id),
    channel TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL,
    due INTEGER NOT NULL,
    done INTEGER,
    last_error TEXT,
    PRIMARY KEY (event, channel)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, due);
CREATE TABLE IF NOT EXISTS delivery_log (
    id INTEGER PRIMARY KEY,
    event TEXT NOT NULL,
    channel TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL
);
";

/// Now, in Unix milliseconds of the real clock.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Writes `e` and a pending delivery to each of `channels`; returns how many deliveries were
/// added (none when the event was already there). A digest channel's delivery is due at the
/// end of the digest period it falls in.
pub fn enqueue(
    conn: &Connection,
    e: &Event,
    channels: &[&Channel],
    now: i64,
) -> rusqlite::Result<usize> {
    let body = serde_json::to_string(e).expect("an event serializes");
    let added = conn.execute(
        "INSERT OR IGNORE INTO events (id, kind, severity, site, job, at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            e.id,
            e.kind.as_str(),
            e.severity.as_str(),
            e.site,
            e.job,
            e.at.to_string(),
            body
        ],
    )?;
    if added == 0 {
        return Ok(0);
    }
    let mut n = 0;
    for c in channels {
        let due = match &c.kind {
            ChannelKind::Email(m) => match m.digest {
                Some(d) => {
                    let period = i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1);
                    (now / period + 1).saturating_mul(period)
                }
                None => now,
            },
            _ => now,
        };
        n += conn.execute(
            "INSERT OR IGNORE INTO deliveries (event, channel, state, created, due) VALUES (?1, ?2, 'pending', ?3, ?4)",
            params![e.id, c.id, now, due],
        )?;
    }
    Ok(n)
}

/// A delivery that is due.
#[derive(Debug, Clone)]
pub struct Due {
    /// The event.
    pub event: Event,
    /// The channel's id.
    pub channel: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was queued.
    pub created: i64,
}

/// The pending deliveries due by `now`, oldest event first.
pub fn due(conn: &Connection, now: i64) -> rusqlite::Result<Vec<Due>> {
    let mut st = conn.prepare(
        "SELECT e.body, d.channel, d.attempts, d.created FROM deliveries d JOIN events e ON e.id = d.event
         WHERE d.state = 'pending' AND d.due <= ?1 ORDER BY e.at, d.event, d.channel",
    )?;
    let rows = st.query_map(params![now], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, u32>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (body, channel, attempts, created) = row?;
        // A body this hokan cannot read (written by a newer one) stays for that one.
        if let Ok(event) = serde_json::from_str(&body) {
            out.push(Due {
                event,
                channel,
                attempts,
                created,
            });
        }
    }
    Ok(out)
}

/// When the next pending delivery is due, if any is pending.
pub fn next_due(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT min(due) FROM deliveries WHERE state = 'pending'",
        [],
        |r| r.get(0),
    )
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The channel took it.
    Delivered,
    /// It failed; try again at this time.
    Retry(i64),
    /// It failed for the last time: retried for longer than the channel's `give_up_after`.
    GiveUp,
    /// The channel is no longer configured.
    Dropped,
}

/// Records attempt number `attempt` of delivering `event` to `channel`, and what comes of it.
/// Only a pending delivery changes: one already delivered stays delivered, once.
pub fn record(
    conn: &Connection,
    event: &str,
    channel: &str,
    attempt: u32,
    now: i64,
    result: &Attempt,
    detail: &str,
) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    let ok = *result == Attempt::Delivered;
    tx.execute(
        "INSERT INTO delivery_log (event, channel, attempt, at, ok, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![event, channel, attempt, now, ok, detail],
    )?;
    let (state, due) = match result {
        Attempt::Delivered => ("delivered", None),
        Attempt::Retry(at) => ("pending", Some(*at)),
        Attempt::GiveUp => ("given-up", None),
        Attempt::Dropped => ("dropped", None),
    };
    tx.execute(
        "UPDATE deliveries SET state = ?3, attempts = ?4, due = coalesce(?5, due),
             done = CASE WHEN ?3 = 'pending' THEN NULL ELSE ?6 END,
             last_error = CASE WHEN ?7 THEN last_error ELSE ?8 END
         WHERE event = ?1 AND channel = ?2 AND state = 'pending'",
        params![event, channel, state, attempt, due, now, ok, detail],
    )?;
    tx.commit()
}

/// Moves the channel's pending deliveries due before `until` to `until`, without counting an
/// attempt: the channel just failed, and the others would only fail with it.
pub fn postpone(conn: &Connection, channel: &str, until: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE deliveries SET due = ?2 WHERE channel = ?1 AND state = 'pending' AND due < ?2",
        params![channel, until],
    )
    .map(drop)
}

/// A delivery, for `hokan notifications`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Delivery {
    /// The event.
    pub event: Event,
    /// The channel's id.
    pub channel: String,
    /// `pending`, `delivered`, `given-up` or `dropped`.
    pub state: String,
    /// Attempts so far.
    pub attempts: u32,
    /// The last failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was delivered or given up (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<i64>,
    /// When the next attempt is due, while pending (Unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<i64>,
}

/// The newest `limit` deliveries, newest event first.
pub fn deliveries(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<Delivery>> {
    let mut st = conn.prepare(
        "SELECT e.body, d.channel, d.state, d.attempts, d.last_error, d.done, d.due
         FROM deliveries d JOIN events e ON e.id = d.event ORDER BY e.at DESC, d.event, d.channel LIMIT ?1",
    )?;
    let rows = st.query_map(params![limit], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, u32>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, i64>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (body, channel, state, attempts, last_error, done, due) = row?;
        let Ok(event) = serde_json::from_str(&body) else {
            continue;
        };
        let due = (state == "pending").then_some(due);
        out.push(Delivery {
            event,
            channel,
            state,
            attempts,
            last_error,
            done,
            due,
        });
    }
    Ok(out)
}

/// One attempt of the delivery log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogEntry {
    /// The event's id.
    pub event: String,
    /// The channel's id.
    pub channel: String,
    /// Its number, from 1.
    pub attempt: u32,
    /// When (Unix milliseconds).
    pub at: i64,
    /// Whether the channel took it.
    pub ok: bool,
    /// What the channel answered, or why it could not be reached.
    pub detail: String,
}

/// Every attempt at delivering `event`, in order.
pub fn log(conn: &Connection, event: &str) -> rusqlite::Result<Vec<LogEntry>> {
    let mut st = conn.prepare(
        "SELECT event, channel, attempt, at, ok, detail FROM delivery_log WHERE event = ?1 ORDER BY id",
    )?;
    st.query_map(params![event], |r| {
        Ok(LogEntry {
            event: r.get(0)?,
            channel: r.get(1)?,
            attempt: r.get(2)?,
            at: r.get(3)?,
            ok: r.get(4)?,
            detail: r.get(5)?,
        })
    })?
    .collect()
}

/// How many deliveries wait, for `/metrics`.
pub fn pending(conn: &Connection) -> rusqlite::Result<u64> {
    count(conn, "pending")
}

/// How many deliveries were given up (never delivered), for `/metrics`.
pub fn given_up(conn: &Connection) -> rusqlite::Result<u64> {
    count(conn, "given-up")
}

fn count(conn: &Connection, state: &str) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT count(*) FROM deliveries WHERE state = ?1",
        params![state],
        |r| r.get::<_, i64>(0).map(|n| n.max(0) as u64),
    )
}

/// Whether an event with this id was raised.
pub fn has_event(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM events WHERE id = ?1",
        params![id],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{event, webhook};
    use super::super::{Email, EventKind, Tls};
    use super::*;
    use std::time::Duration;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    #[test]
    fn an_event_is_queued_once_per_channel_and_delivered_once() {
        let c = db();
        let a = webhook("host/a", "http://127.0.0.1:1/");
        let b = webhook("host/b", "http://127.0.0.1:2/");
        let e = event(EventKind::RunFailed);
        assert_eq!(enqueue(&c, &e, &[&a, &b], 1000).unwrap(), 2);
        // Raised again (a daemon restarted mid-way): nothing new.
        assert_eq!(enqueue(&c, &e, &[&a, &b], 2000).unwrap(), 0);
        assert!(has_event(&c, &e.id).unwrap());
        let due1 = due(&c, 1000).unwrap();
        assert_eq!(due1.len(), 2);
        assert_eq!(due1[0].event, e);
        // Channel a fails three times, then takes it; b takes it at once.
        for n in 1..=3 {
            record(
                &c,
                &e.id,
                "host/a",
                n,
                1000 + n as i64,
                &Attempt::Retry(5000 * n as i64),
                "503",
            )
            .unwrap();
        }
        record(&c, &e.id, "host/b", 1, 1001, &Attempt::Delivered, "200").unwrap();
        assert!(
            due(&c, 14_999).unwrap().is_empty(),
            "a waits for its backoff"
        );
        let again = due(&c, 15_000).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].channel.as_str(), again[0].attempts),
            ("host/a", 3)
        );
        record(&c, &e.id, "host/a", 4, 15_001, &Attempt::Delivered, "200").unwrap();
        assert!(due(&c, i64::MAX).unwrap().is_empty());
        assert_eq!(next_due(&c).unwrap(), None);
        // A late second "delivered" (or a failure) for a delivered event changes nothing.
        record(
            &c,
            &e.id,
            "host/a",
            5,
            16_000,
            &Attempt::Retry(17_000),
            "late",
        )
        .unwrap();
        let ds = deliveries(&c, 10).unwrap();
        assert!(ds.iter().all(|d| d.state == "delivered"), "{ds:?}");
        let a_row = ds.iter().find(|d| d.channel == "host/a").unwrap();
        assert_eq!(
            (a_row.attempts, a_row.last_error.as_deref()),
            (4, Some("503"))
        );
        let log = log(&c, &e.id).unwrap();
        let a_log: Vec<_> = log.iter().filter(|l| l.channel == "host/a").collect();
        assert_eq!(a_log.len(), 5, "every attempt is logged, the late one too");
        assert_eq!(
            a_log.iter().filter(|l| l.ok).count(),
            1,
            "delivered once: {a_log:?}"
        );
        assert_eq!(pending(&c).unwrap(), 0);
    }

    #[test]
    fn given_up_and_dropped_deliveries_are_no_longer_due() {
        let c = db();
        let a = webhook("host/a", "http://127.0.0.1:1/");
        let e = event(EventKind::RunFailed);
        enqueue(&c, &e, &[&a], 0).unwrap();
        record(
            &c,
            &e.id,
            "host/a",
            1,
            1,
            &Attempt::GiveUp,
            "connection refused",
        )
        .unwrap();
        assert!(due(&c, i64::MAX).unwrap().is_empty());
        let d = &deliveries(&c, 1).unwrap()[0];
        assert_eq!(d.state, "given-up");
        assert_eq!(d.last_error.as_deref(), Some("connection refused"));
        assert_eq!(given_up(&c).unwrap(), 1);
        let f = event(EventKind::NoGoodSet);
        enqueue(&c, &f, &[&a], 0).unwrap();
        record(
            &c,
            &f.id,
            "host/a",
            0,
            1,
            &Attempt::Dropped,
            "no such channel",
        )
        .unwrap();
        assert_eq!(pending(&c).unwrap(), 0);
    }

    #[test]
    fn a_digest_waits_for_the_end_of_its_period() {
        let c = db();
        let mut m = webhook("host/mail", "");
        m.kind = ChannelKind::Email(Email {
            server: "localhost".into(),
            port: 25,
            tls: Tls::None,
            user: None,
            password_file: None,
            from: "hokan@localhost".into(),
            to: vec!["ops@localhost".into()],
            digest: Some(Duration::from_secs(3600)),
        });
        let e = event(EventKind::RunFailed);
        enqueue(&c, &e, &[&m], 3_600_000 * 5 + 10).unwrap();
        assert!(due(&c, 3_600_000 * 6 - 1).unwrap().is_empty());
        assert_eq!(due(&c, 3_600_000 * 6).unwrap().len(), 1);
    }
}
