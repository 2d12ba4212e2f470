//! What every connection (or UDP session) of one service shares, whatever its
//! protocol: the name, the nodes, the access rules, the counters, and the two
//! handles a drain works with.
//!
//! The TCP path ([`forward`](super::forward)) and UDP ([`udp`](super::udp)) each
//! wrap a `Service` with what only they need; [`lifecycle`](super::lifecycle)
//! builds it from the typed config and owns its tasks.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::balance::{Balancer, Node};
use super::stats::{LogLimiter, ServiceStats, inc};
use crate::config::service::AccessConfig;

/// The shared state of one running service.
pub(crate) struct Service {
    pub name: Arc<str>,
    /// The forwarder's nodes (empty for a proxy handler, which finds its target
    /// in each request).
    pub balancer: Arc<Balancer>,
    pub access: Option<AccessConfig>,
    /// `max_connections`; 0 = unlimited.
    pub max_connections: u32,
    /// `client_idle_timeout` / `backend_idle_timeout`.
    pub client_idle: Option<Duration>,
    pub backend_idle: Option<Duration>,
    pub stats: Arc<ServiceStats>,
    /// Cancelled when a drain's grace period is over: connections still running
    /// are cut.
    pub kill: CancellationToken,
    /// Every connection (or session) task, so a drain can wait for them.
    pub tracker: TaskTracker,
    /// "No node" can happen for every client of a dead pool; log it once a second.
    pub no_node_log: LogLimiter,
    /// Out of descriptors or buffers: every new connection fails the same way.
    pub resource_log: LogLimiter,
    /// A node refusing connections (or TLS handshakes) with `maxFails: 0` never
    /// gets benched, so its failures repeat at the rate clients arrive.
    pub node_fail_log: LogLimiter,
}

impl Service {
    /// Whether the access rules let `peer` in; a refusal is counted.
    pub fn admits(&self, peer: SocketAddr) -> bool {
        let ok = self.access.as_ref().is_none_or(|a| a.allows(peer.ip()));
        if !ok {
            inc(&self.stats.denied);
            debug!(service = %self.name, %peer, "denied by access rules");
        }
        ok
    }

    /// Count and log (once a second) that no node could take `client`.
    pub fn no_node(&self, client: IpAddr, tried: usize, what: &str) {
        inc(&self.stats.no_node);
        if let Some(suppressed) = self.no_node_log.permit() {
            warn!(service = %self.name, %client, tried, suppressed, "no healthy node available; {what}");
        }
    }

    /// A node failed: count it toward passive health (`maxFails`/`failTimeout`;
    /// a lone node is never benched). Returns whether the node was benched.
    pub fn node_failed(&self, node: &Node) -> bool {
        self.balancer.node_failed(node)
    }
}
