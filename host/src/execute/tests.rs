//! The executor's effects on real trees, in process: a backup journaled, copied and completed
//! with a manifest that verifies; a full disk failing the copy and leaving no set; a set that
//! exists never overwritten. Crashes (SIGKILL) need a child process: the conformance suite
//! (`tests/e2e/conformance.rs`) has them.

use super::*;
use crate::plan::document::PluginRef;
use crate::plan::testing::{copy, plan};
use crate::plan::{Item, Plan};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::AtomicU64;

const SET: &str = "20261201T000000Z";

/// Confirms every gate.
struct Yes;

impl Observer for Yes {
    fn gate(&self, _: &Step, _: &str, _: Option<&str>) -> Gate {
        Gate::Confirmed("the test".into())
    }
}

/// `site/data/d` with a few files (one of them named by bytes that are not UTF-8), and the
/// spec of a run of `plan` that writes set `SET` under `sets/`.
fn site(root: &Path, plan: Plan) -> RunSpec {
    let d = root.join("site/data/d");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("a"), b"alpha").unwrap();
    std::fs::write(d.join("sub/b"), vec![7u8; 100_000]).unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
    std::fs::write(d.join(odd), b"latin-1 name").unwrap();
    std::fs::create_dir_all(root.join("site/work")).unwrap();
    std::fs::create_dir_all(root.join("state")).unwrap();
    RunSpec {
        run: format!("{SET}-test-job-backup-{}", std::process::id()),
        instance: "test.p.host".into(),
        pid: std::process::id(),
        started: "2026-12-01T00:00:00Z".into(),
        hokan_version: "test".into(),
        document: PlanDocument {
            format_version: crate::plan::document::FORMAT_VERSION.into(),
            plugin: PluginRef {
                name: "p".into(),
                version: "0".into(),
                sha256: String::new(),
            },
            site: "test".into(),
            job: "job".into(),
            operation: "backup".into(),
            set: Some(SET.into()),
            plan,
        },
        roots: BTreeMap::from([
            ("data".to_string(), root.join("site/data")),
            ("work".to_string(), root.join("site/work")),
        ]),
        commands: BTreeMap::new(),
        services: BTreeMap::new(),
        transports: BTreeMap::new(),
        addresses: BTreeMap::new(),
        remote_roots: BTreeMap::new(),
        ssh: BTreeMap::new(),
        set: Some(SetSpec {
            id: SET.into(),
            job_dir: root.join("sets"),
            writes: true,
            previous: None,
            retention: Default::default(),
            timezone: "UTC".into(),
        }),
        policy: None,
        safety: SafetySpec::default(),
    }
}

/// A cleanup step that leaves `work/cleaned`, so a test sees that cleanup ran.
fn tidy() -> Step {
    crate::plan::testing::step(
        "tidy",
        Action::WriteFile {
            path: Location::new("work", "cleaned"),
            contents: b"yes".to_vec(),
        },
    )
}

/// The names in `dir`, sorted; a name that is not UTF-8 fails the test rather than being
/// compared mangled.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| {
                    e.file_name()
                        .into_string()
                        .unwrap_or_else(|n| panic!("{n:?} in {} is not UTF-8", dir.display()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_backup_is_journaled_copied_and_completed_with_a_manifest_that_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let spec = site(root, plan(vec![copy("copy", "set")], vec![tidy()]));
    let state = root.join("state");
    let o = execute(&spec, None, &state, &Yes, &TestFaults::default()).unwrap();
    assert_eq!(o.status, RunStatus::Completed, "{o:?}");
    assert_eq!(o.set.as_deref(), Some(SET));
    // The set is complete under its id; nothing partial is left.
    assert_eq!(entries(&root.join("sets")), [SET]);
    let set = root.join("sets").join(SET);
    let v = crate::sets::manifest::verify(&set).unwrap();
    assert!(v.ok(), "{:?}", v.problems);
    assert_eq!(v.files, 3);
    // Byte for byte, names as bytes.
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9");
    assert_eq!(
        std::fs::read(set.join("d").join(odd)).unwrap(),
        b"latin-1 name"
    );
    assert_eq!(
        std::fs::read(set.join("d/sub/b")).unwrap(),
        vec![7u8; 100_000]
    );
    assert_eq!(
        std::fs::read(root.join("site/work/cleaned")).unwrap(),
        b"yes"
    );
    // The journal is finished: it says how the run ended, and no run is left to recover.
    let ended = journal::finished_run(&state, "test", "job", "backup", std::process::id()).unwrap();
    assert_eq!(ended.outcome, o);
    assert!(journal::unfinished(&state).unwrap().is_empty());
    // It records the set's size: what the tree's three files hold.
    let bytes = (b"alpha".len() + 100_000 + b"latin-1 name".len()) as u64;
    assert_eq!(ended.set, Some((SET.to_string(), bytes)));
}

#[test]
fn a_full_disk_fails_the_copy_leaves_no_set_and_still_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let spec = site(root, plan(vec![copy("copy", "set")], vec![tidy()]));
    let faults = TestFaults {
        kill_after: None,
        space_left: Some(AtomicU64::new(1000)),
    };
    let o = execute(&spec, None, &root.join("state"), &Yes, &faults).unwrap();
    assert_eq!(o.status, RunStatus::Failed);
    assert_eq!(o.step.as_deref(), Some("copy"));
    assert_eq!(o.set, None);
    assert!(
        entries(&root.join("sets")).is_empty(),
        "{:?}",
        entries(&root.join("sets"))
    );
    assert_eq!(
        std::fs::read(root.join("site/work/cleaned")).unwrap(),
        b"yes"
    );
    // The source is untouched.
    assert_eq!(std::fs::read(root.join("site/data/d/a")).unwrap(), b"alpha");
}

#[test]
fn a_set_that_exists_is_never_overwritten_and_nothing_is_journaled() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let spec = site(root, plan(vec![copy("copy", "set")], vec![]));
    std::fs::create_dir_all(root.join("sets").join(SET)).unwrap();
    std::fs::write(root.join("sets").join(SET).join("keep"), b"mine").unwrap();
    let e = execute(
        &spec,
        None,
        &root.join("state"),
        &Yes,
        &TestFaults::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(
        std::fs::read(root.join("sets").join(SET).join("keep")).unwrap(),
        b"mine"
    );
    assert!(!journal::runs_dir(&root.join("state")).exists());
}

#[test]
fn a_group_runs_its_steps_together_and_each_is_journaled() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut p = plan(vec![], vec![]);
    let mut one = copy("one", "set");
    let mut two = copy("two", "set");
    one.action = Action::CopyTree {
        from: Location::new("data", "d/sub"),
        to: Location::new("set", "sub"),
    };
    two.action = Action::CopyTree {
        from: Location::new("data", "d/a"),
        to: Location::new("set", "a"),
    };
    p.steps.push(Item::Group(crate::plan::Group {
        group: "both".into(),
        title: "both".into(),
        steps: vec![one, two],
    }));
    let spec = site(root, p);
    let state = root.join("state");
    let o = execute(&spec, None, &state, &Yes, &TestFaults::default()).unwrap();
    assert_eq!(o.status, RunStatus::Completed, "{o:?}");
    let set = root.join("sets").join(SET);
    assert_eq!(std::fs::read(set.join("a")).unwrap(), b"alpha");
    assert_eq!(
        std::fs::read(set.join("sub/b")).unwrap(),
        vec![7u8; 100_000]
    );
    assert!(crate::sets::manifest::verify(&set).unwrap().ok());
    let file = journal::finished_run(&state, "test", "job", "backup", std::process::id())
        .unwrap()
        .journal;
    let mut ended: Vec<String> = journal::read(&file)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            journal::Record::StepEnd { step, .. } => Some(step),
            _ => None,
        })
        .collect();
    ended.sort();
    assert_eq!(ended, ["one", "two"]);
}
