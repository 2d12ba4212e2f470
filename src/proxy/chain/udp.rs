//! Datagrams through a chain: a `udp` service whose `handler.chain` is one hop
//! of `socks5` nodes (RFC 1928 UDP ASSOCIATE) or of virtual nodes.
//!
//! Through a SOCKS5 node, a session opens a TCP control connection to the node
//! (its dialer applies), asks for an association, and sends each datagram to
//! the relay address the node returned, behind the RFC 1928 §7 header naming
//! the target; replies come back with the same header, which is taken off. The
//! association lives as long as its control connection, which the session
//! holds. Through a virtual node, the session's socket simply leaves by the
//! node's `interface`.
//!
//! A chain of more hops cannot carry datagrams (UDP through a TCP tunnel is no
//! standard protocol); the config refuses it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tracing::warn;

use super::connector::{ConnectError, Connector, socks};
use super::stream::Outbound;
use super::{Chain, ChainNode, Failure};
use crate::proxy::balance::Node;
use crate::proxy::egress;
use crate::proxy::router::{Exit, Router};

/// The node side of a UDP session: a socket, and for a SOCKS5 hop what wraps
/// its datagrams. Same method names as `UdpSocket`, so a session uses either.
#[derive(Debug)]
pub struct UdpBackend {
    sock: UdpSocket,
    socks: Option<SocksRelay>,
}

/// An association with a SOCKS5 node.
#[derive(Debug)]
struct SocksRelay {
    /// RSV RSV FRAG ATYP DST.ADDR DST.PORT, put in front of every datagram.
    header: Vec<u8>,
    /// The association ends when this closes: held for the session's life
    /// (never used again; the mutex makes the session shareable across threads).
    _control: std::sync::Mutex<Outbound>,
}

impl UdpBackend {
    /// A socket connected straight to the node.
    pub fn direct(sock: UdpSocket) -> UdpBackend {
        UdpBackend { sock, socks: None }
    }

    /// Send one datagram; the length returned is the payload's.
    pub async fn send(&self, data: &[u8]) -> io::Result<usize> {
        match &self.socks {
            None => self.sock.send(data).await,
            Some(r) => {
                let mut d = Vec::with_capacity(r.header.len() + data.len());
                d.extend_from_slice(&r.header);
                d.extend_from_slice(data);
                let n = self.sock.send(&d).await?;
                Ok(n.saturating_sub(r.header.len()))
            }
        }
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.sock.readable().await
    }

    /// Take one reply without waiting, its payload at the start of `buf`.
    /// Datagrams from a relay without a valid header, or fragmented (which
    /// this client does not reassemble), are dropped.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.sock.try_recv(buf)?;
            if self.socks.is_none() {
                return Ok(n);
            }
            if let Some(h) = header_len(&buf[..n]) {
                buf.copy_within(h..n, 0);
                return Ok(n - h);
            }
        }
    }
}

/// The length of the RFC 1928 §7 header of `d`; `None` if it is malformed or
/// a fragment.
fn header_len(d: &[u8]) -> Option<usize> {
    if d.len() < 4 || d[2] != 0 {
        return None;
    }
    let len = match d[3] {
        0x01 => 4 + 4 + 2,
        0x04 => 4 + 16 + 2,
        0x03 => 4 + 1 + *d.get(4)? as usize + 2,
        _ => return None,
    };
    (d.len() >= len).then_some(len)
}

impl Chain {
    /// A datagram path to `target` through the chain's (single) hop, for a
    /// client at `client`. Nodes that fail are benched and another is tried.
    pub async fn udp(
        &self,
        router: &Router,
        target: &str,
        client: IpAddr,
    ) -> io::Result<UdpBackend> {
        // As for TCP: the service's resolver/hosts, if any, resolve the target.
        let target = &router.pin_with(&router.names, target).await?;
        let hop = &self.hops[0];
        let mut tried: Vec<Arc<Node>> = Vec::new();
        let mut last = None;
        loop {
            let Some(node) = hop.balancer.pick(client, &tried) else {
                return Err(self.no_node(0, std::slice::from_ref(&tried), last));
            };
            let cn = self.node_of(0, &node);
            let exits = cn.exits.as_deref().unwrap_or(&router.exits);
            match udp_attempt(router, cn, exits, target).await {
                Ok(b) => {
                    node.connect_ok();
                    return Ok(b);
                }
                Err(Failure::Node(_, e)) => {
                    // The balancer's rule: a lone node is never benched (fail-open).
                    let benched = hop.balancer.node_failed(&node);
                    if let Some(suppressed) = self.fail_log.permit() {
                        warn!(chain = %self.name, hop = %hop.name, node = node.label(), error = %e, benched, suppressed, "chain node failed (udp); trying another");
                    }
                    tried.push(node);
                    last = Some(e);
                }
                Err(Failure::Target(e) | Failure::Local(e)) => return Err(e),
            }
        }
    }
}

async fn udp_attempt(
    router: &Router,
    node: &ChainNode,
    exits: &[Exit],
    target: &str,
) -> Result<UdpBackend, Failure> {
    let Connector::Socks5(socks5) = &node.connector else {
        // A virtual node: straight to the target, out of the node's exit.
        let addrs = router.resolve(target).await.map_err(Failure::Target)?;
        return egress::udp_connected(exits, addrs[0])
            .await
            .map(UdpBackend::direct)
            .map_err(|e| Failure::Node(0, e));
    };
    let (host, port) = super::connector::split_target(target).map_err(|e| match e {
        ConnectError::Refused(e) | ConnectError::Node(e) => Failure::Target(e),
    })?;
    let mut header = vec![0, 0, 0];
    header.extend_from_slice(&socks::encode_host(host, port).map_err(|e| match e {
        ConnectError::Refused(e) | ConnectError::Node(e) => Failure::Target(e),
    })?);
    let tcp = node
        .connect(router, exits)
        .await
        .map_err(|e| Failure::Node(0, e))?;
    let node_ip = tcp.peer_addr().map_err(|e| Failure::Node(0, e))?.ip();
    let mut control = node
        .dialer
        .wrap(Outbound::Tcp(tcp), &node.addr)
        .await
        .map_err(|e| match e {
            ConnectError::Refused(e) | ConnectError::Node(e) => Failure::Node(0, e),
        })?;
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let relay = tokio::time::timeout(node.connect_timeout, socks5.associate(&mut control, any))
        .await
        .unwrap_or_else(|_| {
            Err(ConnectError::node(
                io::ErrorKind::TimedOut,
                "no answer to UDP ASSOCIATE",
            ))
        })
        // A node that refuses the association is of no use for datagrams.
        .map_err(|e| match e {
            ConnectError::Refused(e) | ConnectError::Node(e) => Failure::Node(0, e),
        })?;
    // "Send to where you reached me": an unspecified relay address is the node's.
    let relay = if relay.ip().is_unspecified() {
        SocketAddr::new(node_ip, relay.port())
    } else {
        relay
    };
    let sock = egress::udp_connected(exits, relay)
        .await
        .map_err(|e| Failure::Node(0, e))?;
    Ok(UdpBackend {
        sock,
        socks: Some(SocksRelay {
            header,
            _control: std::sync::Mutex::new(control),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_headers() {
        assert_eq!(
            header_len(&[0, 0, 0, 1, 10, 0, 0, 1, 0, 53, b'x']),
            Some(10)
        );
        assert_eq!(
            header_len(&[0, 0, 1, 1, 10, 0, 0, 1, 0, 53]),
            None,
            "fragment"
        );
        assert_eq!(header_len(&[0, 0, 0, 3, 1, b'a', 0, 53]), Some(8));
        assert_eq!(header_len(&[0, 0, 0, 3, 9, b'a']), None);
        assert_eq!(header_len(&[0, 0, 0, 9]), None);
    }
}
