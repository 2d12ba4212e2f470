//! The heartbeat wire format.
//!
//! One UDP datagram per heartbeat, big-endian, versioned:
//!
//! ```text
//!  0      4   5      6        7      8          12         16      20              28
//!  +------+---+------+--------+------+----------+----------+-------+---------------+
//!  | GWHB |ver| state|priority|flags | node ip  |  VIP     | epoch |  sequence     |
//!  +------+---+------+--------+------+----------+----------+-------+---------------+
//!  28          30         31        32
//!  +-----------+----------+---------+--------------------+
//!  |interval ms| auth type| auth len| auth tag (len bytes)|
//!  +-----------+----------+---------+--------------------+
//! ```
//!
//! * `state` is the sender's state ([`WireState`]); `Resign` is sent by a master that
//!   is shutting down so the backup takes over without waiting for the dead timer.
//! * The VIP identifies the group: several pairs can share one LAN and port.
//! * `epoch` is the sender's start time (Unix seconds) and the sequence starts from the
//!   sub-second part of it, so a restarted peer always counts higher than its previous
//!   run; see [`super::replay`] for what receivers accept.
//! * `auth type` versions the authentication within wire version 1: 0 is none (no tag;
//!   INFINI-compatible configs), 1 is HMAC-SHA256 with a 36-byte tag `key id ‖ MAC`,
//!   the MAC covering every byte before it ([`super::auth`]). Any other type, or a
//!   length that does not match the datagram, is dropped and counted.

use std::net::Ipv4Addr;

pub const MAGIC: [u8; 4] = *b"GWHB";
pub const VERSION: u8 = 1;
/// Length of the fixed part, before the authentication tag.
pub const HEADER_LEN: usize = 32;
pub const MAX_AUTH_LEN: usize = 64;
/// `flags` bit: the sender preempts a lower-ranked master.
pub const FLAG_PREEMPT: u8 = 1;
/// `flags` bit: the sender is in operator standby (it announces itself as FAULT,
/// so that every version of the daemon leaves the VIP to the others; this bit only
/// tells newer ones why).
pub const FLAG_STANDBY: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireState {
    Backup = 1,
    Master = 2,
    Fault = 3,
    Resign = 4,
}

impl WireState {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Backup,
            2 => Self::Master,
            3 => Self::Fault,
            4 => Self::Resign,
            _ => return None,
        })
    }
}

/// A decoded heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub state: WireState,
    pub priority: u8,
    pub flags: u8,
    pub node: Ipv4Addr,
    pub vip: Ipv4Addr,
    pub epoch: u32,
    pub seq: u64,
    pub interval_ms: u16,
    pub auth_type: u8,
    pub auth: Vec<u8>,
}

/// Why a datagram was not a heartbeat. Each kind is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("too short")]
    Short,
    #[error("bad magic")]
    Magic,
    #[error("unsupported version")]
    Version,
    #[error("unknown state")]
    State,
    #[error("bad authentication length")]
    AuthLen,
}

impl Heartbeat {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + self.auth.len());
        b.extend_from_slice(&MAGIC);
        b.push(VERSION);
        b.push(self.state as u8);
        b.push(self.priority);
        b.push(self.flags);
        b.extend_from_slice(&self.node.octets());
        b.extend_from_slice(&self.vip.octets());
        b.extend_from_slice(&self.epoch.to_be_bytes());
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.interval_ms.to_be_bytes());
        b.push(self.auth_type);
        let len = self.auth.len().min(MAX_AUTH_LEN);
        b.push(len as u8);
        b.extend_from_slice(&self.auth[..len]);
        b
    }

    pub fn decode(buf: &[u8]) -> Result<Heartbeat, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Short);
        }
        if buf[0..4] != MAGIC {
            return Err(DecodeError::Magic);
        }
        if buf[4] != VERSION {
            return Err(DecodeError::Version);
        }
        let state = WireState::from_u8(buf[5]).ok_or(DecodeError::State)?;
        let ip = |i: usize| Ipv4Addr::new(buf[i], buf[i + 1], buf[i + 2], buf[i + 3]);
        let auth_len = buf[31] as usize;
        if auth_len > MAX_AUTH_LEN || buf.len() != HEADER_LEN + auth_len {
            return Err(DecodeError::AuthLen);
        }
        let mut epoch = [0u8; 4];
        epoch.copy_from_slice(&buf[16..20]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&buf[20..28]);
        Ok(Heartbeat {
            state,
            priority: buf[6],
            flags: buf[7],
            node: ip(8),
            vip: ip(12),
            epoch: u32::from_be_bytes(epoch),
            seq: u64::from_be_bytes(seq),
            interval_ms: u16::from_be_bytes([buf[28], buf[29]]),
            auth_type: buf[30],
            auth: buf[HEADER_LEN..].to_vec(),
        })
    }
}

/// A heartbeat for unit tests.
#[cfg(test)]
pub(crate) fn sample() -> Heartbeat {
    Heartbeat {
        state: WireState::Master,
        priority: 100,
        flags: 0,
        node: Ipv4Addr::new(10, 0, 0, 1),
        vip: Ipv4Addr::new(10, 0, 0, 234),
        epoch: 7,
        seq: 42,
        interval_ms: 100,
        auth_type: 0,
        auth: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_and_layout() {
        let hb = sample();
        let bytes = hb.encode();
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(&bytes[0..4], b"GWHB");
        assert_eq!(Heartbeat::decode(&bytes).unwrap(), hb);
    }

    #[test]
    fn rejects() {
        let bytes = sample().encode();
        assert_eq!(Heartbeat::decode(&bytes[..10]), Err(DecodeError::Short));
        let mut b = bytes.clone();
        b[0] = b'X';
        assert_eq!(Heartbeat::decode(&b), Err(DecodeError::Magic));
        let mut b = bytes.clone();
        b[4] = 9;
        assert_eq!(Heartbeat::decode(&b), Err(DecodeError::Version));
        let mut b = bytes.clone();
        b[5] = 0;
        assert_eq!(Heartbeat::decode(&b), Err(DecodeError::State));
        let mut b = bytes.clone();
        b[31] = 4;
        assert_eq!(Heartbeat::decode(&b), Err(DecodeError::AuthLen));
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Heartbeat::decode(&data);
        }

        #[test]
        fn roundtrip_any(prio: u8, node: u32, vip: u32, epoch: u32, seq: u64, iv: u16,
                         auth in proptest::collection::vec(any::<u8>(), 0..=MAX_AUTH_LEN)) {
            let hb = Heartbeat { state: WireState::Backup, priority: prio, flags: 1,
                node: node.into(), vip: vip.into(), epoch, seq, interval_ms: iv, auth_type: 1, auth };
            prop_assert_eq!(Heartbeat::decode(&hb.encode()).unwrap(), hb);
        }
    }
}
