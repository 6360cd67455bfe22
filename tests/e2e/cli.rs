//! The `hokan` binary as an operator meets it.

use hokan_e2e::hokan_bin;
use hokan_e2e::{MAILWISE_POLICY, MailwiseTree, Site, plugin_dir};
use std::process::{Command, Output};

fn hokan(site: &Site, args: &[&str]) -> Output {
    Command::new(hokan_bin())
        .arg("--plugin-dir")
        .arg(plugin_dir())
        .arg("--cache-dir")
        .arg(site.path("cache"))
        .args(args)
        .env_remove("HOKAN_LOG")
        .output()
        .unwrap()
}

/// `hokan plan <site's policy> --job JOB --op OP EXTRA...`
fn plan(site: &Site, job: &str, op: &str, extra: &[&str]) -> Output {
    let policy = site.policy();
    let mut args = vec!["plan", policy.to_str().unwrap(), "--job", job, "--op", op];
    args.extend_from_slice(extra);
    hokan(site, &args)
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn site() -> Site {
    let site = Site::new(MAILWISE_POLICY);
    MailwiseTree::default().build(&site.path("data"));
    MailwiseTree::default().build(&site.path("standby"));
    site
}

#[test]
fn plan_json_is_the_documented_document() {
    let site = site();
    let out = plan(&site, "mailwise", "backup", &["--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["format_version"], "3");
    assert_eq!(doc["plugin"]["name"], "mailwise");
    assert_eq!(doc["plugin"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(doc["operation"], "backup");
    let steps = doc["steps"].as_array().unwrap();
    let copy = steps.iter().find(|s| s["id"] == "copy-data").unwrap();
    assert_eq!(copy["action"]["kind"], "copy-tree");
    assert_eq!(
        copy["action"]["from"],
        serde_json::json!({"root": "data", "path": "mw/data"})
    );
    assert_eq!(
        copy["action"]["to"],
        serde_json::json!({"root": "set", "path": "data"})
    );
    for key in [
        "id",
        "title",
        "target",
        "on_error",
        "timeout_ms",
        "retries",
        "action",
    ] {
        assert!(copy.get(key).is_some(), "steps have `{key}`");
    }
    assert_eq!(doc["cleanup"][0]["action"]["kind"], "remove");
    // Planning is read-only: the backup set was not created.
    assert!(!site.path("backups").exists());
}

#[test]
fn plan_text_for_people() {
    let site = site();
    let out = plan(&site, "mailwise", "maintenance-off", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("mailwise 0.5.0 `maintenance-off` for job mailwise at site test-site"),
        "{stdout}"
    );
    assert!(stdout.contains("remove data:/mw/data/maint"), "{stdout}");
}

#[test]
fn validate_reports_policy_errors_with_position() {
    let site = Site::new(&MAILWISE_POLICY.replace("backup_root =", "backup_rot ="));
    let policy = site.policy();
    let out = hokan(&site, &["validate", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("site.toml:17:1: jobs.mailwise.backup_rot: unknown field `backup_rot`"),
        "{stderr}"
    );
}

#[test]
fn validate_checks_jobs_against_their_plugin() {
    let site = Site::new(&MAILWISE_POLICY.replacen(
        r#"maintenance_method = "command" }"#,
        r#"maintenance_methd = "command" }"#,
        1,
    ));
    let policy = site.policy();
    let out = hokan(&site, &["validate", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("jobs.mailwise.params: `maintenance_methd` is not a parameter of mailwise"),
        "{stderr}"
    );

    let good = hokan(
        &site,
        &["validate", site.path("nothing.toml").to_str().unwrap()],
    );
    assert!(
        text(&good.stderr).contains("cannot read the policy"),
        "{}",
        text(&good.stderr)
    );
}

#[test]
fn validate_accepts_the_bundled_policies() {
    let site = site();
    let dir = hokan_e2e::repo_root().join("policies");
    let out = hokan(&site, &["validate", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok: "), "{}", text(&out.stdout));
}

#[test]
fn plugins_lists_and_describes() {
    let site = site();
    let out = hokan(&site, &["plugins"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        ["exchange", "groupmax", "mailwise", "teamware"],
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "backup, restore, restore-elsewhere, maintenance-on, maintenance-off, archive"
        ),
        "{stdout}"
    );

    let out = hokan(&site, &["plugins", "mailwise"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Commands the policy maps:") && stdout.contains("mwsave"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Maintenance marker: data:/mw/data/maint"),
        "{stdout}"
    );

    // A multi-server plugin shows its roles, their properties, its modelled states and the
    // work its backup must not overlap.
    let out = hokan(&site, &["plugins", "teamware"]);
    let stdout = text(&out.stdout);
    for needle in [
        "directory          the directory server (a single-server system has only this one) (exactly 1)",
        "application        an application server (any number)",
        "properties.web_service whether the TeamWARE Web service is installed",
        "backup-area-reserved",
        "searchpro-indexing not during backup",
        "user-management    not during backup",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in\n{stdout}");
    }
}

#[test]
fn unknown_jobs_and_operations_are_explained() {
    let site = site();
    for (job, op, expected) in [
        (
            "nope",
            "backup",
            "there is no job `nope`; this policy has: mailwise, standby",
        ),
        ("mailwise", "defrag", "mailwise has no operation `defrag`"),
        ("standby", "backup", "only restores the sets of another job"),
    ] {
        let out = plan(&site, job, op, &[]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expected), "{job} {op}: {stderr}");
    }
}

#[test]
fn validate_names_each_job_whose_plugin_is_missing() {
    let site =
        Site::new(&MAILWISE_POLICY.replace("plugin = \"mailwise\"", "plugin = \"mailwize\""));
    let policy = site.policy();
    let out = hokan(&site, &["validate", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for job in ["mailwise", "standby"] {
        assert!(
            stderr.contains(&format!("jobs.{job}.plugin: the plugin file "))
                && stderr.contains("mailwize.wasm does not exist"),
            "{job}: {stderr}"
        );
    }
    assert!(stderr.contains("2 error(s)"), "{stderr}");
}

#[test]
fn a_chatty_plugin_cannot_flood_the_terminal() {
    let site = Site::new(
        r#"
[site]
name = "lab"

[jobs.adversary]
plugin = "adversary.wasm"
roots = { data = "data" }
"#,
    );
    std::fs::create_dir_all(site.path("data")).unwrap();
    std::fs::copy(
        hokan_e2e::component("fixtures/adversary.wasm"),
        site.path("adversary.wasm"),
    )
    .unwrap();
    let out = plan(&site, "adversary", "chatter", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("chatter ").count(),
        200,
        "{}",
        &stderr[stderr.len().saturating_sub(500)..]
    );
    assert!(
        stderr.contains("more than 200 log lines in one call; the rest are dropped"),
        "{stderr}"
    );
}
