//! The forwarder of a service: its nodes, how one is chosen (GOST's `selector`,
//! gobetween's `balance`), and gobetween's `healthcheck` and `discovery` sections.
//!
//! ```yaml
//! forwarder:
//!   nodes:
//!   - {name: b1, addr: "10.0.0.11:80", weight: 3}
//!   - {name: b2, addr: "10.0.0.12:80"}
//!   selector: {strategy: leastconn, maxFails: 2, failTimeout: 10s}
//!   healthcheck: {kind: ping, interval: 2s, timeout: 500ms, fails: 2, passes: 1}
//!   discovery: {kind: file, file_path: /etc/gateway/web.nodes}
//!   tls: {caFile: ca.pem, serverName: backend.lan}   # gobetween's backends_tls
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::FieldError;
use crate::config::duration::DurationStr;
use crate::config::tls::TlsConfig;

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
    /// Client IP hash modulo the healthy nodes (gobetween `iphash`, GOST `hash`).
    #[serde(alias = "hash")]
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
    pub probe_send: ProbeBytes,
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

impl ForwarderConfig {
    /// Checks of the forwarder at path `at` (`services[i].forwarder`).
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
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

/// `probe_send`, decoded when the file is read: the bytes a probe sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeBytes(pub Vec<u8>);

impl ProbeBytes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for ProbeBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        unescape(&s)
            .map(ProbeBytes)
            .map_err(serde::de::Error::custom)
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
