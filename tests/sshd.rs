//! A real OpenSSH server standing in for a customer's server: Debian's `sshd` (which `cargo
//! xtask test` installs from `openssh-server` when missing) on 127.0.0.1 and a port of its own,
//! with its own host key, its own client key and its own directory, started for one test and
//! stopped by its PID when the value is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's sshd.
const SSHD: &str = "/usr/sbin/sshd";

/// One running `sshd -D`.
pub struct Sshd {
    /// Its directory: keys, config, log, and whatever the test puts there as the server's files.
    pub dir: tempfile::TempDir,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
    child: Child,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "hokan-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs (openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Sshd {
    /// Starts one, accepting the client key [`Sshd::identity`] for this user.
    pub fn start() -> Sshd {
        Self::start_with_env(&[])
    }

    /// [`Sshd::start`], each session (so the agent, and every command it starts) also getting
    /// `env`, as sshd's `SetEnv` gives it: the stand-ins' state and log directories, which on a
    /// real server would be the product's own.
    pub fn start_with_env(env: &[(&str, &Path)]) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: `cargo xtask test` installs Debian's openssh-server"
        );
        // sshd running as root wants its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client"));
        std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
        // A port the kernel just gave out; sshd may still lose it to another test, so a start
        // that cannot bind is tried again on another (bounded).
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let config = d.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1:{port}\n\
                     HostKey {d}/host_key\n\
                     PidFile {d}/sshd.pid\n\
                     AuthorizedKeysFile {d}/authorized_keys\n\
                     StrictModes no\n\
                     UsePAM no\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\n\
                     AllowTcpForwarding no\n\
                     X11Forwarding no\n\
                     SetEnv HOKAN_AGENT_LEDGER={d}/ledger{more}\n",
                    d = d.display(),
                    more = env
                        .iter()
                        .map(|(k, v)| format!(" \"{k}={}\"", v.display()))
                        .collect::<String>()
                ),
            )
            .unwrap();
            match listen(d) {
                Ok(child) => return Sshd { dir, port, child },
                Err(said) => assert!(
                    said.contains("Address already in use"),
                    "sshd did not start: {said}"
                ),
            }
        }
        panic!("sshd found no free port in 5 tries");
    }

    /// The server goes down: its listener and every session (so every connection to it) are
    /// killed, as a machine that lost power would drop them. Commands its agent started
    /// detached run on.
    pub fn stop(&mut self) {
        self.drop_sessions();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every connection to the server drops, as a network cut or a killed session would drop
    /// it: each session's sshd process is killed, the listener stays, and a new connection is
    /// accepted at once. The agent of a dropped session sees its stdin close; commands it
    /// started detached run on.
    pub fn drop_sessions(&self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &self.child.id().to_string()])
            .status();
    }

    /// The server is back: sshd listens again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.stop();
        self.child = listen(self.dir.path())
            .unwrap_or_else(|said| panic!("sshd did not start again: {said}"));
    }

    /// The client's private key, which this sshd accepts.
    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("client")
    }

    /// A known_hosts line pinning this server's host key.
    pub fn known_hosts_line(&self) -> String {
        let key = std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap();
        let mut parts = key.split_whitespace();
        let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {blob}\n", self.port)
    }

    /// The SHA256 fingerprint of its host key, as ssh-keygen prints it (`SHA256:…`).
    pub fn fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join("host_key.pub"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }

    /// A `[[servers]]` table for it: `transport = "ssh"` to this port with the client key,
    /// `hokan` (the one built beside the test) as its agent.
    pub fn server_toml(&self, name: &str, role: &str) -> String {
        self.server_toml_with(name, role, &crate::hokan_bin())
    }

    /// [`Sshd::server_toml`] with `agent` as the server's hokan.
    pub fn server_toml_with(&self, name: &str, role: &str, agent: &Path) -> String {
        format!(
            "[[servers]]\nname = \"{name}\"\nrole = \"{role}\"\naddress = \"127.0.0.1\"\n\
             transport = \"ssh\"\nport = {}\nidentity = \"{}\"\nagent = \"{}\"\n",
            self.port,
            self.identity().display(),
            agent.display()
        )
    }

    /// Lets the client key run `command` only, whatever the client asks for, as the docs tell
    /// operators to restrict hokan's key (`restrict,command="…"` in authorized_keys).
    pub fn force_command(&self, command: &str) {
        let key = std::fs::read_to_string(self.dir.path().join("client.pub")).unwrap();
        std::fs::write(
            self.dir.path().join("authorized_keys"),
            format!("restrict,command=\"{command}\" {key}"),
        )
        .unwrap();
    }

    /// The listening sshd's process id; each connection's session is a child of it.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's ledger on this "server": each command it ran, by id.
    pub fn ledger(&self) -> PathBuf {
        self.dir.path().join("ledger")
    }

    /// What sshd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

/// Starts `sshd -D` with the config in `d` and waits (bounded) until it listens; `Err` with what
/// it logged when it did not.
fn listen(d: &Path) -> Result<Child, String> {
    let log = d.join("sshd.log");
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    // A restart appends to the same log: only what this one logs counts.
    let from = logged().len();
    let mut child = Command::new(SSHD)
        .args(["-D", "-f"])
        .arg(d.join("sshd_config"))
        .arg("-E")
        .arg(&log)
        .stdin(Stdio::null())
        .spawn()
        .expect("sshd starts");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let said = logged().get(from..).unwrap_or_default().to_string();
        if said.contains("Server listening on") {
            return Ok(child);
        }
        if child.try_wait().unwrap().is_some() || Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(said);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Sshd {
    /// Stops it by its PID (its children, the sessions, end with it).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
