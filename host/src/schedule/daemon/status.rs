//! `hokan status`: the document the daemon answers on its socket, and asking for it.

use super::*;

/// The answer to `hokan status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The document's format.
    pub format: &'static str,
    /// The daemon's process.
    pub pid: u32,
    /// Now, by the daemon's clock.
    pub now: Timestamp,
    /// The policy directory.
    pub policies: PathBuf,
    /// The next slot of each scheduled job.
    pub next: Vec<NextRun>,
    /// The runs going on.
    pub running: Vec<SlotRow>,
    /// Slots waiting to start, and what for.
    pub waiting: Vec<Waiting>,
    /// The slots that ended last, newest first.
    pub last: Vec<SlotRow>,
    /// Policy files that do not load or whose scheduled jobs are wrong (their previous version
    /// is used, if there is one).
    pub policy_errors: Vec<String>,
    /// `hokan recover` at start-up needed attention: its log.
    pub recovery_attention: Option<PathBuf>,
}

/// A job's next slot.
#[derive(Debug, Clone, Serialize)]
pub struct NextRun {
    /// The site.
    pub site: String,
    /// The job.
    pub job: String,
    /// The operation.
    pub op: String,
    /// The slot.
    pub slot: Timestamp,
    /// The slot in the site's time.
    pub slot_local: String,
}

/// A slot that is due and waits.
#[derive(Debug, Clone, Serialize)]
pub struct Waiting {
    /// The site.
    pub site: String,
    /// The job.
    pub job: String,
    /// The slot.
    pub slot: Timestamp,
    /// What it waits for.
    pub waiting_for: Vec<String>,
}

/// Asks the daemon of state directory `state` for its status (the JSON document of [`Status`]).
pub fn ask_status(state: &Path) -> Result<serde_json::Value, String> {
    use std::io::Read;
    let sock = state.join("daemon.sock");
    let mut stream = std::os::unix::net::UnixStream::connect(&sock).map_err(|e| {
        format!(
            "no hokan daemon answers on {} ({e}); start one with `hokan daemon POLICY_DIR --state-dir {}`",
            sock.display(),
            state.display()
        )
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    stream
        .read_to_end(&mut buf)
        .map_err(|e| format!("the daemon on {} did not answer: {e}", sock.display()))?;
    serde_json::from_slice(&buf).map_err(|e| {
        format!(
            "the daemon on {} answered something else than its status: {e}",
            sock.display()
        )
    })
}
