//! Hitachi Groupmax: backup of a server of the system, in the four cases of the manual
//! (15.2.3 "Backup procedure").
//!
//! The order of the whole procedure: stop the other Groupmax servers on the server being backed
//! up, then its address service, then its Object Server; back it up; clear, on the master
//! management server, the journal kept for it; start everything again in reverse; copy the
//! backup to a secondary medium when it went to disk.
//!
//! The case follows from the job's servers and the parameter `mode`:
//!
//! | job's servers                      | `mode = "by-hand"` | `mode = "automated"` |
//! |------------------------------------|--------------------|----------------------|
//! | the master management server only  | case (1)           | case (2)             |
//! | the master and one address or mail server | case (3)    | case (4)             |
//!
//! By hand, the journal is cleared in the administrator console (運転席), a GUI, so the plan
//! asks the operator at a manual gate; automated, hokan deletes the journal files itself. In
//! both, hokan copies the backup targets into the backup set (the manual's `nxbackup` prompts
//! for a device and a confirmation, so it cannot be driven).

use hokan_sdk::prelude::*;
use hokan_sdk::{EntryKind, RootInfo};
use std::time::Duration;

const DATA: Root = Root::new("data");
const SET: Root = Root::new("set");
const JOURNAL: Root = Root::new("journal");
const MNG_JOURNAL: Root = Root::new("mng-journal");
const MEDIA: Root = Root::new("media");

const MANUAL: &str = "Groupmax manual, 15.2.3 Backup procedure";

const MASTER: &str = "master-management";
const ADDRESS: &str = "address";
const MAIL: &str = "mail";

/// The modelled state of "the Groupmax servers on a machine" (for dry runs).
const SERVERS: &str = "groupmax-servers";
const ADDRESS_SERVICE: &str = "address-service";
const OBJECT_SERVER: &str = "object-server";

const STOP_LIMIT: Duration = Duration::from_secs(10 * 60);
const SERVICE_LIMIT: Duration = Duration::from_secs(5 * 60);

struct Groupmax;

impl Plugin for Groupmax {
    fn describe() -> Description {
        let host_name = || {
            param_info(
                "host_name",
                "the server's host name, which names its journal files on the master \
                 management server (default: the server's name in the policy)",
                None,
            )
        };
        Description {
            name: "groupmax".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            product: format!("Hitachi Groupmax ({MANUAL})"),
            summary: "Backs up the master management server or an address or mail server of a \
                      Groupmax system, by hand or automated, stopping and starting the servers \
                      in the manual's order and clearing the journal the master keeps."
                .into(),
            operations: vec![
                operation(
                    "backup",
                    "Stop the Groupmax servers, the address service and the Object Server of the \
                    server being backed up, copy its backup targets into a new backup set, clear \
                    its journal on the master, start everything again and copy the set to the \
                    secondary medium.",
                    SetUse::Writes,
                ),
                operation(
                    hokan_sdk::restore_test::OPERATION,
                    "Restore a backup set into a scratch directory beside the sets, never over the Groupmax servers, and check that every file came back as the set's manifest has it.",
                    SetUse::Reads,
                ),
            ],
            roots: vec![
                root_info(
                    "data",
                    "the backup targets of the server being backed up (the Address Server and \
                     Mail Server directories and database files the manual lists): their \
                     common parent directory",
                    false,
                ),
                RootInfo {
                    required: false,
                    ..root_info(
                        "journal",
                        "on the master management server, /usr/GroupMail/nxsdir/journal \
                         (HP-UX, AIX: /var/opt/GroupMail/nxsdir/journal); needed to back up \
                         an address or mail server automated",
                        true,
                    )
                },
                RootInfo {
                    required: false,
                    ..root_info(
                        "mng-journal",
                        "the directory MNG_JOURNAL names on the master management server; \
                         needed to back the master up automated when it keeps journals",
                        true,
                    )
                },
                RootInfo {
                    required: false,
                    ..root_info(
                        "media",
                        "a secondary medium (mounted tape or removable disk) each backup set \
                         is copied to after the backup",
                        true,
                    )
                },
            ],
            parameters: vec![
                param_info(
                    "mode",
                    "`automated` (hokan deletes the journal files; the administrator console \
                     must not be running) or `by-hand` (the operator clears the journal in \
                     the administrator console when the plan asks)",
                    Some("automated"),
                ),
                param_info(
                    "stop_command",
                    "the command that stops the Groupmax servers: `APSTOP` or `NXSMNGSRV`",
                    Some("APSTOP"),
                ),
                param_info(
                    "replication_timeout_minutes",
                    "how long to wait for replication to the server being backed up to \
                     complete before giving up (address and mail servers)",
                    Some("30"),
                ),
            ],
            commands: vec![
                name_info("APSTOP", "stops the Groupmax servers on the step's server"),
                name_info(
                    "NXSMNGSRV",
                    "stops the Groupmax servers on the step's server (the manual's \
                     alternative to APSTOP for the multi-server automated backup)",
                ),
                name_info(
                    "start-servers",
                    "starts the Groupmax servers on the step's server again (manual chapter \
                     13, starting and stopping servers)",
                ),
                name_info(
                    "nxsrepstat",
                    "called as `nxsrepstat HOST` on the master management server: exits 0 \
                     when replication to HOST has completed (a wrapper that reads \
                     nxsrepstat's report)",
                ),
                name_info(
                    "console-closed",
                    "exits 0 when the administrator console (運転席) is not running on the \
                     master management server, non-zero when it is (a site script that looks \
                     for its process); needed by automated backups",
                ),
            ],
            services: vec![
                name_info(ADDRESS_SERVICE, "the address service"),
                name_info(OBJECT_SERVER, "the Object Server"),
            ],
            maintenance_markers: vec![],
            command_behaviours: vec![
                behaviour("APSTOP", &[], 0, Duration::from_secs(30))
                    .effect(SimEffect::service(SERVERS, ServiceState::Stopped)),
                behaviour("NXSMNGSRV", &[], 0, Duration::from_secs(30))
                    .effect(SimEffect::service(SERVERS, ServiceState::Stopped)),
                behaviour("start-servers", &[], 0, Duration::from_secs(60))
                    .effect(SimEffect::service(SERVERS, ServiceState::Running)),
                behaviour("nxsrepstat", &[], 0, Duration::from_secs(2))
                    .output("replication complete"),
                behaviour("console-closed", &[], 0, Duration::from_secs(1))
                    .output("the administrator console is not running"),
            ],
            roles: vec![
                role_info(
                    MASTER,
                    "the master management server",
                    1,
                    Some(1),
                    vec![
                        param_info(
                            "journals",
                            "whether the master management server keeps journals \
                             (MNG_JOURNAL is set)",
                            Some("false"),
                        ),
                        host_name(),
                    ],
                ),
                role_info(ADDRESS, "an address server", 0, Some(1), vec![host_name()]),
                role_info(MAIL, "a mail server", 0, Some(1), vec![host_name()]),
            ],
            modelled_states: vec![modelled_state(
                SERVERS,
                "the Groupmax servers run on the machine (stopped by APSTOP or NXSMNGSRV)",
                ServiceState::Running,
            )],
            conflicts: vec![],
            window_rules: ANY_WINDOW,
        }
    }

    fn plan(req: Request) -> Result<Plan, PlanError> {
        match req.operation.as_str() {
            "backup" => backup(&req),
            hokan_sdk::restore_test::OPERATION => {
                let mut plan = PlanBuilder::new();
                hokan_sdk::restore_test::restore_set(&mut plan)?;
                Ok(plan.build())
            }
            other => Err(PlanError::UnknownOperation(other.into())),
        }
    }
}

hokan_sdk::export_plugin!(Groupmax);

/// The manual's four cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ByHand,
    Automated,
}

/// The servers concerned.
struct Servers {
    master: Server,
    /// The address or mail server being backed up; `None` when it is the master.
    other: Option<Server>,
}

impl Servers {
    fn from_topology(t: &Topology) -> Result<Servers, PlanError> {
        let job = &t.job;
        let master = match t.job_servers_with_role(MASTER).as_slice() {
            [m] => (*m).clone(),
            other => {
                return Err(PlanError::BadParameter(format!(
                    "jobs.{job}.servers must include exactly one server with role `{MASTER}`; \
                     it has {}",
                    other.len()
                )));
            }
        };
        let others: Vec<&Server> = t
            .job_server_list()
            .into_iter()
            .filter(|s| s.role == ADDRESS || s.role == MAIL)
            .collect();
        if others.len() > 1 {
            return Err(PlanError::BadParameter(format!(
                "jobs.{job}.servers names {} address or mail servers ({}); a job backs up one \
                 server: make one job per server, each with the master management server",
                others.len(),
                others
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(Servers {
            master,
            other: others.first().map(|s| (*s).clone()),
        })
    }

    /// The server being backed up.
    fn backed_up(&self) -> &Server {
        self.other.as_ref().unwrap_or(&self.master)
    }
}

fn host_name(s: &Server) -> &str {
    s.property("host_name").unwrap_or(&s.name)
}

/// The plan's settings from the request.
struct Settings {
    mode: Mode,
    stop_command: &'static str,
    replication_limit: Duration,
}

impl Settings {
    fn from_request(req: &Request) -> Result<Settings, PlanError> {
        let mode = match req.required_param("mode")? {
            "automated" => Mode::Automated,
            "by-hand" => Mode::ByHand,
            other => {
                return Err(PlanError::BadParameter(format!(
                    "parameter `mode` must be `automated` or `by-hand`, not `{other}`"
                )));
            }
        };
        let stop_command = match req.required_param("stop_command")? {
            "APSTOP" => "APSTOP",
            "NXSMNGSRV" => "NXSMNGSRV",
            other => {
                return Err(PlanError::BadParameter(format!(
                    "parameter `stop_command` must be `APSTOP` or `NXSMNGSRV`, not `{other}`"
                )));
            }
        };
        let minutes: u64 = req
            .required_param("replication_timeout_minutes")?
            .parse()
            .ok()
            .filter(|m| *m > 0)
            .ok_or_else(|| {
                PlanError::BadParameter(
                    "parameter `replication_timeout_minutes` must be a whole number of \
                     minutes, at least 1"
                        .into(),
                )
            })?;
        Ok(Settings {
            mode,
            stop_command,
            replication_limit: Duration::from_secs(minutes * 60),
        })
    }
}

fn backup(req: &Request) -> Result<Plan, PlanError> {
    let topology = facts::topology();
    let servers = Servers::from_topology(&topology)?;
    let settings = Settings::from_request(req)?;
    let job = topology.job.as_str();
    let master = servers.master.name.as_str();
    let backed = servers.backed_up();
    let b = backed.name.as_str();
    let journals = servers.master.flag("journals", false)?;
    let set_id = req
        .set_id
        .clone()
        .ok_or_else(|| PlanError::BadParameter("the host gave no backup set id".into()))?;
    // Case (2), the master management server automated: "マスタ管理サーバのサーバを停止します。
    // APSTOPコマンドを使用してください。" Only case (4) allows "APSTOPコマンド又はNXSMNGSRVコマンド".
    if servers.other.is_none()
        && settings.mode == Mode::Automated
        && settings.stop_command != "APSTOP"
    {
        return Err(PlanError::BadParameter(format!(
            "parameter `stop_command` is `{}`, but the manual's case (2), the automated backup \
             of the master management server, stops its servers with APSTOP only \
             (APSTOPコマンドを使用してください); set stop_command = \"APSTOP\" for this job. \
             NXSMNGSRV is for the backup of an address or mail server, case (4).",
            settings.stop_command
        )));
    }

    // What the journal clearing needs, checked before anything is planned.
    match (&servers.other, settings.mode) {
        (None, Mode::Automated) if journals => check_mch_journal(job, master)?,
        (Some(other), Mode::Automated) => check_journal_root(job, other)?,
        _ => {}
    }

    let mut plan = PlanBuilder::new();
    // Before anything stops: room for the backup (what it copies: files the newest set holds
    // unchanged are linked, not copied).
    let size = facts::backup_size(&DATA.path())?;
    plan.step(
        "check-space",
        "Check the backup medium has room for the backup targets",
        Action::assert(
            Condition::free_space_at_least(SET.name(), size),
            "the backup medium has too little free space for this backup",
        ),
    );
    // Cases (2) and (4): "運転席を停止した状態で実行してください。" (run it with the console
    // stopped). A scheduled run has nobody to ask, so it is a check, before anything stops:
    // the console holds the name database, and an automated backup does what the operator
    // would do in it.
    if settings.mode == Mode::Automated {
        plan.step(
            "console-closed",
            "Check the administrator console (運転席) is not running: 運転席を停止した状態で\
             実行してください",
            Action::assert(
                Condition::command_succeeds("console-closed", Vec::<String>::new()),
                "the administrator console (運転席) is running on the master management \
                 server: an automated backup runs only with it stopped. Exit the console, then \
                 run the backup again",
            ),
        )
        .on(master)
        .timeout(Duration::from_secs(60));
    }

    // Multi-server: replication to the server must be complete before anything stops.
    if let Some(other) = &servers.other {
        let host = host_name(other);
        // "完了していない場合は運転席の名前データベースウィンドウで整合性を確保してください。
        // レプリケーションが完了したら,手順2に進んでください。" (if it has not completed, restore
        // consistency in the console's name database window; once replication has completed, go
        // on to step 2). Waiting longer does not do that: when the limit passes, the run stops
        // here, before anything is stopped, and its failure (this step's title) says what to do.
        plan.step(
            "replication-complete",
            &format!(
                "Wait until replication to {b} ({host}) has completed (nxsrepstat); if it has not \
                 within {} minute(s), nothing is stopped: restore consistency in the \
                 administrator console's name database window (運転席の名前データベースウィンドウ\
                 で整合性を確保), then run the backup again",
                settings.replication_limit.as_secs() / 60
            ),
            Action::wait_until(
                Condition::command_succeeds("nxsrepstat", [host]),
                Duration::from_secs(10),
            ),
        )
        .on(master)
        .timeout(settings.replication_limit);
    }

    // By hand, the journal is cleared in the console before the servers stop.
    if settings.mode == Mode::ByHand && (servers.other.is_some() || journals) {
        let (which, case) = match &servers.other {
            None => ("the master management server", "(1), steps 1 to 5"),
            Some(_) => ("the server being backed up", "(3), steps 2 to 7"),
        };
        plan.step(
            "clear-journal-in-console",
            &format!("Clear the journal of {b} in the administrator console"),
            Action::manual(
                &format!(
                    "On the master management server {master}, start the administrator \
                     console (運転席) and open the name database window. From its Database \
                     menu choose Backup: the Backup dialog opens and other administrators are \
                     locked out. Select {which}, {b}, and press Journal clear. Then close the \
                     dialog, which ends the lock, and exit the console. Confirm here once the \
                     console is closed: the next step stops the servers."
                ),
                Some(&format!("{MANUAL} {case}")),
            ),
        )
        .on(master)
        // "データ整合性維持のためのジャーナルがクリアされます。" By hand the journal goes before
        // the backup is taken: from here on, whatever the run gets is kept, and a failure says
        // that the journal is already gone.
        .commits_set();
    }

    // Stop: the Groupmax servers, the address service, the Object Server.
    let both = servers.other.is_some() && settings.mode == Mode::Automated;
    let stop_on: Vec<&str> = if both { vec![master, b] } else { vec![b] };
    let stop = settings.stop_command;
    let names = stop_on.join(" and ");
    let names_reversed = stop_on
        .iter()
        .rev()
        .copied()
        .collect::<Vec<_>>()
        .join(" and ");
    plan.together(
        "stop-servers",
        &format!("Stop the Groupmax servers on {names}"),
        |g| {
            for s in &stop_on {
                g.step(
                    &format!("stop-servers-{s}"),
                    &format!("Stop the Groupmax servers on {s} ({stop})"),
                    Action::exec(stop, Vec::<String>::new()),
                )
                .on(s)
                .timeout(STOP_LIMIT);
            }
        },
    );
    plan.together(
        "stop-address-service",
        &format!("Stop the address service on {names}"),
        |g| {
            for s in &stop_on {
                g.step(
                    &format!("stop-address-service-{s}"),
                    &format!("Stop the address service on {s}"),
                    Action::stop(ADDRESS_SERVICE),
                )
                .on(s)
                .timeout(SERVICE_LIMIT);
            }
        },
    );
    plan.step(
        &format!("stop-object-server-{b}"),
        &format!("Stop the Object Server on {b}"),
        Action::stop(OBJECT_SERVER),
    )
    .on(b)
    .timeout(SERVICE_LIMIT);

    // Back up, and check the copy.
    plan.step(
        "copy-data",
        &format!("Copy the backup targets of {b} to the backup set"),
        Action::copy_tree(DATA.path(), SET.join("data")),
    );
    plan.step(
        "verify-data",
        "Verify the copy",
        Action::verify_copy(DATA.path(), SET.join("data")),
    );

    // Clear the journal kept for the server, now that its backup is verified: "バックアップを
    // 取得した時点で消去しないと,リストア後のデータ修復ができなくなるので,必ず消去してください。"
    // The files are chosen by the host when the step runs, not listed at plan time: a journal
    // file written between planning and the stop is deleted too, and "none found" is reported
    // as such. The deletion is a point of no return: from then on, a failure or a crash keeps
    // the set (the journal it goes with is gone) and the run ends needing attention.
    match &servers.other {
        // Case (2): "<MNG_JOURNALで指定したディレクトリ>/MCH_JOURNAL下のすべてのファイル".
        None if settings.mode == Mode::Automated && journals => {
            plan.step(
                "clear-mch-journal",
                "Delete every file in MNG_JOURNAL/MCH_JOURNAL (as found when the step runs)",
                Action::remove_files(
                    MNG_JOURNAL.join("MCH_JOURNAL"),
                    ["*".to_string()],
                    [],
                    false,
                ),
            )
            .on(master)
            .continue_on_error()
            .commits_set();
        }
        // Case (4): "バックアップを取得したサーバのホスト名が付いたファイルを削除します。"
        Some(other) if settings.mode == Mode::Automated => {
            let (patterns, except) = journal_patterns(&topology, other);
            plan.step(
                "clear-journal",
                &format!(
                    "Delete the journal files named after {} ({b}) in the master's journal \
                     directory: {} (as found when the step runs)",
                    host_name(other),
                    patterns.join(", ")
                ),
                Action::remove_files(JOURNAL.path(), patterns, except, true),
            )
            .on(master)
            .continue_on_error()
            .commits_set();
        }
        _ => {}
    }

    // Start again, in reverse.
    plan.step(
        &format!("start-object-server-{b}"),
        &format!("Start the Object Server on {b}"),
        Action::start(OBJECT_SERVER),
    )
    .on(b)
    .timeout(SERVICE_LIMIT)
    .continue_on_error();
    plan.together(
        "start-address-service",
        &format!("Start the address service on {names_reversed}"),
        |g| {
            for s in stop_on.iter().rev() {
                g.step(
                    &format!("start-address-service-{s}"),
                    &format!("Start the address service on {s}"),
                    Action::start(ADDRESS_SERVICE),
                )
                .on(s)
                .timeout(SERVICE_LIMIT)
                .continue_on_error();
            }
        },
    );
    plan.together(
        "start-servers",
        &format!("Start the Groupmax servers on {names_reversed}"),
        |g| {
            for s in stop_on.iter().rev() {
                g.step(
                    &format!("start-servers-{s}"),
                    &format!("Start the Groupmax servers on {s}"),
                    Action::exec("start-servers", Vec::<String>::new()),
                )
                .on(s)
                .timeout(STOP_LIMIT)
                .continue_on_error();
            }
        },
    );

    // The backup went to disk: copy it to the secondary medium.
    let media = match facts::is_dir(&MEDIA.path()) {
        Ok(true) => true,
        Err(FactError::RootNotGranted(_)) => false,
        Ok(false) | Err(FactError::NotFound(_)) => {
            return Err(PlanError::Refused(format!(
                "the secondary medium jobs.{job}.roots.media is not a directory: mount it"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if media {
        // Jobs may share a medium: each writes below its own name. A failure here does not
        // undo the backup on disk (the journal is already cleared), it needs a person.
        let dest = MEDIA.join(&format!("{job}/{set_id}/data"));
        plan.step(
            "copy-to-media",
            "Copy the backup set to the secondary medium",
            Action::copy_tree(SET.join("data"), dest.clone()),
        )
        .continue_on_error();
        plan.step(
            "verify-media",
            "Verify the copy on the secondary medium",
            Action::verify_copy(SET.join("data"), dest),
        )
        .continue_on_error();
    } else {
        plan.warn(
            "The manual asks for a copy of a backup taken to disk on a secondary medium. This \
             job grants no `media` root: copy the backup set to tape or removable media \
             yourself, or grant `media`.",
        );
    }

    // Whatever failed: start what the run stopped and did not start again, in reverse order.
    let restart = |plan: &mut PlanBuilder, id: &str, s: &str, title: String, action: Action| {
        plan.cleanup_undo(
            &format!("cleanup-{id}-{s}"),
            &title,
            action,
            &format!("stop-{id}-{s}"),
            &format!("start-{id}-{s}"),
        )
        .on(s)
        .timeout(STOP_LIMIT)
        .retries(2);
    };
    restart(
        &mut plan,
        "object-server",
        b,
        format!("If the Object Server on {b} is still stopped, start it"),
        Action::start(OBJECT_SERVER),
    );
    for s in stop_on.iter().rev() {
        restart(
            &mut plan,
            "address-service",
            s,
            format!("If the address service on {s} is still stopped, start it"),
            Action::start(ADDRESS_SERVICE),
        );
    }
    for s in stop_on.iter().rev() {
        restart(
            &mut plan,
            "servers",
            s,
            format!("If the Groupmax servers on {s} are still stopped, start them"),
            Action::exec("start-servers", Vec::<String>::new()),
        );
    }
    Ok(plan.build())
}

/// Case (2): the `mng-journal` root is granted and holds MCH_JOURNAL.
fn check_mch_journal(job: &str, master: &str) -> Result<(), PlanError> {
    match facts::stat(&MNG_JOURNAL.join("MCH_JOURNAL")) {
        Ok(st) if st.kind == EntryKind::Dir => Ok(()),
        Ok(_) | Err(FactError::NotFound(_)) => Err(PlanError::Refused(format!(
            "servers.{master}.properties.journals is true, but MCH_JOURNAL is not a directory \
             in the directory jobs.{job}.roots.mng-journal grants: check that the root is the \
             directory MNG_JOURNAL names"
        ))),
        Err(FactError::RootNotGranted(_)) => Err(PlanError::BadParameter(format!(
            "servers.{master}.properties.journals is true, but job `{job}` grants no \
             `mng-journal` root: add jobs.{job}.roots.mng-journal with the directory MNG_JOURNAL \
             names on the master management server (or set journals = false if it keeps none)"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Case (4): the `journal` root is granted.
fn check_journal_root(job: &str, other: &Server) -> Result<(), PlanError> {
    match facts::stat(&JOURNAL.path()) {
        Ok(_) => Ok(()),
        Err(FactError::RootNotGranted(_)) => Err(PlanError::BadParameter(format!(
            "an automated backup of {} must delete its journal files on the master \
             management server, but job `{job}` grants no `journal` root: add \
             jobs.{job}.roots.journal with /usr/GroupMail/nxsdir/journal of the master \
             (HP-UX, AIX: /var/opt/GroupMail/nxsdir/journal)",
            other.name
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Case (4): the names of the journal files of `other`, as `remove-files` patterns: its host
/// name itself, or followed by `.`, `_` or `-` and more; except those of a longer host name of
/// the site that is `other`'s followed by such a separator, whose files the patterns would
/// take too (`gm1-b`'s files are not `gm1`'s). Host names match ignoring case.
fn journal_patterns(t: &Topology, other: &Server) -> (Vec<String>, Vec<String>) {
    let named = |host: &str| {
        [
            host.to_string(),
            format!("{host}.*"),
            format!("{host}_*"),
            format!("{host}-*"),
        ]
    };
    let own = host_name(other).to_ascii_lowercase();
    let mut longer: Vec<String> = t
        .servers
        .iter()
        .map(|s| host_name(s).to_ascii_lowercase())
        .filter(|h| {
            h.strip_prefix(own.as_str())
                .is_some_and(|rest| rest.starts_with(['.', '_', '-']))
        })
        .collect();
    longer.sort();
    longer.dedup();
    (
        named(&own).to_vec(),
        longer.iter().flat_map(|h| named(h)).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, host: &str) -> Server {
        Server {
            name: name.into(),
            role: MAIL.into(),
            address: String::new(),
            properties: vec![("host_name".into(), host.into())],
        }
    }

    #[test]
    fn journal_files_are_those_named_after_the_host_not_a_longer_one() {
        // "バックアップを取得したサーバのホスト名が付いたファイルを削除します。"
        let t = Topology {
            site: "s".into(),
            timezone: "Asia/Tokyo".into(),
            servers: vec![
                server("gm-1", "GM1"),
                server("gm-1b", "gm1-b"),
                server("gm-10", "gm10"),
                server("gm-master", "gmmaster"),
            ],
            job: "j".into(),
            job_servers: vec!["gm-1".into()],
        };
        let (patterns, except) = journal_patterns(&t, &t.servers[0]);
        assert_eq!(patterns, ["gm1", "gm1.*", "gm1_*", "gm1-*"]);
        // gm10's names do not match `gm1` followed by a separator, so only gm1-b is excepted.
        assert_eq!(except, ["gm1-b", "gm1-b.*", "gm1-b_*", "gm1-b-*"]);
    }
}
