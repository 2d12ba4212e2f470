//! `-O yaml` / `-O json`: the services the command line means, written as the
//! `gateway.yml` that gives the same services.
//!
//! The document is built with the importer's ordered YAML tree
//! ([`crate::import::yaml`]) so that keys come in the order of GOST's examples
//! (name, addr, handler, listener, forwarder) and options left at their default
//! are not written. It covers every field a `-L`/`-F` URL can set; the unit test
//! `every_url_round_trips` reads each printed document back through the config
//! parser and asserts the very same typed values, so an option added to the URL
//! grammar but not here fails that test.

use std::time::Duration;

use crate::config::Config;
use crate::config::auth::AuthConfig;
use crate::config::chain::{ChainConfig, ChainNodeConfig, DialerTlsConfig, default_secure};
use crate::config::duration::DurationStr;
use crate::config::service::{SelectorConfig, ServiceConfig};
use crate::import::yaml::{Mapping, Value};

/// The output formats of `-O`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

/// The document for `config` (services only: the command line sets nothing else).
pub fn render(config: &Config, format: Format) -> Result<String, String> {
    let doc = document(config);
    match format {
        Format::Yaml => crate::import::yaml::to_string(&doc).map_err(|e| e.to_string()),
        Format::Json => serde_json::to_string_pretty(&doc)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| e.to_string()),
    }
}

/// The same document as a JSON value: how the daemon keeps the services of
/// `-L`/`-F` "as written" beside those of the file (`GET /config`, `POST /config`).
pub fn to_json(config: &Config) -> serde_json::Value {
    serde_json::to_value(document(config)).unwrap_or(serde_json::Value::Null)
}

fn document(config: &Config) -> Value {
    let mut root = Mapping::new();
    root.insert(
        "services".into(),
        Value::Sequence(config.services.iter().map(service).collect()),
    );
    if !config.chains.is_empty() {
        root.insert(
            "chains".into(),
            Value::Sequence(config.chains.iter().map(chain).collect()),
        );
    }
    Value::Mapping(root)
}

/// Go-style text for a duration, exact: `90s`, `1500ms`, `10ns`.
pub fn duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(k.into(), v);
    }
    Value::Mapping(m)
}

/// Insert `key: d` unless `d` is 0 ("not set").
fn put_duration(m: &mut Mapping, key: &str, d: DurationStr) {
    if let Some(d) = d.get() {
        m.insert(key.into(), duration(d).into());
    }
}

fn service(s: &ServiceConfig) -> Value {
    let mut m = Mapping::new();
    m.insert("name".into(), s.name.clone().into());
    m.insert("addr".into(), s.addr.text.clone().into());
    if let Some(i) = &s.interface {
        m.insert("interface".into(), i.text.clone().into());
    }
    if let Some(md) = &s.metadata {
        let mut meta = Mapping::new();
        if let Some(i) = &md.interface {
            meta.insert("interface".into(), i.text.clone().into());
        }
        m.insert("metadata".into(), Value::Mapping(meta));
    }
    m.insert("handler".into(), handler(s));
    let mut listener = Mapping::new();
    listener.insert("type".into(), s.listener.kind.name().into());
    if let Some(t) = &s.listener.tls {
        let mut tls = Mapping::new();
        for (k, p) in [
            ("certFile", &t.cert_file),
            ("keyFile", &t.key_file),
            ("caFile", &t.ca_file),
        ] {
            if let Some(p) = p {
                tls.insert(k.into(), p.display().to_string().into());
            }
        }
        listener.insert("tls".into(), Value::Mapping(tls));
    }
    m.insert("listener".into(), Value::Mapping(listener));
    if let Some(f) = &s.forwarder {
        let nodes = f
            .nodes
            .iter()
            .map(|n| {
                map(vec![
                    ("name", n.name.clone().into()),
                    ("addr", n.addr.clone().into()),
                ])
            })
            .collect();
        let mut fwd = Mapping::new();
        fwd.insert("nodes".into(), Value::Sequence(nodes));
        if f.selector != SelectorConfig::default() {
            fwd.insert("selector".into(), selector(&f.selector));
        }
        m.insert("forwarder".into(), Value::Mapping(fwd));
    }
    if s.max_connections != 0 {
        m.insert("max_connections".into(), s.max_connections.into());
    }
    put_duration(&mut m, "client_idle_timeout", s.client_idle_timeout);
    put_duration(&mut m, "backend_idle_timeout", s.backend_idle_timeout);
    put_duration(
        &mut m,
        "backend_connection_timeout",
        s.backend_connection_timeout,
    );
    if let Some(u) = &s.udp {
        let mut udp = Mapping::new();
        for (k, n) in [
            ("max_requests", u.max_requests),
            ("max_responses", u.max_responses),
        ] {
            if n != 0 {
                udp.insert(k.into(), Value::Number(n.try_into().unwrap_or(i64::MAX)));
            }
        }
        m.insert("udp".into(), Value::Mapping(udp));
    }
    Value::Mapping(m)
}

fn handler(s: &ServiceConfig) -> Value {
    let h = &s.handler;
    let mut m = Mapping::new();
    m.insert("type".into(), h.kind.name().into());
    if let Some(a) = &h.auth {
        m.insert("auth".into(), auth(a));
    }
    if let Some(c) = &h.chain {
        m.insert("chain".into(), c.clone().into());
    }
    if let Some(md) = &h.metadata {
        let mut meta = Mapping::new();
        if let Some(d) = md.read_timeout {
            meta.insert("readTimeout".into(), duration(d.0).into());
        }
        if let Some(d) = md.response_timeout {
            meta.insert("responseTimeout".into(), duration(d.0).into());
        }
        if let Some(u) = md.udp {
            meta.insert("udp".into(), u.into());
        }
        if let Some(n) = md.udp_buffer_size {
            meta.insert(
                "udpBufferSize".into(),
                Value::Number(n.try_into().unwrap_or(i64::MAX)),
            );
        }
        for (k, v) in [("nodelay", md.nodelay), ("bind", md.bind)] {
            if let Some(v) = v {
                meta.insert(k.into(), v.into());
            }
        }
        if let Some(hd) = &md.header {
            let mut header = Mapping::new();
            for (k, v) in hd {
                header.insert(k.clone().into(), v.clone().into());
            }
            meta.insert("header".into(), Value::Mapping(header));
        }
        m.insert("metadata".into(), Value::Mapping(meta));
    }
    Value::Mapping(m)
}

fn selector(s: &SelectorConfig) -> Value {
    // serde's `rename_all = "lowercase"` is the variant name lowercased.
    let strategy = format!("{:?}", s.strategy).to_lowercase();
    map(vec![
        ("strategy", strategy.into()),
        ("maxFails", s.max_fails.into()),
        ("failTimeout", duration(s.fail_timeout.0).into()),
    ])
}

fn auth(a: &AuthConfig) -> Value {
    map(vec![
        ("username", a.username.clone().into()),
        ("password", a.password.expose().into()),
    ])
}

fn chain(c: &ChainConfig) -> Value {
    let hops = c
        .hops
        .iter()
        .map(|h| {
            let mut m = Mapping::new();
            m.insert("name".into(), h.name.clone().into());
            if let Some(i) = &h.interface {
                m.insert("interface".into(), i.text.clone().into());
            }
            if h.selector != SelectorConfig::default() {
                m.insert("selector".into(), selector(&h.selector));
            }
            m.insert(
                "nodes".into(),
                Value::Sequence(h.nodes.iter().map(node).collect()),
            );
            Value::Mapping(m)
        })
        .collect();
    map(vec![
        ("name", c.name.clone().into()),
        ("hops", Value::Sequence(hops)),
    ])
}

fn node(n: &ChainNodeConfig) -> Value {
    let mut m = Mapping::new();
    m.insert("name".into(), n.name.clone().into());
    m.insert("addr".into(), n.addr.clone().into());
    if let Some(i) = &n.interface {
        m.insert("interface".into(), i.text.clone().into());
    }
    let mut connector = Mapping::new();
    connector.insert("type".into(), n.connector.kind.name().into());
    if let Some(a) = &n.connector.auth {
        connector.insert("auth".into(), auth(a));
    }
    let mut cmeta = Mapping::new();
    if let Some(d) = n.connector.metadata.connect_timeout {
        cmeta.insert("connectTimeout".into(), duration(d.0).into());
    }
    if let Some(v) = n.connector.metadata.nodelay {
        cmeta.insert("nodelay".into(), v.into());
    }
    if !cmeta.is_empty() {
        connector.insert("metadata".into(), Value::Mapping(cmeta));
    }
    m.insert("connector".into(), Value::Mapping(connector));
    let mut dialer = Mapping::new();
    dialer.insert("type".into(), n.dialer.kind.name().into());
    if let Some(t) = &n.dialer.tls {
        dialer.insert("tls".into(), dialer_tls(t));
    }
    if let Some(d) = n.dialer.metadata.handshake_timeout {
        dialer.insert(
            "metadata".into(),
            map(vec![("handshakeTimeout", duration(d.0).into())]),
        );
    }
    m.insert("dialer".into(), Value::Mapping(dialer));
    Value::Mapping(m)
}

fn dialer_tls(t: &DialerTlsConfig) -> Value {
    let mut m = Mapping::new();
    if t.secure != default_secure() {
        m.insert("secure".into(), t.secure.into());
    }
    if let Some(n) = &t.server_name {
        m.insert("serverName".into(), n.clone().into());
    }
    for (k, p) in [
        ("caFile", &t.ca_file),
        ("certFile", &t.cert_file),
        ("keyFile", &t.key_file),
    ] {
        if let Some(p) = p {
            m.insert(k.into(), p.display().to_string().into());
        }
    }
    Value::Mapping(m)
}
