//! Durations as the config writes them: Go style (`"500ms"`, `"2s"`, `"1m30s"`,
//! `"1h"`) or a number of seconds (`10`, `1.5`). One type for every duration
//! option (the handlers' `readTimeout`/`responseTimeout` included), so one parser,
//! one ceiling and one error message.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written Go style. `0` means "not set".
///
/// This is the one place the config turns text into durations (the handlers'
/// `readTimeout`/`responseTimeout` go through it too), so the ceiling lives here:
/// nothing above [`MAX_DURATION`] is accepted, and every accepted value can be
/// added to a clock reading without overflow.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DurationStr(pub Duration);

/// The longest duration a config may ask for: 365 days. Far beyond any useful
/// timeout or interval, and far below what makes `Instant + duration` overflow
/// (a value like `9223372036854775807s` used to panic at run time).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a duration may look like, for error messages.
const DURATION_EXPECTED: &str = "expected a duration like \"500ms\", \"10s\", \"1m30s\", \"2h\" or a number of seconds like 1.5, at most 8760h (365 days)";

impl DurationStr {
    /// `None` for 0 ("not set").
    pub fn get(&self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }

    /// Parse `"1m30s"`, `"500ms"`, `"2h"`, `"10"` or `"1.5"` (seconds), at most
    /// [`MAX_DURATION`].
    pub fn parse(s: &str) -> Result<DurationStr, String> {
        let s = s.trim();
        let bad = || format!("{s:?}: {DURATION_EXPECTED}");
        if s.is_empty() {
            return Err(bad());
        }
        // A bare number is seconds, written as YAML would (`10`, `1.5`).
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            let secs: f64 = s.parse().map_err(|_| bad())?;
            return Self::from_secs_f64(secs).map_err(|_| bad());
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let value: f64 = rest[..num_end].parse().map_err(|_| bad())?;
            rest = &rest[num_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_end] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_end..];
            let part = Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?;
            total = total.checked_add(part).ok_or_else(bad)?;
        }
        Self::checked(total).map_err(|_| bad())
    }

    /// A number of seconds (YAML `30` or `1.5`).
    pub fn from_secs_f64(secs: f64) -> Result<DurationStr, String> {
        let d = Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{secs}: {DURATION_EXPECTED}"))?;
        Self::checked(d).map_err(|_| format!("{secs}: {DURATION_EXPECTED}"))
    }

    /// Refuse anything above the ceiling.
    fn checked(d: Duration) -> Result<DurationStr, ()> {
        if d > MAX_DURATION {
            return Err(());
        }
        Ok(DurationStr(d))
    }
}

impl fmt::Debug for DurationStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for DurationStr {
    /// A string (`"1m30s"`), an integer or a float (seconds): one rule for every
    /// duration field, with one error message that names what is expected.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationStr, E> {
                // Exact for whole seconds (an f64 would round above 2^53).
                DurationStr::checked(Duration::from_secs(v))
                    .map_err(|_| E::custom(format!("{v}: {DURATION_EXPECTED}")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationStr, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("{v}: {DURATION_EXPECTED}"))),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationStr, E> {
                DurationStr::from_secs_f64(v).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationStr, E> {
                DurationStr::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s| DurationStr::parse(s).map(|d| d.0);
        assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("7"), Ok(Duration::from_secs(7)));
        assert!(d("10 parsecs").is_err());
        assert!(d("s").is_err());
        assert!(d("").is_err());
        assert_eq!(d("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("8760h"), Ok(MAX_DURATION));
        // Above the ceiling, or overflowing while adding parts: refused, no panic.
        for huge in [
            "8760h1s",
            "9223372036854775807s",
            "18446744073709551615ms",
            "18446744073709551615",
            "99999999999999999999h99999999999999999999h",
        ] {
            let e = d(huge).unwrap_err();
            assert!(e.contains("365 days"), "{huge}: {e}");
        }
    }

    proptest::proptest! {
        /// Any text: a clean error or a duration within the ceiling, never a panic.
        #[test]
        fn any_duration_text_parses_or_is_refused(s in "[0-9.]{0,24}(ns|us|ms|s|m|h|x)?([0-9.]{0,24}(ns|ms|s|m|h))?") {
            if let Ok(d) = DurationStr::parse(&s) {
                proptest::prop_assert!(d.0 <= MAX_DURATION);
            }
        }

        #[test]
        fn any_number_is_seconds_or_refused(v in proptest::num::f64::ANY) {
            match DurationStr::from_secs_f64(v) {
                Ok(d) => proptest::prop_assert!(d.0 <= MAX_DURATION && v >= 0.0),
                Err(e) => proptest::prop_assert!(e.contains("365 days")),
            }
        }
    }

    #[test]
    fn yaml_numbers_are_seconds() {
        #[derive(Deserialize)]
        struct T {
            d: DurationStr,
        }
        let d = |y: &str| crate::config::from_yaml::<T>(y).map(|t| t.d.0);
        assert_eq!(d("d: 1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(d("d: 30").unwrap(), Duration::from_secs(30));
        assert_eq!(d("d: \"2m\"").unwrap(), Duration::from_secs(120));
        for bad in [
            "d: -1",
            "d: -0.5",
            "d: .nan",
            "d: .inf",
            "d: 1e300",
            "d: 31536001",
            "d: true",
        ] {
            let e = d(bad).unwrap_err().to_string();
            assert!(e.contains("expected a duration"), "{bad}: {e}");
        }
    }
}
