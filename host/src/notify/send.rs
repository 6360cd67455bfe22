//! One attempt at delivering events to a channel: a signed webhook, a heartbeat ping, an email.
//!
//! Every failure is an `Err` with what went wrong in a line (the HTTP status and the start of
//! the answer, the SMTP reply, the connection error), which the delivery log keeps; the caller
//! decides whether to retry.

use super::{Email, Event, EventKind, Tls, WebhookFormat};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use std::path::Path;
use std::time::Duration;

/// How long one attempt may take, connection included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// The HTTP client for webhooks and heartbeats: certificates checked against the system's
/// trust store (an MSP's own CA included), HTTP error statuses returned, not raised.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(ATTEMPT_TIMEOUT))
        .http_status_as_error(false)
        .user_agent(concat!("hokan/", env!("CARGO_PKG_VERSION")))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into()
}

/// A signing secret as a file holds it: Standard Webhooks' `whsec_<base64>`, or the bytes
/// themselves (without the line's end).
pub fn secret(text: &[u8]) -> Vec<u8> {
    let trimmed = text.trim_ascii();
    if let Some(b64) = trimmed.strip_prefix(b"whsec_")
        && let Ok(key) = BASE64.decode(b64)
    {
        return key;
    }
    trimmed.to_vec()
}

/// The `webhook-signature` header for a message: `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}`, as Standard Webhooks signs, so a receiver verifies it with any of
/// that spec's libraries.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// A webhook's body for `e`.
pub fn webhook_body(e: &Event, format: WebhookFormat) -> String {
    let v = match format {
        WebhookFormat::Hokan => serde_json::json!({
            "type": e.kind.as_str(),
            "timestamp": e.at.to_string(),
            "data": e,
        }),
        WebhookFormat::Slack => serde_json::json!({
            "text": format!("*{}*\n{}", e.headline(), e.reason),
        }),
    };
    v.to_string()
}

/// Reads a secret file named in a channel, naming it when it cannot.
fn read_secret(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

/// POSTs `e` to a webhook, signed when the channel has a secret.
pub fn webhook(
    agent: &ureq::Agent,
    url: &str,
    secret_file: Option<&Path>,
    format: WebhookFormat,
    e: &Event,
) -> Result<String, String> {
    let body = webhook_body(e, format);
    let mut req = agent
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &e.id);
    if let Some(f) = secret_file {
        let key = secret(&read_secret(f, "webhook secret")?);
        let ts = jiff::Timestamp::now().as_second();
        req = req
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sign(&key, &e.id, ts, body.as_bytes()));
    }
    answer(req.send(body.as_bytes()))
}

/// Pings a heartbeat check: the URL on success, `URL/fail` on anything else, with the event's
/// text as the body (healthchecks.io shows it with the ping).
pub fn heartbeat(agent: &ureq::Agent, url: &str, e: &Event) -> Result<String, String> {
    let url = if e.kind == EventKind::RunCompleted {
        url.to_string()
    } else {
        format!("{}/fail", url.trim_end_matches('/'))
    };
    answer(
        agent
            .post(&url)
            .header("content-type", "text/plain; charset=utf-8")
            .send(e.text().as_bytes()),
    )
}

/// A 2xx answer is delivered; anything else is an error with its status and first words.
fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<String, String> {
    let mut resp = r.map_err(|e| e.to_string())?;
    let status = resp.status();
    let text = resp
        .body_mut()
        .with_config()
        .limit(512)
        .read_to_string()
        .unwrap_or_default();
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text: String = text.chars().take(200).collect();
    let line = format!(
        "HTTP {}{}",
        status.as_u16(),
        if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        }
    );
    if status.is_success() {
        Ok(line)
    } else {
        Err(line)
    }
}

/// The subject of a message with `events` in it.
pub fn subject(events: &[Event]) -> String {
    match events {
        [one] => format!("[hokan] {}", one.headline()),
        many => {
            let worst = many
                .iter()
                .map(|e| e.severity)
                .max()
                .expect("a digest has events");
            format!(
                "[hokan] {} events, the worst {} ({})",
                many.len(),
                worst.as_str(),
                many.iter()
                    .map(|e| format!("{}/{}", e.site, e.job))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}

/// Sends one message with `events` (one event, or a digest's) over SMTP.
pub fn email(m: &Email, events: &[Event]) -> Result<String, String> {
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{Message, SmtpTransport, Transport};
    let id = match events {
        [one] => one.id.clone(),
        many => {
            let mut h = blake3::Hasher::new();
            for e in many {
                h.update(e.id.as_bytes());
            }
            format!("hokan_digest_{}", &h.finalize().to_hex()[..24])
        }
    };
    let mut b = Message::builder()
        .from(
            m.from
                .parse()
                .map_err(|e| format!("from `{}`: {e}", m.from))?,
        )
        .subject(subject(events))
        .message_id(Some(format!("<{id}@hokan>")))
        .header(ContentType::TEXT_PLAIN);
    for to in &m.to {
        b = b.to(to.parse().map_err(|e| format!("to `{to}`: {e}"))?);
    }
    let text = events
        .iter()
        .map(Event::text)
        .collect::<Vec<_>>()
        .join("\n\n----\n\n");
    let msg = b.body(text).map_err(|e| e.to_string())?;
    let builder = match m.tls {
        Tls::Starttls => SmtpTransport::starttls_relay(&m.server).map_err(|e| e.to_string())?,
        Tls::Tls => SmtpTransport::relay(&m.server).map_err(|e| e.to_string())?,
        Tls::None => SmtpTransport::builder_dangerous(&m.server),
    };
    let mut builder = builder.port(m.port).timeout(Some(ATTEMPT_TIMEOUT));
    if let Some(user) = &m.user {
        let password = match &m.password_file {
            Some(f) => String::from_utf8_lossy(&read_secret(f, "SMTP password")?)
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            None => String::new(),
        };
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    let reply = builder.build().send(&msg).map_err(|e| e.to_string())?;
    Ok(format!(
        "SMTP {}: {}",
        reply.code(),
        reply.message().collect::<Vec<_>>().join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testing::event;
    use super::*;

    #[test]
    fn signatures_are_standard_webhooks_signatures() {
        // The Standard Webhooks specification's own example.
        let key = secret(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n");
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        // A secret that is not `whsec_` base64 is its bytes.
        assert_eq!(secret(b"plain secret\n"), b"plain secret");
    }

    #[test]
    fn bodies_carry_the_event_or_a_chat_line() {
        let mut e = event(EventKind::RunFailed);
        e.step = Some("copy-data".into());
        let v: serde_json::Value =
            serde_json::from_str(&webhook_body(&e, WebhookFormat::Hokan)).unwrap();
        assert_eq!(v["type"], "run-failed");
        assert_eq!(v["data"]["site"], "hq");
        assert_eq!(v["data"]["step"], "copy-data");
        assert_eq!(v["data"]["reason"], "mwsave exited with status 2");
        let s: serde_json::Value =
            serde_json::from_str(&webhook_body(&e, WebhookFormat::Slack)).unwrap();
        assert_eq!(
            s["text"],
            "*CRITICAL hq/mail: run failed at step copy-data*\nmwsave exited with status 2"
        );
    }

    #[test]
    fn a_digest_subject_names_its_worst_and_its_jobs() {
        let a = event(EventKind::RunFailed);
        let mut b = event(EventKind::SlotSkipped);
        b.job = "other".into();
        assert_eq!(
            subject(std::slice::from_ref(&a)),
            "[hokan] CRITICAL hq/mail: run failed"
        );
        assert_eq!(
            subject(&[a, b]),
            "[hokan] 2 events, the worst critical (hq/mail, hq/other)"
        );
    }
}
