//! The scheduler: when each job's runs fall, and when they may start.
//!
//! - [`calendar`] expands calendars and maintenance windows into instants, in the site's time
//!   zone (daylight-saving changes included).
//! - [`rules`] decides when one slot can start, given what keeps its product instance busy.
//! - [`Scheduler`] holds the scheduled jobs of any number of policies, with the plugins' conflict
//!   rules, and [`Scheduler::preview`] walks a period with estimated run lengths
//!   (`hokan schedule`).
//! - [`daemon`] runs the slots for real as they come due (`hokan daemon`), with [`history`].
//!
//! A product instance is a set of servers: two jobs of one site that share a server never run
//! at the same time. A job's maintenance window is also its instance's: mailwise does not start
//! its database check inside any window of its instance.

pub mod calendar;
pub mod daemon;
pub mod history;
pub mod report;
pub mod rules;

use crate::describe::Description;
use crate::planner::PluginDir;
use crate::policy::Finding;
use crate::policy::{Job, Policy, Window};
use calendar::{Calendar, window_intervals};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use rules::{Busy, Decision, Need, earliest, local_text};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A job the scheduler runs: where, what, when, and under which rules.
#[derive(Debug, Clone)]
pub struct ScheduledJob {
    /// The policy file.
    pub policy: PathBuf,
    /// The site.
    pub site: String,
    /// The job.
    pub job: String,
    /// The operation its schedule runs.
    pub op: String,
    /// The site's time zone.
    pub tz: TimeZone,
    /// Its calendar, as written.
    pub calendar_text: String,
    /// Its calendar.
    pub calendar: Calendar,
    /// Its estimated run length.
    pub estimate: SignedDuration,
    /// How late a run may start.
    pub max_delay: SignedDuration,
    /// The window its runs must fit in, narrowed to the product's steps.
    pub window: Option<Window>,
    /// Its servers (the product instance).
    pub servers: Vec<String>,
    /// The product's own work that its runs must not overlap.
    pub activities: Vec<ScheduledActivity>,
    /// The directory of the backup sets it writes or reads, if it keeps any: where its restore
    /// tests are recorded.
    pub sets_dir: Option<PathBuf>,
    /// Its site's own notification channels.
    pub channels: Vec<crate::notify::Channel>,
    /// The dead-man limit: how old its newest good set may grow.
    pub stale_after: Option<SignedDuration>,
}

/// A product's own work on a calendar, which some operations must not overlap.
#[derive(Debug, Clone)]
pub struct ScheduledActivity {
    /// The activity, as the plugin names it (`db-check`).
    pub name: String,
    /// The plugin's name, for messages (`mailwise`).
    pub plugin: String,
    /// Its calendar.
    pub calendar: Calendar,
    /// How long it runs.
    pub duration: SignedDuration,
    /// The product does not start it while a maintenance window is set (by a run of the
    /// instance in progress), nor on a window's end.
    pub skipped_in_window: bool,
    /// It conflicts with the job's scheduled operation.
    pub conflicts: bool,
}

impl ScheduledJob {
    /// The job as the scheduler sees it (`None` when it has no schedule), with what is wrong or
    /// doubtful in its scheduling fields given its plugin. Any error finding means `None`.
    pub fn of(policy: &Policy, job: &Job, d: &Description) -> (Option<ScheduledJob>, Vec<Finding>) {
        let mut findings = Vec::new();
        let mut say = |error: bool, field: &str, message: String| {
            findings.push(Finding {
                error,
                message: policy.job_error(job, field, message).to_string(),
            })
        };
        let Some(schedule) = &job.schedule else {
            for (field, set) in [
                ("window", job.window.is_some()),
                ("activities", !job.activities.is_empty()),
                ("stale_after", job.stale_after.is_some()),
            ] {
                if set {
                    say(
                        false,
                        field,
                        "the job has no `schedule`, so this is not used".into(),
                    );
                }
            }
            return (None, findings);
        };
        if d.operation(&job.schedule_op).is_none() {
            say(
                true,
                "schedule_op",
                format!(
                    "`{}` is not an operation of {} (it has: {}); set `schedule_op` to the operation the schedule runs",
                    job.schedule_op,
                    d.name,
                    d.operations
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        } else if !job.operations.is_empty() && !job.operations.contains(&job.schedule_op) {
            say(
                true,
                "schedule_op",
                format!(
                    "the schedule runs `{}`, which the job's `operations` do not allow",
                    job.schedule_op
                ),
            );
        }
        let rules = d.window_rules;
        let window = match &job.window {
            None => None,
            Some(w) if rules.daily && w.days.is_some() => {
                say(
                    true,
                    "window",
                    format!(
                        "{} keeps a maintenance window every day until it is released; remove the `on` days",
                        d.name
                    ),
                );
                None
            }
            Some(w) => match w.narrowed(rules.step_minutes) {
                None => {
                    say(
                        true,
                        "window",
                        format!(
                            "{} sets windows in {}-minute steps, and nothing of {w} is left on them",
                            d.name, rules.step_minutes
                        ),
                    );
                    None
                }
                Some(n) => {
                    if n != *w {
                        say(
                            false,
                            "window",
                            format!(
                                "{} sets windows in {}-minute steps: runs are fitted in {n}",
                                d.name, rules.step_minutes
                            ),
                        );
                    }
                    Some(n)
                }
            },
        };
        if let Some(w) = &window
            && job.estimate > std::time::Duration::from_secs(u64::from(w.minutes()) * 60)
        {
            say(
                true,
                "estimate",
                format!(
                    "the estimate of {} is longer than the window {w}: no run could ever start",
                    humantime::format_duration(job.estimate)
                ),
            );
        }
        let mut activities = Vec::new();
        for (name, a) in &job.activities {
            let Some(c) = d.conflicts.iter().find(|c| &c.activity == name) else {
                say(
                    true,
                    &format!("activities.{name}"),
                    format!(
                        "{} declares no activity `{name}`; it declares: {}",
                        d.name,
                        if d.conflicts.is_empty() {
                            "none".to_string()
                        } else {
                            d.conflicts
                                .iter()
                                .map(|c| c.activity.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                );
                continue;
            };
            let duration = match a.duration {
                Some(d) => d,
                None if c.typical_minutes > 0 => {
                    std::time::Duration::from_secs(u64::from(c.typical_minutes) * 60)
                }
                None => {
                    say(
                        true,
                        &format!("activities.{name}"),
                        format!(
                            "say how long it runs: `{name} = {{ schedule = \"{}\", duration = \"2h\" }}`",
                            a.schedule
                        ),
                    );
                    continue;
                }
            };
            activities.push(ScheduledActivity {
                name: name.clone(),
                plugin: d.name.clone(),
                calendar: Calendar::of(&a.schedule),
                duration: SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX),
                skipped_in_window: c.skipped_in_window,
                conflicts: c.operations.contains(&job.schedule_op),
            });
        }
        if findings.iter().any(|f| f.error) {
            return (None, findings);
        }
        let tz = jiff::tz::db()
            .get(&policy.timezone)
            .expect("the policy checked its time zone");
        let sd =
            |d: std::time::Duration| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
        (
            Some(ScheduledJob {
                policy: policy.file.clone(),
                site: policy.site.clone(),
                job: job.name.clone(),
                op: job.schedule_op.clone(),
                tz,
                calendar_text: schedule.to_string(),
                calendar: Calendar::of(schedule),
                estimate: sd(job.estimate),
                max_delay: sd(job.max_start_delay),
                window,
                servers: policy.job_servers(job),
                activities,
                sets_dir: crate::planner::sets_dir(policy, job),
                channels: policy.notify.clone(),
                stale_after: job.stale_after.map(sd),
            }),
            findings,
        )
    }

    fn label(&self) -> String {
        format!("job {} ({})", self.job, self.op)
    }
}

/// The scheduled jobs of some policies, grouped into product instances.
#[derive(Debug, Clone, Default)]
pub struct Scheduler {
    jobs: Vec<ScheduledJob>,
    /// Each job's instance group.
    group: Vec<usize>,
}

/// One slot of a job and what happens to it.
#[derive(Debug, Clone, Serialize)]
pub struct SlotEntry {
    /// The site.
    pub site: String,
    /// The job.
    pub job: String,
    /// The operation.
    pub op: String,
    /// When the calendar says.
    pub slot: Timestamp,
    /// The slot in the site's time.
    pub slot_local: String,
    /// What happens.
    #[serde(flatten)]
    pub outcome: SlotOutcome,
}

/// What happens to a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum SlotOutcome {
    /// It runs.
    Runs {
        /// Its start.
        start: Timestamp,
        /// Its estimated end.
        estimated_end: Timestamp,
        /// What it waited for.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        waited_for: Vec<String>,
    },
    /// It is held back.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// One occurrence of a product's own work.
#[derive(Debug, Clone, Serialize)]
pub struct ActivityEntry {
    /// The site.
    pub site: String,
    /// The job it was declared under.
    pub job: String,
    /// The activity.
    pub activity: String,
    /// The plugin that declares it (the product's name).
    pub plugin: String,
    /// Its start.
    pub start: Timestamp,
    /// Its start in the site's time.
    pub start_local: String,
    /// Its expected end.
    pub end: Timestamp,
    /// Why the product will not run it, if it will not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_run: Option<String>,
}

/// What a period holds.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// From (inclusive).
    pub from: Timestamp,
    /// Until (exclusive).
    pub until: Timestamp,
    /// Every slot in the period, in order.
    pub slots: Vec<SlotEntry>,
    /// The products' own work in the period, in order.
    pub activities: Vec<ActivityEntry>,
}

/// A day: activities that start up to a day before a period can still overlap it.
const DAY: SignedDuration = SignedDuration::from_hours(24);

impl Scheduler {
    /// Groups the jobs into product instances: jobs of one site that share a server.
    pub fn new(jobs: Vec<ScheduledJob>) -> Scheduler {
        let mut parent: Vec<usize> = (0..jobs.len()).collect();
        fn find(p: &mut [usize], mut i: usize) -> usize {
            while p[i] != i {
                p[i] = p[p[i]];
                i = p[i];
            }
            i
        }
        let mut owner: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (i, j) in jobs.iter().enumerate() {
            for s in &j.servers {
                match owner.get(&(j.site.as_str(), s.as_str())) {
                    Some(&k) => {
                        let (a, b) = (find(&mut parent, i), find(&mut parent, k));
                        parent[a] = b;
                    }
                    None => {
                        owner.insert((&j.site, s), i);
                    }
                }
            }
        }
        let group: Vec<usize> = (0..jobs.len()).map(|i| find(&mut parent, i)).collect();
        Scheduler { jobs, group }
    }

    /// The jobs.
    pub fn jobs(&self) -> &[ScheduledJob] {
        &self.jobs
    }

    /// Whether jobs `a` and `b` run on one product instance.
    pub fn same_instance(&self, a: usize, b: usize) -> bool {
        self.group[a] == self.group[b]
    }

    /// The slots of job `i` in `[from, until)`.
    pub fn slots(&self, i: usize, from: Timestamp, until: Timestamp) -> Vec<Timestamp> {
        let j = &self.jobs[i];
        j.calendar.instants(&j.tz, from, until)
    }

    /// The longest gap between job `i`'s slots, from the last one before `now` to the eighth
    /// after it: how long a job may go between successes without anything being wrong (a
    /// weekday job's is three days, from Friday to Monday; a daily job's is a day, or a day and
    /// an hour across a clock change). `/metrics` serves it so that an alert rule needs no
    /// hard-coded "25 hours". `None` when fewer than two slots fall within a year or so.
    pub fn expected_interval(&self, i: usize, now: Timestamp) -> Option<SignedDuration> {
        let day = SignedDuration::from_hours(24);
        let year = SignedDuration::from_hours(24 * 400);
        let after = now + SignedDuration::from_secs(1);
        // Looked for in widening spans, so that a minutely calendar is not expanded for a year.
        let mut before = None;
        let mut back = day;
        while before.is_none() && back <= year {
            before = self.slots(i, now - back, after).last().copied();
            back *= 8;
        }
        let mut next = Vec::new();
        let mut ahead = day;
        while next.len() < 8 && ahead <= year * 2 {
            next = self.slots(i, after, after + ahead);
            ahead *= 8;
        }
        next.truncate(8);
        let slots: Vec<Timestamp> = before.into_iter().chain(next).collect();
        slots.windows(2).map(|w| w[1].duration_since(w[0])).max()
    }

    /// Job `i`'s windows in `[from, until)`, if it has one.
    pub fn windows(
        &self,
        i: usize,
        from: Timestamp,
        until: Timestamp,
    ) -> Option<Vec<(Timestamp, Timestamp)>> {
        let j = &self.jobs[i];
        j.window
            .as_ref()
            .map(|w| window_intervals(w, &j.tz, from, until))
    }

    /// Job `i`'s activities that start in `[from - 1 day, until)`: whether each runs, and the
    /// busy times of those that conflict with the job's operation. `running`: the runs in
    /// progress, by job.
    ///
    /// An activity the product skips inside a maintenance window (mailwise's check: "開始時刻
    /// が、あらかじめ設定済みのメンテナンスモードの時間帯に重なっている、またはメンテナンスモード
    /// の終了時刻と一致している場合は、データベースの定期チェックは実施されません") is skipped only
    /// when a window is *set* at its start: hokan sets its window for a run and removes it at the
    /// run's end, so between runs none is, whatever the job's `window` says. Only a run of the
    /// instance in progress at the activity's start (or ending on it) holds one; a planned run
    /// does not yet, and the activity is then counted as running.
    fn activities(
        &self,
        i: usize,
        from: Timestamp,
        until: Timestamp,
        running: &[(usize, Busy)],
    ) -> (Vec<ActivityEntry>, Vec<Busy>) {
        let j = &self.jobs[i];
        if j.activities.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let (mut entries, mut busy) = (Vec::new(), Vec::new());
        for a in &j.activities {
            for start in a.calendar.instants(&j.tz, from - DAY, until) {
                let not_run = a
                    .skipped_in_window
                    .then(|| {
                        running.iter().find(|(k, b)| {
                            self.same_instance(i, *k) && b.from <= start && start <= b.until
                        })
                    })
                    .flatten()
                    .map(|(_, b)| {
                        format!(
                            "{} does not start it while a maintenance window is set: {} holds \
                             one from {} to {}",
                            a.plugin,
                            b.what,
                            local_text(b.from, &j.tz),
                            local_text(b.until, &j.tz)
                        )
                    });
                let end = start + a.duration;
                if not_run.is_none() && a.conflicts {
                    busy.push(Busy {
                        from: start,
                        until: end,
                        what: format!("{}'s {}", a.plugin, a.name),
                    });
                }
                if start >= from {
                    entries.push(ActivityEntry {
                        site: j.site.clone(),
                        job: j.job.clone(),
                        activity: a.name.clone(),
                        plugin: a.plugin.clone(),
                        start,
                        start_local: local_text(start, &j.tz),
                        end,
                        not_run,
                    });
                }
            }
        }
        (entries, busy)
    }

    /// When slot `slot` of job `i` may start, no earlier than `now`, given `running` (what
    /// already keeps instances busy, by job) and the job's conflicting activities.
    pub fn decide(
        &self,
        i: usize,
        slot: Timestamp,
        now: Timestamp,
        running: &[(usize, Busy)],
    ) -> Decision {
        let j = &self.jobs[i];
        let horizon = slot + j.max_delay + j.estimate + DAY;
        let (_, activity_busy) = self.activities(i, slot - DAY, horizon, running);
        let windows = self.windows(i, slot - DAY, horizon);
        self.decide_with(i, slot, now, running, &activity_busy, windows.as_deref())
    }

    fn decide_with(
        &self,
        i: usize,
        slot: Timestamp,
        now: Timestamp,
        running: &[(usize, Busy)],
        activity_busy: &[Busy],
        windows: Option<&[(Timestamp, Timestamp)]>,
    ) -> Decision {
        let j = &self.jobs[i];
        let busy: Vec<&Busy> = running
            .iter()
            .filter(|(k, _)| self.same_instance(i, *k))
            .map(|(_, b)| b)
            .chain(activity_busy)
            .collect();
        let window_text = j
            .window
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        earliest(
            &Need {
                slot,
                not_before: now,
                estimate: j.estimate,
                max_delay: j.max_delay,
                windows,
                window_text: &window_text,
                tz: &j.tz,
            },
            &busy,
        )
    }

    /// What `[from, until)` holds, with every run taking its estimate and nothing running at
    /// `from`.
    pub fn preview(&self, from: Timestamp, until: Timestamp) -> Preview {
        let mut slots: Vec<(Timestamp, usize)> = Vec::new();
        let mut activities = Vec::new();
        let mut activity_busy = Vec::with_capacity(self.jobs.len());
        let mut windows = Vec::with_capacity(self.jobs.len());
        for (i, j) in self.jobs.iter().enumerate() {
            slots.extend(self.slots(i, from, until).into_iter().map(|t| (t, i)));
            let (entries, busy) = self.activities(i, from, until + j.max_delay + j.estimate, &[]);
            activities.extend(entries.into_iter().filter(|e| e.start < until));
            activity_busy.push(busy);
            windows.push(self.windows(i, from - DAY, until + j.max_delay + j.estimate + DAY));
        }
        slots.sort_unstable_by(|a, b| {
            (a.0, &self.jobs[a.1].site, &self.jobs[a.1].job).cmp(&(
                b.0,
                &self.jobs[b.1].site,
                &self.jobs[b.1].job,
            ))
        });
        // Runs placed so far, by instance group.
        let mut placed: BTreeMap<usize, Vec<(usize, Busy)>> = BTreeMap::new();
        let mut out = Vec::with_capacity(slots.len());
        for (slot, i) in slots {
            let j = &self.jobs[i];
            let group = placed.entry(self.group[i]).or_default();
            let decision = self.decide_with(
                i,
                slot,
                slot,
                group,
                &activity_busy[i],
                windows[i].as_deref(),
            );
            let outcome = match decision {
                Decision::Start { at, waited } => {
                    let end = at + j.estimate;
                    group.push((
                        i,
                        Busy {
                            from: at,
                            until: end,
                            what: j.label(),
                        },
                    ));
                    SlotOutcome::Runs {
                        start: at,
                        estimated_end: end,
                        waited_for: waited,
                    }
                }
                Decision::Skip { reason } => SlotOutcome::Skipped { reason },
            };
            out.push(SlotEntry {
                site: j.site.clone(),
                job: j.job.clone(),
                op: j.op.clone(),
                slot,
                slot_local: local_text(slot, &j.tz),
                outcome,
            });
        }
        activities.sort_by(|a, b| (a.start, &a.site, &a.job).cmp(&(b.start, &b.site, &b.job)));
        Preview {
            from,
            until,
            slots: out,
            activities,
        }
    }
}

/// The scheduled jobs of some policies, their plugins loaded (each plugin once).
#[derive(Debug, Default)]
pub struct Loaded {
    /// The jobs that have a usable schedule.
    pub jobs: Vec<ScheduledJob>,
    /// Problems that keep a job from being scheduled, each naming the file and field.
    pub errors: Vec<String>,
    /// Doubtful settings that do not.
    pub warnings: Vec<String>,
}

/// How the scheduler learns a job's plugin's description (its conflict and window rules): the
/// caller loads the plugin (the CLI and the daemon through the runtime), so the scheduler does
/// not depend on wasmtime. `Err` says why the plugin cannot be loaded, naming the file.
pub type Describer<'a> = &'a dyn Fn(&Policy, &Job) -> Result<Description, String>;

/// Reads the scheduled jobs of `policies`, describing each job's plugin for its conflict rules
/// (once per plugin file). A job whose plugin or scheduling fields are wrong is left out and
/// reported; the others load.
pub fn load(describe: Describer<'_>, dir: &PluginDir, policies: &[Policy]) -> Loaded {
    let mut out = Loaded::default();
    let mut cache: BTreeMap<(PathBuf, Option<String>), Description> = BTreeMap::new();
    for pol in policies {
        for job in pol.jobs.values().filter(|j| j.schedule.is_some()) {
            let key = (dir.resolve(pol, job), job.plugin_sha256.clone());
            if !cache.contains_key(&key) {
                match describe(pol, job) {
                    Ok(d) => {
                        cache.insert(key.clone(), d);
                    }
                    Err(e) => {
                        out.errors.push(e);
                        continue;
                    }
                }
            }
            let (sj, findings) = ScheduledJob::of(pol, job, &cache[&key]);
            for f in findings {
                if f.error {
                    out.errors.push(f.message);
                } else {
                    out.warnings.push(f.message);
                }
            }
            out.jobs.extend(sj);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::testing::{conflict, description};
    use crate::policy::Schedule;
    use std::cell::Cell;
    use std::path::Path;

    /// Two jobs on server `a` (one product instance), one on server `b`, all at 02:00 Tokyo
    /// time; `extra` goes into job `first`.
    fn policy(extra: &str) -> Policy {
        let text = format!(
            r#"
[site]
name = "hq"
timezone = "Asia/Tokyo"

[[servers]]
name = "a"
role = "mail"

[[servers]]
name = "b"
role = "mail"

[jobs.first]
plugin = "mail"
servers = ["a"]
schedule = "daily at 02:00"
estimate = "1h"
max_start_delay = "3h"
{extra}

[jobs.second]
plugin = "mail"
servers = ["a"]
schedule = "daily at 02:00"
estimate = "1h"
max_start_delay = "30m"

[jobs.elsewhere]
plugin = "mail"
servers = ["b"]
schedule = "daily at 02:00"
estimate = "1h"
"#
        );
        Policy::parse(Path::new("/etc/hokan/hq.toml"), &text).unwrap()
    }

    fn plugin() -> Description {
        let mut d = description("mail", &["backup", "restore"]);
        d.conflicts = vec![conflict("db-check", &["backup"], 60)];
        d.window_rules.step_minutes = 30;
        d
    }

    fn loaded(p: &Policy) -> Loaded {
        let d = plugin();
        load(
            &|_, _| Ok(d.clone()),
            &PluginDir("/plugins".into()),
            std::slice::from_ref(p),
        )
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_expected_interval_is_the_longest_gap_around_now() {
        // In minutes, on Wednesday 2 December 2026 (Tokyo, which keeps no summer time).
        let of = |schedule: &str| {
            let mut p = policy("");
            p.jobs.get_mut("first").unwrap().schedule = Some(Schedule::parse(schedule).unwrap());
            let sched = Scheduler::new(loaded(&p).jobs);
            let i = sched.jobs().iter().position(|j| j.job == "first").unwrap();
            sched
                .expected_interval(i, at("2026-12-02T12:00:00Z"))
                .map(|d| d.as_secs() / 60)
        };
        assert_eq!(of("daily at 02:00"), Some(24 * 60));
        // Monday to Friday: the weekend's gap, on a Wednesday too.
        assert_eq!(of("0 2 * * 1-5"), Some(72 * 60));
        assert_eq!(of("monthly on 1 at 02:00"), Some(31 * 24 * 60));
        assert_eq!(of("*/5 * * * *"), Some(5));
        // 29 February comes once in four years: no second slot within the look-ahead.
        assert_eq!(of("0 2 29 2 *"), None);
    }

    #[test]
    fn a_job_is_scheduled_only_when_its_fields_fit_its_plugin() {
        let d = plugin();
        let of = |extra: &str| {
            let p = policy(extra);
            let (sj, findings) = ScheduledJob::of(&p, &p.jobs["first"], &d);
            let messages: Vec<(bool, String)> =
                findings.into_iter().map(|f| (f.error, f.message)).collect();
            (sj, messages)
        };
        let (sj, m) = of(r#"schedule_op = "archive""#);
        assert!(sj.is_none());
        assert!(
            m[0].0
                && m[0].1.contains("jobs.first.schedule_op")
                && m[0].1.contains("it has: backup, restore"),
            "{m:?}"
        );
        let (sj, m) = of(r#"activities = { defrag = "daily at 04:00" }"#);
        assert!(sj.is_none());
        assert!(
            m[0].1
                .contains("declares no activity `defrag`; it declares: db-check"),
            "{m:?}"
        );
        // Windows in 30-minute steps: 01:10-03:50 becomes 01:30-03:30, and the operator hears it.
        let (sj, m) = of(r#"window = "01:10-03:50""#);
        let sj = sj.expect("a narrowed window still schedules");
        assert_eq!(sj.window.unwrap().to_string(), "01:30-03:30");
        assert!(
            !m[0].0 && m[0].1.contains("runs are fitted in 01:30-03:30"),
            "{m:?}"
        );
        // An estimate no window can hold would never start: refused, not silently skipped.
        let (sj, m) = of(r#"window = "02:00-02:30""#);
        assert!(sj.is_none());
        assert!(m[0].1.contains("longer than the window"), "{m:?}");
        // Without a schedule, scheduling fields are pointed out as unused, not refused.
        let p = policy(r#"window = "01:00-03:00""#);
        let mut job = p.jobs["first"].clone();
        job.schedule = None;
        let (sj, findings) = ScheduledJob::of(&p, &job, &d);
        assert!(sj.is_none());
        assert!(
            !findings[0].error && findings[0].message.contains("jobs.first.window"),
            "{findings:?}"
        );
    }

    #[test]
    fn each_plugin_is_described_once_and_a_failure_names_the_job() {
        let p = policy("");
        let calls = Cell::new(0);
        let d = plugin();
        let l = load(
            &|_, _| {
                calls.set(calls.get() + 1);
                Ok(d.clone())
            },
            &PluginDir("/plugins".into()),
            std::slice::from_ref(&p),
        );
        assert_eq!(calls.get(), 1, "three jobs, one plugin file");
        assert_eq!(l.jobs.len(), 3);
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        let l = load(
            &|_, job| Err(format!("{}: the plugin does not load", job.name)),
            &PluginDir("/plugins".into()),
            std::slice::from_ref(&p),
        );
        assert!(l.jobs.is_empty());
        // The failure is remembered per plugin file, so it is reported for each job asking.
        assert!(!l.errors.is_empty() && l.errors[0].contains("does not load"));
    }

    #[test]
    fn jobs_of_one_instance_wait_for_each_other_and_other_instances_do_not() {
        let p = policy("");
        let sched = Scheduler::new(loaded(&p).jobs);
        let index = |name: &str| sched.jobs().iter().position(|j| j.job == name).unwrap();
        let (first, second, elsewhere) = (index("first"), index("second"), index("elsewhere"));
        let now = at("2026-12-01T17:00:00Z"); // 02:00 in Tokyo
        let busy = |until: &str| Busy {
            from: now,
            until: at(until),
            what: "job first (backup)".into(),
        };
        // `first` runs until 17:20Z: `second` shares server a and waits for it, within its
        // 30-minute delay; `elsewhere` is on server b and starts at once.
        let running = vec![(first, busy("2026-12-01T17:20:00Z"))];
        match sched.decide(second, now, now, &running) {
            Decision::Start { at: start, waited } => {
                assert_eq!(start, at("2026-12-01T17:20:00Z"));
                assert!(waited[0].contains("job first (backup)"), "{waited:?}");
            }
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            sched.decide(elsewhere, now, now, &running),
            Decision::Start { at: start, ref waited } if start == now && waited.is_empty()
        ));
        // Busy past the maximum start delay: held back, saying why.
        let running = vec![(first, busy("2026-12-01T18:00:00Z"))];
        match sched.decide(second, now, now, &running) {
            Decision::Skip { reason } => assert!(reason.contains("job first"), "{reason}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn the_preview_places_each_run_after_the_ones_before_it_on_its_instance() {
        let p = policy("");
        let sched = Scheduler::new(loaded(&p).jobs);
        let from = at("2026-12-01T16:00:00Z");
        let preview = sched.preview(from, from + SignedDuration::from_hours(2));
        let outcome = |job: &str| {
            preview
                .slots
                .iter()
                .find(|s| s.job == job)
                .map(|s| s.outcome.clone())
                .unwrap()
        };
        // Slots at one instant are taken in (site, job) order: elsewhere, first, second.
        let two = at("2026-12-01T17:00:00Z");
        assert!(matches!(outcome("elsewhere"), SlotOutcome::Runs { start, .. } if start == two));
        assert!(matches!(outcome("first"), SlotOutcome::Runs { start, .. } if start == two));
        // `second` would wait an hour for `first`, past its 30-minute delay.
        assert!(
            matches!(outcome("second"), SlotOutcome::Skipped { ref reason } if reason.contains("job first"))
        );
        assert_eq!(
            preview.slots[0].slot_local,
            local_text(two, &sched.jobs()[0].tz)
        );
    }

    #[test]
    fn a_conflicting_activity_holds_a_run_back_unless_a_run_in_progress_keeps_it_from_starting() {
        // db-check at 02:00 for an hour (the plugin's typical length) conflicts with backup.
        let p = policy(r#"activities = { db-check = "daily at 02:00" }"#);
        let sched = Scheduler::new(loaded(&p).jobs);
        let first = sched.jobs().iter().position(|j| j.job == "first").unwrap();
        let now = at("2026-12-01T17:00:00Z");
        match sched.decide(first, now, now, &[]) {
            Decision::Start { at: start, waited } => {
                assert_eq!(start, at("2026-12-01T18:00:00Z"));
                assert!(waited[0].contains("mail's db-check"), "{waited:?}");
            }
            d => panic!("{d:?}"),
        }
        // A job's `window` is not a window set in mailwise: hokan sets one only while its run
        // lasts. The check runs, and the backup still waits for it.
        let p = policy(
            r#"activities = { db-check = "daily at 02:00" }
window = "01:30-04:00""#,
        );
        let sched = Scheduler::new(loaded(&p).jobs);
        let preview = sched.preview(
            now - SignedDuration::from_hours(1),
            now + SignedDuration::from_hours(1),
        );
        assert!(preview.activities[0].not_run.is_none(), "{preview:?}");
        assert!(matches!(
            sched.decide(first, now, now, &[]),
            Decision::Start { at: start, .. } if start == at("2026-12-01T18:00:00Z")
        ));
        // A run of the instance in progress at the check's start has set its window: the
        // product does not start the check, and nothing waits for it.
        let second = sched.jobs().iter().position(|j| j.job == "second").unwrap();
        let running = [(
            second,
            Busy {
                from: now - SignedDuration::from_mins(10),
                until: now + SignedDuration::from_mins(5),
                what: "job second (backup)".into(),
            },
        )];
        let (entries, busy) =
            sched.activities(first, now, now + SignedDuration::from_hours(1), &running);
        assert!(
            busy.iter().all(|b| b.from < now - DAY / 2),
            "only yesterday's: {busy:?}"
        );
        assert!(
            entries[0]
                .not_run
                .as_deref()
                .is_some_and(|w| w.contains("while a maintenance window is set: job second")),
            "{entries:?}"
        );
    }
}
