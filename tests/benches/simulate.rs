//! Simulation benchmarks: `cargo xtask bench`.
//!
//! - the full fault sweep (`--faults each-step`) over every bundled policy and operation, in
//!   the bundled world;
//! - the same sweep over 1,000 generated mailwise sites (same plugin, varied trees: databases,
//!   mail spaces, archives, sizes, free space), on all cores and, for comparison, on one.
//!
//! Targets (issue "Dry-run simulation"): bundled sweep under 2 s; 1,000 sites under 10 s on a
//! 2-core machine. Each figure is reported with scenarios per second.

use hokan::planner::PluginDir;
use hokan::policy::{Policy, load_all};
use hokan::runtime::{Limits, Runtime};
use hokan::simulate::{FaultMode, World, simulate_op};
use hokan_e2e::{component, plugin_dir, repo_root};
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn verdict(name: &str, took: Duration, scenarios: usize, target: Duration) {
    let ratio = took.as_secs_f64() / target.as_secs_f64();
    println!(
        "{name:<40} {took:>9.2?}  {scenarios:>7} scenarios  {:>8.0} scenarios/s  target {target:?}: {} ({ratio:.2}x of target)",
        scenarios as f64 / took.as_secs_f64(),
        if ratio <= 1.0 { "met" } else { "MISSED" },
    );
}

/// A deterministic pseudo-random sequence (a 64-bit LCG), so every run generates the same sites.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

/// Site `i`: its policy and its world, as text.
fn generated_site(i: usize, rng: &mut Lcg) -> (String, String) {
    let policy = format!(
        r#"
[site]
name = "site-{i}"

[[servers]]
name = "mw1"
role = "mailwise"

[jobs.mailwise]
plugin = "mailwise"
backup_root = "backups"
roots = {{ data = "mw-site" }}
commands = {{ maintenance-mode = "/usr/local/bin/mw-maintenance", mwsave = "/opt/mailwise/mwsave" }}
"#
    );
    let mut tree = String::new();
    let dbs = 1 + rng.below(6);
    for d in 0..dbs {
        let size = 1 + rng.below(4096);
        for name in [format!("db{d}.odb"), format!("db{d}.odb.mrr")] {
            tree.push_str(&format!("\"data/{name}\" = \"{size} MiB\"\n"));
        }
    }
    for ws in 0..rng.below(30) {
        for m in 0..1 + rng.below(4) {
            let size = 1 + rng.below(2048);
            tree.push_str(&format!(
                "\"file/ws{}/{m:04}.eml\" = \"{size} MiB\"\n",
                ws + 1
            ));
        }
    }
    tree.push_str("\"file/\" = {}\n");
    for b in 0..rng.below(10) {
        let size = 1 + rng.below(8192);
        for name in ["mail.odb", "mail.odb.mrr"] {
            tree.push_str(&format!(
                "\"back{}/data/{name}\" = {{ size = \"{size} MiB\", readonly = true }}\n",
                b + 1
            ));
        }
    }
    let in_mw: String = tree
        .lines()
        .map(|l| format!("\"mw/{}\n", &l[1..]))
        .collect();
    let free = 50 + rng.below(400);
    let world = format!(
        r#"
now = "2026-11-21T02:10:00Z"

[[dir]]
path = "../mw-site"
free = "{free} GiB"
[dir.files]
{in_mw}"mwsave" = {{ text = "mwsave, made by mailwise for the next archive" }}

[[dir]]
path = "../backups/site-{i}/mailwise/20261121T011000Z"
[dir.files]
{tree}
"#
    );
    (policy, world)
}

fn main() {
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new(cache.path(), Limits::default()).unwrap();
    let _ = component("mailwise.wasm");
    let dir = PluginDir(plugin_dir());

    // The bundled policies, each job and operation, every fault.
    let policies = load_all(&repo_root().join("policies")).unwrap();
    let mut samples = Vec::new();
    let mut count = 0;
    for _ in 0..5 {
        let t = Instant::now();
        count = 0;
        for pol in &policies {
            let world_file = repo_root()
                .join("policies/worlds")
                .join(pol.file.file_name().unwrap());
            let world = Arc::new(World::load(&world_file).unwrap());
            for job in pol.jobs.values() {
                let plugin = hokan::planner::load_plugin(&rt, &dir, pol, job).unwrap();
                for op in &job.operations {
                    let r =
                        simulate_op(&rt.bind(&plugin), pol, job, op, &world, FaultMode::EachStep)
                            .unwrap();
                    assert_eq!(r.broken().count(), 0, "{}", r.name());
                    count += r.scenarios.len();
                }
            }
        }
        samples.push(t.elapsed());
    }
    samples.sort();
    verdict(
        "bundled policies, every fault",
        samples[samples.len() / 2],
        count,
        Duration::from_secs(2),
    );

    // 1,000 generated sites.
    let mut rng = Lcg(0x686f6b616e);
    let sites: Vec<(Policy, Arc<World>)> = (0..1000)
        .map(|i| {
            let (policy, world) = generated_site(i, &mut rng);
            let base = Path::new("/bench").join(format!("site-{i}"));
            let policy = Policy::parse(&base.join("site.toml"), &policy).unwrap();
            let world = World::parse(&base.join("worlds/site.toml"), &world).unwrap();
            (policy, Arc::new(world))
        })
        .collect();
    let job = sites[0].0.job("mailwise").unwrap();
    let plugin = hokan::planner::load_plugin(&rt, &dir, &sites[0].0, job).unwrap();
    let ops = [
        "backup",
        "restore",
        "maintenance-on",
        "maintenance-off",
        "archive",
    ];
    let sweep = || {
        let t = Instant::now();
        let (scenarios, refused): (usize, usize) = sites
            .par_iter()
            .map(|(pol, world)| {
                let job = pol.job("mailwise").unwrap();
                let mut n = (0, 0);
                for op in ops {
                    let r =
                        simulate_op(&rt.bind(&plugin), pol, job, op, world, FaultMode::EachStep)
                            .unwrap_or_else(|e| panic!("{}: {e}", pol.site));
                    assert_eq!(r.broken().count(), 0, "{}", r.name());
                    n.0 += r.scenarios.len();
                    n.1 += usize::from(r.refused.is_some());
                }
                n
            })
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        (t.elapsed(), scenarios, refused)
    };
    let (took, scenarios, refused) = sweep();
    verdict(
        &format!(
            "1,000 sites, every fault, {} threads",
            rayon::current_num_threads()
        ),
        took,
        scenarios,
        Duration::from_secs(10),
    );
    println!(
        "  ({refused} of {} operations refused to plan in their world: too little space or a failed check)",
        sites.len() * ops.len()
    );
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (took1, scenarios1, _) = one.install(sweep);
    verdict(
        "1,000 sites, every fault, 1 thread",
        took1,
        scenarios1,
        Duration::from_secs(10),
    );
    println!(
        "  all cores vs one: {:.2}x as fast",
        took1.as_secs_f64() / took.as_secs_f64()
    );
}
