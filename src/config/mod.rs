//! Configuration: the YAML model, its defaults and its validation.
//!
//! A config file is read in three steps, and each step can only fail with a
//! [`ConfigError`] that names the file, the line and the field:
//!
//! 1. **Parse** with [`from_yaml`] into typed values: enums for every `type`,
//!    addresses, access rules and interface lists parsed as they are read. Every
//!    struct is `#[serde(deny_unknown_fields)]`: a misspelt option is an error,
//!    never silently ignored. Defaults are named functions so the reference in
//!    `docs/configuration.md` can point at them.
//! 2. **Validate** what can be checked from the file alone (ranges, combinations
//!    of options, mutually exclusive options), right after parsing.
//! 3. **Resolve** what depends on the host: `floating_ip` fills its defaults from the
//!    interfaces this machine has (see [`floating_ip::FloatingIpConfig::resolve`]).
//!
//! What leaves this module is typed and checked; `proxy/` and `failover/` only
//! consume it. Why `serde-saphyr`: `serde_yaml` is archived and its forks parse
//! through the archived `unsafe-libyaml`; `serde-saphyr` is pure Rust, panic-free,
//! has no `Value` type (none is needed once the model is typed) and limits what
//! aliases can expand to.

pub mod acme;
pub mod auth;
pub mod chain;
pub mod duration;
pub mod flag;
pub mod floating_ip;
pub mod metrics;
pub mod resolver;
pub mod service;
pub mod tls;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use floating_ip::FloatingIpConfig;
pub use service::ServiceConfig;

/// The whole `gateway.yml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// INFINI Gateway's section, accepted unchanged, plus our own failover options.
    #[serde(default)]
    pub floating_ip: Option<FloatingIpConfig>,
    /// GOST-style services: listener + handler + optional forwarder.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// gobetween's `[acme]`: certificates for `tls` listeners with `acme_hosts`.
    #[serde(default)]
    pub acme: Option<acme::AcmeConfig>,
    /// GOST's Web API and status page (src/api/, docs/api.md); off unless set.
    #[serde(default)]
    pub api: Option<crate::api::ApiConfig>,
    /// GOST's forwarding chains, named by `handler.chain` (see [`chain`]).
    #[serde(default)]
    pub chains: Vec<chain::ChainConfig>,
    /// GOST v3's named hops, used by chains by name (see [`chain::hops`]).
    #[serde(default)]
    pub hops: Vec<chain::HopConfig>,
    /// GOST's resolvers (upstream nameservers), referred to by name (`resolver:`).
    #[serde(default)]
    pub resolvers: Vec<resolver::ResolverConfig>,
    /// GOST's host mappers, referred to by name (`hosts:`).
    #[serde(default)]
    pub hosts: Vec<resolver::HostsConfig>,
    /// GOST's `metrics:` endpoint (Prometheus); off unless set.
    #[serde(default)]
    pub metrics: Option<metrics::MetricsConfig>,
}

/// Why a file with neither section is refused (at `-test`, at start and on reload).
pub const EMPTY_CONFIG: &str = "no services and no floating_ip: refusing an empty configuration";

/// A configuration error, always tied to a file and, when known, a line and a field.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted path of the offending field, e.g. `floating_ip.netmask`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// A validation problem before it is tied to a file: the field path and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Parse and validate YAML text; `path` is only used in error messages.
    pub fn from_str_named(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // An empty (or truncated to nothing) file asks for nothing; say so rather
        // than let it stop every service on a reload.
        let empty = || ConfigError {
            file: path.to_path_buf(),
            line: Some(1),
            column: None,
            field: None,
            message: EMPTY_CONFIG.to_string(),
        };
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Err(empty());
        }
        // A document with no content (`---` alone) reads as none.
        let config: Option<Config> = from_yaml(text).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: e.line,
            column: e.column,
            field: e.field,
            message: e.message,
        })?;
        let Some(mut config) = config else {
            return Err(empty());
        };
        if config.floating_ip.is_none() && config.services.is_empty() {
            return Err(empty());
        }
        config.validate().map_err(|e| at_field(text, path, e))?;
        config.link().map_err(|e| at_field(text, path, e))?;
        config.link_chains();
        Ok(config)
    }

    /// What the file asks for that is accepted but adjusted (e.g. a TLS floor
    /// below 1.2), one line each, starting with the field's path: printed by
    /// `-test` and logged as warnings at start and on reload.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, s) in self.services.iter().enumerate() {
            let sections = [
                ("listener.tls", s.listener.tls.as_ref()),
                (
                    "forwarder.tls",
                    s.forwarder.as_ref().and_then(|f| f.tls.as_ref()),
                ),
            ];
            for (name, tls) in sections {
                for n in tls.map(|t| t.notes()).unwrap_or_default() {
                    out.push(format!("services[{i}].{name}.{n}"));
                }
            }
        }
        out.extend(self.acme.iter().flat_map(|a| a.notes()));
        out
    }

    /// Give each service the chain its `handler.chain` names
    /// (`ServiceConfig::chain`), after [`validate`](Self::validate). A config
    /// built in code rather than read from a file must call both.
    pub fn link_chains(&mut self) {
        chain::link_chains(&self.chains, &self.hops, &mut self.services);
    }

    /// Checks that need nothing but the file itself.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(fip) = &self.floating_ip {
            fip.validate()?;
        }
        service::validate_services(&self.services)?;
        chain::validate_chains(&self.chains, &self.hops, &self.services)?;
        // ACME: the section is checked, and `acme_hosts` needs it.
        if let Some(a) = &self.acme {
            a.validate()?;
        }
        if let Some(a) = &self.api {
            a.validate("api")?;
        }
        if let Some(m) = &self.metrics {
            m.validate("metrics")?;
        }
        for (i, s) in self.services.iter().enumerate() {
            if s.listener
                .tls
                .as_ref()
                .is_some_and(|t| !t.acme_hosts.is_empty())
                && self.acme.is_none()
            {
                return Err(FieldError::new(
                    format!("services[{i}].listener.tls.acme_hosts"),
                    "acme_hosts needs the top-level acme: section (at least acme: {cache_dir: ...})",
                ));
            }
        }
        resolver::validate(&self.resolvers, &self.hosts)
    }

    /// Point every `resolver:`/`hosts:` reference at the entry it names; a name
    /// no entry has is an error naming the field. Runs right after [`Self::validate`].
    pub fn link(&mut self) -> Result<(), FieldError> {
        for (i, s) in self.services.iter_mut().enumerate() {
            if let Some(r) = &mut s.resolver {
                resolver::link_ref(r, &self.resolvers, &format!("services[{i}].resolver"))?;
            }
            if let Some(h) = &mut s.hosts {
                resolver::link_ref(h, &self.hosts, &format!("services[{i}].hosts"))?;
            }
        }
        chain::hops::link_names(
            &mut self.chains,
            &mut self.hops,
            &self.resolvers,
            &self.hosts,
        )
    }
}

/// A YAML document that does not fit the type it is read into: where, which
/// field, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct YamlError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Dotted path of the field being read, e.g. `services[0].handler.type`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, " at line {l} column {c}")?;
        }
        Ok(())
    }
}

/// Parse a YAML document into `T`: the one parser of the program (config files
/// go through it via [`load`], which adds the file name and the validation).
///
/// `serde-saphyr` parses in pure Rust without `unsafe`, refuses alias bombs with
/// its default budget (events replayed through aliases are capped), and reports
/// line and column; `serde_path_to_error` adds the path of the field that failed,
/// which serde's own errors do not carry.
pub fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    let mut path = None;
    // Non-finite numbers (`.nan`, `.inf`) reach the field's own deserializer, so
    // a duration says what it expects instead of the parser's generic refusal.
    let options = serde_saphyr::options! {
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
    };
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            let p = e.path().to_string();
            // "." is the root: no field to name.
            path = (p != ".").then_some(p);
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let loc = e.location();
        let message = serde_saphyr::MessageFormatter::format_message(
            &serde_saphyr::DefaultMessageFormatter,
            &e,
        )
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
        YamlError {
            line: loc.map(|l| l.line() as usize).filter(|l| *l > 0),
            column: loc.map(|l| l.column() as usize).filter(|c| *c > 0),
            field: path,
            message,
        }
    })
}

/// A config file read, validated and resolved against this host.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// `floating_ip` with every default filled in, when enabled.
    pub floating_ip: Option<floating_ip::FloatingIp>,
}

/// Read `path`, parse, validate, and resolve host-dependent defaults against `ifs`.
/// This is the one entry point for start-up, `-test` and reload.
pub fn load(path: &Path, ifs: &crate::net::Interfaces) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        field: None,
        message: format!("cannot read: {e}"),
    })?;
    load_text(path, &text, ifs)
}

/// [`load`] on text already read from `path` (the Web API keeps the text it loaded).
pub fn load_text(
    path: &Path,
    text: &str,
    ifs: &crate::net::Interfaces,
) -> Result<Loaded, ConfigError> {
    let config = Config::from_str_named(text, path)?;
    service::host::check_host(&config, ifs).map_err(|e| at_field(text, path, e))?;
    let floating_ip = match &config.floating_ip {
        Some(f) if f.enabled => {
            let dir = path.parent().unwrap_or(Path::new(""));
            Some(
                f.resolve_at(ifs, dir)
                    .map_err(|e| at_field(text, path, e))?,
            )
        }
        _ => None,
    };
    Ok(Loaded {
        config,
        floating_ip,
    })
}

/// Turn a [`FieldError`] into a [`ConfigError`] pointing at the field's line in `text`.
pub fn at_field(text: &str, path: &Path, e: FieldError) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        line: locate(text, &e.field),
        column: None,
        field: Some(e.field),
        message: e.message,
    }
}

/// Find the 1-based line on which a dotted field path (`floating_ip.echo.port`,
/// `services[1].addr`) is written in block-style YAML. Falls back to the deepest
/// ancestor that can be found (a flow mapping like `{enabled: true}` is on its
/// parent's line). Returns `None` only if not even the first key is present.
pub fn locate(text: &str, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut best = None;
    // (start line index, minimum indentation of children) of the current scope.
    let mut from = 0usize;
    let mut parent_indent: Option<usize> = None;
    for part in field.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let mut found = None;
        for (i, line) in lines.iter().enumerate().skip(from) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if let Some(p) = parent_indent
                && indent <= p
                && i > from
            {
                break; // left the parent's block
            }
            let body = trimmed.trim_start_matches("- ");
            if body.starts_with(&format!("{key}:")) {
                found = Some((i, indent));
                break;
            }
        }
        let Some((i, indent)) = found else {
            return best;
        };
        best = Some(i + 1);
        from = i;
        parent_indent = Some(indent);
        if let Some(n) = index {
            // Walk to the n-th "- " item below the key.
            let mut seen = 0usize;
            let mut item = None;
            for (j, line) in lines.iter().enumerate().skip(i + 1) {
                let trimmed = line.trim_start();
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                let ind = line.len() - trimmed.len();
                if ind < indent || (ind == indent && !trimmed.starts_with("- ")) {
                    break;
                }
                if trimmed.starts_with("- ") && item.is_none_or(|(_, iind)| ind <= iind) {
                    if seen == n {
                        item = Some((j, ind));
                        break;
                    }
                    seen += 1;
                    item = None;
                    let _ = ind;
                }
            }
            match item {
                Some((j, ind)) => {
                    best = Some(j + 1);
                    from = j;
                    // Keys of the item are indented past the dash.
                    parent_indent = Some(ind);
                    // The first key sits on the dash line itself: allow matching it.
                    from = from.saturating_sub(0);
                }
                None => return best,
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_nested_and_indexed() {
        let text = "\
floating_ip:
  enabled: true
  echo:
    port: 1
services:
- name: a
  addr: \":1\"
- name: b
  addr: \":2\"
";
        assert_eq!(locate(text, "floating_ip"), Some(1));
        assert_eq!(locate(text, "floating_ip.echo.port"), Some(4));
        assert_eq!(locate(text, "services[1].addr"), Some(9));
        assert_eq!(locate(text, "services[0].name"), Some(6));
        // Missing leaf: falls back to the parent.
        assert_eq!(locate(text, "floating_ip.netmask"), Some(1));
        assert_eq!(locate(text, "nothing"), None);
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let text = "floating_ip:\n  enabled: true\n  prio: 3\n";
        let e = Config::from_str_named(text, Path::new("g.yml")).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("g.yml:3"), "{s}");
        assert!(s.contains("prio"), "{s}");
        assert!(s.contains("floating_ip"), "{s}");
    }

    #[test]
    fn empty_configs_are_refused() {
        for text in [
            "",
            "\n",
            "# only a comment\n",
            "services: []\n",
            "floating_ip:\n",
            "---\n",
        ] {
            let e = Config::from_str_named(text, Path::new("g.yml")).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("g.yml:1: {EMPTY_CONFIG}"),
                "{text:?}"
            );
        }
        // Asking for nothing explicitly is allowed: the section is there.
        Config::from_str_named("floating_ip: {enabled: false}\n", Path::new("g.yml")).unwrap();
    }
}

#[cfg(test)]
mod yaml_tests {
    use super::*;

    /// An alias bomb ("billion laughs"): nine levels of ten aliases each would
    /// expand to 10^9 strings. Read into a type that walks all of it, the
    /// parser's budget refuses it at once instead of eating memory and time.
    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [lol]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            let list = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{list}]\n"));
        }
        let started = std::time::Instant::now();
        let e = from_yaml::<std::collections::BTreeMap<String, serde::de::IgnoredAny>>(&text)
            .expect_err("an alias bomb was accepted");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(e.message.contains("budget"), "{e}");
    }

    #[test]
    fn errors_carry_line_column_and_field() {
        let text = "services:\n- name: a\n  addr: \":1\"\n  listener: {type: tcp}\n  handler: {type: ftp}\n";
        let e = Config::from_str_named(text, Path::new("g.yml")).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.column.is_some(), "{e}");
        assert_eq!(e.field.as_deref(), Some("services[0].handler.type"), "{e}");
        assert!(e.message.contains("ftp"), "{e}");
    }
}
