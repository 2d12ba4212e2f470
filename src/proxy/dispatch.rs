//! From a service's `handler:`, `listener:` and forwarder `tls:` sections to the
//! objects that serve its connections: the proxy handler (`http`, `socks5`,
//! `socks4`, `auto`), the TLS acceptor of a `tls` listener and the TLS client
//! towards nodes.
//!
//! The same constructors run twice: at config load, to refuse bad options with a
//! field path (`services[1].handler.metadata.readTimeout: ...`), and at service
//! start, to build the real thing. What passes validation therefore starts.

use super::handler::ProxyHandler;
use super::relay::RelayOpts;
use super::router::Router;
use crate::config::FieldError;
use crate::config::service::ServiceConfig;

/// Whether `handler.type` is a proxy handler (it finds its target in each
/// request) rather than a forwarder to fixed nodes.
pub fn is_proxy_handler(kind: &str) -> bool {
    matches!(
        kind,
        "http" | "socks5" | "socks" | "socks4" | "socks4a" | "auto"
    )
}

/// Build the proxy handler of a service (`None` for `tcp` / `udp`). The service's
/// idle timeouts apply to the tunnels it opens (CONNECT, SOCKS).
pub(crate) fn proxy_handler(
    s: &ServiceConfig,
    router: Router,
) -> Result<Option<ProxyHandler>, FieldError> {
    if !is_proxy_handler(&s.handler.kind) {
        return Ok(None);
    }
    let mut h = ProxyHandler::from_parts(
        &s.handler.kind,
        s.handler.auth.clone(),
        s.handler.metadata.as_ref(),
        router,
        "handler",
    )?;
    h.set_relay_opts(RelayOpts {
        a_idle: s.client_idle_timeout.get(),
        b_idle: s.backend_idle_timeout.get(),
        counter: None,
    });
    Ok(Some(h))
}

/// The config-load checks of a service's handler options and TLS sections.
pub fn validate(s: &ServiceConfig, i: usize) -> Result<(), FieldError> {
    let at = |f: &str| format!("services[{i}].{f}");
    if is_proxy_handler(&s.handler.kind) {
        ProxyHandler::validate_parts(
            &s.handler.kind,
            s.handler.auth.as_ref(),
            s.handler.metadata.as_ref(),
            &at("handler"),
        )?;
    }
    if let Some(tls) = &s.listener.tls {
        super::tls::validate(tls, &at("listener.tls"))?;
    }
    if let Some(tls) = s.forwarder.as_ref().and_then(|f| f.tls.as_ref()) {
        super::tls::validate(tls, &at("forwarder.tls"))?;
        super::tls_options::validate_client(tls).map_err(|e| e.at(&at("forwarder.tls")))?;
    }
    Ok(())
}
