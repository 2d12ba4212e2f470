//! The election, as a pure state machine.
//!
//! Nothing in this file touches a socket, a clock or the kernel. The driver feeds it
//! events — a heartbeat arrived, a timer fired, a probe finished, the link or the
//! VIP changed — always together with the current time, and then drains the
//! [`Action`]s it asks for (send a heartbeat, bind the VIP, send gratuitous ARP,
//! start a probe). Between events the driver sleeps until [`Machine::next_timeout`].
//! This is the shape of `quinn-proto`: the protocol is tested exhaustively without
//! any I/O (see the proptests in `machine/tests/sim.rs`, which run whole clusters
//! in simulated time).
//!
//! This file holds the machine's state, its entry points for timers, the link and
//! the VIP, and the transitions between states. The rest sits beside it in
//! `machine/`: `heartbeat.rs` (what a heartbeat does), `peers.rs` (the peer
//! table), `probing.rs` (takeover and health probes), `verify.rs` (echo checks of
//! unsigned heartbeats), `control.rs` (the operator's standby / active),
//! `damping.rs` (flap damping) and `timers.rs` (the deadline table).
//!
//! # The rules
//!
//! Every node sends a heartbeat every `interval` carrying its state and priority.
//! A heartbeat counts only if the driver authenticated it (when the group has a
//! secret), it names its own source address, and it is new for its sender (the
//! peer table's anti-replay, interval and size rules: `machine/peers.rs`). Without
//! a secret, one that would change this node's role is first checked with the
//! sender's echo service (`machine/verify.rs`).
//! A node's *rank* is `(priority, address)`: higher priority wins, ties go to the
//! higher IPv4 address.
//!
//! * **Start**: a node starts as BACKUP, removes a VIP it may have left behind, and
//!   listens for `dead_count × interval`. If it hears a MASTER it stays BACKUP.
//! * **Master dead**: a BACKUP that has heard nothing from a master for
//!   `dead_count × interval` considers taking over. Silence alone is weak evidence
//!   (on a lossy link a few heartbeats in a row go missing all the time), so one
//!   interval before that — on *suspicion* — it starts a *probe* that asks several
//!   independent ways at once, so that the evidence is in when the timer fires:
//!   - the peer, over UDP and TCP echo (`echo.port`), repeated every few
//!     milliseconds, plus ICMP to the peer host (the driver's
//!     [`confirm`](super::confirm) module). Any answer from the daemon → it is
//!     alive. A live MASTER → heartbeats are lost but the master is fine → stay
//!     BACKUP (no split brain) and keep watching. A live non-master that outranks
//!     us → it takes over, we stay BACKUP. Only when *every* way stayed silent or
//!     was refused for the whole window is the peer gone.
//!   - ICMP to the probe targets: if targets are configured and none answers, this
//!     node is the one cut off → FAULT, no VIP.
//!   - an RFC 5227 ARP probe for the VIP: a host that is not a node of this group
//!     answering for it → FAULT, no VIP (see *VIP in use* below).
//!   - otherwise the BACKUP becomes MASTER, unless a live node that outranks it is
//!     still heard (that node takes over instead).
//! * **Flap damping**: every sign that a takeover was wrong or that the link is
//!   unstable — two masters heard at once, the link going down — adds 1 to a
//!   *flap score* that halves every [`DAMP_HALF_LIFE`]. The first flap is free;
//!   while the score rounds to `k + 1` with `k ≥ 1`, the silence needed before a
//!   takeover, the wait after a link comes back and the time a BACKUP must have
//!   been stable before it preempts are all `dead_count × interval × 2^k`, capped
//!   at [`MAX_HOLD`]. A path that drops in
//!   bursts therefore costs a few failovers, then no more: each further one needs
//!   a silence twice as long as the last.
//! * **VIP in use**: a takeover whose ARP probe found the VIP answered by a foreign
//!   MAC does not bind it: FAULT, re-checked with a backoff that doubles from
//!   `probe_interval` up to [`MAX_VIP_BACKOFF`]; BACKUP again once it is free.
//! * **Resign**: a master that shuts down sends RESIGN; the best remaining node takes
//!   over at once, without waiting for the dead timer or a probe.
//! * **Two masters** (a healed partition): the lower-ranked master yields at once
//!   when it hears the other; the higher one answers immediately with a heartbeat.
//! * **Preempt** (off by default): a BACKUP that outranks the current master takes
//!   over as soon as it hears it; the old master then yields by the rule above.
//! * **FAULT**: entered when the link goes down, when a backup finds itself cut off,
//!   when a master's periodic target probe fails twice in a row, or when the VIP is
//!   in use by a foreign host. A FAULT node never holds the VIP; it probes its
//!   targets every `probe_interval` (and at once, after the damped hold-down, when
//!   the link comes back) and returns to BACKUP only when the link is up, the
//!   targets answer (when there are any) and the VIP is not in use — never on
//!   link-up alone.
//! * The VIP removed by someone else while MASTER is put back (and announced).

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::inbound::BurstLog;
use super::wire::{FLAG_PREEMPT, FLAG_STANDBY, Heartbeat, WireState};

mod control;
mod damping;
mod heartbeat;
mod peers;
mod probing;
mod timers;
mod verify;
pub use control::Refusal;
use damping::Damping;
pub use damping::{DAMP_HALF_LIFE, MAX_HOLD};
pub use peers::{MAX_PEERS, clamp_interval};
use peers::{Peer, PeerTable};
use probing::Purpose;
use timers::{Timer, Timers};

/// The node's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Before the first event; only ever a `from` in a [`Action::StateChanged`].
    Init,
    Backup,
    Master,
    Fault,
    /// After [`Machine::shutdown`].
    Stopped,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
            State::Stopped => "STOPPED",
        })
    }
}

/// Static parameters, taken from the resolved config.
#[derive(Debug, Clone)]
pub struct Params {
    pub node: Ipv4Addr,
    pub vip: Ipv4Addr,
    pub priority: u8,
    pub preempt: bool,
    pub interval: Duration,
    pub dead_count: u32,
    /// The configured peer, probed when no master has been heard yet.
    pub peer: Option<Ipv4Addr>,
    /// Whether ICMP probe targets exist (the driver knows which).
    pub has_targets: bool,
    /// How long a probe may take at most (the driver enforces it: the longer of the
    /// ICMP timeout and the echo connect + round-trip timeouts).
    pub probe_timeout: Duration,
    pub probe_interval: Duration,
    pub garp_refresh: Option<Duration>,
}

impl Params {
    fn dead_interval(&self) -> Duration {
        self.interval * self.dead_count
    }
}

/// What the peer's echo service said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerCheck {
    /// The daemon answered; this is the state and rank it reported.
    Alive {
        state: WireState,
        priority: u8,
        node: Ipv4Addr,
    },
    /// Refused or timed out.
    Dead,
    /// There was no peer address to check.
    Unknown,
}

/// The outcome of one probe started by [`Action::Probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub id: u64,
    pub peer: PeerCheck,
    /// `None` when no targets are configured; otherwise whether any answered.
    pub targets_ok: Option<bool>,
    /// The MAC address of a host that is not a node of this group and answered the
    /// ARP probe for the VIP; `None` when the VIP is free or was not probed.
    pub vip_in_use: Option<String>,
}

/// The longest wait between two checks of a VIP found in use.
pub const MAX_VIP_BACKOFF: Duration = Duration::from_secs(30);

/// What the machine asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SendHeartbeat(Heartbeat),
    BindVip,
    UnbindVip,
    /// A burst of gratuitous ARP (count and spacing are the driver's config).
    Garp,
    /// One round of gratuitous ARP, the periodic refresh while MASTER.
    GarpRefresh,
    /// Check the peer (if `peer` is set: echo over UDP and TCP, ICMP to its host),
    /// the ICMP targets and, if `vip`, whether a foreign host answers ARP for the
    /// VIP; then report with [`Machine::handle_probe`] and the same `id`.
    Probe {
        id: u64,
        peer: Option<Ipv4Addr>,
        vip: bool,
    },
    /// An unsigned heartbeat of `peer` would change this node's role (a RESIGN, a
    /// better master, a master to preempt): ask `peer` over the echo check (echo
    /// only, no ICMP) and report with [`Machine::handle_verify`] and the same `id`.
    Verify {
        id: u64,
        peer: Ipv4Addr,
    },
    /// A signed heartbeat of `peer` came from an epoch older than its current one:
    /// ask `peer` over the authenticated echo check which epoch it runs, and report
    /// a verified answer with [`Machine::confirm_epoch`]. At most once a second per
    /// sender.
    ConfirmEpoch {
        peer: Ipv4Addr,
    },
    StateChanged {
        from: State,
        to: State,
        reason: String,
    },
    /// The operator's standby switch changed ([`Machine::standby`],
    /// [`Machine::active`]); the state may stay the same.
    StandbyChanged {
        standby: bool,
        reason: String,
    },
}

/// Counters of things the machine dropped; the driver adds its own (decode and
/// authentication errors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub own: u64,
    pub other_group: u64,
    /// Same epoch, sequence not newer: a replay or a reordered datagram.
    pub stale: u64,
    pub received: u64,
    /// An epoch older than the sender's current one: a replay of an earlier run.
    pub old_epoch: u64,
    /// A sequence further ahead than the sender can have counted.
    pub seq_jump: u64,
    /// The node field names another host than the datagram's source address.
    pub spoofed: u64,
    /// A new sender while the peer table was full of entries that must stay.
    pub table_full: u64,
    /// Unsigned role-changing heartbeats the echo check contradicted (forged).
    pub unconfirmed: u64,
    /// The most senders the peer table held at once (at most [`MAX_PEERS`]).
    pub peers_peak: u64,
}

/// The election state machine of one node.
#[derive(Debug)]
pub struct Machine {
    p: Params,
    state: State,
    timers: Timers,
    peers: PeerTable,
    /// Whether heartbeats reaching the machine carry a verified MAC (the driver
    /// drops the rest): then replay windows are kept for the daemon's lifetime.
    signed: bool,
    /// The master we follow while BACKUP.
    master: Option<Ipv4Addr>,
    epoch: u32,
    seq: u64,
    next_probe_id: u64,
    probes: HashMap<u64, Purpose>,
    /// Unsigned role-changing heartbeats waiting for their echo check, by id.
    verifying: HashMap<u64, (Heartbeat, Duration)>,
    /// Rate limits of the per-sender log lines a forger could otherwise repeat
    /// at will: restarts seen, claims contradicted.
    restart_log: BurstLog,
    verify_log: BurstLog,
    /// The takeover probe of the current "master is silent" episode and its result.
    takeover_probe: Option<u64>,
    takeover_result: Option<ProbeResult>,
    master_down_expired: bool,
    health_failures: u32,
    link_up: bool,
    /// The peer answered "MASTER" to the echo while its heartbeats were lost: warned
    /// once per episode, not on every re-check.
    echo_only_warned: bool,
    damping: Damping,
    /// Since when this node has been BACKUP (the preempt hold-down counts from it).
    backup_since: Instant,
    /// Backoff of the re-checks while the VIP is in use by a foreign host.
    vip_backoff: Option<Duration>,
    /// Operator standby: never take the VIP, announce FAULT (see `control.rs`).
    standby: bool,
    actions: Vec<Action>,
    pub counters: Counters,
}

impl Machine {
    /// A node starting at `now`. `epoch` must differ between process starts (random).
    pub fn new(p: Params, epoch: u32, now: Instant) -> Machine {
        let mut m = Machine {
            p,
            state: State::Init,
            timers: Timers::default(),
            peers: PeerTable::default(),
            signed: false,
            master: None,
            epoch,
            seq: 0,
            next_probe_id: 1,
            probes: HashMap::new(),
            verifying: HashMap::new(),
            restart_log: BurstLog::default(),
            verify_log: BurstLog::default(),
            takeover_probe: None,
            takeover_result: None,
            master_down_expired: false,
            health_failures: 0,
            link_up: true,
            echo_only_warned: false,
            damping: Damping {
                score: 0.0,
                at: now,
            },
            backup_since: now,
            vip_backoff: None,
            standby: false,
            actions: Vec::new(),
            counters: Counters::default(),
        };
        // A VIP left behind by a crash of this node must go before anything else.
        m.actions.push(Action::UnbindVip);
        m.enter_backup(now, "startup".to_string());
        m.timers.set(Timer::Heartbeat, now);
        m
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    /// The earliest deadline; the driver sleeps until then (or until an event).
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() {
            None
        } else {
            Some(self.actions.remove(0))
        }
    }

    /// All pending actions at once.
    pub fn drain_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    fn rank(&self) -> (u8, Ipv4Addr) {
        (self.p.priority, self.p.node)
    }

    /// Heartbeats reaching the machine carry a verified MAC (the driver dropped
    /// every other): replay windows then outlive a sender's silence. See
    /// [`super::replay`].
    pub fn set_signed(&mut self, signed: bool) {
        self.signed = signed;
    }

    /// Start counting this run's heartbeats at `seq` (see [`super::replay::start_seq`]).
    pub fn set_sequence(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// Senders in the peer table (bounded by [`MAX_PEERS`]).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The live senders of this group (for `GET /failover` and the status page).
    pub fn peers(&self) -> Vec<super::status::PeerView> {
        let mut v: Vec<_> = (self.peers.peers.iter())
            .map(|(node, p)| super::status::PeerView {
                node: *node,
                priority: p.priority,
                state: p.state,
                standby: p.standby,
                last_heard: p.last_seen,
            })
            .collect();
        v.sort_by_key(|p| p.node);
        v
    }

    fn peer_dead_interval(&self, peer: &Peer) -> Duration {
        peer.interval.max(Duration::from_millis(1)) * self.p.dead_count
    }

    fn peer_alive(&self, peer: &Peer, now: Instant) -> bool {
        now.saturating_duration_since(peer.last_seen) < self.peer_dead_interval(peer)
    }

    /// A live node (BACKUP or MASTER) that outranks this one, if any.
    fn better_live_candidate(&self, now: Instant) -> Option<Ipv4Addr> {
        self.peers
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.state, WireState::Backup | WireState::Master))
            .filter(|(_, p)| self.peer_alive(p, now))
            .filter(|(addr, p)| (p.priority, **addr) > self.rank())
            .map(|(a, _)| *a)
            .max()
    }

    fn heartbeat(&mut self, state: WireState) -> Heartbeat {
        self.seq += 1;
        Heartbeat {
            state,
            priority: self.p.priority,
            flags: if self.p.preempt { FLAG_PREEMPT } else { 0 }
                | if self.standby { FLAG_STANDBY } else { 0 },
            node: self.p.node,
            vip: self.p.vip,
            epoch: self.epoch,
            seq: self.seq,
            interval_ms: self.p.interval.as_millis().min(u16::MAX as u128) as u16,
            auth_type: 0,
            auth: Vec::new(),
        }
    }

    fn wire_state(&self) -> WireState {
        match self.state {
            State::Master => WireState::Master,
            State::Fault => WireState::Fault,
            State::Stopped => WireState::Resign,
            // A node in standby must not be waited for by anyone's election.
            State::Init | State::Backup if self.standby => WireState::Fault,
            State::Init | State::Backup => WireState::Backup,
        }
    }

    fn send_heartbeat_now(&mut self, now: Instant) {
        let hb = self.heartbeat(self.wire_state());
        self.actions.push(Action::SendHeartbeat(hb));
        self.timers.set(Timer::Heartbeat, now + self.p.interval);
    }

    fn transition(&mut self, to: State, reason: String) {
        let from = self.state;
        self.state = to;
        self.actions.push(Action::StateChanged { from, to, reason });
    }

    fn clear_episode(&mut self) {
        self.timers.stop(Timer::Suspect);
        self.timers.stop(Timer::MasterDown);
        self.timers.stop(Timer::ProbeDeadline);
        self.takeover_probe = None;
        self.takeover_result = None;
        self.master_down_expired = false;
    }

    /// Arm the "master is silent" timers counted from `from`; `dead` grows with the
    /// flap score (see the module docs).
    fn arm_master_down(&mut self, from: Instant, dead: Duration, interval: Duration) {
        self.clear_episode();
        let dead = self.damping.hold(from, dead);
        self.timers.set(Timer::MasterDown, from + dead);
        if dead > interval {
            self.timers.set(Timer::Suspect, from + dead - interval);
        }
    }

    fn enter_backup(&mut self, now: Instant, reason: String) {
        if self.state == State::Master {
            self.actions.push(Action::UnbindVip);
        }
        self.timers.stop(Timer::GarpRefresh);
        self.timers.stop(Timer::Health);
        self.health_failures = 0;
        if self.state != State::Backup {
            self.backup_since = now;
            self.transition(State::Backup, reason);
        }
        let dead = self.p.dead_interval();
        self.arm_master_down(now, dead, self.p.interval);
    }

    fn enter_master(&mut self, now: Instant, reason: String) {
        self.clear_episode();
        self.master = None;
        self.transition(State::Master, reason);
        self.actions.push(Action::BindVip);
        self.actions.push(Action::Garp);
        // Tell everybody at once: a competing master yields sooner, and backups
        // reset their dead timers.
        self.send_heartbeat_now(now);
        if let Some(r) = self.p.garp_refresh {
            self.timers.set(Timer::GarpRefresh, now + r);
        }
        self.health_failures = 0;
        if self.p.has_targets {
            self.timers.set(Timer::Health, now + self.p.probe_interval);
        }
    }

    fn enter_fault(&mut self, now: Instant, reason: String) {
        if self.state == State::Master {
            self.actions.push(Action::UnbindVip);
        }
        self.clear_episode();
        self.master = None;
        self.timers.stop(Timer::GarpRefresh);
        self.transition(State::Fault, reason);
        self.send_heartbeat_now(now);
        let wait = self.vip_backoff.unwrap_or(self.p.probe_interval);
        self.timers.set(Timer::Health, now + wait);
    }

    /// Call when [`Machine::next_timeout`] has passed (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in self.timers.expired(now) {
            match t {
                Timer::Heartbeat => {
                    self.peers.expire(now, self.p.dead_count);
                    self.send_heartbeat_now(now);
                }
                Timer::GarpRefresh => {
                    if self.state == State::Master {
                        self.actions.push(Action::GarpRefresh);
                        if let Some(r) = self.p.garp_refresh {
                            self.timers.set(Timer::GarpRefresh, now + r);
                        }
                    }
                }
                Timer::Suspect => {
                    if self.state == State::Backup && !self.standby && self.takeover_probe.is_none()
                    {
                        let peer = self.probe_peer();
                        self.takeover_probe = Some(self.start_probe(now, Purpose::Takeover, peer));
                    }
                }
                Timer::MasterDown => {
                    if self.state == State::Backup && self.standby {
                        if let Some(m) = self.master.take() {
                            self.warn_nobody_holds(now, m);
                        }
                    } else if self.state == State::Backup {
                        self.master_down_expired = true;
                        if self.takeover_probe.is_none() {
                            let peer = self.probe_peer();
                            self.takeover_probe =
                                Some(self.start_probe(now, Purpose::Takeover, peer));
                        } else if self.takeover_result.is_some() {
                            self.decide_takeover(now);
                        }
                    }
                }
                Timer::ProbeDeadline => {
                    if let Some(id) = self.takeover_probe
                        && self.takeover_result.is_none()
                    {
                        // The probe never reported: no evidence that the peer is
                        // alive, and none that this node can reach its targets.
                        self.probes.remove(&id);
                        self.takeover_result = Some(ProbeResult {
                            id,
                            peer: PeerCheck::Dead,
                            targets_ok: self.p.has_targets.then_some(false),
                            vip_in_use: None,
                        });
                        if self.master_down_expired {
                            self.decide_takeover(now);
                        }
                    }
                }
                Timer::Health => {
                    if matches!(self.state, State::Master | State::Fault) {
                        self.start_probe(now, Purpose::Health, None);
                        self.timers.set(Timer::Health, now + self.p.probe_interval);
                    }
                }
            }
        }
    }

    /// The interface's link went up or down.
    pub fn handle_link(&mut self, now: Instant, up: bool) {
        if self.link_up == up {
            return;
        }
        self.link_up = up;
        if !up {
            // A link that goes down is a flap whatever the state: a flapping link
            // earns longer hold-downs.
            self.damping.bump(now);
        }
        match (up, self.state) {
            (false, State::Master | State::Backup) => self.enter_fault(now, "link down".into()),
            (true, State::Fault) => {
                // Not BACKUP yet: the probe targets must answer first (the link may be
                // up towards a dead switch). A calm link is probed at once; a
                // flapping one must stay up for the damped hold-down first.
                let hold = if self.damping.level(now) == 0 {
                    Duration::ZERO
                } else {
                    self.damping.hold(now, self.p.dead_interval())
                };
                tracing::info!(hold = ?hold, "link up: probing before leaving FAULT");
                self.timers.set(Timer::Health, now + hold);
            }
            _ => {}
        }
    }

    /// The current flap-damping level (0 = calm), for status and tests.
    pub fn damping_level(&self, now: Instant) -> u32 {
        self.damping.level(now)
    }

    /// Someone removed the VIP from the interface.
    pub fn handle_vip_removed(&mut self, _now: Instant) {
        if self.state == State::Master {
            tracing::warn!("VIP removed by someone else while MASTER: restoring it");
            self.actions.push(Action::BindVip);
            self.actions.push(Action::Garp);
        }
    }

    /// The VIP appeared on the interface.
    pub fn handle_vip_added(&mut self, _now: Instant) {
        if !matches!(self.state, State::Master) {
            tracing::warn!(state = %self.state, "VIP added by someone else while not MASTER: removing it");
            self.actions.push(Action::UnbindVip);
        }
    }

    /// Graceful stop: release the VIP first, then tell the peers.
    pub fn shutdown(&mut self, now: Instant) {
        if self.state == State::Stopped {
            return;
        }
        if self.state == State::Master {
            self.actions.push(Action::UnbindVip);
        }
        self.transition(State::Stopped, "shutdown requested".into());
        let hb = self.heartbeat(WireState::Resign);
        self.actions.push(Action::SendHeartbeat(hb));
        self.timers = Timers::default();
        let _ = now;
    }

    /// A fresh, authenticated echo answer of `peer` says it runs `epoch` (the answer
    /// to [`Action::ConfirmEpoch`]): its heartbeats of that epoch are admitted from
    /// now on, even though the epoch is lower than the one remembered.
    pub fn confirm_epoch(&mut self, now: Instant, peer: Ipv4Addr, epoch: u32) {
        if self.peers.confirm(peer, epoch, now) {
            tracing::warn!(%peer, epoch, "peer {peer} runs an older epoch than before (its clock went back?): adopted after an authenticated echo check");
        }
    }

    /// The state and rank the echo service reports to a peer that asks.
    pub fn echo_status(&self) -> (WireState, u8, Ipv4Addr) {
        (self.wire_state(), self.p.priority, self.p.node)
    }

    #[cfg(test)]
    fn timer(&self, t: Timer) -> Option<Instant> {
        self.timers.get(t)
    }
}

#[cfg(test)]
mod tests;
