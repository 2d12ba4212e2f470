//! A service's `listener:` and `handler:` sections, typed.
//!
//! `type` is an enum here, so a misspelt type is refused by the parser with the
//! list of known ones, and the rest of the program matches on variants instead of
//! comparing strings.
//!
//! GOST's handler `metadata:` options are defined once, in [`HandlerMetadata`],
//! whichever handlers take them (`readTimeout` is one field, not four). Each
//! handler takes a subset ([`HandlerType::options`]); an option given to a
//! handler that does not take it is an error naming it, as an unknown field would
//! be. After validation each proxy handler reads its options through a resolved,
//! typed view with every default filled in: [`HttpMetadata`], [`Socks5Metadata`],
//! [`Socks4Metadata`], [`AutoMetadata`], [`RelayMetadata`].
//!
//! ```yaml
//! listener: {type: tls, tls: {certFile: cert.pem, keyFile: key.pem}}
//! handler:
//!   type: auto                                # tcp | udp | http | socks5 | socks4 | auto | relay
//!   auth: {username: user, password: pass}
//!   metadata: {readTimeout: 15s, udp: true, header: {X-Proxy: gw}}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::FieldError;
use crate::config::auth::AuthConfig;
use crate::config::duration::DurationStr;
use crate::config::names::yaml_names;
use crate::config::tls::TlsConfig;

/// How connections arrive: `type` and, for `tls`, the certificate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(rename = "type")]
    pub kind: ListenerType,
    /// The certificate of a `tls` listener (GOST's names: `certFile`, `keyFile`, ...).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// GOST's listener types this build serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerType {
    /// TCP connections.
    Tcp,
    /// UDP datagrams (sessions per client address).
    Udp,
    /// TCP connections with TLS terminated here.
    Tls,
}

yaml_names!(ListenerType {
    Tcp => "tcp",
    Udp => "udp",
    Tls => "tls",
});

/// What is done with a connection: `type` plus the options of that type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    #[serde(rename = "type")]
    pub kind: HandlerType,
    /// `http`, `socks5`, `socks4`, `auto`: require these credentials.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// GOST's forwarding chain: the name of an entry of the top-level `chains:`
    /// section. The handler's outbound connections go through it.
    #[serde(default)]
    pub chain: Option<String>,
    /// GOST's per-handler options; which ones a handler takes is
    /// [`HandlerType::options`].
    #[serde(default)]
    pub metadata: Option<HandlerMetadata>,
}

/// GOST's handler types this build serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum HandlerType {
    /// TCP port forwarding to the forwarder's nodes.
    #[serde(rename = "tcp")]
    Tcp,
    /// UDP port forwarding to the forwarder's nodes.
    #[serde(rename = "udp")]
    Udp,
    /// HTTP/1.x forward proxy (absolute URIs and CONNECT).
    #[serde(rename = "http")]
    Http,
    /// SOCKS5 (RFC 1928/1929), GOST alias `socks`.
    #[serde(rename = "socks5", alias = "socks")]
    Socks5,
    /// SOCKS4 and 4a, GOST alias `socks4a`.
    #[serde(rename = "socks4", alias = "socks4a")]
    Socks4,
    /// HTTP, SOCKS4 and SOCKS5 on one port, told apart by the first byte.
    #[serde(rename = "auto")]
    Auto,
    /// GOST's relay protocol: a proxy (CONNECT to the address the client
    /// names) or, with a forwarder, a relay to the forwarder's nodes.
    #[serde(rename = "relay")]
    Relay,
}

yaml_names!(HandlerType {
    Tcp => "tcp",
    Udp => "udp",
    Http => "http",
    Socks5 => "socks5",
    Socks4 => "socks4",
    Auto => "auto",
    Relay => "relay",
});

impl HandlerType {
    /// Port forwarding to fixed nodes (`tcp`, `udp`), as opposed to a proxy
    /// handler that finds its target in each request.
    pub fn forwards(self) -> bool {
        matches!(self, HandlerType::Tcp | HandlerType::Udp)
    }

    /// The `metadata` options this handler takes.
    pub fn options(self) -> &'static [&'static str] {
        match self {
            HandlerType::Tcp | HandlerType::Udp => &[],
            HandlerType::Http => &[READ_TIMEOUT, RESPONSE_TIMEOUT, HEADER],
            HandlerType::Socks5 => &[READ_TIMEOUT, UDP, UDP_BUFFER_SIZE],
            HandlerType::Socks4 => &[READ_TIMEOUT],
            HandlerType::Auto => &[READ_TIMEOUT, RESPONSE_TIMEOUT, HEADER, UDP, UDP_BUFFER_SIZE],
            HandlerType::Relay => &[READ_TIMEOUT, UDP_BUFFER_SIZE, NODELAY, BIND],
        }
    }
}

const READ_TIMEOUT: &str = "readTimeout";
const RESPONSE_TIMEOUT: &str = "responseTimeout";
const HEADER: &str = "header";
const UDP: &str = "udp";
const UDP_BUFFER_SIZE: &str = "udpBufferSize";
const NODELAY: &str = "nodelay";
const BIND: &str = "bind";

/// GOST's handler `metadata:`, every option this build knows, each defined once.
/// Absent options take the default named in their doc line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerMetadata {
    /// http, socks5, socks4, auto: how long a client may take to send a complete
    /// request head or handshake, also the idle limit between keep-alive requests
    /// (default [`default_read_timeout`], 15 s).
    #[serde(rename = "readTimeout", default)]
    pub read_timeout: Option<DurationStr>,
    /// http, auto: how long a target may take to send its response head before
    /// the client gets a 504 (default [`default_response_timeout`], 60 s).
    #[serde(rename = "responseTimeout", default)]
    pub response_timeout: Option<DurationStr>,
    /// http, auto: extra headers on the responses the proxy itself generates
    /// (`200 Connection established`, error replies).
    #[serde(default)]
    pub header: Option<BTreeMap<String, String>>,
    /// socks5, auto: allow UDP ASSOCIATE (default off, as in GOST).
    #[serde(default)]
    pub udp: Option<bool>,
    /// socks5, auto: largest datagram relayed, SOCKS header included, 512 to
    /// 65535 bytes (default [`default_udp_buffer_size`], 4096).
    #[serde(rename = "udpBufferSize", default)]
    pub udp_buffer_size: Option<usize>,
    /// Not an option here: GOST reads `ignoreChain` from the service's
    /// `metadata:` only; read so that [`HandlerConfig::validate`] can say so.
    #[serde(rename = "ignoreChain", default)]
    pub ignore_chain: Option<bool>,
    /// relay: GOST's switch to send the response at once instead of with the
    /// target's first bytes. Accepted for GOST's configs; this handler always
    /// answers at once, which both kinds of client read (default false).
    #[serde(default)]
    pub nodelay: Option<bool>,
    /// relay: GOST's BIND (remote port forwarding). Not served by this build:
    /// only `false` (the default) is accepted.
    #[serde(default)]
    pub bind: Option<bool>,
}

/// GOST's default `readTimeout`.
pub fn default_read_timeout() -> Duration {
    Duration::from_secs(15)
}

/// The default `responseTimeout`.
pub fn default_response_timeout() -> Duration {
    Duration::from_secs(60)
}

/// GOST's default `udpBufferSize`.
pub fn default_udp_buffer_size() -> usize {
    4096
}

/// GOST's bounds on `udpBufferSize`.
pub const UDP_BUFFER_MIN: usize = 512;
pub const UDP_BUFFER_MAX: usize = 65535;

impl HandlerMetadata {
    /// The options that are set, by their YAML names.
    fn given(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            (READ_TIMEOUT, self.read_timeout.is_some()),
            (RESPONSE_TIMEOUT, self.response_timeout.is_some()),
            (HEADER, self.header.is_some()),
            (UDP, self.udp.is_some()),
            (UDP_BUFFER_SIZE, self.udp_buffer_size.is_some()),
            (NODELAY, self.nodelay.is_some()),
            (BIND, self.bind.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
    }

    /// Refuse an option the handler `kind` does not take. `field` is the path of
    /// the `handler:` section.
    fn check_applies(&self, kind: HandlerType, field: &str) -> Result<(), FieldError> {
        let takes = kind.options();
        if let Some(name) = self.given().find(|n| !takes.contains(n)) {
            let expected = if takes.is_empty() {
                "no metadata options (timeouts and limits are service fields, e.g. client_idle_timeout)"
                    .to_string()
            } else {
                format!("one of {}", takes.join(", "))
            };
            return Err(FieldError::new(
                format!("{field}.metadata.{name}"),
                format!("not an option of the {kind} handler: expected {expected}"),
            ));
        }
        Ok(())
    }

    fn read_timeout(&self) -> Duration {
        self.read_timeout.map_or_else(default_read_timeout, |d| d.0)
    }

    fn response_timeout(&self) -> Duration {
        self.response_timeout
            .map_or_else(default_response_timeout, |d| d.0)
    }

    fn header(&self) -> BTreeMap<String, String> {
        self.header.clone().unwrap_or_default()
    }

    fn udp(&self) -> bool {
        self.udp.unwrap_or(false)
    }

    fn udp_buffer_size(&self) -> usize {
        self.udp_buffer_size.unwrap_or_else(default_udp_buffer_size)
    }
}

impl HandlerConfig {
    /// The checks of this section; `field` is its path (`services[2].handler`).
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        let Some(m) = &self.metadata else {
            return Ok(());
        };
        if m.ignore_chain.is_some() {
            return Err(FieldError::new(
                format!("{field}.metadata.ignoreChain"),
                "GOST reads ignoreChain from the service's metadata, not the handler's (here it \
                 would be ignored and the chain used): expected it under the service's \
                 metadata: {ignoreChain: true}",
            ));
        }
        if self.kind.forwards() {
            return Err(FieldError::new(
                format!("{field}.metadata"),
                format!(
                    "the {} handler has no metadata options: expected none (timeouts and limits are service fields, e.g. client_idle_timeout)",
                    self.kind
                ),
            ));
        }
        m.check_applies(self.kind, field)?;
        match self.kind {
            HandlerType::Http => self.options::<HttpMetadata>().validate(field),
            HandlerType::Socks5 => self.options::<Socks5Metadata>().validate(field),
            HandlerType::Socks4 => self.options::<Socks4Metadata>().validate(field),
            HandlerType::Auto => self.options::<AutoMetadata>().validate(field),
            HandlerType::Relay => {
                if m.bind == Some(true) {
                    return Err(FieldError::new(
                        format!("{field}.metadata.{BIND}"),
                        "the relay handler's BIND (remote port forwarding) is not served by this build: expected bind: false or no bind",
                    ));
                }
                self.options::<RelayMetadata>().validate(field)
            }
            HandlerType::Tcp | HandlerType::Udp => Ok(()),
        }
    }

    /// The options of this section as handler `M` reads them, defaults filled in.
    pub fn options<M: Metadata>(&self) -> HandlerOptions<M> {
        HandlerOptions {
            auth: self.auth.clone(),
            metadata: M::resolve(
                self.metadata
                    .as_ref()
                    .unwrap_or(&HandlerMetadata::default()),
            ),
        }
    }
}

/// The metadata one proxy handler reads, every default filled in (its
/// defaults are what it resolves from an empty `metadata:`).
pub trait Metadata: Sized {
    /// The handler these options belong to.
    const HANDLER: HandlerType;

    /// This handler's view of the options.
    fn resolve(m: &HandlerMetadata) -> Self;

    /// Check what the types cannot express (bounds, header syntax). `field` is the
    /// path of the whole `handler:` section, e.g. `services[2].handler`.
    fn validate(&self, field: &str) -> Result<(), FieldError>;
}

/// A proxy handler's `handler:` section minus `type`: credentials and its view of
/// the metadata. Deserializable on its own (`{auth, metadata}`), refusing options
/// the handler does not take.
#[derive(Debug, Clone)]
pub struct HandlerOptions<M> {
    /// Credentials the client must present, in its protocol's way:
    /// `Proxy-Authorization: Basic` for HTTP, RFC 1929 username/password for
    /// SOCKS5; SOCKS4 carries only a user id.
    pub auth: Option<AuthConfig>,
    pub metadata: M,
}

/// No credentials, every option at its default.
impl<M: Metadata> Default for HandlerOptions<M> {
    fn default() -> Self {
        HandlerOptions {
            auth: None,
            metadata: M::resolve(&HandlerMetadata::default()),
        }
    }
}

impl<M: Metadata> HandlerOptions<M> {
    /// `field` is the path of this section, e.g. `services[2].handler`.
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        self.metadata.validate(field)
    }
}

impl<'de, M: Metadata> Deserialize<'de> for HandlerOptions<M> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            auth: Option<AuthConfig>,
            #[serde(default)]
            metadata: Option<HandlerMetadata>,
        }
        let raw = Raw::deserialize(d)?;
        let h = HandlerConfig {
            kind: M::HANDLER,
            auth: raw.auth,
            chain: None,
            metadata: raw.metadata,
        };
        if let Some(m) = &h.metadata {
            m.check_applies(h.kind, "handler")
                .map_err(|e| serde::de::Error::custom(format!("{}: {}", e.field, e.message)))?;
        }
        Ok(h.options())
    }
}

/// The `http` handler's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMetadata {
    pub header: BTreeMap<String, String>,
    pub read_timeout: Duration,
    pub response_timeout: Duration,
}

impl Metadata for HttpMetadata {
    const HANDLER: HandlerType = HandlerType::Http;

    fn resolve(m: &HandlerMetadata) -> Self {
        Self {
            header: m.header(),
            read_timeout: m.read_timeout(),
            response_timeout: m.response_timeout(),
        }
    }

    fn validate(&self, field: &str) -> Result<(), FieldError> {
        validate_headers(&self.header, field)?;
        validate_timeout(self.read_timeout, field, READ_TIMEOUT)?;
        validate_timeout(self.response_timeout, field, RESPONSE_TIMEOUT)
    }
}

/// The `socks5` handler's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socks5Metadata {
    pub read_timeout: Duration,
    pub udp: bool,
    pub udp_buffer_size: usize,
}

impl Metadata for Socks5Metadata {
    const HANDLER: HandlerType = HandlerType::Socks5;

    fn resolve(m: &HandlerMetadata) -> Self {
        Self {
            read_timeout: m.read_timeout(),
            udp: m.udp(),
            udp_buffer_size: m.udp_buffer_size(),
        }
    }

    fn validate(&self, field: &str) -> Result<(), FieldError> {
        validate_udp_buffer(self.udp_buffer_size, field)?;
        validate_timeout(self.read_timeout, field, READ_TIMEOUT)
    }
}

/// The `socks4` handler's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socks4Metadata {
    pub read_timeout: Duration,
}

impl Metadata for Socks4Metadata {
    const HANDLER: HandlerType = HandlerType::Socks4;

    fn resolve(m: &HandlerMetadata) -> Self {
        Self {
            read_timeout: m.read_timeout(),
        }
    }

    fn validate(&self, field: &str) -> Result<(), FieldError> {
        validate_timeout(self.read_timeout, field, READ_TIMEOUT)
    }
}

/// The `auto` handler's options: what each protocol it hands out reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoMetadata {
    pub http: HttpMetadata,
    pub socks5: Socks5Metadata,
    pub socks4: Socks4Metadata,
}

impl Metadata for AutoMetadata {
    const HANDLER: HandlerType = HandlerType::Auto;

    fn resolve(m: &HandlerMetadata) -> Self {
        Self {
            http: HttpMetadata::resolve(m),
            socks5: Socks5Metadata::resolve(m),
            socks4: Socks4Metadata::resolve(m),
        }
    }

    /// Each protocol checks its own part, so `auto` accepts exactly what the
    /// protocols it dispatches to accept.
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        self.socks5.validate(field)?;
        self.http.validate(field)?;
        self.socks4.validate(field)
    }
}

/// The `relay` handler's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayMetadata {
    /// The whole request must arrive within this.
    pub read_timeout: Duration,
    /// Largest datagram relayed for a UDP request.
    pub udp_buffer_size: usize,
}

impl Default for RelayMetadata {
    fn default() -> Self {
        Self::resolve(&HandlerMetadata::default())
    }
}

impl Metadata for RelayMetadata {
    const HANDLER: HandlerType = HandlerType::Relay;

    fn resolve(m: &HandlerMetadata) -> Self {
        Self {
            read_timeout: m.read_timeout(),
            udp_buffer_size: m.udp_buffer_size(),
        }
    }

    fn validate(&self, field: &str) -> Result<(), FieldError> {
        validate_udp_buffer(self.udp_buffer_size, field)?;
        validate_timeout(self.read_timeout, field, READ_TIMEOUT)
    }
}

/// Timeouts must be positive: a zero `readTimeout` would refuse every client.
fn validate_timeout(value: Duration, field: &str, name: &str) -> Result<(), FieldError> {
    if value.is_zero() {
        return Err(FieldError::new(
            format!("{field}.metadata.{name}"),
            "expected a positive duration like \"15s\"",
        ));
    }
    Ok(())
}

fn validate_udp_buffer(size: usize, field: &str) -> Result<(), FieldError> {
    if !(UDP_BUFFER_MIN..=UDP_BUFFER_MAX).contains(&size) {
        return Err(FieldError::new(
            format!("{field}.metadata.{UDP_BUFFER_SIZE}"),
            format!(
                "expected a size between {UDP_BUFFER_MIN} and {UDP_BUFFER_MAX} bytes, got {size}"
            ),
        ));
    }
    Ok(())
}

/// Header names must be HTTP tokens and values must not break the line: a value
/// with CR/LF would let the config inject arbitrary response lines.
pub(crate) fn validate_headers(
    headers: &BTreeMap<String, String>,
    field: &str,
) -> Result<(), FieldError> {
    for (name, value) in headers {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(FieldError::new(
                format!("{field}.metadata.{HEADER}"),
                format!(
                    "expected header names made of letters, digits and !#$%&'*+-.^_`|~, got {name:?}"
                ),
            ));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(FieldError::new(
                format!("{field}.metadata.{HEADER}.{name}"),
                "expected a value without CR, LF or NUL",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_option_validation() {
        let mut h = BTreeMap::new();
        h.insert("X-Proxy".to_string(), "gw 1".to_string());
        assert!(validate_headers(&h, "s").is_ok());
        h.insert("Bad Name".to_string(), "v".to_string());
        assert_eq!(
            validate_headers(&h, "s").unwrap_err().field,
            "s.metadata.header"
        );
        let mut h = BTreeMap::new();
        h.insert("X".to_string(), "a\r\nSet-Cookie: x".to_string());
        assert_eq!(
            validate_headers(&h, "s").unwrap_err().field,
            "s.metadata.header.X"
        );
    }

    #[test]
    fn udp_buffer_bounds() {
        assert!(validate_udp_buffer(4096, "h").is_ok());
        let e = validate_udp_buffer(100, "services[0].handler").unwrap_err();
        assert_eq!(e.field, "services[0].handler.metadata.udpBufferSize");
        assert!(validate_udp_buffer(70000, "h").is_err());
    }
}
