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
pub fn serve(mut r: impl Read, mut w: impl Write, ledger: &Path) -> Result<(), RemoteError> {
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
        write_frame(&mut w, &answer(&served, ledger, q))?;
    }
    Ok(())
}

/// What one connection may see and change.
struct Served {
    /// Every granted root, for facts (read-only).
    facts: RealFacts,
    /// The writable ones, opened for the file actions, through the same code as the host's
    /// own file actions on local roots.
    writable: Roots,
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
    Ok(Served {
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
    let read_only = |at: &crate::plan::Location| {
        (!roots.0.contains_key(&at.root) && f.root_names().any(|r| r == at.root)).then(|| {
            Reply::ActionFailed(format!(
                "{at}: the root `{}` is read-only to this connection",
                at.root
            ))
        })
    };
    let touched = match &q {
        Request::WriteFile { at, .. } | Request::Remove { at } | Request::EnsureDir { at } => {
            vec![at]
        }
        Request::Rename { from, to } => vec![from, to],
        _ => vec![],
    };
    if let Some(refused) = touched.into_iter().find_map(read_only) {
        return refused;
    }
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
