//! Forwarding chains at run time: a service's outbound connections through a
//! series of proxies (GOST's `chains:`; the typed model is
//! [`crate::config::chain`]).
//!
//! A [`Chain`] is built once from its config and shared by every service that
//! names it (and kept across a reload that does not change it), so a node that
//! fails is known to have failed by all of them. Each [`Hop`] picks one node per
//! connection with the forwarder's [`Balancer`] — the same strategies and the
//! same passive health (`maxFails` / `failTimeout`), one implementation.
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
//! The [`Router`] is the one place that dials: directly, or through its chain.

pub mod connector;
pub mod dialer;
pub mod stream;
pub mod udp;

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};

use tracing::warn;

use self::connector::{ConnectError, Connector};
use self::dialer::Dialer;
use self::stream::Outbound;
use super::balance::{Balancer, Node};
use super::router::{Exit, Router};
use super::stats::LogLimiter;
use crate::config::chain::ChainConfig;
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

/// A running chain: its hops, in order.
#[derive(Debug)]
pub struct Chain {
    name: Arc<str>,
    hops: Vec<Hop>,
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

impl Chain {
    /// The running chain for `cfg`: the one already in use by another service
    /// if its config is the same, else a new one.
    pub fn shared(cfg: &ChainConfig) -> Result<Arc<Chain>, ChainError> {
        let mut reg = REGISTRY
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        reg.retain(|(_, w)| w.strong_count() > 0);
        if let Some(c) = reg
            .iter()
            .find(|(c, _)| c == cfg)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(c);
        }
        let chain = Arc::new(Chain::new(cfg)?);
        reg.push((cfg.clone(), Arc::downgrade(&chain)));
        Ok(chain)
    }

    /// Build a chain of its own (not shared), reading the files its `tls`
    /// dialers name.
    pub fn new(cfg: &ChainConfig) -> Result<Chain, ChainError> {
        let mut hops = Vec::with_capacity(cfg.hops.len());
        for (h, hop) in cfg.hops.iter().enumerate() {
            let mut nodes = Vec::with_capacity(hop.nodes.len());
            let mut configs = Vec::with_capacity(hop.nodes.len());
            for (j, n) in hop.nodes.iter().enumerate() {
                let dialer = Dialer::new(&n.dialer).map_err(|e| ChainError {
                    chain: cfg.name.clone(),
                    field: format!("hops[{h}].nodes[{j}].dialer.tls.{}", e.field),
                    message: e.message.clone(),
                })?;
                let addr = if n.is_virtual() {
                    String::new()
                } else {
                    n.dial_addr()
                };
                let exits = n
                    .interface
                    .as_ref()
                    .or(hop.interface.as_ref())
                    .map(|i| i.exits.clone());
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
                    connector: Connector::new(&n.connector),
                    connect_timeout: n.connector.metadata.connect_timeout(),
                    dialer,
                    is_virtual: n.is_virtual(),
                });
            }
            hops.push(Hop {
                name: if hop.name.is_empty() {
                    format!("hops[{h}]")
                } else {
                    hop.name.clone()
                },
                balancer: Balancer::new(&hop.selector, &configs),
                nodes,
            });
        }
        Ok(Chain {
            name: Arc::from(cfg.name.as_str()),
            hops,
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

    /// No node of hop `h` is left to try: log (once a second) and say so.
    fn no_node(&self, h: usize, tried: &[Vec<Arc<Node>>], last: Option<io::Error>) -> io::Error {
        let hop = &self.hops[h].name;
        let n: usize = tried.iter().map(Vec::len).sum();
        if let Some(suppressed) = self.no_node_log.permit() {
            warn!(chain = %self.name, hop = %hop, tried = n, suppressed, "no node of the hop available");
        }
        let last = last
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default();
        io::Error::other(format!(
            "chain {}: no node of hop {hop} available ({n} tried){last}",
            self.name
        ))
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
        let next = |k: usize| -> &str { if k < last { &nodes[k + 1].addr } else { target } };
        let first = nodes[0];
        let exits = first.exits.as_deref().unwrap_or(&router.exits);
        let blame = |k: usize, e: ConnectError| match e {
            ConnectError::Node(e) => Failure::Node(k, e),
            ConnectError::Refused(e) if k < last => Failure::Node(k + 1, e),
            ConnectError::Refused(e) => Failure::Target(e),
        };
        let mut stream = if first.is_virtual {
            // No node: straight to what follows, out of the node's exit.
            let addrs = router.resolve(next(0)).await.map_err(|e| {
                if last == 0 {
                    Failure::Target(e)
                } else {
                    Failure::Node(1, e)
                }
            })?;
            match router.connect_resolved(&addrs, exits).await {
                Ok(s) => Outbound::Tcp(s),
                Err(e) if super::forward::local_resource_exhausted(&e) => {
                    return Err(Failure::Local(e));
                }
                Err(e) if !exit_failed(&e) => {
                    return Err(if last == 0 {
                        Failure::Target(e)
                    } else {
                        Failure::Node(1, e)
                    });
                }
                Err(e) => return Err(Failure::Node(0, e)),
            }
        } else {
            let s = match router.connect_via(&first.addr, exits).await {
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
