//! Site policies: which servers a site has, and which jobs run which plugin with what grants.
//!
//! A policy is a TOML file (see the README's "Policy format"). Every error names the file, the
//! line and column, and the field, and says what to change.

mod notify;
mod schedule;

pub use notify::{HOST_FILE, HostConfig};

pub use schedule::{Schedule, Window, hhmm};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A policy that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    /// The policy file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The field concerned (`jobs.mailwise.roots.data`), when known.
    pub field: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// A server of the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Unique name within the site.
    pub name: String,
    /// Product role (defined by the plugins' manuals).
    pub role: String,
    /// Host name or address; `localhost` for the host's own machine.
    pub address: String,
    /// How hokan reaches it to run commands: `local` for the host's own machine, `ssh` for a
    /// server reached through `hokan agent` over the system ssh; `None` when no transport is
    /// configured, and steps cannot target it.
    pub transport: Option<String>,
    /// How to reach it, when its transport is `ssh`.
    pub ssh: Option<Ssh>,
    /// What the site says about the server for its product's plugin (its `properties` table:
    /// for example whether the Web service is installed), as strings.
    pub properties: BTreeMap<String, String>,
    /// Where its table starts, for later errors about it.
    pub line: usize,
}

impl Server {
    /// Whether hokan reaches it through `hokan agent` over ssh (its commands, roots and
    /// copies go there, not to the host).
    pub fn over_ssh(&self) -> bool {
        self.transport.as_deref() == Some("ssh")
    }
}

/// The transports this host has.
pub const TRANSPORTS: &[&str] = &["local", "ssh"];

/// How hokan reaches a server over ssh: only what the policy must say. Everything else
/// (ProxyJump, certificates, an ssh-agent, ciphers) comes from the system's ssh configuration,
/// as it does for borg and rsync.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Ssh {
    /// The host name or address ssh connects to (the server's `address`).
    pub address: String,
    /// The login (`user`); `None` leaves it to the ssh configuration.
    pub user: Option<String>,
    /// The port (`port`); `None` leaves it to the ssh configuration.
    pub port: Option<u16>,
    /// The private key (`identity`, absolute after loading); `None` leaves it to the ssh
    /// configuration and its agent.
    pub identity: Option<PathBuf>,
    /// The command that starts hokan on the server (`agent`, default `hokan`, looked up on
    /// the login's PATH there).
    pub agent: String,
    /// The site's pinned host keys (`[site] known_hosts`): the only keys ssh accepts for it.
    pub known_hosts: PathBuf,
}

/// How to run a mapped command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct CommandMap {
    /// The executable.
    pub program: String,
    /// Arguments placed before the plan's own.
    pub args: Vec<String>,
}

/// How to control a mapped service: each is a full command line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct ServiceMap {
    /// Starts the service.
    pub start: Vec<String>,
    /// Stops the service.
    pub stop: Vec<String>,
    /// Exits 0 when the service runs, if the site has such a command.
    pub status: Option<Vec<String>>,
}

impl ServiceMap {
    /// Each control's program (the first word of its command line), by control name.
    pub fn programs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("start", Some(&self.start)),
            ("stop", Some(&self.stop)),
            ("status", self.status.as_ref()),
        ]
        .into_iter()
        .filter_map(|(what, line)| Some((what, line?.first()?.as_str())))
    }
}

/// One job: a plugin, its grants and its schedule.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its name (the key under `[jobs]`).
    pub name: String,
    /// The plugin: a name looked up in the plugin directory, or a path to a `.wasm` file.
    pub plugin: String,
    /// SHA-256 the plugin file must have.
    pub plugin_sha256: Option<String>,
    /// Operations the job may run; empty means all the plugin offers.
    pub operations: Vec<String>,
    /// The servers of the product instance.
    pub servers: Vec<String>,
    /// Root names to directories (absolute after loading): on the host, or on the server
    /// `root_servers` names.
    pub roots: BTreeMap<String, PathBuf>,
    /// The roots that are on a server reached over ssh (`roots.data = { server = "mw1", path
    /// = "/opt/..." }`), by root name: their paths are that server's, never the host's.
    pub root_servers: BTreeMap<String, String>,
    /// Where backup sets go: `<backup_root>/<site>/<job>/<set id>/`.
    pub backup_root: Option<PathBuf>,
    /// Restore from another job's sets (a restore onto another server reads the sets the
    /// original server's job wrote).
    pub sets_of: Option<String>,
    /// Logical command names to executables.
    pub commands: BTreeMap<String, CommandMap>,
    /// Logical service names to their controls.
    pub services: BTreeMap<String, ServiceMap>,
    /// Parameters passed to the plugin.
    pub params: BTreeMap<String, String>,
    /// When the job runs.
    pub schedule: Option<Schedule>,
    /// The operation its schedule runs (`schedule_op`, default `backup`).
    pub schedule_op: String,
    /// How long a run is expected to take (`estimate`), for window fit and overlaps.
    pub estimate: Duration,
    /// How late a run may start (`max_start_delay`); a run that cannot start by then is
    /// skipped and reported.
    pub max_start_delay: Duration,
    /// The maintenance window its runs must fit in.
    pub window: Option<Window>,
    /// When the product's own work that conflicts with the job happens (`activities`), by the
    /// activity names the plugin declares.
    pub activities: BTreeMap<String, Activity>,
    /// Which of its backup sets the job keeps.
    pub retention: crate::sets::Retention,
    /// The dead-man limit (`stale_after`): when its newest good set is older than this, the
    /// daemon raises `no-good-set`.
    pub stale_after: Option<Duration>,
    /// Where the job is written, for later errors about it.
    pub line: usize,
}

impl Job {
    /// Where a root on a server is: the server's name and the path there; `None` for a root
    /// on the host.
    pub fn on_server(&self, root: &str) -> Option<(&str, &str)> {
        let server = self.root_servers.get(root)?;
        let path = self.roots[root]
            .to_str()
            .expect("a root on a server is read from a TOML string");
        Some((server, path))
    }
}

/// When a product's own work (an activity its plugin declares as a conflict) happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// Its calendar.
    pub schedule: Schedule,
    /// How long it runs; `None` takes the plugin's typical length.
    pub duration: Option<Duration>,
}

/// A loaded, checked site policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it came from.
    pub file: PathBuf,
    /// The site's name.
    pub site: String,
    /// IANA time zone.
    pub timezone: String,
    /// The site's servers.
    pub servers: Vec<Server>,
    /// Jobs by name.
    pub jobs: BTreeMap<String, Job>,
    /// The site's own notification channels (`[[notify]]`): they hear only this site.
    pub notify: Vec<crate::notify::Channel>,
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            field: None,
            message: format!("cannot read the policy: {e}"),
        })?;
        Policy::parse(path, &text)
    }

    /// Parses and checks policy text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let src = Source { file: path, text };
        let raw: RawPolicy = src.deserialize()?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        src.build(raw, base)
    }

    /// The job named `name`, or an error listing the jobs there are.
    pub fn job(&self, name: &str) -> Result<&Job, PolicyError> {
        self.jobs.get(name).ok_or_else(|| PolicyError {
            file: self.file.clone(),
            line: None,
            column: None,
            field: Some("jobs".into()),
            message: format!(
                "there is no job `{name}`; this policy has: {}",
                self.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }

    /// The servers of a job (all the site's when the job names none).
    pub fn job_servers(&self, job: &Job) -> Vec<String> {
        if job.servers.is_empty() {
            self.servers.iter().map(|s| s.name.clone()).collect()
        } else {
            job.servers.clone()
        }
    }

    /// The name a job's root on a server has in [`Policy::roots_by_server`]: `job.root`, since
    /// two jobs may name their roots alike and one connection serves them all.
    pub fn server_root_key(job: &str, root: &str) -> String {
        format!("{job}.{root}")
    }

    /// Every job's roots on servers reached over ssh, by server: each root's
    /// [`Policy::server_root_key`] to its path there.
    pub fn roots_by_server(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for job in self.jobs.values() {
            for root in job.root_servers.keys() {
                let (server, path) = job.on_server(root).expect("a root on a server");
                out.entry(server.to_string())
                    .or_default()
                    .insert(Self::server_root_key(&job.name, root), path.to_string());
            }
        }
        out
    }

    /// The server named `name`.
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// An error about a server, pointing at its `[[servers]]` table; `field` is below
    /// `servers.<name>` (for example `role`).
    pub fn server_error(
        &self,
        server: &Server,
        field: &str,
        message: impl Into<String>,
    ) -> PolicyError {
        PolicyError {
            file: self.file.clone(),
            line: Some(server.line),
            column: Some(1),
            field: Some(format!("servers.{}.{field}", server.name)),
            message: message.into(),
        }
    }

    /// An error about a job, pointing at its table.
    pub fn job_error(&self, job: &Job, field: &str, message: impl Into<String>) -> PolicyError {
        PolicyError {
            file: self.file.clone(),
            line: Some(job.line),
            column: Some(1),
            field: Some(format!(
                "jobs.{}{}{field}",
                job.name,
                if field.is_empty() { "" } else { "." }
            )),
            message: message.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    site: RawSite,
    #[serde(default)]
    servers: Vec<Spanned<RawServer>>,
    #[serde(default)]
    jobs: BTreeMap<Spanned<String>, Spanned<RawJob>>,
    #[serde(default)]
    notify: Vec<Spanned<notify::RawChannel>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: Spanned<String>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    known_hosts: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: Spanned<String>,
    role: String,
    #[serde(default = "localhost")]
    address: String,
    #[serde(default)]
    transport: Option<Spanned<String>>,
    #[serde(default)]
    user: Option<Spanned<String>>,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    identity: Option<Spanned<String>>,
    #[serde(default)]
    agent: Option<Spanned<String>>,
    #[serde(default)]
    properties: BTreeMap<String, Spanned<toml::Value>>,
}

fn localhost() -> String {
    "localhost".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    plugin: Spanned<String>,
    #[serde(default)]
    plugin_sha256: Option<Spanned<String>>,
    #[serde(default)]
    operations: Vec<String>,
    #[serde(default)]
    servers: Vec<Spanned<String>>,
    #[serde(default)]
    roots: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    backup_root: Option<Spanned<String>>,
    #[serde(default)]
    sets_of: Option<Spanned<String>>,
    #[serde(default)]
    commands: BTreeMap<String, Spanned<RawCommand>>,
    #[serde(default)]
    services: BTreeMap<String, Spanned<RawService>>,
    #[serde(default)]
    params: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    schedule: Option<Spanned<String>>,
    #[serde(default)]
    retention: Option<Spanned<crate::sets::Retention>>,
    #[serde(default)]
    schedule_op: Option<Spanned<String>>,
    #[serde(default)]
    estimate: Option<Spanned<String>>,
    #[serde(default)]
    max_start_delay: Option<Spanned<String>>,
    #[serde(default)]
    window: Option<Spanned<String>>,
    #[serde(default)]
    activities: BTreeMap<String, Spanned<RawActivity>>,
    #[serde(default)]
    stale_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawActivity {
    Calendar(String),
    Full {
        schedule: String,
        duration: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCommand {
    Program(String),
    Full {
        program: String,
        #[serde(default)]
        args: Vec<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    start: Vec<String>,
    stop: Vec<String>,
    #[serde(default)]
    status: Option<Vec<String>>,
}

/// Where a root's directory is, as [`Source::root`] read it.
enum RootAt {
    /// On the host: the directory as written (resolved against the policy's directory).
    Host(String),
    /// On a server reached over ssh: its name and the absolute path there.
    Server(String, String),
}

/// The policy text, to turn byte spans into positions and field names.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

/// The 1-based line and column of a byte offset in a text.
pub(crate) fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Source<'_> {
    fn position(&self, offset: usize) -> (usize, usize) {
        position(self.text, offset)
    }

    /// The dotted name of the key at `span`: the nearest table header above it, plus the key.
    fn field_at(&self, span: Range<usize>) -> Option<String> {
        let before = &self.text[..span.start.min(self.text.len())];
        let header = before
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
        let key = self.text.get(span.clone()).map(str::trim).filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        });
        // The keys that lead to `span` on its line: `retention = { keep_daily = -1 }` puts a
        // value's span under `retention.keep_daily`, a key's under the tables it is in.
        let line = before.rsplit('\n').next().unwrap_or("");
        let (mut keys, pending) = keys_before(line);
        match pending {
            Some(k) => keys.push(k),
            None => keys.extend(key.map(str::to_string)),
        }
        let keys = (!keys.is_empty()).then(|| keys.join("."));
        match (header, keys) {
            (Some(h), Some(k)) => Some(format!("{h}.{k}")),
            (Some(h), None) => Some(h),
            (None, k) => k,
        }
    }

    fn error(
        &self,
        span: Option<Range<usize>>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> PolicyError {
        let (line, column) = span.map(|s| self.position(s.start)).unzip();
        PolicyError {
            file: self.file.to_path_buf(),
            line,
            column,
            field,
            message: message.into(),
        }
    }

    /// The text as TOML of shape `T`; a syntax or shape error names its line and field.
    fn deserialize<T: serde::de::DeserializeOwned>(&self) -> Result<T, PolicyError> {
        toml::from_str(self.text).map_err(|e| {
            let span = e.span();
            self.error(
                span.clone(),
                span.and_then(|s| self.field_at(s)),
                e.message().to_string(),
            )
        })
    }

    fn at<T>(
        &self,
        s: &Spanned<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> PolicyError {
        self.error(Some(s.span()), Some(field.into()), message)
    }

    /// A server's ssh settings: required pieces present when its transport is `ssh`, and none
    /// of them given to a server that is not reached over ssh (where they would be ignored).
    fn ssh(
        &self,
        name: &str,
        s: &RawServer,
        span: Range<usize>,
        transport: Option<&str>,
        site: &RawSite,
        base: &Path,
    ) -> Result<Option<Ssh>, PolicyError> {
        let field = |f: &str| format!("servers.{name}.{f}");
        if transport != Some("ssh") {
            let given = [
                ("user", s.user.as_ref().map(Spanned::span)),
                ("port", s.port.as_ref().map(Spanned::span)),
                ("identity", s.identity.as_ref().map(Spanned::span)),
                ("agent", s.agent.as_ref().map(Spanned::span)),
            ];
            if let Some((f, Some(span))) = given.into_iter().find(|(_, sp)| sp.is_some()) {
                return Err(self.error(
                    Some(span),
                    Some(field(f)),
                    format!("`{f}` is for a server reached over ssh; set `transport = \"ssh\"` or remove it"),
                ));
            }
            return Ok(None);
        }
        let address = s.address.trim();
        if address.is_empty() || address.starts_with('-') || address.contains(char::is_whitespace) {
            return Err(self.error(
                Some(span),
                Some(field("address")),
                format!("`{address}` is not a host name or address ssh can connect to"),
            ));
        }
        let known_hosts = site.known_hosts.as_ref().ok_or_else(|| {
            self.error(
                Some(span.clone()),
                Some(field("transport")),
                "a server reached over ssh needs the site's pinned host keys: set `known_hosts = \"FILE\"` in [site] (a file in ssh's known_hosts format; `hokan servers check` says what to pin)",
            )
        })?;
        if known_hosts.get_ref().trim().is_empty() {
            return Err(self.at(known_hosts, "site.known_hosts", "the file name is empty"));
        }
        let user = match &s.user {
            Some(u)
                if u.get_ref().is_empty()
                    || u.get_ref().starts_with('-')
                    || u.get_ref().contains(['@', ' ', '\t', '\n']) =>
            {
                return Err(self.at(
                    u,
                    field("user"),
                    format!("`{}` is not a login name", u.get_ref()),
                ));
            }
            u => u.as_ref().map(|u| u.get_ref().clone()),
        };
        let port = match &s.port {
            Some(p) => Some(
                u16::try_from(*p.get_ref())
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        self.at(
                            p,
                            field("port"),
                            format!("{} is not a TCP port (1 to 65535)", p.get_ref()),
                        )
                    })?,
            ),
            None => None,
        };
        let identity = match &s.identity {
            Some(i) if i.get_ref().trim().is_empty() => {
                return Err(self.at(i, field("identity"), "the file name is empty"));
            }
            i => i.as_ref().map(|i| base.join(i.get_ref())),
        };
        let agent = match &s.agent {
            Some(a) if a.get_ref().trim().is_empty() || a.get_ref().contains(['\n', '\0']) => {
                return Err(self.at(
                    a,
                    field("agent"),
                    "give the path of hokan on the server, such as /usr/local/bin/hokan",
                ));
            }
            a => a
                .as_ref()
                .map_or_else(|| "hokan".to_string(), |a| a.get_ref().clone()),
        };
        Ok(Some(Ssh {
            address: address.to_string(),
            user,
            port,
            identity,
            agent,
            known_hosts: base.join(known_hosts.get_ref()),
        }))
    }

    /// Where a job's root is: a directory on the host (a string), or `{ server, path }` on one
    /// of the job's servers. A root on a server reached locally is the host's directory.
    /// Reads one root of a job: a directory on the host, a directory on one of its servers,
    /// or one directory on each of several servers (`{ servers = { NAME = "/path", ... } }`,
    /// each granted as the root [`per_server_root`] names). Returns each root's name and
    /// where it is.
    fn root(
        &self,
        name: &str,
        value: &Spanned<toml::Value>,
        field: &str,
        job_servers: &[String],
        servers: &[Server],
    ) -> Result<Vec<(String, RootAt)>, PolicyError> {
        const FORM: &str = "give a directory (`\"/srv/data\"`), `{ server = \"NAME\", path = \"/srv/data\" }` for a directory on one of the job's servers, or `{ servers = { NAME = \"/srv/data\", ... } }` for one on each of several";
        let table = match value.get_ref() {
            toml::Value::String(dir) => {
                return Ok(vec![(name.to_string(), RootAt::Host(dir.clone()))]);
            }
            toml::Value::Table(t) => t,
            _ => return Err(self.at(value, field, FORM)),
        };
        if let Some(toml::Value::Table(each)) = table.get("servers") {
            if let Some(k) = table.keys().find(|k| k.as_str() != "servers") {
                return Err(self.at(
                    value,
                    format!("{field}.{k}"),
                    format!("a root on several servers has only `servers`; {FORM}"),
                ));
            }
            if each.is_empty() {
                return Err(self.at(
                    value,
                    format!("{field}.servers"),
                    format!("names no server; {FORM}"),
                ));
            }
            let mut out = Vec::new();
            for (server, path) in each {
                let field = format!("{field}.servers.{server}");
                let toml::Value::String(path) = path else {
                    return Err(self.at(
                        value,
                        field,
                        "give the directory on that server as a string",
                    ));
                };
                out.push((
                    per_server_root(name, server),
                    self.root_on(value, &field, &field, server, path, job_servers, servers)?,
                ));
            }
            return Ok(out);
        }
        if let Some(k) = table
            .keys()
            .find(|k| !["server", "path"].contains(&k.as_str()))
        {
            return Err(self.at(
                value,
                format!("{field}.{k}"),
                format!("a root has no `{k}`; {FORM}"),
            ));
        }
        let (Some(toml::Value::String(server)), Some(toml::Value::String(path))) =
            (table.get("server"), table.get("path"))
        else {
            return Err(self.at(value, field, FORM));
        };
        let at = self.root_on(
            value,
            &format!("{field}.server"),
            &format!("{field}.path"),
            server,
            path,
            job_servers,
            servers,
        )?;
        Ok(vec![(name.to_string(), at)])
    }

    /// Where a root's directory `path` on `server` is: the host's, for a server reached
    /// locally, else that server's (an absolute path there).
    #[allow(clippy::too_many_arguments)]
    fn root_on(
        &self,
        value: &Spanned<toml::Value>,
        server_field: &str,
        path_field: &str,
        server: &str,
        path: &str,
        job_servers: &[String],
        servers: &[Server],
    ) -> Result<RootAt, PolicyError> {
        let Some(s) = servers.iter().find(|s| s.name == server) else {
            return Err(self.at(
                value,
                server_field,
                format!(
                    "`{server}` is not a server of this site; declare it in a [[servers]] table"
                ),
            ));
        };
        if !job_servers.is_empty() && !job_servers.iter().any(|j| j == server) {
            return Err(self.at(
                value,
                server_field,
                format!(
                    "`{server}` is not one of the job's servers; add it to the job's `servers`"
                ),
            ));
        }
        match s.transport.as_deref() {
            Some("local") => Ok(RootAt::Host(path.to_string())),
            Some("ssh") if Path::new(path).is_absolute() => Ok(RootAt::Server(server.to_string(), path.to_string())),
            Some("ssh") => Err(self.at(value, path_field, format!("`{path}` is not an absolute path; a root on a server is an absolute path there"))),
            _ => Err(self.at(value, server_field, format!("`{server}` has no transport, so hokan cannot reach the root there; set its `transport = \"ssh\"`"))),
        }
    }

    fn build(&self, raw: RawPolicy, base: &Path) -> Result<Policy, PolicyError> {
        let site = raw.site.name.get_ref().trim().to_string();
        if !is_name(&site) {
            return Err(self.at(
                &raw.site.name,
                "site.name",
                "use letters, digits, `-` and `_` only (it names backup directories)",
            ));
        }
        let timezone = match &raw.site.timezone {
            None => "UTC".to_string(),
            Some(tz) => {
                let ok = tz.get_ref() == "UTC"
                    || tz.get_ref().split('/').count() >= 2
                        && tz.get_ref().split('/').all(|p| {
                            !p.is_empty()
                                && p.chars()
                                    .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
                        });
                if !ok {
                    return Err(self.at(
                        tz,
                        "site.timezone",
                        format!(
                            "`{}` is not an IANA time zone name such as Asia/Tokyo or UTC",
                            tz.get_ref()
                        ),
                    ));
                }
                if let Err(e) = jiff::tz::db().get(tz.get_ref()) {
                    return Err(self.at(
                        tz,
                        "site.timezone",
                        format!(
                            "`{}` is not a time zone hokan knows ({e}); use an IANA name such as Asia/Tokyo or Europe/London",
                            tz.get_ref()
                        ),
                    ));
                }
                tz.get_ref().clone()
            }
        };
        let mut servers: Vec<Server> = Vec::new();
        for s in raw.servers {
            let span = s.span();
            let s = s.into_inner();
            let name = s.name.get_ref().clone();
            if !is_name(&name) {
                return Err(self.at(
                    &s.name,
                    "servers.name",
                    "use letters, digits, `-` and `_` only",
                ));
            }
            if servers.iter().any(|o| o.name == name) {
                return Err(self.error(
                    Some(span),
                    Some("servers.name".into()),
                    format!("the server `{name}` is listed twice"),
                ));
            }
            let transport = match &s.transport {
                Some(t) if !TRANSPORTS.contains(&t.get_ref().as_str()) => {
                    return Err(self.at(
                        t,
                        "servers.transport",
                        format!(
                            "`{}` is not a transport of this hokan (it has: {})",
                            t.get_ref(),
                            TRANSPORTS.join(", ")
                        ),
                    ));
                }
                Some(t) => Some(t.get_ref().clone()),
                None if ["localhost", "127.0.0.1", "::1"].contains(&s.address.as_str()) => {
                    Some("local".into())
                }
                None => None,
            };
            let ssh = self.ssh(
                &name,
                &s,
                span.clone(),
                transport.as_deref(),
                &raw.site,
                base,
            )?;
            let mut properties = BTreeMap::new();
            for (k, v) in &s.properties {
                let value = scalar(v.get_ref()).ok_or_else(|| {
                    self.at(
                        v,
                        format!("servers.{name}.properties.{k}"),
                        "properties are strings, numbers or booleans",
                    )
                })?;
                properties.insert(k.clone(), value);
            }
            servers.push(Server {
                line: self.position(span.start).0,
                name,
                role: s.role,
                address: s.address,
                transport,
                ssh,
                properties,
            });
        }
        let mut jobs = BTreeMap::new();
        let mut sets_of = Vec::new();
        for (name, job) in raw.jobs {
            if let Some(s) = &job.get_ref().sets_of {
                sets_of.push((name.get_ref().clone(), s.clone()));
            }
            let job = self.job(name.get_ref(), job, &servers, base)?;
            jobs.insert(job.name.clone(), job);
        }
        for (job, other) in sets_of {
            let target: Option<&Job> = jobs.get(other.get_ref());
            match target {
                None => {
                    return Err(self.at(
                        &other,
                        format!("jobs.{job}.sets_of"),
                        format!("there is no job `{}` in this policy", other.get_ref()),
                    ));
                }
                Some(t) if t.backup_root.is_none() && jobs[&job].backup_root.is_none() => {
                    return Err(self.at(
                        &other,
                        format!("jobs.{job}.sets_of"),
                        format!(
                            "neither this job nor `{}` has a backup_root",
                            other.get_ref()
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let notify = self.channels(raw.notify, base, Some(&site))?;
        Ok(Policy {
            file: self.file.to_path_buf(),
            site,
            timezone,
            servers,
            jobs,
            notify,
        })
    }

    fn job(
        &self,
        name: &str,
        raw: Spanned<RawJob>,
        servers: &[Server],
        base: &Path,
    ) -> Result<Job, PolicyError> {
        let line = self.position(raw.span().start).0;
        let raw = raw.into_inner();
        let f = |field: &str| format!("jobs.{name}.{field}");
        if !is_name(name) {
            return Err(self.error(
                None,
                Some(format!("jobs.{name}")),
                "job names use letters, digits, `-` and `_` only (they name backup directories)",
            ));
        }
        if raw.plugin.get_ref().trim().is_empty() {
            return Err(self.at(
                &raw.plugin,
                f("plugin"),
                "name the plugin (for example \"mailwise\") or give a path to its .wasm file",
            ));
        }
        let plugin_sha256 = match raw.plugin_sha256 {
            Some(s)
                if s.get_ref().len() != 64
                    || !s.get_ref().chars().all(|c| c.is_ascii_hexdigit()) =>
            {
                return Err(self.at(
                    &s,
                    f("plugin_sha256"),
                    "must be 64 hex digits (the output of `sha256sum` or `hokan plugins`)",
                ));
            }
            other => other.map(|s| s.into_inner().to_ascii_lowercase()),
        };
        let mut job_servers = Vec::new();
        for s in &raw.servers {
            if !servers.iter().any(|o| &o.name == s.get_ref()) {
                return Err(self.at(
                    s,
                    f("servers"),
                    format!(
                        "`{}` is not a server of this site; declare it in a [[servers]] table",
                        s.get_ref()
                    ),
                ));
            }
            job_servers.push(s.get_ref().clone());
        }
        let resolve = |p: &Spanned<String>, field: String| -> Result<PathBuf, PolicyError> {
            if p.get_ref().trim().is_empty() {
                return Err(self.at(p, field, "the directory is empty"));
            }
            let path = Path::new(p.get_ref());
            Ok(if path.is_absolute() {
                path.to_path_buf()
            } else {
                base.join(path)
            })
        };
        let mut roots = BTreeMap::new();
        let mut root_servers = BTreeMap::new();
        for (root, value) in &raw.roots {
            if root == "set" {
                return Err(self.at(value, f("roots.set"), "`set` is reserved: hokan grants each run's backup set under that name; set `backup_root` instead"));
            }
            if root == crate::sets::tested::SCRATCH_ROOT {
                return Err(self.at(value, f("roots.scratch"), "`scratch` is reserved: hokan grants a restore test the directory it restores into under that name; give this root another name"));
            }
            let field = f(&format!("roots.{root}"));
            if root.contains(PER_SERVER) {
                return Err(self.at(value, field, format!("`{PER_SERVER}` in a root's name is hokan's: `{{ servers = {{ ... }} }}` names the roots it grants on each server that way; give the root a name without it")));
            }
            for (name, at) in self.root(root, value, &field, &job_servers, servers)? {
                match at {
                    RootAt::Host(dir) => {
                        let dir = resolve(&Spanned::new(value.span(), dir), field.clone())?;
                        roots.insert(name, dir);
                    }
                    RootAt::Server(server, dir) => {
                        roots.insert(name.clone(), PathBuf::from(dir));
                        root_servers.insert(name, server);
                    }
                }
            }
        }
        let backup_root = raw
            .backup_root
            .as_ref()
            .map(|b| resolve(b, f("backup_root")))
            .transpose()?;
        if let (Some(b), Some(spanned)) = (&backup_root, &raw.backup_root) {
            for (root, dir) in roots.iter().filter(|(r, _)| !root_servers.contains_key(*r)) {
                let why = if nested(b, dir) {
                    Some(format!(
                        "{} is inside the root `{root}` ({})",
                        b.display(),
                        dir.display()
                    ))
                } else if nested(dir, b) {
                    Some(format!(
                        "{} holds the root `{root}` ({})",
                        b.display(),
                        dir.display()
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(self.at(
                        spanned,
                        f("backup_root"),
                        format!("{why}: a backup would copy the earlier sets into each new one, and a restore would write over them; put backup_root outside every root of the job"),
                    ));
                }
            }
        }
        let mut commands = BTreeMap::new();
        for (cmd, spec) in raw.commands {
            let mut c = match spec.get_ref() {
                RawCommand::Program(p) => CommandMap {
                    program: p.clone(),
                    args: vec![],
                },
                RawCommand::Full { program, args } => CommandMap {
                    program: program.clone(),
                    args: args.clone(),
                },
            };
            c.program = program_path(base, &c.program)
                .map_err(|why| self.at(&spec, f(&format!("commands.{cmd}")), why))?;
            if c.program.trim().is_empty() {
                return Err(self.at(&spec, f(&format!("commands.{cmd}")), "the program is empty"));
            }
            commands.insert(cmd, c);
        }
        let mut services = BTreeMap::new();
        for (svc, spec) in raw.services {
            let s = spec.get_ref();
            if s.start.is_empty()
                || s.stop.is_empty()
                || s.status.as_ref().is_some_and(Vec::is_empty)
            {
                return Err(self.at(&spec, f(&format!("services.{svc}")), "start, stop (and status, when given) must each be a command line such as [\"systemctl\", \"start\", \"x\"]"));
            }
            let line = |l: &[String]| {
                program_relative_to(base, l)
                    .map_err(|why| self.at(&spec, f(&format!("services.{svc}")), why))
            };
            let map = ServiceMap {
                start: line(&s.start)?,
                stop: line(&s.stop)?,
                status: s.status.as_deref().map(line).transpose()?,
            };
            services.insert(svc, map);
        }
        let mut params = BTreeMap::new();
        for (k, v) in raw.params {
            let value = scalar(v.get_ref()).ok_or_else(|| {
                self.at(
                    &v,
                    f(&format!("params.{k}")),
                    "parameters are strings, numbers or booleans",
                )
            })?;
            params.insert(k, value);
        }
        let schedule = match &raw.schedule {
            None => None,
            Some(s) => {
                Some(Schedule::parse(s.get_ref()).map_err(|e| self.at(s, f("schedule"), e))?)
            }
        };
        let duration = |s: &Option<Spanned<String>>, field: &str, default: u64| match s {
            None => Ok(Duration::from_secs(default)),
            Some(d) => match humantime::parse_duration(d.get_ref()) {
                Ok(v) if !v.is_zero() => Ok(v),
                _ => Err(self.at(
                    d,
                    f(field),
                    format!(
                        "`{}` is not a length of time such as `45m` or `1h 30m`",
                        d.get_ref()
                    ),
                )),
            },
        };
        let estimate = duration(&raw.estimate, "estimate", 3600)?;
        let stale_after = match &raw.stale_after {
            None => None,
            Some(s) if backup_root.is_none() => {
                return Err(self.at(
                    s,
                    f("stale_after"),
                    "the job writes no sets (it has no backup_root), so no set of it can grow old",
                ));
            }
            Some(_) => Some(duration(&raw.stale_after, "stale_after", 0)?),
        };
        let max_start_delay = duration(&raw.max_start_delay, "max_start_delay", 3600)?;
        let window = match &raw.window {
            None => None,
            Some(w) => Some(Window::parse(w.get_ref()).map_err(|e| self.at(w, f("window"), e))?),
        };
        let mut activities = BTreeMap::new();
        for (name, a) in &raw.activities {
            let field = f(&format!("activities.{name}"));
            let (cal, dur) = match a.get_ref() {
                RawActivity::Calendar(c) => (c, None),
                RawActivity::Full { schedule, duration } => (schedule, duration.as_ref()),
            };
            let schedule = Schedule::parse(cal).map_err(|e| self.at(a, field.clone(), e))?;
            let duration = match dur {
                None => None,
                Some(d) => Some(
                    humantime::parse_duration(d)
                        .ok()
                        .filter(|v| !v.is_zero())
                        .ok_or_else(|| {
                            self.at(
                                a,
                                format!("{field}.duration"),
                                format!("`{d}` is not a length of time such as `30m`"),
                            )
                        })?,
                ),
            };
            activities.insert(name.clone(), Activity { schedule, duration });
        }
        let schedule_op = raw
            .schedule_op
            .as_ref()
            .map_or_else(|| "backup".to_string(), |s| s.get_ref().clone());
        Ok(Job {
            schedule_op,
            estimate,
            max_start_delay,
            window,
            activities,
            name: name.to_string(),
            plugin: raw.plugin.into_inner(),
            plugin_sha256,
            operations: raw.operations,
            servers: job_servers,
            roots,
            root_servers,
            backup_root,
            sets_of: raw.sets_of.as_ref().map(|s| s.get_ref().clone()),
            commands,
            services,
            params,
            schedule,
            retention: raw.retention.map(Spanned::into_inner).unwrap_or_default(),
            stale_after,
            line,
        })
    }
}

/// The inline tables open at the end of `line` (by key), and the key whose value starts there,
/// if one does: `a = { b = { c = ` gives (["a", "b"], Some("c")).
fn keys_before(line: &str) -> (Vec<String>, Option<String>) {
    let (mut tables, mut pending, mut word, mut current) =
        (Vec::new(), None::<String>, None::<String>, String::new());
    let mut quoted = false;
    for c in line.chars() {
        if c == '"' {
            quoted = !quoted;
            continue;
        }
        if quoted {
            continue;
        }
        if c.is_ascii_alphanumeric() || "-_".contains(c) {
            current.push(c);
            continue;
        }
        if !current.is_empty() {
            word = Some(std::mem::take(&mut current));
        }
        match c {
            '=' => pending = word.take(),
            '{' => tables.extend(pending.take()),
            '}' => {
                tables.pop();
            }
            ',' => pending = None,
            _ => {}
        }
    }
    (tables, pending)
}

/// Whether `inner` is `outer` or below it, comparing the paths with `.` and `..` resolved and,
/// where both exist, with their links resolved too.
fn nested(inner: &Path, outer: &Path) -> bool {
    fn lexical(p: &Path) -> PathBuf {
        let mut out = PathBuf::new();
        for c in std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .components()
        {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                c => out.push(c),
            }
        }
        out
    }
    if lexical(inner).starts_with(lexical(outer)) {
        return true;
    }
    match (inner.canonicalize(), outer.canonicalize()) {
        (Ok(i), Ok(o)) => i.starts_with(o),
        _ => false,
    }
}

/// A program given as a relative path is relative to the policy file; a bare name is looked up
/// on PATH when it runs.
fn program_path(base: &Path, program: &str) -> Result<String, String> {
    if program.contains('/') && Path::new(program).is_relative() {
        base.join(program).into_os_string().into_string().map_err(|p| {
            format!(
                "{program} is relative to the policy's directory, whose path {} is not UTF-8 text; give the program as an absolute path",
                Path::new(&p).display()
            )
        })
    } else {
        Ok(program.to_string())
    }
}

/// A command line with its program resolved as [`program_path`] does.
fn program_relative_to(base: &Path, line: &[String]) -> Result<Vec<String>, String> {
    let mut line = line.to_vec();
    if let Some(p) = line.first_mut() {
        *p = program_path(base, p)?;
    }
    Ok(line)
}

/// A parameter or property value as the plugin receives it: a string, a number or a boolean.
fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What joins a root's name to its server's in the roots `{ servers = { ... } }` grants.
const PER_SERVER: char = '@';

/// The name under which a root given on several servers (`dump = { servers = { tw-app1 =
/// "/var/tmp/tw" } }`) is granted on one of them: `dump@tw-app1`. A plugin whose steps run
/// the same program on every server (TeamWARE's differential backup) asks for it by that name;
/// the SDK's `Root::on` writes it the same way.
pub fn per_server_root(root: &str, server: &str) -> String {
    format!("{root}{PER_SERVER}{server}")
}

/// The root a plugin declares for a granted root's name: `dump` for `dump@tw-app1`, the name
/// itself for a root on one machine.
pub fn declared_root(granted: &str) -> &str {
    granted.split_once(PER_SERVER).map_or(granted, |(r, _)| r)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Loads a policy file, or every `*.toml` in a directory (sorted by name).
pub fn load_all(path: &Path) -> Result<Vec<Policy>, PolicyError> {
    files(path)?.iter().map(|f| Policy::load(f)).collect()
}

/// The policy files `path` names: itself, or every `*.toml` in the directory (sorted by name)
/// but [`HOST_FILE`], the host's own settings.
pub fn files(path: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| PolicyError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            field: None,
            message: format!("cannot list the policy directory: {e}"),
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        // The host's own settings are not a site.
        .filter(|p| p.file_name().is_none_or(|n| n != HOST_FILE))
        .collect();
    files.sort();
    Ok(files)
}

/// A problem `hokan validate` found in a job, given its plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Errors stop the job; warnings do not.
    pub error: bool,
    /// The field concerned and what to do.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[site]
name = "tokyo-hq"
timezone = "Asia/Tokyo"

[[servers]]
name = "mw1"
role = "mailwise"

[jobs.mailwise]
plugin = "mailwise"
servers = ["mw1"]
backup_root = "backups"
schedule = "daily at 02:00"
roots = { data = "/srv/mailwise" }
commands = { mwsave = "/srv/mailwise/mwsave", maintenance-mode = { program = "/usr/local/bin/mw-maint", args = ["--site", "hq"] } }
params = { window = "02:00-04:00", restore_archives = false }
services = { svc = { start = ["bin/svc", "start"], stop = ["systemctl", "stop", "svc"] } }
"#;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("/etc/hokan/site.toml"), text)
    }

    #[test]
    fn a_bad_value_in_an_inline_table_names_its_key() {
        let text = GOOD.replace(
            "backup_root = \"backups\"",
            "backup_root = \"backups\"\nretention = { keep_last = 2, keep_daily = -1 }",
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("jobs.mailwise.retention.keep_daily"),
            "{e}"
        );
        // A restic-style "6m" (months there, minutes here) is refused where it is written.
        let text = GOOD.replace(
            "backup_root = \"backups\"",
            "backup_root = \"backups\"\nretention = { keep_monthly = 6, keep_within = \"6m\" }",
        );
        let e = parse(&text).unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("jobs.mailwise.retention.keep_within"),
            "{e}"
        );
        assert!(e.to_string().contains("\"6mo\""), "{e}");
        let e = parse(&GOOD.replace("backup_root =", "backup_rot =")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("jobs.mailwise.backup_rot"), "{e}");
        assert_eq!(
            keys_before("a = { b = \"x{\", c = { d = "),
            (
                vec!["a".to_string(), "c".to_string()],
                Some("d".to_string())
            )
        );
    }

    #[test]
    fn a_backup_root_inside_or_around_a_data_root_is_refused() {
        for (root, why) in [
            ("/srv/mailwise/backups", "is inside the root `data`"),
            ("/srv/mailwise/x/../backups", "is inside the root `data`"),
            ("/srv", "holds the root `data`"),
        ] {
            let text = GOOD.replace(
                "backup_root = \"backups\"",
                &format!("backup_root = \"{root}\""),
            );
            let e = parse(&text).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("jobs.mailwise.backup_root"), "{e}");
            assert!(e.message.contains(why), "{e}");
            assert!(e.line.is_some(), "{e}");
        }
        assert!(
            parse(&GOOD.replace(
                "backup_root = \"backups\"",
                "backup_root = \"/srv/mailwise-backups\""
            ))
            .is_ok()
        );
    }

    /// GOOD with `mw1` reached over ssh and its data root on it.
    fn over_ssh(server: &str, site: &str, root: &str) -> String {
        GOOD.replace(
            "timezone = \"Asia/Tokyo\"",
            &format!("timezone = \"Asia/Tokyo\"\n{site}"),
        )
        .replace(
            "role = \"mailwise\"",
            &format!("role = \"mailwise\"\n{server}"),
        )
        .replace(
            "roots = { data = \"/srv/mailwise\" }",
            &format!("roots = {{ data = {root} }}"),
        )
    }

    #[test]
    fn a_server_over_ssh_and_a_root_on_it_load_with_the_sites_pinned_keys() {
        let text = over_ssh(
            "address = \"mw1.example\"\ntransport = \"ssh\"\nuser = \"hokan\"\nport = 2222\nidentity = \"keys/acme\"\nagent = \"/usr/local/bin/hokan\"",
            "known_hosts = \"acme.known_hosts\"",
            "{ server = \"mw1\", path = \"/opt/cybozu/mailwise\" }",
        );
        let p = parse(&text).unwrap();
        let ssh = p.servers[0].ssh.as_ref().unwrap();
        assert_eq!(
            ssh,
            &Ssh {
                address: "mw1.example".into(),
                user: Some("hokan".into()),
                port: Some(2222),
                identity: Some(PathBuf::from("/etc/hokan/keys/acme")),
                agent: "/usr/local/bin/hokan".into(),
                known_hosts: PathBuf::from("/etc/hokan/acme.known_hosts"),
            }
        );
        let job = p.job("mailwise").unwrap();
        assert_eq!(job.roots["data"], PathBuf::from("/opt/cybozu/mailwise"));
        assert_eq!(job.root_servers["data"], "mw1");
        // A backup root on the host may have the same path as a root on a server.
        let same = text.replace("backup_root = \"backups\"", "backup_root = \"/opt/cybozu\"");
        assert!(parse(&same).is_ok());
        // The defaults: ssh's own user, port and keys; `hokan` on the server's PATH.
        let bare = over_ssh(
            "address = \"mw1.example\"\ntransport = \"ssh\"",
            "known_hosts = \"k\"",
            "\"/srv/mailwise\"",
        );
        let ssh = parse(&bare).unwrap().servers[0].ssh.clone().unwrap();
        assert_eq!((ssh.user, ssh.port, ssh.identity), (None, None, None));
        assert_eq!(ssh.agent, "hokan");
    }

    #[test]
    fn ssh_settings_and_roots_on_servers_are_refused_where_they_are_wrong() {
        let ssh = "address = \"mw1.example\"\ntransport = \"ssh\"";
        let kh = "known_hosts = \"k\"";
        let on_mw1 = "{ server = \"mw1\", path = \"/opt/mw\" }";
        for (server, site, root, field, says) in [
            (
                ssh,
                "",
                on_mw1,
                "servers.mw1.transport",
                "set `known_hosts = \"FILE\"` in [site]",
            ),
            (
                "port = 22",
                kh,
                on_mw1,
                "servers.mw1.port",
                "`port` is for a server reached over ssh",
            ),
            (
                &format!("{ssh}\nport = 70000"),
                kh,
                on_mw1,
                "servers.mw1.port",
                "70000 is not a TCP port",
            ),
            (
                &format!("{ssh}\nuser = \"-oProxyCommand=x\""),
                kh,
                on_mw1,
                "servers.mw1.user",
                "is not a login name",
            ),
            (
                "address = \"-oProxyCommand=x\"\ntransport = \"ssh\"",
                kh,
                on_mw1,
                "servers.mw1.address",
                "is not a host name",
            ),
            (
                ssh,
                kh,
                "{ server = \"mw1\", path = \"opt/mw\" }",
                "jobs.mailwise.roots.data.path",
                "is not an absolute path",
            ),
            (
                ssh,
                kh,
                "{ server = \"mw9\", path = \"/opt/mw\" }",
                "jobs.mailwise.roots.data.server",
                "`mw9` is not a server of this site",
            ),
            (
                ssh,
                kh,
                "{ server = \"mw1\", dir = \"/opt/mw\" }",
                "jobs.mailwise.roots.data.dir",
                "a root has no `dir`",
            ),
            (
                ssh,
                kh,
                "{ server = \"mw1\" }",
                "jobs.mailwise.roots.data",
                "`{ server = \"NAME\", path = \"/srv/data\" }`",
            ),
            (
                ssh,
                kh,
                "42",
                "jobs.mailwise.roots.data",
                "give a directory",
            ),
            (
                "address = \"mw1.example\"",
                kh,
                on_mw1,
                "jobs.mailwise.roots.data.server",
                "`mw1` has no transport",
            ),
            (
                ssh,
                kh,
                "{ servers = { mw9 = \"/opt/mw\" } }",
                "jobs.mailwise.roots.data.servers.mw9",
                "`mw9` is not a server of this site",
            ),
            (
                ssh,
                kh,
                "{ servers = { mw1 = \"opt/mw\" } }",
                "jobs.mailwise.roots.data.servers.mw1",
                "is not an absolute path",
            ),
            (
                ssh,
                kh,
                "{ servers = { mw1 = 42 } }",
                "jobs.mailwise.roots.data.servers.mw1",
                "as a string",
            ),
            (
                ssh,
                kh,
                "{ servers = {} }",
                "jobs.mailwise.roots.data.servers",
                "names no server",
            ),
            (
                ssh,
                kh,
                "{ servers = { mw1 = \"/opt/mw\" }, path = \"/opt\" }",
                "jobs.mailwise.roots.data.path",
                "has only `servers`",
            ),
            (
                ssh,
                kh,
                "\"/srv/mw\", \"to@mw1\" = \"/x\"",
                "jobs.mailwise.roots.to@mw1",
                "`@` in a root's name is hokan's",
            ),
        ] {
            let e = parse(&over_ssh(server, site, root)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{e}");
            assert!(e.message.contains(says), "{e}");
            assert!(e.line.is_some(), "{e}");
        }
        // A root on a server the host reaches locally is a directory of the host.
        let p = parse(&over_ssh("address = \"localhost\"", "", on_mw1)).unwrap();
        let job = p.job("mailwise").unwrap();
        assert!(job.root_servers.is_empty());
        assert_eq!(job.roots["data"], PathBuf::from("/opt/mw"));
    }

    #[test]
    fn a_root_on_several_servers_is_granted_on_each_under_its_own_name() {
        let each = "{ servers = { mw1 = \"/var/tmp/mw\" } }";
        let remote = over_ssh(
            "address = \"mw1.example\"\ntransport = \"ssh\"",
            "known_hosts = \"k\"",
            each,
        );
        let p = parse(&remote).unwrap();
        let job = p.job("mailwise").unwrap();
        assert_eq!(
            job.roots.keys().collect::<Vec<_>>(),
            [&per_server_root("data", "mw1")]
        );
        assert_eq!(job.on_server("data@mw1"), Some(("mw1", "/var/tmp/mw")));
        assert_eq!(declared_root("data@mw1"), "data");
        assert_eq!(declared_root("data"), "data");
        // On a server the host reaches locally, a relative path is the policy's, as for any
        // root of the host.
        let local = over_ssh(
            "address = \"localhost\"",
            "",
            "{ servers = { mw1 = \"dump\" } }",
        );
        let p = parse(&local).unwrap();
        let job = p.job("mailwise").unwrap();
        assert!(job.root_servers.is_empty());
        assert_eq!(job.roots["data@mw1"], PathBuf::from("/etc/hokan/dump"));
    }

    #[test]
    fn a_good_policy_loads() {
        let p = parse(GOOD).unwrap();
        let job = p.job("mailwise").unwrap();
        assert_eq!(p.site, "tokyo-hq");
        assert_eq!(job.roots["data"], PathBuf::from("/srv/mailwise"));
        assert_eq!(
            job.backup_root.as_deref(),
            Some(Path::new("/etc/hokan/backups"))
        );
        assert_eq!(job.commands["maintenance-mode"].args, vec!["--site", "hq"]);
        assert_eq!(job.params["restore_archives"], "false");
        // Programs given as relative paths are relative to the policy; bare names stay.
        assert_eq!(job.services["svc"].start, ["/etc/hokan/bin/svc", "start"]);
        assert_eq!(job.services["svc"].stop, ["systemctl", "stop", "svc"]);
        assert_eq!(job.schedule, Some(Schedule::Daily { at: 120 }));
        assert_eq!(job.line, 10);
    }

    #[test]
    fn unknown_fields_name_line_column_and_field() {
        let bad = GOOD.replace("backup_root =", "backup_rot =");
        let e = parse(&bad).unwrap_err();
        assert_eq!((e.line, e.column), (Some(13), Some(1)), "{e}");
        assert_eq!(e.field.as_deref(), Some("jobs.mailwise.backup_rot"));
        assert!(
            e.to_string()
                .starts_with("/etc/hokan/site.toml:13:1: jobs.mailwise.backup_rot: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn semantic_errors_point_at_the_value() {
        let e = parse(&GOOD.replace("daily at 02:00", "daily at 2am")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("jobs.mailwise.schedule"));
        assert_eq!(e.line, Some(14));
        assert!(e.message.contains("HH:MM"));

        let e = parse(&GOOD.replace(r#"servers = ["mw1"]"#, r#"servers = ["mw2"]"#)).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("jobs.mailwise.servers"));
        assert!(e.message.contains("`mw2` is not a server"), "{e}");

        let e = parse(&GOOD.replace("data = ", "set = ")).unwrap_err();
        assert!(e.message.contains("reserved"), "{e}");

        let e = parse(&GOOD.replace("Asia/Tokyo", "Tokyo time")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("site.timezone"));
    }

    #[test]
    fn the_readme_example_is_a_valid_policy() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n").expect("the README shows a policy") + 8;
        let end = start + readme[start..].find("```").unwrap();
        let p = Policy::parse(Path::new("/etc/hokan/README.toml"), &readme[start..end])
            .unwrap_or_else(|e| panic!("the README's policy example does not parse: {e}"));
        let job = p.job("mailwise").unwrap();
        assert_eq!(job.commands["maintenance-mode"].args, ["--site", "hq"]);
        assert_eq!(job.schedule, Some(Schedule::Daily { at: 130 }));
    }

    #[test]
    fn server_properties_are_scalars() {
        let text = GOOD.replace(
            "role = \"mailwise\"\n",
            "role = \"mailwise\"\nproperties = { web_service = true, host_name = \"mw1\" }\n",
        );
        let p = parse(&text).unwrap();
        let s = p.server("mw1").unwrap();
        assert_eq!(s.properties["web_service"], "true");
        assert_eq!(s.properties["host_name"], "mw1");
        assert_eq!(s.line, 6);

        let e = parse(&text.replace("web_service = true", "web_service = [1]")).unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("servers.mw1.properties.web_service")
        );
        assert_eq!(e.line, Some(9), "{e}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("[site]\nname = = \"x\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(8)), "{e}");
        // The key whose value is broken.
        assert_eq!(e.field.as_deref(), Some("site.name"), "{e}");
    }
}

/// Policies made in the unit tests of what reads them (the planner, the simulator).
#[cfg(test)]
pub(crate) mod testing {
    use super::Policy;

    /// Site `s` with server `a` (role `r`) and job `j` of plugin `p` on it; `grants` are the
    /// job's lines that grant roots and commands.
    pub(crate) fn one_job(grants: &str) -> Policy {
        let text = format!(
            "[site]\nname = \"s\"\n\n[[servers]]\nname = \"a\"\nrole = \"r\"\n\n\
             [jobs.j]\nplugin = \"p\"\nservers = [\"a\"]\n{grants}\n"
        );
        Policy::parse(std::path::Path::new("/etc/hokan/s.toml"), &text).unwrap()
    }
}
