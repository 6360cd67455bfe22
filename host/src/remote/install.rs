//! `hokan servers install-agent`: puts this hokan on a server as its agent, when the server has
//! none, a broken one, or another version. The agent is this very binary, so the copy is of
//! [`std::env::current_exe`], over the same ssh (pinned host key, `BatchMode`) a run uses.
//!
//! Nothing is copied unless ssh reached the server with its pinned key: an unknown or changed
//! host key, or a server that cannot be reached, is the connection's error, as for a run. The
//! new file is written beside the agent's path and renamed over it once whole, so an agent
//! cut off half way is never the one that starts; it is kept only if it then shakes hands as
//! this version.

use super::ssh::{Session, SshError, options};
use crate::policy::Ssh;
use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};

/// What this hokan reports as its version, and expects of an agent.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What installing found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The server's agent already is this version: nothing was copied.
    AlreadyThere,
    /// This hokan was copied to the agent's path. `replaced`: the version of the agent that
    /// answered there before, or why none did.
    Copied {
        /// What was there before.
        replaced: String,
    },
}

/// Why the agent could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The agent is a bare command name, found on the login's PATH: there is no file to write.
    #[error(
        "server `{server}`: `agent = \"{agent}\"` is found on the login's PATH, so there is no \
         file to install to: set `agent` in its [[servers]] table to the absolute path hokan \
         should have on the server (for example /usr/local/bin/hokan)"
    )]
    NotAPath {
        /// The server.
        server: String,
        /// Its `agent` setting.
        agent: String,
    },
    /// ssh did not reach the server with its pinned key, or the server's shell did not run.
    #[error("{0}")]
    Connection(SshError),
    /// The server is not the system this binary is built for.
    #[error(
        "server `{server}` is `{found}`, and this hokan is built for `{ours}`: build hokan for \
         that system and copy it to {agent} yourself (docs/remote.md says what an agent needs)"
    )]
    OtherSystem {
        /// The server.
        server: String,
        /// `uname -sm` there.
        found: String,
        /// This build's system and machine, as uname says them.
        ours: String,
        /// Its `agent` setting.
        agent: String,
    },
    /// Running the copy over ssh failed.
    #[error("server `{server}`: {what}: {detail}")]
    Remote {
        /// The server.
        server: String,
        /// What was being done.
        what: String,
        /// ssh's or the server's own words.
        detail: String,
    },
    /// The copy is there but does not answer as this version's agent.
    #[error(
        "server `{server}`: hokan was copied to {agent}, but it does not answer as hokan {VERSION}'s agent: {detail}"
    )]
    NotAnswering {
        /// The server.
        server: String,
        /// Its `agent` setting.
        agent: String,
        /// What connecting to it said.
        detail: String,
    },
}

/// Installs this hokan as `server`'s agent at `ssh.agent`, unless the agent there already is
/// this version; `force` copies it all the same.
pub fn install(server: &str, ssh: &Ssh, force: bool) -> Result<Installed, InstallError> {
    if !ssh.agent.starts_with('/') {
        return Err(InstallError::NotAPath {
            server: server.into(),
            agent: ssh.agent.clone(),
        });
    }
    let replaced = match Session::connect(server, ssh, BTreeMap::new()) {
        Ok(s) if s.agent_version() == VERSION && !force => return Ok(Installed::AlreadyThere),
        Ok(s) => format!("hokan {}", s.agent_version()),
        // Logged in, but no agent of ours answered: missing, broken, another protocol.
        Err(e @ SshError::Agent { .. }) => e.to_string(),
        Err(e) => return Err(InstallError::Connection(e)),
    };
    let remote = |what: &str, script: &str, stdin: Stdio| -> Result<String, InstallError> {
        shell(ssh, script, stdin).map_err(|detail| InstallError::Remote {
            server: server.into(),
            what: what.into(),
            detail,
        })
    };
    let found = remote(
        "cannot ask its system (`uname -sm`)",
        "uname -sm",
        Stdio::null(),
    )?;
    let ours = this_system();
    if !same_system(found.trim(), &ours) {
        return Err(InstallError::OtherSystem {
            server: server.into(),
            found: found.trim().into(),
            ours,
            agent: ssh.agent.clone(),
        });
    }
    let exe = std::env::current_exe()
        .and_then(std::fs::File::open)
        .map_err(|e| InstallError::Remote {
            server: server.into(),
            what: "cannot read this hokan to copy it".into(),
            detail: e.to_string(),
        })?;
    let size = exe.metadata().map(|m| m.len()).unwrap_or_default();
    remote(
        &format!("cannot copy hokan to {}", ssh.agent),
        &copy_script(&ssh.agent, size).map_err(|detail| InstallError::Remote {
            server: server.into(),
            what: "cannot quote the agent's path for the server's shell".into(),
            detail,
        })?,
        Stdio::from(exe),
    )?;
    match Session::connect(server, ssh, BTreeMap::new()) {
        Ok(s) if s.agent_version() == VERSION => Ok(Installed::Copied { replaced }),
        Ok(s) => Err(InstallError::NotAnswering {
            server: server.into(),
            agent: ssh.agent.clone(),
            detail: format!("it says it is hokan {}", s.agent_version()),
        }),
        Err(e) => Err(InstallError::NotAnswering {
            server: server.into(),
            agent: ssh.agent.clone(),
            detail: e.to_string(),
        }),
    }
}

/// The script that writes standard input to `agent`: into a temporary file beside it, checked
/// for `size` bytes, made executable, then renamed over it, so that nothing half-written is
/// ever the agent. Quoted for the login's shell, which ssh hands it to as one string.
fn copy_script(agent: &str, size: u64) -> Result<String, String> {
    let p = shlex::try_quote(agent).map_err(|e| e.to_string())?;
    Ok(format!(
        "set -e; p={p}; t=\"$p.hokan-install.$$\"; trap 'rm -f -- \"$t\"' EXIT; \
         mkdir -p -- \"$(dirname -- \"$p\")\"; cat > \"$t\"; \
         n=$(wc -c < \"$t\"); [ \"$n\" -eq {size} ] || {{ echo \"only $n of {size} bytes arrived\" >&2; exit 1; }}; \
         chmod 755 -- \"$t\"; mv -f -- \"$t\" \"$p\"; trap - EXIT"
    ))
}

/// Runs `script` in the login's shell on the server, with `stdin`; its standard output, or
/// what went wrong.
fn shell(ssh: &Ssh, script: &str, stdin: Stdio) -> Result<String, String> {
    let mut child = Command::new("ssh")
        .args(options(ssh))
        .arg("--")
        .arg(&ssh.address)
        .arg(script)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `ssh`: {e}"))?;
    let mut err = child.stderr.take().expect("piped");
    let drain = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let said = drain.join().unwrap_or_default();
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{status}: {}", said.trim()))
    }
}

/// This build's system and machine as `uname -sm` prints them.
fn this_system() -> String {
    let os = match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "freebsd" => "FreeBSD",
        other => other,
    };
    format!("{os} {}", std::env::consts::ARCH)
}

/// Whether `uname -sm` on a server names the system of `ours`: its kernel name and machine;
/// `arm64`, as some systems call aarch64, is the same machine.
fn same_system(found: &str, ours: &str) -> bool {
    let norm = |s: &str| -> (String, String) {
        let mut w = s.split_whitespace();
        let os = w.next().unwrap_or_default().to_ascii_lowercase();
        let arch = match w.next().unwrap_or_default() {
            "arm64" => "aarch64".to_string(),
            "amd64" => "x86_64".to_string(),
            a => a.to_string(),
        };
        (os, arch)
    };
    norm(found) == norm(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_system_this_hokan_is_built_for_takes_it() {
        assert!(same_system("Linux x86_64", "Linux x86_64"));
        assert!(same_system("Linux aarch64", "Linux aarch64"));
        assert!(same_system("FreeBSD amd64", "FreeBSD x86_64"));
        assert!(!same_system("Linux aarch64", "Linux x86_64"));
        assert!(!same_system("AIX 00F84C0C4C00", "Linux x86_64"));
        assert!(!same_system("HP-UX ia64", "Linux x86_64"));
        assert!(!same_system("", "Linux x86_64"));
        assert!(this_system().contains(std::env::consts::ARCH));
    }

    #[test]
    fn the_copy_lands_whole_or_not_at_all_even_at_an_awkward_path() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = tmp.path().join("opt dir/it's/hokan");
        let agent_s = agent.to_str().unwrap();
        let run = |input: &[u8], size: u64| {
            let mut c = Command::new("sh")
                .arg("-c")
                .arg(copy_script(agent_s, size).unwrap())
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            c.stdin.take().unwrap().write_all(input).unwrap();
            c.wait_with_output().unwrap()
        };
        // Cut off: nothing replaces the agent, nothing is left beside it.
        let out = run(b"half", 8);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("only 4 of 8 bytes arrived"));
        assert!(!agent.exists());
        // Whole: there, executable, and no temporary file left.
        let out = run(b"#!/bin/sh\n", 10);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(std::fs::read(&agent).unwrap(), b"#!/bin/sh\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&agent).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let left: Vec<_> = std::fs::read_dir(agent.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["hokan"]);
        // Cut off over an existing agent: the old one stays.
        assert!(!run(b"x", 2).status.success());
        assert_eq!(std::fs::read(&agent).unwrap(), b"#!/bin/sh\n");
    }
}
