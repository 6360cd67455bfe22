//! Where each root of a run is: on the host (a cap-std [`Roots`]), or on a server reached over
//! ssh, whose agent acts on it ([`crate::remote::ssh::Session`]). Every file action, walk,
//! digest and copy of the executor goes through [`Places`], which sends it to the machine the
//! root is on; the rules (what a copy keeps, which names a pattern chooses, when a copy links)
//! are the same code on both, since the agent is this binary.
//!
//! One session per server carries a run's work. A session whose connection failed is replaced
//! by a new one, tried with backoff ([`Link::session`]): a command the lost one started runs on
//! in the server's ledger, and is waited for again by its id.

use super::fs::{self, FsError, Removed, Roots};
use crate::plan::Location;
use crate::plan::pattern::Selection;
use crate::policy::Ssh;
use crate::remote::ssh::{ActionError, Session};
use crate::tree::{Attrs, Bytes, Copied, CopyOptions, Node, RelPath};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long to wait before each attempt to reach a server again after its connection failed.
pub const RECONNECT_BACKOFF: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(4),
];

/// One server reached over ssh, and the session to it, opened when first needed.
pub struct Link {
    server: String,
    ssh: Ssh,
    /// Its roots: names to paths on the server.
    roots: BTreeMap<String, String>,
    /// The ones file actions may change.
    writable: BTreeSet<String>,
    session: Mutex<Option<Arc<Session>>>,
    /// When [`Link::session`] last gave up on the server, and why; cleared when it answers.
    gave_up: Mutex<Option<(Instant, String)>>,
}

impl Link {
    /// A server's link; nothing is connected until the first action needs it.
    pub fn new(
        server: &str,
        ssh: Ssh,
        roots: BTreeMap<String, String>,
        writable: BTreeSet<String>,
    ) -> Link {
        Link {
            server: server.into(),
            ssh,
            roots,
            writable,
            session: Mutex::new(None),
            gave_up: Mutex::new(None),
        }
    }

    /// The server's name in the policy.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The open session, or a new one when there is none or its connection failed: tried
    /// after each wait of [`RECONNECT_BACKOFF`], none past `deadline`.
    pub fn session(&self, deadline: Option<Instant>) -> Result<Arc<Session>, String> {
        let mut held = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = held.as_ref().filter(|s| !s.lost()) {
            return Ok(s.clone());
        }
        let reconnecting = held.take().is_some();
        // A server already given up on in this run is tried once more, not through the whole
        // backoff again: each cleanup step and invariant that needs it would wait that long.
        let tries = if self
            .gave_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            &RECONNECT_BACKOFF[..1]
        } else {
            &RECONNECT_BACKOFF[..]
        };
        let mut last = String::new();
        for (i, wait) in tries.iter().enumerate() {
            if i > 0 && deadline.is_some_and(|d| Instant::now() + *wait > d) {
                break;
            }
            std::thread::sleep(*wait);
            match Session::connect_granting(
                &self.server,
                &self.ssh,
                self.roots.clone(),
                self.writable.clone(),
            ) {
                Ok(s) => {
                    *self.gave_up.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    if reconnecting {
                        tracing::warn!("server `{}`: reconnected", self.server);
                    }
                    let s = Arc::new(s);
                    *held = Some(s.clone());
                    return Ok(s);
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    last = e.to_string();
                }
            }
        }
        *self.gave_up.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), last.clone()));
        Err(last)
    }

    /// Carries on with a session opened before the run (to plan it), when it grants exactly
    /// what this link would and still answers (the operator may have read the plan for a
    /// while, and a dropped idle connection must not fail the first file action); otherwise the
    /// first action logs in anew.
    pub fn adopt(&self, c: &crate::planner::Connected) {
        use crate::facts::FactSource;
        if c.roots != self.roots || c.writable != self.writable {
            tracing::debug!(
                "server `{}`: the planning session grants other roots; the run opens its own",
                self.server
            );
            return;
        }
        let answers = c.roots.keys().next().is_some_and(|root| {
            !c.session.lost() && c.session.exists(&Location::new(root, "")).is_ok()
        });
        if !answers {
            tracing::debug!(
                "server `{}`: the planning session no longer answers; the run opens its own",
                self.server
            );
            return;
        }
        let mut held = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_none() {
            *held = Some(c.session.clone());
        }
    }

    /// Whether the session opened last failed or was closed: the next action reconnects.
    pub fn lost(&self) -> bool {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|s| s.lost())
    }

    /// Why the server could not be reached, if [`Link::session`] gave up on it at or after
    /// `since` and it has not answered since.
    pub fn unreachable_since(&self, since: Instant) -> Option<String> {
        self.gave_up
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, why)| why.clone())
    }
}

/// The roots of a run, each on the machine it is on.
#[derive(Default)]
pub struct Places {
    /// The roots on the host.
    pub local: Roots,
    /// Root names on servers, to their server's link.
    pub remote: BTreeMap<String, Arc<Link>>,
    /// Links to servers that only run commands (none of the run's roots is there).
    rootless: Mutex<BTreeMap<String, Arc<Link>>>,
}

/// The most files, and bytes, one `digests` question asks of a server: few round trips, yet
/// each answered well within the session's time limit for one question.
const DIGESTS_PER_QUESTION: (usize, u64) = (1024, 256 << 20);

/// `files` in runs that each keep within [`DIGESTS_PER_QUESTION`] (a file bigger than the byte
/// limit is a run of its own).
fn digest_chunks(files: &[(RelPath, u64)]) -> Vec<&[(RelPath, u64)]> {
    let (most, bytes) = DIGESTS_PER_QUESTION;
    let mut out = Vec::new();
    let (mut start, mut sum) = (0, 0u64);
    for (i, (_, size)) in files.iter().enumerate() {
        if i > start && (i - start == most || sum.saturating_add(*size) > bytes) {
            out.push(&files[start..i]);
            (start, sum) = (i, 0);
        }
        sum = sum.saturating_add(*size);
    }
    if start < files.len() {
        out.push(&files[start..]);
    }
    out
}

/// Where one location is.
enum At<'a> {
    Here,
    There(&'a Link),
}

fn failed(l: &Location, e: impl std::fmt::Display) -> FsError {
    FsError {
        what: l.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl Places {
    fn at(&self, l: &Location) -> At<'_> {
        match self.remote.get(&l.root) {
            Some(link) => At::There(link),
            None => At::Here,
        }
    }

    /// The server a root is on; `None` for the host.
    pub fn server_of(&self, root: &str) -> Option<&str> {
        self.remote.get(root).map(|l| l.server())
    }

    fn session(&self, link: &Link, l: &Location) -> Result<Arc<Session>, FsError> {
        link.session(None).map_err(|e| failed(l, e))
    }

    /// A session action's error as a file action's.
    fn action<T>(l: &Location, r: Result<T, ActionError>) -> Result<T, FsError> {
        r.map_err(|e| failed(l, e))
    }

    /// Whether anything (a link included) is at the location.
    pub fn exists(&self, l: &Location) -> Result<bool, FsError> {
        match self.at(l) {
            At::Here => self.local.exists(l),
            At::There(link) => {
                use crate::facts::FactSource;
                self.session(link, l)?.exists(l).map_err(|e| failed(l, e))
            }
        }
    }

    /// Bytes free on the volume of a root.
    pub fn free_space(&self, root: &str) -> Result<u64, FsError> {
        let l = Location::new(root, "");
        match self.at(&l) {
            At::Here => {
                let path = self.local.path(&l)?;
                crate::facts::available_space(&path).map_err(|source| FsError {
                    what: path.display().to_string(),
                    source,
                })
            }
            At::There(link) => {
                use crate::facts::FactSource;
                self.session(link, &l)?
                    .free_space(root)
                    .map_err(|e| failed(&l, e))
            }
        }
    }

    /// Writes a file whole.
    pub fn write_file(&self, l: &Location, contents: &[u8]) -> Result<(), FsError> {
        match self.at(l) {
            At::Here => self.local.write_file(l, contents),
            At::There(link) => Self::action(l, self.session(link, l)?.write_file(l, contents)),
        }
    }

    /// Removes a file, link or tree; `false` when nothing was there.
    pub fn remove(&self, l: &Location) -> Result<bool, FsError> {
        match self.at(l) {
            At::Here => self.local.remove(l),
            At::There(link) => Self::action(l, self.session(link, l)?.remove(l)),
        }
    }

    /// Renames within one root.
    pub fn rename(&self, from: &Location, to: &Location) -> Result<(), FsError> {
        match self.at(from) {
            At::Here => self.local.rename(from, to),
            At::There(link) => Self::action(from, self.session(link, from)?.rename(from, to)),
        }
    }

    /// Makes a directory and its parents; `false` when it was there.
    pub fn ensure_dir(&self, l: &Location) -> Result<bool, FsError> {
        match self.at(l) {
            At::Here => self.local.ensure_dir(l),
            At::There(link) => Self::action(l, self.session(link, l)?.ensure_dir(l)),
        }
    }

    /// Removes the regular files of `dir` that `chosen` selects, on whichever machine the
    /// directory is.
    pub fn remove_files(&self, dir: &Location, chosen: &Selection) -> Result<Removed, FsError> {
        match self.at(dir) {
            At::Here => self.local.remove_files(dir, |name| chosen.selects(name)),
            At::There(link) => self.session(link, dir)?.remove_files(dir, chosen),
        }
    }

    /// Every entry at and below a location ([`Roots::scan`]).
    pub fn scan(&self, l: &Location, xattrs: Attrs) -> Result<Vec<Node>, FsError> {
        match self.at(l) {
            At::Here => self.local.scan(l, xattrs),
            At::There(link) => self.session(link, l)?.scan(l, xattrs),
        }
    }

    /// The digests of many files below a location, each with its own error, in their order:
    /// on the host hashed in parallel, on a server asked a chunk at a time (one round trip
    /// each, hashed there in parallel). `Err` only when the server cannot be asked.
    pub fn digests(
        &self,
        l: &Location,
        files: &[(RelPath, u64)],
    ) -> Result<Vec<Result<String, String>>, FsError> {
        use rayon::prelude::*;
        match self.at(l) {
            At::Here => Ok(files
                .par_iter()
                .map(|(rel, size)| self.local.digest(l, rel, *size).map_err(|e| e.to_string()))
                .collect()),
            At::There(link) => {
                let mut out = Vec::with_capacity(files.len());
                for chunk in digest_chunks(files) {
                    out.extend(self.session(link, l)?.digests(l, chunk)?);
                }
                Ok(out)
            }
        }
    }

    /// The digest of the file `rel` below a location ([`Roots::digest`]).
    pub fn digest(&self, l: &Location, rel: &RelPath, size: u64) -> Result<String, FsError> {
        match self.at(l) {
            At::Here => self.local.digest(l, rel, size),
            At::There(link) => self.session(link, l)?.digest(l, rel, size),
        }
    }

    /// The names in a directory, as bytes.
    pub fn names(&self, l: &Location) -> Result<Vec<Bytes>, FsError> {
        match self.at(l) {
            At::Here => fs::names(&self.local, l),
            // A walk's direct children: names as bytes, whatever their encoding.
            At::There(link) => Ok(self
                .session(link, l)?
                .scan(l, Attrs::None)?
                .into_iter()
                .filter(|n| !n.path.is_empty() && n.path.parent().is_empty())
                .map(|n| Bytes(n.path.as_bytes().to_vec()))
                .collect()),
        }
    }

    /// An ESE database's file, which is read here: only on the host.
    pub fn open_file(&self, l: &Location) -> Result<std::fs::File, FsError> {
        match self.at(l) {
            At::Here => self.local.open_file(l),
            At::There(link) => Err(failed(
                l,
                format!(
                    "it is on `{}`; this check reads the file on the host, so run it on the \
                     backup set's copy instead",
                    link.server()
                ),
            )),
        }
    }

    /// Copies a tree ([`fs::copy_tree`]) between any two places: within the host, from a
    /// server to the host (a backup: `opts` links from the previous set there), from the host
    /// to a server (a restore), or within one server. All or nothing on either side.
    ///
    /// A copy cut off because its server's connection failed is made again over a new one
    /// (each side has removed what it had made of it), up to [`RECONNECT_BACKOFF`]'s tries and
    /// within `opts.deadline`: a link that drops for a moment does not fail the step. A copy
    /// that fails for any other reason is not tried again.
    pub fn copy(
        &self,
        from: &Location,
        to: &Location,
        opts: &CopyOptions<'_>,
    ) -> Result<Copied, FsError> {
        let mut tries = 1;
        loop {
            let copied = self.copy_once(from, to, opts);
            let Err(e) = &copied else { return copied };
            let cut = [from, to].into_iter().find_map(|l| match self.at(l) {
                At::There(link) if link.lost() => Some(link),
                _ => None,
            });
            match cut {
                Some(link)
                    if tries < RECONNECT_BACKOFF.len()
                        && opts.deadline.is_none_or(|d| Instant::now() < d) =>
                {
                    tries += 1;
                    tracing::warn!(
                        "server `{}`: the connection failed in the middle of the copy of {from} \
                         to {to} ({e}); copying it again over a new connection",
                        link.server()
                    );
                }
                _ => return copied,
            }
        }
    }

    fn copy_once(
        &self,
        from: &Location,
        to: &Location,
        opts: &CopyOptions<'_>,
    ) -> Result<Copied, FsError> {
        match (self.at(from), self.at(to)) {
            (At::Here, At::Here) => fs::copy_tree(&self.local, from, to, opts),
            (At::There(link), At::Here) => {
                self.session(link, from)?
                    .copy_here(from, &self.local, to, opts)
            }
            (At::Here, At::There(link)) => {
                self.session(link, to)?
                    .copy_there(&self.local, from, to, opts.progress)
            }
            (At::There(a), At::There(b)) if a.server() == b.server() => {
                self.session(a, from)?.copy_within(from, to)
            }
            (At::There(a), At::There(b)) => Err(failed(
                to,
                format!(
                    "{from} is on `{}` and {to} on `{}`: hokan copies between a server and the \
                     host, or within one server, not between two servers; copy into the backup \
                     set first",
                    a.server(),
                    b.server()
                ),
            )),
        }
    }

    /// The servers given up on since `since` (at or after it), each with why: a step that
    /// failed meanwhile failed because it could not reach its server, not because of what it
    /// did there.
    pub fn unreachable_since(&self, since: Instant) -> Vec<(String, String)> {
        let rootless = self.rootless.lock().unwrap_or_else(|p| p.into_inner());
        let mut down: Vec<(String, String)> = self
            .remote
            .values()
            .chain(rootless.values())
            .filter_map(|l| Some((l.server().to_string(), l.unreachable_since(since)?)))
            .collect();
        down.sort();
        down.dedup_by(|a, b| a.0 == b.0);
        down
    }

    /// Whether a location is on the host.
    pub fn is_local(&self, l: &Location) -> bool {
        matches!(self.at(l), At::Here)
    }

    /// The link to `server`, which commands run through: the one of its roots, or one made
    /// for it (from `ssh`, the run's settings) when none of the run's roots is there.
    pub fn link(&self, server: &str, ssh: &BTreeMap<String, Ssh>) -> Result<Arc<Link>, String> {
        if let Some(l) = self.remote.values().find(|l| l.server() == server) {
            return Ok(l.clone());
        }
        let mut rootless = self.rootless.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = rootless.get(server) {
            return Ok(l.clone());
        }
        let settings = ssh
            .get(server)
            .ok_or_else(|| format!("server `{server}` has no ssh settings in the run"))?;
        let l = Arc::new(Link::new(
            server,
            settings.clone(),
            BTreeMap::new(),
            BTreeSet::new(),
        ));
        rootless.insert(server.to_string(), l.clone());
        Ok(l)
    }
}

impl Places {
    /// The host's roots and the links to the servers of the others.
    pub fn new(local: Roots, remote: BTreeMap<String, Arc<Link>>) -> Places {
        Places {
            local,
            remote,
            rootless: Mutex::default(),
        }
    }
}

/// The links of a run's remote roots: one per server, granting its roots (`writable` those a
/// file action may change).
pub fn links(
    remote_roots: &BTreeMap<String, String>,
    roots: &BTreeMap<String, std::path::PathBuf>,
    ssh: &BTreeMap<String, Ssh>,
) -> Result<BTreeMap<String, Arc<Link>>, String> {
    let mut by_server: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for (root, server) in remote_roots {
        let path = roots
            .get(root)
            .ok_or_else(|| format!("the root `{root}` on `{server}` has no path"))?;
        let path = path
            .to_str()
            .ok_or_else(|| format!("the root `{root}` on `{server}` is not a text path"))?;
        by_server
            .entry(server)
            .or_default()
            .insert(root.clone(), path.to_string());
    }
    let mut out = BTreeMap::new();
    for (server, roots) in by_server {
        let ssh = ssh
            .get(server)
            .ok_or_else(|| format!("server `{server}` has no ssh settings in the policy"))?;
        let writable = roots.keys().cloned().collect();
        let link = Arc::new(Link::new(server, ssh.clone(), roots.clone(), writable));
        out.extend(roots.into_keys().map(|r| (r, link.clone())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_questions_keep_within_their_count_and_bytes() {
        let files = |sizes: &[u64]| -> Vec<(RelPath, u64)> {
            sizes
                .iter()
                .enumerate()
                .map(|(i, s)| (RelPath::from(format!("f{i}").as_str()), *s))
                .collect()
        };
        let lens = |f: &[(RelPath, u64)]| -> Vec<usize> {
            digest_chunks(f).iter().map(|c| c.len()).collect()
        };
        assert!(digest_chunks(&[]).is_empty());
        assert_eq!(lens(&files(&[1; 2500])), [1024, 1024, 452]);
        let mib = 1 << 20;
        // 300 MiB alone, then 200 + 56 MiB, then what is left.
        assert_eq!(
            lens(&files(&[300 * mib, 200 * mib, 56 * mib, mib])),
            [1, 2, 1]
        );
        // Every file is asked once, in order.
        let f = files(&[100 * mib; 7]);
        let back: Vec<_> = digest_chunks(&f).concat();
        assert_eq!(back, f);
    }

    #[test]
    fn each_server_gets_one_link_for_all_its_roots_and_a_root_without_settings_is_named() {
        let ssh = Ssh {
            address: "10.0.0.5".into(),
            user: None,
            port: None,
            identity: None,
            agent: "hokan".into(),
            known_hosts: "/etc/hokan/known_hosts".into(),
        };
        let roots = BTreeMap::from([
            ("data".to_string(), "/srv/mw/data".into()),
            ("conf".to_string(), "/srv/mw/conf".into()),
            ("set".to_string(), "/backup/x".into()),
        ]);
        let remote = BTreeMap::from([
            ("data".to_string(), "mw1".to_string()),
            ("conf".to_string(), "mw1".to_string()),
        ]);
        let links = links(&remote, &roots, &BTreeMap::from([("mw1".to_string(), ssh)])).unwrap();
        assert_eq!(links.len(), 2);
        assert!(Arc::ptr_eq(&links["data"], &links["conf"]));
        assert_eq!(
            links["data"].roots,
            BTreeMap::from([
                ("conf".to_string(), "/srv/mw/conf".to_string()),
                ("data".to_string(), "/srv/mw/data".to_string()),
            ])
        );
        let err = super::links(&remote, &roots, &BTreeMap::new())
            .err()
            .unwrap();
        assert!(err.contains("server `mw1` has no ssh settings"), "{err}");
    }
}
