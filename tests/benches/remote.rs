//! The cost of reaching a server through `hokan agent` over ssh: `cargo xtask bench`.
//!
//! Against a real sshd on loopback (Debian's, as the e2e tests start it) and the release
//! `hokan` as its agent, in the same run:
//! - one step's command, `/bin/true`, run by the local transport, and run on the server
//!   through the agent's ledger (`Session::exec`: start detached under a supervisor, wait,
//!   read the recorded end), over one open session: the per-step overhead of a remote step;
//! - opening a session (ssh's connection, key exchange and login, the agent's handshake),
//!   which a run pays once per server;
//! - one fact question (`stat`) over the session, against the same question asked locally;
//! - on the generated mailwise tree (1 GiB, 10,000 files; `HOKAN_BENCH_MIB` sets the size) on
//!   the "server": `rsync -a` of it to the host over the same sshd, a full `hokan run ... --op
//!   backup` of it to the host (maintenance mode through the agent, the streamed copies with a
//!   BLAKE3 of every file checked as it arrives, the plugin's verify steps, the manifest, the
//!   sync), and an incremental backup of the unchanged tree, which links every unchanged file.
//!
//! Targets (issue "Remote servers"): a remote full backup at least 0.9x rsync's speed, an
//! incremental one at least 10x faster than the full one; the per-step overhead is reported,
//! with no target.

use hokan::drive::AtLimit;
use hokan::execute::transport::{Invocation, Local, Transport};
use hokan::facts::{FactSource, RealFacts, Topology};
use hokan::plan::Location;
use hokan::remote::ssh::{RemoteCommand, Session};
use hokan_e2e::sshd::Sshd;
use hokan_e2e::{hokan_bin, median, plugin_dir, repo_root, timed};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Trees over the connection: rsync against hokan's full and incremental backups, on the tree
/// in `data` on `sshd`'s server (`bytes` of it), into `base` on the host. Prints the figures
/// and, unless `smoke`, the targets.
fn trees(sshd: &Sshd, data: &Path, bytes: u64, base: &Path, smoke: bool) {
    let rounds = if smoke { 1 } else { 3 };
    let known_hosts = base.join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line()).unwrap();
    let policy = |backup_root: &str| {
        let path = base.join(format!("site-{backup_root}.toml"));
        std::fs::write(
            &path,
            format!(
                "[site]\nname = \"bench\"\nknown_hosts = \"known_hosts\"\n{}\
                 [jobs.mailwise]\nplugin = \"mailwise\"\nservers = [\"mw1\"]\n\
                 backup_root = \"{backup_root}\"\n\
                 roots = {{ data = {{ server = \"mw1\", path = \"{}\" }} }}\n\
                 commands = {{ maintenance-mode = \"{}\" }}\n",
                sshd.server_toml("mw1", "mailwise"),
                data.display(),
                repo_root()
                    .join("tests/fixtures/standins/mw-maintenance")
                    .display()
            ),
        )
        .unwrap();
        path
    };
    let backup = |backup_root: &str| {
        let mut c = Command::new(hokan_bin());
        c.arg("--plugin-dir")
            .arg(plugin_dir())
            .arg("--cache-dir")
            .arg(base.join("cache"))
            .arg("--state-dir")
            .arg(base.join("state"))
            .arg("run")
            .arg(policy(backup_root))
            .args(["--job", "mailwise", "--op", "backup"]);
        c
    };
    let rsync = |to: &Path| {
        let mut c = Command::new("rsync");
        c.arg("-a")
            .arg("-e")
            .arg(format!(
                "ssh -p {} -i {} -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
                sshd.port,
                sshd.identity().display(),
                known_hosts.display()
            ))
            .arg(format!("127.0.0.1:{}/", data.display()))
            .arg(to);
        c
    };
    // As the local benchmark does: every copy into a directory of its own, nothing removed
    // until all are timed, and nothing left to write back when each timed command starts,
    // nor fresh memory to take its page cache from.
    let settle = || hokan_e2e::settle(bytes);
    timed(backup("warm"));
    let (mut rsyncs, mut synced, mut fulls) = (vec![], vec![], vec![]);
    for r in 0..rounds {
        settle();
        let to = base.join(format!("rsync-{r}"));
        let copied = timed(rsync(&to));
        rsyncs.push(copied);
        // A backup is one only once it is on disk: hokan's ends with a syncfs of the set's
        // file system, which rsync does not do. The same sync after it, timed with it.
        let mut sync = Command::new("sync");
        sync.arg("--file-system").arg(&to);
        synced.push(copied + timed(sync));
        std::thread::sleep(Duration::from_millis(1100));
        settle();
        fulls.push(timed(backup(&format!("full-{r}"))));
    }
    let steps = last_run_steps(&base.join("state"));
    let inc = hokan_e2e::incremental_backups(rounds, || backup("incremental"));
    // The last incremental linked what it did not copy: it is an incremental, not a full.
    let sets = base.join("incremental/bench/mailwise");
    let mut ids: Vec<_> = std::fs::read_dir(&sets)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    ids.sort();
    {
        use std::os::unix::fs::MetadataExt;
        let ino = |set: &Path| std::fs::metadata(set.join("data/mail.odb")).unwrap().ino();
        assert_eq!(
            ino(&ids[0]),
            ino(ids.last().unwrap()),
            "unchanged files are linked"
        );
    }
    let (rsync, synced, full) = (median(rsyncs), median(synced), median(fulls));
    let rate = |d: Duration| bytes as f64 / d.as_secs_f64() / (1 << 20) as f64;
    println!(
        "  tree on the server: {} MiB in 10,007 files, to the host over ssh",
        bytes >> 20
    );
    println!(
        "  rsync -a              median {rsync:>9.2?}  {:>7.0} MiB/s",
        rate(rsync)
    );
    println!(
        "  rsync -a, then sync   median {synced:>9.2?}  {:>7.0} MiB/s",
        rate(synced)
    );
    println!(
        "  hokan full backup     median {full:>9.2?}  {:>7.0} MiB/s",
        rate(full)
    );
    println!("  hokan incremental     median {inc:>9.2?}");
    println!("  where the last full backup's time went, by its journal: {steps}");
    if smoke {
        return;
    }
    let vs_rsync = rsync.as_secs_f64() / full.as_secs_f64();
    let inc_x = full.as_secs_f64() / inc.as_secs_f64();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "  remote full backup speed = {vs_rsync:.2}x rsync -a over ssh; target >= 0.9x: {}",
        verdict(vs_rsync >= 0.9)
    );
    println!(
        "  (against rsync -a with the sync hokan's backup ends with: {:.2}x)",
        synced.as_secs_f64() / full.as_secs_f64()
    );
    println!(
        "  remote incremental = {inc_x:.1}x faster than full; target >= 10x: {}",
        verdict(inc_x >= 10.0)
    );
}

/// The steps of the newest run journaled in `state` that took 100 ms or more, with their
/// times, and the sum of all its steps' times (the rest of the run's wall time is starting,
/// planning, logging in, the manifest and the sync): what to look at first.
fn last_run_steps(state: &Path) -> String {
    let done = state.join("runs/done");
    let Some(newest) = std::fs::read_dir(&done)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .max()
    else {
        return "no journal".into();
    };
    let text = std::fs::read_to_string(&newest).unwrap_or_default();
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut out: Vec<String> = records
        .iter()
        .filter(|r| r["record"] == "step-end" && r["duration_ms"].as_u64() >= Some(100))
        .map(|r| {
            format!(
                "{} {} ms",
                r["step"].as_str().unwrap_or("?"),
                r["duration_ms"]
            )
        })
        .collect();
    let sum: u64 = records
        .iter()
        .filter(|r| r["record"] == "step-end")
        .filter_map(|r| r["duration_ms"].as_u64())
        .sum();
    out.push(format!("all steps {sum} ms"));
    out.join(", ")
}

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
    let (smoke, mib) = hokan_e2e::bench_size(1024);
    let n = if smoke { 3 } else { 50 };
    let sshd = Sshd::start();
    // The trees first: below, the key is restricted to `hokan agent`, which rsync cannot use.
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-remote");
    if base.exists() {
        hokan::sets::remove_tree(&base).unwrap();
    }
    std::fs::create_dir_all(&base).unwrap();
    let tree = sshd.dir.path().join("srv/mailwise");
    let bytes = hokan_e2e::bench_tree(&tree, mib);
    println!("remote: one sshd on loopback, the release hokan as its agent");
    trees(&sshd, &tree, bytes, &base, smoke);
    if std::env::var_os("HOKAN_BENCH_KEEP").is_none() {
        hokan::sets::remove_tree(&base).unwrap();
        hokan::sets::remove_tree(&tree).unwrap();
    }
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

    println!("  medians of {n}:");
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
