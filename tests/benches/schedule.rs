//! Scheduling speed: `cargo xtask bench`.
//!
//! Generates 100 site policies of 100 jobs each (10,000 jobs) in three time zones (Asia/Tokyo,
//! Europe/London, America/New_York, the last two with a daylight-saving change in the week
//! benchmarked), with daily, weekly, monthly and cron calendars (some every 30 minutes), half of
//! them in maintenance windows, a quarter with mailwise's database check as a conflicting
//! activity, and one job in ten sharing a server with another (one product instance). Then, in
//! the same run:
//! - computes the week's schedule in the library (`Scheduler::new` + `preview`), the figure the
//!   target is about;
//! - runs `hokan schedule DIR --json` for that week (release binary): reading and checking the
//!   100 policies, the plugin's conflict rules, the schedule, and 2 MB or so of JSON.
//!
//! Target (issue "Scheduler"): a week's schedule for 10,000 jobs in under 1 s.

use hokan::planner::PluginDir;
use hokan::policy;
use hokan::runtime::{Limits, Runtime};
use hokan::schedule::{self, Scheduler};
use hokan_e2e::{hokan_bin, median, plugin_dir, timed};
use std::fmt::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ZONES: [&str; 3] = ["Asia/Tokyo", "Europe/London", "America/New_York"];

fn site(n: usize, jobs: usize) -> String {
    let mut s = format!(
        "[site]\nname = \"site{n}\"\ntimezone = \"{}\"\n",
        ZONES[n % ZONES.len()]
    );
    for k in 0..jobs {
        let _ = write!(s, "\n[[servers]]\nname = \"mw{k}\"\nrole = \"mailwise\"\n");
    }
    for k in 0..jobs {
        // One job in ten shares the previous job's server.
        let server = if k % 10 == 9 { k - 1 } else { k };
        let (h, m) = (1 + k % 4, (k * 10) % 60);
        let calendar = match k % 5 {
            0 => format!("daily at {h:02}:{m:02}"),
            1 => format!("weekly on mon,wed,fri at {h:02}:{m:02}"),
            2 => format!("monthly on 1,15,29 at {h:02}:{m:02}"),
            3 => "*/30 1-4 * * *".to_string(),
            _ => format!("{m} */6 * * *"),
        };
        let _ = write!(
            s,
            "\n[jobs.j{k}]\nplugin = \"mailwise\"\nservers = [\"mw{server}\"]\nroots = {{ data = \"/srv/site{n}/mw{k}\" }}\nbackup_root = \"/srv/backups\"\ncommands = {{ maintenance-mode = \"/usr/local/bin/mw-maintenance\", mwsave = \"/opt/mailwise/mwsave\" }}\nschedule = \"{calendar}\"\nestimate = \"{}m\"\nmax_start_delay = \"45m\"\n",
            10 + k % 30
        );
        if k % 2 == 0 {
            s.push_str("window = \"01:00-05:00\"\n");
        }
        if k % 4 == 0 {
            s.push_str("activities = { db-check = \"daily at 02:30\" }\n");
        }
    }
    s
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (sites, per_site) = if smoke { (4, 25) } else { (100, 100) };
    let rounds = if smoke { 1 } else { 5 };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-schedule");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for n in 0..sites {
        std::fs::write(dir.join(format!("site{n:03}.toml")), site(n, per_site)).unwrap();
    }
    let jobs = sites * per_site;
    // The week of the US change (1 November 2026) and a week after the UK one.
    let (from, until) = ("2026-10-29T00:00:00Z", "2026-11-05T00:00:00Z");

    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new(cache.path(), Limits::default()).unwrap();
    let policies = policy::load_all(&dir).unwrap();
    // The generated policies are valid ones.
    let mut validate = Command::new(hokan_bin());
    validate
        .arg("--plugin-dir")
        .arg(plugin_dir())
        .arg("--cache-dir")
        .arg(cache.path())
        .arg("validate")
        .arg(&dir)
        .stdout(std::process::Stdio::null());
    timed(validate);
    let plugins = PluginDir(plugin_dir());
    let describe = |pol: &hokan::policy::Policy, job: &hokan::policy::Job| {
        hokan::planner::load_plugin(&rt, &plugins, pol, job)
            .map(|p| p.description().clone())
            .map_err(|e| e.to_string())
    };
    let loaded = schedule::load(&describe, &plugins, &policies);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.jobs.len(), jobs);
    let (f, u) = (from.parse().unwrap(), until.parse().unwrap());
    let mut times = Vec::new();
    let mut slots = 0;
    for _ in 0..rounds {
        let jobs = loaded.jobs.clone();
        let t = Instant::now();
        let preview = Scheduler::new(jobs).preview(f, u);
        times.push(t.elapsed());
        slots = preview.slots.len();
        std::hint::black_box(&preview);
    }
    let library = median(times);

    let cli = || {
        let mut c = Command::new(hokan_bin());
        c.arg("--plugin-dir")
            .arg(plugin_dir())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(["schedule", "--from", from, "--until", until, "--json"])
            .arg(&dir)
            .stdout(std::process::Stdio::null());
        c
    };
    timed(cli()); // warm the compile cache
    let command = median((0..rounds).map(|_| timed(cli())).collect());

    let target = Duration::from_secs(1);
    let ratio = |d: Duration| d.as_secs_f64() / target.as_secs_f64();
    println!("schedule: {jobs} jobs, one week ({from} to {until}), {slots} slots");
    println!(
        "  library (Scheduler::new + preview): {:>8.1} ms  = {:.3}x the 1 s target",
        library.as_secs_f64() * 1e3,
        ratio(library)
    );
    println!(
        "  hokan schedule --json (release):    {:>8.1} ms  = {:.3}x the 1 s target",
        command.as_secs_f64() * 1e3,
        ratio(command)
    );
    if smoke {
        println!("  (smoke run: {jobs} jobs; `cargo xtask bench` measures 10,000)");
    } else {
        assert!(library < target, "the week's schedule took {library:?}");
    }
}
