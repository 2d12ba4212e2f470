//! Binding listening sockets.
//!
//! Services usually listen on the floating IP, which only the master holds. A
//! plain `bind()` to an address that is not (yet) on an interface fails with
//! `EADDRNOTAVAIL`, so every listener sets `IP_FREEBIND` first: the socket binds
//! now and starts receiving the moment the address arrives. This is why a backup
//! node can keep its services bound and take over within the failover time
//! instead of re-binding after it gets the VIP.
//!
//! `SO_REUSEADDR` lets a restarted daemon re-bind while old connections sit in
//! TIME_WAIT.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};

/// Accept queue length: large, so a burst of new connections is not refused
/// while the accept loop catches up (the kernel caps it at `somaxconn`).
const BACKLOG: i32 = 4096;

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    s.set_reuse_address(true)?;
    #[cfg(target_os = "linux")]
    {
        if addr.is_ipv4() {
            s.set_freebind_v4(true)?;
        } else {
            s.set_freebind_v6(true)?;
        }
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A TCP listener on `addr`, which need not be local yet.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP)?;
    s.set_tcp_nodelay(true)?;
    s.bind(&SockAddr::from(addr))?;
    s.listen(BACKLOG)?;
    TcpListener::from_std(s.into())
}

/// A UDP socket on `addr`, which need not be local yet.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = socket(addr, Type::DGRAM, Protocol::UDP)?;
    s.bind(&SockAddr::from(addr))?;
    UdpSocket::from_std(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepted sockets inherit TCP_NODELAY from the listener, so the accept path
    /// does not set it again.
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay() {
        let l = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let (_c, a) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        assert!(a.unwrap().0.nodelay().unwrap());
    }

    /// 192.0.2.1 (TEST-NET-1) is on no interface: only IP_FREEBIND makes this bind work.
    #[tokio::test]
    async fn binds_non_local_address() {
        let l = bind_tcp("192.0.2.1:0".parse().unwrap()).unwrap();
        assert_eq!(l.local_addr().unwrap().ip().to_string(), "192.0.2.1");
        let u = bind_udp("192.0.2.1:0".parse().unwrap()).unwrap();
        assert_eq!(u.local_addr().unwrap().ip().to_string(), "192.0.2.1");
    }
}
