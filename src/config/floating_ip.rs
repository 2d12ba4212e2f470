//! The `floating_ip:` section.
//!
//! Every field of INFINI Gateway's section is accepted with INFINI's name and
//! default. Our own failover options sit beside them (`heartbeat`, `preempt`, `garp`,
//! `probe`, `notify`, and the keys: `secret`, `secret_file`,
//! `accept_unauthenticated`, see [`secret`]). What each INFINI field means here:
//!
//! | INFINI field | here |
//! |---|---|
//! | `enabled`, `ip`, `netmask`, `interface` | same meaning, same defaults |
//! | `local_ip` | this node's address: heartbeat identity and source; default: the interface's first IPv4 |
//! | `peer_ip` | heartbeats are also sent there by unicast; the echo probe targets it |
//! | `priority` | election priority (higher wins; ties: higher node address) |
//! | `forced_by_priority` | alias of `preempt` |
//! | `echo.port` | TCP echo service each node runs; the backup uses it to tell "peer daemon alive" from "peer dead" |
//! | `echo.dial_timeout_in_ms`, `echo.timeout_in_ms` | bound that echo probe (connect, then round trip) |
//! | `broadcast.binding` | its port is the heartbeat port; a multicast group there is replaced by the subnet broadcast (logged) |

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::FieldError;
use crate::net::{self, Interfaces};

pub mod secret;
pub use secret::{FailoverKeys, Secrets};

fn default_priority() -> u8 {
    100
}
fn default_echo_port() -> u16 {
    61111
}
/// INFINI's default echo timeouts are 10 s; we keep the name but a failover daemon
/// that waits 10 s is not one: our defaults are short and documented.
fn default_echo_dial_timeout_ms() -> u64 {
    150
}
fn default_echo_timeout_ms() -> u64 {
    150
}
fn default_broadcast_binding() -> String {
    "224.3.2.2:7654".to_string()
}
fn default_heartbeat_interval_ms() -> u64 {
    50
}
fn default_dead_count() -> u32 {
    3
}
fn default_garp_count() -> u32 {
    3
}
fn default_garp_interval_ms() -> u64 {
    50
}
fn default_garp_refresh_ms() -> u64 {
    10_000
}
fn default_probe_interval_ms() -> u64 {
    1000
}
fn default_probe_timeout_ms() -> u64 {
    150
}

/// `floating_ip:` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpConfig {
    #[serde(default)]
    pub enabled: bool,
    /// The VIP. Default: the first three octets of `local_ip` and `.234`.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// Default: the interface's netmask for `local_ip`, else 255.255.255.0.
    #[serde(default)]
    pub netmask: Option<Ipv4Addr>,
    /// Default: the device holding the host's first non-loopback IPv4 address.
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub local_ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub peer_ip: Option<Ipv4Addr>,
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// INFINI's name for `preempt`.
    #[serde(default)]
    pub forced_by_priority: Option<bool>,
    #[serde(default)]
    pub echo: EchoConfig,
    #[serde(default)]
    pub broadcast: BroadcastConfig,

    // ---- our own options ----
    /// Whether a better node takes the VIP back from a healthy master. Default false:
    /// a returning node does not cause a second interruption.
    #[serde(default)]
    pub preempt: Option<bool>,
    #[serde(default)]
    pub heartbeat: HeartbeatConfig,
    #[serde(default)]
    pub garp: GarpConfig,
    #[serde(default)]
    pub probe: ProbeConfig,
    #[serde(default)]
    pub notify: NotifyConfig,
    /// Key(s) authenticating heartbeats and echo answers; the first signs.
    #[serde(default)]
    pub secret: Option<Secrets>,
    /// The same, read from a file (one key per line) at start and on reload.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Also accept unsigned traffic although keys are set (migration only).
    #[serde(default)]
    pub accept_unauthenticated: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {
    #[serde(default = "default_echo_port")]
    pub port: u16,
    #[serde(default = "default_echo_dial_timeout_ms")]
    pub dial_timeout_in_ms: u64,
    #[serde(default = "default_echo_timeout_ms")]
    pub timeout_in_ms: u64,
}

impl Default for EchoConfig {
    fn default() -> Self {
        Self {
            port: default_echo_port(),
            dial_timeout_in_ms: default_echo_dial_timeout_ms(),
            timeout_in_ms: default_echo_timeout_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastConfig {
    #[serde(default = "default_broadcast_binding")]
    pub binding: String,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        Self {
            binding: default_broadcast_binding(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// How often every node sends a heartbeat.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub interval_in_ms: u64,
    /// Missed heartbeats after which the master is declared dead.
    #[serde(default = "default_dead_count")]
    pub dead_count: u32,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval_in_ms: default_heartbeat_interval_ms(),
            dead_count: default_dead_count(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GarpConfig {
    /// Gratuitous ARP packets (each sent as request and as reply) after a takeover.
    #[serde(default = "default_garp_count")]
    pub count: u32,
    #[serde(default = "default_garp_interval_ms")]
    pub interval_in_ms: u64,
    /// While master, re-announce every so often; 0 turns the refresh off.
    #[serde(default = "default_garp_refresh_ms")]
    pub refresh_in_ms: u64,
}

impl Default for GarpConfig {
    fn default() -> Self {
        Self {
            count: default_garp_count(),
            interval_in_ms: default_garp_interval_ms(),
            refresh_in_ms: default_garp_refresh_ms(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Addresses pinged to tell "the peer died" from "I am cut off". Empty: the
    /// interface's default gateway if it has one.
    #[serde(default)]
    pub targets: Vec<Ipv4Addr>,
    #[serde(default = "default_probe_timeout_ms")]
    pub timeout_in_ms: u64,
    /// How often targets are probed while MASTER or FAULT.
    #[serde(default = "default_probe_interval_ms")]
    pub interval_in_ms: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            timeout_in_ms: default_probe_timeout_ms(),
            interval_in_ms: default_probe_interval_ms(),
        }
    }
}

/// Commands run through `sh -c` on a state change (keepalived's notify scripts).
/// They get `GATEWAY_STATE`, `GATEWAY_PREVIOUS_STATE`, `GATEWAY_REASON`,
/// `GATEWAY_VIP` and `GATEWAY_INTERFACE` in their environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default)]
    pub master: Option<String>,
    #[serde(default)]
    pub backup: Option<String>,
    #[serde(default)]
    pub fault: Option<String>,
    /// Run on every change, after the state's own command.
    #[serde(default)]
    pub any: Option<String>,
}

/// `floating_ip` with every default filled in from the host. This is what the daemon runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIp {
    pub vip: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub prefix: u8,
    pub interface: String,
    pub local_ip: Ipv4Addr,
    pub peer_ip: Option<Ipv4Addr>,
    pub priority: u8,
    pub preempt: bool,
    /// Heartbeats go to this address (subnet broadcast unless configured otherwise).
    pub heartbeat_dest: Ipv4Addr,
    pub heartbeat_port: u16,
    pub heartbeat_interval: Duration,
    pub dead_count: u32,
    pub echo_port: u16,
    pub echo_dial_timeout: Duration,
    pub echo_timeout: Duration,
    pub garp_count: u32,
    pub garp_interval: Duration,
    pub garp_refresh: Option<Duration>,
    pub probe_targets: Vec<Ipv4Addr>,
    pub probe_timeout: Duration,
    pub probe_interval: Duration,
    pub notify: NotifyConfig,
    /// Heartbeat and echo keys (empty: unauthenticated, INFINI-compatible).
    pub keys: FailoverKeys,
    /// Things the operator should know about how INFINI fields were mapped.
    pub notes: Vec<String>,
}

impl FloatingIpConfig {
    /// Checks that need only the file.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(mask) = self.netmask
            && net::prefix_len(mask).is_none()
        {
            return Err(FieldError::new(
                "floating_ip.netmask",
                format!(
                    "{mask} is not a valid netmask: expected contiguous ones then zeros, e.g. 255.255.255.0"
                ),
            ));
        }
        if let (Some(p), Some(f)) = (self.preempt, self.forced_by_priority)
            && p != f
        {
            return Err(FieldError::new(
                "floating_ip.preempt",
                format!(
                    "preempt: {p} contradicts forced_by_priority: {f} (the same option under INFINI's name); set one"
                ),
            ));
        }
        parse_binding(&self.broadcast.binding)?;
        secret::validate(
            self.secret.as_ref(),
            self.secret_file.as_deref(),
            self.accept_unauthenticated,
        )?;
        let hb = &self.heartbeat;
        if !(10..=10_000).contains(&hb.interval_in_ms) {
            return Err(FieldError::new(
                "floating_ip.heartbeat.interval_in_ms",
                format!(
                    "{} is out of range: expected 10 to 10000 (milliseconds)",
                    hb.interval_in_ms
                ),
            ));
        }
        if !(2..=100).contains(&hb.dead_count) {
            return Err(FieldError::new(
                "floating_ip.heartbeat.dead_count",
                format!(
                    "{} is out of range: expected 2 to 100 missed heartbeats",
                    hb.dead_count
                ),
            ));
        }
        if self.echo.port == 0 {
            return Err(FieldError::new(
                "floating_ip.echo.port",
                "expected a port from 1 to 65535",
            ));
        }
        for (field, v) in [
            (
                "floating_ip.echo.dial_timeout_in_ms",
                self.echo.dial_timeout_in_ms,
            ),
            ("floating_ip.echo.timeout_in_ms", self.echo.timeout_in_ms),
            ("floating_ip.probe.timeout_in_ms", self.probe.timeout_in_ms),
            (
                "floating_ip.probe.interval_in_ms",
                self.probe.interval_in_ms,
            ),
        ] {
            if !(1..=60_000).contains(&v) {
                return Err(FieldError::new(
                    field,
                    format!("{v} is out of range: expected 1 to 60000 (milliseconds)"),
                ));
            }
        }
        if self.garp.count == 0 || self.garp.count > 100 {
            return Err(FieldError::new(
                "floating_ip.garp.count",
                format!("{} is out of range: expected 1 to 100", self.garp.count),
            ));
        }
        if self.garp.interval_in_ms > 10_000 {
            return Err(FieldError::new(
                "floating_ip.garp.interval_in_ms",
                "expected at most 10000 (milliseconds)",
            ));
        }
        if self.garp.refresh_in_ms != 0 && self.garp.refresh_in_ms < 100 {
            return Err(FieldError::new(
                "floating_ip.garp.refresh_in_ms",
                "expected 0 (off) or at least 100 (milliseconds)",
            ));
        }
        if let Some(ip) = self.ip
            && (ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
        {
            return Err(FieldError::new(
                "floating_ip.ip",
                format!(
                    "{ip} cannot be a floating IP: expected a unicast address in the interface's subnet"
                ),
            ));
        }
        Ok(())
    }

    /// Fill the defaults from the host's interfaces and check the result against them.
    pub fn resolve(&self, ifs: &Interfaces) -> Result<FloatingIp, FieldError> {
        self.resolve_at(ifs, Path::new(""))
    }

    /// [`FloatingIpConfig::resolve`], with a relative `secret_file` taken from
    /// `config_dir` (the config file's directory).
    pub fn resolve_at(
        &self,
        ifs: &Interfaces,
        config_dir: &Path,
    ) -> Result<FloatingIp, FieldError> {
        self.validate()?;
        let mut notes = Vec::new();

        // interface: given, else the device of the first non-loopback IPv4 address.
        let interface = match &self.interface {
            Some(name) => {
                if !ifs.exists(name) {
                    let known: Vec<&str> = {
                        let mut v: Vec<&str> =
                            ifs.addrs.iter().map(|a| a.ifname.as_str()).collect();
                        v.dedup();
                        v
                    };
                    return Err(FieldError::new(
                        "floating_ip.interface",
                        format!(
                            "no interface named {name:?} on this host (interfaces with IPv4: {})",
                            known.join(", ")
                        ),
                    ));
                }
                name.clone()
            }
            None => match (
                self.local_ip.and_then(|ip| ifs.find(ip)),
                ifs.first_non_loopback(),
            ) {
                (Some(a), _) | (None, Some(a)) => a.ifname.clone(),
                (None, None) => {
                    return Err(FieldError::new(
                        "floating_ip.interface",
                        "not set, and this host has no non-loopback IPv4 address to choose one from",
                    ));
                }
            },
        };

        // local_ip: given (must be on the interface), else the interface's first IPv4,
        // skipping the VIP itself (it may be a leftover from a crash).
        let local = match self.local_ip {
            Some(ip) => match ifs.on(&interface).find(|a| a.addr == ip) {
                Some(a) => a.clone(),
                None => {
                    return Err(FieldError::new(
                        "floating_ip.local_ip",
                        format!("{ip} is not an address of interface {interface}"),
                    ));
                }
            },
            None => match ifs.on(&interface).find(|a| Some(a.addr) != self.ip) {
                Some(a) => a.clone(),
                None if ifs.first_on(&interface).is_some() => {
                    return Err(FieldError::new(
                        "floating_ip.ip",
                        format!(
                            "{} is the only address of {interface}, i.e. this node's own address; the floating IP must be a free address",
                            self.ip.map(|i| i.to_string()).unwrap_or_default()
                        ),
                    ));
                }
                None => {
                    return Err(FieldError::new(
                        "floating_ip.interface",
                        format!(
                            "interface {interface} has no IPv4 address (set local_ip or choose another interface)"
                        ),
                    ));
                }
            },
        };

        let netmask = self.netmask.unwrap_or(if local.netmask.is_unspecified() {
            Ipv4Addr::new(255, 255, 255, 0)
        } else {
            local.netmask
        });
        let prefix = net::prefix_len(netmask).ok_or_else(|| {
            FieldError::new(
                "floating_ip.netmask",
                format!("{netmask} is not a valid netmask"),
            )
        })?;

        let vip = match self.ip {
            Some(ip) => ip,
            None => {
                let o = local.addr.octets();
                Ipv4Addr::new(o[0], o[1], o[2], 234)
            }
        };
        if vip == local.addr {
            return Err(FieldError::new(
                "floating_ip.ip",
                format!(
                    "{vip} is this node's own address (local_ip on {interface}); the floating IP must be a free address"
                ),
            ));
        }
        // On `lo` it is what a killed daemon's handover left behind
        // (failover::handover): the driver removes it at start.
        if let Some(other) = ifs.find(vip)
            && other.ifname != interface
            && other.ifname != "lo"
        {
            return Err(FieldError::new(
                "floating_ip.ip",
                format!(
                    "{vip} is already an address of interface {}; the floating IP must be a free address",
                    other.ifname
                ),
            ));
        }
        if let Some(first) = ifs.first_on(&interface)
            && first.addr == vip
        {
            return Err(FieldError::new(
                "floating_ip.ip",
                format!(
                    "{vip} is the primary address of {interface}; the floating IP must be a free address"
                ),
            ));
        }
        let local_net = net::network(local.addr, local.netmask);
        let local_mask = if local.netmask.is_unspecified() {
            netmask
        } else {
            local.netmask
        };
        if net::network(vip, local_mask) != net::network(local.addr, local_mask) {
            return Err(FieldError::new(
                "floating_ip.ip",
                format!(
                    "{vip} is outside the subnet of {interface} ({local_net}/{}): expected an address in that subnet",
                    net::prefix_len(local_mask).unwrap_or(32)
                ),
            ));
        }
        if vip == net::broadcast(local.addr, local_mask) || vip == local_net {
            return Err(FieldError::new(
                "floating_ip.ip",
                format!("{vip} is the network or broadcast address of {interface}'s subnet"),
            ));
        }
        if let Some(peer) = self.peer_ip {
            if peer == local.addr {
                return Err(FieldError::new(
                    "floating_ip.peer_ip",
                    format!("{peer} is this node's own address"),
                ));
            }
            if peer == vip {
                return Err(FieldError::new(
                    "floating_ip.peer_ip",
                    format!("{peer} is the floating IP itself"),
                ));
            }
        }

        let (bind_ip, heartbeat_port) = parse_binding(&self.broadcast.binding)?;
        let subnet_broadcast = net::broadcast(local.addr, local_mask);
        let heartbeat_dest = if bind_ip.is_multicast() || bind_ip.is_unspecified() {
            if bind_ip.is_multicast() {
                notes.push(format!(
                    "broadcast.binding {bind_ip}:{heartbeat_port}: heartbeats use UDP port {heartbeat_port} on the subnet broadcast {subnet_broadcast} instead of the multicast group {bind_ip}"
                ));
            }
            subnet_broadcast
        } else {
            bind_ip
        };

        let preempt = self.preempt.or(self.forced_by_priority).unwrap_or(false);
        let ms = Duration::from_millis;
        let echo_dial_timeout = ms(self.echo.dial_timeout_in_ms);
        let echo_timeout = ms(self.echo.timeout_in_ms);
        if echo_dial_timeout + echo_timeout > Duration::from_secs(1) {
            notes.push(format!(
                "echo timeouts of {} ms + {} ms bound how long a takeover can wait for the peer check; failover will take at least that long when the peer host is gone",
                self.echo.dial_timeout_in_ms, self.echo.timeout_in_ms
            ));
        }
        let keys = secret::keys(
            self.secret.as_ref(),
            self.secret_file.as_deref(),
            self.accept_unauthenticated,
            config_dir,
        )?;
        if keys.accept_unauthenticated {
            notes.push("accept_unauthenticated: unsigned heartbeats and echo answers are accepted too; remove it once every node has the secret".to_string());
        }
        Ok(FloatingIp {
            vip,
            netmask,
            prefix,
            interface,
            local_ip: local.addr,
            peer_ip: self.peer_ip,
            priority: self.priority,
            preempt,
            heartbeat_dest,
            heartbeat_port,
            heartbeat_interval: ms(self.heartbeat.interval_in_ms),
            dead_count: self.heartbeat.dead_count,
            echo_port: self.echo.port,
            echo_dial_timeout,
            echo_timeout,
            garp_count: self.garp.count,
            garp_interval: ms(self.garp.interval_in_ms),
            garp_refresh: (self.garp.refresh_in_ms > 0).then(|| ms(self.garp.refresh_in_ms)),
            probe_targets: self.probe.targets.clone(),
            probe_timeout: ms(self.probe.timeout_in_ms),
            probe_interval: ms(self.probe.interval_in_ms),
            notify: self.notify.clone(),
            keys,
            notes,
        })
    }
}

fn parse_binding(binding: &str) -> Result<(Ipv4Addr, u16), FieldError> {
    let sa: SocketAddrV4 = binding.parse().map_err(|_| {
        FieldError::new(
            "floating_ip.broadcast.binding",
            format!("{binding:?} is not an IPv4 address and port like \"224.3.2.2:7654\""),
        )
    })?;
    if sa.port() == 0 {
        return Err(FieldError::new(
            "floating_ip.broadcast.binding",
            "expected a port from 1 to 65535",
        ));
    }
    Ok((*sa.ip(), sa.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::IfAddr;

    fn host() -> Interfaces {
        Interfaces {
            addrs: vec![
                IfAddr::new("lo", Ipv4Addr::LOCALHOST, 8),
                IfAddr::new("eth0", Ipv4Addr::new(192, 168, 3, 35), 24),
                IfAddr::new("eth1", Ipv4Addr::new(10, 1, 0, 5), 16),
            ],
        }
    }

    fn parse(yaml: &str) -> FloatingIpConfig {
        crate::config::from_yaml(yaml).unwrap()
    }

    #[test]
    fn enabled_alone_takes_infini_defaults() {
        let f = parse("enabled: true").resolve(&host()).unwrap();
        assert_eq!(f.interface, "eth0");
        assert_eq!(f.local_ip, Ipv4Addr::new(192, 168, 3, 35));
        assert_eq!(f.vip, Ipv4Addr::new(192, 168, 3, 234));
        assert_eq!(f.netmask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(f.prefix, 24);
        assert_eq!(f.heartbeat_port, 7654);
        assert_eq!(f.heartbeat_dest, Ipv4Addr::new(192, 168, 3, 255));
        assert_eq!(f.echo_port, 61111);
        assert!(!f.preempt);
        assert_eq!(f.notes.len(), 1, "multicast binding mapping is noted");
    }

    #[test]
    fn interface_given_picks_its_address_and_mask() {
        let f = parse("enabled: true\ninterface: eth1")
            .resolve(&host())
            .unwrap();
        assert_eq!(f.local_ip, Ipv4Addr::new(10, 1, 0, 5));
        assert_eq!(f.vip, Ipv4Addr::new(10, 1, 0, 234));
        assert_eq!(f.prefix, 16);
    }

    #[test]
    fn full_infini_section() {
        let f = parse(
            "enabled: true\nip: 192.168.3.200\nnetmask: 255.255.255.0\ninterface: eth0\nlocal_ip: 192.168.3.35\npeer_ip: 192.168.3.36\npriority: 150\nforced_by_priority: true\necho:\n  port: 61112\n  dial_timeout_in_ms: 10000\n  timeout_in_ms: 10000\nbroadcast:\n  binding: 192.168.3.255:7655\n",
        )
        .resolve(&host())
        .unwrap();
        assert_eq!(f.vip, Ipv4Addr::new(192, 168, 3, 200));
        assert_eq!(f.peer_ip, Some(Ipv4Addr::new(192, 168, 3, 36)));
        assert_eq!(f.priority, 150);
        assert!(f.preempt);
        assert_eq!(f.echo_port, 61112);
        assert_eq!(f.heartbeat_dest, Ipv4Addr::new(192, 168, 3, 255));
        assert_eq!(f.heartbeat_port, 7655);
        assert!(
            f.notes.iter().any(|n| n.contains("10000")),
            "slow echo noted"
        );
    }

    fn err(yaml: &str) -> FieldError {
        parse(yaml).resolve(&host()).unwrap_err()
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err("enabled: true\nip: 192.168.3.35").field,
            "floating_ip.ip"
        );
        assert!(
            err("enabled: true\nip: 192.168.4.10")
                .message
                .contains("outside the subnet")
        );
        assert_eq!(
            err("enabled: true\ninterface: wlan9").field,
            "floating_ip.interface"
        );
        assert_eq!(
            err("enabled: true\nnetmask: 255.0.255.0").field,
            "floating_ip.netmask"
        );
        assert_eq!(err("enabled: true\nip: 10.1.0.5").field, "floating_ip.ip");
        assert_eq!(
            err("enabled: true\nlocal_ip: 10.9.9.9").field,
            "floating_ip.local_ip"
        );
        assert_eq!(
            err("enabled: true\nbroadcast: {binding: nope}").field,
            "floating_ip.broadcast.binding"
        );
        assert_eq!(
            err("enabled: true\npreempt: true\nforced_by_priority: false").field,
            "floating_ip.preempt"
        );
        assert_eq!(
            err("enabled: true\nheartbeat: {interval_in_ms: 1}").field,
            "floating_ip.heartbeat.interval_in_ms"
        );
        assert_eq!(
            err("enabled: true\nip: 192.168.3.255").field,
            "floating_ip.ip"
        );
    }

    #[test]
    fn secrets_are_masked_in_every_dump() {
        let key = "do-not-print-me-0123456789";
        let cfg = parse(&format!(
            "enabled: true\nsecret: [\"{key}\", \"{key}-old\"]"
        ));
        let f = cfg.resolve(&host()).unwrap();
        assert_eq!(f.keys.secrets.len(), 2);
        let dump = format!("{cfg:?} {f:?} {cfg:#?} {f:#?}");
        assert!(!dump.contains("do-not-print"), "{dump}");
        assert!(dump.contains("MASKED"), "{dump}");
    }

    #[test]
    fn stale_vip_on_interface_is_not_local_ip() {
        let mut h = host();
        // A crash left the VIP behind as a secondary address of eth0.
        h.addrs
            .push(IfAddr::new("eth0", Ipv4Addr::new(192, 168, 3, 234), 24));
        let f = parse("enabled: true").resolve(&h).unwrap();
        assert_eq!(f.vip, Ipv4Addr::new(192, 168, 3, 234));
        assert_eq!(f.local_ip, Ipv4Addr::new(192, 168, 3, 35));
    }
}
