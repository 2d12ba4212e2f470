//! Binding and unbinding the floating IP. Linux: rtnetlink. macOS: `ifconfig alias`.

use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("interface {0} not found")]
    NoInterface(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Owns exactly one address (`addr/prefix` on `ifname`).
pub struct VipController {
    pub ifname: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl VipController {
    pub async fn new(ifname: &str, addr: Ipv4Addr, prefix: u8) -> Result<Self, VipError> {
        Ok(Self {
            ifname: ifname.to_string(),
            addr,
            prefix,
        })
    }
    /// Add the address. `Ok(true)` if it was added, `Ok(false)` if already present.
    pub async fn bind(&self) -> Result<bool, VipError> {
        unimplemented!("netio helper")
    }
    /// Remove the address. `Ok(true)` if it was removed, `Ok(false)` if it was absent.
    pub async fn unbind(&self) -> Result<bool, VipError> {
        unimplemented!("netio helper")
    }
    pub async fn is_bound(&self) -> Result<bool, VipError> {
        unimplemented!("netio helper")
    }
}
