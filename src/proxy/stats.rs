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
//! [`Histogram`] is a lock-free histogram (one atomic add per bucket hit) for
//! connection durations and connect latencies; the metrics endpoint
//! (`crate::metrics`) reads all of these at scrape time.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Count one event.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Declare a set of counters: the struct of atomics `$stats` and its snapshot
/// `$counts`, with the same fields.
/// An optional `histograms { name: Type, }` list adds histogram fields, which
/// are not part of the snapshot (read them with [`Histogram::snapshot`]).
macro_rules! counters {
    (
        $(#[$meta:meta])* $stats:ident / $(#[$cmeta:meta])* $counts:ident {
            $( $(#[$fmeta:meta])* $field:ident, )*
        }
        $( histograms { $( $(#[$hmeta:meta])* $hist:ident: $htype:ty, )* } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $stats {
            $( $(#[$fmeta])* pub $field: AtomicU64, )*
            $( $( $(#[$hmeta])* pub $hist: $htype, )* )?
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
        /// Bytes received from clients (TCP payload after TLS, UDP payload),
        /// counted as they move (GOST's `transfer_input_bytes`).
        bytes_in,
        /// Bytes sent to clients, counted as they move.
        bytes_out,
    }
    histograms {
        /// How long connections (or UDP sessions) lasted, counted when they end.
        duration: Histogram<RequestBuckets>,
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

/// The bucket bounds (seconds) of one kind of [`Histogram`].
pub trait Buckets {
    /// Upper bounds in increasing order; at most [`MAX_BUCKETS`].
    const BOUNDS: &'static [f64];
}

/// Most finite buckets a [`Histogram`] can have.
pub const MAX_BUCKETS: usize = 16;

/// GOST's buckets for `gost_service_request_duration_seconds`: a connection
/// lasts from milliseconds to minutes.
#[derive(Debug)]
pub struct RequestBuckets;

impl Buckets for RequestBuckets {
    const BOUNDS: &'static [f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0,
    ];
}

/// Connecting to a node on the LAN takes well under a millisecond; a slow or
/// distant one up to the connect timeout.
#[derive(Debug)]
pub struct ConnectBuckets;

impl Buckets for ConnectBuckets {
    const BOUNDS: &'static [f64] = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
}

/// A Prometheus-style histogram without locks: an observation is two relaxed
/// atomic adds (its bucket and the sum), so it can sit on the path of
/// every connection. Buckets are stored per bucket and made cumulative when read.
pub struct Histogram<B> {
    /// `counts[i]` counts values in `(BOUNDS[i-1], BOUNDS[i]]`; the one after the
    /// last bound counts the rest (`+Inf`).
    counts: [AtomicU64; MAX_BUCKETS + 1],
    sum_nanos: AtomicU64,
    buckets: PhantomData<B>,
}

impl<B> Default for Histogram<B> {
    fn default() -> Self {
        Histogram {
            counts: Default::default(),
            sum_nanos: AtomicU64::new(0),
            buckets: PhantomData,
        }
    }
}

impl<B> std::fmt::Debug for Histogram<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("sum_nanos", &self.sum_nanos.load(Ordering::Relaxed))
            .finish()
    }
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramCounts {
    /// `(upper bound, count in that bucket alone)`, the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    /// Sum of the observed values, in seconds.
    pub sum: f64,
}

impl<B: Buckets> Histogram<B> {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = B::BOUNDS.partition_point(|b| *b < secs).min(MAX_BUCKETS);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramCounts {
        let n = B::BOUNDS.len().min(MAX_BUCKETS);
        let mut buckets: Vec<(f64, u64)> = B::BOUNDS[..n]
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        buckets.push((f64::INFINITY, self.counts[n].load(Ordering::Relaxed)));
        HistogramCounts {
            // The count is the sum of the buckets read, so the two always agree.
            count: buckets.iter().map(|(_, c)| c).sum(),
            buckets,
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// Observes how long it lived into a histogram when dropped: a connection is
/// timed however it ends, a cancelled task included.
#[must_use = "the time is observed when the guard is dropped"]
pub struct Timed<'a, B: Buckets>(&'a Histogram<B>, std::time::Instant);

impl<'a, B: Buckets> Timed<'a, B> {
    pub fn new(h: &'a Histogram<B>) -> Self {
        Timed(h, std::time::Instant::now())
    }
}

impl<B: Buckets> Drop for Timed<'_, B> {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed());
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
    fn histogram_buckets_hold_their_upper_bound() {
        let h: Histogram<RequestBuckets> = Histogram::default();
        h.observe(Duration::from_millis(5)); // exactly the first bound: le="0.005"
        h.observe(Duration::from_millis(6));
        h.observe(Duration::from_secs(3600)); // beyond the last: +Inf
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets.len(), RequestBuckets::BOUNDS.len() + 1);
        assert_eq!(s.buckets[0], (0.005, 1));
        assert_eq!(s.buckets[1], (0.01, 1));
        assert_eq!(*s.buckets.last().unwrap(), (f64::INFINITY, 1));
        assert!((s.sum - 3600.011).abs() < 1e-6, "{}", s.sum);
        const {
            assert!(RequestBuckets::BOUNDS.len() <= MAX_BUCKETS);
            assert!(ConnectBuckets::BOUNDS.len() <= MAX_BUCKETS);
        }
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
