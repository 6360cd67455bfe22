//! `hokan report POLICY --month 2026-11`: one customer site's month of backups as a
//! self-contained HTML page (styles and charts inline, nothing fetched), made from the daemon's
//! run history alone: each job's success rate, skipped and missed slots, run times and set
//! sizes over the month (SVG drawn here), the failures with their reasons, and the last
//! restore test of its sets. Months are the site's: a Tokyo run at 02:10 on 1 December is
//! December's, though it was 30 November in UTC.

use crate::schedule::history::{SlotRow, SlotStatus};
use crate::sets::tested::Tested;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use minijinja::{Environment, context};
use serde::Serialize;

/// A month of the site's calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    year: i16,
    month: i8,
}

impl Month {
    /// `YYYY-MM`, or why not.
    pub fn parse(s: &str) -> Result<Month, String> {
        let bad = || format!("`{s}` is not a month; write it as YYYY-MM, e.g. 2026-11");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        let (year, month) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        Date::new(year, month, 1).map_err(|_| bad())?;
        Ok(Month { year, month })
    }

    fn first(self) -> Date {
        Date::new(self.year, self.month, 1).expect("checked when parsed")
    }

    /// Its first and last instants in `tz`: `[from, until)`.
    pub fn span(self, tz: &TimeZone) -> Result<(Timestamp, Timestamp), jiff::Error> {
        let first = self.first();
        let next = first.checked_add(1.month())?;
        Ok((
            first.to_zoned(tz.clone())?.timestamp(),
            next.to_zoned(tz.clone())?.timestamp(),
        ))
    }

    fn days(self) -> i8 {
        self.first().days_in_month()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// One job's month.
#[derive(Debug, Clone)]
pub struct JobMonth {
    /// The job.
    pub job: String,
    /// Its scheduled operation.
    pub op: String,
    /// Its slots in the month, oldest first.
    pub rows: Vec<SlotRow>,
    /// The newest restore test of its sets, if any.
    pub restore_test: Option<Tested>,
}

#[derive(Serialize)]
struct Bar {
    x: String,
    y: String,
    w: String,
    h: String,
    color: &'static str,
    title: String,
}

#[derive(Serialize)]
struct Tick {
    x: String,
    label: String,
}

#[derive(Serialize)]
struct Chart {
    label: String,
    max_label: String,
    bars: Vec<Bar>,
    ticks: Vec<Tick>,
}

#[derive(Serialize)]
struct Problem {
    slot: String,
    status: &'static str,
    class: &'static str,
    summary: String,
}

#[derive(Serialize)]
struct JobOut {
    job: String,
    op: String,
    slots: usize,
    completed: usize,
    failed: usize,
    attention: usize,
    skipped: usize,
    rate: String,
    rate_text: String,
    durations: Chart,
    sizes: Chart,
    has_sets: bool,
    problems: Vec<Problem>,
    restore_test: Option<Tested>,
}

const LEFT: f64 = 48.0;
const RIGHT: f64 = 610.0;
const BOTTOM: f64 = 110.0;
const TOP: f64 = 14.0;

/// A bar chart of `values` (day of the month from 0, value, title) on the month's days.
fn chart(
    label: String,
    days: i8,
    values: &[(f64, f64, String, &'static str)],
    unit: fn(f64) -> String,
) -> Chart {
    let max = values.iter().map(|v| v.1).fold(0.0, f64::max);
    let day_w = (RIGHT - LEFT) / f64::from(days);
    let bars = values
        .iter()
        .map(|(day, v, title, color)| {
            let h = if max > 0.0 {
                v / max * (BOTTOM - TOP)
            } else {
                0.0
            };
            Bar {
                x: format!("{:.1}", LEFT + day * day_w + 1.0),
                y: format!("{:.1}", BOTTOM - h),
                w: format!("{:.1}", (day_w - 2.0).max(1.0)),
                h: format!("{h:.1}"),
                color,
                title: title.clone(),
            }
        })
        .collect();
    let ticks = (1..=days)
        .filter(|d| *d == 1 || d % 5 == 0)
        .map(|d| Tick {
            x: format!("{:.1}", LEFT + (f64::from(d) - 0.5) * day_w),
            label: d.to_string(),
        })
        .collect();
    Chart {
        label,
        max_label: unit(max),
        bars,
        ticks,
    }
}

fn colour(s: SlotStatus) -> &'static str {
    match s {
        SlotStatus::Completed => "#2e7d32",
        SlotStatus::Attention => "#ef6c00",
        SlotStatus::Skipped => "#9e9e9e",
        SlotStatus::Interrupted => "#6a1b9a",
        SlotStatus::Running => "#1565c0",
        SlotStatus::Failed | SlotStatus::Refused | SlotStatus::BadInput => "#c62828",
    }
}

/// The page for `site` (in `tz`, named `tz_name`) in `month`.
pub fn render(
    site: &str,
    tz: &TimeZone,
    tz_name: &str,
    month: Month,
    jobs: &[JobMonth],
    generated: Timestamp,
) -> Result<String, minijinja::Error> {
    let local = |t: Timestamp| t.to_zoned(tz.clone());
    let out: Vec<JobOut> = jobs
        .iter()
        .map(|j| {
            let count = |f: fn(SlotStatus) -> bool| j.rows.iter().filter(|r| f(r.status)).count();
            let completed = count(|s| s == SlotStatus::Completed);
            let failed = count(|s| {
                matches!(
                    s,
                    SlotStatus::Failed | SlotStatus::Refused | SlotStatus::BadInput
                )
            });
            let slots = j.rows.len();
            let rate = if slots == 0 {
                None
            } else {
                Some(completed as f64 * 100.0 / slots as f64)
            };
            let day = |t: Timestamp| f64::from(local(t).day() - 1);
            let durations: Vec<(f64, f64, String, &'static str)> = j
                .rows
                .iter()
                .filter_map(|r| {
                    let (s, f) = (r.started?, r.finished?);
                    let mins = f.duration_since(s).as_secs_f64() / 60.0;
                    Some((
                        day(r.slot),
                        mins,
                        format!(
                            "{}: {} in {mins:.1} min",
                            local(r.slot).strftime("%d %H:%M"),
                            r.status.as_str()
                        ),
                        colour(r.status),
                    ))
                })
                .collect();
            let sizes: Vec<(f64, f64, String, &'static str)> = j
                .rows
                .iter()
                .filter_map(|r| {
                    let b = r.set_bytes?;
                    Some((
                        day(r.slot),
                        b as f64,
                        format!(
                            "{}: set {} of {}",
                            local(r.slot).strftime("%d %H:%M"),
                            r.set.as_deref().unwrap_or(""),
                            bytesize::ByteSize(b)
                        ),
                        "#1565c0",
                    ))
                })
                .collect();
            JobOut {
                job: j.job.clone(),
                op: j.op.clone(),
                slots,
                completed,
                failed,
                attention: count(|s| s == SlotStatus::Attention),
                skipped: count(|s| s == SlotStatus::Skipped),
                rate: rate.map_or(String::new(), |r| format!("{r:.1}")),
                rate_text: rate.map_or("no slots".into(), |r| format!("{r:.1} %")),
                durations: chart(
                    format!("{}: run time per slot", j.job),
                    month.days(),
                    &durations,
                    |m| format!("{m:.0} min"),
                ),
                has_sets: !sizes.is_empty(),
                sizes: chart(
                    format!("{}: backup set size per run", j.job),
                    month.days(),
                    &sizes,
                    |b| bytesize::ByteSize(b as u64).to_string(),
                ),
                problems: j
                    .rows
                    .iter()
                    .filter(|r| r.status != SlotStatus::Completed)
                    .map(|r| Problem {
                        slot: local(r.slot).strftime("%Y-%m-%d %H:%M").to_string(),
                        status: r.status.as_str(),
                        class: if r.status == SlotStatus::Skipped {
                            "warn"
                        } else {
                            "bad"
                        },
                        summary: r.summary.clone().unwrap_or_default(),
                    })
                    .collect(),
                restore_test: j.restore_test.clone(),
            }
        })
        .collect();
    let mut env = Environment::new();
    env.add_template("report.html", include_str!("templates/report.html"))?;
    env.get_template("report.html")?.render(context! {
        site => site,
        month => month.to_string(),
        timezone => tz_name,
        version => env!("CARGO_PKG_VERSION"),
        generated => generated.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        jobs => out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn row(
        slot: &str,
        status: SlotStatus,
        mins: i64,
        bytes: Option<u64>,
        summary: &str,
    ) -> SlotRow {
        let slot: Timestamp = slot.parse().unwrap();
        SlotRow {
            id: 1,
            site: "tokyo-hq".into(),
            job: "mailwise".into(),
            op: "backup".into(),
            slot,
            status,
            attempts: 1,
            started: (status != SlotStatus::Skipped).then_some(slot),
            finished: Some(slot + SignedDuration::from_mins(mins)),
            pid: None,
            summary: Some(summary.into()),
            log: None,
            set: bytes.map(|_| "20261101T171000Z".into()),
            set_bytes: bytes,
            journal: None,
        }
    }

    #[test]
    fn months_are_the_sites_and_refuse_nonsense() {
        let tokyo = jiff::tz::db().get("Asia/Tokyo").unwrap();
        let (from, until) = Month::parse("2026-11").unwrap().span(&tokyo).unwrap();
        assert_eq!(from, "2026-10-31T15:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(until, "2026-11-30T15:00:00Z".parse::<Timestamp>().unwrap());
        // December runs into the next year.
        let (_, until) = Month::parse("2026-12")
            .unwrap()
            .span(&TimeZone::UTC)
            .unwrap();
        assert_eq!(until, "2027-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
        assert_eq!(Month::parse("2028-02").unwrap().days(), 29);
        for bad in ["2026-13", "2026", "November", "2026-1x"] {
            assert!(Month::parse(bad).unwrap_err().contains("YYYY-MM"), "{bad}");
        }
    }

    #[test]
    fn a_month_reads_as_its_rates_charts_and_failures() {
        let tokyo = jiff::tz::db().get("Asia/Tokyo").unwrap();
        let jobs = [JobMonth {
            job: "mailwise".into(),
            op: "backup".into(),
            rows: vec![
                row(
                    "2026-11-01T17:10:00Z",
                    SlotStatus::Completed,
                    20,
                    Some(5_000_000),
                    "completed",
                ),
                row(
                    "2026-11-02T17:10:00Z",
                    SlotStatus::Failed,
                    3,
                    None,
                    "`copy-data` failed: <disk full>",
                ),
                row(
                    "2026-11-03T17:10:00Z",
                    SlotStatus::Skipped,
                    0,
                    None,
                    "missed: the daemon was not running",
                ),
                row(
                    "2026-11-04T17:10:00Z",
                    SlotStatus::Completed,
                    40,
                    Some(6_000_000),
                    "completed",
                ),
            ],
            restore_test: Some(Tested {
                set: "20261104T171000Z".into(),
                tested_at: "2026-11-07T03:00:00Z".into(),
                ok: true,
                problem: None,
                run: "r".into(),
            }),
        }];
        let html = render(
            "tokyo-hq",
            &tokyo,
            "Asia/Tokyo",
            Month::parse("2026-11").unwrap(),
            &jobs,
            "2026-12-01T00:00:00Z".parse().unwrap(),
        )
        .unwrap();
        assert!(
            html.contains(r#"data-job="mailwise" data-rate="50.0" data-slots="4" data-failed="1" data-skipped="1""#),
            "{html}"
        );
        // Three runs have a time, two wrote a set; the longest run is the chart's top.
        let durations = html
            .split("run time per slot\"")
            .nth(1)
            .unwrap()
            .split("</svg>")
            .next()
            .unwrap();
        assert_eq!(
            durations.matches("<rect class=\"bar\"").count(),
            3,
            "{durations}"
        );
        assert!(durations.contains("40 min"), "{durations}");
        let sizes = html
            .split("backup set size per run\"")
            .nth(1)
            .unwrap()
            .split("</svg>")
            .next()
            .unwrap();
        assert_eq!(sizes.matches("<rect class=\"bar\"").count(), 2, "{sizes}");
        // The failure and the missed slot, in the site's time, escaped.
        assert!(
            html.contains("2026-11-03 02:10") && html.contains("&lt;disk full&gt;"),
            "{html}"
        );
        assert!(
            html.contains("missed: the daemon was not running"),
            "{html}"
        );
        assert!(
            html.contains("passed</span> 2026-11-07T03:00:00Z"),
            "{html}"
        );
        // Self-contained: nothing to fetch.
        assert!(!html.contains("src=") && !html.contains("http"), "{html}");
    }
}
