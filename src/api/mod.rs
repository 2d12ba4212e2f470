//! The Web API and the status page, in GOST v3's shape (docs/api.md).
//!
//! ```text
//! GET  /                         the status page (one self-contained HTML file)
//! GET  /status                   what the page shows (read-only summary)
//! GET  /config?format=json|yaml  the running config, secrets masked, with live status
//! POST /config?format=&path=     save the running config (atomically)
//! POST /config/reload            re-read the file (as SIGHUP)
//! GET|POST /config/services      list / add
//! GET|PUT|DELETE /config/services/{name}
//! GET|POST /config/chains, GET|PUT|DELETE /config/chains/{name}   the same for chains
//! GET|POST /config/hops, GET|PUT|DELETE /config/hops/{name}       the same for hops
//! GET  /failover                 state, reason, since, VIP, peers, transitions
//! ```
//!
//! Success with data is `{"data": …}`, without `{"msg": "OK"}`; a failure is a
//! 4xx/5xx with `{"code": 4000x, "msg": "…"}` ([`ApiError`]). Every change goes
//! through the [`Daemon`](crate::daemon::Daemon)'s verbs, the same ones SIGHUP
//! uses: validated like the file, applied to the one service it names, nothing
//! changed when refused.
//!
//! Protections: bodies are capped at [`MAX_BODY`] (413 beyond), requests at
//! [`REQUEST_TIMEOUT`], request heads at [`HEADER_TIMEOUT`]; a TLS handshake has
//! [`HEADER_TIMEOUT`] too. With `auth`, everything but the page's HTML and its
//! read-only summary (`GET /`, `GET /status`) needs HTTP basic auth; the
//! reasoning is in docs/api.md.

pub mod config;
mod page;
mod routes;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use config::ApiConfig;

use crate::daemon::{EditError, Shared};
use crate::failover::driver::FailoverStatus;

/// Largest request body (a service or a whole config is a few KiB).
pub const MAX_BODY: usize = 1 << 20;
/// Longest a request may take once its head is read.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a client may take to send a request head (or finish a TLS handshake).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API reads and changes.
#[derive(Clone)]
pub struct Context {
    pub daemon: Shared,
    /// The failover's status, when `floating_ip` is enabled.
    pub failover: Option<watch::Receiver<FailoverStatus>>,
    /// The standby/active switch, when `floating_ip` is enabled.
    pub control: Option<crate::failover::driver::Control>,
}

/// Why the API did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
}

/// State shared by the handlers.
#[derive(Clone)]
struct App {
    ctx: Context,
    cfg: Arc<ApiConfig>,
}

/// A failure in GOST's shape: `{"code": 4000x, "msg": "…"}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub msg: String,
}

impl ApiError {
    pub fn invalid(msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: 40001,
            msg: msg.into(),
        }
    }

    pub fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: 40004,
            msg: msg.into(),
        }
    }
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> ApiError {
        let status = match e {
            EditError::Invalid(_) => StatusCode::BAD_REQUEST,
            EditError::Duplicate(_) | EditError::Create(_) => StatusCode::CONFLICT,
            EditError::NotFound(_) => StatusCode::NOT_FOUND,
            EditError::Save(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            code: e.code(),
            msg: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "msg": self.msg });
        (self.status, axum::Json(body)).into_response()
    }
}

/// `{"msg": "OK"}`.
fn ok() -> Response {
    axum::Json(serde_json::json!({ "msg": "OK" })).into_response()
}

/// `{"data": …}`.
fn data(v: serde_json::Value) -> Response {
    axum::Json(serde_json::json!({ "data": v })).into_response()
}

/// Read a body of at most [`MAX_BODY`] bytes.
async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: 40001,
            msg: format!("body: larger than {MAX_BODY} bytes (or cut short)"),
        })
}

/// Whether the request carried the configured credentials (always true without
/// `auth`). Compared through SHA-256 so the time taken says nothing about them.
fn authenticated(cfg: &ApiConfig, req: &Request) -> bool {
    use base64::Engine;
    let Some(auth) = &cfg.auth else {
        return true;
    };
    let given = (req.headers().get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        });
    let Some(given) = given else {
        return false;
    };
    let expected = format!("{}:{}", auth.username, auth.password.expose());
    Sha256::digest(&given) == Sha256::digest(expected.as_bytes())
}

/// Whether the request was authenticated; set by the auth layer for handlers.
#[derive(Debug, Clone, Copy)]
struct Authed(bool);

/// Basic auth on everything but the page and its summary; the request timeout;
/// the access log.
async fn guard(State(app): State<App>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let authed = authenticated(&app.cfg, &req);
    let public = req.method() == axum::http::Method::GET && {
        let p = path.strip_prefix(&app.cfg.path_prefix).unwrap_or("");
        p.is_empty() || p == "/" || p == "/status"
    };
    let resp = if !authed && !public {
        let mut r = ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: 401,
            msg: "Unauthorized".into(),
        }
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"gateway\""),
        );
        r
    } else {
        req.extensions_mut().insert(Authed(authed));
        match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: 50001,
                msg: format!("request not completed within {REQUEST_TIMEOUT:?}"),
            }
            .into_response(),
        }
    };
    if app.cfg.accesslog {
        tracing::info!(
            target: "gateway::api::access",
            %method,
            path = %path,
            status = resp.status().as_u16(),
            took_ms = started.elapsed().as_millis() as u64,
            "api request"
        );
    }
    resp
}

fn router(app: App) -> Router {
    let p = app.cfg.path_prefix.clone();
    routes::routes(&p)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Bind the API's address and serve it until `cancel`. Binding (and loading the
/// TLS pair) happens before this returns, so a taken port stops the start.
pub async fn spawn(
    cfg: ApiConfig,
    ctx: Context,
    cancel: CancellationToken,
) -> Result<SocketAddr, ServeError> {
    let addr = cfg.addr.addr;
    let tls = match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => {
            let t = crate::config::tls::TlsConfig {
                cert_file: Some(c.clone()),
                key_file: Some(k.clone()),
                ..Default::default()
            };
            Some(crate::proxy::tls::acceptor(&t).map_err(|e| ServeError::Tls(e.to_string()))?)
        }
        _ => None,
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "api: listening on {scheme}://{local}{}/ (auth {})",
        cfg.path_prefix,
        if cfg.auth.is_some() { "on" } else { "off" }
    );
    let app = router(App {
        ctx,
        cfg: Arc::new(cfg),
    });
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::debug!(error = %e, "api: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let svc = TowerToHyperService::new(app.clone());
            let tls = tls.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let http = {
                    let mut b = hyper::server::conn::http1::Builder::new();
                    b.timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .max_buf_size(64 * 1024);
                    b
                };
                let served = async {
                    match tls {
                        Some(acc) => {
                            match crate::proxy::tls::accept_with_timeout(
                                &acc,
                                stream,
                                HEADER_TIMEOUT,
                            )
                            .await
                            {
                                Ok(s) => http.serve_connection(TokioIo::new(s), svc).await,
                                Err(e) => {
                                    tracing::debug!(%peer, error = %e, "api: TLS handshake failed");
                                    Ok(())
                                }
                            }
                        }
                        None => http.serve_connection(TokioIo::new(stream), svc).await,
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    r = served => if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "api: connection ended");
                    }
                }
            });
        }
    });
    Ok(local)
}
