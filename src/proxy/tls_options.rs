//! gobetween's TLS options turned into rustls settings: `ciphers`,
//! `prefer_server_ciphers`, `session_tickets` (`min_version` / `max_version`
//! are part of [`super::tls::protocol_versions`]). The names are parsed and
//! checked by the config ([`TlsConfig::cipher_suites`], [`TlsConfig::versions`],
//! [`TlsConfig::client_options`]); this module only maps the typed values.
//!
//! # `ciphers`
//!
//! The config hands over the suites in preference order, a version the list
//! says nothing about keeping all its suites (Go's rule for TLS 1.3, applied to
//! both versions). [`rustls_suite`] maps each [`CipherSuite`] to rustls' suite.
//!
//! # `prefer_server_ciphers`
//!
//! On a listener: choose the first suite of the server's list (the `ciphers`
//! order, else rustls' order) that the client offers, instead of the client's
//! favourite (rustls' `ignore_client_order`). The config refuses it on
//! `forwarder.tls`: a client has no say beyond the order of `ciphers`.
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

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::cipher_suite as ring;
use rustls::{ClientConfig, ServerConfig, SupportedCipherSuite};

use super::tls::TlsError;
use crate::config::tls::{CipherSuite, TlsConfig};

/// The rustls (ring) suite of a configured [`CipherSuite`].
pub fn rustls_suite(suite: CipherSuite) -> SupportedCipherSuite {
    match suite {
        CipherSuite::Tls13Aes256GcmSha384 => ring::TLS13_AES_256_GCM_SHA384,
        CipherSuite::Tls13Aes128GcmSha256 => ring::TLS13_AES_128_GCM_SHA256,
        CipherSuite::Tls13Chacha20Poly1305Sha256 => ring::TLS13_CHACHA20_POLY1305_SHA256,
        CipherSuite::EcdheEcdsaAes256GcmSha384 => ring::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheEcdsaAes128GcmSha256 => ring::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheEcdsaChacha20Poly1305Sha256 => {
            ring::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        CipherSuite::EcdheRsaAes256GcmSha384 => ring::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::EcdheRsaAes128GcmSha256 => ring::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::EcdheRsaChacha20Poly1305Sha256 => {
            ring::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
    }
}

/// The crypto provider with the configured suites, in their order.
pub fn provider(cfg: &TlsConfig) -> Result<Arc<CryptoProvider>, TlsError> {
    let suites = cfg.cipher_suites().map_err(|(f, m)| TlsError::new(f, m))?;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = suites.into_iter().map(rustls_suite).collect();
    Ok(Arc::new(provider))
}

/// Apply `prefer_server_ciphers` and `session_tickets` to a server config.
pub fn apply_server(cfg: &TlsConfig, config: &mut ServerConfig) -> Result<(), TlsError> {
    config.ignore_client_order = cfg.prefer_server_ciphers;
    match cfg.session_tickets {
        None => {}
        Some(true) => {
            config.ticketer = rustls::crypto::ring::Ticketer::new()
                .map_err(|e| TlsError::new("session_tickets", format!("no ticket key: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The config's list and rustls' are the same nine suites in the same
    /// default order: a rustls upgrade that adds, drops or reorders one turns
    /// this red instead of silently changing what `ciphers` means.
    #[test]
    fn every_configured_suite_is_rustls_default() {
        let ours: Vec<SupportedCipherSuite> =
            CipherSuite::ALL.into_iter().map(rustls_suite).collect();
        let theirs = rustls::crypto::ring::default_provider().cipher_suites;
        let names = |v: &[SupportedCipherSuite]| -> Vec<String> {
            v.iter()
                .map(|s| s.suite().as_str().unwrap_or("?").replace("TLS13_", "TLS_"))
                .collect()
        };
        assert_eq!(names(&ours), names(&theirs));
        let config_names: Vec<&str> = CipherSuite::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names(&ours), config_names);
    }

    #[test]
    fn provider_follows_the_configured_order() {
        let cfg = TlsConfig {
            ciphers: vec![
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into(),
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
            ],
            ..Default::default()
        };
        let p = provider(&cfg).unwrap();
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
        let e = provider(&TlsConfig {
            ciphers: vec!["TLS_RSA_WITH_AES_128_CBC_SHA".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field, "ciphers");
    }
}
