//! Probes and the takeover decision: what the machine asks the driver to check
//! (probe targets, the peer several ways at once, the VIP by ARP) and how it decides,
//! once the master has been silent for the dead interval and the probe is in,
//! between MASTER, staying BACKUP and FAULT (see the module docs' rules).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::super::wire::WireState;
use super::{Action, MAX_VIP_BACKOFF, Machine, PeerCheck, ProbeResult, State, Timer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// Decide whether to take over from a silent master.
    Takeover,
    /// Periodic check of the targets (MASTER or FAULT).
    Health,
}

impl Machine {
    pub(super) fn start_probe(
        &mut self,
        now: Instant,
        purpose: Purpose,
        peer: Option<Ipv4Addr>,
    ) -> u64 {
        let id = self.next_probe_id;
        self.next_probe_id += 1;
        self.probes.insert(id, purpose);
        // The VIP is checked before every bind (takeover) and while FAULT (so that a
        // fault for "VIP in use" can clear); a master holds it already.
        let vip = self.state != State::Master;
        self.actions.push(Action::Probe { id, peer, vip });
        if purpose == Purpose::Takeover {
            // Two timeouts (connect, then round trip) plus slack.
            // The driver bounds every probe by `probe_timeout`; this is the net below it.
            self.timers.set(
                Timer::ProbeDeadline,
                now + self.p.probe_timeout + Duration::from_millis(100),
            );
        }
        id
    }

    /// Which peer to check before a takeover: the master we lost, else the configured
    /// peer, else the best other node we have heard.
    pub(super) fn probe_peer(&self) -> Option<Ipv4Addr> {
        self.master.or(self.p.peer).or_else(|| {
            self.peers
                .peers
                .iter()
                .filter(|(_, p)| p.state != WireState::Resign)
                .max_by_key(|(a, p)| (p.priority, **a))
                .map(|(a, _)| *a)
        })
    }

    /// A probe started by [`Action::Probe`] finished.
    pub fn handle_probe(&mut self, now: Instant, r: ProbeResult) {
        let Some(purpose) = self.probes.remove(&r.id) else {
            return; // superseded
        };
        match purpose {
            Purpose::Takeover => {
                if self.takeover_probe == Some(r.id) && self.state == State::Backup {
                    self.takeover_result = Some(r);
                    self.timers.stop(Timer::ProbeDeadline);
                    if self.master_down_expired {
                        self.decide_takeover(now);
                    }
                }
            }
            Purpose::Health => match (self.state, r.targets_ok) {
                (State::Master, Some(false)) => {
                    self.health_failures += 1;
                    if self.health_failures >= 2 {
                        self.enter_fault(now, "no probe target answers (twice in a row)".into());
                    }
                }
                (State::Master, _) => self.health_failures = 0,
                (State::Fault, targets) if self.link_up => {
                    if let Some(mac) = r.vip_in_use {
                        let wait = self.vip_in_use_backoff();
                        tracing::warn!(vip = %self.p.vip, %mac, "VIP still in use by a host that is not a node of this group: checking again in {wait:?}");
                        self.timers.set(Timer::Health, now + wait);
                        return;
                    }
                    if targets == Some(false) {
                        return;
                    }
                    let why = match (targets, self.vip_backoff.take()) {
                        (_, Some(_)) => "the VIP is free again",
                        (Some(true), None) => "link up and probe targets answer",
                        _ => "link up (no probe targets to ask)",
                    };
                    self.enter_backup(now, why.into());
                }
                _ => {}
            },
        }
    }

    /// The master has been silent for the dead interval and the probe is in.
    pub(super) fn decide_takeover(&mut self, now: Instant) {
        let Some(r) = self.takeover_result.take() else {
            return;
        };
        let dead = self.p.dead_interval();
        let silence = self.damping.hold(now, dead);
        let lost = match self.master {
            Some(m) => format!("master {m} silent for {silence:?}"),
            None => format!("no master heard within {silence:?}"),
        };
        if r.targets_ok == Some(false) {
            self.enter_fault(
                now,
                format!("{lost} and no probe target answers: this node is cut off"),
            );
            return;
        }
        if let Some(mac) = r.vip_in_use {
            let wait = self.vip_in_use_backoff();
            self.enter_fault(
                now,
                format!(
                    "{lost} but the VIP {} is in use by {mac}, which is not a node of this group: not binding it (checking again in {wait:?})",
                    self.p.vip
                ),
            );
            return;
        }
        self.vip_backoff = None;
        if self.better_live_candidate(now).is_some() {
            // A better node is still heard: the election is its to win.
            self.arm_master_down(now, dead, self.p.interval);
            return;
        }
        // The peer is alive: watch again as if it had just been heard, so that its
        // real death later is detected in the usual time.
        let reevaluate = |m: &mut Machine, now: Instant| {
            m.arm_master_down(now, m.p.dead_interval(), m.p.interval);
        };
        let why = match r.peer {
            PeerCheck::Alive {
                state: WireState::Master,
                node,
                ..
            } => {
                self.master = Some(node);
                if !std::mem::replace(&mut self.echo_only_warned, true) {
                    tracing::warn!(
                        peer = %node,
                        "heartbeats from master {node} lost but it answers the echo check as MASTER: staying BACKUP (no split brain)"
                    );
                }
                return reevaluate(self, now);
            }
            PeerCheck::Alive {
                state,
                priority,
                node,
            } if (priority, node) > self.rank() && state != WireState::Fault => {
                tracing::warn!(
                    peer = %node,
                    "heartbeats from {node} lost but it answers the echo check and outranks this node: leaving the VIP to it"
                );
                return reevaluate(self, now);
            }
            PeerCheck::Alive { node, state, .. } => {
                format!("{lost}; peer {node} answers as {state:?} and ranks lower")
            }
            PeerCheck::Dead => format!("{lost} and its echo check failed"),
            PeerCheck::Unknown => lost,
        };
        self.enter_master(now, why);
    }

    /// The next wait before re-checking a VIP found in use (doubling, capped).
    pub(super) fn vip_in_use_backoff(&mut self) -> Duration {
        let next = match self.vip_backoff {
            None => self.p.probe_interval,
            Some(d) => (d * 2).min(MAX_VIP_BACKOFF.max(self.p.probe_interval)),
        };
        self.vip_backoff = Some(next);
        next
    }
}
