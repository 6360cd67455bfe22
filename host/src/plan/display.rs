//! Plans for people: one line per step, in the order they run.

use super::document::PlanDocument;
use super::model::{Action, Condition, Item, ServiceState, Step, VerifyCheck};
use std::fmt::{self, Write};

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceState::Running => "running",
            ServiceState::Stopped => "stopped",
        })
    }
}

/// Bytes as a short human figure (binary units).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn command_line(command: &str, args: &[String]) -> String {
    let mut s = command.to_string();
    for a in args {
        if a.is_empty() || a.contains(char::is_whitespace) {
            let _ = write!(s, " {a:?}");
        } else {
            let _ = write!(s, " {a}");
        }
    }
    s
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Exists { path } => write!(f, "{path} exists"),
            Condition::Absent { path } => write!(f, "{path} is absent"),
            Condition::FreeSpaceAtLeast { root, bytes: b } => {
                write!(f, "free space of {root} >= {}", bytes(*b))
            }
            Condition::ServiceIs { service, state } => write!(f, "service {service} is {state}"),
            Condition::CommandSucceeds(e) => {
                write!(f, "`{}` succeeds", command_line(&e.command, &e.args))
            }
            Condition::StepStarted { step } => write!(f, "step {step} started"),
            Condition::StepNotSucceeded { step } => write!(f, "step {step} has not succeeded"),
            Condition::StepSucceeded { step } => write!(f, "step {step} succeeded"),
            Condition::StepNotStarted { step } => write!(f, "step {step} has not started"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::WriteFile { path, contents } => {
                write!(f, "write {path} ({})", bytes(contents.len() as u64))
            }
            Action::Remove { path } => write!(f, "remove {path}"),
            Action::Rename { from, to } => write!(f, "rename {from} -> {to}"),
            Action::EnsureDir { path } => write!(f, "ensure directory {path}"),
            Action::CopyTree { from, to } => write!(f, "copy {from} -> {to}"),
            Action::Exec(e) => {
                write!(f, "exec {}", command_line(&e.command, &e.args))?;
                if let Some(cwd) = &e.cwd {
                    write!(f, " (in {cwd})")?;
                }
                Ok(())
            }
            Action::Service { service, state } => write!(f, "service {service} -> {state}"),
            Action::WaitUntil {
                condition,
                interval_ms,
            } => write!(f, "wait until {condition} (every {interval_ms} ms)"),
            Action::Verify { check } => match check {
                VerifyCheck::CopyMatches { from, to } => write!(f, "verify {to} equals {from}"),
                VerifyCheck::PairedFiles {
                    dir,
                    suffix,
                    partner_suffix,
                } => {
                    write!(
                        f,
                        "verify every *{suffix} in {dir} has its *{suffix}{partner_suffix}"
                    )
                }
                VerifyCheck::EsePages { path } => write!(f, "verify page checksums of {path}"),
                VerifyCheck::EseLogSet {
                    set_logs,
                    store_logs,
                } => write!(
                    f,
                    "verify the logs in {set_logs} follow on and hold every log {store_logs} has up to their newest"
                ),
            },
            Action::Assert { condition, .. } => write!(f, "assert {condition}"),
            Action::Manual { reference, .. } => match reference {
                Some(r) => write!(f, "manual step ({r})"),
                None => write!(f, "manual step"),
            },
            Action::RemoveFiles {
                dir,
                patterns,
                except,
                ignore_case,
            } => {
                write!(
                    f,
                    "remove the files in {dir} named {}",
                    patterns.join(" or ")
                )?;
                if !except.is_empty() {
                    write!(f, ", except {}", except.join(" or "))?;
                }
                if *ignore_case {
                    write!(f, " (ignoring case)")?;
                }
                write!(f, ", as found when the step runs")
            }
        }
    }
}

fn step_line(out: &mut String, label: &str, s: &Step) {
    let _ = write!(out, "{label} {}  {}", s.id, s.title);
    let mut notes = Vec::new();
    if let Some(t) = &s.target {
        notes.push(format!("on {t}"));
    }
    if let Some(ms) = s.timeout_ms {
        notes.push(format!("timeout {}s", ms.div_ceil(1000)));
    }
    if s.retries > 0 {
        notes.push(format!("{} retries", s.retries));
    }
    if s.on_error == super::model::OnError::Continue {
        notes.push("continues on error".into());
    }
    if s.commits_set {
        notes.push("POINT OF NO RETURN: from here on the set is kept".into());
    }
    if s.no_kill {
        notes.push("NEVER KILLED: past its time limit hokan reports it and waits".into());
    }
    if !notes.is_empty() {
        let _ = write!(out, "  [{}]", notes.join(", "));
    }
    let pad = " ".repeat(label.len() + 1);
    let _ = writeln!(out, "\n{pad}  {}", s.action);
    if !s.when.is_empty() {
        let all: Vec<String> = s.when.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "{pad}  only when {}", all.join(" and "));
    }
    if let Action::Manual { instructions, .. } = &s.action {
        let _ = writeln!(out, "{pad}  > {instructions}");
    }
}

/// The whole plan document as text for an operator.
pub fn render(doc: &PlanDocument) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} `{}` for job {} at site {}{}",
        doc.plugin.name,
        doc.plugin.version,
        doc.operation,
        doc.job,
        doc.site,
        doc.set
            .as_ref()
            .map(|s| format!(", backup set {s}"))
            .unwrap_or_default()
    );
    for w in &doc.plan.warnings {
        let _ = writeln!(out, "  ! {w}");
    }
    if let Some(w) = &doc.plan.window {
        let _ = writeln!(
            out,
            "  window: steps {} to {} run between {} and {} (UTC), none before or after",
            w.from_step,
            w.until_step,
            crate::drive::instant(w.window.start_ms),
            crate::drive::instant(w.window.end_ms)
        );
    }
    let _ = writeln!(out, "\nSteps:");
    for (i, item) in doc.plan.steps.iter().enumerate() {
        match item {
            Item::Step(s) => step_line(&mut out, &format!("{:>3}.", i + 1), s),
            Item::Group(g) => {
                let _ = writeln!(
                    out,
                    "{:>3}. {}  {} (at the same time)",
                    i + 1,
                    g.group,
                    g.title
                );
                for s in &g.steps {
                    step_line(&mut out, "     |", s);
                }
            }
        }
    }
    if !doc.plan.cleanup.is_empty() {
        let _ = writeln!(out, "\nCleanup (always runs, in order):");
        for (i, s) in doc.plan.cleanup.iter().enumerate() {
            step_line(&mut out, &format!("{:>3}.", i + 1), s);
        }
    }
    if !doc.plan.invariants.is_empty() {
        let _ = writeln!(out, "\nInvariants (checked at the end, whatever happened):");
        for inv in &doc.plan.invariants {
            let when = if inv.when.is_empty() {
                String::new()
            } else {
                let all: Vec<String> = inv.when.iter().map(ToString::to_string).collect();
                format!(", when {}", all.join(" and "))
            };
            let _ = writeln!(
                out,
                "  - {}: {} ({}{when})",
                inv.id, inv.description, inv.condition
            );
        }
    }
    out
}
