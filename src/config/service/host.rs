//! What only this host can tell about the services: that every interface and
//! address an `interface` names exists here, and that every certificate, key
//! and CA file opens and parses (and each key fits its certificate).
//!
//! Run by [`crate::config::load`] — so by `-test`, at start-up and on every
//! reload — after the file-only validation and before any service is touched:
//! a typo in `interface` or a truncated `certFile` is reported with its field
//! and line instead of failing later, per connection or at bind time.

use super::ServiceConfig;
use crate::config::FieldError;
use crate::net::Interfaces;

/// Check every service against this host (`ifs`: its interface snapshot).
pub fn check_host(services: &[ServiceConfig], ifs: &Interfaces) -> Result<(), FieldError> {
    for (i, s) in services.iter().enumerate() {
        let at = |f: &str| format!("services[{i}].{f}");
        if let Some(iface) = s.interface() {
            iface.check_host(ifs, &at(s.interface_field()))?;
        }
        if let Some(tls) = &s.listener.tls {
            tls.check_files(&at("listener.tls"))?;
        }
        if let Some(tls) = s.forwarder.as_ref().and_then(|f| f.tls.as_ref()) {
            tls.check_files(&at("forwarder.tls"))?;
        }
    }
    Ok(())
}
