//! The router: how a handler reaches a target address — directly, through GOST's
//! `interface` option (the network exit), with a connect timeout — or through
//! the service's forwarding chain ([`super::chain`]). It is the one place that
//! dials: [`Router::dial`] is what handlers and forwarders call; the chain
//! itself dials its first hop through [`Router::connect_resolved`].
//!
//! `interface` is a list tried in order (parsed by the config: see
//! [`Interface`]): an interface name binds the socket to that device
//! (`SO_BINDTODEVICE`), an address binds it to that source address. An entry
//! marked strict with a trailing `!` ends the list when it fails.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use super::chain::Chain;
use super::chain::stream::Outbound;
use super::egress;

pub use crate::config::service::interface::{Exit, Interface, Via};

#[derive(Debug, Clone)]
pub struct Router {
    pub connect_timeout: Duration,
    /// GOST's `interface`, as the config parsed it. Empty: the kernel chooses.
    pub exits: Vec<Exit>,
    /// The service's `handler.chain`: connections go through it.
    pub chain: Option<Arc<Chain>>,
    /// GOST's `hosts:` and `resolver:` for the names dialled (default: the system's).
    pub names: super::resolve::Resolve,
}

/// One entry of the `interface` list.
impl Default for Router {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            exits: Vec::new(),
            chain: None,
            names: Default::default(),
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
            chain: None,
            names: Default::default(),
        }
    }

    /// The same router sending its connections through `chain`.
    pub fn with_chain(mut self, chain: Option<Arc<Chain>>) -> Router {
        self.chain = chain;
        self
    }

    /// Reach `target` (`host:port`) for a client at `client`: through the chain
    /// if the service has one, else directly. What handlers and forwarders call.
    pub async fn dial(&self, target: &str, client: IpAddr) -> io::Result<Outbound> {
        match &self.chain {
            Some(chain) => chain.dial(self, target, client).await,
            None => self.connect(target).await.map(Outbound::Tcp),
        }
    }

    /// Connect to `host:port` directly, never through the chain (a name is
    /// resolved; each address is tried).
    pub async fn connect(&self, target: &str) -> io::Result<TcpStream> {
        self.connect_via(target, &self.exits).await
    }

    /// Connect directly to `host:port`, leaving through `exits` instead of the
    /// service's own (a chain's first hop, with the node's `interface`).
    pub async fn connect_via(&self, target: &str, exits: &[Exit]) -> io::Result<TcpStream> {
        let addrs = self.resolve(target).await?;
        self.connect_resolved(&addrs, exits).await
    }

    /// The addresses of `host:port` (the service's `hosts`/`resolver`), within
    /// the connect timeout.
    pub async fn resolve(&self, target: &str) -> io::Result<Vec<SocketAddr>> {
        self.resolve_with(&self.names, target).await
    }

    /// The addresses of `host:port` by `names` (a chain node's own), within the
    /// connect timeout.
    pub async fn resolve_with(
        &self,
        names: &super::resolve::Resolve,
        target: &str,
    ) -> io::Result<Vec<SocketAddr>> {
        match tokio::time::timeout(self.connect_timeout, names.lookup(target)).await {
            Ok(r) => {
                let addrs: Vec<SocketAddr> = r?;
                if addrs.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{target} resolved to no address"),
                    ));
                }
                Ok(addrs)
            }
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("resolving {target} timed out"),
            )),
        }
    }

    /// `target` as it is passed on to a proxy by `names` (see
    /// [`super::resolve::Resolve::pin`]), within the connect timeout.
    pub async fn pin_with(
        &self,
        names: &super::resolve::Resolve,
        target: &str,
    ) -> io::Result<String> {
        tokio::time::timeout(self.connect_timeout, names.pin(target))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("resolving {target} timed out"),
                ))
            })
    }

    /// Connect to the first of `addrs` that answers, through `exits`.
    pub async fn connect_resolved(
        &self,
        addrs: &[SocketAddr],
        exits: &[Exit],
    ) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
        for addr in addrs {
            match egress::through(exits, *addr, |exit| self.attempt(*addr, exit)).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Connect to one address, through the configured exits in order (see
    /// [`egress`]: fallback order, strict `!`).
    pub async fn connect_addr(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.connect_resolved(&[addr], &self.exits).await
    }

    async fn attempt(&self, addr: SocketAddr, exit: Option<&Exit>) -> io::Result<TcpStream> {
        let sock =
            TcpSocket::from_std_stream(egress::socket(egress::Transport::Tcp, addr, exit)?.into());
        sock.set_nodelay(true)?;
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
