//! The daemon's runs: `hokan run` child processes, their logs, and how each ended.
//!
//! A run is a child process so that a plugin or a run that dies never takes the daemon down.
//! How a run ended is read from its journal's finish record, never from its log's wording:
//! only a run that never journaled (bad input, a refusal, hokan itself dying) is judged by its
//! exit status.

use super::DaemonError;
use super::Options;
use crate::execute::RunStatus;
use crate::execute::journal::{deferred_run, finished_run};
use crate::schedule::ScheduledJob;
use crate::schedule::history::{SlotRow, SlotStatus};
use jiff::Timestamp;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

/// A run going on.
pub(super) struct Run {
    pub(super) id: i64,
    pub(super) site: String,
    pub(super) job: String,
    pub(super) op: String,
    pub(super) slot: Timestamp,
    pub(super) started: Timestamp,
    pub(super) pid: u32,
    pub(super) log: PathBuf,
}

/// `hokan <args>` with the daemon's state, plugin and cache directories, and no terminal.
pub(super) fn hokan(opts: &Options, args: &[&OsStr]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(&opts.hokan);
    c.arg("--state-dir")
        .arg(&opts.state)
        .arg("--plugin-dir")
        .arg(&opts.plugin_dir);
    if let Some(cache) = &opts.cache_dir {
        c.arg("--cache-dir").arg(cache);
    }
    c.args(args).stdin(std::process::Stdio::null());
    c
}

/// `logs/<name>` in the state directory, opened for appending, with a second handle so that
/// it takes both stdout and stderr.
pub(super) fn open_log(
    state: &Path,
    name: &str,
) -> Result<(PathBuf, std::fs::File, std::fs::File), DaemonError> {
    let dir = state.join("logs");
    std::fs::create_dir_all(&dir)
        .map_err(|e| DaemonError::Setup(format!("cannot make {}: {e}", dir.display())))?;
    let path = dir.join(name);
    let cannot =
        |e: std::io::Error| DaemonError::Setup(format!("cannot write {}: {e}", path.display()));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(cannot)?;
    let g = f.try_clone().map_err(cannot)?;
    Ok((path, f, g))
}

/// The log of one slot's run: `<site>.<job>.<slot>.log`.
pub(super) fn log_name(site: &str, job: &str, slot: Timestamp) -> String {
    format!("{site}.{job}.{}.log", slot.strftime("%Y%m%dT%H%M%SZ"))
}

/// Starts `hokan run` on the policy snapshot for one job, its output going to the log.
pub(super) fn spawn(
    opts: &Options,
    snapshot: &Path,
    j: &ScheduledJob,
    log: (std::fs::File, std::fs::File),
) -> std::io::Result<tokio::process::Child> {
    // Paths as they are: a state directory whose name is not UTF-8 still works.
    let mut args: Vec<std::ffi::OsString> = vec![
        "run".into(),
        snapshot.into(),
        "--policy-origin".into(),
        j.policy.clone().into(),
        "--job".into(),
        j.job.clone().into(),
        "--op".into(),
        j.op.clone().into(),
    ];
    // The run is given the opening of the job's window its slot is in: a product that keeps
    // maintenance windows (mailwise) sets that one, not one of its own.
    if let Some(w) = &j.window {
        args.push("--window".into());
        args.push(w.to_string().into());
    }
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut cmd = hokan(opts, &args);
    cmd.stdout(log.0).stderr(log.1);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the
    // parent; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // If the daemon dies, the run is told to stop as on SIGTERM: its step finishes
            // and its cleanup runs.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// How a slot's run ended, for its history row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ended {
    /// The slot's final status.
    pub status: SlotStatus,
    /// What happened, in a line.
    pub summary: String,
    /// The good set it completed, and its size.
    pub set: Option<(String, u64)>,
    /// Its journal, when it left one.
    pub journal: Option<PathBuf>,
    /// The step that failed, or the last one that ended before the run died.
    pub step: Option<String>,
}

impl Ended {
    /// Why the run failed, for a notification: its summary, and what the failed step's journal
    /// record says (the command's exit and the last lines of its standard error), which is
    /// what the person reading it at 3 a.m. needs first.
    pub fn reason(&self) -> String {
        let (Some(journal), Some(step)) = (&self.journal, &self.step) else {
            return self.summary.clone();
        };
        if self.status == SlotStatus::Completed {
            return self.summary.clone();
        }
        let records = crate::execute::journal::read(journal).unwrap_or_default();
        let detail = records.iter().rev().find_map(|r| match r {
            crate::execute::journal::Record::StepEnd {
                step: s,
                status,
                summary,
                output,
                ..
            } if s == step
                && !matches!(
                    status,
                    crate::drive::StepStatus::Ok | crate::drive::StepStatus::Skipped
                ) =>
            {
                let err: Vec<&str> = output
                    .iter()
                    .flat_map(|o| o.stderr.lines())
                    .filter(|l| !l.trim().is_empty())
                    .collect();
                let tail = err[err.len().saturating_sub(3)..].join(" / ");
                Some(if tail.is_empty() {
                    summary.clone()
                } else {
                    format!("{summary}; stderr: {tail}")
                })
            }
            _ => None,
        });
        match detail {
            Some(d) if !self.summary.contains(&d) => format!("{} ({d})", self.summary),
            _ => self.summary.clone(),
        }
    }
}

/// How a run the daemon awaited ended: its journal's finish (or deferred) record; for a run that
/// never journaled, its exit status, with its log's last line (the error) as the summary. `stopped`:
/// the daemon itself asked it to stop.
pub(super) fn ended(
    state: &Path,
    r: &Run,
    exit: &std::io::Result<ExitStatus>,
    stopped: bool,
) -> Ended {
    let code = exit.as_ref().ok().and_then(ExitStatus::code);
    // A run whose cleanup waits for `hokan recover` ended all the same, set and all.
    let journaled = finished_run(state, &r.site, &r.job, &r.op, r.pid)
        .or_else(|| deferred_run(state, &r.site, &r.job, &r.op, r.pid));
    match journaled {
        Some(f) => Ended {
            status: SlotStatus::of_outcome(&f.outcome, stopped),
            summary: f.outcome.summary(),
            step: f.outcome.step.clone(),
            set: f.set,
            journal: Some(f.journal),
        },
        None => Ended {
            status: SlotStatus::of_exit(code, stopped),
            summary: last_line(&r.log),
            step: None,
            set: None,
            journal: None,
        },
    }
}

/// How a run a previous daemon left going ended, once `hokan recover` has run: it finished on
/// its own, or recovery finished it (its cleanup ran), or it left no journal.
pub(super) fn ended_before(state: &Path, r: &SlotRow) -> Ended {
    let ended = r
        .pid
        .and_then(|pid| finished_run(state, &r.site, &r.job, &r.op, pid));
    match ended {
        Some(f) if f.outcome.status != RunStatus::Recovered => Ended {
            status: SlotStatus::of_outcome(&f.outcome, false),
            summary: f.outcome.summary(),
            step: f.outcome.step.clone(),
            set: f.set,
            journal: Some(f.journal),
        },
        // Recovery removes a partial set, or finishes and keeps one (never a good one).
        Some(f) => Ended {
            status: SlotStatus::Interrupted,
            summary: format!(
                "the daemon stopped during the run; its cleanup ran ({})",
                f.outcome.summary()
            ),
            step: f.outcome.step.clone(),
            set: None,
            journal: Some(f.journal),
        },
        None => Ended {
            status: SlotStatus::Interrupted,
            summary: "the daemon stopped during the run, which left no journal".to_string(),
            step: None,
            set: None,
            journal: None,
        },
    }
}

/// How a finished run's log ends: its last line that is not blank.
fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::Outcome;
    use crate::execute::journal::{Journal, Record};
    use std::os::unix::process::ExitStatusExt;

    /// A finished run's journal for `hq/mail backup`, run by process `pid`: `before`, then
    /// how it ended.
    fn journal_of(state: &Path, pid: u32, before: &[Record], outcome: Outcome) {
        let finish = Record::Finish {
            outcome,
            at: "2026-12-01T17:00:00Z".into(),
        };
        let run = format!("20261201T170000Z-hq-mail-backup-{pid}");
        let mut records = before.iter().chain([&finish]);
        let mut j = Journal::create(state, &run, records.next().unwrap()).unwrap();
        for r in records {
            j.append(r).unwrap();
        }
        j.close().unwrap();
    }

    fn journal(state: &Path, pid: u32, outcome: Outcome) {
        journal_of(state, pid, &[], outcome);
    }

    fn set_complete(kept: Option<&str>) -> Record {
        Record::SetComplete {
            set: "20261201T170000Z".into(),
            path: "/srv/backup/hq/mail/20261201T170000Z".into(),
            files: 3,
            bytes: 1234,
            bytes_copied: 1000,
            files_linked: 1,
            kept: kept.map(str::to_string),
        }
    }

    fn run(state: &Path, pid: u32, log: &str) -> Run {
        let path = state.join(format!("{pid}.log"));
        std::fs::write(&path, log).unwrap();
        Run {
            id: 1,
            site: "hq".into(),
            job: "mail".into(),
            op: "backup".into(),
            slot: Timestamp::UNIX_EPOCH,
            started: Timestamp::UNIX_EPOCH,
            pid,
            log: path,
        }
    }

    fn exit(code: i32) -> std::io::Result<ExitStatus> {
        Ok(ExitStatus::from_raw(code << 8))
    }

    #[test]
    fn a_run_is_judged_by_its_journal_whatever_its_log_says() {
        let tmp = tempfile::tempdir().unwrap();
        let mut kept = Outcome::new(RunStatus::Failed);
        kept.set = Some("20261201T170000Z".into());
        kept.set_kept = Some("`verify-pages` failed after the point of no return `backup`".into());
        journal(tmp.path(), 4242, kept.clone());
        // The log's wording (and the exit status) do not decide.
        let r = run(tmp.path(), 4242, "completed\n");
        let e = ended(tmp.path(), &r, &exit(0), false);
        assert_eq!(e.status, SlotStatus::Attention);
        assert_eq!(e.summary, kept.summary());
        assert!(e.summary.contains("KEPT"), "{}", e.summary);
        // Another process's journal of the same job is not this run's.
        let other = run(tmp.path(), 4243, "error: the policy does not load\n\n");
        let e = ended(tmp.path(), &other, &exit(1), false);
        assert_eq!(e.status, SlotStatus::BadInput);
        assert_eq!(e.summary, "error: the policy does not load");
        assert_eq!(e.set, None);
    }

    #[test]
    fn a_run_s_good_set_and_its_size_come_from_its_journal_and_a_kept_set_is_not_one() {
        let tmp = tempfile::tempdir().unwrap();
        let mut done = Outcome::completed();
        done.set = Some("20261201T170000Z".into());
        journal_of(tmp.path(), 50, &[set_complete(None)], done);
        let e = ended(tmp.path(), &run(tmp.path(), 50, ""), &exit(0), false);
        assert_eq!(e.status, SlotStatus::Completed);
        assert_eq!(e.set, Some(("20261201T170000Z".into(), 1234)));
        let mut kept = Outcome::new(RunStatus::Failed);
        kept.set_kept = Some("`check` failed after the point of no return `backup`".into());
        journal_of(tmp.path(), 51, &[set_complete(Some("after backup"))], kept);
        let e = ended(tmp.path(), &run(tmp.path(), 51, ""), &exit(4), false);
        assert_eq!((e.status, e.set), (SlotStatus::Attention, None));
    }

    #[test]
    fn a_run_left_by_an_earlier_daemon_is_interrupted_unless_it_finished_on_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let row = |pid: Option<u32>| SlotRow {
            id: 1,
            site: "hq".into(),
            job: "mail".into(),
            op: "backup".into(),
            slot: Timestamp::UNIX_EPOCH,
            status: SlotStatus::Running,
            attempts: 1,
            started: None,
            finished: None,
            pid,
            summary: None,
            log: None,
            set: None,
            set_bytes: None,
            journal: None,
        };
        journal(tmp.path(), 10, Outcome::completed());
        let mut recovered = Outcome::new(RunStatus::Recovered);
        recovered.step = Some("stop-services".into());
        journal(tmp.path(), 11, recovered);
        let e = ended_before(tmp.path(), &row(Some(10)));
        assert_eq!(
            (e.status, e.summary.as_str()),
            (SlotStatus::Completed, "completed")
        );
        let e = ended_before(tmp.path(), &row(Some(11)));
        assert_eq!(e.status, SlotStatus::Interrupted);
        assert!(
            e.summary
                .contains("its cleanup ran (recovered: the run died after `stop-services`"),
            "{}",
            e.summary
        );
        let e = ended_before(tmp.path(), &row(None));
        assert_eq!(e.status, SlotStatus::Interrupted);
        assert!(e.summary.contains("left no journal"), "{}", e.summary);
    }

    #[test]
    fn each_slot_has_its_own_log() {
        let slot: Timestamp = "2026-12-01T17:00:00Z".parse().unwrap();
        assert_eq!(log_name("hq", "mail", slot), "hq.mail.20261201T170000Z.log");
        let tmp = tempfile::tempdir().unwrap();
        let (path, mut out, mut err) = open_log(tmp.path(), "x.log").unwrap();
        use std::io::Write;
        out.write_all(b"out\n").unwrap();
        err.write_all(b"err\n").unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), "out\nerr\n");
    }
}
