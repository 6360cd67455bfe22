//! `hokan agent`: the far side of a remote server's connection. It reads the host's
//! [`Hello`], opens the granted roots with cap-std (through [`RealFacts`], as the host does for
//! local roots), and answers [`Request`]s until the host closes the connection.
//!
//! Everything it writes to its standard output is protocol; its messages go to standard error
//! (which ssh shows the host's operator).

use super::{
    Hello, PROTOCOL, RemoteError, Reply, Request, ServerCheck, Welcome, read_frame, write_frame,
};
use crate::execute::fs::Roots;
use crate::facts::{FactSource, RealFacts, Topology};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Serves one host over `(r, w)` until it closes the connection, keeping the commands it
/// starts in the ledger at `ledger`. A handshake it refuses is answered with the reason, then
/// returned as an error.
pub fn serve(
    mut r: impl Read + Send,
    mut w: impl Write + Send,
    ledger: &Path,
) -> Result<(), RemoteError> {
    let Some(hello) = read_frame::<Hello>(&mut r)? else {
        return Ok(());
    };
    let served = match open(&hello) {
        Ok(f) => f,
        Err(reason) => {
            write_frame(
                &mut w,
                &Welcome::Refused {
                    reason: reason.clone(),
                },
            )?;
            return Err(RemoteError::Refused(reason));
        }
    };
    write_frame(
        &mut w,
        &Welcome::Welcome {
            protocol: PROTOCOL,
            hokan: env!("CARGO_PKG_VERSION").to_string(),
        },
    )?;
    while let Some(q) = read_frame::<Request>(&mut r)? {
        match q {
            // Streams: the files' chunks are the answer.
            Request::SendFiles { at, files } => {
                super::stream::send_files(&served.all, &at, &files, &mut w)?;
            }
            Request::ReceiveTree { from, to, nodes } => {
                let reply = receive(&served, &mut r, &mut w, &from, &to, &nodes)?;
                write_frame(&mut w, &reply)?;
            }
            q => write_frame(&mut w, &answer(&served, ledger, q))?,
        }
    }
    Ok(())
}

/// Makes the host's tree `nodes` at `to` with the files' contents the host sends; a copy
/// that fails is removed and answered as failed, once what the host still sends is read.
fn receive(
    served: &Served,
    r: &mut (impl Read + Send),
    w: &mut (impl Write + Send),
    from: &crate::plan::Location,
    to: &crate::plan::Location,
    nodes: &[crate::tree::Node],
) -> Result<Reply, RemoteError> {
    if let Some(refused) = served.read_only(to) {
        return Ok(refused);
    }
    let mut feed = super::stream::Receiving::new(r, w, super::stream::Ask::Host, &|| {});
    let copied = crate::execute::fs::copy_from_feed(
        &served.writable,
        nodes,
        &mut feed,
        ("the host", from),
        to,
        &copy_options(),
    );
    match copied {
        Ok(c) => Ok(Reply::Copied(c)),
        Err(e) => {
            if feed.asked() && !feed.drain() {
                return Err(RemoteError::Garbled(format!(
                    "the host's files stopped in the middle of a copy to {to}"
                )));
            }
            Ok(Reply::ActionFailed(e.to_string()))
        }
    }
}

/// How the agent copies: owners kept when it runs as root, no time limit of its own (the
/// host's step limit closes the connection).
fn copy_options() -> crate::tree::CopyOptions<'static> {
    crate::tree::CopyOptions {
        link_dest: None,
        progress: &|_, _| {},
        deadline: None,
        space_left: None,
        owners: crate::tree::meta::is_root(),
    }
}

/// What one connection may see and change.
struct Served {
    /// Every granted root, for facts (read-only).
    facts: RealFacts,
    /// Every granted root that could be opened, for walks, digests and the sending side of
    /// copies (a root missing on this server is named by the error of whatever asks for it).
    all: Roots,
    /// The writable ones, opened for the file actions, through the same code as the host's
    /// own file actions on local roots.
    writable: Roots,
}

impl Served {
    /// A refusal when `at` is in a granted root the host did not grant for writing.
    fn read_only(&self, at: &crate::plan::Location) -> Option<Reply> {
        (!self.writable.0.contains_key(&at.root) && self.facts.root_names().any(|r| r == at.root))
            .then(|| {
                Reply::ActionFailed(format!(
                    "{at}: the root `{}` is read-only to this connection",
                    at.root
                ))
            })
    }
}

/// The roots of a handshake this agent accepts, opened.
fn open(hello: &Hello) -> Result<Served, String> {
    if hello.protocol != PROTOCOL {
        return Err(format!(
            "the host's hokan {} speaks agent protocol {}, this agent's hokan {} speaks {PROTOCOL}; \
             install the same hokan on both",
            hello.hokan,
            hello.protocol,
            env!("CARGO_PKG_VERSION")
        ));
    }
    let mut roots = Vec::new();
    for (name, path) in &hello.roots {
        if !Path::new(path).is_absolute() {
            return Err(format!(
                "root `{name}` is `{path}`, which is not an absolute path on this server"
            ));
        }
        roots.push((name.clone(), PathBuf::from(path)));
    }
    let mut writable = BTreeMap::new();
    for name in &hello.writable {
        let Some(path) = hello.roots.get(name) else {
            return Err(format!("`{name}` is writable but not a granted root"));
        };
        writable.insert(name.clone(), PathBuf::from(path));
    }
    let mut all = Roots::default();
    for (name, path) in &roots {
        if let Ok(mut one) = Roots::open(&BTreeMap::from([(name.clone(), path.clone())])) {
            all.0.append(&mut one.0);
        }
    }
    Ok(Served {
        all,
        facts: RealFacts::open(roots, Topology::default()).map_err(|e| e.to_string())?,
        writable: Roots::open(&writable).map_err(|e| e.to_string())?,
    })
}

fn answer(served: &Served, ledger: &Path, q: Request) -> Reply {
    use super::ledger;
    let f = &served.facts;
    let roots = &served.writable;
    // A file action is answered done or failed: an error reply is the connection's.
    let action = |r: Result<bool, crate::execute::fs::FsError>| {
        Ok(r.map_or_else(|e| Reply::ActionFailed(e.to_string()), Reply::Done))
    };
    // A granted root the host did not grant for writing is named as such.
    let touched = match &q {
        Request::WriteFile { at, .. }
        | Request::Remove { at }
        | Request::EnsureDir { at }
        | Request::RemoveFiles { dir: at, .. }
        | Request::CopyTree { to: at, .. } => vec![at],
        Request::Rename { from, to } => vec![from, to],
        _ => vec![],
    };
    if let Some(refused) = touched.into_iter().find_map(|at| served.read_only(at)) {
        return refused;
    }
    // A walk, digest or copy that failed: not there, or why not.
    let fs_failed = |e: crate::execute::fs::FsError| {
        if e.source.kind() == std::io::ErrorKind::NotFound {
            Reply::NotFound(e.to_string())
        } else {
            Reply::ActionFailed(e.to_string())
        }
    };
    // A ledger request is answered with an entry, even when it failed: an error reply is the
    // connection's, which the host retries.
    let entry = |e: Result<super::Entry, String>| {
        Ok(Reply::Entry(
            e.unwrap_or_else(|error| super::Entry::Failed { error }),
        ))
    };
    let r = match q {
        Request::Exists { at } => f.exists(&at).map(Reply::Bool),
        Request::ListDir { at } => f.list_dir(&at).map(Reply::Entries),
        Request::Stat { at } => f.stat(&at).map(Reply::Stat),
        Request::TreeSize { at } => f.tree_size(&at).map(Reply::Bytes),
        Request::FreeSpace { root } => f.free_space(&root).map(Reply::Bytes),
        Request::SameVolume { a, b } => f.same_volume(&a, &b).map(Reply::Bool),
        Request::Read { at, max_bytes } => f.read(&at, max_bytes).map(Reply::Content),
        Request::Check { programs } => Ok(Reply::Check(check(f, programs))),
        Request::Start { id, argv, cwd, env } => match cwd.map(|c| f.local_path(&c)).transpose() {
            Ok(cwd) => entry(ledger::start(ledger, &id, argv, cwd, env)),
            Err(e) => entry(Err(format!("its working directory: {e}"))),
        },
        Request::Wait { id, max_ms } => entry(ledger::wait(ledger, &id, max_ms)),
        Request::Kill { id } => entry(ledger::kill(ledger, &id)),
        Request::WriteFile { at, contents } => {
            action(roots.write_file(&at, &contents).map(|()| true))
        }
        Request::Remove { at } => action(roots.remove(&at)),
        Request::Rename { from, to } => action(roots.rename(&from, &to).map(|()| true)),
        Request::EnsureDir { at } => action(roots.ensure_dir(&at)),
        Request::Scan { at, xattrs } => Ok(served
            .all
            .scan(&at, xattrs)
            .map_or_else(fs_failed, Reply::Nodes)),
        Request::Digest { at, rel, size } => Ok(served
            .all
            .digest(&at, &rel, size)
            .map_or_else(fs_failed, Reply::Digest)),
        // Hashed in parallel: a server's disks and cores, not the round trips, set the pace.
        Request::Digests { at, files } => {
            use rayon::prelude::*;
            Ok(Reply::Digests(
                files
                    .par_iter()
                    .map(|(rel, size)| {
                        served
                            .all
                            .digest(&at, rel, *size)
                            .map_err(|e| e.to_string())
                    })
                    .collect(),
            ))
        }
        Request::RemoveFiles { dir, chosen } => Ok(roots
            .remove_files(&dir, |name| chosen.selects(name))
            .map_or_else(fs_failed, Reply::Removed)),
        Request::CopyTree { from, to } => {
            Ok(
                crate::execute::fs::copy_tree(&served.all, &from, &to, &copy_options())
                    .map_or_else(fs_failed, Reply::Copied),
            )
        }
        // Streams are served by `serve`, which has the connection.
        Request::SendFiles { .. } | Request::ReceiveTree { .. } => {
            Ok(Reply::ActionFailed("a stream is not a question".into()))
        }
    };
    r.unwrap_or_else(Reply::Error)
}

/// Each root's state and each program's presence, as this server sees them; the same
/// executable rule as the host's preflight.
fn check(f: &RealFacts, programs: Vec<String>) -> ServerCheck {
    ServerCheck {
        roots: f
            .root_names()
            .map(|name| (name.to_string(), f.check_root(name)))
            .collect(),
        programs: programs
            .into_iter()
            .map(|p| {
                let found = crate::execute::executable(&p);
                (p, found)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::RemoteFacts;
    use super::*;
    use crate::facts::FactError;
    use crate::plan::Location;
    use crate::tree::RelPath;
    use std::collections::BTreeMap;
    use std::os::unix::net::UnixStream;

    /// An agent on one end of a socket pair, serving in a thread.
    fn agent() -> (UnixStream, std::thread::JoinHandle<Result<(), RemoteError>>) {
        let (host, far) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let ledger = tempfile::tempdir().unwrap();
            serve(far.try_clone().unwrap(), far, ledger.path())
        });
        (host, t)
    }

    #[test]
    fn an_agent_answers_as_the_local_facts_would_and_only_inside_its_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("mw/data")).unwrap();
        std::fs::write(data.join("mw/data/mail.db"), b"0123456789").unwrap();
        std::fs::write(tmp.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), data.join("escape")).unwrap();
        let roots = BTreeMap::from([("data".to_string(), data.to_string_lossy().into_owned())]);
        let local =
            RealFacts::open([("data".to_string(), data.clone())], Topology::default()).unwrap();
        let (host, t) = agent();
        let remote = RemoteFacts::connect(
            host.try_clone().unwrap(),
            host,
            roots,
            Topology::default(),
            7,
        )
        .unwrap();
        let at = |p: &str| Location::new("data", p);
        for p in ["", "mw", "mw/data", "mw/data/mail.db", "nothing", "escape"] {
            assert_eq!(remote.exists(&at(p)), local.exists(&at(p)), "{p}");
            assert_eq!(remote.stat(&at(p)), local.stat(&at(p)), "{p}");
            assert_eq!(remote.tree_size(&at(p)), local.tree_size(&at(p)), "{p}");
        }
        assert_eq!(
            remote.list_dir(&at("mw/data")),
            local.list_dir(&at("mw/data"))
        );
        assert_eq!(
            remote.read(&at("mw/data/mail.db"), 64).unwrap(),
            b"0123456789"
        );
        assert_eq!(
            remote.read(&at("mw/data/mail.db"), 4),
            Err(FactError::TooLarge(10))
        );
        // The same volume's free space (other tests write to it meanwhile, so not to the byte).
        let (far, near) = (
            remote.free_space("data").unwrap(),
            local.free_space("data").unwrap(),
        );
        assert!(far.abs_diff(near) < 1 << 30, "{far} and {near}");
        assert_eq!(remote.same_volume("data", "data"), Ok(true));
        assert_eq!(remote.now_ms(), 7, "the host's clock");
        // Nothing outside the roots: `..`, absolute paths, a symlink out, another root.
        for p in ["../secret", "/etc/passwd", "mw/../../secret"] {
            assert!(
                matches!(remote.read(&at(p), 64), Err(FactError::InvalidPath(_))),
                "{p}: {:?}",
                remote.read(&at(p), 64)
            );
        }
        assert!(
            remote.read(&at("escape"), 64).is_err(),
            "a symlink out of the root"
        );
        assert_eq!(
            remote.exists(&Location::new("etc", "passwd")),
            Err(FactError::RootNotGranted("etc".into()))
        );
        drop(remote);
        t.join().unwrap().unwrap();
    }

    /// A tree with what a copy must keep: a hole, a name that is not UTF-8, a hard link, a
    /// symbolic link, an empty directory, odd modes and times.
    fn awkward_tree(top: &Path) {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(top.join("sub/empty")).unwrap();
        let sparse = std::fs::File::create(top.join("sparse.db")).unwrap();
        sparse.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&sparse, b"page", 5 << 20).unwrap();
        drop(sparse);
        let odd = top.join(std::ffi::OsStr::from_bytes(b"sub/\x83e\x83X\x83g.eml"));
        std::fs::write(&odd, b"Shift_JIS name").unwrap();
        std::fs::hard_link(&odd, top.join("sub/again.eml")).unwrap();
        std::os::unix::fs::symlink("sparse.db", top.join("link")).unwrap();
        std::fs::write(top.join("ro.txt"), vec![b'x'; 200_000]).unwrap();
        std::fs::set_permissions(top.join("ro.txt"), std::fs::Permissions::from_mode(0o440))
            .unwrap();
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::new(1_500_000_000, 7);
        std::fs::File::options()
            .write(true)
            .open(top.join("sub/again.eml"))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    /// Every entry below `top` as a restore must bring it back.
    fn described(top: &Path) -> Vec<(Vec<u8>, String)> {
        let roots = Roots::open(&BTreeMap::from([("t".to_string(), top.to_path_buf())])).unwrap();
        roots
            .scan(&Location::new("t", ""), crate::tree::Attrs::All)
            .unwrap()
            .into_iter()
            .filter(|n| !n.path.is_empty())
            .map(|n| {
                let m = &n.meta;
                let digest = (m.kind == crate::tree::Kind::File).then(|| {
                    roots
                        .digest(&Location::new("t", ""), &n.path, m.size)
                        .unwrap()
                });
                let mtime = (m.kind != crate::tree::Kind::Dir).then_some(m.mtime);
                (
                    n.path.as_bytes().to_vec(),
                    format!(
                        "{:?} {:o} {} {mtime:?} {:?} {:?} {digest:?} nlink {}",
                        m.kind, m.mode, m.size, n.target, n.xattrs, m.nlink
                    ),
                )
            })
            .collect()
    }

    fn granting(
        host: UnixStream,
        roots: &[(&str, &Path)],
        writable: &[&str],
    ) -> RemoteFacts<UnixStream, UnixStream> {
        RemoteFacts::connect_granting(
            host.try_clone().unwrap(),
            host,
            roots
                .iter()
                .map(|(n, p)| (n.to_string(), p.to_string_lossy().into_owned()))
                .collect(),
            writable.iter().map(|w| w.to_string()).collect(),
            Topology::default(),
            0,
        )
        .unwrap()
    }

    #[test]
    fn many_digests_in_one_question_are_the_host_s_each_with_its_own_error() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        awkward_tree(&data.join("mw"));
        let (sock, t) = agent();
        let remote = granting(sock, &[("data", &data)], &[]);
        let here = Roots::open(&BTreeMap::from([("data".to_string(), data.clone())])).unwrap();
        let at = Location::new("data", "mw");
        let files: Vec<(RelPath, u64)> = [
            ("sparse.db", 8 << 20),
            ("ro.txt", 200_000),
            ("gone.eml", 1),
            ("link", 9),
            ("sub/again.eml", 14),
        ]
        .iter()
        .map(|(p, s)| (RelPath::from(*p), *s))
        .collect();
        let got = remote.digests(&at, &files).unwrap();
        assert_eq!(got.len(), files.len());
        for ((rel, size), d) in files.iter().zip(&got) {
            match here.digest(&at, rel, *size) {
                Ok(want) => assert_eq!(d.as_ref(), Ok(&want), "{rel}"),
                // A missing file, a symlink: refused there as here, and only that file.
                Err(e) => assert!(
                    d.as_ref()
                        .is_err_and(|m| m.contains(rel.to_string().as_str())),
                    "{rel}: {d:?}, here {e}"
                ),
            }
        }
        assert!(got[2].is_err() && got[3].is_err());
        assert!(remote.digests(&at, &[]).unwrap().is_empty());
        drop(remote);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn trees_cross_the_connection_both_ways_and_within_a_server_with_everything_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let (server, host_dir) = (tmp.path().join("server"), tmp.path().join("host"));
        std::fs::create_dir_all(server.join("data/mw")).unwrap();
        std::fs::create_dir_all(&host_dir).unwrap();
        awkward_tree(&server.join("data/mw"));
        let (sock, t) = agent();
        let remote = granting(sock, &[("data", &server.join("data"))], &["data"]);
        let host = Roots::open(&BTreeMap::from([("set".to_string(), host_dir.clone())])).unwrap();
        let none = &|_: u64, _: u64| {};
        let opts = crate::tree::CopyOptions {
            link_dest: None,
            progress: none,
            deadline: None,
            space_left: None,
            owners: crate::tree::meta::is_root(),
        };
        let ticks = std::sync::atomic::AtomicU64::new(0);
        let tick = || {
            ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        // Server to host: what arrives is what is there, hole and all.
        let copied = remote
            .copy_here(
                &Location::new("data", "mw"),
                &host,
                &Location::new("set", "data"),
                &opts,
                &tick,
            )
            .unwrap();
        assert_eq!(
            described(&host_dir.join("data")),
            described(&server.join("data/mw"))
        );
        assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) > 4);
        use std::os::unix::fs::MetadataExt;
        let sparse = std::fs::metadata(host_dir.join("data/sparse.db")).unwrap();
        assert!(sparse.blocks() * 512 < 1 << 20, "the hole was written");
        let big = copied
            .files
            .iter()
            .find(|w| w.path == "data/sparse.db".into())
            .unwrap();
        assert_eq!(big.size, 8 << 20);
        // Bytes are counted by file size, each hard-linked file once.
        assert_eq!(copied.bytes, 200_000 + 14 + (8 << 20));

        // Host to server, into a place that does not exist yet; then within the server.
        let reported = std::sync::Mutex::new(Vec::new());
        let c = remote
            .copy_there(
                &host,
                &Location::new("set", "data"),
                &Location::new("data", "back/mw"),
                &tick,
                &|done, all| reported.lock().unwrap().push((done, all)),
            )
            .unwrap();
        assert_eq!(c.files.len(), 3, "one per inode: {c:?}");
        // Progress as each file is sent, up to every byte the agent asked for.
        let reported = reported.into_inner().unwrap();
        assert_eq!(reported.len(), 3, "{reported:?}");
        assert!(
            reported.windows(2).all(|w| w[0].0 <= w[1].0),
            "{reported:?}"
        );
        assert_eq!(reported.last(), Some(&(c.bytes, c.bytes)), "{reported:?}");
        assert_eq!(
            described(&server.join("data/back/mw")),
            described(&server.join("data/mw"))
        );
        remote
            .copy_within(&Location::new("data", "mw"), &Location::new("data", "copy"))
            .unwrap();
        assert_eq!(
            described(&server.join("data/copy")),
            described(&server.join("data/mw"))
        );

        // Never over what is there; and after a refusal the connection is still in step.
        let e = remote
            .copy_there(
                &host,
                &Location::new("set", "data"),
                &Location::new("data", "mw"),
                &tick,
                &|_, _| {},
            )
            .unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        let e = remote
            .copy_here(
                &Location::new("data", "mw"),
                &host,
                &Location::new("set", "data"),
                &opts,
                &tick,
            )
            .unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(remote.exists(&Location::new("data", "copy")), Ok(true));
        // A source that is gone says so by its kind.
        let e = remote
            .scan(&Location::new("data", "nothing"), crate::tree::Attrs::None)
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        drop(remote);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn a_read_only_root_takes_no_copy_and_a_hostile_walk_is_refused_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let server = tmp.path().join("server");
        std::fs::create_dir_all(server.join("data")).unwrap();
        std::fs::create_dir_all(server.join("conf")).unwrap();
        std::fs::write(tmp.path().join("secret"), b"outside").unwrap();
        let host_dir = tmp.path().join("host");
        std::fs::create_dir_all(host_dir.join("set/d")).unwrap();
        std::fs::write(host_dir.join("set/d/a"), b"a").unwrap();
        let host =
            Roots::open(&BTreeMap::from([("set".to_string(), host_dir.join("set"))])).unwrap();
        let (sock, t) = agent();
        let remote = granting(
            sock,
            &[
                ("data", &server.join("data")),
                ("conf", &server.join("conf")),
            ],
            &["data"],
        );
        let e = remote
            .copy_there(
                &host,
                &Location::new("set", "d"),
                &Location::new("conf", "d"),
                &|| {},
                &|_, _| {},
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("read-only to this connection"),
            "{e}"
        );
        let e = remote
            .copy_within(&Location::new("data", ""), &Location::new("conf", "x"))
            .unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
        assert!(
            std::fs::read_dir(server.join("conf"))
                .unwrap()
                .next()
                .is_none()
        );
        drop(remote);
        t.join().unwrap().unwrap();

        // A host that sends a walk out of the root: `..` does not even parse, and a walk that
        // lists an entry before its directory is refused before anything is made.
        let (mut sock, t) = agent();
        let hello = Hello {
            protocol: PROTOCOL,
            hokan: "test".into(),
            roots: BTreeMap::from([(
                "data".to_string(),
                server.join("data").to_string_lossy().into_owned(),
            )]),
            writable: ["data".to_string()].into(),
        };
        write_frame(&mut sock, &hello).unwrap();
        let _: Welcome = read_frame(&mut sock).unwrap().unwrap();
        let walk = host
            .scan(&Location::new("set", "d"), crate::tree::Attrs::ExceptFiles)
            .unwrap();
        let mut bad = walk.clone();
        bad.swap(0, 1);
        write_frame(
            &mut sock,
            &Request::ReceiveTree {
                from: Location::new("set", "d"),
                to: Location::new("data", "d"),
                nodes: bad,
            },
        )
        .unwrap();
        let Some(Reply::ActionFailed(why)) = read_frame::<Reply>(&mut sock).unwrap() else {
            panic!("a walk out of order was taken")
        };
        assert!(why.contains("not at its top"), "{why}");
        let mut json = serde_json::to_value(&Request::ReceiveTree {
            from: Location::new("set", "d"),
            to: Location::new("data", "d"),
            nodes: walk,
        })
        .unwrap();
        json["nodes"][1]["path"] = "../../secret".into();
        let body = serde_json::to_vec(&json).unwrap();
        use std::io::Write as _;
        sock.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        sock.write_all(&body).unwrap();
        assert!(
            matches!(t.join().unwrap(), Err(RemoteError::Garbled(e)) if e.contains("not a path below a root")),
        );
        assert!(!server.join("data/d").exists());
        assert_eq!(
            std::fs::read(tmp.path().join("secret")).unwrap(),
            b"outside"
        );
    }

    #[test]
    fn a_version_it_does_not_speak_and_a_relative_root_are_refused_naming_why() {
        let (mut host, t) = agent();
        let hello = Hello {
            protocol: 99,
            hokan: "9.9.9".into(),
            roots: BTreeMap::new(),
            writable: Default::default(),
        };
        write_frame(&mut host, &hello).unwrap();
        let Some(Welcome::Refused { reason }) = read_frame(&mut host).unwrap() else {
            panic!("not refused")
        };
        assert!(
            reason.contains("hokan 9.9.9 speaks agent protocol 99")
                && reason.contains(&format!("speaks {PROTOCOL}")),
            "{reason}"
        );
        assert!(matches!(t.join().unwrap(), Err(RemoteError::Refused(_))));
        let (host, t) = agent();
        let err = RemoteFacts::connect(
            host.try_clone().unwrap(),
            host,
            BTreeMap::from([("data".to_string(), "srv/data".to_string())]),
            Topology::default(),
            0,
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .contains("root `data` is `srv/data`, which is not an absolute path"),
            "{err}"
        );
        assert!(t.join().unwrap().is_err());
    }
}
