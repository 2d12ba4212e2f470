//! Failover: electing a master and moving the floating IP.
//!
//! * [`machine`] — the election as a pure state machine (no I/O; time is an argument).
//!   Its module documentation states the rules.
//! * [`wire`] — the heartbeat datagram.
//! * [`auth`] — HMAC-SHA256 keys, signing and checking heartbeats and echo answers.
//! * [`inbound`] — a datagram's way in: decode, authenticate, count and log drops.
//! * [`replay`] — which heartbeats of a sender are new (epoch + sequence).
//! * [`driver`] — the async shell: sockets, timers, probes, netlink, hooks.
//! * [`handover`] — a planned switchover that keeps established connections.
//! * [`counters`] — what the failover thread counts, for the metrics endpoint.
//! * [`confirm`] — asking a silent peer several ways at once before taking over.
//! * [`vip`], [`arp`], [`netwatch`], [`probe`] — the kernel-facing pieces the driver uses.

pub mod arp;
pub mod auth;
pub mod confirm;
pub mod counters;
pub mod driver;
pub mod handover;
pub mod inbound;
pub mod machine;
pub mod netwatch;
pub mod probe;
pub mod replay;
pub mod status;
pub mod vip;
pub mod wire;
