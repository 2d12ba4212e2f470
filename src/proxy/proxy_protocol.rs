//! The PROXY protocol header (HAProxy's spec, versions 1 and 2), sent to a
//! backend before any payload so it learns the real client address.
//!
//! Version 1 is one text line, `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`.
//! Version 2 is binary: a 12-byte signature, version/command, family/protocol,
//! a length, then the addresses in network byte order. Both describe the *client*
//! (source) and the address the client connected to (destination, i.e. the VIP).

use std::net::{IpAddr, SocketAddr};

use crate::config::service::ProxyProtocolVersion;

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// IPv4-mapped IPv6 addresses (from a dual-stack listener) are written as IPv4.
fn unmap(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// The version-1 line. Mixed families are `PROXY UNKNOWN`, as the spec says.
pub fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = (unmap(src), unmap(dst));
    let line = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            format!("PROXY TCP4 {s} {d} {} {}\r\n", src.port(), dst.port())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            format!("PROXY TCP6 {s} {d} {} {}\r\n", src.port(), dst.port())
        }
        _ => "PROXY UNKNOWN\r\n".to_string(),
    };
    line.into_bytes()
}

/// The version-2 header (command PROXY, stream transport). Mixed families are sent
/// as `LOCAL` with no addresses.
pub fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = (unmap(src), unmap(dst));
    let mut out = V2_SIGNATURE.to_vec();
    let mut addrs = Vec::with_capacity(36);
    let (cmd, fam) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
            (0x21, 0x11)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            addrs.extend_from_slice(&s.octets());
            addrs.extend_from_slice(&d.octets());
            (0x21, 0x21)
        }
        _ => (0x20, 0x00),
    };
    if fam != 0 {
        addrs.extend_from_slice(&src.port().to_be_bytes());
        addrs.extend_from_slice(&dst.port().to_be_bytes());
    }
    out.push(cmd);
    out.push(fam);
    out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&addrs);
    out
}

/// The header for `version` ("1" or "2", validated at config load).
pub fn header(version: ProxyProtocolVersion, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    match version {
        ProxyProtocolVersion::V1 => v1(src, dst),
        ProxyProtocolVersion::V2 => v2(src, dst),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        let s = "10.0.0.1:5555".parse().unwrap();
        let d = "10.0.0.234:80".parse().unwrap();
        assert_eq!(v1(s, d), b"PROXY TCP4 10.0.0.1 10.0.0.234 5555 80\r\n");
        let s6 = "[::ffff:10.0.0.1]:5555".parse().unwrap();
        assert_eq!(v1(s6, d), b"PROXY TCP4 10.0.0.1 10.0.0.234 5555 80\r\n");
        let s6 = "[fd00::1]:1".parse().unwrap();
        assert_eq!(v1(s6, d), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_ipv4() {
        let h = v2(
            "10.0.0.1:5555".parse().unwrap(),
            "10.0.0.234:80".parse().unwrap(),
        );
        assert_eq!(&h[..12], &V2_SIGNATURE);
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x11);
        assert_eq!(u16::from_be_bytes([h[14], h[15]]), 12);
        assert_eq!(&h[16..20], &[10, 0, 0, 1]);
        assert_eq!(&h[20..24], &[10, 0, 0, 234]);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 5555);
        assert_eq!(u16::from_be_bytes([h[26], h[27]]), 80);
        assert_eq!(h.len(), 28);
    }
}
