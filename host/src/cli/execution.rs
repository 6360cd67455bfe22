//! `hokan run`, `hokan recover`, `hokan sets` and `hokan verify`.

use super::commands::{EXIT_BROKEN, EXIT_REFUSED, runtime};
use super::console::Console;
use super::{Cli, RunArgs};
use anyhow::{Context, Result, bail};
use hokan::execute::journal::{self, Unfinished};
use hokan::execute::lock::Lock;
use hokan::execute::{self, Outcome, PrepareError, RunRequest, RunStatus, TestFaults, prepare_run};
use hokan::plan::model::TimeWindow;
use hokan::planner::{self, PlanJobError, PluginDir};
use hokan::policy::Policy;
use hokan::sets::{self, Manifest, SetState, manifest};
use hokan::simulate::run::size;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

fn exit_for(o: &Outcome) -> ExitCode {
    ExitCode::from(hokan::exit::of(o))
}

/// The opening of `--window` a run started at `now` is given, in the site's time zone.
fn run_window(pol: &Policy, text: &str, now: SystemTime) -> Result<TimeWindow> {
    let w = hokan::policy::Window::parse(text).map_err(|e| anyhow::anyhow!("--window {e}"))?;
    let tz = jiff::tz::db().get(&pol.timezone).map_err(|e| {
        anyhow::anyhow!(
            "site.timezone `{}` is not a time zone this host knows: {e}",
            pol.timezone
        )
    })?;
    let now = jiff::Timestamp::try_from(now)?;
    let (opens, closes) = hokan::schedule::calendar::opening_at(&w, &tz, now)
        .ok_or_else(|| anyhow::anyhow!("--window {text} does not open in the coming week"))?;
    Ok(TimeWindow {
        start_ms: opens.as_millisecond(),
        end_ms: closes.as_millisecond(),
    })
}

fn report(o: &Outcome, json: bool) {
    if json {
        return;
    }
    match o.status {
        RunStatus::Completed => println!(
            "completed{}",
            o.set
                .as_deref()
                .map(|s| format!("; backup set {s} is complete"))
                .unwrap_or_default()
        ),
        RunStatus::Failed => println!(
            "FAILED: {}; the cleanup ran{}",
            o.reason.as_deref().unwrap_or("a step failed"),
            if o.cleanup_deferred.is_empty() {
                ""
            } else {
                ", but not all of it could"
            }
        ),
        RunStatus::Recovered => println!(
            "recovered: the run had died{}; its cleanup ran and it is marked failed",
            o.step
                .as_deref()
                .map(|s| format!(" after `{s}`"))
                .unwrap_or_default()
        ),
    }
    for w in &o.warnings {
        println!("warning: {w}");
    }
    if let (Some(set), Some(why)) = (&o.set, &o.set_kept) {
        println!(
            "ATTENTION: the backup set {set} is KEPT, INCOMPLETE: {why}; it is listed as `kept`, not good: check it with `hokan verify`, and fix what failed before the next backup"
        );
    } else if let Some(why) = &o.set_kept {
        println!("ATTENTION: {why}");
    }
    for s in &o.steps_failed {
        println!(
            "ATTENTION: the step `{s}` failed and the run went on; do by hand what it should have done"
        );
    }
    for s in &o.cleanup_failed {
        println!("ATTENTION: the cleanup step `{s}` failed; check the product by hand");
    }
    for d in &o.cleanup_deferred {
        println!(
            "ATTENTION: the cleanup step {d}. The product there may still be in maintenance or \
             stopped: the run waits for `hokan recover`, which runs the step again once the \
             server answers (and a new run of this job refuses until then)"
        );
    }
    for i in &o.invariants_broken {
        println!("ATTENTION: invariant broken: {i}");
    }
    for l in &o.left_on_purpose {
        println!("ATTENTION: left so on purpose: {l}");
    }
}

/// The unfinished runs of one instance.
fn unfinished_of(state: &Path, instance: &str) -> Result<Vec<Unfinished>> {
    Ok(journal::unfinished(state)?
        .into_iter()
        .filter(|u| u.spec().is_some_and(|s| s.instance == instance))
        .collect())
}

pub(super) fn run(cli: &Cli, a: &RunArgs) -> Result<ExitCode> {
    let pol = match &a.policy_origin {
        None => Policy::load(&a.policy)?,
        Some(origin) => {
            let text = std::fs::read_to_string(&a.policy)
                .with_context(|| format!("cannot read {}", a.policy.display()))?;
            Policy::parse(origin, &text)?
        }
    };
    let job = pol.job(&a.job)?;
    let rt = runtime(cli)?;
    let plugin = planner::load_plugin(&rt, &PluginDir(cli.plugin_dir.clone()), &pol, job)?;
    if let Some(f) = hokan::lint::check_job(&pol, job, plugin.description())
        .into_iter()
        .find(|f| f.error)
    {
        bail!("{}", f.message);
    }
    let state = &cli.state_dir;
    journal::check_state_dir(state)?;
    let instance = execute::instance(&pol, job);
    let now = SystemTime::now();
    let _lock = Lock::take(state, &instance, &execute::run_id(now, &pol, job, &a.op))?;
    if let Some(u) = unfinished_of(state, &instance)?.first() {
        bail!(
            "an earlier run on {instance} did not finish ({}); run `hokan recover --state-dir {}` \
             first: it runs that run's cleanup (for example, releases maintenance mode)",
            u.path.display(),
            state.display()
        );
    }
    let window = match &a.window {
        None => None,
        Some(text) => Some(run_window(&pol, text, now)?),
    };
    // The planner chooses the set a restore reads (`sets::choose`), as `hokan plan` does.
    let ready = match prepare_run(&RunRequest {
        plugin: &rt.bind(&plugin),
        policy: &pol,
        job,
        operation: &a.op,
        set: a.set.as_deref(),
        now,
        links: !a.no_links,
        window,
        policy_file: &a.policy,
    }) {
        Ok(s) => s,
        Err(PrepareError::Plan(e @ PlanJobError::Refused { .. })) if !e.is_bad_input() => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        Err(e) => bail!("{e}"),
    };
    for (bad, why) in &ready.passed_over {
        eprintln!("warning: passed over the backup set {bad}: {why}");
    }
    let spec = &ready.spec;
    for w in &spec.document.plan.warnings {
        eprintln!("warning: {w}");
    }
    let console = Console::new(a.json, a.yes);
    console
        .stop_on_signals()
        .context("cannot install the SIGTERM handler")?;
    let outcome = execute::execute_with(
        spec,
        ready.previous.as_deref(),
        &ready.sessions,
        state,
        &console,
        &TestFaults::from_env(),
    )?;
    report(&outcome, a.json);
    if !a.json
        && let Some(set) = spec
            .set
            .as_ref()
            .filter(|_| a.op == sets::tested::OPERATION)
    {
        match sets::tested::last(&set.job_dir, &set.id) {
            Some(t) if t.run == spec.run && t.ok => println!(
                "restore test of {}: passed (recorded in {})",
                set.id,
                sets::tested::record_path(&set.job_dir, &set.id).display()
            ),
            Some(t) if t.run == spec.run => println!(
                "restore test of {}: FAILED: {}",
                set.id,
                t.problem.as_deref().unwrap_or("")
            ),
            _ => eprintln!(
                "warning: the restore test of {} could not be recorded in {}",
                set.id,
                set.job_dir.display()
            ),
        }
    }
    Ok(exit_for(&outcome))
}

pub(super) fn recover(
    cli: &Cli,
    policies: &[std::path::PathBuf],
    yes: bool,
    json: bool,
) -> Result<ExitCode> {
    let state = &cli.state_dir;
    let mut given = Vec::new();
    for p in policies {
        given.extend(hokan::policy::load_all(p)?);
    }
    journal::check_state_dir(state)?;
    let runs = journal::unfinished(state)
        .with_context(|| format!("cannot read the journals in {}", state.display()))?;
    let quarantined = journal::quarantined(state);
    for q in &quarantined {
        eprintln!(
            "ATTENTION: the journal {} could not be read or trusted and is not recovered; its run \
             may have left its product in maintenance mode or a service stopped: check the product \
             by hand, then remove the file",
            q.display()
        );
    }
    let quarantine_code = if quarantined.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_BROKEN)
    };
    if runs.is_empty() {
        if !json {
            println!("nothing to recover in {}", state.display());
        }
        return Ok(quarantine_code);
    }
    let console = Console::new(json, yes);
    let faults = TestFaults::default();
    let mut code = quarantine_code;
    for run in &runs {
        let instance = run
            .spec()
            .map_or_else(|| "unknown".to_string(), |s| s.instance.clone());
        let label = format!(
            "recovery of {}",
            run.spec()
                .map_or("a run that never started", |s| s.run.as_str())
        );
        let _lock = match Lock::take(state, &instance, &label) {
            Ok(l) => l,
            // A live run holds it: its journal is unfinished because it is running, and it is
            // not ours to recover. Another recovery may hold it too; either way, not a fault.
            Err(e @ hokan::execute::lock::LockError::Held { .. }) => {
                if !json {
                    println!("not recovered now, {e}: {}", run.path.display());
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // Read again under the lock: the run may have finished, or another recovery may have
        // finished it, since the journals were listed.
        let run = match journal::reread(run) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("error: {e}");
                code = ExitCode::from(EXIT_BROKEN);
                continue;
            }
        };
        let run = &run;
        if !json {
            match run.spec() {
                Some(s) => println!(
                    "recovering run {} ({} of job {}, site {}), journal {}",
                    s.run,
                    s.document.operation,
                    s.document.job,
                    s.document.site,
                    run.path.display()
                ),
                None => println!(
                    "closing {}: the run died before it started",
                    run.path.display()
                ),
            }
        }
        let spec = match run.spec().map(|s| resolved(s, &given)).transpose() {
            Ok(spec) => spec,
            Err(why) => {
                println!(
                    "ATTENTION: not recovered: {why}. Its cleanup has not run: check the product \
                     (maintenance mode, stopped services), then run `hokan recover POLICY` with \
                     the site's policy"
                );
                code = ExitCode::from(EXIT_BROKEN);
                continue;
            }
        };
        let outcome = execute::recover(run, spec.as_ref(), &console, &faults)?;
        report(&outcome, json);
        if outcome.needs_attention() {
            code = ExitCode::from(EXIT_BROKEN);
        }
    }
    Ok(code)
}

/// A dead run's spec resolved from the current policy: one of `given` for its site, or else
/// the policy file the run recorded.
fn resolved(
    spec: &execute::RunSpec,
    given: &[Policy],
) -> std::result::Result<execute::RunSpec, String> {
    let site = &spec.document.site;
    let policy = match given.iter().find(|p| &p.site == site) {
        Some(p) => p.clone(),
        None if !given.is_empty() => {
            return Err(format!("none of the policies given is for site `{site}`"));
        }
        None => {
            let Some(r) = &spec.policy else {
                return Err(format!(
                    "run {} recorded no policy file (an older hokan wrote it)",
                    spec.run
                ));
            };
            let text = std::fs::read_to_string(&r.file).map_err(|e| {
                format!("the run's policy {} cannot be read: {e}", r.file.display())
            })?;
            Policy::parse(&r.origin, &text).map_err(|e| e.to_string())?
        }
    };
    execute::resolve_recovery(spec, &policy).map_err(|e| format!("run {}: {e}", spec.run))
}

pub(super) fn sets(policy: &Path, job: &str, json: bool, state: &Path) -> Result<ExitCode> {
    let pol = Policy::load(policy)?;
    let job = pol.job(job)?;
    let dir = planner::sets_dir(&pol, job).ok_or_else(|| {
        anyhow::anyhow!(pol.job_error(
            job,
            "backup_root",
            "the job keeps no backup sets; set `backup_root`"
        ))
    })?;
    let listed = sets::list_all(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let writing = partials_of_unfinished_runs(state);
    let rows: Vec<SetRow> = listed
        .iter()
        .map(|l| {
            let mut row = SetRow::of(l);
            if l.state == SetState::Partial && !writing.iter().any(|w| w.is(&l.id, &dir)) {
                row.state = "partial-left";
            }
            row
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no backup sets in {}", dir.display());
    }
    for r in &rows {
        let what = match (r.state, &r.error) {
            (_, Some(e)) => format!("BAD MANIFEST: {e}"),
            ("good", None) => format!(
                "{} file(s), {}, {} finished {}",
                r.files.unwrap_or(0),
                size(r.bytes.unwrap_or(0)),
                r.operation.as_deref().unwrap_or(""),
                r.finished.as_deref().unwrap_or("")
            ),
            ("kept", None) => format!(
                "KEPT, INCOMPLETE: {} file(s), {}, {} finished {}; {}; `hokan verify` checks it, a restore uses it only when named with --set",
                r.files.unwrap_or(0),
                size(r.bytes.unwrap_or(0)),
                r.operation.as_deref().unwrap_or(""),
                r.finished.as_deref().unwrap_or(""),
                r.kept.as_deref().unwrap_or("")
            ),
            ("partial", None) => {
                "PARTIAL: being written, or left by a run that died (`hokan recover` removes it)"
                    .into()
            }
            ("partial-left", None) => "PARTIAL, LEFT: no run is writing it and `hokan recover` \
                 will not remove it. A run kept it after a point of no return but could not \
                 complete it (that run's outcome says why), or it was left by a run of another \
                 state directory: copy what it holds somewhere safe before removing it"
                .into(),
            _ => "INCOMPLETE: no manifest; never used for a restore".into(),
        };
        let tested = match &r.restore_test {
            None if matches!(r.state, "good" | "kept") => "; never restore-tested".to_string(),
            None => String::new(),
            Some(t) if t.ok => format!("; restore-tested {}: passed", t.tested_at),
            Some(t) => format!(
                "; restore-tested {}: FAILED: {}",
                t.tested_at,
                t.problem.as_deref().unwrap_or("")
            ),
        };
        println!("{}  {what}{tested}", r.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// The set a run not yet finished (running, or dead and not yet recovered) writes: its partial
/// directory is that run's, and `hokan recover` removes it if the run died.
struct Writing {
    id: String,
    job_dir: Option<std::fs::Metadata>,
}

impl Writing {
    /// Whether this is set `id` of `dir`, comparing the directories by what they name.
    fn is(&self, id: &str, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let same =
            |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
        self.id == id
            && match (&self.job_dir, std::fs::metadata(dir)) {
                (Some(a), Ok(b)) => same(a, &b),
                _ => false,
            }
    }
}

/// The sets the unfinished runs of `state` write. A state directory that cannot be read
/// names none: then every partial set is reported as nobody's, which errs on the side of
/// keeping it.
fn partials_of_unfinished_runs(state: &Path) -> Vec<Writing> {
    execute::journal::unfinished(state)
        .unwrap_or_default()
        .iter()
        .filter_map(|u| u.spec()?.set.clone())
        .filter(|s| s.writes)
        .map(|s| Writing {
            job_dir: std::fs::metadata(&s.job_dir).ok(),
            id: s.id,
        })
        .collect()
}

/// One line of `hokan sets`; its serde form is the `--json` output.
#[derive(serde::Serialize)]
struct SetRow<'a> {
    id: &'a str,
    /// `good`, `kept` (incomplete, after a point of no return), `no-manifest`, `partial` (an
    /// unfinished run's), `partial-left` (no unfinished run's: recovery will not remove it), or
    /// `bad-manifest` when a manifest cannot be read.
    state: &'static str,
    path: &'a Path,
    /// Why a kept set is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    kept: Option<String>,
    files: Option<u64>,
    bytes: Option<u64>,
    operation: Option<String>,
    finished: Option<String>,
    error: Option<String>,
    /// Its last restore test (`hokan restore-test`), if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_test: Option<sets::tested::Tested>,
}

impl<'a> SetRow<'a> {
    fn of(s: &'a sets::Listed) -> SetRow<'a> {
        let mut row = SetRow {
            id: &s.id,
            state: match s.state {
                SetState::Good => "good",
                SetState::Kept => "kept",
                SetState::NoManifest => "no-manifest",
                SetState::Partial => "partial",
            },
            path: &s.path,
            kept: None,
            files: None,
            bytes: None,
            operation: None,
            finished: None,
            error: None,
            restore_test: None,
        };
        if matches!(s.state, SetState::Good | SetState::Kept) {
            row.restore_test = s
                .path
                .parent()
                .and_then(|dir| sets::tested::last(dir, &s.id));
            match Manifest::read(&s.path) {
                Ok(m) => {
                    let files = m.files();
                    row.files = Some(files.len() as u64);
                    row.bytes = Some(files.values().map(|e| e.size).sum());
                    row.operation = Some(m.operation);
                    row.finished = Some(m.finished);
                    row.kept = m.kept;
                }
                Err(e) => {
                    row.state = "bad-manifest";
                    row.error = Some(e.to_string());
                }
            }
        }
        row
    }
}

pub(super) fn verify(set: &Path, json: bool) -> Result<ExitCode> {
    let v = manifest::verify(set)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "set": set, "ok": v.ok(), "files": v.files, "bytes": v.bytes, "problems": v.problems,
            }))?
        );
    } else if v.ok() {
        println!(
            "ok: {} file(s), {} match the manifest of {} (set {} of job {}, {})",
            v.files,
            size(v.bytes),
            set.display(),
            v.manifest.set,
            v.manifest.job,
            v.manifest.finished
        );
        if let Some(why) = &v.manifest.kept {
            println!(
                "note: this set is KEPT, INCOMPLETE ({why}): it holds what its manifest lists, but its run did not finish"
            );
        }
    } else {
        for p in &v.problems {
            println!("{}: {p}", set.display());
        }
        println!(
            "{} problem(s): the set {} does not match its manifest; restore from another set",
            v.problems.len(),
            set.display()
        );
    }
    Ok(if v.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_BROKEN)
    })
}
