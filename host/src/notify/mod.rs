//! Notifications: what the daemon tells people when a run fails, a slot is missed or the newest
//! good set grows old, and how it gets there.
//!
//! Silent failure is the complaint backup tools hear most (velero#2428, kopia#1624): a failed
//! night recorded in a database nobody reads. So every event the daemon raises is written to an
//! **outbox** in the run history, in the same transaction as the history row it is about, and
//! routed to the channels that want it ([`Channel::wants`]). A delivery thread ([`deliver`])
//! takes them from there, one channel at a time, with retries and backoff; a channel that is
//! down never blocks a run or the scheduler, and its events wait in the store until it is back.
//!
//! Channels are configured per host (`host.toml` beside the policies, for every site or some)
//! and per site (`[[notify]]` in the site's policy, for that site only). See
//! `docs/notifications.md`.

pub mod deliver;
pub mod outbox;
pub mod send;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// How urgent an event is; a channel hears events at or above its `severity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Things went as planned (a run completed).
    Info,
    /// Someone should look today (a run needs attention, a slot was skipped).
    Warning,
    /// A backup is not there (a run failed, no good set for too long, a set failed its test).
    Critical,
}

impl Severity {
    /// The name used in policies and payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Parses a policy's `severity`.
    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A run completed.
    RunCompleted,
    /// A run did its job but left something for a person (a kept set, a failed cleanup).
    RunNeedsAttention,
    /// A run was stopped (the daemon or the machine went down) and its cleanup ran.
    RunInterrupted,
    /// A run failed, was refused, or could not start.
    RunFailed,
    /// A due slot was held back by the product's rules (a window, a conflict).
    SlotSkipped,
    /// A slot passed while the daemon was not running.
    SlotMissed,
    /// The dead-man check: the job's newest good set is older than its `stale_after`.
    NoGoodSet,
    /// A restore test of a set failed: that set does not restore.
    SetVerificationFailed,
}

impl EventKind {
    /// Every kind, for error messages.
    pub const ALL: [EventKind; 8] = [
        EventKind::RunCompleted,
        EventKind::RunNeedsAttention,
        EventKind::RunInterrupted,
        EventKind::RunFailed,
        EventKind::SlotSkipped,
        EventKind::SlotMissed,
        EventKind::NoGoodSet,
        EventKind::SetVerificationFailed,
    ];

    /// The name used in policies and payloads (`run-failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunCompleted => "run-completed",
            EventKind::RunNeedsAttention => "run-needs-attention",
            EventKind::RunInterrupted => "run-interrupted",
            EventKind::RunFailed => "run-failed",
            EventKind::SlotSkipped => "slot-skipped",
            EventKind::SlotMissed => "slot-missed",
            EventKind::NoGoodSet => "no-good-set",
            EventKind::SetVerificationFailed => "set-verification-failed",
        }
    }

    /// Parses a policy's `events` entry.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// How urgent it is.
    pub fn severity(self) -> Severity {
        match self {
            EventKind::RunCompleted => Severity::Info,
            EventKind::RunNeedsAttention
            | EventKind::RunInterrupted
            | EventKind::SlotSkipped
            | EventKind::SlotMissed => Severity::Warning,
            EventKind::RunFailed | EventKind::NoGoodSet | EventKind::SetVerificationFailed => {
                Severity::Critical
            }
        }
    }

    /// Whether it is about a run that ended (what a heartbeat reports).
    pub fn is_run(self) -> bool {
        matches!(
            self,
            EventKind::RunCompleted
                | EventKind::RunNeedsAttention
                | EventKind::RunInterrupted
                | EventKind::RunFailed
                | EventKind::SetVerificationFailed
        )
    }

    /// A line's opening for people: "run failed".
    pub fn title(self) -> &'static str {
        match self {
            EventKind::RunCompleted => "run completed",
            EventKind::RunNeedsAttention => "run needs attention",
            EventKind::RunInterrupted => "run interrupted",
            EventKind::RunFailed => "run failed",
            EventKind::SlotSkipped => "slot skipped",
            EventKind::SlotMissed => "slot missed",
            EventKind::NoGoodSet => "no good backup set",
            EventKind::SetVerificationFailed => "restore test failed",
        }
    }
}

/// One thing that happened, as every channel receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique and stable across retries: receivers drop a repeat by it (`webhook-id`, the
    /// email's `Message-ID`).
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// How urgent it is.
    pub severity: Severity,
    /// When it happened, by the daemon's clock.
    pub at: Timestamp,
    /// The machine hokan runs on.
    pub host: String,
    /// The site.
    pub site: String,
    /// The job.
    pub job: String,
    /// The operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    /// The slot it is about, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Timestamp>,
    /// The run's history status (`failed`, `attention`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The step that failed, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Why, in the words of the run or the check.
    pub reason: String,
    /// The set written or tested, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// The run's log on the hokan host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

impl Event {
    /// An event of `kind` about `site`/`job`, raised at `at`; its id is derived from what it is
    /// about, so that the same happening raised twice (a restart) has the same id.
    pub fn new(
        kind: EventKind,
        at: Timestamp,
        site: &str,
        job: &str,
        reason: impl Into<String>,
    ) -> Event {
        let host = host_name();
        let reason = reason.into();
        let mut h = blake3::Hasher::new();
        for part in [
            host.as_str(),
            site,
            job,
            kind.as_str(),
            &at.to_string(),
            &reason,
        ] {
            h.update(part.as_bytes());
            h.update(&[0]);
        }
        Event {
            id: format!("hokan_{}", &h.finalize().to_hex()[..24]),
            kind,
            severity: kind.severity(),
            at,
            host,
            site: site.to_string(),
            job: job.to_string(),
            op: None,
            slot: None,
            status: None,
            step: None,
            reason,
            set: None,
            log: None,
        }
    }

    /// One line for a chat message or a subject:
    /// `CRITICAL tokyo-hq/mailwise: run failed at step copy-data`.
    pub fn headline(&self) -> String {
        let mut s = format!(
            "{} {}/{}: {}",
            self.severity.as_str().to_uppercase(),
            self.site,
            self.job,
            self.kind.title()
        );
        if let Some(step) = &self.step {
            s.push_str(&format!(" at step {step}"));
        }
        s
    }

    /// The event for people, a field a line.
    pub fn text(&self) -> String {
        let mut lines = vec![self.headline(), String::new()];
        let mut field = |k: &str, v: &str| lines.push(format!("{k:<10} {v}"));
        field("site", &self.site);
        field("job", &self.job);
        if let Some(op) = &self.op {
            field("operation", op);
        }
        if let Some(slot) = self.slot {
            field("slot", &slot.to_string());
        }
        if let Some(status) = &self.status {
            field("status", status);
        }
        if let Some(step) = &self.step {
            field("step", step);
        }
        field("reason", &self.reason);
        if let Some(set) = &self.set {
            field("set", set);
        }
        if let Some(log) = &self.log {
            field("log", &log.display().to_string());
        }
        field("host", &self.host);
        field("at", &self.at.to_string());
        field("event", &self.id);
        lines.join("\n")
    }
}

/// This machine's name, for events (which host of a fleet raised it). It is a label in a message
/// to people, never looked up again, so a name that is not UTF-8 is shown with replacement
/// characters rather than refused.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// A place notifications go, as a policy or `host.toml` configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Unique on the host: `host/NAME` for a channel of `host.toml`, `SITE/NAME` for one of a
    /// site's policy. Deliveries are stored by it.
    pub id: String,
    /// How it delivers.
    pub kind: ChannelKind,
    /// The least severity it hears.
    pub severity: Severity,
    /// Only these sites (host channels; a site's own channel hears only its site).
    pub sites: Option<Vec<String>>,
    /// Only these jobs.
    pub jobs: Option<Vec<String>>,
    /// Only these kinds of event.
    pub events: Option<Vec<EventKind>>,
    /// The wait before the first retry; it doubles with each failure, up to an hour.
    pub retry_after: Duration,
    /// How long an event is retried before it is given up (and logged as such).
    pub give_up_after: Duration,
}

/// How a channel delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// An HTTP POST of the event as JSON, signed as Standard Webhooks signs
    /// (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Webhook {
        /// Where to.
        url: String,
        /// The signing secret's file; unsigned without one.
        secret_file: Option<PathBuf>,
        /// What the body looks like.
        format: WebhookFormat,
    },
    /// Email over SMTP.
    Email(Email),
    /// A ping to a monitoring URL on every run's end, the healthchecks.io way: the URL itself
    /// on success, `URL/fail` otherwise; the monitor raises the alarm when pings stop.
    Heartbeat {
        /// The check's ping URL.
        url: String,
    },
}

/// What a webhook's body looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// `{"type", "timestamp", "data": Event}` (the Standard Webhooks envelope).
    Hokan,
    /// `{"text": ...}`: what Slack's, Mattermost's and Teams' incoming webhooks take.
    Slack,
}

/// An email channel's server and envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// The SMTP server's name (checked against its certificate).
    pub server: String,
    /// Its port.
    pub port: u16,
    /// How the connection is protected.
    pub tls: Tls,
    /// The login, if the server wants one.
    pub user: Option<String>,
    /// The password's file (read when sending, never stored in the history).
    pub password_file: Option<PathBuf>,
    /// The sender.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// One message per this long with every event in it, instead of one per event.
    pub digest: Option<Duration>,
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// STARTTLS on a plain connection (port 587); refused if the server does not offer it.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// None: only to a server on this machine.
    None,
}

impl Channel {
    /// Whether the channel hears `e`.
    pub fn wants(&self, e: &Event) -> bool {
        let listed = |list: &Option<Vec<String>>, v: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|x| x == v))
        };
        let kind_ok = match (&self.kind, &self.events) {
            (_, Some(kinds)) => kinds.contains(&e.kind),
            // A heartbeat reports every run's end, whatever its severity.
            (ChannelKind::Heartbeat { .. }, None) => e.kind.is_run(),
            (_, None) => e.severity >= self.severity,
        };
        kind_ok && listed(&self.sites, &e.site) && listed(&self.jobs, &e.job)
    }

    /// The wait after the `attempt`th failed attempt (1-based): `retry_after`, doubling, at most
    /// an hour.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self
            .retry_after
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        doubled.min(Duration::from_secs(3600)).max(self.retry_after)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A webhook channel hearing warnings and worse.
    pub fn webhook(id: &str, url: &str) -> Channel {
        Channel {
            id: id.to_string(),
            kind: ChannelKind::Webhook {
                url: url.to_string(),
                secret_file: None,
                format: WebhookFormat::Hokan,
            },
            severity: Severity::Warning,
            sites: None,
            jobs: None,
            events: None,
            retry_after: Duration::from_secs(30),
            give_up_after: Duration::from_secs(3 * 86400),
        }
    }

    /// An event of `kind` on hq/mail at a fixed instant.
    pub fn event(kind: EventKind) -> Event {
        Event::new(
            kind,
            "2026-11-21T02:10:00Z".parse().unwrap(),
            "hq",
            "mail",
            "mwsave exited with status 2",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn channels_hear_their_severity_sites_jobs_and_kinds() {
        let mut c = webhook("host/ops", "http://127.0.0.1:1/");
        assert!(c.wants(&event(EventKind::RunFailed)));
        assert!(c.wants(&event(EventKind::SlotSkipped)));
        assert!(!c.wants(&event(EventKind::RunCompleted)), "info < warning");
        c.severity = Severity::Critical;
        assert!(!c.wants(&event(EventKind::RunNeedsAttention)));
        assert!(c.wants(&event(EventKind::NoGoodSet)));
        c.sites = Some(vec!["osaka".into()]);
        assert!(!c.wants(&event(EventKind::RunFailed)), "another site's");
        c.sites = Some(vec!["hq".into()]);
        c.jobs = Some(vec!["other".into()]);
        assert!(!c.wants(&event(EventKind::RunFailed)));
        c.jobs = None;
        // An explicit list of kinds overrides the severity.
        c.events = Some(vec![EventKind::RunCompleted]);
        assert!(c.wants(&event(EventKind::RunCompleted)));
        assert!(!c.wants(&event(EventKind::RunFailed)));
    }

    #[test]
    fn a_heartbeat_hears_every_run_end_and_nothing_else() {
        let mut c = webhook("host/hc", "http://127.0.0.1:1/");
        c.kind = ChannelKind::Heartbeat {
            url: "http://127.0.0.1:1/ping".into(),
        };
        assert!(c.wants(&event(EventKind::RunCompleted)));
        assert!(c.wants(&event(EventKind::RunFailed)));
        assert!(c.wants(&event(EventKind::SetVerificationFailed)));
        assert!(!c.wants(&event(EventKind::SlotSkipped)));
        assert!(!c.wants(&event(EventKind::NoGoodSet)));
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let mut c = webhook("host/ops", "http://127.0.0.1:1/");
        c.retry_after = Duration::from_secs(30);
        let waits: Vec<u64> = (1..=9).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(c.backoff(0).as_secs(), 30);
        assert_eq!(c.backoff(u32::MAX).as_secs(), 3600);
    }

    #[test]
    fn an_event_id_is_stable_for_the_same_happening_and_differs_otherwise() {
        let a = event(EventKind::RunFailed);
        assert_eq!(a.id, event(EventKind::RunFailed).id);
        assert_ne!(a.id, event(EventKind::RunCompleted).id);
        assert!(a.id.starts_with("hokan_"));
        let mut b = a.clone();
        b.step = Some("copy-data".into());
        assert_eq!(
            b.headline(),
            "CRITICAL hq/mail: run failed at step copy-data"
        );
        let text = b.text();
        for want in ["site       hq", "step       copy-data", "reason     mwsave"] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }

    #[test]
    fn names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
        for s in [Severity::Info, Severity::Warning, Severity::Critical] {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
        assert_eq!(Severity::parse("fatal"), None);
    }
}
