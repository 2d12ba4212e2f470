//! The handover datagram: a second message type on the heartbeat port.
//!
//! ```text
//!  0      4   5    6        10       14     18     22     24      26        32      34
//!  +------+---+----+--------+--------+------+------+------+-------+---------+-------+
//!  | GWHO |ver|kind| node ip|  VIP   |  id  | gen. | part | parts | old MAC | count |
//!  +------+---+----+--------+--------+------+------+------+-------+---------+-------+
//!  34: count × (client ip 4 | client port 2 | VIP port 2), then tag len (1) | tag
//! ```
//!
//! * `kind`: 1 FLOWS (part `part` of `parts` of the old master's flow list number
//!   `generation`), 2 ACK (the new master installed list `generation` of handover `id`), 3 DONE
//!   (the old master is leaving: remove everything of handover `id`).
//! * The tag is the group's HMAC-SHA256 (key id ‖ MAC) over a fixed label and
//!   every byte before the tag ([`Keyring::sign_echo`]). The label and the magic
//!   keep it from ever passing for a heartbeat's or an echo answer's MAC.
//!   Handover messages **must** be signed: unsigned ones, and those that fail the
//!   check, are dropped and counted ([`Dropped`]). A handover redirects a client's
//!   packets to another host; the group's secret is what says that host is a node.
//! * A node of an older version drops a `GWHO` datagram as a bad magic and never
//!   answers, so the old master falls back to an ordinary switchover.

use std::net::Ipv4Addr;

use crate::failover::auth::{AuthError, Keyring, Trust};

pub const MAGIC: [u8; 4] = *b"GWHO";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 34;
pub const FLOW_LEN: usize = 8;
/// Flows per datagram: the whole datagram stays under 1400 bytes (no IP
/// fragmentation on an Ethernet LAN).
pub const MAX_FLOWS: usize = 160;
/// What the tag's MAC covers before the message bytes.
const LABEL: &[u8] = b"gateway failover handover v1";

/// One client connection on the VIP (its local address is the message's VIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub client: Ipv4Addr,
    pub client_port: u16,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Flows = 1,
    Ack = 2,
    Done = 3,
}

/// A decoded, authenticated handover message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: Kind,
    pub node: Ipv4Addr,
    pub vip: Ipv4Addr,
    pub id: u32,
    pub generation: u32,
    pub part: u16,
    pub parts: u16,
    pub mac: [u8; 6],
    pub flows: Vec<Flow>,
}

/// Why a handover datagram was dropped (each is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("malformed handover message")]
    Malformed,
    #[error("handover message not signed (a handover needs floating_ip.secret)")]
    Unsigned,
    #[error("handover message failed authentication: {0}")]
    Auth(AuthError),
}

impl Message {
    /// A message without flows (ACK, DONE) about generation `generation` of
    /// handover `id`.
    pub fn control(kind: Kind, node: Ipv4Addr, vip: Ipv4Addr, id: u32, generation: u32) -> Message {
        Message {
            kind,
            node,
            vip,
            id,
            generation,
            part: 0,
            parts: 0,
            mac: [0; 6],
            flows: Vec::new(),
        }
    }

    /// The signed bytes; `None` when the keyring is empty (no handover without a
    /// secret).
    pub fn encode(&self, keys: &Keyring) -> Option<Vec<u8>> {
        let mut b = Vec::with_capacity(HEADER_LEN + self.flows.len() * FLOW_LEN + 40);
        b.extend_from_slice(&MAGIC);
        b.push(VERSION);
        b.push(self.kind as u8);
        b.extend_from_slice(&self.node.octets());
        b.extend_from_slice(&self.vip.octets());
        b.extend_from_slice(&self.id.to_be_bytes());
        b.extend_from_slice(&self.generation.to_be_bytes());
        b.extend_from_slice(&self.part.to_be_bytes());
        b.extend_from_slice(&self.parts.to_be_bytes());
        b.extend_from_slice(&self.mac);
        let n = self.flows.len().min(MAX_FLOWS);
        b.extend_from_slice(&(n as u16).to_be_bytes());
        for f in &self.flows[..n] {
            b.extend_from_slice(&f.client.octets());
            b.extend_from_slice(&f.client_port.to_be_bytes());
            b.extend_from_slice(&f.port.to_be_bytes());
        }
        let tag = keys.sign_echo(LABEL, &b);
        if tag.is_empty() {
            return None;
        }
        b.push(tag.len() as u8);
        b.extend_from_slice(&tag);
        Some(b)
    }

    /// Decode and authenticate; only a valid MAC under one of `keys` passes.
    pub fn decode(buf: &[u8], keys: &Keyring) -> Result<Message, Dropped> {
        if buf.len() < HEADER_LEN + 1 || buf[0..4] != MAGIC || buf[4] != VERSION {
            return Err(Dropped::Malformed);
        }
        let kind = match buf[5] {
            1 => Kind::Flows,
            2 => Kind::Ack,
            3 => Kind::Done,
            _ => return Err(Dropped::Malformed),
        };
        let count = usize::from(u16::from_be_bytes([buf[32], buf[33]]));
        if count > MAX_FLOWS {
            return Err(Dropped::Malformed);
        }
        let body = HEADER_LEN + count * FLOW_LEN;
        let Some(&tag_len) = buf.get(body) else {
            return Err(Dropped::Malformed);
        };
        if buf.len() != body + 1 + usize::from(tag_len) {
            return Err(Dropped::Malformed);
        }
        let tag = &buf[body + 1..];
        if tag.is_empty() || keys.is_empty() {
            return Err(Dropped::Unsigned);
        }
        match keys.verify_echo(LABEL, &buf[..body], tag) {
            Ok(Trust::Signed(_)) => {}
            Ok(Trust::Unsigned) => return Err(Dropped::Unsigned),
            Err(e) => return Err(Dropped::Auth(e)),
        }
        let ip = |i: usize| Ipv4Addr::new(buf[i], buf[i + 1], buf[i + 2], buf[i + 3]);
        let u32_at = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let u16_at = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&buf[26..32]);
        let flows = (0..count)
            .map(|k| {
                let o = HEADER_LEN + k * FLOW_LEN;
                Flow {
                    client: ip(o),
                    client_port: u16_at(o + 4),
                    port: u16_at(o + 6),
                }
            })
            .collect();
        Ok(Message {
            kind,
            node: ip(6),
            vip: ip(10),
            id: u32_at(14),
            generation: u32_at(18),
            part: u16_at(22),
            parts: u16_at(24),
            mac,
            flows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(n: usize) -> Message {
        Message {
            kind: Kind::Flows,
            node: Ipv4Addr::new(10, 0, 0, 1),
            vip: Ipv4Addr::new(10, 0, 0, 234),
            id: 7,
            generation: 3,
            part: 1,
            parts: 2,
            mac: [2, 0, 0, 0, 0, 1],
            flows: (0..n)
                .map(|i| Flow {
                    client: Ipv4Addr::new(10, 0, 0, 100),
                    client_port: 40000 + i as u16,
                    port: 8080,
                })
                .collect(),
        }
    }

    #[test]
    fn signed_roundtrip_fits_one_datagram() {
        let keys = Keyring::from_secrets(&["correct horse battery staple"]);
        let m = msg(MAX_FLOWS);
        let bytes = m.encode(&keys).unwrap();
        assert!(bytes.len() < 1400, "{}", bytes.len());
        assert_eq!(Message::decode(&bytes, &keys), Ok(m));
    }

    #[test]
    fn unsigned_forged_and_foreign_are_dropped() {
        let keys = Keyring::from_secrets(&["correct horse battery staple"]);
        assert_eq!(
            msg(1).encode(&Keyring::default()),
            None,
            "no secret, no handover"
        );
        let other = Keyring::from_secrets(&["another secret 0123456"]);
        let bytes = msg(3).encode(&other).unwrap();
        assert!(matches!(
            Message::decode(&bytes, &keys),
            Err(Dropped::Auth(AuthError::UnknownKey(_)))
        ));
        // Every flipped bit is caught.
        let bytes = msg(2).encode(&keys).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Message::decode(&b, &keys).is_err(), "byte {i}");
        }
        // Stripped of its tag.
        let body = HEADER_LEN + 2 * FLOW_LEN;
        let mut b = bytes[..body].to_vec();
        b.push(0);
        assert_eq!(Message::decode(&b, &keys), Err(Dropped::Unsigned));
        assert_eq!(
            Message::decode(&b, &Keyring::default()),
            Err(Dropped::Unsigned)
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_pass(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let keys = Keyring::from_secrets(&["correct horse battery staple"]);
            let mut data = data;
            if data.len() >= 5 { data[..4].copy_from_slice(&MAGIC); data[4] = VERSION; }
            prop_assert!(Message::decode(&data, &keys).is_err());
        }
    }
}
