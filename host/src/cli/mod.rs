//! Command-line parsing and the commands. Errors become a message on stderr and an exit code.

mod commands;
mod console;
mod execution;
mod scheduling;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// What `hokan --version` says: a build that reads the `HOKAN_TEST_*` variables says so, so that
/// it is never taken for the product.
const VERSION: &str = if hokan::test_hooks::ENABLED {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (test build: reads HOKAN_TEST_* variables)"
    )
} else {
    env!("CARGO_PKG_VERSION")
};

/// Runs product backup, restore and maintenance procedures encoded as WebAssembly plugins.
#[derive(Parser, Debug)]
#[command(name = "hokan", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// Directory of plugin components (`<name>.wasm`).
    #[arg(
        long,
        global = true,
        env = "HOKAN_PLUGIN_DIR",
        default_value = "/usr/lib/hokan/plugins"
    )]
    pub plugin_dir: PathBuf,
    /// Directory of the compile cache [default: $XDG_CACHE_HOME/hokan or ~/.cache/hokan].
    #[arg(long, global = true, env = "HOKAN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Directory of run journals and locks.
    #[arg(
        long,
        global = true,
        env = "HOKAN_STATE_DIR",
        default_value = "/var/lib/hokan"
    )]
    pub state_dir: PathBuf,
    /// More diagnostics on stderr (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the plugins in the plugin directory, or describe one.
    Plugins {
        /// Describe this plugin in full.
        name: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Servers reached over ssh: `hokan servers check POLICY...`.
    #[command(subcommand)]
    Servers(ServersCommand),
    /// Check policy files (or directories of them) and their jobs' plugins.
    Validate {
        /// Policy files or directories.
        #[arg(required = true)]
        policies: Vec<PathBuf>,
    },
    /// Plan one operation of a job against the real directories (read-only) and print it.
    Plan {
        /// The policy file.
        policy: PathBuf,
        /// The job.
        #[arg(long)]
        job: String,
        /// The operation.
        #[arg(long)]
        op: String,
        /// The backup set to restore from [default: the newest].
        #[arg(long)]
        set: Option<String>,
        /// Print the versioned plan document (docs/plan-format.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Dry-run jobs in a modelled world, with faults injected, and check the safety invariants.
    ///
    /// Exit status: 0 every invariant held in every scenario; 1 bad input (policy, world,
    /// plugin); 2 bad command line; 3 a plugin refused to plan in the world; 4 an invariant broke.
    Simulate {
        /// Policy files or directories of them.
        #[arg(required = true)]
        policies: Vec<PathBuf>,
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// Only this operation [default: every operation the job allows].
        #[arg(long)]
        op: Option<String>,
        /// The world fixture (docs/simulation.md) [default: worlds/<policy name>.toml beside
        /// each policy].
        #[arg(long, conflicts_with = "from_tree")]
        world: Option<PathBuf>,
        /// Model the world on a read-only scan of the jobs' real directories.
        #[arg(long)]
        from_tree: bool,
        /// Which failures to inject.
        #[arg(long, value_enum, default_value = "none")]
        faults: Faults,
        /// Print the versioned JSON report (docs/simulation.md) instead of text.
        #[arg(long)]
        json: bool,
        /// Also write JUnit XML here: one test case per scenario.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Carry out one operation of a job for real, journaled, with its cleanup always run.
    ///
    /// Exit status: 0 completed; 1 bad input, nothing ran; 3 the plugin refused to plan;
    /// 4 the product needs attention (a cleanup step failed or an invariant broke);
    /// 5 a step failed, the cleanup ran and the product is as the cleanup left it.
    Run(RunArgs),
    /// Finish runs that died (power cut, kill -9): run their unfinished cleanup, remove their
    /// partial backup sets, and mark them failed.
    ///
    /// Every command, service and root a recovery uses comes from the current policy, by the
    /// logical names the journal records: the policies given here (files or directories), or
    /// else the policy file each run recorded. A journal that names something the policy does
    /// not map is not recovered.
    ///
    /// Exit status: 0 nothing to recover, or all recovered; 4 a recovery needs attention.
    Recover {
        /// The site policies (files or directories) [default: the one each run recorded].
        policies: Vec<PathBuf>,
        /// Confirm manual cleanup steps without asking.
        #[arg(long)]
        yes: bool,
        /// Print one JSON event per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup set into a scratch directory beside the sets, never over the live
    /// product, and check it there: the product's own checks of a restored tree (Exchange
    /// every ESE page, mailwise every database with its mirror), then every entry against the
    /// set's manifest, bytes and metadata. The result is recorded beside the set: `hokan sets`
    /// shows it, and retention never prunes the newest set that passed. The same as `hokan run
    /// --op restore-test`, which a job's `schedule_op` can name.
    ///
    /// Exit status: as `hokan run`; 5 the set did not come back whole (the reason names the
    /// file, the page or the difference).
    RestoreTest {
        /// The policy file.
        policy: PathBuf,
        /// The job whose sets are tested.
        #[arg(long)]
        job: String,
        /// The set to test [default: the newest that matches its manifest].
        #[arg(long)]
        set: Option<String>,
        /// Print one JSON event per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a job's backup sets, complete or not.
    Sets {
        /// The policy file.
        policy: PathBuf,
        /// The job.
        #[arg(long)]
        job: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash a backup set against its manifest and report every difference.
    ///
    /// Exit status: 0 the set matches; 1 it cannot be read; 4 it differs from its manifest.
    Verify {
        /// The set's directory.
        set: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show what the scheduler would run from one instant until another, and what it would hold
    /// back and why (a run that cannot start within its maximum start delay, a window too short
    /// for its estimate, a product activity in the way). The same input always gives the same
    /// answer: nothing is running at --from, and every run takes its estimate.
    ///
    /// Exit status: 0 every job could be scheduled; 1 a policy, plugin or scheduling field is
    /// wrong (the other jobs are still shown).
    Schedule {
        /// Policy files or directories of them.
        #[arg(required = true)]
        policies: Vec<PathBuf>,
        /// Start of the period, RFC 3339 (`2026-11-01T00:00:00+09:00`) [default: now].
        #[arg(long)]
        from: Option<String>,
        /// End of the period (exclusive), RFC 3339 [default: a week after --from].
        #[arg(long)]
        until: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the scheduled jobs of a policy directory as their slots come due, until SIGTERM.
    ///
    /// Before scheduling anything it recovers runs a previous daemon left unfinished. Each run
    /// is a `hokan run` process with its log under <state-dir>/logs/; the history of every slot
    /// is in <state-dir>/history.sqlite. Changed policy files are re-read; one that no longer
    /// loads keeps its previous version. On SIGTERM, running runs finish their current step and
    /// their cleanup before the daemon exits. `hokan status` asks it what it is doing.
    Daemon {
        /// The policy directory (or one policy file).
        policies: PathBuf,
        /// Serve `/metrics` (Prometheus' text format) on this address, e.g. 127.0.0.1:9797.
        /// Any address but loopback needs --http-token-file.
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// A file holding the bearer token HTTP requests must carry (`Authorization: Bearer
        /// TOKEN`); a file rather than an argument, so that `ps` does not show it.
        #[arg(long, value_name = "FILE", requires = "http")]
        http_token_file: Option<PathBuf>,
        /// While a run's cleanup waits for a server that could not be reached (maintenance
        /// mode left on there), run `hokan recover` again this often, e.g. `5m`, `30s`, `1h`.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = positive_duration)]
        recover_every: std::time::Duration,
    },
    /// Ask the running daemon for its next runs, running and waiting jobs, last results and
    /// policy errors.
    ///
    /// Exit status: 0 it answered; 1 no daemon answers for this --state-dir.
    Status {
        /// Print the daemon's JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the daemon's notifications from its outbox in --state-dir, newest first: each
    /// event, the channel it was routed to, whether it was delivered, and how many attempts it
    /// took. With --event, every attempt at that event (the delivery log).
    ///
    /// Exit status: 0 listed; 1 there is no history in --state-dir.
    Notifications {
        /// Show every attempt at this event (its id, as listed).
        #[arg(long)]
        event: Option<String>,
        /// List at most this many deliveries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write one customer site's month of backups as a self-contained HTML page, from the
    /// daemon's run history in --state-dir: each scheduled job's success rate, skipped and
    /// missed slots, run times and set sizes over the month (inline SVG), the failures with
    /// their reasons, and the last restore test of its sets. The month is the site's.
    ///
    /// Exit status: 0 written; 1 the policy, the month or the history cannot be read.
    Report {
        /// The site's policy file.
        policy: PathBuf,
        /// The month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// Write the page here [default: standard output].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Serve a hokan host over standard input and output: the far end of a remote server's
    /// connection, which the host starts there. It opens the roots the host grants and answers
    /// the facts a plugin plans from, inside those roots only. Its output is the protocol
    /// (docs/remote.md); its messages go to standard error.
    ///
    /// Exit status: 0 the host closed the connection; 1 the handshake was refused (another
    /// protocol version, a root that is not absolute or cannot be opened) or the connection
    /// failed.
    Agent {
        /// Where it records the commands it starts, which outlive the connection [default:
        /// /var/lib/hokan/agent for root, else $XDG_STATE_HOME/hokan/agent or
        /// ~/.local/state/hokan/agent].
        #[arg(long, value_name = "DIR")]
        ledger: Option<PathBuf>,
        /// Run one ledger entry's command and record how it ended (the agent starts this,
        /// detached, for each command).
        #[arg(long, value_name = "ENTRY", hide = true)]
        supervise: Option<PathBuf>,
    },
    /// Check every page checksum of an ESE database (Exchange's Priv.edb, Pub.edb), both the
    /// legacy XOR-32 and the ECC-32/XOR-32 format, and list each bad page as -1018.
    ///
    /// Exit status: 0 every page is good; 1 the file cannot be read or is not an ESE database
    /// (or is truncated); 4 pages are corrupt.
    EseCheck {
        /// The database file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// What `hokan servers` does.
#[derive(Subcommand, Debug)]
pub enum ServersCommand {
    /// For each server of the sites: reachable over ssh, its host key the pinned one, its
    /// agent this hokan's version, each of the jobs' roots there readable (and writable where
    /// the plugin writes it) with its free space, and the jobs' mapped programs present. An
    /// unknown host key is reported with the fingerprint to pin, never accepted.
    ///
    /// Exit status: 0 every server is ready; 1 bad input (a policy); 4 a server has a problem.
    Check {
        /// Policy files or directories of them.
        #[arg(required = true)]
        policies: Vec<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copies this hokan to a server as its agent, at the path its `agent` setting names, when
    /// the server has none there, a broken one, or another version; then checks that it
    /// answers. Only over ssh with the server's pinned host key, and only to a server of the
    /// system this hokan is built for. The login needs a shell: a key restricted to
    /// `hokan agent` cannot install.
    ///
    /// Exit status: 0 installed or already there; 1 it could not be installed (the message
    /// says why and what to do).
    InstallAgent {
        /// The policy file of the server's site.
        policy: PathBuf,
        /// The server's name in the policy.
        #[arg(long)]
        server: String,
        /// Copy it even when the agent there already is this version.
        #[arg(long)]
        force: bool,
    },
}

/// Arguments of `hokan run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The policy file.
    pub policy: PathBuf,
    /// Read the policy's text from POLICY but treat it as this file (relative paths, error
    /// messages): `hokan daemon` runs the version of a policy it validated, kept in its state
    /// directory, even after the file was changed.
    #[arg(long, hide = true)]
    pub policy_origin: Option<PathBuf>,
    /// The job.
    #[arg(long)]
    pub job: String,
    /// The operation.
    #[arg(long)]
    pub op: String,
    /// The backup set to restore from [default: the newest that matches its manifest].
    #[arg(long)]
    pub set: Option<String>,
    /// Confirm manual steps without asking (each is journaled as acknowledged).
    #[arg(long)]
    pub yes: bool,
    /// Copy every file of a backup afresh instead of hard-linking the unchanged ones from the
    /// previous set: a set that shares no file with any other.
    #[arg(long)]
    pub no_links: bool,
    /// Run inside this window, HH:MM-HH:MM in the site's time (as a job's `window`): the
    /// opening that contains now, or else the next. A product that keeps maintenance windows
    /// (mailwise) sets exactly it, and no data step runs outside it. Without it, such a product
    /// sets one from now for the run's estimate. `hokan daemon` passes the job's `window`.
    #[arg(long, value_name = "HH:MM-HH:MM")]
    pub window: Option<String>,
    /// Print one JSON event per line (docs/execution.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Which failures `simulate` injects.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    /// Only the normal run.
    None,
    /// Also each step failing, timing out, and the host crashing right after it.
    EachStep,
}

/// Parses the command line, runs the command, and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOKAN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    match commands::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes in one line, each cause once: many of hokan's errors already name
/// their cause in their own message (so that `to_string` alone says everything), and anyhow's
/// `{:#}` would then print it a second time.
/// A duration of the command line, in jiff's friendly format (`30s`, `5m`, `1h 30m`) or ISO
/// 8601 (`PT5M`); zero and negative ones are refused.
fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("`{text}` is not a duration like 30s, 5m or 1h: {e}"))?;
    std::time::Duration::try_from(d)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{text}`: give a duration longer than zero"))
}

pub(crate) fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_operators_write_them_and_zero_is_refused() {
        let secs = |t: &str| super::positive_duration(t).map(|d| d.as_secs());
        assert_eq!(secs("5m"), Ok(300));
        assert_eq!(secs("30s"), Ok(30));
        assert_eq!(secs("1h 30m"), Ok(5400));
        assert_eq!(secs("PT2M"), Ok(120));
        assert!(secs("0s").unwrap_err().contains("longer than zero"));
        assert!(secs("-5m").unwrap_err().contains("longer than zero"));
        assert!(secs("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_printed_twice() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(hokan::execute::fs::FsError {
            what: "cannot read data:/mw".into(),
            source: io,
        });
        let once = super::message(&e);
        assert_eq!(once.matches("entity not found").count(), 1, "{once}");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::message(&e), "outer: inner");
    }
}
