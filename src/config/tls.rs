//! TLS settings, GOST's names: `tls: {certFile, keyFile, caFile, serverName, secure, options}`.
//! Used by the `tls` listener (termination) and by forwarders (`backends_tls` in gobetween).

use std::path::PathBuf;

use serde::Deserialize;

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
