//! The machine's table of deadlines: one slot per timer kind, the earliest of them
//! is [`Machine::next_timeout`](super::Machine::next_timeout). The driver sleeps
//! until then and feeds the time back; the machine takes the expired timers and acts.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Timer {
    Heartbeat,
    /// One interval before `MasterDown`: start the probe early.
    Suspect,
    MasterDown,
    /// Safety net: a probe that never reports counts as "no answer".
    ProbeDeadline,
    /// Periodic target probe while MASTER (with targets) or FAULT.
    Health,
    GarpRefresh,
}

pub(super) const TIMERS: [Timer; 6] = [
    Timer::Heartbeat,
    Timer::Suspect,
    Timer::MasterDown,
    Timer::ProbeDeadline,
    Timer::Health,
    Timer::GarpRefresh,
];

/// A table of deadlines, one per timer kind.
#[derive(Debug, Default, Clone)]
pub(super) struct Timers {
    at: [Option<Instant>; 6],
}

impl Timers {
    pub(super) fn idx(t: Timer) -> usize {
        TIMERS.iter().position(|x| *x == t).unwrap_or(0)
    }
    pub(super) fn set(&mut self, t: Timer, at: Instant) {
        self.at[Self::idx(t)] = Some(at);
    }
    pub(super) fn stop(&mut self, t: Timer) {
        self.at[Self::idx(t)] = None;
    }
    #[cfg(test)]
    pub(super) fn get(&self, t: Timer) -> Option<Instant> {
        self.at[Self::idx(t)]
    }
    pub(super) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }
    /// Take (and clear) every timer that is due.
    pub(super) fn expired(&mut self, now: Instant) -> Vec<Timer> {
        let mut due = Vec::new();
        for (i, t) in TIMERS.iter().enumerate() {
            if self.at[i].is_some_and(|at| at <= now) {
                self.at[i] = None;
                due.push(*t);
            }
        }
        due
    }
}
