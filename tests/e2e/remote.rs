//! `hokan agent` as a process, as ssh starts it on a remote server: the host's `RemoteFacts`
//! over its standard input and output, answering as the local facts of the same tree would.

use hokan::facts::{FactSource, RealFacts, Topology};
use hokan::plan::Location;
use hokan::remote::{Hello, RemoteFacts, Welcome, read_frame, write_frame};
use hokan_e2e::{MailwiseTree, hokan_bin};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};

/// `hokan agent` with its standard streams piped, as ssh gives them.
fn agent() -> std::process::Child {
    Command::new(hokan_bin())
        .arg("agent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_agent_process_serves_the_facts_of_a_mailwise_tree_as_the_host_would_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    MailwiseTree::default().build(&data);
    let mut child = agent();
    let remote = RemoteFacts::connect(
        child.stdout.take().unwrap(),
        child.stdin.take().unwrap(),
        BTreeMap::from([("data".to_string(), data.to_string_lossy().into_owned())]),
        Topology::default(),
        0,
    )
    .unwrap();
    let local = RealFacts::open([("data".to_string(), data.clone())], Topology::default()).unwrap();
    // Every directory of the tree, listed and sized the same way on both sides.
    let mut dirs = vec![String::new()];
    let mut seen = 0;
    while let Some(d) = dirs.pop() {
        let at = Location::new("data", d.clone());
        let entries = remote.list_dir(&at).unwrap();
        assert_eq!(entries, local.list_dir(&at).unwrap(), "{d}");
        assert_eq!(remote.tree_size(&at), local.tree_size(&at), "{d}");
        for e in entries {
            let p = if d.is_empty() {
                e.name.clone()
            } else {
                format!("{d}/{}", e.name)
            };
            let at = Location::new("data", p.clone());
            assert_eq!(remote.stat(&at), local.stat(&at), "{p}");
            if e.kind == hokan::facts::EntryKind::Dir {
                dirs.push(p);
            } else if e.size <= 4096 {
                assert_eq!(remote.read(&at, 4096), local.read(&at, 4096), "{p}");
            }
            seen += 1;
        }
    }
    assert!(seen > 10, "the tree has {seen} entries");
    drop(remote);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Offers `child` (an agent, directly or through ssh) protocol 99 from a hokan 0.2.0, closes
/// the connection, and returns the agent's reason for refusing and how the process exited.
pub(crate) fn offer_protocol_99(mut child: std::process::Child) -> (String, std::process::Output) {
    let mut w = child.stdin.take().unwrap();
    let mut r = child.stdout.take().unwrap();
    write_frame(
        &mut w,
        &Hello {
            protocol: 99,
            hokan: "0.2.0".into(),
            roots: BTreeMap::new(),
            writable: Default::default(),
        },
    )
    .unwrap();
    let answer: Welcome = read_frame(&mut r).unwrap().unwrap();
    let Welcome::Refused { reason } = answer else {
        panic!("{answer:?}")
    };
    drop(w);
    (reason, child.wait_with_output().unwrap())
}

#[test]
fn the_agent_process_refuses_another_protocol_version_and_exits_1() {
    let (reason, out) = offer_protocol_99(agent());
    assert!(
        reason.contains("protocol 99")
            && reason.contains(&format!("speaks {}", hokan::remote::PROTOCOL)),
        "{reason}"
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("install the same hokan on both"), "{err}");
}
