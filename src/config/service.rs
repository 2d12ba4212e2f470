//! The `services:` section: GOST v3's service model, with gobetween's balancer
//! options expressed inside it.
//!
//! A service is an address, a **listener** (how connections or datagrams arrive),
//! a **handler** (what is done with them) and, for port forwarding, a
//! **forwarder** (the set of nodes traffic goes to, and how one is chosen):
//!
//! ```yaml
//! services:
//! - name: web
//!   addr: ":8080"                 # GOST: ":port" means every local address
//!   interface: eth1              # GOST: network exit for outgoing connections
//!   listener: {type: tcp}        # tcp | udp | tls (with tls: {certFile, keyFile, ...})
//!   handler:  {type: tcp}        # tcp | udp | http | socks5 | auto (+ auth for http/socks5)
//!   forwarder:
//!     nodes:
//!     - {name: b1, addr: "10.0.0.11:80", weight: 3}
//!     - {name: b2, addr: "10.0.0.12:80"}
//!     selector: {strategy: leastconn, maxFails: 2, failTimeout: 10s}
//!     healthcheck: {kind: ping, interval: 2s, timeout: 500ms, fails: 2, passes: 1}
//!     discovery: {kind: file, file_path: /etc/gateway/web.nodes}
//!     tls: {caFile: ca.pem, serverName: backend.lan}   # gobetween's backends_tls
//!   # gobetween's per-server options, under gobetween's names:
//!   max_connections: 10000
//!   client_idle_timeout: 5m
//!   backend_idle_timeout: 5m
//!   backend_connection_timeout: 2s
//!   access: {default: deny, rules: ["allow 10.0.0.0/8", "deny 0.0.0.0/0"]}
//!   proxy_protocol: {version: "2"}
//!   udp: {max_requests: 1, max_responses: 1, transparent: false}
//! ```
//!
//! ## Where gobetween's options went
//!
//! gobetween has one flat `[servers.NAME]` table. Its options land where they act:
//!
//! * options about **the client side and the service as a whole** (`max_connections`,
//!   the idle timeouts, `access`, `proxy_protocol`, the `udp` section) are fields of
//!   the service itself, under gobetween's names: `[servers.NAME.X]` becomes
//!   `services[i].X`;
//! * options about **the backends** (`balance`, `healthcheck`, `discovery`,
//!   `backends_tls`) belong to the forwarder, because the forwarder *is* the set of
//!   backends: `balance` is GOST's `selector.strategy`, gobetween's `discovery` and
//!   `healthcheck` sections keep their names and fields, `backends_tls` is the
//!   forwarder's `tls` (GOST's TLS field names).
//!
//! Durations are written Go style (`"500ms"`, `"2s"`, `"1m30s"`, `"1h"`); a bare
//! number means seconds and `0` means "not set" (no timeout, no limit), as in
//! gobetween. Every struct here rejects unknown fields: a misspelt option is an
//! error, never silently ignored.
//!
//! [`validate_services`] checks everything the file alone can tell, and names the
//! field: `services[2].udp: a UDP service needs a limit ...`.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::FieldError;
use super::auth::AuthConfig;
use super::tls::TlsConfig;

/// One service: an address, a listener, a handler and an optional forwarder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    /// `host:port`, `:port` (every address) or `[v6]:port`. The host need not be
    /// local yet: listeners are bound with `IP_FREEBIND`, so a service can sit on the
    /// floating IP before this node holds it.
    pub addr: String,
    /// GOST's `interface`: the network exit for connections to nodes. An interface
    /// name (`eth0`), a local address, or a comma-separated list of those tried in
    /// order; an entry ending in `!` is strict (if it fails, the rest is not tried).
    #[serde(default)]
    pub interface: Option<String>,
    pub handler: HandlerConfig,
    pub listener: ListenerConfig,
    #[serde(default)]
    pub forwarder: Option<ForwarderConfig>,

    // ---- gobetween's per-server options ----
    /// Most client connections served at once; the next one is closed at accept.
    /// 0 = unlimited.
    #[serde(default)]
    pub max_connections: u32,
    /// Close a connection (or UDP session) when the client sent nothing this long.
    #[serde(default)]
    pub client_idle_timeout: DurationStr,
    /// Close a connection (or UDP session) when the backend sent nothing this long.
    #[serde(default)]
    pub backend_idle_timeout: DurationStr,
    /// Give up connecting to a node after this long (then the next node is tried).
    /// 0 = the default, 5 s.
    #[serde(default)]
    pub backend_connection_timeout: DurationStr,
    #[serde(default)]
    pub access: Option<AccessConfig>,
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocolConfig>,
    #[serde(default)]
    pub udp: Option<UdpConfig>,
}

/// The default for `backend_connection_timeout: 0`.
pub fn default_backend_connection_timeout() -> Duration {
    Duration::from_secs(5)
}

/// What is done with a connection: `type` plus the options of that type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    #[serde(rename = "type")]
    pub kind: String,
    /// `http` and `socks5`: require these credentials.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// GOST's forwarding chain name. Chains are not implemented by this build; the
    /// field is recognised so that the error says so instead of "unknown field".
    #[serde(default)]
    pub chain: Option<String>,
    /// GOST's per-handler options (`readTimeout`, `udp`, `header`, ...). Their shape
    /// depends on `type`, so they are kept as YAML here and checked against the
    /// handler's own option struct (which rejects unknown keys) at validation.
    #[serde(default)]
    pub metadata: Option<serde_yaml_ng::Value>,
}

/// How connections arrive: `type` and, for `tls`, the certificate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// The nodes of a forwarding service and how one of them is chosen.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderConfig {
    /// Static nodes. With a `discovery` other than `static` they are the initial
    /// list, used until discovery first succeeds.
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub selector: SelectorConfig,
    #[serde(default)]
    pub healthcheck: Option<HealthcheckConfig>,
    #[serde(default)]
    pub discovery: Option<DiscoveryConfig>,
    /// gobetween's `backends_tls`: connect to nodes over TLS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default)]
    pub name: String,
    /// `host:port`; a host name is resolved at each connection.
    pub addr: String,
    /// Relative share for the `weight` strategy (gobetween's `weight=`).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// gobetween's `priority=`: only the healthy nodes with the lowest priority
    /// number are used; higher numbers are backups.
    #[serde(default)]
    pub priority: u32,
}

pub fn default_weight() -> u32 {
    1
}

/// GOST's selector; `strategy` also takes gobetween's `balance` names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorConfig {
    #[serde(default)]
    pub strategy: Strategy,
    /// Passive health: after this many failed connections in a row a node is left
    /// out for `failTimeout`. 0 = never.
    #[serde(rename = "maxFails", default = "default_max_fails")]
    pub max_fails: u32,
    #[serde(rename = "failTimeout", default = "default_fail_timeout")]
    pub fail_timeout: DurationStr,
}

pub fn default_max_fails() -> u32 {
    1
}
pub fn default_fail_timeout() -> DurationStr {
    DurationStr(Duration::from_secs(10))
}

impl Default for SelectorConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            max_fails: default_max_fails(),
            fail_timeout: default_fail_timeout(),
        }
    }
}

/// Balancing strategies. GOST's names and gobetween's `balance` names are both
/// accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// In turn (GOST `round`, gobetween `roundrobin`).
    #[default]
    #[serde(alias = "round", alias = "round-robin", alias = "roundrobin")]
    RoundRobin,
    /// Smooth weighted round robin by node `weight`.
    Weight,
    /// Uniformly random (GOST `rand`).
    #[serde(alias = "rand")]
    Random,
    /// The first healthy node in list order (GOST `fifo`): active/backup.
    Fifo,
    /// Fewest connections in flight.
    Leastconn,
    /// Least bytes per second over the last seconds.
    Leastbandwidth,
    /// Client IP hash modulo the healthy nodes (gobetween `iphash`).
    Iphash,
    /// Consistent client IP hashing: a node leaving moves only its own clients.
    Iphash1,
}

/// gobetween's `healthcheck` section (per forwarder).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckConfig {
    pub kind: HealthcheckKind,
    #[serde(default = "default_hc_interval")]
    pub interval: DurationStr,
    #[serde(default = "default_hc_timeout")]
    pub timeout: DurationStr,
    /// Failed checks in a row before a node leaves rotation.
    #[serde(default = "default_one")]
    pub fails: u32,
    /// Passed checks in a row before it comes back.
    #[serde(default = "default_one")]
    pub passes: u32,
    /// probe: `tcp` (default) or `udp`.
    #[serde(default)]
    pub probe_protocol: ProbeProtocol,
    /// probe: bytes sent after connecting (escapes `\n`, `\r`, `\t`, `\\`, `\xHH`).
    #[serde(default)]
    pub probe_send: String,
    /// probe: the expected reply (a prefix, or a regexp with `probe_strategy: regexp`).
    #[serde(default)]
    pub probe_recv: String,
    /// probe: read at most this many bytes of the reply.
    #[serde(default = "default_probe_recv_len")]
    pub probe_recv_len: usize,
    #[serde(default)]
    pub probe_strategy: ProbeStrategy,
    /// exec: the command, run as `command <host> <port>` without a shell.
    #[serde(default)]
    pub exec_command: String,
    /// exec: output (trimmed) meaning healthy.
    #[serde(default = "default_positive")]
    pub exec_expected_positive_output: String,
    /// exec: output (trimmed) meaning unhealthy; any other output is a failure too.
    #[serde(default = "default_negative")]
    pub exec_expected_negative_output: String,
}

pub fn default_hc_interval() -> DurationStr {
    DurationStr(Duration::from_secs(2))
}
pub fn default_hc_timeout() -> DurationStr {
    DurationStr(Duration::from_secs(1))
}
pub fn default_one() -> u32 {
    1
}
pub fn default_probe_recv_len() -> usize {
    1024
}
pub fn default_positive() -> String {
    "1".to_string()
}
pub fn default_negative() -> String {
    "0".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthcheckKind {
    /// TCP connect succeeds.
    Ping,
    /// Send `probe_send`, expect `probe_recv`.
    Probe,
    /// Run `exec_command`.
    Exec,
    /// No active check (passive health still applies).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeProtocol {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeStrategy {
    #[default]
    StartsWith,
    Regexp,
}

/// gobetween's `discovery` section (per forwarder).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    pub kind: DiscoveryKind,
    /// What a failed discovery does to the list: `keeplast` (default) or `setempty`.
    #[serde(default)]
    pub failpolicy: FailPolicy,
    /// How often to look again (file: how often its modification time is checked).
    #[serde(default = "default_discovery_interval")]
    pub interval: DurationStr,
    /// exec, srv: give up after this long.
    #[serde(default = "default_discovery_timeout")]
    pub timeout: DurationStr,
    /// file: a JSON array (`["h:p", {"addr": "h:p", "weight": 2}]`) or plain text,
    /// one node a line: `host:port [weight=N] [priority=N]`, `#` comments.
    #[serde(default)]
    pub file_path: Option<PathBuf>,
    /// exec: argv, printing nodes in the plain-text format on stdout.
    #[serde(default)]
    pub exec_command: Vec<String>,
    /// srv: the DNS server, `ip:port` (default: the first nameserver of /etc/resolv.conf).
    #[serde(default)]
    pub srv_lookup_server: Option<String>,
    /// srv: the name queried, e.g. `_http._tcp.web.service.consul`.
    #[serde(default)]
    pub srv_lookup_pattern: Option<String>,
    /// srv: `udp` (default) or `tcp`.
    #[serde(default = "default_srv_dns_protocol")]
    pub srv_dns_protocol: ProbeProtocol,
}

pub fn default_discovery_interval() -> DurationStr {
    DurationStr(Duration::from_secs(2))
}
pub fn default_srv_dns_protocol() -> ProbeProtocol {
    ProbeProtocol::Udp
}
pub fn default_discovery_timeout() -> DurationStr {
    DurationStr(Duration::from_secs(2))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryKind {
    Static,
    File,
    Exec,
    Srv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailPolicy {
    #[default]
    Keeplast,
    Setempty,
}

/// gobetween's `access`: ordered rules, first match wins, else `default`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    #[serde(default)]
    pub default: AccessPolicy,
    /// `"allow 10.0.0.0/8"`, `"deny 192.168.1.7"`, `"deny ::/0"`.
    #[serde(default)]
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessPolicy {
    #[default]
    Allow,
    Deny,
}

/// One parsed access rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessRule {
    pub policy: AccessPolicy,
    pub net: Cidr,
}

/// An address prefix: `10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?}: expected an IP address or CIDR like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: expected a prefix length 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside. An IPv4-mapped IPv6 client matches IPv4 rules.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl AccessConfig {
    /// Parse the rule strings.
    pub fn parse_rules(&self) -> Result<Vec<AccessRule>, (usize, String)> {
        self.rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut parts = r.split_whitespace();
                let policy = match parts.next() {
                    Some("allow") => AccessPolicy::Allow,
                    Some("deny") => AccessPolicy::Deny,
                    _ => {
                        return Err((
                            i,
                            format!("{r:?}: expected \"allow CIDR\" or \"deny CIDR\""),
                        ));
                    }
                };
                let net = match (parts.next(), parts.next()) {
                    (Some(n), None) => Cidr::parse(n).map_err(|m| (i, m))?,
                    _ => {
                        return Err((
                            i,
                            format!("{r:?}: expected \"allow CIDR\" or \"deny CIDR\""),
                        ));
                    }
                };
                Ok(AccessRule { policy, net })
            })
            .collect()
    }
}

/// gobetween's `proxy_protocol`: send a PROXY header to the backend first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    /// `"1"` (text) or `"2"` (binary).
    pub version: String,
}

/// gobetween's `udp` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpConfig {
    /// End a session after this many datagrams from the client; 1 = fire and forget
    /// (a node per datagram, no session, replies are not awaited). 0 = unlimited.
    #[serde(default)]
    pub max_requests: u64,
    /// End a session after this many datagrams from the backend. 0 = unlimited.
    #[serde(default)]
    pub max_responses: u64,
    /// Send to backends from the client's own address (Linux `IP_TRANSPARENT`;
    /// needs CAP_NET_ADMIN and routing that brings replies back to this host).
    #[serde(default)]
    pub transparent: bool,
}

/// A duration written Go style. `0` means "not set".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DurationStr(pub Duration);

impl DurationStr {
    /// `None` for 0 ("not set").
    pub fn get(&self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }

    /// Parse `"1m30s"`, `"500ms"`, `"2h"`, `"10"` (seconds).
    pub fn parse(s: &str) -> Result<DurationStr, String> {
        let s = s.trim();
        let bad = || format!("{s:?}: expected a duration like \"500ms\", \"10s\", \"1m30s\"");
        if let Ok(secs) = s.parse::<u64>() {
            return Ok(DurationStr(Duration::from_secs(secs)));
        }
        if s.is_empty() {
            return Err(bad());
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let num_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let value: f64 = rest[..num_end].parse().map_err(|_| bad())?;
            rest = &rest[num_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_end] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_end..];
            total += Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?;
        }
        Ok(DurationStr(total))
    }
}

impl fmt::Debug for DurationStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(DurationStr(Duration::from_secs(n))),
            Raw::S(s) => DurationStr::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Handler types this build knows.
pub const HANDLER_TYPES: &[&str] = &[
    "tcp", "udp", "http", "socks5", "socks", "socks4", "socks4a", "auto",
];
/// Listener types this build knows.
pub const LISTENER_TYPES: &[&str] = &["tcp", "udp", "tls"];

/// Resolve a service `addr` to a socket address: `:8080` is every IPv4 address.
pub fn parse_listen_addr(addr: &str) -> Result<SocketAddr, String> {
    let expected = || format!("{addr:?}: expected \"host:port\", \":port\" or \"[v6]:port\"");
    if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| expected())?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    addr.parse::<SocketAddr>().map_err(|_| expected())
}

/// Checks across all services (unique names and addresses) and each service alone.
pub fn validate_services(services: &[ServiceConfig]) -> Result<(), FieldError> {
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, s) in services.iter().enumerate() {
        if !names.insert(s.name.as_str()) {
            return Err(FieldError::new(
                format!("services[{i}].name"),
                format!("duplicate service name {:?}: expected unique names", s.name),
            ));
        }
        s.validate(i)?;
        let proto = if s.listener.kind == "udp" {
            "udp"
        } else {
            "tcp"
        };
        // Port 0 (any free port) can be given to any number of services.
        let any_port = parse_listen_addr(&s.addr).is_ok_and(|a| a.port() == 0);
        if !any_port && !addrs.insert((proto, s.addr.clone())) {
            return Err(FieldError::new(
                format!("services[{i}].addr"),
                format!(
                    "{:?} ({proto}) is already used by another service: expected one service per address",
                    s.addr
                ),
            ));
        }
    }
    Ok(())
}

impl ServiceConfig {
    /// Checks of one service; `i` is its index, for the field path.
    pub fn validate(&self, i: usize) -> Result<(), FieldError> {
        let at = |f: &str| format!("services[{i}].{f}");
        if self.name.trim().is_empty() {
            return Err(FieldError::new(at("name"), "expected a non-empty name"));
        }
        parse_listen_addr(&self.addr).map_err(|m| FieldError::new(at("addr"), m))?;
        if !HANDLER_TYPES.contains(&self.handler.kind.as_str()) {
            return Err(FieldError::new(
                at("handler.type"),
                format!(
                    "unknown handler {:?}: expected one of {}",
                    self.handler.kind,
                    HANDLER_TYPES.join(", ")
                ),
            ));
        }
        if !LISTENER_TYPES.contains(&self.listener.kind.as_str()) {
            return Err(FieldError::new(
                at("listener.type"),
                format!(
                    "unknown listener {:?}: expected one of {}",
                    self.listener.kind,
                    LISTENER_TYPES.join(", ")
                ),
            ));
        }
        if self.handler.chain.is_some() {
            return Err(FieldError::new(
                at("handler.chain"),
                "forwarding chains are not supported by this build: expected no chain (use a forwarder)",
            ));
        }
        if let Some(iface) = &self.interface
            && iface
                .split(',')
                .any(|e| e.trim().trim_end_matches('!').is_empty())
        {
            return Err(FieldError::new(
                at("interface"),
                format!(
                    "{iface:?}: expected an interface name, an address, or a comma-separated list of them"
                ),
            ));
        }
        let udp = self.listener.kind == "udp";
        match (self.handler.kind.as_str(), udp) {
            ("udp", false) | ("tcp", true) => {
                return Err(FieldError::new(
                    at("listener.type"),
                    format!(
                        "handler {:?} with listener {:?}: expected listener type {:?}",
                        self.handler.kind,
                        self.listener.kind,
                        if udp { "tcp" } else { "udp" }
                    ),
                ));
            }
            (h, true) if h != "udp" => {
                return Err(FieldError::new(
                    at("handler.type"),
                    format!(
                        "a udp listener carries datagrams: expected handler type \"udp\", not {h:?}"
                    ),
                ));
            }
            _ => {}
        }
        if self.listener.kind == "tls" {
            let t = self.listener.tls.as_ref();
            let files = t.is_some_and(|t| t.cert_file.is_some() && t.key_file.is_some());
            let acme = t.is_some_and(|t| !t.acme_hosts.is_empty());
            if files && acme {
                return Err(FieldError::new(
                    at("listener.tls.acme_hosts"),
                    "acme_hosts and certFile/keyFile both given: expected one of the two",
                ));
            }
            if !files && !acme {
                return Err(FieldError::new(
                    at("listener.tls"),
                    "a tls listener needs its certificate: expected tls: {certFile: ..., keyFile: ...} or acme_hosts: [names]",
                ));
            }
        }
        let forwarding = matches!(self.handler.kind.as_str(), "tcp" | "udp");
        if forwarding && self.handler.metadata.is_some() {
            return Err(FieldError::new(
                at("handler.metadata"),
                format!(
                    "the {} handler has no metadata options: expected none (timeouts and limits are service fields, e.g. client_idle_timeout)",
                    self.handler.kind
                ),
            ));
        }
        if forwarding && self.forwarder.is_none() {
            return Err(FieldError::new(
                at("forwarder"),
                format!(
                    "a {} handler forwards to nodes: expected forwarder: {{nodes: [{{name, addr}}]}}",
                    self.handler.kind
                ),
            ));
        }
        if !forwarding {
            // Proxy handlers find their target in each request; the forwarding
            // options have nothing to act on, so they are refused, not ignored.
            let h = &self.handler.kind;
            let misplaced = [
                (
                    "forwarder",
                    self.forwarder.is_some(),
                    "the request names the target",
                ),
                (
                    "proxy_protocol",
                    self.proxy_protocol.is_some(),
                    "it applies to tcp forwarding",
                ),
            ];
            if let Some((f, _, why)) = misplaced.iter().find(|m| m.1) {
                return Err(FieldError::new(
                    at(f),
                    format!("not used by the {h} handler ({why}): expected no {f}"),
                ));
            }
        }
        if let Some(fwd) = &self.forwarder {
            fwd.validate(&at("forwarder"))?;
        }
        crate::proxy::dispatch::validate(self, i)?;
        if let Some(access) = &self.access {
            access
                .parse_rules()
                .map_err(|(j, m)| FieldError::new(at(&format!("access.rules[{j}]")), m))?;
        }
        if let Some(pp) = &self.proxy_protocol {
            if !matches!(pp.version.as_str(), "1" | "2") {
                return Err(FieldError::new(
                    at("proxy_protocol.version"),
                    format!("{:?}: expected \"1\" or \"2\"", pp.version),
                ));
            }
            if udp {
                return Err(FieldError::new(
                    at("proxy_protocol"),
                    "the PROXY protocol is for TCP: expected no proxy_protocol on a udp service",
                ));
            }
        }
        if udp {
            if let Some(hc) = self.forwarder.as_ref().and_then(|f| f.healthcheck.as_ref())
                && (hc.kind == HealthcheckKind::Ping
                    || (hc.kind == HealthcheckKind::Probe
                        && hc.probe_protocol == ProbeProtocol::Tcp))
            {
                // As in gobetween: a TCP check says nothing about a UDP port.
                return Err(FieldError::new(
                    at("forwarder.healthcheck"),
                    "a TCP check on a UDP service: expected kind: exec, or kind: probe with probe_protocol: udp",
                ));
            }
            let u = self.udp.clone().unwrap_or_default();
            // gobetween 0.6+: without any of these, sessions would never end.
            if u.max_requests == 0
                && u.max_responses == 0
                && self.client_idle_timeout.get().is_none()
                && self.backend_idle_timeout.get().is_none()
            {
                return Err(FieldError::new(
                    at("udp"),
                    "a UDP service needs a way to end sessions: expected udp.max_requests, udp.max_responses, client_idle_timeout or backend_idle_timeout",
                ));
            }
        } else if self.udp.is_some() {
            return Err(FieldError::new(
                at("udp"),
                "udp options on a non-UDP service: expected listener type \"udp\" or no udp section",
            ));
        }
        Ok(())
    }
}

impl ForwarderConfig {
    fn validate(&self, at: &str) -> Result<(), FieldError> {
        let dynamic = self
            .discovery
            .as_ref()
            .is_some_and(|d| d.kind != DiscoveryKind::Static);
        if self.nodes.is_empty() && !dynamic {
            return Err(FieldError::new(
                format!("{at}.nodes"),
                "no nodes: expected at least one {name, addr} (or a discovery)",
            ));
        }
        for (j, n) in self.nodes.iter().enumerate() {
            if !valid_node_addr(&n.addr) {
                return Err(FieldError::new(
                    format!("{at}.nodes[{j}].addr"),
                    format!("{:?}: expected \"host:port\"", n.addr),
                ));
            }
            if n.weight == 0 {
                return Err(FieldError::new(
                    format!("{at}.nodes[{j}].weight"),
                    "0: expected a weight of at least 1",
                ));
            }
        }
        if let Some(hc) = &self.healthcheck {
            let f = |x: &str| format!("{at}.healthcheck.{x}");
            if hc.kind != HealthcheckKind::None && hc.interval.get().is_none() {
                return Err(FieldError::new(
                    f("interval"),
                    "expected a positive interval",
                ));
            }
            if hc.kind != HealthcheckKind::None && hc.timeout.get().is_none() {
                return Err(FieldError::new(f("timeout"), "expected a positive timeout"));
            }
            if hc.fails == 0 || hc.passes == 0 {
                return Err(FieldError::new(
                    f(if hc.fails == 0 { "fails" } else { "passes" }),
                    "0: expected at least 1",
                ));
            }
            match hc.kind {
                HealthcheckKind::Probe => {
                    if hc.probe_recv.is_empty() && hc.probe_send.is_empty() {
                        return Err(FieldError::new(
                            f("probe_recv"),
                            "a probe check needs something to send or expect: expected probe_send and/or probe_recv",
                        ));
                    }
                    if hc.probe_strategy == ProbeStrategy::Regexp
                        && let Err(e) = regex::bytes::Regex::new(&hc.probe_recv)
                    {
                        return Err(FieldError::new(
                            f("probe_recv"),
                            format!("expected a valid regexp: {e}"),
                        ));
                    }
                    unescape(&hc.probe_send).map_err(|m| FieldError::new(f("probe_send"), m))?;
                }
                HealthcheckKind::Exec if hc.exec_command.trim().is_empty() => {
                    return Err(FieldError::new(
                        f("exec_command"),
                        "an exec check needs a command: expected exec_command: /path/to/check",
                    ));
                }
                _ => {}
            }
        }
        if let Some(d) = &self.discovery {
            let f = |x: &str| format!("{at}.discovery.{x}");
            match d.kind {
                DiscoveryKind::Static => {}
                DiscoveryKind::File if d.file_path.is_none() => {
                    return Err(FieldError::new(
                        f("file_path"),
                        "expected the path of the node list",
                    ));
                }
                DiscoveryKind::Exec if d.exec_command.is_empty() => {
                    return Err(FieldError::new(
                        f("exec_command"),
                        "expected the command as a list: [\"/path/to/cmd\", \"arg\"]",
                    ));
                }
                DiscoveryKind::Srv if d.srv_lookup_pattern.is_none() => {
                    return Err(FieldError::new(
                        f("srv_lookup_pattern"),
                        "expected the SRV name to look up, e.g. _http._tcp.web.example",
                    ));
                }
                _ => {}
            }
            if d.kind != DiscoveryKind::Static && d.interval.get().is_none() {
                return Err(FieldError::new(
                    f("interval"),
                    "expected a positive interval",
                ));
            }
            if let Some(server) = &d.srv_lookup_server
                && server.parse::<SocketAddr>().is_err()
            {
                return Err(FieldError::new(
                    f("srv_lookup_server"),
                    format!("{server:?}: expected \"ip:port\""),
                ));
            }
        }
        Ok(())
    }
}

/// `host:port` with a non-empty host and a numeric port.
pub fn valid_node_addr(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// Decode the escapes allowed in `probe_send`: `\n \r \t \\ \0 \xHH`.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let v = std::str::from_utf8(&hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("{s:?}: expected two hex digits after \\x"))?;
                out.push(v);
            }
            _ => {
                return Err(format!(
                    "{s:?}: unknown escape, expected \\n \\r \\t \\\\ \\0 or \\xHH"
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn load(yaml: &str) -> Result<Config, String> {
        Config::from_str_named(yaml, Path::new("g.yml")).map_err(|e| e.to_string())
    }

    #[test]
    fn e2e_forwarding_config_parses() {
        let c = load(
            "services: [{name: fwd, addr: \":8080\", handler: {type: tcp}, listener: {type: tcp}, forwarder: {nodes: [{name: b1, addr: \"10.1.2.3:80\"}]}}]\n",
        )
        .unwrap();
        let s = &c.services[0];
        assert_eq!(s.forwarder.as_ref().unwrap().nodes[0].weight, 1);
        assert_eq!(
            s.forwarder.as_ref().unwrap().selector.strategy,
            Strategy::RoundRobin
        );
        assert_eq!(
            parse_listen_addr(&s.addr).unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
    }

    #[test]
    fn full_service_parses() {
        let c = load(
            r#"
services:
- name: web
  addr: "127.0.0.1:0"
  interface: lo
  listener: {type: tcp}
  handler: {type: tcp}
  forwarder:
    nodes:
    - {name: a, addr: "127.0.0.1:81", weight: 3, priority: 1}
    selector: {strategy: iphash1, maxFails: 3, failTimeout: 1m30s}
    healthcheck: {kind: probe, interval: 500ms, timeout: 1s, probe_send: "PING\r\n", probe_recv: "^\\+PONG", probe_strategy: regexp}
    discovery: {kind: file, file_path: /tmp/x, failpolicy: setempty}
  max_connections: 10
  client_idle_timeout: 30s
  backend_connection_timeout: 2
  access: {default: deny, rules: ["allow 10.0.0.0/8", "deny 10.1.0.0/16"]}
  proxy_protocol: {version: "2"}
"#,
        )
        .unwrap();
        let s = &c.services[0];
        let f = s.forwarder.as_ref().unwrap();
        assert_eq!(f.selector.fail_timeout.0, Duration::from_secs(90));
        assert_eq!(s.backend_connection_timeout.0, Duration::from_secs(2));
        assert_eq!(
            f.healthcheck.as_ref().unwrap().interval.0,
            Duration::from_millis(500)
        );
        assert_eq!(s.access.as_ref().unwrap().parse_rules().unwrap().len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "services: [{name: u, addr: \":53\", handler: {type: udp}, listener: {type: udp}, forwarder: {nodes: [{addr: \"1.1.1.1:53\"}]}}]",
                "services[0].udp",
                "needs a way to end sessions",
            ),
            (
                "services: [{name: t, addr: \":1\", handler: {type: tcp}, listener: {type: tcp}}]",
                "services[0].forwarder",
                "expected forwarder",
            ),
            (
                "services: [{name: t, addr: \"1\", handler: {type: tcp}, listener: {type: tcp}, forwarder: {nodes: [{addr: \"a:1\"}]}}]",
                "services[0].addr",
                "expected",
            ),
            (
                "services: [{name: t, addr: \":1\", handler: {type: tcp}, listener: {type: tcp}, forwarder: {nodes: [{addr: \"a\"}]}}]",
                "services[0].forwarder.nodes[0].addr",
                "host:port",
            ),
            (
                "services: [{name: t, addr: \":1\", handler: {type: tcp}, listener: {type: tcp}, access: {rules: [\"permit 1.2.3.4\"]}, forwarder: {nodes: [{addr: \"a:1\"}]}}]",
                "services[0].access.rules[0]",
                "allow CIDR",
            ),
            (
                "services: [{name: t, addr: \":1\", handler: {type: tcp}, listener: {type: tcp}, proxy_protocol: {version: \"3\"}, forwarder: {nodes: [{addr: \"a:1\"}]}}]",
                "services[0].proxy_protocol.version",
                "expected",
            ),
            (
                "services: [{name: t, addr: \":1\", handler: {type: ftp}, listener: {type: tcp}}]",
                "services[0].handler.type",
                "expected one of",
            ),
            (
                "services: [{name: t, addr: \":1\", handler: {type: tcp}, listener: {type: tcp}, forwarder: {nodes: [{addr: \"a:1\"}], healthcheck: {kind: exec}}}]",
                "services[0].forwarder.healthcheck.exec_command",
                "command",
            ),
            (
                "services: [{name: u, addr: \":1\", handler: {type: udp}, listener: {type: udp}, udp: {max_requests: 1}, forwarder: {nodes: [{addr: \"a:1\"}], healthcheck: {kind: ping}}}]",
                "services[0].forwarder.healthcheck",
                "probe_protocol: udp",
            ),
            (
                "services: [{name: h, addr: \":1\", handler: {type: http}, listener: {type: tcp}, proxy_protocol: {version: \"1\"}}]",
                "services[0].proxy_protocol",
                "not used by the http handler",
            ),
        ];
        for (yaml, field, msg) in cases {
            let e = load(yaml).unwrap_err();
            assert!(e.contains(field) && e.contains(msg), "{yaml}\n=> {e}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = load("services: [{name: t, addr: \":1\", handler: {type: tcp}, listener: {type: tcp}, forwarder: {nodes: [{addr: \"a:1\", wieght: 2}]}}]").unwrap_err();
        assert!(e.contains("wieght"), "{e}");
        let e = load("services: [{name: t, addr: \":1\", handler: {type: tcp}, listener: {type: tcp}, forwarder: {nodes: [{addr: \"a:1\"}], selector: {strategy: fastest}}}]").unwrap_err();
        assert!(e.contains("fastest"), "{e}");
    }

    #[test]
    fn udp_with_a_limit_is_accepted() {
        load("services: [{name: u, addr: \":53\", handler: {type: udp}, listener: {type: udp}, udp: {max_requests: 1}, forwarder: {nodes: [{addr: \"1.1.1.1:53\"}]}}]").unwrap();
        load("services: [{name: u, addr: \":53\", handler: {type: udp}, listener: {type: udp}, client_idle_timeout: 10s, forwarder: {nodes: [{addr: \"1.1.1.1:53\"}]}}]").unwrap();
    }

    #[test]
    fn durations() {
        let d = |s| DurationStr::parse(s).map(|d| d.0);
        assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("7"), Ok(Duration::from_secs(7)));
        assert!(d("10 parsecs").is_err());
        assert!(d("s").is_err());
        assert!(d("").is_err());
    }

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("::/0")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
    }

    #[test]
    fn unescape_probe() {
        assert_eq!(
            unescape("A\\r\\n\\x00\\\\").unwrap(),
            b"A\r\n\x00\\".to_vec()
        );
        assert!(unescape("\\q").is_err());
        assert!(unescape("\\x4").is_err());
    }
}
