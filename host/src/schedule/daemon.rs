//! `hokan daemon`: runs the jobs of a policy directory as their slots come due.
//!
//! - Before scheduling anything it recovers: it waits for runs a previous daemon left going,
//!   runs `hokan recover` (their cleanup: maintenance mode released, services started), and
//!   records how they ended.
//! - Every slot gets a row in the [`History`] before its run starts, so a slot never runs twice;
//!   one a shutdown interrupted may run again within its maximum start delay. Slots that passed
//!   while the daemon was down are run late within that delay, or recorded as skipped.
//! - Runs are `hokan run` child processes (a plugin or a run that dies never takes the daemon
//!   down); each writes a log under `logs/` in the state directory.
//! - Policies are re-read when a file changes; a file that no longer loads, or whose scheduled
//!   jobs are wrong, keeps its previous version and is reported.
//! - `hokan status` asks over the Unix socket `daemon.sock` in the state directory.
//! - SIGTERM or SIGINT: no new run starts; each running one is sent SIGTERM, finishes its step,
//!   runs its cleanup and closes its journal; then the daemon exits.

use super::Scheduler;
use super::history::{History, HistoryError, SlotRow, SlotStatus};
use super::rules::{Busy, Decision, local_text};
use crate::notify::deliver::Deliverer;
use crate::notify::{self, EventKind};
use crate::policy::{HostConfig, Policy};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

mod clock;
mod event;
mod http;
pub mod metrics;
pub mod page;
mod policies;
mod runs;
mod status;
mod systemd;

use policies::Policies;
use runs::Run;

pub use clock::Clock;
pub use event::{Event, Events};
pub use http::HttpOptions;
pub use status::{NextRun, Status, Waiting, ask_status};

/// Why the daemon could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The run history.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// Anything else, with what to do.
    #[error("{0}")]
    Setup(String),
}

/// Where and how the daemon works.
#[derive(Clone)]
pub struct Options {
    /// The policy directory (or one policy file).
    pub policies: PathBuf,
    /// The state directory: history, journals, locks, logs, socket.
    pub state: PathBuf,
    /// The plugin directory.
    pub plugin_dir: PathBuf,
    /// The compile cache, passed on to runs.
    pub cache_dir: Option<PathBuf>,
    /// The hokan executable the runs use.
    pub hokan: PathBuf,
    /// The clock.
    pub clock: Clock,
    /// Who hears what the daemon does.
    pub events: Events,
    /// Where it serves `/metrics`, if anywhere.
    pub http: Option<HttpOptions>,
    /// How often it runs `hokan recover` again while a run's cleanup waits for a server that
    /// could not be reached.
    pub recover_every: Duration,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("policies", &self.policies)
            .field("state", &self.state)
            .field("plugin_dir", &self.plugin_dir)
            .field("cache_dir", &self.cache_dir)
            .field("hokan", &self.hokan)
            .field("clock", &self.clock)
            .field("http", &self.http)
            .field("recover_every", &self.recover_every)
            .finish_non_exhaustive()
    }
}

/// The daemon's state between ticks.
struct Daemon {
    opts: Options,
    describe: Describe,
    history: History,
    policies: Policies,
    sched: Scheduler,
    /// Each scheduled job's index in `sched`, by site and job.
    by_name: BTreeMap<(String, String), usize>,
    /// Due slots not yet started or skipped: (slot, site, job).
    pending: BTreeSet<(Timestamp, String, String)>,
    waiting: BTreeMap<(Timestamp, String, String), Vec<String>>,
    running: Vec<Run>,
    children: JoinSet<(i64, std::io::Result<ExitStatus>)>,
    recovery_attention: Option<PathBuf>,
    /// A `hokan recover` run again for deferred cleanups, and its log, while it runs.
    retrying: Option<(tokio::process::Child, PathBuf)>,
    /// When recovery is next run again, if a journal still waits for it then.
    next_recovery: Instant,
    last_reload: Instant,
    /// How far each job's calendar was looked at since start.
    looked: BTreeMap<(String, String), Timestamp>,
    /// When `seen` was last written to the history.
    last_seen_write: Instant,
    /// When it started, by its clock.
    started: Timestamp,
    /// `host.toml`: the host's notification channels (the last version that loaded).
    host: HostConfig,
    /// `host.toml`'s modification time and size when last read, and what was wrong with it.
    host_stamp: Option<(std::time::SystemTime, u64)>,
    host_error: Option<String>,
    /// The notification thread.
    deliverer: Option<Deliverer>,
    /// The dead-man check: each job's episode already reported (what its age is measured from).
    stale: BTreeMap<(String, String), Timestamp>,
    last_dead_man: Option<Instant>,
}

/// How often the history's `seen` marks are written (a restart looks again at slots up to this
/// much older than them; their rows say whether they ran).
const SEEN_EVERY: Duration = Duration::from_secs(60);

/// Why a slot that passed while the daemon was down was not run.
const MISSED: &str =
    "missed: the daemon was not running, and it is now later than the maximum start delay";

/// How far back a restart looks for slots it missed.
const LOOKBACK: SignedDuration = SignedDuration::from_hours(24 * 31);

/// How the daemon learns a plugin's description: the caller loads plugins (through the
/// runtime), so the scheduler does not depend on wasmtime.
pub type Describe =
    Box<dyn Fn(&Policy, &crate::policy::Job) -> Result<crate::describe::Description, String>>;

/// Runs the daemon until SIGTERM or SIGINT; `describe` loads a job's plugin for its rules.
pub async fn run(opts: Options, describe: Describe) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&opts.state).map_err(|e| {
        DaemonError::Setup(format!(
            "cannot make the state directory {}: {e}",
            opts.state.display()
        ))
    })?;
    let _lock = take_daemon_lock(&opts.state)?;
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| DaemonError::Setup(format!("cannot watch for SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| DaemonError::Setup(format!("cannot watch for SIGINT: {e}")))?;
    let history = History::open(&opts.state)?;
    let mut d = Daemon {
        opts,
        describe,
        history,
        policies: Policies::default(),
        sched: Scheduler::default(),
        by_name: BTreeMap::new(),
        pending: BTreeSet::new(),
        waiting: BTreeMap::new(),
        running: Vec::new(),
        children: JoinSet::new(),
        recovery_attention: None,
        retrying: None,
        next_recovery: Instant::now(),
        last_reload: Instant::now(),
        looked: BTreeMap::new(),
        last_seen_write: Instant::now(),
        started: Timestamp::UNIX_EPOCH,
        host: HostConfig::default(),
        host_stamp: None,
        host_error: None,
        deliverer: None,
        stale: BTreeMap::new(),
        last_dead_man: None,
    };
    d.started = d.now();
    // The policies first: the events of the runs recovery finishes go to their channels.
    d.reload(true);
    d.deliverer = Some(Deliverer::start(&d.opts.state, d.channels()).map_err(DaemonError::Setup)?);
    d.recover().await?;
    d.next_recovery = Instant::now() + d.opts.recover_every;
    let sock = d.opts.state.join("daemon.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)
        .map_err(|e| DaemonError::Setup(format!("cannot listen on {}: {e}", sock.display())))?;
    // Requests to the HTTP server are answered here, in the loop that owns the history. The
    // loop keeps a sender, so that without a server the channel stays open and quiet.
    let (ask_tx, mut asks) = tokio::sync::mpsc::channel::<http::Ask>(16);
    let server = match &d.opts.http {
        Some(h) => {
            let (bound, task) = http::serve(h, ask_tx.clone()).await?;
            let file = d.opts.state.join("http.addr");
            std::fs::write(&file, format!("{bound}\n"))
                .map_err(|e| DaemonError::Setup(format!("cannot write {}: {e}", file.display())))?;
            d.emit(Event::Serving {
                url: format!("http://{bound}/metrics"),
                token: h.token.is_some(),
            });
            Some(task)
        }
        None => None,
    };
    tracing::info!("hokan daemon: {} job(s) scheduled", d.sched.jobs().len());
    d.emit(Event::Watching {
        policies: d.opts.policies.clone(),
        jobs: d.sched.jobs().len(),
        socket: sock.clone(),
    });
    let mut systemd = systemd::Notifier::from_env();
    systemd.ready(&format!(
        "watching {}: {} job(s) scheduled",
        d.opts.policies.display(),
        d.sched.jobs().len()
    ));
    let tick = d.opts.clock.tick();
    let why = loop {
        systemd.tick();
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            Some(done) = d.children.join_next(), if !d.children.is_empty() => {
                if let Ok((id, status)) = done {
                    d.finished(id, status, false)?;
                }
            }
            conn = listener.accept() => {
                if let Ok((mut stream, _)) = conn {
                    let doc = serde_json::to_vec_pretty(&d.status()?).unwrap_or_default();
                    let _ = stream.write_all(&doc).await;
                    let _ = stream.shutdown().await;
                }
            }
            Some(ask) = asks.recv() => d.answer(ask),
            _ = tokio::time::sleep(tick) => d.tick()?,
        }
    };
    if let Some(task) = server {
        task.abort();
        let _ = std::fs::remove_file(d.opts.state.join("http.addr"));
    }
    drop(ask_tx);
    systemd.stopping(&format!("{why}: waiting for {} run(s)", d.running.len()));
    d.emit(Event::Stopping {
        why,
        runs: d.running.len(),
    });
    d.shutdown().await?;
    // What is still pending stays in the outbox for the next start.
    if let Some(deliverer) = d.deliverer.take() {
        deliverer.stop();
    }
    let _ = std::fs::remove_file(&sock);
    d.emit(Event::Stopped);
    Ok(())
}

/// The event about a run that ended as `e`; none for a status that is not an end.
fn run_event(row: &SlotRow, e: &runs::Ended, now: Timestamp) -> Option<notify::Event> {
    let kind = match e.status {
        SlotStatus::Completed => EventKind::RunCompleted,
        SlotStatus::Attention => EventKind::RunNeedsAttention,
        SlotStatus::Interrupted => EventKind::RunInterrupted,
        SlotStatus::Failed | SlotStatus::BadInput | SlotStatus::Refused
            if row.op == crate::sets::tested::OPERATION =>
        {
            EventKind::SetVerificationFailed
        }
        SlotStatus::Failed | SlotStatus::BadInput | SlotStatus::Refused => EventKind::RunFailed,
        SlotStatus::Running | SlotStatus::Skipped => return None,
    };
    let mut ev = notify::Event::new(kind, now, &row.site, &row.job, e.reason());
    ev.op = Some(row.op.clone());
    ev.slot = Some(row.slot);
    ev.status = Some(e.status.as_str().to_string());
    ev.step = e.step.clone();
    ev.set = e.set.as_ref().map(|(s, _)| s.clone());
    ev.log = row.log.clone();
    Some(ev)
}

/// The newest good set in `dir` and when it was completed.
fn newest_set(dir: &Path) -> Option<(String, Timestamp)> {
    let id = crate::sets::by_completion(dir).ok()?.pop()?;
    let finished = crate::sets::Manifest::finished(&dir.join(&id)).ok()?;
    Some((id, finished.parse().ok()?))
}

/// When a restore test last passed for one of the sets in `dir`: the good sets' records, read
/// when Prometheus asks (a few small files per job).
fn last_restore_test_pass(dir: &Path) -> Option<Timestamp> {
    crate::sets::list(dir)
        .ok()?
        .iter()
        .filter_map(|id| crate::sets::tested::last(dir, id))
        .filter(|t| t.ok)
        .filter_map(|t| t.tested_at.parse::<Timestamp>().ok())
        .max()
}

/// One daemon per state directory.
fn take_daemon_lock(state: &Path) -> Result<std::fs::File, DaemonError> {
    let path = state.join("daemon.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| DaemonError::Setup(format!("cannot open {}: {e}", path.display())))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        _ => Err(DaemonError::Setup(format!(
            "another hokan daemon uses the state directory {} (it holds {}); stop it first, or \
             give this one its own --state-dir",
            state.display(),
            path.display()
        ))),
    }
}

impl Daemon {
    fn emit(&self, e: Event) {
        (self.opts.events)(&e);
    }

    fn now(&self) -> Timestamp {
        self.opts.clock.now()
    }

    /// Finishes what a previous daemon left: waits for its runs, runs `hokan recover`, and
    /// records how each ended.
    async fn recover(&mut self) -> Result<(), DaemonError> {
        let left = self.history.with_status(SlotStatus::Running)?;
        for r in &left {
            if let Some(pid) = r.pid.filter(|p| crate::execute::lock::alive(*p as i32)) {
                self.emit(Event::WaitingForEarlierRun {
                    site: r.site.clone(),
                    job: r.job.clone(),
                    pid,
                });
                while crate::execute::lock::alive(pid as i32) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let (mut recover, log) = self.recover_command()?;
        let status = recover
            .status()
            .await
            .map_err(|e| DaemonError::Setup(format!("cannot run `hokan recover`: {e}")))?;
        if !status.success() {
            self.emit(Event::RecoveryNeedsAttention {
                code: status.code(),
                log: log.clone(),
            });
            self.recovery_attention = Some(log);
        }
        let now = self.now();
        for r in left {
            let e = runs::ended_before(&self.opts.state, &r);
            self.record_end(r.id, &e, now)?;
        }
        Ok(())
    }

    /// Runs `hokan recover` again in the background, every `recover_every`, while a run's
    /// journal waits for it because a server could not be reached for its cleanup: once the
    /// server answers, maintenance mode is released and services started without an operator
    /// at the keyboard. Recovery skips runs that are still going (their lock), so it never
    /// touches one the daemon started.
    fn retry_recovery(&mut self) -> Result<(), DaemonError> {
        if let Some((child, log)) = &mut self.retrying {
            let status = match child.try_wait() {
                Ok(None) => return Ok(()),
                Ok(Some(status)) => status.code(),
                Err(e) => {
                    tracing::warn!("cannot learn how `hokan recover` ended: {e}");
                    None
                }
            };
            let log = log.clone();
            self.retrying = None;
            let recovered = status == Some(0);
            if recovered {
                self.recovery_attention = None;
            } else {
                self.recovery_attention = Some(log.clone());
            }
            self.emit(Event::RecoveryRetried {
                code: status,
                recovered,
                log,
            });
        }
        if Instant::now() < self.next_recovery {
            return Ok(());
        }
        self.next_recovery = Instant::now() + self.opts.recover_every;
        if !crate::execute::journal::waiting_for_recovery(&self.opts.state) {
            return Ok(());
        }
        let (mut recover, log) = self.recover_command()?;
        let child = recover
            .spawn()
            .map_err(|e| DaemonError::Setup(format!("cannot run `hokan recover`: {e}")))?;
        self.retrying = Some((child, log));
        Ok(())
    }

    /// `hokan recover`, its output going to a log of its own under `logs/`, and that log.
    fn recover_command(&self) -> Result<(tokio::process::Command, PathBuf), DaemonError> {
        let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let (log, out, err) = runs::open_log(&self.opts.state, &format!("recover-{stamp}.log"))?;
        let mut c = runs::hokan(&self.opts, &["recover".as_ref()]);
        c.stdout(out).stderr(err);
        Ok((c, log))
    }

    /// Re-reads policy files that changed; `force` reads them all.
    fn reload(&mut self, force: bool) {
        self.last_reload = Instant::now();
        let events = self.opts.events.clone();
        let jobs = self.policies.reload(
            &self.opts.policies,
            force,
            &*self.describe,
            &self.opts.plugin_dir,
            &|e| events(&e),
        );
        let host_changed = self.reload_host(force);
        let jobs_changed = jobs.is_some();
        if let Some(jobs) = jobs {
            self.by_name = jobs
                .iter()
                .enumerate()
                .map(|(i, j)| ((j.site.clone(), j.job.clone()), i))
                .collect();
            self.sched = Scheduler::new(jobs);
        }
        if (host_changed || jobs_changed)
            && let Some(d) = &self.deliverer
        {
            d.set_channels(self.channels());
        }
    }

    /// Re-reads `host.toml` in the policy directory if it changed; a version that does not load
    /// keeps the previous one, reported like a policy's. Returns whether the channels changed.
    fn reload_host(&mut self, force: bool) -> bool {
        let file = self.opts.policies.join(crate::policy::HOST_FILE);
        let stamp = std::fs::metadata(&file)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp == self.host_stamp && !force {
            return false;
        }
        self.host_stamp = stamp;
        match HostConfig::load(&self.opts.policies) {
            Ok(h) => {
                if !force && h.file.is_some() {
                    self.emit(Event::Reloaded { path: file });
                }
                self.host = h;
                self.host_error = None;
                true
            }
            Err(e) => {
                let kept = if self.host.file.is_some() {
                    "the previous version is kept"
                } else {
                    "no host channels are in use"
                };
                self.emit(Event::PolicyRefused {
                    error: e.to_string(),
                    kept,
                });
                self.host_error = Some(format!("{e} ({kept})"));
                false
            }
        }
    }

    /// Every notification channel in use: the host's, and each scheduled site's own.
    fn channels(&self) -> Vec<notify::Channel> {
        let mut out: BTreeMap<String, notify::Channel> = BTreeMap::new();
        for c in self
            .host
            .notify
            .iter()
            .chain(self.sched.jobs().iter().flat_map(|j| j.channels.iter()))
        {
            out.entry(c.id.clone()).or_insert_with(|| c.clone());
        }
        out.into_values().collect()
    }

    /// What is wrong with the policy files and `host.toml`, and what was kept.
    fn policy_errors(&self) -> Vec<String> {
        let mut e = self.policies.errors();
        e.extend(self.host_error.clone());
        e
    }

    /// Queues `e` for the channels that want it: the host's, and its site's own (those of the
    /// job's policy). Call inside the transaction that records what it is about.
    fn queue(&self, h: &History, e: &notify::Event) -> Result<(), HistoryError> {
        let site_channels = self
            .index(&e.site, &e.job)
            .map(|i| &self.sched.jobs()[i].channels[..])
            .unwrap_or_default();
        let wanted: Vec<&notify::Channel> = self
            .host
            .notify
            .iter()
            .chain(site_channels)
            .filter(|c| c.wants(e))
            .collect();
        h.enqueue(e, &wanted)?;
        Ok(())
    }

    /// Wakes the notification thread after something was queued.
    fn wake_deliverer(&self) {
        if let Some(d) = &self.deliverer {
            d.wake();
        }
    }

    /// Records that slots of a job were skipped or missed, and raises one event for them all:
    /// a daemon that was down for a week raises one `slot-missed` per job, not one per slot.
    fn skip_slots(
        &self,
        kind: EventKind,
        (site, job, op): (&str, &str, &str),
        slots: &[Timestamp],
        reason: &str,
        now: Timestamp,
    ) -> Result<(), DaemonError> {
        let (Some(first), Some(last)) = (slots.first(), slots.last()) else {
            return Ok(());
        };
        let what = match slots.len() {
            1 => reason.to_string(),
            n => {
                let tz = self
                    .index(site, job)
                    .map_or(jiff::tz::TimeZone::UTC, |i| self.sched.jobs()[i].tz.clone());
                format!(
                    "{n} slots, {} to {}: {reason}",
                    local_text(*first, &tz),
                    local_text(*last, &tz)
                )
            }
        };
        let mut e = notify::Event::new(kind, now, site, job, what);
        e.op = Some(op.to_string());
        e.slot = Some(*first);
        e.status = Some(SlotStatus::Skipped.as_str().to_string());
        self.history.atomically(|h| {
            for slot in slots {
                h.skip(site, job, op, *slot, reason, now)?;
            }
            self.queue(h, &e)
        })?;
        self.wake_deliverer();
        Ok(())
    }

    /// The dead-man check: raises `no-good-set` once for each job whose newest good set (or,
    /// without one, its first slot, or the daemon's start) is older than its `stale_after`.
    fn dead_man(&mut self, now: Timestamp) -> Result<(), DaemonError> {
        let every = self.opts.clock.tick() * 10;
        if self.last_dead_man.is_some_and(|t| t.elapsed() < every) {
            return Ok(());
        }
        self.last_dead_man = Some(Instant::now());
        let mut raise = Vec::new();
        for j in self.sched.jobs() {
            let Some(limit) = j.stale_after else { continue };
            let (good, first) = self.history.good_and_first(&j.site, &j.job)?;
            // A set written outside the daemon (`hokan run` by hand) is a good set too.
            let good = good.max(j.sets_dir.as_deref().and_then(newest_set).map(|(_, t)| t));
            let since = good.or(first).unwrap_or(self.started);
            let key = (j.site.clone(), j.job.clone());
            if now.duration_since(since) <= limit || self.stale.get(&key) == Some(&since) {
                continue;
            }
            let limit_text = humantime::format_duration(limit.unsigned_abs()).to_string();
            let reason = match good {
                Some(g) => format!(
                    "the newest good set was completed at {}, more than {limit_text} ago (stale_after)",
                    local_text(g, &j.tz)
                ),
                None => format!(
                    "no good set since {}, more than {limit_text} ago (stale_after)",
                    local_text(since, &j.tz)
                ),
            };
            // Raised at the instant the limit passed, so a restart raises the same event.
            let mut e =
                notify::Event::new(EventKind::NoGoodSet, since + limit, &j.site, &j.job, reason);
            e.op = Some(j.op.clone());
            raise.push((key, since, e));
        }
        for (key, since, e) in raise {
            self.history.atomically(|h| self.queue(h, &e))?;
            self.stale.insert(key, since);
            self.wake_deliverer();
        }
        Ok(())
    }

    fn index(&self, site: &str, job: &str) -> Option<usize> {
        self.by_name
            .get(&(site.to_string(), job.to_string()))
            .copied()
    }

    /// Looks at the calendars: new due slots, then what can start.
    fn tick(&mut self) -> Result<(), DaemonError> {
        if self.last_reload.elapsed() >= Duration::from_secs(1) {
            self.reload(false);
        }
        self.retry_recovery()?;
        let now = self.now();
        let until = now + SignedDuration::from_secs(1);
        let persist = self.last_seen_write.elapsed() >= SEEN_EVERY;
        for i in 0..self.sched.jobs().len() {
            let j = &self.sched.jobs()[i];
            let (site, job, op) = (j.site.clone(), j.job.clone(), j.op.clone());
            let fresh = now - j.max_delay;
            let key = (site.clone(), job.clone());
            let from = match self.looked.get(&key) {
                Some(t) => *t,
                // First look since start (or since the job appeared): recent slots are looked
                // at again (their rows say whether they ran); older ones not seen before were
                // missed while the daemon was down.
                None => {
                    let seen = self.history.seen_until(&site, &job)?;
                    seen.map_or(fresh, |s| s.min(fresh)).max(now - LOOKBACK)
                }
            };
            let slots = self.sched.slots(i, from, until);
            let mut missed = Vec::new();
            for slot in slots {
                let row = self.history.slot(&site, &job, slot)?;
                if row
                    .as_ref()
                    .is_some_and(|r| r.status.is_final() || r.status == SlotStatus::Running)
                {
                    continue;
                }
                if slot < fresh && row.is_none() {
                    self.emit(Event::Missed {
                        site: site.clone(),
                        job: job.clone(),
                        slot,
                        reason: MISSED,
                    });
                    missed.push(slot);
                    continue;
                }
                self.pending.insert((slot, site.clone(), job.clone()));
            }
            self.skip_slots(
                EventKind::SlotMissed,
                (&site, &job, &op),
                &missed,
                MISSED,
                now,
            )?;
            if persist || !self.looked.contains_key(&key) {
                self.history.set_seen_until(&site, &job, until)?;
            }
            self.looked.insert(key, until);
        }
        if persist {
            self.last_seen_write = Instant::now();
        }
        self.dead_man(now)?;
        let pending: Vec<_> = self.pending.iter().cloned().collect();
        self.waiting.clear();
        for key in pending {
            let (slot, site, job) = &key;
            let Some(i) = self.index(site, job) else {
                // The job left the policies.
                self.pending.remove(&key);
                continue;
            };
            let busy: Vec<(usize, Busy)> = self
                .running
                .iter()
                .filter_map(|r| {
                    let k = self.index(&r.site, &r.job)?;
                    Some((
                        k,
                        Busy {
                            from: r.started,
                            // How long it will still run is unknown: busy for now.
                            until: now + SignedDuration::from_secs(1),
                            what: format!(
                                "job {} (running since {})",
                                r.job,
                                local_text(r.started, &self.sched.jobs()[k].tz)
                            ),
                        },
                    ))
                })
                .collect();
            match self.sched.decide(i, *slot, now, &busy) {
                Decision::Start { at, .. } if at <= now => {
                    self.pending.remove(&key);
                    self.start(i, *slot, now)?;
                }
                Decision::Start { waited, .. } => {
                    self.waiting.insert(key, waited);
                }
                Decision::Skip { reason } => {
                    self.pending.remove(&key);
                    self.emit(Event::HeldBack {
                        site: site.clone(),
                        job: job.clone(),
                        slot: *slot,
                        reason: reason.clone(),
                    });
                    let op = self.sched.jobs()[i].op.clone();
                    self.skip_slots(
                        EventKind::SlotSkipped,
                        (site, job, &op),
                        &[*slot],
                        &reason,
                        now,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Starts slot `slot` of job `i` at `now` (the tick's clock).
    fn start(&mut self, i: usize, slot: Timestamp, now: Timestamp) -> Result<(), DaemonError> {
        let j = self.sched.jobs()[i].clone();
        let (log, out, err) =
            runs::open_log(&self.opts.state, &runs::log_name(&j.site, &j.job, slot))?;
        let Some(id) = self
            .history
            .begin(&j.site, &j.job, &j.op, slot, now, &log)?
        else {
            return Ok(());
        };
        let snapshot = self
            .policies
            .snapshot(&j.policy, &self.opts.state)
            .map_err(DaemonError::Setup)?;
        let mut child = match runs::spawn(&self.opts, &snapshot, &j, (out, err)) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("cannot start `hokan run`: {e}");
                self.history.finish(id, SlotStatus::Failed, &why, now)?;
                return Ok(());
            }
        };
        let pid = child.id().unwrap_or(0);
        self.history.set_pid(id, pid)?;
        self.emit(Event::Started {
            site: j.site.clone(),
            job: j.job.clone(),
            op: j.op.clone(),
            slot: local_text(slot, &j.tz),
            pid,
            log: log.clone(),
        });
        self.children.spawn(async move { (id, child.wait().await) });
        self.running.push(Run {
            id,
            site: j.site,
            job: j.job,
            op: j.op,
            slot,
            started: now,
            pid,
            log,
        });
        Ok(())
    }

    /// Records how a run ended.
    fn finished(
        &mut self,
        id: i64,
        exit: std::io::Result<ExitStatus>,
        stopped: bool,
    ) -> Result<(), DaemonError> {
        let Some(pos) = self.running.iter().position(|r| r.id == id) else {
            return Ok(());
        };
        let r = self.running.remove(pos);
        let code = exit.as_ref().ok().and_then(ExitStatus::code);
        let e = runs::ended(&self.opts.state, &r, &exit, stopped);
        self.emit(Event::Ended {
            site: r.site.clone(),
            job: r.job.clone(),
            slot: r.slot,
            status: e.status,
            exit: code,
            summary: e.summary.clone(),
        });
        self.record_end(id, &e, self.now())
    }

    /// Records how a run ended, and raises the event about it, in one transaction.
    fn record_end(&self, id: i64, e: &runs::Ended, now: Timestamp) -> Result<(), DaemonError> {
        let event = self
            .history
            .row(id)?
            .and_then(|row| run_event(&row, e, now));
        self.history.atomically(|h| {
            if let Some((set, bytes)) = &e.set {
                h.set_written(id, set, *bytes)?;
            }
            if let Some(j) = &e.journal {
                h.set_journal(id, j)?;
            }
            h.finish(id, e.status, &e.summary, now)?;
            match &event {
                Some(ev) => self.queue(h, ev),
                None => Ok(()),
            }
        })?;
        self.wake_deliverer();
        Ok(())
    }

    /// Stops gracefully: every run is asked to stop and awaited.
    async fn shutdown(&mut self) -> Result<(), DaemonError> {
        for ((site, job), until) in &self.looked {
            self.history.set_seen_until(site, job, *until)?;
        }
        for r in &self.running {
            // SAFETY: kill(2) only sends a signal to our own child.
            unsafe {
                libc::kill(r.pid as i32, libc::SIGTERM);
            }
        }
        while let Some(done) = self.children.join_next().await {
            if let Ok((id, status)) = done {
                self.finished(id, status, true)?;
            }
        }
        // A recovery under way is running cleanups: it is let finish, never cut off.
        if let Some((mut child, _)) = self.retrying.take() {
            let _ = child.wait().await;
        }
        Ok(())
    }

    /// Answers a request of the HTTP server.
    fn answer(&self, ask: http::Ask) {
        match ask {
            http::Ask::Metrics(reply) => {
                let text = self
                    .metrics()
                    .map_err(|e| e.to_string())
                    .and_then(|s| metrics::render(&s).map_err(|e| e.to_string()));
                let _ = reply.send(text);
            }
            http::Ask::Page(which, reply) => {
                let _ = reply.send(self.page(which).map_err(|e| e.to_string()));
            }
        }
    }

    /// A page of the status page, `None` when there is no such page.
    fn page(&self, which: http::Page) -> Result<Option<String>, String> {
        match which {
            http::Page::Overview => {
                let now = self.now();
                let slots = self
                    .history
                    .since(now - SignedDuration::from_hours(24 * 31))
                    .map_err(|e| e.to_string())?;
                let mut last: BTreeMap<(String, String), _> = self
                    .history
                    .jobs()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|h| ((h.site.clone(), h.job.clone()), h.last_run))
                    .collect();
                let jobs: Vec<page::JobView> = self
                    .sched
                    .jobs()
                    .iter()
                    .enumerate()
                    .map(|(i, j)| page::JobView {
                        site: j.site.clone(),
                        timezone: j.tz.iana_name().unwrap_or("UTC").to_string(),
                        job: j.job.clone(),
                        op: j.op.clone(),
                        last: last.remove(&(j.site.clone(), j.job.clone())).flatten(),
                        next: self.next_slot(i, now),
                        newest_set: j.sets_dir.as_deref().and_then(newest_set),
                        slots: slots
                            .iter()
                            .filter(|r| r.site == j.site && r.job == j.job)
                            .cloned()
                            .collect(),
                    })
                    .collect();
                let head = page::Head {
                    pid: std::process::id(),
                    now,
                    policies: self.opts.policies.display().to_string(),
                    policy_errors: self.policy_errors(),
                    recovery_attention: self
                        .recovery_attention
                        .as_ref()
                        .map(|p| p.display().to_string()),
                };
                page::overview(&head, &jobs)
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            http::Page::Run(id) => {
                let Some(row) = self.history.row(id).map_err(|e| e.to_string())? else {
                    return Ok(None);
                };
                let records = row
                    .journal
                    .as_deref()
                    .and_then(|j| crate::execute::journal::read(j).ok())
                    .unwrap_or_default();
                page::run(&row, &records)
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn metrics(&self) -> Result<metrics::Snapshot, DaemonError> {
        let now = self.now();
        let mut history: BTreeMap<(String, String), _> = self
            .history
            .jobs()?
            .into_iter()
            .map(|h| ((h.site.clone(), h.job.clone()), h))
            .collect();
        let jobs = self
            .sched
            .jobs()
            .iter()
            .enumerate()
            .map(|(i, j)| metrics::JobMetrics {
                site: j.site.clone(),
                job: j.job.clone(),
                op: j.op.clone(),
                next_slot: self.next_slot(i, now),
                expected_interval: self.sched.expected_interval(i, now),
                running: self
                    .running
                    .iter()
                    .any(|r| r.site == j.site && r.job == j.job),
                restore_tested: j.sets_dir.as_deref().and_then(last_restore_test_pass),
                history: history
                    .remove(&(j.site.clone(), j.job.clone()))
                    .unwrap_or_default(),
            })
            .collect();
        let (notifications_pending, notifications_given_up) = self.history.delivery_counts()?;
        Ok(metrics::Snapshot {
            now,
            started: self.started,
            notifications_pending,
            notifications_given_up,
            jobs,
            policy_errors: self.policy_errors().len(),
            recovery_attention: self.recovery_attention.is_some(),
        })
    }

    /// Job `i`'s next slot after `now`.
    fn next_slot(&self, i: usize, now: Timestamp) -> Option<Timestamp> {
        self.sched
            .slots(i, now + SignedDuration::from_secs(1), now + LOOKBACK)
            .first()
            .copied()
    }

    fn status(&self) -> Result<Status, DaemonError> {
        let now = self.now();
        let next = self
            .sched
            .jobs()
            .iter()
            .enumerate()
            .filter_map(|(i, j)| {
                let slot = self.next_slot(i, now)?;
                Some(NextRun {
                    site: j.site.clone(),
                    job: j.job.clone(),
                    op: j.op.clone(),
                    slot,
                    slot_local: local_text(slot, &j.tz),
                })
            })
            .collect();
        let policy_errors = self.policy_errors();
        Ok(Status {
            format: "1",
            pid: std::process::id(),
            now,
            policies: self.opts.policies.clone(),
            next,
            running: self.history.with_status(SlotStatus::Running)?,
            waiting: self
                .waiting
                .iter()
                .map(|((slot, site, job), w)| Waiting {
                    site: site.clone(),
                    job: job.clone(),
                    slot: *slot,
                    waiting_for: w.clone(),
                })
                .collect(),
            last: self.history.last(20)?,
            policy_errors,
            recovery_attention: self.recovery_attention.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_clock_runs_fast_from_its_start() {
        let c = Clock::parse("2026-11-21T01:59:00Z*600").unwrap();
        let a = c.now();
        assert!(a >= "2026-11-21T01:59:00Z".parse().unwrap());
        std::thread::sleep(Duration::from_millis(100));
        let b = c.now();
        // 0.1 s real is a minute on this clock.
        assert!(
            b.duration_since(a) >= SignedDuration::from_secs(55),
            "{a} {b}"
        );
        assert!(Clock::parse("2026-11-21T01:59:00Z*0").is_err());
        assert!(
            Clock::parse("yesterday*2")
                .unwrap_err()
                .contains("RFC 3339")
        );
    }

    #[test]
    fn outcomes_and_exit_statuses_become_slot_statuses() {
        use crate::execute::{Outcome, RunStatus};
        assert_eq!(
            SlotStatus::of_outcome(&Outcome::completed(), true),
            SlotStatus::Completed
        );
        let mut failed = Outcome::new(RunStatus::Failed);
        assert_eq!(SlotStatus::of_outcome(&failed, false), SlotStatus::Failed);
        assert_eq!(
            SlotStatus::of_outcome(&failed, true),
            SlotStatus::Interrupted
        );
        // Stopped by a SIGTERM the daemon did not send (systemd's, say): the outcome says so.
        failed.stopped = true;
        assert_eq!(
            SlotStatus::of_outcome(&failed, false),
            SlotStatus::Interrupted
        );
        let mut kept = Outcome::new(RunStatus::Failed);
        kept.set_kept = Some("`check-set` failed after the point of no return `backup`".into());
        assert_eq!(SlotStatus::of_outcome(&kept, false), SlotStatus::Attention);
        assert_eq!(
            SlotStatus::of_outcome(&Outcome::new(RunStatus::Recovered), false),
            SlotStatus::Interrupted
        );
        // A run that never journaled: bad input and refusals, or it died.
        assert_eq!(SlotStatus::of_exit(Some(1), false), SlotStatus::BadInput);
        assert_eq!(SlotStatus::of_exit(Some(3), false), SlotStatus::Refused);
        assert_eq!(SlotStatus::of_exit(None, true), SlotStatus::Interrupted);
        assert_eq!(SlotStatus::of_exit(None, false), SlotStatus::Failed);
    }
}
