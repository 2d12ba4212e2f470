//! Configured durations meeting the clock.
//!
//! `Instant + Duration` panics on overflow ("overflow when adding duration to
//! instant"), and tokio's timer adds a little more to every deadline it is given.
//! Config validation caps durations at [`MAX_DURATION`] (365 days), which is far
//! from any overflow; these helpers make the run-time side safe on its own too, so
//! a value that slipped past validation (a future option, a test) can only mean
//! "a very long time", never a panic. Every place where a configured duration is
//! added to a clock reading goes through them.

use std::time::Duration;

pub use crate::config::service::MAX_DURATION;

/// Longest span ever added to a clock reading: a deadline further out than this
/// is as good as never (tokio uses the same idea, 30 years, for "no deadline").
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `start + d`, saturating at a point so far away it never comes.
pub fn deadline_after(start: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    let d = d.min(FAR_FUTURE);
    start.checked_add(d).unwrap_or(start)
}

/// [`deadline_after`] measured from now.
pub fn deadline_in(d: Duration) -> tokio::time::Instant {
    deadline_after(tokio::time::Instant::now(), d)
}

/// [`deadline_after`] for `std::time::Instant` (the balancer's passive health).
pub fn std_deadline_after(start: std::time::Instant, d: Duration) -> std::time::Instant {
    let d = d.min(FAR_FUTURE);
    start.checked_add(d).unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any duration at all, accepted by the config or not, gives a deadline
        /// and a working timer, never a panic.
        #[test]
        fn any_duration_gives_a_deadline(secs in proptest::num::u64::ANY, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            let now = tokio::time::Instant::now();
            let t = deadline_after(now, d);
            proptest::prop_assert!(t >= now);
            proptest::prop_assert!(std_deadline_after(std::time::Instant::now(), d) >= now.into_std());
            if d <= MAX_DURATION {
                proptest::prop_assert_eq!(t - now, d);
            }
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            rt.block_on(async {
                // The timer wheel adds to the deadline once more: must not panic.
                let r = tokio::time::timeout_at(deadline_in(d), std::future::ready(())).await;
                assert!(r.is_ok());
                let mut sleep = std::pin::pin!(tokio::time::sleep_until(deadline_in(d)));
                let polled = futures::poll!(sleep.as_mut());
                assert_eq!(polled.is_ready(), d.is_zero());
            });
        }
    }
}
