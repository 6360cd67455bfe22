//! The new set made, completed and pruned: the partial directory, syncfs, the manifest, the
//! rename to its id, and retention; and a restore test's tree checked against its set's
//! manifest, its result recorded and its scratch directory removed.

use super::*;

impl Executor<'_> {
    /// Syncs the new set, writes its manifest, and gives it its id; `kept`: why it is kept,
    /// for a set completed after a point of no return though the run failed.
    pub(super) fn complete_set(&self, set: &SetSpec, kept: Option<&str>) -> Result<(), String> {
        let partial = set.partial();
        let root = self
            .roots
            .local
            .0
            .get("set")
            .ok_or_else(|| format!("{} is not open", partial.display()))?;
        syncfs(std::os::fd::AsFd::as_fd(&root.dir))
            .map_err(|e| format!("cannot sync {}: {e}", partial.display()))?;
        let known: manifest::Known = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((root, _), _)| root == "set")
            .map(|((_, path), w)| (path.clone(), (w.digest.clone(), Some(w.source))))
            .collect();
        let d = &self.spec.document;
        let head = Manifest {
            format_version: manifest::FORMAT_VERSION.into(),
            hokan_version: env!("CARGO_PKG_VERSION").into(),
            site: d.site.clone(),
            job: d.job.clone(),
            set: set.id.clone(),
            operation: d.operation.clone(),
            plugin: d.plugin.clone(),
            started: self.spec.started.clone(),
            kept: kept.map(str::to_string),
            finished: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            digest: String::new(),
            owners: crate::tree::meta::is_root(),
            entries: vec![],
        };
        // The verify steps' walks of the set's top-level trees, when nothing has written since.
        let now = self.writes.load(Ordering::SeqCst);
        let taken = std::mem::take(&mut *self.set_walks.lock().unwrap_or_else(|p| p.into_inner()));
        let mut walks: Vec<(RelPath, Vec<crate::tree::Node>)> = taken
            .into_iter()
            .filter(|(path, at, nodes)| {
                *at == now
                    && path.components().count() == 1
                    && nodes
                        .first()
                        .is_some_and(|n| n.meta.kind == crate::tree::Kind::Dir)
            })
            .map(|(path, _, nodes)| (path, Arc::unwrap_or_clone(nodes)))
            .collect();
        walks.sort_by(|a, b| a.0.cmp(&b.0));
        walks.dedup_by(|a, b| a.0 == b.0);
        let m = manifest::write(&partial, head, &known, walks).map_err(|e| e.to_string())?;
        std::fs::rename(&partial, set.path())
            .and_then(|()| std::fs::File::open(&set.job_dir)?.sync_all())
            .map_err(|e| {
                format!(
                    "cannot rename {} to {}: {e}",
                    partial.display(),
                    set.path().display()
                )
            })?;
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let in_set = written.iter().filter(|((r, _), _)| r == "set");
        let (mut copied, mut linked) = (0, 0);
        for (_, w) in in_set {
            if w.linked {
                linked += 1;
            } else {
                copied += w.size;
            }
        }
        drop(written);
        self.log(Record::SetComplete {
            set: set.id.clone(),
            path: set.path(),
            files: m.files().len() as u64,
            bytes: m.files().values().map(|e| e.size).sum(),
            bytes_copied: copied,
            files_linked: linked,
            kept: kept.map(str::to_string),
        });
        Ok(())
    }

    /// A restore test's body passed: the tree it restored must be the set's, entry by entry,
    /// with every byte and every piece of metadata the manifest records, and nothing more.
    pub(super) fn check_restored(&self) -> Result<(), String> {
        let (Some(dir), Some(set)) = (scratch(self.spec), self.spec.set.as_ref()) else {
            return Ok(());
        };
        let manifest = Manifest::read(&set.path()).map_err(|e| e.to_string())?;
        let v = manifest::verify_against(manifest, dir).map_err(|e| e.to_string())?;
        if v.ok() {
            return Ok(());
        }
        let mut shown: Vec<String> = v.problems.iter().take(5).map(ToString::to_string).collect();
        if v.problems.len() > 5 {
            shown.push(format!("and {} more", v.problems.len() - 5));
        }
        Err(format!(
            "the tree restored from the set {} does not match the set's manifest: {}",
            set.id,
            shown.join("; ")
        ))
    }

    /// After a restore test's cleanup: its result recorded beside the set, its scratch
    /// directory removed. It passed only if every step did and the restored tree matched.
    pub(super) fn restore_tested(&self, outcome: &Outcome) {
        let (Some(dir), Some(set)) = (scratch(self.spec), self.spec.set.as_ref()) else {
            return;
        };
        let ok = outcome.status == RunStatus::Completed
            && outcome.steps_failed.is_empty()
            && outcome.cleanup_failed.is_empty();
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let why_of = |step: &str| match failures.get(step) {
            Some(why) => format!("`{step}` failed: {why}"),
            None => format!("`{step}` failed"),
        };
        let problem = (!ok).then(|| {
            let mut why: Vec<String> = Vec::new();
            match &outcome.step {
                Some(step) => why.push(why_of(step)),
                None => why.extend(outcome.reason.clone()),
            }
            why.extend(outcome.steps_failed.iter().map(|s| why_of(s)));
            if !outcome.cleanup_failed.is_empty() {
                why.push(format!(
                    "cleanup `{}` failed",
                    outcome.cleanup_failed.join("`, `")
                ));
            }
            why.join("; ")
        });
        drop(failures);
        let t = sets::tested::Tested {
            set: set.id.clone(),
            tested_at: rfc3339(SystemTime::now()),
            ok,
            problem,
            run: self.spec.run.clone(),
        };
        if let Err(e) = sets::tested::record(&set.job_dir, &t) {
            tracing::warn!(
                "cannot record the restore test of {} in {}: {e}",
                set.id,
                set.job_dir.display()
            );
        }
        if let Err(e) = sets::remove_tree(dir) {
            tracing::warn!(
                "cannot remove the restore test's scratch directory {}: {e}",
                dir.display()
            );
        }
    }

    pub(super) fn prune(&self, set: &SetSpec) {
        if !set.retention.is_set() {
            return;
        }
        let ids = match sets::list(&set.job_dir) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!("cannot list {} to prune: {e}", set.job_dir.display());
                return;
            }
        };
        // Never the set just written, nor the newest one by completion: with the clock set
        // back, ids alone could name either as old.
        let newest = sets::by_completion(&set.job_dir)
            .ok()
            .and_then(|v| v.last().cloned());
        // Nor the newest set a restore test proved: it is the one known to come back.
        let verified = sets::tested::newest_passed(&set.job_dir, &ids);
        let mut protected = vec![set.id.as_str()];
        protected.extend(newest.as_deref());
        protected.extend(verified.as_deref());
        // The policy was checked when the run began; a zone gone from the database since then
        // keeps the days of UTC rather than pruning nothing.
        let tz = jiff::tz::db()
            .get(&set.timezone)
            .unwrap_or(jiff::tz::TimeZone::UTC);
        let mut pruned = Vec::new();
        for id in set.retention.prune(&ids, &tz, &protected) {
            let dir = set.job_dir.join(&id);
            // A set a restore is reading is left for the next run's retention.
            let _held = match sets::SetLock::try_exclusive(&dir) {
                Ok(Some(l)) => l,
                Ok(None) => {
                    tracing::warn!(
                        "not pruning the set {} now: it is being read",
                        dir.display()
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!("cannot prune the set {}: {e}", dir.display());
                    continue;
                }
            };
            // The manifest goes first, so a set half-removed is never listed as good.
            let r = std::fs::remove_file(dir.join(manifest::MANIFEST))
                .and_then(|()| sets::remove_tree(&dir))
                .and_then(|()| {
                    match std::fs::remove_file(sets::tested::record_path(&set.job_dir, &id)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                        _ => Ok(()),
                    }
                });
            match r {
                Ok(()) => pruned.push(id),
                Err(e) => tracing::warn!("cannot prune the set {}: {e}", dir.display()),
            }
        }
        if !pruned.is_empty() {
            self.log(Record::Pruned { sets: pruned });
        }
    }
}

/// Makes a backup's partial set: the job's directories as needed, each opened without following
/// a link, then the partial directory itself created exclusively (never one that is already
/// there, which could hold planted files), owner-only until the set is complete.
pub(super) fn make_partial(set: &SetSpec) -> Result<(cap_std::fs::Dir, PathBuf), String> {
    use std::os::fd::AsFd;
    let partial = set.partial();
    let err = |e: std::io::Error| format!("cannot make the partial set {}: {e}", partial.display());
    std::fs::create_dir_all(&set.job_dir).map_err(err)?;
    let job = crate::tree::meta::open_dir(&set.job_dir).map_err(err)?;
    let name = sets::partial_name(&set.id);
    match rustix::fs::mkdirat(
        job.as_fd(),
        name.as_str(),
        rustix::fs::Mode::from_raw_mode(0o700),
    ) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => {
            return Err(format!(
                "{} already exists and is not this run's; nothing of it is used: look at what it holds, remove it, and run again",
                partial.display()
            ));
        }
        Err(e) => return Err(err(e.into())),
    }
    let fd = crate::tree::meta::open_dir_at(job.as_fd(), name.as_bytes()).map_err(err)?;
    Ok((
        cap_std::fs::Dir::from_std_file(std::fs::File::from(fd)),
        partial,
    ))
}

/// Flushes the filesystem holding `fd` to disk: syncfs(2). Since Linux 5.8 it reports every
/// writeback error on the filesystem since `fd` was opened, whoever else has seen it: a set is
/// synced through the handle opened when it was made, before anything was written into it.
pub(super) fn syncfs(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs(2) on a file descriptor we hold; it touches no memory.
    if unsafe { libc::syncfs(fd.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
