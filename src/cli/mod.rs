//! GOST's command line: services from `-L URL`, the default chain from `-F URL`,
//! process groups split by `--`, and `-O yaml|json` to print what the flags mean
//! as a `gateway.yml`.
//!
//! The flags are another way to write the config file, not another model: each
//! `-L` becomes a [`ServiceConfig`](crate::config::ServiceConfig) exactly as the
//! same service written under `services:` would, and the result goes through the
//! file's validation ([`Config::validate`]). With `-config` the file's sections and
//! the flags' services are combined into one [`Loaded`], so `floating_ip:` in the
//! file still runs the failover:
//!
//! ```text
//! gateway -config ha.yml -L tcp://:80/10.0.0.5:80
//! ```
//!
//! * [`url`]: the URL grammar, cut into parts;
//! * [`service`]: `-L` → a service; [`chain`]: `-F` → a hop of the default chain;
//! * [`output`]: the `-O` option;
//! * [`groups`]: `--` → one child process per group, supervised.
//!
//! The grammar and its options are documented in docs/command-line.md.

pub mod chain;
pub mod groups;
pub mod output;
pub mod service;
pub mod url;

use std::path::Path;

use crate::config::chain::ChainConfig;
use crate::config::{self, Config, ConfigError, FieldError, Loaded, ServiceConfig};

/// The examples `-h` ends with: every flag at least once.
pub const HELP_EXAMPLES: &str = "\
Examples:
  gateway -config /etc/gateway/gateway.yml          run what the file says
  gateway -test -config gateway.yml                 check a file (exit 0: valid, 1: invalid)
  gateway -L http://:8080                           an HTTP proxy on port 8080
  gateway -L socks5://user:pass@:1080               SOCKS5 with a password
  gateway -L tcp://:80/10.0.0.5:80,10.0.0.6:80?strategy=leastconn
                                                    a TCP load balancer
  gateway -L udp://:53/10.0.0.1:53                  UDP port forwarding
  gateway -L :8080?interface=eth1                   auto (HTTP+SOCKS) leaving through eth1
  gateway -L socks5://:1080 -F http://10.0.0.1:3128 through an upstream HTTP proxy
  gateway -L http://:8080 -- -L socks5://:1080      two processes, supervised by this one
  gateway -config ha.yml -L tcp://:80/10.0.0.5:80   the file's floating_ip plus a service
  gateway -L http://:8080 -O yaml > gateway.yml     print the flags as a config file
  gateway -grace 30 -log-level debug -config gateway.yml
  gateway import gobetween gobetween.toml           translate a gobetween config
URL: [handler][+listener]://[user:pass@][host]:port[/target,...][?key=value&...]
     (docs/command-line.md lists the schemes and the query keys)";

/// Why the command line cannot be turned into a configuration.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A URL that does not parse, or asks for something invalid. The URL is
    /// shown with its password masked.
    #[error("{flag} {url}: {message}")]
    Url {
        flag: &'static str,
        url: String,
        message: String,
    },
    /// The `-config` file.
    #[error(transparent)]
    File(#[from] ConfigError),
    /// The file and the flags together (e.g. two services on one address).
    #[error("{0}")]
    Combined(String),
}

/// What the command line asks for besides the file: the `-L` and `-F` URLs, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub listen: Vec<String>,
    pub forward: Vec<String>,
}

impl Flags {
    pub fn is_empty(&self) -> bool {
        self.listen.is_empty() && self.forward.is_empty()
    }
}

fn url_error(flag: &'static str, url: &str, message: String) -> CliError {
    CliError::Url {
        flag,
        url: format!("{:?}", url::masked(url)),
        message,
    }
}

/// What the flags mean: the `-L` services (each validated alone) and the
/// default chain of the `-F` hops, which every service not saying
/// `?ignoreChain=true` names in `handler.chain`.
#[derive(Debug, Clone, PartialEq)]
pub struct FromFlags {
    pub services: Vec<ServiceConfig>,
    pub chain: Option<ChainConfig>,
}

/// Turn the flags into typed config values.
pub fn from_flags(flags: &Flags) -> Result<FromFlags, CliError> {
    let mut hops = Vec::new();
    for (i, u) in flags.forward.iter().enumerate() {
        let h = url::split(u)
            .and_then(|p| chain::hop(p, i))
            .map_err(|m| url_error("-F", u, m))?;
        h.validate(&format!("hops[{i}]"), i == 0).map_err(|e| {
            let field = e
                .field
                .strip_prefix(&format!("hops[{i}]."))
                .unwrap_or(&e.field);
            url_error("-F", u, format!("{field}: {}", e.message))
        })?;
        hops.push(h);
    }
    let mut services = Vec::new();
    for (i, u) in flags.listen.iter().enumerate() {
        let mut s = url::split(u)
            .and_then(|p| service::service(p, i))
            .map_err(|m| url_error("-L", u, m))?;
        if !hops.is_empty() && !s.ignore_chain {
            s.service.handler.chain = Some(chain::CHAIN_NAME.to_string());
        }
        s.service.validate(i).map_err(|e| {
            let field = e
                .field
                .strip_prefix(&format!("services[{i}]."))
                .unwrap_or(&e.field);
            url_error("-L", u, format!("{field}: {}", e.message))
        })?;
        services.push(s.service);
    }
    if !hops.is_empty() && services.is_empty() {
        return Err(url_error(
            "-F",
            &flags.forward[0],
            "a chain without services is used by nothing: expected -L URL as well".into(),
        ));
    }
    Ok(FromFlags {
        services,
        chain: (!hops.is_empty()).then(|| chain::chain(hops)),
    })
}

/// The configuration the command line means: the `-config` file (when `file` is
/// given) plus the services and chain of `flags`, validated together and with
/// chains linked. Used at start, by `-test`, by `-O` and on every SIGHUP reload
/// (the file is re-read, the flags stay).
pub fn load(
    file: Option<&Path>,
    flags: &Flags,
    ifs: &crate::net::Interfaces,
) -> Result<Loaded, CliError> {
    let file_part = file.map(|p| config::load(p, ifs)).transpose()?;
    combine(file, file_part, flags, ifs)
}

/// [`load`] with the file already loaded (`file_part`, from `file`): the daemon
/// keeps the text it read.
pub fn combine(
    file: Option<&Path>,
    file_part: Option<Loaded>,
    flags: &Flags,
    ifs: &crate::net::Interfaces,
) -> Result<Loaded, CliError> {
    let from = from_flags(flags)?;
    let mut loaded = file_part.unwrap_or(Loaded {
        config: Config::default(),
        floating_ip: None,
    });
    let c = &mut loaded.config;
    let base = (c.services.len(), c.chains.len());
    c.services.extend(from.services);
    c.chains.extend(from.chain);
    c.validate()
        .map_err(|e| combined_error(file, base, flags, e))?;
    // What depends on this host (interfaces, certificate files), as a file's
    // services are checked by `config::load`.
    // (The file's part passed the same checks already; they are cheap.)
    config::service::host::check_host(c, ifs).map_err(|e| combined_error(file, base, flags, e))?;
    c.link_chains();
    Ok(loaded)
}

/// The index in `field` after `prefix` (`services[3].x` → 3).
fn index_after(field: &str, prefix: &str) -> Option<usize> {
    field
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .split_once(']')?
        .0
        .parse()
        .ok()
}

/// Name the flag a combined-validation error is about, when it is about one.
fn combined_error(
    file: Option<&Path>,
    (services, chains): (usize, usize),
    flags: &Flags,
    e: FieldError,
) -> CliError {
    let message = format!("{}: {}", e.field, e.message);
    if let Some(i) = index_after(&e.field, "services")
        && i >= services
        && let Some(u) = flags.listen.get(i - services)
    {
        return url_error("-L", u, message);
    }
    if let Some(i) = index_after(&e.field, "chains")
        && i >= chains
    {
        let hop = e
            .field
            .split_once('.')
            .and_then(|(_, rest)| index_after(rest, "hops"))
            .unwrap_or(0);
        if let Some(u) = flags.forward.get(hop) {
            return url_error("-F", u, message);
        }
    }
    CliError::Combined(format!(
        "{}{message} (with the command line's services)",
        file.map(|f| format!("{}: ", f.display()))
            .unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests;
