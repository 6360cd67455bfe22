//! `hokan validate`'s checks of a job against its plugin's description: grants, commands,
//! services, parameters, roles, and the schedule's own findings. It depends on the planner's
//! and the scheduler's modules; neither depends on it.

use crate::describe::{Description, SetUse, names};
use crate::planner::sets_dir;
use crate::policy::{Finding, Job, Policy};
use std::collections::BTreeMap;

/// Checks a job's grants against what its plugin describes.
pub fn check_job(policy: &Policy, job: &Job, d: &Description) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut err = |error: bool, field: &str, message: String| {
        out.push(Finding {
            error,
            message: policy.job_error(job, field, message).to_string(),
        })
    };
    for op in &job.operations {
        if d.operation(op).is_none() {
            err(
                true,
                "operations",
                format!(
                    "`{op}` is not an operation of {} (it has: {})",
                    d.name,
                    names(d.operations.iter().map(|o| &o.name))
                ),
            );
        }
    }
    for r in d.roots.iter().filter(|r| r.required) {
        if !job.roots.contains_key(&r.name) {
            err(
                true,
                "roots",
                format!(
                    "{} needs the root `{}` ({}); add it to the job's roots",
                    d.name, r.name, r.description
                ),
            );
        }
    }
    for r in job.roots.keys() {
        if !d.roots.iter().any(|x| &x.name == r) {
            err(
                false,
                "roots",
                format!("the root `{r}` is not used by {}", d.name),
            );
        }
    }
    let uses_sets = d
        .operations
        .iter()
        .filter(|o| job.operations.is_empty() || job.operations.contains(&o.name))
        .any(|o| o.sets != SetUse::None);
    if uses_sets && sets_dir(policy, job).is_none() {
        err(
            true,
            "backup_root",
            format!(
                "{} keeps backup sets; set `backup_root` to the directory they go in",
                d.name
            ),
        );
    }
    for k in job.params.keys() {
        if !d.parameters.iter().any(|p| &p.name == k) {
            err(
                true,
                "params",
                format!(
                    "`{k}` is not a parameter of {} (it has: {})",
                    d.name,
                    names(d.parameters.iter().map(|p| &p.name))
                ),
            );
        }
    }
    // Commands and services the plugin declares but the job does not map, and the reverse.
    let kinds = [
        (
            "commands",
            "command",
            "run",
            &d.commands,
            &job.commands.keys().collect::<Vec<_>>(),
        ),
        (
            "services",
            "service",
            "control",
            &d.services,
            &job.services.keys().collect::<Vec<_>>(),
        ),
    ];
    for (field, noun, verb, declared, mapped) in kinds {
        for n in declared.iter().filter(|n| !mapped.contains(&&n.name)) {
            err(
                false,
                field,
                format!(
                    "`{}` is not mapped; plans that {verb} it will be refused ({})",
                    n.name, n.description
                ),
            );
        }
        for m in mapped
            .iter()
            .filter(|m| !declared.iter().any(|n| &&n.name == *m))
        {
            err(false, field, format!("`{m}` is not a {noun} of {}", d.name));
        }
    }
    if !d.roles.is_empty() {
        out.extend(check_roles(policy, job, d));
    }
    out.extend(crate::schedule::ScheduledJob::of(policy, job, d).1);
    out
}

/// The job's servers against the plugin's roles: every role known, every property known, and
/// each role's count within its bounds.
fn check_roles(policy: &Policy, job: &Job, d: &Description) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut count: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for name in policy.job_servers(job) {
        let Some(server) = policy.server(&name) else {
            continue;
        };
        let Some(role) = d.role(&server.role) else {
            out.push(Finding {
                error: true,
                message: policy
                    .server_error(
                        server,
                        "role",
                        format!(
                            "`{}` is not a role of {} (it has: {}); job `{}` runs on this server",
                            server.role,
                            d.name,
                            names(d.roles.iter().map(|r| &r.name)),
                            job.name
                        ),
                    )
                    .to_string(),
            });
            continue;
        };
        count.entry(&role.name).or_default().push(&server.name);
        for k in server.properties.keys() {
            if !role.properties.iter().any(|p| &p.name == k) {
                out.push(Finding {
                    error: true,
                    message: policy
                        .server_error(
                            server,
                            &format!("properties.{k}"),
                            format!(
                                "`{k}` is not a property of a {} server for {} (it has: {})",
                                role.name,
                                d.name,
                                names(role.properties.iter().map(|p| &p.name))
                            ),
                        )
                        .to_string(),
                });
            }
        }
    }
    for role in &d.roles {
        let have = count.get(role.name.as_str()).map_or(&[][..], Vec::as_slice);
        let n = have.len() as u32;
        let wanted = match role.max {
            Some(max) if n > max => Some(if max == role.min {
                format!("exactly {max}")
            } else {
                format!("at most {max}")
            }),
            _ if n < role.min => Some(if role.max == Some(role.min) {
                format!("exactly {}", role.min)
            } else {
                format!("at least {}", role.min)
            }),
            _ => None,
        };
        if let Some(wanted) = wanted {
            out.push(Finding {
                error: true,
                message: policy
                    .job_error(
                        job,
                        "servers",
                        format!(
                            "{} needs {wanted} server(s) with role `{}` ({}); the job's servers have {}",
                            d.name,
                            role.name,
                            role.description,
                            if have.is_empty() {
                                "none".to_string()
                            } else {
                                format!("{n}: {}", have.join(", "))
                            }
                        ),
                    )
                    .to_string(),
            });
        }
    }
    out
}
