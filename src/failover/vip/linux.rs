//! The Linux backend: `RTM_NEWADDR` / `RTM_DELADDR` / `RTM_GETADDR` over one rtnetlink
//! connection.
//!
//! `rtnetlink` splits a connection in two: a `Connection` future that owns the socket
//! and must be polled (we spawn it on tokio), and a cloneable `Handle` that turns
//! requests into response streams. The controller keeps both for its whole life, so a
//! failover costs one request on an open socket, not a socket setup.
//!
//! What the kernel does with our requests, and why the code looks the way it does:
//!
//! * `RTM_NEWADDR` with `NLM_F_CREATE | NLM_F_EXCL` (what `AddressAddRequest` sends)
//!   fails with `EEXIST` when the same local address *with the same prefix* is already
//!   on the interface: that is our idempotent "already bound".
//! * `RTM_DELADDR` deletes the first address matching the attributes we send, so we
//!   first dump the interface's IPv4 addresses and echo back exactly the entries whose
//!   local address is the VIP — whatever their prefix, and never anything else.
//!   `EADDRNOTAVAIL` means someone deleted it in between: not ours to report.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use rtnetlink::Handle;
use tokio::task::JoinHandle;

use super::VipError;

/// How long one netlink request may take. The kernel answers in microseconds; this
/// only bounds the damage if the connection task is gone (e.g. its runtime was shut
/// down), so that the failover driver gets an error instead of hanging forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) struct Netlink {
    handle: Handle,
    conn: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        // Dropping the handle alone would also end the task once the kernel socket is
        // idle; aborting makes the socket's lifetime exactly the controller's.
        self.conn.abort();
    }
}

/// The errno carried by a netlink error reply, as a positive number.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
        _ => None,
    }
}

pub(crate) async fn timed<T>(
    what: impl FnOnce() -> String,
    fut: impl Future<Output = T>,
) -> Result<T, VipError> {
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| VipError::Netlink(format!("{}: no reply within {REQUEST_TIMEOUT:?}", what())))
}

/// The `RTM_NEWADDR` payload for `addr/prefix` on interface `index`: local and
/// address both set to `addr` (not point-to-point), the directed broadcast of the
/// subnet for prefixes that have one, scope global.
pub(crate) fn vip_message(index: u32, addr: Ipv4Addr, prefix: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    msg.attributes
        .push(AddressAttribute::Local(IpAddr::V4(addr)));
    msg.attributes
        .push(AddressAttribute::Address(IpAddr::V4(addr)));
    // /31 (RFC 3021) and /32 have no broadcast address; iproute2 sets none either.
    if prefix < 31 {
        let mask = super::netmask_of(prefix);
        msg.attributes
            .push(AddressAttribute::Broadcast(crate::net::broadcast(
                addr, mask,
            )));
    }
    msg
}

/// The IPv4 local address of an address message (`IFA_LOCAL`, or `IFA_ADDRESS` for
/// the rare message that carries only that).
pub(crate) fn local_v4(msg: &AddressMessage) -> Option<Ipv4Addr> {
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(IpAddr::V4(a)) => return Some(*a),
            AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
            _ => {}
        }
    }
    address
}

/// The minimal `RTM_DELADDR` payload that deletes exactly the dumped entry `found`:
/// its header (family, prefix, index) and the attributes the kernel matches on.
fn delete_message(found: &AddressMessage) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header = found.header.clone();
    msg.attributes = found
        .attributes
        .iter()
        .filter(|a| {
            matches!(
                a,
                AddressAttribute::Local(_)
                    | AddressAttribute::Address(_)
                    | AddressAttribute::Label(_)
            )
        })
        .cloned()
        .collect();
    msg
}

/// The addresses the kernel removes together with `target` when `target` is deleted:
/// if it is a primary address, its secondaries (same prefix length, same subnet) —
/// unless `promote_secondaries` is on, in which case one of them is promoted.
///
/// This matters for a VIP that became the primary of its subnet (e.g. it was added
/// before the node's own address in that subnet): releasing it would take the node's
/// own address down with it.
pub(crate) fn collateral(target: &AddressMessage, all: &[AddressMessage]) -> Vec<Ipv4Addr> {
    let secondary = |m: &AddressMessage| m.header.flags.contains(AddressHeaderFlags::Secondary);
    let (Some(local), false) = (local_v4(target), secondary(target)) else {
        return Vec::new();
    };
    let prefix = target.header.prefix_len;
    let mask = super::netmask_of(prefix.min(32));
    let subnet = crate::net::network(local, mask);
    all.iter()
        .filter(|m| secondary(m) && m.header.prefix_len == prefix)
        .filter_map(local_v4)
        .filter(|a| *a != local && crate::net::network(*a, mask) == subnet)
        .collect()
}

/// Whether the kernel promotes a secondary address when its primary is deleted
/// (`net.ipv4.conf.{all,IF}.promote_secondaries`; either one enables it). Read in
/// the calling thread's network namespace. Unknown counts as off, the kernel default.
fn promote_secondaries(ifname: &str) -> bool {
    ["all", ifname].iter().any(|dev| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/promote_secondaries"))
            .is_ok_and(|v| v.trim() == "1")
    })
}

impl Netlink {
    pub(crate) async fn open(ifname: &str) -> Result<Self, VipError> {
        let (conn, handle, _unsolicited) = rtnetlink::new_connection()?;
        let this = Netlink {
            handle,
            conn: tokio::spawn(conn),
        };
        // Fail early on a misspelt interface; later calls look it up again.
        this.index(ifname).await?;
        Ok(this)
    }

    /// The interface's current index, asked over our own socket (so that it is the
    /// index in the namespace the socket lives in).
    async fn index(&self, ifname: &str) -> Result<u32, VipError> {
        let mut links = self.handle.link().get().match_name(ifname).execute();
        match timed(|| format!("get link {ifname}"), links.try_next()).await? {
            Ok(Some(link)) => Ok(link.header.index),
            Ok(None) => Err(VipError::NoInterface(ifname.to_string())),
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                Err(VipError::NoInterface(ifname.to_string()))
            }
            Err(e) => Err(VipError::Netlink(format!("get link {ifname}: {e}"))),
        }
    }

    /// All IPv4 address entries on interface `index`.
    async fn ipv4_entries(
        &self,
        ifname: &str,
        index: u32,
    ) -> Result<Vec<AddressMessage>, VipError> {
        let mut req = self.handle.address().get().set_link_index_filter(index);
        // Ask the kernel for IPv4 only; the index filter runs on our side.
        req.message_mut().header.family = AddressFamily::Inet;
        let dump = req.execute().try_collect::<Vec<_>>();
        timed(|| format!("dump addresses of {ifname}"), dump)
            .await?
            .map_err(|e| VipError::Netlink(format!("dump addresses of {ifname}: {e}")))
    }

    pub(crate) async fn bind(
        &self,
        ifname: &str,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<bool, VipError> {
        let index = self.index(ifname).await?;
        let mut req = self.handle.address().add(index, IpAddr::V4(addr), prefix);
        *req.message_mut() = vip_message(index, addr, prefix);
        match timed(|| format!("add {addr}/{prefix} to {ifname}"), req.execute()).await? {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) if errno(&e) == Some(libc::ENODEV) => {
                Err(VipError::NoInterface(ifname.to_string()))
            }
            Err(e) => Err(VipError::Netlink(format!(
                "add {addr}/{prefix} to {ifname}: {e}"
            ))),
        }
    }

    pub(crate) async fn unbind(&self, ifname: &str, addr: Ipv4Addr) -> Result<bool, VipError> {
        let index = self.index(ifname).await?;
        let all = self.ipv4_entries(ifname, index).await?;
        let mut removed = false;
        for found in all.iter().filter(|m| local_v4(m) == Some(addr)) {
            let prefix = found.header.prefix_len;
            let doomed = collateral(found, &all);
            if !doomed.is_empty() && !promote_secondaries(ifname) {
                tracing::warn!(
                    ifname, vip = %addr, prefix, also_removed = ?doomed,
                    "the VIP is the primary address of its subnet here: the kernel deletes its \
                     secondaries with it (set net.ipv4.conf.{ifname}.promote_secondaries=1 to keep them)"
                );
            }
            let req = self.handle.address().del(delete_message(found));
            match timed(
                || format!("delete {addr}/{prefix} from {ifname}"),
                req.execute(),
            )
            .await?
            {
                Ok(()) => removed = true,
                // Gone between our dump and our delete: someone else removed it.
                Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => {}
                Err(e) => {
                    return Err(VipError::Netlink(format!(
                        "delete {addr}/{prefix} from {ifname}: {e}"
                    )));
                }
            }
        }
        Ok(removed)
    }

    pub(crate) async fn is_bound(&self, ifname: &str, addr: Ipv4Addr) -> Result<bool, VipError> {
        let index = self.index(ifname).await?;
        let all = self.ipv4_entries(ifname, index).await?;
        Ok(all.iter().any(|m| local_v4(m) == Some(addr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_message_carries_local_address_broadcast_and_global_scope() {
        let msg = vip_message(7, Ipv4Addr::new(192, 168, 3, 234), 24);
        assert_eq!(msg.header.family, AddressFamily::Inet);
        assert_eq!(msg.header.index, 7);
        assert_eq!(msg.header.prefix_len, 24);
        assert_eq!(msg.header.scope, AddressScope::Universe);
        let vip = IpAddr::V4(Ipv4Addr::new(192, 168, 3, 234));
        assert_eq!(
            msg.attributes,
            vec![
                AddressAttribute::Local(vip),
                AddressAttribute::Address(vip),
                AddressAttribute::Broadcast(Ipv4Addr::new(192, 168, 3, 255)),
            ]
        );
        assert_eq!(local_v4(&msg), Some(Ipv4Addr::new(192, 168, 3, 234)));
    }

    #[test]
    fn host_and_point_to_point_prefixes_have_no_broadcast() {
        for prefix in [31, 32] {
            let msg = vip_message(1, Ipv4Addr::new(10, 0, 0, 1), prefix);
            assert!(
                !msg.attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Broadcast(_))),
                "/{prefix}"
            );
        }
        let msg = vip_message(1, Ipv4Addr::new(10, 1, 2, 3), 16);
        assert!(
            msg.attributes
                .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 1, 255, 255)))
        );
    }

    #[test]
    fn delete_message_keeps_only_what_the_kernel_matches_on() {
        let mut found = vip_message(3, Ipv4Addr::new(10, 0, 0, 9), 16);
        found
            .attributes
            .push(AddressAttribute::Label("eth0".into()));
        found.attributes.push(AddressAttribute::Flags(
            netlink_packet_route::address::AddressFlags::Permanent,
        ));
        let del = delete_message(&found);
        assert_eq!(del.header, found.header);
        assert_eq!(del.attributes.len(), 3);
        assert!(!del.attributes.iter().any(|a| matches!(
            a,
            AddressAttribute::Broadcast(_) | AddressAttribute::Flags(_)
        )));
    }

    #[test]
    fn deleting_a_primary_takes_its_secondaries() {
        let secondary = |mut m: AddressMessage| {
            m.header.flags = AddressHeaderFlags::Secondary;
            m
        };
        let vip = vip_message(2, Ipv4Addr::new(192, 168, 3, 234), 24);
        let own = secondary(vip_message(2, Ipv4Addr::new(192, 168, 3, 35), 24));
        let other_net = secondary(vip_message(2, Ipv4Addr::new(10, 0, 0, 1), 24));
        let other_len = secondary(vip_message(2, Ipv4Addr::new(192, 168, 3, 36), 25));
        let all = vec![vip.clone(), own.clone(), other_net, other_len];
        assert_eq!(collateral(&vip, &all), vec![Ipv4Addr::new(192, 168, 3, 35)]);
        // A secondary VIP (the usual case: own address first) takes nothing with it.
        let vip2 = secondary(vip.clone());
        let own2 = vip_message(2, Ipv4Addr::new(192, 168, 3, 35), 24);
        assert!(collateral(&vip2, &[own2, vip2.clone()]).is_empty());
    }

    #[test]
    fn local_address_wins_over_peer_address() {
        let mut msg = AddressMessage::default();
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(Ipv4Addr::new(
                10, 0, 0, 2,
            ))));
        assert_eq!(local_v4(&msg), Some(Ipv4Addr::new(10, 0, 0, 2)));
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(
                10, 0, 0, 1,
            ))));
        assert_eq!(local_v4(&msg), Some(Ipv4Addr::new(10, 0, 0, 1)));
    }
}
