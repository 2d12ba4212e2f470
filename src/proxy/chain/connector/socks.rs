//! The `socks5` connector (RFC 1928 CONNECT and UDP ASSOCIATE, RFC 1929
//! username/password) and the `socks4` connector (SOCKS4a CONNECT).
//!
//! Names are sent to the node as names (ATYP 3, SOCKS4a's trailing host): the
//! last proxy resolves them, as GOST does, so a name only the far side knows
//! still works.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ConnectError, Target};
use crate::config::auth::AuthConfig;
use crate::config::chain::ConnectorConfig;
use crate::proxy::chain::stream::Outbound;
use crate::proxy::handler::socks::{
    ATYP_DOMAIN, ATYP_IPV4, ATYP_IPV6, CMD_CONNECT, CMD_UDP_ASSOCIATE, METHOD_NONE,
    METHOD_USERPASS, SOCKS4_GRANTED, VERSION5, encode_addr, rep,
};

#[derive(Debug)]
pub struct Socks5Connector {
    auth: Option<AuthConfig>,
}

impl Socks5Connector {
    pub fn new(cfg: &ConnectorConfig) -> Self {
        Self {
            auth: cfg.auth.clone(),
        }
    }

    pub async fn connect(
        &self,
        mut stream: Outbound,
        target: Target<'_>,
    ) -> Result<Outbound, ConnectError> {
        let addr = encode_host(target.host, target.port)?;
        self.request(&mut stream, CMD_CONNECT, &addr).await?;
        Ok(stream)
    }

    /// UDP ASSOCIATE on `stream` (which must stay open for the association to
    /// live): the address datagrams go to, wrapped in RFC 1928 §7 headers.
    /// `from` is where they will come from (zero: not known yet).
    pub async fn associate(
        &self,
        stream: &mut Outbound,
        from: SocketAddr,
    ) -> Result<SocketAddr, ConnectError> {
        let mut addr = Vec::new();
        encode_addr(&mut addr, from);
        self.request(stream, CMD_UDP_ASSOCIATE, &addr).await
    }

    /// Greeting, authentication, one request; returns the bound address of the reply.
    async fn request(
        &self,
        stream: &mut Outbound,
        cmd: u8,
        addr: &[u8],
    ) -> Result<SocketAddr, ConnectError> {
        let method = if self.auth.is_some() {
            METHOD_USERPASS
        } else {
            METHOD_NONE
        };
        // Greeting and request in one write when no authentication is needed
        // would save a round trip, but some servers read the greeting alone.
        let choice: [u8; 2] = exchange(stream, &[VERSION5, 1, method]).await?;
        if choice[0] != VERSION5 {
            return Err(ConnectError::node(
                io::ErrorKind::InvalidData,
                "not a SOCKS5 server (bad version in its method choice)",
            ));
        }
        match (choice[1], &self.auth) {
            (METHOD_NONE, _) => {}
            (METHOD_USERPASS, Some(a)) => {
                let (u, p) = (a.username.as_bytes(), a.password.expose().as_bytes());
                // Lengths checked at load (at most 255 each).
                let mut msg = vec![0x01, u.len() as u8];
                msg.extend_from_slice(u);
                msg.push(p.len() as u8);
                msg.extend_from_slice(p);
                let status: [u8; 2] = exchange(stream, &msg).await?;
                if status[1] != 0 {
                    return Err(ConnectError::node(
                        io::ErrorKind::PermissionDenied,
                        "the SOCKS5 server refused the credentials",
                    ));
                }
            }
            (m, _) => {
                return Err(ConnectError::node(
                    io::ErrorKind::PermissionDenied,
                    format!("the SOCKS5 server accepts none of our methods (chose {m:#04x})"),
                ));
            }
        }
        let mut req = vec![VERSION5, cmd, 0];
        req.extend_from_slice(addr);
        let head: [u8; 4] = exchange(stream, &req).await?;
        if head[0] != VERSION5 {
            return Err(ConnectError::node(
                io::ErrorKind::InvalidData,
                "not a SOCKS5 reply (bad version)",
            ));
        }
        // Read the bound address whatever the code, so nothing of it is left
        // in front of the target's bytes.
        let bound = read_addr(stream, head[3]).await?;
        if head[1] != rep::SUCCEEDED {
            return Err(refusal(head[1]));
        }
        Ok(bound)
    }
}

/// A SOCKS5 error reply as the I/O error a handler maps back to its own reply.
fn refusal(code: u8) -> ConnectError {
    let (kind, what) = match code {
        rep::CONNECTION_REFUSED => (io::ErrorKind::ConnectionRefused, "connection refused"),
        rep::NETWORK_UNREACHABLE => (io::ErrorKind::NetworkUnreachable, "network unreachable"),
        rep::HOST_UNREACHABLE => (io::ErrorKind::HostUnreachable, "host unreachable"),
        rep::TTL_EXPIRED => (io::ErrorKind::TimedOut, "TTL expired"),
        rep::NOT_ALLOWED => (io::ErrorKind::PermissionDenied, "not allowed by ruleset"),
        rep::COMMAND_NOT_SUPPORTED => (io::ErrorKind::Unsupported, "command not supported"),
        rep::ADDRESS_TYPE_NOT_SUPPORTED => {
            (io::ErrorKind::Unsupported, "address type not supported")
        }
        _ => (io::ErrorKind::Other, "general failure"),
    };
    ConnectError::refused(kind, format!("SOCKS5 server replied {code:#04x}: {what}"))
}

/// ATYP, address, port of a target: an IP literal as such, a name as a name.
pub(crate) fn encode_host(host: &str, port: u16) -> Result<Vec<u8>, ConnectError> {
    let mut out = Vec::with_capacity(host.len() + 4);
    match host.parse::<IpAddr>() {
        Ok(ip) => encode_addr(&mut out, SocketAddr::new(ip, port)),
        Err(_) => {
            let name = host.as_bytes();
            if name.len() > 255 {
                return Err(ConnectError::refused(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "host name of {} bytes: SOCKS5 carries at most 255",
                        name.len()
                    ),
                ));
            }
            out.push(ATYP_DOMAIN);
            out.push(name.len() as u8);
            out.extend_from_slice(name);
            out.extend_from_slice(&port.to_be_bytes());
        }
    }
    Ok(out)
}

/// The address of a reply after its ATYP byte. A name (which servers do not
/// send for CONNECT) reads as the unspecified address.
async fn read_addr(stream: &mut Outbound, atyp: u8) -> Result<SocketAddr, ConnectError> {
    let ip = match atyp {
        ATYP_IPV4 => IpAddr::V4(Ipv4Addr::from(read_array::<4>(stream).await?)),
        ATYP_IPV6 => IpAddr::V6(Ipv6Addr::from(read_array::<16>(stream).await?)),
        ATYP_DOMAIN => {
            let [len] = read_array::<1>(stream).await?;
            let mut name = vec![0u8; len as usize];
            stream.read_exact(&mut name).await?;
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
        other => {
            return Err(ConnectError::node(
                io::ErrorKind::InvalidData,
                format!("SOCKS5 reply with address type {other:#04x}"),
            ));
        }
    };
    let port = u16::from_be_bytes(read_array(stream).await?);
    Ok(SocketAddr::new(ip, port))
}

/// Exactly `N` bytes from the node.
async fn read_array<const N: usize>(stream: &mut Outbound) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    stream.read_exact(&mut b).await?;
    Ok(b)
}

/// One message to the node and its fixed-size answer: each step of SOCKS
/// (greeting, credentials, request) is a write and a read of known length.
async fn exchange<const N: usize>(stream: &mut Outbound, msg: &[u8]) -> io::Result<[u8; N]> {
    stream.write_all(msg).await?;
    read_array(stream).await
}

#[derive(Debug)]
pub struct Socks4Connector {
    user: Vec<u8>,
}

impl Socks4Connector {
    pub fn new(cfg: &ConnectorConfig) -> Self {
        Self {
            user: cfg
                .auth
                .as_ref()
                .map(|a| a.username.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }

    pub async fn connect(
        &self,
        mut stream: Outbound,
        target: Target<'_>,
    ) -> Result<Outbound, ConnectError> {
        let mut req = vec![0x04, CMD_CONNECT];
        req.extend_from_slice(&target.port.to_be_bytes());
        // SOCKS4a: a name goes as 0.0.0.x, then after the user id.
        let name = match target.host.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => {
                req.extend_from_slice(&ip.octets());
                None
            }
            Ok(IpAddr::V6(_)) => {
                return Err(ConnectError::refused(
                    io::ErrorKind::Unsupported,
                    format!("{target}: SOCKS4 cannot carry an IPv6 address"),
                ));
            }
            Err(_) => {
                req.extend_from_slice(&[0, 0, 0, 1]);
                Some(target.host)
            }
        };
        req.extend_from_slice(&self.user);
        req.push(0);
        if let Some(name) = name {
            req.extend_from_slice(name.as_bytes());
            req.push(0);
        }
        let reply: [u8; 8] = exchange(&mut stream, &req).await?;
        if reply[0] != 0 {
            return Err(ConnectError::node(
                io::ErrorKind::InvalidData,
                "not a SOCKS4 reply",
            ));
        }
        if reply[1] != SOCKS4_GRANTED {
            return Err(ConnectError::refused(
                io::ErrorKind::ConnectionRefused,
                format!("SOCKS4 server rejected the request ({})", reply[1]),
            ));
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_encoded_as_written() {
        assert_eq!(
            encode_host("10.0.0.1", 80).unwrap(),
            [1, 10, 0, 0, 1, 0, 80]
        );
        let n = encode_host("a.b", 443).unwrap();
        assert_eq!(n, [3, 3, b'a', b'.', b'b', 1, 187]);
        assert_eq!(encode_host("::1", 1).unwrap()[0], ATYP_IPV6);
    }
}
