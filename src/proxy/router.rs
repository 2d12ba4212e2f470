//! The router: how a handler reaches a target address — directly, through GOST's
//! `interface` option (the network exit), with a connect timeout.
//!
//! `interface` is a list tried in order: an interface name binds the socket to
//! that device (`SO_BINDTODEVICE`), an address binds it to that source address.
//! An entry marked strict with a trailing `!` ends the list when it fails, as in
//! GOST: `interface: "192.168.0.100,192.168.0.101!,192.168.0.102"` never reaches
//! `.102` if `.101` fails.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Clone)]
pub struct Router {
    pub connect_timeout: Duration,
    /// GOST's `interface`, parsed. Empty: the kernel chooses.
    pub exits: Vec<Exit>,
}

/// One entry of the `interface` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub via: Via,
    /// If this entry fails, do not try the next.
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Device(String),
    Source(IpAddr),
}

impl Default for Router {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            exits: Vec::new(),
        }
    }
}

/// Parse GOST's `interface` value: `eth0`, `192.168.0.1`, `fd::1,192.168.0.2!`.
pub fn parse_interface(value: &str) -> Vec<Exit> {
    value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, strict) = match e.strip_suffix('!') {
                Some(n) => (n, true),
                None => (e, false),
            };
            let via = match name.parse::<IpAddr>() {
                Ok(ip) => Via::Source(ip),
                Err(_) => Via::Device(name.to_string()),
            };
            Exit { via, strict }
        })
        .collect()
}

impl Router {
    pub fn new(connect_timeout: Duration, interface: Option<&str>) -> Router {
        Router {
            connect_timeout,
            exits: interface.map(parse_interface).unwrap_or_default(),
        }
    }

    /// Connect to `host:port` (a name is resolved; each address is tried).
    pub async fn connect(&self, target: &str) -> io::Result<TcpStream> {
        let addrs =
            match tokio::time::timeout(self.connect_timeout, tokio::net::lookup_host(target)).await
            {
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

    #[test]
    fn parses_interface_lists() {
        let e = parse_interface("eth0, 192.168.0.1!,fd::1");
        assert_eq!(
            e[0],
            Exit {
                via: Via::Device("eth0".into()),
                strict: false
            }
        );
        assert_eq!(
            e[1],
            Exit {
                via: Via::Source("192.168.0.1".parse().unwrap()),
                strict: true
            }
        );
        assert_eq!(e[2].via, Via::Source("fd::1".parse().unwrap()));
    }

    #[tokio::test]
    async fn connects_from_chosen_source_and_stops_at_strict() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let r = Router::new(Duration::from_secs(2), Some("127.0.0.7"));
        let target = addr.to_string();
        let (c, a) = tokio::join!(r.connect(&target), l.accept());
        c.unwrap();
        assert_eq!(a.unwrap().1.ip().to_string(), "127.0.0.7");
        // 192.0.2.9 is not local: bind fails; strict stops before "lo".
        let r = Router::new(Duration::from_secs(2), Some("192.0.2.9!,lo"));
        assert!(r.connect_addr(addr).await.is_err());
        let r = Router::new(Duration::from_secs(2), Some("192.0.2.9,lo"));
        r.connect_addr(addr).await.unwrap();
    }
}
