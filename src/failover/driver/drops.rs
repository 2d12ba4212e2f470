//! Datagrams dropped before the machine: counted by cause ([`DropCounters`],
//! exported as metrics) and logged once per sender and burst, so that a flood of
//! forged or foreign heartbeats costs a counter, not the log.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::failover::auth::AuthError;
use crate::failover::inbound::{BurstLog, Dropped};
use crate::failover::machine::Counters;
use crate::failover::wire::DecodeError;

/// Counters of heartbeat datagrams dropped before the machine, by cause:
/// malformed ones (the first five), then those failing authentication.
#[derive(Debug, Default)]
pub struct DropCounters {
    pub short: AtomicU64,
    pub magic: AtomicU64,
    pub version: AtomicU64,
    pub state: AtomicU64,
    /// An authentication length that does not match the datagram.
    pub auth: AtomicU64,
    /// Unsigned while this node requires signatures.
    pub unsigned: AtomicU64,
    /// Signed with a key this node does not have (a different secret).
    pub unknown_key: AtomicU64,
    /// A known key id with a wrong MAC: forged or corrupted.
    pub bad_mac: AtomicU64,
    /// An authentication type this version does not know.
    pub auth_type: AtomicU64,
}

impl DropCounters {
    pub(super) fn count(&self, e: Dropped) {
        let c = match e {
            Dropped::Decode(DecodeError::Short) => &self.short,
            Dropped::Decode(DecodeError::Magic) => &self.magic,
            Dropped::Decode(DecodeError::Version) => &self.version,
            Dropped::Decode(DecodeError::State) => &self.state,
            Dropped::Decode(DecodeError::AuthLen) => &self.auth,
            Dropped::Auth(AuthError::Unsigned) => &self.unsigned,
            Dropped::Auth(AuthError::UnknownKey(_)) => &self.unknown_key,
            Dropped::Auth(AuthError::BadMac) => &self.bad_mac,
            Dropped::Auth(AuthError::Type(_)) => &self.auth_type,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Malformed datagrams (decode errors).
    pub fn total(&self) -> u64 {
        [
            &self.short,
            &self.magic,
            &self.version,
            &self.state,
            &self.auth,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// Datagrams that failed authentication.
    pub fn auth_failed(&self) -> u64 {
        [
            &self.unsigned,
            &self.unknown_key,
            &self.bad_mac,
            &self.auth_type,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// Log a dropped datagram, once per sender and burst. Authentication failures
/// are warnings (a different secret is an error: it splits the group); malformed
/// datagrams are for debugging.
pub(super) fn log_drop(
    log: &mut BurstLog,
    from: SocketAddr,
    why: &dyn std::fmt::Display,
    error: bool,
) {
    let Some(more) = log.note(from.ip(), Instant::now()) else {
        return;
    };
    let from = from.ip();
    if error {
        tracing::error!(%from, suppressed = more, "heartbeat from {from} dropped: {why}; the nodes' secrets differ? They cannot hear each other and each acts alone (see docs/security.md)");
    } else {
        tracing::warn!(%from, suppressed = more, "heartbeat from {from} dropped: {why} (logged once per sender every 10 s)");
    }
}

/// The machine drops a heartbeat by counting it: tell which count grew.
pub(super) fn machine_drop(before: &Counters, after: &Counters) -> Option<&'static str> {
    if after.old_epoch > before.old_epoch {
        Some("an epoch older than the sender's current one (a replay of an earlier run?)")
    } else if after.seq_jump > before.seq_jump {
        Some("its sequence number jumps further than the sender can have counted (forged?)")
    } else if after.spoofed > before.spoofed {
        Some("it names another node than the address it came from (spoofed?)")
    } else if after.table_full > before.table_full {
        Some("the peer table is full (a flood of senders?)")
    } else {
        // Stale ones are expected: with peer_ip set every heartbeat arrives twice.
        None
    }
}
