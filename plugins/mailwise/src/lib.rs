//! Cybozu mailwise: backup, restore, maintenance mode and archive, as its manuals describe them.
//!
//! Sources: the mailwise manuals "Backing up and restoring data" (バックアップと復元) and
//! "Maintenance" (メンテナンスする). Paths are relative to the root `data`, the directory that
//! holds mailwise's `mw/` folder (the install or data directory); backup sets are the root `set`.

use hokan_sdk::prelude::*;
use hokan_sdk::restore_test;
use hokan_sdk::{EntryKind, TimeWindow};
use std::time::Duration;

mod window;

const DATA: Root = Root::new("data");
const SET: Root = Root::new("set");

/// mailwise stops working when its data volume has less than this free (manual: 10 MB).
const MIN_FREE: u64 = 10 * 1024 * 1024;
/// The manual's reference: about 4 h 30 min to archive about 20 GB.
const ARCHIVE_REFERENCE_BYTES: u64 = 20 * 1024 * 1024 * 1024;
const ARCHIVE_REFERENCE_SECS: u64 = 4 * 3600 + 30 * 60;

const BACKUP_REF: &str = "mailwise manual, Backing up and restoring data";
const MAINT_REF: &str = "mailwise manual, Maintenance > Maintenance mode";
const DB_CHECK_REF: &str = "mailwise manual, Maintenance > Periodic database check";

struct Mailwise;

impl Plugin for Mailwise {
    fn describe() -> Description {
        Description {
            name: "mailwise".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            product: "Cybozu mailwise (manuals: backup and restore; maintenance)".into(),
            summary: "Backs up and restores mailwise's data, sets and releases maintenance \
                      mode, and archives old data with mwsave."
                .into(),
            operations: vec![
                operation(
                    "backup",
                    "Copy mw/data, mw/file and every mw/back<N> into a new backup set, in maintenance mode.",
                    SetUse::Writes,
                ),
                operation(
                    "restore",
                    "Put a backup set back onto this running mailwise, keeping the current data as mw/data_bak and mw/file_bak.",
                    SetUse::Reads,
                ),
                operation(
                    "restore-elsewhere",
                    "Put a backup set onto another server where mailwise was freshly installed.",
                    SetUse::Reads,
                ),
                maintenance_operation("maintenance-on", "Set maintenance mode for a daily window."),
                operation(
                    "maintenance-off",
                    "Release maintenance mode (delete mw/data/maint).",
                    SetUse::None,
                ),
                operation(
                    "archive",
                    "Detach old data into a read-only mw/back<N> with mwsave, after a recent backup.",
                    SetUse::Reads,
                ),
                operation(
                    restore_test::OPERATION,
                    "Restore a backup set into a scratch directory beside the sets, never over this mailwise, and check it: every file back as the set's manifest has it, every database with its mirror.",
                    SetUse::Reads,
                ),
            ],
            roots: vec![root_info(
                "data",
                "mailwise's install/data directory: the folder that contains mw/",
                true,
            )],
            parameters: vec![
                param_info(
                    "maintenance_minutes",
                    "maintenance-on without --window: how long the window set from now lasts, in minutes (rounded out to mailwise's 10-minute steps).",
                    Some("60"),
                ),
                param_info(
                    "message",
                    "Message shown to users during maintenance mode [default: one naming the operation].",
                    None,
                ),
                param_info(
                    "maintenance_method",
                    "How to set maintenance mode: `command` (the mapped `maintenance-mode` command) or `manual` (an operator sets it in System settings).",
                    Some("command"),
                ),
                param_info(
                    "restore_archives",
                    "restore-elsewhere: also put the set's mw/back<N> in place.",
                    Some("true"),
                ),
                param_info(
                    "backup_max_age_hours",
                    "archive: the newest backup set must be at most this old.",
                    Some("24"),
                ),
            ],
            commands: vec![
                name_info(
                    "maintenance-mode",
                    "Sets and releases mailwise's maintenance mode: called in the data directory as `on --start HH:MM --end HH:MM --message TEXT`, or `off` (used when deleting mw/data/maint failed). mailwise documents this only in its UI; map a site script that does it, or use maintenance_method = manual.",
                ),
                name_info(
                    "mwsave",
                    "mailwise's archive tool: mwsave.bat (Windows) or ./mwsave (Linux), run in the data directory.",
                ),
            ],
            services: vec![],
            maintenance_markers: vec![MaintenanceMarker {
                path: maint(),
                description: "mailwise is in maintenance mode while this file exists".into(),
            }],
            command_behaviours: vec![
                // Setting maintenance mode makes mailwise write its marker within seconds.
                behaviour("maintenance-mode", &["on"], 0, Duration::from_secs(3))
                    .effect(SimEffect::create_file(maint())),
                behaviour("maintenance-mode", &["off"], 0, Duration::from_secs(3))
                    .effect(SimEffect::remove(maint())),
                // mwsave sets maintenance mode itself and releases it when it is done.
                behaviour("mwsave", &[], 0, Duration::from_secs(600))
                    .effect(SimEffect::create_file(maint()))
                    .effect(SimEffect::remove(maint()))
                    .output("mwsave: archive complete"),
            ],
            roles: vec![role_info(
                "mailwise",
                "the server mailwise is installed on",
                1,
                Some(1),
                vec![],
            )],
            modelled_states: vec![],
            conflicts: vec![
                // "データベースの定期チェック中は、メンテナンスモードに設定されます。... 処理が
                // 終了すると、メンテナンスモードは自動的に解除されます。" The check releases
                // maintenance mode when it ends, whoever set it: every operation that holds
                // maintenance mode must stay clear of it.
                conflict(
                    "db-check",
                    "the periodic database check (corruption check, disk-space check, \
                     optimisation) sets maintenance mode itself for about 30 minutes and \
                     releases it when it ends, in the middle of whatever set it",
                    &[
                        "backup",
                        "restore",
                        "restore-elsewhere",
                        "maintenance-on",
                        "archive",
                    ],
                    Some(DB_CHECK_REF),
                )
                .typical_minutes(30)
                .skipped_in_window(),
            ],
            // Maintenance mode is set in 10-minute steps and repeats daily until released.
            window_rules: WindowRules {
                step_minutes: 10,
                daily: true,
            },
        }
    }

    fn plan(req: Request) -> Result<Plan, PlanError> {
        match req.operation.as_str() {
            "backup" => backup(&req),
            "restore" => restore(&req, false),
            "restore-elsewhere" => restore(&req, true),
            "maintenance-on" => maintenance_on(&req),
            "maintenance-off" => Ok(maintenance_off()),
            "archive" => archive(&req),
            restore_test::OPERATION => restore_test(),
            other => Err(PlanError::UnknownOperation(other.into())),
        }
    }
}

hokan_sdk::export_plugin!(Mailwise);

fn mw(rel: &str) -> Path {
    DATA.join("mw").join(rel)
}

fn maint() -> Path {
    mw("data/maint")
}

/// Where a restore stages the set's copy before swapping it in.
fn staging() -> Path {
    mw("hokan-restore")
}

/// The `mw/back<N>` archives present under `root_dir`, in numeric order.
fn archives(root_dir: &Path) -> Result<Vec<String>, PlanError> {
    Ok(facts::numbered_dirs(root_dir, "back")?
        .into_iter()
        .map(|(_, name)| name)
        .collect())
}

fn require_dir(p: &Path, what: &str) -> Result<(), PlanError> {
    if facts::is_dir(p)? {
        Ok(())
    } else {
        Err(PlanError::Refused(format!(
            "{p} is missing or not a directory: {what}. Check the `data` root of this job."
        )))
    }
}

/// The database files `X.odb` in `dir` without their mirror `X.odb.mrr`. The manual: "データを
/// 書き込む際、2つのファイルに同時に同じ内容を書き込みます。そのため、データベースファイルが破損した場合
/// でも、もう一方のデータベースファイルから復旧できます" (every write goes to both files, so that a
/// damaged one can be repaired from the other).
fn unpaired_databases(dir: &Path) -> Result<Vec<String>, PlanError> {
    let entries = facts::list_dir(dir)?;
    let names: std::collections::BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    Ok(entries
        .iter()
        .filter(|e| e.name.ends_with(".odb"))
        .filter(|e| !names.contains(format!("{}.mrr", e.name).as_str()))
        .map(|e| e.name.clone())
        .collect())
}

/// Refuses to restore from (or archive) databases whose mirrors are missing: mailwise could not
/// repair them from their mirror afterwards.
fn check_mirrors(dir: &Path, what_to_do: &str) -> Result<(), PlanError> {
    let unpaired = unpaired_databases(dir)?;
    if unpaired.is_empty() {
        return Ok(());
    }
    Err(PlanError::Refused(format!(
        "{dir} is inconsistent: {} without its mirror .odb.mrr. Every database file is written \
         twice, so that mailwise can repair one from the other; without the pair it cannot. \
         {what_to_do}",
        unpaired.join(", ")
    )))
}

/// The archive's command file, made in the UI for one run: "指定する日付以前のデータを退避する実行
/// ファイルを作成します" ((data directory)/mwsave.bat on Windows, (data directory)/mwsave on
/// Linux), with the mail space and the date chosen there. It must exist, and be newer than the
/// last archive (the newest mw/back<N>): an older one is the last run's, with its mail space and
/// its date.
fn check_archive_command_file() -> Result<(), PlanError> {
    let mut found = None;
    for name in ["mwsave", "mwsave.bat"] {
        match facts::stat(&DATA.join(name)) {
            Ok(st) if st.kind == EntryKind::File => {
                found = Some((name, st));
                break;
            }
            Ok(_) | Err(FactError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let Some((name, file)) = found else {
        return Err(PlanError::Refused(format!(
            "there is no archive command file ({} or {}): mailwise makes it in System settings \
             > Data management > Archive past data (過去データの退避), for the mail space and the \
             date you choose there. Make it, then run archive again.",
            DATA.join("mwsave"),
            DATA.join("mwsave.bat")
        )));
    };
    if let Some(last) = archives(&mw(""))?.last().map(|n| mw(n)) {
        let done = facts::stat(&last)?;
        if file.mtime_ms <= done.mtime_ms {
            return Err(PlanError::Refused(format!(
                "the archive command file {} is older than the last archive ({last}): it is \
                 the one made for that run, with its mail space and its date. Make a new one in \
                 System settings > Data management > Archive past data (過去データの退避), \
                 choosing the mail space and the date to archive up to, then run archive again.",
                DATA.join(name)
            )));
        }
    }
    Ok(())
}

fn refuse_if_in_maintenance() -> Result<(), PlanError> {
    if facts::exists(&maint())? {
        return Err(PlanError::Refused(format!(
            "mailwise is already in maintenance mode ({} exists): someone may be working on it \
             (upgrade, database check, archive). hokan would release that maintenance mode when \
             it finishes. Wait for that work to end or release it first (maintenance-off).",
            maint()
        )));
    }
    Ok(())
}

/// How long a copy and its verification take per byte, for a run's estimate: 20 MiB/s, well
/// below what a disk does, since the manual gives no figure and a window that is too short lets
/// users back in while data is copied.
const COPY_BYTES_PER_SEC: u64 = 20 * 1024 * 1024;
/// What every run needs besides its copies: setting and releasing maintenance mode, renames.
const RUN_MARGIN_MS: i64 = 10 * 60 * 1000;

/// The estimate of a run that copies and verifies `bytes`.
fn estimate_ms(bytes: u64) -> i64 {
    i64::try_from(bytes / COPY_BYTES_PER_SEC * 1000)
        .unwrap_or(i64::MAX / 2)
        .saturating_add(RUN_MARGIN_MS)
}

/// Sets maintenance mode for the window of a run that takes about `estimate_ms` (see
/// [`window::for_run`]), then waits until mailwise shows it (its marker file exists). Returns
/// the window, which the plan's data steps must run in ([`PlanBuilder::window`]); the plan tells
/// the operator which it is.
fn set_maintenance(
    plan: &mut PlanBuilder,
    req: &Request,
    id: &str,
    estimate_ms: i64,
) -> Result<TimeWindow, PlanError> {
    let planned = window::for_run(req.window, facts::now_ms(), estimate_ms, |ms| {
        facts::site_time(ms).map_err(PlanError::from)
    })?;
    let window = &planned.text();
    // A run with data to move is told its window; maintenance-on is the operator's own.
    if req.operation != "maintenance-on" {
        plan.warn(format!(
            "Maintenance window {window} ({}; about {} of work): users are kept out of mailwise \
         between these times, and no step that reads or changes its data runs outside them.",
            if req.window.is_some() {
                "the window this run was given"
            } else {
                "set from now for the run's estimate, in mailwise's 10-minute steps"
            },
            window::minutes(estimate_ms)
        ));
    }
    let default_message = match req.operation.as_str() {
        "backup" => "mailwise is being backed up. Please try again later.",
        "restore" | "restore-elsewhere" => {
            "mailwise data is being restored. Please try again later."
        }
        _ => "mailwise is under maintenance. Please try again later.",
    };
    let message = req.param("message").unwrap_or(default_message);
    match req.param("maintenance_method").unwrap_or("command") {
        "command" => {
            plan.step(
                id,
                &format!("Set maintenance mode ({window}, repeated daily until released)"),
                Action::exec_in(
                    DATA.name(),
                    "maintenance-mode",
                    [
                        "on".to_string(),
                        "--start".into(),
                        planned.start.clone(),
                        "--end".into(),
                        planned.end.clone(),
                        "--message".into(),
                        message.into(),
                    ],
                ),
            )
            .timeout(Duration::from_secs(120));
        }
        "manual" => {
            plan.step(
                id,
                "Set maintenance mode in mailwise's System settings",
                Action::manual(
                    &format!(
                        "In mailwise, open System settings (gear icon, top right) > General > \
                         Maintenance mode. Set the time to {window} and the message to \
                         \"{message}\", then save. Users lose access during that window."
                    ),
                    Some(MAINT_REF),
                ),
            );
        }
        other => {
            return Err(PlanError::BadParameter(format!(
                "maintenance_method must be `command` or `manual`, not `{other}`"
            )));
        }
    }
    plan.step(
        &format!("{id}-confirmed"),
        "Wait until mailwise is in maintenance mode (mw/data/maint exists)",
        Action::wait_until(Condition::exists(maint()), Duration::from_secs(2)),
    )
    .timeout(Duration::from_secs(300));
    Ok(planned.bounds)
}

/// Releases maintenance mode whatever happened: deletes the marker (as the manual allows), and
/// if that failed, releases it the way it was set.
fn release_maintenance_in_cleanup(plan: &mut PlanBuilder, req: &Request) {
    plan.cleanup(
        "maintenance-off",
        "Release maintenance mode (delete mw/data/maint)",
        Action::remove(maint()),
    )
    .retries(2);
    if req.param("maintenance_method") == Some("manual") {
        plan.cleanup(
            "maintenance-off-by-hand",
            "If mw/data/maint could not be deleted, release maintenance mode by hand",
            Action::manual(
                "hokan could not delete mw/data/maint. In mailwise, open System settings > \
                 General > Maintenance mode and turn it off, then check users can log in.",
                Some(MAINT_REF),
            ),
        )
        .when(Condition::exists(maint()));
    } else {
        plan.cleanup(
            "maintenance-off-command",
            "If mw/data/maint could not be deleted, release maintenance mode with the command",
            Action::exec_in(DATA.name(), "maintenance-mode", ["off"]),
        )
        .when(Condition::exists(maint()))
        .timeout(Duration::from_secs(120));
    }
    plan.invariant(
        "maintenance-released",
        "mailwise is not left in maintenance mode",
        Condition::absent(maint()),
    );
}

fn backup(req: &Request) -> Result<Plan, PlanError> {
    let mut plan = PlanBuilder::new();
    // 1. Check the file layout in use.
    require_dir(&mw("data"), "mailwise's database directory")?;
    require_dir(
        &mw("file"),
        "mailwise's attachment and mail-source directory",
    )?;
    // A missing mirror is no reason not to back up: it is when the databases are damaged that
    // a backup matters most, and nothing in the manual makes it one. The operator hears it
    // loudly, at plan time and, through the check steps below, as a run that needs attention.
    let unpaired = unpaired_databases(&mw("data"))?;
    if !unpaired.is_empty() {
        plan.warn(format!(
            "DAMAGED DATABASES: {} in mw/data has no mirror .odb.mrr. mailwise writes every \
             database twice so that it can repair one from the other; this backup keeps what \
             there is, but a restore of it will refuse until the pair is whole. Run mailwise's \
             database check now, and contact Cybozu support if the mirror does not come back.",
            unpaired.join(", ")
        ));
    }
    // "バックアップ作業などを行うときは、必ず、手動でメンテナンスモードを設定してください": an
    // operator may have set maintenance mode for their own session and back up inside it. The
    // backup then neither sets it nor releases it: the window is theirs.
    let operator_session = facts::exists(&maint())?;
    let backs = archives(&DATA.join("mw"))?;
    // What the backup copies: files the newest set holds unchanged are linked, not copied.
    // Sizes come from the site: saturate rather than wrap, so a huge one can only refuse.
    let mut total =
        facts::backup_size(&mw("data"))?.saturating_add(facts::backup_size(&mw("file"))?);
    for b in &backs {
        total = total.saturating_add(facts::backup_size(&mw(b))?);
    }
    let needed = total.saturating_add(MIN_FREE);
    let free = facts::free_space(SET.name())?;
    if free < needed {
        return Err(PlanError::Refused(format!(
            "the backup set's volume has {free} bytes free; this backup needs {needed} \
             ({total} to copy, the files the newest set does not hold unchanged, plus a 10 MB \
             margin). Free space on the backup medium or point \
             the job's backup root elsewhere."
        )));
    }
    plan.step(
        "check-space",
        "Check the backup medium still has room for the data",
        Action::assert(
            Condition::free_space_at_least(SET.name(), needed),
            "the backup medium has too little free space for this backup",
        ),
    );
    // Checked again at run time, but a broken pair does not stop the backup: the run goes on
    // and ends needing attention, naming this step.
    plan.step(
        "check-mirrors",
        "Check every database file X.odb has its mirror X.odb.mrr",
        Action::verify_pairs(mw("data"), ".odb", ".mrr"),
    )
    .continue_on_error();

    // 2. Set maintenance mode, for a window that fits the copies, unless the operator's own is
    // set.
    let window = if operator_session {
        plan.warn(format!(
            "mailwise is already in maintenance mode ({} exists): this backup runs inside that \
             maintenance session and leaves it set, as it is not hokan's. Make sure its window \
             covers the backup (about {}), and release it when your work is done.",
            maint(),
            window::minutes(estimate_ms(total))
        ));
        None
    } else {
        Some(set_maintenance(
            &mut plan,
            req,
            "maintenance-on",
            estimate_ms(total),
        )?)
    };

    // 3. Copy mw/data, mw/file and every mw/back<N>.
    let mut copies = vec![
        ("data".to_string(), "databases"),
        ("file".to_string(), "attachments and mail sources"),
    ];
    copies.extend(backs.iter().map(|b| (b.clone(), "archived data")));
    for (dir, what) in &copies {
        plan.step(
            &format!("copy-{dir}"),
            &format!("Copy mw/{dir} ({what}) to the backup set"),
            Action::copy_tree(mw(dir), SET.join(dir)),
        );
    }
    for (dir, _) in &copies {
        plan.step(
            &format!("verify-{dir}"),
            &format!("Verify the copy of mw/{dir}"),
            Action::verify_copy(mw(dir), SET.join(dir)),
        );
    }
    plan.step(
        "verify-set-mirrors",
        "Check the copied databases are complete pairs (X.odb with X.odb.mrr)",
        Action::verify_pairs(SET.join("data"), ".odb", ".mrr"),
    )
    .continue_on_error();
    if let Some(w) = window {
        plan.window(w, "copy-data", "verify-set-mirrors");
    }

    // 4. Release maintenance mode, whatever happened, when this run set it.
    if !operator_session {
        release_maintenance_in_cleanup(&mut plan, req);
    }
    plan.invariant(
        "data-volume-usable",
        "mailwise's data volume keeps at least 10 MB free",
        Condition::free_space_at_least(DATA.name(), MIN_FREE),
    );
    plan.warn(
        "mailwise receives no mail while in maintenance mode. To keep mail that arrives meanwhile, \
         the manual suggests an alias on the mail server that also delivers to a second mailbox.",
    );
    Ok(plan.build())
}

/// A restore test: the whole set restored into the scratch directory, then the check a restore
/// relies on, that every database came back with its mirror (see [`unpaired_databases`] for the
/// manual's reason). The host checks the rest against the set's manifest.
fn restore_test() -> Result<Plan, PlanError> {
    let mut plan = PlanBuilder::new();
    let restored = restore_test::restore_set(&mut plan)?;
    if !restored.iter().any(|n| n == "data") {
        return Err(PlanError::Refused(
            "the backup set has no data directory (mw/data): it is no mailwise backup".into(),
        ));
    }
    plan.step(
        "check-mirrors",
        "Check every restored database X.odb has its mirror X.odb.mrr",
        Action::verify_pairs(restore_test::SCRATCH.join("data"), ".odb", ".mrr"),
    );
    Ok(plan.build())
}

fn restore(req: &Request, elsewhere: bool) -> Result<Plan, PlanError> {
    let mut plan = PlanBuilder::new();
    let set_id = req.set_id.as_deref().unwrap_or("(unnamed)");
    require_dir(&SET.join("data"), "the backup set has no data directory")?;
    require_dir(&SET.join("file"), "the backup set has no file directory")?;
    check_mirrors(
        &SET.join("data"),
        "Restore from an older set whose pairs are whole (`hokan sets` lists them; name one with \
         --set), or, if this set holds the only copy of the data you need, copy its mw/data \
         aside and contact Cybozu support before restoring it by hand.",
    )?;
    require_dir(
        &mw("data"),
        "mailwise's database directory; install mailwise on this server first",
    )?;
    // A fresh install may have no mw/file yet: then there is nothing of it to keep.
    let current: Vec<&str> = if facts::exists(&mw("file"))? {
        vec!["data", "file"]
    } else {
        vec!["data"]
    };
    if facts::exists(&staging())? {
        return Err(PlanError::Refused(format!(
            "{} exists: an earlier restore stopped before its cleanup ran. Check that mw/data \
             and mw/file are in place (if not, rename mw/data_bak and mw/file_bak back), then \
             delete it (it holds only copies of a backup set) and plan again.",
            staging()
        )));
    }
    for dir in ["data_bak", "file_bak"] {
        if facts::exists(&mw(dir))? {
            return Err(PlanError::Refused(format!(
                "{} already exists (from an earlier restore?). hokan never overwrites data: move \
                 or delete it, after checking it is not needed, then plan again.",
                mw(dir)
            )));
        }
    }
    let restore_archives = elsewhere && req.flag("restore_archives", true)?;
    let backs = if restore_archives {
        archives(&SET.path())?
    } else {
        Vec::new()
    };
    for b in &backs {
        if facts::exists(&mw(b))? {
            return Err(PlanError::Refused(format!(
                "{} already exists on this server; archived data is read-only and is never \
                 overwritten. Remove it from the plan with restore_archives = false or move it away.",
                mw(b)
            )));
        }
    }
    let mut incoming =
        facts::tree_size(&SET.join("data"))?.saturating_add(facts::tree_size(&SET.join("file"))?);
    for b in &backs {
        incoming = incoming.saturating_add(facts::tree_size(&SET.join(b))?);
    }
    let needed = incoming.saturating_add(MIN_FREE);
    let free = facts::free_space(DATA.name())?;
    if free < needed {
        return Err(PlanError::Refused(format!(
            "the data volume has {free} bytes free; the restore needs {needed} (the set's \
             {incoming} bytes while the current data is kept, plus the 10 MB mailwise needs)."
        )));
    }

    if elsewhere {
        // 1. Install mailwise on the other server.
        plan.step(
            "installed",
            "Confirm mailwise is installed on this server",
            Action::manual(
                "Install mailwise on this server (the same version as the backed-up one) and \
                 check that it starts, before the data is put in place.",
                Some(BACKUP_REF),
            ),
        );
    }
    // The restore is for "サーバーが異常終了した場合": a crash during the database check or an
    // archive may have left maintenance mode set. Users must not reach damaged data, so the
    // restore goes on inside it: it sets the window to cover the run and releases it at the end.
    if facts::exists(&maint())? {
        plan.warn(format!(
            "mailwise is already in maintenance mode ({} exists), perhaps left by a server that \
             stopped during the database check or an archive. The restore keeps users out: it \
             sets the maintenance window to cover the run, and releases maintenance mode when \
             it ends.",
            maint()
        ));
    }
    plan.step(
        "check-space",
        "Check the data volume has room for the restored data",
        Action::assert(
            Condition::free_space_at_least(DATA.name(), needed),
            "the data volume has too little free space for this restore",
        ),
    );
    // Set maintenance mode, for a window that fits the copies (and, on another server, the
    // operator's confirmation that mailwise is installed there, which comes first).
    let confirm_ms = if elsewhere { 60 * 60 * 1000 } else { 0 };
    let window = set_maintenance(
        &mut plan,
        req,
        "maintenance-on",
        estimate_ms(incoming).saturating_add(confirm_ms),
    )?;
    // The manual renames the current data to *_bak and then copies the set into place. hokan
    // copies into a staging directory first and verifies it there, so a failed or interrupted
    // copy never leaves half a database where mailwise looks; the swap is then a few renames,
    // and the current data is never overwritten.
    let mut placed: Vec<String> = vec!["data".into(), "file".into()];
    placed.extend(backs.iter().cloned());
    for dir in &placed {
        plan.step(
            &format!("stage-{dir}"),
            &format!("Copy the set's {dir} to {}", staging().join(dir)),
            Action::copy_tree(SET.join(dir), staging().join(dir)),
        );
        plan.step(
            &format!("verify-{dir}"),
            &format!("Verify the staged {dir} equals the set's copy"),
            Action::verify_copy(SET.join(dir), staging().join(dir)),
        );
    }
    // Archives first: they are new directories, taken back out if the data swap fails.
    for b in &backs {
        plan.step(
            &format!("place-{b}"),
            &format!("Put the staged {b} in place as mw/{b}"),
            Action::rename(staging().join(b), mw(b)),
        );
    }
    for dir in &current {
        plan.step(
            &format!("keep-{dir}"),
            &format!("Keep the current mw/{dir} as mw/{dir}_bak"),
            Action::rename(mw(dir), mw(&format!("{dir}_bak"))),
        );
    }
    for dir in ["data", "file"] {
        plan.step(
            &format!("place-{dir}"),
            &format!("Put the staged {dir} in place as mw/{dir}"),
            Action::rename(staging().join(dir), mw(dir)),
        );
    }
    plan.step(
        "remove-staging",
        "Remove the (now empty) staging directory",
        Action::remove(staging()),
    );
    // Release maintenance mode: the restored data may carry the maint file.
    plan.step(
        "release-maintenance",
        "Release maintenance mode (delete mw/data/maint; the restored data may carry it)",
        Action::remove(maint()),
    );
    plan.window(
        window,
        &format!("stage-{}", placed[0]),
        "release-maintenance",
    );
    // The kept data was renamed while in maintenance mode, so it holds the maint file: without
    // this, putting mw/data_bak back (the advice below) would leave mailwise in maintenance.
    // The restore itself is done by then: a failure here needs a person, not a rollback.
    plan.step(
        "unmark-kept-data",
        "Take the maintenance file out of the kept data (mw/data_bak/maint)",
        Action::remove(mw("data_bak").join("maint")),
    )
    .when(Condition::exists(mw("data_bak").join("maint")))
    .continue_on_error();
    plan.step(
        "check-in-browser",
        "Check the restored mailwise in a browser",
        Action::manual(
            "Open mailwise in a browser. Check that the restored mail can be read, and that data \
             can be added and changed. If it cannot, the previous data is still in mw/data_bak \
             and mw/file_bak: set maintenance mode, move mw/data and mw/file aside, rename \
             mw/data_bak and mw/file_bak back to mw/data and mw/file, then release maintenance \
             mode (delete mw/data/maint).",
            Some(BACKUP_REF),
        ),
    );
    // When anything failed before both directories were in place, put the previous data back.
    // Only a stop between the two `place-` renames leaves the restored mw/data without any
    // mw/file: take the restored mw/data back out first, so restored and previous never mix.
    plan.cleanup(
        "unplace-data",
        "If only mw/data was put in place, take it back out to the staging directory",
        Action::rename(mw("data"), staging().join("data")),
    )
    .when(Condition::absent(mw("file")))
    .when(Condition::exists(mw("data")))
    .when(Condition::exists(mw("data_bak")));
    for dir in &current {
        plan.cleanup(
            &format!("put-back-{dir}"),
            &format!("If mw/{dir} is not in place, put mw/{dir}_bak back"),
            Action::rename(mw(&format!("{dir}_bak")), mw(dir)),
        )
        .when(Condition::absent(mw(dir)));
    }
    for b in &backs {
        plan.cleanup(
            &format!("unplace-{b}"),
            &format!("If the restored data is not in place, take mw/{b} back out"),
            Action::rename(mw(b), staging().join(b)),
        )
        .when(Condition::exists(staging().join("data")))
        .when(Condition::exists(mw(b)));
    }
    plan.cleanup(
        "discard-staging",
        "Remove the staging directory (copies of the set, which keeps its own)",
        Action::remove(staging()),
    );
    release_maintenance_in_cleanup(&mut plan, req);
    plan.invariant(
        "data-in-place",
        "mailwise has a database directory after the restore, restored or previous",
        Condition::exists(mw("data")),
    );
    if current.contains(&"file") {
        plan.invariant(
            "files-in-place",
            "mailwise has its attachment directory after the restore, restored or previous",
            Condition::exists(mw("file")),
        );
    }
    plan.invariant(
        "no-staging-left",
        "no staged copy is left in mailwise's directory",
        Condition::absent(staging()),
    );
    plan.invariant(
        "data-volume-usable",
        "mailwise's data volume keeps at least 10 MB free",
        Condition::free_space_at_least(DATA.name(), MIN_FREE),
    );
    plan.warn(format!(
        "Everything changed in mailwise after backup set {set_id} was taken is lost by this restore \
         (the current data is kept as mw/data_bak and mw/file_bak)."
    ));
    Ok(plan.build())
}

fn maintenance_on(req: &Request) -> Result<Plan, PlanError> {
    let mut plan = PlanBuilder::new();
    refuse_if_in_maintenance()?;
    // The operator's own session: the window given (--window), or from now for
    // `maintenance_minutes`, in mailwise's steps.
    let minutes: i64 = req
        .param("maintenance_minutes")
        .unwrap_or("60")
        .parse()
        .ok()
        .filter(|m| (10..24 * 60).contains(m))
        .ok_or_else(|| {
            PlanError::BadParameter(
                "maintenance_minutes must be a whole number of minutes, from 10 to 1439".into(),
            )
        })?;
    let session_ms = if req.window.is_some() {
        0
    } else {
        minutes * 60_000
    };
    set_maintenance(&mut plan, req, "maintenance-on", session_ms)?;
    plan.warn(
        "Maintenance mode repeats every day in its window until it is released \
         (operation maintenance-off). Users cannot use mailwise meanwhile.",
    );
    Ok(plan.build())
}

fn maintenance_off() -> Plan {
    let mut plan = PlanBuilder::new();
    plan.step(
        "maintenance-off",
        "Release maintenance mode (delete mw/data/maint)",
        Action::remove(maint()),
    );
    plan.invariant(
        "maintenance-released",
        "mailwise is not in maintenance mode",
        Condition::absent(maint()),
    );
    plan.build()
}

/// Parses a set id of the form `20261121T021000Z` into milliseconds since the epoch.
fn set_time_ms(id: &str) -> Option<i64> {
    let b = id.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| id.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    // Days from civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000)
}

fn archive(req: &Request) -> Result<Plan, PlanError> {
    let mut plan = PlanBuilder::new();
    // Take a backup first: archived data cannot be restored.
    let max_age_h: i64 = req
        .param("backup_max_age_hours")
        .unwrap_or("24")
        .parse()
        .map_err(|_| {
            PlanError::BadParameter("backup_max_age_hours must be a whole number of hours".into())
        })?;
    let set_id = req.set_id.as_deref().ok_or_else(|| {
        PlanError::Refused(
            "archive needs a backup of this mailwise first: run the backup operation".into(),
        )
    })?;
    let taken = set_time_ms(set_id).ok_or_else(|| {
        PlanError::Refused(format!("cannot tell when backup set `{set_id}` was taken"))
    })?;
    let age_h = (facts::now_ms() - taken) / 3_600_000;
    if age_h > max_age_h {
        return Err(PlanError::Refused(format!(
            "the newest backup set ({set_id}) is {age_h} h old; archive needs one at most \
             {max_age_h} h old, because archived data cannot be restored. Run backup first."
        )));
    }
    require_dir(&mw("data"), "mailwise's database directory")?;
    check_mirrors(
        &mw("data"),
        "Archived data cannot be restored, so do not archive damaged databases: run mailwise's \
         database check, and archive once the pairs are whole.",
    )?;
    refuse_if_in_maintenance()?;
    check_archive_command_file()?;
    // Free space for both of the manual's rules at once: "次の両方の空き容量があるか確認してく
    // ださい。(データディレクトリ)/mw/dataフォルダ容量の2倍の空き容量 / (データディレクトリ)/mw/file/
    // すべてのws[数字]フォルダ容量の合計値分の空き容量" (check that there is free space for both:
    // twice mw/data, and the total of every mw/file/ws<N>).
    let data_size = facts::tree_size(&mw("data"))?;
    let mut ws_total = 0u64;
    for (_, ws) in facts::numbered_dirs(&mw("file"), "ws")? {
        ws_total = ws_total.saturating_add(facts::tree_size(&mw("file").join(&ws))?);
    }
    let free = facts::free_space(DATA.name())?;
    let need_db = data_size.saturating_mul(2);
    // Both of them, and the 10 MB mailwise needs to keep working at the end of it:
    // "DiskFreeSpaceの値が10MBを切ると、安全のためメールワイズが動作しなくなります" (below 10 MB
    // free, mailwise stops working). mwsave runs for hours and must not be interrupted, so the
    // whole of it is asked for before it starts.
    let need = need_db.saturating_add(ws_total).saturating_add(MIN_FREE);
    if free < need {
        return Err(PlanError::Refused(format!(
            "archive needs {need} bytes free on the data volume, the manual's two rules together \
             plus the 10 MB mailwise needs to keep working: twice mw/data ({need_db} bytes), \
             plus the mail spaces mw/file/ws<N> ({ws_total} bytes), plus {MIN_FREE} bytes; the \
             data volume has {free}. Free space on the data volume first."
        )));
    }
    plan.step(
        "check-space",
        "Check free space: 2 x mw/data, plus the sum of mw/file/ws<N>, plus 10 MB",
        Action::assert(
            Condition::free_space_at_least(DATA.name(), need),
            "too little free space on the data volume for mwsave",
        ),
    );
    let estimate =
        (data_size + ws_total).saturating_mul(ARCHIVE_REFERENCE_SECS) / ARCHIVE_REFERENCE_BYTES;
    // "退避処理の実行中は、途中でサーバーマシンが強制終了しないように注意してください。" (while
    // the archive runs, take care that the server is not forced to stop): mwsave is never
    // killed. Past three times the estimate (an hour at least) hokan reports that it still
    // runs, and keeps waiting; only the operator may decide to stop it.
    let timeout = Duration::from_secs((estimate * 3).max(3600));
    plan.step(
        "mwsave",
        "Archive old data with mwsave (sets maintenance mode and stops receiving while it runs; never killed)",
        Action::exec_in(DATA.name(), "mwsave", Vec::<String>::new()),
    )
    .timeout(timeout)
    .no_kill();
    plan.step(
        "mwsave-released",
        "Check mwsave released maintenance mode",
        Action::assert(
            Condition::absent(maint()),
            "mwsave left mailwise in maintenance mode: read mw/log, then release it with maintenance-off",
        ),
    );
    plan.invariant(
        "data-volume-usable",
        "mailwise's data volume keeps at least 10 MB free",
        Condition::free_space_at_least(DATA.name(), MIN_FREE),
    );
    plan.warn(format!(
        "Do not shut down the server while mwsave runs. The manual's reference is about 4 h 30 min \
         for 20 GB; for this data expect {}. Back up the new mw/back<N> once afterwards.",
        match estimate {
            0..60 => "under a minute".to_string(),
            60..7200 => format!("about {} min", estimate.div_ceil(60)),
            _ => format!("about {:.1} h", estimate as f64 / 3600.0),
        }
    ));
    Ok(plan.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ids_are_read_as_utc_times() {
        // 2026-11-21T02:10:00Z
        assert_eq!(set_time_ms("20261121T021000Z"), Some(1_795_227_000_000));
        assert_eq!(set_time_ms("19700101T000000Z"), Some(0));
        assert_eq!(set_time_ms("20240229T120000Z"), Some(1_709_208_000_000));
        assert_eq!(set_time_ms("latest"), None);
        assert_eq!(set_time_ms("2026-11-21T0210Z"), None);
    }
}
