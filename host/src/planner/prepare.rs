//! The grants, request and topology of one planning call, and the set it uses: worked out from
//! the policy and the plugin's description alone, so that a dry run and a real run prepare
//! alike and neither needs the plugin to run for it.

use super::PlanJobError;
use crate::describe::{Description, PlanRequest, SetUse};
use crate::facts::{Server, Topology};
use crate::plan::Grants;
use crate::policy::{Job, Policy};
use crate::sets;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

/// What a planning call needs besides the plugin.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The operation.
    pub operation: &'a str,
    /// The set to restore from (default: the newest).
    pub set: Option<&'a str>,
    /// The clock the plugin sees.
    pub now: SystemTime,
    /// A backup links unchanged files from the newest set (`false`: `--no-links`), so its
    /// `backup-size` counts only the others.
    pub links: bool,
    /// The window the run was given (a scheduled slot's opening of the job's `window`, or
    /// `--window`); `None` for a run started without one.
    pub window: Option<crate::plan::model::TimeWindow>,
}

/// The roots, grants, request and topology of one planning call.
pub struct Prepared {
    /// Root names to directories, including `set` when the operation uses one.
    pub roots: BTreeMap<String, PathBuf>,
    /// What the plan may touch.
    pub grants: Grants,
    /// The request for the plugin.
    pub request: PlanRequest,
    /// The site as the plugin sees it.
    pub topology: Topology,
    /// The set a backup links from, read for its `backup-size` (by [`plan_job_prepared`]).
    pub previous: Option<Arc<sets::Previous>>,
    /// Newer sets a restore passed over because they did not verify, with why.
    pub passed_over: Vec<(String, String)>,
    /// The session each server's facts were asked on, by server name (by
    /// [`plan_job_prepared`]; empty when no root is on a server).
    pub sessions: BTreeMap<String, Connected>,
}

/// A session to a server's agent, with what its handshake granted: a run carries on with it
/// only where that is exactly what the run would grant.
#[derive(Clone)]
pub struct Connected {
    /// Root names to their paths on the server.
    pub roots: BTreeMap<String, String>,
    /// The roots file actions may change.
    pub writable: std::collections::BTreeSet<String>,
    /// The session.
    pub session: Arc<crate::remote::ssh::Session>,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("roots", &self.roots)
            .field("writable", &self.writable)
            .field("lost", &self.session.lost())
            .finish()
    }
}

/// Works out the grants and the request of one planning call, choosing the backup set a restore
/// reads among those of `catalog` ([`sets::choose`]).
pub fn prepare(
    policy: &Policy,
    job: &Job,
    d: &Description,
    input: &PlanInput<'_>,
    catalog: &dyn sets::Catalog,
) -> Result<Prepared, PlanJobError> {
    let op = d.operation(input.operation).ok_or_else(|| {
        policy.job_error(
            job,
            "",
            format!(
                "{} has no operation `{}` (it has: {})",
                d.name,
                input.operation,
                crate::describe::names(d.operations.iter().map(|o| &o.name))
            ),
        )
    })?;
    if !job.operations.is_empty() && !job.operations.iter().any(|o| o == input.operation) {
        return Err(policy
            .job_error(
                job,
                "operations",
                format!(
                    "the job does not allow `{}`; add it to the job's operations",
                    input.operation
                ),
            )
            .into());
    }
    let mut roots = job.roots.clone();
    let mut grants = Grants {
        roots: job
            .roots
            .keys()
            .map(|r| {
                (
                    r.clone(),
                    d.roots
                        .iter()
                        .find(|x| x.name == crate::policy::declared_root(r))
                        .is_some_and(|x| x.writable),
                )
            })
            .collect(),
        commands: job.commands.keys().cloned().collect(),
        services: job.services.keys().cloned().collect(),
        servers: policy.job_servers(job).into_iter().collect(),
        root_servers: job.root_servers.clone(),
        ssh_servers: policy
            .job_servers(job)
            .into_iter()
            .filter(|s| policy.server(s).is_some_and(|s| s.over_ssh()))
            .collect(),
    };
    let mut set_id = None;
    let mut passed_over = Vec::new();
    if input.operation == sets::tested::OPERATION && op.sets != SetUse::Reads {
        return Err(policy
            .job_error(job, "plugin", format!("the plugin's `{}` does not read a backup set, so it cannot be a restore test; the plugin is wrong", input.operation))
            .into());
    }
    if op.sets != SetUse::None {
        let dir = sets_dir(policy, job).ok_or_else(|| {
            policy.job_error(
                job,
                "backup_root",
                format!("`{}` uses backup sets; set `backup_root`", input.operation),
            )
        })?;
        let id = match op.sets {
            SetUse::Writes if job.sets_of.is_some() => {
                return Err(policy
                    .job_error(job, "sets_of", format!("`{}` writes a backup set, but this job only restores the sets of another job; run it from that job", input.operation))
                    .into());
            }
            SetUse::Writes => sets::id_at(input.now),
            _ => {
                let unchecked = sets::tested::Unchecked(catalog);
                let catalog: &dyn sets::Catalog = if input.operation == sets::tested::OPERATION {
                    &unchecked
                } else {
                    catalog
                };
                let chosen = sets::choose(catalog, &dir, input.set).map_err(PlanJobError::Sets)?;
                passed_over = chosen.passed_over;
                chosen.id
            }
        };
        roots.insert("set".into(), dir.join(&id));
        grants.roots.insert("set".into(), op.sets == SetUse::Writes);
        if input.operation == sets::tested::OPERATION {
            // A restore test never touches the live product: its roots are read-only to it,
            // it has no command or service, and it writes only the scratch directory.
            grants.roots.values_mut().for_each(|w| *w = false);
            grants.commands.clear();
            grants.services.clear();
            let scratch = sets::tested::scratch_dir(&dir, &sets::id_at(input.now));
            roots.insert(sets::tested::SCRATCH_ROOT.into(), scratch);
            grants.roots.insert(sets::tested::SCRATCH_ROOT.into(), true);
        }
        set_id = Some(id);
    } else if let Some(s) = input.set {
        return Err(PlanJobError::Sets(format!(
            "`{}` does not use a backup set; remove --set {s}",
            input.operation
        )));
    }
    let mut params: BTreeMap<String, String> = d
        .parameters
        .iter()
        .filter_map(|p| Some((p.name.clone(), p.default.clone()?)))
        .collect();
    params.extend(job.params.clone());
    let topology = Topology {
        site: policy.site.clone(),
        timezone: policy.timezone.clone(),
        servers: policy
            .servers
            .iter()
            .map(|s| {
                // The plugin's defaults for the server's role, then what the policy says.
                let mut properties: BTreeMap<String, String> = d
                    .role(&s.role)
                    .into_iter()
                    .flat_map(|r| &r.properties)
                    .filter_map(|p| Some((p.name.clone(), p.default.clone()?)))
                    .collect();
                properties.extend(s.properties.clone());
                Server {
                    name: s.name.clone(),
                    role: s.role.clone(),
                    address: s.address.clone(),
                    properties,
                }
            })
            .collect(),
        job: job.name.clone(),
        job_servers: policy.job_servers(job),
    };
    Ok(Prepared {
        roots,
        grants,
        request: PlanRequest {
            operation: input.operation.to_string(),
            params,
            set_id,
            window: input.window,
        },
        topology,
        previous: None,
        passed_over,
        sessions: BTreeMap::new(),
    })
}

/// The directory of the sets a job writes and reads: its own, or those of the job it restores
/// from (`sets_of`), under its own `backup_root` or that job's.
pub fn sets_dir(policy: &Policy, job: &Job) -> Option<PathBuf> {
    let owner = job
        .sets_of
        .as_ref()
        .and_then(|o| policy.jobs.get(o))
        .unwrap_or(job);
    let root = job.backup_root.as_ref().or(owner.backup_root.as_ref())?;
    Some(sets::job_dir(root, &policy.site, &owner.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::tests::{roles_policy, with_roles};

    #[test]
    fn the_plugin_sees_properties_with_the_roles_defaults() {
        let d = with_roles();
        let servers = "[[servers]]\nname = \"dir\"\nrole = \"directory\"\n[[servers]]\nname = \"app1\"\nrole = \"application\"\nproperties = { host_name = \"tw-app1\", cpus = 4 }\n";
        let policy = roles_policy(servers, r#"["app1", "dir"]"#);
        let input = PlanInput {
            operation: "backup",
            set: None,
            now: SystemTime::UNIX_EPOCH,
            links: true,
            window: None,
        };
        let p = prepare(
            &policy,
            policy.job("j").unwrap(),
            &d,
            &input,
            &crate::sets::OnDisk,
        )
        .unwrap();
        let props = |n: &str| {
            p.topology
                .servers
                .iter()
                .find(|s| s.name == n)
                .unwrap()
                .properties
                .clone()
        };
        assert_eq!(
            props("dir"),
            BTreeMap::from([("web_service".to_string(), "false".to_string())])
        );
        assert_eq!(props("app1")["cpus"], "4");
        assert_eq!(p.topology.job_servers, ["app1", "dir"]);
    }
}
