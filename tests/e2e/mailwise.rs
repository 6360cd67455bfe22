//! The mailwise plugin planned against fixture trees: a snapshot of every operation's plan, and
//! the refusals its manual calls for.

use hokan::facts::RealFacts;
use hokan::plan::document::PlanDocument;
use hokan::plan::model::TimeWindow;
use hokan::planner::{self, PlanInput, PlanJobError, PluginDir};
use hokan::policy::Policy;
use hokan::runtime::{Limits, PlanRefusal, Plugin, Runtime};
use hokan_e2e::{MAILWISE_POLICY, MailwiseTree, Site, TestFacts, plugin_dir};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 2026-11-21T02:10:00Z, the moment every plan here is made.
const NOW_SECS: u64 = 1_795_227_000;
/// Ids of sets: one an hour before NOW, one three days before.
const FRESH_SET: &str = "20261121T011000Z";
const OLD_SET: &str = "20261118T021000Z";
const GIB: u64 = 1 << 30;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

struct Loaded {
    rt: Runtime,
    plugin: Plugin,
    _cache: tempfile::TempDir,
}

/// One runtime and one compiled mailwise for all tests here.
fn mailwise() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| {
        let (rt, cache) = crate::runtime(Limits::default());
        let plugin = rt
            .load(&hokan_e2e::component("mailwise.wasm"), None)
            .expect("mailwise loads");
        Loaded {
            rt,
            plugin,
            _cache: cache,
        }
    })
}

/// A site with the default mailwise tree, an old and a fresh backup set, and a fresh install on
/// the standby server.
fn site() -> Site {
    let site = Site::new(MAILWISE_POLICY);
    let tree = MailwiseTree::default();
    tree.build(&site.path("data"));
    for id in [OLD_SET, FRESH_SET] {
        tree.build_set(&site.path(&format!("backups/test-site/mailwise/{id}")));
    }
    MailwiseTree {
        mail_spaces: vec![],
        archives: vec![],
        db_bytes: 64,
        ..MailwiseTree::default()
    }
    .build(&site.path("standby"));
    site
}

fn plan_with_space(
    site: &Site,
    job: &str,
    op: &str,
    free: &[(&str, u64)],
) -> Result<PlanDocument, PlanJobError> {
    plan_in(site, job, op, free, None)
}

/// 2026-11-21 at `hh:mm` in Tokyo (the test sites' time zone), in ms; the plans' clock reads
/// 11:10 there.
fn tokyo(hh: i64, mm: i64) -> i64 {
    (NOW_SECS as i64 + ((hh - 11) * 3600 + (mm - 10) * 60)) * 1000
}

/// A plan given the window `[start, end)` (as `hokan run --window` or a scheduled slot).
fn plan_in(
    site: &Site,
    job: &str,
    op: &str,
    free: &[(&str, u64)],
    window: Option<(i64, i64)>,
) -> Result<PlanDocument, PlanJobError> {
    let m = mailwise();
    let policy = Policy::load(&site.policy()).expect("policy loads");
    let job = policy.job(job).expect("job exists");
    let input = PlanInput {
        operation: op,
        set: None,
        now: now(),
        links: true,
        window: window.map(|(start_ms, end_ms)| TimeWindow { start_ms, end_ms }),
    };
    let prepared = planner::prepare(
        &policy,
        job,
        m.plugin.description(),
        &input,
        &hokan::sets::OnDisk,
    )?;
    let real = RealFacts::open(prepared.roots.clone(), prepared.topology.clone())
        .unwrap()
        .with_now_ms(NOW_SECS as i64 * 1000);
    let facts = free.iter().fold(
        TestFacts::new(real).other_roots_free(50 * GIB),
        |f, (root, bytes)| f.free(root, *bytes),
    );
    planner::plan_with(
        &m.rt.bind(&m.plugin),
        &policy,
        job,
        &prepared,
        Arc::new(facts),
    )
}

fn plan(site: &Site, job: &str, op: &str) -> PlanDocument {
    plan_with_space(site, job, op, &[]).unwrap_or_else(|e| panic!("{op} plans: {e}"))
}

fn refusal(result: Result<PlanDocument, PlanJobError>) -> String {
    match result {
        Err(PlanJobError::Refused {
            refusal: PlanRefusal::Refused(m),
            ..
        }) => m,
        Err(e) => panic!("expected the plugin to refuse, got another error: {e}"),
        Ok(_) => panic!("expected the plugin to refuse, but it planned"),
    }
}

macro_rules! snapshot {
    ($name:expr, $doc:expr) => {
        insta::assert_json_snapshot!($name, $doc, { ".plugin.sha256" => "[sha256]" })
    };
}

#[test]
fn plan_backup() {
    let site = site();
    let doc = plan(&site, "mailwise", "backup");
    assert_eq!(doc.set.as_deref(), Some("20261121T021000Z"));
    snapshot!("backup", doc);
}

#[test]
fn plan_restore() {
    let site = site();
    let doc = plan(&site, "mailwise", "restore");
    assert_eq!(
        doc.set.as_deref(),
        Some(FRESH_SET),
        "the newest set by default"
    );
    snapshot!("restore", doc);
}

#[test]
fn plan_restore_elsewhere() {
    let site = site();
    let doc = plan(&site, "standby", "restore-elsewhere");
    snapshot!("restore-elsewhere", doc);
}

#[test]
fn plan_maintenance_on_and_off() {
    let site = site();
    snapshot!(
        "maintenance-on",
        plan_in(
            &site,
            "mailwise",
            "maintenance-on",
            &[],
            Some((tokyo(13, 0), tokyo(15, 30)))
        )
        .unwrap()
    );
    snapshot!(
        "maintenance-off",
        plan(&site, "mailwise", "maintenance-off")
    );
}

#[test]
fn plan_restore_test() {
    let site = site();
    let doc = plan(&site, "mailwise", "restore-test");
    assert_eq!(
        doc.set.as_deref(),
        Some(FRESH_SET),
        "the newest set by default"
    );
    snapshot!("restore-test", doc);
}

#[test]
fn plan_archive() {
    let site = site();
    snapshot!("archive", plan(&site, "mailwise", "archive"));
}

#[test]
fn restore_from_a_named_set() {
    let site = site();
    let m = mailwise();
    let policy = Policy::load(&site.policy()).unwrap();
    let input = PlanInput {
        operation: "restore",
        set: Some(OLD_SET),
        now: now(),
        links: true,
        window: None,
    };
    let doc = planner::plan_job(
        &m.rt.bind(&m.plugin),
        &policy,
        policy.job("mailwise").unwrap(),
        &input,
    )
    .unwrap();
    assert_eq!(doc.set.as_deref(), Some(OLD_SET));
    let missing = PlanInput {
        set: Some("20200101T000000Z"),
        ..input
    };
    let e = planner::plan_job(
        &m.rt.bind(&m.plugin),
        &policy,
        policy.job("mailwise").unwrap(),
        &missing,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no complete backup set `20200101T000000Z`") && e.contains(FRESH_SET),
        "{e}"
    );
}

/// The manual (mailwise-maintenance, 退避処理): "次の両方の空き容量があるか確認してください。
/// (データディレクトリ)/mw/dataフォルダ容量の2倍の空き容量 / (データディレクトリ)/mw/file/すべての
/// ws[数字]フォルダ容量の合計値分の空き容量": free space for both at once, twice mw/data and
/// the total of the mail spaces; and "DiskFreeSpaceの値が10MBを切ると、安全のためメールワイズが
/// 動作しなくなります": 10 MB left over.
#[test]
fn archive_needs_both_of_the_manuals_amounts_together_and_ten_megabytes_more() {
    let site = Site::new(MAILWISE_POLICY);
    MailwiseTree {
        db_bytes: 1 << 20,
        mail_bytes: 2_000_000,
        ..MailwiseTree::default()
    }
    .build(&site.path("data"));
    hokan_e2e::write_manifest(&site.path(&format!("backups/test-site/mailwise/{FRESH_SET}")));
    let data: u64 = 6 * (1 << 20) + 23; // three databases, three mirrors, config.ini
    let ws_total: u64 = 3 * 3 * 2_000_000; // ws1, ws2, ws10, three mails each
    let need = 2 * data + ws_total + (10 << 20);
    // Enough for either rule alone (what the plugin used to ask): not enough.
    let either = (2 * data).max(ws_total) + (10 << 20);
    for free in [either, need - 1] {
        let e = refusal(plan_with_space(
            &site,
            "mailwise",
            "archive",
            &[("data", free)],
        ));
        assert!(
            e.contains(&format!("archive needs {need} bytes free")),
            "{e}"
        );
        assert!(
            e.contains(&format!("twice mw/data ({} bytes)", 2 * data)),
            "{e}"
        );
        assert!(
            e.contains(&format!("mw/file/ws<N> ({ws_total} bytes)")),
            "{e}"
        );
        assert!(e.contains(&format!("the data volume has {free}")), "{e}");
    }
    // Exactly enough is enough, and the run checks the same figure again before mwsave starts.
    let doc = plan_with_space(&site, "mailwise", "archive", &[("data", need)]).unwrap();
    let check = serde_json::to_value(&doc.plan.steps[0]).unwrap();
    assert_eq!(check["action"]["condition"]["bytes"], need);
}

#[test]
fn archive_never_plans_below_ten_megabytes() {
    let site = site();
    let e = refusal(plan_with_space(
        &site,
        "mailwise",
        "archive",
        &[("data", (10 << 20) - 1)],
    ));
    assert!(
        e.contains("plus the 10 MB mailwise needs to keep working")
            && e.contains("plus 10485760 bytes"),
        "{e}"
    );
}

/// The manual (mailwise-maintenance, 退避処理の実行ファイルを作成する): "指定する日付以前のデータ
/// を退避する実行ファイルを作成します", (データディレクトリー)/mwsave or mwsave.bat, made in System
/// settings with a mail space and a date. Without it there is nothing to run; one older than
/// the last archive was made for that run, with its mail space and its date.
#[test]
fn archive_needs_a_command_file_made_since_the_last_archive() {
    let site = Site::new(MAILWISE_POLICY);
    let tree = MailwiseTree {
        archive_command: false,
        ..MailwiseTree::default()
    };
    tree.build(&site.path("data"));
    hokan_e2e::write_manifest(&site.path(&format!("backups/test-site/mailwise/{FRESH_SET}")));
    let e = refusal(plan_with_space(&site, "mailwise", "archive", &[]));
    assert!(
        e.contains("there is no archive command file (data:/mwsave or data:/mwsave.bat)")
            && e.contains("Archive past data (過去データの退避)"),
        "{e}"
    );
    // Windows' name does as well.
    std::fs::write(site.path("data/mwsave.bat"), "rem made by mailwise\r\n").unwrap();
    plan_with_space(&site, "mailwise", "archive", &[]).expect("mwsave.bat is the command file");
    // Made before the last archive (mw/back10, a day ago): the last run's.
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(site.path("data/mwsave.bat"))
        .and_then(|f| f.set_modified(two_days_ago))
        .unwrap();
    let e = refusal(plan_with_space(&site, "mailwise", "archive", &[]));
    assert!(
        e.contains("data:/mwsave.bat is older than the last archive (data:/mw/back10)")
            && e.contains("Make a new one"),
        "{e}"
    );
}

/// "退避処理の実行中は、途中でサーバーマシンが強制終了しないように注意してください": mwsave is
/// never killed. Past its limit hokan reports it and waits for its end.
#[test]
fn mwsave_is_never_killed_past_its_limit() {
    let site = site();
    let doc = plan_with_space(&site, "mailwise", "archive", &[]).unwrap();
    let mwsave = doc
        .plan
        .all_steps()
        .find(|s| s.id == "mwsave")
        .expect("the archive runs mwsave");
    assert!(mwsave.no_kill, "{mwsave:?}");
    assert!(
        mwsave.timeout_ms.is_some_and(|t| t >= 3_600_000),
        "{mwsave:?}"
    );
}

#[test]
fn archive_refuses_without_a_recent_backup() {
    let site = Site::new(MAILWISE_POLICY);
    let tree = MailwiseTree::default();
    tree.build(&site.path("data"));
    tree.build_set(&site.path(&format!("backups/test-site/mailwise/{OLD_SET}")));
    let e = refusal(plan_with_space(&site, "mailwise", "archive", &[]));
    assert!(
        e.contains("is 72 h old") && e.contains("Run backup first"),
        "{e}"
    );

    let none = Site::new(MAILWISE_POLICY);
    tree.build(&none.path("data"));
    let e = plan_with_space(&none, "mailwise", "archive", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no complete backup set") && e.contains("run the job's backup first"),
        "{e}"
    );
}

/// The manual (mailwise-backup-restore): "データを書き込む際、2つのファイルに同時に同じ内容を
/// 書き込みます。そのため、データベースファイルが破損した場合でも、もう一方のデータベースファイルから
/// 復旧できます": the mirror is there for repair. Nothing in it makes a missing mirror a reason
/// not to back up, and a damaged database is when a backup matters most.
#[test]
fn a_database_without_its_mirror_is_backed_up_with_a_loud_warning() {
    let site = Site::new(MAILWISE_POLICY);
    MailwiseTree {
        missing_mirrors: vec!["address"],
        ..MailwiseTree::default()
    }
    .build(&site.path("data"));
    let doc = plan_with_space(&site, "mailwise", "backup", &[]).expect("a backup is planned");
    assert!(
        doc.plan
            .warnings
            .iter()
            .any(|w| w
                .starts_with("DAMAGED DATABASES: address.odb in mw/data has no mirror .odb.mrr")),
        "{:#?}",
        doc.plan.warnings
    );
    // The checks stay, but a broken pair only makes the run need attention.
    for id in ["check-mirrors", "verify-set-mirrors"] {
        let step = doc.plan.all_steps().find(|s| s.id == id).unwrap();
        assert_eq!(step.on_error, hokan::plan::OnError::Continue, "{id}");
    }
    assert!(doc.plan.all_steps().any(|s| s.id == "copy-data"));
}

#[test]
fn backup_refuses_when_the_medium_is_too_small() {
    let site = site();
    let e = refusal(plan_with_space(
        &site,
        "mailwise",
        "backup",
        &[("set", 1 << 20)],
    ));
    assert!(
        e.contains("the backup set's volume has 1048576 bytes free"),
        "{e}"
    );
}

/// The manual (mailwise-maintenance): "バージョンアップやバックアップ作業などを行うときは、必ず、
/// 手動でメンテナンスモードを設定してください": a backup may run inside an operator's own
/// maintenance session, and must not release a window it did not set. The restore is for
/// "サーバーが異常終了した場合", when a crash may have left maintenance set: it restores inside
/// it, sets the window to cover the run, and releases it at the end, so users never reach the
/// damaged data meanwhile.
#[test]
fn an_existing_maintenance_window_is_worked_in_never_released_by_a_backup() {
    let site = site();
    std::fs::write(site.path("data/mw/data/maint"), "set by an administrator").unwrap();
    let ids = |doc: &PlanDocument| -> Vec<String> {
        doc.plan.all_steps().map(|s| s.id.clone()).collect()
    };
    let backup = plan(&site, "mailwise", "backup");
    let steps = ids(&backup);
    assert!(steps.contains(&"copy-data".to_string()), "{steps:?}");
    assert!(
        !steps.iter().any(|s| s.starts_with("maintenance-")),
        "the backup neither sets nor releases the operator's maintenance: {steps:?}"
    );
    assert!(
        backup
            .plan
            .warnings
            .iter()
            .any(|w| w.contains("runs inside that maintenance session")),
        "{:?}",
        backup.plan.warnings
    );
    assert!(backup.plan.window.is_none(), "the window is the operator's");

    let restore = plan(&site, "mailwise", "restore");
    let steps = ids(&restore);
    for id in ["maintenance-on", "release-maintenance", "maintenance-off"] {
        assert!(steps.contains(&id.to_string()), "{id}: {steps:?}");
    }
    assert!(
        restore
            .plan
            .warnings
            .iter()
            .any(|w| w.contains("already in maintenance mode")
                && w.contains("releases maintenance mode when it ends")),
        "{:?}",
        restore.plan.warnings
    );
    // Setting another window, or archiving (mwsave sets its own), waits for that work to end.
    let e = refusal(plan_with_space(&site, "mailwise", "archive", &[]));
    assert!(e.contains("already in maintenance mode"), "archive: {e}");
    let e = refusal(plan_in(
        &site,
        "mailwise",
        "maintenance-on",
        &[],
        Some((tokyo(13, 0), tokyo(14, 0))),
    ));
    assert!(e.contains("already in maintenance mode"), "{e}");
    // Releasing it is what maintenance-off is for.
    plan(&site, "mailwise", "maintenance-off");
}

/// The manual (mailwise-maintenance): "時間 メンテナンス時間の開始時間と終了時間を選択します。時間は
/// 10分単位で設定できます。", repeated "解除するまで設定した時間に毎日", and users can work "メンテナ
/// ンス時間の前後で". A plan that reads or changes data runs inside the window it sets: the one
/// the run was given (a scheduled slot, or --window), which must fit it, or else one from now
/// for its estimate, in 10-minute steps.
#[test]
fn a_plan_that_changes_data_runs_inside_the_window_it_sets() {
    let site = site();
    let args = |doc: &PlanDocument| -> Vec<String> {
        let on = doc
            .plan
            .all_steps()
            .find(|s| s.id == "maintenance-on")
            .unwrap();
        match &on.action {
            hokan::plan::Action::Exec(e) => e.args.clone(),
            other => panic!("{other:?}"),
        }
    };
    // At 11:10 with no window given, a restore sets one from now for its estimate.
    let restore = plan(&site, "mailwise", "restore");
    let w = restore.plan.window.clone().expect("the restore's window");
    assert_eq!(w.window.start_ms, tokyo(11, 10));
    assert_eq!(w.window.end_ms, tokyo(11, 20));
    assert_eq!(
        (w.from_step.as_str(), w.until_step.as_str()),
        ("stage-data", "release-maintenance")
    );
    assert_eq!(
        args(&restore)[..5],
        ["on", "--start", "11:10", "--end", "11:20"]
    );
    assert!(
        restore
            .plan
            .warnings
            .iter()
            .any(|m| m.contains("Maintenance window 11:10-11:20")),
        "the operator sees it in the plan: {:?}",
        restore.plan.warnings
    );
    // Given a window (a scheduled run's), that one is set, exactly.
    let backup = plan_in(
        &site,
        "mailwise",
        "backup",
        &[],
        Some((tokyo(11, 0), tokyo(13, 30))),
    )
    .unwrap();
    assert_eq!(
        args(&backup)[..5],
        ["on", "--start", "11:00", "--end", "13:30"]
    );
    let w = backup.plan.window.clone().unwrap();
    assert_eq!(
        (w.window.start_ms, w.window.end_ms),
        (tokyo(11, 0), tokyo(13, 30))
    );
    assert_eq!(
        (w.from_step.as_str(), w.until_step.as_str()),
        ("copy-data", "verify-set-mirrors")
    );
    // One that leaves too little of it is refused, with why.
    let e = refusal(plan_in(
        &site,
        "mailwise",
        "backup",
        &[],
        Some((tokyo(10, 0), tokyo(11, 10))),
    ));
    assert!(
        e.contains("leaves 0 min") && e.contains("users would be back"),
        "{e}"
    );
    // One off mailwise's steps cannot be set.
    match plan_in(
        &site,
        "mailwise",
        "backup",
        &[],
        Some((tokyo(11, 5), tokyo(13, 0))),
    ) {
        Err(PlanJobError::Refused {
            refusal: PlanRefusal::BadParameter(m),
            ..
        }) => assert!(m.contains("10-minute steps") && m.contains("11:05"), "{m}"),
        other => panic!("expected a bad parameter, got {other:?}"),
    }
    // maintenance-on is an operator's session: without a window, from now for
    // maintenance_minutes (60), in steps.
    let on = plan(&site, "mailwise", "maintenance-on");
    assert_eq!(args(&on)[..5], ["on", "--start", "11:10", "--end", "12:10"]);
    assert!(on.plan.window.is_none(), "it moves no data");
}

#[test]
fn restore_never_overwrites_an_earlier_restores_data() {
    let site = site();
    std::fs::create_dir_all(site.path("data/mw/data_bak")).unwrap();
    let e = refusal(plan_with_space(&site, "mailwise", "restore", &[]));
    assert!(e.contains("data:/mw/data_bak already exists"), "{e}");
}

#[test]
fn the_plugin_dir_resolves_names_and_paths() {
    let site = site();
    let policy = Policy::load(&site.policy()).unwrap();
    let job = policy.job("mailwise").unwrap();
    assert_eq!(
        PluginDir(plugin_dir()).resolve(&policy, job),
        plugin_dir().join("mailwise.wasm")
    );
}
