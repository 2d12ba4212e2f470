//! One running service: its listener, its accept loop, its connections.
//!
//! Every service owns three things that make stopping it clean:
//!
//! * `stop` — a cancellation token for everything that *starts* work: the accept
//!   (or receive) loop, health checks, discovery. Cancelling it closes the door.
//! * `tracker` — a [`TaskTracker`] holding every connection task, so a drain can
//!   wait for "all in-flight connections finished".
//! * `kill` — a second token every connection task selects on. It is cancelled
//!   only when the grace period is over: a connection still running then is cut.
//!
//! So a drain is: cancel `stop`, wait for `tracker` up to the grace period, cancel
//! `kill`, wait for the (now quick) remainder.
//!
//! The listening socket is held in an `Arc` so that a reload that changes a
//! service but not its address can hand the very same socket to the new version:
//! no re-bind, no window in which new clients are refused.
//!
//! What a TCP connection goes through, in order: access rules and
//! `max_connections` at accept; the TLS handshake if the listener is `tls`; then
//! either the proxy handler (`http`, `socks5`, `socks4`, `auto`), which finds its
//! target in the request, or forwarding: a node from the balancer, the PROXY
//! header, TLS towards the node if the forwarder has `tls`, and the relay —
//! `splice(2)` when both ends are plain sockets, pooled-buffer copying otherwise.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::ProxyError;
use super::balance::{ActiveGuard, Balancer, Node};
use super::handler::{ConnInfo, HandlerStats, ProxyHandler};
use super::relay::{RelayOpts, relay_tcp, relay_with};
use super::router::Router;
use super::{discovery, dispatch, health, listen, proxy_protocol, tls, udp};
use crate::config::service::{
    AccessPolicy, AccessRule, DiscoveryKind, ForwarderConfig, HealthcheckKind, ServiceConfig,
    Strategy, default_backend_connection_timeout, parse_listen_addr,
};

/// Counters of one service. Everything that ends a connection early is counted
/// under its reason.
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Connections accepted (TCP) or sessions opened (UDP).
    pub accepted: AtomicU64,
    /// In flight now.
    pub active: AtomicU64,
    /// Refused by access rules.
    pub denied: AtomicU64,
    /// Closed at accept because of `max_connections`.
    pub over_limit: AtomicU64,
    /// No node available, or every node failed to connect.
    pub no_node: AtomicU64,
    /// Single connection attempts to nodes that failed.
    pub connect_failures: AtomicU64,
    /// Closed by an idle timeout.
    pub idle_closed: AtomicU64,
    /// Ended by an I/O error (a reset, a broken pipe).
    pub errors: AtomicU64,
    /// Ended normally (both sides closed).
    pub completed: AtomicU64,
    /// Cut because a drain's grace period ran out.
    pub killed: AtomicU64,
    /// UDP: datagrams from clients / to clients, and datagrams dropped.
    pub udp_in: AtomicU64,
    pub udp_out: AtomicU64,
    pub udp_dropped: AtomicU64,
}

/// A plain copy of [`ServiceStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub accepted: u64,
    pub active: u64,
    pub denied: u64,
    pub over_limit: u64,
    pub no_node: u64,
    pub connect_failures: u64,
    pub idle_closed: u64,
    pub errors: u64,
    pub completed: u64,
    pub killed: u64,
    pub udp_in: u64,
    pub udp_out: u64,
    pub udp_dropped: u64,
}

impl ServiceStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            accepted: l(&self.accepted),
            active: l(&self.active),
            denied: l(&self.denied),
            over_limit: l(&self.over_limit),
            no_node: l(&self.no_node),
            connect_failures: l(&self.connect_failures),
            idle_closed: l(&self.idle_closed),
            errors: l(&self.errors),
            completed: l(&self.completed),
            killed: l(&self.killed),
            udp_in: l(&self.udp_in),
            udp_out: l(&self.udp_out),
            udp_dropped: l(&self.udp_dropped),
        }
    }
}

pub(crate) fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// The bound socket of a service, shareable with its successor on reload.
#[derive(Clone)]
pub(crate) enum Bound {
    Tcp(Arc<TcpListener>),
    Udp(Arc<UdpSocket>),
}

impl Bound {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr(),
            Bound::Udp(u) => u.local_addr(),
        }
    }
}

/// The key under which a listener can be reused: protocol and configured address
/// (plus the service name for port 0, where equal addresses are different sockets).
pub(crate) fn bound_key(cfg: &ServiceConfig) -> (bool, String, String) {
    let any_port = parse_listen_addr(&cfg.addr).is_ok_and(|a| a.port() == 0);
    let name = if any_port {
        cfg.name.clone()
    } else {
        String::new()
    };
    (cfg.listener.kind == "udp", cfg.addr.clone(), name)
}

/// gobetween's access list: first matching rule wins, else the default.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    default: AccessPolicy,
    rules: Vec<AccessRule>,
}

impl Access {
    pub fn allows(&self, ip: IpAddr) -> bool {
        let policy = self
            .rules
            .iter()
            .find(|r| r.net.contains(ip))
            .map(|r| r.policy)
            .unwrap_or(self.default);
        policy == AccessPolicy::Allow
    }
}

/// What a forwarding connection needs, shared by all connections of a service.
pub(crate) struct Ctx {
    pub name: Arc<str>,
    pub balancer: Arc<Balancer>,
    pub router: Router,
    pub access: Option<Access>,
    pub proxy_protocol: Option<String>,
    pub client_idle: Option<Duration>,
    pub backend_idle: Option<Duration>,
    pub stats: Arc<ServiceStats>,
    pub kill: CancellationToken,
    pub tracker: TaskTracker,
    pub config: ServiceConfig,
    /// "No node" can happen for every client of a dead pool; log it once a second.
    pub no_node_log: LogLimiter,
    /// Out of descriptors or buffers: every new connection fails the same way.
    pub resource_log: LogLimiter,
    /// A node refusing connections (or TLS handshakes) with `maxFails: 0` never
    /// gets benched, so its failures repeat at the rate clients arrive.
    pub node_fail_log: LogLimiter,
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

/// Lets one log line through per second and counts the ones held back, so a
/// flood of identical failures costs one line a second, with the count.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    /// `Some(n)` if a line may be logged now (`n` lines were held back since the
    /// last one), `None` if this one should be dropped.
    pub fn permit(&self) -> Option<u64> {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs()
            + 1;
        let last = self.last_second.load(Ordering::Relaxed);
        if last != now
            && self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Ctx {
    /// Pick and connect a node for `client`, trying other nodes when one fails.
    /// `None` (counted and logged) when no node could be reached.
    pub async fn connect_node(&self, client: SocketAddr) -> Option<(Arc<Node>, TcpStream)> {
        let mut tried: Vec<Arc<Node>> = Vec::new();
        while let Some(node) = self.balancer.pick(client.ip(), &tried) {
            match self.router.connect(node.addr()).await {
                Ok(s) => {
                    node.connect_ok();
                    return Some((node, s));
                }
                Err(e) if local_resource_exhausted(&e) => {
                    // Out of descriptors or buffers here: the node is not to blame,
                    // and another node would fail the same way.
                    inc(&self.stats.connect_failures);
                    if let Some(suppressed) = self.resource_log.permit() {
                        warn!(service = %self.name, error = %e, suppressed, "cannot open a connection to a node: local resources exhausted");
                    }
                    return None;
                }
                Err(e) => {
                    inc(&self.stats.connect_failures);
                    let benched =
                        node.connect_failed(self.balancer.max_fails, self.balancer.fail_timeout);
                    if let Some(suppressed) = self.node_fail_log.permit() {
                        warn!(service = %self.name, node = node.label(), addr = node.addr(), error = %e, benched, suppressed, "connect to node failed");
                    }
                    tried.push(node);
                }
            }
        }
        inc(&self.stats.no_node);
        if let Some(suppressed) = self.no_node_log.permit() {
            warn!(service = %self.name, %client, tried = tried.len(), suppressed, "no healthy node available; closing client connection");
        }
        None
    }
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: failures of this host, not of the node dialled.
fn local_resource_exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// A started service.
pub(crate) struct Running {
    pub config: ServiceConfig,
    /// Taken out (and so closed, once the accept loop lets go) when the service
    /// stops accepting: clients then get a refusal instead of a silent backlog.
    bound: Mutex<Option<Bound>>,
    local_addr: Option<SocketAddr>,
    pub stats: Arc<ServiceStats>,
    pub balancer: Option<Arc<Balancer>>,
    /// The proxy handler's own counters (`http`, `socks5`, `socks4`, `auto`).
    pub handler_stats: Option<Arc<HandlerStats>>,
    stop: CancellationToken,
    kill: CancellationToken,
    tracker: TaskTracker,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("name", &self.config.name)
            .field("addr", &self.local_addr)
            .finish()
    }
}

impl Running {
    /// Bind (or reuse `reuse`) and start. Must run inside a tokio runtime.
    pub fn start(cfg: &ServiceConfig, reuse: Option<Bound>) -> Result<Running, ProxyError> {
        let name: Arc<str> = Arc::from(cfg.name.as_str());
        let fail = |what: String| ProxyError::Service {
            service: cfg.name.clone(),
            message: what,
        };
        let addr = parse_listen_addr(&cfg.addr).map_err(&fail)?;
        let udp_listener = cfg.listener.kind == "udp";
        let connect_timeout = cfg
            .backend_connection_timeout
            .get()
            .unwrap_or_else(default_backend_connection_timeout);
        let router = Router::new(connect_timeout, cfg.interface.as_deref());
        // Everything that can fail is built before the socket is bound.
        let proxy = dispatch::proxy_handler(cfg, router.clone())
            .map_err(|e| fail(format!("{}: {}", e.field, e.message)))?;
        let tls = match (&cfg.listener.kind[..], &cfg.listener.tls) {
            ("tls", Some(t)) => {
                Some(tls::acceptor(t).map_err(|e| fail(format!("listener.tls.{e}")))?)
            }
            ("tls", None) => {
                return Err(fail("a tls listener needs tls: {certFile, keyFile}".into()));
            }
            _ => None,
        };
        let backend_tls = match cfg.forwarder.as_ref().and_then(|f| f.tls.as_ref()) {
            Some(t) => {
                Some(tls::TlsClient::new(t).map_err(|e| fail(format!("forwarder.tls.{e}")))?)
            }
            None => None,
        };
        let stop = CancellationToken::new();
        let kill = CancellationToken::new();
        let tracker = TaskTracker::new();
        let stats = Arc::new(ServiceStats::default());

        // Proxy handlers reach their targets through the router: their balancer is
        // empty and nothing runs for it.
        let empty_forwarder = ForwarderConfig {
            nodes: Vec::new(),
            selector: Default::default(),
            healthcheck: None,
            discovery: None,
            tls: None,
        };
        let fwd = match (&cfg.forwarder, &proxy) {
            (Some(f), None) => f,
            (None, Some(_)) => &empty_forwarder,
            (None, None) => return Err(fail("a forwarding service needs a forwarder".into())),
            (Some(_), Some(_)) => {
                return Err(fail(format!(
                    "handler {:?} does not take a forwarder",
                    cfg.handler.kind
                )));
            }
        };
        let balancer = Arc::new(Balancer::new(&fwd.selector, &fwd.nodes));
        let access = match &cfg.access {
            Some(a) => Some(Access {
                default: a.default,
                rules: a
                    .parse_rules()
                    .map_err(|(i, m)| fail(format!("access.rules[{i}]: {m}")))?,
            }),
            None => None,
        };

        // Last: everything above can fail without a socket to clean up.
        let bound = match reuse {
            Some(b) => b,
            None if udp_listener => Bound::Udp(Arc::new(
                listen::bind_udp(addr).map_err(|e| fail(format!("cannot bind udp {addr}: {e}")))?,
            )),
            None => Bound::Tcp(Arc::new(
                listen::bind_tcp(addr).map_err(|e| fail(format!("cannot bind tcp {addr}: {e}")))?,
            )),
        };
        // Background work of the forwarder: health, discovery, bandwidth sampling.
        if let Some(hc) = &fwd.healthcheck
            && hc.kind != HealthcheckKind::None
        {
            tokio::spawn(health::run(
                name.clone(),
                balancer.clone(),
                hc.clone(),
                router.clone(),
                stop.clone(),
            ));
        }
        if let Some(d) = &fwd.discovery
            && d.kind != DiscoveryKind::Static
        {
            tokio::spawn(discovery::run(
                name.clone(),
                balancer.clone(),
                d.clone(),
                stop.clone(),
            ));
        }
        if fwd.selector.strategy == Strategy::Leastbandwidth {
            let (b, s) = (balancer.clone(), stop.clone());
            tokio::spawn(async move {
                let mut t = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = s.cancelled() => break,
                        _ = t.tick() => b.tick(),
                    }
                }
            });
        }

        let ctx = Arc::new(Ctx {
            name: name.clone(),
            balancer: balancer.clone(),
            router,
            access,
            proxy_protocol: cfg.proxy_protocol.as_ref().map(|p| p.version.clone()),
            client_idle: cfg.client_idle_timeout.get(),
            backend_idle: cfg.backend_idle_timeout.get(),
            stats: stats.clone(),
            kill: kill.clone(),
            tracker: tracker.clone(),
            config: cfg.clone(),
            no_node_log: LogLimiter::default(),
            resource_log: LogLimiter::default(),
            node_fail_log: LogLimiter::default(),
            handshake_timeout: cfg
                .client_idle_timeout
                .get()
                .unwrap_or(TLS_HANDSHAKE_TIMEOUT),
            connect_timeout,
            proxy,
            tls,
            backend_tls,
        });
        let is_proxy = ctx.proxy.is_some();
        let handler_stats = ctx.proxy.as_ref().map(|h| h.stats().clone());
        let local = bound.local_addr().ok();
        match &bound {
            Bound::Tcp(l) => {
                let limit = (cfg.max_connections > 0)
                    .then(|| Arc::new(Semaphore::new(cfg.max_connections as usize)));
                tokio::spawn(accept_loop(l.clone(), ctx, limit, stop.clone()));
            }
            Bound::Udp(u) => {
                tokio::spawn(udp::serve(u.clone(), ctx, stop.clone()));
            }
        }
        info!(service = %name, addr = ?local, handler = %cfg.handler.kind, "service started");
        Ok(Running {
            config: cfg.clone(),
            bound: Mutex::new(Some(bound)),
            local_addr: local,
            stats,
            balancer: (!is_proxy).then_some(balancer),
            handler_stats,
            stop,
            kill,
            tracker,
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The listening socket, for a successor on reload (`None` once stopped).
    pub fn bound(&self) -> Option<Bound> {
        self.bound.lock().ok().and_then(|b| b.clone())
    }

    /// Close the door: no new connections, no more health checks or discovery.
    pub fn stop_accepting(&self) {
        if let Ok(mut b) = self.bound.lock() {
            b.take();
        }
        self.stop.cancel();
        self.tracker.close();
    }

    /// Wait for in-flight connections up to `deadline`, then cut the rest.
    pub async fn drain_until(&self, deadline: tokio::time::Instant) {
        self.stop_accepting();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            let left = self.tracker.len();
            warn!(service = %self.config.name, left, "grace period over; cutting connections still open");
            self.kill.cancel();
            // Cut tasks finish at their next poll; bound the wait anyway.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.tracker.wait()).await;
        }
        info!(service = %self.config.name, "service stopped");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A service dropped without a drain must not leave tasks behind.
        self.stop.cancel();
        self.kill.cancel();
    }
}

async fn accept_loop(
    listener: Arc<TcpListener>,
    ctx: Arc<Ctx>,
    limit: Option<Arc<Semaphore>>,
    stop: CancellationToken,
) {
    let accept_log = LogLimiter::default();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (sock, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: the queue keeps the client waiting; pause
                // instead of spinning on an error that repeats at once.
                if let Some(suppressed) = accept_log.permit() {
                    warn!(service = %ctx.name, error = %e, suppressed, "accept failed");
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        if let Some(a) = &ctx.access
            && !a.allows(peer.ip())
        {
            inc(&ctx.stats.denied);
            debug!(service = %ctx.name, %peer, "denied by access rules");
            continue;
        }
        let permit = match &limit {
            Some(s) => match s.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    inc(&ctx.stats.over_limit);
                    debug!(service = %ctx.name, %peer, "max_connections reached; closing");
                    continue;
                }
            },
            None => None,
        };
        inc(&ctx.stats.accepted);
        let c = ctx.clone();
        // One getsockname serves both the cut registry and the handler.
        let local = sock.local_addr().unwrap_or(peer);
        ctx.tracker.spawn(serve_tcp(sock, peer, local, c, permit));
    }
    debug!(service = %ctx.name, "accept loop ended");
}

/// Decrements `active` however a connection task ends.
struct ActiveCount(Arc<ServiceStats>);

impl ActiveCount {
    fn new(s: &Arc<ServiceStats>) -> Self {
        s.active.fetch_add(1, Ordering::Relaxed);
        ActiveCount(s.clone())
    }
}

impl Drop for ActiveCount {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_tcp(
    client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    ctx: Arc<Ctx>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let _active = ActiveCount::new(&ctx.stats);
    let kill = ctx.kill.clone();
    // Connections to an address this host no longer holds (the VIP moved away)
    // are cut at once: see `cut`. The token is selected on here rather than by
    // wrapping this future, which would store it twice in the task.
    let released = super::cut::token_for(local.ip());
    tokio::select! {
        _ = kill.cancelled() => {
            inc(&ctx.stats.killed);
            debug!(service = %ctx.name, %peer, "connection cut at end of grace period");
        }
        _ = released.cancelled() => {
            inc(&ctx.stats.killed);
            debug!(service = %ctx.name, %peer, %local, "connection cut: address released");
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
async fn serve(client: TcpStream, peer: SocketAddr, local: SocketAddr, ctx: &Ctx) {
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
    ctx: &Ctx,
) {
    let stream = match tls::accept_with_timeout(acceptor, client, ctx.handshake_timeout).await {
        Ok(s) => s,
        Err(e) => {
            inc(&ctx.stats.errors);
            debug!(service = %ctx.name, %peer, error = %e, "TLS handshake failed");
            return;
        }
    };
    match &ctx.proxy {
        Some(h) => proxy(h, stream, peer, local, ctx).await,
        None => forward_stream(stream, peer, local, ctx).await,
    }
}

/// An HTTP/SOCKS connection: the handler counts and logs the details.
async fn proxy<S>(h: &ProxyHandler, stream: S, peer: SocketAddr, local: SocketAddr, ctx: &Ctx)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match h.handle(stream, ConnInfo::new(peer, local)).await {
        Ok(()) => inc(&ctx.stats.completed),
        Err(_) => inc(&ctx.stats.errors),
    }
}

/// The connection to a node, after the PROXY header and the TLS handshake.
enum Backend {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Pick and connect a node, send the PROXY header, start TLS if configured.
async fn open_backend(
    peer: SocketAddr,
    local: SocketAddr,
    ctx: &Ctx,
) -> Option<(ActiveGuard, Backend)> {
    // Boxed: choosing, resolving and connecting takes a sizeable future that is
    // needed only until connected; inline, every connection would carry that
    // space for its whole life.
    let (node, backend) = Box::pin(ctx.connect_node(peer)).await?;
    let guard = node.acquire();
    if let Some(v) = &ctx.proxy_protocol {
        let header = proxy_protocol::header(v, peer, local);
        if let Err(e) = Box::pin(write_all_tcp(&backend, &header, ctx.backend_idle)).await {
            inc(&ctx.stats.errors);
            debug!(service = %ctx.name, node = node.label(), error = %e, "sending PROXY header failed");
            return None;
        }
    }
    let Some(client) = &ctx.backend_tls else {
        return Some((guard, Backend::Plain(backend)));
    };
    let host = node.addr().rsplit_once(':').map_or(node.addr(), |(h, _)| h);
    // Boxed: a TLS handshake future is large, and only TLS nodes should carry it.
    let handshake = Box::pin(client.connect(backend, host));
    match tokio::time::timeout(ctx.connect_timeout, handshake).await {
        Ok(Ok(s)) => Some((guard, Backend::Tls(Box::new(s)))),
        Ok(Err(e)) => {
            inc(&ctx.stats.errors);
            node.connect_failed(ctx.balancer.max_fails, ctx.balancer.fail_timeout);
            if let Some(suppressed) = ctx.node_fail_log.permit() {
                warn!(service = %ctx.name, node = node.label(), error = %e, suppressed, "TLS handshake with node failed");
            }
            None
        }
        Err(_) => {
            inc(&ctx.stats.errors);
            node.connect_failed(ctx.balancer.max_fails, ctx.balancer.fail_timeout);
            if let Some(suppressed) = ctx.node_fail_log.permit() {
                warn!(service = %ctx.name, node = node.label(), suppressed, "TLS handshake with node timed out");
            }
            None
        }
    }
}

fn relay_opts(ctx: &Ctx, guard: &ActiveGuard) -> RelayOpts {
    RelayOpts {
        a_idle: ctx.client_idle,
        b_idle: ctx.backend_idle,
        counter: Some(guard.node().byte_counter()),
    }
}

/// Forward a plain TCP client: splice when the node side is plain TCP too.
async fn forward_tcp(mut client: TcpStream, peer: SocketAddr, local: SocketAddr, ctx: &Ctx) {
    let Some((guard, backend)) = open_backend(peer, local, ctx).await else {
        return;
    };
    let opts = relay_opts(ctx, &guard);
    let result = match backend {
        Backend::Plain(b) => relay_tcp(&client, &b, &opts).await,
        // Boxed for the same reason as in `serve`: only TLS nodes pay for it.
        Backend::Tls(mut b) => Box::pin(relay_with(&mut client, &mut *b, &opts)).await,
    };
    report(ctx, peer, guard.node(), result);
}

/// Forward a client stream that is not a plain socket (TLS-terminated).
async fn forward_stream<S>(mut client: S, peer: SocketAddr, local: SocketAddr, ctx: &Ctx)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some((guard, backend)) = open_backend(peer, local, ctx).await else {
        return;
    };
    let opts = relay_opts(ctx, &guard);
    let result = match backend {
        Backend::Plain(mut b) => relay_with(&mut client, &mut b, &opts).await,
        Backend::Tls(mut b) => relay_with(&mut client, &mut *b, &opts).await,
    };
    report(ctx, peer, guard.node(), result);
}

fn report(ctx: &Ctx, peer: SocketAddr, node: &Node, result: std::io::Result<(u64, u64)>) {
    match result {
        Ok((up, down)) => {
            inc(&ctx.stats.completed);
            debug!(service = %ctx.name, %peer, node = node.label(), up, down, "connection done");
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            inc(&ctx.stats.idle_closed);
            debug!(service = %ctx.name, %peer, node = node.label(), error = %e, "idle connection closed");
        }
        Err(e) => {
            inc(&ctx.stats.errors);
            debug!(service = %ctx.name, %peer, node = node.label(), error = %e, "connection ended with error");
        }
    }
}

async fn write_all_tcp(
    s: &TcpStream,
    mut data: &[u8],
    limit: Option<Duration>,
) -> std::io::Result<()> {
    let limit = limit.unwrap_or(Duration::from_secs(30));
    tokio::time::timeout(limit, async {
        while !data.is_empty() {
            s.writable().await?;
            match s.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "backend not reading",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let ctx = Arc::new(Ctx {
            name: Arc::from("s"),
            balancer: Arc::new(Balancer::new(&fwd.selector, &fwd.nodes)),
            router: Router::default(),
            access: None,
            proxy_protocol: None,
            client_idle: None,
            backend_idle: None,
            stats: Arc::default(),
            kill: CancellationToken::new(),
            tracker: TaskTracker::new(),
            config: cfg,
            no_node_log: LogLimiter::default(),
            resource_log: LogLimiter::default(),
            node_fail_log: LogLimiter::default(),
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

    #[test]
    fn log_limiter_lets_one_line_a_second_through() {
        let l = LogLimiter::default();
        assert_eq!(l.permit(), Some(0));
        assert_eq!(l.permit(), None);
        assert_eq!(l.permit(), None);
        std::thread::sleep(Duration::from_millis(1050));
        assert_eq!(l.permit(), Some(2));
    }

    #[test]
    fn access_first_match_wins() {
        let cfg = crate::config::service::AccessConfig {
            default: AccessPolicy::Deny,
            rules: vec!["deny 10.0.0.7".into(), "allow 10.0.0.0/8".into()],
        };
        let a = Access {
            default: cfg.default,
            rules: cfg.parse_rules().unwrap(),
        };
        assert!(a.allows("10.1.2.3".parse().unwrap()));
        assert!(!a.allows("10.0.0.7".parse().unwrap()));
        assert!(!a.allows("192.168.0.1".parse().unwrap()));
    }
}
