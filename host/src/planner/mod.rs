//! From a policy's job to a validated plan: find and load the plugin ([`load_plugin`]), grant
//! its roots and choose its set ([`prepare`], no plugin involved), ask it to plan through a
//! [`Planner`] and validate what it returned ([`plan_with`]). `hokan plan`, the simulator and
//! the executor all plan through here, so the plan shown is the plan run.
//!
//! Only [`load_plugin`] touches the runtime; everything else asks a [`Planner`], which is how
//! the simulator plans without knowing how a plugin runs.

mod links;
mod load;
mod prepare;

pub use links::links_out_of_their_root;
pub use load::{PluginDir, load_plugin};
pub use prepare::{Connected, PlanInput, Prepared, prepare, sets_dir};

use crate::describe::CallError;
use crate::describe::{PlanRefusal, Planner, SetUse};
use crate::facts::{FactSource, RealFacts, Routed};
use crate::plan::document::{FORMAT_VERSION, PlanDocument, PluginRef};
use crate::plan::{ValidationError, validate};
use crate::policy::{Job, Policy, PolicyError};
use crate::runtime::LoadError;
use crate::sets;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a job could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanJobError {
    /// The policy is wrong for this job.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The plugin could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The plugin misbehaved.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The plugin declined, for a reason of its own.
    #[error("{plugin} cannot plan `{operation}` for job `{job}`: {refusal}")]
    Refused {
        /// The plugin.
        plugin: String,
        /// The job.
        job: String,
        /// The operation.
        operation: String,
        /// Its reason.
        refusal: PlanRefusal,
    },
    /// The plan broke the site's rules.
    #[error("the plan of {plugin} for `{operation}` of job `{job}` is not allowed: {error}")]
    Invalid {
        /// The plugin.
        plugin: String,
        /// The job.
        job: String,
        /// The operation.
        operation: String,
        /// Every violation.
        error: ValidationError,
    },
    /// A set was needed and none could be found or read.
    #[error("{0}")]
    Sets(String),
    /// A server holding one of the job's roots could not be reached.
    #[error(transparent)]
    Remote(#[from] crate::remote::ssh::SshError),
}

impl PlanJobError {
    /// The policy is at fault (a wrong parameter, property or grant), not the site's state: the
    /// operator fixes the policy.
    pub fn is_bad_input(&self) -> bool {
        match self {
            PlanJobError::Refused { refusal, .. } => {
                matches!(refusal, PlanRefusal::BadParameter(_))
            }
            PlanJobError::Policy(_) => true,
            _ => false,
        }
    }
}

/// Plans an operation against `facts` and validates the result.
pub fn plan_with(
    plugin: &dyn Planner,
    policy: &Policy,
    job: &Job,
    prepared: &Prepared,
    facts: Arc<dyn FactSource>,
) -> Result<PlanDocument, PlanJobError> {
    let d = plugin.description();
    let operation = prepared.request.operation.clone();
    let plan = plugin
        .plan(facts, &prepared.request)?
        .map_err(|refusal| PlanJobError::Refused {
            plugin: d.name.clone(),
            job: job.name.clone(),
            operation: operation.clone(),
            refusal,
        })?;
    validate(&plan, &prepared.grants).map_err(|error| PlanJobError::Invalid {
        plugin: d.name.clone(),
        job: job.name.clone(),
        operation: operation.clone(),
        error,
    })?;
    Ok(PlanDocument {
        format_version: FORMAT_VERSION.into(),
        plugin: PluginRef {
            name: d.name.clone(),
            version: d.version.clone(),
            sha256: plugin.sha256().to_string(),
        },
        site: policy.site.clone(),
        job: job.name.clone(),
        operation,
        set: prepared.request.set_id.clone(),
        plan,
    })
}

/// Plans an operation against the real directories, read-only.
pub fn plan_job(
    plugin: &dyn Planner,
    policy: &Policy,
    job: &Job,
    input: &PlanInput<'_>,
) -> Result<PlanDocument, PlanJobError> {
    plan_job_prepared(plugin, policy, job, input, false).map(|(_, doc)| doc)
}

/// [`plan_job`], also returning the roots and grants the plan was made with. `for_run`: the
/// plan is about to run, so each server's session is opened granting its roots for writing
/// too, and kept in [`Prepared::sessions`] for the run to carry on with (one login per server
/// and run, not one to plan and another to act).
pub fn plan_job_prepared(
    plugin: &dyn Planner,
    policy: &Policy,
    job: &Job,
    input: &PlanInput<'_>,
    for_run: bool,
) -> Result<(Prepared, PlanDocument), PlanJobError> {
    let mut prepared = prepare(policy, job, plugin.description(), input, &sets::OnDisk)?;
    let (here, remote) = on_host(&prepared.roots, job);
    let mut facts = RealFacts::open(here.clone(), prepared.topology.clone())
        .map_err(|e| policy.job_error(job, "roots", e.to_string()))?;
    // A backup's `backup-size` counts only what the newest set cannot supply.
    let writes = plugin
        .description()
        .operation(input.operation)
        .is_some_and(|o| o.sets == SetUse::Writes);
    let previous = Arc::new(match sets_dir(policy, job) {
        Some(dir) if writes && input.links => sets::PreviousLoad::start(dir),
        _ => sets::PreviousLoad::ready(None),
    });
    facts = facts.with_previous_set(previous.clone());
    let now_ms = input
        .now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let host: Arc<dyn FactSource> = Arc::new(facts.with_now_ms(now_ms));
    let facts: Arc<dyn FactSource> = if remote.is_empty() {
        host
    } else {
        let sessions = connect(policy, remote, for_run)?;
        let by_root = sessions
            .values()
            .flat_map(|c| {
                let source: Arc<dyn FactSource> = c.session.clone();
                c.roots.keys().map(move |n| (n.clone(), source.clone()))
            })
            .collect();
        prepared.sessions = sessions;
        Arc::new(Routed::new(host, by_root))
    };
    let mut doc = plan_with(plugin, policy, job, &prepared, facts)?;
    doc.plan
        .warnings
        .extend(links_out_of_their_root(&doc.plan, &here));
    prepared.previous = previous.get().cloned();
    Ok((prepared, doc))
}

/// A job's roots split by machine: those on the host, and those on each server reached over
/// ssh (server name to its roots, as paths there).
pub fn on_host(
    roots: &BTreeMap<String, PathBuf>,
    job: &Job,
) -> (
    BTreeMap<String, PathBuf>,
    BTreeMap<String, BTreeMap<String, String>>,
) {
    let mut here = BTreeMap::new();
    let mut remote: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (name, path) in roots {
        match job.on_server(name) {
            Some((server, there)) => {
                remote
                    .entry(server.to_string())
                    .or_default()
                    .insert(name.clone(), there.to_string());
            }
            None => {
                here.insert(name.clone(), path.clone());
            }
        }
    }
    (here, remote)
}

/// One agent session per server, each answering for the roots on it; granting them for
/// writing too when `writable` (a plan about to run).
fn connect(
    policy: &Policy,
    remote: BTreeMap<String, BTreeMap<String, String>>,
    writable: bool,
) -> Result<BTreeMap<String, Connected>, PlanJobError> {
    let mut out = BTreeMap::new();
    for (server, roots) in remote {
        let ssh = policy
            .server(&server)
            .and_then(|s| s.ssh.as_ref())
            .expect("the policy binds remote roots only to servers reached over ssh");
        let writable: std::collections::BTreeSet<String> = if writable {
            roots.keys().cloned().collect()
        } else {
            Default::default()
        };
        let session = Arc::new(crate::remote::ssh::Session::connect_granting(
            &server,
            ssh,
            roots.clone(),
            writable.clone(),
        )?);
        out.insert(
            server,
            Connected {
                roots,
                writable,
                session,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::testing::{Scripted, description};
    use crate::plan::testing::{exec, plan};
    use crate::plan::{Action, Location};
    use std::time::SystemTime;

    fn policy() -> Policy {
        crate::policy::testing::one_job(
            r#"roots = { data = "/srv/data" }
commands = { prepare = "/bin/true" }"#,
        )
    }

    fn plan_of(p: &Scripted) -> Result<PlanDocument, PlanJobError> {
        let policy = policy();
        let job = policy.job("j").unwrap();
        let input = PlanInput {
            operation: "backup",
            set: None,
            now: SystemTime::UNIX_EPOCH,
            links: false,
            window: None,
        };
        let prepared = prepare(&policy, job, &p.description, &input, &sets::OnDisk)?;
        let facts = Arc::new(crate::facts::NoFacts);
        plan_with(p, &policy, job, &prepared, facts)
    }

    #[test]
    fn a_plan_is_validated_against_the_grants_before_anyone_sees_it() {
        let good = Scripted::new(
            description("p", &["backup"]),
            Ok(plan(vec![exec("prepare")], vec![])),
        );
        let doc = plan_of(&good).unwrap();
        assert_eq!((doc.site.as_str(), doc.job.as_str()), ("s", "j"));
        assert_eq!(doc.plugin.sha256, "00");
        assert_eq!(doc.plan.steps.len(), 1);

        // The plugin writes into `data`, which it did not declare writable.
        let mut write = exec("write");
        write.action = Action::WriteFile {
            path: Location::new("data", "x"),
            contents: b"x".to_vec(),
        };
        let bad = Scripted::new(description("p", &["backup"]), Ok(plan(vec![write], vec![])));
        match plan_of(&bad) {
            Err(e @ PlanJobError::Invalid { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("`backup` of job `j` is not allowed"),
                    "{text}"
                );
                assert!(!e.is_bad_input());
            }
            other => panic!("{other:?}"),
        }
        // A command the policy does not map is refused the same way.
        let unmapped = Scripted::new(
            description("p", &["backup"]),
            Ok(plan(vec![exec("rm")], vec![])),
        );
        assert!(matches!(
            plan_of(&unmapped),
            Err(PlanJobError::Invalid { .. })
        ));
    }

    /// One good set, `20261201T000000Z`, whatever the directory.
    struct OneSet;

    impl sets::Catalog for OneSet {
        fn good(&self, _dir: &std::path::Path) -> std::io::Result<Vec<String>> {
            Ok(vec!["20261201T000000Z".into()])
        }

        fn verify(&self, _dir: &std::path::Path, id: &str) -> Result<(), String> {
            Err(format!("{id} is damaged"))
        }
    }

    #[test]
    fn a_restore_test_writes_only_its_scratch_directory_and_runs_nothing() {
        let policy = crate::policy::testing::one_job(
            r#"roots = { data = "/srv/data" }
commands = { prepare = "/bin/true" }
backup_root = "/srv/backups""#,
        );
        let job = policy.job("j").unwrap();
        let plan_test = |steps: Vec<crate::plan::Step>, sets: SetUse| {
            let mut d = description("p", &[sets::tested::OPERATION]);
            d.operations[0].sets = sets;
            // The plugin declares `data` writable: a restore test still may not write it.
            d.roots = vec![crate::describe::RootInfo {
                name: "data".into(),
                description: String::new(),
                writable: true,
                required: true,
            }];
            let p = Scripted::new(d, Ok(plan(steps, vec![])));
            let input = PlanInput {
                operation: sets::tested::OPERATION,
                set: None,
                now: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_796_180_000),
                links: false,
                window: None,
            };
            let prepared = prepare(&policy, job, &p.description, &input, &OneSet)?;
            plan_with(&p, &policy, job, &prepared, Arc::new(crate::facts::NoFacts))
                .map(|doc| (prepared, doc))
        };
        let restore = |to: &str| {
            crate::plan::testing::step(
                "restore",
                Action::CopyTree {
                    from: Location::new("set", "d"),
                    to: Location::new(to, "d"),
                },
            )
        };
        // A set that no longer matches its manifest is still tested: the test finds it out.
        let (prepared, doc) = plan_test(vec![restore("scratch")], SetUse::Reads).unwrap();
        assert_eq!(doc.set.as_deref(), Some("20261201T000000Z"));
        assert_eq!(
            prepared.roots["scratch"],
            std::path::Path::new("/srv/backups/s/j/.restore-test.20261202T025320Z")
        );
        assert_eq!(
            (
                prepared.grants.roots["scratch"],
                prepared.grants.roots["data"]
            ),
            (true, false)
        );
        // Never over the live product, never a command.
        for bad in [restore("data"), exec("prepare")] {
            match plan_test(vec![bad], SetUse::Reads) {
                Err(PlanJobError::Invalid { .. }) => {}
                Err(e) => panic!("{e}"),
                Ok((_, doc)) => panic!("planned: {:?}", doc.plan),
            }
        }
        // An operation of that name that does not read a set is the plugin's mistake.
        let Err(e) = plan_test(vec![], SetUse::None) else {
            panic!("a restore test that reads no set was planned");
        };
        assert!(e.to_string().contains("cannot be a restore test"), "{e}");
    }

    #[test]
    fn the_plugins_refusal_names_it_and_a_bad_parameter_is_the_policys_fault() {
        let refusing = Scripted::new(
            description("p", &["backup"]),
            Err(crate::describe::PlanRefusal::BadParameter(
                "window: 25:00".into(),
            )),
        );
        let e = plan_of(&refusing).unwrap_err();
        assert_eq!(
            e.to_string(),
            "p cannot plan `backup` for job `j`: bad parameter: window: 25:00"
        );
        assert!(e.is_bad_input());
        // An operation the plugin lacks never reaches it.
        let other = Scripted::new(description("p", &["restore"]), Ok(plan(vec![], vec![])));
        let e = plan_of(&other).unwrap_err();
        assert!(
            e.to_string()
                .contains("p has no operation `backup` (it has: restore)"),
            "{e}"
        );
        assert_eq!(other.calls.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
