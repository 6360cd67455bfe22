//! `hokan servers check`: before a night's runs, whether each server a site reaches over ssh
//! is ready for them. For each server: it is reachable, its host key is the pinned one, its
//! agent speaks this hokan's protocol and version, each root the jobs put there exists and is
//! readable (and writable where the plugin writes it), how much room its volume has, and
//! whether the programs the jobs map are there.

use super::ssh::Session;
use crate::policy::{Job, Policy};
use serde::Serialize;

/// What was found about one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerReport {
    /// The site.
    pub site: String,
    /// The server's name in the policy.
    pub server: String,
    /// Its address.
    pub address: String,
    /// How hokan reaches it (`ssh`, `local`), `None` when it cannot.
    pub transport: Option<String>,
    /// The agent's hokan version, once it answered.
    pub agent: Option<String>,
    /// The jobs' roots on it.
    pub roots: Vec<RootReport>,
    /// The jobs' mapped programs, as found on it.
    pub programs: Vec<ProgramReport>,
    /// Everything that would make a run on it fail, each saying what to do. Empty: ready.
    pub problems: Vec<String>,
    /// What is worth knowing but does not fail a run.
    pub notes: Vec<String>,
}

/// One root of a job, on its server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RootReport {
    /// The job.
    pub job: String,
    /// The root's name.
    pub root: String,
    /// Its path on the server.
    pub path: String,
    /// The plugin writes it (a restore does), so it must be writable.
    pub writes: bool,
    /// What the agent found.
    pub exists: bool,
    /// Its entries can be listed.
    pub readable: bool,
    /// Files can be made in it.
    pub writable: bool,
    /// Bytes free on its volume.
    pub free_bytes: Option<u64>,
}

/// One mapped program of a job, looked for on a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramReport {
    /// The job.
    pub job: String,
    /// The policy field that maps it (`commands.mwsave`, `services.mailwise.stop`).
    pub field: String,
    /// The program as mapped.
    pub program: String,
    /// It is an executable file there.
    pub present: bool,
}

impl ServerReport {
    /// Whether a run on the server can start: nothing in [`ServerReport::problems`].
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every server of `policy` that a job uses; `writes(job, root)` says whether the
/// job's plugin writes a root (from its description).
pub fn check(policy: &Policy, writes: &dyn Fn(&Job, &str) -> bool) -> Vec<ServerReport> {
    policy
        .servers
        .iter()
        .map(|s| {
            let jobs: Vec<&Job> = policy
                .jobs
                .values()
                .filter(|j| policy.job_servers(j).contains(&s.name))
                .collect();
            let mut r = ServerReport {
                site: policy.site.clone(),
                server: s.name.clone(),
                address: s.address.clone(),
                transport: s.transport.clone(),
                agent: None,
                roots: Vec::new(),
                programs: Vec::new(),
                problems: Vec::new(),
                notes: Vec::new(),
            };
            match (s.transport.as_deref(), &s.ssh) {
                (Some("ssh"), Some(ssh)) => over_ssh(policy, &mut r, ssh, &jobs, writes),
                (Some(_), _) => r
                    .notes
                    .push("on this host: `hokan run` checks its roots and programs".into()),
                (None, _) if jobs.is_empty() => r
                    .notes
                    .push("no transport, and no job uses it".into()),
                (None, _) => r.problems.push(
                    policy
                        .server_error(
                            s,
                            "transport",
                            "no transport: hokan cannot reach it, and steps on it are refused; set `transport = \"ssh\"`",
                        )
                        .to_string(),
                ),
            }
            r
        })
        .collect()
}

fn over_ssh(
    policy: &Policy,
    r: &mut ServerReport,
    ssh: &crate::policy::Ssh,
    jobs: &[&Job],
    writes: &dyn Fn(&Job, &str) -> bool,
) {
    let grant = policy
        .roots_by_server()
        .remove(&r.server)
        .unwrap_or_default();
    let mut programs: Vec<(String, String, String)> = Vec::new();
    for j in jobs {
        for (name, c) in &j.commands {
            programs.push((
                j.name.clone(),
                format!("commands.{name}"),
                c.program.clone(),
            ));
        }
        for (name, m) in &j.services {
            for (what, p) in m.programs() {
                programs.push((j.name.clone(), format!("services.{name}.{what}"), p.into()));
            }
        }
    }
    let session = match Session::connect(&r.server, ssh, grant) {
        Ok(s) => s,
        Err(e) => {
            r.problems.push(e.to_string());
            return;
        }
    };
    let version = session.agent_version().to_string();
    if version != env!("CARGO_PKG_VERSION") {
        r.problems.push(format!(
            "its agent is hokan {version}, this host is hokan {}: install the same version on both",
            env!("CARGO_PKG_VERSION")
        ));
    }
    r.agent = Some(version);
    let asked: Vec<String> = programs.iter().map(|(_, _, p)| p.clone()).collect();
    let found = match session.check(asked) {
        Ok(c) => c,
        Err(e) => {
            r.problems.push(format!("the agent could not check: {e}"));
            return;
        }
    };
    for j in jobs {
        for (root, server) in j.root_servers.iter().filter(|(_, s)| **s == r.server) {
            let c = found.roots.get(&Policy::server_root_key(&j.name, root));
            let path = j.on_server(root).expect("a root on a server").1.to_string();
            let rep = RootReport {
                job: j.name.clone(),
                root: root.clone(),
                path: path.clone(),
                writes: writes(j, root),
                exists: c.is_some_and(|c| c.exists),
                readable: c.is_some_and(|c| c.readable),
                writable: c.is_some_and(|c| c.writable),
                free_bytes: c.and_then(|c| c.free_bytes),
            };
            let field = format!("jobs.{}.roots.{root}", j.name);
            if !rep.exists {
                r.problems.push(format!(
                    "{field}: {path} does not exist on `{server}`; create it or fix the path"
                ));
            } else if !rep.readable {
                r.problems.push(format!("{field}: {path} on `{server}` cannot be read by the login ssh uses; fix its permissions or the server's `user`"));
            } else if rep.writes && !rep.writable {
                r.problems.push(format!("{field}: {path} on `{server}` is read-only to the login ssh uses, and the plugin writes it (a restore does); fix its permissions or mount"));
            }
            r.roots.push(rep);
        }
    }
    let several = |job: &str| {
        jobs.iter()
            .find(|j| j.name == job)
            .is_some_and(|j| j.servers.len() > 1)
    };
    for (job, field, program) in programs {
        let present = found.programs.get(&program).copied().unwrap_or(false);
        if !present {
            let msg = format!(
                "jobs.{job}.{field}: {program} is not an executable file on `{}`",
                r.server
            );
            if several(&job) {
                // A job of several servers runs each step on the one it names; the program may
                // be needed only on another.
                r.notes.push(format!(
                    "{msg} (the job has other servers; fine if no step runs it here)"
                ));
            } else {
                r.problems.push(format!(
                    "{msg}; install it, or map the command to one that is"
                ));
            }
        }
        r.programs.push(ProgramReport {
            job,
            field,
            program,
            present,
        });
    }
}
