//! What only this host can tell about the services, chains and hops: that every
//! interface and address an `interface` names (service, hop, node) exists here, and that every certificate, key
//! and CA file opens and parses (and each key fits its certificate).
//!
//! Run by [`crate::config::load`] — so by `-test`, at start-up and on every
//! reload — after the file-only validation and before any service is touched:
//! a typo in `interface` or a truncated `certFile` is reported with its field
//! and line instead of failing later, per connection or at bind time.

use crate::config::{Config, FieldError};
use crate::net::Interfaces;

/// Check every service and chain against this host (`ifs`: its interface snapshot).
pub fn check_host(config: &Config, ifs: &Interfaces) -> Result<(), FieldError> {
    for (i, s) in config.services.iter().enumerate() {
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
    let in_chains = config.chains.iter().enumerate().flat_map(|(i, c)| {
        (c.hops.iter().enumerate()).map(move |(j, hop)| (format!("chains[{i}].hops[{j}]"), hop))
    });
    let top = (config.hops.iter().enumerate()).map(|(j, hop)| (format!("hops[{j}]"), hop));
    for (hat, hop) in in_chains.chain(top) {
        let at = |f: &str| format!("{hat}.{f}");
        if let Some(iface) = &hop.interface {
            iface.check_host(ifs, &at("interface"))?;
        }
        for (k, node) in hop.nodes.iter().enumerate() {
            if let Some(iface) = &node.interface {
                iface.check_host(ifs, &at(&format!("nodes[{k}].interface")))?;
            }
            if let Some(tls) = &node.dialer.tls {
                tls.client_config()
                    .check_files(&at(&format!("nodes[{k}].dialer.tls")))?;
            }
        }
    }
    Ok(())
}
