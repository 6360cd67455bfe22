//! The commands behind the command line.

use super::{Cli, Command, Faults};
use anyhow::{Context, Result, bail};
use hokan::plan::display::render;
use hokan::planner::{self, PlanInput, PluginDir};
use hokan::policy::{self, Policy};
use hokan::runtime::{Limits, Plugin, Runtime};
use hokan::simulate::{self, FaultMode, Report, World};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

pub(super) fn cache_dir(cli: &Cli) -> PathBuf {
    if let Some(d) = &cli.cache_dir {
        return d.clone();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("hokan")
}

pub(super) fn runtime(cli: &Cli) -> Result<Runtime> {
    Runtime::new(cache_dir(cli), Limits::default())
        .map_err(|e| anyhow::anyhow!("{}", super::message(&e.into())))
        .context("cannot start the WebAssembly runtime")
}

/// Runs one command.
pub fn run(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Plugins { name, json } => plugins(cli, name.as_deref(), *json),
        Command::Validate { policies } => validate(cli, policies),
        Command::Servers(super::ServersCommand::Check { policies, json }) => {
            servers_check(cli, policies, *json)
        }
        Command::Servers(super::ServersCommand::InstallAgent {
            policy,
            server,
            force,
        }) => install_agent(policy, server, *force),
        Command::Plan {
            policy,
            job,
            op,
            set,
            json,
        } => plan(cli, policy, job, op, set.as_deref(), *json),
        Command::Simulate {
            policies,
            job,
            op,
            world,
            from_tree,
            faults,
            json,
            junit,
        } => simulate(
            cli,
            &SimulateArgs {
                policies,
                job: job.as_deref(),
                op: op.as_deref(),
                world: world.as_deref(),
                from_tree: *from_tree,
                mode: match faults {
                    Faults::None => FaultMode::None,
                    Faults::EachStep => FaultMode::EachStep,
                },
                json: *json,
                junit: junit.as_deref(),
            },
        ),
        Command::Run(args) => super::execution::run(cli, args),
        Command::RestoreTest {
            policy,
            job,
            set,
            json,
        } => super::execution::run(
            cli,
            &super::RunArgs {
                policy: policy.clone(),
                policy_origin: None,
                job: job.clone(),
                op: hokan::sets::tested::OPERATION.into(),
                set: set.clone(),
                yes: false,
                no_links: false,
                window: None,
                json: *json,
            },
        ),
        Command::Recover {
            policies,
            yes,
            json,
        } => super::execution::recover(cli, policies, *yes, *json),
        Command::Sets { policy, job, json } => {
            super::execution::sets(policy, job, *json, &cli.state_dir)
        }
        Command::Verify { set, json } => super::execution::verify(set, *json),
        Command::EseCheck { file, json } => ese_check(file, *json),
        Command::Agent { ledger, supervise } => {
            if let Some(entry) = supervise {
                hokan::remote::ledger::supervise(entry)?;
                return Ok(ExitCode::SUCCESS);
            }
            let ledger = std::path::absolute(
                ledger
                    .clone()
                    .unwrap_or_else(hokan::remote::ledger::default_dir),
            )?;
            // Buffered: a copy's chunks are many small frames. Standard output is taken as the
            // file it is: through `Stdout`, a line buffer would also write at every newline byte
            // of a file's contents.
            let stdin = std::io::BufReader::with_capacity(1 << 18, std::io::stdin());
            let raw = std::fs::File::from(
                std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned()?,
            );
            let stdout = std::io::BufWriter::with_capacity(1 << 18, raw);
            hokan::remote::agent::serve(stdin, stdout, &ledger)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedule {
            policies,
            from,
            until,
            json,
        } => super::scheduling::schedule(cli, policies, from.as_deref(), until.as_deref(), *json),
        Command::Daemon {
            policies,
            http,
            http_token_file,
            recover_every,
        } => super::scheduling::daemon(
            cli,
            policies,
            *http,
            http_token_file.as_deref(),
            *recover_every,
        ),
        Command::Status { json } => super::scheduling::status(cli, *json),
        Command::Notifications { event, limit, json } => {
            super::scheduling::notifications(cli, event.as_deref(), *limit, *json)
        }
        Command::Report { policy, month, out } => {
            super::scheduling::report(cli, policy, month, out.as_deref())
        }
    }
}

fn ese_check(file: &Path, json: bool) -> Result<ExitCode> {
    let bar =
        super::console::bytes_bar(std::fs::metadata(file).map(|m| m.len()).unwrap_or(0), !json);
    let report = hokan::ese::check_file(file, &mut |done| bar.set_position(done));
    bar.finish_and_clear();
    let report = report.with_context(|| format!("{}", file.display()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "file": file,
                "clean": report.is_clean(),
                "report": report,
            }))?
        );
    } else {
        let h = &report.header;
        println!(
            "{}: ESE database, format {:#x}, {}-byte pages{}, {}",
            file.display(),
            h.format_version,
            h.page_size,
            if h.page_size_stated {
                ""
            } else {
                " (no page size in the header: 4 KiB)"
            },
            h.state
        );
        println!(
            "checked {} pages ({}; {} never used) and both header copies",
            report.pages,
            report.formats(),
            report.uninitialized
        );
        for b in &report.bad {
            println!("{}: {b}", file.display());
        }
        if report.bad_count > report.bad.len() as u64 {
            println!(
                "... and {} more bad pages",
                report.bad_count - report.bad.len() as u64
            );
        }
        if report.is_clean() {
            println!("ok: every page checksum is good");
        } else {
            println!(
                "{} bad page(s): the database is physically corrupt; restore the latest good backup and replay the logs (Eseutil /p only as the last resort: it drops the bad pages)",
                report.bad_count
            );
        }
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_BROKEN)
    })
}

fn plugins(cli: &Cli, name: Option<&str>, json: bool) -> Result<ExitCode> {
    let rt = runtime(cli)?;
    let dir = &cli.plugin_dir;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| {
            format!(
                "cannot list the plugin directory {} (set --plugin-dir or HOKAN_PLUGIN_DIR)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .filter(|p| name.is_none_or(|n| p.file_stem().is_some_and(|s| s == n)))
        .collect();
    files.sort();
    if files.is_empty() {
        match name {
            Some(n) => bail!("there is no plugin `{n}` in {}", dir.display()),
            None => bail!("there are no plugins (*.wasm) in {}", dir.display()),
        }
    }
    let mut failed = false;
    let mut loaded: Vec<Plugin> = Vec::new();
    for f in &files {
        match rt.load(f, None) {
            Ok(p) => loaded.push(p),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if json {
        let docs: Vec<_> = loaded
            .iter()
            .map(|p| serde_json::json!({"file": p.path(), "sha256": p.sha256(), "description": p.description()}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&docs)?);
    } else if name.is_some() {
        for p in &loaded {
            print_description(p);
        }
    } else {
        for p in &loaded {
            let d = p.description();
            let ops: Vec<&str> = d.operations.iter().map(|o| o.name.as_str()).collect();
            println!(
                "{:<12} {:<8} {}  {}",
                d.name,
                d.version,
                &p.sha256()[..12],
                ops.join(", ")
            );
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_description(p: &Plugin) {
    let d = p.description();
    println!("{} {} — {}", d.name, d.version, d.product);
    println!(
        "  file    {}\n  sha256  {}\n\n{}\n",
        p.path().display(),
        p.sha256(),
        d.summary
    );
    println!("Operations:");
    for o in &d.operations {
        println!("  {:<18} {}", o.name, o.description);
    }
    if !d.roles.is_empty() {
        println!("Server roles (a job's servers must have these):");
        for r in &d.roles {
            let count = match (r.min, r.max) {
                (min, Some(max)) if min == max => format!("exactly {min}"),
                (0, Some(max)) => format!("at most {max}"),
                (min, Some(max)) => format!("{min} to {max}"),
                (0, None) => "any number".to_string(),
                (min, None) => format!("at least {min}"),
            };
            println!("  {:<18} {} ({count})", r.name, r.description);
            for p in &r.properties {
                println!(
                    "    properties.{} {}{}",
                    p.name,
                    p.description,
                    p.default
                        .as_ref()
                        .map(|d| format!(" [default: {d}]"))
                        .unwrap_or_default()
                );
            }
        }
    }
    if !d.roots.is_empty() {
        println!("Roots the policy grants:");
    }
    for r in &d.roots {
        println!(
            "  {:<18} {}{}{}",
            r.name,
            r.description,
            if r.writable { " (written)" } else { " (read)" },
            if r.required { "" } else { " (optional)" }
        );
    }
    if !d.parameters.is_empty() {
        println!("Parameters:");
        for x in &d.parameters {
            let def = x
                .default
                .as_deref()
                .map(|v| format!(" [default: {v}]"))
                .unwrap_or_default();
            println!("  {:<18} {}{def}", x.name, x.description);
        }
    }
    for (title, names) in [
        ("Commands the policy maps:", &d.commands),
        ("Services the policy maps:", &d.services),
    ] {
        if !names.is_empty() {
            println!("{title}");
            for n in names {
                println!("  {:<18} {}", n.name, n.description);
            }
        }
    }
    for m in &d.maintenance_markers {
        println!("Maintenance marker: {} ({})", m.path, m.description);
    }
    if !d.modelled_states.is_empty() {
        println!("Product states dry runs model (per server):");
        for m in &d.modelled_states {
            println!("  {:<18} {} [normal: {}]", m.name, m.description, m.normal);
        }
    }
    if !d.conflicts.is_empty() {
        println!("Work that must not overlap (for the scheduler):");
        for c in &d.conflicts {
            println!(
                "  {:<18} not during {}: {}{}",
                c.activity,
                c.operations.join(", "),
                c.description,
                c.reference
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
    }
}

fn install_agent(path: &std::path::Path, server: &str, force: bool) -> Result<ExitCode> {
    let pol = policy::Policy::load(path)?;
    let Some(s) = pol.servers.iter().find(|s| s.name == server) else {
        let names: Vec<&str> = pol.servers.iter().map(|s| s.name.as_str()).collect();
        anyhow::bail!(
            "{}: no server `{server}` in its [[servers]] tables (it has: {})",
            path.display(),
            names.join(", ")
        );
    };
    let Some(ssh) = s.ssh.as_ref() else {
        anyhow::bail!(
            "{}: server `{server}` is not reached over ssh (transport {}), so it has no agent to install",
            path.display(),
            s.transport.as_deref().unwrap_or("unset")
        );
    };
    let version = env!("CARGO_PKG_VERSION");
    match hokan::remote::install::install(server, ssh, force)? {
        hokan::remote::install::Installed::AlreadyThere => println!(
            "server `{server}`: {} already is hokan {version}'s agent; nothing copied",
            ssh.agent
        ),
        hokan::remote::install::Installed::Copied { replaced } => println!(
            "server `{server}`: installed hokan {version} at {}, and it answers (before: {replaced})",
            ssh.agent
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn servers_check(cli: &Cli, paths: &[PathBuf], json: bool) -> Result<ExitCode> {
    let mut policies = Vec::new();
    for p in paths {
        policies.extend(policy::load_all(p)?);
    }
    let rt = runtime(cli)?;
    let dir = PluginDir(cli.plugin_dir.clone());
    let mut reports = Vec::new();
    for pol in &policies {
        // Which roots each job's plugin writes, from its description.
        let mut writable: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for job in pol.jobs.values() {
            match planner::load_plugin(&rt, &dir, pol, job) {
                Ok(p) => {
                    let w = p.description().roots.iter().filter(|r| r.writable);
                    writable.insert(job.name.clone(), w.map(|r| r.name.clone()).collect());
                }
                Err(e) => eprintln!(
                    "warning: job `{}`: {}; its roots are checked for reading only",
                    job.name,
                    super::message(&e.into())
                ),
            }
        }
        let writes = |j: &policy::Job, root: &str| {
            writable
                .get(&j.name)
                .is_some_and(|w| w.iter().any(|r| r == root))
        };
        reports.extend(hokan::remote::check::check(pol, &writes));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            print!("{}", servers_text(r));
        }
    }
    Ok(if reports.iter().all(|r| r.ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(hokan::exit::ATTENTION)
    })
}

/// One server's check, for people.
fn servers_text(r: &hokan::remote::check::ServerReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let how = r.transport.as_deref().unwrap_or("no transport");
    let state = if r.ok() {
        "ready".to_string()
    } else {
        format!("{} problem(s)", r.problems.len())
    };
    let agent = r
        .agent
        .as_ref()
        .map(|v| format!(", agent hokan {v}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{}/{} ({how} {}): {state}{agent}",
        r.site, r.server, r.address
    );
    for root in &r.roots {
        let free = root
            .free_bytes
            .map(|b| format!(", {} free", bytesize::ByteSize(b).display().iec()))
            .unwrap_or_default();
        let state = match (root.exists, root.readable, root.writable) {
            (false, ..) => "missing".to_string(),
            (true, false, _) => "not readable".to_string(),
            (true, true, w) => format!(
                "readable, {}{}",
                if w { "writable" } else { "read-only" },
                if root.writes {
                    " (the plugin writes it)"
                } else {
                    ""
                }
            ),
        };
        let _ = writeln!(
            out,
            "  root {}.{}  {}  {state}{free}",
            root.job, root.root, root.path
        );
    }
    for p in &r.programs {
        let _ = writeln!(
            out,
            "  program {}.{}  {}  {}",
            p.job,
            p.field,
            p.program,
            if p.present { "present" } else { "absent" }
        );
    }
    for p in &r.problems {
        let _ = writeln!(out, "  problem: {p}");
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    out
}

fn validate(cli: &Cli, paths: &[PathBuf]) -> Result<ExitCode> {
    let rt = runtime(cli)?;
    let dir = PluginDir(cli.plugin_dir.clone());
    let mut errors = 0;
    let mut cache: BTreeMap<(PathBuf, Option<String>), Plugin> = BTreeMap::new();
    for path in paths {
        // host.toml named by itself is the host's settings, not a site.
        let host_file = policy::HostConfig::is_host_file(path);
        let host = if host_file {
            policy::HostConfig::read(path)
        } else {
            policy::HostConfig::load(path)
        };
        match host {
            Ok(h) => {
                if let Some(f) = &h.file {
                    println!(
                        "ok: {} (host settings, {} notification channel(s))",
                        f.display(),
                        h.notify.len()
                    );
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                errors += 1;
            }
        }
        if host_file {
            continue;
        }
        let policies = match policy::load_all(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                errors += 1;
                continue;
            }
        };
        for pol in &policies {
            let mut job_errors = 0;
            for job in pol.jobs.values() {
                // The pin is part of the key: two jobs may pin the same file differently. Only
                // loaded plugins are kept: a failure is reported for each job, naming that job.
                let key = (dir.resolve(pol, job), job.plugin_sha256.clone());
                if !cache.contains_key(&key) {
                    match planner::load_plugin(&rt, &dir, pol, job) {
                        Ok(p) => {
                            cache.insert(key.clone(), p);
                        }
                        Err(e) => {
                            eprintln!("error: {e}");
                            job_errors += 1;
                            continue;
                        }
                    }
                }
                let plugin = &cache[&key];
                for f in hokan::lint::check_job(pol, job, plugin.description()) {
                    if f.error {
                        eprintln!("error: {}", f.message);
                        job_errors += 1;
                    } else {
                        eprintln!("warning: {}", f.message);
                    }
                }
            }
            if job_errors == 0 {
                println!(
                    "ok: {} (site {}, {} job(s))",
                    pol.file.display(),
                    pol.site,
                    pol.jobs.len()
                );
            }
            errors += job_errors;
        }
    }
    if errors > 0 {
        eprintln!("{errors} error(s)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn plan(
    cli: &Cli,
    policy: &Path,
    job: &str,
    op: &str,
    set: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let pol = Policy::load(policy)?;
    let job = pol.job(job)?;
    let rt = runtime(cli)?;
    let plugin = planner::load_plugin(&rt, &PluginDir(cli.plugin_dir.clone()), &pol, job)?;
    let findings = hokan::lint::check_job(&pol, job, plugin.description());
    if let Some(f) = findings.iter().find(|f| f.error) {
        bail!("{}", f.message);
    }
    let input = PlanInput {
        operation: op,
        set,
        now: SystemTime::now(),
        // As `hokan run` does unless told `--no-links`.
        links: true,
        window: None,
    };
    let doc = planner::plan_job(&rt.bind(&plugin), &pol, job, &input)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render(&doc));
    }
    Ok(ExitCode::SUCCESS)
}

struct SimulateArgs<'a> {
    policies: &'a [PathBuf],
    job: Option<&'a str>,
    op: Option<&'a str>,
    world: Option<&'a Path>,
    from_tree: bool,
    mode: FaultMode,
    json: bool,
    junit: Option<&'a Path>,
}

/// Exit status of `simulate` when a plugin refused to plan in the world.
pub(super) const EXIT_REFUSED: u8 = hokan::exit::REFUSED;
/// Exit status of `simulate` when an invariant broke.
pub(super) const EXIT_BROKEN: u8 = hokan::exit::ATTENTION;

/// The world a policy's jobs are simulated in.
fn world_for(pol: &Policy, a: &SimulateArgs<'_>) -> Result<World> {
    if let Some(f) = a.world {
        return Ok(World::load(f)?);
    }
    if a.from_tree {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for job in pol.jobs.values() {
            dirs.extend(planner::on_host(&job.roots, job).0.into_values());
            dirs.extend(planner::sets_dir(pol, job));
        }
        let remote = pol.roots_by_server();
        // The model is one tree of paths: a server's root must not be a path the model
        // already holds for another machine.
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        for d in &dirs {
            owner.insert(hokan::simulate::world::absolute(d), "this host".into());
        }
        for (server, roots) in &remote {
            for path in roots.values() {
                let path = hokan::simulate::world::normalize(Path::new("/"), Path::new(path));
                if let Some(other) = owner.insert(path.clone(), format!("`{server}`"))
                    && other != format!("`{server}`")
                {
                    bail!(
                        "{}: {path} is a root on `{server}` and on {other}; --from-tree models one \
                         tree of paths, so it cannot hold both: simulate in a world file instead",
                        pol.file.display()
                    );
                }
            }
        }
        let now_ms = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut world = World::scan(dirs.iter().map(PathBuf::as_path), now_ms)?;
        for (server, roots) in remote {
            let ssh = pol
                .server(&server)
                .and_then(|s| s.ssh.as_ref())
                .expect("the policy binds remote roots only to servers reached over ssh");
            let session = hokan::remote::ssh::Session::connect(&server, ssh, roots.clone())?;
            for (name, path) in &roots {
                world.scan_remote(path, &session, name)?;
            }
        }
        return Ok(world);
    }
    let default = pol
        .file
        .parent()
        .unwrap_or(Path::new("."))
        .join("worlds")
        .join(pol.file.file_name().unwrap_or_default());
    if !default.exists() {
        bail!(
            "{}: there is no world to simulate it in: write {} (see docs/simulation.md), or pass \
             --world FILE or --from-tree",
            pol.file.display(),
            default.display()
        );
    }
    Ok(World::load(&default)?)
}

fn simulate(cli: &Cli, a: &SimulateArgs<'_>) -> Result<ExitCode> {
    let mut policies = Vec::new();
    for p in a.policies {
        policies.extend(policy::load_all(p)?);
    }
    if let Some(j) = a.job
        && !policies.iter().any(|p| p.jobs.contains_key(j))
    {
        let files: Vec<String> = policies
            .iter()
            .map(|p| p.file.display().to_string())
            .collect();
        bail!(
            "no policy has a job `{j}` (looked in {}); `hokan validate` lists the jobs",
            files.join(", ")
        );
    }
    let rt = runtime(cli)?;
    let dir = PluginDir(cli.plugin_dir.clone());
    let mut runs = Vec::new();
    for pol in &policies {
        let jobs: Vec<_> = pol
            .jobs
            .values()
            .filter(|j| a.job.is_none_or(|n| n == j.name))
            .collect();
        if jobs.is_empty() {
            continue;
        }
        let world = Arc::new(world_for(pol, a)?);
        for job in jobs {
            let plugin = planner::load_plugin(&rt, &dir, pol, job)?;
            if let Some(f) = hokan::lint::check_job(pol, job, plugin.description())
                .into_iter()
                .find(|f| f.error)
            {
                bail!("{}", f.message);
            }
            let ops: Vec<String> = match a.op {
                Some(op) => vec![op.to_string()],
                None if !job.operations.is_empty() => job.operations.clone(),
                None => plugin
                    .description()
                    .operations
                    .iter()
                    .map(|o| o.name.clone())
                    .collect(),
            };
            for op in &ops {
                let r = simulate::simulate_op(&rt.bind(&plugin), pol, job, op, &world, a.mode)?;
                // Asked for by name, an operation that cannot be rehearsed is an error.
                if let (Some(_), Some(why)) = (a.op, &r.not_simulated) {
                    bail!("{}: {why}", r.name());
                }
                runs.push(r);
            }
        }
    }
    let report = Report::new(a.mode, runs);
    if let Some(f) = a.junit {
        std::fs::write(f, simulate::report::junit(&report))
            .with_context(|| format!("cannot write the JUnit report to {}", f.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", simulate::report::render(&report));
    }
    Ok(if report.summary.broken > 0 {
        ExitCode::from(EXIT_BROKEN)
    } else if report.summary.refused > 0 {
        ExitCode::from(EXIT_REFUSED)
    } else {
        ExitCode::SUCCESS
    })
}
