//! Services: listeners, handlers, forwarders, balancing and health checks.

pub mod handler;
pub mod relay;
pub mod router;
pub mod tls;
