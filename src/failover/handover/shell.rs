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
use super::leave::{Leave, LeaveAction};
use super::wire::Dropped;
use super::{Kind, Message, SteerAction};
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

/// The old master, handing its connections over: a [`Leave`] and the kernel
/// state it put in place (the gate; once handed over, the VIP on `lo` and quiet
/// ARP). The driver feeds it events; each returns what became of it.
pub struct Leaving {
    leave: Leave,
    lo: Option<VipController>,
    arp: Option<ArpQuiet>,
}

/// What a [`Leaving`] event came to, for the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing changed for the driver.
    Pending,
    /// The peer steers the connections and the VIP is on `lo`: release the VIP
    /// from the LAN interface and resign now.
    Handed,
    /// No handover: the gate is gone, leave the ordinary way (connections cut).
    Aborted,
    /// The departure is over: DONE sent, the VIP off `lo`, the gate gone.
    Finished,
}

/// Step 1 and the start of step 2: gate, list, the first FLOWS. `None`: no
/// secret, no MAC, a kernel error or no connection on the VIP (logged); the
/// caller then leaves the ordinary way. `grace` counts from the peer's ACK.
pub async fn start(link: &Link<'_>, grace: Duration) -> Option<Leaving> {
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
    let (leave, first) = Leave::new(
        Instant::now(),
        rand::random(),
        flows,
        grace,
        (link.node, link.vip, mac),
    );
    let mut leaving = Leaving {
        leave,
        lo: None,
        arp: None,
    };
    leaving.apply(link, first).await;
    Some(leaving)
}

async fn remove_gate() {
    if let Err(e) = kernel::nft(&kernel::remove_script("inet", GATE_TABLE)).await {
        tracing::warn!(error = %e, "cannot remove the handover gate");
    }
}

impl Leaving {
    pub fn leave(&self) -> &Leave {
        &self.leave
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.leave.next_timeout()
    }

    pub async fn on_timeout(&mut self, link: &Link<'_>) -> Outcome {
        let a = self.leave.handle_timeout(Instant::now());
        self.apply(link, a).await
    }

    /// An authenticated handover message (an ACK, for this side).
    pub async fn on_message(&mut self, link: &Link<'_>, from: Ipv4Addr, m: &Message) -> Outcome {
        let a = self.leave.on_message(Instant::now(), from, m);
        self.apply(link, a).await
    }

    /// Whether the steering peer is a live BACKUP or MASTER (see [`Leave::on_peer`]).
    pub async fn on_peer(&mut self, link: &Link<'_>, alive: bool) -> Outcome {
        let a = self.leave.on_peer(Instant::now(), alive);
        self.apply(link, a).await
    }

    pub async fn on_master(&mut self, link: &Link<'_>, master: bool) -> Outcome {
        let a = self.leave.on_master(master);
        self.apply(link, a).await
    }

    /// See [`Leave::on_active`].
    pub async fn on_active(
        &mut self,
        link: &Link<'_>,
        force: bool,
    ) -> Result<Outcome, (usize, Ipv4Addr)> {
        let a = self.leave.on_active(force)?;
        Ok(self.apply(link, a).await)
    }

    pub async fn interrupt(&mut self, link: &Link<'_>, why: &str) -> Outcome {
        let a = self.leave.interrupt(why);
        self.apply(link, a).await
    }

    /// Carry the actions out, in order; [`LeaveAction::List`] feeds the
    /// machine again.
    async fn apply(&mut self, link: &Link<'_>, actions: Vec<LeaveAction>) -> Outcome {
        let mut queue = std::collections::VecDeque::from(actions);
        let mut outcome = Outcome::Pending;
        while let Some(a) = queue.pop_front() {
            match a {
                LeaveAction::Send(msgs) => link.broadcast(&msgs).await,
                LeaveAction::List => match kernel::flows_on(link.vip) {
                    Ok(f) => queue.extend(self.leave.on_flows(Instant::now(), f)),
                    // Keep the last list: it goes out again at the next tick.
                    Err(e) => tracing::warn!(error = %e, "cannot list connections"),
                },
                LeaveAction::Handed { peer } => {
                    outcome = match self.keep_on_lo(link).await {
                        Ok(()) => {
                            tracing::info!(
                                connections = self.leave.left(),
                                %peer,
                                "planned switchover: peer {peer} steers this node's {} connection(s) back here until they end",
                                self.leave.left()
                            );
                            Outcome::Handed
                        }
                        Err(why) => {
                            tracing::warn!("planned switchover without connection handover: {why}");
                            // The peer installed its steering: tell it to remove it.
                            queue.extend(self.leave.interrupt(&why));
                            Outcome::Aborted
                        }
                    };
                }
                LeaveAction::Abort { why } => {
                    tracing::warn!(
                        "planned switchover without connection handover: {why}; connections on the VIP are cut"
                    );
                    remove_gate().await;
                    outcome = Outcome::Aborted;
                }
                LeaveAction::Finish { done, why, left } => {
                    if left == 0 {
                        tracing::info!("planned switchover: {why}");
                    } else {
                        tracing::warn!(left, "planned switchover: {why}");
                    }
                    for _ in 0..3 {
                        link.broadcast(std::slice::from_ref(&done)).await;
                    }
                    self.clean_up().await;
                    if outcome == Outcome::Pending {
                        outcome = Outcome::Finished;
                    }
                }
            }
        }
        outcome
    }

    /// Step 3's first half: ARP quiet, the VIP on `lo` (an error says why not).
    async fn keep_on_lo(&mut self, link: &Link<'_>) -> Result<(), String> {
        self.arp = match ArpQuiet::set(link.iface) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "cannot set arp_ignore/arp_announce on {}: this node may still answer ARP for the VIP during the grace time", link.iface);
                None
            }
        };
        let lo = VipController::new("lo", link.vip, 32)
            .await
            .map_err(|e| format!("cannot open rtnetlink: {e}"))?;
        lo.bind()
            .await
            .map_err(|e| format!("cannot add the VIP to lo: {e}"))?;
        self.lo = Some(lo);
        Ok(())
    }

    /// Whatever this departure put in the kernel goes.
    async fn clean_up(&mut self) {
        if let Some(lo) = self.lo.take()
            && let Err(e) = lo.unbind().await
        {
            tracing::warn!(error = %e, "cannot remove the VIP from lo");
        }
        remove_gate().await;
        if let Some(a) = self.arp.take() {
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

    /// A `GWHO` datagram from `from`: FLOWS and DONE are for this side; an ACK is
    /// for a departure of this node and is returned with its sender. `Err`: why
    /// it was dropped (counted).
    pub async fn on_datagram(
        &mut self,
        link: &Link<'_>,
        bytes: &[u8],
        from: SocketAddr,
    ) -> Result<Option<(Ipv4Addr, Message)>, Dropped> {
        let m = match Message::decode(bytes, &link.keys.borrow()) {
            Ok(m) => m,
            Err(d) => {
                self.drops.count(d);
                return Err(d);
            }
        };
        let IpAddr::V4(src) = from.ip() else {
            return Ok(None);
        };
        if m.kind == Kind::Ack {
            return Ok(Some((src, m)));
        }
        let actions = self.state.on_message(Instant::now(), src, &m);
        self.apply(link, actions).await;
        Ok(None)
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
                    let ack = Message::control(Kind::Ack, link.node, link.vip, id, generation);
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
