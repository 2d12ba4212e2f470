//! `-F URL` → one hop of the default chain, [`CHAIN_NAME`].
//!
//! Each `-F` adds a hop with one node, in order: the first `-F` is dialed from
//! this host, the second is reached through the first, and so on. The scheme
//! names the node's connector and dialer as GOST does: `http` (also no scheme),
//! `socks5`/`socks`, `socks4`, `relay`; `+tls` (or `tls` alone, connector http) for a TLS
//! dialer. `user:pass@` is the connector's auth. Every `-L` service uses the
//! chain unless it says `?ignoreChain=true`.
//!
//! `?interface=` on `-F` is the hop's `interface` (seed 001: "the interface
//! option on the command line corresponds to the option on the hop").

use crate::config::chain::{
    ChainConfig, ChainNodeConfig, ConnectorConfig, ConnectorType, DialerConfig, DialerTlsConfig,
    DialerType, HopConfig,
};
use crate::config::service::{Interface, Strategy};

use super::url::{Parts, kind, path, unknown, value};

/// The name of the chain the `-F` flags make (GOST's).
pub const CHAIN_NAME: &str = "chain-0";

/// The query keys of `-F`.
pub const OPTIONS: &[(&str, &str)] = &[
    ("interface", "the hop's network exit (first -F only)"),
    ("strategy", "the hop's selector.strategy"),
    ("maxFails", "the hop's selector.maxFails"),
    ("failTimeout", "the hop's selector.failTimeout"),
    ("connectTimeout", "connector.metadata.connectTimeout"),
    ("nodelay", "connector.metadata.nodelay (relay)"),
    ("handshakeTimeout", "dialer.metadata.handshakeTimeout (tls)"),
    ("secure", "dialer.tls.secure (tls; default true)"),
    ("serverName", "dialer.tls.serverName (tls)"),
    ("caFile", "dialer.tls.caFile (tls)"),
    ("certFile", "dialer.tls.certFile (tls client certificate)"),
    ("keyFile", "dialer.tls.keyFile (tls client certificate)"),
];

fn kinds(scheme: Option<&(String, Option<String>)>) -> Result<(ConnectorType, DialerType), String> {
    let connector = |name: &str| kind::<ConnectorType>("connector", name);
    let dialer = |name: &str| kind::<DialerType>("dialer", name);
    match scheme {
        None => Ok((ConnectorType::Http, DialerType::Tcp)),
        Some((one, None)) if one == "tls" => Ok((ConnectorType::Http, DialerType::Tls)),
        Some((one, None)) => Ok((connector(one)?, DialerType::Tcp)),
        Some((c, Some(d))) => Ok((connector(c)?, dialer(d)?)),
    }
}

/// Hop number `index` from one `-F` URL.
pub fn hop(parts: Parts, index: usize) -> Result<HopConfig, String> {
    let (connector, dialer) = kinds(parts.scheme.as_ref())?;
    if !parts.targets.is_empty() {
        return Err(format!(
            "a -F node is a proxy address: expected no /{}",
            parts.targets.join(",")
        ));
    }
    let mut hop = HopConfig {
        name: format!("hop-{index}"),
        interface: None,
        selector: Default::default(),
        resolver: None,
        hosts: None,
        nodes: vec![ChainNodeConfig {
            name: format!("node-{index}"),
            addr: parts.addr.clone(),
            interface: None,
            resolver: None,
            hosts: None,
            connector: ConnectorConfig {
                kind: connector,
                auth: parts.auth,
                metadata: Default::default(),
            },
            dialer: DialerConfig {
                kind: dialer,
                tls: None,
                metadata: Default::default(),
            },
        }],
    };
    for (k, v) in &parts.query {
        apply(&mut hop, k, v)?;
    }
    Ok(hop)
}

fn tls<'a>(n: &'a mut ChainNodeConfig, k: &str) -> Result<&'a mut DialerTlsConfig, String> {
    if n.dialer.kind != DialerType::Tls {
        return Err(format!(
            "{k} is for a tls dialer: expected a scheme like {}+tls://",
            n.connector.kind
        ));
    }
    Ok(n.dialer.tls.get_or_insert_with(Default::default))
}

fn apply(hop: &mut HopConfig, k: &str, v: &str) -> Result<(), String> {
    let node = &mut hop.nodes[0];
    match k {
        "interface" => {
            hop.interface = Some(Interface::parse(v).map_err(|e| format!("interface={e}"))?)
        }
        "strategy" => hop.selector.strategy = value::<Strategy>(k, v)?,
        "maxFails" => hop.selector.max_fails = value(k, v)?,
        "failTimeout" => hop.selector.fail_timeout = value(k, v)?,
        "connectTimeout" => node.connector.metadata.connect_timeout = Some(value(k, v)?),
        "nodelay" => node.connector.metadata.nodelay = Some(value(k, v)?),
        "handshakeTimeout" => {
            if node.dialer.kind != DialerType::Tls {
                return Err(format!(
                    "{k} is for a tls dialer: expected a scheme like {}+tls://",
                    node.connector.kind
                ));
            }
            node.dialer.metadata.handshake_timeout = Some(value(k, v)?)
        }
        "secure" => tls(node, k)?.secure = value(k, v)?,
        "serverName" => tls(node, k)?.server_name = Some(value(k, v)?),
        "caFile" => tls(node, k)?.ca_file = Some(path(k, v)?),
        "certFile" => tls(node, k)?.cert_file = Some(path(k, v)?),
        "keyFile" => tls(node, k)?.key_file = Some(path(k, v)?),
        _ => return Err(unknown(k, OPTIONS)),
    }
    Ok(())
}

/// The default chain of `hops` (in `-F` order).
pub fn chain(hops: Vec<HopConfig>) -> ChainConfig {
    ChainConfig {
        name: CHAIN_NAME.to_string(),
        hops,
    }
}
