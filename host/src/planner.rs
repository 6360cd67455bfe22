//! From a policy's job to a validated plan: find and load the plugin, grant its roots, ask it to
//! plan, and validate what it returned. `hokan plan` uses it; so will simulation and execution.

use crate::describe::{Description, PlanRefusal, PlanRequest, SetUse};
use crate::facts::{FactSource, RealFacts, Server, Topology};
use crate::plan::document::{FORMAT_VERSION, PlanDocument, PluginRef};
use crate::plan::{Grants, ValidationError, validate};
use crate::policy::{Job, Policy, PolicyError};
use crate::runtime::{CallError, LoadError, Plugin, Runtime};
use crate::sets;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

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

/// Where plugins are found by name.
#[derive(Debug, Clone)]
pub struct PluginDir(pub PathBuf);

impl PluginDir {
    /// The plugin file a job names: `<dir>/<name>.wasm`, or a path relative to the policy file
    /// when the name contains `/` or ends in `.wasm`.
    pub fn resolve(&self, policy: &Policy, job: &Job) -> PathBuf {
        let p = Path::new(&job.plugin);
        if job.plugin.contains('/') || job.plugin.ends_with(".wasm") {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                policy.file.parent().unwrap_or(Path::new(".")).join(p)
            }
        } else {
            self.0.join(format!("{}.wasm", job.plugin))
        }
    }
}

/// Loads a job's plugin, honouring the policy's pin.
pub fn load_plugin(
    rt: &Runtime,
    dir: &PluginDir,
    policy: &Policy,
    job: &Job,
) -> Result<Plugin, PlanJobError> {
    let path = dir.resolve(policy, job);
    if !path.exists() {
        return Err(policy
            .job_error(
                job,
                "plugin",
                format!(
                    "the plugin file {} does not exist; build the plugins (`cargo xtask plugins`) or pass --plugin-dir",
                    path.display()
                ),
            )
            .into());
    }
    Ok(rt.load(&path, job.plugin_sha256.as_deref())?)
}

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
                        .find(|x| &x.name == r)
                        .is_some_and(|x| x.writable),
                )
            })
            .collect(),
        commands: job.commands.keys().cloned().collect(),
        services: job.services.keys().cloned().collect(),
        servers: policy.job_servers(job).into_iter().collect(),
    };
    let mut set_id = None;
    let mut passed_over = Vec::new();
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
                let chosen = sets::choose(catalog, &dir, input.set).map_err(PlanJobError::Sets)?;
                passed_over = chosen.passed_over;
                chosen.id
            }
        };
        roots.insert("set".into(), dir.join(&id));
        grants.roots.insert("set".into(), op.sets == SetUse::Writes);
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
        },
        topology,
        previous: None,
        passed_over,
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

/// Plans an operation against `facts` and validates the result.
pub fn plan_with(
    rt: &Runtime,
    plugin: &Plugin,
    policy: &Policy,
    job: &Job,
    prepared: &Prepared,
    facts: Arc<dyn FactSource>,
) -> Result<PlanDocument, PlanJobError> {
    let d = plugin.description();
    let operation = prepared.request.operation.clone();
    let plan = rt
        .plan(plugin, facts, &prepared.request)?
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
    rt: &Runtime,
    plugin: &Plugin,
    policy: &Policy,
    job: &Job,
    input: &PlanInput<'_>,
) -> Result<PlanDocument, PlanJobError> {
    plan_job_prepared(rt, plugin, policy, job, input).map(|(_, doc)| doc)
}

/// [`plan_job`], also returning the roots and grants the plan was made with.
pub fn plan_job_prepared(
    rt: &Runtime,
    plugin: &Plugin,
    policy: &Policy,
    job: &Job,
    input: &PlanInput<'_>,
) -> Result<(Prepared, PlanDocument), PlanJobError> {
    let mut prepared = prepare(policy, job, plugin.description(), input, &sets::OnDisk)?;
    let mut facts = RealFacts::open(prepared.roots.clone(), prepared.topology.clone())
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
    let doc = plan_with(
        rt,
        plugin,
        policy,
        job,
        &prepared,
        Arc::new(facts.with_now_ms(now_ms)),
    )?;
    let mut doc = doc;
    doc.plan
        .warnings
        .extend(links_out_of_their_root(&doc.plan, &prepared.roots));
    prepared.previous = previous.get().cloned();
    Ok((prepared, doc))
}

/// Warnings, by name, for every symbolic link that a copy would store as a link although it
/// leads out of its root (an archive `mw/back2` moved to another volume and linked): the link
/// is kept, what it points to is not, and the operator must know before the restore finds out.
/// Only the sources of copies are walked, without following anything.
pub fn links_out_of_their_root(
    plan: &crate::plan::Plan,
    roots: &BTreeMap<String, PathBuf>,
) -> Vec<String> {
    use crate::plan::Action;
    use crate::tree::RelPath;
    const SHOWN: usize = 20;
    let mut out = Vec::new();
    let mut more = 0;
    let mut seen = std::collections::BTreeSet::new();
    for s in plan.all_steps() {
        let Action::CopyTree { from, .. } = &s.action else {
            continue;
        };
        let Some(root) = roots.get(&from.root).filter(|_| from.root != "set") else {
            continue;
        };
        if !seen.insert((from.root.clone(), from.path.clone())) {
            continue;
        }
        let Ok(top) = crate::tree::meta::open_dir(root) else {
            continue;
        };
        let from_path = RelPath::from(from.path.as_str());
        let (parent, name) = if from_path.is_empty() {
            (Ok(top), b".".to_vec())
        } else {
            (
                crate::tree::scan::open_path(std::os::fd::AsFd::as_fd(&top), &from_path.parent()),
                from_path.file_name().to_vec(),
            )
        };
        let Ok(parent) = parent else { continue };
        let Ok(links) = crate::tree::scan::symlinks(std::os::fd::AsFd::as_fd(&parent), &name)
        else {
            continue;
        };
        for (path, target) in links {
            let at = path.under(&from_path);
            if !leaves(&at, target.as_bytes()) {
                continue;
            }
            if out.len() == SHOWN {
                more += 1;
                continue;
            }
            out.push(format!(
                "{}:/{at} is a symbolic link to {target}, which is outside the root `{}` ({}): it is backed up as a link, not what it points to; to back that up too, grant it as a root of the job, or move it back under {}",
                from.root,
                from.root,
                root.display(),
                root.display()
            ));
        }
    }
    if more > 0 {
        out.push(format!(
            "... and {more} more symbolic link(s) that lead out of their root"
        ));
    }
    out
}

/// Whether a link at `at` (relative to its root) with `target` resolves outside the root: an
/// absolute target always counts (it names this host's layout, not the root's), a relative one
/// when its `..` climb above the root.
fn leaves(at: &crate::tree::RelPath, target: &[u8]) -> bool {
    if target.starts_with(b"/") {
        return true;
    }
    let mut depth = at.components().count().saturating_sub(1) as i64;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe::{NameInfo, OperationInfo, ParamInfo, RootInfo};
    use crate::lint::check_job;

    #[test]
    fn links_that_leave_their_root_are_named() {
        use crate::plan::{Action, Item, Location, OnError, Plan, Step};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        std::fs::create_dir_all(root.join("mw/data")).unwrap();
        std::os::unix::fs::symlink("/mnt/archive/back2", root.join("mw/back2")).unwrap();
        std::os::unix::fs::symlink("../../../etc", root.join("mw/data/up")).unwrap();
        std::os::unix::fs::symlink("../file", root.join("mw/data/sibling")).unwrap();
        let step = Step {
            id: "copy".into(),
            title: "copy".into(),
            target: None,
            on_error: OnError::Abort,
            timeout_ms: None,
            retries: 0,
            when: vec![],
            commits_set: false,
            action: Action::CopyTree {
                from: Location::new("data", "mw"),
                to: Location::new("set", "mw"),
            },
        };
        let plan = Plan {
            steps: vec![Item::Step(step)],
            ..Plan::default()
        };
        let w = links_out_of_their_root(&plan, &BTreeMap::from([("data".to_string(), root)]));
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(w[0].starts_with("data:/mw/back2 is a symbolic link to /mnt/archive/back2, which is outside the root `data`"), "{w:#?}");
        assert!(
            w[1].starts_with("data:/mw/data/up is a symbolic link to ../../../etc"),
            "{w:#?}"
        );
    }

    fn description() -> Description {
        Description {
            name: "product".into(),
            version: "1".into(),
            product: "Product".into(),
            summary: String::new(),
            operations: vec![OperationInfo {
                name: "backup".into(),
                description: String::new(),
                sets: SetUse::Writes,
                leaves_maintenance: false,
            }],
            roots: vec![RootInfo {
                name: "data".into(),
                description: "the data".into(),
                writable: true,
                required: true,
            }],
            parameters: vec![ParamInfo {
                name: "window".into(),
                description: String::new(),
                default: None,
            }],
            commands: vec![NameInfo {
                name: "ctl".into(),
                description: "control".into(),
            }],
            services: vec![NameInfo {
                name: "svc".into(),
                description: "service".into(),
            }],
            maintenance_markers: vec![],
            command_behaviours: vec![],
            roles: vec![],
            modelled_states: vec![],
            conflicts: vec![],
            window_rules: Default::default(),
        }
    }

    #[test]
    fn a_job_is_checked_against_its_plugin() {
        let policy = Policy::parse(
            Path::new("/etc/hokan/site.toml"),
            r#"
[site]
name = "s"

[jobs.j]
plugin = "product"
operations = ["backup", "restore"]
roots = { logs = "/var/log" }
params = { windw = "02:00-04:00" }
commands = { extra = "/bin/true" }
services = { other = { start = ["a"], stop = ["b"] } }
"#,
        )
        .unwrap();
        let findings = check_job(&policy, policy.job("j").unwrap(), &description());
        let text: Vec<(bool, &str)> = findings
            .iter()
            .map(|f| (f.error, f.message.as_str()))
            .collect();
        let has = |error: bool, needle: &str| {
            assert!(
                text.iter().any(|(e, m)| *e == error && m.contains(needle)),
                "no {} containing {needle:?} in {text:#?}",
                if error { "error" } else { "warning" }
            )
        };
        has(
            true,
            "jobs.j.operations: `restore` is not an operation of product (it has: backup)",
        );
        has(
            true,
            "jobs.j.roots: product needs the root `data` (the data)",
        );
        has(true, "jobs.j.backup_root: product keeps backup sets");
        has(
            true,
            "jobs.j.params: `windw` is not a parameter of product (it has: window)",
        );
        has(false, "the root `logs` is not used by product");
        has(false, "`ctl` is not mapped");
        has(false, "`svc` is not mapped");
        has(false, "`extra` is not a command of product");
        has(false, "`other` is not a service of product");
        assert_eq!(findings.len(), 9, "{text:#?}");
        assert!(
            findings[0]
                .message
                .starts_with("/etc/hokan/site.toml:5:1: "),
            "{}",
            findings[0].message
        );
    }

    fn with_roles() -> Description {
        let mut d = description();
        d.roles = vec![
            crate::describe::RoleInfo {
                name: "directory".into(),
                description: "the directory server".into(),
                min: 1,
                max: Some(1),
                properties: vec![ParamInfo {
                    name: "web_service".into(),
                    description: String::new(),
                    default: Some("false".into()),
                }],
            },
            crate::describe::RoleInfo {
                name: "application".into(),
                description: "an application server".into(),
                min: 0,
                max: None,
                properties: vec![],
            },
        ];
        d
    }

    fn roles_policy(servers: &str, job_servers: &str) -> Policy {
        Policy::parse(
            Path::new("/etc/hokan/site.toml"),
            &format!(
                "[site]\nname = \"s\"\n{servers}\n[jobs.j]\nplugin = \"product\"\nservers = {job_servers}\nbackup_root = \"/b\"\nroots = {{ data = \"/d\" }}\n"
            ),
        )
        .unwrap()
    }

    fn errors(policy: &Policy, d: &Description) -> Vec<String> {
        check_job(policy, policy.job("j").unwrap(), d)
            .into_iter()
            .filter(|f| f.error)
            .map(|f| f.message)
            .collect()
    }

    #[test]
    fn servers_are_checked_against_the_plugins_roles() {
        let d = with_roles();
        let servers = "[[servers]]\nname = \"dir\"\nrole = \"directory\"\nproperties = { web_service = true }\n[[servers]]\nname = \"app1\"\nrole = \"application\"\n";
        let good = roles_policy(servers, r#"["app1", "dir"]"#);
        assert_eq!(errors(&good, &d), Vec::<String>::new());

        // No directory server among the job's servers.
        let e = errors(&roles_policy(servers, r#"["app1"]"#), &d);
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(
            e[0].contains("jobs.j.servers: product needs exactly 1 server(s) with role `directory` (the directory server); the job's servers have none"),
            "{e:#?}"
        );

        // An unknown role and an unknown property name the server's own fields and line.
        let bad = servers
            .replace("application", "aplication")
            .replace("web_service", "webservice");
        let e = errors(&roles_policy(&bad, r#"["app1", "dir"]"#), &d);
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e.iter().any(|m| m.starts_with("/etc/hokan/site.toml:3:1: servers.dir.properties.webservice: `webservice` is not a property of a directory server for product (it has: web_service)")),
            "{e:#?}"
        );
        assert!(
            e.iter().any(|m| m.starts_with("/etc/hokan/site.toml:7:1: servers.app1.role: `aplication` is not a role of product (it has: directory, application)")),
            "{e:#?}"
        );

        // Too many of a role.
        let two = format!("{servers}[[servers]]\nname = \"dir2\"\nrole = \"directory\"\n");
        let e = errors(&roles_policy(&two, r#"["dir", "dir2"]"#), &d);
        assert!(
            e[0].contains("needs exactly 1 server(s) with role `directory` (the directory server); the job's servers have 2: dir, dir2"),
            "{e:#?}"
        );
    }

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
