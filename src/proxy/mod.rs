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
//! `start` and `reload` run the services' hooks in line, blocking the caller.
//! The daemon takes a reload in its four steps instead ([`ServiceSet::plan`],
//! [`Plan::prepare`], [`ServiceSet::commit`], [`Committed::finish`]): the two
//! that run hooks run on a blocking thread without the daemon's lock, and a
//! stop cuts their `preUp`/`postUp` short (`crate::daemon`).
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

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::ServiceConfig;
use balance::Balancer;
use lifecycle::{Bound, Ready, Running, bound_key};
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
    /// The daemon began to stop while the services were starting.
    #[error("the daemon is stopping")]
    Stopping,
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
    /// The drains (and `postDown`s) of services retired by reloads, which
    /// [`shutdown`](Self::shutdown) waits for too.
    retiring: TaskTracker,
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
    hooks::run_down_async(r.config.clone(), hooks::Stage::PostDown).await;
}

/// What a reload changes, worked out by [`ServiceSet::plan`] (no hook, no
/// socket yet).
pub struct Plan {
    /// The whole new list.
    wanted: Vec<ServiceConfig>,
    /// New and changed services, with the socket of the predecessor they take
    /// over (same protocol and address).
    start: Vec<(ServiceConfig, Option<Bound>)>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.start.iter().map(|(s, _)| s.name.as_str()).collect();
        f.debug_struct("Plan").field("start", &names).finish()
    }
}

/// New and changed services, bound but not serving: see [`Plan::prepare`].
pub struct Prepared {
    wanted: Vec<ServiceConfig>,
    ready: Vec<Ready>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .ready
            .iter()
            .map(|r| r.config().name.as_str())
            .collect();
        f.debug_struct("Prepared").field("ready", &names).finish()
    }
}

/// A reload committed: what [`Committed::finish`] still has to do.
#[derive(Debug)]
pub struct Committed {
    started: Vec<ServiceConfig>,
    retired: Vec<Running>,
    grace: Duration,
    retiring: TaskTracker,
}

impl Plan {
    /// Run the `preUp` hooks of the new and changed services and bind them, in
    /// order, none serving yet. A failing `preUp` keeps that service (only)
    /// down. If a service cannot be built or bound, or `stop` is cancelled, the
    /// whole reload is rolled back: what was bound is closed, and every service
    /// whose `preUp` had succeeded runs its `postDown` (it never served, so it
    /// gets no `preDown`); the running services were never touched. Blocks
    /// while hooks run: call it from a blocking thread (within the runtime).
    pub fn prepare(self, stop: &CancellationToken) -> Result<Prepared, ProxyError> {
        let mut ready: Vec<Ready> = Vec::new();
        // Services whose preUp succeeded: their postDown is due on a rollback.
        let mut hooked: Vec<ServiceConfig> = Vec::new();
        let mut failure = None;
        for (s, reuse) in self.start {
            if stop.is_cancelled() {
                failure = Some(ProxyError::Stopping);
                break;
            }
            // A failing preUp keeps this service (only) down; logged there.
            if !hooks::pre_up(&s, stop) {
                continue;
            }
            if !s.hooks().post_down.is_empty() {
                hooked.push(s.clone());
            }
            match Running::prepare(&s, reuse) {
                Ok(r) => ready.push(r),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // A stop during the last preUp leaves nothing to commit either.
        if failure.is_none() && stop.is_cancelled() {
            failure = Some(ProxyError::Stopping);
        }
        let Some(e) = failure else {
            return Ok(Prepared {
                wanted: self.wanted,
                ready,
            });
        };
        // Close the sockets before the postDown hooks run: they may expect the
        // port free, as after any other stop.
        drop(ready);
        let never = CancellationToken::new();
        for s in &hooked {
            warn!(service = %s.name, "service abandoned with its reload: running its postDown");
            hooks::run_logged(s, hooks::Stage::PostDown, &never);
        }
        Err(e)
    }
}

impl Committed {
    /// Run the `postUp` hooks of the services the reload started, then the
    /// `preDown` hooks of those it retired, which then stop accepting; their
    /// drains and `postDown` go on in the background. A cancelled `stop` cuts
    /// the `postUp`s short (never the down hooks). Blocks while hooks run: call
    /// it from a blocking thread (within the runtime).
    pub fn finish(self, stop: &CancellationToken) {
        for s in &self.started {
            hooks::run_logged(s, hooks::Stage::PostUp, stop);
        }
        if self.retired.is_empty() {
            return;
        }
        let grace = self.grace;
        let never = CancellationToken::new();
        for r in &self.retired {
            hooks::run_logged(&r.config, hooks::Stage::PreDown, &never);
            r.stop_accepting();
            info!(service = %r.config.name, ?grace, "service retired by reload; draining");
        }
        let retired = self.retired;
        self.retiring.spawn(async move {
            let deadline = tokio::time::Instant::now() + grace;
            futures::future::join_all(retired.iter().map(|r| drain_then_post_down(r, deadline)))
                .await;
        });
    }
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
            retiring: TaskTracker::new(),
        }
    }

    /// Apply a new list: start new and changed services, stop removed and changed
    /// ones (their in-flight connections drain in the background for the reload
    /// grace period), leave unchanged ones alone. A changed service that keeps its
    /// address takes over the old one's socket, so clients are never refused. If a
    /// new service cannot start, nothing changes and the error is returned (the
    /// services it had prepared run their `postDown`, see [`Plan::prepare`]).
    /// Runs the hooks in line: the four steps, for a caller that must not block.
    pub fn reload(&mut self, services: &[ServiceConfig]) -> Result<(), ProxyError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ProxyError::NoRuntime);
        }
        let never = CancellationToken::new();
        let prepared = self.plan(services).prepare(&never)?;
        self.commit(prepared).finish(&never);
        Ok(())
    }

    /// Step 1 of a reload: which services start (with the sockets they take
    /// over) and, implicitly, which stop.
    pub fn plan(&self, services: &[ServiceConfig]) -> Plan {
        // Sockets of services about to be replaced or removed, for reuse.
        let mut sockets: HashMap<(bool, String, String), Bound> = HashMap::new();
        for r in self.running.values() {
            let keep = services.iter().any(|s| s == &r.config);
            if !keep && let Some(b) = r.bound() {
                sockets.insert(bound_key(&r.config), b);
            }
        }
        let start = (services.iter())
            .filter(|s| self.running.get(&s.name).is_none_or(|r| &r.config != *s))
            .map(|s| (s.clone(), sockets.remove(&bound_key(s))))
            .collect();
        Plan {
            wanted: services.to_vec(),
            start,
        }
    }

    /// Step 3 of a reload (after [`Plan::prepare`]): the prepared services start
    /// serving and join the set; the services not wanted any more leave it (they
    /// keep accepting until [`Committed::finish`] runs their `preDown`). Quick:
    /// runs no hook.
    pub fn commit(&mut self, prepared: Prepared) -> Committed {
        let Prepared { wanted, ready } = prepared;
        let mut retired: Vec<Running> = Vec::new();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            let keep =
                (wanted.iter()).any(|s| self.running.get(&name).is_some_and(|r| &r.config == s));
            if !keep && let Some(r) = self.running.remove(&name) {
                retired.push(r);
            }
        }
        let mut started = Vec::new();
        for r in ready {
            let r = r.serve();
            started.push(r.config.clone());
            self.running.insert(r.config.name.clone(), r);
        }
        self.publish();
        Committed {
            started,
            retired,
            grace: self.reload_grace,
            retiring: self.retiring.clone(),
        }
    }

    /// Stop accepting everywhere, let in-flight connections finish for up to
    /// `grace`, then cut what is left. Each service runs its `preDown` before it
    /// stops accepting and its `postDown` after its drain; services stop side by
    /// side, so one slow hook holds back only its own service. Services retired
    /// by earlier reloads finish their drains too.
    pub async fn shutdown(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        let n = self.running.len();
        futures::future::join_all(self.running.values().map(|r| async move {
            hooks::run_down_async(r.config.clone(), hooks::Stage::PreDown).await;
            r.stop_accepting();
            drain_then_post_down(r, deadline).await;
        }))
        .await;
        self.retiring.close();
        self.retiring.wait().await;
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
