//! What the daemon tells its operator, as events: the CLI prints them.

use super::*;

/// What the daemon tells its operator, as it happens. The daemon prints nothing itself: the
/// CLI prints each event (`hokan daemon: ...`), a test or another front end may do otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Started: watching the policies, this many jobs scheduled, status on the socket.
    Watching {
        /// The policy directory or file.
        policies: PathBuf,
        /// Jobs with a schedule.
        jobs: usize,
        /// The status socket.
        socket: PathBuf,
    },
    /// The HTTP server listens.
    Serving {
        /// Where `/metrics` is.
        url: String,
        /// Requests must carry the bearer token.
        token: bool,
    },
    /// A run a previous daemon started is still finishing its cleanup.
    WaitingForEarlierRun {
        /// Its site.
        site: String,
        /// Its job.
        job: String,
        /// Its process.
        pid: u32,
    },
    /// `hokan recover` at start-up did not end cleanly.
    RecoveryNeedsAttention {
        /// Its exit status.
        code: Option<i32>,
        /// Its log.
        log: PathBuf,
    },
    /// `hokan recover` was run again because a run's cleanup waited for a server that could
    /// not be reached.
    RecoveryRetried {
        /// Its exit status.
        code: Option<i32>,
        /// Whether it recovered everything it found (exit 0).
        recovered: bool,
        /// Its log.
        log: PathBuf,
    },
    /// The policy directory cannot be read; the policies read before are kept.
    PoliciesUnreadable {
        /// Why.
        error: String,
    },
    /// A policy file is gone: its jobs are no longer scheduled.
    PolicyGone {
        /// The file.
        path: PathBuf,
    },
    /// A policy file changed and was read again.
    Reloaded {
        /// The file.
        path: PathBuf,
    },
    /// A policy file does not load or its jobs are wrong.
    PolicyRefused {
        /// Why, naming the file and field.
        error: String,
        /// What is scheduled instead.
        kept: &'static str,
    },
    /// A slot was missed: the daemon was not running then.
    Missed {
        /// The site.
        site: String,
        /// The job.
        job: String,
        /// The slot.
        slot: Timestamp,
        /// Why.
        reason: &'static str,
    },
    /// A slot was held back by the job's rules.
    HeldBack {
        /// The site.
        site: String,
        /// The job.
        job: String,
        /// The slot.
        slot: Timestamp,
        /// Why.
        reason: String,
    },
    /// A run started.
    Started {
        /// The site.
        site: String,
        /// The job.
        job: String,
        /// The operation.
        op: String,
        /// The slot, in the job's time zone.
        slot: String,
        /// The run's process.
        pid: u32,
        /// Its log.
        log: PathBuf,
    },
    /// A run ended.
    Ended {
        /// The site.
        site: String,
        /// The job.
        job: String,
        /// The slot.
        slot: Timestamp,
        /// How, as recorded in the history.
        status: SlotStatus,
        /// The run's exit status.
        exit: Option<i32>,
        /// Its end in a line (from its journal).
        summary: String,
    },
    /// A signal asked the daemon to stop; its runs finish their step and cleanup first.
    Stopping {
        /// `SIGTERM` or `SIGINT`.
        why: &'static str,
        /// Runs still going.
        runs: usize,
    },
    /// The daemon stopped.
    Stopped,
}

impl Event {
    /// Whether it reports a problem (the CLI prints those on standard error).
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Event::RecoveryNeedsAttention { .. }
                | Event::RecoveryRetried {
                    recovered: false,
                    ..
                }
                | Event::PoliciesUnreadable { .. }
                | Event::PolicyRefused { .. }
                | Event::Missed { .. }
                | Event::HeldBack { .. }
        )
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Watching {
                policies,
                jobs,
                socket,
            } => write!(
                f,
                "watching {}, {jobs} scheduled job(s); status on {}",
                policies.display(),
                socket.display()
            ),
            Event::Serving { url, token } => write!(
                f,
                "serving {url}{}",
                if *token {
                    " (requests need the bearer token)"
                } else {
                    ""
                }
            ),
            Event::WaitingForEarlierRun { site, job, pid } => write!(
                f,
                "waiting for the run of {site} {job} (pid {pid}) a previous daemon started to finish its cleanup"
            ),
            Event::RecoveryNeedsAttention { code, log } => write!(
                f,
                "`hokan recover` needs attention (exit {code:?}); see {}",
                log.display()
            ),
            Event::RecoveryRetried {
                recovered: true,
                log,
                ..
            } => write!(
                f,
                "`hokan recover`, run again for a cleanup that waited for a server, finished it; see {}",
                log.display()
            ),
            Event::RecoveryRetried { code, log, .. } => write!(
                f,
                "`hokan recover`, run again for a cleanup that waits for a server, still needs attention ({}); it is tried again later; see {}",
                code.map_or_else(|| "killed by a signal".to_string(), |c| format!("exit {c}")),
                log.display()
            ),
            Event::PoliciesUnreadable { error } => {
                write!(f, "{error} (the policies read before are kept)")
            }
            Event::PolicyGone { path } => write!(
                f,
                "{} is gone; its jobs are no longer scheduled",
                path.display()
            ),
            Event::Reloaded { path } => write!(f, "reloaded {}", path.display()),
            Event::PolicyRefused { error, kept } => write!(f, "{error} ({kept})"),
            Event::Missed {
                site,
                job,
                slot,
                reason,
            } => write!(f, "{site} {job} slot {slot}: {reason}"),
            Event::HeldBack {
                site,
                job,
                slot,
                reason,
            } => write!(f, "{site} {job} slot {slot} held back: {reason}"),
            Event::Started {
                site,
                job,
                op,
                slot,
                pid,
                log,
            } => write!(
                f,
                "started {site} {job} ({op}) for {slot} (pid {pid}, log {})",
                log.display()
            ),
            Event::Ended {
                site,
                job,
                slot,
                status,
                exit,
                summary,
            } => write!(
                f,
                "{site} {job} slot {slot} ended {} (exit {exit:?}): {summary}",
                status.as_str()
            ),
            Event::Stopping { why, runs } => write!(
                f,
                "{why} received; letting {runs} run(s) finish their step and cleanup"
            ),
            Event::Stopped => write!(f, "stopped"),
        }
    }
}

/// Receives the daemon's [`Event`]s.
pub type Events = std::sync::Arc<dyn Fn(&Event) + Send + Sync>;
