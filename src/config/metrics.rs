//! The `metrics:` section (GOST's names) and the `-metrics` command-line form.
//!
//! ```yaml
//! metrics:
//!   addr: 127.0.0.1:9000   # ":9000" listens on every IPv4 address
//!   path: /metrics         # the default
//!   auth:                  # optional: HTTP basic auth
//!     username: prom
//!     password: change-me
//! ```
//!
//! Off unless the section or `-metrics` is given; the flag replaces the section.

use serde::Deserialize;

use super::FieldError;
use super::auth::AuthConfig;
use super::flag::FlagUrl;
use super::service::ListenAddr;

/// GOST's `metrics: {addr, path, auth}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where the metrics endpoint listens.
    pub addr: ListenAddr,
    /// The path scrapes use; other paths answer 404.
    #[serde(default = "default_path")]
    pub path: String,
    /// HTTP basic auth; without it anyone who reaches `addr` may scrape.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

/// GOST's default path: `/metrics`.
pub fn default_path() -> String {
    "/metrics".to_string()
}

impl MetricsConfig {
    /// Checks that need nothing but the file (`section` is the field path).
    pub fn validate(&self, section: &str) -> Result<(), FieldError> {
        if !self.path.starts_with('/') || self.path.contains(['?', '#', ' ']) {
            return Err(FieldError::new(
                format!("{section}.path"),
                format!(
                    "{:?}: expected a path starting with / (e.g. /metrics)",
                    self.path
                ),
            ));
        }
        if let Some(a) = &self.auth {
            if a.username.is_empty() {
                return Err(FieldError::new(
                    format!("{section}.auth.username"),
                    "empty username: expected a user name (or no auth section at all)",
                ));
            }
            if a.password.expose().is_empty() {
                return Err(FieldError::new(
                    format!("{section}.auth.password"),
                    "empty password: expected a password (or no auth section at all)",
                ));
            }
        }
        Ok(())
    }

    /// `-metrics "user:pass@127.0.0.1:9000?path=/metrics"` (GOST's form).
    pub fn from_flag(s: &str) -> Result<MetricsConfig, String> {
        let f = FlagUrl::parse("metrics", s)?;
        let mut cfg = MetricsConfig {
            addr: f.addr,
            path: default_path(),
            auth: f.auth,
        };
        for (k, v) in f.options {
            match k.as_str() {
                "path" => cfg.path = v,
                _ => return Err(format!("-metrics: unknown option {k:?}: expected path")),
            }
        }
        cfg.validate("-metrics")
            .map_err(|e| format!("{}: {}", e.field, e.message))?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, from_yaml};

    #[test]
    fn section_with_defaults() {
        let c: MetricsConfig = from_yaml("addr: \":9000\"\n").unwrap();
        assert_eq!(c.addr.addr.to_string(), "0.0.0.0:9000");
        assert_eq!(c.path, "/metrics");
        assert!(c.auth.is_none());
        c.validate("metrics").unwrap();
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let e = from_yaml::<MetricsConfig>("addr: \":9000\"\npaht: /m\n").unwrap_err();
        assert!(e.to_string().contains("paht"), "{e}");
        let e = Config::from_str_named(
            "services: [{name: s, addr: \"127.0.0.1:0\", handler: {type: tcp}, listener: {type: tcp}, forwarder: {nodes: [{addr: \"127.0.0.1:9\"}]}}]\nmetrics:\n  addr: \":9000\"\n  path: metrics\n",
            std::path::Path::new("g.yml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("g.yml:") && e.contains("metrics.path") && e.contains("starting with /"),
            "{e}"
        );
        let c: MetricsConfig =
            from_yaml("addr: \":9000\"\nauth: {username: u, password: \"\"}\n").unwrap();
        let e = c.validate("metrics").unwrap_err();
        assert_eq!(e.field, "metrics.auth.password");
    }

    #[test]
    fn flag_form_and_masking() {
        let c = MetricsConfig::from_flag("prom:hunter2@127.0.0.1:9100?path=/m").unwrap();
        assert_eq!(c.addr.addr.to_string(), "127.0.0.1:9100");
        assert_eq!(c.path, "/m");
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2") && s.contains("MASKED"), "{s}");
        let c = MetricsConfig::from_flag(":9000").unwrap();
        assert_eq!((c.path.as_str(), c.auth.is_none()), ("/metrics", true));
        assert!(MetricsConfig::from_flag(":9000?path=m").is_err());
        assert!(MetricsConfig::from_flag(":9000?nope=1").is_err());
    }
}
