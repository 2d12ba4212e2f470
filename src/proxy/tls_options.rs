//! gobetween's TLS options on top of rustls: `ciphers`, `prefer_server_ciphers`,
//! `session_tickets`, `min_version` / `max_version`. They apply to a `tls`
//! listener (`listener.tls`) and, where they mean something for a client, to
//! the connections to backends (`forwarder.tls`, gobetween's `backends_tls`).
//!
//! # `ciphers`
//!
//! Names are the IANA ones, which are also Go's `crypto/tls` constant names
//! (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`, `TLS_AES_128_GCM_SHA256`); rustls'
//! own spelling (`TLS13_AES_128_GCM_SHA256`) and Go's short ChaCha20 names
//! (`TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305`) are accepted too. rustls implements
//! nine suites, all AEAD with forward secrecy; any other name (CBC, RC4, 3DES,
//! plain-RSA key exchange, a typo) is an error that lists the nine.
//!
//! The list restricts each protocol version separately, **only if it names a
//! suite of that version**: `ciphers = ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]`
//! restricts TLS 1.2 and leaves TLS 1.3 with all its suites. That is what a
//! gobetween user gets from Go, where `CipherSuites` does not apply to TLS 1.3;
//! naming a TLS 1.3 suite restricts TLS 1.3 as well. Order is preference order.
//!
//! # `prefer_server_ciphers`
//!
//! On a listener: choose the first suite of the server's list (the `ciphers`
//! order, else rustls' order) that the client offers, instead of the client's
//! favourite (rustls' `ignore_client_order`). On `forwarder.tls` it is refused:
//! a client has no say in the choice beyond the order of `ciphers`.
//!
//! # `session_tickets`
//!
//! * unset — rustls' default: a server-side session cache (256 sessions, TLS 1.2
//!   session IDs and TLS 1.3 tickets that point into it).
//! * `true` — stateless tickets from rustls' `Ticketer`: the session state is
//!   encrypted (ChaCha20-Poly1305) into the ticket with a key that is generated
//!   at start, **rotated every 6 hours**, and kept one more period for
//!   decryption, so a ticket lives at most 12 hours. The keys are random and
//!   never leave the process: the two nodes of a pair do not share them, a
//!   restart forgets them, and after a failover clients simply do a full
//!   handshake (one more round trip; nothing fails).
//! * `false` — no resumption at all: no tickets, no session cache (Go's
//!   `SessionTicketsDisabled`, which has no server cache either).
//!
//! On `forwarder.tls`, `false` disables resumption towards backends; otherwise
//! rustls' client cache is used.
//!
//! # `min_version` / `max_version`
//!
//! gobetween's names for GOST's `options.minVersion` / `maxVersion` (give one
//! of the two spellings, not both): `tls1.2`, `tls1.3` (and GOST's
//! `VersionTLS12` / `VersionTLS13`). rustls has no TLS 1.0/1.1, so gobetween's
//! older names are treated by their meaning: as a **floor** (`ssl3`, `tls1`,
//! `tls1.1` in `min_version`) they are accepted with a warning, since 1.2 is the
//! lowest this build can speak anyway; as a **ceiling** they would leave no
//! version at all and are an error.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use super::tls::TlsError;
use crate::config::tls::TlsConfig;

fn err(field: &'static str, message: impl Into<String>) -> TlsError {
    TlsError {
        field,
        message: message.into(),
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

fn modern_version(name: &str) -> Option<&'static SupportedProtocolVersion> {
    match name.trim().to_ascii_lowercase().as_str() {
        "tls1.2" | "tls12" | "versiontls12" => Some(&rustls::version::TLS12),
        "tls1.3" | "tls13" | "versiontls13" => Some(&rustls::version::TLS13),
        _ => None,
    }
}

fn is_old_version(name: &str) -> bool {
    OLD_VERSIONS.contains(&name.trim().to_ascii_lowercase().as_str())
}

/// `min_version` / `max_version` (gobetween's fields), each `None` when unset.
/// A floor below TLS 1.2 becomes TLS 1.2 (see [`warnings`]).
pub fn gobetween_versions(
    cfg: &TlsConfig,
) -> Result<
    (
        Option<&'static SupportedProtocolVersion>,
        Option<&'static SupportedProtocolVersion>,
    ),
    TlsError,
> {
    if cfg.min_version.is_some() && cfg.options.min_version.is_some() {
        return Err(err(
            "min_version",
            "min_version and options.minVersion are the same setting: expected only one of them",
        ));
    }
    if cfg.max_version.is_some() && cfg.options.max_version.is_some() {
        return Err(err(
            "max_version",
            "max_version and options.maxVersion are the same setting: expected only one of them",
        ));
    }
    let expected = "expected tls1.2 or tls1.3 (gobetween's ssl3, tls1, tls1.1 only as min_version)";
    let min = match &cfg.min_version {
        None => None,
        Some(n) => match modern_version(n) {
            Some(v) => Some(v),
            None if is_old_version(n) => Some(&rustls::version::TLS12),
            None => return Err(err("min_version", format!("{expected}, got {n:?}"))),
        },
    };
    let max = match &cfg.max_version {
        None => None,
        Some(n) => match modern_version(n) {
            Some(v) => Some(v),
            None if is_old_version(n) => {
                return Err(err(
                    "max_version",
                    format!(
                        "{n:?} as a maximum leaves no version to speak: rustls implements TLS 1.2 \
                         and 1.3 only; expected tls1.2 or tls1.3"
                    ),
                ));
            }
            None => return Err(err("max_version", format!("{expected}, got {n:?}"))),
        },
    };
    Ok((min, max))
}

/// What is accepted but adjusted, one sentence each, for a warning at load.
pub fn warnings(cfg: &TlsConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(n) = &cfg.min_version
        && is_old_version(n)
    {
        out.push(format!(
            "min_version: {n:?} is below what rustls implements; TLS 1.2 is the floor, so the \
             minimum is tls1.2"
        ));
    }
    out
}

/// Every suite rustls (ring) implements: its canonical (IANA) name and the suite.
fn all_suites() -> Vec<(String, SupportedCipherSuite)> {
    rustls::crypto::ring::default_provider()
        .cipher_suites
        .into_iter()
        .map(|s| {
            let rustls_name = s.suite().as_str().unwrap_or("unnamed");
            (rustls_name.replace("TLS13_", "TLS_"), s)
        })
        .collect()
}

/// The names accepted in `ciphers`, for the error message and the docs.
pub fn supported_cipher_names() -> Vec<String> {
    all_suites().into_iter().map(|(n, _)| n).collect()
}

fn lookup_suite(name: &str) -> Option<SupportedCipherSuite> {
    let wanted = name.trim().to_ascii_uppercase().replace("TLS13_", "TLS_");
    all_suites().into_iter().find_map(|(canonical, s)| {
        // Go's short names for the ChaCha20 TLS 1.2 suites drop the "_SHA256".
        let go_short = canonical
            .strip_suffix("_SHA256")
            .filter(|c| c.ends_with("CHACHA20_POLY1305") && c.contains("_WITH_"));
        (wanted == canonical || Some(wanted.as_str()) == go_short).then_some(s)
    })
}

/// The crypto provider with `ciphers` applied (rustls' ring provider otherwise).
pub fn provider(cfg: &TlsConfig) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if cfg.ciphers.is_empty() {
        return Ok(Arc::new(provider));
    }
    let mut listed: Vec<SupportedCipherSuite> = Vec::new();
    for name in &cfg.ciphers {
        let Some(suite) = lookup_suite(name) else {
            return Err(err(
                "ciphers",
                format!(
                    "{name:?} is not a cipher suite rustls implements (it has no CBC, RC4, 3DES \
                     or RSA key exchange suites); expected some of: {}",
                    supported_cipher_names().join(", ")
                ),
            ));
        };
        if !listed.iter().any(|s| s.suite() == suite.suite()) {
            listed.push(suite);
        }
    }
    // A version the list says nothing about keeps all its suites (Go's rule for
    // TLS 1.3, applied to both versions).
    let named = |v: &SupportedProtocolVersion| listed.iter().any(|s| s.version() == v);
    let (named12, named13) = (
        named(&rustls::version::TLS12),
        named(&rustls::version::TLS13),
    );
    let rest: Vec<SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .filter(|s| {
            let v = s.version();
            (v == &rustls::version::TLS12 && !named12) || (v == &rustls::version::TLS13 && !named13)
        })
        .copied()
        .collect();
    listed.extend(rest);
    provider.cipher_suites = listed;
    Ok(Arc::new(provider))
}

/// Apply `prefer_server_ciphers` and `session_tickets` to a server config.
pub fn apply_server(cfg: &TlsConfig, config: &mut ServerConfig) -> Result<(), TlsError> {
    config.ignore_client_order = cfg.prefer_server_ciphers;
    match cfg.session_tickets {
        None => {}
        Some(true) => {
            config.ticketer = rustls::crypto::ring::Ticketer::new()
                .map_err(|e| err("session_tickets", format!("no ticket key: {e}")))?;
        }
        Some(false) => {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
    }
    Ok(())
}

/// Apply `session_tickets: false` to a client config (no resumption).
pub fn apply_client(cfg: &TlsConfig, config: &mut ClientConfig) {
    if cfg.session_tickets == Some(false) {
        config.resumption = rustls::client::Resumption::disabled();
    }
}

/// Checks of a `forwarder.tls` section that do not apply to a listener.
pub fn validate_client(cfg: &TlsConfig) -> Result<(), TlsError> {
    if cfg.prefer_server_ciphers {
        return Err(err(
            "prefer_server_ciphers",
            "the server picks the suite; towards a backend this gateway is the client: expected \
             it on listener.tls only (order `ciphers` to state the client's preference)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(lookup_suite(n).is_some(), "{n}");
        }
        assert_eq!(supported_cipher_names().len(), 9);
        let e = provider(&with(|c| {
            c.ciphers = vec!["TLS_RSA_WITH_AES_128_CBC_SHA".into()]
        }))
        .unwrap_err();
        assert_eq!(e.field, "ciphers");
        assert!(
            e.message
                .contains("expected some of: TLS_AES_256_GCM_SHA384"),
            "{e}"
        );
    }

    #[test]
    fn ciphers_restrict_only_the_versions_they_name() {
        let p = provider(&with(|c| {
            c.ciphers = vec![
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into(),
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
            ]
        }))
        .unwrap();
        let names: Vec<_> = p
            .cipher_suites
            .iter()
            .map(|s| s.suite().as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
            ]
        );
    }

    #[test]
    fn version_floor_and_ceiling() {
        let v = |min: Option<&str>, max: Option<&str>| {
            gobetween_versions(&with(|c| {
                c.min_version = min.map(str::to_string);
                c.max_version = max.map(str::to_string);
            }))
        };
        let (min, _) = v(Some("tls1"), None).unwrap();
        assert_eq!(min.unwrap().version, rustls::ProtocolVersion::TLSv1_2);
        let cfg = with(|c| c.min_version = Some("ssl3".into()));
        assert!(warnings(&cfg)[0].contains("TLS 1.2 is the floor"));
        assert!(warnings(&with(|c| c.min_version = Some("tls1.2".into()))).is_empty());
        let e = v(None, Some("tls1.1")).unwrap_err();
        assert_eq!(e.field, "max_version");
        assert!(e.message.contains("leaves no version"), "{e}");
        let e = v(Some("tls2"), None).unwrap_err();
        assert!(e.message.contains("got \"tls2\""), "{e}");
        let e = gobetween_versions(&with(|c| {
            c.min_version = Some("tls1.2".into());
            c.options.min_version = Some("VersionTLS12".into());
        }))
        .unwrap_err();
        assert_eq!(e.field, "min_version");
    }
}
