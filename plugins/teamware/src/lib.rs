//! Fujitsu TeamWARE Office: the online backup, single- and multi-server, as the Administrator's
//! Guide describes it (TeamWARE Office 200X V2.0, 19.3.1 "Online backup").
//!
//! The backup keeps the system in service except for a short suspension. Seven steps, each
//! with its own server order:
//!
//! 1. `to tran suspend`: application servers first, then the directory server.
//! 2. `to backup on` (reserves the area that takes updates during the backup).
//! 3. `tobkweb arc`, where the Web service is installed: application servers, then the
//!    directory server.
//! 4. `to tran resume`: the directory server first, then the application servers.
//! 5. The differential backup utility on every server.
//! 6. `tobkweb rm`, where the Web service is installed, in any order.
//! 7. `to backup off` on every server, only once every server's backup has finished.
//!
//! Step 5 runs "すべてのサーバで" (on every server): each server's utility writes its backup there.
//! On a server on the hokan host that is the set itself; on a server reached over ssh it is
//! that server's `dump` directory, from which hokan carries the backup into the set.
//!
//! Whatever step fails, the cleanup resumes service in the order of step 4, removes the files
//! of step 3 that were made, and releases the area of step 2, doing only what the run began and
//! did not finish (the `step-started` / `step-not-succeeded` conditions).

use hokan_sdk::prelude::*;
use std::time::Duration;

const SET: Root = Root::new("set");
/// On each server reached over ssh, the directory its differential backup writes into.
const DUMP: Root = Root::new("dump");

const GUIDE: &str = "TeamWARE Office 200X V2.0 Administrator's Guide, 19.3.1 Online backup";

/// The directory server's role.
const DIRECTORY: &str = "directory";
/// An application server's role.
const APPLICATION: &str = "application";
/// The server property saying the Web service is installed.
const WEB_SERVICE: &str = "web_service";

/// The modelled product states (for dry runs).
const IN_SERVICE: &str = "in-service";
const BACKUP_AREA: &str = "backup-area-reserved";
const WEB_FILES: &str = "web-backup-files";

/// Time limits of the product's own commands.
const TO_LIMIT: Duration = Duration::from_secs(10 * 60);
const TOBKWEB_LIMIT: Duration = Duration::from_secs(30 * 60);

struct TeamWare;

impl Plugin for TeamWare {
    fn describe() -> Description {
        let web = || {
            vec![param_info(
                WEB_SERVICE,
                "whether the TeamWARE Web service is installed on this server (then the backup \
                 runs `tobkweb arc` before and `tobkweb rm` after it)",
                Some("false"),
            )]
        };
        Description {
            name: "teamware".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            product: format!("Fujitsu TeamWARE Office ({GUIDE})"),
            summary: "Takes TeamWARE Office's online backup on the directory server and every \
                      application server, in the guide's server order, and always resumes \
                      service and releases the backup area."
                .into(),
            operations: vec![
                operation(
                    "backup",
                    "Online backup of every server of the system with the differential backup \
                    utility, into a new backup set (one folder per server).",
                    SetUse::Writes,
                ),
                operation(
                    hokan_sdk::restore_test::OPERATION,
                    "Restore a backup set into a scratch directory beside the sets, never over TeamWARE, and check that every file came back as the set's manifest has it.",
                    SetUse::Reads,
                ),
            ],
            roots: vec![optional_root_info(
                "dump",
                "one directory on each server reached over ssh (`dump = { servers = { \
                     tw-app1 = \"/var/tmp/hokan-tw\", ... } }`), which that server's \
                     differential backup writes into: hokan copies the backup into the set, \
                     then removes it. A server without one writes straight into the set, so it \
                     must be on the hokan host",
                true,
            )],
            parameters: vec![param_info(
                "backup_timeout_minutes",
                "how long one server's differential backup may run before it is stopped and \
                 the backup fails (service stays resumed; the area is released)",
                Some("360"),
            )],
            commands: vec![
                name_info(
                    "to",
                    "TeamWARE's `to` command (guide 18.9.2): `to tran suspend|resume`, \
                     `to backup on|off`, run on the step's server",
                ),
                name_info(
                    "tobkweb",
                    "TeamWARE's `tobkweb arc|rm` (Web service data), run on the step's server",
                ),
                name_info(
                    "diff-backup",
                    "the differential backup utility (guide 19.7.2), called as `diff-backup \
                     DEST` on the step's server: it backs that server up into DEST, a folder \
                     relative to its working directory (the backup set, or the server's \
                     `dump` directory)",
                ),
            ],
            services: vec![],
            maintenance_markers: vec![],
            command_behaviours: vec![
                behaviour("to", &["tran", "suspend"], 0, Duration::from_secs(20))
                    .effect(SimEffect::service(IN_SERVICE, ServiceState::Stopped)),
                behaviour("to", &["tran", "resume"], 0, Duration::from_secs(5))
                    .effect(SimEffect::service(IN_SERVICE, ServiceState::Running)),
                behaviour("to", &["backup", "on"], 0, Duration::from_secs(10))
                    .effect(SimEffect::service(BACKUP_AREA, ServiceState::Running)),
                behaviour("to", &["backup", "off"], 0, Duration::from_secs(10))
                    .effect(SimEffect::service(BACKUP_AREA, ServiceState::Stopped)),
                behaviour("tobkweb", &["arc"], 0, Duration::from_secs(60))
                    .effect(SimEffect::service(WEB_FILES, ServiceState::Running)),
                behaviour("tobkweb", &["rm"], 0, Duration::from_secs(5))
                    .effect(SimEffect::service(WEB_FILES, ServiceState::Stopped)),
                // It writes the server's backup into the folder named after the server, in
                // its working directory.
                behaviour("diff-backup", &[], 0, Duration::from_secs(30 * 60)).effect(
                    SimEffect::create_file(Root::CWD.join("{server}/database.bak")),
                ),
            ],
            roles: vec![
                role_info(
                    DIRECTORY,
                    "the directory server (a single-server system has only this one)",
                    1,
                    Some(1),
                    web(),
                ),
                role_info(APPLICATION, "an application server", 0, None, web()),
            ],
            modelled_states: vec![
                modelled_state(
                    IN_SERVICE,
                    "the server serves clients (stopped between `to tran suspend` and `to \
                     tran resume`)",
                    ServiceState::Running,
                ),
                modelled_state(
                    BACKUP_AREA,
                    "the backup area is reserved (from `to backup on` to `to backup off`)",
                    ServiceState::Stopped,
                ),
                modelled_state(
                    WEB_FILES,
                    "the files `tobkweb arc` makes exist (until `tobkweb rm`)",
                    ServiceState::Stopped,
                ),
            ],
            conflicts: vec![
                conflict(
                    "user-management",
                    "user-management operations (accounts, templates) during an online backup \
                     may be lost or applied only in part",
                    &["backup"],
                    Some(GUIDE),
                ),
                conflict(
                    "searchpro-indexing",
                    "SearchPro index creation loads the server and can keep the online backup \
                     from starting; the index creation may fail as well",
                    &["backup"],
                    Some(GUIDE),
                ),
            ],
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

hokan_sdk::export_plugin!(TeamWare);

/// The servers of the system as the backup needs them.
struct System {
    directory: String,
    applications: Vec<String>,
    /// Servers with the Web service, application servers first (step 3's order).
    web: Vec<String>,
}

impl System {
    fn from_topology(t: &Topology) -> Result<System, PlanError> {
        // The host checks the roles against `describe()`; this guards a plugin run without it.
        let directory = match t.job_servers_with_role(DIRECTORY).as_slice() {
            [d] => (*d).clone(),
            other => {
                return Err(PlanError::BadParameter(format!(
                    "job `{}` needs exactly one server with role `{DIRECTORY}` among its \
                     servers (jobs.{}.servers); it has {}",
                    t.job,
                    t.job,
                    other.len()
                )));
            }
        };
        let applications: Vec<Server> = t
            .job_servers_with_role(APPLICATION)
            .into_iter()
            .cloned()
            .collect();
        let mut web = Vec::new();
        for s in applications.iter().chain([&directory]) {
            if s.flag(WEB_SERVICE, false)? {
                web.push(s.name.clone());
            }
        }
        Ok(System {
            directory: directory.name,
            applications: applications.into_iter().map(|s| s.name).collect(),
            web,
        })
    }

    /// Every server: application servers, then the directory server.
    fn all(&self) -> Vec<&str> {
        self.applications
            .iter()
            .map(String::as_str)
            .chain([self.directory.as_str()])
            .collect()
    }

    fn web_applications(&self) -> Vec<&str> {
        self.web
            .iter()
            .map(String::as_str)
            .filter(|s| *s != self.directory)
            .collect()
    }

    fn directory_has_web(&self) -> bool {
        self.web.contains(&self.directory)
    }
}

/// A `dump` not per server is refused: which server would it be on?
fn refuse_one_dump() -> Result<(), PlanError> {
    match facts::is_dir(&DUMP.path()) {
        Err(FactError::RootNotGranted(_)) => Ok(()),
        _ => Err(PlanError::Refused(
            "the job's root `dump` names one directory, but every server's backup writes \
             into its own: give one per server, `dump = { servers = { tw-app1 = \
             \"/var/tmp/hokan-tw\", ... } }`"
                .into(),
        )),
    }
}

/// Where server `s`'s differential backup writes: its `dump` directory when the site grants
/// one there, else the set.
fn backup_dir(s: &str) -> Result<Option<Path>, PlanError> {
    let dump = DUMP.on(s);
    match facts::is_dir(&dump) {
        Ok(true) => Ok(Some(dump)),
        Err(FactError::RootNotGranted(_)) => Ok(None),
        Ok(false) | Err(FactError::NotFound(_)) => Err(PlanError::Refused(format!(
            "the job's `dump` directory on {s} is not a directory there: make it (empty), or \
             remove {s} from `dump` to have its backup written straight into the set"
        ))),
        Err(e) => Err(e.into()),
    }
}

fn to(args: [&str; 2]) -> Action {
    Action::exec("to", args)
}

fn backup(req: &Request) -> Result<Plan, PlanError> {
    let sys = System::from_topology(&facts::topology())?;
    let minutes: u64 = req
        .required_param("backup_timeout_minutes")?
        .parse()
        .ok()
        .filter(|m| *m > 0)
        .ok_or_else(|| {
            PlanError::BadParameter(
                "parameter `backup_timeout_minutes` must be a whole number of minutes, at \
                 least 1"
                    .into(),
            )
        })?;
    let backup_limit = Duration::from_secs(minutes * 60);
    let multi = !sys.applications.is_empty();
    refuse_one_dump()?;
    let mut dumps = Vec::new();
    for s in sys.all() {
        if let Some(d) = backup_dir(s)? {
            dumps.push((s, d));
        }
    }
    let written_in = |s: &str| -> Path {
        dumps
            .iter()
            .find(|(d, _)| *d == s)
            .map_or_else(|| SET.path(), |(_, d)| d.clone())
    };
    let mut plan = PlanBuilder::new();

    // The utility writes into an empty folder, as it does into a new set. The cleanup removes
    // what it wrote whatever happened, so a folder there now is not this run's: an earlier
    // run's whose cleanup has not run yet (`hokan recover` runs it), or someone else's.
    for (s, dump) in &dumps {
        plan.step(
            &format!("check-dump-{s}-empty"),
            &format!("Check the `dump` directory on {s} holds no earlier backup"),
            Action::assert(
                Condition::absent(dump.join(s)),
                &format!(
                    "{s}/ in the `dump` directory on {s} is not this run's (an earlier run \
                     whose cleanup has not run yet, or something else): run `hokan recover`, \
                     or move it away, then run again"
                ),
            ),
        )
        .on(s);
    }

    // 1. Suspend service: application servers first, then the directory server.
    plan.together(
        "suspend-applications",
        "Suspend service on the application servers",
        |g| {
            for s in &sys.applications {
                g.step(
                    &format!("suspend-{s}"),
                    &format!("Suspend service on application server {s} (to tran suspend)"),
                    to(["tran", "suspend"]),
                )
                .on(s)
                .timeout(TO_LIMIT);
            }
        },
    );
    let d = sys.directory.as_str();
    plan.step(
        &format!("suspend-{d}"),
        &if multi {
            format!("Then suspend service on directory server {d} (to tran suspend)")
        } else {
            format!("Suspend service on {d} (to tran suspend)")
        },
        to(["tran", "suspend"]),
    )
    .on(d)
    .timeout(TO_LIMIT);

    // 2. Reserve the backup area on every server.
    plan.together(
        "backup-on",
        "Reserve the backup area on every server",
        |g| {
            for s in sys.all() {
                g.step(
                    &format!("backup-on-{s}"),
                    &format!("Reserve the backup area on {s} (to backup on)"),
                    to(["backup", "on"]),
                )
                .on(s)
                .timeout(TO_LIMIT);
            }
        },
    );

    // 3. Web service data, where installed: application servers, then the directory server.
    plan.together(
        "tobkweb-arc-applications",
        "Make the Web service data backup-able on the application servers",
        |g| {
            for s in sys.web_applications() {
                g.step(
                    &format!("tobkweb-arc-{s}"),
                    &format!("Make the Web service data backup-able on {s} (tobkweb arc)"),
                    Action::exec("tobkweb", ["arc"]),
                )
                .on(s)
                .timeout(TOBKWEB_LIMIT);
            }
        },
    );
    if sys.directory_has_web() {
        plan.step(
            &format!("tobkweb-arc-{d}"),
            &format!("Make the Web service data backup-able on {d} (tobkweb arc)"),
            Action::exec("tobkweb", ["arc"]),
        )
        .on(d)
        .timeout(TOBKWEB_LIMIT);
    }

    // 4. Resume service: the directory server first, then the application servers.
    plan.step(
        &format!("resume-{d}"),
        &if multi {
            format!("Resume service on directory server {d} first (to tran resume)")
        } else {
            format!("Resume service on {d} (to tran resume)")
        },
        to(["tran", "resume"]),
    )
    .on(d)
    .timeout(TO_LIMIT);
    plan.together(
        "resume-applications",
        "Then resume service on the application servers",
        |g| {
            for s in &sys.applications {
                g.step(
                    &format!("resume-{s}"),
                    &format!("Resume service on application server {s} (to tran resume)"),
                    to(["tran", "resume"]),
                )
                .on(s)
                .timeout(TO_LIMIT);
            }
        },
    );

    // 5. "差分バックアップユーティリティを使用して、すべてのサーバでバックアップします。" The
    //    differential backup on every server, each into its own folder: of the set, or of its
    //    `dump` directory there.
    plan.together("backup", "Back up every server", |g| {
        for s in sys.all() {
            let dir = written_in(s);
            g.step(
                &format!("backup-{s}"),
                &if dir.root == SET.name() {
                    format!("Back up {s} with the differential backup utility into {s}/")
                } else {
                    format!(
                        "Back up {s} with the differential backup utility into {s}/ of the \
                         `dump` directory there"
                    )
                },
                Action::exec_in(&dir.root, "diff-backup", [s]),
            )
            .on(s)
            .timeout(backup_limit);
        }
    });
    for s in sys.all() {
        plan.step(
            &format!("check-backup-{s}"),
            &format!("Check the backup of {s} wrote its folder"),
            Action::assert(
                Condition::exists(written_in(s).join(s)),
                &format!("the differential backup of {s} exited successfully but wrote nothing"),
            ),
        );
    }

    // 6. Remove the files of step 3, in any order.
    plan.together("tobkweb-rm", "Remove the Web service backup files", |g| {
        for s in &sys.web {
            g.step(
                &format!("tobkweb-rm-{s}"),
                &format!("Remove the Web service backup files on {s} (tobkweb rm)"),
                Action::exec("tobkweb", ["rm"]),
            )
            .on(s)
            .timeout(TOBKWEB_LIMIT);
        }
    });

    // 7. Every backup has finished (the group above waited for all): release the area on
    //    every server, in any order.
    plan.together(
        "backup-off",
        "Release the backup area on every server",
        |g| {
            for s in sys.all() {
                g.step(
                    &format!("backup-off-{s}"),
                    &format!("Release the backup area on {s} (to backup off)"),
                    to(["backup", "off"]),
                )
                .on(s)
                .timeout(TO_LIMIT);
            }
        },
    );

    // Every server is back to normal: carry each backup taken in a `dump` into the set, each
    // file's digest checked as it arrives.
    for (s, dump) in &dumps {
        plan.step(
            &format!("copy-dump-{s}"),
            &format!("Copy the backup of {s} from its `dump` directory into the set"),
            Action::copy_tree(dump.join(s), SET.join(s)),
        );
    }

    // The failure path: undo, in the guide's orders, what the body began and did not finish.
    for s in [d]
        .into_iter()
        .chain(sys.applications.iter().map(String::as_str))
    {
        plan.cleanup_undo(
            &format!("cleanup-resume-{s}"),
            &format!("If service on {s} is still suspended, resume it (to tran resume)"),
            to(["tran", "resume"]),
            &format!("suspend-{s}"),
            &format!("resume-{s}"),
        )
        .on(s)
        .timeout(TO_LIMIT)
        .retries(2);
    }
    for s in &sys.web {
        plan.cleanup_undo(
            &format!("cleanup-tobkweb-rm-{s}"),
            &format!(
                "If the Web service backup files on {s} are still there, remove them (tobkweb rm)"
            ),
            Action::exec("tobkweb", ["rm"]),
            &format!("tobkweb-arc-{s}"),
            &format!("tobkweb-rm-{s}"),
        )
        .on(s)
        .timeout(TOBKWEB_LIMIT)
        .retries(2);
    }
    for s in sys.all() {
        plan.cleanup_undo(
            &format!("cleanup-backup-off-{s}"),
            &format!("If the backup area on {s} is still reserved, release it (to backup off)"),
            to(["backup", "off"]),
            &format!("backup-on-{s}"),
            &format!("backup-off-{s}"),
        )
        .on(s)
        .timeout(TO_LIMIT)
        .retries(2);
    }

    // The backup in a `dump` is removed whatever happened: once copied it is in the set, and
    // a backup that did not reach the set is of no use (the next run takes a new one).
    for (s, dump) in &dumps {
        plan.cleanup(
            &format!("empty-dump-{s}"),
            &format!("Remove the backup of {s} from its `dump` directory"),
            Action::remove(dump.join(s)),
        )
        .when(Condition::step_started(&format!("backup-{s}")))
        .when(Condition::exists(dump.join(s)))
        .retries(2);
    }

    plan.warn(format!(
        "From `to tran suspend` to `to tran resume` clients cannot use TeamWARE (Admin, \
         Directory, Mail, Calendar, Forum, Web, IMAP4, POP3, X.400, Fax...) and get errors; \
         they work again once service is resumed. ({GUIDE})"
    ));
    plan.warn(
        "During the whole online backup, make no user-management changes and do not build \
         SearchPro indexes: the scheduler keeps hokan's backups apart from the times the \
         site declares for them, but work started by hand is not known to it.",
    );
    Ok(plan.build())
}
