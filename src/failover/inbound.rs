//! The first steps of a datagram from the LAN, before the state machine sees it.
//!
//! [`accept`] decodes it ([`super::wire`]) and authenticates it
//! ([`super::auth::Keyring`]); what fails is dropped and counted by reason. What
//! passes goes to [`Machine::handle_heartbeat_from`](super::machine::Machine::handle_heartbeat_from)
//! with its source address, where the replay and peer-table rules apply.
//!
//! A node under attack, or two nodes with different secrets, would drop thousands
//! of datagrams a minute: [`BurstLog`] lets the first drop from a sender be logged
//! with its address and reason, then at most one line per sender every
//! [`BURST_WINDOW`], with the number left unlogged in between.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::auth::{AuthError, Keyring, Trust};
use super::wire::{DecodeError, Heartbeat};

/// Why a datagram was dropped before the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("malformed: {0}")]
    Decode(#[from] DecodeError),
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
}

/// Decode and authenticate one datagram.
pub fn accept(bytes: &[u8], keys: &Keyring) -> Result<(Heartbeat, Trust), Dropped> {
    let hb = Heartbeat::decode(bytes)?;
    let trust = keys.verify_heartbeat(&hb, bytes)?;
    Ok((hb, trust))
}

/// At most one log line per sender per window.
pub const BURST_WINDOW: Duration = Duration::from_secs(10);
/// Senders tracked one by one; beyond that they share one entry.
const MAX_SENDERS: usize = 256;

#[derive(Debug, Clone, Copy)]
struct Burst {
    logged_at: Instant,
    suppressed: u64,
}

/// Rate limit for "dropped from X" log lines, keyed by sender.
#[derive(Debug, Default)]
pub struct BurstLog {
    senders: HashMap<IpAddr, Burst>,
}

impl BurstLog {
    /// A drop from `from` at `now`: `Some(n)` means log it now, `n` drops from the
    /// same sender went unlogged since its last line; `None` means stay quiet.
    pub fn note(&mut self, from: IpAddr, now: Instant) -> Option<u64> {
        let key = if self.senders.len() >= MAX_SENDERS && !self.senders.contains_key(&from) {
            // A flood of senders: drop entries whose window is over, else share one.
            self.senders
                .retain(|_, b| now.saturating_duration_since(b.logged_at) < BURST_WINDOW);
            if self.senders.len() >= MAX_SENDERS {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                from
            }
        } else {
            from
        };
        match self.senders.get_mut(&key) {
            Some(b) if now.saturating_duration_since(b.logged_at) < BURST_WINDOW => {
                b.suppressed += 1;
                None
            }
            Some(b) => {
                let n = b.suppressed;
                *b = Burst {
                    logged_at: now,
                    suppressed: 0,
                };
                Some(n)
            }
            None => {
                self.senders.insert(
                    key,
                    Burst {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_line_per_sender_per_window_with_the_count_in_between() {
        let t0 = Instant::now();
        let mut l = BurstLog::default();
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        let b: IpAddr = "10.0.0.8".parse().unwrap();
        assert_eq!(l.note(a, t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(l.note(a, t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(
            l.note(b, t0),
            Some(0),
            "another sender is logged on its own"
        );
        assert_eq!(l.note(a, t0 + BURST_WINDOW), Some(1000));
    }

    #[test]
    fn a_flood_of_senders_stays_bounded() {
        let t0 = Instant::now();
        let mut l = BurstLog::default();
        let mut lines = 0;
        for i in 0..100_000u32 {
            if l.note(IpAddr::V4(Ipv4Addr::from(i)), t0).is_some() {
                lines += 1;
            }
        }
        assert!(l.senders.len() <= MAX_SENDERS + 1);
        assert!(lines <= MAX_SENDERS + 1, "{lines} lines");
    }

    proptest! {
        /// Random datagrams, signed or not, never panic and never authenticate
        /// under a key they were not made with.
        #[test]
        fn random_datagrams_are_dropped_or_unsigned(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let keys = Keyring::from_secrets(&["correct horse battery staple"]);
            prop_assert!(accept(&data, &keys).is_err());
            if let Ok((_, t)) = accept(&data, &Keyring::default()) {
                prop_assert_eq!(t, Trust::Unsigned);
            }
        }
    }
}
