//! TLS settings, GOST's names: `tls: {certFile, keyFile, caFile, serverName, secure, options}`.
//! Used by the `tls` listener (termination) and by forwarders (`backends_tls` in gobetween).
//!
//! gobetween's own TLS options sit beside GOST's, under gobetween's names:
//! `ciphers`, `prefer_server_ciphers`, `session_tickets`, `min_version`,
//! `max_version`. Their names are parsed here into typed values
//! ([`CipherSuite`], a [`TlsVersion`] range); what they do in rustls:
//! `src/proxy/tls_options.rs`.
//!
//! * `ciphers` — IANA names (also Go's `crypto/tls` constant names), rustls'
//!   `TLS13_` spelling and Go's short ChaCha20 names. The list restricts each
//!   protocol version separately, **only if it names a suite of that version**
//!   (Go's rule for TLS 1.3, applied to both): see [`TlsConfig::cipher_suites`].
//! * `min_version` / `max_version` — gobetween's spelling of `options.minVersion`
//!   / `maxVersion` (one spelling or the other, not both). rustls has no TLS
//!   1.0/1.1: as a floor those names are raised to 1.2 with a note
//!   ([`TlsConfig::notes`]); as a ceiling they would leave no version, an error.
//! * `prefer_server_ciphers` — a listener's choice; refused on `forwarder.tls`
//!   ([`TlsConfig::validate_client`]).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
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

/// gobetween's names below TLS 1.2 (and GOST's, for the same versions).
const OLD_VERSIONS: &[&str] = &[
    "ssl3",
    "ssl3.0",
    "tls1",
    "tls1.0",
    "tls10",
    "tls1.1",
    "tls11",
    "versionssl30",
    "versiontls10",
    "versiontls11",
];

fn is_old_version(name: &str) -> bool {
    OLD_VERSIONS.contains(&name.trim().to_ascii_lowercase().as_str())
}

/// A cipher suite this build implements (rustls with ring): all AEAD with
/// forward secrecy. [`CipherSuite::ALL`] is rustls' default preference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    Tls13Aes256GcmSha384,
    Tls13Aes128GcmSha256,
    Tls13Chacha20Poly1305Sha256,
    EcdheEcdsaAes256GcmSha384,
    EcdheEcdsaAes128GcmSha256,
    EcdheEcdsaChacha20Poly1305Sha256,
    EcdheRsaAes256GcmSha384,
    EcdheRsaAes128GcmSha256,
    EcdheRsaChacha20Poly1305Sha256,
}

impl CipherSuite {
    /// Every suite, in rustls' (ring provider) default order.
    pub const ALL: [CipherSuite; 9] = [
        CipherSuite::Tls13Aes256GcmSha384,
        CipherSuite::Tls13Aes128GcmSha256,
        CipherSuite::Tls13Chacha20Poly1305Sha256,
        CipherSuite::EcdheEcdsaAes256GcmSha384,
        CipherSuite::EcdheEcdsaAes128GcmSha256,
        CipherSuite::EcdheEcdsaChacha20Poly1305Sha256,
        CipherSuite::EcdheRsaAes256GcmSha384,
        CipherSuite::EcdheRsaAes128GcmSha256,
        CipherSuite::EcdheRsaChacha20Poly1305Sha256,
    ];

    /// The IANA name (Go's constant name).
    pub fn name(self) -> &'static str {
        match self {
            CipherSuite::Tls13Aes256GcmSha384 => "TLS_AES_256_GCM_SHA384",
            CipherSuite::Tls13Aes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
            CipherSuite::Tls13Chacha20Poly1305Sha256 => "TLS_CHACHA20_POLY1305_SHA256",
            CipherSuite::EcdheEcdsaAes256GcmSha384 => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            CipherSuite::EcdheEcdsaAes128GcmSha256 => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            CipherSuite::EcdheEcdsaChacha20Poly1305Sha256 => {
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
            }
            CipherSuite::EcdheRsaAes256GcmSha384 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            CipherSuite::EcdheRsaAes128GcmSha256 => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            CipherSuite::EcdheRsaChacha20Poly1305Sha256 => {
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
            }
        }
    }

    /// The protocol version the suite belongs to.
    pub fn version(self) -> TlsVersion {
        match self {
            CipherSuite::Tls13Aes256GcmSha384
            | CipherSuite::Tls13Aes128GcmSha256
            | CipherSuite::Tls13Chacha20Poly1305Sha256 => TlsVersion::Tls13,
            _ => TlsVersion::Tls12,
        }
    }

    /// An IANA/Go name, rustls' `TLS13_` spelling or Go's short ChaCha20 name
    /// (`TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305`), case-insensitively.
    pub fn parse(name: &str) -> Option<CipherSuite> {
        let wanted = name.trim().to_ascii_uppercase().replace("TLS13_", "TLS_");
        CipherSuite::ALL.into_iter().find(|s| {
            let canonical = s.name();
            // Go's short names for the ChaCha20 TLS 1.2 suites drop the "_SHA256".
            let go_short = canonical
                .strip_suffix("_SHA256")
                .filter(|c| c.ends_with("CHACHA20_POLY1305") && c.contains("_WITH_"));
            wanted == canonical || Some(wanted.as_str()) == go_short
        })
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
    /// The lowest and highest version enabled, from `options.minVersion` /
    /// `maxVersion` or gobetween's `min_version` / `max_version`; an error names
    /// the option and what is expected.
    pub fn versions(&self) -> Result<(TlsVersion, TlsVersion), (&'static str, String)> {
        if self.min_version.is_some() && self.options.min_version.is_some() {
            return Err((
                "min_version",
                "min_version and options.minVersion are the same setting: expected only one of them"
                    .into(),
            ));
        }
        if self.max_version.is_some() && self.options.max_version.is_some() {
            return Err((
                "max_version",
                "max_version and options.maxVersion are the same setting: expected only one of them"
                    .into(),
            ));
        }
        let expected =
            "expected tls1.2 or tls1.3 (gobetween's ssl3, tls1, tls1.1 only as min_version)";
        let (mut min, mut max) = self.options.versions()?;
        if let Some(n) = &self.min_version {
            min = match TlsVersion::parse(n) {
                Ok(v) => v,
                // A floor below what rustls speaks: 1.2 is the floor anyway (a note).
                Err(_) if is_old_version(n) => TlsVersion::Tls12,
                Err(_) => return Err(("min_version", format!("{expected}, got {n:?}"))),
            };
        }
        if let Some(n) = &self.max_version {
            max = match TlsVersion::parse(n) {
                Ok(v) => v,
                Err(_) if is_old_version(n) => {
                    return Err((
                        "max_version",
                        format!(
                            "{n:?} as a maximum leaves no version to speak: rustls implements \
                             TLS 1.2 and 1.3 only; expected tls1.2 or tls1.3"
                        ),
                    ));
                }
                Err(_) => return Err(("max_version", format!("{expected}, got {n:?}"))),
            };
        }
        if min > max {
            let field = if self.min_version.is_some() {
                "min_version"
            } else {
                "options.minVersion"
            };
            return Err((
                field,
                "expected minVersion not above maxVersion".to_string(),
            ));
        }
        Ok((min, max))
    }

    /// The suites enabled, in preference order: those named in `ciphers` (first
    /// mention wins), then every suite of a version the list names none of.
    /// Empty `ciphers`: all of [`CipherSuite::ALL`].
    pub fn cipher_suites(&self) -> Result<Vec<CipherSuite>, (&'static str, String)> {
        let mut listed: Vec<CipherSuite> = Vec::new();
        for name in &self.ciphers {
            let Some(suite) = CipherSuite::parse(name) else {
                let all: Vec<&str> = CipherSuite::ALL.iter().map(|s| s.name()).collect();
                return Err((
                    "ciphers",
                    format!(
                        "{name:?} is not a cipher suite rustls implements (it has no CBC, RC4, \
                         3DES or RSA key exchange suites); expected some of: {}",
                        all.join(", ")
                    ),
                ));
            };
            if !listed.contains(&suite) {
                listed.push(suite);
            }
        }
        let named = |v: TlsVersion| listed.iter().any(|s| s.version() == v);
        let (named12, named13) = (named(TlsVersion::Tls12), named(TlsVersion::Tls13));
        let rest: Vec<CipherSuite> = CipherSuite::ALL
            .into_iter()
            .filter(|s| match s.version() {
                TlsVersion::Tls12 => !named12,
                TlsVersion::Tls13 => !named13,
            })
            .collect();
        listed.extend(rest);
        Ok(listed)
    }

    /// What is accepted but adjusted, one sentence each starting with the field
    /// (`min_version: ...`), for the operator to see at load.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = &self.min_version
            && is_old_version(n)
        {
            out.push(format!(
                "min_version: {n:?} is below what rustls implements; TLS 1.2 is the floor, so \
                 the minimum is tls1.2"
            ));
        }
        out
    }

    /// What a client side (`forwarder.tls`) must not have, with the option at fault.
    pub fn client_options(&self) -> Result<(), (&'static str, String)> {
        if self.prefer_server_ciphers {
            return Err((
                "prefer_server_ciphers",
                "the server picks the suite; towards a backend this gateway is the client: \
                 expected it on listener.tls only (order `ciphers` to state the client's \
                 preference)"
                    .into(),
            ));
        }
        if !self.acme_hosts.is_empty() {
            return Err((
                "acme_hosts",
                "certificates from ACME are for a tls listener: expected acme_hosts on \
                 listener.tls only (a client certificate is certFile/keyFile)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// [`TlsConfig::validate`] plus the checks of a client side ([`TlsConfig::client_options`]).
    pub fn validate_client(&self, section: &str) -> Result<(), FieldError> {
        self.validate(section)?;
        self.client_options()
            .map_err(|(f, m)| FieldError::new(format!("{section}.{f}"), m))
    }

    /// Static checks of a `tls:` section (no file access): version names and their
    /// order, cipher names, paired cert/key, the server name. `section` is its path, e.g.
    /// `services[1].listener.tls`.
    pub fn validate(&self, section: &str) -> Result<(), FieldError> {
        let at = |f: &str, m: String| FieldError::new(format!("{section}.{f}"), m);
        self.versions().map_err(|(f, m)| at(f, m))?;
        self.cipher_suites().map_err(|(f, m)| at(f, m))?;
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

/// Read a PEM certificate file (`certFile`, `caFile`): at least one
/// CERTIFICATE block, each a well-formed X.509 certificate. The error names
/// `field` and the file.
pub fn read_certs(
    path: &Path,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, (&'static str, String)> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| (field, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err((
            field,
            format!(
                "{}: expected PEM CERTIFICATE blocks, found none",
                path.display()
            ),
        ));
    }
    for (i, c) in certs.iter().enumerate() {
        if let Err(e) = x509_parser::parse_x509_certificate(c.as_ref()) {
            return Err((
                field,
                format!(
                    "{}: certificate {} of {} is not valid X.509: {e}",
                    path.display(),
                    i + 1,
                    certs.len()
                ),
            ));
        }
    }
    Ok(certs)
}

/// Read a PEM private key file (`keyFile`: PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, (&'static str, String)> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        (
            "keyFile",
            format!("{}: expected a PEM private key: {e}", path.display()),
        )
    })
}

impl TlsConfig {
    /// The files this section names open and parse, and the key is the
    /// certificate's: what `-test`, start-up and reload check before any
    /// service is touched. `section` is the path, e.g. `services[0].listener.tls`.
    pub fn check_files(&self, section: &str) -> Result<(), FieldError> {
        let at = |(f, m): (&str, String)| FieldError::new(format!("{section}.{f}"), m);
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            let chain = read_certs(cert, "certFile").map_err(at)?;
            let key_der = read_key(key).map_err(at)?;
            let provider = rustls::crypto::ring::default_provider();
            rustls::sign::CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| {
                at((
                    "keyFile",
                    format!("{} does not fit {}: {e}", key.display(), cert.display()),
                ))
            })?;
        }
        if let Some(ca) = &self.ca_file {
            read_certs(ca, "caFile").map_err(at)?;
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

    fn with(f: impl FnOnce(&mut TlsConfig)) -> TlsConfig {
        let mut c = TlsConfig::default();
        f(&mut c);
        c
    }

    #[test]
    fn cipher_names_iana_go_and_rustls() {
        for n in [
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "tls_aes_128_gcm_sha256",
            "TLS13_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ] {
            assert!(CipherSuite::parse(n).is_some(), "{n}");
        }
        let (field, message) = with(|c| c.ciphers = vec!["TLS_RSA_WITH_AES_128_CBC_SHA".into()])
            .cipher_suites()
            .unwrap_err();
        assert_eq!(field, "ciphers");
        assert!(
            message.contains("expected some of: TLS_AES_256_GCM_SHA384"),
            "{message}"
        );
    }

    #[test]
    fn ciphers_restrict_only_the_versions_they_name() {
        let suites = with(|c| {
            c.ciphers = vec![
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into(),
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
            ]
        })
        .cipher_suites()
        .unwrap();
        let names: Vec<_> = suites.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_AES_256_GCM_SHA384",
                "TLS_AES_128_GCM_SHA256",
                "TLS_CHACHA20_POLY1305_SHA256",
            ]
        );
        assert_eq!(
            TlsConfig::default().cipher_suites().unwrap(),
            CipherSuite::ALL
        );
    }

    #[test]
    fn version_floor_and_ceiling() {
        let v = |min: Option<&str>, max: Option<&str>| {
            with(|c| {
                c.min_version = min.map(str::to_string);
                c.max_version = max.map(str::to_string);
            })
            .versions()
        };
        assert_eq!(v(Some("tls1"), None).unwrap().0, TlsVersion::Tls12);
        assert_eq!(
            v(Some("tls1.3"), None).unwrap(),
            (TlsVersion::Tls13, TlsVersion::Tls13)
        );
        assert_eq!(
            v(None, Some("tls1.2")).unwrap(),
            (TlsVersion::Tls12, TlsVersion::Tls12)
        );
        let cfg = with(|c| c.min_version = Some("ssl3".into()));
        assert!(cfg.notes()[0].contains("TLS 1.2 is the floor"));
        assert!(
            with(|c| c.min_version = Some("tls1.2".into()))
                .notes()
                .is_empty()
        );
        let (field, message) = v(None, Some("tls1.1")).unwrap_err();
        assert_eq!(field, "max_version");
        assert!(message.contains("leaves no version"), "{message}");
        let (_, message) = v(Some("tls2"), None).unwrap_err();
        assert!(message.contains("got \"tls2\""), "{message}");
        let (field, _) = v(Some("tls1.3"), Some("tls1.2")).unwrap_err();
        assert_eq!(field, "min_version");
        let (field, _) = with(|c| {
            c.min_version = Some("tls1.2".into());
            c.options.min_version = Some("VersionTLS12".into());
        })
        .versions()
        .unwrap_err();
        assert_eq!(field, "min_version");
    }

    #[test]
    fn client_side_refuses_server_choices() {
        let (field, _) = with(|c| c.prefer_server_ciphers = true)
            .client_options()
            .unwrap_err();
        assert_eq!(field, "prefer_server_ciphers");
        let e = with(|c| c.acme_hosts = vec!["a.example".into()])
            .validate_client("services[0].forwarder.tls")
            .unwrap_err();
        assert_eq!(e.field, "services[0].forwarder.tls.acme_hosts");
    }
}
