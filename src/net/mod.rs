//! Interface discovery.
//!
//! The failover defaults of INFINI Gateway are defined in terms of "the first device
//! holding the first non-loopback IPv4 address". This module takes one snapshot of
//! the host's IPv4 addresses (via `if-addrs`, i.e. `getifaddrs(3)`) in the kernel's
//! order, so that the rule can be applied — and unit-tested on made-up snapshots.

use std::net::Ipv4Addr;

/// One IPv4 address on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub ifname: String,
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub loopback: bool,
}

impl IfAddr {
    /// An address given as `addr/prefix` (a prefix over 32 counts as 32): how
    /// tests and examples write a made-up host. Loopback is inferred from the
    /// address.
    pub fn new(ifname: &str, addr: Ipv4Addr, prefix: u8) -> IfAddr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0);
        IfAddr {
            ifname: ifname.to_string(),
            addr,
            netmask: Ipv4Addr::from(bits),
            loopback: addr.is_loopback(),
        }
    }
}

/// The host's IPv4 addresses, in the order the kernel lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interfaces {
    pub addrs: Vec<IfAddr>,
}

impl Interfaces {
    /// Snapshot the running host.
    pub fn current() -> std::io::Result<Interfaces> {
        let mut addrs = Vec::new();
        for iface in if_addrs::get_if_addrs()? {
            if let if_addrs::IfAddr::V4(v4) = &iface.addr {
                addrs.push(IfAddr {
                    ifname: iface.name.clone(),
                    addr: v4.ip,
                    netmask: v4.netmask,
                    // `is_loopback` looks at the address only: the VIP kept on
                    // `lo` during a handover (failover::handover) would make `lo`
                    // look like a LAN interface to the `interface` default.
                    loopback: iface.is_loopback() || iface.name == "lo",
                });
            }
        }
        Ok(Interfaces { addrs })
    }

    /// The first non-loopback IPv4 address of the host.
    pub fn first_non_loopback(&self) -> Option<&IfAddr> {
        self.addrs.iter().find(|a| !a.loopback)
    }

    /// The first IPv4 address on `ifname`, if the interface has any.
    pub fn first_on(&self, ifname: &str) -> Option<&IfAddr> {
        self.addrs.iter().find(|a| a.ifname == ifname)
    }

    /// All addresses on `ifname`.
    pub fn on(&self, ifname: &str) -> impl Iterator<Item = &IfAddr> {
        self.addrs.iter().filter(move |a| a.ifname == ifname)
    }

    /// The entry holding `addr`, on any interface.
    pub fn find(&self, addr: Ipv4Addr) -> Option<&IfAddr> {
        self.addrs.iter().find(|a| a.addr == addr)
    }

    /// Whether an interface of that name exists (it may hold no IPv4 address, in which
    /// case `if-addrs` does not list it; ask the kernel directly).
    pub fn exists(&self, ifname: &str) -> bool {
        self.addrs.iter().any(|a| a.ifname == ifname) || interface_index(ifname).is_some()
    }
}

/// The kernel's index for an interface name, or `None` if there is no such interface.
pub fn interface_index(ifname: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(ifname).ok()
}

/// The IPv4 default gateway reached through `ifname`, asked from the kernel's routing
/// table over rtnetlink (a dump of the IPv4 routes; the default route is the one with
/// destination prefix length 0, and it must leave through `ifname`). Byte order is
/// netlink's business, not ours: `/proc/net/route` prints host-endian hex, which a
/// parser can only get right on one kind of host. `None` when there is no such route
/// or the kernel cannot be asked.
#[cfg(target_os = "linux")]
pub async fn default_gateway(ifname: &str) -> Option<Ipv4Addr> {
    use futures::TryStreamExt;
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};
    let index = interface_index(ifname)?;
    let (conn, handle, _) = rtnetlink::new_connection().ok()?;
    let conn = tokio::spawn(conn);
    let dump = async {
        let mut routes = handle
            .route()
            .get(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let mut found = None;
        while let Ok(Some(r)) = routes.try_next().await {
            if r.header.destination_prefix_length != 0
                || r.header.table != RouteHeader::RT_TABLE_MAIN
            {
                continue;
            }
            let oif = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            let gw = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                _ => None,
            });
            if let (Some(i), Some(g)) = (oif, gw)
                && i == index
                && found.is_none()
            {
                found = Some(g);
            }
        }
        found
    };
    let found = tokio::time::timeout(std::time::Duration::from_secs(3), dump)
        .await
        .ok()
        .flatten();
    conn.abort();
    found
}

/// Elsewhere the daemon has no route lookup: it probes only configured targets.
#[cfg(not(target_os = "linux"))]
pub async fn default_gateway(_ifname: &str) -> Option<Ipv4Addr> {
    None
}

/// Prefix length of a contiguous netmask, or `None` if the mask has holes.
pub fn prefix_len(netmask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(netmask);
    let ones = bits.leading_ones();
    if bits.checked_shl(ones).unwrap_or(0) == 0 {
        Some(ones as u8)
    } else {
        None
    }
}

/// The network address of `addr` under `netmask`.
pub fn network(addr: Ipv4Addr, netmask: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) & u32::from(netmask))
}

/// The directed broadcast address of `addr`'s subnet.
pub fn broadcast(addr: Ipv4Addr, netmask: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) | !u32::from(netmask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 254, 0)), Some(23));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(prefix_len(Ipv4Addr::new(0, 255, 255, 255)), None);
    }

    #[test]
    fn ifaddr_from_prefix() {
        let a = IfAddr::new("eth0", Ipv4Addr::new(10, 1, 0, 5), 16);
        assert_eq!(a.netmask, Ipv4Addr::new(255, 255, 0, 0));
        assert!(!a.loopback);
        assert!(IfAddr::new("lo", Ipv4Addr::LOCALHOST, 8).loopback);
        assert_eq!(IfAddr::new("x", a.addr, 0).netmask, Ipv4Addr::UNSPECIFIED);
        assert_eq!(IfAddr::new("x", a.addr, 40).netmask, Ipv4Addr::BROADCAST);
    }

    #[test]
    fn subnet_math() {
        let a = Ipv4Addr::new(192, 168, 3, 35);
        let m = Ipv4Addr::new(255, 255, 255, 0);
        assert_eq!(network(a, m), Ipv4Addr::new(192, 168, 3, 0));
        assert_eq!(broadcast(a, m), Ipv4Addr::new(192, 168, 3, 255));
    }
}
