//! TLS settings, GOST's names: `tls: {certFile, keyFile, caFile, serverName, secure, options}`.
//! Used by the `tls` listener (termination) and by forwarders (`backends_tls` in gobetween).

use std::path::PathBuf;

use serde::Deserialize;

use super::FieldError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (server side: required; client side: client certificate).
    #[serde(rename = "certFile", default)]
    pub cert_file: Option<PathBuf>,
    #[serde(rename = "keyFile", default)]
    pub key_file: Option<PathBuf>,
    /// Server side: require client certificates signed by this CA. Client side: trust
    /// this CA for the backend's certificate.
    #[serde(rename = "caFile", default)]
    pub ca_file: Option<PathBuf>,
    /// Client side: SNI and the name verified in the backend's certificate.
    #[serde(rename = "serverName", default)]
    pub server_name: Option<String>,
    /// Client side: verify the backend's certificate (GOST's `secure`). Default false
    /// as in GOST; set it, or a `caFile`, for real verification.
    #[serde(default)]
    pub secure: bool,
    #[serde(default)]
    pub options: TlsOptions,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// "VersionTLS12" / "VersionTLS13" (GOST) or "tls1.2" / "tls1.3" (gobetween).
    #[serde(rename = "minVersion", default)]
    pub min_version: Option<String>,
    #[serde(rename = "maxVersion", default)]
    pub max_version: Option<String>,
    #[serde(default)]
    pub alpn: Vec<String>,
}

/// The TLS versions this build speaks (rustls: 1.2 and 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// GOST's `VersionTLS12` / `VersionTLS13` or gobetween's `tls1.2` / `tls1.3`,
    /// case-insensitively.
    pub fn parse(name: &str) -> Result<TlsVersion, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "versiontls12" | "tls1.2" | "tls12" => Ok(TlsVersion::Tls12),
            "versiontls13" | "tls1.3" | "tls13" => Ok(TlsVersion::Tls13),
            "versiontls10" | "versiontls11" | "versionssl30" | "tls1.0" | "tls1.1" | "tls10"
            | "tls11" | "ssl3" | "ssl3.0" => Err(format!(
                "{name:?} is not supported: rustls implements TLS 1.2 and 1.3 only; expected \
                 VersionTLS12 or VersionTLS13 (or tls1.2 / tls1.3)"
            )),
            _ => Err(format!(
                "expected VersionTLS12 or VersionTLS13 (or tls1.2 / tls1.3), got {name:?}"
            )),
        }
    }
}

impl TlsOptions {
    /// The lowest and highest version enabled; an error names the option
    /// (`options.minVersion`) and what is wrong.
    pub fn versions(&self) -> Result<(TlsVersion, TlsVersion), (&'static str, String)> {
        let min = match &self.min_version {
            Some(n) => TlsVersion::parse(n).map_err(|m| ("options.minVersion", m))?,
            None => TlsVersion::Tls12,
        };
        let max = match &self.max_version {
            Some(n) => TlsVersion::parse(n).map_err(|m| ("options.maxVersion", m))?,
            None => TlsVersion::Tls13,
        };
        if min > max {
            return Err((
                "options.minVersion",
                "expected minVersion not above maxVersion".to_string(),
            ));
        }
        Ok((min, max))
    }
}

impl TlsConfig {
    /// Static checks of a `tls:` section (no file access): version names and their
    /// order, paired cert/key, the server name. `section` is its path, e.g.
    /// `services[1].listener.tls`.
    pub fn validate(&self, section: &str) -> Result<(), FieldError> {
        let at = |f: &str, m: String| FieldError::new(format!("{section}.{f}"), m);
        self.options.versions().map_err(|(f, m)| at(f, m))?;
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => {
                return Err(at(
                    "keyFile",
                    "expected keyFile together with certFile".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(at(
                    "certFile",
                    "expected certFile together with keyFile".into(),
                ));
            }
            _ => {}
        }
        if let Some(name) = &self.server_name {
            rustls_pki_types::ServerName::try_from(name.as_str()).map_err(|e| {
                at(
                    "serverName",
                    format!("expected a DNS name or IP address, got {name:?}: {e}"),
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_field() {
        let cfg = TlsConfig {
            cert_file: Some("/x.pem".into()),
            ..Default::default()
        };
        let e = cfg.validate("services[0].listener.tls").unwrap_err();
        assert_eq!(e.field, "services[0].listener.tls.keyFile");
        let cfg = TlsConfig {
            options: TlsOptions {
                min_version: Some("VersionSSL30".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = cfg.validate("s.tls").unwrap_err();
        assert_eq!(e.field, "s.tls.options.minVersion");
    }
}
