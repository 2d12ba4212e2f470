//! The handover's I/O: the old master's departure and the new master's steering,
//! run by the failover driver on its heartbeat socket (see the module docs of
//! [`super`] for the sequence).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::kernel::{self, ArpQuiet, GATE_TABLE, STEER_TABLE};
use super::wire::Dropped;
use super::{ACK_WAIT, Departure, Kind, Message, RESEND, SteerAction};
use crate::failover::auth::Keyring;
use crate::failover::vip::VipController;

/// Handover datagrams dropped, by cause.
#[derive(Debug, Default)]
pub struct HandoverDrops {
    pub malformed: AtomicU64,
    pub unsigned: AtomicU64,
    pub auth_failed: AtomicU64,
}

impl HandoverDrops {
    pub fn count(&self, d: Dropped) {
        let c = match d {
            Dropped::Malformed => &self.malformed,
            Dropped::Unsigned => &self.unsigned,
            Dropped::Auth(_) => &self.auth_failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What both sides need to talk: the heartbeat socket and the group.
pub struct Link<'a> {
    pub sock: &'a UdpSocket,
    pub dests: &'a [SocketAddrV4],
    pub keys: &'a watch::Receiver<Arc<Keyring>>,
    pub iface: &'a str,
    pub node: Ipv4Addr,
    pub vip: Ipv4Addr,
    pub port: u16,
}

impl Link<'_> {
    async fn send(&self, m: &Message, to: &[SocketAddrV4]) {
        let Some(bytes) = m.encode(&self.keys.borrow()) else {
            return;
        };
        for d in to {
            if let Err(e) = self.sock.send_to(&bytes, *d).await {
                tracing::debug!(dest = %d, error = %e, "handover send failed");
            }
        }
    }

    async fn broadcast(&self, msgs: &[Message]) {
        for m in msgs {
            self.send(m, self.dests).await;
        }
    }
}

/// Remove what a crashed run may have left: both tables and the VIP on `lo`.
pub async fn clean_stale(vip: Ipv4Addr) {
    for (family, table) in [("netdev", STEER_TABLE), ("inet", GATE_TABLE)] {
        if let Err(e) = kernel::nft(&kernel::remove_script(family, table)).await {
            tracing::debug!(error = %e, "no stale handover table {family} {table} removed");
        }
    }
    if let Ok(lo) = VipController::new("lo", vip, 32).await
        && let Ok(true) = lo.unbind().await
    {
        tracing::info!(%vip, "removed the VIP from lo, left behind by an earlier run's handover");
    }
}

/// The old master, handing its connections over.
pub struct Leaving {
    dep: Departure,
    mac: [u8; 6],
    lo: VipController,
    arp: Option<ArpQuiet>,
}

/// Steps 1–3 of the handover up to (not including) releasing the VIP: gate, list,
/// ACK, VIP on `lo`. `None`: nothing to hand over or no peer took it (logged);
/// the caller then stops as before.
pub async fn begin(link: &Link<'_>) -> Option<Leaving> {
    if link.keys.borrow().is_empty() {
        tracing::warn!(
            "planned switchover without connection handover: floating_ip has no secret (the handover channel must be authenticated); connections on the VIP are cut"
        );
        return None;
    }
    let Some(mac) = kernel::own_mac(link.iface) else {
        tracing::warn!(iface = %link.iface, "planned switchover without connection handover: cannot read the MAC of {}", link.iface);
        return None;
    };
    let started = Instant::now();
    if let Err(e) = kernel::nft(&kernel::gate_script(link.vip)).await {
        tracing::warn!(error = %e, "planned switchover without connection handover: cannot install the gate");
        return None;
    }
    let flows = match kernel::flows_on(link.vip) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "planned switchover without connection handover: cannot list connections");
            remove_gate().await;
            return None;
        }
    };
    if flows.is_empty() {
        tracing::info!("planned switchover: no connection on the VIP, nothing to hand over");
        remove_gate().await;
        return None;
    }
    let mut dep = Departure::new(rand::random(), flows);
    let msgs = dep.messages(link.node, link.vip, mac);
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + ACK_WAIT;
    while !dep.acked() {
        let now = Instant::now();
        if now >= deadline {
            tracing::warn!(
                "planned switchover without connection handover: no peer acknowledged the {} connection(s) within {ACK_WAIT:?} (peer too old, handover channel down, or a different secret); connections on the VIP are cut",
                dep.flows().len()
            );
            remove_gate().await;
            return None;
        }
        link.broadcast(&msgs).await;
        let wait = (deadline - now).min(Duration::from_millis(30));
        let until = tokio::time::Instant::now() + wait;
        while let Ok(Ok((n, _))) =
            tokio::time::timeout_at(until, link.sock.recv_from(&mut buf)).await
        {
            if let Ok(m) = Message::decode(&buf[..n], &link.keys.borrow()) {
                dep.on_ack(&m);
                if dep.acked() {
                    break;
                }
            }
        }
    }
    let arp = match ArpQuiet::set(link.iface) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %e, "cannot set arp_ignore/arp_announce on {}: this node may still answer ARP for the VIP during the grace time", link.iface);
            None
        }
    };
    let lo = match VipController::new("lo", link.vip, 32).await {
        Ok(lo) => lo,
        Err(e) => {
            tracing::warn!(error = %e, "planned switchover without connection handover: cannot open rtnetlink");
            if let Some(a) = arp {
                a.restore();
            }
            remove_gate().await;
            return None;
        }
    };
    if let Err(e) = lo.bind().await {
        tracing::warn!(error = %e, "planned switchover without connection handover: cannot add the VIP to lo");
        if let Some(a) = arp {
            a.restore();
        }
        remove_gate().await;
        return None;
    }
    tracing::info!(
        connections = dep.flows().len(),
        took = ?started.elapsed(),
        "planned switchover: the peer steers this node's {} connection(s) back here until they end",
        dep.flows().len()
    );
    Some(Leaving { dep, mac, lo, arp })
}

async fn remove_gate() {
    if let Err(e) = kernel::nft(&kernel::remove_script("inet", GATE_TABLE)).await {
        tracing::warn!(error = %e, "cannot remove the handover gate");
    }
}

impl Leaving {
    /// Step 4: keep the peer informed until the connections have ended or `grace`
    /// is over, then DONE and clean up.
    pub async fn run(mut self, link: &Link<'_>, grace: Duration) {
        let end = Instant::now() + grace;
        let mut buf = [0u8; 2048];
        loop {
            tokio::time::sleep(RESEND).await;
            // Acks of later generations are not needed: the list is repeated anyway.
            while link.sock.try_recv_from(&mut buf).is_ok() {}
            match kernel::flows_on(link.vip) {
                Ok(f) => {
                    self.dep.update(f);
                }
                Err(e) => tracing::warn!(error = %e, "cannot list connections"),
            }
            if self.dep.is_empty() {
                tracing::info!("planned switchover: every handed-over connection has ended");
                break;
            }
            if Instant::now() >= end {
                tracing::warn!(
                    left = self.dep.flows().len(),
                    "planned switchover: grace time {grace:?} over, {} connection(s) still open are cut",
                    self.dep.flows().len()
                );
                break;
            }
            let msgs = self.dep.messages(link.node, link.vip, self.mac);
            link.broadcast(&msgs).await;
        }
        let done = self.dep.done(link.node, link.vip);
        for _ in 0..3 {
            link.broadcast(std::slice::from_ref(&done)).await;
        }
        if let Err(e) = self.lo.unbind().await {
            tracing::warn!(error = %e, "cannot remove the VIP from lo");
        }
        remove_gate().await;
        if let Some(a) = self.arp {
            a.restore();
        }
    }
}

/// The new master's steering, kept by the driver.
pub struct Steer {
    pub state: super::Steering,
    own_mac: Option<[u8; 6]>,
    pub drops: HandoverDrops,
}

impl Steer {
    pub fn new(iface: &str, node: Ipv4Addr, vip: Ipv4Addr) -> Steer {
        Steer {
            state: super::Steering::new(node, vip),
            own_mac: kernel::own_mac(iface),
            drops: HandoverDrops::default(),
        }
    }

    /// A `GWHO` datagram from `from`. Returns why it was dropped, if it was.
    pub async fn on_datagram(
        &mut self,
        link: &Link<'_>,
        bytes: &[u8],
        from: SocketAddr,
    ) -> Option<Dropped> {
        let m = match Message::decode(bytes, &link.keys.borrow()) {
            Ok(m) => m,
            Err(d) => {
                self.drops.count(d);
                return Some(d);
            }
        };
        let IpAddr::V4(src) = from.ip() else {
            return None;
        };
        if m.kind == Kind::Ack {
            return None; // for a departing node; this one is not leaving
        }
        let actions = self.state.on_message(Instant::now(), src, &m);
        self.apply(link, actions).await;
        None
    }

    pub async fn on_timeout(&mut self, link: &Link<'_>) {
        let actions = self.state.handle_timeout(Instant::now());
        self.apply(link, actions).await;
    }

    async fn apply(&mut self, link: &Link<'_>, actions: Vec<SteerAction>) {
        let mut ok = true;
        for a in actions {
            match a {
                SteerAction::Install { mac, flows } => {
                    let Some(own) = self.own_mac else {
                        tracing::warn!(
                            "cannot steer handed-over connections: no MAC for {}",
                            link.iface
                        );
                        ok = false;
                        continue;
                    };
                    let script = kernel::steer_script(link.iface, own, mac, link.vip, &flows);
                    match kernel::nft(&script).await {
                        Ok(()) => tracing::info!(
                            connections = flows.len(),
                            old_master = %kernel::mac_str(mac),
                            "steering {} handed-over connection(s) to the old master",
                            flows.len()
                        ),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot install the handover steering");
                            ok = false;
                        }
                    }
                }
                SteerAction::Update { add, remove } => {
                    if let Err(e) =
                        kernel::nft(&kernel::update_script(&add, &remove, link.vip)).await
                    {
                        tracing::warn!(error = %e, "cannot update the handover steering");
                        ok = false;
                    }
                }
                SteerAction::Remove { why } => {
                    match kernel::nft(&kernel::remove_script("netdev", STEER_TABLE)).await {
                        Ok(()) => tracing::info!("handover steering removed: {why}"),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot remove the handover steering ({why})")
                        }
                    }
                }
                SteerAction::Ack { to, id, generation } if ok => {
                    let ack = Message {
                        kind: Kind::Ack,
                        node: link.node,
                        vip: link.vip,
                        id,
                        generation,
                        part: 0,
                        parts: 0,
                        mac: [0; 6],
                        flows: Vec::new(),
                    };
                    link.send(&ack, &[SocketAddrV4::new(to, link.port)]).await;
                }
                SteerAction::Ack { .. } => {}
            }
        }
    }
}

impl Steer {
    /// This node stops while it steers another's connections: remove the steering
    /// (they could not outlive this node's VIP anyway).
    pub async fn stop(&mut self) {
        if self.state.active()
            && let Err(e) = kernel::nft(&kernel::remove_script("netdev", STEER_TABLE)).await
        {
            tracing::warn!(error = %e, "cannot remove the handover steering");
        }
    }
}
