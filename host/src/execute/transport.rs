//! How commands reach a server. A [`Transport`] runs one command line with a working directory
//! and a time limit and returns its exit status and (size-capped) output. The local transport
//! runs it on the host; other transports (SSH, WinRM) plug in here.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Output kept per stream; the rest is counted, not kept.
pub const OUTPUT_CAP: usize = 16 * 1024;

/// One command to run.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// The executable.
    pub program: &'a str,
    /// Its arguments.
    pub args: &'a [String],
    /// Working directory.
    pub cwd: Option<&'a Path>,
    /// Its time limit.
    pub timeout: Option<Duration>,
    /// What happens at the limit: kill it, or report it and keep waiting (a command that must
    /// never be killed), again each time the limit passes once more.
    pub at_limit: AtLimit,
    /// Variables added to its environment.
    pub env: &'a [(&'static str, String)],
}

/// What a command did: the driver's type, since every backend's commands end in one.
pub use crate::drive::{AtLimit, Output};

/// A command that could not be run at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot run {program}: {source}")]
pub struct TransportError {
    /// The executable.
    pub program: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Runs commands on one server.
pub trait Transport: Send + Sync {
    /// Runs one command to its end or its time limit.
    fn run(&self, inv: &Invocation<'_>) -> Result<Output, TransportError>;
}

/// Runs commands on the host itself, each in its own process group so that a time limit kills
/// everything the command started.
#[derive(Debug, Default, Clone, Copy)]
pub struct Local;

/// A command's output stream read to its end: the first [`OUTPUT_CAP`] bytes kept, the rest
/// counted. Every place that runs a command (here, the agent's ledger) keeps output so.
pub(crate) fn read_capped(mut r: impl Read) -> String {
    let mut kept = Vec::new();
    let mut rest = 0u64;
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = r.read(&mut buf) {
        let room = OUTPUT_CAP.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&buf[..room]);
        rest += (n - room) as u64;
    }
    let mut s = String::from_utf8_lossy(&kept).into_owned();
    if rest > 0 {
        s.push_str(&format!("\n[{rest} more bytes not kept]"));
    }
    s
}

fn capped(r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || read_capped(r))
}

impl Transport for Local {
    fn run(&self, inv: &Invocation<'_>) -> Result<Output, TransportError> {
        use std::os::unix::process::CommandExt;
        let err = |source| TransportError {
            program: inv.program.to_string(),
            source,
        };
        let mut cmd = Command::new(inv.program);
        cmd.args(inv.args)
            .envs(inv.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(d) = inv.cwd {
            cmd.current_dir(d);
        }
        let mut child = cmd.spawn().map_err(err)?;
        let out = capped(child.stdout.take().expect("piped"));
        let errs = capped(child.stderr.take().expect("piped"));
        let started = Instant::now();
        let mut deadline = inv.timeout.map(|t| started + t);
        let mut timed_out = false;
        let mut overran = false;
        let status = loop {
            if let Some(s) = child.try_wait().map_err(err)? {
                break s;
            }
            if let Some(d) = deadline
                && Instant::now() >= d
            {
                if inv.at_limit == AtLimit::Report {
                    // Never killed: say so where the operator looks, with what to stop by
                    // hand if it must be stopped, and wait one more limit.
                    overran = true;
                    tracing::warn!(
                        "`{}` (process group {}) is still running after {} s, past its time                          limit; it must never be killed, so hokan keeps waiting. Stop it                          yourself only if you must: kill -TERM -{}",
                        inv.program,
                        child.id(),
                        started.elapsed().as_secs(),
                        child.id()
                    );
                    deadline = inv.timeout.map(|t| d + t);
                } else {
                    // SAFETY: kill(2) with a negative pid signals the child's process group;
                    // it touches no memory.
                    unsafe {
                        libc::kill(-(child.id() as i32), libc::SIGKILL);
                    }
                    timed_out = true;
                    break child.wait().map_err(err)?;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(Output {
            code: if timed_out { None } else { status.code() },
            timed_out,
            overran,
            stdout: out.join().unwrap_or_default(),
            stderr: errs.join().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Option<Duration>) -> Result<Output, TransportError> {
        let args = vec!["-c".to_string(), script.to_string()];
        Local.run(&Invocation {
            program: "/bin/sh",
            args: &args,
            cwd: Some(Path::new("/")),
            timeout,
            at_limit: AtLimit::Kill,
            env: &[("HOKAN_SERVER", "tw-app1".to_string())],
        })
    }

    #[test]
    fn output_exit_code_cwd_and_environment() {
        let o = sh("pwd; echo $HOKAN_SERVER; echo oops >&2; exit 3", None).unwrap();
        assert_eq!(o.code, Some(3));
        assert_eq!(
            o.stdout, "/\ntw-app1\n",
            "the working directory, then the environment"
        );
        assert_eq!(o.last_line(), Some("oops"));
    }

    #[test]
    fn output_is_capped_and_time_limits_kill_the_group() {
        let o = sh("head -c 100000 /dev/zero | tr '\\0' x", None).unwrap();
        assert!(o.stdout.len() < OUTPUT_CAP + 100);
        assert!(
            o.stdout.ends_with("[83616 more bytes not kept]"),
            "{}",
            &o.stdout[OUTPUT_CAP..]
        );
        let t = Instant::now();
        let o = sh(
            "sleep 30 & sleep 30; echo never",
            Some(Duration::from_millis(200)),
        )
        .unwrap();
        assert!(
            o.timed_out && o.code.is_none() && o.stdout.is_empty(),
            "{o:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the group was not killed"
        );
    }

    #[test]
    fn a_command_that_must_not_be_killed_runs_past_its_limit_to_its_end() {
        let args = vec!["-c".to_string(), "sleep 0.6; echo done".to_string()];
        let o = Local
            .run(&Invocation {
                program: "/bin/sh",
                args: &args,
                cwd: None,
                timeout: Some(Duration::from_millis(150)),
                at_limit: AtLimit::Report,
                env: &[],
            })
            .unwrap();
        assert!(!o.timed_out && o.overran, "{o:?}");
        assert_eq!((o.code, o.stdout.trim()), (Some(0), "done"), "{o:?}");
    }

    #[test]
    fn a_missing_program_says_which() {
        let e = Local
            .run(&Invocation {
                program: "/nonexistent/mw-maintenance",
                args: &[],
                cwd: None,
                timeout: None,
                at_limit: AtLimit::Kill,
                env: &[],
            })
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot run /nonexistent/mw-maintenance: No such file"),
            "{e}"
        );
    }
}
