//! Notification channels as policies and `host.toml` write them (`[[notify]]`), checked when
//! the file loads: a wrong address or a missing secret file is an error at `hokan validate`,
//! not a silence at 3 a.m.

use super::{PolicyError, Source, is_name};
use crate::notify::{Channel, ChannelKind, Email, EventKind, Severity, Tls, WebhookFormat};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The host's own settings file in a policy directory: channels for every site (or some).
pub const HOST_FILE: &str = "host.toml";

/// One `[[notify]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannel {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    secret_file: Option<Spanned<String>>,
    #[serde(default)]
    format: Option<Spanned<String>>,
    #[serde(default)]
    severity: Option<Spanned<String>>,
    #[serde(default)]
    sites: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    jobs: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    events: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    retry_after: Option<Spanned<String>>,
    #[serde(default)]
    give_up_after: Option<Spanned<String>>,
    #[serde(default)]
    server: Option<Spanned<String>>,
    #[serde(default)]
    tls: Option<Spanned<String>>,
    #[serde(default)]
    user: Option<Spanned<String>>,
    #[serde(default)]
    password_file: Option<Spanned<String>>,
    #[serde(default)]
    from: Option<Spanned<String>>,
    #[serde(default)]
    to: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    digest: Option<Spanned<String>>,
}

/// `host.toml` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    #[serde(default)]
    notify: Vec<Spanned<RawChannel>>,
}

/// The host's settings: `host.toml` in the policy directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// The file, if there is one.
    pub file: Option<PathBuf>,
    /// Channels that hear every site's events (or those their `sites` name).
    pub notify: Vec<Channel>,
}

impl HostConfig {
    /// Reads `host.toml` in the policy directory `dir`; no file means no host channels. A
    /// policy path that is one file has no host settings.
    pub fn load(dir: &Path) -> Result<HostConfig, PolicyError> {
        let path = dir.join(HOST_FILE);
        if !dir.is_dir() || !path.exists() {
            return Ok(HostConfig::default());
        }
        HostConfig::read(&path)
    }

    /// Reads a host settings file.
    pub fn read(path: &Path) -> Result<HostConfig, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            field: None,
            message: format!("cannot read the host settings: {e}"),
        })?;
        HostConfig::parse(path, &text)
    }

    /// Whether `path` names a host settings file by itself (not a site policy).
    pub fn is_host_file(path: &Path) -> bool {
        path.is_file() && path.file_name().is_some_and(|n| n == HOST_FILE)
    }

    /// Parses `host.toml` text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<HostConfig, PolicyError> {
        let src = Source { file: path, text };
        let raw: RawHost = src.deserialize()?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(HostConfig {
            file: Some(path.to_path_buf()),
            notify: src.channels(raw.notify, base, None)?,
        })
    }
}

fn loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host of an `http(s)://host[:port]/...` URL.
fn url_host(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some((scheme, host))
}

impl Source<'_> {
    /// Checks `[[notify]]` tables; `site` is the policy's site (a site's channels hear only it),
    /// `None` in `host.toml`.
    pub(super) fn channels(
        &self,
        raw: Vec<Spanned<RawChannel>>,
        base: &Path,
        site: Option<&str>,
    ) -> Result<Vec<Channel>, PolicyError> {
        let mut out: Vec<Channel> = Vec::new();
        for c in raw {
            let ch = self.channel(c.get_ref(), base, site)?;
            if out.iter().any(|o| o.id == ch.id) {
                return Err(self.at(
                    &c.get_ref().name,
                    "notify.name",
                    format!(
                        "there are two [[notify]] channels named `{}`; give each its own name",
                        c.get_ref().name.get_ref()
                    ),
                ));
            }
            out.push(ch);
        }
        Ok(out)
    }

    fn channel(
        &self,
        c: &RawChannel,
        base: &Path,
        site: Option<&str>,
    ) -> Result<Channel, PolicyError> {
        let name = c.name.get_ref().trim();
        if !is_name(name) {
            return Err(self.at(
                &c.name,
                "notify.name",
                "use letters, digits, `-` and `_` only (it names the channel in the delivery log)",
            ));
        }
        let f = |key: &str| format!("notify.{name}.{key}");
        let kind_name = c.kind.get_ref().as_str();
        // Fields that belong to other kinds of channel are refused, not ignored.
        let fields: [(&str, bool); 10] = [
            ("url", c.url.is_some()),
            ("secret_file", c.secret_file.is_some()),
            ("format", c.format.is_some()),
            ("server", c.server.is_some()),
            ("tls", c.tls.is_some()),
            ("user", c.user.is_some()),
            ("password_file", c.password_file.is_some()),
            ("from", c.from.is_some()),
            ("to", c.to.is_some()),
            ("digest", c.digest.is_some()),
        ];
        let allowed: &[&str] = match kind_name {
            "webhook" => &["url", "secret_file", "format"],
            "heartbeat" => &["url"],
            "email" => &[
                "server",
                "tls",
                "user",
                "password_file",
                "from",
                "to",
                "digest",
            ],
            other => {
                return Err(self.at(
                    &c.kind,
                    f("kind"),
                    format!(
                        "`{other}` is not a kind of channel; use `webhook`, `email` or `heartbeat`"
                    ),
                ));
            }
        };
        if let Some((field, _)) = fields.iter().find(|(k, set)| *set && !allowed.contains(k)) {
            return Err(self.at(
                &c.kind,
                f(field),
                format!(
                    "a `{kind_name}` channel has no `{field}`; its fields are {}",
                    allowed.join(", ")
                ),
            ));
        }
        let url = |key: &str| -> Result<String, PolicyError> {
            let Some(u) = &c.url else {
                return Err(self.at(
                    &c.kind,
                    f(key),
                    format!("a `{kind_name}` channel needs a `url`"),
                ));
            };
            match url_host(u.get_ref()) {
                Some(("https", _)) => Ok(u.get_ref().clone()),
                Some(("http", host)) if loopback(host) => Ok(u.get_ref().clone()),
                Some(("http", _)) => Err(self.at(
                    u,
                    f(key),
                    "use https:// (events name customers' sites and what failed there); http:// is only for a receiver on this machine",
                )),
                _ => Err(self.at(
                    u,
                    f(key),
                    format!("`{}` is not an https:// URL", u.get_ref()),
                )),
            }
        };
        let kind = match kind_name {
            "webhook" => ChannelKind::Webhook {
                url: url("url")?,
                secret_file: self.secret_path(&c.secret_file, base, f("secret_file"))?,
                format: match c.format.as_ref().map(|s| s.get_ref().as_str()) {
                    None | Some("hokan") => WebhookFormat::Hokan,
                    Some("slack") => WebhookFormat::Slack,
                    Some(other) => {
                        return Err(self.at(
                            c.format.as_ref().expect("matched Some"),
                            f("format"),
                            format!("`{other}` is not a webhook format; use `hokan` (the event as JSON) or `slack` (a chat line, also for Mattermost and Teams)"),
                        ));
                    }
                },
            },
            "heartbeat" => ChannelKind::Heartbeat { url: url("url")? },
            _ => ChannelKind::Email(self.email(c, base, &f)?),
        };
        let severity = match &c.severity {
            None => Severity::Warning,
            Some(s) => Severity::parse(s.get_ref()).ok_or_else(|| {
                self.at(
                    s,
                    f("severity"),
                    format!("`{}` is not a severity; use `info`, `warning` or `critical` (the least the channel hears)", s.get_ref()),
                )
            })?,
        };
        let sites = match (&c.sites, site) {
            (Some(s), Some(_)) => {
                return Err(self.at(
                    s,
                    f("sites"),
                    "a site's own channel hears only its site; remove `sites`, or move the channel to host.toml",
                ));
            }
            (Some(s), None) => Some(s.get_ref().clone()),
            (None, Some(site)) => Some(vec![site.to_string()]),
            (None, None) => None,
        };
        let events = match &c.events {
            None => None,
            Some(list) => Some(
                list.get_ref()
                    .iter()
                    .map(|e| {
                        EventKind::parse(e).ok_or_else(|| {
                            self.at(
                                list,
                                f("events"),
                                format!(
                                    "`{e}` is not an event; the events are {}",
                                    EventKind::ALL.map(EventKind::as_str).join(", ")
                                ),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Channel {
            id: format!("{}/{name}", site.unwrap_or("host")),
            kind,
            severity,
            sites,
            jobs: c.jobs.as_ref().map(|j| j.get_ref().clone()),
            events,
            retry_after: self
                .length(&c.retry_after, f("retry_after"))?
                .unwrap_or(Duration::from_secs(30)),
            give_up_after: self
                .length(&c.give_up_after, f("give_up_after"))?
                .unwrap_or(Duration::from_secs(3 * 86400)),
        })
    }

    /// A length of time such as `30s` or `3d`, if given.
    fn length(
        &self,
        d: &Option<Spanned<String>>,
        field: String,
    ) -> Result<Option<Duration>, PolicyError> {
        let Some(d) = d else { return Ok(None) };
        humantime::parse_duration(d.get_ref())
            .ok()
            .filter(|v| !v.is_zero())
            .map(Some)
            .ok_or_else(|| {
                self.at(
                    d,
                    field,
                    format!(
                        "`{}` is not a length of time such as `30s` or `3d`",
                        d.get_ref()
                    ),
                )
            })
    }

    /// A file holding a secret, relative to the file that names it; it must be readable now,
    /// so that `hokan validate` finds a wrong path rather than the first failed delivery.
    fn secret_path(
        &self,
        p: &Option<Spanned<String>>,
        base: &Path,
        field: String,
    ) -> Result<Option<PathBuf>, PolicyError> {
        let Some(p) = p else { return Ok(None) };
        let path = base.join(p.get_ref());
        std::fs::File::open(&path).map_err(|e| {
            self.at(
                p,
                field,
                format!(
                    "cannot read {}: {e}; the file holds the secret (only its owner should read it)",
                    path.display()
                ),
            )
        })?;
        Ok(Some(path))
    }

    fn email(
        &self,
        c: &RawChannel,
        base: &Path,
        f: &dyn Fn(&str) -> String,
    ) -> Result<Email, PolicyError> {
        let tls = match c.tls.as_ref().map(|t| t.get_ref().as_str()) {
            None | Some("starttls") => Tls::Starttls,
            Some("tls") => Tls::Tls,
            Some("none") => Tls::None,
            Some(other) => {
                return Err(self.at(
                    c.tls.as_ref().expect("matched Some"),
                    f("tls"),
                    format!("`{other}` is not a TLS mode; use `starttls` (port 587), `tls` (port 465) or `none` (a server on this machine only)"),
                ));
            }
        };
        let Some(server) = &c.server else {
            return Err(self.at(
                &c.kind,
                f("server"),
                "an `email` channel needs a `server` (`mail.example.com:587`)",
            ));
        };
        let (host, port) = match server.get_ref().rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
                h.to_string(),
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| self.at(server, f("server"), format!("`{p}` is not a port")))?,
            ),
            _ => (
                server.get_ref().clone(),
                match tls {
                    Tls::Starttls => 587,
                    Tls::Tls => 465,
                    Tls::None => 25,
                },
            ),
        };
        if host.is_empty() {
            return Err(self.at(server, f("server"), "the server's name is empty"));
        }
        if tls == Tls::None && !loopback(&host) {
            return Err(self.at(
                c.tls.as_ref().unwrap_or(server),
                f("tls"),
                format!("`tls = \"none\"` sends the messages in the clear; it is only for a server on this machine, not `{host}`"),
            ));
        }
        let mailbox = |span: std::ops::Range<usize>, v: &str, key: &str| {
            v.parse::<lettre::message::Mailbox>().map_err(|e| {
                self.error(
                    Some(span),
                    Some(f(key)),
                    format!("`{v}` is not an email address ({e})"),
                )
            })
        };
        let Some(from) = &c.from else {
            return Err(self.at(
                &c.kind,
                f("from"),
                "an `email` channel needs a `from` address",
            ));
        };
        mailbox(from.span(), from.get_ref(), "from")?;
        let to = match &c.to {
            Some(to) if !to.get_ref().is_empty() => {
                for t in to.get_ref() {
                    mailbox(to.span(), t, "to")?;
                }
                to.get_ref().clone()
            }
            Some(to) => return Err(self.at(to, f("to"), "name at least one recipient")),
            None => {
                return Err(self.at(&c.kind, f("to"), "an `email` channel needs `to` recipients"));
            }
        };
        if let (Some(pw), None) = (&c.password_file, &c.user) {
            return Err(self.at(
                pw,
                f("user"),
                "a `password_file` needs the `user` it is for",
            ));
        }
        let digest = match &c.digest {
            None => None,
            Some(_) => {
                let d = self
                    .length(&c.digest, f("digest"))?
                    .expect("a digest was given");
                if d < Duration::from_secs(60) {
                    return Err(self.at(
                        c.digest.as_ref().expect("checked"),
                        f("digest"),
                        "a digest collects at least a minute of events",
                    ));
                }
                Some(d)
            }
        };
        Ok(Email {
            server: host,
            port,
            tls,
            user: c.user.as_ref().map(|u| u.get_ref().clone()),
            password_file: self.secret_path(&c.password_file, base, f("password_file"))?,
            from: from.get_ref().clone(),
            to,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(text: &str) -> Result<HostConfig, String> {
        HostConfig::parse(Path::new("/etc/hokan/host.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn host_channels_load_with_their_defaults() {
        let h = host(
            r#"
[[notify]]
name = "ops"
kind = "webhook"
url = "https://hooks.example.com/hokan"
format = "slack"
sites = ["tokyo-hq"]

[[notify]]
name = "mail"
kind = "email"
server = "mail.example.com"
from = "hokan@example.com"
to = ["ops@example.com"]
digest = "1h"
severity = "critical"

[[notify]]
name = "hc"
kind = "heartbeat"
url = "https://hc-ping.com/0b5e"
jobs = ["mailwise"]
"#,
        )
        .unwrap();
        let [ops, mail, hc] = &h.notify[..] else {
            panic!("{h:?}")
        };
        assert_eq!(ops.id, "host/ops");
        assert_eq!(ops.severity, Severity::Warning);
        assert_eq!(ops.sites.as_deref(), Some(&["tokyo-hq".to_string()][..]));
        assert_eq!(ops.retry_after, Duration::from_secs(30));
        assert_eq!(ops.give_up_after, Duration::from_secs(3 * 86400));
        let ChannelKind::Email(m) = &mail.kind else {
            panic!()
        };
        assert_eq!(
            (m.server.as_str(), m.port, m.tls),
            ("mail.example.com", 587, Tls::Starttls)
        );
        assert_eq!(m.digest, Some(Duration::from_secs(3600)));
        assert_eq!(mail.severity, Severity::Critical);
        assert!(matches!(hc.kind, ChannelKind::Heartbeat { .. }));
        assert_eq!(hc.jobs.as_deref(), Some(&["mailwise".to_string()][..]));
    }

    #[test]
    fn bad_channels_are_refused_naming_the_field_and_what_to_do() {
        let cases = [
            (
                "kind = \"pager\"",
                "notify.x.kind",
                "use `webhook`, `email` or `heartbeat`",
            ),
            ("kind = \"webhook\"", "notify.x.url", "needs a `url`"),
            (
                "kind = \"webhook\"\nurl = \"http://hooks.example.com/\"",
                "notify.x.url",
                "use https://",
            ),
            (
                "kind = \"webhook\"\nurl = \"https://h/\"\nto = [\"a@b\"]",
                "notify.x.to",
                "has no `to`",
            ),
            (
                "kind = \"webhook\"\nurl = \"https://h/\"\nsecret_file = \"no-such-secret\"",
                "notify.x.secret_file",
                "cannot read /etc/hokan/no-such-secret",
            ),
            (
                "kind = \"webhook\"\nurl = \"https://h/\"\nseverity = \"fatal\"",
                "notify.x.severity",
                "use `info`, `warning` or `critical`",
            ),
            (
                "kind = \"webhook\"\nurl = \"https://h/\"\nevents = [\"run-exploded\"]",
                "notify.x.events",
                "the events are run-completed",
            ),
            (
                "kind = \"webhook\"\nurl = \"https://h/\"\nretry_after = \"soon\"",
                "notify.x.retry_after",
                "not a length of time",
            ),
            (
                "kind = \"email\"\nserver = \"mail.example.com\"\ntls = \"none\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]",
                "notify.x.tls",
                "only for a server on this machine",
            ),
            (
                "kind = \"email\"\nserver = \"m:587\"\nfrom = \"not an address\"\nto = [\"d@e.f\"]",
                "notify.x.from",
                "is not an email address",
            ),
            (
                "kind = \"email\"\nserver = \"m:587\"\nfrom = \"a@b.c\"\nto = []",
                "notify.x.to",
                "at least one recipient",
            ),
            (
                "kind = \"email\"\nserver = \"m:port\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]",
                "notify.x.server",
                "is not a port",
            ),
            (
                "kind = \"email\"\nserver = \"m\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\ndigest = \"10s\"",
                "notify.x.digest",
                "at least a minute",
            ),
        ];
        for (body, field, says) in cases {
            let err = host(&format!("[[notify]]\nname = \"x\"\n{body}\n")).unwrap_err();
            assert!(
                err.contains(field) && err.contains(says),
                "{body}\n=> {err}"
            );
            assert!(err.starts_with("/etc/hokan/host.toml:"), "{err}");
        }
        let two = host("[[notify]]\nname = \"x\"\nkind = \"heartbeat\"\nurl = \"https://a/\"\n[[notify]]\nname = \"x\"\nkind = \"heartbeat\"\nurl = \"https://b/\"\n").unwrap_err();
        assert!(two.contains("two [[notify]] channels named `x`"), "{two}");
        let unknown =
            host("[[notify]]\nname = \"x\"\nkind = \"heartbeat\"\nurl = \"https://a/\"\nuri = 1\n")
                .unwrap_err();
        assert!(unknown.contains("uri"), "{unknown}");
        // A receiver on this machine may be plain HTTP, and a local relay plain SMTP.
        host(
            "[[notify]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:8080/hook\"\n",
        )
        .unwrap();
        host("[[notify]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"http://[::1]:8080/hook\"\n")
            .unwrap();
        host("[[notify]]\nname = \"x\"\nkind = \"email\"\nserver = \"localhost:25\"\ntls = \"none\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n").unwrap();
    }

    #[test]
    fn urls_give_their_host() {
        assert_eq!(
            url_host("https://user@h.example:8443/x?y"),
            Some(("https", "h.example"))
        );
        assert_eq!(url_host("http://[::1]:8080/"), Some(("http", "[::1]")));
        assert_eq!(url_host("hooks.example.com"), None);
        assert!(loopback("[::1]") && loopback("127.0.0.2") && loopback("localhost"));
        assert!(!loopback("localhost.example.com"));
    }
}
