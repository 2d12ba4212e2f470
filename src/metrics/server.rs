//! The metrics endpoint: a small HTTP server of its own (axum), as GOST runs
//! one: `GET {path}` answers the text format; any other path is 404. With
//! `auth`, a request without the right HTTP basic credentials gets 401 and a
//! `WWW-Authenticate` challenge.
//!
//! It is separate from the services (a reload never touches it) and from the
//! Web API (a scraper needs no API credentials).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::{CONTENT_TYPE, Sources, encode, registry};
use crate::config::auth::AuthConfig;
use crate::config::metrics::MetricsConfig;

/// Starting the endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running metrics endpoint; it stops when the token given to
/// [`start`](Self::start) is cancelled.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
}

struct App {
    registry: Registry,
    auth: Option<AuthConfig>,
}

impl MetricsServer {
    /// Bind `cfg.addr` and serve until `cancel`. Binding happens before this
    /// returns, so a taken port is an error at start, not a log line later.
    pub async fn start(
        cfg: &MetricsConfig,
        sources: Sources,
        cancel: CancellationToken,
    ) -> Result<MetricsServer, MetricsError> {
        let bind_err = |source| MetricsError::Bind {
            addr: cfg.addr.addr,
            source,
        };
        let listener = tokio::net::TcpListener::bind(cfg.addr.addr)
            .await
            .map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let app = Arc::new(App {
            registry: registry(sources),
            auth: cfg.auth.clone(),
        });
        let router = Router::new().route(&cfg.path, get(scrape)).with_state(app);
        tracing::info!(%addr, path = %cfg.path, auth = cfg.auth.is_some(), "metrics endpoint listening");
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
        Ok(MetricsServer { addr })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn scrape(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(auth) = &app.auth
        && !authorized(auth, &headers)
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"gateway metrics\""),
            )],
            "Unauthorized\n",
        )
            .into_response();
    }
    match encode(&app.registry) {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
    }
}

/// `Authorization: Basic base64(user:pass)` with the configured credentials.
fn authorized(auth: &AuthConfig, headers: &HeaderMap) -> bool {
    (headers.get(header::AUTHORIZATION)).is_some_and(|v| auth.matches_basic(v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::auth::Secret;

    #[test]
    fn basic_auth() {
        let auth = AuthConfig {
            username: "prom".into(),
            password: Secret("s:cret".into()),
        };
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        // base64("prom:s:cret"): the password may hold a colon.
        assert!(authorized(&auth, &with("Basic cHJvbTpzOmNyZXQ=")));
        assert!(!authorized(&auth, &with("Basic cHJvbTp3cm9uZw=="))); // prom:wrong
        assert!(!authorized(&auth, &with("Basic !!!")));
        assert!(!authorized(&auth, &with("Bearer x")));
        assert!(!authorized(&auth, &HeaderMap::new()));
    }
}
