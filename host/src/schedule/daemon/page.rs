//! The status page (`/` and `/runs/ID` of `hokan daemon --http`): every site and job with its
//! last result, next slot and newest good set, a 30-day timeline per job drawn as SVG on the
//! server (one mark per slot, coloured by how it ended), and one run's steps as its journal has
//! them. Plain HTML from templates with auto-escaping: it works without JavaScript, and a
//! summary or a path with `<` in it is shown, never run.

use crate::execute::journal::Record;
use crate::schedule::history::{SlotRow, SlotStatus};
use jiff::{SignedDuration, Timestamp};
use minijinja::{Environment, context};
use serde::Serialize;

/// How wide a timeline is, in pixels: 30 days.
const WIDTH: f64 = 360.0;
const DAYS: i64 = 30;

/// One scheduled job, as the overview shows it.
#[derive(Debug, Clone)]
pub struct JobView {
    /// The site.
    pub site: String,
    /// The site's time zone.
    pub timezone: String,
    /// The job.
    pub job: String,
    /// Its scheduled operation.
    pub op: String,
    /// Its last run that ended.
    pub last: Option<SlotRow>,
    /// Its next slot.
    pub next: Option<Timestamp>,
    /// Its newest good set and when it was completed.
    pub newest_set: Option<(String, Timestamp)>,
    /// Its slots of the last 30 days, oldest first.
    pub slots: Vec<SlotRow>,
}

/// The daemon, as the overview's head shows it.
#[derive(Debug, Clone)]
pub struct Head {
    /// The daemon's process.
    pub pid: u32,
    /// Now, by its clock.
    pub now: Timestamp,
    /// Its policy directory.
    pub policies: String,
    /// Policy files that do not load.
    pub policy_errors: Vec<String>,
    /// Recovery at start-up needed attention: its log.
    pub recovery_attention: Option<String>,
}

#[derive(Serialize)]
struct Mark {
    x: String,
    status: &'static str,
    color: &'static str,
    title: String,
    /// The history row of its run, for its link (a skipped slot had none).
    run: Option<i64>,
}

#[derive(Serialize)]
struct JobOut {
    site: String,
    job: String,
    op: String,
    last: Option<SlotRow>,
    last_status: &'static str,
    last_at: Option<String>,
    next: Option<String>,
    newest_set: Option<String>,
    newest_set_age: Option<String>,
    marks: Vec<Mark>,
}

#[derive(Serialize)]
struct SiteOut {
    name: String,
    timezone: String,
    jobs: Vec<JobOut>,
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("overview.html", include_str!("templates/overview.html")),
        ("run.html", include_str!("templates/run.html")),
    ] {
        env.add_template(name, text)
            .expect("the status page's templates parse (a unit test renders each)");
    }
    env
}

/// The colour of a slot's mark.
fn colour(s: SlotStatus) -> &'static str {
    match s {
        SlotStatus::Completed => "#2e7d32",
        SlotStatus::Failed | SlotStatus::Refused | SlotStatus::BadInput => "#c62828",
        SlotStatus::Attention => "#ef6c00",
        SlotStatus::Skipped => "#9e9e9e",
        SlotStatus::Interrupted => "#6a1b9a",
        SlotStatus::Running => "#1565c0",
    }
}

/// A duration as an operator reads it: `3 d 4 h`, `2 h 5 min`, `40 s`.
fn age(d: SignedDuration) -> String {
    if d.is_negative() {
        return "made after the daemon's now: check the clocks".into();
    }
    let s = d.as_secs();
    let (days, hours, mins) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

fn local(t: Timestamp, tz: &str) -> String {
    match jiff::tz::db().get(tz) {
        Ok(z) => t.to_zoned(z).strftime("%Y-%m-%d %H:%M %Z").to_string(),
        Err(_) => t.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// The overview page.
pub fn overview(head: &Head, jobs: &[JobView]) -> Result<String, minijinja::Error> {
    let from = head.now - SignedDuration::from_hours(24 * DAYS);
    let span = (24 * DAYS * 3600) as f64;
    let mut sites: Vec<SiteOut> = Vec::new();
    for j in jobs {
        let marks = j
            .slots
            .iter()
            .filter(|r| r.slot >= from && r.slot <= head.now)
            .map(|r| {
                let x = r.slot.duration_since(from).as_secs_f64() / span * (WIDTH - 4.0);
                Mark {
                    x: format!("{x:.1}"),
                    status: r.status.as_str(),
                    color: colour(r.status),
                    title: format!(
                        "{}: {}{}",
                        local(r.slot, &j.timezone),
                        r.status.as_str(),
                        r.summary
                            .as_deref()
                            .map(|s| format!(" ({s})"))
                            .unwrap_or_default()
                    ),
                    run: r.started.map(|_| r.id),
                }
            })
            .collect();
        let out = JobOut {
            site: j.site.clone(),
            job: j.job.clone(),
            op: j.op.clone(),
            last_status: j.last.as_ref().map_or("none", |r| r.status.as_str()),
            last_at: j
                .last
                .as_ref()
                .and_then(|r| r.finished)
                .map(|t| local(t, &j.timezone)),
            last: j.last.clone(),
            next: j.next.map(|t| local(t, &j.timezone)),
            newest_set: j.newest_set.as_ref().map(|(id, _)| id.clone()),
            newest_set_age: j.newest_set.as_ref().map(|(_, at)| {
                let a = age(head.now.duration_since(*at));
                if a.starts_with("made") {
                    a
                } else {
                    format!("{a} old")
                }
            }),
            marks,
        };
        match sites.iter_mut().find(|s| s.name == j.site) {
            Some(s) => s.jobs.push(out),
            None => sites.push(SiteOut {
                name: j.site.clone(),
                timezone: j.timezone.clone(),
                jobs: vec![out],
            }),
        }
    }
    env().get_template("overview.html")?.render(context! {
        pid => head.pid,
        now => head.now.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        policies => head.policies,
        policy_errors => head.policy_errors,
        recovery_attention => head.recovery_attention,
        jobs => jobs.len(),
        sites => sites,
        width => WIDTH,
    })
}

#[derive(Serialize)]
struct StepOut {
    step: String,
    phase: String,
    status: String,
    class: &'static str,
    attempts: u32,
    duration: String,
    summary: String,
}

fn name_of<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One run's page: its slot, and each step as its journal recorded it.
pub fn run(row: &SlotRow, records: &[Record]) -> Result<String, minijinja::Error> {
    let steps: Vec<StepOut> = records
        .iter()
        .filter_map(|r| match r {
            Record::StepEnd {
                step,
                phase,
                status,
                attempts,
                duration_ms,
                summary,
                ..
            } => Some(StepOut {
                step: step.clone(),
                phase: name_of(phase),
                status: name_of(status),
                class: if status.failed() {
                    "failed"
                } else if *status == crate::drive::StepStatus::Skipped {
                    "skipped"
                } else {
                    "completed"
                },
                attempts: *attempts,
                duration: crate::simulate::run::dur(*duration_ms),
                summary: summary.clone(),
            }),
            _ => None,
        })
        .collect();
    env().get_template("run.html")?.render(context! {
        row => row,
        status => row.status.as_str(),
        steps => steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn row(id: i64, slot: &str, status: SlotStatus, summary: &str) -> SlotRow {
        SlotRow {
            id,
            site: "tokyo-hq".into(),
            job: "mailwise".into(),
            op: "backup".into(),
            slot: t(slot),
            status,
            attempts: 1,
            started: (status != SlotStatus::Skipped).then(|| t(slot)),
            finished: Some(t(slot) + SignedDuration::from_mins(20)),
            pid: None,
            summary: Some(summary.into()),
            log: None,
            set: None,
            set_bytes: None,
            journal: None,
        }
    }

    #[test]
    fn the_overview_shows_each_job_its_last_result_and_a_mark_per_slot() {
        let head = Head {
            pid: 42,
            now: t("2026-12-02T03:00:00Z"),
            policies: "/etc/hokan".into(),
            policy_errors: vec!["/etc/hokan/x.toml:3: <bad>".into()],
            recovery_attention: None,
        };
        let failed = row(
            3,
            "2026-12-01T17:10:00Z",
            SlotStatus::Failed,
            "`copy-data` failed: <disk full>",
        );
        let jobs = [
            JobView {
                site: "tokyo-hq".into(),
                timezone: "Asia/Tokyo".into(),
                job: "mailwise".into(),
                op: "backup".into(),
                last: Some(failed.clone()),
                next: Some(t("2026-12-02T17:10:00Z")),
                newest_set: Some(("20261130T171000Z".into(), t("2026-11-30T17:30:00Z"))),
                slots: vec![
                    // Older than 30 days: not drawn.
                    row(
                        1,
                        "2026-10-01T17:10:00Z",
                        SlotStatus::Completed,
                        "completed",
                    ),
                    row(2, "2026-11-30T17:10:00Z", SlotStatus::Skipped, "held back"),
                    failed,
                ],
            },
            JobView {
                site: "osaka".into(),
                timezone: "Asia/Tokyo".into(),
                job: "gm".into(),
                op: "backup".into(),
                last: None,
                next: None,
                newest_set: None,
                slots: vec![],
            },
        ];
        let html = overview(&head, &jobs).unwrap();
        assert!(
            html.contains(r#"data-site="tokyo-hq" data-job="mailwise" data-last="failed""#),
            "{html}"
        );
        assert!(html.contains(r#"data-job="gm" data-last="none""#), "{html}");
        assert_eq!(html.matches("<rect class=\"mark").count(), 2, "{html}");
        // A skipped slot had no run to show; the failed one links to its steps.
        assert!(
            html.contains(r#"<a href="/runs/3"><rect class="mark failed""#),
            "{html}"
        );
        assert!(!html.contains("/runs/2"), "{html}");
        assert!(
            html.contains("2026-12-03 02:10 JST"),
            "the next slot in the site's time: {html}"
        );
        assert!(html.contains("1 d 9 h old"), "{html}");
        // Escaped, never markup.
        assert!(
            html.contains("&lt;disk full&gt;") && !html.contains("<disk full>"),
            "{html}"
        );
        assert!(html.contains("&lt;bad&gt;"), "{html}");
    }

    #[test]
    fn a_run_page_lists_its_steps_from_the_journal() {
        use crate::drive::{Phase, StepStatus};
        let r = row(
            7,
            "2026-12-01T17:10:00Z",
            SlotStatus::Failed,
            "`copy-data` failed",
        );
        let end = |step: &str, status: StepStatus| Record::StepEnd {
            step: step.into(),
            phase: Phase::Body,
            status,
            attempts: 1,
            duration_ms: 1500,
            summary: format!("{step} <done>"),
            output: None,
        };
        let html = run(
            &r,
            &[
                end("maintenance-on", StepStatus::Ok),
                end("copy-data", StepStatus::Failed),
            ],
        )
        .unwrap();
        assert!(
            html.contains(r#"data-step="maintenance-on" data-status="ok""#),
            "{html}"
        );
        assert!(
            html.contains(r#"data-step="copy-data" data-status="failed""#),
            "{html}"
        );
        assert!(html.contains("copy-data &lt;done&gt;"), "{html}");
        assert!(html.contains(r#"id="run-status">failed"#), "{html}");
        let none = run(&r, &[]).unwrap();
        assert!(none.contains("has no journal"), "{none}");
    }
}
