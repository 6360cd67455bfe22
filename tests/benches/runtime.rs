//! Runtime benchmarks, reported as medians: `cargo xtask bench`.
//!
//! - warm plan call: a fresh store from the pre-instantiated mailwise, planning a backup against
//!   a fixture tree (facts served from the real filesystem);
//! - cold `hokan plan`: the whole release binary, with the compile cache already warm;
//! - first compile: loading mailwise with an empty compile cache.
//!
//! Targets (issue "Foundation"): warm plan call under 200 µs, cold CLI under 100 ms.

use hokan::facts::RealFacts;
use hokan::planner::{self, PlanInput};
use hokan::policy::Policy;
use hokan::runtime::{Limits, Runtime};
use hokan_e2e::{
    MAILWISE_POLICY, MailwiseTree, Site, TestFacts, component, hokan_bin, median, plugin_dir,
};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

fn report(name: &str, samples: Vec<Duration>, target: Option<Duration>) {
    let n = samples.len();
    let (min, max) = (
        *samples.iter().min().unwrap(),
        *samples.iter().max().unwrap(),
    );
    let med = median(samples);
    let verdict = match target {
        Some(t) if med <= t => format!(
            "target {t:?}: met ({:.2}x of target)",
            med.as_secs_f64() / t.as_secs_f64()
        ),
        Some(t) => format!(
            "target {t:?}: MISSED ({:.2}x of target)",
            med.as_secs_f64() / t.as_secs_f64()
        ),
        None => String::new(),
    };
    println!("{name:<32} median {med:>10.1?}  (min {min:.1?}, max {max:.1?}, n={n})  {verdict}");
}

fn main() {
    let wasm = component("mailwise.wasm");
    let site = Site::new(MAILWISE_POLICY);
    MailwiseTree::default().build(&site.path("data"));
    let policy = Policy::load(&site.policy()).unwrap();
    let job = policy.job("mailwise").unwrap();

    // First compile: a new, empty cache each time.
    let mut samples = Vec::new();
    for _ in 0..5 {
        let cache = tempfile::tempdir().unwrap();
        let rt = Runtime::new(cache.path(), Limits::default()).unwrap();
        let t = Instant::now();
        rt.load(&wasm, None).unwrap();
        samples.push(t.elapsed());
    }
    report("first compile (mailwise)", samples, None);

    // Warm plan call.
    let cache = tempfile::tempdir().unwrap();
    let rt = Runtime::new(cache.path(), Limits::default()).unwrap();
    let plugin = rt.load(&wasm, None).unwrap();
    let input = PlanInput {
        operation: "backup",
        set: None,
        now: SystemTime::now(),
        links: true,
        window: None,
    };
    let prepared = planner::prepare(
        &policy,
        job,
        plugin.description(),
        &input,
        &hokan::sets::OnDisk,
    )
    .unwrap();
    // The facts' own time is tallied to tell the runtime's share of a call from the disk's.
    let facts = Arc::new(TestFacts::new(
        RealFacts::open(prepared.roots.clone(), prepared.topology.clone()).unwrap(),
    ));
    let (mut samples, mut in_facts, mut in_runtime) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..1200 {
        let t = Instant::now();
        let plan = rt
            .plan(&plugin, facts.clone(), &prepared.request)
            .unwrap()
            .unwrap();
        let d = t.elapsed();
        let f = facts.take_spent();
        assert!(!plan.steps.is_empty());
        if i >= 200 {
            // the first 200 warm caches and the allocator up
            samples.push(d);
            in_facts.push(f);
            in_runtime.push(d - f);
        }
    }
    report("warm plan call (mailwise backup)", samples, None);
    report("  of which filesystem facts", in_facts, None);
    report(
        "  of which runtime and plugin",
        in_runtime,
        Some(Duration::from_micros(200)),
    );

    // Warm plan call, the smallest plan: the cost of the call itself.
    let off = PlanInput {
        operation: "maintenance-off",
        ..input
    };
    let prepared_off = planner::prepare(
        &policy,
        job,
        plugin.description(),
        &off,
        &hokan::sets::OnDisk,
    )
    .unwrap();
    let mut samples = Vec::new();
    for _ in 0..1000 {
        let t = Instant::now();
        rt.plan(&plugin, facts.clone(), &prepared_off.request)
            .unwrap()
            .unwrap();
        samples.push(t.elapsed());
    }
    report("warm plan call (maintenance-off)", samples, None);

    // Cold CLI with a warm compile cache.
    let bin = hokan_bin();
    let cli_cache = tempfile::tempdir().unwrap();
    let cli = || {
        let out = Command::new(&bin)
            .arg("--plugin-dir")
            .arg(plugin_dir())
            .arg("--cache-dir")
            .arg(cli_cache.path())
            .args([
                "plan",
                site.policy().to_str().unwrap(),
                "--job",
                "mailwise",
                "--op",
                "backup",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cli(); // fills the cache
    let mut samples = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        cli();
        samples.push(t.elapsed());
    }
    report(
        "cold `hokan plan` (warm cache)",
        samples,
        Some(Duration::from_millis(100)),
    );
}
