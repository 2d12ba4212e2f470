//! GOST's **relay protocol** (version 1) on the wire: the request a `relay`
//! connector sends and the response a `relay` handler answers. Pure: bytes in,
//! values out, no I/O — the connector ([`super::chain::connector::relay`]) and
//! the handler ([`super::handler::gost_relay`]) do the reading and writing.
//!
//! (Not to be confused with [`super::relay`], which moves a tunnel's bytes.)
//!
//! # Frames
//!
//! A request and a response have the same shape, a 4-byte head and a list of
//! features:
//!
//! ```text
//! request:  | VER=1 | CMD/FLAGS | FEALEN (2, BE) | FEATURES (FEALEN bytes) |
//! response: | VER=1 | STATUS    | FEALEN (2, BE) | FEATURES (FEALEN bytes) |
//! feature:  | TYPE  | LEN (2, BE) | DATA (LEN bytes) |
//! ```
//!
//! `CMD/FLAGS`: the command in the low 4 bits (1 CONNECT, 2 BIND, 3 ASSOCIATE;
//! GOST's handler also reads 0 as CONNECT), flags in the high 4 bits: `0x80`
//! asks for UDP (GOST marks it deprecated in favour of the network feature,
//! but its connector still sends it).
//!
//! Features (GOST's numbers):
//!
//! | type | name | data |
//! |---|---|---|
//! | 1 | user auth | `ULEN user PLEN password` (each length one byte) |
//! | 2 | address | `ATYP addr PORT(2)`: ATYP 1 IPv4 (4 bytes), 3 name (length byte + name), 4 IPv6 (16 bytes) |
//! | 3 | tunnel id | 16 bytes |
//! | 4 | network | 2 bytes: 0 tcp, 1 udp, 2 ip, 0x10 unix, 0x11 serial |
//!
//! Status codes are [`status`]. As in GOST, an unknown feature type, a
//! feature shorter than its type needs, or a version other than 1 makes the
//! whole frame malformed; bytes after what a feature's type needs (inside its
//! `LEN`) are ignored. A feature given twice: the last one counts (GOST's
//! handler reads them in order).
//!
//! # Datagrams
//!
//! Once a UDP request is answered, each datagram travels on the stream as
//! `LEN (2, BE) | payload` ([`encode_datagram`]).
//!
//! Example, the request GOST's connector sends for `example.com:80` with
//! `user:pass`:
//!
//! ```text
//! 01 01 00 1f                                     VER, CONNECT, FEALEN=31
//! 01 00 0a 04 'user' 04 'pass'                    user auth (LEN 10)
//! 02 00 0f 03 0b 'example.com' 00 50              address (LEN 15)
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::auth::{AuthConfig, Secret};

/// The only version of the protocol.
pub const VERSION: u8 = 0x01;

/// The length of a frame's head (version, command or status, features length).
pub const HEAD_LEN: usize = 4;

/// Commands (low 4 bits of `CMD/FLAGS`) and the UDP flag.
pub mod cmd {
    pub const CONNECT: u8 = 0x01;
    pub const BIND: u8 = 0x02;
    pub const ASSOCIATE: u8 = 0x03;
    /// The command part of `CMD/FLAGS`.
    pub const MASK: u8 = 0x0F;
    /// The request is for UDP.
    pub const FLAG_UDP: u8 = 0x80;
}

/// Response status codes.
pub mod status {
    pub const OK: u8 = 0x00;
    pub const BAD_REQUEST: u8 = 0x01;
    pub const UNAUTHORIZED: u8 = 0x02;
    pub const FORBIDDEN: u8 = 0x03;
    pub const TIMEOUT: u8 = 0x04;
    pub const SERVICE_UNAVAILABLE: u8 = 0x05;
    pub const HOST_UNREACHABLE: u8 = 0x06;
    pub const NETWORK_UNREACHABLE: u8 = 0x07;
    pub const INTERNAL_SERVER_ERROR: u8 = 0x08;

    /// A name for log lines and errors.
    pub fn name(code: u8) -> &'static str {
        match code {
            OK => "ok",
            BAD_REQUEST => "bad request",
            UNAUTHORIZED => "unauthorized",
            FORBIDDEN => "forbidden",
            TIMEOUT => "timeout",
            SERVICE_UNAVAILABLE => "service unavailable",
            HOST_UNREACHABLE => "host unreachable",
            NETWORK_UNREACHABLE => "network unreachable",
            INTERNAL_SERVER_ERROR => "internal server error",
            _ => "unknown status",
        }
    }
}

/// Feature types.
pub mod feature {
    pub const USER_AUTH: u8 = 0x01;
    pub const ADDR: u8 = 0x02;
    pub const TUNNEL: u8 = 0x03;
    pub const NETWORK: u8 = 0x04;
}

/// Network ids of the network feature.
pub mod network {
    pub const TCP: u16 = 0x00;
    pub const UDP: u16 = 0x01;
}

const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// Why bytes are not a relay frame, or a value cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("relay version {0:#04x}, expected 0x01")]
    BadVersion(u8),
    #[error("frame shorter than its head says ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
    #[error("{0} feature too short")]
    ShortFeature(&'static str),
    #[error("unknown feature type {0:#04x}")]
    UnknownFeature(u8),
    #[error("address type {0:#04x}, expected 1 (IPv4), 3 (name) or 4 (IPv6)")]
    BadAddrType(u8),
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("{0} is longer than 255 bytes")]
    TooLong(&'static str),
    #[error("features longer than 65535 bytes")]
    FeaturesTooLong,
    #[error("{0:?}: expected host:port")]
    BadTarget(String),
}

/// A target address as the address feature carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    Ip(SocketAddr),
    /// A name (at most 255 bytes) and a port.
    Domain(String, u16),
}

impl Addr {
    /// `host:port` as a target (`[v6]:port` for IPv6, a name as is): what GOST's
    /// connector sends for it is an IP address when `host` is one, else a name.
    pub fn from_target(target: &str) -> Result<Addr, WireError> {
        if let Ok(sa) = target.parse::<SocketAddr>() {
            return Ok(Addr::Ip(sa));
        }
        let bad = || WireError::BadTarget(target.to_string());
        let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse::<u16>().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Addr::Ip(SocketAddr::new(ip, port)));
        }
        if host.len() > 255 {
            return Err(WireError::TooLong("address name"));
        }
        Ok(Addr::Domain(host.to_string(), port))
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let port = match self {
            Addr::Ip(sa) => {
                match sa.ip() {
                    IpAddr::V4(ip) => {
                        out.push(ATYP_IPV4);
                        out.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        out.push(ATYP_IPV6);
                        out.extend_from_slice(&ip.octets());
                    }
                }
                sa.port()
            }
            Addr::Domain(host, port) => {
                let len =
                    u8::try_from(host.len()).map_err(|_| WireError::TooLong("address name"))?;
                out.push(ATYP_DOMAIN);
                out.push(len);
                out.extend_from_slice(host.as_bytes());
                *port
            }
        };
        out.extend_from_slice(&port.to_be_bytes());
        Ok(())
    }

    fn decode(b: &[u8]) -> Result<Addr, WireError> {
        let short = WireError::ShortFeature("address");
        let atyp = *b.first().ok_or(short.clone())?;
        let port_at = |at: usize| -> Result<u16, WireError> {
            let p = b.get(at..at + 2).ok_or(short.clone())?;
            Ok(u16::from_be_bytes([p[0], p[1]]))
        };
        match atyp {
            ATYP_IPV4 => {
                let o: [u8; 4] = b
                    .get(1..5)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(short.clone())?;
                Ok(Addr::Ip(SocketAddr::new(
                    Ipv4Addr::from(o).into(),
                    port_at(5)?,
                )))
            }
            ATYP_IPV6 => {
                let o: [u8; 16] = b
                    .get(1..17)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(short.clone())?;
                Ok(Addr::Ip(SocketAddr::new(
                    Ipv6Addr::from(o).into(),
                    port_at(17)?,
                )))
            }
            ATYP_DOMAIN => {
                let n = usize::from(*b.get(1).ok_or(short.clone())?);
                let name = b.get(2..2 + n).ok_or(short.clone())?;
                let name =
                    std::str::from_utf8(name).map_err(|_| WireError::NotUtf8("address name"))?;
                Ok(Addr::Domain(name.to_string(), port_at(2 + n)?))
            }
            t => Err(WireError::BadAddrType(t)),
        }
    }
}

impl fmt::Display for Addr {
    /// `host:port`, IPv6 bracketed: what the router dials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Ip(sa) => write!(f, "{sa}"),
            Addr::Domain(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// The features of a frame, each at most once (the last one given counts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    /// User auth; the password is masked in `Debug`.
    pub auth: Option<AuthConfig>,
    pub addr: Option<Addr>,
    pub tunnel: Option<[u8; 16]>,
    pub network: Option<u16>,
}

impl Features {
    /// Append the features, in the order GOST's connector writes them.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let mut put = |t: u8, data: &[u8]| {
            out.push(t);
            // Each feature's data is far below 64 KiB (at most 512 bytes).
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(data);
        };
        if let Some(a) = &self.auth {
            let user = a.username.as_bytes();
            let pass = a.password.expose().as_bytes();
            let ulen = u8::try_from(user.len()).map_err(|_| WireError::TooLong("user name"))?;
            let plen = u8::try_from(pass.len()).map_err(|_| WireError::TooLong("password"))?;
            let mut d = Vec::with_capacity(2 + user.len() + pass.len());
            d.push(ulen);
            d.extend_from_slice(user);
            d.push(plen);
            d.extend_from_slice(pass);
            put(feature::USER_AUTH, &d);
        }
        if let Some(addr) = &self.addr {
            let mut d = Vec::with_capacity(20);
            addr.encode(&mut d)?;
            put(feature::ADDR, &d);
        }
        if let Some(id) = &self.tunnel {
            put(feature::TUNNEL, id);
        }
        if let Some(n) = self.network {
            put(feature::NETWORK, &n.to_be_bytes());
        }
        Ok(())
    }

    fn decode(mut b: &[u8]) -> Result<Features, WireError> {
        let mut f = Features::default();
        while !b.is_empty() {
            let head = b.get(..3).ok_or(WireError::ShortFeature("feature head"))?;
            let (t, len) = (head[0], usize::from(u16::from_be_bytes([head[1], head[2]])));
            let data = b.get(3..3 + len).ok_or(WireError::Truncated {
                have: b.len(),
                need: 3 + len,
            })?;
            match t {
                feature::USER_AUTH => f.auth = Some(decode_auth(data)?),
                feature::ADDR => f.addr = Some(Addr::decode(data)?),
                feature::TUNNEL => {
                    let id = data
                        .get(..16)
                        .and_then(|s| s.try_into().ok())
                        .ok_or(WireError::ShortFeature("tunnel"))?;
                    f.tunnel = Some(id);
                }
                feature::NETWORK => {
                    let n = data.get(..2).ok_or(WireError::ShortFeature("network"))?;
                    f.network = Some(u16::from_be_bytes([n[0], n[1]]));
                }
                t => return Err(WireError::UnknownFeature(t)),
            }
            b = &b[3 + len..];
        }
        Ok(f)
    }
}

fn decode_auth(b: &[u8]) -> Result<AuthConfig, WireError> {
    let short = WireError::ShortFeature("user auth");
    let ulen = usize::from(*b.first().ok_or(short.clone())?);
    let user = b.get(1..1 + ulen).ok_or(short.clone())?;
    let plen = usize::from(*b.get(1 + ulen).ok_or(short.clone())?);
    let pass = b.get(2 + ulen..2 + ulen + plen).ok_or(short)?;
    Ok(AuthConfig {
        username: String::from_utf8(user.to_vec()).map_err(|_| WireError::NotUtf8("user name"))?,
        password: Secret(
            String::from_utf8(pass.to_vec()).map_err(|_| WireError::NotUtf8("password"))?,
        ),
    })
}

/// The whole length of the frame whose head is `head`; an error if the version
/// is not 1.
pub fn frame_len(head: [u8; HEAD_LEN]) -> Result<usize, WireError> {
    if head[0] != VERSION {
        return Err(WireError::BadVersion(head[0]));
    }
    Ok(HEAD_LEN + usize::from(u16::from_be_bytes([head[2], head[3]])))
}

/// `(second byte, features)` of a complete frame (exactly [`frame_len`] bytes).
fn decode_frame(b: &[u8]) -> Result<(u8, Features), WireError> {
    let head: [u8; HEAD_LEN] =
        b.get(..HEAD_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(WireError::Truncated {
                have: b.len(),
                need: HEAD_LEN,
            })?;
    let need = frame_len(head)?;
    let body = b.get(HEAD_LEN..need).ok_or(WireError::Truncated {
        have: b.len(),
        need,
    })?;
    Ok((head[1], Features::decode(body)?))
}

fn encode_frame(second: u8, f: &Features) -> Result<Vec<u8>, WireError> {
    let mut out = vec![VERSION, second, 0, 0];
    f.encode(&mut out)?;
    let flen = u16::try_from(out.len() - HEAD_LEN).map_err(|_| WireError::FeaturesTooLong)?;
    out[2..4].copy_from_slice(&flen.to_be_bytes());
    Ok(out)
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `CMD/FLAGS` as sent: see [`cmd`].
    pub cmd: u8,
    pub features: Features,
}

impl Request {
    /// CONNECT to `target`, for TCP or UDP, with credentials if given.
    pub fn connect(target: Addr, udp: bool, auth: Option<AuthConfig>) -> Request {
        Request {
            cmd: cmd::CONNECT | if udp { cmd::FLAG_UDP } else { 0 },
            features: Features {
                auth,
                addr: Some(target),
                ..Features::default()
            },
        }
    }

    /// The command, without flags (0 is read as CONNECT, as GOST's handler does).
    pub fn command(&self) -> u8 {
        match self.cmd & cmd::MASK {
            0 => cmd::CONNECT,
            c => c,
        }
    }

    /// The client asks for UDP: the flag, or the network feature.
    pub fn is_udp(&self) -> bool {
        self.cmd & cmd::FLAG_UDP != 0 || self.features.network == Some(network::UDP)
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        encode_frame(self.cmd, &self.features)
    }

    /// Decode a complete frame: `b` holds at least [`frame_len`] bytes (more
    /// are ignored).
    pub fn decode(b: &[u8]) -> Result<Request, WireError> {
        let (cmd, features) = decode_frame(b)?;
        Ok(Request { cmd, features })
    }
}

/// A server's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u8,
    pub features: Features,
}

impl Response {
    /// A response with no features (what GOST's handler sends to CONNECT).
    pub fn status(status: u8) -> Response {
        Response {
            status,
            features: Features::default(),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        encode_frame(self.status, &self.features)
    }

    /// Decode a complete frame, as [`Request::decode`].
    pub fn decode(b: &[u8]) -> Result<Response, WireError> {
        let (status, features) = decode_frame(b)?;
        Ok(Response { status, features })
    }
}

/// The bytes of a feature-less response (4 bytes, cannot fail).
pub fn status_frame(code: u8) -> [u8; HEAD_LEN] {
    [VERSION, code, 0, 0]
}

/// `LEN | payload` of one datagram on the stream; `None` if it is over 65535
/// bytes.
pub fn encode_datagram(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok()?;
    let mut out = Vec::with_capacity(2 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

#[cfg(test)]
mod tests;
