//! The daemon's state and its verbs: reload the file, add/replace/delete a
//! service, describe the running configuration, save it.
//!
//! Two forms of the configuration are kept side by side: the typed one
//! ([`Loaded`], what runs) and the document as written (a JSON value per
//! section and per service), which is what `GET /config` shows and
//! `POST /config` saves. The written form is kept instead of re-serialising the
//! typed one so that a saved file says what the operator wrote (`2s`, not
//! `2000000000ns`; no defaults spelt out), and loading it again gives the same
//! typed config. Every edit builds the whole candidate list, validates it as the
//! file would be validated, applies it with [`ServiceSet::reload`] (which leaves
//! unchanged services and their connections alone) and only then commits both
//! forms: a refused edit changes nothing.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::config::{self, Config, ConfigError, Loaded, ServiceConfig};
use crate::failover::auth::Keyring;
use crate::net::Interfaces;
use crate::proxy::ServiceSet;

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

/// A configuration file read: typed, and as written.
#[derive(Debug, Clone)]
pub struct Source {
    pub loaded: Loaded,
    /// The top-level mapping as written (services included).
    raw: Map<String, Value>,
}

impl Source {
    /// Read, validate and resolve `path` (see [`config::load`]), keeping the document.
    pub fn load(path: &Path, ifs: &Interfaces) -> Result<Source, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            field: None,
            message: format!("cannot read: {e}"),
        })?;
        let loaded = config::load_text(path, &text, ifs)?;
        let raw = match config::from_yaml::<Option<Value>>(&text) {
            Ok(Some(Value::Object(m))) => m,
            // The typed parse accepted it, so it is a mapping; be safe anyway.
            _ => Map::new(),
        };
        Ok(Source { loaded, raw })
    }
}

/// One line of a service's history (`status.events`).
#[derive(Debug, Clone)]
pub struct ServiceEvent {
    pub at: SystemTime,
    pub msg: String,
}

/// What runs, and how it was written. See the module docs.
#[derive(Debug)]
pub struct Daemon {
    path: PathBuf,
    current: Loaded,
    /// The document's top level, without `services`.
    raw: Map<String, Value>,
    /// `services` as written, in the order of `current.config.services`.
    raw_services: Vec<Value>,
    services: ServiceSet,
    keys_tx: Option<watch::Sender<Arc<Keyring>>>,
    events: HashMap<String, (SystemTime, VecDeque<ServiceEvent>)>,
}

impl Daemon {
    /// Start the services of `source` (see [`ServiceSet::start`]).
    pub fn start(
        path: PathBuf,
        source: Source,
        keys_tx: Option<watch::Sender<Arc<Keyring>>>,
    ) -> Result<Daemon, crate::proxy::ProxyError> {
        let services = ServiceSet::start(&source.loaded.config.services)?;
        let mut d = Daemon {
            path,
            current: source.loaded,
            raw: Map::new(),
            raw_services: Vec::new(),
            services,
            keys_tx,
            events: HashMap::new(),
        };
        d.set_raw(source.raw);
        let names: Vec<String> = d.services.names();
        for n in names {
            d.event(&n, "service started");
        }
        Ok(d)
    }

    fn set_raw(&mut self, mut raw: Map<String, Value>) {
        self.raw_services = match raw.remove("services") {
            Some(Value::Array(v)) if v.len() == self.current.config.services.len() => v,
            _ => (self.current.config.services.iter())
                .map(|s| serde_json::json!({ "name": s.name }))
                .collect(),
        };
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

    /// The services as written, in order: (name, document).
    pub fn raw_services(&self) -> impl Iterator<Item = (&str, &Value)> {
        (self.current.config.services.iter())
            .map(|s| s.name.as_str())
            .zip(self.raw_services.iter())
    }

    /// The whole running configuration as written, secrets included (for saving;
    /// the API masks it before showing it).
    pub fn document(&self) -> Value {
        let mut m = self.raw.clone();
        if !self.raw_services.is_empty() {
            m.insert("services".into(), Value::Array(self.raw_services.clone()));
        }
        Value::Object(m)
    }

    /// Take the services for the final shutdown, with the VIP to cut (if any).
    pub fn take_services(&mut self) -> (ServiceSet, Option<Ipv4Addr>) {
        let set = std::mem::replace(&mut self.services, ServiceSet::empty());
        (set, self.current.floating_ip.as_ref().map(|f| f.vip))
    }

    /// SIGHUP and `POST /config/reload`: re-read the file; a bad file changes
    /// nothing. The failover keys (`secret`, `secret_file`) apply at once; other
    /// `floating_ip` changes at the next restart.
    pub fn reload_file(&mut self) -> Result<(), EditError> {
        let rejected = |e: &dyn std::fmt::Display| {
            tracing::error!("reload rejected, keeping the running configuration: {e}");
        };
        let ifs = Interfaces::current().map_err(|e| {
            let e = format!("cannot list interfaces: {e}");
            rejected(&e);
            EditError::Save(e)
        })?;
        let new = Source::load(&self.path, &ifs).map_err(|e| {
            rejected(&e);
            EditError::Invalid(e.to_string())
        })?;
        if let Err(e) = self.services.reload(&new.loaded.config.services) {
            rejected(&e);
            return Err(EditError::Create(e.to_string()));
        }
        let path = self.path.clone();
        let Source { loaded: new, raw } = new;
        for n in new.config.notes() {
            tracing::warn!("{n}");
        }
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
            tx.send_replace(Arc::new(new_fip.keys.clone()));
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
        Ok(())
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

    /// Validate `list` as the file would be, then apply it. `edited` is the index
    /// of the service the body described: its errors are reported relative to the
    /// body (`addr: ...` rather than `services[3].addr: ...`).
    fn apply(
        &mut self,
        list: Vec<ServiceConfig>,
        raw: Vec<Value>,
        edited: Option<usize>,
        why: &str,
    ) -> Result<(), EditError> {
        let candidate = Config {
            services: list,
            ..self.current.config.clone()
        };
        if let Err(e) = candidate.validate() {
            let prefix = edited.map(|i| format!("services[{i}]."));
            let field = match prefix.as_deref().and_then(|p| e.field.strip_prefix(p)) {
                Some(rel) => rel.to_string(),
                None => e.field.clone(),
            };
            return Err(EditError::Invalid(format!("{field}: {}", e.message)));
        }
        if let Err(e) = self.services.reload(&candidate.services) {
            return Err(EditError::Create(e.to_string()));
        }
        self.note_changes(&candidate.services, why);
        self.current.config.services = candidate.services;
        self.raw_services = raw;
        Ok(())
    }

    /// `POST /config/services`: add a service described by `body` (YAML or JSON).
    pub fn add_service(&mut self, body: &[u8]) -> Result<String, EditError> {
        let (svc, raw) = parse_service(body, None)?;
        let name = svc.name.clone();
        if self.current.config.services.iter().any(|s| s.name == name) {
            return Err(EditError::Duplicate(format!(
                "name: service {name:?} already exists"
            )));
        }
        let mut list = self.current.config.services.clone();
        let mut raws = self.raw_services.clone();
        list.push(svc);
        raws.push(raw);
        let i = list.len() - 1;
        self.apply(list, raws, Some(i), "added through the API")?;
        tracing::info!(service = %name, "service added through the API");
        Ok(name)
    }

    /// `PUT /config/services/{name}`: replace a service. The body may leave out
    /// `name`; if it gives one, it must be `name`.
    pub fn replace_service(&mut self, name: &str, body: &[u8]) -> Result<(), EditError> {
        let i = self.index(name)?;
        let (svc, raw) = parse_service(body, Some(name))?;
        let mut list = self.current.config.services.clone();
        let mut raws = self.raw_services.clone();
        list[i] = svc;
        raws[i] = raw;
        self.apply(list, raws, Some(i), "replaced through the API")?;
        tracing::info!(service = %name, "service replaced through the API");
        Ok(())
    }

    /// `DELETE /config/services/{name}`: stop accepting at once; connections in
    /// flight drain for the reload grace period.
    pub fn delete_service(&mut self, name: &str) -> Result<(), EditError> {
        let i = self.index(name)?;
        let mut list = self.current.config.services.clone();
        let mut raws = self.raw_services.clone();
        list.remove(i);
        raws.remove(i);
        self.apply(list, raws, None, "deleted through the API")?;
        tracing::info!(service = %name, "service deleted through the API; draining");
        Ok(())
    }

    fn index(&self, name: &str) -> Result<usize, EditError> {
        (self.current.config.services.iter())
            .position(|s| s.name == name)
            .ok_or_else(|| EditError::NotFound(format!("service {name:?} not found")))
    }
}

/// Read a service from a request body: JSON or YAML (JSON is turned into YAML
/// first, so both go through the one parser the file goes through, with the same
/// messages). `name`: the name from the URL, filled in when the body has none.
pub fn parse_service(body: &[u8], name: Option<&str>) -> Result<(ServiceConfig, Value), EditError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| EditError::Invalid("body: expected UTF-8 text (YAML or JSON)".into()))?;
    let invalid = |e: config::YamlError| EditError::Invalid(e.to_string());
    let mut raw: Value = match serde_json::from_str::<Value>(text) {
        Ok(v) => v,
        Err(_) => config::from_yaml::<Option<Value>>(text)
            .map_err(invalid)?
            .unwrap_or(Value::Null),
    };
    let Value::Object(obj) = &mut raw else {
        return Err(EditError::Invalid(
            "body: expected a service object (name, addr, handler, listener, ...)".into(),
        ));
    };
    if let Some(n) = name {
        match obj.get("name") {
            None => {
                obj.insert("name".into(), Value::String(n.to_string()));
            }
            Some(Value::String(b)) if b == n => {}
            Some(other) => {
                return Err(EditError::Invalid(format!(
                    "name: {other} differs from the service named in the URL ({n:?}); renaming is DELETE then POST"
                )));
            }
        }
    }
    let yaml = to_yaml(&raw).map_err(EditError::Invalid)?;
    let svc = config::from_yaml::<ServiceConfig>(&yaml).map_err(invalid)?;
    Ok((svc, raw))
}

/// A document as YAML text.
pub fn to_yaml(v: &Value) -> Result<String, String> {
    serde_saphyr::to_string(v).map_err(|e| format!("cannot write YAML: {e}"))
}
