//! The daemon's state and its verbs: reload the file, add/replace/delete a
//! service, describe the running configuration, save it.
//!
//! Two forms of the configuration are kept side by side: the typed one
//! ([`Loaded`], what runs) and the document as written (a JSON value per
//! section and per service), which is what `GET /config` shows and
//! `POST /config` saves. The written form is kept instead of re-serialising the
//! typed one so that a saved file says what the operator wrote (`2s`, not
//! `2000000000ns`; no defaults spelt out), and loading it again gives the same
//! typed config. Every edit builds the whole candidate list and validates it as
//! the file would be validated, giving a [`Change`]; [`super::Shared`] applies
//! its services in the steps of a [`ServiceSet`] reload (which leave unchanged
//! services and their connections alone) and only then commits both forms with
//! [`Daemon::commit`]: a refused edit changes nothing.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::cli::{CliError, Flags};
use crate::config::chain::{ChainConfig, HopConfig};
use crate::config::{self, Config, ConfigError, Loaded, ServiceConfig};
use crate::failover::auth::Keyring;
use crate::net::Interfaces;
use crate::proxy::{Committed, Plan, Prepared, ServiceSet};

/// Events kept per service (`status.events`).
const EVENTS: usize = 20;

/// A refused edit, with GOST's codes (docs/api.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// 40001: the body (or a parameter) is not valid.
    #[error("{0}")]
    Invalid(String),
    /// 40002: the name is taken.
    #[error("{0}")]
    Duplicate(String),
    /// 40003: valid, but the service could not start (e.g. the port is in use).
    #[error("{0}")]
    Create(String),
    /// 40004: no such object.
    #[error("{0}")]
    NotFound(String),
    /// 40005: the file could not be written or re-read.
    #[error("{0}")]
    Save(String),
}

impl EditError {
    /// GOST's error code.
    pub fn code(&self) -> u32 {
        match self {
            EditError::Invalid(_) => 40001,
            EditError::Duplicate(_) => 40002,
            EditError::Create(_) => 40003,
            EditError::NotFound(_) => 40004,
            EditError::Save(_) => 40005,
        }
    }
}

/// A configuration read: typed, and as written. It comes from the `-config`
/// file, the `-L`/`-F` flags ([`crate::cli`]), or both; the flags' services are
/// kept "as written" in the form `-O json` prints, after the file's.
#[derive(Debug, Clone)]
pub struct Source {
    pub loaded: Loaded,
    /// The top-level mapping as written (services included).
    raw: Map<String, Value>,
    /// Where it came from, for the next reload: the file (if any) and the flags.
    file: Option<PathBuf>,
    flags: Flags,
}

impl Source {
    /// Read, validate and resolve the file and the flags (see [`crate::cli::load`]),
    /// keeping the document.
    pub fn load(file: Option<&Path>, flags: &Flags, ifs: &Interfaces) -> Result<Source, CliError> {
        let text = match file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| ConfigError {
                file: path.to_path_buf(),
                line: None,
                column: None,
                field: None,
                message: format!("cannot read: {e}"),
            })?),
            None => None,
        };
        let file_part = match (file, &text) {
            (Some(path), Some(text)) => Some(config::load_text(path, text, ifs)?),
            _ => None,
        };
        let loaded = crate::cli::combine(file, file_part, flags, ifs)?;
        let mut raw = match text.as_deref().map(config::from_yaml::<Option<Value>>) {
            Some(Ok(Some(Value::Object(m)))) => m,
            // No file, or (cannot happen: the typed parse accepted it) not a mapping.
            _ => Map::new(),
        };
        if !flags.is_empty() {
            // The flags' objects follow the file's in the typed lists: write them the
            // way `-O json` does, in the same order.
            let c = &loaded.config;
            let count = |key: &str| match raw.get(key) {
                Some(Value::Array(v)) => v.len(),
                _ => 0,
            };
            let (ns, nc) = (count("services"), count("chains"));
            let part = config::Config {
                services: c.services.get(ns..).unwrap_or_default().to_vec(),
                chains: c.chains.get(nc..).unwrap_or_default().to_vec(),
                ..Default::default()
            };
            if let Value::Object(mut written) = crate::cli::output::to_json(&part) {
                for key in LISTS {
                    if let Some(Value::Array(add)) = written.remove(key) {
                        match raw.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                            Value::Array(list) => list.extend(add),
                            other => *other = Value::Array(add),
                        }
                    }
                }
            }
        }
        Ok(Source {
            loaded,
            raw,
            file: file.map(Path::to_path_buf),
            flags: flags.clone(),
        })
    }
}

/// One line of a service's history (`status.events`).
#[derive(Debug, Clone)]
pub struct ServiceEvent {
    pub at: SystemTime,
    pub msg: String,
}

/// A validated change of what runs, waiting for its services to start: the
/// daemon's verbs make one under its lock, [`super::Shared`] applies it.
#[derive(Debug)]
pub(super) enum Change {
    /// The services of the configuration the daemon started with.
    Start,
    /// SIGHUP or `POST /config/reload`: the file (and the flags) read again.
    File(Box<Source>),
    /// An API edit of the list under `key` (`services`, `chains`).
    Section {
        key: &'static str,
        config: Box<Config>,
        raw: Vec<Value>,
        why: &'static str,
    },
}

/// What runs, and how it was written. See the module docs.
#[derive(Debug)]
pub struct Daemon {
    path: PathBuf,
    /// What a reload re-reads: the file (if any) and the command line's flags.
    file: Option<PathBuf>,
    flags: Flags,
    current: Loaded,
    /// The document's top level, without `services`.
    raw: Map<String, Value>,
    /// `services`, `chains` and `hops` as written, in the order of the typed lists.
    raw_lists: HashMap<&'static str, Vec<Value>>,
    services: ServiceSet,
    keys_tx: Option<watch::Sender<Arc<Keyring>>>,
    events: HashMap<String, (SystemTime, VecDeque<ServiceEvent>)>,
}

impl Daemon {
    /// The daemon of `source`, its services not started yet: that is the first
    /// change, [`Change::Start`] (run by [`super::Shared::start_services`]).
    pub fn new(
        path: PathBuf,
        source: Source,
        keys_tx: Option<watch::Sender<Arc<Keyring>>>,
    ) -> Daemon {
        let mut d = Daemon {
            path,
            file: source.file,
            flags: source.flags,
            current: source.loaded,
            raw: Map::new(),
            raw_lists: HashMap::new(),
            services: ServiceSet::empty(),
            keys_tx,
            events: HashMap::new(),
        };
        d.set_raw(source.raw);
        d
    }

    /// The services `change` asks for, as a [`Plan`] (the first step of
    /// applying it; see [`super::Shared`]).
    pub(super) fn plan(&self, change: &Change) -> Plan {
        let wanted = match change {
            Change::Start => &self.current.config.services,
            Change::File(s) => &s.loaded.config.services,
            Change::Section { config, .. } => &config.services,
        };
        self.services.plan(wanted)
    }

    /// The services of `change` are bound: serve them, and make `change` what
    /// runs. What is left to do (hooks) is returned.
    pub(super) fn commit(&mut self, change: Change, prepared: Prepared) -> Committed {
        let committed = self.services.commit(prepared);
        match change {
            Change::Start => {
                for n in self.services.names() {
                    self.event(&n, "service started");
                }
            }
            Change::File(new) => self.commit_file(*new),
            Change::Section {
                key,
                config,
                raw,
                why,
            } => {
                self.note_changes(&config.services, why);
                self.current.config = *config;
                self.raw_lists.insert(key, raw);
            }
        }
        committed
    }

    fn set_raw(&mut self, mut raw: Map<String, Value>) {
        let c = &self.current.config;
        let names: [Vec<&str>; 3] = [
            c.services.iter().map(|s| s.name.as_str()).collect(),
            c.chains.iter().map(|s| s.name.as_str()).collect(),
            c.hops.iter().map(|s| s.name.as_str()).collect(),
        ];
        for (key, names) in LISTS.into_iter().zip(names) {
            let list = match raw.remove(key) {
                Some(Value::Array(v)) if v.len() == names.len() => v,
                // Cannot happen for a file the typed parse accepted; never lose a name.
                _ => (names.iter())
                    .map(|n| serde_json::json!({ "name": n }))
                    .collect(),
            };
            self.raw_lists.insert(key, list);
        }
        self.raw = raw;
    }

    fn event(&mut self, service: &str, msg: impl Into<String>) {
        let now = SystemTime::now();
        let (_, ev) = (self.events)
            .entry(service.to_string())
            .or_insert_with(|| (now, VecDeque::new()));
        if ev.len() == EVENTS {
            ev.pop_front();
        }
        ev.push_back(ServiceEvent {
            at: now,
            msg: msg.into(),
        });
    }

    /// The configuration file this daemon reloads from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What runs.
    pub fn loaded(&self) -> &Loaded {
        &self.current
    }

    /// The running services.
    pub fn services(&self) -> &ServiceSet {
        &self.services
    }

    /// When the service was first started under this name, and its events.
    pub fn service_events(&self, name: &str) -> Option<(SystemTime, Vec<ServiceEvent>)> {
        (self.events.get(name)).map(|(t, e)| (*t, e.iter().cloned().collect()))
    }

    /// The whole running configuration as written, secrets included (for saving;
    /// the API masks it before showing it).
    pub fn document(&self) -> Value {
        let mut m = self.raw.clone();
        for key in LISTS {
            if let Some(list) = self.raw_lists.get(key).filter(|l| !l.is_empty()) {
                m.insert(key.into(), Value::Array(list.clone()));
            }
        }
        Value::Object(m)
    }

    /// Take the services for the final shutdown, with the VIP to cut (if any).
    pub fn take_services(&mut self) -> (ServiceSet, Option<Ipv4Addr>) {
        let set = std::mem::replace(&mut self.services, ServiceSet::empty());
        (set, self.current.floating_ip.as_ref().map(|f| f.vip))
    }

    /// SIGHUP and `POST /config/reload`: re-read the file; a bad file changes
    /// nothing (and is logged). The failover keys (`secret`, `secret_file`)
    /// apply at once; other `floating_ip` changes at the next restart.
    pub(super) fn load_file(&self) -> Result<Change, EditError> {
        let rejected = |e: &dyn std::fmt::Display| {
            tracing::error!("reload rejected, keeping the running configuration: {e}");
        };
        let ifs = Interfaces::current().map_err(|e| {
            let e = format!("cannot list interfaces: {e}");
            rejected(&e);
            EditError::Save(e)
        })?;
        let new = Source::load(self.file.as_deref(), &self.flags, &ifs).map_err(|e| {
            rejected(&e);
            EditError::Invalid(e.to_string())
        })?;
        Ok(Change::File(Box::new(new)))
    }

    /// The rest of a reload, once its services run.
    fn commit_file(&mut self, new: Source) {
        let path = self.path.clone();
        let Source {
            loaded: new, raw, ..
        } = new;
        for n in new.config.notes() {
            tracing::warn!("{n}");
        }
        crate::proxy::acme::reloaded(new.config.acme.as_ref());
        if new.config.services.is_empty() && !self.current.config.services.is_empty() {
            // Allowed (the file has a floating_ip section and asks for no services),
            // but an operator should see it was not an accident.
            tracing::warn!(
                stopped = self.current.config.services.len(),
                "reload stops every running service: {} lists no services",
                path.display()
            );
        }
        self.note_changes(&new.config.services, "reloaded from the file");
        let current = &mut self.current;
        if let (Some(tx), Some(new_fip), Some(cur_fip)) =
            (&self.keys_tx, &new.floating_ip, &mut current.floating_ip)
            && new_fip.keys != cur_fip.keys
        {
            cur_fip.keys = new_fip.keys.clone();
            tx.send_replace(Arc::new(Keyring::from_config(&new_fip.keys)));
        }
        if new.floating_ip != current.floating_ip {
            tracing::warn!(
                "floating_ip changed in {}: it takes effect at the next restart",
                path.display()
            );
            // Keep describing what actually runs.
            let running = current.floating_ip.clone();
            *current = new;
            current.floating_ip = running;
        } else {
            *current = new;
        }
        self.set_raw(raw);
        tracing::info!(
            services = self.current.config.services.len(),
            "configuration reloaded"
        );
    }

    /// Record an event for every service `new` starts, changes or drops.
    fn note_changes(&mut self, new: &[ServiceConfig], why: &str) {
        let old = self.current.config.services.clone();
        for s in new {
            match old.iter().find(|o| o.name == s.name) {
                None => self.event(&s.name, format!("service started ({why})")),
                Some(o) if o != s => self.event(&s.name, format!("service changed ({why})")),
                Some(_) => {}
            }
        }
        for o in &old {
            if !new.iter().any(|s| s.name == o.name) {
                self.events.remove(&o.name);
            }
        }
    }

    /// Validate `candidate` as the file would be and link its chains: the change
    /// that applies it. `edited` is the index in `T`'s list of the object the
    /// body described: its errors are reported relative to the body (`addr: ...`
    /// rather than `services[3].addr: ...`).
    fn check<T: Section>(
        &self,
        mut candidate: Config,
        raw: Vec<Value>,
        edited: Option<usize>,
        why: &'static str,
    ) -> Result<Change, EditError> {
        // The same passes as a file: validation, names linked, then what depends
        // on this host (interfaces, certificate files).
        let checked = candidate
            .validate()
            .and_then(|()| candidate.link())
            .and_then(|()| {
                let ifs = Interfaces::current().map_err(|e| {
                    config::FieldError::new("", format!("cannot list interfaces: {e}"))
                })?;
                config::service::host::check_host(&candidate, &ifs)
            });
        if let Err(e) = checked {
            let prefix = edited.map(|i| format!("{}[{i}].", T::KEY));
            let field = match prefix.as_deref().and_then(|p| e.field.strip_prefix(p)) {
                Some(rel) => rel.to_string(),
                None => e.field.clone(),
            };
            return Err(EditError::Invalid(format!("{field}: {}", e.message)));
        }
        candidate.link_chains();
        Ok(Change::Section {
            key: T::KEY,
            config: Box::new(candidate),
            raw,
            why,
        })
    }

    /// `POST /config/services` (or `chains`): the change that adds the object
    /// `body` describes (YAML or JSON), and its name.
    pub(super) fn add<T: Section>(&self, body: &[u8]) -> Result<(Change, String), EditError> {
        let (obj, raw) = parse_object::<T>(body, None)?;
        let name = obj.name().to_string();
        if T::list(&self.current.config)
            .iter()
            .any(|s| s.name() == name)
        {
            return Err(EditError::Duplicate(format!(
                "name: {} {name:?} already exists",
                T::NOUN
            )));
        }
        let mut candidate = self.current.config.clone();
        let mut raws = self.raw_list::<T>().to_vec();
        T::list_mut(&mut candidate).push(obj);
        raws.push(raw);
        let i = raws.len() - 1;
        let change = self.check::<T>(candidate, raws, Some(i), "added through the API")?;
        Ok((change, name))
    }

    /// `PUT /config/services/{name}`: the change that replaces an object. The
    /// body may leave out `name`; if it gives one, it must be `name`.
    pub(super) fn replace<T: Section>(&self, name: &str, body: &[u8]) -> Result<Change, EditError> {
        let i = self.index::<T>(name)?;
        let (obj, raw) = parse_object::<T>(body, Some(name))?;
        let mut candidate = self.current.config.clone();
        let mut raws = self.raw_list::<T>().to_vec();
        T::list_mut(&mut candidate)[i] = obj;
        raws[i] = raw;
        self.check::<T>(candidate, raws, Some(i), "replaced through the API")
    }

    /// `DELETE /config/services/{name}`: the change that removes an object. A
    /// service stops accepting at once and its connections in flight drain for
    /// the reload grace period. A chain still named by a service cannot be
    /// deleted.
    pub(super) fn delete<T: Section>(&self, name: &str) -> Result<Change, EditError> {
        let i = self.index::<T>(name)?;
        let mut candidate = self.current.config.clone();
        let mut raws = self.raw_list::<T>().to_vec();
        T::list_mut(&mut candidate).remove(i);
        raws.remove(i);
        self.check::<T>(candidate, raws, None, "deleted through the API")
    }

    fn index<T: Section>(&self, name: &str) -> Result<usize, EditError> {
        (T::list(&self.current.config).iter())
            .position(|s| s.name() == name)
            .ok_or_else(|| EditError::NotFound(format!("{} {name:?} not found", T::NOUN)))
    }

    /// `T`'s objects as written, in order.
    fn raw_list<T: Section>(&self) -> &[Value] {
        self.raw_lists.get(T::KEY).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `T`'s objects as written, in order: (name, document).
    pub fn objects<T: Section>(&self) -> Vec<(String, Value)> {
        (T::list(&self.current.config).iter())
            .map(|o| o.name().to_string())
            .zip(self.raw_list::<T>().iter().cloned())
            .collect()
    }
}

/// A list of named objects the API edits: `services`, `chains`, `hops`.
pub trait Section: serde::de::DeserializeOwned + Clone + Send + 'static {
    /// The top-level key (and the URL's last segment).
    const KEY: &'static str;
    /// For messages.
    const NOUN: &'static str;
    fn name(&self) -> &str;
    fn list(c: &Config) -> &Vec<Self>;
    fn list_mut(c: &mut Config) -> &mut Vec<Self>;
}

impl Section for ServiceConfig {
    const KEY: &'static str = "services";
    const NOUN: &'static str = "service";
    fn name(&self) -> &str {
        &self.name
    }
    fn list(c: &Config) -> &Vec<Self> {
        &c.services
    }
    fn list_mut(c: &mut Config) -> &mut Vec<Self> {
        &mut c.services
    }
}

impl Section for ChainConfig {
    const KEY: &'static str = "chains";
    const NOUN: &'static str = "chain";
    fn name(&self) -> &str {
        &self.name
    }
    fn list(c: &Config) -> &Vec<Self> {
        &c.chains
    }
    fn list_mut(c: &mut Config) -> &mut Vec<Self> {
        &mut c.chains
    }
}

impl Section for HopConfig {
    const KEY: &'static str = "hops";
    const NOUN: &'static str = "hop";
    fn name(&self) -> &str {
        &self.name
    }
    fn list(c: &Config) -> &Vec<Self> {
        &c.hops
    }
    fn list_mut(c: &mut Config) -> &mut Vec<Self> {
        &mut c.hops
    }
}

/// The keys of the lists kept as written, one entry per object.
const LISTS: [&str; 3] = [ServiceConfig::KEY, ChainConfig::KEY, HopConfig::KEY];

/// Read an object from a request body: JSON or YAML. A YAML body is parsed as
/// it came (so errors point at its own lines); a JSON body, or one that needed
/// its `name` filled in from the URL, goes through YAML text first, so that both
/// meet the one parser the file goes through, with the same messages.
pub fn parse_object<T: Section>(body: &[u8], name: Option<&str>) -> Result<(T, Value), EditError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| EditError::Invalid("body: expected UTF-8 text (YAML or JSON)".into()))?;
    let invalid = |e: config::YamlError| EditError::Invalid(e.to_string());
    let (mut raw, mut as_written) = match serde_json::from_str::<Value>(text) {
        Ok(v) => (v, false),
        Err(_) => (
            config::from_yaml::<Option<Value>>(text)
                .map_err(invalid)?
                .unwrap_or(Value::Null),
            true,
        ),
    };
    let Value::Object(obj) = &mut raw else {
        return Err(EditError::Invalid(format!(
            "body: expected a {} object (a mapping with a name)",
            T::NOUN
        )));
    };
    if let Some(n) = name {
        match obj.get("name") {
            None => {
                obj.insert("name".into(), Value::String(n.to_string()));
                as_written = false;
            }
            Some(Value::String(b)) if b == n => {}
            Some(other) => {
                return Err(EditError::Invalid(format!(
                    "name: {other} differs from the {} named in the URL ({n:?}); renaming is DELETE then POST",
                    T::NOUN
                )));
            }
        }
    }
    let typed = if as_written {
        config::from_yaml::<T>(text)
    } else {
        config::from_yaml::<T>(&to_yaml(&raw).map_err(EditError::Invalid)?)
    };
    Ok((typed.map_err(invalid)?, raw))
}

/// A document as YAML text.
pub fn to_yaml(v: &Value) -> Result<String, String> {
    serde_saphyr::to_string(v).map_err(|e| format!("cannot write YAML: {e}"))
}
