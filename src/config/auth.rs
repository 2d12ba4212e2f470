//! Credentials and secrets.

use std::fmt;

use serde::Deserialize;

/// A secret string: readable by the code, never printed. `Debug` and `Display` show
/// `MASKED`, so a config dumped into a log leaks nothing.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// GOST's `auth: {username, password}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub username: String,
    #[serde(default)]
    pub password: Secret,
}

impl AuthConfig {
    /// Whether `user` and `pass` are these credentials. No early exit on the
    /// first differing byte, so the time taken does not tell an attacker how
    /// much of a guess was right.
    pub fn matches(&self, user: &[u8], pass: &[u8]) -> bool {
        fn ct_eq(a: &[u8], b: &[u8]) -> bool {
            let mut diff = a.len() ^ b.len();
            for (i, x) in a.iter().enumerate() {
                diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
            }
            diff == 0
        }
        let u = ct_eq(self.username.as_bytes(), user);
        let p = ct_eq(self.password.expose().as_bytes(), pass);
        u & p
    }

    /// Whether an HTTP `Authorization` (or `Proxy-Authorization`) value is
    /// `Basic base64(user:pass)` with these credentials (RFC 7617: the scheme
    /// in any case; the password may hold colons, the user name may not).
    /// Used by the Web API, the metrics endpoint and the `http` handler.
    pub fn matches_basic(&self, value: &[u8]) -> bool {
        use base64::Engine as _;
        let Ok(value) = std::str::from_utf8(value) else {
            return false;
        };
        let Some((scheme, encoded)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        self.matches(&decoded[..colon], &decoded[colon + 1..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_masked() {
        let a = AuthConfig {
            username: "u".into(),
            password: Secret("hunter2".into()),
        };
        let s = format!("{a:?}");
        assert!(s.contains("MASKED") && !s.contains("hunter2"), "{s}");
    }

    #[test]
    fn credentials() {
        let a = AuthConfig {
            username: "user".into(),
            password: Secret("pass".into()),
        };
        assert!(a.matches(b"user", b"pass"));
        assert!(!a.matches(b"user", b"pas"));
        assert!(!a.matches(b"user", b"passs"));
        assert!(!a.matches(b"usex", b"pass"));
        assert!(!a.matches(b"", b""));
    }
}
