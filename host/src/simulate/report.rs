//! A simulation [`Report`] for people (a compact transcript and the fault matrix), and as JUnit
//! XML for CI systems (one test case per scenario). The JSON form is the report's serde form.

use super::run::{dur, size};
use super::{OpReport, Phase, Report, RunStatus, StepStatus, Transcript};
use std::fmt::Write;

fn outcome(t: &Transcript) -> String {
    let o = &t.outcome;
    let step = o.step.as_deref().unwrap_or("?");
    let ended = match o.status {
        RunStatus::Completed if o.steps_failed.is_empty() => "completed".into(),
        RunStatus::Completed => format!("completed, {} failed", o.steps_failed.join(", ")),
        RunStatus::Failed if o.step.is_none() => {
            format!("failed: {}", o.reason.as_deref().unwrap_or("?"))
        }
        RunStatus::Failed => format!("aborted at {step}"),
        RunStatus::Recovered => format!("crashed after {step}, recovered"),
    };
    // A run whose cleanup waited for a server: what `hokan recover` did once it was back.
    let deferred = t
        .steps
        .iter()
        .filter(|s| s.phase == Phase::Cleanup && s.status == StepStatus::Unreachable)
        .count();
    if deferred > 0 && o.status != RunStatus::Recovered {
        format!(
            "{ended}; {deferred} cleanup step(s) deferred, run by the recovery once the server was back"
        )
    } else {
        ended
    }
}

fn status(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Ok => "ok",
        StepStatus::Failed => "FAILED",
        StepStatus::TimedOut => "TIMED OUT",
        StepStatus::Skipped => "skipped",
        StepStatus::NotConfirmed => "UNCONFIRMED",
        StepStatus::Unreachable => "UNREACHABLE",
    }
}

/// One run's transcript: a line per step, then the invariants.
pub fn transcript(t: &Transcript) -> String {
    let mut out = String::new();
    let set = match (t.set_complete, t.set_kept) {
        (Some(true), _) => "; backup set complete",
        (_, true) => "; backup set KEPT, incomplete (a point of no return had passed)",
        (Some(false), false) => "; backup set NOT complete",
        (None, false) => "",
    };
    let _ = writeln!(
        out,
        "{}: {} in {}{set}",
        t.scenario,
        outcome(t),
        dur(t.duration_ms)
    );
    let mut phase = Phase::Body;
    for s in &t.steps {
        if s.phase != phase {
            phase = s.phase;
            let _ = writeln!(
                out,
                "  -- {}",
                match phase {
                    Phase::Body => "body",
                    Phase::Cleanup => "cleanup",
                    Phase::Recovery => "recovery (after the crash, from the journal)",
                }
            );
        }
        let retries = if s.attempts > 1 {
            format!(" x{}", s.attempts)
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "  {:<9} {:<26} {:>11}",
            status(s.status),
            format!("{}{retries}", s.id),
            if s.status == StepStatus::Skipped {
                String::new()
            } else {
                dur(s.duration_ms)
            }
        );
        let mut parts: Vec<&str> = s.changes.iter().map(String::as_str).collect();
        if let Some(n) = &s.note {
            parts.push(n);
        }
        if !parts.is_empty() {
            let _ = write!(out, "  {}", parts.join("; "));
        }
        out.push('\n');
    }
    let held = t.invariants.iter().filter(|i| i.held).count();
    let _ = writeln!(out, "  invariants: {held} of {} held", t.invariants.len());
    for i in t.broken() {
        let _ = writeln!(
            out,
            "    BROKEN {}: {}{}",
            i.id,
            i.description,
            i.detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
    }
    out
}

/// The fault matrix of one operation: scenario, outcome, invariants broken.
pub fn matrix(r: &OpReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} scenario(s), {} with broken invariants:",
        r.scenarios.len(),
        r.broken().count()
    );
    let label = |t: &Transcript| {
        if t.fault_reached {
            t.scenario.clone()
        } else {
            format!("{} (not reached)", t.scenario)
        }
    };
    let w1 = r
        .scenarios
        .iter()
        .map(|t| label(t).len())
        .max()
        .unwrap_or(0);
    let w2 = r
        .scenarios
        .iter()
        .map(|t| outcome(t).len())
        .max()
        .unwrap_or(0);
    for t in &r.scenarios {
        let broken: Vec<&str> = t.broken().map(|i| i.id.as_str()).collect();
        let _ = writeln!(
            out,
            "  {:<w1$}  {:<w2$}  {}",
            label(t),
            outcome(t),
            if broken.is_empty() {
                "ok".to_string()
            } else {
                format!("BROKEN: {}", broken.join(", "))
            }
        );
    }
    out
}

/// The whole report for people: for each operation, the normal run's transcript, the fault
/// matrix, and the transcript of every scenario that broke an invariant.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for r in &report.runs {
        let _ = writeln!(
            out,
            "== {} ({} {}{})",
            r.name(),
            r.plugin.name,
            r.plugin.version,
            r.set
                .as_deref()
                .map(|s| format!(", set {s}"))
                .unwrap_or_default()
        );
        if let Some(why) = &r.refused {
            let _ = writeln!(out, "refused to plan in this world: {why}\n");
            continue;
        }
        if let Some(why) = &r.not_simulated {
            let _ = writeln!(
                out,
                "not simulated: the world has no backup set for it ({why})\n"
            );
            continue;
        }
        if let Some(normal) = r.scenarios.first() {
            out.push_str(&transcript(normal));
        }
        if r.scenarios.len() > 1 {
            out.push_str(&matrix(r));
            for t in r.broken().filter(|t| t.fault.is_some()) {
                out.push_str(&transcript(t));
            }
        }
        out.push('\n');
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "{} operation(s), {} scenario(s): {}{}{}",
        s.operations,
        s.scenarios,
        if s.broken == 0 {
            "every invariant held".to_string()
        } else {
            format!("{} scenario(s) broke an invariant", s.broken)
        },
        if s.refused > 0 {
            format!("; {} operation(s) refused to plan", s.refused)
        } else {
            String::new()
        },
        if s.not_simulated > 0 {
            format!(
                "; {} operation(s) not simulated: no backup set to read",
                s.not_simulated
            )
        } else {
            String::new()
        }
    );
    out
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no way to write most control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: a test suite per operation, a test case per scenario. A broken invariant is a
/// failure; a refusal to plan is a skipped case.
pub fn junit(report: &Report) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let tests: usize = report.runs.iter().map(|r| r.scenarios.len().max(1)).sum();
    let _ = writeln!(
        out,
        "<testsuites name=\"hokan simulate\" tests=\"{tests}\" failures=\"{}\">",
        report.summary.broken
    );
    for r in &report.runs {
        let name = xml(&r.name());
        let class = xml(&r.name().replace('/', "."));
        let _ = writeln!(
            out,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
            r.scenarios.len().max(1),
            r.broken().count(),
            usize::from(r.refused.is_some() || r.not_simulated.is_some())
        );
        if let Some(why) = r.refused.as_ref().or(r.not_simulated.as_ref()) {
            let _ = writeln!(
                out,
                "    <testcase classname=\"{class}\" name=\"plan\"><skipped message=\"{}\"/></testcase>",
                xml(why)
            );
        }
        for t in &r.scenarios {
            let _ = write!(
                out,
                "    <testcase classname=\"{class}\" name=\"{}\" time=\"{:.3}\"",
                xml(&t.scenario),
                t.duration_ms as f64 / 1000.0
            );
            let broken: Vec<_> = t.broken().collect();
            if broken.is_empty() {
                out.push_str("/>\n");
                continue;
            }
            let message = broken
                .iter()
                .map(|i| i.id.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                ">\n      <failure message=\"broken: {}\">{}</failure>\n    </testcase>",
                xml(&message),
                xml(&transcript(t))
            );
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Bytes for people, re-exported for the command line.
pub fn bytes(n: u64) -> String {
    size(n)
}
