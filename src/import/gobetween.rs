//! gobetween's TOML → `gateway.yml`.
//!
//! The file is parsed once with the `toml` crate's span-keeping parser, so
//! every key read is known with its line. Each table is walked key by key:
//! a key is either translated to its place in the service model (the mapping
//! table in docs/configuration.md, "gobetween options and where they are
//! here") or reported as an [`Item`] that could not be carried over, with
//! its line and why. Nothing is dropped silently, so "no items" means the
//! translation is complete.
//!
//! Where gobetween's default differs from ours, the default is written out:
//! `balance` defaults to `weight` there (round robin here), and TLS session
//! tickets are off unless `session_tickets = true`.

use std::fmt;
use std::ops::Range;

use super::yaml::{self, Mapping, Value};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

/// Something in the gobetween file that has no (exact) counterpart here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// 1-based line of the key in the TOML file.
    pub line: usize,
    /// Dotted TOML path, e.g. `servers.web.discovery.kind`.
    pub key: String,
    pub why: String,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.key, self.why)
    }
}

/// The result of a translation.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The equivalent gateway.yml.
    pub yaml: String,
    /// Options not carried over: the translation is complete when empty.
    pub unmapped: Vec<Item>,
    /// Options dropped because they have no effect (e.g. Go ignores them too).
    pub notes: Vec<Item>,
}

impl Translation {
    pub fn complete(&self) -> bool {
        self.unmapped.is_empty()
    }
}

/// The file is not TOML, or not shaped like a gobetween config at all.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ImportError {
    pub line: usize,
    pub message: String,
}

type Entry<'a, 'i> = (&'a str, Range<usize>, &'a Spanned<DeValue<'i>>);

struct Cx<'t> {
    text: &'t str,
    unmapped: Vec<Item>,
    notes: Vec<Item>,
}

impl Cx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].matches('\n').count() + 1
    }

    fn item(&self, span: &Range<usize>, key: &str, why: impl Into<String>) -> Item {
        Item {
            line: self.line(span),
            key: key.to_string(),
            why: why.into(),
        }
    }

    /// Not carried over: makes the translation incomplete.
    fn skip(&mut self, span: &Range<usize>, key: &str, why: impl Into<String>) {
        let item = self.item(span, key, why);
        self.unmapped.push(item);
    }

    /// Dropped because it has no effect: reported, translation still complete.
    fn note(&mut self, span: &Range<usize>, key: &str, why: impl Into<String>) {
        let item = self.item(span, key, why);
        self.notes.push(item);
    }

    /// A scalar or array of scalars as YAML; anything else is reported.
    fn scalar(&mut self, key: &str, span: &Range<usize>, v: &DeValue<'_>) -> Option<Value> {
        let out = match v {
            DeValue::String(s) => Value::String(s.to_string()),
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Integer(i) => {
                let digits = i.as_str().replace('_', "");
                match i64::from_str_radix(&digits, i.radix()) {
                    Ok(n) => Value::Number(n),
                    Err(_) => {
                        self.skip(span, key, "integer out of range");
                        return None;
                    }
                }
            }
            DeValue::Array(a) => {
                let mut seq = Vec::new();
                for e in a.iter() {
                    seq.push(self.scalar(key, &e.span(), e.get_ref())?);
                }
                Value::Sequence(seq)
            }
            _ => {
                self.skip(
                    span,
                    key,
                    format!("expected a string, number or list, got a {}", v.type_str()),
                );
                return None;
            }
        };
        Some(out)
    }

    fn string(&mut self, key: &str, span: &Range<usize>, v: &DeValue<'_>) -> Option<String> {
        match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.skip(
                    span,
                    key,
                    format!("expected a string, got a {}", v.type_str()),
                );
                None
            }
        }
    }

    fn table<'a, 'i>(
        &mut self,
        key: &str,
        span: &Range<usize>,
        v: &'a DeValue<'i>,
    ) -> Option<&'a DeTable<'i>> {
        let t = v.as_table();
        if t.is_none() {
            self.skip(
                span,
                key,
                format!("expected a table, got a {}", v.type_str()),
            );
        }
        t
    }

    /// Copy the keys of `t` whose names are in `names` (gobetween → ours),
    /// reporting the others.
    fn copy(&mut self, path: &str, t: &DeTable<'_>, names: &[(&str, &str)]) -> Mapping {
        let mut out = Mapping::new();
        for (k, span, v) in entries(t) {
            let key = format!("{path}.{k}");
            match names.iter().find(|(g, _)| *g == k) {
                Some((_, ours)) => {
                    if let Some(val) = self.scalar(&key, &span, v.get_ref()) {
                        out.insert(Value::from(*ours), val);
                    }
                }
                None => self.skip(&span, &key, "not a gobetween option known to this import"),
            }
        }
        out
    }
}

fn entries<'a, 'i>(t: &'a DeTable<'i>) -> impl Iterator<Item = Entry<'a, 'i>> {
    t.iter()
        .map(|(k, v): (&'a Spanned<DeString<'i>>, _)| (k.get_ref().as_ref(), k.span(), v))
}

/// Translate gobetween TOML text into gateway.yml text; `source` names the file
/// in the header comment.
pub fn translate(text: &str, source: &str) -> Result<Translation, ImportError> {
    let doc = DeTable::parse(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        ImportError {
            line,
            message: format!("not valid TOML: {}", e.message()),
        }
    })?;
    let mut cx = Cx {
        text,
        unmapped: Vec::new(),
        notes: Vec::new(),
    };
    let root = doc.get_ref();
    let defaults = root
        .iter()
        .find(|(k, _)| k.get_ref() == "defaults")
        .and_then(|(_, v)| v.get_ref().as_table());
    let mut services = Vec::new();
    let mut acme = None;
    for (k, span, v) in entries(root) {
        match k {
            "servers" => {
                let Some(servers) = cx.table(k, &span, v.get_ref()) else {
                    continue;
                };
                for (name, sspan, s) in entries(servers) {
                    let path = format!("servers.{name}");
                    if let Some(st) = cx.table(&path, &sspan, s.get_ref()) {
                        services.push(Value::Mapping(server(&mut cx, name, st, defaults)));
                    }
                }
            }
            "defaults" => {
                for (d, dspan, _) in entries(defaults.unwrap_or(&DeTable::default())) {
                    if !CONNECTION_OPTIONS.contains(&d) {
                        cx.skip(&dspan, &format!("defaults.{d}"), "not a gobetween default");
                    }
                }
            }
            "logging" => cx.skip(
                &span,
                k,
                "logs go to stderr (journald under systemd); the level is `-log-level` or RUST_LOG",
            ),
            "api" => cx.skip(&span, k, "this build has no REST API"),
            "metrics" => cx.skip(&span, k, "this build has no metrics endpoint"),
            "profiler" => cx.skip(&span, k, "this build has no profiler endpoint"),
            "acme" => {
                if let Some(at) = cx.table(k, &span, v.get_ref()) {
                    acme = Some(acme_section(&mut cx, at));
                }
            }
            _ => cx.skip(&span, k, "not a gobetween section known to this import"),
        }
    }
    let mut top = Mapping::new();
    if let Some(a) = acme {
        top.insert("acme".into(), Value::Mapping(a));
    }
    top.insert("services".into(), Value::Sequence(services));
    let body = yaml::to_string(&Value::Mapping(top)).map_err(|e| ImportError {
        line: 1,
        message: format!("cannot write YAML: {e}"),
    })?;
    let mut yaml =
        format!("# gateway.yml translated from {source} by `gateway import gobetween`.\n");
    if !cx.unmapped.is_empty() {
        yaml.push_str(&format!(
            "# Incomplete: {} option(s) not carried over (listed on stderr).\n",
            cx.unmapped.len()
        ));
    }
    yaml.push_str(&body);
    Ok(Translation {
        yaml,
        unmapped: cx.unmapped,
        notes: cx.notes,
    })
}

/// gobetween's `[defaults]`, which also appear per server.
const CONNECTION_OPTIONS: &[&str] = &[
    "max_connections",
    "client_idle_timeout",
    "backend_idle_timeout",
    "backend_connection_timeout",
];

/// Strategies with the same meaning here (gobetween `balance` names).
const STRATEGIES: &[&str] = &[
    "weight",
    "roundrobin",
    "leastconn",
    "leastbandwidth",
    "iphash",
    "iphash1",
];

fn server(cx: &mut Cx<'_>, name: &str, t: &DeTable<'_>, defaults: Option<&DeTable<'_>>) -> Mapping {
    let path = format!("servers.{name}");
    let mut protocol = "tcp".to_string();
    let mut addr = None;
    let mut strategy = "weight".to_string();
    let mut service_opts = Mapping::new();
    let mut listener_tls = None;
    let mut forwarder = Mapping::new();
    let mut nodes = Vec::new();
    // [defaults] first, so the server's own values override them.
    if let Some(d) = defaults {
        for (k, span, v) in entries(d) {
            if CONNECTION_OPTIONS.contains(&k)
                && let Some(val) = cx.scalar(&format!("defaults.{k}"), &span, v.get_ref())
            {
                service_opts.insert(k.into(), val);
            }
        }
    }
    for (k, span, v) in entries(t) {
        let key = format!("{path}.{k}");
        let v = v.get_ref();
        match k {
            "bind" => addr = cx.string(&key, &span, v).map(|b| bind(cx, &key, &span, b)),
            "protocol" => match cx.string(&key, &span, v).as_deref() {
                Some(p @ ("tcp" | "udp" | "tls")) => protocol = p.to_string(),
                Some(p) => cx.skip(&span, &key, format!("{p:?}: expected tcp, udp or tls")),
                None => {}
            },
            "balance" => {
                // A string (gobetween) or a table with `kind` (later forks).
                let kind = match v.as_table() {
                    Some(bt) => {
                        let mut kind = None;
                        for (bk, bspan, bv) in entries(bt) {
                            let bkey = format!("{key}.{bk}");
                            if bk == "kind" {
                                kind = cx.string(&bkey, &bspan, bv.get_ref());
                            } else {
                                cx.skip(&bspan, &bkey, "balancer tuning not offered");
                            }
                        }
                        kind
                    }
                    None => cx.string(&key, &span, v),
                };
                match kind {
                    Some(b) if STRATEGIES.contains(&b.as_str()) => strategy = b,
                    Some(b) => cx.skip(
                        &span,
                        &key,
                        format!(
                            "{b:?} is not offered; expected one of {}",
                            STRATEGIES.join(", ")
                        ),
                    ),
                    None => {}
                }
            }
            _ if CONNECTION_OPTIONS.contains(&k) => {
                if let Some(val) = cx.scalar(&key, &span, v) {
                    service_opts.insert(k.into(), val);
                }
            }
            "access" => {
                if let Some(at) = cx.table(&key, &span, v) {
                    let m = cx.copy(&key, at, &[("default", "default"), ("rules", "rules")]);
                    service_opts.insert("access".into(), Value::Mapping(m));
                }
            }
            "proxy_protocol" => {
                if let Some(pt) = cx.table(&key, &span, v) {
                    let m = cx.copy(&key, pt, &[("version", "version")]);
                    service_opts.insert("proxy_protocol".into(), Value::Mapping(m));
                }
            }
            "udp" => {
                if let Some(ut) = cx.table(&key, &span, v) {
                    let names = [
                        ("max_requests", "max_requests"),
                        ("max_responses", "max_responses"),
                        ("transparent", "transparent"),
                    ];
                    let m = cx.copy(&key, ut, &names);
                    service_opts.insert("udp".into(), Value::Mapping(m));
                }
            }
            "tls" => {
                if let Some(tt) = cx.table(&key, &span, v) {
                    listener_tls = Some((tls(cx, &key, tt, false), span.clone()));
                }
            }
            "backends_tls" => {
                if let Some(tt) = cx.table(&key, &span, v) {
                    forwarder.insert("tls".into(), Value::Mapping(tls(cx, &key, tt, true)));
                }
            }
            "discovery" => {
                if let Some(dt) = cx.table(&key, &span, v)
                    && let Some(d) = discovery(cx, &key, dt, &mut nodes)
                {
                    forwarder.insert("discovery".into(), Value::Mapping(d));
                }
            }
            "healthcheck" => {
                if let Some(ht) = cx.table(&key, &span, v) {
                    let m = cx.copy(&key, ht, HEALTHCHECK);
                    forwarder.insert("healthcheck".into(), Value::Mapping(m));
                }
            }
            "sni" => cx.skip(
                &span,
                &key,
                "SNI-based backend selection is not offered (nodes are chosen by the selector)",
            ),
            _ => cx.skip(
                &span,
                &key,
                "not a gobetween server option known to this import",
            ),
        }
    }

    let mut svc = Mapping::new();
    svc.insert("name".into(), name.into());
    svc.insert("addr".into(), addr.unwrap_or_default().into());
    let (listener_type, handler_type) = match protocol.as_str() {
        "udp" => ("udp", "udp"),
        "tls" => ("tls", "tcp"),
        _ => ("tcp", "tcp"),
    };
    let mut listener = Mapping::new();
    listener.insert("type".into(), listener_type.into());
    if let Some((t, span)) = listener_tls {
        if protocol == "tls" {
            listener.insert("tls".into(), Value::Mapping(t));
        } else {
            cx.skip(
                &span,
                &format!("{path}.tls"),
                "a [tls] section without protocol = \"tls\"",
            );
        }
    }
    let mut handler = Mapping::new();
    handler.insert("type".into(), handler_type.into());
    svc.insert("listener".into(), Value::Mapping(listener));
    svc.insert("handler".into(), Value::Mapping(handler));
    let mut fwd = Mapping::new();
    fwd.insert("nodes".into(), Value::Sequence(nodes));
    let mut selector = Mapping::new();
    selector.insert("strategy".into(), strategy.into());
    fwd.insert("selector".into(), Value::Mapping(selector));
    for (k, v) in forwarder {
        fwd.insert(k, v);
    }
    svc.insert("forwarder".into(), Value::Mapping(fwd));
    for (k, v) in service_opts {
        svc.insert(k, v);
    }
    svc
}

/// `localhost:80` → `127.0.0.1:80` (a listener binds an address, not a name).
fn bind(cx: &mut Cx<'_>, key: &str, span: &Range<usize>, b: String) -> String {
    let Some((host, port)) = b.rsplit_once(':') else {
        cx.skip(span, key, format!("{b:?}: expected host:port"));
        return b;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return format!("127.0.0.1:{port}");
    }
    if !host.is_empty() && host.parse::<std::net::IpAddr>().is_err() {
        cx.skip(
            span,
            key,
            format!("{host:?} is a host name: expected an IP address (or \":{port}\" for all)"),
        );
    }
    b
}

const HEALTHCHECK: &[(&str, &str)] = &[
    ("kind", "kind"),
    ("interval", "interval"),
    ("timeout", "timeout"),
    ("fails", "fails"),
    ("passes", "passes"),
    ("probe_protocol", "probe_protocol"),
    ("probe_send", "probe_send"),
    ("probe_recv", "probe_recv"),
    ("probe_recv_len", "probe_recv_len"),
    ("probe_strategy", "probe_strategy"),
    ("exec_command", "exec_command"),
    (
        "exec_expected_positive_output",
        "exec_expected_positive_output",
    ),
    (
        "exec_expected_negative_output",
        "exec_expected_negative_output",
    ),
];

/// `[tls]` (listener) or `[backends_tls]` (`backend: true`).
fn tls(cx: &mut Cx<'_>, path: &str, t: &DeTable<'_>, backend: bool) -> Mapping {
    let mut out = Mapping::new();
    let mut tickets = false;
    let mut secure = true;
    for (k, span, v) in entries(t) {
        let key = format!("{path}.{k}");
        let v = v.get_ref();
        let ours = match k {
            "cert_path" => "certFile",
            "key_path" => "keyFile",
            "root_ca_cert_path" if backend => "caFile",
            "min_version" | "max_version" | "ciphers" => k,
            "session_tickets" => {
                tickets = v.as_bool().unwrap_or(false);
                continue;
            }
            "prefer_server_ciphers" if backend => {
                cx.note(
                    &span,
                    &key,
                    "dropped: a client does not choose the suite (Go ignores it too)",
                );
                continue;
            }
            "prefer_server_ciphers" => {
                if v.as_bool() == Some(true) {
                    out.insert(k.into(), true.into());
                }
                continue;
            }
            "ignore_verify" if backend => {
                secure = v.as_bool() != Some(true);
                continue;
            }
            "acme_hosts" if !backend => {
                // gobetween: either acme_hosts or cert_path/key_path.
                if v.as_array().is_none_or(|a| a.is_empty()) {
                    continue;
                }
                k
            }
            _ => {
                cx.skip(
                    &span,
                    &key,
                    "not a gobetween TLS option known to this import",
                );
                continue;
            }
        };
        if k == "ciphers" && v.as_array().is_some_and(|a| a.is_empty()) {
            continue; // empty = all, our default too
        }
        if let Some(val) = cx.scalar(&key, &span, v) {
            out.insert(ours.into(), val);
        }
    }
    if backend {
        out.insert("secure".into(), secure.into());
    }
    // gobetween's session_tickets defaults to false (tickets disabled).
    out.insert("session_tickets".into(), tickets.into());
    out
}

/// `[acme]`: gobetween's three options, same names (`sni` is the old tls-alpn).
fn acme_section(cx: &mut Cx<'_>, t: &DeTable<'_>) -> Mapping {
    let mut out = Mapping::new();
    for (k, span, v) in entries(t) {
        let key = format!("acme.{k}");
        match k {
            "challenge" => match cx.string(&key, &span, v.get_ref()).as_deref() {
                Some("http") => {
                    out.insert(k.into(), "http".into());
                }
                // gobetween's `sni` is tls-alpn-01 under its old name.
                Some("sni" | "tls-alpn") => {
                    out.insert(k.into(), "tls-alpn".into());
                }
                Some(c) => cx.skip(
                    &span,
                    &key,
                    format!("{c:?}: only the http and tls-alpn (sni) challenges are implemented by this build"),
                ),
                None => {}
            },
            "http_bind" | "cache_dir" => {
                if let Some(val) = cx.scalar(&key, &span, v.get_ref()) {
                    out.insert(k.into(), val);
                }
            }
            _ => cx.skip(&span, &key, "not a gobetween acme option"),
        }
    }
    out
}

/// `[discovery]`: static lists become nodes; srv and exec keep their names.
fn discovery(
    cx: &mut Cx<'_>,
    path: &str,
    t: &DeTable<'_>,
    nodes: &mut Vec<Value>,
) -> Option<Mapping> {
    let kind = t
        .iter()
        .find(|(k, _)| k.get_ref() == "kind")
        .map(|(k, v)| (k.span(), v.get_ref().as_str().unwrap_or("").to_string()));
    let Some((kspan, kind)) = kind else {
        let span = t.iter().next().map(|(k, _)| k.span()).unwrap_or(0..0);
        cx.skip(
            &span,
            path,
            "a discovery without kind: expected kind = \"static\", ...",
        );
        return None;
    };
    let common: &[(&str, &str)] = &[
        ("kind", "kind"),
        ("failpolicy", "failpolicy"),
        ("interval", "interval"),
        ("timeout", "timeout"),
    ];
    match kind.as_str() {
        "static" => {
            for (k, span, v) in entries(t) {
                let key = format!("{path}.{k}");
                match k {
                    "kind" => {}
                    "static_list" => match v.get_ref().as_array() {
                        Some(list) => {
                            for e in list.iter() {
                                if let Some(s) = cx.string(&key, &e.span(), e.get_ref())
                                    && let Some(n) = static_node(cx, &key, &e.span(), &s)
                                {
                                    nodes.push(Value::Mapping(n));
                                }
                            }
                        }
                        None => cx.skip(&span, &key, "expected a list of \"host:port weight=N\""),
                    },
                    "failpolicy" | "interval" | "timeout" => {
                        cx.note(&span, &key, "dropped: a static list is never refreshed")
                    }
                    _ => cx.skip(&span, &key, "not an option of static discovery"),
                }
            }
            None
        }
        "srv" => {
            let names = [
                common,
                &[
                    ("srv_lookup_server", "srv_lookup_server"),
                    ("srv_lookup_pattern", "srv_lookup_pattern"),
                    ("srv_dns_protocol", "srv_dns_protocol"),
                ],
            ]
            .concat();
            Some(cx.copy(path, t, &names))
        }
        "exec" => {
            let names = [common, &[("exec_command", "exec_command")]].concat();
            Some(cx.copy(path, t, &names))
        }
        "json" | "plaintext" => {
            cx.skip(
                &kspan,
                &format!("{path}.kind"),
                format!(
                    "{kind} discovery over HTTP is not offered: serve the list as a file \
                     (kind: file, file_path; JSON [{{\"addr\": \"h:p\", \"weight\": N}}] or lines \
                     \"host:port weight=N\") or print it from a command (kind: exec, e.g. a curl \
                     and jq pipeline in a script)"
                ),
            );
            None
        }
        other => {
            cx.skip(
                &kspan,
                &format!("{path}.kind"),
                format!(
                    "{other:?} discovery is not offered (static, srv and exec are; Consul is \
                     reachable through srv)"
                ),
            );
            None
        }
    }
}

/// `"host:port weight=N priority=N sni=name"`.
fn static_node(cx: &mut Cx<'_>, key: &str, span: &Range<usize>, s: &str) -> Option<Mapping> {
    let mut parts = s.split_whitespace();
    let addr = parts.next()?;
    let mut node = Mapping::new();
    node.insert("addr".into(), addr.into());
    for p in parts {
        match p.split_once('=') {
            Some((k @ ("weight" | "priority"), n)) => match n.parse::<u32>() {
                Ok(n) => {
                    node.insert(k.into(), n.into());
                }
                Err(_) => cx.skip(span, key, format!("{p:?}: expected a number")),
            },
            Some(("sni", _)) => cx.skip(span, key, format!("{p:?}: per-node SNI is not offered")),
            _ => cx.skip(span, key, format!("{p:?}: expected weight=N or priority=N")),
        }
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_unknown_keys() {
        let t = translate(
            "[servers.a]\nbind = \"localhost:3000\"\nfrobnicate = 1\n[servers.a.discovery]\nkind = \"static\"\nstatic_list = [\"127.0.0.1:80 weight=2\"]\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(t.unmapped.len(), 1, "{:?}", t.unmapped);
        assert_eq!(t.unmapped[0].line, 3);
        assert_eq!(t.unmapped[0].key, "servers.a.frobnicate");
        assert!(t.yaml.contains("addr: 127.0.0.1:3000"), "{}", t.yaml);
        assert!(t.yaml.contains("weight: 2"), "{}", t.yaml);
        assert!(t.yaml.contains("strategy: weight"), "{}", t.yaml);
        let e = translate("[servers\n", "x").unwrap_err();
        assert_eq!(e.line, 1);
    }
}
