//! Services: listeners, handlers, forwarders, balancing and health checks.
//!
//! The daemon hands its `services:` to a [`ServiceSet`] and from then on speaks to
//! it in three verbs:
//!
//! ```no_run
//! # async fn demo(cfg: gateway::config::Config, new: gateway::config::Config) -> Result<(), gateway::proxy::ProxyError> {
//! use std::time::Duration;
//! use gateway::proxy::ServiceSet;
//! let mut set = ServiceSet::start(&cfg.services)?;    // bind everything, or fail naming the service
//! set.reload(&new.services)?;                         // start new/changed, drain removed
//! set.shutdown(Duration::from_secs(10)).await;        // stop accepting, drain, then cut
//! # Ok(()) }
//! ```
//!
//! The modules, by concern:
//!
//! * [`lifecycle`]: a service built from its typed config, bound (or handed its
//!   predecessor's socket on reload), drained and stopped;
//! * [`service`]: what all connections of a service share (nodes, access rules,
//!   counters, drain handles);
//! * [`forward`]: the path of a TCP connection from accept to the relay;
//!   [`udp`]: datagrams and sessions;
//! * [`handler`]: the proxy protocols (`http`, `socks5`, `socks4`, `auto`);
//! * [`balance`], [`health`], [`discovery`]: the forwarder's nodes, how one is
//!   chosen, and how the list and its health are kept current;
//! * [`router`]: connecting to a target (timeout, GOST's `interface` exit),
//!   directly or through a forwarding [`chain`];
//!   [`egress`]: binding any outgoing socket, TCP or UDP, to that exit;
//!   [`resolve`]: the names a service dials (GOST's `hosts:` and `resolver:`);
//!   [`listen`]: binding with `IP_FREEBIND`; [`relay`]: moving bytes;
//!   [`proxy_protocol`], [`tls`], [`cut`]: what their names say;
//! * [`stats`]: the counters, in one vocabulary; [`hooks`]: GOST's preUp,
//!   postUp, preDown and postDown commands around a service's start and stop.
//!
//! Configuration arrives typed and validated (`crate::config::service`):
//! nothing here parses configuration text. The path of a connection, and where
//! its bytes are copied, is described in docs/architecture.md ("Services").

pub mod acme;
pub mod balance;
pub mod chain;
pub mod clock;
pub mod cut;
pub mod discovery;
pub mod egress;
pub mod forward;
pub mod handler;
pub mod health;
pub mod hooks;
pub mod lifecycle;
pub mod listen;
pub mod proxy_protocol;
pub mod relay;
pub mod relay_proto;
pub mod resolve;
pub mod router;
pub mod service;
pub mod stats;
pub mod tls;
pub mod tls_options;
pub mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::config::ServiceConfig;
use balance::Balancer;
use lifecycle::{Bound, Running, bound_key};
use stats::{HandlerCounts, HandlerStats, ServiceCounts, ServiceStats};

/// Errors starting or reloading services.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A service could not be started (bind failure, unsupported combination).
    #[error("service {service:?}: {message}")]
    Service { service: String, message: String },
    /// Services need a tokio runtime to run in.
    #[error("services must be started from within a tokio runtime")]
    NoRuntime,
}

/// The running services, by name.
#[derive(Debug)]
pub struct ServiceSet {
    running: HashMap<String, Running>,
    /// How long services removed or replaced by a reload may finish their
    /// in-flight connections before being cut.
    reload_grace: Duration,
    /// Published after every change, for readers on other tasks.
    view: ServiceView,
}

/// The running services' counters, for readers that do not own the
/// [`ServiceSet`] (the metrics endpoint reads it at every scrape). A clone is a
/// handle on the same list, which every [`ServiceSet::reload`] replaces.
#[derive(Debug, Clone, Default)]
pub struct ServiceView(Arc<arc_swap::ArcSwap<Vec<ServiceEntry>>>);

/// One running service as a [`ServiceView`] shows it: shared handles on its
/// live counters, never copies.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    pub name: String,
    pub stats: Arc<ServiceStats>,
    /// For a proxy handler (`http`, `socks5`, `socks4`, `auto`).
    pub handler_stats: Option<Arc<HandlerStats>>,
    /// For a forwarding service: its nodes.
    pub balancer: Option<Arc<Balancer>>,
}

impl ServiceView {
    /// The services running now, by name.
    pub fn services(&self) -> Arc<Vec<ServiceEntry>> {
        self.0.load_full()
    }
}

/// Drain a stopping service, then run its `postDown` hooks.
async fn drain_then_post_down(r: &Running, deadline: tokio::time::Instant) {
    r.drain_until(deadline).await;
    hooks::run_logged_async(r.config.clone(), hooks::Stage::PostDown).await;
}

/// Default drain time for services removed by a reload.
pub const DEFAULT_RELOAD_GRACE: Duration = Duration::from_secs(30);

impl ServiceSet {
    /// Bind and start every service. If any fails, those already started are
    /// stopped and the error names the failing service. Call from a tokio runtime.
    pub fn start(services: &[ServiceConfig]) -> Result<ServiceSet, ProxyError> {
        let mut set = ServiceSet::empty();
        set.reload(services)?;
        Ok(set)
    }

    /// A set running nothing (needs no runtime).
    pub fn empty() -> ServiceSet {
        ServiceSet {
            running: HashMap::new(),
            reload_grace: DEFAULT_RELOAD_GRACE,
            view: ServiceView::default(),
        }
    }

    /// Apply a new list: start new and changed services, stop removed and changed
    /// ones (their in-flight connections drain in the background for the reload
    /// grace period), leave unchanged ones alone. A changed service that keeps its
    /// address takes over the old one's socket, so clients are never refused. If a
    /// new service cannot start, nothing changes and the error is returned.
    pub fn reload(&mut self, services: &[ServiceConfig]) -> Result<(), ProxyError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ProxyError::NoRuntime);
        }
        // Sockets of services about to be replaced or removed, for reuse.
        let mut sockets: HashMap<(bool, String, String), Bound> = HashMap::new();
        for r in self.running.values() {
            let keep = services.iter().any(|s| s == &r.config);
            if !keep && let Some(b) = r.bound() {
                sockets.insert(bound_key(&r.config), b);
            }
        }
        let mut started: Vec<Running> = Vec::new();
        for s in services {
            if self.running.get(&s.name).is_some_and(|r| &r.config == s) {
                continue;
            }
            // A failing preUp keeps this service (only) down; logged there.
            if !hooks::pre_up(s) {
                continue;
            }
            let reuse = sockets.remove(&bound_key(s));
            // On error `started` is dropped: those services stop at once, and the
            // old ones (still in `self.running`) were never touched.
            started.push(Running::start(s, reuse)?);
        }
        let mut retired: Vec<Running> = Vec::new();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            let keep = services
                .iter()
                .any(|s| self.running.get(&name).is_some_and(|r| &r.config == s));
            if !keep && let Some(r) = self.running.remove(&name) {
                retired.push(r);
            }
        }
        for r in started {
            hooks::run_logged(&r.config, hooks::Stage::PostUp);
            self.running.insert(r.config.name.clone(), r);
        }
        self.publish();
        if !retired.is_empty() {
            let grace = self.reload_grace;
            for r in &retired {
                hooks::run_logged(&r.config, hooks::Stage::PreDown);
                r.stop_accepting();
                info!(service = %r.config.name, ?grace, "service retired by reload; draining");
            }
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + grace;
                futures::future::join_all(
                    retired.iter().map(|r| drain_then_post_down(r, deadline)),
                )
                .await;
            });
        }
        Ok(())
    }

    /// Stop accepting everywhere, let in-flight connections finish for up to
    /// `grace`, then cut what is left.
    pub async fn shutdown(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for r in self.running.values() {
            hooks::run_logged(&r.config, hooks::Stage::PreDown);
            r.stop_accepting();
        }
        let n = self.running.len();
        futures::future::join_all(
            self.running
                .values()
                .map(|r| drain_then_post_down(r, deadline)),
        )
        .await;
        if n > 0 {
            info!(services = n, "all services stopped");
        }
    }

    /// A handle that follows the running services across reloads.
    pub fn view(&self) -> ServiceView {
        self.view.clone()
    }

    fn publish(&self) {
        let mut list: Vec<ServiceEntry> = self
            .running
            .values()
            .map(|r| ServiceEntry {
                name: r.config.name.clone(),
                stats: r.stats.clone(),
                handler_stats: r.handler_stats.clone(),
                balancer: r.balancer.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        self.view.0.store(Arc::new(list));
    }

    /// Grace period for services retired by [`reload`](Self::reload).
    pub fn set_reload_grace(&mut self, grace: Duration) {
        self.reload_grace = grace;
    }

    /// Names of the running services.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.running.keys().cloned().collect();
        v.sort();
        v
    }

    /// The bound address of a service (useful with port 0).
    pub fn local_addr(&self, service: &str) -> Option<SocketAddr> {
        self.running.get(service).and_then(|r| r.local_addr())
    }

    /// The counters of a service.
    pub fn stats(&self, service: &str) -> Option<ServiceCounts> {
        self.running.get(service).map(|r| r.stats.snapshot())
    }

    /// The counters of a proxy handler (`http`, `socks5`, `socks4`, `auto`).
    pub fn handler_stats(&self, service: &str) -> Option<HandlerCounts> {
        self.running
            .get(service)
            .and_then(|r| r.handler_stats.as_ref())
            .map(|s| s.snapshot())
    }

    /// The balancer of a forwarding service (node state, for status and tests).
    pub fn balancer(&self, service: &str) -> Option<Arc<Balancer>> {
        self.running.get(service).and_then(|r| r.balancer.clone())
    }
}
