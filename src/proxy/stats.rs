//! Counters, in one vocabulary for the whole proxy.
//!
//! Every set of counters is declared with `counters!`: a struct of atomics that
//! the hot path bumps ([`inc`]) and a plain `Copy` struct with the same field
//! names that [`snapshot`](ServiceStats::snapshot) returns for status pages and
//! tests. Two sets exist:
//!
//! * [`ServiceStats`] / [`ServiceCounts`]: one per service, for what the accept
//!   loop, the forwarding path and UDP sessions see;
//! * [`HandlerStats`] / [`HandlerCounts`]: one per proxy handler (`http`,
//!   `socks5`, `socks4`, `auto`), for what happens inside the proxy protocol.
//!
//! Gauges (connections in flight) are held right by an [`Active`] guard, which
//! decrements on every exit path, a cancelled task included. [`LogLimiter`]
//! keeps a failure that repeats per connection to one log line a second.

use std::sync::atomic::{AtomicU64, Ordering};

/// Count one event.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Declare a set of counters: the struct of atomics `$stats` and its snapshot
/// `$counts`, with the same fields.
macro_rules! counters {
    (
        $(#[$meta:meta])* $stats:ident / $(#[$cmeta:meta])* $counts:ident {
            $( $(#[$fmeta:meta])* $field:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $stats {
            $( $(#[$fmeta])* pub $field: AtomicU64, )*
        }

        $(#[$cmeta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $counts {
            $( $(#[$fmeta])* pub $field: u64, )*
        }

        impl $stats {
            /// A point-in-time copy (each counter read once, relaxed).
            pub fn snapshot(&self) -> $counts {
                $counts {
                    $( $field: self.$field.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

counters! {
    /// Counters of one service. Everything that ends a connection early is
    /// counted under its reason.
    ServiceStats /
    /// A plain copy of [`ServiceStats`].
    ServiceCounts {
        /// Connections accepted (TCP) or sessions opened (UDP).
        accepted,
        /// In flight now.
        active,
        /// Refused by access rules.
        denied,
        /// Closed at accept because of `max_connections`.
        over_limit,
        /// No node available, or every node failed to connect.
        no_node,
        /// Single connection attempts to nodes that failed.
        connect_failures,
        /// Closed by an idle timeout.
        idle_closed,
        /// Ended by an I/O error (a reset, a broken pipe).
        errors,
        /// Ended normally (both sides closed).
        completed,
        /// Cut because a drain's grace period ran out, or the address was released.
        killed,
        /// UDP: datagrams from clients.
        udp_in,
        /// UDP: datagrams to clients.
        udp_out,
        /// UDP: datagrams dropped (queue full, no node, send failed).
        udp_dropped,
    }
}

counters! {
    /// Per-handler counters, shared by every connection of one service. Their
    /// outcomes add up: `connections = completed + bad_request + auth_failed +
    /// handshake_timeout + target_failed + client_error + upstream_error +
    /// unsupported` (plus `active` while connections run).
    HandlerStats /
    /// A plain copy of [`HandlerStats`].
    HandlerCounts {
        /// Connections handed to the handler.
        connections,
        /// Connections currently being served (a gauge).
        active,
        /// HTTP requests and SOCKS commands received (several per keep-alive connection).
        requests,
        /// Connections that ended normally.
        completed,
        /// The client sent something that is not the protocol.
        bad_request,
        /// The client did not complete its request within `readTimeout`.
        handshake_timeout,
        /// Missing or wrong credentials.
        auth_failed,
        /// The target could not be reached.
        target_failed,
        /// The target was reached but misbehaved.
        upstream_error,
        /// A valid request for something the handler does not do.
        unsupported,
        /// The client's side failed (reset, broken pipe).
        client_error,
        /// SOCKS5 UDP associations opened.
        udp_associations,
        /// UDP datagrams relayed client → target.
        udp_datagrams_out,
        /// UDP datagrams relayed target → client.
        udp_datagrams_in,
        /// UDP datagrams dropped (malformed header, fragments, unknown sender, bad target).
        udp_dropped,
    }
}

/// Holds a gauge one higher while alive: `active` stays right however a
/// connection or session ends, a task dropped mid-way included.
#[must_use = "the gauge goes back down when the guard is dropped"]
pub struct Active<'a>(&'a AtomicU64);

impl<'a> Active<'a> {
    pub fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Active(gauge)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Lets one log line through per second and counts the ones held back, so a
/// flood of identical failures costs one line a second, with the count.
#[derive(Debug, Default)]
pub struct LogLimiter {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    /// `Some(n)` if a line may be logged now (`n` lines were held back since the
    /// last one), `None` if this one should be dropped.
    pub fn permit(&self) -> Option<u64> {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs()
            + 1;
        let last = self.last_second.load(Ordering::Relaxed);
        if last != now
            && self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn log_limiter_lets_one_line_a_second_through() {
        let l = LogLimiter::default();
        assert_eq!(l.permit(), Some(0));
        assert_eq!(l.permit(), None);
        assert_eq!(l.permit(), None);
        std::thread::sleep(Duration::from_millis(1050));
        assert_eq!(l.permit(), Some(2));
    }

    #[test]
    fn active_guard_goes_back_down() {
        let s = ServiceStats::default();
        {
            let _a = Active::new(&s.active);
            inc(&s.accepted);
            assert_eq!(s.snapshot().active, 1);
        }
        let c = s.snapshot();
        assert_eq!((c.active, c.accepted), (0, 1));
    }
}
