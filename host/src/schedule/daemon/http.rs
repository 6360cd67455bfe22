//! The daemon's HTTP endpoints (`hokan daemon --http ADDR`): `/metrics` for Prometheus, and the
//! read-only status page (`/`, `/runs/ID`).
//!
//! The server only carries requests: each one is answered by the daemon's own loop, which owns
//! the history and the calendars, through a channel, as `hokan status` is on the Unix socket.
//! On loopback it answers anyone on the host; on any other address it answers only requests
//! that carry the bearer token (`--http-token-file`), and the daemon refuses to start without
//! one, so a status page never leaks to the network by accident.

use super::DaemonError;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;
use tokio::sync::{mpsc, oneshot};

/// Where the daemon serves HTTP, and the token it asks for.
#[derive(Clone)]
pub struct HttpOptions {
    /// The address to listen on (port 0: any free port, written to `http.addr`).
    pub addr: SocketAddr,
    /// The bearer token requests must carry; required off loopback.
    pub token: Option<String>,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl HttpOptions {
    /// Options for `addr`, with the token read from `token_file`; refuses an address off
    /// loopback without a token, and a token file that is empty or unreadable.
    pub fn new(addr: SocketAddr, token_file: Option<&Path>) -> Result<HttpOptions, String> {
        let token = match token_file {
            None => None,
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("cannot read the token file {}: {e}", p.display()))?;
                let t = text.trim();
                if t.is_empty() {
                    return Err(format!(
                        "the token file {} is empty; put a long random token in it (`openssl rand -hex 32`)",
                        p.display()
                    ));
                }
                Some(t.to_string())
            }
        };
        if token.is_none() && !addr.ip().is_loopback() {
            return Err(format!(
                "--http {addr} listens beyond this host, so it needs a bearer token: give \
                 --http-token-file FILE, or listen on 127.0.0.1"
            ));
        }
        Ok(HttpOptions { addr, token })
    }
}

/// What a request asks the daemon's loop.
#[derive(Debug)]
pub(super) enum Ask {
    /// The `/metrics` document, or why it cannot be made.
    Metrics(oneshot::Sender<Result<String, String>>),
    /// A page of the status page: its HTML, `None` when there is no such page.
    Page(Page, oneshot::Sender<Result<Option<String>, String>>),
}

/// The status page's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Page {
    /// Every site and job.
    Overview,
    /// One slot's run, by its history row.
    Run(i64),
}

#[derive(Clone)]
struct App {
    asks: mpsc::Sender<Ask>,
    /// The token's digest: comparing digests takes the same time however much of a wrong token
    /// matches.
    token: Option<[u8; 32]>,
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

/// Binds the address, and serves on it until the returned task is aborted.
pub(super) async fn serve(
    opts: &HttpOptions,
    asks: mpsc::Sender<Ask>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), DaemonError> {
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|e| DaemonError::Setup(format!("cannot listen on {}: {e}", opts.addr)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| DaemonError::Setup(format!("cannot listen on {}: {e}", opts.addr)))?;
    let app = App {
        asks,
        token: opts.token.as_deref().map(|t| digest(t.as_bytes())),
    };
    let router = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(overview))
        .route("/runs/{id}", get(run_page))
        .with_state(app);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!("the daemon's HTTP server stopped: {e}");
        }
    });
    Ok((bound, task))
}

/// `None` when the request may be answered, else the refusal.
fn refused(app: &App, headers: &HeaderMap) -> Option<Response> {
    let want = app.token.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| digest(t.trim().as_bytes()));
    if given.as_ref() == Some(want) {
        return None;
    }
    let mut r = (
        StatusCode::UNAUTHORIZED,
        "this hokan daemon answers only requests with its bearer token (Authorization: Bearer ...)\n",
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"hokan\""),
    );
    Some(r)
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&app, &headers) {
        return r;
    }
    let (tx, rx) = oneshot::channel();
    if app.asks.send(Ask::Metrics(tx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping\n").into_response();
    }
    match rx.await {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(prometheus::TEXT_FORMAT),
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping\n").into_response(),
    }
}

async fn overview(State(app): State<App>, headers: HeaderMap) -> Response {
    page(app, &headers, Page::Overview).await
}

async fn run_page(
    State(app): State<App>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match id.parse::<i64>() {
        Ok(id) => page(app, &headers, Page::Run(id)).await,
        // Checked after the token, so that nothing is said to a stranger.
        Err(_) => match refused(&app, &headers) {
            Some(r) => r,
            None => (StatusCode::NOT_FOUND, "no such run\n").into_response(),
        },
    }
}

async fn page(app: App, headers: &HeaderMap, which: Page) -> Response {
    if let Some(r) = refused(&app, headers) {
        return r;
    }
    let (tx, rx) = oneshot::channel();
    if app.asks.send(Ask::Page(which, tx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping\n").into_response();
    }
    match rx.await {
        Ok(Ok(Some(html))) => axum::response::Html(html).into_response(),
        Ok(Ok(None)) => (StatusCode::NOT_FOUND, "no such page\n").into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_a_token_is_required_and_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let any: SocketAddr = "0.0.0.0:9797".parse().unwrap();
        let e = HttpOptions::new(any, None).unwrap_err();
        assert!(e.contains("--http-token-file"), "{e}");
        assert!(HttpOptions::new("127.0.0.1:9797".parse().unwrap(), None).is_ok());
        assert!(HttpOptions::new("[::1]:9797".parse().unwrap(), None).is_ok());
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(
            HttpOptions::new(any, Some(&empty))
                .unwrap_err()
                .contains("empty")
        );
        let good = dir.path().join("token");
        std::fs::write(&good, "s3cret\n").unwrap();
        let o = HttpOptions::new(any, Some(&good)).unwrap();
        assert_eq!(o.token.as_deref(), Some("s3cret"));
        assert!(
            !format!("{o:?}").contains("s3cret"),
            "the token is never logged"
        );
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let (asks, _rx) = mpsc::channel(1);
        let app = App {
            asks,
            token: Some(digest(b"s3cret")),
        };
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(v));
            h
        };
        assert!(refused(&app, &with("Bearer s3cret")).is_none());
        let r = refused(&app, &with("Bearer s3cre")).unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert!(refused(&app, &with("Basic czNjcmV0")).is_some());
        assert!(refused(&app, &HeaderMap::new()).is_some());
        let open = App { token: None, ..app };
        assert!(refused(&open, &HeaderMap::new()).is_none());
    }
}
