//! The `api:` section (GOST's names) and the `-api` command-line form; the
//! server that serves it is `crate::api`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::FieldError;
use crate::config::auth::AuthConfig;
use crate::config::service::ListenAddr;

/// `api: {addr, pathPrefix, accesslog, auth, certFile, keyFile}` as in GOST v3,
/// plus `saveDirs`: where `POST /config?path=` may write besides the directory of
/// the running config file. Off unless the section (or `-api`) is given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiConfig {
    /// `":18080"` listens on every address; the sample binds `127.0.0.1:18080`.
    pub addr: ListenAddr,
    /// Prefix of every route, e.g. `/api` (the status page is served at `{prefix}/`).
    #[serde(default)]
    pub path_prefix: String,
    /// Log one line per request.
    #[serde(default)]
    pub accesslog: bool,
    /// HTTP basic auth on everything but the status page's HTML (see docs/api.md).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS: both or neither.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Extra directories `POST /config?path=` may write to.
    #[serde(default)]
    pub save_dirs: Vec<PathBuf>,
}

impl ApiConfig {
    /// Checks that need nothing but the file (`section` is the field path, `api`).
    pub fn validate(&self, section: &str) -> Result<(), FieldError> {
        if !self.path_prefix.is_empty()
            && (!self.path_prefix.starts_with('/') || self.path_prefix.ends_with('/'))
        {
            return Err(FieldError::new(
                format!("{section}.pathPrefix"),
                format!(
                    "{:?}: expected a path starting with / and not ending with / (e.g. /api)",
                    self.path_prefix
                ),
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(FieldError::new(
                format!("{section}.certFile"),
                "certFile and keyFile go together: set both or neither",
            ));
        }
        if let Some(a) = &self.auth
            && a.password.expose().is_empty()
        {
            return Err(FieldError::new(
                format!("{section}.auth.password"),
                "empty password: expected a password (or no auth section at all)",
            ));
        }
        Ok(())
    }

    /// `-api "user:pass@127.0.0.1:18080?pathPrefix=/api&accesslog=true"` (GOST's
    /// `-api` form: `[user:pass@]addr[?pathPrefix=..&accesslog=..]`).
    pub fn from_flag(s: &str) -> Result<ApiConfig, String> {
        let flag = crate::config::flag::FlagUrl::parse("api", s)?;
        let mut cfg = ApiConfig {
            addr: flag.addr,
            path_prefix: String::new(),
            accesslog: false,
            auth: flag.auth,
            cert_file: None,
            key_file: None,
            save_dirs: Vec::new(),
        };
        for (k, v) in &flag.options {
            let v = v.as_str();
            match k.as_str() {
                "pathPrefix" => cfg.path_prefix = v.to_string(),
                "accesslog" => cfg.accesslog = matches!(v, "true" | "1" | ""),
                "certFile" => cfg.cert_file = Some(PathBuf::from(v)),
                "keyFile" => cfg.key_file = Some(PathBuf::from(v)),
                _ => {
                    return Err(format!(
                        "-api: unknown option {k:?}: expected pathPrefix, accesslog, certFile or keyFile"
                    ));
                }
            }
        }
        cfg.validate("-api")
            .map_err(|e| format!("{}: {}", e.field, e.message))?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_form() {
        let c = ApiConfig::from_flag("admin:s3cret@127.0.0.1:18080?pathPrefix=/api").unwrap();
        assert_eq!(c.addr.addr.to_string(), "127.0.0.1:18080");
        assert_eq!(c.path_prefix, "/api");
        let a = c.auth.unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.expose()),
            ("admin", "s3cret")
        );
        let c = ApiConfig::from_flag(":18080").unwrap();
        assert!(c.auth.is_none() && c.path_prefix.is_empty());
        assert!(ApiConfig::from_flag("u@:1").is_err());
        assert!(ApiConfig::from_flag(":1?pathPrefix=api").is_err());
        assert!(ApiConfig::from_flag(":1?nope=1").is_err());
    }

    #[test]
    fn password_is_masked() {
        let c = ApiConfig::from_flag("admin:hunter2@127.0.0.1:1").unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2") && s.contains("MASKED"), "{s}");
    }
}
