//! TLS settings, GOST's names: `tls: {certFile, keyFile, caFile, serverName, secure, options}`.
//! Used by the `tls` listener (termination) and by forwarders (`backends_tls` in gobetween).
//!
//! gobetween's own TLS options sit beside GOST's, under gobetween's names:
//! `ciphers`, `prefer_server_ciphers`, `session_tickets`, `min_version`,
//! `max_version` (what they do: `src/proxy/tls_options.rs`).

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

    // ---- gobetween's TLS options (see src/proxy/tls_options.rs) ----
    /// Cipher suites by IANA/Go name, in preference order; empty = all rustls has.
    #[serde(default)]
    pub ciphers: Vec<String>,
    /// Server side: pick the first suite of `ciphers` the client offers, not the
    /// client's favourite.
    #[serde(default)]
    pub prefer_server_ciphers: bool,
    /// `true`: stateless session tickets; `false`: no resumption at all; unset:
    /// rustls' default (an in-memory session cache).
    #[serde(default)]
    pub session_tickets: Option<bool>,
    /// gobetween's spelling of `options.minVersion` (`tls1.2`, `tls1.3`; older
    /// names are raised to the 1.2 floor with a warning).
    #[serde(default)]
    pub min_version: Option<String>,
    /// gobetween's spelling of `options.maxVersion`.
    #[serde(default)]
    pub max_version: Option<String>,
    /// gobetween: names to get certificates for from the `acme:` CA, instead of
    /// `certFile`/`keyFile` (see src/proxy/acme.rs).
    #[serde(default)]
    pub acme_hosts: Vec<String>,
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
