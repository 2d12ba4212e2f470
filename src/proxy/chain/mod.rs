//! Forwarding chains at run time: a service's outbound connections through a
//! series of proxies (GOST's `chains:`; the typed model is
//! [`crate::config::chain`]).
//!
//! A [`Chain`] is built once from its config and shared by every service that
//! names it (and kept across a reload that does not change it), so a node that
//! fails is known to have failed by all of them. Each [`Hop`] picks one node per
//! connection with the forwarder's [`Balancer`] — the same strategies and the
//! same passive health (`maxFails` / `failTimeout`), one implementation. A named
//! hop is shared the same way by every running chain that has it (GOST's
//! top-level `hops:` are one object, whatever chains use them).
//!
//! Dialing `target` through hops 1..n:
//!
//! 1. pick a node in every hop (nodes that failed for this connection are left
//!    out);
//! 2. connect to hop 1's node from this host — through the router, leaving by
//!    the node's `interface`, else the hop's, else the service's — and let its
//!    dialer add TLS if it is a `tls` dialer;
//! 3. for each hop k, its connector asks its node for the next address: hop
//!    k+1's node (whose dialer then adds its layer on the tunnel), or for the
//!    last hop the target;
//! 4. a failure is blamed where it belongs (see [`connector::ConnectError`]): a
//!    node that did not answer, or answered garbage, is counted as failed and the
//!    route is picked again without it; a node that *answered* that the next
//!    address is unreachable blames the next hop's node, or for the last hop the
//!    target, which is the client's problem: its error goes back to the handler
//!    (HTTP 502/504, a SOCKS reply) without trying other nodes.
//!
//! A **virtual** node (first hop only) is no proxy: the connection goes straight
//! to what follows it — the target, or hop 2's node — leaving by the node's
//! `interface`. A hop of virtual nodes spreads connections over uplinks.
//!
//! **Names** follow GOST (x/chain/route.go, router.go): a node's address is
//! resolved by the node's `resolver`/`hosts`, else its hop's, else the system's;
//! a later hop's node address is resolved here (and sent to the hop before as
//! an address) only when such a resolver or table answers for it, otherwise it
//! is sent as a name. The target is resolved by the *service's*
//! `resolver`/`hosts` before it enters the chain, when the service has them;
//! otherwise the last proxy resolves it.
//!
//! A dial that fails because the chain itself could not carry it — every node
//! of a hop was tried — returns a [`ChainUnavailable`] error and counts in
//! [`Chain::errors`] (GOST's `gost_chain_errors_total`): a forwarder whose
//! node is reached through the chain must not blame that node.
//!
//! The [`Router`] is the one place that dials: directly, or through its chain.

pub mod connector;
pub mod dialer;
pub mod stream;
pub mod udp;

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::net::TcpStream;

use tracing::warn;

use self::connector::{ConnectError, Connector};
use self::dialer::Dialer;
use self::stream::Outbound;
use super::balance::{Balancer, Node};
use super::resolve::Resolve;
use super::router::{Exit, Router};
use super::stats::LogLimiter;
use crate::config::chain::{ChainConfig, HopConfig};
use crate::config::resolver::{HostsConfig, ResolverConfig};
use crate::config::service::NodeConfig;

/// A chain could not be built (a `tls` dialer's file does not load).
#[derive(Debug, thiserror::Error)]
#[error("chain {chain:?}: {field}: {message}")]
pub struct ChainError {
    pub chain: String,
    /// Path inside the chain, e.g. `hops[0].nodes[1].dialer.tls.caFile`.
    pub field: String,
    pub message: String,
}

/// The chain could not carry a connection: no node of a hop was left to try.
/// Carried inside the `io::Error` a dial through the chain returns (see
/// [`is_chain_failure`]), so the caller blames the chain, not what it dialled.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ChainUnavailable(String);

/// Whether `e` is a [`ChainUnavailable`]: the chain failed, not the target.
pub fn is_chain_failure(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<ChainUnavailable>())
}

/// A running chain: its hops, in order.
#[derive(Debug)]
pub struct Chain {
    name: Arc<str>,
    hops: Vec<Arc<Hop>>,
    /// Dials the chain could not carry ([`ChainUnavailable`]).
    errors: AtomicU64,
    /// A dead node fails every connection that picks it until it is benched
    /// (and for ever with `maxFails: 0`): one line a second.
    fail_log: LogLimiter,
    no_node_log: LogLimiter,
}

/// One level of a chain: its nodes and the balancer that picks among them.
#[derive(Debug)]
pub struct Hop {
    name: String,
    balancer: Balancer,
    /// In the balancer's order (its list is never replaced for a hop).
    nodes: Vec<ChainNode>,
}

/// One node of a hop, ready to dial.
#[derive(Debug)]
pub struct ChainNode {
    /// `host:port` dialed (GOST's `:port` made `127.0.0.1:port`); empty for a
    /// virtual node.
    addr: String,
    /// The node's `interface`, else its hop's; `None`: the service's.
    exits: Option<Vec<Exit>>,
    /// The node's `resolver`/`hosts`, else its hop's; unset: the system's.
    names: Resolve,
    connector: Connector,
    connect_timeout: std::time::Duration,
    dialer: Dialer,
    is_virtual: bool,
}

/// Where an attempt along a route failed.
enum Failure {
    /// The node of hop `k` failed.
    Node(usize, io::Error),
    /// The target could not be reached (the last node said so, or a virtual
    /// node's direct connection was refused).
    Target(io::Error),
    /// This host is out of descriptors or buffers: no node is to blame.
    Local(io::Error),
}

/// Chains in use, by config: services that name the same chain share its state.
static REGISTRY: Mutex<Vec<(ChainConfig, Weak<Chain>)>> = Mutex::new(Vec::new());

/// Named hops in use, by config: chains with the same hop (a top-level `hops:`
/// entry, or the same hop written twice) share its node state, as GOST's chains
/// share a named hop.
static HOPS: Mutex<Vec<(HopConfig, Weak<Hop>)>> = Mutex::new(Vec::new());

/// The existing `T` in `reg` for `cfg`, else a new one from `build`; dead
/// entries are dropped on the way.
fn share<C: PartialEq + Clone, T, E>(
    reg: &Mutex<Vec<(C, Weak<T>)>>,
    cfg: &C,
    build: impl FnOnce() -> Result<T, E>,
) -> Result<Arc<T>, E> {
    let mut reg = reg
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    reg.retain(|(_, w)| w.strong_count() > 0);
    if let Some(t) = (reg.iter())
        .find(|(c, _)| c == cfg)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(t);
    }
    let t = Arc::new(build()?);
    reg.push((cfg.clone(), Arc::downgrade(&t)));
    Ok(t)
}

impl Hop {
    /// The running hop for `cfg` (hop `h` of a chain): shared when it has a
    /// name (an unnamed hop is known by its position only). An error is the
    /// field inside the hop and the message.
    fn shared(cfg: &HopConfig, h: usize) -> Result<Arc<Hop>, (String, String)> {
        if cfg.name.is_empty() {
            return Hop::new(cfg, h).map(Arc::new);
        }
        share(&HOPS, cfg, || Hop::new(cfg, h))
    }

    fn new(hop: &HopConfig, h: usize) -> Result<Hop, (String, String)> {
        // Nodes that name the same resolver and hosts share one (and its cache).
        type Key<'a> = (Option<&'a ResolverConfig>, Option<&'a HostsConfig>);
        let mut resolvers: Vec<(Key, Resolve)> = Vec::new();
        let mut nodes = Vec::with_capacity(hop.nodes.len());
        let mut configs = Vec::with_capacity(hop.nodes.len());
        for (j, n) in hop.nodes.iter().enumerate() {
            let dialer = Dialer::new(&n.dialer).map_err(|e| {
                (
                    format!("nodes[{j}].dialer.tls.{}", e.field),
                    e.message.clone(),
                )
            })?;
            let addr = if n.is_virtual() {
                String::new()
            } else {
                n.dial_addr()
            };
            let exits = (n.interface.as_ref())
                .or(hop.interface.as_ref())
                .map(|i| i.exits.clone());
            let key: Key = (
                (n.resolver.as_ref().or(hop.resolver.as_ref())).and_then(|r| r.target.as_deref()),
                (n.hosts.as_ref().or(hop.hosts.as_ref())).and_then(|r| r.target.as_deref()),
            );
            let names = match resolvers.iter().find(|(k, _)| *k == key) {
                Some((_, r)) => r.clone(),
                None => {
                    let r = Resolve::new(key.0, key.1)
                        .map_err(|message| (format!("nodes[{j}].resolver"), message))?;
                    resolvers.push((key, r.clone()));
                    r
                }
            };
            // The balancer knows a node by name and address; a virtual node
            // has no address, its name tells it apart (required at load).
            configs.push(NodeConfig {
                name: n.label().to_string(),
                addr: if n.is_virtual() {
                    format!("virtual:{j}")
                } else {
                    addr.clone()
                },
                weight: crate::config::service::default_weight(),
                priority: 0,
            });
            nodes.push(ChainNode {
                addr,
                exits,
                names,
                connector: Connector::new(&n.connector),
                connect_timeout: n.connector.metadata.connect_timeout(),
                dialer,
                is_virtual: n.is_virtual(),
            });
        }
        Ok(Hop {
            name: if hop.name.is_empty() {
                format!("hops[{h}]")
            } else {
                hop.name.clone()
            },
            balancer: Balancer::new(&hop.selector, &configs),
            nodes,
        })
    }
}

impl Chain {
    /// The running chain for `cfg`: the one already in use by another service
    /// if its config is the same, else a new one.
    pub fn shared(cfg: &ChainConfig) -> Result<Arc<Chain>, ChainError> {
        share(&REGISTRY, cfg, || Chain::new(cfg))
    }

    /// Build a chain of its own (not shared), reading the files its `tls`
    /// dialers name. Its named hops are shared with the other running chains
    /// that have the same hop (GOST's top-level `hops:` are one object each).
    pub fn new(cfg: &ChainConfig) -> Result<Chain, ChainError> {
        let hops = (cfg.hops.iter().enumerate())
            .map(|(h, hop)| {
                Hop::shared(hop, h).map_err(|(field, message)| ChainError {
                    chain: cfg.name.clone(),
                    field: format!("hops[{h}].{field}"),
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Chain {
            name: Arc::from(cfg.name.as_str()),
            hops,
            errors: AtomicU64::new(0),
            fail_log: LogLimiter::default(),
            no_node_log: LogLimiter::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chains in use by running services now (for the metrics endpoint).
    pub fn running() -> Vec<Arc<Chain>> {
        let reg = REGISTRY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        reg.iter().filter_map(|(_, w)| w.upgrade()).collect()
    }

    /// Dials this chain could not carry (every node of a hop failed): GOST's
    /// chain errors, beside the failures of each node.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The balancer of hop `h` (node state, for status and tests).
    pub fn hop_balancer(&self, h: usize) -> Option<&Balancer> {
        self.hops.get(h).map(|h| &h.balancer)
    }

    /// Connect to `target` (`host:port`) through the chain for a client at
    /// `client` (what the `hash` strategy hashes). `router` dials the first hop
    /// (its connect timeout, and its `interface` when the chain names none).
    pub async fn dial(
        &self,
        router: &Router,
        target: &str,
        client: IpAddr,
    ) -> io::Result<Outbound> {
        // GOST resolves the target by the service's resolver/hosts, if it has
        // them, before the chain: the last proxy then gets an address.
        let target = &router.pin_with(&router.names, target).await?;
        let mut tried: Vec<Vec<Arc<Node>>> = vec![Vec::new(); self.hops.len()];
        let mut last: Option<io::Error> = None;
        loop {
            let mut route = Vec::with_capacity(self.hops.len());
            for (h, hop) in self.hops.iter().enumerate() {
                let Some(node) = hop.balancer.pick(client, &tried[h]) else {
                    return Err(self.no_node(h, &tried, last));
                };
                route.push(node);
            }
            match self.attempt(router, &route, target).await {
                Ok(s) => {
                    route.iter().for_each(|n| n.connect_ok());
                    return Ok(s);
                }
                Err(Failure::Target(e)) => {
                    // Every node answered as it should: they are fine.
                    route.iter().for_each(|n| n.connect_ok());
                    return Err(e);
                }
                Err(Failure::Local(e)) => return Err(e),
                Err(Failure::Node(k, e)) => {
                    let hop = &self.hops[k];
                    let node = &route[k];
                    // The balancer's rule: a lone node is never benched (fail-open).
                    let benched = hop.balancer.node_failed(node);
                    if let Some(suppressed) = self.fail_log.permit() {
                        warn!(chain = %self.name, hop = %hop.name, node = node.label(), error = %e, benched, suppressed, "chain node failed; trying another");
                    }
                    tried[k].push(node.clone());
                    last = Some(e);
                }
            }
        }
    }

    /// No node of hop `h` is left to try: count, log (once a second) and say
    /// so with a [`ChainUnavailable`].
    fn no_node(&self, h: usize, tried: &[Vec<Arc<Node>>], last: Option<io::Error>) -> io::Error {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let hop = &self.hops[h].name;
        let n: usize = tried.iter().map(Vec::len).sum();
        if let Some(suppressed) = self.no_node_log.permit() {
            warn!(chain = %self.name, hop = %hop, tried = n, suppressed, "no node of the hop available");
        }
        let last = last
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default();
        io::Error::other(ChainUnavailable(format!(
            "chain {}: no node of hop {hop} available ({n} tried){last}",
            self.name
        )))
    }

    fn node_of(&self, h: usize, picked: &Arc<Node>) -> &ChainNode {
        let hop = &self.hops[h];
        let i = hop
            .balancer
            .nodes()
            .iter()
            .position(|n| Arc::ptr_eq(n, picked))
            .unwrap_or(0);
        &hop.nodes[i]
    }

    /// One try along `route` (a node per hop).
    async fn attempt(
        &self,
        router: &Router,
        route: &[Arc<Node>],
        target: &str,
    ) -> Result<Outbound, Failure> {
        let nodes: Vec<&ChainNode> = (0..route.len())
            .map(|h| self.node_of(h, &route[h]))
            .collect();
        let last = nodes.len() - 1;
        // What each hop asks its node for: the next node's address (by that
        // node's resolver, else as written), and last the target.
        let mut asked = Vec::with_capacity(nodes.len());
        for (k, n) in nodes.iter().enumerate().skip(1) {
            let a = router.pin_with(&n.names, &n.addr).await;
            asked.push(a.map_err(|e| Failure::Node(k, e))?);
        }
        asked.push(target.to_string());
        let next = |k: usize| -> &str { &asked[k] };
        let first = nodes[0];
        let exits = first.exits.as_deref().unwrap_or(&router.exits);
        let blame = |k: usize, e: ConnectError| match e {
            ConnectError::Node(e) => Failure::Node(k, e),
            ConnectError::Refused(e) if k < last => Failure::Node(k + 1, e),
            ConnectError::Refused(e) => Failure::Target(e),
        };
        let mut stream = if first.is_virtual {
            // No node: straight to what follows, out of the node's exit. The
            // target by the service's names; hop 2's node by its own.
            let beyond = |e| {
                if last == 0 {
                    Failure::Target(e)
                } else {
                    Failure::Node(1, e)
                }
            };
            let names = if last == 0 {
                &router.names
            } else {
                &nodes[1].names
            };
            let addrs = router.resolve_with(names, next(0)).await.map_err(beyond)?;
            match router.connect_resolved(&addrs, exits).await {
                Ok(s) => Outbound::Tcp(s),
                Err(e) if super::forward::local_resource_exhausted(&e) => {
                    return Err(Failure::Local(e));
                }
                Err(e) if !exit_failed(&e) => return Err(beyond(e)),
                Err(e) => return Err(Failure::Node(0, e)),
            }
        } else {
            let s = match first.connect(router, exits).await {
                Ok(s) => Outbound::Tcp(s),
                Err(e) if super::forward::local_resource_exhausted(&e) => {
                    return Err(Failure::Local(e));
                }
                Err(e) => return Err(Failure::Node(0, e)),
            };
            first
                .dialer
                .wrap(s, &first.addr)
                .await
                .map_err(|e| blame(0, e))?
        };
        for (k, node) in nodes.iter().enumerate() {
            if !node.is_virtual {
                stream = node
                    .connector
                    .connect(stream, next(k), node.connect_timeout)
                    .await
                    .map_err(|e| blame(k, e))?;
            }
            if k < last {
                let n = nodes[k + 1];
                stream = n
                    .dialer
                    .wrap(stream, &n.addr)
                    .await
                    .map_err(|e| blame(k + 1, e))?;
            }
        }
        Ok(stream)
    }
}

impl ChainNode {
    /// A connection from this host to the node (a first hop's), its address
    /// resolved by the node's names, leaving through `exits`.
    async fn connect(&self, router: &Router, exits: &[Exit]) -> io::Result<TcpStream> {
        let addrs = router.resolve_with(&self.names, &self.addr).await?;
        router.connect_resolved(&addrs, exits).await
    }
}

/// Whether a virtual node's direct connection failed because of its exit (the
/// address or device is not there, no route out of it) rather than because
/// the target refused or did not answer — only then is the node to blame.
fn exit_failed(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::TimedOut
            | io::ErrorKind::HostUnreachable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two chains that use one top-level hop share it (node health included);
    /// an unnamed hop is never shared.
    #[test]
    fn chains_share_a_named_hop() {
        let c = crate::config::Config::from_str_named(
            "services:\n\
             - {name: a, addr: \"127.0.0.1:0\", handler: {type: http, chain: c1}, listener: {type: tcp}}\n\
             - {name: b, addr: \"127.0.0.1:0\", handler: {type: http, chain: c2}, listener: {type: tcp}}\n\
             hops: [{name: shared-hop-test, nodes: [{addr: \"10.0.0.1:3128\"}]}]\n\
             chains:\n\
             - {name: c1, hops: [{name: shared-hop-test}, {nodes: [{addr: \"10.0.0.9:1\"}]}]}\n\
             - {name: c2, hops: [{name: shared-hop-test}, {nodes: [{addr: \"10.0.0.9:1\"}]}]}\n",
            std::path::Path::new("t.yml"),
        )
        .unwrap();
        let chain = |i: usize| Chain::new(c.services[i].chain.as_ref().unwrap()).unwrap();
        let (c1, c2) = (chain(0), chain(1));
        let hop = |c: &Chain, h: usize| c.hop_balancer(h).unwrap() as *const Balancer;
        assert_eq!(hop(&c1, 0), hop(&c2, 0), "the named hop is one object");
        assert_ne!(hop(&c1, 1), hop(&c2, 1), "unnamed hops are not shared");
    }
}
