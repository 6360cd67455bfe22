//! Reaching a product's server through `hokan agent` (issue 18; this is its first part: the
//! protocol, the handshake, and the facts a plugin plans from).
//!
//! As borg and restic do, the host starts the same binary on the far side (over `ssh`, later)
//! and the two speak over its stdin and stdout:
//!
//! - **Frames.** A 4-byte big-endian length, then that many bytes of JSON (one message). A
//!   frame longer than [`MAX_FRAME`] is refused: a confused peer never makes the other side
//!   allocate what it claims.
//! - **Handshake.** The host sends [`Hello`]: the protocol version it speaks and the roots the
//!   job was granted, as paths on that server. The agent answers [`Welcome`] with its own
//!   version, or refuses a version it does not speak, naming both. It opens each root with
//!   cap-std (as [`crate::facts::RealFacts`] does locally) and serves nothing outside them; the
//!   host's validation of the plan still runs first, on the host.
//! - **Requests.** One [`Request`] frame, one [`Reply`] frame, in order. Paths are
//!   root-relative with `/`, whatever the server's system, so the protocol stays OS-neutral.
//!
//! [`RemoteFacts`] is the host's side: a [`crate::facts::FactSource`] whose questions go to an
//! agent.

pub mod agent;
pub mod check;
pub mod install;
pub mod ledger;
pub mod ssh;
pub mod stream;

use crate::facts::{DirEntry, FactError, FactSource, FileStat, Topology};
use crate::plan::Location;
use crate::tree::RelPath;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::Mutex;

/// The protocol version this hokan speaks. 2: `digests`, many files' digests in one question.
pub const PROTOCOL: u32 = 2;

/// The largest frame either side accepts: a small read's bytes, a directory's listing.
pub const MAX_FRAME: u32 = 16 << 20;

/// What went wrong between the host and an agent.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The connection failed or closed.
    #[error("the agent connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// A frame that is not a message of the protocol.
    #[error("the agent sent what the protocol does not have ({0})")]
    Garbled(String),
    /// A frame over [`MAX_FRAME`].
    #[error("a frame of {0} bytes is over the protocol's limit of {MAX_FRAME}")]
    TooLarge(u32),
    /// The agent refused the handshake.
    #[error("the agent refused: {0}")]
    Refused(String),
}

/// Writes one message as a frame, and flushes it: the peer may be waiting for it.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), RemoteError> {
    put_frame(w, msg)?;
    w.flush()?;
    Ok(())
}

/// Writes one message as a frame into `w`'s buffer, without flushing: for the many frames of a
/// stream, which its sender flushes once at its end (a flush per 64 KiB block, or per small
/// file, made ssh carry the copy in small pieces).
pub fn put_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), RemoteError> {
    let body = serde_json::to_vec(msg).map_err(|e| RemoteError::Garbled(e.to_string()))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|n| *n <= MAX_FRAME)
        .ok_or(RemoteError::TooLarge(u32::MAX))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    Ok(())
}

/// Reads one message; `Ok(None)` when the peer closed the connection between frames.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> Result<Option<T>, RemoteError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(RemoteError::TooLarge(len));
    }
    let mut body = vec![0; len as usize];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| RemoteError::Garbled(e.to_string()))
}

/// The host's first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the host speaks.
    pub protocol: u32,
    /// The host's hokan version, for messages.
    pub hokan: String,
    /// The job's granted roots: names to absolute paths on the agent's server, as the policy
    /// writes them (TOML strings, so nothing is lost by their being text).
    pub roots: BTreeMap<String, String>,
    /// The roots among them that file actions may change. Planning grants none: the agent
    /// then refuses every write, whatever the host asks, besides the host's own validation.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub writable: BTreeSet<String>,
}

/// The agent's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Welcome {
    /// It speaks the host's version and opened the roots.
    Welcome {
        /// Its protocol version.
        protocol: u32,
        /// Its hokan version.
        hokan: String,
    },
    /// It does not, or a root cannot be opened: why, naming both versions or the root.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A question about the granted roots (the facts a plugin plans from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Whether anything exists at a location.
    Exists {
        /// Where.
        at: Location,
    },
    /// A directory's entries.
    ListDir {
        /// Where.
        at: Location,
    },
    /// A path's metadata, symlinks not followed.
    Stat {
        /// Where.
        at: Location,
    },
    /// The size of the files below a location.
    TreeSize {
        /// Where.
        at: Location,
    },
    /// The free space of a root's volume.
    FreeSpace {
        /// The root.
        root: String,
    },
    /// Whether two roots share a volume.
    SameVolume {
        /// One root.
        a: String,
        /// The other.
        b: String,
    },
    /// A small file's bytes.
    Read {
        /// Where.
        at: Location,
        /// Refused above this.
        max_bytes: u32,
    },
    /// What `hokan servers check` asks: each root's state, and whether each program is there.
    Check {
        /// Programs as the policy maps them: a path, or a name looked up on the agent's PATH.
        programs: Vec<String>,
    },
    /// Starts a command detached from the connection and records it in the agent's ledger
    /// under `id`. Starting an id that is already there starts nothing: a host that lost the
    /// answer asks again without running the command twice.
    Start {
        /// The ledger's key for it: the run, step and attempt (letters, digits, `.`, `_`, `-`).
        id: String,
        /// The program and its arguments, as a list: no shell ever reads them.
        argv: Vec<String>,
        /// Where it runs: a granted root, or a directory in one.
        cwd: Option<Location>,
        /// Variables added to its environment.
        env: Vec<(String, String)>,
    },
    /// What the ledger knows about `id`, waiting up to `max_ms` for it to end.
    Wait {
        /// The ledger's key.
        id: String,
        /// How long to wait for it to end before answering that it still runs (at most
        /// [`ledger::MAX_WAIT_MS`]).
        max_ms: u32,
    },
    /// Kills `id`'s process group (its time limit passed).
    Kill {
        /// The ledger's key.
        id: String,
    },
    /// Writes a file whole (a temporary beside it, synced, renamed over it).
    WriteFile {
        /// Where.
        at: Location,
        /// Its bytes.
        contents: Vec<u8>,
    },
    /// Removes a file, a link or a tree; `done: false` when nothing was there.
    Remove {
        /// Where.
        at: Location,
    },
    /// Renames within one root; refused when the new name exists.
    Rename {
        /// The old name.
        from: Location,
        /// The new one.
        to: Location,
    },
    /// Makes a directory and its parents; `done: false` when it was there.
    EnsureDir {
        /// Where.
        at: Location,
    },
    /// Walks a tree ([`crate::tree::scan`]): its entries with their metadata.
    Scan {
        /// Where.
        at: Location,
        /// Whose extended attributes to read.
        xattrs: crate::tree::Attrs,
    },
    /// The digest of a regular file at or below a location ([`crate::tree::digest`]).
    Digest {
        /// The location.
        at: Location,
        /// The file below it (empty for the location itself).
        rel: RelPath,
        /// Its size, as a walk saw it.
        size: u64,
    },
    /// The digests of many regular files below a location, in one question: a verify of a
    /// tree on a server would otherwise wait for one round trip per file.
    Digests {
        /// The location.
        at: Location,
        /// Each file below it, with its size as a walk saw it.
        files: Vec<(RelPath, u64)>,
    },
    /// Removes the regular files of a directory whose names the patterns choose, as
    /// [`crate::execute::fs::Roots::remove_files`] does on the host.
    RemoveFiles {
        /// The directory.
        dir: Location,
        /// Which names (its fields are the request's own: `patterns`, `except`,
        /// `ignore_case`).
        #[serde(flatten)]
        chosen: crate::plan::pattern::Selection,
    },
    /// Sends these regular files below `at` as [`stream::Chunk`]s, in order (the host's copy
    /// from this server). No reply follows the chunks.
    SendFiles {
        /// The copy's source.
        at: Location,
        /// The files, relative to it.
        files: Vec<RelPath>,
    },
    /// Makes the tree walked on the host (`nodes`) at `to`, which must not exist: the agent
    /// answers [`Reply::Want`] with the files it needs, reads them as [`stream::Chunk`]s, and
    /// answers [`Reply::Copied`] (or [`Reply::ActionFailed`], having removed what it made).
    ReceiveTree {
        /// Where it is on the host, for messages.
        from: Location,
        /// Where, in a writable root.
        to: Location,
        /// The walk, as [`crate::tree::scan`] made it on the host.
        nodes: Vec<crate::tree::Node>,
    },
    /// Copies a tree within this server, as the host copies within itself.
    CopyTree {
        /// The source.
        from: Location,
        /// The destination, which must not exist, in a writable root.
        to: Location,
    },
}

/// A command as the agent's ledger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Entry {
    /// Still running.
    Running {
        /// Its process id on the server.
        pid: u32,
    },
    /// Ended.
    Exited {
        /// Its exit code; `None` when a signal ended it.
        code: Option<i32>,
        /// The signal that ended it.
        signal: Option<i32>,
        /// Standard output, capped as the local transport caps it.
        stdout: String,
        /// Standard error, capped.
        stderr: String,
    },
    /// It could not be started (no such program, a working directory that is not there).
    Failed {
        /// Why.
        error: String,
    },
    /// The ledger has no such id.
    Unknown,
}

/// A server's answer to [`Request::Check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCheck {
    /// The granted roots, by name.
    pub roots: BTreeMap<String, RootCheck>,
    /// The programs asked about, and whether each is an executable file there.
    pub programs: BTreeMap<String, bool>,
}

/// One root as its server sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCheck {
    /// It is a directory the agent opened.
    pub exists: bool,
    /// Its entries can be listed.
    pub readable: bool,
    /// Files can be made in it (the agent's user, its mount).
    pub writable: bool,
    /// Bytes free on its volume (of its nearest existing parent when it is missing).
    pub free_bytes: Option<u64>,
}

/// An answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", content = "value", rename_all = "kebab-case")]
pub enum Reply {
    /// A yes or no.
    Bool(bool),
    /// A listing.
    Entries(Vec<DirEntry>),
    /// Metadata.
    Stat(FileStat),
    /// A size in bytes.
    Bytes(u64),
    /// A file's content.
    Content(Vec<u8>),
    /// The answer to [`Request::Check`].
    Check(ServerCheck),
    /// A ledger entry: the answer to [`Request::Start`], [`Request::Wait`] and
    /// [`Request::Kill`].
    Entry(Entry),
    /// A file action's result: it changed something (`true`) or found it already so.
    Done(bool),
    /// A file action that failed (refused, or the filesystem's error), with why. Not an
    /// [`Reply::Error`], which is the connection's.
    ActionFailed(String),
    /// The fact could not be given, as the local source would have said.
    Error(FactError),
    /// A walk ([`Request::Scan`]).
    Nodes(Vec<crate::tree::Node>),
    /// A file's digest ([`Request::Digest`]).
    Digest(String),
    /// Each file's digest, or why it has none, in the order asked ([`Request::Digests`]).
    Digests(Vec<Result<String, String>>),
    /// What [`Request::RemoveFiles`] removed.
    Removed(crate::execute::fs::Removed),
    /// The files an agent receiving a tree needs ([`Request::ReceiveTree`]).
    Want(Vec<RelPath>),
    /// What a copy on the agent's side did.
    Copied(crate::tree::Copied),
    /// A file action failed because what it names is not there (a walk of a source that is
    /// gone), with why.
    NotFound(String),
}

/// Facts from a remote server's agent: the plugin's questions go over the connection, one at a
/// time; the topology and the clock are the host's.
pub struct RemoteFacts<R, W> {
    conn: Mutex<(R, W)>,
    /// Set when a copy left the connection out of step: nothing more is asked on it.
    closed: std::sync::atomic::AtomicBool,
    topology: Topology,
    now_ms: i64,
    agent: String,
}

impl<R: Read + Send, W: Write + Send> RemoteFacts<R, W> {
    /// Shakes hands over `(r, w)`, granting `roots` (paths on the server) read-only.
    pub fn connect(
        r: R,
        w: W,
        roots: BTreeMap<String, String>,
        topology: Topology,
        now_ms: i64,
    ) -> Result<Self, RemoteError> {
        Self::connect_granting(r, w, roots, BTreeSet::new(), topology, now_ms)
    }

    /// [`RemoteFacts::connect`], also letting file actions change the roots of `writable`.
    pub fn connect_granting(
        mut r: R,
        mut w: W,
        roots: BTreeMap<String, String>,
        writable: BTreeSet<String>,
        topology: Topology,
        now_ms: i64,
    ) -> Result<Self, RemoteError> {
        write_frame(
            &mut w,
            &Hello {
                protocol: PROTOCOL,
                hokan: env!("CARGO_PKG_VERSION").to_string(),
                roots,
                writable,
            },
        )?;
        match read_frame::<Welcome>(&mut r)? {
            Some(Welcome::Welcome { hokan, .. }) => Ok(RemoteFacts {
                conn: Mutex::new((r, w)),
                closed: Default::default(),
                topology,
                now_ms,
                agent: hokan,
            }),
            Some(Welcome::Refused { reason }) => Err(RemoteError::Refused(reason)),
            None => Err(RemoteError::Garbled(
                "the agent closed the connection before it answered the handshake".into(),
            )),
        }
    }

    /// The hokan version the agent said it is.
    pub fn agent_version(&self) -> &str {
        &self.agent
    }

    /// Asks the server about its roots and the programs the policy maps.
    pub fn check(&self, programs: Vec<String>) -> Result<ServerCheck, FactError> {
        match self.ask(Request::Check { programs })? {
            Reply::Check(c) => Ok(c),
            r => Err(unexpected(r)),
        }
    }

    /// A ledger request ([`Request::Start`], [`Request::Wait`], [`Request::Kill`]).
    pub fn ledger(&self, q: Request) -> Result<Entry, FactError> {
        match self.ask(q)? {
            Reply::Entry(e) => Ok(e),
            r => Err(unexpected(r)),
        }
    }

    /// A file action ([`Request::WriteFile`], [`Request::Remove`], [`Request::Rename`],
    /// [`Request::EnsureDir`]): `Ok(Err(why))` when the agent refused or the filesystem failed.
    pub fn action(&self, q: Request) -> Result<Result<bool, String>, FactError> {
        match self.ask(q)? {
            Reply::Done(d) => Ok(Ok(d)),
            Reply::ActionFailed(why) => Ok(Err(why)),
            r => Err(unexpected(r)),
        }
    }

    /// Walks a tree on the server.
    pub fn scan(
        &self,
        at: &Location,
        xattrs: crate::tree::Attrs,
    ) -> Result<Vec<crate::tree::Node>, std::io::Error> {
        match self.fs(Request::Scan {
            at: at.clone(),
            xattrs,
        })? {
            Reply::Nodes(n) => Ok(n),
            r => Err(out_of_turn(r)),
        }
    }

    /// The digest of a file on the server.
    pub fn digest(
        &self,
        at: &Location,
        rel: &RelPath,
        size: u64,
    ) -> Result<String, std::io::Error> {
        match self.fs(Request::Digest {
            at: at.clone(),
            rel: rel.clone(),
            size,
        })? {
            Reply::Digest(d) => Ok(d),
            r => Err(out_of_turn(r)),
        }
    }

    /// The digests of files below a location on the server, in one question.
    pub fn digests(
        &self,
        at: &Location,
        files: &[(RelPath, u64)],
    ) -> Result<Vec<Result<String, String>>, std::io::Error> {
        match self.fs(Request::Digests {
            at: at.clone(),
            files: files.to_vec(),
        })? {
            Reply::Digests(d) if d.len() == files.len() => Ok(d),
            Reply::Digests(d) => Err(std::io::Error::other(format!(
                "the agent gave {} digests for {} files",
                d.len(),
                files.len()
            ))),
            r => Err(out_of_turn(r)),
        }
    }

    /// Removes the files of a directory on the server that `chosen` selects.
    pub fn remove_files(
        &self,
        dir: &Location,
        chosen: &crate::plan::pattern::Selection,
    ) -> Result<crate::execute::fs::Removed, std::io::Error> {
        match self.fs(Request::RemoveFiles {
            dir: dir.clone(),
            chosen: chosen.clone(),
        })? {
            Reply::Removed(r) => Ok(r),
            r => Err(out_of_turn(r)),
        }
    }

    /// Copies a tree within the server.
    pub fn copy_within(
        &self,
        from: &Location,
        to: &Location,
    ) -> Result<crate::tree::Copied, std::io::Error> {
        match self.fs(Request::CopyTree {
            from: from.clone(),
            to: to.clone(),
        })? {
            Reply::Copied(c) => Ok(c),
            r => Err(out_of_turn(r)),
        }
    }

    /// Copies the server's tree at `from` to `to` in the host's `roots` (a backup): walked
    /// there, its files' contents streamed here, hashed as they arrive and checked against
    /// the agent's digests. `tick` is called as each piece arrives. On failure nothing of the
    /// copy is left, and the connection is left in step (or closed, when it cannot be).
    pub fn copy_here(
        &self,
        from: &Location,
        roots: &crate::execute::fs::Roots,
        to: &Location,
        opts: &crate::tree::CopyOptions<'_>,
        tick: &(dyn Fn() + Sync),
    ) -> Result<crate::tree::Copied, crate::execute::fs::FsError> {
        let walked = self
            .scan(from, crate::tree::Attrs::ExceptFiles)
            .map_err(|source| crate::execute::fs::FsError {
                what: format!("cannot copy {from} on the server to {to}"),
                source,
            })?;
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let (r, w) = &mut *conn;
        let mut feed = stream::Receiving::new(r, w, stream::Ask::Agent(from.clone()), tick);
        let copied = crate::execute::fs::copy_from_feed(
            roots,
            &walked,
            &mut feed,
            ("the server", from),
            to,
            opts,
        );
        if copied.is_err() && !feed.drain() {
            drop(feed);
            drop(conn);
            self.close();
        }
        copied
    }

    /// Copies the host's tree at `from` in `roots` to `to` on the server (a restore): walked
    /// here, made there, and the files the agent asks for streamed to it. `tick` is called as
    /// each file is sent, and `progress` with (bytes sent, bytes the agent asked for), as a
    /// local copy reports them.
    pub fn copy_there(
        &self,
        roots: &crate::execute::fs::Roots,
        from: &Location,
        to: &Location,
        tick: &(dyn Fn() + Sync),
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<crate::tree::Copied, std::io::Error> {
        let walked = roots
            .scan(from, crate::tree::Attrs::ExceptFiles)
            .map_err(|e| std::io::Error::new(e.source.kind(), e.to_string()))?;
        let sizes: BTreeMap<crate::tree::RelPath, u64> = walked
            .iter()
            .filter(|n| n.meta.kind == crate::tree::Kind::File)
            .map(|n| (n.path.clone(), n.meta.size))
            .collect();
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let (r, w) = &mut *conn;
        let lost = |e: RemoteError| {
            std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e.to_string())
        };
        write_frame(
            w,
            &Request::ReceiveTree {
                from: from.clone(),
                to: to.clone(),
                nodes: walked,
            },
        )
        .map_err(lost)?;
        let mut reply = read_frame::<Reply>(r).map_err(lost)?;
        tick();
        if let Some(Reply::Want(files)) = &reply {
            let size = |f: &crate::tree::RelPath| sizes.get(f).copied().unwrap_or(0);
            let total = files.iter().map(size).fold(0u64, u64::saturating_add);
            let mut done = 0u64;
            for f in files {
                stream::send_files(roots, from, std::slice::from_ref(f), w).map_err(lost)?;
                done = done.saturating_add(size(f));
                progress(done, total);
                tick();
            }
            reply = read_frame::<Reply>(r).map_err(lost)?;
        }
        match reply {
            Some(Reply::Copied(c)) => Ok(c),
            Some(other) => Err(failure(other)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the agent closed the connection in the middle of a copy",
            )),
        }
    }

    /// Closes the connection (it is out of step): every later question fails, and the
    /// agent, its stdin closed, ends.
    fn close(&self) {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let _ = conn.1.flush();
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// A file action whose failure is an [`std::io::Error`]: `ConnectionAborted` when the
    /// connection failed, `NotFound` when the agent found nothing there.
    fn fs(&self, q: Request) -> Result<Reply, std::io::Error> {
        match self.ask(q) {
            Ok(r @ (Reply::ActionFailed(_) | Reply::NotFound(_))) => Err(failure(r)),
            Ok(r) => Ok(r),
            Err(FactError::Io(e)) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                e,
            )),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    fn ask(&self, q: Request) -> Result<Reply, FactError> {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(FactError::Io(
                "the connection was closed after a copy left it out of step".into(),
            ));
        }
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let (r, w) = &mut *conn;
        let io = |e: RemoteError| FactError::Io(e.to_string());
        write_frame(w, &q).map_err(io)?;
        match read_frame::<Reply>(r).map_err(io)? {
            Some(Reply::Error(e)) => Err(e),
            Some(reply) => Ok(reply),
            None => Err(FactError::Io(
                "the agent closed the connection mid-question".into(),
            )),
        }
    }
}

/// An agent's failure reply as the error it stands for.
fn failure(r: Reply) -> std::io::Error {
    match r {
        Reply::NotFound(why) => std::io::Error::new(std::io::ErrorKind::NotFound, why),
        Reply::ActionFailed(why) => std::io::Error::other(why),
        Reply::Error(e) => std::io::Error::other(e.to_string()),
        r => out_of_turn(r),
    }
}

fn out_of_turn(r: Reply) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        format!("the agent answered out of turn: {r:?}"),
    )
}

fn unexpected(r: Reply) -> FactError {
    FactError::Io(format!("the agent answered out of turn: {r:?}"))
}

impl<R: Read + Send, W: Write + Send> FactSource for RemoteFacts<R, W> {
    fn exists(&self, p: &Location) -> Result<bool, FactError> {
        match self.ask(Request::Exists { at: p.clone() })? {
            Reply::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }
    fn list_dir(&self, p: &Location) -> Result<Vec<DirEntry>, FactError> {
        match self.ask(Request::ListDir { at: p.clone() })? {
            Reply::Entries(e) => Ok(e),
            r => Err(unexpected(r)),
        }
    }
    fn stat(&self, p: &Location) -> Result<FileStat, FactError> {
        match self.ask(Request::Stat { at: p.clone() })? {
            Reply::Stat(s) => Ok(s),
            r => Err(unexpected(r)),
        }
    }
    fn tree_size(&self, p: &Location) -> Result<u64, FactError> {
        match self.ask(Request::TreeSize { at: p.clone() })? {
            Reply::Bytes(n) => Ok(n),
            r => Err(unexpected(r)),
        }
    }
    fn free_space(&self, root: &str) -> Result<u64, FactError> {
        match self.ask(Request::FreeSpace { root: root.into() })? {
            Reply::Bytes(n) => Ok(n),
            r => Err(unexpected(r)),
        }
    }
    fn same_volume(&self, a: &str, b: &str) -> Result<bool, FactError> {
        match self.ask(Request::SameVolume {
            a: a.into(),
            b: b.into(),
        })? {
            Reply::Bool(x) => Ok(x),
            r => Err(unexpected(r)),
        }
    }
    fn read(&self, p: &Location, max_bytes: u32) -> Result<Vec<u8>, FactError> {
        match self.ask(Request::Read {
            at: p.clone(),
            max_bytes,
        })? {
            Reply::Content(c) => Ok(c),
            r => Err(unexpected(r)),
        }
    }
    fn now_ms(&self) -> i64 {
        self.now_ms
    }
    fn topology(&self) -> Topology {
        self.topology.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remove_files_request_keeps_its_fields_flat_on_the_wire() {
        let r = Request::RemoveFiles {
            dir: Location::new("data", "logs"),
            chosen: crate::plan::pattern::Selection {
                patterns: vec!["*.jnl".into()],
                except: vec!["keep.jnl".into()],
                ignore_case: true,
            },
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "op": "remove-files",
                "dir": {"root": "data", "path": "logs"},
                "patterns": ["*.jnl"],
                "except": ["keep.jnl"],
                "ignore_case": true
            })
        );
        assert_eq!(serde_json::from_value::<Request>(json).unwrap(), r);
    }

    #[test]
    fn frames_round_trip_and_a_lying_length_is_refused_before_allocating() {
        let mut buf = Vec::new();
        let q = Request::Read {
            at: Location::new("data", "mw/conf.ini"),
            max_bytes: 4096,
        };
        write_frame(&mut buf, &q).unwrap();
        assert_eq!(&buf[..4], &(buf.len() as u32 - 4).to_be_bytes());
        let back: Request = read_frame(&mut buf.as_slice()).unwrap().unwrap();
        assert_eq!(back, q);
        // A clean close between frames, and one inside a frame.
        assert!(read_frame::<Request>(&mut [].as_slice()).unwrap().is_none());
        assert!(matches!(
            read_frame::<Request>(&mut &buf[..buf.len() - 1]),
            Err(RemoteError::Io(_))
        ));
        let huge = (MAX_FRAME + 1).to_be_bytes();
        assert!(matches!(
            read_frame::<Request>(&mut huge.as_slice()),
            Err(RemoteError::TooLarge(n)) if n == MAX_FRAME + 1
        ));
        let mut junk = 3u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{x}");
        assert!(matches!(
            read_frame::<Request>(&mut junk.as_slice()),
            Err(RemoteError::Garbled(_))
        ));
    }
}
