//! The operator's switch: standby and active.
//!
//! *Standby* takes a node out of the election for maintenance: a MASTER releases
//! the VIP and resigns (the peer takes over at once, as after a graceful stop, but
//! this node keeps running); a BACKUP stops being a candidate. Until *active*, the
//! node never takes the VIP — not on a silent master, not on a resign, not by
//! preemption — and its heartbeats and echo answers say FAULT with the
//! [`FLAG_STANDBY`](crate::failover::wire::FLAG_STANDBY) bit. FAULT rather than a
//! new state because every version of the daemon already treats a FAULT node as
//! alive but not eligible: no peer, old or new, waits for a standby node to take
//! over, and a takeover probe that finds it answering still goes ahead.
//!
//! With a secret, the driver first hands a MASTER's established connections over
//! to the peer (`crate::failover::handover`, `driver/departure.rs`) and only then
//! calls [`Machine::standby`]; the node serves them while in standby, and *active*
//! is refused ([`Refusal::HandingOver`]) until they ended, unless forced.
//!
//! Going to standby is refused unless a healthy peer (a live BACKUP or MASTER of
//! this group) is heard, because otherwise nobody would hold the VIP afterwards;
//! `force` overrides that. *Active* puts the node back into the election as a
//! BACKUP: it follows the current master, or takes over after the usual dead
//! interval if there is none (or preempts, if configured and it outranks).

use std::net::Ipv4Addr;
use std::time::Instant;

use super::super::wire::WireState;
use super::{Action, Machine, State, Timer};

/// Why a command was refused. The node's state did not change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "no healthy peer is heard (no live BACKUP or MASTER of this group): standby would leave the VIP without a holder; force it to go to standby anyway"
    )]
    NoHealthyPeer,
    #[error("failover is stopping")]
    Stopping,
    #[error(
        "this node still serves {left} connection(s) it handed over to {peer} when it went to standby (until they end, at most the grace time); make it active once they ended, or force it to cut them now"
    )]
    HandingOver { left: usize, peer: Ipv4Addr },
}

impl Machine {
    /// Whether the node is in operator standby.
    pub fn is_standby(&self) -> bool {
        self.standby
    }

    /// A live BACKUP or MASTER of this group other than this node (one that could
    /// hold the VIP), if any.
    pub fn healthy_peer(&self, now: Instant) -> Option<Ipv4Addr> {
        self.peers
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.state, WireState::Backup | WireState::Master))
            .filter(|(_, p)| self.peer_alive(p, now))
            .map(|(a, _)| *a)
            .max()
    }

    /// Go to standby (see the module docs). Idempotent: a node already in
    /// standby stays there.
    pub fn standby(&mut self, now: Instant, force: bool) -> Result<(), Refusal> {
        self.check_standby(now, force)?;
        if self.standby {
            return Ok(());
        }
        let peer = self.healthy_peer(now);
        let to = match peer {
            Some(p) => format!("the VIP is left to {p}"),
            None => "forced: no healthy peer is heard, nobody holds the VIP".to_string(),
        };
        self.standby = true;
        self.clear_episode();
        if self.state == State::Master {
            // Release first, then tell everybody at once (a RESIGN, as on a graceful
            // stop): the best remaining node takes over without a dead interval.
            self.enter_backup(now, format!("standby requested: {to}"));
            self.master = None;
            let hb = self.heartbeat(WireState::Resign);
            self.actions.push(Action::SendHeartbeat(hb));
            self.timers.set(Timer::Heartbeat, now + self.p.interval);
        } else {
            self.send_heartbeat_now(now);
        }
        self.actions.push(Action::StandbyChanged {
            standby: true,
            reason: format!("standby requested: {to}"),
        });
        Ok(())
    }

    /// Whether [`Machine::standby`] would be accepted now, without changing
    /// anything (the driver asks before it starts a connection handover).
    pub fn check_standby(&self, now: Instant, force: bool) -> Result<(), Refusal> {
        if self.state == State::Stopped {
            return Err(Refusal::Stopping);
        }
        if !self.standby && !force && self.healthy_peer(now).is_none() {
            return Err(Refusal::NoHealthyPeer);
        }
        Ok(())
    }

    /// Whether `node` is heard as a live BACKUP or MASTER of this group (a
    /// departure's steering peer is alive while it is).
    pub fn peer_live(&self, node: Ipv4Addr, now: Instant) -> bool {
        self.peers.peers.get(&node).is_some_and(|p| {
            matches!(p.state, WireState::Backup | WireState::Master) && self.peer_alive(p, now)
        })
    }

    /// Leave standby: a candidate again (see the module docs). Idempotent.
    pub fn active(&mut self, now: Instant) -> Result<(), Refusal> {
        if self.state == State::Stopped {
            return Err(Refusal::Stopping);
        }
        if !self.standby {
            return Ok(());
        }
        self.standby = false;
        if self.state == State::Backup {
            // Count the master's silence from now: a master that is heard keeps
            // the VIP, none heard within the dead interval means this node takes it.
            let dead = self.p.dead_interval();
            self.arm_master_down(now, dead, self.p.interval);
        }
        self.send_heartbeat_now(now);
        let reason = match self.master {
            Some(m) => format!("active requested: following master {m}"),
            None => "active requested: taking part in the election again".to_string(),
        };
        self.actions.push(Action::StandbyChanged {
            standby: false,
            reason,
        });
        Ok(())
    }

    /// In standby, the master went away (resigned or silent): say once that the
    /// VIP may now have no holder, and how to fix it.
    pub(super) fn warn_nobody_holds(&self, now: Instant, master: Ipv4Addr) {
        if self.healthy_peer(now).is_none() {
            tracing::warn!(%master, "master {master} is gone while this node is in standby: the VIP may have no holder (make this node active to take it)");
        }
    }
}
