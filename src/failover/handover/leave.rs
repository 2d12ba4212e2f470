//! The old master's departure, as a pure state machine driven with `now`.
//!
//! A departure starts once the gate is in and the connections on the VIP are
//! listed (the shell does both; see [`super::shell`]). From then on:
//!
//! ```text
//!            ACK of this handover          last connection ended / grace over /
//!  Waiting ─────────────────────────▶ Serving ─── the peer gone / interrupted ───▶ Over
//!     │    (LeaveAction::Handed)                  (LeaveAction::Finish: DONE,
//!     │                                            VIP off lo, gate removed)
//!     └── no ACK within ACK_WAIT / no longer MASTER / interrupted ─────────────▶ Over
//!         (LeaveAction::Abort: gate removed, the plain switchover: connections cut)
//! ```
//!
//! * **Waiting**: the FLOWS list goes out every [`ACK_RESEND`] until an ACK of
//!   this handover id arrives from the node it names, or [`ACK_WAIT`] passes.
//! * **Serving**: the VIP is on `lo` here and the peer steers the flows back. Every
//!   [`RESEND`] the shell lists the connections again ([`LeaveAction::List`],
//!   answered with [`Leave::on_flows`]); the list goes out again (its keep-alive;
//!   a new generation when some ended). It ends when the list is empty, at the
//!   grace time (counted from the ACK), when the steering peer is no longer a
//!   live BACKUP or MASTER ([`Leave::on_peer`]: its steering is gone with it, so
//!   the connections are lost anyway), or when the owner interrupts it
//!   ([`Leave::interrupt`]: an operator's `active?force=true`).
//!
//! The same machine serves both ways out: SIGTERM (the process exits after
//! [`LeaveAction::Finish`]) and `POST /failover/standby` (the node stays, as a
//! BACKUP in standby). The driver decides what the node does around it; this
//! module only decides what the departure does.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::{ACK_WAIT, Departure, Flow, Kind, Message, RESEND};

/// How often the list is repeated while no ACK has come.
pub const ACK_RESEND: Duration = Duration::from_millis(30);

/// What the shell must do for a [`Leave`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveAction {
    /// Send these messages to the group.
    Send(Vec<Message>),
    /// List the established connections on the VIP and report them with
    /// [`Leave::on_flows`].
    List,
    /// `peer` installed the steering: keep the VIP on `lo` (ARP quiet), then
    /// release it from the LAN interface and resign as usual.
    Handed { peer: Ipv4Addr },
    /// No handover after all: remove the gate and leave the ordinary way (the
    /// connections on the VIP are cut). `why` is for the log line.
    Abort { why: String },
    /// The end: send `done` (repeated against loss), remove the VIP from `lo` and
    /// the gate. `left` connections were still open (they are cut).
    Finish {
        done: Message,
        why: String,
        left: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting { until: Instant, resend: Instant },
    Serving { end: Instant, next: Instant },
    Over,
}

/// One departure (see the module docs).
#[derive(Debug)]
pub struct Leave {
    dep: Departure,
    node: Ipv4Addr,
    vip: Ipv4Addr,
    mac: [u8; 6],
    grace: Duration,
    phase: Phase,
    peer: Option<Ipv4Addr>,
}

impl Leave {
    /// A departure of `flows` (not empty: with none there is nothing to hand
    /// over) starting at `now`, serving them for at most `grace` after the ACK.
    /// The first list goes out at once.
    pub fn new(
        now: Instant,
        id: u32,
        flows: BTreeSet<Flow>,
        grace: Duration,
        (node, vip, mac): (Ipv4Addr, Ipv4Addr, [u8; 6]),
    ) -> (Leave, Vec<LeaveAction>) {
        let leave = Leave {
            dep: Departure::new(id, flows),
            node,
            vip,
            mac,
            grace,
            phase: Phase::Waiting {
                until: now + ACK_WAIT,
                resend: now + ACK_RESEND,
            },
            peer: None,
        };
        let first = vec![LeaveAction::Send(leave.list())];
        (leave, first)
    }

    fn list(&self) -> Vec<Message> {
        self.dep.messages(self.node, self.vip, self.mac)
    }

    /// The connections handed over that are still open (last listed).
    pub fn left(&self) -> usize {
        self.dep.flows().len()
    }

    /// The node that steers the connections, once it acknowledged.
    pub fn peer(&self) -> Option<Ipv4Addr> {
        self.peer
    }

    /// Waiting for the peer's ACK.
    pub fn waiting(&self) -> bool {
        matches!(self.phase, Phase::Waiting { .. })
    }

    /// Handed over: this node serves its connections through the peer.
    pub fn serving(&self) -> bool {
        matches!(self.phase, Phase::Serving { .. })
    }

    pub fn is_over(&self) -> bool {
        self.phase == Phase::Over
    }

    /// When the grace time ends (while serving).
    pub fn ends_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Serving { end, .. } => Some(end),
            _ => None,
        }
    }

    /// The next deadline: a resend, the end of the ACK wait, the next listing.
    pub fn next_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { until, resend } => Some(until.min(resend)),
            Phase::Serving { end, next } => Some(end.min(next)),
            Phase::Over => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Vec<LeaveAction> {
        match self.phase {
            Phase::Waiting { until, .. } if now >= until => self.abort(format!(
                "no peer acknowledged the {} connection(s) within {ACK_WAIT:?} (peer too old, handover channel down, or a different secret)",
                self.left()
            )),
            Phase::Waiting { until, resend } if now >= resend => {
                self.phase = Phase::Waiting {
                    until,
                    resend: now + ACK_RESEND,
                };
                vec![LeaveAction::Send(self.list())]
            }
            Phase::Serving { end, .. } if now >= end => self.finish(format!(
                "grace time {:?} over, {} connection(s) still open are cut",
                self.grace,
                self.left()
            )),
            Phase::Serving { end, next } if now >= next => {
                // The list goes out once the shell has read it again.
                self.phase = Phase::Serving {
                    end,
                    next: now + RESEND,
                };
                vec![LeaveAction::List]
            }
            _ => Vec::new(),
        }
    }

    /// The connections on the VIP now (the answer to [`LeaveAction::List`]).
    /// Connections only end while serving: the gate refuses new ones.
    pub fn on_flows(&mut self, _now: Instant, flows: BTreeSet<Flow>) -> Vec<LeaveAction> {
        if !self.serving() {
            return Vec::new();
        }
        self.dep.update(flows);
        if self.dep.is_empty() {
            return self.finish("every handed-over connection has ended".to_string());
        }
        vec![LeaveAction::Send(self.list())]
    }

    /// An authenticated handover message from UDP source `from`: an ACK of this
    /// handover, from the node it names, hands the connections over.
    pub fn on_message(&mut self, now: Instant, from: Ipv4Addr, m: &Message) -> Vec<LeaveAction> {
        if m.kind != Kind::Ack || m.node != from || m.vip != self.vip || from == self.node {
            return Vec::new();
        }
        self.dep.on_ack(m);
        if !self.dep.acked() || !self.waiting() {
            return Vec::new();
        }
        self.peer = Some(from);
        self.phase = Phase::Serving {
            end: now + self.grace,
            next: now + RESEND,
        };
        vec![LeaveAction::Handed { peer: from }]
    }

    /// Whether the node that steers the connections is still a live BACKUP or
    /// MASTER of the group. Once it is not (dead, resigned, FAULT), its steering
    /// is gone and the connections with it: the departure ends.
    pub fn on_peer(&mut self, _now: Instant, alive: bool) -> Vec<LeaveAction> {
        match (self.serving(), alive, self.peer) {
            (true, false, Some(p)) => self.finish(format!(
                "peer {p}, which steered this node's connections, is gone: {} connection(s) are lost",
                self.left()
            )),
            _ => Vec::new(),
        }
    }

    /// Whether this node is still MASTER. A departure waiting for its ACK is
    /// for a MASTER: one that lost the role meanwhile (a better master, link
    /// down) has released the VIP already, so there is nothing to hand over.
    pub fn on_master(&mut self, master: bool) -> Vec<LeaveAction> {
        if self.waiting() && !master {
            return self.abort("this node is no longer MASTER".to_string());
        }
        Vec::new()
    }

    /// An operator asks this node to be active again while the departure runs.
    /// Refused while serving (`Err((left, peer))`: the caller says so), unless
    /// `force`, which ends the departure first and cuts what is left: becoming a
    /// candidate again with the gate in place would refuse new connections to
    /// the VIP here, should this node take it back.
    pub fn on_active(&mut self, force: bool) -> Result<Vec<LeaveAction>, (usize, Ipv4Addr)> {
        match (self.phase, self.peer) {
            (Phase::Serving { .. }, Some(peer)) if !force => Err((self.left(), peer)),
            (Phase::Over, _) => Ok(Vec::new()),
            _ => Ok(self.interrupt("active requested with force")),
        }
    }

    /// End the departure now, whatever its phase (`why` for the log).
    pub fn interrupt(&mut self, why: &str) -> Vec<LeaveAction> {
        match self.phase {
            Phase::Waiting { .. } => self.abort(why.to_string()),
            Phase::Serving { .. } => self.finish(format!(
                "{why}: {} connection(s) still open are cut",
                self.left()
            )),
            Phase::Over => Vec::new(),
        }
    }

    fn abort(&mut self, why: String) -> Vec<LeaveAction> {
        self.phase = Phase::Over;
        vec![LeaveAction::Abort { why }]
    }

    fn finish(&mut self, why: String) -> Vec<LeaveAction> {
        self.phase = Phase::Over;
        vec![LeaveAction::Finish {
            done: self.dep.done(self.node, self.vip),
            why,
            left: self.left(),
        }]
    }
}

#[cfg(test)]
mod tests;
