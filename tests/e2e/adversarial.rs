//! Hostile plugins: each is refused with a clear error, and the same host process goes on to
//! serve the next request.

use hokan::planner::{self, PlanInput, PlanJobError};
use hokan::policy::Policy;
use hokan::runtime::{CallError, Limits, LoadError};
use hokan_e2e::{Site, component};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

const POLICY: &str = r#"
[site]
name = "lab"

[jobs.adversary]
plugin = "adversary.wasm"
roots = { data = "data" }
commands = { tool = "/bin/true" }
"#;

#[test]
fn every_misbehaviour_is_refused_and_the_host_carries_on() {
    let limits = Limits {
        call_timeout: Duration::from_millis(500),
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let (rt, _cache) = crate::runtime(limits);
    let site = Site::new(POLICY);
    std::fs::create_dir_all(site.path("data")).unwrap();
    std::fs::copy(
        component("fixtures/adversary.wasm"),
        site.path("adversary.wasm"),
    )
    .unwrap();
    let policy = Policy::load(&site.policy()).unwrap();
    let job = policy.job("adversary").unwrap();
    let plugin = rt
        .load(&site.path("adversary.wasm"), None)
        .expect("adversary loads");

    let plan = |op: &str| {
        let input = PlanInput {
            operation: op,
            set: None,
            now: SystemTime::now(),
            links: true,
            window: None,
        };
        planner::plan_job(&rt.bind(&plugin), &policy, job, &input)
    };
    // The host serves a well-behaved request between every hostile one.
    let still_serving = || {
        let doc = plan("ok").expect("the host still serves plans");
        let json = serde_json::to_value(&doc.plan.steps).unwrap();
        assert_eq!(json[0]["action"]["kind"], "exec");
        assert_eq!(json[1]["group"], "both");
        assert_eq!(json[1]["steps"][1]["id"], "right");
        assert_eq!(json[1]["steps"][1]["timeout_ms"], 3000);
        assert_eq!(doc.plan.all_steps().count(), 3);
    };
    still_serving();

    let started = Instant::now();
    match plan("loop") {
        Err(PlanJobError::Call(e @ CallError::Timeout { .. })) => {
            assert_eq!(
                e.to_string(),
                "plugin `adversary` did not finish plan() within 500ms of its own computing time and was stopped"
            );
        }
        other => panic!("an endless loop must time out, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the deadline is enforced promptly"
    );
    still_serving();

    match plan("grow") {
        Err(PlanJobError::Call(e @ CallError::Memory { .. })) => {
            assert_eq!(
                e.to_string(),
                "plugin `adversary` tried to use more than 32 MiB of memory in plan() and was stopped"
            );
        }
        other => panic!("unbounded growth must hit the memory cap, got {other:?}"),
    }
    still_serving();

    match plan("trap") {
        Err(PlanJobError::Call(CallError::Trap { message, .. })) => {
            assert!(
                message.contains("wasm trap") || message.contains("unreachable"),
                "{message}"
            );
        }
        other => panic!("a trap must be reported, got {other:?}"),
    }
    still_serving();

    for (op, expected) in [
        (
            "absolute-path",
            "step `steal`: the path `/etc/shadow` in root `data` is absolute",
        ),
        (
            "dotdot",
            "step `escape`: the path `a/../../etc` in root `data` contains `..`",
        ),
        (
            "unmapped-command",
            "step `wipe`: runs the command `format-disk`, which the policy does not map",
        ),
    ] {
        match plan(op) {
            Err(e @ PlanJobError::Invalid { .. }) => {
                let text = e.to_string();
                assert!(text.contains(expected), "{op}: {text}");
            }
            other => panic!("{op} must be refused by validation, got {other:?}"),
        }
        still_serving();
    }

    match plan("huge-plan") {
        Err(PlanJobError::Call(e @ CallError::PlanTooLarge { .. })) => {
            assert_eq!(
                e.to_string(),
                "plugin `adversary` returned a plan that is too large: more than 2000 steps"
            );
        }
        other => panic!("a huge plan must be refused, got {other:?}"),
    }
    still_serving();

    // Components that must not even be compiled.
    let load_err = |path: &Path| rt.load(path, None).err().expect("refused");
    match load_err(&component("fixtures/future-contract.wasm")) {
        e @ LoadError::ContractMismatch { .. } => {
            let text = e.to_string();
            assert!(
                text.contains(
                    "built for contract hokan:policy@0.9.0, but this host speaks hokan:policy@0.5.0, 0.6.0, 0.7.0, 0.8.0"
                ),
                "{text}"
            );
        }
        other => panic!("another contract version must be refused, got {other}"),
    }
    still_serving();

    match load_err(&component("fixtures/not-a-component.wasm")) {
        e @ LoadError::NotAComponent { .. } => {
            assert!(e.to_string().contains("it is a core module"), "{e}")
        }
        other => panic!("a core module must be refused, got {other}"),
    }
    std::fs::write(site.path("garbage.wasm"), b"#!/bin/sh\nrm -rf /\n").unwrap();
    match load_err(&site.path("garbage.wasm")) {
        e @ LoadError::NotAComponent { .. } => assert!(
            e.to_string().contains("is not a WebAssembly component"),
            "{e}"
        ),
        other => panic!("bytes that are not wasm must be refused, got {other}"),
    }
    still_serving();

    // A pinned hash that does not match refuses the file before anything runs.
    match rt.load(&site.path("adversary.wasm"), Some(&"0".repeat(64))) {
        Err(e @ LoadError::PinMismatch { .. }) => {
            assert!(e.to_string().contains("update `plugin_sha256`"), "{e}")
        }
        Err(other) => panic!("expected a pin mismatch, got {other}"),
        Ok(_) => panic!("expected a pin mismatch"),
    }
    still_serving();
}

#[test]
fn the_compile_cache_is_used_and_survives_corruption() {
    use hokan::runtime::{CacheOutcome, Runtime};
    let cache = tempfile::tempdir().unwrap();
    let wasm = component("mailwise.wasm");
    let rt = Runtime::new(cache.path(), Limits::default()).unwrap();
    assert_eq!(
        rt.load(&wasm, None).unwrap().cache_outcome(),
        CacheOutcome::Compiled
    );
    let second = rt.load(&wasm, None).unwrap();
    assert_eq!(second.cache_outcome(), CacheOutcome::Hit);

    // A truncated entry is compiled again and replaced.
    let entries: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "one entry, no temporary files left: {entries:?}"
    );
    assert!(
        entries[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(second.sha256())
    );
    std::fs::write(&entries[0], b"truncated").unwrap();
    assert_eq!(
        rt.load(&wasm, None).unwrap().cache_outcome(),
        CacheOutcome::Rebuilt
    );
    assert_eq!(
        rt.load(&wasm, None).unwrap().cache_outcome(),
        CacheOutcome::Hit
    );
}

#[test]
fn slow_facts_do_not_count_against_the_plugin_but_wall_time_is_capped() {
    use hokan_e2e::{MAILWISE_POLICY, MailwiseTree, TestFacts};
    use std::sync::Arc;
    let site = Site::new(MAILWISE_POLICY);
    MailwiseTree::default().build(&site.path("data"));
    let policy = Policy::load(&site.policy()).unwrap();
    let job = policy.job("mailwise").unwrap();
    let plan_with = |limits: Limits| {
        let (rt, _cache) = crate::runtime(limits);
        let plugin = rt.load(&component("mailwise.wasm"), None).unwrap();
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
        let real = hokan::facts::RealFacts::open(prepared.roots.clone(), prepared.topology.clone())
            .unwrap();
        // A backup plan asks about ten questions: about a second of facts in all.
        let facts = Arc::new(TestFacts::new(real).delay(Duration::from_millis(100)));
        planner::plan_with(&rt.bind(&plugin), &policy, job, &prepared, facts)
    };
    let tight_own_time = Limits {
        call_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let doc = plan_with(tight_own_time.clone()).expect("time spent in facts is not the plugin's");
    assert!(!doc.plan.steps.is_empty());

    let tight_wall = Limits {
        call_wall_timeout: Duration::from_millis(300),
        ..tight_own_time
    };
    match plan_with(tight_wall) {
        Err(PlanJobError::Call(e @ CallError::Timeout { .. })) => assert_eq!(
            e.to_string(),
            "plugin `mailwise` did not finish plan() within 300ms of wall-clock time (site facts included) and was stopped"
        ),
        other => panic!("the wall-clock cap must stop the call, got {other:?}"),
    }
}

/// A plugin built against the released contract 0.5.0 (the `contract-0-5` fixture, built from
/// the frozen `wit/0.5.0/`) loads and plans in the same host as the current plugins, with the
/// defaults of what 0.5.0 lacks; its facts (`tree-size`) are served under 0.5.0's names.
#[test]
fn a_plugin_built_against_0_5_0_loads_and_plans_beside_the_current_ones() {
    let (rt, _cache) = crate::runtime(Limits::default());
    let site = Site::new(
        r#"
[site]
name = "lab"

[jobs.legacy]
plugin = "legacy.wasm"
roots = { data = "data" }
backup_root = "backups"
"#,
    );
    std::fs::create_dir_all(site.path("data/mail")).unwrap();
    std::fs::write(site.path("data/mail/1.eml"), vec![b'x'; 5000]).unwrap();
    std::fs::copy(
        component("fixtures/contract-0-5.wasm"),
        site.path("legacy.wasm"),
    )
    .unwrap();
    let legacy = rt
        .load(&site.path("legacy.wasm"), None)
        .expect("0.5.0 loads");
    assert_eq!(legacy.contract(), "0.5.0");
    // The same plugin built against 0.6.0 loads through that version's bindings.
    let v0_6 = rt
        .load(&component("fixtures/contract-0-6.wasm"), None)
        .expect("0.6.0 loads");
    assert_eq!(v0_6.contract(), "0.6.0");
    let v0_7 = rt
        .load(&component("fixtures/contract-0-7.wasm"), None)
        .expect("0.7.0 loads");
    assert_eq!(v0_7.contract(), "0.7.0");
    let current: Vec<_> = ["mailwise", "groupmax", "teamware", "exchange"]
        .iter()
        .map(|p| rt.load(&component(&format!("{p}.wasm")), None).unwrap())
        .collect();
    for p in &current {
        assert_eq!(
            p.contract(),
            hokan::runtime::CONTRACT_VERSION,
            "{}",
            p.description().name
        );
    }
    assert_eq!(legacy.description().name, "legacy");

    let policy = Policy::load(&site.policy()).unwrap();
    let job = policy.job("legacy").unwrap();
    let input = PlanInput {
        operation: "backup",
        set: None,
        now: SystemTime::now(),
        links: true,
        window: None,
    };
    let doc = planner::plan_job(&rt.bind(&legacy), &policy, job, &input).expect("0.5.0 plans");
    let ids: Vec<&str> = doc.plan.all_steps().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["check-space", "copy-data", "verify-data"]);
    // The fact it asked for, answered through 0.5.0's facts interface.
    let json = serde_json::to_value(&doc.plan.steps[0]).unwrap();
    assert_eq!(json["action"]["condition"]["bytes"], 5000, "{json:#}");
    // 0.5.0 has no points of no return.
    assert!(doc.plan.all_steps().all(|s| !s.commits_set));
    let doc6 = planner::plan_job(&rt.bind(&v0_6), &policy, job, &input).expect("0.6.0 plans");
    assert_eq!(doc6.plan, doc.plan);
    // 0.7.0 has no command that must never be killed, and its invariants always apply.
    let doc7 = planner::plan_job(&rt.bind(&v0_7), &policy, job, &input).expect("0.7.0 plans");
    assert_eq!(doc7.plan, doc.plan);
    assert!(doc7.plan.all_steps().all(|s| !s.no_kill));
    // And the current plugins still plan in the same host afterwards.
    let mw = &current[0];
    assert_eq!(mw.description().name, "mailwise");
}
