//! The I/O half of the driver: [`Shell::execute`] drains the machine's
//! [`Action`]s in order and carries each out — send a heartbeat (three copies of a
//! RESIGN), bind or release the VIP (awaited in place: "release, then resign"
//! must keep its order), start gratuitous ARP, probes and echo checks (spawned,
//! answering on channels the loop listens to), publish state changes to the
//! status channel and run the notify hooks.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::FailoverStatus;
use crate::config::floating_ip::FloatingIp;
use crate::failover::arp;
use crate::failover::auth::Keyring;
use crate::failover::confirm::Confirmer;
use crate::failover::machine::{Action, Machine, PeerCheck, ProbeResult, State};
use crate::failover::probe::{self, Prober};
use crate::failover::vip::VipController;

/// The I/O half: carries out actions.
pub(super) struct Shell<'a> {
    pub(super) fip: &'a FloatingIp,
    pub(super) vip: VipController,
    pub(super) sock: &'a UdpSocket,
    pub(super) dests: Vec<SocketAddrV4>,
    pub(super) prober: Arc<Prober>,
    pub(super) confirmer: Arc<Confirmer>,
    /// How long a takeover probe asks (the ARP probe listens as long).
    pub(super) window: Duration,
    /// MACs the nodes of this group answered ARP with: a VIP claimed by one of them
    /// (a crashed node's kernel still holding it) is not a conflict.
    pub(super) group_macs: Arc<Mutex<HashMap<Ipv4Addr, pnet::util::MacAddr>>>,
    pub(super) probe_tx: mpsc::Sender<ProbeResult>,
    pub(super) confirm_tx: mpsc::Sender<(Ipv4Addr, u32)>,
    pub(super) verify_tx: mpsc::Sender<(u64, PeerCheck)>,
    pub(super) keys: watch::Receiver<Arc<Keyring>>,
    pub(super) status_tx: watch::Sender<FailoverStatus>,
    pub(super) echo_tx: watch::Sender<probe::EchoStatus>,
    /// True until the first UnbindVip has run (the crash clean-up at start).
    pub(super) started: bool,
    /// A departure serves the connections this node handed over: published with
    /// every state change ([`FailoverStatus::handover`]).
    pub(super) handing_over: bool,
}

impl Shell<'_> {
    pub(super) async fn execute(&mut self, machine: &mut Machine) {
        while let Some(action) = machine.poll_action() {
            match action {
                Action::SendHeartbeat(hb) => {
                    let bytes = self.keys.borrow().encode_heartbeat(&hb);
                    // A resign is the last word: repeat it against loss.
                    let copies = if hb.state == crate::failover::wire::WireState::Resign {
                        3
                    } else {
                        1
                    };
                    let counters = crate::failover::counters::global();
                    for _ in 0..copies {
                        for d in &self.dests {
                            match self.sock.send_to(&bytes, *d).await {
                                Ok(_) => counters.heartbeats_sent.fetch_add(1, Ordering::Relaxed),
                                Err(e) => {
                                    tracing::debug!(dest = %d, error = %e, "heartbeat send failed");
                                    counters
                                        .heartbeat_send_errors
                                        .fetch_add(1, Ordering::Relaxed)
                                }
                            };
                        }
                    }
                }
                Action::BindVip => match self.vip.bind().await {
                    Ok(true) => {
                        tracing::info!(vip = %self.fip.vip, iface = %self.fip.interface, "VIP bound")
                    }
                    Ok(false) => tracing::debug!("VIP already bound"),
                    Err(e) => tracing::error!(error = %e, "binding the VIP failed"),
                },
                Action::UnbindVip => {
                    let first = std::mem::replace(&mut self.started, false);
                    match self.vip.unbind().await {
                        Ok(true) if first => {
                            tracing::info!(vip = %self.fip.vip, "removed a VIP left behind by an earlier run")
                        }
                        Ok(true) => tracing::info!(vip = %self.fip.vip, "VIP released"),
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "releasing the VIP failed"),
                    }
                }
                Action::Garp | Action::GarpRefresh => {
                    let (count, interval) = if matches!(action, Action::Garp) {
                        (self.fip.garp_count, self.fip.garp_interval)
                    } else {
                        (1, Duration::ZERO)
                    };
                    let iface = self.fip.interface.clone();
                    let vip = self.fip.vip;
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = arp::send_garp(&iface, vip, count, interval) {
                            tracing::warn!(error = %e, "gratuitous ARP failed");
                        }
                    });
                }
                Action::Probe { id, peer, vip } => {
                    let prober = self.prober.clone();
                    let confirmer = self.confirmer.clone();
                    let tx = self.probe_tx.clone();
                    let arp = vip.then(|| self.arp_probe(peer));
                    tokio::spawn(async move {
                        let peer_check = async {
                            match peer {
                                Some(p) => confirmer.check(p).await,
                                None => PeerCheck::Unknown,
                            }
                        };
                        let vip_check = async {
                            match arp {
                                Some(task) => task.await.unwrap_or(None),
                                None => None,
                            }
                        };
                        let (peer, targets_ok, vip_in_use) =
                            tokio::join!(peer_check, prober.ping_targets(), vip_check);
                        let _ = tx
                            .send(ProbeResult {
                                id,
                                peer,
                                targets_ok,
                                vip_in_use,
                            })
                            .await;
                    });
                }
                Action::Verify { id, peer } => {
                    let prober = self.prober.clone();
                    let tx = self.verify_tx.clone();
                    tokio::spawn(async move {
                        let check = prober.check_peer(peer).await;
                        let _ = tx.send((id, check)).await;
                    });
                }
                Action::ConfirmEpoch { peer } => {
                    let prober = self.prober.clone();
                    let tx = self.confirm_tx.clone();
                    tokio::spawn(async move {
                        if let Some(epoch) = prober.confirm_epoch(peer).await {
                            let _ = tx.send((peer, epoch)).await;
                        }
                    });
                }
                Action::StateChanged { from, to, reason } => {
                    tracing::info!(from = %from, to = %to, reason = %reason, "state change");
                    crate::failover::counters::global().transition(from, to, &reason);
                    let _ = self.echo_tx.send(machine.echo_status());
                    let standby = machine.is_standby();
                    let handover = self.handing_over;
                    self.status_tx.send_modify(|s| {
                        s.transition(to, &reason);
                        s.standby = standby;
                        s.handover = handover;
                    });
                    self.notify(from, to, &reason);
                }
                Action::StandbyChanged { standby, reason } => {
                    tracing::info!(standby, state = %machine.state(), reason = %reason, "standby {}", if standby { "on" } else { "off" });
                    let _ = self.echo_tx.send(machine.echo_status());
                    let state = machine.state();
                    let on = if standby { "on" } else { "off" };
                    self.status_tx.send_modify(|s| {
                        s.transition(state, &format!("standby {on}: {reason}"));
                        s.reason = reason;
                        s.standby = standby;
                    });
                }
            }
        }
    }

    /// Start the RFC 5227 ARP probe of the VIP (see [`arp::probe_vip`]); the task
    /// ends with the MAC of a host outside this group that claims it, if any.
    fn arp_probe(&self, peer: Option<Ipv4Addr>) -> tokio::task::JoinHandle<Option<String>> {
        let iface = self.fip.interface.clone();
        let vip = self.fip.vip;
        // The peer is asked for its own MAC in the same breath, so that its kernel
        // answering for the VIP (a crashed daemon's leftover, or a live master seen
        // from a FAULT node) is recognised as one of ours. Health probes name no
        // peer: the configured one is asked then.
        let ask = peer.or(self.fip.peer_ip).map(|p| (self.fip.local_ip, p));
        let window = self.window;
        let group = self.group_macs.clone();
        tokio::task::spawn_blocking(move || {
            let found = match arp::probe_vip(&iface, vip, ask, 3, window) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "ARP probe of the VIP failed: binding without it");
                    return None;
                }
            };
            let mut group = group.lock().unwrap_or_else(|p| p.into_inner());
            if let (Some((_, p)), Some(mac)) = (ask, found.peer_mac) {
                group.insert(p, mac);
            }
            found
                .vip_claimed_by
                .iter()
                .find(|m| !group.values().any(|g| g == *m))
                .map(|m| m.to_string())
        })
    }

    /// Run the configured notify commands (keepalived's notify scripts), without
    /// waiting for them: a slow hook must not delay failover.
    fn notify(&self, from: State, to: State, reason: &str) {
        let n = &self.fip.notify;
        let own = match to {
            State::Master => n.master.as_ref(),
            State::Backup => n.backup.as_ref(),
            State::Fault => n.fault.as_ref(),
            _ => None,
        };
        for cmd in own.into_iter().chain(n.any.as_ref()) {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c")
                .arg(cmd)
                .env("GATEWAY_STATE", to.to_string())
                .env("GATEWAY_PREVIOUS_STATE", from.to_string())
                .env("GATEWAY_REASON", reason)
                .env("GATEWAY_VIP", self.fip.vip.to_string())
                .env("GATEWAY_INTERFACE", &self.fip.interface)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(false);
            let cmd = cmd.clone();
            match c.spawn() {
                Ok(mut child) => {
                    tokio::spawn(async move {
                        match child.wait().await {
                            Ok(s) if s.success() => {
                                tracing::debug!(command = %cmd, "notify command done")
                            }
                            Ok(s) => {
                                tracing::warn!(command = %cmd, status = %s, "notify command failed")
                            }
                            Err(e) => {
                                tracing::warn!(command = %cmd, error = %e, "notify command failed")
                            }
                        }
                    });
                }
                Err(e) => tracing::warn!(command = %cmd, error = %e, "cannot run notify command"),
            }
        }
    }
}
