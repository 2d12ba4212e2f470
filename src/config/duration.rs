//! Durations as the config writes them: Go style (`"500ms"`, `"2s"`, `"1m30s"`,
//! `"1h"`) or a bare number of seconds. One type for every duration option, so
//! one parser and one error message.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written Go style. `0` means "not set".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DurationStr(pub Duration);

impl DurationStr {
    /// `None` for 0 ("not set").
    pub fn get(&self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }

    /// Parse `"1m30s"`, `"500ms"`, `"2h"`, `"10"` (seconds).
    pub fn parse(s: &str) -> Result<DurationStr, String> {
        let s = s.trim();
        let bad = || format!("{s:?}: expected a duration like \"500ms\", \"10s\", \"1m30s\"");
        if let Ok(secs) = s.parse::<u64>() {
            return Ok(DurationStr(Duration::from_secs(secs)));
        }
        if s.is_empty() {
            return Err(bad());
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
            total += Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?;
        }
        Ok(DurationStr(total))
    }
}

impl fmt::Debug for DurationStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(DurationStr(Duration::from_secs(n))),
            Raw::S(s) => DurationStr::parse(&s).map_err(serde::de::Error::custom),
        }
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
    }
}
