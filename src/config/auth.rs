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
}
