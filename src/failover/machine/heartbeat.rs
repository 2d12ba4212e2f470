//! What a heartbeat does. [`Machine::handle_heartbeat_from`] admits it (its own
//! sender, this group, new for the sender: the peer table's rules in `peers.rs`),
//! holds an unsigned role-changing one for its echo check (`verify.rs`), and then
//! [`Machine::act_on`] applies the election rules of the module docs: two
//! masters (the lower-ranked yields), a master heard by a BACKUP (follow it, or
//! preempt it), a RESIGN (the best remaining node takes over at once).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::super::replay::{Fresh, Replay};
use super::super::wire::{Heartbeat, WireState};
use super::peers::Refused;
use super::{Action, Machine, State};

impl Machine {
    /// A heartbeat arrived (decoded and authenticated) from its own address. Kept
    /// for callers that have no source address; the driver uses
    /// [`Machine::handle_heartbeat_from`].
    pub fn handle_heartbeat(&mut self, now: Instant, hb: &Heartbeat) {
        self.handle_heartbeat_from(now, hb, hb.node);
    }

    /// A heartbeat arrived from UDP source address `from`, decoded and (when this
    /// node has keys) authenticated by the driver. It is admitted only if it names
    /// its own sender, belongs to this group and is new (see [`super::replay`] and
    /// the peer table's rules); the rest is counted in [`Machine::counters`].
    pub fn handle_heartbeat_from(&mut self, now: Instant, hb: &Heartbeat, from: Ipv4Addr) {
        if hb.node == self.p.node {
            self.counters.own += 1;
            return;
        }
        if hb.node != from {
            // A sender speaks for its own address only: otherwise one host could
            // forge every node's heartbeats without even spoofing its source.
            self.counters.spoofed += 1;
            return;
        }
        if hb.vip != self.p.vip {
            self.counters.other_group += 1;
            return;
        }
        let protect = [self.p.peer, self.master];
        let admitted = self.peers.admit(
            hb,
            now,
            self.p.interval,
            self.p.dead_count,
            self.signed,
            protect,
        );
        self.counters.peers_peak = self.counters.peers_peak.max(self.peers.len() as u64);
        let interval = match admitted {
            Ok((fresh, interval)) => {
                if fresh == Fresh::Restarted
                    && let Some(more) = self.restart_log.note(hb.node.into(), now)
                {
                    tracing::info!(peer = %hb.node, epoch = hb.epoch, suppressed = more, "peer {} restarted (new epoch)", hb.node);
                }
                interval
            }
            Err(Refused::Replay(r)) => {
                match r {
                    Replay::Stale => self.counters.stale += 1,
                    Replay::SeqJump => self.counters.seq_jump += 1,
                    Replay::OldEpoch => {
                        self.counters.old_epoch += 1;
                        // A replay, or the sender restarted with its clock set back:
                        // ask it (fresh, authenticated) which epoch it runs now.
                        if self.signed && self.peers.should_confirm(hb.node, now) {
                            self.actions.push(Action::ConfirmEpoch { peer: hb.node });
                        }
                    }
                }
                return;
            }
            Err(Refused::Full) => {
                self.counters.table_full += 1;
                return;
            }
        };
        self.counters.received += 1;
        if self.hold_for_verification(hb, interval) {
            return;
        }
        self.act_on(now, hb, interval);
    }

    /// What an admitted heartbeat (verified, when unsigned and role-changing)
    /// makes this node do.
    pub(super) fn act_on(&mut self, now: Instant, hb: &Heartbeat, interval: Duration) {
        let theirs = (hb.priority, hb.node);
        match (self.state, hb.state) {
            (State::Master, WireState::Master) => {
                // Two masters at once: one of the takeovers was premature (or the
                // path between the nodes was down for a while). Either way, damp.
                self.damping.bump(now);
                if theirs > self.rank() {
                    self.master = Some(hb.node);
                    self.enter_backup(
                        now,
                        format!(
                            "higher-ranked master {} (priority {}) heard",
                            hb.node, hb.priority
                        ),
                    );
                    self.follow(now, hb.node, interval);
                } else {
                    // Make the other master yield as fast as possible, and announce
                    // the VIP again: while both held it, the other's gratuitous ARP
                    // pointed the LAN at its MAC, and it is about to let go.
                    self.send_heartbeat_now(now);
                    self.actions.push(Action::Garp);
                }
            }
            (State::Backup, WireState::Master) => {
                let stable_for = now.saturating_duration_since(self.backup_since);
                let preempt_hold = if self.damping.level(now) == 0 {
                    Duration::ZERO
                } else {
                    self.damping.hold(now, self.p.dead_interval())
                };
                if self.p.preempt
                    && !self.standby
                    && theirs < self.rank()
                    && stable_for >= preempt_hold
                {
                    self.enter_master(
                        now,
                        format!(
                            "preempting lower-ranked master {} (priority {})",
                            hb.node, hb.priority
                        ),
                    );
                } else {
                    self.follow(now, hb.node, interval);
                }
            }
            (State::Backup, WireState::Resign) => {
                self.peers.resigned(hb.node);
                if self.standby {
                    self.warn_nobody_holds(now, hb.node);
                } else if self.master == Some(hb.node) || self.master.is_none() {
                    self.master = None;
                    match self.better_live_candidate(now) {
                        None => self.enter_master(now, format!("master {} resigned", hb.node)),
                        Some(_) => {
                            // The better node takes over; wait for it.
                            let dead = self.p.dead_interval();
                            self.arm_master_down(now, dead, self.p.interval);
                        }
                    }
                }
            }
            (_, WireState::Resign) => {
                self.peers.resigned(hb.node);
            }
            _ => {}
        }
    }

    fn follow(&mut self, now: Instant, master: Ipv4Addr, interval: Duration) {
        self.master = Some(master);
        self.echo_only_warned = false;
        let dead = interval * self.p.dead_count;
        self.arm_master_down(now, dead, interval);
    }
}
