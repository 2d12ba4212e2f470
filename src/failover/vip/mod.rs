//! Binding and unbinding the floating IP. Linux: rtnetlink. macOS: `ifconfig alias`.
//!
//! A [`VipController`] owns exactly one address, `addr/prefix` on one interface, and
//! knows three verbs: [`bind`](VipController::bind), [`unbind`](VipController::unbind)
//! and [`is_bound`](VipController::is_bound). All three are idempotent and report what
//! they found, because the failover driver calls them from a state machine that may
//! repeat itself (a master re-asserting the VIP after someone removed it, a backup
//! dropping an address that was never there):
//!
//! * `bind` returns `Ok(true)` when it added the address and `Ok(false)` when the
//!   kernel already had exactly that `addr/prefix` on the interface.
//! * `unbind` removes the address from the interface whatever prefix it was added
//!   with (an operator may have added it by hand with another mask), and returns
//!   `Ok(false)` when there was nothing to remove. It never touches another address,
//!   in particular not the interface's own one.
//!
//! The interface is looked up by name on every call rather than once: an interface
//! that is deleted and re-created (a VLAN, a bond, a veth in a container) gets a new
//! index, and a controller that cached the old one would silently act on nothing.
//!
//! Platform backends:
//!
//! * `linux` — one rtnetlink connection, spawned on the tokio runtime that created
//!   the controller, kept for the controller's lifetime.
//! * `macos` — `ifconfig <if> alias <vip> netmask <mask>` / `ifconfig <if> -alias
//!   <vip>`; presence is read with `getifaddrs(3)`. The argument vectors are built by
//!   plain functions that compile (and are tested) everywhere.

use std::net::Ipv4Addr;

#[cfg(target_os = "linux")]
pub(crate) mod linux;
// Compiled on every platform so that the argument builders are unit-tested on Linux
// too; only the part that runs `ifconfig` is macOS-specific.
mod macos;

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("interface {0} not found")]
    NoInterface(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid prefix length /{0}: expected 0..=32")]
    InvalidPrefix(u8),
    /// A helper program (macOS `ifconfig`) exited unsuccessfully.
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
}

/// Owns exactly one address (`addr/prefix` on `ifname`).
pub struct VipController {
    pub ifname: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    backend: Backend,
}

#[cfg(target_os = "linux")]
type Backend = linux::Netlink;
#[cfg(target_os = "macos")]
type Backend = macos::Ifconfig;
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
type Backend = Unsupported;

impl VipController {
    /// Check the arguments and, on Linux, open the rtnetlink connection (this must run
    /// inside a tokio runtime, which then drives the connection). Fails with
    /// [`VipError::NoInterface`] when `ifname` does not exist right now.
    pub async fn new(ifname: &str, addr: Ipv4Addr, prefix: u8) -> Result<Self, VipError> {
        if prefix > 32 {
            return Err(VipError::InvalidPrefix(prefix));
        }
        let backend = Backend::open(ifname).await?;
        Ok(Self {
            ifname: ifname.to_string(),
            addr,
            prefix,
            backend,
        })
    }
    /// Add the address. `Ok(true)` if it was added, `Ok(false)` if already present.
    pub async fn bind(&self) -> Result<bool, VipError> {
        let added = self
            .backend
            .bind(&self.ifname, self.addr, self.prefix)
            .await?;
        tracing::debug!(ifname = %self.ifname, vip = %self.addr, prefix = self.prefix, added, "vip bind");
        Ok(added)
    }
    /// Remove the address. `Ok(true)` if it was removed, `Ok(false)` if it was absent.
    pub async fn unbind(&self) -> Result<bool, VipError> {
        let removed = self.backend.unbind(&self.ifname, self.addr).await?;
        tracing::debug!(ifname = %self.ifname, vip = %self.addr, removed, "vip unbind");
        Ok(removed)
    }
    /// Whether the interface carries the address (with any prefix length).
    pub async fn is_bound(&self) -> Result<bool, VipError> {
        self.backend.is_bound(&self.ifname, self.addr).await
    }
}

/// The netmask of a prefix length (`24` → `255.255.255.0`). `prefix` must be ≤ 32.
pub(crate) fn netmask_of(prefix: u8) -> Ipv4Addr {
    match prefix {
        0 => Ipv4Addr::UNSPECIFIED,
        p => Ipv4Addr::from(u32::MAX << (32 - u32::from(p.min(32)))),
    }
}

/// Stand-in backend for platforms without one: every call fails cleanly.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub(crate) struct Unsupported;

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
impl Unsupported {
    fn err() -> VipError {
        VipError::Io(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "floating IP management is implemented for Linux and macOS only",
        ))
    }
    async fn open(_ifname: &str) -> Result<Self, VipError> {
        Err(Self::err())
    }
    async fn bind(&self, _: &str, _: Ipv4Addr, _: u8) -> Result<bool, VipError> {
        Err(Self::err())
    }
    async fn unbind(&self, _: &str, _: Ipv4Addr) -> Result<bool, VipError> {
        Err(Self::err())
    }
    async fn is_bound(&self, _: &str, _: Ipv4Addr) -> Result<bool, VipError> {
        Err(Self::err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::prefix_len;

    #[test]
    fn netmask_round_trips_with_prefix_len() {
        assert_eq!(netmask_of(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask_of(1), Ipv4Addr::new(128, 0, 0, 0));
        assert_eq!(netmask_of(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask_of(23), Ipv4Addr::new(255, 255, 254, 0));
        assert_eq!(netmask_of(32), Ipv4Addr::new(255, 255, 255, 255));
        for p in 0..=32u8 {
            assert_eq!(prefix_len(netmask_of(p)), Some(p));
        }
    }
}
