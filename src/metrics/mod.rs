//! Prometheus metrics: what the services and the failover thread count, read at
//! scrape time.
//!
//! Nothing here keeps a second set of counters. The proxy already counts in
//! atomics (`proxy::stats`, `proxy::balance::Node`) and the failover thread in
//! `failover::counters`; a [`Collector`] registered with `prometheus-client`
//! reads them when Prometheus asks and writes the text format (0.0.4) through
//! the crate's encoder. The services are reached through a
//! [`ServiceView`](crate::proxy::ServiceView), which every reload replaces, so a
//! scrape always sees the services running now.
//!
//! Names follow GOST (`gost_*`, with its `host` and `service` labels, so GOST's
//! Grafana dashboard works) where the concept is the same, and `gateway_*` for
//! what GOST does not have: failover, per-node health and connect latency. No
//! label ever names a client: one series per client would grow without bound.
//! The list, with example alert rules, is in docs/operations.md ("Metrics").
//!
//! [`server`] serves it over HTTP (GOST's `metrics: {addr, path, auth}`).

pub mod server;

use std::net::Ipv4Addr;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::failover::counters::{self, FailoverCounters};
use crate::failover::driver::FailoverStatus;
use crate::proxy::ServiceView;
use crate::proxy::stats::HistogramCounts;

pub use server::{MetricsError, MetricsServer};

/// What a scrape reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The running services.
    pub services: ServiceView,
    /// The failover status, when `floating_ip` is enabled.
    pub failover: Option<watch::Receiver<FailoverStatus>>,
    /// GOST's `host` label: this machine's host name.
    pub host: String,
}

impl Sources {
    pub fn new(services: ServiceView, failover: Option<watch::Receiver<FailoverStatus>>) -> Self {
        Sources {
            services,
            failover,
            host: host_name(),
        }
    }
}

/// The host name, as GOST's `host` label has it (empty if unknown).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A registry holding the collector over `sources`.
pub fn registry(sources: Sources) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(GatewayCollector(sources)));
    r
}

/// Encode every metric in the Prometheus text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Debug)]
struct GatewayCollector(Sources);

/// A label set as the encoder takes it.
type Labels<'a> = [(&'static str, &'a str)];

/// One metric family: its descriptor, then its series as they come.
struct Family<'e> {
    enc: MetricEncoder<'e>,
    kind: MetricType,
}

impl<'e> Family<'e> {
    fn new(
        enc: &'e mut DescriptorEncoder<'_>,
        name: &'static str,
        help: &str,
        kind: MetricType,
    ) -> Result<Self, std::fmt::Error> {
        Ok(Family {
            enc: enc.encode_descriptor(name, help, None, kind)?,
            kind,
        })
    }

    fn value(&mut self, labels: &Labels<'_>, v: u64) -> Result<(), std::fmt::Error> {
        let mut e = self.enc.encode_family(&labels)?;
        match self.kind {
            MetricType::Counter => e.encode_counter::<NoLabelSet, _, u64>(&v, None),
            _ => e.encode_gauge(&i64::try_from(v).unwrap_or(i64::MAX)),
        }
    }

    fn histogram(
        &mut self,
        labels: &Labels<'_>,
        h: &HistogramCounts,
    ) -> Result<(), std::fmt::Error> {
        let mut e = self.enc.encode_family(&labels)?;
        e.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
    }
}

impl Collector for GatewayCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_services(&mut enc)?;
        if let Some(status) = &self.0.failover {
            let st = status.borrow().clone();
            encode_failover(&mut enc, &st, counters::global())?;
        }
        Ok(())
    }
}

impl GatewayCollector {
    fn encode_services(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge, Histogram};
        let list = self.0.services.services();
        let host = self.0.host.as_str();
        let snaps: Vec<_> = list.iter().map(|s| (s, s.stats.snapshot())).collect();
        let svc = |name| [("host", host), ("service", name)];

        Family::new(enc, "gost_services", "Current number of services", Gauge)?
            .value(&[("host", host)], list.len() as u64)?;

        type Pick = fn(&crate::proxy::stats::ServiceCounts) -> u64;
        let gost: [(&str, &str, MetricType, Pick); 5] = [
            (
                "gost_service_requests",
                "Total number of requests (connections and UDP sessions)",
                Counter,
                |c| c.accepted,
            ),
            (
                "gost_service_requests_in_flight",
                "Current in-flight requests",
                Gauge,
                |c| c.active,
            ),
            (
                "gost_service_transfer_input_bytes",
                "Total service input data transfer size in bytes (from clients)",
                Counter,
                |c| c.bytes_in,
            ),
            (
                "gost_service_transfer_output_bytes",
                "Total service output data transfer size in bytes (to clients)",
                Counter,
                |c| c.bytes_out,
            ),
            (
                "gost_service_handler_errors",
                "Total service handler errors (connections ended by an error, or with no node to serve them)",
                Counter,
                |c| c.errors + c.no_node,
            ),
        ];
        for (name, help, kind, pick) in gost {
            let mut f = Family::new(enc, name, help, kind)?;
            for (s, c) in &snaps {
                f.value(&svc(&s.name), pick(c))?;
            }
        }
        let mut f = Family::new(
            enc,
            "gost_service_request_duration_seconds",
            "Distribution of request latencies (how long connections and UDP sessions lasted)",
            Histogram,
        )?;
        for s in list.iter() {
            f.histogram(&svc(&s.name), &s.stats.duration.snapshot())?;
        }
        // GOST's chain errors: a node of a chain that failed to connect (or to
        // pass the connection on), per chain and node; and with `node=""` the
        // connections the chain as a whole could not carry (no node of a hop left).
        let chains = crate::proxy::chain::Chain::running();
        let mut f = Family::new(enc, "gost_chain_errors", "Total chain errors", Counter)?;
        for c in &chains {
            f.value(
                &[("host", host), ("chain", c.name()), ("node", "")],
                c.errors(),
            )?;
            for hop in (0..).map_while(|h| c.hop_balancer(h)) {
                for n in hop.nodes().iter() {
                    f.value(
                        &[("host", host), ("chain", c.name()), ("node", n.label())],
                        n.failures(),
                    )?;
                }
            }
        }

        // What GOST lumps together or lacks, per service, by outcome.
        let mut f = Family::new(
            enc,
            "gateway_service_connections_closed",
            "Connections (and UDP sessions) ended, by outcome",
            Counter,
        )?;
        for (s, c) in &snaps {
            for (outcome, v) in [
                ("completed", c.completed),
                ("error", c.errors),
                ("idle_timeout", c.idle_closed),
                ("no_node", c.no_node),
                ("cut", c.killed),
            ] {
                f.value(&[("service", s.name.as_str()), ("outcome", outcome)], v)?;
            }
        }
        let mut f = Family::new(
            enc,
            "gateway_service_connections_refused",
            "Connections closed at accept, by reason",
            Counter,
        )?;
        for (s, c) in &snaps {
            for (reason, v) in [("denied", c.denied), ("max_connections", c.over_limit)] {
                f.value(&[("service", s.name.as_str()), ("reason", reason)], v)?;
            }
        }
        let mut f = Family::new(
            enc,
            "gateway_service_connect_failures",
            "Single connection attempts to nodes that failed",
            Counter,
        )?;
        for (s, c) in &snaps {
            f.value(&[("service", s.name.as_str())], c.connect_failures)?;
        }
        let mut f = Family::new(
            enc,
            "gateway_service_udp_datagrams",
            "UDP datagrams, by direction (in: from clients, out: to clients, dropped)",
            Counter,
        )?;
        for (s, c) in snaps
            .iter()
            .filter(|(_, c)| c.udp_in + c.udp_out + c.udp_dropped > 0)
        {
            for (dir, v) in [
                ("in", c.udp_in),
                ("out", c.udp_out),
                ("dropped", c.udp_dropped),
            ] {
                f.value(&[("service", s.name.as_str()), ("direction", dir)], v)?;
            }
        }
        let mut f = Family::new(
            enc,
            "gateway_handler_requests",
            "HTTP requests and SOCKS commands received by proxy handlers",
            Counter,
        )?;
        let handlers: Vec<_> = list
            .iter()
            .filter_map(|s| {
                s.handler_stats
                    .as_ref()
                    .map(|h| (s.name.as_str(), h.snapshot()))
            })
            .collect();
        for (name, h) in &handlers {
            f.value(&[("service", *name)], h.requests)?;
        }
        let mut f = Family::new(
            enc,
            "gateway_handler_connections_closed",
            "Proxy handler connections ended, by outcome",
            Counter,
        )?;
        for (name, h) in &handlers {
            for (outcome, v) in [
                ("completed", h.completed),
                ("bad_request", h.bad_request),
                ("handshake_timeout", h.handshake_timeout),
                ("auth_failed", h.auth_failed),
                ("target_failed", h.target_failed),
                ("upstream_error", h.upstream_error),
                ("unsupported", h.unsupported),
                ("client_error", h.client_error),
            ] {
                f.value(&[("service", *name), ("outcome", outcome)], v)?;
            }
        }
        self.encode_nodes(enc)
    }

    fn encode_nodes(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge, Histogram};
        let list = self.0.services.services();
        let now = std::time::Instant::now();
        let nodes: Vec<(&str, std::sync::Arc<crate::proxy::balance::Node>)> = list
            .iter()
            .filter_map(|s| s.balancer.as_ref().map(|b| (s.name.as_str(), b.nodes())))
            .flat_map(|(name, ns)| ns.iter().map(|n| (name, n.clone())).collect::<Vec<_>>())
            .collect();
        let labels: Vec<[(&str, &str); 2]> = nodes
            .iter()
            .map(|(s, n)| [("service", *s), ("node", n.label())])
            .collect();
        type Pick = fn(&crate::proxy::balance::Node, std::time::Instant) -> u64;
        let families: [(&str, &str, MetricType, Pick); 6] = [
            (
                "gateway_node_up",
                "1 if the node may get traffic now (healthy, and not benched after failed connects)",
                Gauge,
                |n, now| u64::from(n.available(now)),
            ),
            (
                "gateway_node_healthy",
                "1 if the node passes its active health check (1 without one)",
                Gauge,
                |n, _| u64::from(n.is_healthy()),
            ),
            (
                "gateway_node_connections_in_flight",
                "Connections (and UDP sessions) to the node now",
                Gauge,
                |n, _| n.active(),
            ),
            (
                "gateway_node_connections",
                "Connections (and UDP sessions) handed to the node",
                Counter,
                |n, _| n.total(),
            ),
            (
                "gateway_node_transfer_bytes",
                "Bytes moved to and from the node, both directions",
                Counter,
                |n, _| n.bytes(),
            ),
            (
                "gateway_node_connect_failures",
                "Connection attempts to the node that failed",
                Counter,
                |n, _| n.failures(),
            ),
        ];
        for (name, help, kind, pick) in families {
            let mut f = Family::new(enc, name, help, kind)?;
            for ((_, n), l) in nodes.iter().zip(&labels) {
                f.value(l, pick(n, now))?;
            }
        }
        let mut f = Family::new(
            enc,
            "gateway_node_connect_duration_seconds",
            "Distribution of the time connecting to a node took (successful connects)",
            Histogram,
        )?;
        for ((_, n), l) in nodes.iter().zip(&labels) {
            f.histogram(l, &n.connect_time.snapshot())?;
        }
        Ok(())
    }
}

/// Whether this host holds `vip` now, asked of the kernel: the truth the "two
/// holders" alert needs, whatever the state machine believes.
fn vip_held(vip: Ipv4Addr) -> bool {
    crate::net::Interfaces::current().is_ok_and(|i| i.find(vip).is_some())
}

fn encode_failover(
    enc: &mut DescriptorEncoder,
    st: &FailoverStatus,
    c: &FailoverCounters,
) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    let vip = st.vip.to_string();
    Family::new(
        enc,
        "gateway_vip_held",
        "1 if this node holds the floating IP now (read from the interface)",
        Gauge,
    )?
    .value(&[("vip", vip.as_str())], u64::from(vip_held(st.vip)))?;
    let mut f = Family::new(
        enc,
        "gateway_failover_state",
        "1 for the failover state this node is in",
        Gauge,
    )?;
    for s in counters::STATES {
        f.value(
            &[("state", counters::state_name(s))],
            u64::from(s == st.state),
        )?;
    }
    let mut f = Family::new(
        enc,
        "gateway_failover_transitions",
        "State changes, by from, to and kind of reason",
        Counter,
    )?;
    for (t, n) in c.transitions() {
        f.value(&[("from", t.from), ("to", t.to), ("reason", t.reason)], n)?;
    }
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let since = (st.since.duration_since(std::time::UNIX_EPOCH)).map_or(0, |d| d.as_secs());
    Family::new(
        enc,
        "gateway_failover_state_since_timestamp_seconds",
        "Unix time of the last change of state or standby",
        Gauge,
    )?
    .value(&[], since)?;
    Family::new(
        enc,
        "gateway_failover_standby",
        "1 while an operator keeps this node in standby (it never takes the VIP)",
        Gauge,
    )?
    .value(&[], u64::from(st.standby))?;
    let peers = st.peers.get();
    let names: Vec<String> = peers.iter().map(|p| p.node.to_string()).collect();
    let mut f = Family::new(
        enc,
        "gateway_failover_peer_last_heard_seconds",
        "Seconds since the last heartbeat of each peer of the group",
        Gauge,
    )?;
    for (p, name) in peers.iter().zip(&names) {
        f.value(&[("peer", name.as_str())], p.last_heard.elapsed().as_secs())?;
    }
    Family::new(
        enc,
        "gateway_heartbeats_sent",
        "Heartbeat datagrams sent (each destination counts)",
        Counter,
    )?
    .value(&[], load(&c.heartbeats_sent))?;
    Family::new(
        enc,
        "gateway_heartbeat_send_errors",
        "Heartbeat datagrams the kernel refused to send",
        Counter,
    )?
    .value(&[], load(&c.heartbeat_send_errors))?;
    let m = c.machine();
    Family::new(
        enc,
        "gateway_heartbeats_received",
        "Heartbeats from peers accepted by the election",
        Counter,
    )?
    .value(&[], m.received)?;
    let d = &c.drops;
    let mut f = Family::new(
        enc,
        "gateway_heartbeats_rejected",
        "Heartbeat datagrams dropped, by reason",
        Counter,
    )?;
    for (reason, v) in [
        ("short", load(&d.short)),
        ("magic", load(&d.magic)),
        ("version", load(&d.version)),
        ("state", load(&d.state)),
        ("auth_length", load(&d.auth)),
        ("unsigned", load(&d.unsigned)),
        ("unknown_key", load(&d.unknown_key)),
        ("bad_mac", load(&d.bad_mac)),
        ("auth_type", load(&d.auth_type)),
        ("stale", m.stale),
        ("old_epoch", m.old_epoch),
        ("seq_jump", m.seq_jump),
        ("spoofed", m.spoofed),
        ("table_full", m.table_full),
        ("unconfirmed", m.unconfirmed),
        ("other_group", m.other_group),
    ] {
        f.value(&[("reason", reason)], v)?;
    }
    Family::new(
        enc,
        "gateway_garp_sent",
        "Gratuitous ARP frames sent",
        Counter,
    )?
    .value(&[], load(&c.garp_sent))?;
    Ok(())
}
