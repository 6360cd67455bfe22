//! The delivery thread: takes due deliveries from the outbox and hands them to their channels.
//!
//! It runs beside the daemon's loop, on its own connection to the history, so that a channel
//! that hangs for its whole timeout delays other notifications, never a run or a slot. A channel
//! that fails has its other due deliveries moved to its next attempt, so a channel that is down
//! is tried once per backoff, not once per event.

use super::outbox::{self, Attempt, Due};
use super::{Channel, ChannelKind, Event, send};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The channels in use, by id; the daemon replaces them when a policy or `host.toml` changes.
type Channels = Arc<Mutex<BTreeMap<String, Channel>>>;

/// The delivery thread, and how to reach it.
pub struct Deliverer {
    stop: Arc<AtomicBool>,
    wake: SyncSender<()>,
    channels: Channels,
    thread: Option<JoinHandle<()>>,
}

/// The longest the thread sleeps without looking at the outbox.
const IDLE: Duration = Duration::from_secs(1);

impl Deliverer {
    /// Starts the thread on the outbox of the history in `state`.
    pub fn start(state: &Path, channels: Vec<Channel>) -> Result<Deliverer, String> {
        let path = state.join("history.sqlite");
        let conn = Connection::open(&path)
            .and_then(|c| c.busy_timeout(Duration::from_secs(10)).map(|()| c))
            .map_err(|e| {
                format!(
                    "cannot open the notification outbox {}: {e}",
                    path.display()
                )
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, woken) = sync_channel(1);
        let channels: Channels = Arc::new(Mutex::new(by_id(channels)));
        let thread = std::thread::Builder::new()
            .name("hokan-notify".into())
            .spawn({
                let (stop, channels) = (stop.clone(), channels.clone());
                move || run(&conn, &channels, &stop, &woken)
            })
            .map_err(|e| format!("cannot start the notification thread: {e}"))?;
        Ok(Deliverer {
            stop,
            wake,
            channels,
            thread: Some(thread),
        })
    }

    /// Replaces the channels in use.
    pub fn set_channels(&self, channels: Vec<Channel>) {
        *self.channels.lock().unwrap_or_else(|p| p.into_inner()) = by_id(channels);
        self.wake();
    }

    /// Tells the thread that something was queued.
    pub fn wake(&self) {
        let _ = self.wake.try_send(());
    }

    /// Stops the thread after the attempt it is making; what is pending stays in the outbox.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn by_id(channels: Vec<Channel>) -> BTreeMap<String, Channel> {
    channels.into_iter().map(|c| (c.id.clone(), c)).collect()
}

fn run(conn: &Connection, channels: &Channels, stop: &AtomicBool, woken: &Receiver<()>) {
    let agent = send::http_agent();
    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = round(conn, channels, stop, &agent) {
            tracing::warn!("notifications: cannot read the outbox: {e}");
        }
        let now = outbox::now_ms();
        let wait = match outbox::next_due(conn) {
            Ok(Some(due)) if due > now => Duration::from_millis((due - now) as u64).min(IDLE),
            Ok(Some(_)) => Duration::ZERO,
            _ => IDLE,
        };
        if !wait.is_zero() {
            let _ = woken.recv_timeout(wait);
        }
    }
}

/// Attempts every due delivery once.
fn round(
    conn: &Connection,
    channels: &Channels,
    stop: &AtomicBool,
    agent: &ureq::Agent,
) -> rusqlite::Result<()> {
    let mut by_channel: BTreeMap<String, Vec<Due>> = BTreeMap::new();
    for d in outbox::due(conn, outbox::now_ms())? {
        by_channel.entry(d.channel.clone()).or_default().push(d);
    }
    for (id, due) in by_channel {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let channel = channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        let Some(channel) = channel else {
            for d in &due {
                outbox::record(
                    conn,
                    &d.event.id,
                    &id,
                    d.attempts,
                    outbox::now_ms(),
                    &Attempt::Dropped,
                    "the channel is no longer configured (host.toml or the site's [[notify]])",
                )?;
            }
            continue;
        };
        // A digest is one message for everything due; other channels take events one by one,
        // and a failure holds the rest back until the next attempt.
        let batches: Vec<Vec<Due>> = match &channel.kind {
            ChannelKind::Email(m) if m.digest.is_some() => vec![due],
            _ => due.into_iter().map(|d| vec![d]).collect(),
        };
        for batch in batches {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let events: Vec<Event> = batch.iter().map(|d| d.event.clone()).collect();
            let result = attempt(&channel, agent, &events);
            let now = outbox::now_ms();
            let mut failed_until = None;
            for d in &batch {
                let n = d.attempts + 1;
                let (outcome, detail) = match &result {
                    Ok(detail) => (Attempt::Delivered, detail.clone()),
                    Err(e) => {
                        let age = Duration::from_millis((now - d.created).max(0) as u64);
                        if age >= channel.give_up_after {
                            (
                                Attempt::GiveUp,
                                format!(
                                    "{e} (given up: retried for {})",
                                    humantime::format_duration(channel.give_up_after)
                                ),
                            )
                        } else {
                            let at = now + channel.backoff(n).as_millis() as i64;
                            failed_until = Some(at);
                            (Attempt::Retry(at), e.clone())
                        }
                    }
                };
                match &outcome {
                    Attempt::Retry(at) => tracing::warn!(
                        "notification {} to {}: attempt {n} failed ({detail}); next in {}",
                        d.event.id,
                        channel.id,
                        humantime::format_duration(Duration::from_millis((at - now).max(0) as u64))
                    ),
                    Attempt::GiveUp => tracing::error!(
                        "notification {} to {} given up: {detail}",
                        d.event.id,
                        channel.id
                    ),
                    _ => {}
                }
                outbox::record(conn, &d.event.id, &channel.id, n, now, &outcome, &detail)?;
            }
            if let Some(until) = failed_until {
                outbox::postpone(conn, &channel.id, until)?;
                break;
            }
        }
    }
    Ok(())
}

/// One attempt of `channel` at `events` (one, or a digest's).
fn attempt(channel: &Channel, agent: &ureq::Agent, events: &[Event]) -> Result<String, String> {
    match &channel.kind {
        ChannelKind::Webhook {
            url,
            secret_file,
            format,
        } => send::webhook(agent, url, secret_file.as_deref(), *format, &events[0]),
        ChannelKind::Heartbeat { url } => send::heartbeat(agent, url, &events[0]),
        ChannelKind::Email(m) => send::email(m, events),
    }
}

#[cfg(test)]
mod tests {
    use super::super::EventKind;
    use super::super::testing::{event, webhook};
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::AtomicU16;

    /// A loopback HTTP receiver answering every request with `status`, counting requests.
    fn receiver(status: Arc<AtomicU16>, seen: Arc<Mutex<Vec<String>>>) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let (mut len, mut id) = (0usize, String::new());
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if let Some(v) = lower.strip_prefix("webhook-id:") {
                        id = v.trim().to_string();
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                seen.lock().unwrap().push(id);
                let code = status.load(Ordering::SeqCst);
                let _ = write!(
                    s,
                    "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        format!("http://{addr}/hook")
    }

    #[test]
    fn a_down_channel_is_tried_once_per_backoff_and_each_event_is_delivered_once() {
        let status = Arc::new(AtomicU16::new(503));
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let url = receiver(status.clone(), seen.clone());
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(outbox::SCHEMA).unwrap();
        let mut ch = webhook("host/ops", &url);
        ch.retry_after = Duration::from_millis(300);
        let channels: Channels = Arc::new(Mutex::new(by_id(vec![ch.clone()])));
        let a = event(EventKind::RunFailed);
        let b = event(EventKind::NoGoodSet);
        let now = outbox::now_ms();
        outbox::enqueue(&conn, &a, &[&ch], now).unwrap();
        outbox::enqueue(&conn, &b, &[&ch], now).unwrap();
        let stop = AtomicBool::new(false);
        let agent = send::http_agent();
        round(&conn, &channels, &stop, &agent).unwrap();
        // The channel is down: one request, and the other event waits for the same retry.
        let tried = seen.lock().unwrap().clone();
        assert_eq!(tried.len(), 1);
        let (first, second) = if tried[0] == a.id { (&a, &b) } else { (&b, &a) };
        assert_eq!(outbox::log(&conn, &first.id).unwrap().len(), 1);
        assert!(outbox::log(&conn, &second.id).unwrap().is_empty());
        assert!(outbox::due(&conn, outbox::now_ms()).unwrap().is_empty());
        // Back up: after the backoff both go, once each.
        status.store(200, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(350));
        round(&conn, &channels, &stop, &agent).unwrap();
        round(&conn, &channels, &stop, &agent).unwrap();
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            got.iter().filter(|i| **i == first.id).count(),
            2,
            "one 503, one 200"
        );
        assert_eq!(got.iter().filter(|i| **i == second.id).count(), 1);
        let ds = outbox::deliveries(&conn, 10).unwrap();
        assert!(ds.iter().all(|d| d.state == "delivered"), "{ds:?}");
        assert_eq!(outbox::pending(&conn).unwrap(), 0);
    }

    #[test]
    fn a_removed_channel_drops_its_deliveries_and_an_old_failure_is_given_up() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(outbox::SCHEMA).unwrap();
        let gone = webhook("host/gone", "http://127.0.0.1:9/");
        // Port 9 (discard) refuses on loopback: a channel that is down.
        let mut old = webhook("host/old", "http://127.0.0.1:9/");
        old.give_up_after = Duration::from_millis(1);
        let e = event(EventKind::RunFailed);
        outbox::enqueue(&conn, &e, &[&gone, &old], outbox::now_ms() - 1000).unwrap();
        let channels: Channels = Arc::new(Mutex::new(by_id(vec![old])));
        round(
            &conn,
            &channels,
            &AtomicBool::new(false),
            &send::http_agent(),
        )
        .unwrap();
        let ds = outbox::deliveries(&conn, 10).unwrap();
        let state = |c: &str| ds.iter().find(|d| d.channel == c).unwrap().state.clone();
        assert_eq!(state("host/gone"), "dropped");
        assert_eq!(state("host/old"), "given-up");
        let log = outbox::log(&conn, &e.id).unwrap();
        assert!(
            log.iter()
                .any(|l| l.channel == "host/old" && l.detail.contains("given up")),
            "{log:?}"
        );
    }
}
