//! Choosing a node: strategies, weights, priorities and passive health.
//!
//! A [`Balancer`] holds a forwarder's nodes and answers one question per client
//! connection (or UDP session): *which node now?* It first narrows the list to
//! the **available** nodes — passing their active health check, not benched by
//! passive health, not already tried for this client — then to the lowest
//! `priority` among them (higher numbers are backups), and lets the strategy pick:
//!
//! | strategy | picks |
//! |---|---|
//! | `roundrobin` | the next one in turn |
//! | `weight` | smooth weighted round robin (nginx's): over any window, node *i* gets `weight_i / Σweight` of the picks, evenly spread |
//! | `random` | uniformly at random |
//! | `fifo` | the first in list order (active/backup) |
//! | `leastconn` | the one with the fewest connections in flight |
//! | `leastbandwidth` | the one that moved the fewest bytes per second lately |
//! | `iphash` | `hash(client ip) mod n`: sticky, but any change of `n` reshuffles clients |
//! | `iphash1` | weighted rendezvous hashing: each (client, node) pair gets a score, the highest wins |
//!
//! Rendezvous (highest-random-weight) hashing is what makes `iphash1` consistent:
//! a client's ranking of the nodes does not depend on which *other* nodes exist,
//! so when node X leaves, only the clients whose top choice was X move (each to its
//! own second choice), and when X comes back exactly those clients return.
//!
//! **Passive health** (GOST's `maxFails` / `failTimeout`): connection failures in a
//! row are counted per node; at `maxFails` the node is benched for `failTimeout`,
//! after which it gets traffic again (one success clears the count). **Active
//! health** (see [`super::health`]) sets [`Node::set_healthy`].
//!
//! Passive health must never lengthen an outage, so it **fails open**, as
//! nginx's `max_fails` does:
//!
//! * a lone node is never benched ([`Balancer::node_failed`]): there is nowhere
//!   else to send its clients, and benching it would keep refusing them for
//!   `failTimeout` after it came back;
//! * when every node not yet tried for this client is benched, [`Balancer::pick`]
//!   picks among them anyway (same priority and strategy rules) instead of
//!   refusing the client: a benched node may well be back;
//! * a node that answers is back at once ([`Node::connect_ok`] clears its bench).
//!
//! Active health checks do not fail open: a node they found dead stays out
//! until they find it alive (its `passes`), as in gobetween.
//!
//! Nodes are replaced wholesale by discovery ([`Balancer::set_nodes`]); a node
//! that is still listed (same name and address) keeps its counters and health.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::stats::{ConnectBuckets, Histogram};
use crate::config::service::{NodeConfig, SelectorConfig, Strategy};

/// One backend and what is known about it.
#[derive(Debug)]
pub struct Node {
    pub config: NodeConfig,
    active: AtomicU64,
    /// Connections (or UDP sessions) ever handed to this node.
    total: AtomicU64,
    /// Connection attempts to it that failed, ever.
    failures: AtomicU64,
    /// How long connecting to it took (successful connects only).
    pub connect_time: Histogram<ConnectBuckets>,
    /// Bytes moved to and from this node (both directions), ever.
    bytes: Arc<AtomicU64>,
    /// Bytes per second over the last sampling period.
    rate: AtomicU64,
    last_bytes: AtomicU64,
    healthy: AtomicBool,
    passive: Mutex<Passive>,
}

#[derive(Debug, Default)]
struct Passive {
    fails: u32,
    benched_until: Option<Instant>,
}

impl Node {
    pub fn new(config: NodeConfig) -> Node {
        Node {
            config,
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            connect_time: Histogram::default(),
            bytes: Arc::new(AtomicU64::new(0)),
            rate: AtomicU64::new(0),
            last_bytes: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            passive: Mutex::new(Passive::default()),
        }
    }

    /// The name to log: `name` if given, else the address.
    pub fn label(&self) -> &str {
        if self.config.name.is_empty() {
            &self.config.addr
        } else {
            &self.config.name
        }
    }

    pub fn addr(&self) -> &str {
        &self.config.addr
    }

    /// Connections (or UDP sessions) in flight.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Connections (or UDP sessions) ever handed to this node.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Connection attempts to this node that failed, ever.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Bytes moved to and from this node, both directions, ever.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Count one connection for `leastconn` until the lease is dropped.
    pub fn acquire(self: &Arc<Self>) -> NodeLease {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        NodeLease(self.clone())
    }

    /// The counter the relay adds moved bytes to.
    pub fn byte_counter(&self) -> Arc<AtomicU64> {
        self.bytes.clone()
    }

    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Set by active health checks. Returns the previous value.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::Relaxed)
    }

    /// Healthy and not benched by passive health.
    pub fn available(&self, now: Instant) -> bool {
        if !self.is_healthy() {
            return false;
        }
        self.passive().benched_until.is_none_or(|t| now >= t)
    }

    /// The passive-health state. A panic while it was held cannot leave it
    /// half-written (each update is a couple of plain stores), so a poisoned lock
    /// is taken over rather than letting passive health switch itself off.
    fn passive(&self) -> std::sync::MutexGuard<'_, Passive> {
        self.passive
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A connection to this node failed. Returns true if that benched it.
    pub fn connect_failed(&self, max_fails: u32, fail_timeout: Duration) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut p = self.passive();
        p.fails = p.fails.saturating_add(1);
        if max_fails > 0 && p.fails >= max_fails {
            p.fails = 0;
            p.benched_until = Some(super::clock::std_deadline_after(
                Instant::now(),
                fail_timeout,
            ));
            return true;
        }
        false
    }

    pub fn connect_ok(&self) {
        let mut p = self.passive();
        p.fails = 0;
        p.benched_until = None;
    }

    fn key(&self) -> (&str, &str) {
        (&self.config.name, &self.config.addr)
    }

    /// The identity hashed by `iphash1`: the name when there is one (survives an
    /// address change), else the address.
    fn hash_id(&self) -> &str {
        self.label()
    }
}

/// A connection's hold on its node: the node's in-flight count (what
/// `leastconn` compares) is one higher until the lease is dropped.
#[derive(Debug)]
pub struct NodeLease(Arc<Node>);

impl NodeLease {
    pub fn node(&self) -> &Arc<Node> {
        &self.0
    }
}

impl Drop for NodeLease {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A forwarder's nodes and its selector.
#[derive(Debug)]
pub struct Balancer {
    strategy: Strategy,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    nodes: ArcSwap<Vec<Arc<Node>>>,
    next: AtomicUsize,
    /// Smooth WRR's running "current weight" per node, by address.
    wrr: Mutex<HashMap<String, i64>>,
    last_tick: Mutex<Instant>,
}

impl Balancer {
    pub fn new(selector: &SelectorConfig, nodes: &[NodeConfig]) -> Balancer {
        Balancer {
            strategy: selector.strategy,
            max_fails: selector.max_fails,
            fail_timeout: selector.fail_timeout.0,
            nodes: ArcSwap::from_pointee(
                nodes.iter().cloned().map(Node::new).map(Arc::new).collect(),
            ),
            next: AtomicUsize::new(0),
            wrr: Mutex::new(HashMap::new()),
            last_tick: Mutex::new(Instant::now()),
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    pub fn nodes(&self) -> Arc<Vec<Arc<Node>>> {
        self.nodes.load_full()
    }

    /// Replace the node list (discovery). Nodes that stay keep their state.
    /// Returns true if the list changed.
    pub fn set_nodes(&self, configs: &[NodeConfig]) -> bool {
        let old = self.nodes.load_full();
        let same =
            old.len() == configs.len() && old.iter().zip(configs).all(|(n, c)| &n.config == c);
        if same {
            return false;
        }
        let new: Vec<Arc<Node>> = configs
            .iter()
            .map(|c| {
                old.iter()
                    .find(|n| n.key() == (c.name.as_str(), c.addr.as_str()) && n.config == *c)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Node::new(c.clone())))
            })
            .collect();
        self.nodes.store(Arc::new(new));
        true
    }

    /// Pick a node for a client, skipping those in `tried`. When passive health
    /// has benched every healthy node left, they are candidates all the same
    /// (fail-open). `None`: every node was tried or is down by its active check.
    pub fn pick(&self, client: IpAddr, tried: &[Arc<Node>]) -> Option<Arc<Node>> {
        let nodes = self.nodes.load();
        let now = Instant::now();
        let untried = |n: &&Arc<Node>| !tried.iter().any(|t| Arc::ptr_eq(t, n));
        let mut cands: Vec<&Arc<Node>> = nodes
            .iter()
            .filter(untried)
            .filter(|n| n.available(now))
            .collect();
        if cands.is_empty() {
            cands = nodes
                .iter()
                .filter(untried)
                .filter(|n| n.is_healthy())
                .collect();
        }
        let best = cands.iter().map(|n| n.config.priority).min()?;
        cands.retain(|n| n.config.priority == best);
        let picked = match self.strategy {
            Strategy::RoundRobin => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                cands[i % cands.len()]
            }
            Strategy::Random => cands[rand::random_range(0..cands.len())],
            Strategy::Fifo => cands[0],
            Strategy::Weight => self.smooth_weighted(&cands),
            Strategy::Leastconn => self.least_by(&cands, |n| n.active()),
            Strategy::Leastbandwidth => self.least_by(&cands, |n| n.rate()),
            Strategy::Iphash => cands[(hash_ip(client) % cands.len() as u64) as usize],
            Strategy::Iphash1 => rendezvous(client, &cands),
        };
        Some(picked.clone())
    }

    /// A connection to `node` failed: count it toward passive health
    /// (`maxFails` / `failTimeout`), unless it is the only node, which is never
    /// benched. Returns whether this benched it.
    pub fn node_failed(&self, node: &Node) -> bool {
        if self.nodes.load().len() <= 1 {
            // Counted (metrics) like any failure, but never benched.
            node.failures.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        node.connect_failed(self.max_fails, self.fail_timeout)
    }

    /// The minimum by `key`; ties are broken in turn so equal nodes share the load.
    fn least_by<'a>(&self, cands: &[&'a Arc<Node>], key: impl Fn(&Node) -> u64) -> &'a Arc<Node> {
        let min = cands.iter().map(|n| key(n)).min().unwrap_or(0);
        let ties: Vec<&&Arc<Node>> = cands.iter().filter(|n| key(n) == min).collect();
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        ties[i % ties.len()]
    }

    /// nginx's smooth weighted round robin: add each node's weight to its current
    /// value, pick the largest, subtract the total from it.
    fn smooth_weighted<'a>(&self, cands: &[&'a Arc<Node>]) -> &'a Arc<Node> {
        let Ok(mut cur) = self.wrr.lock() else {
            return cands[0];
        };
        let total: i64 = cands.iter().map(|n| n.config.weight as i64).sum();
        let mut best = 0;
        let mut best_val = i64::MIN;
        for (i, n) in cands.iter().enumerate() {
            let c = cur.entry(n.config.addr.clone()).or_insert(0);
            *c += n.config.weight as i64;
            if *c > best_val {
                best_val = *c;
                best = i;
            }
        }
        if let Some(c) = cur.get_mut(&cands[best].config.addr) {
            *c -= total;
        }
        // Forget nodes that left, so the map does not grow with discovery churn.
        if cur.len() > cands.len() * 4 + 16 {
            cur.retain(|a, _| cands.iter().any(|n| &n.config.addr == a));
        }
        cands[best]
    }

    /// Update per-node byte rates (for `leastbandwidth`); called about once a second.
    pub fn tick(&self) {
        let Ok(mut last) = self.last_tick.lock() else {
            return;
        };
        let elapsed = last.elapsed().as_secs_f64();
        if elapsed <= 0.0 {
            return;
        }
        *last = Instant::now();
        for n in self.nodes.load().iter() {
            let total = n.bytes.load(Ordering::Relaxed);
            let prev = n.last_bytes.swap(total, Ordering::Relaxed);
            let rate = (total.saturating_sub(prev) as f64 / elapsed) as u64;
            n.rate.store(rate, Ordering::Relaxed);
        }
    }
}

/// FNV-1a then a 64-bit finaliser: stable across builds and platforms (the
/// standard library's hasher is not promised to be), and well mixed.
fn hash_bytes(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets().to_vec(),
        },
    }
}

fn hash_ip(ip: IpAddr) -> u64 {
    hash_bytes(&[&ip_bytes(ip)])
}

/// Weighted rendezvous hashing: score = -weight / ln(u), u uniform in (0,1) from
/// hash(client, node). The highest score wins.
fn rendezvous<'a>(client: IpAddr, cands: &[&'a Arc<Node>]) -> &'a Arc<Node> {
    let ip = ip_bytes(client);
    let mut best = cands[0];
    let mut best_score = f64::MIN;
    for n in cands {
        let h = hash_bytes(&[&ip, n.hash_id().as_bytes()]);
        // 53 random bits → (0, 1), never exactly 0 or 1.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -(n.config.weight as f64) / u.ln();
        if score > best_score {
            best_score = score;
            best = n;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::service::DurationStr;
    use std::net::Ipv4Addr;

    fn node(name: &str, weight: u32, priority: u32) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            addr: format!("{name}.lan:80"),
            weight,
            priority,
        }
    }

    fn balancer(strategy: Strategy, nodes: &[NodeConfig]) -> Balancer {
        let sel = SelectorConfig {
            strategy,
            max_fails: 2,
            fail_timeout: DurationStr(Duration::from_millis(50)),
        };
        Balancer::new(&sel, nodes)
    }

    fn client(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
    }

    fn pick(b: &Balancer, c: IpAddr) -> String {
        b.pick(c, &[]).unwrap().config.name.clone()
    }

    /// The nodes of `n` picks in a row for one client.
    fn picks(b: &Balancer, n: usize) -> Vec<String> {
        (0..n).map(|_| pick(b, client(1))).collect()
    }

    #[test]
    fn round_robin_cycles() {
        let b = balancer(
            Strategy::RoundRobin,
            &[node("a", 1, 0), node("b", 1, 0), node("c", 1, 0)],
        );
        assert_eq!(picks(&b, 6), ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn weight_is_proportional_and_smooth() {
        let b = balancer(
            Strategy::Weight,
            &[node("a", 5, 0), node("b", 1, 0), node("c", 1, 0)],
        );
        let seq = picks(&b, 7);
        assert_eq!(seq.iter().filter(|s| *s == "a").count(), 5);
        // Smooth: never three a's... then b c bunched; nginx's sequence is a a b a c a a.
        assert_eq!(seq, ["a", "a", "b", "a", "c", "a", "a"]);
    }

    #[test]
    fn priority_prefers_primaries_then_backups() {
        let b = balancer(
            Strategy::RoundRobin,
            &[node("backup", 1, 2), node("p1", 1, 1)],
        );
        assert_eq!(pick(&b, client(1)), "p1");
        b.nodes()[1].set_healthy(false);
        assert_eq!(pick(&b, client(1)), "backup");
        b.nodes()[0].set_healthy(false);
        assert!(b.pick(client(1), &[]).is_none());
    }

    #[test]
    fn leastconn_picks_least_busy() {
        let b = balancer(Strategy::Leastconn, &[node("a", 1, 0), node("b", 1, 0)]);
        let g1 = b.nodes()[0].acquire();
        assert_eq!(pick(&b, client(1)), "b");
        let _g2 = b.nodes()[1].acquire();
        let _g3 = b.nodes()[1].acquire();
        assert_eq!(pick(&b, client(1)), "a");
        drop(g1);
        assert_eq!(b.nodes()[0].active(), 0);
    }

    #[test]
    fn leastbandwidth_picks_quietest() {
        let b = balancer(
            Strategy::Leastbandwidth,
            &[node("a", 1, 0), node("b", 1, 0)],
        );
        b.nodes()[0]
            .byte_counter()
            .fetch_add(1_000_000, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        b.tick();
        assert!(b.nodes()[0].rate() > 0);
        assert_eq!(pick(&b, client(1)), "b");
        assert_eq!(pick(&b, client(2)), "b");
    }

    #[test]
    fn passive_health_benches_then_restores() {
        let b = balancer(Strategy::Fifo, &[node("a", 1, 0), node("b", 1, 0)]);
        let a = b.nodes()[0].clone();
        assert!(!a.connect_failed(b.max_fails, b.fail_timeout));
        assert_eq!(pick(&b, client(1)), "a");
        assert!(a.connect_failed(b.max_fails, b.fail_timeout));
        assert_eq!(pick(&b, client(1)), "b");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(pick(&b, client(1)), "a");
    }

    /// Fail-open: every node benched is not "no node"; a success unbenches.
    #[test]
    fn every_node_benched_fails_open() {
        let b = balancer(Strategy::RoundRobin, &[node("a", 1, 0), node("b", 1, 0)]);
        let (a, bb) = (b.nodes()[0].clone(), b.nodes()[1].clone());
        for n in [&a, &bb] {
            b.node_failed(n);
            assert!(b.node_failed(n), "maxFails 2 benches at the second failure");
        }
        assert!(!a.available(Instant::now()) && !bb.available(Instant::now()));
        // Both benched: both are still offered, in turn, each once per client.
        let first = b.pick(client(1), &[]).unwrap();
        let second = b.pick(client(1), std::slice::from_ref(&first)).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(b.pick(client(1), &[first.clone(), second]).is_none());
        // A node that answers is back at once, and preferred to the benched one.
        first.connect_ok();
        assert!(first.available(Instant::now()));
        for _ in 0..4 {
            assert!(Arc::ptr_eq(&b.pick(client(1), &[]).unwrap(), &first));
        }
        // Active health does not fail open.
        a.set_healthy(false);
        bb.set_healthy(false);
        assert!(b.pick(client(1), &[]).is_none());
    }

    /// A benched node with a healthy peer stays benched (passive health still
    /// works); only a lone node is never benched.
    #[test]
    fn a_lone_node_is_never_benched() {
        let one = balancer(Strategy::RoundRobin, &[node("a", 1, 0)]);
        let a = one.nodes()[0].clone();
        for _ in 0..10 {
            assert!(!one.node_failed(&a));
        }
        assert!(a.available(Instant::now()));
        let two = balancer(Strategy::Fifo, &[node("a", 1, 0), node("b", 1, 0)]);
        let a = two.nodes()[0].clone();
        two.node_failed(&a);
        assert!(two.node_failed(&a));
        assert_eq!(pick(&two, client(1)), "b");
        assert_eq!(pick(&two, client(1)), "b");
    }

    #[test]
    fn tried_nodes_are_skipped() {
        let b = balancer(Strategy::Fifo, &[node("a", 1, 0), node("b", 1, 0)]);
        let a = b.pick(client(1), &[]).unwrap();
        assert_eq!(
            b.pick(client(1), std::slice::from_ref(&a))
                .unwrap()
                .config
                .name,
            "b"
        );
        let bb = b.nodes()[1].clone();
        assert!(b.pick(client(1), &[a, bb]).is_none());
    }

    #[test]
    fn iphash_is_sticky() {
        let b = balancer(
            Strategy::Iphash,
            &[node("a", 1, 0), node("b", 1, 0), node("c", 1, 0)],
        );
        for i in 0..50 {
            assert_eq!(pick(&b, client(i)), pick(&b, client(i)));
        }
    }

    /// The consistency property: removing a node moves exactly the clients that
    /// were on it; every other client keeps its node. Adding it back restores all.
    #[test]
    fn iphash1_moves_only_the_leaving_nodes_clients() {
        let names = ["a", "b", "c", "d", "e"];
        let nodes: Vec<NodeConfig> = names.iter().map(|n| node(n, 1, 0)).collect();
        let b = balancer(Strategy::Iphash1, &nodes);
        let before: Vec<String> = (0..5000).map(|i| pick(&b, client(i))).collect();
        // Spread: every node gets a fair share (±30 %).
        for n in names {
            let count = before.iter().filter(|p| *p == n).count();
            assert!((700..1300).contains(&count), "{n}: {count}");
        }
        b.nodes()[2].set_healthy(false); // "c" leaves
        let during: Vec<String> = (0..5000).map(|i| pick(&b, client(i))).collect();
        for (x, y) in before.iter().zip(&during) {
            if x == "c" {
                assert_ne!(y, "c");
            } else {
                assert_eq!(x, y, "a client not on c moved");
            }
        }
        b.nodes()[2].set_healthy(true);
        let after: Vec<String> = (0..5000).map(|i| pick(&b, client(i))).collect();
        assert_eq!(before, after);

        // Same with the node removed from the list (discovery) rather than unhealthy.
        let without: Vec<NodeConfig> = nodes.iter().filter(|n| n.name != "c").cloned().collect();
        b.set_nodes(&without);
        let removed: Vec<String> = (0..5000).map(|i| pick(&b, client(i))).collect();
        assert_eq!(removed, during);
    }

    #[test]
    fn iphash1_respects_weights() {
        let b = balancer(Strategy::Iphash1, &[node("a", 3, 0), node("b", 1, 0)]);
        let a = (0..4000).filter(|i| pick(&b, client(*i)) == "a").count();
        assert!((2700..3300).contains(&a), "{a}");
    }

    #[test]
    fn set_nodes_keeps_state_of_remaining() {
        let b = balancer(Strategy::RoundRobin, &[node("a", 1, 0), node("b", 1, 0)]);
        let _g = b.nodes()[0].acquire();
        assert!(b.set_nodes(&[node("a", 1, 0), node("c", 1, 0)]));
        assert_eq!(b.nodes()[0].active(), 1);
        assert!(!b.set_nodes(&[node("a", 1, 0), node("c", 1, 0)]));
    }

    #[test]
    fn random_spreads() {
        let b = balancer(Strategy::Random, &[node("a", 1, 0), node("b", 1, 0)]);
        let a = (0..2000).filter(|i| pick(&b, client(*i)) == "a").count();
        assert!((800..1200).contains(&a), "{a}");
    }

    proptest::proptest! {
        /// `failTimeout` meets the clock in `connect_failed`: no accepted value
        /// (nor any larger one) panics, and the node stays benched afterwards.
        #[test]
        fn connect_failed_takes_any_fail_timeout(secs in 0u64..=crate::proxy::clock::MAX_DURATION.as_secs(), huge in proptest::num::u64::ANY) {
            for d in [Duration::from_secs(secs), Duration::from_secs(huge), Duration::MAX] {
                let n = Node::new(node("a", 1, 0));
                proptest::prop_assert!(n.connect_failed(1, d));
                if d > Duration::from_millis(1) {
                    proptest::prop_assert!(!n.available(Instant::now()));
                }
                n.connect_ok();
                proptest::prop_assert!(n.available(Instant::now()));
            }
        }
    }

    #[test]
    fn passive_health_survives_a_poisoned_lock() {
        let n = Arc::new(Node::new(node("a", 1, 0)));
        let n2 = n.clone();
        let _ = std::thread::spawn(move || {
            let _g = n2.passive.lock();
            panic!("poison the passive-health lock");
        })
        .join();
        assert!(n.passive.is_poisoned());
        // Still counted and still benching: passive health did not switch off.
        assert!(n.connect_failed(1, Duration::from_secs(60)));
        assert!(!n.available(Instant::now()));
    }
}
