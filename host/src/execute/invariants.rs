//! The built-in safety invariants a real run checks: what it found before its first step,
//! maintenance released and services as found, and the sources unchanged under their copies.

use super::*;

impl Executor<'_> {
    /// The services the plan starts or stops that have a status command, with their targets.
    pub(super) fn watched_services(&self) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for s in self.spec.document.plan.all_steps() {
            if let Action::Service { service, .. } = &s.action {
                let key = (service.clone(), s.target.clone());
                let has_status = self
                    .spec
                    .services
                    .get(service)
                    .is_some_and(|m| m.status.is_some());
                if has_status && !out.contains(&key) {
                    out.push(key);
                }
            }
        }
        out
    }

    /// Journals what the safety invariants compare the end with: which maintenance markers are
    /// already there (an operator's own maintenance window is not the run's to release), and
    /// which services are running.
    pub(super) fn observe(&self) {
        let markers: Vec<Location> = self
            .spec
            .safety
            .markers
            .iter()
            .filter(|m| self.roots.exists(m).unwrap_or(false))
            .cloned()
            .collect();
        let services: Vec<ServiceSeen> = self
            .watched_services()
            .into_iter()
            .filter_map(|(service, target)| {
                let running = self
                    .service_running(&service, target.as_deref(), Some(30_000))
                    .ok()?;
                Some(ServiceSeen {
                    service,
                    target,
                    running,
                })
            })
            .collect();
        *self.observed.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((markers.clone(), services.clone()));
        self.log(Record::Observed { markers, services });
    }

    /// The built-in safety invariants the simulator checks after every dry run that hold after
    /// the cleanup, checked on the real product: maintenance released, services in their first
    /// state; each broken one as a line for `invariants_broken`, then the lines of the services
    /// the plan left changed on purpose (`left_on_purpose`).
    pub(super) fn released_and_restored(&self) -> (Vec<String>, Vec<String>) {
        use crate::plan::safety::{MAINTENANCE_RELEASED, SERVICES_RESTORED};
        let mut out = Vec::new();
        let Some((markers_before, services_before)) = self
            .observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return (out, Vec::new());
        };
        if !self.spec.safety.leaves_maintenance {
            let left: Vec<String> = self
                .spec
                .safety
                .markers
                .iter()
                .filter(|m| !markers_before.contains(m))
                .filter(|m| self.roots.exists(m).unwrap_or(false))
                .map(|m| format!("{m} still exists"))
                .collect();
            if !left.is_empty() {
                out.push(MAINTENANCE_RELEASED.broken(&left.join(", ")));
            }
        }
        let progress = self
            .progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let left = drive::left_on_purpose(&self.spec.document.plan, &progress);
        let mut on_purpose = Vec::new();
        let changed: Vec<String> = services_before
            .iter()
            .filter_map(|s| {
                let now = self
                    .service_running(&s.service, s.target.as_deref(), Some(30_000))
                    .ok()?;
                let on = s
                    .target
                    .as_deref()
                    .map(|t| format!(" on {t}"))
                    .unwrap_or_default();
                if now == s.running {
                    return None;
                }
                if let Some(line) = drive::on_purpose(&left, s.target.as_deref(), &s.service) {
                    on_purpose.push(line);
                    return None;
                }
                Some(format!(
                    "{}{on} was {}, is {}",
                    s.service,
                    if s.running { "running" } else { "stopped" },
                    if now { "running" } else { "stopped" }
                ))
            })
            .collect();
        if !changed.is_empty() {
            out.push(SERVICES_RESTORED.broken(&changed.join(", ")));
        }
        (out, on_purpose)
    }

    /// `hokan:source-unchanged`: every file this run copied into the new set is still what it
    /// copied (a file gone since is fine once the set that holds it is complete: Exchange
    /// truncates its logs). `set_complete`: the body succeeded, so the set is being completed.
    pub(super) fn sources_changed(&self, set_complete: bool) -> Vec<String> {
        use crate::plan::safety::SOURCE_UNCHANGED;
        let mut out = Vec::new();
        if self
            .observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            return out;
        }
        let copies = self
            .copies_into_set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        for (from, to) in &copies {
            let to_path = RelPath::from(to.path.as_str());
            // By stat alone: what is compared is the fingerprint, and ctime moves with every
            // attribute change.
            let now = match self.roots.scan(from, crate::tree::Attrs::None) {
                Ok(n) => n,
                // Gone after it was copied (Exchange truncates its logs): fine when the set
                // that holds it is complete.
                Err(e) if e.source.kind() == std::io::ErrorKind::NotFound && set_complete => {
                    continue;
                }
                Err(e) => {
                    changed.push(format!("{from} cannot be read: {e}"));
                    continue;
                }
            };
            // Maintenance markers come and go with the procedure, as in the simulator.
            let from_path = RelPath::from(from.path.as_str());
            let markers: Vec<RelPath> = self
                .spec
                .safety
                .markers
                .iter()
                .filter(|m| m.root == from.root)
                .filter_map(|m| RelPath::from(m.path.as_str()).strip_prefix(&from_path))
                .collect();
            let files: Vec<&crate::tree::Node> = now
                .iter()
                .filter(|n| n.meta.kind == crate::tree::Kind::File && n.first.is_none())
                .filter(|n| !markers.contains(&n.path))
                .collect();
            if files.is_empty() && set_complete {
                continue;
            }
            let differ = files
                .iter()
                .filter(|n| {
                    let w = written.get(&(to.root.clone(), n.path.under(&to_path)));
                    !w.is_some_and(|w| {
                        w.source
                            == crate::tree::Source {
                                ino: n.meta.ino,
                                ctime: n.meta.ctime,
                            }
                            && (w.size, w.mtime) == (n.meta.size, n.meta.mtime)
                    })
                })
                .count();
            let copied = written
                .keys()
                .filter(|(root, _)| root == &to.root)
                .filter_map(|(_, p)| p.strip_prefix(&to_path))
                .filter(|rel| !markers.contains(rel))
                .count();
            let gone = copied.saturating_sub(files.len() - differ);
            if differ > 0 || gone > 0 {
                changed.push(format!(
                    "{from}: {} file(s) changed, added or removed since they were copied",
                    differ.max(gone)
                ));
            }
        }
        if !changed.is_empty() {
            out.push(SOURCE_UNCHANGED.broken(&changed.join("; ")));
        }
        out
    }
}
