//! The `services:` section (GOST v3's service model). Owned by the proxy work; this
//! is the minimal shape the failover daemon needs to start services.

use serde::Deserialize;

use super::FieldError;

/// One service: an address, a listener, a handler and an optional forwarder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    pub addr: String,
    pub handler: HandlerConfig,
    pub listener: ListenerConfig,
    #[serde(default)]
    pub forwarder: Option<ForwarderConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderConfig {
    pub nodes: Vec<NodeConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    pub addr: String,
}

/// Checks across all services (unique names, and each service on its own).
pub fn validate_services(services: &[ServiceConfig]) -> Result<(), FieldError> {
    let mut names = std::collections::HashSet::new();
    for (i, s) in services.iter().enumerate() {
        if !names.insert(s.name.as_str()) {
            return Err(FieldError::new(
                format!("services[{i}].name"),
                format!("duplicate service name {:?}", s.name),
            ));
        }
    }
    Ok(())
}
