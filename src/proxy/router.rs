//! The router: how a handler reaches a target address — directly, through GOST's
//! `interface` option (the network exit), with a connect timeout.
//!
//! `interface` is a list tried in order (parsed by the config: see
//! [`Interface`]): an interface name binds the socket to that device
//! (`SO_BINDTODEVICE`), an address binds it to that source address. An entry
//! marked strict with a trailing `!` ends the list when it fails.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

pub use crate::config::service::interface::{Exit, Interface, Via};

#[derive(Debug, Clone)]
pub struct Router {
    pub connect_timeout: Duration,
    /// GOST's `interface`, as the config parsed it. Empty: the kernel chooses.
    pub exits: Vec<Exit>,
    /// GOST's `hosts:` and `resolver:` for the names dialled (default: the system's).
    pub resolve: super::resolve::Resolve,
}

/// One entry of the `interface` list.
impl Default for Router {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            exits: Vec::new(),
            resolve: Default::default(),
        }
    }
}

impl Router {
    /// A router with this connect timeout and GOST's `interface` exits (none:
    /// the kernel chooses).
    pub fn new(connect_timeout: Duration, interface: Option<&Interface>) -> Router {
        Router {
            connect_timeout,
            exits: interface.map(|i| i.exits.clone()).unwrap_or_default(),
            resolve: Default::default(),
        }
    }

    /// Connect to `host:port` (a name is resolved; each address is tried).
    pub async fn connect(&self, target: &str) -> io::Result<TcpStream> {
        let addrs =
            match tokio::time::timeout(self.connect_timeout, self.resolve.lookup(target)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("resolving {target} timed out"),
                    ));
                }
            };
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{target} resolved to no address"),
        );
        for addr in addrs {
            match self.connect_addr(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Connect to one address, through the configured exits in order.
    pub async fn connect_addr(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        if self.exits.is_empty() {
            return self.attempt(addr, None).await;
        }
        let mut last = io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("no interface entry fits {addr}"),
        );
        for exit in &self.exits {
            // An IPv4 source cannot reach an IPv6 target and vice versa.
            if let Via::Source(ip) = exit.via
                && ip.is_ipv4() != addr.is_ipv4()
            {
                continue;
            }
            match self.attempt(addr, Some(exit)).await {
                Ok(s) => return Ok(s),
                Err(e) if exit.strict => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn attempt(&self, addr: SocketAddr, exit: Option<&Exit>) -> io::Result<TcpStream> {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        sock.set_nodelay(true)?;
        match exit.map(|e| &e.via) {
            Some(Via::Source(ip)) => sock.bind(SocketAddr::new(*ip, 0))?,
            #[cfg(target_os = "linux")]
            Some(Via::Device(dev)) => sock.bind_device(Some(dev.as_bytes()))?,
            #[cfg(not(target_os = "linux"))]
            Some(Via::Device(dev)) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("binding to interface {dev} needs Linux"),
                ));
            }
            None => {}
        }
        match tokio::time::timeout(self.connect_timeout, sock.connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connect to {addr} timed out after {:?}",
                    self.connect_timeout
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(s: &str) -> Interface {
        Interface::parse(s).unwrap()
    }

    #[tokio::test]
    async fn connects_from_chosen_source_and_stops_at_strict() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let r = Router::new(Duration::from_secs(2), Some(&iface("127.0.0.7")));
        let target = addr.to_string();
        let (c, a) = tokio::join!(r.connect(&target), l.accept());
        c.unwrap();
        assert_eq!(a.unwrap().1.ip().to_string(), "127.0.0.7");
        // 192.0.2.9 is not local: bind fails; strict stops before "lo".
        let r = Router::new(Duration::from_secs(2), Some(&iface("192.0.2.9!,lo")));
        assert!(r.connect_addr(addr).await.is_err());
        let r = Router::new(Duration::from_secs(2), Some(&iface("192.0.2.9,lo")));
        r.connect_addr(addr).await.unwrap();
    }
}
