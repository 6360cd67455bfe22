//! Conformance: hand-built plans run through both backends of the one driver, under every fault
//! kind, and the two must agree on what happened.
//!
//! - The **real** backend runs each plan on a temporary tree, with stand-in commands (`sh`), as a
//!   child process (`run-spec`), so that a crash is a real SIGKILL after the step
//!   (`HOKAN_TEST_KILL_AFTER`), followed by the recovery `hokan recover` does, from the journal.
//! - The **modelled** backend runs the same plan in a world scanned from the same tree, with the
//!   fault injected the simulator's way.
//!
//! A fault is made real the way it happens in the field: a command exits 1, or does its work
//! and hangs past its time limit; a copy finds its source gone or its destination taken; the
//! operator says no; a `when` condition's path runs through a file.
//!
//! They must agree on each step's status, the outcome (status, step, steps that failed, cleanup
//! steps that failed), whether the set was completed and whether it is on disk, and the verdicts
//! of the invariants both check.

use hokan::execute::{self, RunSpec, SafetySpec, SetSpec, journal};
use hokan::plan::document::{PlanDocument, PluginRef};
use hokan::plan::model::{Exec, Group};
use hokan::plan::{Action, Condition, Item, Location, OnError, Plan, Step};
use hokan::policy::CommandMap;
use hokan::runtime::{CommandBehaviour, SetUse, SimEffect};
use hokan::simulate::{Context, Fault, World, run};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SET: &str = "20261201T000000Z";
/// The time limit of the steps that have one; a hanging stand-in sleeps well past it.
const LIMIT_MS: u64 = 1500;

/// What a scenario does to the site.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Injected {
    None,
    Fail(String),
    Timeout(String),
    CrashAfter(String),
    /// The `when` condition of the step reads a path through a file.
    Unreadable(String),
}

impl Injected {
    fn label(&self) -> String {
        match self {
            Injected::None => "normal".into(),
            Injected::Fail(s) => format!("fail {s}"),
            Injected::Timeout(s) => format!("timeout {s}"),
            Injected::CrashAfter(s) => format!("crash-after {s}"),
            Injected::Unreadable(s) => format!("unreadable when of {s}"),
        }
    }

    fn fault(&self) -> Option<Fault> {
        match self {
            Injected::Fail(step) => Some(Fault::Fail { step: step.clone() }),
            Injected::Timeout(step) => Some(Fault::Timeout { step: step.clone() }),
            Injected::CrashAfter(step) => Some(Fault::CrashAfter { step: step.clone() }),
            Injected::None | Injected::Unreadable(_) => None,
        }
    }
}

fn step(id: &str, action: Action) -> Step {
    Step {
        id: id.into(),
        title: format!("the step {id}"),
        target: None,
        on_error: OnError::Abort,
        timeout_ms: None,
        retries: 0,
        when: vec![],
        commits_set: false,
        no_kill: false,
        action,
    }
}

/// A stand-in command: `touch` or `rm` of one file, so that both worlds see what it did.
fn command(id: &str) -> Step {
    Step {
        timeout_ms: Some(LIMIT_MS),
        ..step(
            id,
            Action::Exec(Exec {
                command: id.into(),
                args: vec![],
                cwd: None,
                success_codes: vec![],
            }),
        )
    }
}

fn copy(id: &str, from: Location, to: Location) -> Step {
    step(id, Action::CopyTree { from, to })
}

fn gate(id: &str) -> Step {
    step(
        id,
        Action::Manual {
            instructions: "check the product's console".into(),
            reference: None,
        },
    )
}

fn cont(s: Step) -> Step {
    Step {
        on_error: OnError::Continue,
        ..s
    }
}

fn loc(root: &str, path: &str) -> Location {
    Location::new(root, path)
}

/// A plan and what its commands do: command name to (a file it creates, or removes).
struct Case {
    name: &'static str,
    plan: Plan,
    /// Command to (`true`: creates, `false`: removes) a path under `data`.
    effects: BTreeMap<String, (bool, &'static str)>,
    /// Steps whose `when` can be made unreadable.
    unreadable: Vec<&'static str>,
    /// The file under `data` whose presence means the product is quiesced: the run must not
    /// leave it behind (`hokan:maintenance-released`).
    marker: &'static str,
}

fn cases() -> Vec<Case> {
    let quiesced = Case {
        name: "quiesced backup with a copy to media and a gate",
        plan: Plan {
            steps: vec![
                Item::Step(command("maintenance-on")),
                Item::Step(copy("copy-data", loc("data", "db"), loc("set", "db"))),
                Item::Step(cont(copy(
                    "copy-to-media",
                    loc("set", "db"),
                    loc("media", "db"),
                ))),
                Item::Step(gate("operator-check")),
            ],
            cleanup: vec![command("maintenance-off")],
            invariants: vec![],
            warnings: vec![],
            window: None,
        },
        effects: BTreeMap::from([
            ("maintenance-on".into(), (true, "maint")),
            ("maintenance-off".into(), (false, "maint")),
        ]),
        unreadable: vec![],
        marker: "maint",
    };
    let conditional = Case {
        name: "conditions, a copy into the set allowed to fail, step conditions in the cleanup",
        plan: Plan {
            steps: vec![
                Item::Step(Step {
                    when: vec![Condition::Absent {
                        path: loc("data", "flags/skip-probe"),
                    }],
                    ..command("probe")
                }),
                Item::Step(cont(copy(
                    "copy-logs",
                    loc("data", "logs"),
                    loc("set", "logs"),
                ))),
                Item::Step(command("note-done")),
            ],
            cleanup: vec![Step {
                when: vec![Condition::StepStarted {
                    step: "probe".into(),
                }],
                ..command("unprobe")
            }],
            invariants: vec![],
            warnings: vec![],
            window: None,
        },
        effects: BTreeMap::from([
            ("probe".into(), (true, "probing")),
            ("unprobe".into(), (false, "probing")),
            ("note-done".into(), (true, "done")),
        ]),
        unreadable: vec!["probe"],
        marker: "probing",
    };
    let together = Case {
        name: "a group started together, then a copy",
        plan: Plan {
            steps: vec![
                Item::Group(Group {
                    group: "stop-both".into(),
                    title: "stop both".into(),
                    steps: vec![command("stop-a"), command("stop-b")],
                }),
                Item::Step(copy("copy-data", loc("data", "db"), loc("set", "db"))),
            ],
            cleanup: vec![command("start-a"), command("start-b")],
            invariants: vec![],
            warnings: vec![],
            window: None,
        },
        effects: BTreeMap::from([
            ("stop-a".into(), (true, "a-stopped")),
            ("stop-b".into(), (true, "b-stopped")),
            ("start-a".into(), (false, "a-stopped")),
            ("start-b".into(), (false, "b-stopped")),
        ]),
        unreadable: vec![],
        marker: "a-stopped",
    };
    let committed = Case {
        name: "a point of no return (the logs truncated once copied), then a check",
        plan: Plan {
            steps: vec![
                Item::Step(command("quiesce")),
                Item::Step(copy("copy-logs", loc("data", "logs"), loc("set", "logs"))),
                Item::Step(Step {
                    commits_set: true,
                    ..command("truncate-logs")
                }),
                Item::Step(command("check-set")),
                Item::Step(cont(copy("copy-db", loc("data", "db"), loc("set", "db")))),
            ],
            cleanup: vec![command("release")],
            invariants: vec![],
            warnings: vec![],
            window: None,
        },
        effects: BTreeMap::from([
            ("quiesce".into(), (true, "maint")),
            ("release".into(), (false, "maint")),
            ("truncate-logs".into(), (false, "logs")),
            ("check-set".into(), (true, "checked")),
        ]),
        unreadable: vec![],
        marker: "maint",
    };
    let repair = Case {
        name: "files removed as found, a command never killed, steps that follow only a success",
        plan: Plan {
            steps: vec![
                Item::Step(command("stop")),
                Item::Step(step(
                    "clear-logs",
                    Action::RemoveFiles {
                        dir: loc("data", "logs"),
                        patterns: vec!["E0000*.LOG".into()],
                        except: vec!["e00002.log".into()],
                        ignore_case: true,
                    },
                )),
                Item::Step(Step {
                    no_kill: true,
                    timeout_ms: Some(LIMIT_MS),
                    ..command("archive")
                }),
                Item::Step(cont(command("fix"))),
                Item::Step(Step {
                    when: vec![Condition::StepSucceeded { step: "fix".into() }],
                    ..command("start")
                }),
            ],
            cleanup: vec![Step {
                when: vec![
                    Condition::StepStarted {
                        step: "stop".into(),
                    },
                    Condition::StepNotStarted { step: "fix".into() },
                    Condition::StepNotSucceeded {
                        step: "start".into(),
                    },
                ],
                ..command("restart")
            }],
            invariants: vec![],
            warnings: vec![],
            window: None,
        },
        effects: BTreeMap::from([
            ("stop".into(), (true, "stopped")),
            ("archive".into(), (true, "archived")),
            ("start".into(), (false, "stopped")),
            ("restart".into(), (false, "stopped")),
        ]),
        unreadable: vec![],
        marker: "stopped",
    };
    vec![quiesced, conditional, together, committed, repair]
}

/// Every scenario of a case: the normal run, then each step failing, timing out (those with a
/// time limit) and crashing after it, then each unreadable condition.
fn scenarios(case: &Case) -> Vec<Injected> {
    let mut out = vec![Injected::None];
    for s in case.plan.all_steps() {
        out.push(Injected::Fail(s.id.clone()));
        if s.timeout_ms.is_some() {
            out.push(Injected::Timeout(s.id.clone()));
        }
        out.push(Injected::CrashAfter(s.id.clone()));
    }
    out.extend(
        case.unreadable
            .iter()
            .map(|s| Injected::Unreadable(s.to_string())),
    );
    out
}

/// The site's tree: data (a database directory, logs, a flags directory), media, the sets.
fn make_site(root: &Path, injected: &Injected, case: &Case) {
    let data = root.join("data");
    for (p, body) in [
        ("db/priv.edb", "private store"),
        ("db/pub.edb", "public store"),
        ("logs/e00001.log", "log one"),
        ("logs/e00002.log", "log two"),
    ] {
        let f = data.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, body).unwrap();
    }
    std::fs::create_dir_all(data.join("flags")).unwrap();
    std::fs::create_dir_all(root.join("media")).unwrap();
    std::fs::create_dir_all(root.join("sets/job")).unwrap();
    // How each failure is real on disk.
    let copy_of = |id: &str| {
        case.plan.all_steps().find_map(|s| match &s.action {
            Action::CopyTree { from, to } if s.id == id => Some((from.clone(), to.clone())),
            _ => None,
        })
    };
    match injected {
        // A remove-files step fails on an entry it chose that is not a file.
        Injected::Fail(id)
            if case
                .plan
                .all_steps()
                .any(|s| s.id == *id && matches!(s.action, Action::RemoveFiles { .. })) =>
        {
            std::fs::create_dir(data.join("logs/E00009.LOG")).unwrap()
        }
        Injected::Fail(id) => match copy_of(id) {
            // A copy out of the set finds its destination taken; one into it, its source gone.
            Some((_, to)) if to.root == "media" => {
                std::fs::write(root.join("media").join(&to.path), "taken").unwrap()
            }
            Some((from, _)) => std::fs::remove_dir_all(data.join(&from.path)).unwrap(),
            None => {}
        },
        Injected::Unreadable(_) => {
            std::fs::remove_dir(data.join("flags")).unwrap();
            std::fs::write(data.join("flags"), "a file where a directory was").unwrap();
        }
        _ => {}
    }
}

fn roots(root: &Path) -> BTreeMap<String, PathBuf> {
    BTreeMap::from([
        ("data".to_string(), root.join("data")),
        ("media".to_string(), root.join("media")),
        ("set".to_string(), root.join("sets/job").join(SET)),
    ])
}

/// The stand-in command lines: each does its effect, or fails, or does it and hangs.
fn commands(root: &Path, case: &Case, injected: &Injected) -> BTreeMap<String, CommandMap> {
    case.plan
        .all_steps()
        .filter_map(|s| match &s.action {
            Action::Exec(e) => Some(e.command.clone()),
            _ => None,
        })
        .map(|c| {
            let effect = match case.effects.get(&c) {
                Some((true, p)) => format!("touch '{}'", root.join("data").join(p).display()),
                Some((false, p)) => format!("rm -rf '{}'", root.join("data").join(p).display()),
                None => "true".into(),
            };
            let never_killed = case
                .plan
                .all_steps()
                .any(|s| s.no_kill && matches!(&s.action, Action::Exec(e) if e.command == c));
            let script = match injected {
                Injected::Fail(s) if *s == c => "exit 1".to_string(),
                // A command hokan must never kill hangs past its limit, until the operator
                // stops it.
                Injected::Timeout(s) if *s == c && never_killed => format!(
                    "{effect}; sleep {}; kill -TERM $$",
                    (LIMIT_MS * 2) as f64 / 1000.0
                ),
                Injected::Timeout(s) if *s == c => format!("{effect}; exec sleep 30"),
                _ => effect,
            };
            let map = CommandMap {
                program: "sh".into(),
                args: vec!["-c".into(), script],
            };
            (c, map)
        })
        .collect()
}

fn behaviours(case: &Case) -> Vec<CommandBehaviour> {
    case.effects
        .iter()
        .map(|(c, (creates, p))| CommandBehaviour {
            command: c.clone(),
            args_prefix: vec![],
            exit_code: 0,
            output: String::new(),
            duration_ms: 10,
            effects: vec![if *creates {
                SimEffect::CreateFile(loc("data", p))
            } else {
                SimEffect::Remove(loc("data", p))
            }],
        })
        .collect()
}

fn markers(case: &Case) -> Vec<Location> {
    vec![loc("data", case.marker)]
}

/// What both backends must agree on.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    /// (phase, step, status, attempts), group members in id order.
    steps: Vec<(String, String, String, u32)>,
    status: String,
    step: Option<String>,
    steps_failed: Vec<String>,
    cleanup_failed: Vec<String>,
    /// `complete`, `kept` (after a point of no return) or `gone`.
    set: &'static str,
    /// Invariants broken, by id, of those both backends check.
    broken: Vec<String>,
}

fn kebab(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// Orders the members of each group by id: they run at the same time, so a real run journals
/// them in any order.
fn in_group_order(plan: &Plan, steps: &mut [(String, String, String, u32)]) {
    for item in &plan.steps {
        if let Item::Group(g) = item {
            let ids: Vec<&str> = g.steps.iter().map(|s| s.id.as_str()).collect();
            let at: Vec<usize> = (0..steps.len())
                .filter(|&i| ids.contains(&steps[i].1.as_str()))
                .collect();
            let mut members: Vec<_> = at.iter().map(|&i| steps[i].clone()).collect();
            members.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            for (i, m) in at.into_iter().zip(members) {
                steps[i] = m;
            }
        }
    }
}

/// Both backends check these; the modelled world checks more (what a real run cannot know).
const SHARED_INVARIANTS: [&str; 4] = [
    "hokan:maintenance-released",
    "hokan:services-restored",
    "hokan:source-unchanged",
    "hokan:set-kept-after-point-of-no-return",
];

fn real(case: &Case, injected: &Injected) -> Verdict {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_site(root, injected, case);
    let state = root.join("state");
    std::fs::create_dir(&state).unwrap();
    let spec = RunSpec {
        run: format!("conformance-{}", std::process::id()),
        instance: "conformance.test.host".into(),
        pid: std::process::id(),
        started: "2026-12-01T00:00:00Z".into(),
        hokan_version: "test".into(),
        document: PlanDocument {
            format_version: hokan::plan::document::FORMAT_VERSION.into(),
            plugin: PluginRef {
                name: "conformance".into(),
                version: "0".into(),
                sha256: String::new(),
            },
            site: "test".into(),
            job: "job".into(),
            operation: "backup".into(),
            set: Some(SET.into()),
            plan: case.plan.clone(),
        },
        roots: roots(root),
        commands: commands(root, case, injected),
        services: BTreeMap::new(),
        transports: BTreeMap::new(),
        addresses: BTreeMap::new(),
        remote_roots: BTreeMap::new(),
        ssh: BTreeMap::new(),
        set: Some(SetSpec {
            id: SET.into(),
            job_dir: root.join("sets/job"),
            writes: true,
            previous: None,
            retention: Default::default(),
            timezone: "UTC".into(),
        }),
        policy: None,
        safety: SafetySpec {
            markers: markers(case),
            leaves_maintenance: false,
        },
    };
    let spec_file = root.join("spec.json");
    std::fs::write(&spec_file, serde_json::to_vec(&spec).unwrap()).unwrap();
    let refuse = match injected {
        Injected::Fail(s)
            if case
                .plan
                .all_steps()
                .any(|x| x.id == *s && x.action.kind() == "manual") =>
        {
            Some(s.clone())
        }
        _ => None,
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_run-spec"));
    cmd.arg(&spec_file).arg(&state).args(refuse.iter());
    if let Injected::CrashAfter(s) = injected {
        cmd.env("HOKAN_TEST_KILL_AFTER", s);
    }
    let out = cmd.output().unwrap();
    let outcome: execute::Outcome = if let Injected::CrashAfter(_) = injected {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{}: the run was to be killed\n{}",
            injected.label(),
            String::from_utf8_lossy(&out.stderr)
        );
        // What `hokan recover` does, from the journal the dead run left.
        let runs = journal::unfinished(&state).unwrap();
        assert_eq!(runs.len(), 1, "one unfinished run");
        let spec = runs[0].spec().cloned().unwrap();
        execute::recover(
            &runs[0],
            Some(&spec),
            &hokan_e2e::Gates::default(),
            &execute::TestFaults::default(),
        )
        .unwrap()
    } else {
        assert!(
            out.status.success(),
            "{}: {}",
            injected.label(),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // The steps, from the journal (the finished one).
    let done = journal::runs_dir(&state).join("done");
    let file = std::fs::read_dir(&done)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut steps: Vec<(String, String, String, u32)> = journal::read(&file)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            journal::Record::StepEnd {
                step,
                phase,
                status,
                attempts,
                ..
            } => Some((kebab(&phase), step, kebab(&status), attempts)),
            _ => None,
        })
        .collect();
    in_group_order(&case.plan, &mut steps);
    let set_dir = root.join("sets/job").join(SET);
    let on_disk = set_dir.join("manifest.json").is_file();
    let set = match hokan::sets::Manifest::head(&set_dir) {
        Ok(h) if h.kept.is_some() => "kept",
        Ok(_) => "complete",
        Err(_) => "gone",
    };
    assert_eq!(
        set == "kept",
        outcome.set_kept.is_some(),
        "{}: the outcome says the set is kept exactly when its manifest does",
        injected.label()
    );
    assert_eq!(
        on_disk,
        outcome.set.is_some(),
        "{}: a set is on disk exactly when the outcome names it",
        injected.label()
    );
    assert!(
        !root
            .join("sets/job")
            .join(format!(".{SET}.partial"))
            .exists(),
        "{}: no partial set is left behind: {outcome:?}",
        injected.label()
    );
    let mut broken: Vec<String> = outcome
        .invariants_broken
        .iter()
        .map(|b| b.split(':').take(2).collect::<Vec<_>>().join(":"))
        .filter(|id| SHARED_INVARIANTS.contains(&id.as_str()))
        .collect();
    broken.sort();
    Verdict {
        steps,
        status: kebab(&outcome.status),
        step: outcome.step,
        steps_failed: outcome.steps_failed,
        cleanup_failed: outcome.cleanup_failed,
        set,
        broken,
    }
}

fn modelled(case: &Case, injected: &Injected) -> Verdict {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_site(root, injected, case);
    let world = World::scan([root], 0).unwrap();
    let roots: BTreeMap<String, String> = roots(root)
        .into_iter()
        .map(|(k, v)| (k, hokan::simulate::normalize(Path::new("/"), &v)))
        .collect();
    let markers = markers(case);
    let behaviours = behaviours(case);
    let ctx = Context {
        job: "job",
        roots: &roots,
        keep: vec![],
        set_use: SetUse::Writes,
        markers: &markers,
        leaves_maintenance: false,
        behaviours: &behaviours,
        plan: &case.plan,
        // The conformance sites are on the host: no server to go down.
        remote: &hokan::simulate::RemoteServers::default(),
    };
    let t = run::run(&world, &ctx, injected.fault().as_ref());
    let mut steps: Vec<(String, String, String, u32)> = t
        .steps
        .iter()
        .map(|s| (kebab(&s.phase), s.id.clone(), kebab(&s.status), s.attempts))
        .collect();
    in_group_order(&case.plan, &mut steps);
    let mut broken: Vec<String> = t
        .broken()
        .map(|i| i.id.clone())
        .filter(|id| SHARED_INVARIANTS.contains(&id.as_str()))
        .collect();
    broken.sort();
    assert!(
        t.broken()
            .all(|i| SHARED_INVARIANTS.contains(&i.id.as_str())),
        "{}: {:#?}",
        injected.label(),
        t.broken().collect::<Vec<_>>()
    );
    assert_eq!(
        t.set_complete == Some(true) || t.set_kept,
        t.outcome.set.is_some()
    );
    Verdict {
        steps,
        status: kebab(&t.outcome.status),
        step: t.outcome.step,
        steps_failed: t.outcome.steps_failed,
        cleanup_failed: t.outcome.cleanup_failed,
        set: match (t.set_complete, t.set_kept) {
            (Some(true), _) => "complete",
            (_, true) => "kept",
            _ => "gone",
        },
        broken,
    }
}

#[test]
fn both_backends_agree_on_every_plan_under_every_fault() {
    use rayon::prelude::*;
    let cases = cases();
    let all: Vec<(&Case, Injected)> = cases
        .iter()
        .flat_map(|c| scenarios(c).into_iter().map(move |i| (c, i)))
        .collect();
    let disagreements: Vec<String> = all
        .par_iter()
        .filter_map(|(case, injected)| {
            let (r, m) = (real(case, injected), modelled(case, injected));
            (r != m).then(|| {
                format!(
                    "{} / {}:\n  real:     {r:?}\n  modelled: {m:?}",
                    case.name,
                    injected.label()
                )
            })
        })
        .collect();
    assert!(
        disagreements.is_empty(),
        "{} of {} scenario(s) disagree:\n{}",
        disagreements.len(),
        all.len(),
        disagreements.join("\n")
    );
}

/// The verdicts themselves, for the cases the issue names: a failed copy out of the set keeps
/// it complete; one into it, allowed to fail, leaves it incomplete; a refused gate aborts; an
/// unreadable condition fails its step without running it.
#[test]
fn the_verdicts_are_the_documented_rules() {
    let cases = cases();
    let quiesced = &cases[0];
    let v = real(quiesced, &Injected::Fail("copy-to-media".into()));
    assert_eq!(v.status, "completed");
    assert_eq!(v.steps_failed, ["copy-to-media"]);
    assert_eq!(v.set, "complete");

    let v = real(quiesced, &Injected::Fail("operator-check".into()));
    assert_eq!(
        (v.status.as_str(), v.step.as_deref()),
        ("failed", Some("operator-check"))
    );
    assert_eq!(v.set, "gone");
    assert!(v.steps.contains(&(
        "body".into(),
        "operator-check".into(),
        "not-confirmed".into(),
        1
    )));
    assert!(v.broken.is_empty(), "maintenance was released: {v:?}");

    let conditional = &cases[1];
    let v = real(conditional, &Injected::Fail("copy-logs".into()));
    assert_eq!(v.status, "completed");
    assert_eq!(v.steps_failed, ["copy-logs"]);
    assert_eq!(v.set, "gone", "a set missing a copy is not listed as good");

    let v = real(conditional, &Injected::Unreadable("probe".into()));
    assert_eq!(
        (v.status.as_str(), v.step.as_deref()),
        ("failed", Some("probe"))
    );
    assert_eq!(
        v.steps[0],
        ("body".into(), "probe".into(), "failed".into(), 0)
    );
    // Never started, so the cleanup's `step-started probe` does not hold.
    assert!(
        v.steps
            .contains(&("cleanup".into(), "unprobe".into(), "skipped".into(), 0))
    );

    let v = real(quiesced, &Injected::CrashAfter("copy-data".into()));
    assert_eq!(
        (v.status.as_str(), v.step.as_deref()),
        ("recovered", Some("copy-data"))
    );
    assert_eq!(v.set, "gone");
    assert!(
        v.steps
            .contains(&("recovery".into(), "maintenance-off".into(), "ok".into(), 1))
    );
    assert!(v.broken.is_empty(), "{v:?}");

    // After the point of no return: a failure, a crash, a failed copy into the set all keep it.
    let committed = &cases[3];
    for injected in [
        Injected::Fail("check-set".into()),
        Injected::Timeout("check-set".into()),
        Injected::CrashAfter("truncate-logs".into()),
        Injected::Fail("copy-db".into()),
    ] {
        let v = real(committed, &injected);
        assert_eq!(v.set, "kept", "{}: {v:?}", injected.label());
        assert!(v.broken.is_empty(), "{}: {v:?}", injected.label());
    }
    // Before it, the set goes.
    let v = real(committed, &Injected::Fail("copy-logs".into()));
    assert_eq!(v.set, "gone");

    let repair = &cases[4];
    let ended = |v: &Verdict, phase: &str, id: &str| {
        v.steps
            .iter()
            .find(|s| s.0 == phase && s.1 == id)
            .map(|s| s.2.clone())
            .unwrap_or_else(|| panic!("{id} did not end in the {phase}: {v:?}"))
    };
    // A command that must never be killed, hung past its limit, is not timed out: the operator
    // stopped it, and it failed.
    let v = real(repair, &Injected::Timeout("archive".into()));
    assert_eq!(ended(&v, "body", "archive"), "failed", "{v:?}");
    // The fix failed: what follows only its success is skipped, and so is the cleanup's undo
    // that holds only while the fix never began. What the run left is reported.
    let v = real(repair, &Injected::Fail("fix".into()));
    assert_eq!(v.steps_failed, ["fix"]);
    assert_eq!(ended(&v, "body", "start"), "skipped");
    assert_eq!(ended(&v, "cleanup", "restart"), "skipped");
    assert_eq!(v.broken, ["hokan:maintenance-released"]);
    // Failing before the fix, the undo runs.
    let v = real(repair, &Injected::Fail("archive".into()));
    assert_eq!(ended(&v, "cleanup", "restart"), "ok");
    assert!(v.broken.is_empty(), "{v:?}");
}
