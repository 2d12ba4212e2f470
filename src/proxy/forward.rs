//! The path of a TCP connection, from accept to the relay.
//!
//! 1. `accept_loop`: the access rules and `max_connections` decide at accept
//!    (a refused client is closed at once and counted), then the connection gets
//!    a task in the service's tracker.
//! 2. `serve_tcp` races the connection against the two ways it can be cut: the
//!    end of a drain's grace period (`kill`) and the release of the address it
//!    arrived on (the VIP moved away, see [`cut`](super::cut)).
//! 3. `serve`: TLS termination if the listener is `tls`; then either the proxy
//!    handler (`http`, `socks5`, `socks4`, `auto`), which finds its target in the
//!    request, or forwarding:
//! 4. `open_backend`: a node from the balancer, connected through the router
//!    (timeout, GOST's `interface`, the service's chain if it has one), the next
//!    node tried when one fails; the
//!    PROXY header; TLS towards the node if the forwarder has `tls`;
//! 5. the relay: `splice(2)` when both ends are plain sockets, pooled-buffer
//!    copying otherwise, under the idle timeouts; the outcome is counted once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::balance::{Node, NodeLease};
use super::chain::stream::Outbound;
use super::handler::{ConnInfo, ProxyHandler};
use super::relay::{RelayOpts, relay_tcp, relay_with};
use super::router::Router;
use super::service::Service;
use super::stats::{Active, LogLimiter, Timed, inc};
use super::{proxy_protocol, tls};
use crate::config::service::ProxyProtocolVersion;

/// A TCP service: the shared [`Service`] and what only the TCP path needs.
pub(crate) struct TcpService {
    pub svc: Service,
    pub router: Router,
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    /// Limit of a `tls` listener's handshake (`client_idle_timeout`, else 10 s).
    pub handshake_timeout: Duration,
    /// Limit of a connection to a node, TLS handshake included.
    pub connect_timeout: Duration,
    /// `http`, `socks5`, `socks4`, `auto`: the handler; `None` for forwarding.
    pub proxy: Option<ProxyHandler>,
    /// A `tls` listener's acceptor.
    pub tls: Option<TlsAcceptor>,
    /// The forwarder's `tls`: connect to nodes over TLS.
    pub backend_tls: Option<tls::TlsClient>,
}

/// Handshake limit of a `tls` listener without `client_idle_timeout`.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept until `stop`; each admitted connection becomes a task of the service.
pub(crate) async fn accept_loop(
    listener: Arc<TcpListener>,
    ctx: Arc<TcpService>,
    stop: CancellationToken,
) {
    let svc = &ctx.svc;
    let limit =
        (svc.max_connections > 0).then(|| Arc::new(Semaphore::new(svc.max_connections as usize)));
    let accept_log = LogLimiter::default();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (sock, peer) = match accepted {
            Ok(x) => x,
            // The socket was shut down by `stop_accepting`.
            Err(_) if stop.is_cancelled() => break,
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: the queue keeps the client waiting; pause
                // instead of spinning on an error that repeats at once.
                if let Some(suppressed) = accept_log.permit() {
                    warn!(service = %svc.name, error = %e, suppressed, "accept failed");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        if !svc.admits(peer) {
            continue;
        }
        let permit = match &limit {
            Some(s) => match s.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    inc(&svc.stats.over_limit);
                    debug!(service = %svc.name, %peer, "max_connections reached; closing");
                    continue;
                }
            },
            None => None,
        };
        inc(&svc.stats.accepted);
        let c = ctx.clone();
        // One getsockname serves both the cut registry and the handler.
        let local = sock.local_addr().unwrap_or(peer);
        svc.tracker.spawn(serve_tcp(sock, peer, local, c, permit));
    }
    debug!(service = %svc.name, "accept loop ended");
}

async fn serve_tcp(
    client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    ctx: Arc<TcpService>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let svc = &ctx.svc;
    let _active = Active::new(&svc.stats.active);
    let _timed = Timed::new(&svc.stats.duration);
    let kill = svc.kill.clone();
    // Connections to an address this host no longer holds (the VIP moved away)
    // are cut at once: see `cut`. The token is selected on here rather than by
    // wrapping this future, which would store it twice in the task.
    let released = super::cut::token_for(local.ip());
    tokio::select! {
        _ = kill.cancelled() => {
            inc(&svc.stats.killed);
            debug!(service = %svc.name, %peer, "connection cut at end of grace period");
        }
        _ = released.cancelled() => {
            inc(&svc.stats.killed);
            debug!(service = %svc.name, %peer, %local, "connection cut: address released");
        }
        _ = serve(client, peer, local, &ctx) => {}
    }
}

/// TLS termination if the listener wants it, then the handler.
/// (`TCP_NODELAY` is inherited from the listening socket.)
///
/// Only plain forwarding runs inline. A task's future is as large as the largest
/// path it could take, so the TLS and proxy-handler paths (whose futures hold a
/// TLS session or an HTTP parser) are boxed: they are allocated only by the
/// connections that take them, and an idle forwarded connection stays small.
async fn serve(client: TcpStream, peer: SocketAddr, local: SocketAddr, ctx: &TcpService) {
    match (&ctx.tls, &ctx.proxy) {
        (None, None) => forward_tcp(client, peer, local, ctx).await,
        (None, Some(h)) => Box::pin(proxy(h, client, peer, local, ctx)).await,
        (Some(acceptor), _) => Box::pin(serve_tls(acceptor, client, peer, local, ctx)).await,
    }
}

async fn serve_tls(
    acceptor: &TlsAcceptor,
    client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    ctx: &TcpService,
) {
    let stream = match tls::accept_with_timeout(acceptor, client, ctx.handshake_timeout).await {
        Ok(s) => s,
        Err(e) => {
            inc(&ctx.svc.stats.errors);
            debug!(service = %ctx.svc.name, %peer, error = %e, "TLS handshake failed");
            return;
        }
    };
    match &ctx.proxy {
        Some(h) => proxy(h, stream, peer, local, ctx).await,
        None => forward_stream(stream, peer, local, ctx).await,
    }
}

/// An HTTP/SOCKS connection: the handler counts and logs the details.
async fn proxy<S>(
    h: &ProxyHandler,
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    ctx: &TcpService,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match h.handle(stream, ConnInfo::new(peer, local)).await {
        Ok(()) => inc(&ctx.svc.stats.completed),
        Err(_) => inc(&ctx.svc.stats.errors),
    }
}

/// Pick and connect a node (through the service's chain, if it has one), send
/// the PROXY header, start TLS if configured. The connection is plain TCP
/// (spliced by the relay) unless TLS lies on the way.
async fn open_backend(
    peer: SocketAddr,
    local: SocketAddr,
    ctx: &TcpService,
) -> Option<(NodeLease, Outbound)> {
    // Boxed: choosing, resolving and connecting takes a sizeable future that is
    // needed only until connected; inline, every connection would carry that
    // space for its whole life.
    let (node, mut backend) = Box::pin(ctx.connect_node(peer)).await?;
    let guard = node.acquire();
    if let Some(v) = ctx.proxy_protocol {
        let header = proxy_protocol::header(v, peer, local);
        if let Err(e) = Box::pin(write_all_within(
            &mut backend,
            &header,
            ctx.svc.backend_idle,
        ))
        .await
        {
            inc(&ctx.svc.stats.errors);
            debug!(service = %ctx.svc.name, node = node.label(), error = %e, "sending PROXY header failed");
            return None;
        }
    }
    let Some(client) = &ctx.backend_tls else {
        return Some((guard, backend));
    };
    let host = node.addr().rsplit_once(':').map_or(node.addr(), |(h, _)| h);
    // Boxed: a TLS handshake future is large, and only TLS nodes should carry it.
    let handshake = Box::pin(client.connect(backend, host));
    match tokio::time::timeout(ctx.connect_timeout, handshake).await {
        Ok(Ok(s)) => Some((guard, Outbound::Stream(Box::new(s)))),
        Ok(Err(e)) => {
            inc(&ctx.svc.stats.errors);
            ctx.svc.node_failed(&node);
            if let Some(suppressed) = ctx.svc.node_fail_log.permit() {
                warn!(service = %ctx.svc.name, node = node.label(), error = %e, suppressed, "TLS handshake with node failed");
            }
            None
        }
        Err(_) => {
            inc(&ctx.svc.stats.errors);
            ctx.svc.node_failed(&node);
            if let Some(suppressed) = ctx.svc.node_fail_log.permit() {
                warn!(service = %ctx.svc.name, node = node.label(), suppressed, "TLS handshake with node timed out");
            }
            None
        }
    }
}

fn relay_opts(ctx: &TcpService, guard: &NodeLease) -> RelayOpts {
    RelayOpts {
        a_idle: ctx.svc.client_idle,
        b_idle: ctx.svc.backend_idle,
        counter: Some(guard.node().byte_counter()),
        service: Some(ctx.svc.stats.clone()),
    }
}

/// Forward a plain TCP client: splice when the node side is plain TCP too.
async fn forward_tcp(mut client: TcpStream, peer: SocketAddr, local: SocketAddr, ctx: &TcpService) {
    let Some((guard, backend)) = open_backend(peer, local, ctx).await else {
        return;
    };
    let opts = relay_opts(ctx, &guard);
    let result = match backend {
        Outbound::Tcp(b) => relay_tcp(&client, &b, &opts).await,
        // Boxed for the same reason as in `serve`: only TLS nodes pay for it.
        Outbound::Stream(mut b) => Box::pin(relay_with(&mut client, &mut b, &opts)).await,
    };
    report(ctx, peer, guard.node(), result);
}

/// Forward a client stream that is not a plain socket (TLS-terminated).
async fn forward_stream<S>(mut client: S, peer: SocketAddr, local: SocketAddr, ctx: &TcpService)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some((guard, backend)) = open_backend(peer, local, ctx).await else {
        return;
    };
    let opts = relay_opts(ctx, &guard);
    let mut backend = backend;
    let result = relay_with(&mut client, &mut backend, &opts).await;
    report(ctx, peer, guard.node(), result);
}

fn report(ctx: &TcpService, peer: SocketAddr, node: &Node, result: std::io::Result<(u64, u64)>) {
    match result {
        Ok((up, down)) => {
            inc(&ctx.svc.stats.completed);
            debug!(service = %ctx.svc.name, %peer, node = node.label(), up, down, "connection done");
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            inc(&ctx.svc.stats.idle_closed);
            debug!(service = %ctx.svc.name, %peer, node = node.label(), error = %e, "idle connection closed");
        }
        Err(e) => {
            inc(&ctx.svc.stats.errors);
            debug!(service = %ctx.svc.name, %peer, node = node.label(), error = %e, "connection ended with error");
        }
    }
}

/// Write `data` to a node that must take it within `limit` (30 s when unset).
async fn write_all_within(
    s: &mut Outbound,
    data: &[u8],
    limit: Option<Duration>,
) -> std::io::Result<()> {
    let limit = limit.unwrap_or(Duration::from_secs(30));
    tokio::time::timeout(limit, s.write_all(data))
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "backend not reading",
            ))
        })
}

impl TcpService {
    /// Pick and connect a node for `client`, trying other nodes when one fails.
    /// `None` (counted and logged) when no node could be reached.
    pub async fn connect_node(&self, client: SocketAddr) -> Option<(Arc<Node>, Outbound)> {
        let mut tried: Vec<Arc<Node>> = Vec::new();
        while let Some(node) = self.svc.balancer.pick(client.ip(), &tried) {
            let started = std::time::Instant::now();
            match self.router.dial(node.addr(), client.ip()).await {
                Ok(s) => {
                    node.connect_time.observe(started.elapsed());
                    node.connect_ok();
                    return Some((node, s));
                }
                Err(e) if local_resource_exhausted(&e) => {
                    // Out of descriptors or buffers here: the node is not to blame,
                    // and another node would fail the same way.
                    inc(&self.svc.stats.connect_failures);
                    if let Some(suppressed) = self.svc.resource_log.permit() {
                        warn!(service = %self.svc.name, error = %e, suppressed, "cannot open a connection to a node: local resources exhausted");
                    }
                    return None;
                }
                Err(e) if super::chain::is_chain_failure(&e) => {
                    // The chain could not carry it (it counted and logged that):
                    // the node was never reached, and another would go the same way.
                    inc(&self.svc.stats.errors);
                    debug!(service = %self.svc.name, node = node.label(), error = %e, "chain unavailable");
                    return None;
                }
                Err(e) => {
                    inc(&self.svc.stats.connect_failures);
                    let benched = self.svc.node_failed(&node);
                    if let Some(suppressed) = self.svc.node_fail_log.permit() {
                        warn!(service = %self.svc.name, node = node.label(), addr = node.addr(), error = %e, benched, suppressed, "connect to node failed");
                    }
                    tried.push(node);
                }
            }
        }
        self.svc
            .no_node(client.ip(), tried.len(), "closing client connection");
        None
    }
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: failures of this host, not of the node dialled.
pub(crate) fn local_resource_exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::balance::Balancer;
    use tokio_util::task::TaskTracker;

    /// Every connection's task holds this future for its whole life, so its size
    /// is the per-connection memory floor. Rare paths (TLS, proxy handlers,
    /// connecting, the PROXY header) are boxed to keep it small; this catches a
    /// change that pulls one back inline (or wraps the future, which stores it
    /// twice).
    #[tokio::test]
    async fn connection_future_stays_small() {
        let cfg = crate::config::Config::from_str_named(
            "services: [{name: s, addr: \"127.0.0.1:0\", handler: {type: tcp}, listener: {type: tcp}, forwarder: {nodes: [{addr: \"127.0.0.1:9\"}]}}]\n",
            std::path::Path::new("t.yml"),
        )
        .unwrap()
        .services
        .remove(0);
        let fwd = cfg.forwarder.clone().unwrap();
        let ctx = Arc::new(TcpService {
            svc: Service {
                name: Arc::from("s"),
                balancer: Arc::new(Balancer::new(&fwd.selector, &fwd.nodes)),
                access: None,
                max_connections: 0,
                client_idle: None,
                backend_idle: None,
                stats: Arc::default(),
                kill: CancellationToken::new(),
                tracker: TaskTracker::new(),
                no_node_log: LogLimiter::default(),
                resource_log: LogLimiter::default(),
                node_fail_log: LogLimiter::default(),
            },
            router: Router::default(),
            proxy_protocol: None,
            handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
            connect_timeout: Duration::from_secs(1),
            proxy: None,
            tls: None,
            backend_tls: None,
        });
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _c = TcpStream::connect(addr).await.unwrap();
        let (sock, peer) = l.accept().await.unwrap();
        let fut = serve_tcp(sock, peer, addr, ctx, None);
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 1536, "connection future is {size} bytes");
    }

    #[test]
    fn descriptor_exhaustion_is_not_the_nodes_fault() {
        assert!(local_resource_exhausted(
            &std::io::Error::from_raw_os_error(libc::EMFILE)
        ));
        assert!(!local_resource_exhausted(
            &std::io::Error::from_raw_os_error(libc::ECONNREFUSED)
        ));
    }
}
