//! What the operator sees during `hokan run` and `hokan recover`: a line per step on stdout,
//! progress bars on stderr when it is a terminal, questions at manual gates; or, with `--json`,
//! one JSON event per line.

use hokan::execute::journal::Record;
use hokan::execute::{Gate, Observer, Phase, ProgressUnit, StepStatus};
use hokan::plan::Step;
use hokan::simulate::run::size;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The console observer.
pub struct Console {
    json: bool,
    yes: bool,
    /// Whether stderr is a terminal, asked once: progress comes for every file copied.
    bars_shown: bool,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    last_json_progress: Mutex<BTreeMap<String, Instant>>,
    /// Serializes output and questions from concurrent steps.
    out: Mutex<()>,
    /// The signal that asked the run to stop (0: none); see [`Console::stop_on_signals`].
    stop: Arc<AtomicUsize>,
    /// Set by the first signal, so that a second one ends the process.
    stopping: Arc<AtomicBool>,
}

impl Console {
    /// A console printing text, or JSON events with `json`; `yes` confirms manual gates.
    pub fn new(json: bool, yes: bool) -> Console {
        Console {
            json,
            yes,
            bars_shown: std::io::stderr().is_terminal(),
            bars: Mutex::new(BTreeMap::new()),
            last_json_progress: Mutex::new(BTreeMap::new()),
            out: Mutex::new(()),
            stop: Arc::new(AtomicUsize::new(0)),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Makes SIGTERM and SIGINT stop the run gracefully: the step in progress finishes, no
    /// further step starts, and the cleanup runs (releasing maintenance mode, starting services).
    /// A second signal ends the process at once; `hokan recover` then runs the cleanup.
    pub fn stop_on_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for sig in [SIGTERM, SIGINT] {
            // Registered first, so it sees the flag as it was before this signal set it.
            signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&self.stopping))?;
            signal_hook::flag::register(sig, Arc::clone(&self.stopping))?;
            signal_hook::flag::register_usize(sig, Arc::clone(&self.stop), sig as usize)?;
        }
        Ok(())
    }

    fn emit_json(&self, v: &impl serde::Serialize) {
        let _g = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, v);
        let _ = writeln!(out);
        let _ = out.flush();
    }

    fn line(&self, text: &str) {
        let _g = self.out.lock().unwrap_or_else(|p| p.into_inner());
        println!("{text}");
    }
}

/// The look of a bar that counts bytes.
const BYTES_TEMPLATE: &str =
    "  {spinner} {prefix:<28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";

/// A bar counting `total` bytes on stderr, hidden when `show` is false or stderr is not a
/// terminal.
pub(super) fn bytes_bar(total: u64, show: bool) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template(BYTES_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.set_prefix("checking pages");
    b
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Ok => "ok",
        StepStatus::Skipped => "skipped",
        StepStatus::Failed => "FAILED",
        StepStatus::TimedOut => "TIMED OUT",
        StepStatus::NotConfirmed => "WAITING",
        StepStatus::Unreachable => "UNREACHABLE",
    }
}

impl Observer for Console {
    fn record(&self, r: &Record) {
        if self.json {
            self.emit_json(r);
            return;
        }
        match r {
            Record::Start(spec) => {
                let d = &spec.document;
                self.line(&format!(
                    "running {} of job {} (site {}) with {} {}{}; journal run {}",
                    d.operation,
                    d.job,
                    d.site,
                    d.plugin.name,
                    d.plugin.version,
                    d.set
                        .as_deref()
                        .map(|s| format!(", set {s}"))
                        .unwrap_or_default(),
                    spec.run
                ));
            }
            Record::StepStart { .. } => {}
            Record::StepEnd {
                step,
                phase,
                status,
                attempts,
                duration_ms,
                summary,
                ..
            } => {
                if let Some(b) = self
                    .bars
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(step)
                {
                    b.finish_and_clear();
                }
                let phase = match phase {
                    Phase::Body => "",
                    Phase::Cleanup => "cleanup",
                    Phase::Recovery => "recovery",
                };
                let tries = if *attempts > 1 {
                    format!(" ({attempts} attempts)")
                } else {
                    String::new()
                };
                self.line(&format!(
                    "  {:<9} {phase:<8} {step:<28} {:>10}  {summary}{tries}",
                    status_word(*status),
                    hokan::simulate::run::dur(*duration_ms),
                ));
            }
            Record::SetComplete {
                set,
                path,
                files,
                bytes,
                bytes_copied,
                files_linked,
                kept,
            } => self.line(&format!(
                "  backup set {set} {}: {files} file(s) of {}, {} copied, {files_linked} linked from the previous set ({})",
                if kept.is_some() { "KEPT, INCOMPLETE" } else { "complete" },
                size(*bytes),
                size(*bytes_copied),
                path.display()
            )),
            Record::Pruned { sets } => self.line(&format!(
                "  retention removed {} old set(s): {}",
                sets.len(),
                sets.join(", ")
            )),
            // The run's end is said by its summary, which names what was deferred.
            Record::RemoteExit {
                server,
                id,
                code,
                note,
                output: Some(_),
            } => self.line(&format!(
                "  the ledger on `{server}`: command {id} {}",
                match (code, note) {
                    (_, Some(n)) => n.clone(),
                    (Some(c), None) => format!("exited {c}"),
                    (None, None) => "was ended by a signal".to_string(),
                }
            )),
            Record::RemoteExit {
                note: Some(n),
                server,
                id,
                ..
            } => self.line(&format!("  the ledger on `{server}`: command {id} {n}")),
            // The run's end is said by its summary, which names what was deferred; a command
            // the run itself saw end is told by its step.
            Record::Finish { .. }
            | Record::Deferred { .. }
            | Record::Observed { .. }
            | Record::RemoteCommand { .. }
            | Record::RemoteExit { .. } => {}
        }
    }

    fn progress(&self, step: &str, unit: ProgressUnit, done: u64, total: u64) {
        if self.json {
            let mut last = self
                .last_json_progress
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last
                .get(step)
                .is_some_and(|t| now.duration_since(*t) < Duration::from_millis(500))
                && done < total
            {
                return;
            }
            last.insert(step.to_string(), now);
            drop(last);
            self.emit_json(&serde_json::json!({
                "record": "progress", "step": step, "unit": unit, "done": done, "total": total
            }));
            return;
        }
        if !self.bars_shown {
            return;
        }
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        let bar = bars.entry(step.to_string()).or_insert_with(|| {
            let b = ProgressBar::new(total);
            let style = match (unit, total) {
                (ProgressUnit::Bytes, _) => ProgressStyle::with_template(BYTES_TEMPLATE),
                (ProgressUnit::Millis, 0) => {
                    ProgressStyle::with_template("  {spinner} {prefix:<28} waiting {elapsed}")
                }
                (ProgressUnit::Millis, _) => ProgressStyle::with_template(
                    "  {spinner} {prefix:<28} [{bar:30}] waiting {elapsed}, limit {len} ms",
                ),
            };
            b.set_style(style.unwrap_or_else(|_| ProgressStyle::default_bar()));
            b.set_prefix(step.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        bar.set_length(total);
        bar.set_position(done);
    }

    fn stop_requested(&self) -> Option<String> {
        let why = match self.stop.load(Ordering::Relaxed) {
            0 => return None,
            s if s == signal_hook::consts::SIGTERM as usize => "SIGTERM",
            _ => "SIGINT",
        };
        let why = format!("{why} received; the cleanup runs and the run ends as failed");
        if !self.json {
            self.line(&format!("stopping: {why}"));
        }
        Some(why)
    }

    fn gate(&self, step: &Step, instructions: &str, reference: Option<&str>) -> Gate {
        let reference = reference.map(|r| format!(" ({r})")).unwrap_or_default();
        if self.yes {
            return Gate::Confirmed(format!(
                "acknowledged with --yes: {instructions}{reference}"
            ));
        }
        if self.json || !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
            return Gate::NotConfirmed(format!(
                "waiting for the operator at `{}`: {instructions}{reference}. Nobody can confirm \
                 it here (not a terminal); run on a terminal, or with --yes once it is done",
                step.id
            ));
        }
        let _g = self.out.lock().unwrap_or_else(|p| p.into_inner());
        eprintln!(
            "\n  MANUAL STEP `{}`: {}\n  {instructions}{reference}",
            step.id, step.title
        );
        loop {
            eprint!("  Type `done` when it is done, or `stop` to stop here (the cleanup runs): ");
            let mut answer = String::new();
            if std::io::stdin().lock().read_line(&mut answer).unwrap_or(0) == 0 {
                return Gate::NotConfirmed(format!(
                    "the terminal closed at the manual step `{}`",
                    step.id
                ));
            }
            match answer.trim() {
                "done" => return Gate::Confirmed("confirmed on the terminal".into()),
                "stop" => {
                    return Gate::NotConfirmed(format!(
                        "the operator stopped at the manual step `{}`",
                        step.id
                    ));
                }
                _ => {}
            }
        }
    }
}
