//! Configuration: the YAML model, its defaults and its validation.
//!
//! A config file is read in three steps, and each step can only fail with a
//! [`ConfigError`] that names the file, the line and the field:
//!
//! 1. **Parse** with `serde_yaml_ng` into plain structs. Every struct is
//!    `#[serde(deny_unknown_fields)]`: a misspelt option is an error, never silently
//!    ignored. Defaults are named functions so the reference in
//!    `docs/configuration.md` can point at them.
//! 2. **Validate** what can be checked from the file alone (ranges, address syntax,
//!    mutually exclusive options).
//! 3. **Resolve** what depends on the host: `floating_ip` fills its defaults from the
//!    interfaces this machine has (see [`floating_ip::FloatingIpConfig::resolve`]).
//!
//! Why `serde_yaml_ng` and not `serde_yaml`: `serde_yaml` was archived by its author
//! in 2024 and receives no fixes. `serde_yaml_ng` is a maintained fork with the same
//! API, so the code reads as if it used `serde_yaml`.

pub mod auth;
pub mod floating_ip;
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
}

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
        // An empty file is a valid, empty config (nothing enabled).
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_yaml_ng::from_str(text).map_err(|e| {
            let loc = e.location();
            let message = e.to_string();
            // serde_yaml_ng prefixes the message with the field path ("a.b: ...");
            // keep it in the message and also expose it as the field.
            let field = message
                .split_once(": ")
                .map(|(p, _)| p.to_string())
                .filter(|p| !p.contains(' '));
            let message = strip_location(&message);
            let message = match &field {
                Some(f) => message
                    .strip_prefix(&format!("{f}: "))
                    .unwrap_or(&message)
                    .to_string(),
                None => message,
            };
            ConfigError {
                file: path.to_path_buf(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                field,
                message,
            }
        })?;
        config.validate().map_err(|e| at_field(text, path, e))?;
        Ok(config)
    }

    /// Checks that need nothing but the file itself.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(fip) = &self.floating_ip {
            fip.validate()?;
        }
        service::validate_services(&self.services)?;
        Ok(())
    }
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
    let config = Config::from_str_named(&text, path)?;
    let floating_ip = match &config.floating_ip {
        Some(f) if f.enabled => {
            let dir = path.parent().unwrap_or(Path::new(""));
            Some(
                f.resolve_at(ifs, dir)
                    .map_err(|e| at_field(&text, path, e))?,
            )
        }
        _ => None,
    };
    Ok(Loaded {
        config,
        floating_ip,
    })
}

/// serde_yaml_ng appends " at line L column C"; we print the location ourselves.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
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
    fn empty_file_is_empty_config() {
        let c = Config::from_str_named("\n", Path::new("g.yml")).unwrap();
        assert!(c.floating_ip.is_none() && c.services.is_empty());
    }
}
