//! The `socks5` and `socks4` handlers.
//!
//! ```yaml
//! handler:
//!   type: socks5
//!   auth: {username: user, password: pass}   # optional: RFC 1929
//!   metadata:
//!     readTimeout: 15s      # the whole handshake must finish by then
//!     udp: true             # allow UDP ASSOCIATE (off by default, as in GOST)
//!     udpBufferSize: 4096   # largest datagram relayed, header included
//! ```
//!
//! # SOCKS5 (RFC 1928) in one picture
//!
//! ```text
//! client                                   proxy
//!   | 05 n m1..mn          (greeting)  ->   |
//!   | <- 05 m              (chosen method)  |   m = 02 if auth is configured, else 00
//!   | 01 ul user pl pass   (RFC 1929)  ->   |   only when m = 02
//!   | <- 01 00|01          (auth result)    |
//!   | 05 cmd 00 atyp addr port         ->   |   cmd: 01 CONNECT, 03 UDP ASSOCIATE
//!   | <- 05 rep 00 atyp bnd.addr bnd.port   |
//! ```
//!
//! The greeting, authentication and request together must arrive within
//! `readTimeout`; a client that stalls is dropped and counted as
//! `handshake_timeout`. After a successful CONNECT the bytes are relayed until both
//! sides close.
//!
//! # UDP ASSOCIATE
//!
//! The proxy binds one UDP socket per association, on the address the client
//! reached us on (so the reply's BND.ADDR is reachable, e.g. the VIP), and tells
//! the client its port. The client then sends datagrams prefixed with a SOCKS
//! header naming the destination; the proxy strips the header and sends the payload
//! on. Replies come back wrapped in a header naming their source. Rules:
//!
//! * The client is the first sender whose IP equals the TCP client's IP; after that
//!   only that exact `ip:port` is treated as the client.
//! * Replies are accepted only from addresses the client has sent to (no stranger
//!   can inject datagrams into the association).
//! * Fragmented datagrams (FRAG ≠ 0) and datagrams larger than `udpBufferSize` are
//!   dropped and counted in `udp_dropped`.
//! * The association lives exactly as long as the TCP control connection: when the
//!   client closes it, the relay socket is closed.
//!
//! # SOCKS4 and 4a
//!
//! `04 01 port ip userid 00 [host 00]`: CONNECT only. An IP of `0.0.0.x` (x ≠ 0)
//! means 4a: a host name follows the user id. SOCKS4 has no password, so when
//! `auth` carries a password, SOCKS4 requests are refused (reply 91); with an empty
//! password the user id must equal the configured username.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::net::UdpSocket;

use crate::proxy::chain::stream::Outbound;

use super::conn::BufConn;
use super::{
    ConnInfo, Context, FromOptions, Handler, HandlerError, HandlerOptions, HandlerStats, Io,
    Metadata, Outcome, Protocol, join_host_port,
};
pub use crate::config::service::handler::{Socks4Metadata, Socks5Metadata};
use crate::proxy::egress;
use crate::proxy::stats::inc;

pub(crate) const VERSION5: u8 = 0x05;
pub(crate) const METHOD_NONE: u8 = 0x00;
pub(crate) const METHOD_USERPASS: u8 = 0x02;
const METHOD_UNACCEPTABLE: u8 = 0xFF;

pub(crate) const CMD_CONNECT: u8 = 0x01;
pub(crate) const CMD_UDP_ASSOCIATE: u8 = 0x03;

pub(crate) const ATYP_IPV4: u8 = 0x01;
pub(crate) const ATYP_DOMAIN: u8 = 0x03;
pub(crate) const ATYP_IPV6: u8 = 0x04;

/// RFC 1928 §6 reply codes.
pub mod rep {
    pub const SUCCEEDED: u8 = 0x00;
    pub const GENERAL_FAILURE: u8 = 0x01;
    pub const NOT_ALLOWED: u8 = 0x02;
    pub const NETWORK_UNREACHABLE: u8 = 0x03;
    pub const HOST_UNREACHABLE: u8 = 0x04;
    pub const CONNECTION_REFUSED: u8 = 0x05;
    pub const TTL_EXPIRED: u8 = 0x06;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;
}

/// SOCKS4 reply codes.
pub(crate) const SOCKS4_GRANTED: u8 = 90;
const SOCKS4_REJECTED: u8 = 91;

/// Idle time before TCP keepalive probes start on a UDP association's control
/// connection; with 3 probes 10 s apart a vanished client is noticed in ~90 s.
const UDP_CONTROL_KEEPALIVE: Duration = Duration::from_secs(60);
/// Domain names resolved for UDP destinations are cached per association.
const UDP_DNS_CACHE: usize = 256;
/// Distinct destinations remembered per association (replies are accepted from
/// these only); the set is reset when full rather than growing without bound.
const UDP_MAX_DESTINATIONS: usize = 4096;

/// The `handler:` section of a `socks5` service, minus `type`.
pub type Socks5HandlerOptions = HandlerOptions<Socks5Metadata>;

/// The `handler:` section of a `socks4` service, minus `type`.
pub type Socks4HandlerOptions = HandlerOptions<Socks4Metadata>;

/// A SOCKS address: what the client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Ip(SocketAddr),
    Domain(String, u16),
}

impl Address {
    /// `host:port` for the router.
    fn to_target(&self) -> String {
        match self {
            Address::Ip(a) => a.to_string(),
            Address::Domain(h, p) => join_host_port(h, *p),
        }
    }
}

/// Append the SOCKS5 encoding (ATYP, address, port) of `addr`.
pub(crate) fn encode_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn reply5(code: u8, bound: SocketAddr) -> Vec<u8> {
    let mut out = vec![VERSION5, code, 0x00];
    encode_addr(&mut out, bound);
    out
}

fn unspecified() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
}

/// The RFC 1928 reply code that best describes a failed connect.
fn connect_error_code(e: &io::Error, target: &Address) -> u8 {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => rep::CONNECTION_REFUSED,
        io::ErrorKind::NetworkUnreachable => rep::NETWORK_UNREACHABLE,
        io::ErrorKind::HostUnreachable => rep::HOST_UNREACHABLE,
        io::ErrorKind::TimedOut => rep::TTL_EXPIRED,
        io::ErrorKind::PermissionDenied => rep::NOT_ALLOWED,
        // For a name, anything else is almost always resolution failing.
        _ if matches!(target, Address::Domain(..)) => rep::HOST_UNREACHABLE,
        _ => rep::GENERAL_FAILURE,
    }
}

/// Parse ATYP + address + port from a UDP datagram header. Returns the address
/// and the header length.
fn parse_udp_addr(data: &[u8]) -> Option<(Address, usize)> {
    let atyp = *data.first()?;
    let (addr, len) = match atyp {
        ATYP_IPV4 => {
            let b: [u8; 4] = data.get(1..5)?.try_into().ok()?;
            let port = u16::from_be_bytes(data.get(5..7)?.try_into().ok()?);
            (
                Address::Ip(SocketAddr::new(Ipv4Addr::from(b).into(), port)),
                7,
            )
        }
        ATYP_IPV6 => {
            let b: [u8; 16] = data.get(1..17)?.try_into().ok()?;
            let port = u16::from_be_bytes(data.get(17..19)?.try_into().ok()?);
            (
                Address::Ip(SocketAddr::new(Ipv6Addr::from(b).into(), port)),
                19,
            )
        }
        ATYP_DOMAIN => {
            let n = usize::from(*data.get(1)?);
            let host = std::str::from_utf8(data.get(2..2 + n)?).ok()?;
            let port = u16::from_be_bytes(data.get(2 + n..4 + n)?.try_into().ok()?);
            if host.is_empty() {
                return None;
            }
            (Address::Domain(host.to_string(), port), 4 + n)
        }
        _ => return None,
    };
    Some((addr, len))
}

/// A parsed SOCKS5 request.
struct Request {
    cmd: u8,
    addr: Address,
}

/// A SOCKS protocol, its version chosen by its metadata: [`Socks5`] or [`Socks4`].
pub struct Socks<M> {
    opts: HandlerOptions<M>,
}

/// The SOCKS5 protocol of a [`Socks5Handler`].
pub type Socks5 = Socks<Socks5Metadata>;

/// A SOCKS5 proxy for one service: see [`Handler`] for its use.
pub type Socks5Handler = Handler<Socks5>;

/// The SOCKS4/4a protocol of a [`Socks4Handler`].
pub type Socks4 = Socks<Socks4Metadata>;

/// A SOCKS4/4a proxy for one service (CONNECT only): see [`Handler`] for its use.
pub type Socks4Handler = Handler<Socks4>;

impl<M: Metadata> FromOptions for Socks<M>
where
    Self: Protocol,
{
    type Metadata = M;

    fn from_options(opts: HandlerOptions<M>) -> Self {
        Self { opts }
    }
}

impl Protocol for Socks5 {
    fn kind(&self) -> &'static str {
        "socks5"
    }

    async fn serve<S: Io>(&self, ctx: &Context, mut client: BufConn<S>, conn: ConnInfo) -> Outcome {
        let limit = self.opts.metadata.read_timeout;
        let req = within(&conn, limit, self.handshake(&mut client)).await?;
        inc(&ctx.stats.requests);
        tracing::debug!(peer = %conn.peer, cmd = req.cmd, target = ?req.addr, "socks5 request");
        match req.cmd {
            CMD_CONNECT => {
                let reply = |r: Result<&Outbound, &io::Error>| match r {
                    Ok(upstream) => {
                        let bound = upstream.local_addr().unwrap_or_else(unspecified);
                        reply5(rep::SUCCEEDED, bound)
                    }
                    Err(e) => reply5(connect_error_code(e, &req.addr), unspecified()),
                };
                connect(ctx, client, &req.addr, conn.peer.ip(), reply).await
            }
            CMD_UDP_ASSOCIATE if self.opts.metadata.udp => {
                self.udp_associate(ctx, client, conn).await
            }
            other => {
                client
                    .write_all(&reply5(rep::COMMAND_NOT_SUPPORTED, unspecified()))
                    .await?;
                Err(HandlerError::Unsupported(match other {
                    CMD_UDP_ASSOCIATE => "UDP ASSOCIATE (metadata.udp is false)".to_string(),
                    0x02 => "BIND".to_string(),
                    c => format!("SOCKS5 command {c:#04x}"),
                }))
            }
        }
    }
}

impl Socks5 {
    /// Greeting, authentication and request.
    async fn handshake<S: Io>(&self, client: &mut BufConn<S>) -> Result<Request, HandlerError> {
        let version = client.take_u8().await?;
        if version != VERSION5 {
            return Err(HandlerError::BadRequest(format!(
                "SOCKS version {version:#04x}, expected 0x05"
            )));
        }
        let n = usize::from(client.take_u8().await?);
        if n == 0 {
            return Err(HandlerError::BadRequest(
                "greeting offers no methods".into(),
            ));
        }
        let methods = client.take(n).await?;
        // Without configured auth we still accept a client that only offers
        // user/password (and then take any credentials): nothing is protected, and
        // refusing would only break such clients.
        let method = if self.opts.auth.is_some() {
            methods
                .contains(&METHOD_USERPASS)
                .then_some(METHOD_USERPASS)
        } else if methods.contains(&METHOD_NONE) {
            Some(METHOD_NONE)
        } else {
            methods
                .contains(&METHOD_USERPASS)
                .then_some(METHOD_USERPASS)
        };
        let Some(method) = method else {
            client.write_all(&[VERSION5, METHOD_UNACCEPTABLE]).await?;
            return Err(if self.opts.auth.is_some() {
                HandlerError::AuthFailed
            } else {
                HandlerError::BadRequest("no acceptable authentication method".into())
            });
        };
        client.write_all(&[VERSION5, method]).await?;

        if method == METHOD_USERPASS {
            // RFC 1929: VER=1 ULEN UNAME PLEN PASSWD.
            let ver = client.take_u8().await?;
            if ver != 0x01 {
                return Err(HandlerError::BadRequest(format!(
                    "username/password version {ver:#04x}, expected 0x01"
                )));
            }
            let ulen = usize::from(client.take_u8().await?);
            let user = client.take(ulen).await?;
            let plen = usize::from(client.take_u8().await?);
            let pass = client.take(plen).await?;
            let ok = self
                .opts
                .auth
                .as_ref()
                .is_none_or(|a| a.matches(&user, &pass));
            client
                .write_all(&[0x01, if ok { 0x00 } else { 0x01 }])
                .await?;
            if !ok {
                return Err(HandlerError::AuthFailed);
            }
        }

        let head = client.take(4).await?;
        if head[0] != VERSION5 {
            return Err(HandlerError::BadRequest(format!(
                "request version {:#04x}, expected 0x05",
                head[0]
            )));
        }
        let cmd = head[1];
        let addr = match head[3] {
            ATYP_IPV4 => {
                let b = client.take(6).await?;
                let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
                Address::Ip(SocketAddr::new(ip.into(), u16::from_be_bytes([b[4], b[5]])))
            }
            ATYP_IPV6 => {
                let b = client.take(18).await?;
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&b[..16]);
                let port = u16::from_be_bytes([b[16], b[17]]);
                Address::Ip(SocketAddr::new(Ipv6Addr::from(octets).into(), port))
            }
            ATYP_DOMAIN => {
                let n = usize::from(client.take_u8().await?);
                let b = client.take(n + 2).await?;
                let host = std::str::from_utf8(&b[..n]).ok().filter(|h| {
                    !h.is_empty()
                        && h.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                });
                let Some(host) = host else {
                    client
                        .write_all(&reply5(rep::GENERAL_FAILURE, unspecified()))
                        .await?;
                    return Err(HandlerError::BadRequest("malformed domain name".into()));
                };
                Address::Domain(host.to_string(), u16::from_be_bytes([b[n], b[n + 1]]))
            }
            atyp => {
                client
                    .write_all(&reply5(rep::ADDRESS_TYPE_NOT_SUPPORTED, unspecified()))
                    .await?;
                return Err(HandlerError::BadRequest(format!(
                    "address type {atyp:#04x}"
                )));
            }
        };
        Ok(Request { cmd, addr })
    }

    async fn udp_associate<S: Io>(
        &self,
        ctx: &Context,
        mut client: BufConn<S>,
        conn: ConnInfo,
    ) -> Outcome {
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; bind the
        // relay on the plain IPv4 address so the reply carries an IPv4 BND.ADDR.
        let relay_ip = canonical_ip(conn.local.ip());
        let socket = match UdpSocket::bind(SocketAddr::new(relay_ip, 0)).await {
            Ok(s) => s,
            Err(e) => {
                client
                    .write_all(&reply5(rep::GENERAL_FAILURE, unspecified()))
                    .await?;
                return Err(HandlerError::Target {
                    target: format!("udp relay on {relay_ip}"),
                    source: e,
                });
            }
        };
        // GOST's `interface`: datagrams to targets leave through the service's
        // exit, from a second socket; without one the relay socket sends too.
        let out = if ctx.router.exits.is_empty() {
            None
        } else {
            match egress::udp_unconnected(&ctx.router.exits, relay_ip.is_ipv4()).await {
                Ok(s) => Some(s),
                Err(e) => {
                    client
                        .write_all(&reply5(rep::GENERAL_FAILURE, unspecified()))
                        .await?;
                    return Err(HandlerError::Target {
                        target: "udp relay through the service's interface".into(),
                        source: e,
                    });
                }
            }
        };
        let bound = socket.local_addr()?;
        // The association lives as long as the control connection, so a client
        // that vanishes without closing it (power loss, NAT timeout) would pin a
        // UDP socket forever. TCP keepalive notices the dead peer.
        if let Some(tcp) = client.as_tcp() {
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(UDP_CONTROL_KEEPALIVE)
                .with_interval(Duration::from_secs(10))
                .with_retries(3);
            if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
                tracing::debug!(peer = %conn.peer, "cannot enable TCP keepalive: {e}");
            }
        }
        client.write_all(&reply5(rep::SUCCEEDED, bound)).await?;
        inc(&ctx.stats.udp_associations);
        tracing::debug!(peer = %conn.peer, relay = %bound, "socks5 udp association");

        let mut assoc = UdpAssociation {
            socket,
            out,
            client_ip: canonical_ip(conn.peer.ip()),
            client: None,
            destinations: HashSet::new(),
            dns: HashMap::new(),
            names: &ctx.router.names,
            stats: &ctx.stats,
        };
        let mut buf = vec![0u8; self.opts.metadata.udp_buffer_size + 1];
        loop {
            tokio::select! {
                read = client.fill() => {
                    // RFC 1928 §7: the association ends with the TCP connection.
                    // Anything the client writes on it meanwhile is ignored.
                    match read {
                        Ok(0) => return Ok(()),
                        Ok(_) => {
                            let n = client.buffered().len();
                            client.consume(n);
                        }
                        Err(e) => return Err(HandlerError::Client(e)),
                    }
                }
                recv = assoc.recv_from(&mut buf) => {
                    match recv {
                        Ok((n, from)) if n < buf.len() => assoc.on_datagram(&buf[..n], from).await,
                        Ok(_) => inc(&ctx.stats.udp_dropped),
                        // An ICMP error for an earlier send surfaces here on Linux;
                        // it concerns one destination, not the association.
                        Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable) => {}
                        Err(e) => return Err(HandlerError::Target {
                            target: format!("udp relay {bound}"),
                            source: e,
                        }),
                    }
                }
            }
        }
    }
}

/// One UDP association's state.
struct UdpAssociation<'a> {
    /// Bound where the client reached the service: takes the client's
    /// datagrams and sends it the replies.
    socket: UdpSocket,
    /// Bound to the service's `interface` exit, when it has one: sends to the
    /// targets and takes their replies. `None`: `socket` does both.
    out: Option<UdpSocket>,
    client_ip: IpAddr,
    /// Learned from the first datagram sent from `client_ip`.
    client: Option<SocketAddr>,
    destinations: HashSet<SocketAddr>,
    dns: HashMap<(String, u16), SocketAddr>,
    /// The service's `hosts`/`resolver` (GOST's), as for its TCP targets.
    names: &'a crate::proxy::resolve::Resolve,
    stats: &'a HandlerStats,
}

/// `::ffff:a.b.c.d` and `a.b.c.d` are the same client.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

impl UdpAssociation<'_> {
    /// The socket that talks to targets.
    fn out(&self) -> &UdpSocket {
        self.out.as_ref().unwrap_or(&self.socket)
    }

    /// The next datagram on either socket, into one buffer.
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let Some(out) = &self.out else {
            return self.socket.recv_from(buf).await;
        };
        loop {
            let ready = tokio::select! {
                r = self.socket.readable() => r.map(|()| &self.socket),
                r = out.readable() => r.map(|()| out),
            }?;
            match ready.try_recv_from(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    async fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        let from = canonical(from);
        let from_client = match self.client {
            Some(c) => c == from,
            None => from.ip() == self.client_ip,
        };
        if from_client {
            self.client = Some(from);
            self.client_datagram(data).await;
        } else if let Some(client) = self.client
            && self.destinations.contains(&from)
        {
            let mut out = Vec::with_capacity(data.len() + 22);
            out.extend_from_slice(&[0, 0, 0]);
            encode_addr(&mut out, from);
            out.extend_from_slice(data);
            match self.socket.send_to(&out, client).await {
                Ok(_) => inc(&self.stats.udp_datagrams_in),
                Err(_) => inc(&self.stats.udp_dropped),
            }
        } else {
            inc(&self.stats.udp_dropped);
        }
    }

    /// `RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA` → send DATA to DST.
    async fn client_datagram(&mut self, data: &[u8]) {
        let parsed = match data {
            [0, 0, 0, rest @ ..] => parse_udp_addr(rest),
            _ => None, // reserved bytes set, or a fragment: not supported
        };
        let Some((addr, hlen)) = parsed else {
            inc(&self.stats.udp_dropped);
            return;
        };
        let payload = &data[3 + hlen..];
        let Some(dest) = self.resolve(&addr).await else {
            inc(&self.stats.udp_dropped);
            return;
        };
        if self.destinations.len() >= UDP_MAX_DESTINATIONS {
            self.destinations.clear();
        }
        self.destinations.insert(canonical(dest));
        match self.out().send_to(payload, dest).await {
            Ok(_) => inc(&self.stats.udp_datagrams_out),
            Err(_) => inc(&self.stats.udp_dropped),
        }
    }

    async fn resolve(&mut self, addr: &Address) -> Option<SocketAddr> {
        match addr {
            Address::Ip(a) => Some(*a),
            Address::Domain(host, port) => {
                let key = (host.clone(), *port);
                if let Some(a) = self.dns.get(&key) {
                    return Some(*a);
                }
                let want_v4 = self.out().local_addr().ok()?.is_ipv4();
                let found = (self.names)
                    .lookup(&join_host_port(host, *port))
                    .await
                    .ok()?
                    .into_iter()
                    .find(|a| a.is_ipv4() == want_v4)?;
                if self.dns.len() >= UDP_DNS_CACHE {
                    self.dns.clear();
                }
                self.dns.insert(key, found);
                Some(found)
            }
        }
    }
}

impl Protocol for Socks4 {
    fn kind(&self) -> &'static str {
        "socks4"
    }

    async fn serve<S: Io>(&self, ctx: &Context, mut client: BufConn<S>, conn: ConnInfo) -> Outcome {
        let timeout = self.opts.metadata.read_timeout;
        let (cmd, addr, user) = within(&conn, timeout, read_socks4(&mut client)).await?;
        inc(&ctx.stats.requests);
        tracing::debug!(peer = %conn.peer, cmd, target = ?addr, "socks4 request");
        let reject = reply4(SOCKS4_REJECTED);
        if let Some(auth) = &self.opts.auth
            && !(auth.password.expose().is_empty() && auth.matches(&user, b""))
        {
            client.write_all(&reject).await?;
            return Err(HandlerError::AuthFailed);
        }
        if cmd != CMD_CONNECT {
            client.write_all(&reject).await?;
            return Err(HandlerError::Unsupported(format!(
                "SOCKS4 command {cmd:#04x}"
            )));
        }
        let reply = |r: Result<&Outbound, &io::Error>| {
            reply4(if r.is_ok() {
                SOCKS4_GRANTED
            } else {
                SOCKS4_REJECTED
            })
            .to_vec()
        };
        connect(ctx, client, &addr, conn.peer.ip(), reply).await
    }
}

/// A SOCKS handshake, which must be complete within `readTimeout`.
pub(super) async fn within<T>(
    conn: &ConnInfo,
    timeout: Duration,
    handshake: impl Future<Output = Result<T, HandlerError>>,
) -> Result<T, HandlerError> {
    tokio::time::timeout_at(conn.handshake_deadline(timeout), handshake)
        .await
        .unwrap_or(Err(HandlerError::HandshakeTimeout(timeout)))
}

/// CONNECT, for both SOCKS versions: reach the target, send the client the reply
/// `reply` makes of the outcome (the target connection, or why there is none),
/// then relay.
async fn connect<S: Io>(
    ctx: &Context,
    mut client: BufConn<S>,
    addr: &Address,
    peer: IpAddr,
    reply: impl FnOnce(Result<&Outbound, &io::Error>) -> Vec<u8>,
) -> Outcome {
    let target = addr.to_target();
    let mut upstream = match ctx.router.dial(&target, peer).await {
        Ok(s) => s,
        Err(e) => {
            client.write_all(&reply(Err(&e))).await?;
            return Err(HandlerError::Target { target, source: e });
        }
    };
    client.write_all(&reply(Ok(&upstream))).await?;
    ctx.tunnel(&mut client, &mut upstream, target).await
}

/// `VN=0 CD port(2) ip(4)`; clients ignore the address for CONNECT.
fn reply4(code: u8) -> [u8; 8] {
    [0, code, 0, 0, 0, 0, 0, 0]
}

/// `04 CD port ip userid 00 [host 00]` → (command, address, user id).
async fn read_socks4<S>(client: &mut BufConn<S>) -> Result<(u8, Address, Vec<u8>), HandlerError>
where
    S: AsyncRead + Unpin,
{
    let head = client.take(8).await?;
    if head[0] != 0x04 {
        return Err(HandlerError::BadRequest(format!(
            "SOCKS version {:#04x}, expected 0x04",
            head[0]
        )));
    }
    let cmd = head[1];
    let port = u16::from_be_bytes([head[2], head[3]]);
    let ip = Ipv4Addr::new(head[4], head[5], head[6], head[7]);
    let user = client.take_until_nul(256).await?.to_vec();
    let o = ip.octets();
    let addr = if o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] != 0 {
        let host = client.take_until_nul(256).await?;
        let host = std::str::from_utf8(&host)
            .ok()
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
            })
            .ok_or_else(|| HandlerError::BadRequest("malformed SOCKS4a host name".into()))?;
        Address::Domain(host.to_string(), port)
    } else {
        Address::Ip(SocketAddr::new(ip.into(), port))
    };
    Ok((cmd, addr, user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_header_parsing() {
        let mut d = vec![ATYP_IPV4, 127, 0, 0, 1, 0x1f, 0x90];
        d.extend_from_slice(b"data");
        let (a, n) = parse_udp_addr(&d).unwrap();
        assert_eq!(a, Address::Ip("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(&d[n..], b"data");

        let mut d = vec![ATYP_DOMAIN, 9];
        d.extend_from_slice(b"localhost");
        d.extend_from_slice(&[0, 53]);
        let (a, n) = parse_udp_addr(&d).unwrap();
        assert_eq!(a, Address::Domain("localhost".into(), 53));
        assert_eq!(n, d.len());

        assert!(parse_udp_addr(&[ATYP_IPV6, 0, 0]).is_none());
        assert!(parse_udp_addr(&[ATYP_DOMAIN, 200, b'a']).is_none());
        assert!(parse_udp_addr(&[ATYP_DOMAIN, 0, 0, 1]).is_none());
        assert!(parse_udp_addr(&[9]).is_none());
        assert!(parse_udp_addr(&[]).is_none());
    }

    proptest::proptest! {
        #[test]
        fn udp_header_garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Some((_, n)) = parse_udp_addr(&data) {
                proptest::prop_assert!(n <= data.len());
            }
        }
    }

    #[test]
    fn reply_encoding() {
        assert_eq!(
            reply5(0, "10.0.0.1:1080".parse().unwrap()),
            vec![5, 0, 0, 1, 10, 0, 0, 1, 0x04, 0x38]
        );
        let r = reply5(0, "[::1]:1".parse().unwrap());
        assert_eq!(r.len(), 4 + 16 + 2);
        assert_eq!(r[3], ATYP_IPV6);
    }

    #[test]
    fn mapped_addresses_are_one_client() {
        let a: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert_eq!(canonical(a), "127.0.0.1:5".parse().unwrap());
    }
}
