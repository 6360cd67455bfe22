//! From a policy's job to a [`RunSpec`]: choose the set, plan against the real directories,
//! and check before anything runs that every step can run here.

use super::{RunSpec, SetSpec, rfc3339};
use crate::describe::SetUse;
use crate::plan::document::PlanDocument;
use crate::plan::model::Exec;
use crate::plan::{Action, Condition};
use crate::planner::{self, PlanInput, PlanJobError};
use crate::policy::{Job, Policy};
use crate::sets;
use std::path::Path;
use std::time::SystemTime;

/// A run that cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] PlanJobError),
    /// Steps that cannot run on this host, each with the field to fix.
    #[error("the plan cannot run here:\n  {}", .0.join("\n  "))]
    Preflight(Vec<String>),
    /// No usable backup set.
    #[error("{0}")]
    Sets(String),
}

/// What to run.
pub struct RunRequest<'a> {
    /// The job's plugin, ready to plan.
    pub plugin: &'a dyn crate::describe::Planner,
    /// The policy.
    pub policy: &'a Policy,
    /// The job.
    pub job: &'a Job,
    /// The operation.
    pub operation: &'a str,
    /// The set to read, as named on the command line; `None`: the planner chooses
    /// ([`crate::sets::choose`]).
    pub set: Option<&'a str>,
    /// The clock.
    pub now: SystemTime,
    /// Link a backup's unchanged files from the previous set (`false`: `--no-links`).
    pub links: bool,
    /// The window the run was given (`--window`, or the daemon's for a scheduled run).
    pub window: Option<crate::plan::model::TimeWindow>,
    /// The file the policy was read from (the daemon's validated copy, or the policy itself).
    pub policy_file: &'a Path,
}

/// The id of a run of `operation` on `job` started at `now` by this process: what its journal
/// is named after, and what its lock names to anyone who finds the instance busy.
pub fn run_id(now: SystemTime, policy: &Policy, job: &Job, operation: &str) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        sets::id_at(now),
        policy.site,
        job.name,
        operation,
        std::process::id()
    )
}

/// The product instance a job runs on, which one lock covers: site, plugin and servers.
pub fn instance(policy: &Policy, job: &Job) -> String {
    // `plugin` is a policy string, so its stem is text too.
    let plugin = Path::new(&job.plugin)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(&job.plugin);
    format!(
        "{}.{plugin}.{}",
        policy.site,
        policy.job_servers(job).join("+")
    )
}

/// A run ready to start.
#[derive(Debug)]
pub struct Ready {
    /// What is journaled, and all that recovery needs.
    pub spec: RunSpec,
    /// The set that `spec` links from, read once while planning (for `backup-size`) and kept
    /// for the copies.
    pub previous: Option<std::sync::Arc<sets::Previous>>,
    /// Newer sets a restore passed over because they did not verify, with why.
    pub passed_over: Vec<(String, String)>,
    /// The sessions planning asked its servers on, for the run to carry on with.
    pub sessions: std::collections::BTreeMap<String, planner::Connected>,
}

/// Plans the run against the real directories and checks it can run here.
pub fn prepare_run(req: &RunRequest<'_>) -> Result<Ready, PrepareError> {
    let (policy, job) = (req.policy, req.job);
    // A root that is not a readable directory is the policy's problem, not the plugin's: say
    // so before the plugin plans against an empty view.
    for (name, path) in &job.roots {
        if job.on_server(name).is_some() {
            // Its server's agent opens it, and says so when it cannot.
            continue;
        }
        if let Err(e) = std::fs::read_dir(path) {
            return Err(PrepareError::Plan(
                policy
                    .job_error(
                        job,
                        &format!("roots.{name}"),
                        format!(
                            "{} cannot be read as a directory: {e}; fix the path or its permissions",
                            path.display()
                        ),
                    )
                    .into(),
            ));
        }
    }
    let input = PlanInput {
        operation: req.operation,
        set: req.set,
        now: req.now,
        links: req.links,
        window: req.window,
    };
    let (prepared, document) = planner::plan_job_prepared(req.plugin, policy, job, &input, true)?;
    let problems = preflight(&document, policy, job);
    if !problems.is_empty() {
        return Err(PrepareError::Preflight(problems));
    }
    let op = req.plugin.description().operation(req.operation);
    let set = match (op.map(|o| o.sets), &prepared.request.set_id) {
        (Some(use_ @ (SetUse::Writes | SetUse::Reads)), Some(id)) => {
            let job_dir = planner::sets_dir(policy, job).expect("prepare checked backup_root");
            let writes = use_ == SetUse::Writes;
            if writes {
                check_id_is_newest(&job_dir, id)?;
            }
            Some(SetSpec {
                id: id.clone(),
                previous: prepared.previous.as_ref().map(|p| p.id.clone()),
                job_dir,
                writes,
                retention: job.retention,
                timezone: policy.timezone.clone(),
            })
        }
        _ => None,
    };
    let transports = policy
        .servers
        .iter()
        .filter_map(|s| Some((s.name.clone(), s.transport.clone()?)))
        .collect();
    let addresses = policy
        .servers
        .iter()
        .map(|s| (s.name.clone(), s.address.clone()))
        .collect();
    let remote_roots = remote_roots(&prepared.roots, job);
    let spec = RunSpec {
        run: run_id(req.now, policy, job, req.operation),
        instance: instance(policy, job),
        pid: std::process::id(),
        started: rfc3339(req.now),
        hokan_version: env!("CARGO_PKG_VERSION").into(),
        document,
        roots: prepared.roots,
        // Commands run in their roots, so programs given as relative paths are made absolute.
        commands: job
            .commands
            .iter()
            .map(|(k, c)| {
                let mut c = c.clone();
                c.program = absolute(&c.program);
                (k.clone(), c)
            })
            .collect(),
        services: job
            .services
            .iter()
            .map(|(k, m)| {
                let mut m = m.clone();
                for line in [Some(&mut m.start), Some(&mut m.stop), m.status.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    if let Some(p) = line.first_mut() {
                        *p = absolute(p);
                    }
                }
                (k.clone(), m)
            })
            .collect(),
        transports,
        addresses,
        remote_roots,
        ssh: ssh_of(policy, job),
        set,
        policy: Some(super::PolicyRef {
            file: std::path::absolute(req.policy_file)
                .unwrap_or_else(|_| req.policy_file.to_path_buf()),
            origin: std::path::absolute(&policy.file).unwrap_or_else(|_| policy.file.clone()),
        }),
        safety: super::SafetySpec {
            markers: req
                .plugin
                .description()
                .maintenance_markers
                .iter()
                .map(|m| m.path.clone())
                .collect(),
            leaves_maintenance: op.is_some_and(|o| o.leaves_maintenance),
        },
    };
    Ok(Ready {
        spec,
        previous: prepared.previous,
        sessions: prepared.sessions,
        passed_over: prepared.passed_over,
    })
}

/// Which of a run's roots are on servers, and which server each is on.
fn remote_roots(
    roots: &std::collections::BTreeMap<String, std::path::PathBuf>,
    job: &Job,
) -> std::collections::BTreeMap<String, String> {
    roots
        .keys()
        .filter_map(|r| Some((r.clone(), job.on_server(r)?.0.to_string())))
        .collect()
}

/// How the job's servers reached over ssh are reached.
fn ssh_of(policy: &Policy, job: &Job) -> std::collections::BTreeMap<String, crate::policy::Ssh> {
    policy
        .job_servers(job)
        .into_iter()
        .filter_map(|s| {
            let ssh = policy.server(&s)?.ssh.clone()?;
            Some((s, ssh))
        })
        .collect()
}

/// A dead run's start record with everything it runs taken from `policy`, the current one:
/// each command, service and root the journal names by its logical name must be mapped there,
/// and the policy's mapping is what runs. A journal is data, not instructions: one that names a
/// program or a root the policy does not map is refused, whatever program it spells out.
pub fn resolve_recovery(spec: &RunSpec, policy: &Policy) -> Result<RunSpec, String> {
    let d = &spec.document;
    if policy.site != d.site {
        return Err(format!(
            "the run was for site `{}`, the policy {} is for `{}`",
            d.site,
            policy.file.display(),
            policy.site
        ));
    }
    let job = policy.jobs.get(&d.job).ok_or_else(|| {
        format!(
            "the policy {} has no job `{}`",
            policy.file.display(),
            d.job
        )
    })?;
    let mut out = spec.clone();
    let unmapped = |what: &str, name: &str| {
        format!(
            "the journal names the {what} `{name}`, which jobs.{}.{what}s in {} does not map; \
             the journal is not trusted to say what runs",
            d.job,
            policy.file.display()
        )
    };
    for (name, c) in out.commands.iter_mut() {
        let mapped = job
            .commands
            .get(name)
            .ok_or_else(|| unmapped("command", name))?;
        *c = mapped.clone();
        c.program = absolute(&c.program);
    }
    for (name, m) in out.services.iter_mut() {
        let mapped = job
            .services
            .get(name)
            .ok_or_else(|| unmapped("service", name))?;
        *m = mapped.clone();
        for line in [Some(&mut m.start), Some(&mut m.stop), m.status.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(p) = line.first_mut() {
                *p = absolute(p);
            }
        }
    }
    let sets_dir = planner::sets_dir(policy, job);
    for (name, path) in out.roots.iter_mut() {
        if name == "set" {
            let (Some(dir), Some(set)) = (&sets_dir, &spec.set) else {
                return Err(unmapped("root", name));
            };
            *path = dir.join(&set.id);
            continue;
        }
        if name == sets::tested::SCRATCH_ROOT && spec.document.operation == sets::tested::OPERATION
        {
            // Only a scratch directory of the policy's sets directory, by its name: a journal
            // that says another place would have recovery remove it.
            use std::os::unix::ffi::OsStrExt;
            let name_ok = path
                .file_name()
                .is_some_and(|n| sets::tested::is_scratch(n.as_bytes()));
            let (Some(dir), Some(leaf), true) = (&sets_dir, path.file_name(), name_ok) else {
                return Err(unmapped("root", name));
            };
            *path = dir.join(leaf);
            continue;
        }
        *path = job
            .roots
            .get(name)
            .ok_or_else(|| unmapped("root", name))?
            .clone();
    }
    if let Some(set) = out.set.as_mut() {
        set.job_dir = sets_dir.ok_or_else(|| unmapped("root", "set"))?;
    }
    // Servers, and which roots are on which, as the policy says now.
    out.remote_roots = remote_roots(&out.roots, job);
    out.ssh = ssh_of(policy, job);
    Ok(out)
}

/// Set ids must grow with every set of a job: restores, retention and links all take the
/// greatest id for the newest. When the clock is behind the newest set (an RTC reset, an NTP
/// step back, a restored VM snapshot), the run is refused rather than given an id that sorts
/// before sets it is newer than: retention would then delete it as the oldest.
fn check_id_is_newest(job_dir: &Path, id: &str) -> Result<(), PrepareError> {
    let all = sets::list_all(job_dir).map_err(|e| {
        PrepareError::Sets(format!(
            "cannot list backup sets in {}: {e}",
            job_dir.display()
        ))
    })?;
    match all.iter().map(|s| &s.id).max() {
        Some(newest) if newest.as_str() == id => Err(PrepareError::Sets(format!(
            "a backup set {id} already exists in {}: this backup started in the same second; run it again in a second",
            job_dir.display()
        ))),
        Some(newest) if newest.as_str() > id => Err(PrepareError::Sets(format!(
            "the clock is behind the newest backup set: this backup would be {id}, but {} already has {newest}; \
             the set would sort before sets it is newer than, and retention would remove it first. \
             Set the clock right (check NTP, the RTC, a restored VM snapshot) and run again",
            job_dir.display()
        ))),
        _ => Ok(()),
    }
}

/// A program path made absolute; a bare name (looked up on PATH) stays as it is, and so does a
/// path that cannot be made absolute as text (a working directory whose name is not UTF-8):
/// preflight then finds it missing and names the field, rather than running a mangled path.
fn absolute(program: &str) -> String {
    if program.contains('/') {
        std::path::absolute(program)
            .ok()
            .and_then(|p| p.into_os_string().into_string().ok())
            .unwrap_or_else(|| program.to_string())
    } else {
        program.to_string()
    }
}

/// Whether `program` names an executable: a path that is an executable file, or a name found
/// on PATH.
pub(crate) fn executable(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let ok = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return ok(Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| ok(&d.join(program))))
}

/// Everything in the plan this host cannot do, each naming the policy field to fix.
fn preflight(doc: &PlanDocument, policy: &Policy, job: &Job) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    // A program on a server reached over ssh is looked for there, by its agent (`hokan
    // servers check` lists them; a run that lacks one fails that step, naming it).
    let on_ssh = |target: &Option<String>| {
        target
            .as_ref()
            .is_some_and(|t| policy.servers.iter().any(|x| &x.name == t && x.over_ssh()))
    };
    let mut command = |e: &Exec, remote: bool, out: &mut Vec<String>| {
        if !seen.insert((e.command.clone(), remote)) {
            return;
        }
        match job.commands.get(&e.command) {
            None => out.push(policy.job_error(job, "commands", format!("`{}` is not mapped", e.command)).to_string()),
            Some(m) if !remote && !executable(&m.program) => out.push(
                policy
                    .job_error(
                        job,
                        &format!("commands.{}", e.command),
                        format!("{} is not an executable file (install it, or map the command to one that is)", m.program),
                    )
                    .to_string(),
            ),
            Some(_) => {}
        }
    };
    let mut conditions: Vec<(&Condition, bool)> = Vec::new();
    let mut services = std::collections::BTreeSet::new();
    for s in doc.plan.all_steps() {
        let remote = on_ssh(&s.target);
        if let Some(server) = &s.target {
            match policy.servers.iter().find(|x| &x.name == server) {
                Some(x) if x.transport.is_some() => {}
                Some(x) => out.push(format!(
                    "{}: servers.{server}: step `{}` runs on `{server}` ({}), which has no transport configured; hokan reaches a server only through one (this hokan has: {})",
                    policy.file.display(), s.id, x.address, crate::policy::TRANSPORTS.join(", ")
                )),
                None => out.push(format!("step `{}` runs on `{server}`, which is not a server of the site", s.id)),
            }
        }
        conditions.extend(s.when.iter().map(|c| (c, remote)));
        match &s.action {
            Action::Exec(e) => command(e, remote, &mut out),
            Action::Service { service, .. } => {
                services.insert((service.clone(), remote));
            }
            Action::WaitUntil { condition, .. } | Action::Assert { condition, .. } => {
                conditions.push((condition, remote))
            }
            _ => {}
        }
    }
    conditions.extend(
        doc.plan
            .invariants
            .iter()
            .map(|i| (&i.condition, on_ssh(&i.target))),
    );
    for (c, remote) in conditions {
        match c {
            Condition::CommandSucceeds(e) => command(e, remote, &mut out),
            Condition::ServiceIs { service, .. } => {
                services.insert((service.clone(), remote));
            }
            _ => {}
        }
    }
    for (svc, remote) in services {
        let field = format!("services.{svc}");
        match job.services.get(&svc) {
            None => out.push(
                policy
                    .job_error(job, "services", format!("`{svc}` is not mapped"))
                    .to_string(),
            ),
            Some(m) => {
                for (_, p) in m.programs().filter(|(_, p)| !remote && !executable(p)) {
                    out.push(
                        policy
                            .job_error(job, &field, format!("{p} is not an executable file"))
                            .to_string(),
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::document::PluginRef;
    use crate::plan::{Item, OnError, Plan, ServiceState, Step};

    fn step(id: &str, target: Option<&str>, action: Action) -> Step {
        Step {
            id: id.into(),
            title: id.into(),
            target: target.map(String::from),
            on_error: OnError::Abort,
            timeout_ms: None,
            retries: 0,
            when: vec![],
            commits_set: false,
            no_kill: false,
            action,
        }
    }

    #[test]
    fn steps_that_cannot_run_here_are_named_before_anything_runs() {
        let policy = Policy::parse(
            Path::new("/etc/hokan/site.toml"),
            r#"
[site]
name = "s"
known_hosts = "known_hosts"

[[servers]]
name = "here"
role = "app"

[[servers]]
name = "far"
role = "app"
address = "10.0.0.5"

[[servers]]
name = "ssh1"
role = "app"
address = "10.0.0.6"
transport = "ssh"

[jobs.j]
plugin = "p"
commands = { ctl = "/nonexistent/ctl", sh = "sh" }
services = { db = { start = ["/bin/true"], stop = ["/nonexistent/stop"] } }
"#,
        )
        .unwrap();
        let job = policy.job("j").unwrap();
        let exec = |c: &str| {
            Action::Exec(Exec {
                command: c.into(),
                args: vec![],
                cwd: None,
                success_codes: vec![],
            })
        };
        let doc = PlanDocument {
            format_version: "2".into(),
            plugin: PluginRef {
                name: "p".into(),
                version: "1".into(),
                sha256: String::new(),
            },
            site: "s".into(),
            job: "j".into(),
            operation: "op".into(),
            set: None,
            plan: Plan {
                steps: vec![
                    Item::Step(step("on-far", Some("far"), exec("sh"))),
                    // Its program is on ssh1, looked for there: not a problem here.
                    Item::Step(step("on-ssh1", Some("ssh1"), exec("ctl"))),
                    Item::Step(step("here", Some("here"), exec("sh"))),
                    Item::Step(step("ctl", None, exec("ctl"))),
                    Item::Step(step("unmapped", None, exec("other"))),
                    Item::Step(step(
                        "svc",
                        None,
                        Action::Service {
                            service: "db".into(),
                            state: ServiceState::Stopped,
                        },
                    )),
                ],
                ..Plan::default()
            },
        };
        let problems = preflight(&doc, &policy, job);
        let has = |needle: &str| {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "no {needle:?} in {problems:#?}"
            )
        };
        has(
            "servers.far: step `on-far` runs on `far` (10.0.0.5), which has no transport configured",
        );
        has("jobs.j.commands.ctl: /nonexistent/ctl is not an executable file");
        has("jobs.j.commands: `other` is not mapped");
        has("jobs.j.services.db: /nonexistent/stop is not an executable file");
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            !problems.iter().any(|p| p.contains("ssh1")),
            "a step on a server reached over ssh runs there: {problems:#?}"
        );
        assert_eq!(
            policy.servers[0].transport.as_deref(),
            Some("local"),
            "localhost needs no transport setting"
        );
        let e = Policy::parse(
            Path::new("/etc/hokan/site.toml"),
            "[site]\nname = \"s\"\n[[servers]]\nname = \"x\"\nrole = \"r\"\ntransport = \"telnet\"\n",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("servers.transport"), "{e}");
        assert!(
            e.message
                .contains("`telnet` is not a transport of this hokan (it has: local, ssh)"),
            "{e}"
        );
    }
}
