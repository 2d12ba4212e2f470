//! Watching the kernel (netlink) for link state and for our VIP being removed.

use std::net::Ipv4Addr;

use tokio::sync::mpsc;

use super::vip::VipError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetEvent {
    /// Carrier / operational state of the interface changed.
    Link { up: bool },
    /// Someone removed the VIP from the interface.
    VipRemoved,
    /// The VIP appeared on the interface.
    VipAdded,
}

/// Whether the interface is operationally up right now.
pub fn link_is_up(_ifname: &str) -> std::io::Result<bool> {
    unimplemented!("netio helper")
}

/// Send [`NetEvent`]s for `ifname` / `vip` until `tx` is closed.
pub async fn watch(
    _ifname: String,
    _vip: Ipv4Addr,
    _tx: mpsc::Sender<NetEvent>,
) -> Result<(), VipError> {
    unimplemented!("netio helper")
}
