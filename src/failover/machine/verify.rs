//! Unsigned claims are checked before they change anything.
//!
//! Without a secret a heartbeat proves nothing: any host can send one with any
//! node's address as its source. The heartbeats that would change this node's
//! role — a RESIGN from the master it follows, a better MASTER while it is master
//! itself, a worse MASTER it would preempt — are therefore held and checked first
//! with the echo check on the claimed sender ([`Action::Verify`]). That is a TCP
//! connection, which needs a completed handshake with the claimed address: a host
//! that merely spoofs UDP source addresses cannot answer it. It costs one round
//! trip on the LAN before a genuine RESIGN or yield, and nothing at all when the
//! group has a secret (then the MAC is the proof, and nothing is held).
//!
//! | claim | acted on when the echo check says | ignored (counted `unconfirmed`) when |
//! |---|---|---|
//! | RESIGN | anything but "MASTER" (a resigning daemon answers RESIGN, or is gone) | the sender answers as MASTER |
//! | MASTER (to yield to, or to preempt) | the sender answers as MASTER, or the answer proves nothing either way (`Unknown`) | it answers otherwise, or not at all |
//!
//! At most [`MAX_VERIFYING`] claims are checked at once and one per sender and
//! claim: a flood of forged claims costs a bounded number of connections.

use std::time::{Duration, Instant};

use super::{Action, Machine, PeerCheck, State};
use crate::failover::wire::{Heartbeat, WireState};

/// Claims checked at the same time.
pub const MAX_VERIFYING: usize = 4;

impl Machine {
    /// Whether `hb` (unsigned) would change this node's role.
    fn changes_role(&self, hb: &Heartbeat) -> bool {
        let theirs = (hb.priority, hb.node);
        match (self.state, hb.state) {
            (State::Master, WireState::Master) => theirs > self.rank(),
            (State::Backup, WireState::Master) => self.p.preempt && theirs < self.rank(),
            (State::Backup, WireState::Resign) => {
                self.master == Some(hb.node) || self.master.is_none()
            }
            _ => false,
        }
    }

    /// Hold an unsigned role-changing heartbeat for its echo check; true if held
    /// (or dropped because enough are being checked already).
    pub(super) fn hold_for_verification(&mut self, hb: &Heartbeat, interval: Duration) -> bool {
        if self.signed || !self.changes_role(hb) {
            return false;
        }
        let pending = self
            .verifying
            .values()
            .any(|(h, _)| h.node == hb.node && h.state == hb.state);
        if !pending && self.verifying.len() < MAX_VERIFYING {
            let id = self.next_probe_id;
            self.next_probe_id += 1;
            self.verifying.insert(id, (hb.clone(), interval));
            self.actions.push(Action::Verify { id, peer: hb.node });
        }
        true
    }

    /// The echo check of a held claim ([`Action::Verify`]) finished.
    pub fn handle_verify(&mut self, now: Instant, id: u64, check: PeerCheck) {
        let Some((hb, interval)) = self.verifying.remove(&id) else {
            return;
        };
        let answers_master = matches!(
            check,
            PeerCheck::Alive { state: WireState::Master, node, .. } if node == hb.node
        );
        let confirmed = match hb.state {
            WireState::Resign => !answers_master,
            _ => answers_master || check == PeerCheck::Unknown,
        };
        if confirmed {
            // The state may have moved on meanwhile; act_on decides from the current one.
            self.act_on(now, &hb, interval);
        } else {
            self.counters.unconfirmed += 1;
            if let Some(more) = self.verify_log.note(hb.node.into(), now) {
                tracing::warn!(peer = %hb.node, claim = ?hb.state, answer = ?check, suppressed = more, "unsigned heartbeat of {} claiming {:?} contradicted by its echo check: ignored (forged?)", hb.node, hb.state);
            }
        }
    }
}
