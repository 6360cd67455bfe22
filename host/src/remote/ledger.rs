//! The agent's ledger: commands started on a server, detached from the connection that asked
//! for them, and what became of each, kept on the server's disk. A dropped ssh session does
//! not kill a command (the supervisor that runs it is in its own session, as `setsid` makes
//! it), and a host that reconnects, or a `hokan recover` after the host died, asks the ledger
//! what the command did instead of guessing. As Salt's minion job cache does.
//!
//! One directory per command, `<ledger>/<id>/`:
//!
//! - `command.json`: what to run (argv, working directory, environment), written first;
//! - `pid`: the command's process id (its process group's), once it runs;
//! - `stdout`, `stderr`: its output, the first 16 KiB of each, then how many
//!   more there were;
//! - `exit.json`: how it ended, written last and atomically (a temporary file, fsynced, then
//!   renamed): a directory without it is a command still running, or one whose supervisor
//!   was killed (a power cut), which [`status`] tells apart by the pid.
//!
//! The supervisor is this same binary (`hokan agent --supervise DIR`): it starts the command in
//! its own process group, copies its output (capped), waits, and writes `exit.json`.

use super::Entry;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest one [`super::Request::Wait`] waits before answering that a command still runs,
/// so that every question is answered well within the host's limit for one.
pub const MAX_WAIT_MS: u32 = 10_000;

/// What a supervisor runs.
#[derive(Debug, Serialize, Deserialize)]
struct Command {
    argv: Vec<String>,
    cwd: Option<PathBuf>,
    env: Vec<(String, String)>,
}

/// How a command ended, as `exit.json` records it.
#[derive(Debug, Serialize, Deserialize)]
struct Exit {
    code: Option<i32>,
    signal: Option<i32>,
    error: Option<String>,
}

/// The ledger's directory when `hokan agent` is not given `--ledger`: hokan's state directory
/// for root, the user's XDG state directory otherwise (a login without root cannot write
/// `/var/lib`).
pub fn default_dir() -> PathBuf {
    // Set for the agent's sessions by sshd (`SetEnv`) or the key's `environment=`, for an
    // agent whose ledger belongs elsewhere (and the tests' servers, one ledger each).
    if let Some(dir) = std::env::var_os("HOKAN_AGENT_LEDGER").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/hokan/agent");
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("hokan/agent")
}

/// An id the host may use: one path component of letters, digits, `.`, `_` and `-`.
fn entry_dir(ledger: &Path, id: &str) -> Result<PathBuf, String> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(ledger.join(id))
    } else {
        Err(format!(
            "`{id}` is not a ledger id (letters, digits, `.`, `_`, `-`; not starting with `.`)"
        ))
    }
}

/// Starts `argv` detached under `id`, unless `id` is already in the ledger; then what the
/// ledger knows of it.
pub fn start(
    ledger: &Path,
    id: &str,
    argv: Vec<String>,
    cwd: Option<PathBuf>,
    env: Vec<(String, String)>,
) -> Result<Entry, String> {
    let dir = entry_dir(ledger, id)?;
    if argv.is_empty() {
        return Err("an empty command line".into());
    }
    std::fs::create_dir_all(ledger)
        .map_err(|e| format!("cannot make the ledger {}: {e}", ledger.display()))?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(status(&dir)),
        Err(e) => return Err(format!("cannot write the ledger at {}: {e}", dir.display())),
    }
    crate::durable::write_whole(
        &dir.join("command.json"),
        &serde_json::to_vec(&Command { argv, cwd, env }).expect("serializable"),
    )
    .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this hokan: {e}"))?;
    let mut sup = std::process::Command::new(exe);
    sup.arg("agent")
        .arg("--supervise")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid(2) in the child between fork and exec, which is async-signal-safe: the
    // supervisor leaves the ssh session's process group and controlling terminal, so the
    // session's end (SIGHUP) does not reach it.
    unsafe {
        use std::os::unix::process::CommandExt;
        sup.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = sup
        .spawn()
        .map_err(|e| format!("cannot start the supervisor: {e}"))?;
    // Reaped by a thread so it leaves no zombie while the agent lives; if the agent dies
    // first, init adopts it.
    std::thread::spawn(move || child.wait());
    // Until the command runs (its pid is written) or could not be started.
    let until = Instant::now() + Duration::from_secs(10);
    let mut pause = Backoff::default();
    while !dir.join("pid").exists() && !dir.join("exit.json").exists() && Instant::now() < until {
        pause.sleep();
    }
    Ok(status(&dir))
}

/// What the ledger knows about `id`, waiting up to `max_ms` for it to end.
pub fn wait(ledger: &Path, id: &str, max_ms: u32) -> Result<Entry, String> {
    let dir = entry_dir(ledger, id)?;
    let until = Instant::now() + Duration::from_millis(u64::from(max_ms.min(MAX_WAIT_MS)));
    let mut pause = Backoff::default();
    loop {
        let e = status(&dir);
        if !matches!(e, Entry::Running { .. }) || Instant::now() >= until {
            return Ok(e);
        }
        pause.sleep();
    }
}

/// How often the ledger looks for a command's progress: soon after it starts (most steps are
/// short, and each look costs a stat), then every 32 ms for one that runs on.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn sleep(&mut self) {
        std::thread::sleep(
            Duration::from_millis(1 << self.0.min(5)).min(Duration::from_millis(50)),
        );
        self.0 += 1;
    }
}

/// Kills `id`'s process group; then what the ledger knows (the supervisor records the signal).
pub fn kill(ledger: &Path, id: &str) -> Result<Entry, String> {
    let dir = entry_dir(ledger, id)?;
    if let Entry::Running { pid } = status(&dir) {
        // SAFETY: kill(2) of the command's process group (the supervisor made it the leader
        // of its own group); it touches no memory.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    }
    wait(ledger, id, 2_000)
}

/// One entry's state, from its files.
fn status(dir: &Path) -> Entry {
    if !dir.join("command.json").exists() {
        return Entry::Unknown;
    }
    if let Ok(bytes) = std::fs::read(dir.join("exit.json")) {
        return match serde_json::from_slice::<Exit>(&bytes) {
            Ok(Exit {
                error: Some(error), ..
            }) => Entry::Failed { error },
            Ok(x) => Entry::Exited {
                code: x.code,
                signal: x.signal,
                stdout: std::fs::read_to_string(dir.join("stdout")).unwrap_or_default(),
                stderr: std::fs::read_to_string(dir.join("stderr")).unwrap_or_default(),
            },
            Err(e) => Entry::Failed {
                error: format!("{}/exit.json is damaged: {e}", dir.display()),
            },
        };
    }
    let pid = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
    };
    let (command, supervisor) = (pid("pid"), pid("supervisor"));
    // The supervisor still runs (it writes `exit.json` once the command ends): running.
    if supervisor.is_some_and(|s| supervises(s, dir)) {
        return Entry::Running {
            pid: command.or(supervisor).unwrap_or(0),
        };
    }
    match command {
        // Its supervisor was killed, but the command's process group lives on.
        // SAFETY: kill(2) with signal 0 checks existence only.
        Some(pid) if unsafe { libc::kill(-(pid as i32), 0) } == 0 => Entry::Running { pid },
        // Both gone without a word (a power cut, a kill -9 of the supervisor): the ledger
        // cannot say how it ended, and says so.
        Some(pid) => Entry::Failed {
            error: format!(
                "process {pid} ended, but its supervisor did not record how (was the server \
                 restarted, or the supervisor killed?)"
            ),
        },
        None if supervisor.is_some() => Entry::Failed {
            error: "its supervisor ended before it started the command".into(),
        },
        None => Entry::Unknown,
    }
}

/// Whether process `pid` is the supervisor of `dir`: alive, and its command line names the
/// directory (a pid reused after a restart is another program).
fn supervises(pid: u32, dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == dir.as_os_str().as_bytes())
    })
}

/// The supervisor (`hokan agent --supervise DIR`): runs the entry's command to its end and
/// records how it ended. Its own errors are recorded the same way, as the command's failure.
pub fn supervise(dir: &Path) -> std::io::Result<()> {
    crate::durable::write_whole(
        &dir.join("supervisor"),
        std::process::id().to_string().as_bytes(),
    )?;
    let exit = match run(dir) {
        Ok(x) => x,
        Err(e) => Exit {
            code: None,
            signal: None,
            error: Some(e),
        },
    };
    crate::durable::write_whole(
        &dir.join("exit.json"),
        &serde_json::to_vec(&exit).expect("serializable"),
    )
}

fn run(dir: &Path) -> Result<Exit, String> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let c: Command = serde_json::from_slice(
        &std::fs::read(dir.join("command.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(&c.argv[0]);
    cmd.args(&c.argv[1..])
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    if let Some(d) = &c.cwd {
        cmd.current_dir(d);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", c.argv[0]))?;
    crate::durable::write_whole(&dir.join("pid"), child.id().to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let out = capped(child.stdout.take().expect("piped"), dir.join("stdout"));
    let err = capped(child.stderr.take().expect("piped"), dir.join("stderr"));
    let status = child.wait().map_err(|e| e.to_string())?;
    let _ = (out.join(), err.join());
    Ok(Exit {
        code: status.code(),
        signal: status.signal(),
        error: None,
    })
}

/// Copies a stream into `to`, kept as the local transport keeps output.
fn capped(r: impl Read + Send + 'static, to: PathBuf) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let _ =
            crate::durable::write_whole(&to, crate::execute::transport::read_capped(r).as_bytes());
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_safe_path_component() {
        let l = Path::new("/l");
        assert_eq!(
            entry_dir(l, "20261202T1400Z-mailwise.copy-data.1").unwrap(),
            Path::new("/l/20261202T1400Z-mailwise.copy-data.1")
        );
        for bad in ["", "..", ".hidden", "a/b", "../x", "a b", "a;b"] {
            assert!(entry_dir(l, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_entry_without_its_exit_and_without_a_live_process_is_reported_not_guessed() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(status(d.path()), Entry::Unknown));
        std::fs::write(d.path().join("command.json"), "{}").unwrap();
        assert!(
            matches!(status(d.path()), Entry::Unknown),
            "not started yet"
        );
        // A pid no process group has.
        std::fs::write(d.path().join("pid"), "4194303").unwrap();
        assert!(
            matches!(status(d.path()), Entry::Failed { error } if error.contains("did not record how"))
        );
        std::fs::write(
            d.path().join("exit.json"),
            r#"{"code":7,"signal":null,"error":null}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("stdout"), "out").unwrap();
        assert_eq!(
            status(d.path()),
            Entry::Exited {
                code: Some(7),
                signal: None,
                stdout: "out".into(),
                stderr: String::new()
            }
        );
    }
}
