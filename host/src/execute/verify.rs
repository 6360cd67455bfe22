//! Conditions on the real site, and the verify steps: copies that match, paired files, ESE
//! pages; walks of the new set kept for its manifest.

use super::*;

impl Executor<'_> {
    pub(super) fn check(
        &self,
        c: &Condition,
        target: Option<&str>,
        timeout_ms: Option<u64>,
    ) -> Result<bool, Failure> {
        let fail = |e: fs::FsError| Failure::new(e.to_string());
        match c {
            Condition::Exists { path } => self.roots.exists(path).map_err(fail),
            Condition::Absent { path } => self.roots.exists(path).map(|e| !e).map_err(fail),
            Condition::FreeSpaceAtLeast { root, bytes } => {
                Ok(self.roots.free_space(root).map_err(fail)? >= *bytes)
            }
            Condition::ServiceIs { service, state } => Ok(self
                .service_running(service, target, timeout_ms)?
                == (*state == ServiceState::Running)),
            Condition::CommandSucceeds(e) => {
                let out = self.exec(e, target, timeout_ms, AtLimit::Kill)?;
                Ok(e.succeeded(out.code.unwrap_or(-1)))
            }
            Condition::StepStarted { .. }
            | Condition::StepNotSucceeded { .. }
            | Condition::StepSucceeded { .. }
            | Condition::StepNotStarted { .. } => Ok(self
                .progress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .holds(c)
                .unwrap_or(false)),
        }
    }

    pub(super) fn verify(&self, s: &Step, check: &VerifyCheck) -> Result<Done, Failure> {
        match check {
            VerifyCheck::CopyMatches { from, to } => self.copy_matches(from, to),
            VerifyCheck::PairedFiles {
                dir,
                suffix,
                partner_suffix,
            } => {
                let names = self
                    .roots
                    .names(dir)
                    .map_err(|e| Failure::new(e.to_string()))?;
                let names: std::collections::BTreeSet<&[u8]> =
                    names.iter().map(|n| n.as_bytes()).collect();
                let ours = |n: &&&[u8]| n.ends_with(suffix.as_bytes());
                let lonely: Vec<String> = names
                    .iter()
                    .filter(ours)
                    .filter(|n| {
                        !names.contains([**n, partner_suffix.as_bytes()].concat().as_slice())
                    })
                    .map(|n| crate::tree::Bytes(n.to_vec()).to_string())
                    .collect();
                if lonely.is_empty() {
                    let n = names.iter().filter(ours).count();
                    Ok(format!("{n} file(s) have their {partner_suffix}").into())
                } else {
                    Err(Failure::new(format!(
                        "in {dir}, no {partner_suffix} for: {}",
                        lonely.join(", ")
                    )))
                }
            }
            VerifyCheck::EsePages { path } => self.ese_pages(s, path),
            VerifyCheck::EseLogSet {
                set_logs,
                store_logs,
            } => {
                let generations = |l: &Location| -> Result<Vec<u32>, Failure> {
                    Ok(self
                        .roots
                        .names(l)
                        .map_err(|e| Failure::new(e.to_string()))?
                        .iter()
                        .filter_map(|n| crate::ese::logs::generation(n.as_bytes()))
                        .collect())
                };
                crate::ese::logs::check_set(&generations(set_logs)?, &generations(store_logs)?)
                    .map(Done::from)
                    .map_err(Failure::new)
            }
        }
    }

    /// Every page of the ESE database at `path` has a good checksum. Bad pages fail the step
    /// with `-1018 JET_errReadVerifyFailure`, each with its page number and offset.
    pub(super) fn ese_pages(&self, s: &Step, path: &Location) -> Result<Done, Failure> {
        let file = self
            .roots
            .open_file(path)
            .map_err(|e| Failure::new(e.to_string()))?;
        let len = file
            .metadata()
            .map_err(|e| Failure::new(format!("{path}: {e}")))?
            .len();
        let mut progress = |done: u64| {
            self.observer
                .progress(&s.id, ProgressUnit::Bytes, done, len)
        };
        let report = crate::ese::check(file, Some(len), &mut progress)
            .map_err(|e| Failure::new(format!("{path}: {e}")))?;
        if report.is_clean() {
            return Ok(format!(
                "{path}: {} pages of {} bytes good ({}; {}, {} unused)",
                report.pages,
                report.header.page_size,
                report.header.state,
                report.formats(),
                report.uninitialized
            )
            .into());
        }
        const SHOWN: usize = 10;
        let mut lines: Vec<String> = report
            .bad
            .iter()
            .take(SHOWN)
            .map(|b| b.to_string())
            .collect();
        if report.bad_count > SHOWN as u64 {
            lines.push(format!("... and {} more", report.bad_count - SHOWN as u64));
        }
        Err(Failure::new(format!(
            "{path} is physically corrupt: {} of {} pages fail their checksum; do not keep it as a good backup (`hokan ese-check` lists every page)\n{}",
            report.bad_count,
            report.pages + 2,
            lines.join("\n")
        )))
    }

    /// `to` is a faithful copy of `from`: the same entries, each of the same kind, mode, owner
    /// (when root), mtime, link target, attributes and hard links, and every file with the same
    /// contents. A file this run copied is compared by the digest taken then; a file it linked
    /// from the previous set, by the fingerprint that let it link (the source's size, mtime,
    /// ctime and inode, and the copy's inode), checked again now, as rsync's `--link-dest` does.
    pub(super) fn copy_matches(&self, from: &Location, to: &Location) -> Result<Done, Failure> {
        use rayon::prelude::*;
        let err = |e: fs::FsError| Failure::new(e.to_string());
        let all = crate::tree::Attrs::All;
        let (orig, copy) = rayon::join(|| self.roots.scan(from, all), || self.walk_of_set(to));
        let (orig, copy) = (orig.map_err(err)?, copy.map_err(err)?);
        let sockets = orig
            .iter()
            .filter(|n| n.meta.kind == crate::tree::Kind::Socket)
            .count();
        let orig: BTreeMap<&RelPath, &crate::tree::Node> = orig
            .iter()
            .filter(|n| n.meta.kind != crate::tree::Kind::Socket)
            .map(|n| (&n.path, n))
            .collect();
        let copy: BTreeMap<&RelPath, &crate::tree::Node> =
            copy.iter().map(|n| (&n.path, n)).collect();
        let written = self
            .written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let to_path = RelPath::from(to.path.as_str());
        let owners = crate::tree::meta::is_root();
        let mut problems: Vec<(RelPath, String)> = orig
            .keys()
            .filter(|p| !copy.contains_key(*p))
            .map(|p| {
                (
                    (*p).clone(),
                    format!("{} is missing from the copy", fs::join(to, p)),
                )
            })
            .collect();
        problems.extend(copy.keys().filter(|p| !orig.contains_key(*p)).map(|p| {
            (
                (*p).clone(),
                format!(
                    "{} has no original at {}",
                    fs::join(to, p),
                    fs::join(from, p)
                ),
            )
        }));
        let pairs: Vec<(&RelPath, &crate::tree::Node, &crate::tree::Node)> = orig
            .iter()
            .filter_map(|(p, o)| Some((*p, *o, *copy.get(p)?)))
            .collect();
        // Metadata first; the files whose contents must be compared are hashed after, in
        // batches: on a server, one round trip per batch rather than per file.
        let checked: Vec<Checked<'_>> = pairs
            .par_iter()
            .map(|&(rel, o, c)| {
                // Named only when something differs: most pairs do not.
                let out: Vec<(RelPath, String)> = crate::tree::differences(o, c, owners, false)
                    .into_iter()
                    .map(|d| {
                        let (oname, cname) = (fs::join(from, rel), fs::join(to, rel));
                        (rel.clone(), format!("{cname} {d} as {oname} is"))
                    })
                    .collect();
                let file = o.meta.kind == crate::tree::Kind::File && o.first.is_none();
                if !out.is_empty() || !file {
                    return (out, None);
                }
                let w = written
                    .get(&(to.root.clone(), rel.under(&to_path)))
                    .filter(|w| {
                        (w.ino, w.size, w.mtime) == (c.meta.ino, c.meta.size, c.meta.mtime)
                    });
                match w {
                    Some(w)
                        if w.linked
                            && w.source
                                == crate::tree::Source {
                                    ino: o.meta.ino,
                                    ctime: o.meta.ctime,
                                } =>
                    {
                        (out, None)
                    }
                    _ => (
                        out,
                        Some(Hash {
                            rel,
                            size: o.meta.size,
                            copy_size: c.meta.size,
                            copied: w.map(|w| w.digest.clone()),
                        }),
                    ),
                }
            })
            .collect();
        let mut hashes = Vec::new();
        for (out, hash) in checked {
            problems.extend(out);
            hashes.extend(hash);
        }
        let ask = |l: &Location, files: Vec<(RelPath, u64)>| {
            self.roots
                .digests(l, &files)
                .map_err(|e| Failure::new(e.to_string()))
        };
        let originals = ask(
            from,
            hashes.iter().map(|h| (h.rel.clone(), h.size)).collect(),
        )?;
        let mut copies = ask(
            to,
            hashes
                .iter()
                .filter(|h| h.copied.is_none())
                .map(|h| (h.rel.clone(), h.copy_size))
                .collect(),
        )?
        .into_iter();
        for (h, original) in hashes.iter().zip(originals) {
            let copy = match &h.copied {
                Some(d) => Ok(d.clone()),
                None => copies.next().expect("one digest per file asked"),
            };
            let problem = match (original, copy) {
                (Ok(a), Ok(b)) if a == b => continue,
                (Ok(_), Ok(_)) => format!(
                    "{} differs from {}",
                    fs::join(to, h.rel),
                    fs::join(from, h.rel)
                ),
                (Err(e), _) | (_, Err(e)) => e,
            };
            problems.push((h.rel.clone(), problem));
        }
        problems.sort();
        if problems.is_empty() {
            let files = orig
                .values()
                .filter(|n| n.meta.kind == crate::tree::Kind::File)
                .count();
            let mut summary = format!("{} entries match ({files} file(s))", orig.len());
            if sockets > 0 {
                summary.push_str(&format!("; {sockets} socket(s) in {from} are not copied"));
            }
            Ok(summary.into())
        } else {
            let n = problems.len();
            let shown: Vec<String> = problems.into_iter().take(10).map(|(_, p)| p).collect();
            Err(Failure::new(format!(
                "{n} difference(s) between {from} and {to}: {}",
                shown.join("; ")
            )))
        }
    }

    /// A walk of `l`; kept for the manifest when `l` is in the new set and no step that may
    /// write ran while it was taken.
    pub(super) fn walk_of_set(
        &self,
        l: &Location,
    ) -> Result<Arc<Vec<crate::tree::Node>>, fs::FsError> {
        let before = self.writes.load(Ordering::SeqCst);
        let idle = self.writing.load(Ordering::SeqCst) == 0;
        let nodes = Arc::new(self.roots.scan(l, crate::tree::Attrs::All)?);
        let into_new_set = l.root == "set" && self.spec.set.as_ref().is_some_and(|s| s.writes);
        if into_new_set && idle && self.writes.load(Ordering::SeqCst) == before {
            self.set_walks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((RelPath::from(l.path.as_str()), before, nodes.clone()));
        }
        Ok(nodes)
    }
}

/// What the metadata of one pair says: its differences, and the file to hash when there are
/// none.
type Checked<'a> = (Vec<(RelPath, String)>, Option<Hash<'a>>);

/// A file of [`Executor::copy_matches`] whose contents must be compared.
struct Hash<'a> {
    rel: &'a RelPath,
    /// The original's size, as walked.
    size: u64,
    /// The copy's size, as walked.
    copy_size: u64,
    /// The copy's digest, when this run wrote it and took it then.
    copied: Option<String>,
}
