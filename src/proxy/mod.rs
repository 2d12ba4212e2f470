//! Services: listeners, handlers, forwarders, balancing and health checks.

pub mod relay;
pub mod router;
