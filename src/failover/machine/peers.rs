//! The peer table: what this node knows about the other senders of its group,
//! and the one place that decides whether a heartbeat is admitted at all.
//!
//! Every rule here exists because a datagram from the LAN must not be able to make
//! the node deaf to its peer, nor grow its memory:
//!
//! * **Anti-replay** per sender ([`replay::Window`]): stale sequences, old epochs
//!   and (unsigned) unbounded sequence jumps are refused.
//! * **The announced interval is held** to between half and twice this node's own
//!   ([`clamp_interval`]): a forged "interval 65535 ms" would otherwise make a
//!   backup wait 197 s for a master that does not exist.
//! * **Expiry**: a sender silent for its dead interval leaves the table
//!   ([`PeerTable::expire`]); signed senders' replay windows stay (they are what
//!   keeps a replay of them out later).
//! * **A cap** of [`MAX_PEERS`] entries: a flood of forged senders evicts the
//!   longest-silent entries, never the configured peer nor the master being
//!   followed; when nothing may be evicted the newcomer is refused and counted.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::failover::replay::{Fresh, Replay, Window};
use crate::failover::wire::{FLAG_STANDBY, Heartbeat, WireState};

/// Most senders remembered at once (a group has two nodes; a LAN with several
/// groups on one port shows their nodes too, filtered out by VIP before this).
pub const MAX_PEERS: usize = 64;

/// What the table knows about a live sender.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub priority: u8,
    pub state: WireState,
    /// It announced [`FLAG_STANDBY`]: an operator keeps it out of the election
    /// (it says FAULT on the wire; this tells why).
    pub standby: bool,
    pub last_seen: Instant,
    /// Its announced interval, held to this node's range.
    pub interval: Duration,
}

/// Why a heartbeat was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    Replay(Replay),
    /// The table is full of entries that may not be evicted.
    Full,
}

/// The announced interval, held to `[own / 2, own × 2]`.
pub fn clamp_interval(announced_ms: u16, own: Duration) -> Duration {
    let announced = Duration::from_millis(u64::from(announced_ms.max(1)));
    announced.clamp(own / 2, own * 2)
}

#[derive(Debug, Default)]
pub(super) struct PeerTable {
    pub peers: HashMap<Ipv4Addr, Peer>,
    windows: HashMap<Ipv4Addr, Window>,
    /// When an epoch confirmation was last asked for, per sender.
    asked: HashMap<Ipv4Addr, Instant>,
}

impl PeerTable {
    #[cfg(test)]
    pub fn get(&self, node: &Ipv4Addr) -> Option<&Peer> {
        self.peers.get(node)
    }

    pub fn len(&self) -> usize {
        self.peers.len().max(self.windows.len())
    }

    /// Admit `hb` (already authenticated as `signed`, sent from its own address) or
    /// say why not. `protect` are senders that are never evicted.
    pub fn admit(
        &mut self,
        hb: &Heartbeat,
        now: Instant,
        own_interval: Duration,
        dead_count: u32,
        signed: bool,
        protect: [Option<Ipv4Addr>; 2],
    ) -> Result<(Fresh, Duration), Refused> {
        let interval = clamp_interval(hb.interval_ms, own_interval);
        let known = self.peers.get(&hb.node).map_or(interval, |p| p.interval);
        let fresh = Window::check(
            self.windows.get(&hb.node),
            hb.epoch,
            hb.seq,
            now,
            known * dead_count,
        )
        .map_err(Refused::Replay)?;
        if !self.windows.contains_key(&hb.node) || !self.peers.contains_key(&hb.node) {
            self.make_room(hb.node, now, own_interval * 2 * dead_count, protect)?;
        }
        self.windows
            .insert(hb.node, Window::new(hb.epoch, hb.seq, now, signed));
        self.peers.insert(
            hb.node,
            Peer {
                priority: hb.priority,
                state: hb.state,
                standby: hb.flags & FLAG_STANDBY != 0,
                last_seen: now,
                interval,
            },
        );
        Ok((fresh, interval))
    }

    /// Forget senders silent for their dead interval (unsigned ones entirely).
    pub fn expire(&mut self, now: Instant, dead_count: u32) {
        self.peers
            .retain(|_, p| now.saturating_duration_since(p.last_seen) < p.interval * dead_count);
        let peers = &self.peers;
        // An unsigned window is forgotten with its peer; its check ignores it by then.
        self.windows
            .retain(|a, w| w.signed || peers.contains_key(a));
        self.asked
            .retain(|_, t| now.saturating_duration_since(*t) < Duration::from_secs(1));
    }

    /// Make space for `newcomer`: expire, then evict the longest-silent entry that
    /// is not protected.
    fn make_room(
        &mut self,
        newcomer: Ipv4Addr,
        now: Instant,
        longest_dead: Duration,
        protect: [Option<Ipv4Addr>; 2],
    ) -> Result<(), Refused> {
        if self.peers.len() < MAX_PEERS && self.windows.len() < MAX_PEERS {
            return Ok(());
        }
        self.peers
            .retain(|_, p| now.saturating_duration_since(p.last_seen) < longest_dead);
        let peers = &self.peers;
        self.windows
            .retain(|a, w| w.signed || peers.contains_key(a));
        let evictable = |a: &Ipv4Addr| *a != newcomer && !protect.contains(&Some(*a));
        while self.peers.len() >= MAX_PEERS || self.windows.len() >= MAX_PEERS {
            // The longest-silent sender, whichever map holds it.
            let oldest = self
                .windows
                .iter()
                .map(|(a, w)| (*a, w.at))
                .chain(self.peers.iter().map(|(a, p)| (*a, p.last_seen)))
                .filter(|(a, _)| evictable(a))
                .min_by_key(|(_, t)| *t)
                .map(|(a, _)| a);
            let Some(a) = oldest else {
                return Err(Refused::Full);
            };
            self.peers.remove(&a);
            self.windows.remove(&a);
        }
        Ok(())
    }

    /// The sender said RESIGN: it stays in the table (its replay window must keep
    /// working) but no longer counts as a live candidate.
    pub fn resigned(&mut self, node: Ipv4Addr) {
        if let Some(p) = self.peers.get_mut(&node) {
            p.state = WireState::Resign;
        }
    }

    /// Whether to ask `node` to confirm its epoch now (at most once a second).
    pub fn should_confirm(&mut self, node: Ipv4Addr, now: Instant) -> bool {
        let due = self
            .asked
            .get(&node)
            .is_none_or(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1));
        if due {
            if self.asked.len() >= MAX_PEERS {
                self.asked.clear();
            }
            self.asked.insert(node, now);
        }
        due
    }

    /// A fresh authenticated answer says `node` runs `epoch`.
    pub fn confirm(&mut self, node: Ipv4Addr, epoch: u32, now: Instant) -> bool {
        match self.windows.get_mut(&node) {
            Some(w) if w.epoch != epoch => {
                w.confirm(epoch, now);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn hb(node: Ipv4Addr, seq: u64) -> Heartbeat {
        Heartbeat {
            state: WireState::Master,
            priority: 1,
            flags: 0,
            node,
            vip: Ipv4Addr::new(10, 0, 0, 234),
            epoch: 1,
            seq,
            interval_ms: 100,
            auth_type: 0,
            auth: vec![],
        }
    }

    #[test]
    fn interval_is_held_to_half_and_twice_ours() {
        let own = 100 * MS;
        assert_eq!(clamp_interval(65535, own), 200 * MS);
        assert_eq!(clamp_interval(0, own), 50 * MS);
        assert_eq!(clamp_interval(120, own), 120 * MS);
    }

    #[test]
    fn a_flood_of_senders_is_capped_and_protected_entries_stay() {
        let t0 = Instant::now();
        let mut t = PeerTable::default();
        let peer = Ipv4Addr::new(10, 0, 0, 2);
        let protect = [Some(peer), None];
        t.admit(&hb(peer, 1), t0, 100 * MS, 3, false, protect)
            .unwrap();
        for i in 0..100_000u32 {
            let a = Ipv4Addr::from(0x0a01_0000 + i);
            // All within one dead interval: nothing expires, the oldest is evicted.
            let _ = t.admit(&hb(a, 1), t0 + MS, 100 * MS, 3, false, protect);
            assert!(t.len() <= MAX_PEERS);
        }
        assert!(t.get(&peer).is_some(), "the configured peer was evicted");
        // After the dead interval the forged senders expire.
        t.admit(&hb(peer, 2), t0 + 400 * MS, 100 * MS, 3, false, protect)
            .unwrap();
        t.expire(t0 + 600 * MS, 3);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn full_of_protected_entries_refuses_newcomers() {
        let t0 = Instant::now();
        let mut t = PeerTable::default();
        // Signed senders are never forgotten by expiry; fill the table with them
        // and protect none: the oldest is evicted, never refused.
        for i in 0..(MAX_PEERS as u32 + 5) {
            let a = Ipv4Addr::from(0x0a01_0000 + i);
            t.admit(&hb(a, 1), t0 + i * MS, 100 * MS, 3, true, [None, None])
                .unwrap();
        }
        assert_eq!(t.len(), MAX_PEERS);
    }

    #[test]
    fn resign_keeps_the_replay_window() {
        let t0 = Instant::now();
        let mut t = PeerTable::default();
        let a = Ipv4Addr::new(10, 0, 0, 2);
        t.admit(&hb(a, 5), t0, 100 * MS, 3, false, [None, None])
            .unwrap();
        t.resigned(a);
        assert_eq!(
            t.admit(&hb(a, u64::MAX), t0 + MS, 100 * MS, 3, false, [None, None])
                .unwrap_err(),
            Refused::Replay(Replay::SeqJump)
        );
    }
}
