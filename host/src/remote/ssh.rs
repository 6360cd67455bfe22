//! Reaching a server's agent through the system `ssh`, as borg and rsync do: hokan runs
//! `ssh … -- HOST 'AGENT' agent` and speaks the protocol over its stdin and stdout.
//!
//! The policy says only what it must (address, user, port, identity, the agent's path, the
//! site's pinned host keys); everything else (ProxyJump, certificates, an ssh-agent, ciphers)
//! comes from the system's ssh configuration. hokan adds the options that make it safe to run
//! unattended:
//!
//! - `BatchMode=yes`: never a password or passphrase prompt, which would hang a 3 a.m. run;
//! - `StrictHostKeyChecking=yes` with `UserKnownHostsFile` the site's pinned file and
//!   `GlobalKnownHostsFile=/dev/null`: the site's file is the only trust, an unknown key is
//!   refused with the fingerprint to pin ([`SshError::UnknownHostKey`]), never accepted;
//! - no agent, X11 or port forwarding, no tty, no escape character;
//! - keep-alives, so a dead network fails the session instead of hanging it.
//!
//! One [`Session`] per server per run: its connection carries every question of that run.

use super::{RemoteError, RemoteFacts};
use crate::drive::{AtLimit, Output};
use crate::facts::{DirEntry, FactError, FactSource, FileStat, Topology};
use crate::plan::Location;
use crate::policy::Ssh;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long a closing session waits for ssh to exit before it kills it.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// How long ssh may take to connect, log in and have the agent open its roots.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(60);

/// How long one question may take: no longer than the whole plugin call it is asked for may
/// take (the runtime cannot interrupt a plugin while the host answers it).
fn question_limit() -> Duration {
    crate::runtime::Limits::default().call_wall_timeout
}

/// Why a server's agent could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The system ssh could not be started.
    #[error("cannot start `ssh` ({0}); install the openssh-client package")]
    Spawn(std::io::Error),
    /// The server's host key is not in the site's pinned file.
    #[error(
        "server `{server}`: the host key of {address} is not pinned in {}, so ssh refused it. {offered}",
        known_hosts.display()
    )]
    UnknownHostKey {
        /// The server's name in the policy.
        server: String,
        /// What ssh connected to.
        address: String,
        /// The site's pinned host keys.
        known_hosts: PathBuf,
        /// The keys the server offers and how to pin them, or why they could not be read.
        offered: String,
    },
    /// The server's host key differs from the one pinned.
    #[error(
        "server `{server}`: the host key of {address} is NOT the one pinned in {}; ssh refused \
         it. Someone may be intercepting the connection, or the server was reinstalled: ask its \
         administrator, and replace the pinned line only once the new key is confirmed. {offered}",
        known_hosts.display()
    )]
    ChangedHostKey {
        /// The server's name in the policy.
        server: String,
        /// What ssh connected to.
        address: String,
        /// The site's pinned host keys.
        known_hosts: PathBuf,
        /// The keys the server now offers.
        offered: String,
    },
    /// ssh itself failed: no route, refused, authentication.
    #[error("server `{server}`: ssh could not reach {address}: {detail}")]
    Unreachable {
        /// The server's name in the policy.
        server: String,
        /// What ssh connected to.
        address: String,
        /// ssh's own words.
        detail: String,
    },
    /// ssh logged in, but the agent did not shake hands.
    #[error("server `{server}`: `{agent} agent` did not answer as hokan's agent: {error}{stderr}")]
    Agent {
        /// The server's name in the policy.
        server: String,
        /// The command that should have started it.
        agent: String,
        /// What went wrong on the connection.
        error: RemoteError,
        /// What the far side said on its standard error, when anything.
        stderr: String,
    },
}

/// A command to run on a server: the program and its arguments as a list (no shell reads
/// them), where, with what added to its environment, and its time limit.
#[derive(Debug, Clone)]
pub struct RemoteCommand<'a> {
    /// The program, then its arguments.
    pub argv: &'a [String],
    /// Its working directory: a granted root of the session, or a directory in one.
    pub cwd: Option<&'a Location>,
    /// Variables added to its environment.
    pub env: &'a [(String, String)],
    /// Its time limit.
    pub timeout: Option<Duration>,
    /// What happens at the limit.
    pub at_limit: AtLimit,
}

/// Why a remote command or file action has no result.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The connection failed: a command runs on, in the ledger (reconnect and ask again with
    /// the same id); a file action may or may not have happened (each is safe to repeat).
    #[error("{0}")]
    Connection(FactError),
    /// A command was not started (no such program, a working directory outside the roots),
    /// or the ledger cannot say how it ended; a file action was refused or failed.
    #[error("{0}")]
    Failed(String),
}

/// ssh's options that hokan sets, before the destination (see the module's documentation).
pub fn options(ssh: &Ssh) -> Vec<OsString> {
    let mut o: Vec<OsString> = Vec::new();
    let mut opt = |s: OsString| {
        o.push("-o".into());
        o.push(s);
    };
    opt("BatchMode=yes".into());
    opt("StrictHostKeyChecking=yes".into());
    opt(config_path("UserKnownHostsFile=", &ssh.known_hosts));
    opt("GlobalKnownHostsFile=/dev/null".into());
    opt("UpdateHostKeys=no".into());
    opt("ConnectTimeout=15".into());
    opt("ServerAliveInterval=15".into());
    opt("ServerAliveCountMax=4".into());
    opt("ForwardAgent=no".into());
    opt("ForwardX11=no".into());
    opt("ClearAllForwardings=yes".into());
    opt("LogLevel=ERROR".into());
    if let Some(i) = &ssh.identity {
        opt(config_path("IdentityFile=", i));
        opt("IdentitiesOnly=yes".into());
    }
    if let Some(p) = ssh.port {
        opt(format!("Port={p}").into());
    }
    if let Some(u) = &ssh.user {
        opt(format!("User={u}").into());
    }
    o.extend(["-T".into(), "-e".into(), "none".into()]);
    o
}

/// `option` with a path as its value: absolute, `%` doubled (ssh expands `%` tokens in these
/// options) and quoted when it holds spaces; as bytes, so a name that is not UTF-8 reaches ssh
/// as it is.
fn config_path(option: &str, p: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut value = Vec::new();
    for b in p.as_os_str().as_bytes() {
        value.push(*b);
        if *b == b'%' {
            value.push(b'%');
        }
    }
    if value.iter().any(u8::is_ascii_whitespace) {
        value.insert(0, b'"');
        value.push(b'"');
    }
    let mut out = option.as_bytes().to_vec();
    out.extend(value);
    OsString::from_vec(out)
}

/// The full argv of the ssh that starts the agent. ssh hands the remote command to the login's
/// shell as one string, so the agent's path is quoted for it.
pub fn argv(ssh: &Ssh) -> Result<Vec<OsString>, String> {
    let agent = shlex::try_quote(&ssh.agent)
        .map_err(|e| format!("the agent path `{}` cannot be quoted: {e}", ssh.agent))?;
    let mut a = options(ssh);
    a.extend(["--".into(), ssh.address.clone().into()]);
    a.push(format!("{agent} agent").into());
    Ok(a)
}

/// What ssh says on standard error, drained while it runs (a full pipe would stall it) and
/// kept as a command's output is kept ([`crate::execute::transport::read_capped`]).
struct Stderr(mpsc::Receiver<String>);

impl Stderr {
    fn drain(pipe: impl Read + Send + 'static) -> Stderr {
        let (tx, said) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(crate::execute::transport::read_capped(pipe));
        });
        Stderr(said)
    }

    /// Everything it said, once ssh closed it; nothing when that takes longer than `wait`.
    fn text(&self, wait: Duration) -> String {
        self.0
            .recv_timeout(wait)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }
}

/// Kills a session's ssh when a handshake or a question outlives its limit: a server whose
/// disk hangs (a dead NFS mount under a root) or whose agent never answers must fail the plan,
/// not hang it. ssh's keep-alives cover a dead network; this covers a live one that is silent.
struct Watchdog {
    state: Arc<(Mutex<Watch>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Watch {
    deadline: Option<Instant>,
    fired: bool,
    stop: bool,
}

impl Watchdog {
    /// Watches `pid` (ssh, not yet reaped while the watchdog lives), armed for `limit`.
    fn start(pid: u32, limit: Duration) -> Watchdog {
        let state = Arc::new((
            Mutex::new(Watch {
                deadline: Some(Instant::now() + limit),
                ..Watch::default()
            }),
            std::sync::Condvar::new(),
        ));
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let (lock, cv) = &*shared;
            let mut w = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !w.stop {
                match w.deadline {
                    Some(d) if Instant::now() >= d => {
                        // SAFETY: kill(2) on ssh's pid, which cannot have been reused: the
                        // session reaps ssh only after this thread has stopped.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                        w.fired = true;
                        w.deadline = None;
                    }
                    Some(d) => {
                        let wait = d.saturating_duration_since(Instant::now());
                        w = cv
                            .wait_timeout(w, wait)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    None => w = cv.wait(w).unwrap_or_else(|p| p.into_inner()),
                }
            }
        });
        Watchdog {
            state,
            thread: Some(thread),
        }
    }

    fn set(&self, deadline: Option<Instant>) -> bool {
        let (lock, cv) = &*self.state;
        let mut w = lock.lock().unwrap_or_else(|p| p.into_inner());
        // A deadline moved later needs no wake-up: the thread finds it when the earlier one
        // comes. A copy re-arms for every piece that arrives, and waking the thread each time
        // cost a context switch per 64 KiB block and per file.
        let later = matches!((w.deadline, deadline), (Some(old), Some(new)) if new >= old);
        w.deadline = deadline;
        if !later {
            cv.notify_all();
        }
        w.fired
    }

    /// Arms it for one question.
    fn arm(&self, limit: Duration) {
        self.set(Some(Instant::now() + limit));
    }

    /// Disarms it; whether it fired (and ssh is gone).
    fn disarm(&self) -> bool {
        self.set(None)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        {
            let (lock, cv) = &*self.state;
            lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
            cv.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the agent sends, read through a buffer: a copy arrives as many small frames.
type Incoming = std::io::BufReader<ChildStdout>;
/// What the host sends, buffered: each request is flushed whole, a stream once at its end.
type Outgoing = std::io::BufWriter<ChildStdin>;

/// A connection to one server's agent: its facts, over one ssh for the whole run.
pub struct Session {
    server: String,
    /// Set once the connection failed or was closed: a new session must be opened.
    lost: std::sync::atomic::AtomicBool,
    facts: Option<RemoteFacts<Incoming, Outgoing>>,
    watchdog: Option<Watchdog>,
    child: Child,
}

impl Session {
    /// Starts `ssh` to `server` and shakes hands with its agent, granting `roots` (paths on
    /// that server). Facts the host answers itself (the topology, the clock) are not asked.
    pub fn connect(
        server: &str,
        ssh: &Ssh,
        roots: BTreeMap<String, String>,
    ) -> Result<Session, SshError> {
        Self::connect_granting(server, ssh, roots, BTreeSet::new())
    }

    /// [`Session::connect`], also letting file actions change the roots of `writable`.
    pub fn connect_granting(
        server: &str,
        ssh: &Ssh,
        roots: BTreeMap<String, String>,
        writable: BTreeSet<String>,
    ) -> Result<Session, SshError> {
        let argv = argv(ssh).map_err(|detail| SshError::Unreachable {
            server: server.into(),
            address: ssh.address.clone(),
            detail,
        })?;
        let mut child = Command::new("ssh")
            .args(&argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(SshError::Spawn)?;
        let stderr = Stderr::drain(child.stderr.take().expect("piped"));
        let (r, w) = (
            std::io::BufReader::with_capacity(1 << 18, child.stdout.take().expect("piped")),
            std::io::BufWriter::with_capacity(1 << 18, child.stdin.take().expect("piped")),
        );
        let watchdog = Watchdog::start(child.id(), HANDSHAKE_LIMIT);
        let shaken = RemoteFacts::connect_granting(r, w, roots, writable, Topology::default(), 0);
        let timed_out = watchdog.disarm();
        match (shaken, timed_out) {
            (Ok(facts), false) => Ok(Session {
                server: server.into(),
                lost: Default::default(),
                facts: Some(facts),
                watchdog: Some(watchdog),
                child,
            }),
            (shaken, true) => {
                drop((shaken, watchdog));
                wait_bounded(&mut child);
                Err(SshError::Unreachable {
                    server: server.into(),
                    address: ssh.address.clone(),
                    detail: format!(
                        "no answer from ssh and `{} agent` within {} s; hokan closed the \
                         connection{}",
                        ssh.agent,
                        HANDSHAKE_LIMIT.as_secs(),
                        match stderr.text(Duration::from_secs(2)) {
                            s if s.is_empty() => String::new(),
                            s => format!("; it said: {s}"),
                        }
                    ),
                })
            }
            (Err(error), false) => {
                drop(watchdog);
                let status = wait_bounded(&mut child);
                let said = stderr.text(Duration::from_secs(2));
                Err(classify(server, ssh, error, status, said))
            }
        }
    }

    /// Asks one question under the watchdog.
    fn ask<T>(
        &self,
        q: impl FnOnce(&RemoteFacts<Incoming, Outgoing>) -> Result<T, FactError>,
    ) -> Result<T, FactError> {
        let watchdog = self.watchdog.as_ref().expect("open until dropped");
        let limit = question_limit();
        watchdog.arm(limit);
        let answer = q(self.facts());
        if watchdog.disarm() {
            self.lose();
            return Err(FactError::Io(format!(
                "server `{}` did not answer within {} s; hokan closed the connection",
                self.server,
                limit.as_secs()
            )));
        }
        if let Err(FactError::Io(_)) = &answer {
            self.lose();
        }
        answer
    }

    /// A file action or copy under the watchdog, re-armed by `tick` as a copy makes progress:
    /// a copy of any size runs as long as pieces keep arriving, and one that stalls for a
    /// question's limit is cut off. Its error names the server.
    fn act_io<T>(
        &self,
        q: impl FnOnce(&RemoteFacts<Incoming, Outgoing>, &(dyn Fn() + Sync)) -> std::io::Result<T>,
    ) -> Result<T, crate::execute::fs::FsError> {
        let watchdog = self.watchdog.as_ref().expect("open until dropped");
        let limit = question_limit();
        watchdog.arm(limit);
        let answer = q(self.facts(), &|| watchdog.arm(limit));
        let fired = watchdog.disarm();
        let what = format!("server `{}`", self.server);
        if fired {
            self.lose();
            return Err(crate::execute::fs::FsError {
                what,
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no answer within {} s; hokan closed the connection",
                        limit.as_secs()
                    ),
                ),
            });
        }
        answer.map_err(|source| {
            if source.kind() == std::io::ErrorKind::ConnectionAborted {
                self.lose();
            }
            crate::execute::fs::FsError { what, source }
        })
    }

    fn lose(&self) {
        self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the connection failed or was closed: nothing more can be asked on it.
    pub fn lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Walks a tree on the server.
    pub fn scan(
        &self,
        at: &Location,
        xattrs: crate::tree::Attrs,
    ) -> Result<Vec<crate::tree::Node>, crate::execute::fs::FsError> {
        self.act_io(|f, _| f.scan(at, xattrs))
    }

    /// The digest of a file at or below `at` on the server.
    pub fn digest(
        &self,
        at: &Location,
        rel: &crate::tree::RelPath,
        size: u64,
    ) -> Result<String, crate::execute::fs::FsError> {
        self.act_io(|f, _| f.digest(at, rel, size))
    }

    /// The digests of files below a location on the server, each with its own error.
    pub fn digests(
        &self,
        at: &Location,
        files: &[(crate::tree::RelPath, u64)],
    ) -> Result<Vec<Result<String, String>>, crate::execute::fs::FsError> {
        self.act_io(|f, _| f.digests(at, files))
    }

    /// Removes the files of a directory on the server that `chosen` selects.
    pub fn remove_files(
        &self,
        dir: &Location,
        chosen: &crate::plan::pattern::Selection,
    ) -> Result<crate::execute::fs::Removed, crate::execute::fs::FsError> {
        self.act_io(|f, _| f.remove_files(dir, chosen))
    }

    /// Copies a tree within the server.
    pub fn copy_within(
        &self,
        from: &Location,
        to: &Location,
    ) -> Result<crate::tree::Copied, crate::execute::fs::FsError> {
        self.act_io(|f, _| f.copy_within(from, to))
    }

    /// Copies the server's `from` to `to` in the host's `roots` ([`RemoteFacts::copy_here`]).
    pub fn copy_here(
        &self,
        from: &Location,
        roots: &crate::execute::fs::Roots,
        to: &Location,
        opts: &crate::tree::CopyOptions<'_>,
    ) -> Result<crate::tree::Copied, crate::execute::fs::FsError> {
        let mut inner = None;
        let outer = self.act_io(|f, tick| {
            match f.copy_here(from, roots, to, opts, tick) {
                Ok(c) => Ok(c),
                // The host's own error (its disk, a file that changed) keeps its words; only
                // the connection's is the session's.
                Err(e) if e.source.kind() == std::io::ErrorKind::ConnectionAborted => {
                    Err(std::io::Error::new(e.source.kind(), e.to_string()))
                }
                Err(e) => {
                    inner = Some(e);
                    Err(std::io::Error::other("the copy failed"))
                }
            }
        });
        match (outer, inner) {
            (_, Some(e)) => Err(e),
            (r, None) => r,
        }
    }

    /// Copies the host's `from` in `roots` to `to` on the server ([`RemoteFacts::copy_there`]),
    /// reporting (bytes sent, bytes in all) to `progress` as each file is sent.
    pub fn copy_there(
        &self,
        roots: &crate::execute::fs::Roots,
        from: &Location,
        to: &Location,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<crate::tree::Copied, crate::execute::fs::FsError> {
        self.act_io(|f, tick| f.copy_there(roots, from, to, tick, progress))
    }

    /// Runs a command on the server under the ledger's `id`, detached from this connection,
    /// and waits for its end or its time limit, as the local transport does (`at_limit`: kill
    /// its process group, or report and wait on). Calling it again with the same id, on this
    /// session or a new one after the connection was lost, starts nothing and goes on waiting
    /// for the same command: the ledger has it.
    pub fn exec(&self, id: &str, cmd: RemoteCommand<'_>) -> Result<Output, ActionError> {
        use super::Request;
        let entry = self
            .ask(|f| {
                f.ledger(Request::Start {
                    id: id.into(),
                    argv: cmd.argv.to_vec(),
                    cwd: cmd.cwd.cloned(),
                    env: cmd.env.to_vec(),
                })
            })
            .map_err(ActionError::Connection)?;
        self.follow(id, entry, &cmd.argv[0], cmd.timeout, cmd.at_limit)?
            .ok_or_else(|| {
                ActionError::Failed(format!(
                    "the ledger on `{}` has no command `{id}`",
                    self.server
                ))
            })
    }

    /// How the command `id` an earlier hokan started here ended, without starting anything:
    /// one still running is waited for, within `timeout` (and at it killed or reported, as
    /// `at_limit` says). `None` when the ledger has no such command: it never started.
    pub fn settle(
        &self,
        id: &str,
        program: &str,
        timeout: Option<Duration>,
        at_limit: AtLimit,
    ) -> Result<Option<Output>, ActionError> {
        let entry = self
            .ask(|f| {
                f.ledger(super::Request::Wait {
                    id: id.into(),
                    max_ms: 10,
                })
            })
            .map_err(ActionError::Connection)?;
        self.follow(id, entry, program, timeout, at_limit)
    }

    /// Follows a ledger entry to the command's end; `None` for a command the ledger does not
    /// have.
    fn follow(
        &self,
        id: &str,
        mut entry: super::Entry,
        program: &str,
        timeout: Option<Duration>,
        at_limit: AtLimit,
    ) -> Result<Option<Output>, ActionError> {
        use super::{Entry, Request};
        let lost = ActionError::Connection;
        let started = Instant::now();
        let mut deadline = timeout.map(|t| started + t);
        let mut overran = false;
        let mut killed = false;
        loop {
            match entry {
                Entry::Exited {
                    code,
                    signal: _,
                    stdout,
                    stderr,
                } => {
                    return Ok(Some(Output {
                        code: if killed { None } else { code },
                        timed_out: killed,
                        overran,
                        stdout,
                        stderr,
                    }));
                }
                Entry::Failed { error } => return Err(ActionError::Failed(error)),
                Entry::Unknown => return Ok(None),
                Entry::Running { pid } => {
                    if let Some(d) = deadline.filter(|d| Instant::now() >= *d) {
                        if at_limit == AtLimit::Report {
                            overran = true;
                            tracing::warn!(
                                "`{program}` on `{}` (process group {pid}) is still running after {} s, \
                                 past its time limit; it must never be killed, so hokan keeps \
                                 waiting. Stop it yourself only if you must: kill -TERM -{pid} \
                                 on {}",
                                self.server,
                                started.elapsed().as_secs(),
                                self.server
                            );
                            deadline = timeout.map(|t| d + t);
                        } else {
                            killed = true;
                            entry = self
                                .ask(|f| f.ledger(Request::Kill { id: id.into() }))
                                .map_err(lost)?;
                            continue;
                        }
                    }
                    let wait = deadline.map_or(super::ledger::MAX_WAIT_MS, |d| {
                        d.saturating_duration_since(Instant::now())
                            .as_millis()
                            .clamp(10, u128::from(super::ledger::MAX_WAIT_MS))
                            as u32
                    });
                    entry = self
                        .ask(|f| {
                            f.ledger(Request::Wait {
                                id: id.into(),
                                max_ms: wait,
                            })
                        })
                        .map_err(lost)?;
                }
            }
        }
    }

    /// Writes a file on the server whole, as the host writes one locally.
    pub fn write_file(&self, at: &Location, contents: &[u8]) -> Result<(), ActionError> {
        self.act(super::Request::WriteFile {
            at: at.clone(),
            contents: contents.to_vec(),
        })
        .map(|_| ())
    }

    /// Removes a file, link or tree on the server; `false` when nothing was there.
    pub fn remove(&self, at: &Location) -> Result<bool, ActionError> {
        self.act(super::Request::Remove { at: at.clone() })
    }

    /// Renames within one root on the server; refused when the new name exists.
    pub fn rename(&self, from: &Location, to: &Location) -> Result<(), ActionError> {
        self.act(super::Request::Rename {
            from: from.clone(),
            to: to.clone(),
        })
        .map(|_| ())
    }

    /// Makes a directory and its parents on the server; `false` when it was there.
    pub fn ensure_dir(&self, at: &Location) -> Result<bool, ActionError> {
        self.act(super::Request::EnsureDir { at: at.clone() })
    }

    fn act(&self, q: super::Request) -> Result<bool, ActionError> {
        self.ask(|f| f.action(q))
            .map_err(ActionError::Connection)?
            .map_err(ActionError::Failed)
    }

    /// Asks the server about its roots and the programs the policy maps (`servers check`).
    pub fn check(&self, programs: Vec<String>) -> Result<super::ServerCheck, FactError> {
        self.ask(|f| f.check(programs))
    }

    /// The server's name in the policy.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The hokan version the agent said it is.
    pub fn agent_version(&self) -> &str {
        self.facts().agent_version()
    }

    /// The agent's side of the connection; every question goes through [`Session::ask`], under
    /// the watchdog.
    fn facts(&self) -> &RemoteFacts<Incoming, Outgoing> {
        self.facts.as_ref().expect("open until dropped")
    }
}

impl Drop for Session {
    /// Closes the agent's stdin, which ends it, and waits a bounded time for ssh to exit.
    fn drop(&mut self) {
        drop(self.facts.take());
        // The watchdog stops before ssh is reaped, so it can never signal a reused pid.
        drop(self.watchdog.take());
        wait_bounded(&mut self.child);
    }
}

/// ssh's exit status once it exits, killing it after [`CLOSE_WAIT`].
fn wait_bounded(child: &mut Child) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + CLOSE_WAIT;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                return child.wait().ok();
            }
        }
    }
}

/// Why a handshake failed, from what ssh said and how it exited.
fn classify(
    server: &str,
    ssh: &Ssh,
    error: RemoteError,
    status: Option<std::process::ExitStatus>,
    said: String,
) -> SshError {
    let server = server.to_string();
    let address = ssh.address.clone();
    // ssh exits 255 for its own failures; anything else is the remote command's status.
    let ssh_failed = status.and_then(|s| s.code()) == Some(255);
    if ssh_failed && said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        return SshError::ChangedHostKey {
            offered: offered(ssh, true),
            server,
            address,
            known_hosts: ssh.known_hosts.clone(),
        };
    }
    if ssh_failed
        && (said.contains("Host key verification failed") || said.contains("host key is known for"))
    {
        return SshError::UnknownHostKey {
            offered: offered(ssh, false),
            server,
            address,
            known_hosts: ssh.known_hosts.clone(),
        };
    }
    if ssh_failed {
        return SshError::Unreachable {
            server,
            address,
            detail: if said.is_empty() {
                "ssh exited 255 without saying why".into()
            } else {
                said
            },
        };
    }
    let hint = match status.and_then(|s| s.code()) {
        Some(127) => format!(
            " (exit 127: no `{}` there; install this hokan on the server and set the server's \
             `agent` to its path)",
            ssh.agent
        ),
        _ => String::new(),
    };
    SshError::Agent {
        server,
        agent: ssh.agent.clone(),
        error,
        stderr: if said.is_empty() {
            hint
        } else {
            format!("{hint}; it said: {said}")
        },
    }
}

/// The host keys the server offers now, as fingerprints to compare with the server's own and
/// the exact known_hosts lines that pin those same keys (not a command that would scan again,
/// and could pin another key than the one compared); or why they could not be read from here.
fn offered(ssh: &Ssh, changed: bool) -> String {
    let mut scan = Command::new("ssh-keyscan");
    scan.args(["-T", "5"]);
    if let Some(p) = ssh.port {
        scan.args(["-p", &p.to_string()]);
    }
    scan.arg("--").arg(&ssh.address);
    let keys = match scan.stderr(Stdio::null()).output() {
        Ok(o) if !o.stdout.is_empty() => o.stdout,
        Ok(_) => {
            return "ssh-keyscan could not read its keys from this host (behind a ProxyJump, \
                    scan from the jump host); get them from the server's administrator and add \
                    them to the file."
                .into();
        }
        Err(e) => return format!("ssh-keyscan could not run ({e}) to show its keys."),
    };
    let prints = fingerprints(&keys).unwrap_or_default();
    let lines: Vec<&str> = std::str::from_utf8(&keys)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    let file = ssh.known_hosts.display();
    let remove = if changed {
        let host = match ssh.port {
            Some(p) if p != 22 => format!("[{}]:{p}", ssh.address),
            _ => ssh.address.clone(),
        };
        format!(
            "remove the old line (`ssh-keygen -f {} -R {}`), then ",
            shlex::try_quote(&file.to_string()).unwrap_or_default(),
            shlex::try_quote(&host).unwrap_or_default()
        )
    } else {
        String::new()
    };
    format!(
        "It offers:\n  {}\nCompare with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` run on \
         the server itself; if they match, {remove}pin them by adding these lines to {file}:\n  {}",
        if prints.is_empty() {
            "keys ssh-keygen could not fingerprint".to_string()
        } else {
            prints.join("\n  ")
        },
        lines.join("\n  ")
    )
}

/// `ssh-keygen -lf -` of keyscan lines: `256 SHA256:… host (ED25519)`, one per key.
fn fingerprints(keys: &[u8]) -> std::io::Result<Vec<String>> {
    use std::io::Write;
    let mut kg = Command::new("ssh-keygen")
        .args(["-l", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    kg.stdin.take().expect("piped").write_all(keys)?;
    let out = kg.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

impl FactSource for Session {
    fn exists(&self, p: &Location) -> Result<bool, FactError> {
        self.ask(|f| f.exists(p))
    }
    fn list_dir(&self, p: &Location) -> Result<Vec<DirEntry>, FactError> {
        self.ask(|f| f.list_dir(p))
    }
    fn stat(&self, p: &Location) -> Result<FileStat, FactError> {
        self.ask(|f| f.stat(p))
    }
    fn tree_size(&self, p: &Location) -> Result<u64, FactError> {
        self.ask(|f| f.tree_size(p))
    }
    fn free_space(&self, root: &str) -> Result<u64, FactError> {
        self.ask(|f| f.free_space(root))
    }
    fn same_volume(&self, a: &str, b: &str) -> Result<bool, FactError> {
        self.ask(|f| f.same_volume(a, b))
    }
    fn read(&self, p: &Location, max_bytes: u32) -> Result<Vec<u8>, FactError> {
        self.ask(|f| f.read(p, max_bytes))
    }
    fn now_ms(&self) -> i64 {
        self.facts().now_ms()
    }
    fn topology(&self) -> Topology {
        self.facts().topology()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh() -> Ssh {
        Ssh {
            address: "mw1.example".into(),
            user: Some("hokan".into()),
            port: Some(2222),
            identity: Some(PathBuf::from("/etc/hokan/keys/id 100%")),
            agent: "/opt/hokan tools/hokan".into(),
            known_hosts: PathBuf::from("/etc/hokan/acme.known_hosts"),
        }
    }

    #[test]
    fn the_argv_pins_the_sites_keys_never_prompts_and_quotes_the_agent_for_the_remote_shell() {
        let a: Vec<String> = argv(&ssh())
            .unwrap()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let opts: Vec<&str> = a
            .windows(2)
            .filter(|w| w[0] == "-o")
            .map(|w| w[1].as_str())
            .collect();
        for o in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/etc/hokan/acme.known_hosts",
            "GlobalKnownHostsFile=/dev/null",
            "UpdateHostKeys=no",
            "ForwardAgent=no",
            "IdentityFile=\"/etc/hokan/keys/id 100%%\"",
            "IdentitiesOnly=yes",
            "Port=2222",
            "User=hokan",
        ] {
            assert!(opts.contains(&o), "{o} missing from {opts:?}");
        }
        // The destination after `--` (an address can never be read as an option), then one
        // remote command string with the agent's path quoted.
        let n = a.len();
        assert_eq!(
            a[n - 3..],
            ["--", "mw1.example", "'/opt/hokan tools/hokan' agent"]
        );
        assert!(!a.contains(&"-A".to_string()));
    }

    #[test]
    fn the_watchdog_kills_a_silent_peer_at_its_deadline_and_never_after_being_disarmed() {
        use std::os::unix::process::ExitStatusExt;
        let mut silent = Command::new("sleep").arg("30").spawn().unwrap();
        let started = Instant::now();
        let w = Watchdog::start(silent.id(), Duration::from_millis(100));
        let status = silent.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(w.disarm(), "it says it fired");
        drop(w);
        // Armed and disarmed in time: the process lives on.
        let mut busy = Command::new("sleep").arg("30").spawn().unwrap();
        let w = Watchdog::start(busy.id(), Duration::from_secs(30));
        w.arm(Duration::from_millis(50));
        assert!(!w.disarm());
        std::thread::sleep(Duration::from_millis(200));
        drop(w);
        assert!(busy.try_wait().unwrap().is_none(), "not killed");
        busy.kill().unwrap();
        busy.wait().unwrap();
    }

    #[test]
    fn what_ssh_said_decides_the_error() {
        let s = ssh();
        let e = |said: &str, code: i32| {
            use std::os::unix::process::ExitStatusExt;
            classify(
                "mw1",
                &s,
                RemoteError::Garbled("closed".into()),
                Some(std::process::ExitStatus::from_raw(code << 8)),
                said.into(),
            )
        };
        assert!(matches!(
            e("ssh: connect to host mw1.example port 2222: Connection refused", 255),
            SshError::Unreachable { detail, .. } if detail.contains("Connection refused")
        ));
        assert!(matches!(
            e("bash: line 1: /opt/hokan tools/hokan: No such file or directory", 127),
            SshError::Agent { stderr, .. } if stderr.contains("exit 127") && stderr.contains("No such file")
        ));
        assert!(matches!(e("", 1), SshError::Agent { .. }));
    }
}
