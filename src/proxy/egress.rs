//! Egress: where an outgoing socket leaves the host (GOST's `interface`).
//!
//! One implementation for every socket the services open towards a node or a
//! target — TCP connections (the router, TCP health checks), UDP sessions and
//! fire-and-forget sends, UDP health probes, the SOCKS5 UDP relay — so that
//! `interface` means the same thing everywhere.
//!
//! An `interface` value is a list of exits (parsed by the config: see
//! [`Interface`]), tried in order:
//!
//! * a **device name** (`eth1`) pins the socket to that NIC: `SO_BINDTODEVICE`
//!   on Linux, `IP_BOUND_IF` / `IPV6_BOUND_IF` on macOS (looked up by index);
//!   the kernel then picks the source address of that NIC and routes out of it;
//! * an **address** (`192.168.0.10`, `fd::1`) binds the socket to that source
//!   address, so the packets carry it and policy routing can send them out of
//!   the NIC that owns it. An address of the other family than the target is
//!   skipped (an IPv4 source cannot reach an IPv6 target).
//!
//! When an attempt through one exit fails (the bind, or the connect), the next
//! exit is tried — GOST's fallback order. An entry written with a trailing `!`
//! is **strict**: its failure ends the walk, the later entries are not tried.
//! With no `interface` at all the kernel chooses, as for any socket.
//!
//! [`through`] walks the list; [`socket`] makes one socket bound to one exit;
//! [`udp_connected`] and [`udp_unconnected`] are the two UDP shapes built from
//! them. The router builds its TCP attempts from [`through`] and [`socket`].

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::UdpSocket;

pub use crate::config::service::interface::{Exit, Interface, Via};

/// The transport of a socket made by [`socket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

/// Try `attempt` through each exit of `exits` in order, for a socket towards
/// `target`, and return the first success.
///
/// `attempt(None)` once when `exits` is empty (the kernel chooses). Source
/// addresses of the other IP family than `target` are skipped. A failure
/// through a strict exit is returned at once; otherwise the last failure is
/// returned when every exit failed.
pub async fn through<'a, T, F, Fut>(
    exits: &'a [Exit],
    target: SocketAddr,
    mut attempt: F,
) -> io::Result<T>
where
    F: FnMut(Option<&'a Exit>) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    if exits.is_empty() {
        return attempt(None).await;
    }
    let mut last = io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        format!("no interface entry fits {target} (no source address of its IP family)"),
    );
    for exit in exits.iter().filter(|e| fits(e, target.is_ipv4())) {
        match attempt(Some(exit)).await {
            Ok(t) => return Ok(t),
            Err(e) if exit.strict => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Whether `exit` can carry traffic of this family.
fn fits(exit: &Exit, v4: bool) -> bool {
    match exit.via {
        Via::Source(ip) => ip.is_ipv4() == v4,
        Via::Device(_) => true,
    }
}

/// A non-blocking socket of `transport` for reaching `target`, bound to `exit`
/// (`None`: unbound, the kernel chooses). Errors name the exit.
pub fn socket(transport: Transport, target: SocketAddr, exit: Option<&Exit>) -> io::Result<Socket> {
    let (ty, proto) = match transport {
        Transport::Tcp => (Type::STREAM, Protocol::TCP),
        Transport::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let s = Socket::new(Domain::for_address(target), ty, Some(proto))?;
    s.set_nonblocking(true)?;
    if let Some(exit) = exit {
        bind(&s, &exit.via, target.is_ipv4()).map_err(|e| named(&exit.via, e))?;
    }
    Ok(s)
}

/// Bind `s` (of the IPv4 family if `v4`) to one exit.
pub fn bind(s: &Socket, via: &Via, v4: bool) -> io::Result<()> {
    match via {
        Via::Source(ip) => s.bind(&SockAddr::from(SocketAddr::new(*ip, 0))),
        Via::Device(dev) => bind_device(s, dev, v4),
    }
}

#[cfg(target_os = "linux")]
fn bind_device(s: &Socket, dev: &str, _v4: bool) -> io::Result<()> {
    s.bind_device(Some(dev.as_bytes()))
}

/// macOS has no `SO_BINDTODEVICE`; `IP_BOUND_IF` (`IPV6_BOUND_IF`) pins a
/// socket to an interface by index, with the same effect on routing.
#[cfg(target_os = "macos")]
fn bind_device(s: &Socket, dev: &str, v4: bool) -> io::Result<()> {
    let index = nix::net::if_::if_nametoindex(dev)
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("no such interface: {e}")))?;
    let index = std::num::NonZeroU32::new(index)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such interface"))?;
    if v4 {
        s.bind_device_by_index_v4(Some(index))
    } else {
        s.bind_device_by_index_v6(Some(index))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn bind_device(_s: &Socket, _dev: &str, _v4: bool) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "binding to an interface by name needs Linux or macOS; give its address instead",
    ))
}

/// `e` with the exit it happened on, for logs: `interface eth9: No such device`.
fn named(via: &Via, e: io::Error) -> io::Error {
    let what = match via {
        Via::Device(d) => format!("interface {d}"),
        Via::Source(ip) => format!("source address {ip}"),
    };
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A UDP socket connected to `target`, leaving through the first exit of
/// `exits` that binds and connects (see [`through`]).
pub async fn udp_connected(exits: &[Exit], target: SocketAddr) -> io::Result<UdpSocket> {
    through(exits, target, |exit| async move {
        let s = UdpSocket::from_std(socket(Transport::Udp, target, exit)?.into())?;
        s.connect(target).await?;
        Ok(s)
    })
    .await
}

/// An unconnected UDP socket of one family (IPv4 if `v4`) that sends to many
/// targets — the SOCKS5 UDP relay's outbound side — bound to the first exit of
/// `exits` that binds. With no exits it is bound to the wildcard address.
///
/// Without a target there is no connect to fail, so "fails" means the bind
/// failed (the address is not on this host, the device does not exist).
pub async fn udp_unconnected(exits: &[Exit], v4: bool) -> io::Result<UdpSocket> {
    let any: SocketAddr = if v4 {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    through(exits, any, |exit| async move {
        let s = socket(Transport::Udp, any, exit)?;
        if !matches!(exit.map(|e| &e.via), Some(Via::Source(_))) {
            // Not bound yet: take a port now, so replies have somewhere to go
            // before the first send.
            s.bind(&SockAddr::from(any))?;
        }
        UdpSocket::from_std(s.into())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exits(s: &str) -> Vec<Exit> {
        Interface::parse(s).unwrap().exits
    }

    /// The fallback order and the strict rule, as the walk sees them: which
    /// exits were attempted, in which order.
    #[tokio::test]
    async fn walks_in_order_and_stops_at_strict() {
        let target: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let walk = |list: &str| {
            let list = exits(list);
            async move {
                let mut seen = Vec::new();
                let r = through(&list, target, |e| {
                    let via = e.map(|e| e.via.clone());
                    seen.push(format!("{via:?}"));
                    async move {
                        match via {
                            Some(Via::Device(d)) if d == "good" => Ok(d),
                            _ => Err(io::Error::other("down")),
                        }
                    }
                })
                .await;
                (r.ok(), seen.len())
            }
        };
        assert_eq!(walk("bad,good").await, (Some("good".into()), 2));
        assert_eq!(walk("bad!,good").await, (None, 1));
        assert_eq!(walk("good,bad").await, (Some("good".into()), 1));
        // An IPv6 source is skipped for an IPv4 target; it is not an attempt.
        assert_eq!(walk("fd::1,good").await, (Some("good".into()), 1));
        assert_eq!(walk("fd::1!").await, (None, 0));
    }

    #[tokio::test]
    async fn udp_leaves_from_the_chosen_source_and_falls_back() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        let seen = |list: &'static str| {
            let server = &server;
            async move {
                let s = udp_connected(&exits(list), target).await?;
                s.send(b"x").await?;
                let mut b = [0u8; 4];
                let (_, from) = server.recv_from(&mut b).await?;
                io::Result::Ok(from.ip().to_string())
            }
        };
        assert_eq!(seen("127.0.0.9").await.unwrap(), "127.0.0.9");
        // 192.0.2.9 (TEST-NET-1) is on no interface: the bind fails, "lo" is next.
        assert_eq!(seen("192.0.2.9,127.0.0.5").await.unwrap(), "127.0.0.5");
        let e = seen("192.0.2.9!,127.0.0.5").await.unwrap_err();
        assert!(e.to_string().contains("source address 192.0.2.9"), "{e}");
        let e = seen("nosuchnic0").await.unwrap_err();
        assert!(e.to_string().contains("interface nosuchnic0"), "{e}");

        let relay = udp_unconnected(&exits("192.0.2.9,127.0.0.6"), true)
            .await
            .unwrap();
        relay.send_to(b"y", target).await.unwrap();
        let mut b = [0u8; 4];
        let (_, from) = server.recv_from(&mut b).await.unwrap();
        assert_eq!(from.ip().to_string(), "127.0.0.6");
        let relay = udp_unconnected(&[], true).await.unwrap();
        assert_ne!(relay.local_addr().unwrap().port(), 0);
    }
}
