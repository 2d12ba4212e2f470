//! One service's life: built from its typed config, bound (or handed its
//! predecessor's socket), started, drained, stopped.
//!
//! Every service owns three things that make stopping it clean:
//!
//! * `stop` — a cancellation token for everything that *starts* work: the accept
//!   (or receive) loop, health checks, discovery. Cancelling it closes the door.
//! * `tracker` — a [`TaskTracker`] holding every connection task and the accept
//!   (or receive) loop that spawns them, so a drain can wait for "all in-flight
//!   connections finished" and no connection can start after that.
//! * `kill` — a second token every connection task selects on. It is cancelled
//!   only when the grace period is over: a connection still running then is cut.
//!
//! So a drain is: cancel `stop`, wait for `tracker` up to the grace period, cancel
//! `kill`, wait for the (now quick) remainder.
//!
//! The listening socket is held in an `Arc` so that a reload that changes a
//! service but not its address can hand the very same socket to the new version
//! (`bound_key`): no re-bind, no window in which new clients are refused.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::ProxyError;
use super::balance::Balancer;
use super::chain::Chain;
use super::forward::{TLS_HANDSHAKE_TIMEOUT, TcpService};
use super::handler::{HandlerStats, ProxyHandler};
use super::relay::RelayOpts;
use super::router::Router;
use super::service::Service;
use super::stats::{LogLimiter, ServiceStats};
use super::udp::UdpService;
use super::{discovery, forward, health, listen, tls, udp};
use crate::config::service::{
    DiscoveryKind, ForwarderConfig, HealthcheckKind, ListenerType, ServiceConfig, Strategy,
};

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
    let name = if cfg.addr.addr.port() == 0 {
        cfg.name.clone()
    } else {
        String::new()
    };
    (cfg.is_udp(), cfg.addr.text.clone(), name)
}

/// A service bound but not serving yet: what [`Running::prepare`] returns.
/// [`Ready::serve`] starts it; dropped instead, it closes its socket (unless
/// its predecessor still holds it) and nothing of it ever ran.
pub(crate) struct Ready {
    running: Running,
    launch: Launch,
    /// For the forwarder's background tasks, started with the service (a proxy
    /// handler's forwarder is empty: nothing runs for it).
    forwarder: (ForwarderConfig, Router, Arc<Balancer>),
}

/// The accept (or receive) loop of a [`Ready`] service, not yet spawned.
enum Launch {
    Tcp(Arc<TcpListener>, Arc<TcpService>),
    Udp(Arc<UdpSocket>, Arc<UdpService>),
}

impl Ready {
    /// Start accepting (or receiving), and the forwarder's health checks,
    /// discovery and sampling.
    pub fn serve(self) -> Running {
        let Ready {
            running,
            launch,
            forwarder,
        } = self;
        let name: Arc<str> = Arc::from(running.config.name.as_str());
        let (fwd, router, balancer) = &forwarder;
        spawn_forwarder_tasks(&name, fwd, balancer, router, &running.stop);
        // The loop is a task of the tracker too: a drain then cannot see "no
        // tasks left" between an accept and the spawn of its connection, and cut
        // that connection (`kill`) as it starts.
        let (tracker, stop) = (&running.tracker, running.stop.clone());
        match launch {
            Launch::Tcp(l, ctx) => {
                tracker.spawn(forward::accept_loop(l, ctx, stop));
            }
            Launch::Udp(u, ctx) => {
                tracker.spawn(udp::serve(u, ctx, stop));
            }
        }
        let c = &running.config;
        info!(service = %name, addr = ?running.local_addr, handler = %c.handler.kind, "service started");
        running
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.running.config
    }
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
    /// Build a validated service and bind it (or take `reuse`), without serving
    /// yet: [`Ready::serve`] does. Must run inside a tokio runtime.
    pub fn prepare(cfg: &ServiceConfig, reuse: Option<Bound>) -> Result<Ready, ProxyError> {
        let name: Arc<str> = Arc::from(cfg.name.as_str());
        let fail = |what: String| ProxyError::Service {
            service: cfg.name.clone(),
            message: what,
        };
        let addr = cfg.addr.addr;
        let connect_timeout = cfg.connect_timeout();
        let chain = match &cfg.chain {
            Some(c) => Some(Chain::shared(c).map_err(|e| fail(e.to_string()))?),
            None => None,
        };
        let mut router = Router::new(connect_timeout, cfg.interface()).with_chain(chain);
        router.names = super::resolve::Resolve::new(
            cfg.resolver.as_ref().and_then(|r| r.target.as_deref()),
            cfg.hosts.as_ref().and_then(|h| h.target.as_deref()),
        )
        .map_err(|e| fail(format!("resolver: {e}")))?;
        // Everything that can fail is built before the socket is bound: here only
        // the files a TLS section names can (they are read now).
        let stats = Arc::new(ServiceStats::default());
        let mut proxy = ProxyHandler::from_config(&cfg.handler, router.clone());
        if let Some(h) = &mut proxy {
            // The service's idle timeouts apply to the tunnels the handler opens,
            // and their bytes count as the service's.
            h.set_relay_opts(RelayOpts {
                a_idle: cfg.client_idle_timeout.get(),
                b_idle: cfg.backend_idle_timeout.get(),
                counter: None,
                service: Some(stats.clone()),
            });
        }
        let tls = match (cfg.listener.kind, &cfg.listener.tls) {
            (ListenerType::Tls, Some(t)) => {
                Some(tls::acceptor(t).map_err(|e| fail(format!("listener.tls.{e}")))?)
            }
            (ListenerType::Tls, None) => {
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
        // Proxy handlers reach their targets through the router: their balancer is
        // empty and nothing runs for it.
        let empty = ForwarderConfig {
            nodes: Vec::new(),
            selector: Default::default(),
            healthcheck: None,
            discovery: None,
            tls: None,
        };
        let fwd = cfg.forwarder.as_ref().unwrap_or(&empty);
        let balancer = Arc::new(Balancer::new(&fwd.selector, &fwd.nodes));
        if let (Some(h), Some(_)) = (&mut proxy, &cfg.forwarder) {
            // A relay handler with a forwarder relays to its nodes.
            h.set_forwarder(balancer.clone());
        }

        // Last: everything above can fail without a socket to clean up.
        let bound = match reuse {
            Some(b) => b,
            None if cfg.is_udp() => Bound::Udp(Arc::new(
                listen::bind_udp(addr).map_err(|e| fail(format!("cannot bind udp {addr}: {e}")))?,
            )),
            None => Bound::Tcp(Arc::new(
                listen::bind_tcp(addr).map_err(|e| fail(format!("cannot bind tcp {addr}: {e}")))?,
            )),
        };
        let stop = CancellationToken::new();
        let kill = CancellationToken::new();
        let tracker = TaskTracker::new();

        let svc = Service {
            name: name.clone(),
            balancer: balancer.clone(),
            access: cfg.access.clone(),
            max_connections: cfg.max_connections,
            client_idle: cfg.client_idle_timeout.get(),
            backend_idle: cfg.backend_idle_timeout.get(),
            stats: stats.clone(),
            kill: kill.clone(),
            tracker: tracker.clone(),
            no_node_log: LogLimiter::default(),
            resource_log: LogLimiter::default(),
            node_fail_log: LogLimiter::default(),
        };
        let is_proxy = proxy.is_some();
        let handler_stats = proxy.as_ref().map(|h| h.stats().clone());
        let local = bound.local_addr().ok();
        let launch = match &bound {
            Bound::Tcp(l) => Launch::Tcp(
                l.clone(),
                Arc::new(TcpService {
                    svc,
                    router: router.clone(),
                    proxy_protocol: cfg.proxy_protocol.as_ref().map(|p| p.version),
                    handshake_timeout: cfg
                        .client_idle_timeout
                        .get()
                        .unwrap_or(TLS_HANDSHAKE_TIMEOUT),
                    connect_timeout,
                    proxy,
                    tls,
                    backend_tls,
                }),
            ),
            Bound::Udp(u) => Launch::Udp(
                u.clone(),
                Arc::new(UdpService {
                    svc,
                    cfg: cfg.udp.clone().unwrap_or_default(),
                    exits: cfg.interface().map(|i| i.exits.clone()).unwrap_or_default(),
                    router: router.clone(),
                }),
            ),
        };
        Ok(Ready {
            running: Running {
                config: cfg.clone(),
                bound: Mutex::new(Some(bound)),
                local_addr: local,
                stats,
                balancer: (!is_proxy || cfg.forwarder.is_some()).then(|| balancer.clone()),
                handler_stats,
                stop,
                kill,
                tracker,
            },
            launch,
            forwarder: (fwd.clone(), router, balancer),
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
    ///
    /// A TCP socket that no successor took over stops listening here and now,
    /// not when the accept loop next runs and drops its handle: a client that
    /// connects once the caller (a reload, an API DELETE) has returned is
    /// refused, not queued on a socket nobody accepts from.
    pub fn stop_accepting(&self) {
        let taken = self.bound.lock().ok().and_then(|mut b| b.take());
        self.stop.cancel();
        self.tracker.close();
        // Two handles: the one just taken and the accept loop's. More means a
        // successor serves on this very socket (a reload that kept the address).
        if let Some(Bound::Tcp(l)) = taken
            && Arc::strong_count(&l) <= 2
        {
            // shutdown(2) on a listening socket ends the listen (Linux); the
            // pending accept then fails and the loop, seeing `stop`, ends.
            let _ = socket2::SockRef::from(&*l).shutdown(std::net::Shutdown::Read);
        }
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

/// Background work of a forwarder, until `stop`: active health checks,
/// discovery, bandwidth sampling for `leastbandwidth`.
fn spawn_forwarder_tasks(
    name: &Arc<str>,
    fwd: &ForwarderConfig,
    balancer: &Arc<Balancer>,
    router: &Router,
    stop: &CancellationToken,
) {
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
}
