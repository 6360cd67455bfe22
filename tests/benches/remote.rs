//! The cost of reaching a server through `hokan agent` over ssh: `cargo xtask bench`.
//!
//! Against a real sshd on loopback (Debian's, as the e2e tests start it) and the release
//! `hokan` as its agent, in the same run:
//! - one step's command, `/bin/true`, run by the local transport, and run on the server
//!   through the agent's ledger (`Session::exec`: start detached under a supervisor, wait,
//!   read the recorded end), over one open session: the per-step overhead of a remote step;
//! - opening a session (ssh's connection, key exchange and login, the agent's handshake),
//!   which a run pays once per server;
//! - one fact question (`stat`) over the session, against the same question asked locally.
//!
//! Issue "Remote servers" asks for the per-step overhead to be reported, with no target.

use hokan::drive::AtLimit;
use hokan::execute::transport::{Invocation, Local, Transport};
use hokan::facts::{FactSource, RealFacts, Topology};
use hokan::plan::Location;
use hokan::remote::ssh::{RemoteCommand, Session};
use hokan_e2e::sshd::Sshd;
use hokan_e2e::{hokan_bin, median};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn time(n: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    }
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = if smoke { 3 } else { 50 };
    let sshd = Sshd::start();
    let data = sshd.dir.path().join("srv/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("conf.ini"), "[mw]\n").unwrap();
    let ledger = sshd.dir.path().join("ledger");
    sshd.force_command(&format!(
        "{} agent --ledger {}",
        hokan_bin().display(),
        ledger.display()
    ));
    let known_hosts = sshd.dir.path().join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line()).unwrap();
    let ssh = hokan::policy::Ssh {
        address: "127.0.0.1".into(),
        user: None,
        port: Some(sshd.port),
        identity: Some(sshd.identity()),
        agent: "hokan".into(),
        known_hosts,
    };
    let roots = BTreeMap::from([("data".to_string(), data.to_string_lossy().into_owned())]);
    let connect = time(n.min(10), || {
        drop(Session::connect("bench", &ssh, roots.clone()).unwrap());
    });
    let session = Session::connect("bench", &ssh, roots).unwrap();

    let argv = vec!["/bin/true".to_string()];
    let local = time(n, || {
        let o = Local
            .run(&Invocation {
                program: "/bin/true",
                args: &[],
                cwd: None,
                timeout: Some(Duration::from_secs(60)),
                at_limit: AtLimit::Kill,
                env: &[],
            })
            .unwrap();
        assert_eq!(o.code, Some(0));
    });
    let mut i = 0;
    let remote = time(n, || {
        i += 1;
        let o = session
            .exec(
                &format!("bench.true.{i}"),
                RemoteCommand {
                    argv: &argv,
                    cwd: None,
                    env: &[],
                    timeout: Some(Duration::from_secs(60)),
                    at_limit: AtLimit::Kill,
                },
            )
            .unwrap();
        assert_eq!(o.code, Some(0));
    });

    let here = RealFacts::open([("data".to_string(), data.clone())], Topology::default()).unwrap();
    let at = Location::new("data", "conf.ini");
    let fact_local = time(n * 10, || {
        here.stat(&at).unwrap();
    });
    let fact_remote = time(n * 10, || {
        session.stat(&at).unwrap();
    });

    println!("remote: one sshd on loopback, the release hokan as its agent, medians of {n}");
    println!(
        "  a step's `/bin/true`: local {}, through the agent {} ({:.2}x, {:+.2} ms per remote step)",
        ms(local),
        ms(remote),
        remote.as_secs_f64() / local.as_secs_f64(),
        (remote.as_secs_f64() - local.as_secs_f64()) * 1000.0
    );
    println!(
        "    (both are bounded by how often they look for the end: the local transport every \
         10 ms, the agent's ledger after 1, 2, 4 ... ms, then every 32 ms)"
    );
    println!(
        "  opening a session (ssh login + handshake, once per server per run): {}",
        ms(connect)
    );
    println!(
        "  one fact (`stat`): local {}, over the session {} ({:.0}x)",
        ms(fact_local),
        ms(fact_remote),
        fact_remote.as_secs_f64() / fact_local.as_secs_f64()
    );
    if smoke {
        println!("  (smoke run)");
    }
}
