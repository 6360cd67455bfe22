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
