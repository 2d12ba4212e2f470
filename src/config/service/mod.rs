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
//! field: `services[2].udp: a UDP service needs a limit ...`.//!
//! ## Where each part lives
//!
//! * this module: the service itself ([`ServiceConfig`]), its address, its
//!   gobetween options and the checks across options;
//! * [`handler`]: `listener:` and `handler:`, their types as enums and GOST's
//!   handler `metadata`, each option defined once;
//! * [`forwarder`]: nodes, selector, health checks, discovery;
//! * [`access`]: gobetween's access rules, parsed at load;
//! * [`interface`]: GOST's `interface` list, parsed at load;
//! * [`metadata`]: GOST's service-level `metadata:` map (`interface`, ...);
//! * [`host`]: the checks only this host can answer (interfaces exist, TLS
//!   files parse), run at load.
//!
//! What leaves this module is typed and checked: the services in `proxy/` read
//! these values and never parse text again.

pub mod access;
pub mod forwarder;
pub mod handler;
pub mod hooks;
pub mod host;
pub mod interface;
pub mod metadata;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::FieldError;
pub use super::duration::{DurationStr, MAX_DURATION};
use super::resolver::{HostsConfig, NameRef, ResolverConfig};
pub use access::{AccessConfig, AccessPolicy, AccessRule, Cidr};
pub use forwarder::{
    DiscoveryConfig, DiscoveryKind, FailPolicy, ForwarderConfig, HealthcheckConfig,
    HealthcheckKind, NodeConfig, ProbeBytes, ProbeProtocol, ProbeStrategy, SelectorConfig,
    Strategy, default_weight, unescape, valid_node_addr,
};
pub use handler::{HandlerConfig, HandlerMetadata, HandlerType, ListenerConfig, ListenerType};
pub use interface::Interface;
pub use metadata::ServiceMetadata;

/// One service: an address, a listener, a handler and an optional forwarder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    /// `host:port`, `:port` (every address) or `[v6]:port`. The host need not be
    /// local yet: listeners are bound with `IP_FREEBIND`, so a service can sit on the
    /// floating IP before this node holds it.
    pub addr: ListenAddr,
    /// GOST's `interface`: the network exit for connections to nodes. An interface
    /// name (`eth0`), a local address, or a comma-separated list of those tried in
    /// order; an entry ending in `!` is strict (if it fails, the rest is not tried).
    #[serde(default)]
    pub interface: Option<Interface>,
    /// GOST's service `metadata:` map (`metadata: {interface: eth0}`); see
    /// [`ServiceMetadata`]. Read `interface` through [`ServiceConfig::interface`],
    /// which takes either form.
    #[serde(default)]
    pub metadata: Option<ServiceMetadata>,
    /// GOST's `resolver`: the `resolvers:` entry that resolves the names this
    /// service dials (default: the system resolver).
    #[serde(default)]
    pub resolver: Option<NameRef<ResolverConfig>>,
    /// GOST's `hosts`: the `hosts:` entry consulted before any DNS.
    #[serde(default)]
    pub hosts: Option<NameRef<HostsConfig>>,
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
    /// 0 = the default, [`default_backend_connection_timeout`].
    #[serde(default)]
    pub backend_connection_timeout: DurationStr,
    #[serde(default)]
    pub access: Option<AccessConfig>,
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocolConfig>,
    #[serde(default)]
    pub udp: Option<UdpConfig>,

    // ---- GOST's hooks (see [`hooks`]); also accepted under `metadata:` ----
    // Declared again in `ServiceMetadata`: one struct `#[serde(flatten)]`ed into
    // both would cost `deny_unknown_fields` its list of expected fields and the
    // line of an error in these fields, so each map names its own, and
    // `Hooks::new` turns either set into the one value the rest of the program
    // reads (`ServiceConfig::hooks`).
    /// Shell commands run before the listener binds; one failing keeps the service down.
    #[serde(rename = "preUp", default)]
    pub pre_up: Vec<String>,
    /// Shell commands run once the service serves.
    #[serde(rename = "postUp", default)]
    pub post_up: Vec<String>,
    /// Shell commands run before the service stops accepting.
    #[serde(rename = "preDown", default)]
    pub pre_down: Vec<String>,
    /// Shell commands run after the service's connections drained.
    #[serde(rename = "postDown", default)]
    pub post_down: Vec<String>,
    /// The limit on each hook command (0: [`hooks::default_hook_timeout`], 30 s).
    #[serde(rename = "hookTimeout", default)]
    pub hook_timeout: DurationStr,

    /// The chain `handler.chain` names, filled in after validation by
    /// [`crate::config::Config::link_chains`] (not a YAML field): a service is
    /// built from its own config alone, and a reload that changes its chain
    /// changes the service.
    #[serde(skip)]
    pub chain: Option<std::sync::Arc<crate::config::chain::ChainConfig>>,
}

/// The default for `backend_connection_timeout: 0`: 5 s.
pub fn default_backend_connection_timeout() -> Duration {
    Duration::from_secs(5)
}

/// A service `addr` as written and as the socket address it means: `:8080` is
/// every IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    /// As written in the file.
    pub text: String,
    pub addr: SocketAddr,
}

impl ListenAddr {
    pub fn parse(addr: &str) -> Result<ListenAddr, String> {
        parse_listen_addr(addr).map(|a| ListenAddr {
            text: addr.to_string(),
            addr: a,
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ListenAddr::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Resolve a service `addr` to a socket address: `:8080` is every IPv4 address.
pub fn parse_listen_addr(addr: &str) -> Result<SocketAddr, String> {
    let expected = || format!("{addr:?}: expected \"host:port\", \":port\" or \"[v6]:port\"");
    if let Some(port) = addr.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| expected())?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    addr.parse::<SocketAddr>().map_err(|_| expected())
}

/// gobetween's `proxy_protocol`: send a PROXY header to the backend first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    /// `"1"` (text) or `"2"` (binary).
    pub version: ProxyProtocolVersion,
}

/// The PROXY protocol version sent to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocolVersion {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

impl<'de> Deserialize<'de> for ProxyProtocolVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A plain scalar: `version: 2` and `version: "2"` both read as text.
        let text = String::deserialize(d)?;
        match text.as_str() {
            "1" => Ok(ProxyProtocolVersion::V1),
            "2" => Ok(ProxyProtocolVersion::V2),
            _ => Err(serde::de::Error::custom(format!(
                "{text:?}: expected \"1\" or \"2\""
            ))),
        }
    }
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
        let proto = if s.listener.kind == ListenerType::Udp {
            "udp"
        } else {
            "tcp"
        };
        // Port 0 (any free port) can be given to any number of services.
        let any_port = s.addr.addr.port() == 0;
        if !any_port && !addrs.insert((proto, s.addr.text.clone())) {
            return Err(FieldError::new(
                format!("services[{i}].addr"),
                format!(
                    "{:?} ({proto}) is already used by another service: expected one service per address",
                    s.addr.text
                ),
            ));
        }
    }
    Ok(())
}

impl ServiceConfig {
    /// Whether datagrams (a `udp` listener) rather than connections.
    pub fn is_udp(&self) -> bool {
        self.listener.kind == ListenerType::Udp
    }

    /// The service's network exit, written either as `interface:` or as
    /// `metadata: {interface: ...}` (validation refuses both at once).
    pub fn interface(&self) -> Option<&Interface> {
        self.interface
            .as_ref()
            .or_else(|| self.metadata.as_ref()?.interface.as_ref())
    }

    /// GOST's `metadata: {ignoreChain: true}`: the service's connections do not
    /// go through its `handler.chain`.
    pub fn ignores_chain(&self) -> bool {
        self.metadata.as_ref().is_some_and(|m| m.ignore_chain)
    }

    /// The service's hooks, written as plain fields or under `metadata:`
    /// (validation refuses both at once).
    pub fn hooks(&self) -> hooks::Hooks {
        match &self.metadata {
            Some(m) if !m.hooks().is_empty() => m.hooks(),
            _ => self.plain_hooks(),
        }
    }

    /// The hooks written as plain service fields.
    fn plain_hooks(&self) -> hooks::Hooks {
        hooks::Hooks::new(
            [&self.pre_up, &self.post_up, &self.pre_down, &self.post_down],
            self.hook_timeout,
        )
    }

    /// Where the service's exit is written: `interface` or `metadata.interface`.
    pub fn interface_field(&self) -> &'static str {
        if self.interface.is_none() && self.interface().is_some() {
            "metadata.interface"
        } else {
            "interface"
        }
    }

    /// `backend_connection_timeout`, or its default when 0.
    pub fn connect_timeout(&self) -> Duration {
        self.backend_connection_timeout
            .get()
            .unwrap_or_else(default_backend_connection_timeout)
    }

    /// Hooks in one form only, each command non-empty.
    fn validate_hooks(&self, i: usize) -> Result<(), FieldError> {
        let plain = self.plain_hooks();
        plain.validate(&format!("services[{i}]"))?;
        if let Some(m) = &self.metadata {
            let meta = m.hooks();
            meta.validate(&format!("services[{i}].metadata"))?;
            let both = !meta.is_empty() || m.hook_timeout.get().is_some();
            if both && (!plain.is_empty() || self.hook_timeout.get().is_some()) {
                return Err(FieldError::new(
                    format!("services[{i}].metadata"),
                    "hooks both under metadata: and as service fields: expected one of the two forms",
                ));
            }
        }
        Ok(())
    }

    /// Checks of one service; `i` is its index, for the field path.
    pub fn validate(&self, i: usize) -> Result<(), FieldError> {
        let at = |f: &str| format!("services[{i}].{f}");
        if self.name.trim().is_empty() {
            return Err(FieldError::new(at("name"), "expected a non-empty name"));
        }
        if let Some(m) = &self.metadata {
            m.validate(self.interface.as_ref(), &at("metadata"))?;
        }
        self.validate_hooks(i)?;
        let udp = self.is_udp();
        let kind = self.handler.kind;
        match (kind, udp) {
            (HandlerType::Udp, false) | (HandlerType::Tcp, true) => {
                return Err(FieldError::new(
                    at("listener.type"),
                    format!(
                        "handler {:?} with listener {:?}: expected listener type {:?}",
                        kind.name(),
                        self.listener.kind.name(),
                        if udp { "tcp" } else { "udp" }
                    ),
                ));
            }
            (h, true) if h != HandlerType::Udp => {
                return Err(FieldError::new(
                    at("handler.type"),
                    format!(
                        "a udp listener carries datagrams: expected handler type \"udp\", not {:?}",
                        h.name()
                    ),
                ));
            }
            _ => {}
        }
        if self.listener.kind == ListenerType::Tls {
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
        let forwarding = kind.forwards();
        if forwarding && self.handler.metadata.is_some() {
            // The handler's own check says the same; this one comes first, before
            // the forwarder is asked for.
            self.handler.validate(&at("handler"))?;
        }
        if forwarding && self.forwarder.is_none() {
            return Err(FieldError::new(
                at("forwarder"),
                format!(
                    "a {kind} handler forwards to nodes: expected forwarder: {{nodes: [{{name, addr}}]}}"
                ),
            ));
        }
        if !forwarding {
            // Proxy handlers find their target in each request; the forwarding
            // options have nothing to act on, so they are refused, not ignored.
            let misplaced = [
                (
                    "forwarder",
                    self.forwarder.is_some() && kind != HandlerType::Relay,
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
                    format!("not used by the {kind} handler ({why}): expected no {f}"),
                ));
            }
        }
        if let Some(fwd) = &self.forwarder {
            fwd.validate(&at("forwarder"))?;
        }
        self.handler.validate(&at("handler"))?;
        if let Some(tls) = &self.listener.tls {
            tls.validate(&at("listener.tls"))?;
        }
        if let Some(tls) = self.forwarder.as_ref().and_then(|f| f.tls.as_ref()) {
            tls.validate_client(&at("forwarder.tls"))?;
        }
        if self.proxy_protocol.is_some() && udp {
            return Err(FieldError::new(
                at("proxy_protocol"),
                "the PROXY protocol is for TCP: expected no proxy_protocol on a udp service",
            ));
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
            if u.transparent
                && let Some(i) = self.interface()
                && i.exits
                    .iter()
                    .any(|e| matches!(e.via, interface::Via::Source(_)))
            {
                return Err(FieldError::new(
                    at(self.interface_field()),
                    format!(
                        "{:?} names a source address, but udp.transparent sends from the client's address: expected interface names only",
                        i.text
                    ),
                ));
            }
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
        assert_eq!(s.addr.addr, "0.0.0.0:8080".parse().unwrap());
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
        assert_eq!(s.access.as_ref().unwrap().rules.len(), 2);
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
    fn huge_durations_are_refused_with_field_and_ceiling() {
        let e = load("services: [{name: s, addr: \":1\", handler: {type: tcp}, listener: {type: tcp}, client_idle_timeout: 9223372036854775807s, forwarder: {nodes: [{addr: \"1.1.1.1:1\"}]}}]").unwrap_err();
        assert!(e.contains("client_idle_timeout"), "{e}");
        assert!(e.contains("365 days"), "{e}");
    }

    #[test]
    fn proxy_protocol_version_quoted_or_not() {
        let pp = |v: &str| {
            crate::config::from_yaml::<ProxyProtocolConfig>(&format!("version: {v}"))
                .map(|p| p.version)
        };
        assert_eq!(pp("1"), Ok(ProxyProtocolVersion::V1));
        assert_eq!(pp("\"2\""), Ok(ProxyProtocolVersion::V2));
        assert!(pp("3").is_err());
    }

    #[test]
    fn udp_with_a_limit_is_accepted() {
        load("services: [{name: u, addr: \":53\", handler: {type: udp}, listener: {type: udp}, udp: {max_requests: 1}, forwarder: {nodes: [{addr: \"1.1.1.1:53\"}]}}]").unwrap();
        load("services: [{name: u, addr: \":53\", handler: {type: udp}, listener: {type: udp}, client_idle_timeout: 10s, forwarder: {nodes: [{addr: \"1.1.1.1:53\"}]}}]").unwrap();
    }
}
