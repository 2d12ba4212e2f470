//! Anti-replay: which heartbeats of a sender are new.
//!
//! Every heartbeat carries the sender's `epoch` (its start time in Unix seconds,
//! see [`start_epoch`]) and a `sequence` that grows by one per heartbeat. A
//! receiver keeps, per sender, the last accepted pair in a [`Window`] and asks
//! [`Window::check`] about each new heartbeat:
//!
//! | heartbeat | while the sender is live | after its dead interval of silence |
//! |---|---|---|
//! | same epoch, higher sequence | new, if the jump is bounded ([`max_jump`]) | new |
//! | same epoch, same or lower sequence | **stale** | stale if signed, else new |
//! | higher epoch | new: the sender restarted | new |
//! | lower epoch | **old epoch** | old epoch if signed, else new |
//!
//! **Signed senders** (a valid MAC under a group key) are remembered for the
//! daemon's lifetime: a MAC proves the pair was once really sent, so the only
//! heartbeats an attacker can bring are replays of captured ones, and those never
//! carry a pair newer than the last one the real sender sent. So a replay is
//! always stale or from an old epoch, also long after the sender went quiet, and
//! a restarted sender is recognised by its higher epoch (its clock moved on).
//!
//! **Unsigned senders** can be forged at will, so nothing an unsigned heartbeat
//! says may stick: a forged sequence 2^64-1 or epoch 2^32-1 would otherwise make
//! the receiver discard the real sender's heartbeats for ever. So the window is
//! forgotten after the sender's dead interval without an accepted heartbeat
//! (rejected ones do not refresh it), and within it a sequence may not jump more
//! than [`max_jump`]: the worst a forged datagram can do is make the receiver deaf
//! to that sender for one dead interval — which the echo check covers, as it does
//! lost heartbeats.
//!
//! What an attacker who captured signed datagrams of an **old epoch** can do: nothing
//! while the receiver remembers a newer pair of that sender. A receiver that
//! itself restarts forgets; until it hears the real sender (whose newer epoch then
//! wins at once), a replay can show it the past, for as long as the capture
//! lasts. The echo check cannot be replayed (fresh nonce), and rotating the key
//! retires every capture; docs/security.md lists this residual risk.
//!
//! **A sender whose clock went back** across a restart (its new epoch is lower than
//! the one remembered) is refused like a replay. The driver then asks it over the
//! authenticated echo check, whose answer names its current epoch and cannot be
//! replayed; [`Window::confirm`] adopts it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The last accepted heartbeat of one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub epoch: u32,
    pub seq: u64,
    /// When it was accepted.
    pub at: Instant,
    /// Whether it carried a valid MAC.
    pub signed: bool,
}

/// Why a heartbeat was refused as not new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    #[error("sequence not newer than the last one accepted (replay or reordering)")]
    Stale,
    #[error("epoch older than the sender's current one (replay of an earlier run)")]
    OldEpoch,
    #[error("sequence jumps further than the sender can have counted")]
    SeqJump,
}

/// How an accepted heartbeat relates to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    /// Nothing known about the sender (or forgotten): first contact.
    First,
    /// The next heartbeat of the current epoch.
    Next,
    /// A higher epoch: the sender restarted.
    Restarted,
}

/// The largest sequence advance accepted `elapsed` after the last accepted
/// heartbeat: one per millisecond (ten times the fastest configurable interval,
/// so lost heartbeats and extra ones sent on state changes all fit) plus slack.
pub fn max_jump(elapsed: Duration) -> u64 {
    1024 + u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// The epoch of a sender starting now: the Unix time in seconds, so that a
/// restarted sender has a higher epoch than its previous run (the sequence starts
/// where [`start_seq`] says, so two starts within one second also order).
pub fn start_epoch(now: SystemTime) -> u32 {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    u32::try_from(secs).unwrap_or(u32::MAX).max(1)
}

/// The first sequence number of a run starting `now`: the microseconds into the
/// current second times 2^20. A run started later within the same second starts
/// above anything an earlier run of that second can have reached (it would have
/// to send 2^20 heartbeats per microsecond).
pub fn start_seq(now: SystemTime) -> u64 {
    let micros = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_micros()));
    micros << 20
}

impl Window {
    pub fn new(epoch: u32, seq: u64, at: Instant, signed: bool) -> Window {
        Window {
            epoch,
            seq,
            at,
            signed,
        }
    }

    /// Whether a heartbeat `(epoch, seq)` arriving at `now` is new. `dead` is the
    /// sender's dead interval: after that long without an accepted heartbeat an
    /// unsigned window no longer binds.
    pub fn check(
        w: Option<&Window>,
        epoch: u32,
        seq: u64,
        now: Instant,
        dead: Duration,
    ) -> Result<Fresh, Replay> {
        let Some(w) = w else {
            return Ok(Fresh::First);
        };
        let elapsed = now.saturating_duration_since(w.at);
        let live = elapsed < dead;
        if !live && !w.signed {
            return Ok(Fresh::First);
        }
        if epoch > w.epoch {
            return Ok(Fresh::Restarted);
        }
        if epoch < w.epoch {
            return Err(Replay::OldEpoch);
        }
        if seq <= w.seq {
            return Err(Replay::Stale);
        }
        if live && seq - w.seq > max_jump(elapsed) {
            return Err(Replay::SeqJump);
        }
        Ok(if live { Fresh::Next } else { Fresh::First })
    }

    /// The sender proved, through a fresh authenticated answer, that it now runs
    /// `epoch`: adopt it even if it is lower than the remembered one.
    pub fn confirm(&mut self, epoch: u32, now: Instant) {
        if epoch != self.epoch {
            *self = Window::new(epoch, 0, now, self.signed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEAD: Duration = Duration::from_millis(300);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_table_of_the_module_docs() {
        let t0 = Instant::now();
        for signed in [false, true] {
            let w = Window::new(10, 100, t0, signed);
            let live = t0 + 100 * MS;
            let quiet = t0 + 400 * MS;
            let c = |e, s, now| Window::check(Some(&w), e, s, now, DEAD);
            assert_eq!(c(10, 101, live), Ok(Fresh::Next));
            assert_eq!(c(10, 100, live), Err(Replay::Stale));
            assert_eq!(c(11, 1, live), Ok(Fresh::Restarted));
            assert_eq!(c(9, 5000, live), Err(Replay::OldEpoch));
            assert_eq!(c(10, u64::MAX, live), Err(Replay::SeqJump));
            assert_eq!(c(10, 101, quiet), Ok(Fresh::First));
            if signed {
                assert_eq!(c(11, 1, quiet), Ok(Fresh::Restarted));
                assert_eq!(c(10, 100, quiet), Err(Replay::Stale));
                assert_eq!(c(9, 1, quiet), Err(Replay::OldEpoch));
            } else {
                assert_eq!(c(10, 100, quiet), Ok(Fresh::First));
                assert_eq!(c(9, 1, quiet), Ok(Fresh::First));
            }
        }
        assert_eq!(Window::check(None, 1, 1, t0, DEAD), Ok(Fresh::First));
    }

    #[test]
    fn restarts_order_by_epoch_then_sequence() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = (start_epoch(t), start_seq(t));
        let b = (
            start_epoch(t + Duration::from_micros(3)),
            start_seq(t + Duration::from_micros(3)),
        );
        let c = (
            start_epoch(t + Duration::from_secs(1)),
            start_seq(t + Duration::from_secs(1)),
        );
        assert!(a < b && b < c, "{a:?} {b:?} {c:?}");
        // The earlier run's sequence, even after a million heartbeats, stays below.
        assert!(a.1 + 1_000_000 < b.1);
        assert_eq!(start_epoch(UNIX_EPOCH), 1);
    }

    #[test]
    fn confirm_adopts_a_lower_epoch_once() {
        let t0 = Instant::now();
        let mut w = Window::new(100, 5, t0, true);
        assert_eq!(
            Window::check(Some(&w), 50, 1, t0 + MS, DEAD),
            Err(Replay::OldEpoch)
        );
        w.confirm(50, t0 + MS);
        assert_eq!(
            Window::check(Some(&w), 50, 1, t0 + 2 * MS, DEAD),
            Ok(Fresh::Next)
        );
        // Confirming the current epoch again changes nothing (no seq reset).
        let mut v = Window::new(50, 9, t0, true);
        v.confirm(50, t0);
        assert_eq!(v.seq, 9);
    }

    proptest! {
        /// Signed: a sender's genuine stream, replayed afterwards in any order and
        /// at any time, is never accepted again once the receiver has seen a later
        /// heartbeat of it.
        #[test]
        fn signed_replays_never_pass(
            gaps in proptest::collection::vec(1u64..5000, 1..40),
            restarts in proptest::collection::vec(any::<bool>(), 40),
            replay_at in 0u64..10_000_000,
            pick in any::<proptest::sample::Index>(),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let (mut epoch, mut seq) = (1000u32, 1u64);
            let mut sent = Vec::new();
            let mut w: Option<Window> = None;
            for (i, g) in gaps.iter().enumerate() {
                now += Duration::from_millis(*g);
                if restarts[i] { epoch += 1; seq = 1; } else { seq += 1; }
                sent.push((epoch, seq));
                let r = Window::check(w.as_ref(), epoch, seq, now, DEAD);
                // Genuine heartbeats in order are always accepted.
                prop_assert!(r.is_ok(), "{r:?}");
                w = Some(Window::new(epoch, seq, now, true));
            }
            let (e, s) = *pick.get(&sent);
            let later = now + Duration::from_millis(replay_at);
            prop_assert!(Window::check(w.as_ref(), e, s, later, DEAD).is_err());
        }

        /// Unsigned: whatever one forged datagram carried, the real sender is heard
        /// again at most one dead interval after it.
        #[test]
        fn unsigned_forgery_deafens_for_at_most_one_dead_interval(
            epoch in any::<u32>(), seq in any::<u64>(), real_seq in 1u64..1000,
        ) {
            let t0 = Instant::now();
            let forged = Window::new(epoch, seq, t0, false);
            let r = Window::check(Some(&forged), 5, real_seq, t0 + DEAD, DEAD);
            prop_assert_eq!(r, Ok(Fresh::First));
        }
    }
}
