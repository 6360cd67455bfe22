//! The part of `cargo xtask demo` that reaches a server over ssh: a real sshd on 127.0.0.1
//! (Debian's, with its own host and client keys, as the tests start it) stands in for a
//! customer's server holding mailwise's data. hokan backs the data up over ssh to a set on the
//! host, checks the set, and restores it onto the server. The sshd is stopped by its PID at the
//! end, and its directory, the stand-in server, goes with it.
//!
//! usage: demo-over-ssh DEMO-DIR HOKAN PLUGIN-DIR CACHE-DIR

use hokan_e2e::MailwiseTree;
use hokan_e2e::sshd::Sshd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    // Absolute: the hokan path is the agent's on the "server", whose login starts elsewhere.
    let args: Vec<PathBuf> = std::env::args_os()
        .skip(1)
        .map(|a| std::path::absolute(PathBuf::from(a)).expect("a path"))
        .collect();
    let [demo, hokan, plugins, cache] = args.as_slice() else {
        eprintln!("usage: demo-over-ssh DEMO-DIR HOKAN PLUGIN-DIR CACHE-DIR");
        return ExitCode::from(2);
    };
    let site = demo.join("ssh-site");
    if site.exists() {
        std::fs::remove_dir_all(&site).expect("cannot clear the old demo site");
    }
    std::fs::create_dir_all(&site).unwrap();
    let sshd = Sshd::start();
    let data = sshd.dir.path().join("srv/mailwise");
    MailwiseTree::default().build(&data);
    std::fs::write(site.join("known_hosts"), sshd.known_hosts_line()).unwrap();
    let policy = site.join("remote-hq.toml");
    let standin = hokan_e2e::repo_root().join("tests/fixtures/standins/mw-maintenance");
    std::fs::write(
        &policy,
        format!(
            "# mailwise on a server reached over ssh (a real sshd on 127.0.0.1:{port}, for the demo)\n\
             [site]\nname = \"remote-hq\"\ntimezone = \"Asia/Tokyo\"\nknown_hosts = \"known_hosts\"\n\n\
             {server}\n\
             [jobs.mailwise]\nplugin = \"mailwise\"\nservers = [\"mw1\"]\nbackup_root = \"backups\"\n\
             roots = {{ data = {{ server = \"mw1\", path = \"{data}\" }} }}\n\
             commands = {{ maintenance-mode = \"{standin}\" }}\n\
             params = {{ maintenance_method = \"command\" }}\n",
            port = sshd.port,
            server = sshd.server_toml_with("mw1", "mailwise", hokan),
            data = data.display(),
            standin = standin.display(),
        ),
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let steps: [(&str, Vec<&str>); 3] = [
        ("servers check", vec!["servers", "check", p]),
        (
            "backup",
            vec!["run", p, "--job", "mailwise", "--op", "backup"],
        ),
        (
            "restore onto the server",
            vec!["run", p, "--job", "mailwise", "--op", "restore", "--yes"],
        ),
    ];
    for (what, args) in steps {
        println!("\n=== over ssh: hokan {}", args.join(" "));
        if !hokan_cmd(hokan, plugins, cache, &site, &args) {
            eprintln!("the demo over ssh failed at its {what}");
            return ExitCode::FAILURE;
        }
        if what == "backup" {
            let set = newest_set(&site.join("backups/remote-hq/mailwise"));
            println!("\n=== over ssh: hokan verify {}", set.display());
            if !hokan_cmd(
                hokan,
                plugins,
                cache,
                &site,
                &["verify", set.to_str().unwrap()],
            ) {
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "\nmailwise's data was on the \"server\" {}, reached over ssh; its set is in {}",
        data.display(),
        site.join("backups").display()
    );
    ExitCode::SUCCESS
}

/// Runs hokan with the demo's plugins, cache and a state directory in `site`; whether it
/// succeeded. Its output is the demo's.
fn hokan_cmd(hokan: &Path, plugins: &Path, cache: &Path, site: &Path, args: &[&str]) -> bool {
    Command::new(hokan)
        .arg("--plugin-dir")
        .arg(plugins)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--state-dir")
        .arg(site.join("state"))
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// The newest complete set of a job's directory.
fn newest_set(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("the backup wrote its job's directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("manifest.json").exists())
        .max()
        .expect("the backup wrote a set")
}
