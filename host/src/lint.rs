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
        if !job
            .roots
            .keys()
            .any(|g| crate::policy::declared_root(g) == r.name)
        {
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
        if !d
            .roots
            .iter()
            .any(|x| x.name == crate::policy::declared_root(r))
        {
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
    // A job that only tests restores runs no command and no service: none need mapping.
    let only_restore_tests = !job.operations.is_empty()
        && job
            .operations
            .iter()
            .all(|o| o == crate::sets::tested::OPERATION);
    for (field, noun, verb, declared, mapped) in kinds {
        let unmapped = declared
            .iter()
            .filter(|n| !mapped.contains(&&n.name) && !only_restore_tests);
        for n in unmapped {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::describe::{Description, NameInfo, OperationInfo, ParamInfo, RootInfo};
    use std::path::Path;

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

    #[test]
    fn a_root_given_on_several_servers_is_the_root_the_plugin_declares() {
        let policy = Policy::parse(
            Path::new("/etc/hokan/site.toml"),
            r#"
[site]
name = "s"

[[servers]]
name = "a"
role = "r"

[[servers]]
name = "b"
role = "r"

[jobs.j]
plugin = "product"
backup_root = "/b"
roots = { data = { servers = { a = "/d", b = "/e" } }, logs = { servers = { a = "/l" } } }
commands = { ctl = "/bin/true" }
services = { svc = { start = ["a"], stop = ["b"] } }
"#,
        )
        .unwrap();
        let messages: Vec<String> = check_job(&policy, policy.job("j").unwrap(), &description())
            .into_iter()
            .map(|f| f.message)
            .collect();
        // `data` is granted (on both servers); `logs@a` is not the plugin's.
        assert_eq!(messages.len(), 1, "{messages:#?}");
        assert!(
            messages[0].contains("the root `logs@a` is not used by product"),
            "{messages:#?}"
        );
    }

    #[test]
    fn a_job_that_only_tests_restores_needs_no_command_or_service_mapped() {
        let mut d = description();
        d.operations.push(OperationInfo {
            name: crate::sets::tested::OPERATION.into(),
            description: String::new(),
            sets: SetUse::Reads,
            leaves_maintenance: false,
        });
        let text = |ops: &str| {
            let policy = Policy::parse(
                Path::new("/etc/hokan/site.toml"),
                &format!(
                    "[site]\nname = \"s\"\n\n[jobs.j]\nplugin = \"product\"\n                     operations = {ops}\nroots = {{ data = \"/d\" }}\nbackup_root = \"/b\"\n"
                ),
            )
            .unwrap();
            check_job(&policy, policy.job("j").unwrap(), &d)
                .into_iter()
                .map(|f| f.message)
                .collect::<Vec<_>>()
        };
        assert_eq!(text(r#"["restore-test"]"#), Vec::<String>::new());
        let both = text(r#"["backup", "restore-test"]"#);
        assert!(
            both.iter().any(|m| m.contains("`ctl` is not mapped")),
            "{both:?}"
        );
    }

    pub(crate) fn with_roles() -> Description {
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

    pub(crate) fn roles_policy(servers: &str, job_servers: &str) -> Policy {
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
}
