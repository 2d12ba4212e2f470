//! What the failover thread counts, for the metrics endpoint.
//!
//! The driver runs on a thread of its own (see [`driver`](super::driver)) and the
//! metrics endpoint on the proxy's runtime; they share this one set of counters.
//! A process runs one failover driver, so the set is a process-wide static
//! ([`global`]) rather than a handle threaded through every constructor.
//!
//! * heartbeat datagrams sent, and those dropped before the machine by reason
//!   ([`DropCounters`], counted by the driver);
//! * the machine's own counters (received, stale, replays, spoofed...), copied
//!   here after every event the driver hands it ([`FailoverCounters::set_machine`]):
//!   the machine stays free of shared state;
//! * gratuitous ARP frames sent (by [`arp::send_garp`](super::arp::send_garp));
//! * state transitions by `(from, to, reason)`, where the reason is the machine's
//!   text reduced to a short stable kind ([`reason_kind`]): addresses and
//!   durations in the text would make a new series per failover.
//!
//! None of this is on a per-connection path: the driver handles tens of events a
//! second, so the two small mutexes here cost nothing that matters.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex, MutexGuard};

use super::driver::DropCounters;
use super::machine::{Counters, State};

/// The failover counters of this process.
#[derive(Debug, Default)]
pub struct FailoverCounters {
    /// Heartbeat datagrams handed to the kernel (each destination counts).
    pub heartbeats_sent: AtomicU64,
    /// Heartbeat datagrams the kernel refused to send.
    pub heartbeat_send_errors: AtomicU64,
    /// Datagrams dropped before the machine: malformed or failing authentication.
    pub drops: DropCounters,
    /// Gratuitous ARP frames sent (a request and a reply per round).
    pub garp_sent: AtomicU64,
    machine: Mutex<Counters>,
    transitions: Mutex<BTreeMap<Transition, u64>>,
}

/// A counted state change: from, to, and the kind of reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Transition {
    pub from: &'static str,
    pub to: &'static str,
    pub reason: &'static str,
}

static GLOBAL: LazyLock<FailoverCounters> = LazyLock::new(FailoverCounters::default);

/// The counters of this process's failover driver.
pub fn global() -> &'static FailoverCounters {
    &GLOBAL
}

/// A poisoned lock only means a panic elsewhere while copying plain numbers:
/// the numbers are still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FailoverCounters {
    /// Copy the machine's counters (called by the driver after each event).
    pub fn set_machine(&self, c: &Counters) {
        let mut m = lock(&self.machine);
        if *m != *c {
            *m = c.clone();
        }
    }

    /// The machine's counters as last copied.
    pub fn machine(&self) -> Counters {
        lock(&self.machine).clone()
    }

    /// Count a state change.
    pub fn transition(&self, from: State, to: State, reason: &str) {
        let key = Transition {
            from: state_name(from),
            to: state_name(to),
            reason: reason_kind(reason),
        };
        *lock(&self.transitions).entry(key).or_insert(0) += 1;
    }

    /// Every transition seen so far, with its count.
    pub fn transitions(&self) -> Vec<(Transition, u64)> {
        lock(&self.transitions)
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

/// The label value of a state: lower case, as Prometheus labels usually are.
pub fn state_name(s: State) -> &'static str {
    match s {
        State::Init => "init",
        State::Backup => "backup",
        State::Master => "master",
        State::Fault => "fault",
        State::Stopped => "stopped",
    }
}

/// The states a node reports in `gateway_failover_state`.
pub const STATES: [State; 5] = [
    State::Init,
    State::Backup,
    State::Master,
    State::Fault,
    State::Stopped,
];

/// The kind of a transition reason, from the machine's text. The texts are
/// written in `machine.rs` and `machine/probing.rs` (the unit test below lists
/// each); one this does not know is `other`, so a new reason costs a label value,
/// never a series per event.
pub fn reason_kind(reason: &str) -> &'static str {
    // Order matters: "... and no probe target answers: this node is cut off" is a
    // takeover that found itself cut off, not a target failure of a master.
    const KINDS: &[(&str, &str)] = &[
        ("standby requested", "standby"),
        ("startup", "startup"),
        ("shutdown requested", "shutdown"),
        ("higher-ranked master", "higher_master"),
        ("preempting", "preempt"),
        ("resigned", "master_resigned"),
        ("link down", "link_down"),
        ("this node is cut off", "cut_off"),
        ("is in use by", "vip_in_use"),
        ("no probe target answers", "targets_lost"),
        ("the VIP is free again", "vip_free"),
        ("link up", "link_up"),
        ("silent for", "master_dead"),
        ("no master heard", "no_master"),
    ];
    KINDS
        .iter()
        .find(|(needle, _)| reason.contains(needle))
        .map_or("other", |(_, kind)| kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_the_machine_gives_has_a_kind() {
        // The texts of machine.rs and machine/probing.rs, as they are built there.
        let cases = [
            ("startup", "startup"),
            ("shutdown requested", "shutdown"),
            (
                "higher-ranked master 10.0.0.2 (priority 200) heard",
                "higher_master",
            ),
            (
                "preempting lower-ranked master 10.0.0.1 (priority 100)",
                "preempt",
            ),
            ("master 10.0.0.1 resigned", "master_resigned"),
            ("link down", "link_down"),
            ("no probe target answers (twice in a row)", "targets_lost"),
            (
                "master 10.0.0.1 silent for 300ms and no probe target answers: this node is cut off",
                "cut_off",
            ),
            (
                "no master heard within 300ms but the VIP 10.0.0.100 is in use by 02:00:00:00:00:09, which is not a node of this group: not binding it (checking again in 1s)",
                "vip_in_use",
            ),
            ("the VIP is free again", "vip_free"),
            ("link up and probe targets answer", "link_up"),
            ("link up (no probe targets to ask)", "link_up"),
            (
                "master 10.0.0.1 silent for 300ms and its echo check failed",
                "master_dead",
            ),
            (
                "master 10.0.0.1 silent for 300ms; peer 10.0.0.1 answers as Backup and ranks lower",
                "master_dead",
            ),
            ("master 10.0.0.1 silent for 300ms", "master_dead"),
            ("no master heard within 300ms", "no_master"),
            (
                "no master heard within 300ms and its echo check failed",
                "no_master",
            ),
            ("standby requested: the VIP is left to 10.0.0.2", "standby"),
            (
                "standby requested: forced: no healthy peer is heard, nobody holds the VIP",
                "standby",
            ),
            ("something new", "other"),
        ];
        for (text, kind) in cases {
            assert_eq!(reason_kind(text), kind, "{text}");
        }
    }

    #[test]
    fn transitions_are_counted_by_kind() {
        let c = FailoverCounters::default();
        c.transition(
            State::Backup,
            State::Master,
            "master 10.0.0.1 silent for 1s",
        );
        c.transition(
            State::Backup,
            State::Master,
            "master 10.0.0.2 silent for 2s",
        );
        c.transition(
            State::Master,
            State::Backup,
            "higher-ranked master 10.0.0.3 (priority 9) heard",
        );
        let t = c.transitions();
        assert_eq!(t.len(), 2, "{t:?}");
        assert!(t.contains(&(
            Transition {
                from: "backup",
                to: "master",
                reason: "master_dead"
            },
            2
        )));
    }
}
