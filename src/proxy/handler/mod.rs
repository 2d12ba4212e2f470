//! Handlers: what a service does with a connection once the listener accepted it.
//!
//! A listener (TCP, TLS, ...) produces a byte stream; a handler speaks a proxy
//! protocol on it, learns where the client wants to go, reaches that target through
//! the [`Router`] and then moves bytes. This module
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
//!     let conn = ConnInfo::new(peer, stream.local_addr()?);
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
//!
//! # How a handler is put together
//!
//! Every handler is a [`Handler<P>`](Handler): a protocol `P` plus the
//! [`Context`] all protocols share (the router, the counters, the relay options of
//! tunnels). [`http::HttpHandler`] is `Handler<http::Http>`, and so on. The
//! protocol types implement [`Protocol`]: they only read requests and answer them,
//! while `Handler` does the rest once for all (construction from options,
//! `set_relay_opts`, counting and logging every connection). The auto handler's
//! protocol holds the other three and hands each connection to one of them, under
//! the same context and counters. [`ProxyHandler`] is the handler of a service
//! loop that learns the protocol from `handler.type` at run time
//! ([`ProxyHandler::from_parts`]).
//!
//! The option types ([`HandlerOptions`] with each protocol's `metadata`) deserialize the YAML `handler:` section without its `type`
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
mod framing;
pub mod http;
pub mod socks;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use self::conn::BufConn;
use crate::config::FieldError;
use crate::config::auth::AuthConfig;
use crate::config::service::DurationStr;
use crate::proxy::relay::RelayOpts;
use crate::proxy::router::Router;
use crate::proxy::server::LogLimiter;

/// A proxy handler: one protocol `P` ([`http::Http`], [`socks::Socks5`],
/// [`socks::Socks4`], [`auto::Auto`] or, chosen at run time, [`AnyProtocol`])
/// served under the [`Context`] every protocol needs. The protocol decides what is
/// said on the connection; the handler owns what is the same for all of them:
/// building from options, counting and logging each connection's outcome.
///
/// Cheap to share: wrap in an `Arc` and call [`handle`](Handler::handle) from each
/// connection's task.
pub struct Handler<P> {
    protocol: P,
    ctx: Context,
}

/// The handler of a service whose `handler.type` is only known at run time.
pub type ProxyHandler = Handler<AnyProtocol>;

/// What a service gives every connection of its handler, whatever the protocol:
/// the router that reaches targets, the counters, and how tunnels are relayed.
pub struct Context {
    router: Router,
    stats: Arc<HandlerStats>,
    relay: RelayOpts,
    /// Target failures are logged per connection; a dead target makes one per
    /// client, so they pass at most once a second.
    outcome_log: LogLimiter,
}

impl Context {
    /// Relay a tunnel whose target has accepted and whose client has been told so,
    /// until both sides are done.
    async fn tunnel<S: Io>(
        &self,
        client: &mut BufConn<S>,
        upstream: &mut TcpStream,
        target: String,
    ) -> Outcome {
        match client.tunnel(upstream, &self.relay).await {
            Ok(_) => Ok(()),
            // Either side resetting a tunnel is how many TLS sessions end; it is not
            // the proxy's failure, but count it apart from clean ends.
            Err(e) => Err(HandlerError::Upstream {
                target,
                message: format!("tunnel ended: {e}"),
            }),
        }
    }
}

/// One proxy protocol: the part of a [`Handler`] that reads requests and answers
/// them. Implemented by the protocol types of the submodules.
pub trait Protocol: Send + Sync + 'static {
    /// Names the handler in log lines.
    fn kind(&self) -> &'static str;

    /// Speak the protocol on one connection until it closes or fails. Its first
    /// bytes may already sit in `client`'s buffer (the auto handler peeked them).
    /// Counting the outcome is the caller's job.
    fn serve<S: Io>(
        &self,
        ctx: &Context,
        client: BufConn<S>,
        conn: ConnInfo,
    ) -> impl Future<Output = Outcome> + Send;
}

/// A protocol that one `handler.type` selects, built from that section's options.
pub trait FromOptions: Protocol {
    type Metadata: Metadata;

    /// The options have been validated, or are defaults (which are valid).
    fn from_options(opts: HandlerOptions<Self::Metadata>) -> Self;
}

/// The `metadata:` options of one protocol.
pub trait Metadata: DeserializeOwned + Default {
    /// Check what the types cannot express (bounds, header syntax). `field` is the
    /// path of the whole `handler:` section, e.g. `services[2].handler`.
    fn validate(&self, field: &str) -> Result<(), FieldError>;
}

/// The `handler:` section of a service, minus `type`. Each protocol names its own
/// ([`http::HttpHandlerOptions`], ...).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    bound(deserialize = "M: Deserialize<'de> + Default")
)]
pub struct HandlerOptions<M> {
    /// Credentials the client must present, in its protocol's way:
    /// `Proxy-Authorization: Basic` for HTTP, RFC 1929 username/password for
    /// SOCKS5; SOCKS4 carries only a user id (see [`socks`] for how that applies).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub metadata: M,
}

impl<M: Metadata> HandlerOptions<M> {
    /// `field` is the path of this section, e.g. `services[2].handler`.
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        self.metadata.validate(field)
    }
}

impl<P> Handler<P> {
    fn assemble(protocol: P, router: Router, stats: Arc<HandlerStats>) -> Self {
        let relay = RelayOpts::default();
        let ctx = Context {
            router,
            stats,
            relay,
            outcome_log: LogLimiter::default(),
        };
        Self { protocol, ctx }
    }
}

impl<P: FromOptions> Handler<P> {
    /// A handler with counters of its own.
    pub fn new(opts: HandlerOptions<P::Metadata>, router: Router) -> Self {
        Self::with_stats(opts, router, Arc::default())
    }

    /// Share a counters struct with other handlers.
    pub fn with_stats(
        opts: HandlerOptions<P::Metadata>,
        router: Router,
        stats: Arc<HandlerStats>,
    ) -> Self {
        Self::assemble(P::from_options(opts), router, stats)
    }
}

impl<P: Protocol> Handler<P> {
    /// Idle timeouts and byte counter for tunnels (CONNECT, SOCKS, upgrades):
    /// the service's `client_idle_timeout` / `backend_idle_timeout`.
    pub fn set_relay_opts(&mut self, opts: RelayOpts) {
        self.ctx.relay = opts;
    }

    pub fn stats(&self) -> &Arc<HandlerStats> {
        &self.ctx.stats
    }

    /// Serve one client connection until it closes or fails: `active` while it
    /// runs, one outcome counter and one log line when it ends.
    pub async fn handle<S: Io>(&self, stream: S, conn: ConnInfo) -> Outcome {
        let stats = &self.ctx.stats;
        let _active = stats.start();
        let outcome = self
            .protocol
            .serve(&self.ctx, BufConn::new(stream), conn)
            .await;
        stats.record(&outcome);
        log_outcome(self.protocol.kind(), &conn, &outcome, &self.ctx.outcome_log);
        outcome
    }
}

/// Any of the proxy protocols, for a service loop that does not care which.
pub enum AnyProtocol {
    Http(http::Http),
    Socks5(socks::Socks5),
    Socks4(socks::Socks4),
    // Boxed: it holds the other three, and the enum should stay small.
    Auto(Box<auto::Auto>),
}

impl Protocol for AnyProtocol {
    fn kind(&self) -> &'static str {
        match self {
            AnyProtocol::Http(p) => p.kind(),
            AnyProtocol::Socks5(p) => p.kind(),
            AnyProtocol::Socks4(p) => p.kind(),
            AnyProtocol::Auto(p) => p.kind(),
        }
    }

    async fn serve<S: Io>(&self, ctx: &Context, client: BufConn<S>, conn: ConnInfo) -> Outcome {
        match self {
            AnyProtocol::Http(p) => p.serve(ctx, client, conn).await,
            AnyProtocol::Socks5(p) => p.serve(ctx, client, conn).await,
            AnyProtocol::Socks4(p) => p.serve(ctx, client, conn).await,
            AnyProtocol::Auto(p) => p.serve(ctx, client, conn).await,
        }
    }
}

impl ProxyHandler {
    /// Build the handler of one service from the pieces of its `handler:`
    /// section: `type`, `auth` and `metadata` (absent means all defaults).
    /// `field` is the section's path for errors, e.g. `services[2].handler`.
    /// `type` names follow GOST: `http`, `socks5` (alias `socks`), `socks4`
    /// (alias `socks4a`), `auto`.
    pub fn from_parts(
        kind: &str,
        auth: Option<AuthConfig>,
        metadata: Option<&serde_yaml_ng::Value>,
        router: Router,
        field: &str,
    ) -> Result<ProxyHandler, FieldError> {
        fn build<P: FromOptions>(
            auth: Option<AuthConfig>,
            metadata: Option<&serde_yaml_ng::Value>,
            field: &str,
        ) -> Result<P, FieldError> {
            let metadata = match metadata {
                None | Some(serde_yaml_ng::Value::Null) => P::Metadata::default(),
                Some(v) => serde_yaml_ng::from_value(v.clone())
                    .map_err(|e| FieldError::new(format!("{field}.metadata"), e.to_string()))?,
            };
            let opts = HandlerOptions { auth, metadata };
            opts.validate(field)?;
            Ok(P::from_options(opts))
        }
        let protocol = match kind {
            "http" => AnyProtocol::Http(build(auth, metadata, field)?),
            "socks5" | "socks" => AnyProtocol::Socks5(build(auth, metadata, field)?),
            "socks4" | "socks4a" => AnyProtocol::Socks4(build(auth, metadata, field)?),
            "auto" => AnyProtocol::Auto(Box::new(build(auth, metadata, field)?)),
            other => {
                return Err(FieldError::new(
                    format!("{field}.type"),
                    format!(
                        "{other:?} is not a proxy handler: expected http, socks5, socks, socks4, socks4a or auto"
                    ),
                ));
            }
        };
        Ok(Handler::assemble(protocol, router, Arc::default()))
    }

    /// Config-time check of a `handler:` section (unknown or malformed
    /// `metadata` keys, bounds), without starting anything.
    pub fn validate_parts(
        kind: &str,
        auth: Option<&AuthConfig>,
        metadata: Option<&serde_yaml_ng::Value>,
        field: &str,
    ) -> Result<(), FieldError> {
        let router = Router::default();
        Self::from_parts(kind, auth.cloned(), metadata, router, field).map(drop)
    }
}

/// The two ends of an accepted connection, as the listener saw them.
///
/// `local` matters to SOCKS5 UDP ASSOCIATE: the relay socket is bound on the same
/// address the client reached us on (the VIP), so the reply address is reachable.
///
/// `accepted` is when the connection was handed over: a protocol's first request
/// or handshake must be complete by `accepted + readTimeout`, however the time was
/// spent (the auto handler's wait for the first byte included), so `readTimeout`
/// applies once, not once per stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub accepted: tokio::time::Instant,
}

impl ConnInfo {
    /// A connection accepted now.
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        Self {
            peer,
            local,
            accepted: tokio::time::Instant::now(),
        }
    }

    /// When the first request or handshake must be complete.
    pub fn handshake_deadline(&self, read_timeout: Duration) -> tokio::time::Instant {
        crate::proxy::clock::deadline_after(self.accepted, read_timeout)
    }
}

/// The stream of a client connection a handler can serve: a `TcpStream`, or a
/// TLS stream over one. `Send` and `'static` because a connection is served in a
/// task of its own.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What a connection came to: success, or why it ended early.
pub type Outcome = Result<(), HandlerError>;

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
    pub fn record(&self, outcome: &Outcome) {
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
/// The info lines go through `limit`: they can come once per connection.
pub(crate) fn log_outcome(kind: &str, conn: &ConnInfo, outcome: &Outcome, limit: &LogLimiter) {
    match outcome {
        Ok(()) => tracing::trace!(handler = kind, peer = %conn.peer, "connection done"),
        Err(e @ (HandlerError::Target { .. } | HandlerError::Upstream { .. })) => {
            if let Some(suppressed) = limit.permit() {
                tracing::info!(handler = kind, peer = %conn.peer, suppressed, "{e}")
            }
        }
        Err(e) => tracing::debug!(handler = kind, peer = %conn.peer, "{e}"),
    }
}

/// GOST's default `readTimeout` for handshakes.
pub fn default_read_timeout() -> Duration {
    Duration::from_secs(15)
}

/// serde adapter: a Go-style duration (`"15s"`, `"500ms"`, a bare number of
/// seconds), parsed by the config's [`DurationStr`], as a plain `Duration`.
pub fn deserialize_go_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    DurationStr::deserialize(d).map(|d| d.0)
}

/// Timeouts must be positive: a zero `readTimeout` would refuse every client.
pub(crate) fn validate_timeout(value: Duration, field: String) -> Result<(), FieldError> {
    if value.is_zero() {
        return Err(FieldError::new(
            field,
            "expected a positive duration like \"15s\"",
        ));
    }
    Ok(())
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
    fn durations_via_config_parser() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "deserialize_go_duration")]
            d: Duration,
        }
        let t: T = serde_yaml_ng::from_str("d: 1m30s").unwrap();
        assert_eq!(t.d, Duration::from_secs(90));
        let t: T = serde_yaml_ng::from_str("d: 2").unwrap();
        assert_eq!(t.d, Duration::from_secs(2));
        assert!(serde_yaml_ng::from_str::<T>("d: 5 parsecs").is_err());
        assert!(validate_timeout(Duration::ZERO, "x".into()).is_err());
    }

    #[test]
    fn handlers_from_config_parts() {
        let router = crate::proxy::router::Router::default();
        let v: serde_yaml_ng::Value =
            serde_yaml_ng::from_str("{udp: true, udpBufferSize: 8192}").unwrap();
        let h = ProxyHandler::from_parts("socks", None, Some(&v), router.clone(), "s[0].handler");
        assert!(matches!(h.map(|h| h.protocol), Ok(AnyProtocol::Socks5(_))));
        // `udp` is not an http option: the error names the section.
        let e = ProxyHandler::from_parts("http", None, Some(&v), router.clone(), "s[0].handler")
            .err()
            .unwrap();
        assert_eq!(e.field, "s[0].handler.metadata");
        assert!(e.message.contains("udp"), "{}", e.message);
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str("{readTimeout: 0s}").unwrap();
        let e = ProxyHandler::from_parts("auto", None, Some(&v), router.clone(), "h")
            .err()
            .unwrap();
        assert_eq!(e.field, "h.metadata.readTimeout");
        let e = ProxyHandler::from_parts("tcp", None, None, router.clone(), "h")
            .err()
            .unwrap();
        assert_eq!(e.field, "h.type");
        let h = ProxyHandler::from_parts("socks4a", None, None, router, "h");
        assert!(matches!(h.map(|h| h.protocol), Ok(AnyProtocol::Socks4(_))));
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
