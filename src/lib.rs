//! `gateway`: a high-availability gateway daemon.
//!
//! Two nodes on one LAN run the same binary. They elect a master over UDP broadcast
//! heartbeats; the master holds a floating IP (the VIP) and serves the configured
//! proxy and load-balancing `services:` on it. When the master dies, the backup takes
//! the VIP within a fraction of a second and announces it with gratuitous ARP.
//!
//! The crate is laid out the way the problem is:
//!
//! * [`config`] — the YAML model (INFINI Gateway's `floating_ip:` section, GOST-style
//!   `services:`), defaults and the validation pass that runs right after parsing.
//! * [`failover`] — the election. Its heart, [`failover::machine`], is a pure state
//!   machine (events and time in, actions out); everything that touches a socket or
//!   the kernel lives beside it in a thin async shell ([`failover::driver`]).
//! * [`net`] — interface discovery: which NIC, which address, which netmask.
//! * [`proxy`] — listeners, handlers, forwarders, balancing and health checks.
//! * [`import`] — `gateway import gobetween FILE`: gobetween TOML → gateway.yml.
//! * [`daemon`] — the running process: one owner for the configuration and the
//!   services, shared by the signal loop and the [`api`] (Web API, status page).

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod failover;
pub mod import;
pub mod metrics;
pub mod net;
pub mod proxy;
