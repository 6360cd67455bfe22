//! `/metrics`: what the history says of each scheduled job, in Prometheus' text format, for
//! alert rules that catch a silent failure (docs/monitoring.md has them).
//!
//! Every value is read from the history and the calendars when Prometheus asks, so a restart
//! of the daemon loses nothing: the counters are counts of history rows and only grow. Times
//! are the daemon's clock, in seconds since the epoch, as Prometheus' `time()` is.

use crate::schedule::history::{JobHistory, SlotStatus};
use jiff::{SignedDuration, Timestamp};
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// What `/metrics` shows, gathered by the daemon's loop.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Now, by the daemon's clock.
    pub now: Timestamp,
    /// When the daemon started.
    pub started: Timestamp,
    /// Each scheduled job.
    pub jobs: Vec<JobMetrics>,
    /// Policy files that do not load or whose scheduled jobs are wrong.
    pub policy_errors: usize,
    /// `hokan recover` at start-up needed attention.
    pub recovery_attention: bool,
    /// Notifications waiting in the outbox.
    pub notifications_pending: u64,
    /// Notifications given up after their channel's `give_up_after`.
    pub notifications_given_up: u64,
}

/// One scheduled job's figures.
#[derive(Debug, Clone)]
pub struct JobMetrics {
    /// The site.
    pub site: String,
    /// The job.
    pub job: String,
    /// Its scheduled operation.
    pub op: String,
    /// Its next slot.
    pub next_slot: Option<Timestamp>,
    /// The longest gap between its slots around now ([`crate::schedule::Scheduler::expected_interval`]).
    pub expected_interval: Option<SignedDuration>,
    /// A run of it is going on.
    pub running: bool,
    /// When a restore test last passed for one of its sets, if one ever did.
    pub restore_tested: Option<Timestamp>,
    /// Its history (empty before its first slot).
    pub history: JobHistory,
}

/// The statuses a run ends in, for `last_status` and `runs_total` (skipped slots had no run;
/// running ones have not ended).
const RUN_ENDS: [SlotStatus; 6] = [
    SlotStatus::Completed,
    SlotStatus::Failed,
    SlotStatus::Attention,
    SlotStatus::Refused,
    SlotStatus::BadInput,
    SlotStatus::Interrupted,
];

fn secs(t: Timestamp) -> f64 {
    t.as_nanosecond() as f64 / 1e9
}

/// The document `/metrics` serves.
pub fn render(s: &Snapshot) -> Result<String, prometheus::Error> {
    let r = Registry::new();
    let job = ["site", "job"];
    let gauge = |name: &str, help: &str, labels: &[&str]| -> Result<GaugeVec, prometheus::Error> {
        let g = GaugeVec::new(Opts::new(name, help), labels)?;
        r.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let counter = |name: &str, help: &str, labels: &[&str]| {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        r.register(Box::new(c.clone()))?;
        Ok::<_, prometheus::Error>(c)
    };
    let info = IntGaugeVec::new(
        Opts::new(
            "hokan_job_info",
            "A scheduled job, with the operation its slots run (always 1).",
        ),
        &["site", "job", "operation"],
    )?;
    r.register(Box::new(info.clone()))?;
    let success = gauge(
        "hokan_job_last_success_timestamp_seconds",
        "When the job's last completed run ended; 0 when none has.",
        &job,
    )?;
    let status = gauge(
        "hokan_job_last_status",
        "1 for the status the job's last run ended in, 0 for the others.",
        &["site", "job", "status"],
    )?;
    let duration = gauge(
        "hokan_job_last_duration_seconds",
        "How long the job's last run took.",
        &job,
    )?;
    let set_bytes = gauge(
        "hokan_job_last_set_bytes",
        "The size of the last good backup set the job wrote: the bytes of its files.",
        &job,
    )?;
    let set_time = gauge(
        "hokan_job_last_set_timestamp_seconds",
        "When the run that wrote the job's last good backup set ended.",
        &job,
    )?;
    let interval = gauge(
        "hokan_job_expected_interval_seconds",
        "The longest gap between the job's slots from the last one before now to the eighth \
         after: a success older than this (plus the run's length) is overdue.",
        &job,
    )?;
    let next = gauge(
        "hokan_job_next_slot_timestamp_seconds",
        "When the job's next slot is due.",
        &job,
    )?;
    let tested = gauge(
        "hokan_job_last_restore_test_pass_timestamp_seconds",
        "When a restore test (`hokan restore-test`) last passed for one of the job's backup \
         sets still kept; 0 when none has.",
        &job,
    )?;
    let running = gauge(
        "hokan_job_running",
        "1 while a run of the job is going on.",
        &job,
    )?;
    let runs = counter(
        "hokan_job_runs_total",
        "The job's runs that ended, by how they ended.",
        &["site", "job", "outcome"],
    )?;
    let skipped = counter(
        "hokan_job_slots_skipped_total",
        "The job's slots that were skipped or missed: no run started for them.",
        &job,
    )?;
    for j in &s.jobs {
        let l = [j.site.as_str(), j.job.as_str()];
        let h = &j.history;
        info.with_label_values(&[&j.site, &j.job, &j.op]).set(1);
        success.with_label_values(&l).set(
            h.last_success
                .as_ref()
                .and_then(|r| r.finished)
                .map_or(0.0, secs),
        );
        for st in RUN_ENDS {
            let last = h.last_run.as_ref().map(|r| r.status);
            status
                .with_label_values(&[&j.site, &j.job, st.as_str()])
                .set(if last == Some(st) { 1.0 } else { 0.0 });
            runs.with_label_values(&[&j.site, &j.job, st.as_str()])
                .inc_by(h.ended.get(&st).copied().unwrap_or(0));
        }
        if let Some((from, to)) = h
            .last_run
            .as_ref()
            .and_then(|r| Some((r.started?, r.finished?)))
        {
            duration
                .with_label_values(&l)
                .set(to.duration_since(from).as_secs_f64().max(0.0));
        }
        if let Some(r) = &h.last_set {
            set_bytes
                .with_label_values(&l)
                .set(r.set_bytes.unwrap_or(0) as f64);
            if let Some(f) = r.finished {
                set_time.with_label_values(&l).set(secs(f));
            }
        }
        if let Some(d) = j.expected_interval {
            interval.with_label_values(&l).set(d.as_secs_f64());
        }
        if let Some(t) = j.next_slot {
            next.with_label_values(&l).set(secs(t));
        }
        running
            .with_label_values(&l)
            .set(if j.running { 1.0 } else { 0.0 });
        tested
            .with_label_values(&l)
            .set(j.restore_tested.map_or(0.0, secs));
        skipped
            .with_label_values(&l)
            .inc_by(h.ended.get(&SlotStatus::Skipped).copied().unwrap_or(0));
    }
    let plain = |name: &str, help: &str, v: f64| {
        let g = prometheus::Gauge::with_opts(Opts::new(name, help))?;
        g.set(v);
        r.register(Box::new(g))
    };
    plain(
        "hokan_daemon_start_time_seconds",
        "When the daemon started.",
        secs(s.started),
    )?;
    plain(
        "hokan_daemon_time_seconds",
        "Now, by the daemon's clock: far from Prometheus' time() when the clock is wrong.",
        secs(s.now),
    )?;
    plain(
        "hokan_daemon_jobs",
        "The jobs the daemon schedules.",
        s.jobs.len() as f64,
    )?;
    plain(
        "hokan_daemon_runs_running",
        "The runs going on.",
        s.jobs.iter().filter(|j| j.running).count() as f64,
    )?;
    plain(
        "hokan_daemon_policy_errors",
        "Policy files that do not load or whose scheduled jobs are wrong (their last good \
         version is used).",
        s.policy_errors as f64,
    )?;
    plain(
        "hokan_daemon_recovery_needs_attention",
        "1 when `hokan recover` at the daemon's start needed attention (its log says why).",
        if s.recovery_attention { 1.0 } else { 0.0 },
    )?;
    plain(
        "hokan_notifications_pending",
        "Notifications waiting in the outbox for a channel that has not taken them yet.",
        s.notifications_pending as f64,
    )?;
    plain(
        "hokan_notifications_given_up",
        "Notifications never delivered: their channel failed for longer than its give_up_after \
         (`hokan notifications` lists them).",
        s.notifications_given_up as f64,
    )?;
    let build = IntGaugeVec::new(
        Opts::new(
            "hokan_build_info",
            "The hokan that serves these (always 1).",
        ),
        &["version"],
    )?;
    r.register(Box::new(build.clone()))?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let mut out = Vec::new();
    TextEncoder::new().encode(&r.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::history::SlotRow;
    use std::collections::BTreeMap;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn row(status: SlotStatus, started: &str, finished: &str, set: Option<u64>) -> SlotRow {
        SlotRow {
            id: 1,
            site: "tokyo".into(),
            job: "mail\"box".into(),
            op: "backup".into(),
            slot: t(started),
            status,
            attempts: 1,
            started: Some(t(started)),
            finished: Some(t(finished)),
            pid: None,
            summary: None,
            log: None,
            set: set.map(|_| "20261201T171000Z".into()),
            set_bytes: set,
            journal: None,
        }
    }

    /// The value of the sample whose line starts with `series` (name and labels as printed).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn each_job_s_figures_come_from_its_history_and_calendar() {
        let ok = row(
            SlotStatus::Completed,
            "2026-12-01T17:10:00Z",
            "2026-12-01T17:25:30Z",
            Some(5_000_000),
        );
        let failed = row(
            SlotStatus::Failed,
            "2026-12-02T17:10:00Z",
            "2026-12-02T17:11:00Z",
            None,
        );
        let history = JobHistory {
            site: "tokyo".into(),
            job: "mail\"box".into(),
            last_run: Some(failed),
            last_success: Some(ok.clone()),
            last_set: Some(ok),
            ended: BTreeMap::from([
                (SlotStatus::Completed, 3),
                (SlotStatus::Failed, 1),
                (SlotStatus::Skipped, 2),
            ]),
        };
        let fresh = JobMetrics {
            site: "osaka".into(),
            job: "groupmax".into(),
            op: "backup".into(),
            next_slot: None,
            expected_interval: None,
            running: true,
            restore_tested: None,
            history: JobHistory::default(),
        };
        let s = Snapshot {
            now: t("2026-12-02T18:00:00Z"),
            started: t("2026-12-01T00:00:00Z"),
            jobs: vec![
                JobMetrics {
                    site: "tokyo".into(),
                    job: "mail\"box".into(),
                    op: "backup".into(),
                    next_slot: Some(t("2026-12-03T17:10:00Z")),
                    expected_interval: Some(SignedDuration::from_hours(24)),
                    running: false,
                    restore_tested: Some(t("2026-12-01T20:00:00Z")),
                    history,
                },
                fresh,
            ],
            policy_errors: 1,
            recovery_attention: false,
            notifications_pending: 2,
            notifications_given_up: 0,
        };
        let text = render(&s).unwrap();
        // Label values are escaped as the format wants.
        let l = r#"{job="mail\"box",site="tokyo"}"#;
        let v = |name: &str| value(&text, &format!("{name}{l}"));
        assert_eq!(
            v("hokan_job_last_success_timestamp_seconds"),
            Some(t("2026-12-01T17:25:30Z").as_second() as f64)
        );
        assert_eq!(v("hokan_job_last_duration_seconds"), Some(60.0));
        assert_eq!(v("hokan_job_last_set_bytes"), Some(5e6));
        assert_eq!(v("hokan_job_expected_interval_seconds"), Some(86_400.0));
        assert_eq!(v("hokan_job_slots_skipped_total"), Some(2.0));
        assert_eq!(v("hokan_job_running"), Some(0.0));
        assert_eq!(
            v("hokan_job_last_restore_test_pass_timestamp_seconds"),
            Some(t("2026-12-01T20:00:00Z").as_second() as f64)
        );
        let st = |status: &str| {
            value(
                &text,
                &format!(
                    r#"hokan_job_last_status{{job="mail\"box",site="tokyo",status="{status}"}}"#
                ),
            )
        };
        assert_eq!((st("failed"), st("completed")), (Some(1.0), Some(0.0)));
        let runs = |outcome: &str| {
            value(
                &text,
                &format!(
                    r#"hokan_job_runs_total{{job="mail\"box",outcome="{outcome}",site="tokyo"}}"#
                ),
            )
        };
        assert_eq!(
            (runs("completed"), runs("failed"), runs("attention")),
            (Some(3.0), Some(1.0), Some(0.0))
        );
        // A job that never succeeded reads as succeeding at the epoch, so "too old" alerts fire.
        let o = r#"{job="groupmax",site="osaka"}"#;
        assert_eq!(
            value(
                &text,
                &format!("hokan_job_last_success_timestamp_seconds{o}")
            ),
            Some(0.0)
        );
        assert_eq!(value(&text, &format!("hokan_job_last_set_bytes{o}")), None);
        assert_eq!(value(&text, "hokan_daemon_runs_running"), Some(1.0));
        assert_eq!(value(&text, "hokan_daemon_policy_errors"), Some(1.0));
        assert_eq!(value(&text, "hokan_notifications_pending"), Some(2.0));
        assert_eq!(value(&text, "hokan_notifications_given_up"), Some(0.0));
        assert!(
            text.contains("# TYPE hokan_job_runs_total counter"),
            "{text}"
        );
        assert!(text.contains("# HELP hokan_job_last_status "), "{text}");
    }
}
