//! Microsoft Exchange Server 4.0–5.5: backups of the information store in the four modes of
//! its backup API (full, copy, incremental, differential), online or offline; restore; the
//! last-resort repair; and the advice checks, as Microsoft's KB 271987 ("Exchange Server
//! database architecture and database engine") describes them.
//!
//! Roots: `databases` holds `Priv.edb`, `Pub.edb` and their `.pat` files; `logs` holds
//! `Edb.log`, the full logs `Edb<gen>.log` and the checkpoint `Edb.chk` (Exchange 5.5 keeps the
//! checkpoint in its working path, which is the logs directory unless the site moved it). Sets
//! hold `databases/` and `logs/`.

use hokan_sdk::prelude::*;
use hokan_sdk::restore_test;
use std::time::Duration;

pub mod store;

use store::Store;

const DATABASES: Root = Root::new("databases");
const LOGS: Root = Root::new("logs");
const SET: Root = Root::new("set");
/// On the Exchange server, where the backup program writes when the set is not there.
const DUMP: Root = Root::new("dump");
/// The mapped service of the information store (MSExchangeIS).
const STORE: &str = "information-store";
const KB: &str = "Microsoft KB 271987, Exchange Server database architecture";
/// Largest checkpoint file read (ESE's is 4 or 8 KiB).
const MAX_CHECKPOINT: u32 = 64 * 1024;
/// How long a backup program, a copy of the databases or a repair may take.
const LONG: Duration = Duration::from_secs(12 * 3600);
/// How long the store may take to stop or start (it replays logs when it starts).
const SERVICE: Duration = Duration::from_secs(3600);

struct Exchange;

/// A backup mode of the store's backup API.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Full,
    Copy,
    Incremental,
    Differential,
}

impl Mode {
    const ALL: [Mode; 4] = [
        Mode::Full,
        Mode::Copy,
        Mode::Incremental,
        Mode::Differential,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Copy => "copy",
            Mode::Incremental => "incremental",
            Mode::Differential => "differential",
        }
    }

    /// The backup type as Windows NT Backup names it (`ntbackup /t`).
    fn ntbackup_type(self) -> &'static str {
        match self {
            Mode::Full => "normal",
            other => other.name(),
        }
    }

    /// The manual: full and copy copy the databases; so does differential ("the database is
    /// copied to tape"); incremental copies only logs.
    fn copies_databases(self) -> bool {
        self != Mode::Incremental
    }

    /// Full and incremental delete the logs before the checkpoint; copy and differential
    /// delete none.
    fn truncates(self) -> bool {
        matches!(self, Mode::Full | Mode::Incremental)
    }

    /// Full keeps only the logs from the checkpoint on; the others every log.
    fn keeps_old_logs(self) -> bool {
        self != Mode::Full
    }

    /// Incremental and differential also back up the new `Edb.log`.
    fn keeps_new_current(self) -> bool {
        matches!(self, Mode::Incremental | Mode::Differential)
    }

    fn description(self) -> &'static str {
        match self {
            Mode::Full => {
                "Back up the databases, .pat files and the logs from the checkpoint on; then the logs before the checkpoint are deleted."
            }
            Mode::Copy => {
                "Back up the databases, .pat files and every log; no log is deleted (does not disturb a full/incremental rotation)."
            }
            Mode::Incremental => {
                "Back up every log and the new Edb.log, and the .pat files; then the logs before the checkpoint are deleted."
            }
            Mode::Differential => {
                "Back up the databases, .pat files, every log and the new Edb.log; no log is deleted."
            }
        }
    }
}

impl Plugin for Exchange {
    fn describe() -> Description {
        let mut operations: Vec<_> = Mode::ALL
            .iter()
            .map(|m| {
                operation(
                    &format!("backup-{}", m.name()),
                    m.description(),
                    SetUse::Writes,
                )
            })
            .collect();
        operations.extend([
            operation(
                "restore",
                "Put a set's databases, .pat files and logs in place (keeping what was there), remove the stale checkpoint, fix the store with Isinteg after an offline set (asked first), and start the store so it replays the logs.",
                SetUse::Reads,
            ),
            operation(
                restore_test::OPERATION,
                "Restore a backup set into a scratch directory beside the sets, never over the store, and check it: every file back as the set's manifest has it, every page of every restored database with a good checksum.",
                SetUse::Reads,
            ),
            operation(
                "repair",
                "The last resort when no backup can be restored: Eseutil /p (drops bad pages), Eseutil /d, Isinteg -fix, behind an operator's confirmation.",
                SetUse::None,
            ),
            operation(
                "lint",
                "Check the store against the manual's advice (logs on their own volume, circular logging off) and report warnings; changes nothing.",
                SetUse::None,
            ),
        ]);
        Description {
            name: "exchange".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            product: "Microsoft Exchange Server 4.0-5.5 information store (KB 271987)".into(),
            summary: "Backs up the private and public information stores online (through the \
                      site's backup program) or offline, checks every database page's checksum, \
                      restores, repairs as a last resort, and checks the store's layout."
                .into(),
            operations,
            roots: vec![
                root_info(
                    "databases",
                    "the directory of Priv.edb and Pub.edb (and their .pat files), e.g. exchsrvr\\mdbdata",
                    true,
                ),
                root_info(
                    "logs",
                    "the directory of the transaction logs Edb.log, Edb<gen>.log and the checkpoint Edb.chk",
                    true,
                ),
                optional_root_info(
                    "dump",
                    "on the Exchange server, a directory the online backup program writes \
                     into when the store is on a server reached over ssh (the backup set \
                     is on the hokan host): what it writes is copied into the set, then \
                     removed. Without it the program writes straight into the set",
                    true,
                ),
            ],
            parameters: vec![
                param_info(
                    "mode",
                    "`online`: the site's backup program copies through the store's backup API while the store runs (the manual's recommendation); `offline`: hokan stops the store, copies the files and starts it again (discouraged).",
                    Some("online"),
                ),
                param_info(
                    "circular_logging",
                    "Whether the store has circular logging on (`on`, Exchange 5.5's default, or `off`); hokan cannot read the registry, so the site states it.",
                    Some("on"),
                ),
                param_info(
                    "database",
                    "repair: the database to repair, `priv` or `pub`.",
                    None,
                ),
            ],
            commands: vec![
                name_info(
                    "backup-program",
                    "The site's online backup program, e.g. a wrapper around ntbackup: called in the new set's directory as `backup-program <normal|copy|incremental|differential>`; it backs up the information store through its backup API in that mode and leaves the files it backed up there, databases and .pat files in databases/, logs in logs/.",
                ),
                name_info(
                    "eseutil",
                    "Eseutil.exe (engine-level repair and defragmentation), called with the store stopped.",
                ),
                name_info(
                    "isinteg",
                    "Isinteg.exe (information-store integrity checker), called with the store stopped.",
                ),
            ],
            services: vec![name_info(
                STORE,
                "the Microsoft Exchange Information Store service (MSExchangeIS)",
            )],
            maintenance_markers: vec![],
            command_behaviours: vec![
                behaviour("eseutil", &[], 0, Duration::from_secs(1800))
                    .output("Operation completed successfully."),
                behaviour("isinteg", &[], 0, Duration::from_secs(900))
                    .output("Isinteg: 0 error(s), 0 warning(s), 0 fix(es)"),
            ],
            roles: vec![role_info(
                "exchange",
                "the Exchange Server computer that runs the information store",
                1,
                Some(1),
                vec![],
            )],
            modelled_states: vec![],
            conflicts: vec![],
            window_rules: ANY_WINDOW,
        }
    }

    fn plan(req: Request) -> Result<Plan, PlanError> {
        let op = req.operation.as_str();
        if let Some(mode) = op
            .strip_prefix("backup-")
            .and_then(|m| Mode::ALL.into_iter().find(|x| x.name() == m))
        {
            return backup(&req, mode);
        }
        match op {
            "restore" => restore(&req),
            "repair" => repair(&req),
            restore_test::OPERATION => restore_test(),
            "lint" => lint(&req),
            other => Err(PlanError::UnknownOperation(other.into())),
        }
    }
}

hokan_sdk::export_plugin!(Exchange);

/// The server every step runs on: the job's Exchange server.
fn server() -> Result<String, PlanError> {
    facts::topology()
        .job_server_list()
        .first()
        .map(|s| s.name.clone())
        .ok_or_else(|| PlanError::BadParameter("the job has no Exchange server".into()))
}

fn names(p: &Path) -> Result<Vec<String>, PlanError> {
    Ok(facts::list_dir(p)?.into_iter().map(|e| e.name).collect())
}

/// The store as the facts show it, and the checkpoint generation from `Edb.chk`.
fn read_store() -> Result<(Store, u32), PlanError> {
    let dbs = names(&DATABASES.path())?;
    let logs = names(&LOGS.path())?;
    let store = Store::from_names(
        dbs.iter().map(String::as_str),
        logs.iter().map(String::as_str),
    );
    if store.databases.is_empty() {
        return Err(PlanError::Refused(format!(
            "there is no Priv.edb or Pub.edb in {}: check the job's `databases` root (Exchange \
             5.5 keeps them in exchsrvr\\mdbdata unless moved with the Performance Optimizer).",
            DATABASES.path()
        )));
    }
    let Some(chk) = store.checkpoint.clone() else {
        return Err(PlanError::Refused(format!(
            "there is no Edb.chk in {}: without the checkpoint hokan cannot tell the logs already \
             written to the databases from those still needed. Check the job's `logs` root; if \
             the store keeps its checkpoint elsewhere, grant that directory as `logs`.",
            LOGS.path()
        )));
    };
    let bytes = facts::read_bytes(&LOGS.join(&chk), MAX_CHECKPOINT)?;
    let checkpoint = store::checkpoint_generation(&bytes).map_err(|why| {
        PlanError::Refused(format!(
            "{} cannot be read: {why}. Do not back up or delete logs until the store has been \
             started and stopped cleanly (it rewrites the checkpoint).",
            LOGS.join(&chk)
        ))
    })?;
    let gaps = store.gaps();
    if !gaps.is_empty() {
        let list: Vec<String> = gaps.iter().map(|g| store::log_name(*g)).collect();
        return Err(PlanError::Refused(format!(
            "log generations are missing in {}: {}. Logs replay only in sequence, so no backup \
             can restore past the gap. Find the missing logs (or take an offline copy of the \
             databases after a clean shutdown) before backing up.",
            LOGS.path(),
            list.join(", ")
        )));
    }
    Ok((store, checkpoint))
}

fn circular_logging(req: &Request) -> Result<bool, PlanError> {
    match req.param("circular_logging").unwrap_or("on") {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(PlanError::BadParameter(format!(
            "circular_logging must be `on` or `off`, not `{other}`"
        ))),
    }
}

/// The reason, in the manual's terms, why circular logging defeats restores.
const CIRCULAR_WHY: &str = "with circular logging on, the store overwrites its logs once they \
     are written to the databases, so the logs a restore would replay are gone: a restore reaches \
     only the last full backup, and everything since is lost";

fn same_volume_warning() -> Result<Option<String>, PlanError> {
    Ok(facts::same_volume(DATABASES.name(), LOGS.name())?.then(|| {
        "The transaction logs are on the same volume as the databases. The logs hold what the \
         databases do not yet have; one disk failure now takes both, and a restore can then only \
         reach the last backup. The manual advises a dedicated (fast) disk for the logs."
            .to_string()
    }))
}

fn backup(req: &Request, mode: Mode) -> Result<Plan, PlanError> {
    let online = match req.param("mode").unwrap_or("online") {
        "online" => true,
        "offline" => false,
        other => {
            return Err(PlanError::BadParameter(format!(
                "mode must be `online` or `offline`, not `{other}`"
            )));
        }
    };
    let circular = circular_logging(req)?;
    // With circular logging on, "ログ ファイルを再生できないため、復元できるのは、最後に実行
    // した完全バックアップの状態までです" (the logs cannot be replayed, so a restore reaches the
    // last full backup): a full backup is exactly what still works, and the default server has
    // circular logging on. Incremental and differential backups are nothing but logs to replay
    // on a full one, and Exchange refuses them while the store recycles its logs.
    if circular && matches!(mode, Mode::Incremental | Mode::Differential) {
        return Err(PlanError::Refused(format!(
            "circular logging is on (the job's circular_logging parameter), and a {} backup is \
             the logs since the last full backup, which the store overwrites: {CIRCULAR_WHY}. \
             Exchange does not take one while circular logging is on. Take full backups \
             instead (each is all a restore can reach), or turn circular logging off in the \
             Exchange Administrator (server properties > Advanced), restart the store, set \
             circular_logging = \"off\" for this job, and take a full backup.",
            mode.name()
        )));
    }
    let server = server()?;
    let (store, checkpoint) = read_store()?;
    let Some(current) = store.current.clone() else {
        return Err(PlanError::Refused(format!(
            "there is no Edb.log in {}: the store has no current log. Check the `logs` root.",
            LOGS.path()
        )));
    };
    let mut plan = PlanBuilder::new();
    if circular {
        plan.warn(format!(
            "Circular logging is on: a restore of this {} backup reaches only the moment it was \
             taken ({CIRCULAR_WHY}). Turn circular logging off to restore up to a failure.",
            mode.name()
        ));
    }
    if let Some(w) = same_volume_warning()? {
        plan.warn(w);
    }

    // What goes into the set, by the manual.
    let databases: Vec<String> = if mode.copies_databases() {
        store.databases.clone()
    } else {
        Vec::new()
    };
    let logs_in_set: Vec<&store::Log> = if mode.keeps_old_logs() {
        store.logs.iter().collect()
    } else {
        store.from(checkpoint)
    };
    let truncated: Vec<&store::Log> = if mode.truncates() {
        store.before(checkpoint)
    } else {
        Vec::new()
    };
    let mut size = 0u64;
    for d in &databases {
        size = size.saturating_add(facts::stat(&DATABASES.join(d))?.size);
    }
    for l in &logs_in_set {
        size = size.saturating_add(facts::stat(&LOGS.join(&l.name))?.size);
    }
    size = size.saturating_add(facts::stat(&LOGS.join(&current))?.size);
    // Room for the patch files and a renamed log or two.
    let needed = size
        .saturating_add(size / 20)
        .saturating_add(16 * 1024 * 1024);
    let free = facts::free_space(SET.name())?;
    if free < needed {
        return Err(PlanError::Refused(format!(
            "the backup medium has {free} bytes free; this {} backup needs about {needed}. Free \
             space there or point the job's backup root elsewhere.",
            mode.name()
        )));
    }
    plan.step(
        "check-space",
        "Check the backup medium has room for this backup",
        Action::assert(
            Condition::free_space_at_least(SET.name(), needed),
            "the backup medium has too little free space for this backup",
        ),
    )
    .on(&server);

    if online {
        let dump = dump_granted()?;
        if dump {
            plan.step(
                "check-dump-space",
                "Check the backup program's directory on the Exchange server has room for this backup",
                Action::assert(
                    Condition::free_space_at_least(DUMP.name(), needed),
                    "the backup program's directory (the `dump` root) has too little free space for this backup",
                ),
            )
            .on(&server);
        }
        online_backup(
            &mut plan, &server, mode, circular, &store, &databases, &truncated, dump,
        );
    } else {
        offline_backup(
            &mut plan,
            &server,
            mode,
            &current,
            &databases,
            &logs_in_set,
            &truncated,
        );
    }
    plan.invariant_on(
        &server,
        "store-running",
        "the information store is running after the backup, whatever happened",
        Condition::running(STORE),
    );
    for d in &store.databases {
        plan.invariant(
            &format!("{}-in-place", d.to_ascii_lowercase()),
            &format!("{d} is still in place"),
            Condition::exists(DATABASES.join(d)),
        );
    }
    Ok(plan.build())
}

/// Whether the job grants `dump`, the directory on the Exchange server the backup program
/// writes into. "Windows NT バックアップ ソフトウェアにより、データベース内の 4 KB 単位のページが
/// 読み込まれ、ページがデータベース エンジンに渡され、その後、テープに書き込まれます": the program
/// runs on the Exchange server and writes to a medium there; when the set is on the hokan host,
/// that medium is `dump`, and hokan carries what it wrote into the set.
fn dump_granted() -> Result<bool, PlanError> {
    match facts::is_dir(&DUMP.path()) {
        Ok(true) => Ok(true),
        Err(FactError::RootNotGranted(_)) => Ok(false),
        Ok(false) | Err(FactError::NotFound(_)) => Err(PlanError::Refused(
            "the job's `dump` root is not a directory on the Exchange server: make it (empty), \
             or remove the root to have the backup program write into the set"
                .into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// What the backup program writes: its databases and its logs, each a directory.
const WRITTEN: [&str; 2] = ["databases", "logs"];

#[allow(clippy::too_many_arguments)]
fn online_backup(
    plan: &mut PlanBuilder,
    server: &str,
    mode: Mode,
    circular: bool,
    store: &Store,
    databases: &[String],
    truncated: &[&store::Log],
    dump: bool,
) {
    plan.step(
        "store-running",
        "Check the information store is running (an online backup goes through it)",
        Action::assert(
            Condition::running(STORE),
            "the information store is not running; start it, or take an offline backup",
        ),
    )
    .on(server);
    if dump {
        for d in WRITTEN {
            plan.step(
                &format!("check-dump-{d}-absent"),
                &format!("Check the backup program's directory holds no {d} of an earlier backup"),
                Action::assert(
                    Condition::absent(DUMP.join(d)),
                    &format!(
                        "dump/{d} on the Exchange server is left from an earlier backup that did \
                         not finish, and may hold the only copy of logs the store has since \
                         deleted: move it away (keep it until a new full backup is good), then \
                         run again"
                    ),
                ),
            )
            .on(server);
        }
    }
    let written = if dump { DUMP } else { SET };
    let program = plan
        .step(
            "backup-program",
            &format!(
                "Run the backup program: a {} backup of the information store (ntbackup /t {}){}",
                mode.name(),
                mode.ntbackup_type(),
                if dump {
                    ", into the `dump` directory on the Exchange server"
                } else {
                    ""
                }
            ),
            Action::exec_in(written.name(), "backup-program", [mode.ntbackup_type()]),
        )
        .on(server)
        .timeout(LONG);
    // A point of no return in the modes that truncate: "5. 完全バックアップの場合は、チェック
    // ポイント以前のトランザクション ログ ファイルを削除します。" and "5. 増分バックアップの場合
    // は、チェックポイント以前のトランザクション ログ ファイルを削除します。" Once the program
    // has run, the logs it backed up are only in the new set; the earlier sets cannot be rolled
    // forward without them, so a later failure must keep the set, not discard it.
    if mode.truncates() {
        program.commits_set();
    }
    if dump {
        // Into the set, each file's digest checked as it arrives; removed from the server only
        // once it is there whole (until then it may be the only copy of truncated logs).
        for d in WRITTEN {
            let copy = format!("copy-dump-{d}");
            plan.step(
                &copy,
                &format!("Copy the backup program's {d} from the Exchange server into the set"),
                Action::copy_tree(DUMP.join(d), SET.join(d)),
            )
            .when(Condition::exists(DUMP.join(d)));
            plan.cleanup(
                &format!("empty-dump-{d}"),
                &format!(
                    "Remove the backup program's {d}, now in the set, from the Exchange server"
                ),
                Action::remove(DUMP.join(d)),
            )
            .when(Condition::step_succeeded(&copy))
            .retries(2);
        }
    }

    // Check its result: every file the mode backs up is in the set...
    let mut expected: Vec<Path> = Vec::new();
    for d in databases {
        expected.push(SET.join("databases").join(d));
    }
    for d in &store.databases {
        expected.push(SET.join("databases").join(&patch_of(d)));
    }
    // With circular logging the store recycles its logs while it runs ("チェックポイント ファイル
    // が次のログ ファイルに移動すると、古いログ ファイルが再利用されます"): which ones the program
    // finds is not known when planning, so the set is checked for its databases and patch
    // files only.
    if !circular && mode.keeps_new_current() {
        expected.push(SET.join("logs").join("Edb.log"));
    }
    assert_each(
        plan,
        server,
        (
            "check-set",
            "Check the backup program put every file of this mode in the set",
        ),
        ("in-set", "{path} is in the set"),
        &expected,
        Condition::exists,
        "the backup program did not back up this file; read its log",
    );

    // ...its databases have good pages...
    verify_pages(plan, server, &SET.join("databases"), databases, "backed-up");
    // ...and the store deleted exactly the logs the mode deletes.
    let on_disk =
        |logs: &[&store::Log]| -> Vec<Path> { logs.iter().map(|l| LOGS.join(&l.name)).collect() };
    if mode.truncates() {
        assert_each(
            plan,
            server,
            (
                "check-truncated",
                "Check the store deleted the logs before the checkpoint",
            ),
            ("gone", "{name} was deleted"),
            &on_disk(truncated),
            Condition::absent,
            "a log before the checkpoint is still there: the backup did not complete in the store; read the backup program's log and the application event log",
        );
    } else if !circular {
        // A mode that deletes no log: every log is still there, unless the store recycled it.
        let all: Vec<&store::Log> = store.logs.iter().collect();
        assert_each(
            plan,
            server,
            (
                "check-logs-kept",
                "Check no log was deleted (this mode deletes none)",
            ),
            ("kept", "{name} is still there"),
            &on_disk(&all),
            Condition::exists,
            "a log was deleted by a backup mode that deletes none: check circular logging and the backup program's mode",
        );
    }
    // ...and the set has its logs: "完全バックアップでは、.pat ファイルとチェックポイント以降のすべてのログ
    // ファイルをテープにバックアップします". Which logs that is depends on the checkpoint when the
    // program runs, which moves on while the store works: the set is judged against the store
    // as it is after the program ran, not against the logs the plan saw.
    if !circular {
        plan.step(
            "check-set-logs",
            &format!(
                "Check the logs in the set follow on and hold every log the store still has up \
                 to the newest (the {} backup's, from the checkpoint the program found)",
                mode.name()
            ),
            Action::verify_ese_log_set(SET.join("logs"), LOGS.path()),
        )
        .on(server);
    }
}

/// Stops the information store (step `stop-store`).
fn stop_store(plan: &mut PlanBuilder, server: &str) {
    plan.step(
        "stop-store",
        "Stop the information store",
        Action::stop(STORE),
    )
    .on(server)
    .timeout(SERVICE);
}

/// Starts the store in cleanup when `stop-store` began and `start-store` did not succeed.
fn restart_store_in_cleanup(plan: &mut PlanBuilder, server: &str) {
    plan.cleanup_undo(
        "restart-store",
        "If the store was stopped and not started again, start it",
        Action::start(STORE),
        "stop-store",
        "start-store",
    )
    .on(server)
    .timeout(SERVICE)
    .retries(2);
}

/// One step per database: every page checksum of `dir`'s copy (`-1018` for a bad page).
fn verify_pages(
    plan: &mut PlanBuilder,
    server: &str,
    dir: &Path,
    databases: &[String],
    what: &str,
) {
    for d in databases {
        plan.step(
            &format!("verify-pages-{}", d.to_ascii_lowercase()),
            &format!("Check every page checksum of the {what} {d} (-1018)"),
            Action::verify_ese_pages(dir.join(d)),
        )
        .on(server)
        .timeout(LONG);
    }
}

/// A group of assertions, one per path: `condition(path)` holds, else `message`. Step ids are
/// `<prefix>-<file name>`; `{path}` and `{name}` in the step title stand for the path and its
/// file name.
fn assert_each(
    plan: &mut PlanBuilder,
    server: &str,
    (id, title): (&str, &str),
    (prefix, each): (&str, &str),
    paths: &[Path],
    condition: fn(Path) -> Condition,
    message: &str,
) {
    plan.together(id, title, |g| {
        for p in paths {
            g.step(
                &format!("{prefix}-{}", p.file_name().to_ascii_lowercase()),
                &each
                    .replace("{path}", &p.to_string())
                    .replace("{name}", p.file_name()),
                Action::assert(condition(p.clone()), message),
            )
            .on(server);
        }
    });
}

fn patch_of(database: &str) -> String {
    let stem = database.rsplit_once('.').map_or(database, |(s, _)| s);
    format!("{stem}.pat")
}

fn offline_backup(
    plan: &mut PlanBuilder,
    server: &str,
    mode: Mode,
    current: &str,
    databases: &[String],
    logs_in_set: &[&store::Log],
    truncated: &[&store::Log],
) {
    plan.warn(
        "Offline backup: the manual discourages it. The files are handled outside the store's \
         backup API and the store does not check the page checksums (hokan checks them in the \
         set). The store is stopped while the files are copied: no mail is delivered or read \
         meanwhile.",
    );
    stop_store(plan, server);
    // Offline there is no new generation: Edb.log is the last log and goes into every set.
    let mut files: Vec<(Path, Path)> = databases
        .iter()
        .map(|d| (DATABASES.join(d), SET.join("databases").join(d)))
        .collect();
    files.extend(
        logs_in_set
            .iter()
            .map(|l| (LOGS.join(&l.name), SET.join("logs").join(&l.name))),
    );
    files.push((LOGS.join(current), SET.join("logs").join(current)));
    plan.together("copy", "Copy the store's files to the set", |g| {
        for (from, to) in &files {
            g.step(
                &format!("copy-{}", from.file_name().to_ascii_lowercase()),
                &format!("Copy {from}"),
                Action::copy_tree(from.clone(), to.clone()),
            )
            .on(server)
            .timeout(LONG);
        }
    });
    plan.together("verify", "Verify the copies", |g| {
        for (from, to) in &files {
            g.step(
                &format!("verify-{}", from.file_name().to_ascii_lowercase()),
                &format!("Verify the copy of {from}"),
                Action::verify_copy(from.clone(), to.clone()),
            )
            .on(server)
            .timeout(LONG);
        }
    });
    verify_pages(plan, server, &SET.join("databases"), databases, "copied");
    plan.step(
        "start-store",
        "Start the information store again",
        Action::start(STORE),
    )
    .on(server)
    .timeout(SERVICE);
    restart_store_in_cleanup(plan, server);
    if mode.truncates() && !truncated.is_empty() {
        plan.warn(format!(
            "An offline backup deletes no log: the {} logs before the checkpoint stay until a \
             full or incremental online backup, whose store deletes them through its backup API. \
             (Deleting them here could lose them with a set that a crash then discards.)",
            truncated.len()
        ));
    }
}

/// A restore test: the whole set restored into the scratch directory, then every page of each
/// restored database checked, as a backup checks the copies it made (-1018 is what a bad page
/// costs a restore). The host checks the rest against the set's manifest.
fn restore_test() -> Result<Plan, PlanError> {
    let server = server()?;
    let mut plan = PlanBuilder::new();
    let restored = restore_test::restore_set(&mut plan)?;
    let databases: Vec<String> = if restored.iter().any(|n| n == "databases") {
        names(&SET.join("databases"))?
            .into_iter()
            .filter(|n| n.to_ascii_lowercase().ends_with(".edb"))
            .collect()
    } else {
        Vec::new()
    };
    if databases.is_empty() {
        return Err(PlanError::Refused(
            "the backup set has no databases (databases/*.edb): it is no Exchange backup".into(),
        ));
    }
    verify_pages(
        &mut plan,
        &server,
        &restore_test::SCRATCH.join("databases"),
        &databases,
        "restored",
    );
    Ok(plan.build())
}

fn restore(req: &Request) -> Result<Plan, PlanError> {
    let server = server()?;
    let set_id = req.set_id.as_deref().unwrap_or("(unnamed)");
    let set_dbs = if facts::is_dir(&SET.join("databases"))? {
        names(&SET.join("databases"))?
    } else {
        Vec::new()
    };
    let set_logs = if facts::is_dir(&SET.join("logs"))? {
        names(&SET.join("logs"))?
    } else {
        Vec::new()
    };
    let set = Store::from_names(
        set_dbs.iter().map(String::as_str),
        set_logs.iter().map(String::as_str),
    );
    if set.databases.is_empty() {
        return Err(PlanError::Refused(format!(
            "set {set_id} has no database (an incremental backup holds only logs). Restore the \
             last full backup set first; hokan does not yet chain incremental sets onto it."
        )));
    }
    let live_dbs = names(&DATABASES.path())?;
    let live_logs = names(&LOGS.path())?;
    let live = Store::from_names(
        live_dbs.iter().map(String::as_str),
        live_logs.iter().map(String::as_str),
    );
    let kept = format!("hokan-replaced-{set_id}");
    let staging = DATABASES.join("hokan-restore");
    for (root, name) in [
        (DATABASES, &kept),
        (DATABASES, &"hokan-restore".to_string()),
        (LOGS, &kept),
    ] {
        if facts::exists(&root.join(name))? {
            return Err(PlanError::Refused(format!(
                "{} exists (from an earlier restore?). hokan never overwrites data: check what \
                 it holds, move it away, and plan again.",
                root.join(name)
            )));
        }
    }
    let mut incoming = 0u64;
    for d in set.databases.iter().chain(&set.patches) {
        incoming = incoming.saturating_add(facts::stat(&SET.join("databases").join(d))?.size);
    }
    let needed = incoming.saturating_add(16 * 1024 * 1024);
    let free = facts::free_space(DATABASES.name())?;
    if free < needed {
        return Err(PlanError::Refused(format!(
            "the databases' volume has {free} bytes free; the restore needs {needed} (the set's \
             databases while the current ones are kept)."
        )));
    }
    // Logs from the set that the disk lacks; a generation on disk is the same log and is kept
    // (the one on disk may be newer, for Edb.log).
    let live_log_names: Vec<String> = live_logs.iter().map(|n| n.to_ascii_lowercase()).collect();
    let mut logs: Vec<String> = set.logs.iter().map(|l| l.name.clone()).collect();
    logs.extend(set.current.clone());
    let logs: Vec<String> = logs
        .into_iter()
        .filter(|n| !live_log_names.contains(&n.to_ascii_lowercase()))
        .collect();

    let mut plan = PlanBuilder::new();
    // A set without .pat files is an offline backup (an online one always has them). The
    // article names fixing the store after one is restored as Isinteg's first task:
    // "オフライン バックアップからデータを復元後にインフォメーション ストアを修正します". Isinteg
    // changes the store, so it is asked for first, as repair asks, before anything changes.
    let offline = set.patches.is_empty();
    if offline {
        plan.step(
            "confirm-isinteg",
            "Confirm that Isinteg may fix the restored store (an offline set)",
            Action::manual(
                &format!(
                    "Set {set_id} is an offline backup (it has no .pat files). After its \
                     databases are in place, hokan runs Isinteg -fix -test alltests on each \
                     ({}) with the store stopped, as the manual says to after restoring an \
                     offline backup, and only then starts the store. Isinteg changes the \
                     store's data to make it consistent. Confirm to restore and fix; refuse \
                     and nothing is changed.",
                    set.databases.join(", ")
                ),
                Some(KB),
            ),
        )
        .on(&server);
    }
    plan.step(
        "check-space",
        "Check the databases' volume has room for the restored databases",
        Action::assert(
            Condition::free_space_at_least(DATABASES.name(), needed),
            "the databases' volume has too little free space for this restore",
        ),
    )
    .on(&server);
    stop_store(&mut plan, &server);
    let files: Vec<String> = set.databases.iter().chain(&set.patches).cloned().collect();
    for f in &files {
        plan.step(
            &format!("stage-{}", f.to_ascii_lowercase()),
            &format!("Copy the set's {f} next to the databases"),
            Action::copy_tree(SET.join("databases").join(f), staging.join(f)),
        )
        .on(&server)
        .timeout(LONG);
        plan.step(
            &format!("verify-{}", f.to_ascii_lowercase()),
            &format!("Verify the staged {f}"),
            Action::verify_copy(SET.join("databases").join(f), staging.join(f)),
        )
        .on(&server)
        .timeout(LONG);
    }
    verify_pages(&mut plan, &server, &staging, &set.databases, "staged");
    // Keep what is there, then put the set's files in place.
    let in_place = |name: &str| {
        live.databases
            .iter()
            .chain(&live.patches)
            .find(|l| l.eq_ignore_ascii_case(name))
            .cloned()
    };
    plan.step(
        "make-kept-dir",
        &format!("Make {kept} for the current files"),
        Action::ensure_dir(DATABASES.join(&kept)),
    )
    .on(&server);
    for f in &files {
        if let Some(old) = in_place(f) {
            plan.step(
                &format!("keep-{}", old.to_ascii_lowercase()),
                &format!("Keep the current {old} in {kept}"),
                Action::rename(DATABASES.join(&old), DATABASES.join(&kept).join(&old)),
            )
            .on(&server);
        }
    }
    for f in &files {
        plan.step(
            &format!("place-{}", f.to_ascii_lowercase()),
            &format!("Put the set's {f} in place"),
            Action::rename(staging.join(f), DATABASES.join(f)),
        )
        .on(&server);
    }
    plan.step(
        "remove-staging",
        "Remove the (now empty) staging directory",
        Action::remove(staging.clone()),
    )
    .on(&server);
    for l in &logs {
        plan.step(
            &format!("log-{}", l.to_ascii_lowercase()),
            &format!("Put the set's {l} in the logs directory"),
            Action::copy_tree(SET.join("logs").join(l), LOGS.join(l)),
        )
        .on(&server);
    }
    if let Some(chk) = &live.checkpoint {
        plan.step(
            "make-kept-logs-dir",
            &format!("Make {kept} in the logs directory for the stale checkpoint"),
            Action::ensure_dir(LOGS.join(&kept)),
        )
        .on(&server);
        plan.step(
            "remove-checkpoint",
            &format!(
                "Move the stale checkpoint {chk} aside to {kept}, so the store replays every log"
            ),
            Action::rename(LOGS.join(chk), LOGS.join(&kept).join(chk)),
        )
        .on(&server);
    }
    if offline {
        for d in &set.databases {
            let which = if d.eq_ignore_ascii_case("Priv.edb") {
                "-pri"
            } else {
                "-pub"
            };
            plan.step(
                &format!("isinteg-fix-{}", d.to_ascii_lowercase()),
                &format!("Fix the restored {d} with Isinteg -fix -test alltests"),
                Action::exec_in(
                    DATABASES.name(),
                    "isinteg",
                    [which, "-fix", "-test", "alltests"],
                ),
            )
            .on(&server)
            .timeout(LONG);
        }
    }
    plan.step(
        "start-store",
        "Start the information store: it replays the logs into the restored databases",
        Action::start(STORE),
    )
    .on(&server)
    .timeout(SERVICE);
    plan.step(
        "store-up",
        "Check the information store came up",
        Action::wait_until(Condition::running(STORE), Duration::from_secs(10)),
    )
    .on(&server)
    .timeout(Duration::from_secs(600));

    // When the restore stopped before its databases were in place, put the old ones back.
    for f in &files {
        if let Some(old) = in_place(f) {
            plan.cleanup(
                &format!("put-back-{}", old.to_ascii_lowercase()),
                &format!("If {old} is not in place, put the kept one back"),
                Action::rename(DATABASES.join(&kept).join(&old), DATABASES.join(&old)),
            )
            .when(Condition::absent(DATABASES.join(&old)))
            .when(Condition::exists(DATABASES.join(&kept).join(&old)))
            .on(&server);
        }
    }
    if let Some(chk) = &live.checkpoint {
        plan.cleanup(
            "put-back-checkpoint",
            "If the restored databases are not in place, put the checkpoint back",
            Action::rename(LOGS.join(&kept).join(chk), LOGS.join(chk)),
        )
        .when(Condition::step_not_succeeded("start-store"))
        .when(Condition::exists(staging.clone()))
        .when(Condition::exists(LOGS.join(&kept).join(chk)))
        .on(&server);
    }
    plan.cleanup(
        "discard-staging",
        "Remove the staging directory (copies of the set, which keeps its own)",
        Action::remove(staging.clone()),
    )
    .on(&server);
    restart_store_in_cleanup(&mut plan, &server);
    for d in &set.databases {
        plan.invariant(
            &format!("{}-in-place", d.to_ascii_lowercase()),
            &format!("the store has its {d}, restored or previous"),
            Condition::exists(DATABASES.join(d)),
        );
    }
    plan.invariant(
        "no-staging-left",
        "no staged copy is left beside the databases",
        Condition::absent(staging),
    );
    plan.invariant_on(
        &server,
        "store-running",
        "the information store is running after the restore, whatever happened",
        Condition::running(STORE),
    );
    plan.warn(format!(
        "The databases are replaced by those of set {set_id}; the current ones are kept in \
         {kept} in the databases directory. The store replays the logs on disk from the set's \
         checkpoint on: mail since the backup comes back only if those logs are intact."
    ));
    Ok(plan.build())
}

fn repair(req: &Request) -> Result<Plan, PlanError> {
    let (switch, isinteg, file) = match req.required_param("database")? {
        "priv" => ("/ispriv", "-pri", "Priv.edb"),
        "pub" => ("/ispub", "-pub", "Pub.edb"),
        other => {
            return Err(PlanError::BadParameter(format!(
                "database must be `priv` or `pub`, not `{other}`"
            )));
        }
    };
    let server = server()?;
    let (store, _) = read_store()?;
    let Some(db) = store
        .databases
        .iter()
        .find(|d| d.eq_ignore_ascii_case(file))
        .cloned()
    else {
        return Err(PlanError::Refused(format!(
            "there is no {file} in {}",
            DATABASES.path()
        )));
    };
    let original = DATABASES.join(&format!("hokan-before-repair/{db}"));
    if facts::exists(&original)? {
        return Err(PlanError::Refused(format!(
            "{original} exists from an earlier repair. Move it away (it is the unrepaired \
             database) and plan again."
        )));
    }
    let size = facts::stat(&DATABASES.join(&db))?.size;
    let needed = size.saturating_mul(2).saturating_add(16 * 1024 * 1024);
    let mut plan = PlanBuilder::new();
    plan.step(
        "last-resort",
        "Confirm that no backup can be restored instead",
        Action::manual(
            &format!(
                "Repair is the last resort. Eseutil /p makes a damaged {db} usable again by \
                 dropping every page it cannot read: the mail on those pages is lost for good. \
                 The only repair that loses nothing is to restore the latest good backup and \
                 replay the logs (hokan run --op restore). Continue only if no backup can be \
                 restored. hokan keeps a copy of the unrepaired database in {original}."
            ),
            Some(KB),
        ),
    )
    .on(&server);
    plan.step(
        "check-space",
        "Check the databases' volume has room for a copy and the defragmentation",
        Action::assert(
            Condition::free_space_at_least(DATABASES.name(), needed),
            "the databases' volume needs room for a copy of the database and for Eseutil /d's temporary database",
        ),
    )
    .on(&server);
    stop_store(&mut plan, &server);
    plan.step(
        "keep-original",
        &format!("Copy the unrepaired {db} to {original}"),
        Action::copy_tree(DATABASES.join(&db), original.clone()),
    )
    .on(&server)
    .timeout(LONG);
    plan.step(
        "verify-original",
        "Verify the copy",
        Action::verify_copy(DATABASES.join(&db), original.clone()),
    )
    .on(&server)
    .timeout(LONG);
    // "修復モードの Eseutil では、単純に破損したページが削除される": once Eseutil /p has begun,
    // the database is no longer the one the store had, and only the whole sequence (/p, then
    // /d, then Isinteg -fix, KB 271987) makes it consistent again. Each step runs only after
    // the one before succeeded; when one fails (or the run dies in one), the store is left
    // stopped, never started on a half-repaired database, and the run says what is left.
    let steps = [
        (
            "eseutil-repair",
            "Repair the database (Eseutil /p): drops the bad pages",
            "eseutil",
            vec!["/p", switch],
            format!("Eseutil /p {switch}"),
        ),
        (
            "eseutil-defragment",
            "Defragment it offline (Eseutil /d), as the manual requires after /p",
            "eseutil",
            vec!["/d", switch],
            format!("Eseutil /d {switch}"),
        ),
        (
            "isinteg-fix",
            "Fix the information store's consistency (Isinteg -fix -test alltests)",
            "isinteg",
            vec![isinteg, "-fix", "-test", "alltests"],
            format!("Isinteg {isinteg} -fix -test alltests"),
        ),
    ];
    for (id, title, command, args, _) in &steps {
        plan.step(
            id,
            title,
            Action::exec_in(DATABASES.name(), command, args.clone()),
        )
        .on(&server)
        .timeout(LONG);
    }
    plan.step(
        "start-store",
        "Start the information store",
        Action::start(STORE),
    )
    .on(&server)
    .timeout(SERVICE);
    // Started again in cleanup only while the database is as it was (Eseutil /p never began),
    // or once the repair has finished.
    plan.cleanup(
        "restart-store",
        "If the store was stopped, Eseutil /p never began and the store was not started again, start it",
        Action::start(STORE),
    )
    .when(Condition::step_started("stop-store"))
    .when(Condition::step_not_started("eseutil-repair"))
    .when(Condition::step_not_succeeded("start-store"))
    .on(&server)
    .timeout(SERVICE)
    .retries(2);
    plan.cleanup(
        "restart-store-after-repair",
        "If the repair finished and the store did not start, try again",
        Action::start(STORE),
    )
    .when(Condition::step_succeeded("isinteg-fix"))
    .when(Condition::step_not_succeeded("start-store"))
    .on(&server)
    .timeout(SERVICE)
    .retries(2);
    plan.invariant_on(
        &server,
        "store-running",
        "the information store is running after the repair, whatever happened, unless Eseutil /p began",
        Condition::running(STORE),
    )
    .when(Condition::step_not_started("eseutil-repair"));
    plan.invariant_on(
        &server,
        "store-running-after-repair",
        "the information store is running once the repair finished",
        Condition::running(STORE),
    )
    .when(Condition::step_succeeded("isinteg-fix"));
    for (i, (id, _, _, _, _)) in steps.iter().enumerate() {
        let left: Vec<&str> = steps[i..].iter().map(|s| s.4.as_str()).collect();
        let began = if i == 0 {
            "eseutil-repair"
        } else {
            steps[i - 1].0
        };
        let mut inv = plan.invariant_on(
            &server,
            &format!("store-left-stopped-before-{id}"),
            &format!(
                "Eseutil /p {} {db} and the repair did not finish: the information store \
                 is left stopped, so that it does not serve a database that is not consistent. \
                 Left to do by hand, in this order: {}; then start the store. The unrepaired \
                 database is in {original}.",
                if i == 0 { "began to change" } else { "changed" },
                left.join(", then ")
            ),
            Condition::stopped(STORE),
        );
        inv = if i == 0 {
            inv.when(Condition::step_started(began))
        } else {
            inv.when(Condition::step_succeeded(began))
        };
        inv.when(Condition::step_not_succeeded(id));
    }
    plan.warn(format!(
        "Eseutil /p drops the pages of {db} it cannot read: the mail on them is lost. Restoring \
         the latest good backup and replaying the logs is the only repair that loses nothing."
    ));
    Ok(plan.build())
}

fn lint(req: &Request) -> Result<Plan, PlanError> {
    let mut plan = PlanBuilder::new();
    if circular_logging(req)? {
        plan.warn(format!(
            "Circular logging is on (the job's circular_logging parameter): {CIRCULAR_WHY}. The \
             manual recommends turning it off; until it is, a restore reaches only the last \
             full backup, and incremental and differential backups refuse to run."
        ));
    }
    if let Some(w) = same_volume_warning()? {
        plan.warn(w);
    }
    let (store, checkpoint) = read_store()?;
    let old = store.before(checkpoint).len();
    if old > 0 {
        plan.warn(format!(
            "{old} log(s) before the checkpoint are still on disk: they are deleted only by a \
             full or incremental online backup. Many of them mean no such backup ran lately."
        ));
    }
    plan.step(
        "store-layout",
        "The store's files were found and its checkpoint read (advice, if any, is in the warnings)",
        Action::assert(
            Condition::exists(LOGS.join(store.checkpoint.as_deref().unwrap_or("Edb.chk"))),
            "the checkpoint file disappeared",
        ),
    );
    Ok(plan.build())
}
