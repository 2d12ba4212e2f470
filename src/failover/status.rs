//! What the failover publishes about itself: the state and why, since when, the
//! last [`HISTORY`] transitions, and the peers heard. The driver writes it into a
//! `watch` channel ([`FailoverStatus`]); the daemon's loop, ACME and
//! the Web API (`GET /failover`, the status page) read it.
//!
//! Transitions ride in the watched value itself (they change only with the
//! state). Peers are heard ten times a second: their table sits behind a
//! [`PeerBoard`] the driver refreshes after every event, so readers see a live
//! "last heard" age without waking every watcher of the state.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use super::machine::State;
use super::wire::WireState;
use crate::config::floating_ip::FloatingIp;

/// What the daemon exposes about failover (read by the daemon, ACME and the Web
/// API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverStatus {
    pub state: State,
    /// Why the node is in this state (or why standby changed), one line.
    pub reason: String,
    /// When `state`, `standby` or `reason` last changed.
    pub since: SystemTime,
    /// In operator standby ([`super::driver::Control::standby`]): never takes the VIP.
    pub standby: bool,
    /// This node handed the VIP over with its connections (on SIGTERM, or on
    /// `POST /failover/standby`) and still serves them: they keep working
    /// through the peer until they end ([`super::handover`]), so they must not
    /// be cut. Set before the state leaves MASTER, cleared when the departure
    /// ends (what is left then is cut).
    pub handover: bool,
    pub vip: Ipv4Addr,
    pub interface: String,
    /// This node's own address and priority.
    pub node: Ipv4Addr,
    pub priority: u8,
    /// The last [`HISTORY`] transitions, oldest first.
    pub history: Arc<std::collections::VecDeque<Transition>>,
    /// The peers heard, refreshed after every event.
    pub peers: PeerBoard,
}

impl FailoverStatus {
    /// A status as of now, not in standby.
    pub fn new(state: State, reason: impl Into<String>, vip: Ipv4Addr, interface: &str) -> Self {
        FailoverStatus {
            state,
            reason: reason.into(),
            since: SystemTime::now(),
            standby: false,
            handover: false,
            vip,
            interface: interface.to_string(),
            node: Ipv4Addr::UNSPECIFIED,
            priority: 0,
            history: Arc::default(),
            peers: PeerBoard::default(),
        }
    }
}

/// Transitions kept (`GET /failover` shows them all).
pub const HISTORY: usize = 50;

/// One state change, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub at: SystemTime,
    pub from: State,
    pub to: State,
    pub reason: String,
}

/// A live sender of this group, as the peer table knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub node: Ipv4Addr,
    pub priority: u8,
    pub state: WireState,
    /// The peer is in operator standby: it announces FAULT (so that every
    /// version leaves the VIP to others) with the standby flag. Readers show it
    /// as STANDBY, not as a fault.
    pub standby: bool,
    pub last_heard: Instant,
}

/// The peer table's latest copy, shared between the driver and readers. Two
/// boards always compare equal: a status is "changed" by its state, not by a
/// heartbeat.
#[derive(Debug, Clone, Default)]
pub struct PeerBoard(Arc<Mutex<Vec<PeerView>>>);

impl PartialEq for PeerBoard {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for PeerBoard {}

impl PeerBoard {
    pub fn set(&self, peers: Vec<PeerView>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    pub fn get(&self) -> Vec<PeerView> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl FailoverStatus {
    /// Before the driver's first state change.
    pub fn starting(fip: &FloatingIp) -> FailoverStatus {
        FailoverStatus {
            node: fip.local_ip,
            priority: fip.priority,
            ..FailoverStatus::new(State::Init, "starting", fip.vip, &fip.interface)
        }
    }

    /// Enter `to` for `reason` now, remembering the transition.
    pub fn transition(&mut self, to: State, reason: &str) {
        let now = SystemTime::now();
        let history = Arc::make_mut(&mut self.history);
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(Transition {
            at: now,
            from: self.state,
            to,
            reason: reason.to_string(),
        });
        self.state = to;
        self.reason = reason.to_string();
        self.since = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_last_fifty() {
        let mut s = FailoverStatus {
            since: SystemTime::UNIX_EPOCH,
            ..FailoverStatus::new(State::Init, "", Ipv4Addr::new(10, 0, 0, 1), "eth0")
        };
        for i in 0..60 {
            let to = if i % 2 == 0 {
                State::Master
            } else {
                State::Backup
            };
            s.transition(to, &format!("r{i}"));
        }
        assert_eq!(s.history.len(), HISTORY);
        assert_eq!(s.history[0].reason, "r10");
        assert_eq!(s.history[HISTORY - 1].reason, "r59");
        assert_eq!((s.state, s.reason.as_str()), (State::Backup, "r59"));
        assert!(s.since > SystemTime::UNIX_EPOCH);
    }
}
