//! The invariants a dry run checks when it ends: the built-in safety invariants (services as
//! found, maintenance released, sources unchanged, the set complete only if copied, the set
//! kept after a point of no return, the site's data kept by a restore), then the plan's own.

use super::*;

impl Run<'_> {
    pub(super) fn finish(self, mut outcome: Outcome) -> Transcript {
        let ctx = self.ctx;
        let mut inv = Vec::new();
        // Services (and the product states modelled as services) are as the run found them.
        let mut changed = Vec::new();
        let progress = self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let left = drive::left_on_purpose(ctx.plan, &progress);
        for ((server, service), m) in self.world.services() {
            let before = self.initial.service(server, service).state;
            let target = (server != HOST).then_some(server.as_str());
            if m.state == before {
                continue;
            }
            if let Some(line) = drive::on_purpose(&left, target, service) {
                outcome.left_on_purpose.push(line);
            } else {
                changed.push(format!("{service} on {server} left {}", m.state));
            }
        }
        use crate::plan::safety::{MAINTENANCE_RELEASED, SERVICES_RESTORED, SOURCE_UNCHANGED};
        inv.push(verdict(
            SERVICES_RESTORED.id,
            SERVICES_RESTORED.description,
            changed.is_empty(),
            (!changed.is_empty()).then(|| changed.join(", ")),
        ));
        // Maintenance mode released.
        let left: Vec<String> = ctx
            .markers
            .iter()
            .filter(|m| {
                let abs = ctx.abs(m);
                self.initial.node(&abs).is_none() && self.world.node(&abs).is_some()
            })
            .map(ToString::to_string)
            .collect();
        if !ctx.markers.is_empty() && !ctx.leaves_maintenance {
            inv.push(verdict(
                MAINTENANCE_RELEASED.id,
                MAINTENANCE_RELEASED.description,
                left.is_empty(),
                (!left.is_empty()).then(|| format!("{} still exists", left.join(", "))),
            ));
        }
        let set_complete = self.set_complete.filter(|_| ctx.set_use == SetUse::Writes);
        if ctx.set_use == SetUse::Writes {
            let complete = set_complete == Some(true);
            // The backup's sources are untouched.
            let mut changed = Vec::new();
            let sources: Vec<String> = ctx
                .plan
                .all_steps()
                .filter_map(|s| match &s.action {
                    Action::CopyTree { from, to } if to.root == "set" => Some(ctx.abs(from)),
                    _ => None,
                })
                .collect();
            for src in &sources {
                let before = files_map(self.initial, src, ctx);
                let after = files_map(&self.world, src, ctx);
                // What a successful copy from `src` found there was exactly `files`.
                let copied_as = |files: &BTreeMap<&str, u64>| {
                    self.copies.iter().any(|c| {
                        &c.from == src
                            && c.ok
                            && c.source
                                .iter()
                                .map(|(r, x)| (r.as_str(), *x))
                                .eq(files.iter().map(|(r, x)| (*r, *x)))
                    })
                };
                // Some procedures delete what they backed up, once it is in the set (Exchange
                // truncates its logs): gone is fine when the complete set holds it as it was.
                let moved_into_set =
                    (complete || self.set_kept) && after.is_empty() && copied_as(&before);
                // What the run itself made to copy (a directory on a server reached over ssh
                // that the product's backup program wrote into) was no data of the product's:
                // left behind when its removal failed, it is as the copy found it, which is
                // what a real run checks of every source.
                let made_by_run = before.is_empty() && copied_as(&after);
                if before != after && !moved_into_set && !made_by_run {
                    let n = before
                        .iter()
                        .filter(|(k, v)| after.get(*k) != Some(v))
                        .count()
                        + after.keys().filter(|k| !before.contains_key(*k)).count();
                    changed.push(format!("{src}: {n} file(s) changed, added or removed"));
                }
            }
            inv.push(verdict(
                SOURCE_UNCHANGED.id,
                SOURCE_UNCHANGED.description,
                changed.is_empty(),
                (!changed.is_empty()).then(|| changed.join("; ")),
            ));
            // A set is complete only with every copy in it, as copied.
            let mut wrong = Vec::new();
            if complete {
                for c in self.copies.iter().filter(|c| !c.ok) {
                    wrong.push(format!(
                        "{} (copied by `{}` from {}) failed, yet the set is complete",
                        c.to, c.step, c.from
                    ));
                }
                for c in self.copies.iter().filter(|c| c.ok) {
                    let now: Vec<(String, u64)> = self
                        .world
                        .files_below(&c.to)
                        .into_iter()
                        .map(|(r, f)| (r.to_string(), f.content))
                        .collect();
                    if now != c.source {
                        wrong.push(format!(
                            "{} (copied by `{}` from {}) no longer matches what was copied",
                            c.to, c.step, c.from
                        ));
                    }
                }
            }
            inv.push(verdict(
                "hokan:set-complete-only-if-copied",
                "the backup set is marked complete only if every copy into it succeeded and is intact",
                wrong.is_empty(),
                if !wrong.is_empty() {
                    Some(wrong.join("; "))
                } else if !complete {
                    Some("the set is not marked complete".into())
                } else {
                    None
                },
            ));
        }
        if ctx.set_use == SetUse::Writes && ctx.plan.all_steps().any(|s| s.commits_set) {
            use crate::plan::safety::SET_KEPT;
            let progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
            let point = drive::point_of_no_return(ctx.plan, &progress);
            let gone = point.is_some() && set_complete != Some(true) && !self.set_kept;
            inv.push(verdict(
                SET_KEPT.id,
                SET_KEPT.description,
                !gone,
                point.map(|p| {
                    if gone {
                        format!("the point of no return `{p}` passed, yet the set was discarded")
                    } else {
                        format!("the point of no return `{p}` passed and the set is there")
                    }
                }),
            ));
        }
        if ctx.plan.all_steps().any(|s| s.no_kill) {
            use crate::plan::safety::NEVER_KILLED;
            let killed: Vec<&str> = ctx
                .plan
                .all_steps()
                .filter(|s| s.no_kill && self.killed.contains(&s.id))
                .map(|s| s.id.as_str())
                .collect();
            inv.push(verdict(
                NEVER_KILLED.id,
                NEVER_KILLED.description,
                killed.is_empty(),
                (!killed.is_empty()).then(|| format!("killed: {}", killed.join(", "))),
            ));
        }
        if let Some(w) = &ctx.plan.window {
            use crate::plan::safety::INSIDE_WINDOW;
            let bound = w.bound(ctx.plan);
            let outside: Vec<String> = self
                .records
                .iter()
                .filter(|r| r.phase == Phase::Body && r.attempts > 0)
                .filter(|r| bound.contains(&r.id.as_str()))
                .filter_map(|r| {
                    let start = self.initial.now_ms + r.at_ms as i64;
                    let end = start + r.duration_ms as i64;
                    if start < w.window.start_ms {
                        Some(format!(
                            "`{}` started at {}, before it",
                            r.id,
                            drive::instant(start)
                        ))
                    } else if end > w.window.end_ms {
                        Some(format!(
                            "`{}` ended at {}, after it",
                            r.id,
                            drive::instant(end)
                        ))
                    } else {
                        None
                    }
                })
                .collect();
            inv.push(verdict(
                INSIDE_WINDOW.id,
                INSIDE_WINDOW.description,
                outside.is_empty(),
                Some(if outside.is_empty() {
                    format!(
                        "`{}` to `{}`, inside {} to {}",
                        w.from_step,
                        w.until_step,
                        drive::instant(w.window.start_ms),
                        drive::instant(w.window.end_ms)
                    )
                } else {
                    format!(
                        "window {} to {}: {}",
                        drive::instant(w.window.start_ms),
                        drive::instant(w.window.end_ms),
                        outside.join("; ")
                    )
                }),
            ));
        }
        if ctx.set_use == SetUse::Reads && !ctx.keep.is_empty() {
            inv.push(verdict(
                "hokan:previous-data-kept",
                "the data the site had is kept (in place or renamed) at every step",
                self.kept_broken.is_none(),
                self.kept_broken.clone(),
            ));
        }
        for i in &ctx.plan.invariants {
            let applies = drive::applies(i, &progress, |c| self.holds(c, i.target.as_deref()));
            let held = match applies {
                Ok(true) => self.holds(&i.condition, i.target.as_deref()),
                Ok(false) => Ok(true),
                Err(f) => Err(f),
            };
            let (held, detail) = match held {
                Ok(true) => (true, None),
                Ok(false) => (
                    false,
                    Some(format!("{} does not hold at the end", i.condition)),
                ),
                Err(f) => (
                    false,
                    Some(format!("{} cannot be checked: {}", i.condition, f.message)),
                ),
            };
            inv.push(verdict(&i.id, &i.description, held, detail));
        }
        Transcript {
            scenario: self
                .fault
                .map_or_else(|| "normal".to_string(), Fault::label),
            fault: self.fault.cloned(),
            fault_reached: self.fault.is_none() || self.fault_reached,
            outcome,
            set_complete,
            set_kept: self.set_kept,
            duration_ms: self.clock,
            steps: self.records,
            invariants: inv,
        }
    }
}

/// The contents below `dir`, maintenance markers aside.
fn files_map<'w>(w: &'w World, dir: &str, ctx: &Context<'_>) -> BTreeMap<&'w str, u64> {
    let mut m = w.contents_below(dir);
    m.retain(|r, _| !ctx.is_marker(&format!("{dir}/{r}")));
    m
}

fn verdict(id: &str, description: &str, held: bool, detail: Option<String>) -> InvariantResult {
    InvariantResult {
        id: id.to_string(),
        description: description.to_string(),
        held,
        detail,
    }
}
