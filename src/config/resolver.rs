//! GOST's `resolvers:` and `hosts:` sections: how the names a service dials are
//! turned into addresses.
//!
//! ```yaml
//! services:
//! - name: web
//!   addr: ":8080"
//!   resolver: resolver-0        # names the handler or forwarder dials go to these nameservers
//!   hosts: hosts-0              # ... after this table, which wins over DNS
//!   handler: {type: http}
//!   listener: {type: tcp}
//! resolvers:
//! - name: resolver-0
//!   nameservers:
//!   - addr: 10.0.0.53           # [udp://]ip[:port]: UDP, TCP when an answer is truncated
//!   - addr: tcp://10.0.0.54:53  # TCP only
//!   - addr: tls://1.1.1.1:853   # DNS over TLS (server name: `hostname`, else the IP)
//!     hostname: cloudflare-dns.com
//!   - addr: https://1.0.0.1/dns-query
//!     prefer: ipv6              # AAAA first, then A
//!     only: ipv4                # A only (wins over prefer)
//!     ttl: 60s                  # cache answers this long instead of their own TTL
//!     timeout: 2s               # per query (default 5s)
//! hosts:
//! - name: hosts-0
//!   mappings:
//!   - {ip: 127.0.0.1, hostname: example.org, aliases: [www.example.org]}
//!   - {ip: "::1", hostname: example.org}
//! ```
//!
//! A service refers to an entry by its `name`; a name that no entry has is an error
//! at load naming the field (`services[0].resolver: no resolver named "x"`). The
//! nameservers of a resolver are asked in order; the first that returns addresses
//! answers (GOST's rule). Without `resolver:` the system resolver is used (what
//! `getaddrinfo` would answer); `hosts:` applies either way.
//!
//! GOST options this build refuses at load rather than ignore: a nameserver's
//! `chain` (queries through a forwarding chain), `clientIP` (EDNS client subnet)
//! and `async` (serve stale answers while refreshing); a `hosts` entry's
//! `file`/`redis`/`http`/`plugin` loaders (and `reload`), and a resolver `plugin`,
//! are unknown fields.
//!
//! What uses them at run time: `src/proxy/resolve.rs`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::FieldError;
use super::duration::DurationStr;

/// One entry of `resolvers:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverConfig {
    pub name: String,
    /// Asked in order; the first to answer with addresses wins.
    pub nameservers: Vec<NameserverConfig>,
}

/// One upstream DNS server of a resolver (GOST's field names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameserverConfig {
    /// `[protocol://]ip[:port]`; protocol `udp` (default), `tcp`, `tls`, `https`.
    pub addr: NameserverAddr,
    /// GOST: send the queries through this chain. Refused (see [`validate`]).
    #[serde(default)]
    pub chain: Option<String>,
    /// `ipv4` (default: A first, then AAAA) or `ipv6` (AAAA first).
    #[serde(default)]
    pub prefer: Option<IpFamily>,
    /// GOST: EDNS client subnet. Refused (see [`validate`]).
    #[serde(default, rename = "clientIP")]
    pub client_ip: Option<String>,
    /// The server name checked in the certificate of a `tls`/`https` server
    /// (default: the address in `addr`).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Keep answers this long whatever their own TTL; 0 = their own TTL.
    #[serde(default)]
    pub ttl: DurationStr,
    /// Give up on a query after this long; 0 = [`default_nameserver_timeout`].
    #[serde(default)]
    pub timeout: DurationStr,
    /// GOST: answer from an expired cache entry while refreshing it. Refused when
    /// true (see [`validate`]).
    #[serde(default, rename = "async")]
    pub async_: bool,
    /// `ipv4` or `ipv6`: ask for that family only (wins over `prefer`).
    #[serde(default)]
    pub only: Option<IpFamily>,
}

/// The per-query timeout when `timeout` is 0 or absent: 5 s (GOST's default).
pub fn default_nameserver_timeout() -> Duration {
    Duration::from_secs(5)
}

impl NameserverConfig {
    /// The query timeout in effect.
    pub fn timeout(&self) -> Duration {
        self.timeout
            .get()
            .unwrap_or_else(default_nameserver_timeout)
    }
}

/// `prefer` / `only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    V4,
    V6,
}

impl<'de> Deserialize<'de> for IpFamily {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // GOST accepts both spellings.
        match s.as_str() {
            "ipv4" | "ip4" => Ok(IpFamily::V4),
            "ipv6" | "ip6" => Ok(IpFamily::V6),
            _ => Err(serde::de::Error::custom(format!(
                "{s:?}: expected ipv4 or ipv6"
            ))),
        }
    }
}

/// How a nameserver is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsProtocol {
    /// UDP, and TCP again when the UDP answer is truncated.
    Udp,
    Tcp,
    /// DNS over TLS (RFC 7858).
    Tls,
    /// DNS over HTTPS (RFC 8484).
    Https,
}

impl DnsProtocol {
    fn default_port(self) -> u16 {
        match self {
            DnsProtocol::Udp | DnsProtocol::Tcp => 53,
            DnsProtocol::Tls => 853,
            DnsProtocol::Https => 443,
        }
    }
}

/// A nameserver `addr`, parsed at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameserverAddr {
    /// As written.
    pub text: String,
    pub protocol: DnsProtocol,
    pub addr: SocketAddr,
    /// The URL path of an `https` server (default `/dns-query`).
    pub path: Option<String>,
}

const NAMESERVER_EXPECTED: &str = "expected [udp|tcp|tls|https://]ip[:port], e.g. 10.0.0.53, tcp://10.0.0.53:53, tls://1.1.1.1:853, https://1.0.0.1/dns-query";

impl NameserverAddr {
    pub fn parse(text: &str) -> Result<NameserverAddr, String> {
        let bad = |why: &str| format!("{text:?}: {why}{NAMESERVER_EXPECTED}");
        let (protocol, rest) = match text.split_once("://") {
            None => (DnsProtocol::Udp, text),
            Some(("udp", r)) => (DnsProtocol::Udp, r),
            Some(("tcp", r)) => (DnsProtocol::Tcp, r),
            Some(("tls", r)) => (DnsProtocol::Tls, r),
            Some(("https", r)) => (DnsProtocol::Https, r),
            Some((p, _)) => return Err(bad(&format!("unknown protocol {p:?}: "))),
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) if protocol == DnsProtocol::Https => (&rest[..i], Some(rest[i..].to_string())),
            Some(_) => return Err(bad("a path is only for https: ")),
            None => (rest, None),
        };
        let addr = if let Ok(ip) = hostport.parse::<IpAddr>() {
            SocketAddr::new(ip, protocol.default_port())
        } else if let Some(ip) = hostport
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<IpAddr>().ok())
        {
            SocketAddr::new(ip, protocol.default_port())
        } else {
            hostport.parse::<SocketAddr>().map_err(|_| {
                bad("the server must be an IP address (a name would need a resolver itself): ")
            })?
        };
        Ok(NameserverAddr {
            text: text.to_string(),
            protocol,
            addr,
            path,
        })
    }
}

impl fmt::Display for NameserverAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for NameserverAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NameserverAddr::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One entry of `hosts:` (GOST's host mapper).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsConfig {
    pub name: String,
    pub mappings: Vec<HostMapping>,
}

/// `{ip, hostname, aliases}`: `hostname` and each alias resolve to `ip`. Several
/// mappings of one name give it several addresses, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostMapping {
    pub ip: IpAddr,
    pub hostname: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A reference by name to a top-level entry (`resolver: resolver-0`), with the
/// entry it names once the config is linked ([`link`]). Two references are equal
/// when they name the same entry *and* that entry is unchanged, so a reload that
/// edits a resolver restarts the services that use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRef<T> {
    pub name: String,
    /// Filled in by [`link`] right after validation; `None` before.
    pub target: Option<Arc<T>>,
}

impl<T> NameRef<T> {
    pub fn new(name: &str) -> Self {
        NameRef {
            name: name.to_string(),
            target: None,
        }
    }
}

impl<'de, T> Deserialize<'de> for NameRef<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(serde::de::Error::custom(
                "empty name: expected the name of an entry",
            ));
        }
        Ok(NameRef::new(&s))
    }
}

/// Something a `name:` identifies.
pub trait Named {
    /// `resolver` / `hosts`, for messages.
    const KIND: &'static str;
    /// The top-level section, for messages.
    const SECTION: &'static str;
    fn name(&self) -> &str;
}

impl Named for ResolverConfig {
    const KIND: &'static str = "resolver";
    const SECTION: &'static str = "resolvers";
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for HostsConfig {
    const KIND: &'static str = "hosts";
    const SECTION: &'static str = "hosts";
    fn name(&self) -> &str {
        &self.name
    }
}

/// Point `r` at the entry of `entries` it names; `field` is its path for the
/// error (`services[0].resolver: no resolver named "x" in resolvers: (known: a, b)`).
pub fn link_ref<T: Named + Clone>(
    r: &mut NameRef<T>,
    entries: &[T],
    field: &str,
) -> Result<(), FieldError> {
    match entries.iter().find(|e| e.name() == r.name) {
        Some(e) => {
            r.target = Some(Arc::new(e.clone()));
            Ok(())
        }
        None => {
            let known: Vec<&str> = entries.iter().map(|e| e.name()).collect();
            let known = if known.is_empty() {
                format!("the {} section is empty or absent", T::SECTION)
            } else {
                format!("known: {}", known.join(", "))
            };
            Err(FieldError::new(
                field,
                format!(
                    "no {} named {:?} in {}: ({known}); expected the name of an entry",
                    T::KIND,
                    r.name,
                    T::SECTION
                ),
            ))
        }
    }
}

/// Check `resolvers:` and `hosts:` on their own: unique names, at least one
/// nameserver or mapping, valid host names, no option this build cannot honour.
pub fn validate(resolvers: &[ResolverConfig], hosts: &[HostsConfig]) -> Result<(), FieldError> {
    unique(resolvers)?;
    unique(hosts)?;
    for (i, r) in resolvers.iter().enumerate() {
        let at = |f: &str| format!("resolvers[{i}].{f}");
        if r.nameservers.is_empty() {
            return Err(FieldError::new(
                at("nameservers"),
                "expected at least one nameserver, e.g. nameservers: [{addr: 10.0.0.53}]",
            ));
        }
        for (j, ns) in r.nameservers.iter().enumerate() {
            let at = |f: &str| at(&format!("nameservers[{j}].{f}"));
            if ns.chain.is_some() {
                return Err(FieldError::new(
                    at("chain"),
                    "DNS queries through a forwarding chain are not supported by this build: expected no chain",
                ));
            }
            if ns.client_ip.is_some() {
                return Err(FieldError::new(
                    at("clientIP"),
                    "EDNS client subnet is not supported by this build: expected no clientIP",
                ));
            }
            if ns.async_ {
                return Err(FieldError::new(
                    at("async"),
                    "serving expired answers while refreshing is not supported by this build: expected async: false",
                ));
            }
            if let Some(h) = &ns.hostname {
                if !matches!(ns.addr.protocol, DnsProtocol::Tls | DnsProtocol::Https) {
                    return Err(FieldError::new(
                        at("hostname"),
                        "hostname is the TLS server name: expected it only with a tls:// or https:// addr",
                    ));
                }
                if rustls_pki_types::ServerName::try_from(h.as_str()).is_err() {
                    return Err(FieldError::new(
                        at("hostname"),
                        format!("{h:?}: expected a DNS name or an IP address"),
                    ));
                }
            }
        }
    }
    for (i, h) in hosts.iter().enumerate() {
        if h.mappings.is_empty() {
            return Err(FieldError::new(
                format!("hosts[{i}].mappings"),
                "expected at least one mapping, e.g. mappings: [{ip: 10.0.0.5, hostname: db.lan}]",
            ));
        }
        for (j, m) in h.mappings.iter().enumerate() {
            let names = std::iter::once(("hostname".to_string(), &m.hostname)).chain(
                m.aliases
                    .iter()
                    .enumerate()
                    .map(|(k, a)| (format!("aliases[{k}]"), a)),
            );
            for (field, name) in names {
                if !valid_host_name(name) {
                    return Err(FieldError::new(
                        format!("hosts[{i}].mappings[{j}].{field}"),
                        format!("{name:?}: expected a host name like db.example.lan"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Every entry of a top-level section has a non-empty name no other has.
pub(crate) fn unique<T: Named>(entries: &[T]) -> Result<(), FieldError> {
    let mut seen = std::collections::HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        if e.name().trim().is_empty() {
            return Err(FieldError::new(
                format!("{}[{i}].name", T::SECTION),
                "expected a non-empty name",
            ));
        }
        if !seen.insert(e.name()) {
            return Err(FieldError::new(
                format!("{}[{i}].name", T::SECTION),
                format!(
                    "duplicate {} name {:?}: expected unique names",
                    T::KIND,
                    e.name()
                ),
            ));
        }
    }
    Ok(())
}

/// A DNS name as a hosts table may hold it: labels of letters, digits, `-`, `_`.
fn valid_host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_addresses() {
        let a = NameserverAddr::parse("10.0.0.53").unwrap();
        assert_eq!(
            (a.protocol, a.addr.to_string()),
            (DnsProtocol::Udp, "10.0.0.53:53".into())
        );
        let a = NameserverAddr::parse("tcp://10.0.0.53:5353").unwrap();
        assert_eq!((a.protocol, a.addr.port()), (DnsProtocol::Tcp, 5353));
        let a = NameserverAddr::parse("tls://1.1.1.1").unwrap();
        assert_eq!(a.addr.port(), 853);
        let a = NameserverAddr::parse("https://1.0.0.1/dns-query").unwrap();
        assert_eq!(
            (a.addr.port(), a.path.as_deref()),
            (443, Some("/dns-query"))
        );
        let a = NameserverAddr::parse("udp://[::1]:53").unwrap();
        assert!(a.addr.is_ipv6());
        assert!(
            NameserverAddr::parse("dns.google")
                .unwrap_err()
                .contains("IP address")
        );
        assert!(
            NameserverAddr::parse("quic://1.1.1.1")
                .unwrap_err()
                .contains("quic")
        );
        assert!(NameserverAddr::parse("tcp://1.1.1.1/x").is_err());
    }

    #[test]
    fn host_names() {
        assert!(valid_host_name("db.example.lan"));
        assert!(valid_host_name("_srv.x."));
        assert!(!valid_host_name("a..b"));
        assert!(!valid_host_name("a b"));
        assert!(!valid_host_name(""));
    }
}
