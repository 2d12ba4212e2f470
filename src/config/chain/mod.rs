//! GOST's forwarding chains: the top-level `chains:` section, typed.
//!
//! A chain is a list of **hops**; a hop is a group of **nodes** and a
//! **selector** that picks one of them per connection. A node is an upstream
//! proxy: its address, how to reach it (the **dialer**: `tcp` or `tls`) and what
//! to say once connected (the **connector**: `http` CONNECT, `socks5`,
//! `socks4`). Hop 1's node is dialed directly; hop 2's node is reached through
//! hop 1 (hop 1's connector asks for it), and so on; the last hop's connector
//! asks for the target itself.
//!
//! ```yaml
//! services:
//! - name: service-0
//!   addr: ":8080"
//!   handler: {type: auto, chain: chain-0}    # outbound connections go through chain-0
//!   listener: {type: tcp}
//! chains:
//! - name: chain-0
//!   hops:
//!   - name: hop-0
//!     interface: 192.168.0.1               # the exit of the first hop (node's value wins)
//!     selector: {strategy: round, maxFails: 1, failTimeout: 10s}
//!     nodes:
//!     - name: node-0
//!       addr: 192.168.1.1:8080
//!       interface: eth0
//!       connector: {type: http, auth: {username: user, password: pass}}
//!       dialer: {type: tcp}
//!   - name: hop-1
//!     nodes:
//!     - name: node-1
//!       addr: 10.0.0.2:1080
//!       connector: {type: socks5}
//!       dialer: {type: tls, tls: {serverName: proxy.lan, caFile: ca.pem}}
//! ```
//!
//! **Virtual nodes** (`connector: {type: virtual}`, `dialer: {type: virtual}`,
//! `addr: ":0"`) are no proxy at all: a connection that picks one goes straight
//! to its target, leaving through the node's `interface`. A hop of virtual nodes
//! balances connections over several uplinks without an upstream proxy.
//!
//! What GOST leaves implicit and this model says:
//!
//! * `connector` defaults to `http` and `dialer` to `tcp`, as in GOST; a node
//!   `addr: ":8000"` is a proxy on this host (Go's reading of an empty host);
//! * `interface` is where packets leave this host, so it applies to the first hop
//!   only (later hops are reached through the first); a node's value overrides
//!   its hop's, and with neither the service's `interface` applies;
//! * the `tls` dialer verifies the node's certificate by default (`secure`
//!   defaults to **true** here, unlike GOST); `secure: false` turns it off;
//! * the selector is the forwarder's: GOST's `round`, `rand`, `fifo`, `hash`
//!   (client IP) and gobetween's names, with `maxFails` / `failTimeout`.
//!
//! Hops may also be defined once under the top-level `hops:` (GOST v3) and used
//! by name from any chain: see [`hops`]. A hop or a node may name a `resolver`
//! and a `hosts` table for the node addresses (a node's own wins over its hop's;
//! with neither, the system resolver), as GOST does.
//!
//! [`validate_chains`] checks the section and the services' references to it;
//! [`link_chains`] then gives every service its chain (`ServiceConfig::chain`),
//! with the hops it refers to by name written out, so that `proxy/` builds a
//! service from its own config alone.

pub mod hops;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::FieldError;
use super::auth::AuthConfig;
use super::duration::DurationStr;
use super::names::yaml_names;
use super::resolver::{HostsConfig, NameRef, ResolverConfig};
use super::service::{HandlerType, Interface, SelectorConfig, ServiceConfig, valid_node_addr};
use super::tls::{TlsConfig, TlsOptions};

/// One entry of `chains:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// What `handler.chain` refers to.
    pub name: String,
    /// In order: hop 1 is dialed from this host, each next one through the previous.
    pub hops: Vec<HopConfig>,
}

/// A level of a chain: nodes and how one is picked. Also an entry of the
/// top-level `hops:` (see [`hops`]); a chain's hop with no `nodes` is the
/// top-level hop of that `name`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopConfig {
    /// Used in logs; in `hops:` (and for a chain's reference to it) the hop's name.
    #[serde(default)]
    pub name: String,
    /// The network exit of this hop's nodes (first hop only); a node's own
    /// `interface` wins.
    #[serde(default)]
    pub interface: Option<Interface>,
    /// GOST's selector (default: `round`, `maxFails: 1`, `failTimeout: 10s`).
    #[serde(default)]
    pub selector: SelectorConfig,
    /// GOST's `resolver`: the `resolvers:` entry that resolves this hop's node
    /// addresses (a node's own `resolver` wins; neither: the system's).
    #[serde(default)]
    pub resolver: Option<NameRef<ResolverConfig>>,
    /// GOST's `hosts`: the `hosts:` table consulted first for the node
    /// addresses (a node's own `hosts` wins).
    #[serde(default)]
    pub hosts: Option<NameRef<HostsConfig>>,
    /// Empty in a chain: the hop is the top-level `hops:` entry named `name`.
    #[serde(default)]
    pub nodes: Vec<ChainNodeConfig>,
}

/// One upstream proxy of a hop (or a virtual node).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainNodeConfig {
    #[serde(default)]
    pub name: String,
    /// `host:port` of the proxy; `":0"` (or empty) for a virtual node.
    #[serde(default)]
    pub addr: String,
    /// The network exit towards this node (first hop only); overrides the hop's.
    #[serde(default)]
    pub interface: Option<Interface>,
    /// GOST's `resolver` for this node's `addr`; overrides the hop's.
    #[serde(default)]
    pub resolver: Option<NameRef<ResolverConfig>>,
    /// GOST's `hosts` for this node's `addr`; overrides the hop's.
    #[serde(default)]
    pub hosts: Option<NameRef<HostsConfig>>,
    /// What is said to the node (default [`default_connector`]: `http`).
    #[serde(default = "default_connector")]
    pub connector: ConnectorConfig,
    /// How the node is reached (default [`default_dialer`]: `tcp`).
    #[serde(default = "default_dialer")]
    pub dialer: DialerConfig,
}

/// GOST's default connector: `http`.
pub fn default_connector() -> ConnectorConfig {
    ConnectorConfig {
        kind: ConnectorType::Http,
        auth: None,
        metadata: ConnectorMetadata::default(),
    }
}

/// GOST's default dialer: `tcp`.
pub fn default_dialer() -> DialerConfig {
    DialerConfig {
        kind: DialerType::Tcp,
        tls: None,
        metadata: DialerMetadata::default(),
    }
}

/// The protocol spoken to a node to go further.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    #[serde(rename = "type")]
    pub kind: ConnectorType,
    /// Credentials the node asks for: `Proxy-Authorization: Basic` (http), RFC
    /// 1929 (socks5), the user id (socks4: `username` only).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub metadata: ConnectorMetadata,
}

/// GOST's connector types this build speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum ConnectorType {
    /// HTTP `CONNECT host:port`.
    #[serde(rename = "http")]
    Http,
    /// SOCKS5 CONNECT (and UDP ASSOCIATE for udp services), GOST alias `socks`.
    #[serde(rename = "socks5", alias = "socks")]
    Socks5,
    /// SOCKS4a CONNECT (a name is sent as is), GOST alias `socks4a`.
    #[serde(rename = "socks4", alias = "socks4a")]
    Socks4,
    /// No protocol: the connection goes direct to the target.
    #[serde(rename = "virtual")]
    Virtual,
    /// GOST's relay protocol (CONNECT, user auth): see `proxy::relay_proto`.
    #[serde(rename = "relay")]
    Relay,
}

yaml_names!(ConnectorType {
    Http => "http",
    Socks5 => "socks5",
    Socks4 => "socks4",
    Virtual => "virtual",
    Relay => "relay",
});

/// Connector `metadata:`, each option once; which connector takes which is
/// checked by [`ConnectorConfig::validate`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorMetadata {
    /// http: extra headers sent with the `CONNECT` request.
    #[serde(default)]
    pub header: Option<BTreeMap<String, String>>,
    /// http, socks5, socks4: how long the node may take to answer the connector's
    /// request (default [`default_connect_timeout`], 10 s).
    #[serde(rename = "connectTimeout", default)]
    pub connect_timeout: Option<DurationStr>,
    /// relay: send the request and wait for the node's answer before the
    /// connection is handed on (default [`default_nodelay`], false: the answer is
    /// read with the target's first bytes, as a GOST relay server in its default
    /// mode sends it).
    #[serde(default)]
    pub nodelay: Option<bool>,
}

/// GOST's default `nodelay` of the relay connector.
pub fn default_nodelay() -> bool {
    false
}

/// How long a node may take to answer `CONNECT` or a SOCKS request.
pub fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl ConnectorMetadata {
    /// `connectTimeout`, or its default.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
            .and_then(|d| d.get())
            .unwrap_or_else(default_connect_timeout)
    }

    /// `nodelay`, or its default.
    pub fn nodelay(&self) -> bool {
        self.nodelay.unwrap_or_else(default_nodelay)
    }
}

/// How a node is reached.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialerConfig {
    #[serde(rename = "type")]
    pub kind: DialerType,
    /// `tls` dialer: how the node's certificate is checked, and ours.
    #[serde(default)]
    pub tls: Option<DialerTlsConfig>,
    #[serde(default)]
    pub metadata: DialerMetadata,
}

/// GOST's dialer types this build speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialerType {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP (rustls).
    Tls,
    /// No connection of its own: the target is dialed directly.
    Virtual,
}

yaml_names!(DialerType {
    Tcp => "tcp",
    Tls => "tls",
    Virtual => "virtual",
});

/// Dialer `metadata:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialerMetadata {
    /// tls: how long the TLS handshake may take (default
    /// [`default_handshake_timeout`], 10 s).
    #[serde(rename = "handshakeTimeout", default)]
    pub handshake_timeout: Option<DurationStr>,
}

/// How long a `tls` dialer's handshake may take.
pub fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

impl DialerMetadata {
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
            .and_then(|d| d.get())
            .unwrap_or_else(default_handshake_timeout)
    }
}

/// The `tls` dialer's `tls:` section, GOST's names. Unlike a forwarder's `tls`,
/// `secure` defaults to **true**: the node's certificate is verified against the
/// system roots (or `caFile`) and `serverName` (else the node's host).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialerTlsConfig {
    /// Verify the chain and the name (default [`default_secure`]: true).
    #[serde(default = "default_secure")]
    pub secure: bool,
    /// SNI and the name verified; default: the host of the node's `addr`.
    #[serde(rename = "serverName", default)]
    pub server_name: Option<String>,
    /// Trust this CA instead of the system roots.
    #[serde(rename = "caFile", default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate, if the node asks for one.
    #[serde(rename = "certFile", default)]
    pub cert_file: Option<PathBuf>,
    #[serde(rename = "keyFile", default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub options: TlsOptions,
}

/// The `tls` dialer verifies by default.
pub fn default_secure() -> bool {
    true
}

impl Default for DialerTlsConfig {
    fn default() -> Self {
        Self {
            secure: default_secure(),
            server_name: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            options: TlsOptions::default(),
        }
    }
}

impl DialerTlsConfig {
    /// The same settings as the TLS client of a forwarder reads them.
    pub fn client_config(&self) -> TlsConfig {
        TlsConfig {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            ca_file: self.ca_file.clone(),
            server_name: self.server_name.clone(),
            secure: self.secure,
            options: self.options.clone(),
            ..TlsConfig::default()
        }
    }
}

impl ChainNodeConfig {
    /// A virtual node: no proxy, the target is dialed directly.
    pub fn is_virtual(&self) -> bool {
        self.connector.kind == ConnectorType::Virtual
    }

    /// The address dialed: `addr`, with GOST's (Go's) `":port"` meaning this
    /// host (`127.0.0.1:port`).
    pub fn dial_addr(&self) -> String {
        match self.addr.strip_prefix(':') {
            Some(port) => format!("127.0.0.1:{port}"),
            None => self.addr.clone(),
        }
    }

    /// The name to log: `name` if given, else the address.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            &self.addr
        } else {
            &self.name
        }
    }
}

/// Whether `addr` is what GOST writes for a virtual node: empty, `:0`, `host:0`.
fn virtual_addr(addr: &str) -> bool {
    addr.is_empty() || addr.rsplit_once(':').is_some_and(|(_, p)| p == "0")
}

/// Checks of the `chains:` section (hops referred to by name included: `hops`
/// is the top-level `hops:`), and of every `handler.chain` reference.
pub fn validate_chains(
    chains: &[ChainConfig],
    hops: &[HopConfig],
    services: &[ServiceConfig],
) -> Result<(), FieldError> {
    hops::validate_hops(hops)?;
    super::resolver::unique(chains)?;
    let mut written_out = Vec::with_capacity(chains.len());
    for (i, c) in chains.iter().enumerate() {
        written_out.push(hops::validate_chain(c, hops, &format!("chains[{i}]"))?);
    }
    for (i, s) in services.iter().enumerate() {
        let Some(name) = &s.handler.chain else {
            continue;
        };
        let field = format!("services[{i}].handler.chain");
        let Some(chain) = written_out.iter().find(|c| &c.name == name) else {
            let known: Vec<&str> = chains.iter().map(|c| c.name.as_str()).collect();
            let expected = if known.is_empty() {
                "a chain defined under the top-level chains: section (there is none)".to_string()
            } else {
                format!(
                    "one of the chains defined under chains: {}",
                    known.join(", ")
                )
            };
            return Err(FieldError::new(
                field,
                format!("unknown chain {name:?}: expected {expected}"),
            ));
        };
        if s.ignores_chain() {
            // GOST's `metadata: {ignoreChain: true}`: the reference is checked
            // (a typo is still a typo) but the chain is not used.
            continue;
        }
        if s.is_udp() {
            chain.validate_for_udp(&field)?;
        }
        if s.udp.as_ref().is_some_and(|u| u.transparent) {
            return Err(FieldError::new(
                format!("services[{i}].udp.transparent"),
                "transparent mode sends from the client's address straight to the node; a chain sends through its hop: expected one of the two",
            ));
        }
        let relays_udp = s.handler.metadata.as_ref().and_then(|m| m.udp) == Some(true)
            && matches!(s.handler.kind, HandlerType::Socks5 | HandlerType::Auto);
        if relays_udp {
            return Err(FieldError::new(
                format!("services[{i}].handler.metadata.udp"),
                "the SOCKS5 UDP relay sends datagrams directly and would bypass the chain: \
                 expected no udp: true on a handler with a chain",
            ));
        }
    }
    Ok(())
}

/// Give every service with a `handler.chain` its (validated, linked) chain, the
/// hops it names from `hops:` written out; none for a service with
/// `metadata: {ignoreChain: true}`.
pub fn link_chains(chains: &[ChainConfig], hops: &[HopConfig], services: &mut [ServiceConfig]) {
    for s in services {
        s.chain = s
            .handler
            .chain
            .as_ref()
            .filter(|_| !s.ignores_chain())
            .and_then(|n| chains.iter().find(|c| &c.name == n))
            .map(|c| Arc::new(hops::write_out(c, hops)));
    }
}

impl ChainConfig {
    /// Checks of one chain on its own (no top-level `hops:` to refer to); `at`
    /// is its path (`chains[0]`).
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        hops::validate_chain(self, &[], at).map(|_| ())
    }

    /// A udp service's chain: datagrams can only go through one SOCKS5 hop (UDP
    /// ASSOCIATE) or out of virtual nodes; a later hop would need UDP through a
    /// TCP tunnel.
    fn validate_for_udp(&self, field: &str) -> Result<(), FieldError> {
        if self.hops.len() != 1 {
            return Err(FieldError::new(
                field,
                format!(
                    "chain {:?} has {} hops; a udp service's datagrams go through one hop only: \
                     expected a chain of one hop of socks5 or virtual nodes",
                    self.name,
                    self.hops.len()
                ),
            ));
        }
        if let Some(n) = self.hops[0].nodes.iter().find(|n| {
            !matches!(
                n.connector.kind,
                ConnectorType::Socks5 | ConnectorType::Virtual
            )
        }) {
            return Err(FieldError::new(
                field,
                format!(
                    "chain {:?}: node {:?} has a {} connector, which carries no datagrams: \
                     expected socks5 (UDP ASSOCIATE) or virtual nodes for a udp service",
                    self.name,
                    n.label(),
                    n.connector.kind
                ),
            ));
        }
        Ok(())
    }
}

impl HopConfig {
    /// Checks of one hop; `first`: it is dialed from this host.
    pub fn validate(&self, at: &str, first: bool) -> Result<(), FieldError> {
        if self.nodes.is_empty() {
            return Err(FieldError::new(
                format!("{at}.nodes"),
                "no nodes: expected at least one {name, addr, connector, dialer}",
            ));
        }
        if self.interface.is_some() && !first {
            return Err(FieldError::new(
                format!("{at}.interface"),
                "only the first hop leaves this host (later hops are reached through it): \
                 expected interface on the first hop or its nodes",
            ));
        }
        if self.selector.max_fails > 0 && self.selector.fail_timeout.get().is_none() {
            return Err(FieldError::new(
                format!("{at}.selector.failTimeout"),
                "expected a positive duration like \"10s\" (or maxFails: 0 to never bench a node)",
            ));
        }
        let mut names = HashSet::new();
        for (j, n) in self.nodes.iter().enumerate() {
            let nat = format!("{at}.nodes[{j}]");
            if !n.name.is_empty() && !names.insert(n.name.as_str()) {
                return Err(FieldError::new(
                    format!("{nat}.name"),
                    format!(
                        "duplicate node name {:?} in this hop: expected unique names",
                        n.name
                    ),
                ));
            }
            n.validate(&nat, first)?;
        }
        // Unnamed nodes are told apart by their address; virtual ones share ":0".
        let unnamed_virtual = self
            .nodes
            .iter()
            .filter(|n| n.is_virtual() && n.name.is_empty())
            .count();
        if unnamed_virtual > 0 && self.nodes.len() > 1 {
            let j = self
                .nodes
                .iter()
                .position(|n| n.is_virtual() && n.name.is_empty())
                .unwrap_or(0);
            return Err(FieldError::new(
                format!("{at}.nodes[{j}].name"),
                "virtual nodes share the address \":0\": expected a name for each",
            ));
        }
        Ok(())
    }
}

impl ChainNodeConfig {
    /// Checks of one node; `at` is its path, `first`: it is in the first hop.
    pub fn validate(&self, at: &str, first: bool) -> Result<(), FieldError> {
        let f = |x: &str| format!("{at}.{x}");
        let virt_conn = self.connector.kind == ConnectorType::Virtual;
        let virt_dial = self.dialer.kind == DialerType::Virtual;
        if virt_conn != virt_dial {
            let (field, other) = if virt_conn {
                ("dialer.type", "connector")
            } else {
                ("connector.type", "dialer")
            };
            return Err(FieldError::new(
                f(field),
                format!("a virtual node has both: expected type: virtual, as its {other} has"),
            ));
        }
        if self.interface.is_some() && !first {
            return Err(FieldError::new(
                f("interface"),
                "only the first hop leaves this host (later hops are reached through it): \
                 expected interface on the first hop or its nodes",
            ));
        }
        if virt_conn {
            if !first {
                return Err(FieldError::new(
                    f("connector.type"),
                    "a virtual node dials directly from this host: expected virtual nodes in the \
                     first hop only",
                ));
            }
            if !virtual_addr(&self.addr) {
                return Err(FieldError::new(
                    f("addr"),
                    format!(
                        "{:?}: a virtual node has no address of its own: expected \":0\"",
                        self.addr
                    ),
                ));
            }
            if self.connector.auth.is_some() {
                return Err(FieldError::new(
                    f("connector.auth"),
                    "a virtual node speaks no protocol: expected no auth",
                ));
            }
        } else if !valid_node_addr(&self.dial_addr()) || self.addr.ends_with(":0") {
            return Err(FieldError::new(
                f("addr"),
                format!(
                    "{:?}: expected \"host:port\" (or \":port\" on this host) of the proxy",
                    self.addr
                ),
            ));
        }
        self.connector.validate(&f("connector"))?;
        self.dialer.validate(&f("dialer"))
    }
}

impl ConnectorConfig {
    /// `at` is the path of this section.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        let m = &self.metadata;
        let not_option = |name: &str| {
            FieldError::new(
                format!("{at}.metadata.{name}"),
                format!(
                    "not an option of the {} connector: expected {}",
                    self.kind,
                    match self.kind {
                        ConnectorType::Http => "header or connectTimeout",
                        ConnectorType::Socks5 | ConnectorType::Socks4 => "connectTimeout",
                        ConnectorType::Relay => "connectTimeout or nodelay",
                        ConnectorType::Virtual => "no metadata",
                    }
                ),
            )
        };
        if m.header.is_some() && self.kind != ConnectorType::Http {
            return Err(not_option("header"));
        }
        if m.connect_timeout.is_some() && self.kind == ConnectorType::Virtual {
            return Err(not_option("connectTimeout"));
        }
        if m.nodelay.is_some() && self.kind != ConnectorType::Relay {
            return Err(not_option("nodelay"));
        }
        if let Some(h) = &m.header {
            super::service::handler::validate_headers(h, at)?;
        }
        if let Some(a) = &self.auth {
            if a.username.contains(':') && self.kind == ConnectorType::Http {
                return Err(FieldError::new(
                    format!("{at}.auth.username"),
                    "HTTP basic credentials cannot carry ':' in the user name: expected a name without ':'",
                ));
            }
            if matches!(self.kind, ConnectorType::Socks5 | ConnectorType::Relay)
                && (a.username.len() > 255 || a.password.expose().len() > 255)
            {
                return Err(FieldError::new(
                    format!("{at}.auth"),
                    format!(
                        "the {} connector carries user name and password in at most 255 bytes each: expected shorter ones",
                        self.kind
                    ),
                ));
            }
            if self.kind == ConnectorType::Socks4 && !a.password.expose().is_empty() {
                return Err(FieldError::new(
                    format!("{at}.auth.password"),
                    "SOCKS4 carries a user id only: expected auth: {username: ...} without a password",
                ));
            }
        }
        Ok(())
    }
}

impl DialerConfig {
    /// `at` is the path of this section.
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        if self.kind != DialerType::Tls {
            if self.tls.is_some() {
                return Err(FieldError::new(
                    format!("{at}.tls"),
                    format!(
                        "the {} dialer does not speak TLS: expected type: tls, or no tls section",
                        self.kind
                    ),
                ));
            }
            if self.metadata.handshake_timeout.is_some() {
                return Err(FieldError::new(
                    format!("{at}.metadata.handshakeTimeout"),
                    format!(
                        "not an option of the {} dialer: expected it with type: tls only",
                        self.kind
                    ),
                ));
            }
        }
        if let Some(t) = &self.tls {
            t.client_config().validate_client(&format!("{at}.tls"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
