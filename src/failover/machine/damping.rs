//! Flap damping: a score of recent flaps that decays, and the hold-downs it
//! imposes (see the machine's module docs, rule "Flap damping").

use std::time::{Duration, Instant};

/// How long the flap score takes to halve.
pub const DAMP_HALF_LIFE: Duration = Duration::from_secs(60);
/// The longest hold-down flap damping imposes.
pub const MAX_HOLD: Duration = Duration::from_secs(8);

/// The flap score: +1 per flap, halving every [`DAMP_HALF_LIFE`] (the shape of BGP
/// route flap damping).
#[derive(Debug, Clone, Copy)]
pub(super) struct Damping {
    pub(super) score: f64,
    pub(super) at: Instant,
}

impl Damping {
    fn score(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.at).as_secs_f64();
        self.score * 0.5f64.powf(age / DAMP_HALF_LIFE.as_secs_f64())
    }

    pub(super) fn bump(&mut self, now: Instant) {
        self.score = self.score(now) + 1.0;
        self.at = now;
    }

    /// The damping level: `round(score) − 1`, so the first flap is free (a link
    /// that goes down once is not a flapping link); 0 when the path is calm.
    pub(super) fn level(&self, now: Instant) -> u32 {
        (self.score(now).round() as u32).saturating_sub(1).min(16)
    }

    /// `base × 2^level`, capped at [`MAX_HOLD`] (never below `base`).
    pub(super) fn hold(&self, now: Instant, base: Duration) -> Duration {
        let lvl = self.level(now);
        if lvl == 0 {
            return base;
        }
        (base * (1u32 << lvl)).min(MAX_HOLD.max(base))
    }
}
