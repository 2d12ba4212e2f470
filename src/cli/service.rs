//! `-L URL` → a [`ServiceConfig`], the value `services:` in a file would give.
//!
//! The scheme names the handler and the listener as GOST does:
//!
//! | scheme            | handler | listener |
//! |-------------------|---------|----------|
//! | (none), `auto`    | auto    | tcp      |
//! | `http`            | http    | tcp      |
//! | `socks5`, `socks` | socks5  | tcp      |
//! | `socks4`          | socks4  | tcp      |
//! | `tcp`             | tcp     | tcp      |
//! | `udp`             | udp     | udp      |
//! | `relay`           | relay   | tcp      |
//! | `tls`             | auto    | tls      |
//! | `H+L`             | H       | L        |
//!
//! The path is the target list of a port forwarder (`tcp://:80/10.0.0.5:80,10.0.0.6:80`):
//! one forwarder node per target; a `relay` service with targets relays to them
//! (GOST's `relay://:8420/:53`). Query keys land where the same option sits in
//! a file; [`OPTIONS`] lists them.

use crate::config::duration::DurationStr;
use crate::config::service::{
    ForwarderConfig, HandlerConfig, HandlerMetadata, HandlerType, Interface, ListenAddr,
    ListenerConfig, ListenerType, NodeConfig, ServiceConfig, Strategy, UdpConfig, default_weight,
};
use crate::config::tls::TlsConfig;

use super::url::{Parts, kind, path, unknown, value};
use crate::config::service::SelectorConfig;

/// The query keys of `-L`, with where they go (for `-h`, errors and docs).
pub const OPTIONS: &[(&str, &str)] = &[
    ("name", "service name (default service-N)"),
    (
        "interface",
        "network exit: interface name, address, or a list",
    ),
    ("ignoreChain", "true: do not use the -F chain"),
    (
        "strategy",
        "forwarder.selector.strategy (round, rand, fifo, leastconn, ...)",
    ),
    ("maxFails", "forwarder.selector.maxFails"),
    ("failTimeout", "forwarder.selector.failTimeout"),
    ("readTimeout", "handler.metadata.readTimeout"),
    ("responseTimeout", "handler.metadata.responseTimeout"),
    ("udp", "handler.metadata.udp (socks5 UDP ASSOCIATE)"),
    ("udpBufferSize", "handler.metadata.udpBufferSize"),
    ("nodelay", "handler.metadata.nodelay (relay)"),
    ("bind", "handler.metadata.bind (relay; only false)"),
    ("certFile", "listener.tls.certFile"),
    ("keyFile", "listener.tls.keyFile"),
    (
        "caFile",
        "listener.tls.caFile (require client certificates)",
    ),
    ("max_connections", "gobetween: most clients at once"),
    ("client_idle_timeout", "gobetween: client idle timeout"),
    ("backend_idle_timeout", "gobetween: backend idle timeout"),
    ("backend_connection_timeout", "gobetween: connect timeout"),
    ("max_requests", "gobetween udp.max_requests"),
    ("max_responses", "gobetween udp.max_responses"),
];

/// A service from `-L`, and whether it refuses the default chain.
#[derive(Debug, Clone, PartialEq)]
pub struct CliService {
    pub service: ServiceConfig,
    pub ignore_chain: bool,
}

/// GOST's idle limit of a UDP session when the command line sets none (its
/// `udp` listener's `ttl`), so that `-L udp://:53/10.0.0.1:53` runs as is.
pub fn default_udp_idle() -> DurationStr {
    DurationStr(std::time::Duration::from_secs(5))
}

/// The handler and listener a scheme names.
fn kinds(scheme: Option<&(String, Option<String>)>) -> Result<(HandlerType, ListenerType), String> {
    let handler = |name: &str| kind::<HandlerType>("handler", name);
    let listener = |name: &str| kind::<ListenerType>("listener", name);
    match scheme {
        None => Ok((HandlerType::Auto, ListenerType::Tcp)),
        Some((one, None)) if one == "tls" => Ok((HandlerType::Auto, ListenerType::Tls)),
        Some((one, None)) => {
            let h = handler(one)?;
            let l = if h == HandlerType::Udp {
                ListenerType::Udp
            } else {
                ListenerType::Tcp
            };
            Ok((h, l))
        }
        Some((h, Some(l))) => Ok((handler(h)?, listener(l)?)),
    }
}

/// Build service number `index` (named `service-<index>` unless `?name=`).
pub fn service(parts: Parts, index: usize) -> Result<CliService, String> {
    let (kind, listener_kind) = kinds(parts.scheme.as_ref())?;
    let addr = ListenAddr::parse(&parts.addr)?;
    if kind.forwards() && parts.targets.is_empty() {
        return Err(format!(
            "a {kind} service forwards to targets: expected {kind}://{}/host:port[,host:port...]",
            parts.addr
        ));
    }
    if !kind.forwards() && kind != HandlerType::Relay && !parts.targets.is_empty() {
        return Err(format!(
            "targets are for tcp and udp port forwarding; the {kind} handler finds its target in each request: expected no /{}",
            parts.targets.join(",")
        ));
    }
    let forwarder = (!parts.targets.is_empty()).then(|| ForwarderConfig {
        nodes: parts
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| NodeConfig {
                name: format!("target-{i}"),
                addr: t.clone(),
                weight: default_weight(),
                priority: 0,
            })
            .collect(),
        selector: Default::default(),
        healthcheck: None,
        discovery: None,
        tls: None,
    });
    let mut s = ServiceConfig {
        name: format!("service-{index}"),
        addr,
        interface: None,
        metadata: None,
        handler: HandlerConfig {
            kind,
            auth: parts.auth,
            chain: None,
            metadata: None,
        },
        listener: ListenerConfig {
            kind: listener_kind,
            tls: None,
        },
        forwarder,
        max_connections: 0,
        client_idle_timeout: DurationStr::default(),
        backend_idle_timeout: DurationStr::default(),
        backend_connection_timeout: DurationStr::default(),
        access: None,
        proxy_protocol: None,
        udp: None,
        pre_up: Vec::new(),
        post_up: Vec::new(),
        pre_down: Vec::new(),
        post_down: Vec::new(),
        hook_timeout: DurationStr::default(),
        chain: None,
        resolver: None,
        hosts: None,
    };
    let mut ignore_chain = false;
    for (k, v) in &parts.query {
        apply(&mut s, &mut ignore_chain, k, v)?;
    }
    if s.is_udp() {
        let u = s.udp.clone().unwrap_or_default();
        if u.max_requests == 0
            && u.max_responses == 0
            && s.client_idle_timeout.get().is_none()
            && s.backend_idle_timeout.get().is_none()
        {
            s.client_idle_timeout = default_udp_idle();
        }
    }
    Ok(CliService {
        service: s,
        ignore_chain,
    })
}

/// One query key.
fn apply(s: &mut ServiceConfig, ignore_chain: &mut bool, k: &str, v: &str) -> Result<(), String> {
    match k {
        "name" => {
            if v.trim().is_empty() {
                return Err("name: expected a non-empty name".into());
            }
            s.name = v.to_string();
        }
        "interface" => {
            s.interface = Some(Interface::parse(v).map_err(|e| format!("interface={e}"))?)
        }
        "ignoreChain" => *ignore_chain = value(k, v)?,
        "strategy" => selector(s, k)?.strategy = value::<Strategy>(k, v)?,
        "maxFails" => selector(s, k)?.max_fails = value(k, v)?,
        "failTimeout" => selector(s, k)?.fail_timeout = value(k, v)?,
        "readTimeout" => meta(s).read_timeout = Some(value(k, v)?),
        "responseTimeout" => meta(s).response_timeout = Some(value(k, v)?),
        "udp" => meta(s).udp = Some(value(k, v)?),
        "udpBufferSize" => meta(s).udp_buffer_size = Some(value(k, v)?),
        "nodelay" => meta(s).nodelay = Some(value(k, v)?),
        "bind" => meta(s).bind = Some(value(k, v)?),
        "certFile" => tls(s, k)?.cert_file = Some(path(k, v)?),
        "keyFile" => tls(s, k)?.key_file = Some(path(k, v)?),
        "caFile" => tls(s, k)?.ca_file = Some(path(k, v)?),
        "max_connections" => s.max_connections = value(k, v)?,
        "client_idle_timeout" => s.client_idle_timeout = value(k, v)?,
        "backend_idle_timeout" => s.backend_idle_timeout = value(k, v)?,
        "backend_connection_timeout" => s.backend_connection_timeout = value(k, v)?,
        "max_requests" => udp(s).max_requests = value(k, v)?,
        "max_responses" => udp(s).max_responses = value(k, v)?,
        _ => return Err(unknown(k, OPTIONS)),
    }
    Ok(())
}

fn selector<'a>(s: &'a mut ServiceConfig, k: &str) -> Result<&'a mut SelectorConfig, String> {
    match s.forwarder.as_mut() {
        Some(f) => Ok(&mut f.selector),
        None => Err(format!(
            "{k} chooses among the targets of a port forwarder: expected tcp://.../host:port,host:port?{k}=..."
        )),
    }
}

fn meta(s: &mut ServiceConfig) -> &mut HandlerMetadata {
    s.handler.metadata.get_or_insert_with(Default::default)
}

fn tls<'a>(s: &'a mut ServiceConfig, k: &str) -> Result<&'a mut TlsConfig, String> {
    if s.listener.kind != ListenerType::Tls {
        return Err(format!(
            "{k} is for a tls listener: expected a scheme like {}+tls://",
            s.handler.kind
        ));
    }
    Ok(s.listener.tls.get_or_insert_with(Default::default))
}

fn udp(s: &mut ServiceConfig) -> &mut UdpConfig {
    s.udp.get_or_insert_with(Default::default)
}
