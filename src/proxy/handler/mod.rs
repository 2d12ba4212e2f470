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
//! * [`gost_relay::RelayHandler`] — GOST's relay protocol (a proxy, or with a
//!   forwarder a relay to its nodes).
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
//! ([`ProxyHandler::from_config`]).
//!
//! The options come typed from the config (`crate::config::service::handler`):
//! `handler.type` is an enum, and each protocol reads its own resolved view of
//! GOST's `metadata` ([`HandlerOptions<M>`](HandlerOptions), e.g.
//! `HandlerOptions<HttpMetadata>`), checked when the file was read. Nothing here
//! parses configuration text.
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
pub mod gost_relay;
pub mod http;
pub mod socks;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::proxy::chain::stream::Outbound;
use tokio::io::{AsyncRead, AsyncWrite};

use self::conn::BufConn;
use crate::config::service::handler::{HandlerConfig, HandlerType};
pub use crate::config::service::handler::{HandlerOptions, Metadata};
use crate::proxy::relay::RelayOpts;
use crate::proxy::router::Router;
use crate::proxy::stats::{Active, LogLimiter, inc};
pub use crate::proxy::stats::{HandlerCounts, HandlerStats};

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
    /// The service's forwarder nodes, for a handler that relays to them
    /// (`relay` with a `forwarder:`); `None` for the others.
    forward: Option<Arc<crate::proxy::balance::Balancer>>,
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
        upstream: &mut Outbound,
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
    /// Its view of the handler `metadata` (see [`crate::config::service::handler`]).
    type Metadata: Metadata;

    /// The options have been validated, or are defaults (which are valid).
    fn from_options(opts: HandlerOptions<Self::Metadata>) -> Self;
}

impl<P> Handler<P> {
    fn assemble(protocol: P, router: Router, stats: Arc<HandlerStats>) -> Self {
        let relay = RelayOpts::default();
        let ctx = Context {
            router,
            stats,
            relay,
            forward: None,
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

    /// Relay to these nodes instead of the address each request names (GOST's
    /// relay handler with a forwarder; other handlers ignore it).
    pub fn set_forwarder(&mut self, nodes: Arc<crate::proxy::balance::Balancer>) {
        self.ctx.forward = Some(nodes);
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
    Relay(gost_relay::Relay),
}

impl Protocol for AnyProtocol {
    fn kind(&self) -> &'static str {
        match self {
            AnyProtocol::Http(p) => p.kind(),
            AnyProtocol::Socks5(p) => p.kind(),
            AnyProtocol::Socks4(p) => p.kind(),
            AnyProtocol::Auto(p) => p.kind(),
            AnyProtocol::Relay(p) => p.kind(),
        }
    }

    async fn serve<S: Io>(&self, ctx: &Context, client: BufConn<S>, conn: ConnInfo) -> Outcome {
        match self {
            AnyProtocol::Http(p) => p.serve(ctx, client, conn).await,
            AnyProtocol::Socks5(p) => p.serve(ctx, client, conn).await,
            AnyProtocol::Socks4(p) => p.serve(ctx, client, conn).await,
            AnyProtocol::Auto(p) => p.serve(ctx, client, conn).await,
            AnyProtocol::Relay(p) => p.serve(ctx, client, conn).await,
        }
    }
}

impl ProxyHandler {
    /// The proxy handler of a service's (validated) `handler:` section; `None`
    /// for the forwarding types `tcp` and `udp`, which have no proxy protocol.
    pub fn from_config(cfg: &HandlerConfig, router: Router) -> Option<ProxyHandler> {
        let protocol = match cfg.kind {
            HandlerType::Http => AnyProtocol::Http(http::Http::from_options(cfg.options())),
            HandlerType::Socks5 => AnyProtocol::Socks5(socks::Socks5::from_options(cfg.options())),
            HandlerType::Socks4 => AnyProtocol::Socks4(socks::Socks4::from_options(cfg.options())),
            HandlerType::Auto => {
                AnyProtocol::Auto(Box::new(auto::Auto::from_options(cfg.options())))
            }
            HandlerType::Relay => {
                AnyProtocol::Relay(gost_relay::Relay::from_options(cfg.options()))
            }
            HandlerType::Tcp | HandlerType::Udp => return None,
        };
        Some(Handler::assemble(protocol, router, Arc::default()))
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

impl HandlerStats {
    /// Count the outcome of one connection (exactly one counter moves).
    pub fn record(&self, outcome: &Outcome) {
        inc(match outcome {
            Ok(()) => &self.completed,
            Err(HandlerError::BadRequest(_)) => &self.bad_request,
            Err(HandlerError::HandshakeTimeout(_)) => &self.handshake_timeout,
            Err(HandlerError::AuthFailed) => &self.auth_failed,
            Err(HandlerError::Target { .. }) => &self.target_failed,
            Err(HandlerError::Upstream { .. }) => &self.upstream_error,
            Err(HandlerError::Unsupported(_)) => &self.unsupported,
            Err(HandlerError::Client(_)) => &self.client_error,
        });
    }

    /// Mark a connection as started; the guard keeps `active` right on every exit
    /// path, including a task that is cancelled (dropped) mid-connection.
    pub(crate) fn start(&self) -> Active<'_> {
        inc(&self.connections);
        Active::new(&self.active)
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

/// Format `host:port` for the router, bracketing IPv6 literals.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_from_config() {
        let router = crate::proxy::router::Router::default();
        let h = |y: &str| -> HandlerConfig { crate::config::from_yaml(y).unwrap() };
        let p =
            ProxyHandler::from_config(&h("{type: socks, metadata: {udp: true}}"), router.clone());
        assert!(matches!(
            p.map(|h| h.protocol),
            Some(AnyProtocol::Socks5(_))
        ));
        let p = ProxyHandler::from_config(&h("{type: socks4a}"), router.clone());
        assert!(matches!(
            p.map(|h| h.protocol),
            Some(AnyProtocol::Socks4(_))
        ));
        assert!(ProxyHandler::from_config(&h("{type: tcp}"), router).is_none());
        // `udp` is not an http option: the error names it.
        let e = h("{type: http, metadata: {udp: true}}")
            .validate("s[0].handler")
            .unwrap_err();
        assert_eq!(e.field, "s[0].handler.metadata.udp");
        let e = h("{type: auto, metadata: {readTimeout: 0s}}")
            .validate("h")
            .unwrap_err();
        assert_eq!(e.field, "h.metadata.readTimeout");
    }

    #[test]
    fn host_port_joining() {
        assert_eq!(join_host_port("example.com", 80), "example.com:80");
        assert_eq!(join_host_port("::1", 443), "[::1]:443");
        assert_eq!(join_host_port("[::1]", 443), "[::1]:443");
    }
}
