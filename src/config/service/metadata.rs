//! GOST's service-level `metadata:`: options of the service as a whole that
//! GOST writes in a map rather than as fields.
//!
//! ```yaml
//! services:
//! - name: service-0
//!   addr: ":8080"
//!   metadata:
//!     interface: eth0        # the same as `interface: eth0` on the service
//!   handler: {type: auto}
//!   listener: {type: tcp}
//! ```
//!
//! Each key GOST documents for a service is a typed field here, and every other
//! key is refused (`deny_unknown_fields`), so a misspelt option is an error.
//! A key that is also a field of the service (today `interface`) means exactly
//! that field; writing both is refused rather than letting one silently win.
//!
//! To add a key: a field with its GOST name (`#[serde(rename = "...")]` where
//! GOST uses camelCase), a default, one doc line; then check it in
//! [`ServiceMetadata::validate`] if the file alone can tell it is wrong.

use serde::Deserialize;

use super::interface::Interface;
use crate::config::FieldError;
use crate::config::duration::DurationStr;

/// The `metadata:` map of a service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceMetadata {
    /// GOST's `metadata.interface`: the network exit of the service, as the
    /// service's own `interface` field (which see).
    #[serde(default)]
    pub interface: Option<Interface>,
    /// GOST's hooks (see [`super::hooks`]), as GOST writes them.
    #[serde(rename = "preUp", default)]
    pub pre_up: Vec<String>,
    #[serde(rename = "postUp", default)]
    pub post_up: Vec<String>,
    #[serde(rename = "preDown", default)]
    pub pre_down: Vec<String>,
    #[serde(rename = "postDown", default)]
    pub post_down: Vec<String>,
    /// The limit on each hook command (0: 30 s).
    #[serde(rename = "hookTimeout", default)]
    pub hook_timeout: DurationStr,
    /// GOST's `ignoreChain`: `true` makes the service dial directly although its
    /// `handler.chain` names a chain (the name is still checked).
    #[serde(rename = "ignoreChain", default)]
    pub ignore_chain: bool,
}

impl ServiceMetadata {
    /// The hooks written here.
    pub fn hooks(&self) -> super::hooks::Hooks {
        super::hooks::Hooks::new(
            [&self.pre_up, &self.post_up, &self.pre_down, &self.post_down],
            self.hook_timeout,
        )
    }

    /// Checks that need only the file. `service_interface` is the service's own
    /// `interface` field; `at` is the path of this map, `services[i].metadata`.
    pub fn validate(
        &self,
        service_interface: Option<&Interface>,
        at: &str,
    ) -> Result<(), FieldError> {
        if let (Some(mine), Some(theirs)) = (&self.interface, service_interface) {
            return Err(FieldError::new(
                format!("{at}.interface"),
                format!(
                    "{mine:?} here and interface: {theirs:?} on the service say the same thing twice: \
                     expected one of the two",
                    mine = mine.text,
                    theirs = theirs.text
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn load(service_fields: &str) -> Result<Config, String> {
        let yaml = format!(
            "services:\n- name: s\n  addr: \":8080\"\n{service_fields}  handler: {{type: auto}}\n  listener: {{type: tcp}}\n"
        );
        Config::from_str_named(&yaml, Path::new("g.yml")).map_err(|e| e.to_string())
    }

    /// Seed 001's form and the plain field give the same service exit.
    #[test]
    fn metadata_interface_is_the_interface_field() {
        let a = load("  metadata:\n    interface: eth0\n").unwrap();
        let b = load("  interface: eth0\n").unwrap();
        assert_eq!(a.services[0].interface(), b.services[0].interface());
        assert_eq!(a.services[0].interface().unwrap().text, "eth0");
        let list = load("  metadata: {interface: \"fd::1,192.168.0.123!\"}\n").unwrap();
        assert_eq!(list.services[0].interface().unwrap().exits.len(), 2);
        assert!(load("").unwrap().services[0].interface().is_none());
    }

    #[test]
    fn both_forms_or_unknown_keys_are_refused() {
        let e = load("  interface: eth1\n  metadata: {interface: eth0}\n").unwrap_err();
        assert!(
            e.contains("g.yml:")
                && e.contains("services[0].metadata.interface")
                && e.contains("expected one of the two"),
            "{e}"
        );
        let e = load("  metadata: {interfce: eth0}\n").unwrap_err();
        assert!(e.contains("interfce") && e.contains("metadata"), "{e}");
        let e = load("  metadata: {interface: \"eth0,,eth1\"}\n").unwrap_err();
        assert!(e.contains("services[0].metadata.interface"), "{e}");
    }
}
