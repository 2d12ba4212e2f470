//! Handlers: what a service does with a connection once the listener accepted it.
//!
//! A listener (TCP, TLS, ...) produces a byte stream; a handler speaks a proxy
//! protocol on it, learns where the client wants to go, reaches that target through
//! the [`Router`](crate::proxy::router::Router) and then moves bytes. This module
//! holds the three proxy handlers of GOST's model:
//!
//! * [`http::HttpHandler`] — an HTTP/1.x forward proxy: absolute-URI requests are
//!   forwarded (keep-alive, bodies streamed), `CONNECT host:port` opens a tunnel.
//! * [`socks::Socks5Handler`] — SOCKS5 (RFC 1928) CONNECT and UDP ASSOCIATE, with
//!   RFC 1929 username/password; [`socks::Socks4Handler`] — SOCKS4 and 4a CONNECT.
//! * [`auto::AutoHandler`] — one port for all of them: the first byte decides.
//!
//! # Using a handler
//!
//! Every handler is built once per service from its options (the YAML `handler:`
//! section minus `type`, i.e. `{auth, metadata}`) and a router, and then serves each
//! accepted connection:
//!
//! ```no_run
//! # async fn demo(listener: tokio::net::TcpListener) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use gateway::proxy::handler::{ConnInfo, http::{HttpHandler, HttpHandlerOptions}};
//! use gateway::proxy::router::Router;
//!
//! let handler = Arc::new(HttpHandler::new(HttpHandlerOptions::default(), Router::default()));
//! loop {
//!     let (stream, peer) = listener.accept().await?;
//!     let conn = ConnInfo { peer, local: stream.local_addr()? };
//!     let handler = handler.clone();
//!     tokio::spawn(async move {
//!         // The handler has already counted and logged the outcome.
//!         let _ = handler.handle(stream, conn).await;
//!     });
//! }
//! # }
//! ```
//!
//! `handle` is generic over the stream, so a TLS listener passes its
//! `tokio_rustls::server::TlsStream` exactly like a plain `TcpStream`.
//! [`ProxyHandler`] wraps the four handlers in one type for a service loop that
//! dispatches on `handler.type`.
//!
//! The option structs deserialize the YAML `handler:` section without its `type`
//! key, so a service config can hold them in an internally tagged enum:
//!
//! ```
//! # use serde::Deserialize;
//! # use gateway::proxy::handler::{http::HttpHandlerOptions, socks::Socks5HandlerOptions};
//! #[derive(Deserialize)]
//! #[serde(tag = "type")]
//! enum Handler {
//!     #[serde(rename = "http")]
//!     Http(HttpHandlerOptions),
//!     #[serde(rename = "socks5", alias = "socks")]
//!     Socks5(Socks5HandlerOptions),
//! }
//! let h: Handler = serde_yaml_ng::from_str("type: socks5\nmetadata: {udp: true}").unwrap();
//! assert!(matches!(h, Handler::Socks5(o) if o.metadata.udp));
//! // deny_unknown_fields still applies inside the tagged enum:
//! assert!(serde_yaml_ng::from_str::<Handler>("type: http\nmetadata: {udp: true}").is_err());
//! ```
//!
//! # Failure policy
//!
//! Nothing a client or a target sends can panic a handler. Every connection ends
//! with one [`HandlerError`] (or success), and [`HandlerStats::record`] turns that
//! outcome into exactly one counter increment, so the counters add up: `connections
//! = completed + bad_request + auth_failed + handshake_timeout + target_failed +
//! client_error + upstream_error + unsupported`. The stream is dropped when `handle`
//! returns, which closes it; no task outlives the connection.

pub mod auto;
pub mod conn;
pub mod http;
pub mod socks;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Any of the proxy handlers, for a service loop that does not care which: build
/// one per service from its `handler.type`, then `handle` every connection.
pub enum ProxyHandler {
    Http(http::HttpHandler),
    Socks5(socks::Socks5Handler),
    Socks4(socks::Socks4Handler),
    // Boxed: it holds the other three, and the enum should stay small.
    Auto(Box<auto::AutoHandler>),
}

impl ProxyHandler {
    pub async fn handle<S>(&self, stream: S, conn: ConnInfo) -> Result<(), HandlerError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        match self {
            ProxyHandler::Http(h) => h.handle(stream, conn).await,
            ProxyHandler::Socks5(h) => h.handle(stream, conn).await,
            ProxyHandler::Socks4(h) => h.handle(stream, conn).await,
            ProxyHandler::Auto(h) => h.handle(stream, conn).await,
        }
    }

    pub fn stats(&self) -> &std::sync::Arc<HandlerStats> {
        match self {
            ProxyHandler::Http(h) => h.stats(),
            ProxyHandler::Socks5(h) => h.stats(),
            ProxyHandler::Socks4(h) => h.stats(),
            ProxyHandler::Auto(h) => h.stats(),
        }
    }
}

/// The two ends of an accepted connection, as the listener saw them.
///
/// `local` matters to SOCKS5 UDP ASSOCIATE: the relay socket is bound on the same
/// address the client reached us on (the VIP), so the reply address is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Why a connection ended early. Each variant maps to one [`HandlerStats`] counter.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The client sent something that is not the protocol (garbage, bad framing,
    /// oversized headers). The client got an error reply where the protocol has one.
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// The client did not finish its request within `readTimeout`.
    #[error("client did not complete the handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// Missing or wrong credentials.
    #[error("authentication failed")]
    AuthFailed,
    /// The target could not be reached (refused, unreachable, DNS, timeout).
    #[error("cannot reach {target}: {source}")]
    Target { target: String, source: io::Error },
    /// The target was reached but misbehaved (reset, garbage response, no response).
    #[error("upstream {target}: {message}")]
    Upstream { target: String, message: String },
    /// A valid request for something this handler does not do (SOCKS BIND, ...).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The client's side of the connection failed (reset, broken pipe).
    #[error("client i/o: {0}")]
    Client(#[from] io::Error),
}

/// Per-handler counters, shared by every connection of one service. Plain atomics:
/// cheap to bump on the hot path, read by the metrics exporter with [`snapshot`].
///
/// [`snapshot`]: HandlerStats::snapshot
#[derive(Debug, Default)]
pub struct HandlerStats {
    /// Connections handed to the handler.
    pub connections: AtomicU64,
    /// Connections currently being served (a gauge).
    pub active: AtomicU64,
    /// HTTP requests and SOCKS commands received (several per keep-alive connection).
    pub requests: AtomicU64,
    /// Connections that ended normally.
    pub completed: AtomicU64,
    pub bad_request: AtomicU64,
    pub handshake_timeout: AtomicU64,
    pub auth_failed: AtomicU64,
    pub target_failed: AtomicU64,
    pub upstream_error: AtomicU64,
    pub unsupported: AtomicU64,
    pub client_error: AtomicU64,
    /// SOCKS5 UDP associations opened.
    pub udp_associations: AtomicU64,
    /// UDP datagrams relayed client → target and target → client.
    pub udp_datagrams_out: AtomicU64,
    pub udp_datagrams_in: AtomicU64,
    /// UDP datagrams dropped (malformed header, fragments, unknown sender, bad target).
    pub udp_dropped: AtomicU64,
}

/// A point-in-time copy of [`HandlerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections: u64,
    pub active: u64,
    pub requests: u64,
    pub completed: u64,
    pub bad_request: u64,
    pub handshake_timeout: u64,
    pub auth_failed: u64,
    pub target_failed: u64,
    pub upstream_error: u64,
    pub unsupported: u64,
    pub client_error: u64,
    pub udp_associations: u64,
    pub udp_datagrams_out: u64,
    pub udp_datagrams_in: u64,
    pub udp_dropped: u64,
}

impl HandlerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections: g(&self.connections),
            active: g(&self.active),
            requests: g(&self.requests),
            completed: g(&self.completed),
            bad_request: g(&self.bad_request),
            handshake_timeout: g(&self.handshake_timeout),
            auth_failed: g(&self.auth_failed),
            target_failed: g(&self.target_failed),
            upstream_error: g(&self.upstream_error),
            unsupported: g(&self.unsupported),
            client_error: g(&self.client_error),
            udp_associations: g(&self.udp_associations),
            udp_datagrams_out: g(&self.udp_datagrams_out),
            udp_datagrams_in: g(&self.udp_datagrams_in),
            udp_dropped: g(&self.udp_dropped),
        }
    }

    /// Count the outcome of one connection (exactly one counter moves).
    pub fn record(&self, outcome: &Result<(), HandlerError>) {
        let counter = match outcome {
            Ok(()) => &self.completed,
            Err(HandlerError::BadRequest(_)) => &self.bad_request,
            Err(HandlerError::HandshakeTimeout(_)) => &self.handshake_timeout,
            Err(HandlerError::AuthFailed) => &self.auth_failed,
            Err(HandlerError::Target { .. }) => &self.target_failed,
            Err(HandlerError::Upstream { .. }) => &self.upstream_error,
            Err(HandlerError::Unsupported(_)) => &self.unsupported,
            Err(HandlerError::Client(_)) => &self.client_error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Mark a connection as started; the guard keeps `active` right on every exit
    /// path, including a task that is cancelled (dropped) mid-connection.
    pub(crate) fn start(&self) -> ActiveGuard<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(&self.active)
    }
}

pub(crate) struct ActiveGuard<'a>(&'a AtomicU64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Log one finished connection at a level that matches how interesting it is:
/// client mistakes are routine (debug), target failures are worth an operator's
/// look (info), success is trace.
pub(crate) fn log_outcome(kind: &str, conn: &ConnInfo, outcome: &Result<(), HandlerError>) {
    match outcome {
        Ok(()) => tracing::trace!(handler = kind, peer = %conn.peer, "connection done"),
        Err(e @ (HandlerError::Target { .. } | HandlerError::Upstream { .. })) => {
            tracing::info!(handler = kind, peer = %conn.peer, "{e}")
        }
        Err(e) => tracing::debug!(handler = kind, peer = %conn.peer, "{e}"),
    }
}

/// GOST's default `readTimeout` for handshakes.
pub fn default_read_timeout() -> Duration {
    Duration::from_secs(15)
}

/// Parse a Go `time.Duration` string as GOST writes them: a sequence of
/// `<number><unit>` with units `ns us µs ms s m h` (`"15s"`, `"1m30s"`, `"1.5s"`).
/// A bare number is taken as seconds, which is what a YAML author usually means.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("expected a duration like \"15s\" or \"500ms\", got an empty string".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs, text);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("expected a duration like \"15s\" or \"500ms\", got {text:?}"))?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => {
                return Err(format!(
                    "expected a duration with a unit of ns, us, ms, s, m or h, got {text:?}"
                ));
            }
        };
        total += value * scale;
        rest = tail;
    }
    secs_to_duration(total, text)
}

fn secs_to_duration(secs: f64, text: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("expected a non-negative duration, got {text:?}"))
}

/// serde adapter for [`parse_go_duration`]: accepts `"15s"` or a number of seconds.
pub fn deserialize_go_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(f64),
    }
    let parsed = match Raw::deserialize(d)? {
        Raw::Text(t) => parse_go_duration(&t),
        Raw::Secs(s) => secs_to_duration(s, &s.to_string()),
    };
    parsed.map_err(serde::de::Error::custom)
}

/// Format `host:port` for the router, bracketing IPv6 literals.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Compare credentials without an early exit on the first differing byte, so the
/// time taken does not tell an attacker how much of a guess was right.
pub(crate) fn credentials_match(
    auth: &crate::config::auth::AuthConfig,
    user: &[u8],
    pass: &[u8],
) -> bool {
    fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
    let u = ct_eq(auth.username.as_bytes(), user);
    let p = ct_eq(auth.password.expose().as_bytes(), pass);
    u & p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("5 parsecs").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_go_duration("-1s").is_err());
    }

    #[test]
    fn host_port_joining() {
        assert_eq!(join_host_port("example.com", 80), "example.com:80");
        assert_eq!(join_host_port("::1", 443), "[::1]:443");
        assert_eq!(join_host_port("[::1]", 443), "[::1]:443");
    }

    #[test]
    fn credentials() {
        let a = crate::config::auth::AuthConfig {
            username: "user".into(),
            password: crate::config::auth::Secret("pass".into()),
        };
        assert!(credentials_match(&a, b"user", b"pass"));
        assert!(!credentials_match(&a, b"user", b"pas"));
        assert!(!credentials_match(&a, b"user", b"passs"));
        assert!(!credentials_match(&a, b"usex", b"pass"));
        assert!(!credentials_match(&a, b"", b""));
    }
}
