//! `hokan schedule`, `hokan daemon` and `hokan status`.

use super::Cli;
use super::commands::{cache_dir, runtime};
use anyhow::{Context, Result, anyhow};
use hokan::planner::PluginDir;
use hokan::policy::{self, Policy};
use hokan::schedule::daemon::{self, Clock, Options};
use hokan::schedule::{self, Preview, Scheduler, SlotOutcome};
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// An instant given on the command line.
fn instant(flag: &str, s: &str) -> Result<Timestamp> {
    s.parse::<Timestamp>().map_err(|e| {
        anyhow!(
            "{flag} `{s}` is not an RFC 3339 instant with an offset, such as \
             2026-11-01T00:00:00+09:00 or 2026-11-01T00:00:00Z ({e})"
        )
    })
}

/// Every policy under `paths`, or the first error.
fn policies(paths: &[PathBuf]) -> Result<Vec<Policy>> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(policy::load_all(p)?);
    }
    Ok(out)
}

pub(super) fn schedule(
    cli: &Cli,
    paths: &[PathBuf],
    from: Option<&str>,
    until: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let from = match from {
        Some(s) => instant("--from", s)?,
        None => Timestamp::now(),
    };
    let until = match until {
        Some(s) => instant("--until", s)?,
        None => from + SignedDuration::from_hours(24 * 7),
    };
    if until <= from {
        return Err(anyhow!(
            "--until ({until}) must be later than --from ({from})"
        ));
    }
    let pols = policies(paths)?;
    let rt = runtime(cli)?;
    let dir = PluginDir(cli.plugin_dir.clone());
    let loaded = schedule::load(&describe_with(&rt, &dir), &dir, &pols);
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    for e in &loaded.errors {
        eprintln!("error: {e} (this job is left out of the schedule)");
    }
    let sched = Scheduler::new(loaded.jobs);
    let preview = sched.preview(from, until);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "format": "1",
                "preview": preview,
                "errors": loaded.errors,
            }))
            .context("cannot print the schedule")?
        );
    } else {
        print!("{}", preview_text(&sched, &pols, &preview));
    }
    Ok(if loaded.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The preview as the operator reads it: per site, in the site's time, one line per slot or
/// product activity, in order.
pub fn preview_text(sched: &Scheduler, pols: &[Policy], p: &Preview) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let held = p
        .slots
        .iter()
        .filter(|s| matches!(s.outcome, SlotOutcome::Skipped { .. }))
        .count();
    let _ = writeln!(
        out,
        "from {} until {}: {} run(s), {} held back, {} product activit{}",
        p.from,
        p.until,
        p.slots.len() - held,
        held,
        p.activities.len(),
        if p.activities.len() == 1 { "y" } else { "ies" }
    );
    // Per site: (time, order within the instant, line).
    let mut sites: BTreeMap<&str, Vec<(Timestamp, u8, String)>> = BTreeMap::new();
    let tz_of = |site: &str| {
        sched
            .jobs()
            .iter()
            .find(|j| j.site == site)
            .map(|j| j.tz.clone())
            .unwrap_or(jiff::tz::TimeZone::UTC)
    };
    for s in &p.slots {
        let tz = tz_of(&s.site);
        let hm = |t: Timestamp| t.to_zoned(tz.clone()).strftime("%H:%M %Z").to_string();
        let line = match &s.outcome {
            SlotOutcome::Runs {
                estimated_end,
                waited_for,
                ..
            } if waited_for.is_empty() => format!(
                "{}  run   {} ({}), estimated to end {}",
                s.slot_local,
                s.job,
                s.op,
                hm(*estimated_end)
            ),
            SlotOutcome::Runs {
                start,
                estimated_end,
                waited_for,
            } => format!(
                "{}  run   {} ({}) late, at {} to {}: waited for {}",
                s.slot_local,
                s.job,
                s.op,
                hm(*start),
                hm(*estimated_end),
                waited_for.join(", then ")
            ),
            SlotOutcome::Skipped { reason } => {
                format!("{}  HELD  {} ({}): {reason}", s.slot_local, s.job, s.op)
            }
        };
        sites.entry(&s.site).or_default().push((s.slot, 1, line));
    }
    for a in &p.activities {
        let tz = tz_of(&a.site);
        let line = match &a.not_run {
            None => format!(
                "{}  busy  {}'s {} (job {}) until {}",
                a.start_local,
                a.plugin,
                a.activity,
                a.job,
                a.end.to_zoned(tz).strftime("%H:%M %Z")
            ),
            Some(why) => format!(
                "{}  off   {}'s {} (job {}) does not run: {why}",
                a.start_local, a.plugin, a.activity, a.job
            ),
        };
        sites.entry(&a.site).or_default().push((a.start, 0, line));
    }
    for pol in pols {
        let Some(lines) = sites.get_mut(pol.site.as_str()) else {
            continue;
        };
        if lines.is_empty() {
            continue;
        }
        lines.sort();
        let _ = writeln!(
            out,
            "\n{} ({}, {})",
            pol.site,
            pol.timezone,
            pol.file.display()
        );
        for (_, _, l) in lines.drain(..) {
            let _ = writeln!(out, "  {l}");
        }
    }
    out
}

pub(super) fn daemon(
    cli: &Cli,
    policies: &Path,
    http: Option<std::net::SocketAddr>,
    token_file: Option<&Path>,
    recover_every: std::time::Duration,
) -> Result<ExitCode> {
    if !policies.exists() {
        return Err(anyhow!(
            "{} does not exist; give the directory of the site policies",
            policies.display()
        ));
    }
    let http = http
        .map(|addr| daemon::HttpOptions::new(addr, token_file))
        .transpose()
        .map_err(|e| anyhow!(e))?;
    hokan::execute::journal::check_state_dir(&cli.state_dir)?;
    // A fast clock for the daemon's end-to-end tests; the product ignores the variable.
    let clock = match hokan::test_hooks::var("HOKAN_TEST_CLOCK") {
        Some(c) => Clock::parse(&c).map_err(|e| anyhow!("HOKAN_TEST_CLOCK: {e}"))?,
        None => Clock::real(),
    };
    let opts = Options {
        policies: policies.to_path_buf(),
        state: cli.state_dir.clone(),
        plugin_dir: cli.plugin_dir.clone(),
        cache_dir: Some(cache_dir(cli)),
        hokan: std::env::current_exe().context("cannot find the hokan executable")?,
        clock,
        events: std::sync::Arc::new(|e: &hokan::schedule::daemon::Event| {
            if e.is_warning() {
                eprintln!("hokan daemon: {e}");
            } else {
                println!("hokan daemon: {e}");
            }
        }),
        http,
        recover_every,
    };
    let rt = runtime(cli)?;
    let dir = PluginDir(cli.plugin_dir.clone());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(daemon::run(
            opts,
            Box::new(
                move |pol: &hokan::policy::Policy, job: &hokan::policy::Job| {
                    describe_with(&rt, &dir)(pol, job)
                },
            ),
        ))?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn status(cli: &Cli, json: bool) -> Result<ExitCode> {
    let doc = match daemon::ask_status(&cli.state_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", status_text(&doc));
    }
    Ok(ExitCode::SUCCESS)
}

/// `hokan status` as text.
fn status_text(doc: &serde_json::Value) -> String {
    use std::fmt::Write;
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let list = |k: &str| doc[k].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hokan daemon (pid {}), now {}, policies {}",
        doc["pid"],
        s(doc, "now"),
        s(doc, "policies")
    );
    let section = |out: &mut String, title: &str, rows: Vec<String>| {
        let _ = writeln!(out, "{title}:");
        if rows.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for r in rows {
            let _ = writeln!(out, "  {r}");
        }
    };
    section(
        &mut out,
        "running",
        list("running")
            .iter()
            .map(|r| {
                format!(
                    "{} {} ({}) for slot {}, since {}, pid {}, log {}",
                    s(r, "site"),
                    s(r, "job"),
                    s(r, "op"),
                    s(r, "slot"),
                    s(r, "started"),
                    r["pid"],
                    s(r, "log")
                )
            })
            .collect(),
    );
    section(
        &mut out,
        "waiting",
        list("waiting")
            .iter()
            .map(|w| {
                let why: Vec<String> = w["waiting_for"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                format!(
                    "{} {} slot {}: waits for {}",
                    s(w, "site"),
                    s(w, "job"),
                    s(w, "slot"),
                    if why.is_empty() {
                        "its turn".to_string()
                    } else {
                        why.join(", then ")
                    }
                )
            })
            .collect(),
    );
    section(
        &mut out,
        "next",
        list("next")
            .iter()
            .map(|n| {
                format!(
                    "{}  {} {} ({})",
                    s(n, "slot_local"),
                    s(n, "site"),
                    s(n, "job"),
                    s(n, "op")
                )
            })
            .collect(),
    );
    section(
        &mut out,
        "last results",
        list("last")
            .iter()
            .map(|r| {
                format!(
                    "{} {} ({}) slot {}: {} at {}: {}",
                    s(r, "site"),
                    s(r, "job"),
                    s(r, "op"),
                    s(r, "slot"),
                    s(r, "status"),
                    s(r, "finished"),
                    s(r, "summary")
                )
            })
            .collect(),
    );
    let errors: Vec<String> = list("policy_errors")
        .iter()
        .filter_map(|e| e.as_str().map(String::from))
        .collect();
    if !errors.is_empty() {
        section(&mut out, "POLICY ERRORS", errors);
    }
    if let Some(l) = doc["recovery_attention"].as_str() {
        let _ = writeln!(
            out,
            "ATTENTION: recovery at start-up needs attention; see {l}"
        );
    }
    out
}

/// The scheduler's [`schedule::Describer`]: loads a job's plugin with `rt` from `dir` and
/// returns its description.
fn describe_with<'a>(
    rt: &'a hokan::runtime::Runtime,
    dir: &'a PluginDir,
) -> impl Fn(&hokan::policy::Policy, &hokan::policy::Job) -> Result<hokan::describe::Description, String>
+ 'a {
    move |pol, job| {
        hokan::planner::load_plugin(rt, dir, pol, job)
            .map(|p| p.description().clone())
            .map_err(|e| e.to_string())
    }
}

/// The run history in --state-dir, which must be there (a listing never makes one).
fn existing_history(cli: &Cli) -> Result<hokan::schedule::history::History> {
    let db = cli.state_dir.join("history.sqlite");
    if !db.exists() {
        return Err(anyhow!(
            "there is no run history in {} (the daemon keeps it as history.sqlite): give the \
             daemon's --state-dir",
            cli.state_dir.display()
        ));
    }
    Ok(hokan::schedule::history::History::open(&cli.state_dir)?)
}

pub(super) fn notifications(
    cli: &Cli,
    event: Option<&str>,
    limit: u32,
    json: bool,
) -> Result<ExitCode> {
    let history = existing_history(cli)?;
    let ms = |t: i64| {
        Timestamp::from_millisecond(t)
            .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    };
    if let Some(id) = event {
        let log = history.delivery_log(id)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&log)?);
        } else if log.is_empty() {
            println!("no attempt at delivering {id} is logged");
        }
        if !json {
            for l in &log {
                println!(
                    "{}  {:<24} attempt {:<3} {}  {}",
                    ms(l.at),
                    l.channel,
                    l.attempt,
                    if l.ok { "delivered" } else { "failed   " },
                    l.detail
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let list = history.deliveries(limit)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no notifications yet (channels are [[notify]] in host.toml and site policies)");
    }
    for d in &list {
        let state = match (d.state.as_str(), d.due) {
            ("pending", Some(due)) => format!("pending (next attempt {})", ms(due)),
            (s, _) => s.to_string(),
        };
        println!(
            "{}  {:<24} {}\n    {} after {} attempt(s){}\n    event {}",
            d.event.at.strftime("%Y-%m-%d %H:%M:%S"),
            d.channel,
            d.event.headline(),
            state,
            d.attempts,
            d.last_error
                .as_ref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default(),
            d.event.id,
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn report(
    cli: &Cli,
    policy: &Path,
    month: &str,
    out: Option<&Path>,
) -> Result<ExitCode> {
    use hokan::schedule::report::{JobMonth, Month, render};
    let pol = hokan::policy::Policy::load(policy)?;
    let month = Month::parse(month).map_err(|e| anyhow!("--month {e}"))?;
    let tz = jiff::tz::db().get(&pol.timezone).map_err(|e| {
        anyhow!(
            "site.timezone `{}` is not a time zone this host knows: {e}",
            pol.timezone
        )
    })?;
    let history = existing_history(cli)?;
    let (from, until) = month.span(&tz)?;
    let rows = history.since(from)?;
    let jobs: Vec<JobMonth> = pol
        .jobs
        .values()
        .filter(|j| j.schedule.is_some())
        .map(|j| {
            let sets_dir = hokan::planner::sets_dir(&pol, j);
            let restore_test = sets_dir.as_deref().and_then(|dir| {
                hokan::sets::list(dir)
                    .ok()?
                    .iter()
                    .filter_map(|id| hokan::sets::tested::last(dir, id))
                    .max_by(|a, b| a.tested_at.cmp(&b.tested_at))
            });
            JobMonth {
                job: j.name.clone(),
                op: j.schedule_op.clone(),
                rows: rows
                    .iter()
                    .filter(|r| r.site == pol.site && r.job == j.name && r.slot < until)
                    .cloned()
                    .collect(),
                restore_test,
            }
        })
        .collect();
    let html = render(
        &pol.site,
        &tz,
        &pol.timezone,
        month,
        &jobs,
        jiff::Timestamp::now(),
    )?;
    match out {
        Some(p) => {
            std::fs::write(p, html).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => print!("{html}"),
    }
    Ok(ExitCode::SUCCESS)
}
