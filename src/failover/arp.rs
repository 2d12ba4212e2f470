//! Gratuitous ARP with pnet.

use std::net::Ipv4Addr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ArpError {
    #[error("interface {0} not found or has no MAC address")]
    NoInterface(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Announce `vip` on `ifname`: `count` rounds, `interval` apart; each round sends an
/// ARP request and an ARP reply form. Blocking: call it from `spawn_blocking`.
pub fn send_garp(
    _ifname: &str,
    _vip: Ipv4Addr,
    _count: u32,
    _interval: Duration,
) -> Result<(), ArpError> {
    unimplemented!("netio helper")
}
