//! Dry runs: a plan carried out in a modelled world, once normally and once per injected
//! fault, with the safety invariants checked after every run.
//!
//! - [`world`]: the modelled site (files, free space, services, command behaviours), from a
//!   fixture file or a read-only scan, and the facts a plugin sees while planning in it.
//! - [`run`](mod@run): the effect of every action, the transcript, crash recovery and the invariants.
//! - [`report`]: the human transcript, the versioned JSON document and JUnit XML.
//!
//! [`simulate_op`] plans one operation of a job in a world and runs every scenario.

pub mod faults;
pub mod report;
pub mod run;
pub mod world;

pub use run::{
    Context, Fault, FaultMode, InvariantResult, KeptFile, Outcome, Phase, RemoteServers, RunStatus,
    StepRecord, StepStatus, Transcript, scenarios,
};
pub use world::{World, WorldError, WorldFacts, normalize};

use crate::describe::{Planner, SetUse};
use crate::plan::document::PluginRef;
use crate::planner::{self, PlanInput, PlanJobError};
use crate::policy::{Job, Policy};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Version of the JSON document `hokan simulate --json` prints (`docs/simulation.md`).
pub const FORMAT_VERSION: &str = "2";

/// Every scenario of one operation of one job.
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    /// The site.
    pub site: String,
    /// The job.
    pub job: String,
    /// The operation.
    pub operation: String,
    /// The plugin that planned it.
    pub plugin: PluginRef,
    /// The backup set written or read.
    pub set: Option<String>,
    /// The plugin's refusal to plan in this world, if it refused; then there are no scenarios.
    pub refused: Option<String>,
    /// Why the operation could not be simulated in this world, when it reads a backup set and
    /// the world holds none for the job (a site not backed up yet); then there are no
    /// scenarios. Not a failure: a restore of a set that does not exist cannot be rehearsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_simulated: Option<String>,
    /// The normal run first, then one per fault.
    pub scenarios: Vec<Transcript>,
}

impl OpReport {
    /// The scenarios in which an invariant broke.
    pub fn broken(&self) -> impl Iterator<Item = &Transcript> {
        self.scenarios
            .iter()
            .filter(|t| t.broken().next().is_some())
    }

    /// `site/job/operation`.
    pub fn name(&self) -> String {
        format!("{}/{}/{}", self.site, self.job, self.operation)
    }
}

/// Everything one `hokan simulate` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always [`FORMAT_VERSION`].
    pub format_version: String,
    /// `none` or `each-step`.
    pub faults: &'static str,
    /// One per (job, operation).
    pub runs: Vec<OpReport>,
    /// Counts.
    pub summary: Summary,
}

/// The counts of a report.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Operations simulated.
    pub operations: usize,
    /// Scenarios run.
    pub scenarios: usize,
    /// Scenarios with a broken invariant.
    pub broken: usize,
    /// Operations the plugin refused to plan.
    pub refused: usize,
    /// Operations that read a backup set, in a world that has none for their job.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_simulated: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Report {
    /// A report of `runs`.
    pub fn new(mode: FaultMode, runs: Vec<OpReport>) -> Report {
        let summary = Summary {
            operations: runs.len(),
            scenarios: runs.iter().map(|r| r.scenarios.len()).sum(),
            broken: runs.iter().map(|r| r.broken().count()).sum(),
            refused: runs.iter().filter(|r| r.refused.is_some()).count(),
            not_simulated: runs.iter().filter(|r| r.not_simulated.is_some()).count(),
        };
        Report {
            format_version: FORMAT_VERSION.into(),
            faults: match mode {
                FaultMode::None => "none",
                FaultMode::EachStep => "each-step",
            },
            runs,
            summary,
        }
    }
}

/// Whether the world holds no set at all (good or kept) for the job.
fn no_sets(policy: &Policy, job: &Job, world: &World) -> bool {
    use crate::sets::Catalog;
    let Some(dir) = planner::sets_dir(policy, job) else {
        return false;
    };
    let sets = WorldSets(world);
    sets.good(&dir).is_ok_and(|g| g.is_empty()) && sets.kept(&dir).is_ok_and(|k| k.is_empty())
}

/// Plans `operation` of `job` in `world` and runs every scenario of `mode`, on all cores.
pub fn simulate_op(
    plugin: &dyn Planner,
    policy: &Policy,
    job: &Job,
    operation: &str,
    world: &Arc<World>,
    mode: FaultMode,
) -> Result<OpReport, PlanJobError> {
    let d = plugin.description();

    let input = PlanInput {
        operation,
        set: None,
        now: UNIX_EPOCH + Duration::from_millis(world.now_ms.max(0) as u64),
        links: true,
        window: None,
    };
    // The report's head, before any scenario ran.
    let head = |set: Option<String>| OpReport {
        site: policy.site.clone(),
        job: job.name.clone(),
        operation: operation.to_string(),
        plugin: PluginRef {
            name: d.name.clone(),
            version: d.version.clone(),
            sha256: plugin.sha256().to_string(),
        },
        set,
        refused: None,
        not_simulated: None,
        scenarios: Vec::new(),
    };
    let prepared = match planner::prepare(policy, job, d, &input, &WorldSets(world)) {
        Ok(p) => p,
        Err(PlanJobError::Sets(why)) if no_sets(policy, job, world) => {
            return Ok(OpReport {
                not_simulated: Some(why),
                ..head(None)
            });
        }
        Err(e) => return Err(e),
    };
    let roots: BTreeMap<String, String> = prepared
        .roots
        .iter()
        .map(|(k, v)| (k.clone(), world::absolute(v)))
        .collect();
    let facts = WorldFacts::new(world.clone(), roots.clone(), prepared.topology.clone());
    let mut report = head(prepared.request.set_id.clone());
    let doc = match planner::plan_with(plugin, policy, job, &prepared, Arc::new(facts)) {
        Ok(doc) => doc,
        Err(PlanJobError::Refused { refusal, .. }) => {
            report.refused = Some(refusal.to_string());
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    let markers: Vec<_> = d
        .maintenance_markers
        .iter()
        .map(|m| m.path.clone())
        .collect();
    let info = d.operation(operation);
    let set_use = info.map_or(SetUse::None, |o| o.sets);
    let keep = if set_use == SetUse::Reads {
        let writable = prepared.grants.roots.iter().filter(|(_, w)| **w);
        run::files_to_keep(world, &roots, writable.map(|(r, _)| r), &markers)
    } else {
        Vec::new()
    };
    // The product states the plugin models start in their normal state on every server of
    // the job, unless the world says otherwise.
    let world = &with_modelled_states(world, &d.modelled_states, &prepared.grants.servers);
    // Servers reached over ssh, and the roots on them, can go down while the host runs on.
    let remote = RemoteServers {
        servers: policy
            .servers
            .iter()
            .filter(|s| s.ssh.is_some())
            .map(|s| s.name.clone())
            .collect(),
        roots: roots
            .keys()
            .filter_map(|r| Some((r.clone(), job.on_server(r)?.0.to_string())))
            .collect(),
    };
    let ctx = Context {
        job: &job.name,
        roots: &roots,
        keep,
        set_use,
        markers: &markers,
        leaves_maintenance: info.is_some_and(|o| o.leaves_maintenance),
        behaviours: &d.command_behaviours,
        plan: &doc.plan,
        remote: &remote,
    };
    report.scenarios = scenarios(&doc.plan, mode, &remote)
        .par_iter()
        .map(|f| run::run(world, &ctx, f.as_ref()))
        .collect();
    Ok(report)
}

/// A modelled world's backup sets: the directories named like set ids, oldest first; every one
/// verifies (a world has no manifests to compare).
struct WorldSets<'w>(&'w World);

impl crate::sets::Catalog for WorldSets<'_> {
    fn good(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        Ok(self.0.set_ids(&world::absolute(dir)))
    }

    fn verify(&self, _dir: &Path, _id: &str) -> Result<(), String> {
        Ok(())
    }
}

/// `world`, with every modelled product state the world does not describe set to its normal
/// state on each of `servers`.
fn with_modelled_states<'s>(
    world: &Arc<World>,
    states: &[crate::describe::ModelledState],
    servers: impl IntoIterator<Item = &'s String> + Clone,
) -> Arc<World> {
    let missing: Vec<(&String, &crate::describe::ModelledState)> = servers
        .into_iter()
        .flat_map(|server| states.iter().map(move |s| (server, s)))
        .filter(|(server, s)| {
            !world
                .services()
                .contains_key(&((*server).clone(), s.name.clone()))
        })
        .collect();
    if missing.is_empty() {
        return world.clone();
    }
    let mut w = (**world).clone();
    for (server, s) in missing {
        w.set_service_state(server, &s.name, s.normal);
    }
    Arc::new(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::PlanRefusal;
    use crate::describe::testing::{Scripted, description};
    use crate::plan::testing::{exec, plan};

    fn policy() -> Policy {
        crate::policy::testing::one_job(
            r#"roots = { data = "/site/data" }
commands = { prepare = "/bin/true", finish = "/bin/true" }"#,
        )
    }

    #[test]
    fn an_operation_is_planned_once_and_run_in_every_scenario() {
        let p = Scripted::new(
            description("p", &["maintain"]),
            Ok(plan(vec![exec("prepare")], vec![exec("finish")])),
        );
        let policy = policy();
        let world = Arc::new(World::new("test", 0, 1 << 30));
        let job = policy.job("j").unwrap();
        let r = simulate_op(&p, &policy, job, "maintain", &world, FaultMode::EachStep).unwrap();
        assert_eq!(p.calls.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(r.name(), "s/j/maintain");
        let names: Vec<&str> = r.scenarios.iter().map(|t| t.scenario.as_str()).collect();
        assert_eq!(
            names,
            [
                "normal",
                "fail prepare",
                "crash-after prepare",
                "fail finish",
                "crash-after finish"
            ]
        );
        assert!(r.scenarios.iter().all(|t| t.set_complete.is_none()));
        assert_eq!(r.broken().count(), 0);
        let report = Report::new(FaultMode::EachStep, vec![r]);
        assert_eq!(
            report.summary,
            Summary {
                operations: 1,
                scenarios: 5,
                broken: 0,
                refused: 0,
                not_simulated: 0
            }
        );
    }

    #[test]
    fn a_plugin_that_refuses_in_this_world_is_reported_with_no_scenarios() {
        let p = Scripted::new(
            description("p", &["maintain"]),
            Err(PlanRefusal::Refused("the store is not dismounted".into())),
        );
        let policy = policy();
        let world = Arc::new(World::new("test", 0, 1 << 30));
        let r = simulate_op(
            &p,
            &policy,
            policy.job("j").unwrap(),
            "maintain",
            &world,
            FaultMode::EachStep,
        )
        .unwrap();
        assert_eq!(
            r.refused.as_deref(),
            Some("refused: the store is not dismounted")
        );
        assert!(r.scenarios.is_empty());
        assert_eq!(Report::new(FaultMode::None, vec![r]).summary.refused, 1);
    }

    #[test]
    fn an_operation_that_reads_a_set_in_a_world_without_one_is_not_simulated() {
        let mut d = description("p", &["restore-test"]);
        d.operations[0].sets = crate::describe::SetUse::Reads;
        let p = Scripted::new(d, Ok(plan(vec![], vec![])));
        let policy = crate::policy::testing::one_job(
            r#"roots = { data = "/site/data" }
backup_root = "/site/backups""#,
        );
        let world = Arc::new(World::new("test", 0, 1 << 30));
        let r = simulate_op(
            &p,
            &policy,
            policy.job("j").unwrap(),
            "restore-test",
            &world,
            FaultMode::EachStep,
        )
        .unwrap();
        let why = r.not_simulated.as_deref().unwrap();
        assert!(why.contains("no complete backup set"), "{why}");
        assert!(r.scenarios.is_empty() && r.refused.is_none());
        let report = Report::new(FaultMode::None, vec![r]);
        assert_eq!(
            (report.summary.not_simulated, report.summary.broken),
            (1, 0)
        );
        assert!(
            crate::simulate::report::render(&report).contains("not simulated"),
            "{}",
            crate::simulate::report::render(&report)
        );
    }
}
