//! The top-level `acme:` section (gobetween's `[acme]`, plus our own options):
//! certificates for `tls` listeners with `acme_hosts`, ordered from an ACME CA.
//! What it does at run time: `src/proxy/acme.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::FieldError;
use super::service::DurationStr;

/// Let's Encrypt's production directory, the default `directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// gobetween: `http` | `tls-alpn` | `dns` (`sni`: gobetween's old name of
    /// tls-alpn, accepted with a note); `dns` is refused at load.
    #[serde(default = "default_challenge")]
    pub challenge: AcmeChallenge,
    /// gobetween: where the http-01 responder listens. The CA always asks port 80 of
    /// the name, so anything else needs a redirect in front.
    #[serde(default = "default_http_bind", deserialize_with = "http_bind")]
    pub http_bind: SocketAddr,
    /// gobetween: where the account, certificates and keys are kept.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// ACME directory URL.
    #[serde(default = "default_directory")]
    pub directory: String,
    /// PEM file trusted for the ACME server's own HTTPS (private CAs, tests).
    #[serde(default)]
    pub directory_ca: Option<PathBuf>,
    /// Contact address given to the CA.
    #[serde(default)]
    pub email: Option<String>,
    /// Renew this long before the certificate expires.
    #[serde(default = "default_renew_before")]
    pub renew_before: DurationStr,
}

/// The ACME challenge type answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// http-01: `GET /.well-known/acme-challenge/TOKEN` on `http_bind`.
    Http,
    /// tls-alpn-01 (RFC 8737): the `acme_hosts` listener itself answers a TLS
    /// handshake that offers ALPN `acme-tls/1` with the challenge certificate.
    /// `old_name`: written as `sni`, gobetween's old name for it.
    TlsAlpn { old_name: bool },
}

impl AcmeChallenge {
    pub fn parse(name: &str) -> Result<AcmeChallenge, String> {
        match name {
            "http" => Ok(AcmeChallenge::Http),
            "tls-alpn" => Ok(AcmeChallenge::TlsAlpn { old_name: false }),
            "sni" => Ok(AcmeChallenge::TlsAlpn { old_name: true }),
            "dns" => Err(
                "\"dns\" (dns-01) is not implemented by this build: it needs an API of your DNS provider; expected \"http\" (http-01 on http_bind) or \"tls-alpn\" (tls-alpn-01 on the acme_hosts listener)"
                    .to_string(),
            ),
            other => Err(format!("{other:?}: expected http, tls-alpn or dns")),
        }
    }
}

impl<'de> Deserialize<'de> for AcmeChallenge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AcmeChallenge::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn http_bind<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<SocketAddr>().map_err(|_| {
        serde::de::Error::custom(format!("{s:?}: expected an address like 0.0.0.0:80"))
    })
}

pub fn default_challenge() -> AcmeChallenge {
    AcmeChallenge::Http
}
pub fn default_http_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 80))
}
pub fn default_cache_dir() -> PathBuf {
    PathBuf::from("/var/lib/gateway/acme")
}
pub fn default_directory() -> String {
    LETS_ENCRYPT.to_string()
}
pub fn default_renew_before() -> DurationStr {
    DurationStr(Duration::from_secs(30 * 24 * 3600))
}

impl AcmeConfig {
    /// What is accepted but worth a word (printed by `-test`, logged at start).
    pub fn notes(&self) -> Vec<String> {
        match self.challenge {
            AcmeChallenge::TlsAlpn { old_name: true } => vec![
                "acme.challenge: \"sni\" is gobetween's old name of tls-alpn (tls-alpn-01); read as tls-alpn"
                    .to_string(),
            ],
            _ => Vec::new(),
        }
    }

    /// Checks of the section alone beyond what parsing checked (names the field).
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(self.directory.starts_with("https://") || self.directory.starts_with("http://")) {
            return Err(FieldError::new(
                "acme.directory",
                format!("{:?}: expected an https:// URL", self.directory),
            ));
        }
        if self.renew_before.get().is_none() {
            return Err(FieldError::new(
                "acme.renew_before",
                "expected a positive duration, e.g. 720h",
            ));
        }
        Ok(())
    }
}
