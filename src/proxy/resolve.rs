//! Name resolution for what a service dials: GOST's host mapper (`hosts:`) first,
//! then its resolver (`resolver:`), else the system resolver.
//!
//! The order is GOST's: a name in the service's hosts table is answered from the
//! table and no DNS query is sent; otherwise the resolver's nameservers are asked
//! one after the other, and the first that returns addresses answers. A service
//! without `resolver:` asks the system (`getaddrinfo`, so `/etc/hosts` and
//! `/etc/resolv.conf` as every other program on the host).
//!
//! DNS itself is `hickory-resolver`: each nameserver gets a resolver of its own
//! (GOST's options are per nameserver), with its cache, its timeout and its
//! address-family order. A `udp://` nameserver is asked over UDP and, when the
//! answer comes back truncated, again over TCP; `tcp://` uses TCP only; `tls://`
//! and `https://` check the server's certificate against the system CA bundle.
//!
//! The same crate answers discovery's SRV queries ([`srv_lookup`]), so gobetween's
//! `srv` discovery gets the TCP fallback on truncation too.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig as HickoryServer, ProtocolConfig,
    ResolveHosts, ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use crate::config::resolver::{
    DnsProtocol, HostsConfig, IpFamily, NameserverConfig, ResolverConfig,
};

/// How one service turns `host:port` into socket addresses.
#[derive(Clone, Default)]
pub struct Resolve {
    /// The service's hosts table: name (lower case, no trailing dot) → addresses.
    hosts: Option<Arc<HostTable>>,
    /// The service's nameservers, in order; `None`: the system resolver.
    dns: Option<Arc<Vec<Nameserver>>>,
}

impl std::fmt::Debug for Resolve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolve")
            .field("hosts", &self.hosts.as_ref().map(|h| h.len()))
            .field(
                "nameservers",
                &self
                    .dns
                    .as_ref()
                    .map(|d| d.iter().map(|n| n.label.clone()).collect::<Vec<_>>()),
            )
            .finish()
    }
}

type HostTable = std::collections::HashMap<String, Vec<IpAddr>>;

struct Nameserver {
    /// The `addr` as written, for errors.
    label: String,
    resolver: TokioResolver,
}

impl Resolve {
    /// The resolution a service asked for (both `None`: the system's).
    pub fn new(
        resolver: Option<&ResolverConfig>,
        hosts: Option<&HostsConfig>,
    ) -> Result<Resolve, String> {
        let hosts = hosts.map(|h| {
            let mut table = HostTable::new();
            for m in &h.mappings {
                for name in std::iter::once(&m.hostname).chain(&m.aliases) {
                    let ips = table.entry(normalize(name)).or_default();
                    if !ips.contains(&m.ip) {
                        ips.push(m.ip);
                    }
                }
            }
            Arc::new(table)
        });
        let dns = match resolver {
            Some(r) => Some(Arc::new(
                r.nameservers
                    .iter()
                    .map(|ns| {
                        Ok(Nameserver {
                            label: ns.addr.text.clone(),
                            resolver: build(ns).map_err(|e| {
                                format!("resolver {:?}: nameserver {}: {e}", r.name, ns.addr)
                            })?,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?,
            )),
            None => None,
        };
        Ok(Resolve { hosts, dns })
    }

    /// Whether a hosts table or a resolver is set (else: the system's resolver).
    pub fn is_set(&self) -> bool {
        self.hosts.is_some() || self.dns.is_some()
    }

    /// `target` as it is passed on to a proxy, GOST's rule (x/internal/net
    /// `Resolve`): a name the hosts table holds, or any name when a resolver is
    /// set, becomes its first address; otherwise it goes as written and the
    /// proxy resolves it.
    pub async fn pin(&self, target: &str) -> io::Result<String> {
        let (host, _) = split_host_port(target)?;
        let in_table = || (self.hosts.as_ref()).is_some_and(|t| t.contains_key(&normalize(host)));
        if host.parse::<IpAddr>().is_ok() || (self.dns.is_none() && !in_table()) {
            return Ok(target.to_string());
        }
        let first = self.lookup(target).await?.into_iter().next();
        first.map(|a| a.to_string()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{target} resolved to no address"),
            )
        })
    }

    /// The addresses of `target` (`host:port`, `[v6]:port`), hosts table first.
    pub async fn lookup(&self, target: &str) -> io::Result<Vec<SocketAddr>> {
        let (host, port) = split_host_port(target)?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some(ips) = self.hosts.as_ref().and_then(|t| t.get(&normalize(host))) {
            return Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        }
        let Some(servers) = &self.dns else {
            return Ok(tokio::net::lookup_host((host, port)).await?.collect());
        };
        let mut errors = Vec::new();
        for ns in servers.iter() {
            match ns.resolver.lookup_ip(host).await {
                Ok(found) => {
                    let addrs: Vec<SocketAddr> =
                        found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                    if !addrs.is_empty() {
                        return Ok(addrs);
                    }
                    errors.push(format!("{}: no address", ns.label));
                }
                Err(e) => errors.push(format!("{}: {e}", ns.label)),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot resolve {host}: {}", errors.join("; ")),
        ))
    }
}

/// Host names compare case-insensitively and without the root's trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Split `host:port` / `[v6]:port`.
fn split_host_port(target: &str) -> io::Result<(&str, u16)> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{target:?}: expected host:port"),
        )
    };
    let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// A hickory resolver for one nameserver with its GOST options.
fn build(ns: &NameserverConfig) -> Result<TokioResolver, String> {
    let name = || -> Arc<str> {
        Arc::from(
            ns.hostname
                .clone()
                .unwrap_or_else(|| ns.addr.addr.ip().to_string()),
        )
    };
    let protocols = match ns.addr.protocol {
        // Truncated UDP answers are asked again over TCP (hickory does this when the
        // server has a TCP connection configured).
        DnsProtocol::Udp => vec![ProtocolConfig::Udp, ProtocolConfig::Tcp],
        DnsProtocol::Tcp => vec![ProtocolConfig::Tcp],
        DnsProtocol::Tls => vec![ProtocolConfig::Tls {
            server_name: name(),
        }],
        DnsProtocol::Https => vec![ProtocolConfig::Https {
            server_name: name(),
            path: Arc::from(ns.addr.path.as_deref().unwrap_or("/dns-query")),
        }],
    };
    let mut opts = ResolverOpts::default();
    opts.timeout = ns.timeout();
    opts.ip_strategy = match (ns.only, ns.prefer) {
        (Some(IpFamily::V4), _) => LookupIpStrategy::Ipv4Only,
        (Some(IpFamily::V6), _) => LookupIpStrategy::Ipv6Only,
        (None, Some(IpFamily::V6)) => LookupIpStrategy::Ipv6thenIpv4,
        // GOST's default: A first, AAAA when there is no A.
        (None, _) => LookupIpStrategy::Ipv4thenIpv6,
    };
    if let Some(ttl) = ns.ttl.get() {
        opts.positive_min_ttl = Some(ttl);
        opts.positive_max_ttl = Some(ttl);
    }
    let builder = builder(ns.addr.addr, protocols, opts);
    let builder = if matches!(ns.addr.protocol, DnsProtocol::Tls | DnsProtocol::Https) {
        builder.with_tls_config(super::tls::system_client_config().map_err(|e| e.to_string())?)
    } else {
        builder
    };
    builder.build().map_err(|e| e.to_string())
}

/// A resolver builder for one server: only that server, no `/etc/hosts`, one
/// attempt per query per timeout (the caller's interval or the next nameserver
/// is the retry).
fn builder(
    server: SocketAddr,
    protocols: Vec<ProtocolConfig>,
    mut opts: ResolverOpts,
) -> hickory_resolver::ResolverBuilder<TokioRuntimeProvider> {
    let connections = protocols
        .into_iter()
        .map(|p| {
            let mut c = ConnectionConfig::new(p);
            c.port = server.port();
            c
        })
        .collect();
    let config =
        HickoryConfig::from_name_servers(vec![HickoryServer::new(server.ip(), true, connections)]);
    opts.use_hosts_file = ResolveHosts::Never;
    opts.attempts = 1;
    // Names are taken as written: no search domains (`ndots: 0`).
    opts.ndots = 0;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).with_options(opts)
}

/// One SRV record as discovery uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// The target name, without the trailing dot.
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// Ask `server` (or the system's first nameserver) for the SRV records of `name`:
/// over UDP with TCP on truncation (`tcp: false`), or over TCP only.
pub async fn srv_lookup(
    name: &str,
    server: Option<SocketAddr>,
    tcp: bool,
    timeout: Duration,
) -> Result<Vec<SrvRecord>, String> {
    let protocols = if tcp {
        vec![ProtocolConfig::Tcp]
    } else {
        vec![ProtocolConfig::Udp, ProtocolConfig::Tcp]
    };
    let server = match server {
        Some(s) => s,
        None => system_nameserver().ok_or("no nameserver in /etc/resolv.conf")?,
    };
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    // Discovery asks every interval: the interval is the cache.
    opts.cache_size = 0;
    let resolver = builder(server, protocols, opts)
        .build()
        .map_err(|e| format!("DNS resolver for {server}: {e}"))?;
    // A relative name would be tried against no search domain anyway; asking for
    // the fully qualified form avoids a second query.
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let lookup = resolver
        .srv_lookup(fqdn.as_str())
        .await
        .map_err(|e| format!("SRV {name} at {server}: {e}"))?;
    Ok(lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(SrvRecord {
                target: srv.target.to_utf8().trim_end_matches('.').to_string(),
                port: srv.port,
                priority: srv.priority,
                weight: srv.weight,
            }),
            _ => None,
        })
        .collect())
}

/// The first `nameserver` of /etc/resolv.conf, port 53.
fn system_nameserver() -> Option<SocketAddr> {
    let (config, _) = hickory_resolver::system_conf::read_system_conf().ok()?;
    config
        .name_servers()
        .first()
        .map(|ns| SocketAddr::new(ns.ip, 53))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resolver::HostMapping;

    #[tokio::test]
    async fn hosts_table_then_system() {
        let hosts = HostsConfig {
            name: "h".into(),
            mappings: vec![
                HostMapping {
                    ip: "127.0.0.2".parse().unwrap(),
                    hostname: "Db.Lan".into(),
                    aliases: vec!["data.lan.".into()],
                },
                HostMapping {
                    ip: "::1".parse().unwrap(),
                    hostname: "db.lan".into(),
                    aliases: vec![],
                },
            ],
        };
        let r = Resolve::new(None, Some(&hosts)).unwrap();
        let got = r.lookup("db.lan:80").await.unwrap();
        assert_eq!(
            got,
            vec!["127.0.0.2:80".parse().unwrap(), "[::1]:80".parse().unwrap()]
        );
        assert_eq!(r.lookup("DATA.lan:1").await.unwrap().len(), 1);
        // Not in the table: the system resolver.
        assert!(
            r.lookup("localhost:5")
                .await
                .unwrap()
                .iter()
                .all(|a| a.ip().is_loopback())
        );
        assert_eq!(
            r.lookup("[::1]:7").await.unwrap(),
            vec!["[::1]:7".parse().unwrap()]
        );
        assert!(r.lookup("nohost").await.is_err());
    }

    /// GOST's rule for what goes to a proxy: only what the table (or a
    /// resolver) answers is replaced by an address.
    #[tokio::test]
    async fn pin_replaces_only_what_is_configured() {
        let hosts = HostsConfig {
            name: "h".into(),
            mappings: vec![HostMapping {
                ip: "127.0.0.2".parse().unwrap(),
                hostname: "db.lan".into(),
                aliases: vec![],
            }],
        };
        let r = Resolve::new(None, Some(&hosts)).unwrap();
        assert!(r.is_set());
        assert_eq!(r.pin("DB.lan:5432").await.unwrap(), "127.0.0.2:5432");
        assert_eq!(r.pin("web.lan:80").await.unwrap(), "web.lan:80");
        assert_eq!(r.pin("[::1]:80").await.unwrap(), "[::1]:80");
        let system = Resolve::default();
        assert!(!system.is_set());
        assert_eq!(system.pin("db.lan:1").await.unwrap(), "db.lan:1");
    }
}
