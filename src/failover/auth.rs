//! Authentication of failover traffic: HMAC-SHA256 with shared keys.
//!
//! Without a key any host on the LAN can send a heartbeat that moves the VIP, which
//! is why INFINI's unauthenticated mode is kept only for compatibility (the daemon
//! warns at start). With `floating_ip.secret` / `secret_file` every heartbeat and
//! every echo answer carries a tag:
//!
//! ```text
//! auth type 1 (HMAC-SHA256), auth len 36:
//!   key id (4 bytes) | HMAC-SHA256(key, every byte before the MAC) (32 bytes)
//! ```
//!
//! * **What is covered.** For a heartbeat, the MAC covers the whole datagram up to
//!   the MAC itself: the 32-byte header (including auth type and length) and the
//!   key id. For an echo answer it covers the question (magic and the asker's
//!   random nonce) and the whole answer, so an answer cannot be replayed to
//!   another question. Heartbeats start with `GWHB` and echo questions with
//!   `GWEC`: a MAC made for one can never pass for the other.
//! * **Key id.** The first 4 bytes of `HMAC(key, "gateway failover key id")`. It
//!   lets a receiver pick the right key during a rotation, and name the mismatch in
//!   its log when two nodes have different secrets ("signed with key id 1a2b3c4d,
//!   ours are 5e6f7a8b"). It reveals nothing a captured MAC does not: either only
//!   lets an attacker test guesses of the secret offline, which is why secrets
//!   must be long and random (the loader requires at least 16 characters).
//! * **Rotation.** A [`Keyring`] holds several keys: the first signs, all are
//!   accepted. The order for replacing key A by key B on a running group, one node
//!   at a time and without an outage: `[A, B]` on every node, then `[B, A]` on every
//!   node, then `[B]`. At each step every node accepts what every other node signs.
//! * **Comparison** of MACs is constant-time (`Mac::verify_slice`).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::wire::{HEADER_LEN, Heartbeat};
use crate::config::floating_ip::FailoverKeys;

type HmacSha256 = Hmac<Sha256>;

/// `auth type` values on the wire.
pub const AUTH_NONE: u8 = 0;
pub const AUTH_HMAC_SHA256: u8 = 1;
/// Key id + MAC.
pub const TAG_LEN: usize = KEY_ID_LEN + MAC_LEN;
pub const KEY_ID_LEN: usize = 4;
pub const MAC_LEN: usize = 32;

/// A key's public name: the first bytes of a MAC of a fixed label.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One shared secret. `Debug` shows its id only.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    secret: Vec<u8>,
    id: KeyId,
}

impl Key {
    pub fn new(secret: &[u8]) -> Key {
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&mac_parts(secret, &[b"gateway failover key id"])[..KEY_ID_LEN]);
        Key {
            secret: secret.to_vec(),
            id: KeyId(id),
        }
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        mac_parts(&self.secret, parts)
    }

    fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let Ok(mut m) = HmacSha256::new_from_slice(&self.secret) else {
            return false;
        };
        for p in parts {
            m.update(p);
        }
        m.verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(id {}, MASKED)", self.id)
    }
}

fn mac_parts(secret: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return [0u8; MAC_LEN],
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// The keys of a group: the first signs, every one is accepted. Empty means no
/// authentication (INFINI compatibility).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<Key>,
    /// Accept unsigned heartbeats and echo answers although keys are set: only for
    /// the migration of a running unauthenticated group (see docs/security.md).
    pub accept_unauthenticated: bool,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.ids())
            .field("accept_unauthenticated", &self.accept_unauthenticated)
            .finish()
    }
}

/// Why a datagram or an echo answer did not authenticate. Each is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unsigned, and this node requires signatures.
    #[error("not signed, and this node requires a signature (floating_ip.secret is set)")]
    Unsigned,
    /// Signed with a key this node does not have: a different secret.
    #[error("signed with key id {0}, which is not one of this node's keys")]
    UnknownKey(KeyId),
    /// The key id is ours but the MAC is wrong: forged or corrupted.
    #[error("bad MAC (forged or corrupted)")]
    BadMac,
    /// An authentication type or tag length this version does not know.
    #[error("unsupported authentication type {0}")]
    Type(u8),
}

/// How a heartbeat or answer that passed [`Keyring`] checks was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// A valid MAC under one of our keys.
    Signed(KeyId),
    /// Accepted without a valid MAC: this node has no keys (or accepts unsigned
    /// traffic during a migration).
    Unsigned,
}

impl Keyring {
    pub fn new(keys: Vec<Key>, accept_unauthenticated: bool) -> Keyring {
        Keyring {
            keys,
            accept_unauthenticated,
        }
    }

    /// The keys `floating_ip` configures (`secret`, `secret_file`,
    /// `accept_unauthenticated`), in their order: the first signs.
    pub fn from_config(keys: &FailoverKeys) -> Keyring {
        Keyring::new(
            (keys.secrets.iter())
                .map(|s| Key::new(s.expose().as_bytes()))
                .collect(),
            keys.accept_unauthenticated,
        )
    }

    /// From secrets, the signing one first.
    pub fn from_secrets<S: AsRef<[u8]>>(secrets: &[S]) -> Keyring {
        Keyring::new(
            secrets.iter().map(|s| Key::new(s.as_ref())).collect(),
            false,
        )
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether unsigned traffic is refused.
    pub fn requires_signature(&self) -> bool {
        !self.keys.is_empty() && !self.accept_unauthenticated
    }

    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(Key::id).collect()
    }

    fn signer(&self) -> Option<&Key> {
        self.keys.first()
    }

    fn find(&self, id: &[u8]) -> Option<&Key> {
        self.keys.iter().find(|k| k.id.0[..] == *id)
    }

    /// The heartbeat's bytes on the wire: signed with the first key, or unsigned
    /// when the ring is empty. Whatever `hb.auth` held is replaced.
    pub fn encode_heartbeat(&self, hb: &Heartbeat) -> Vec<u8> {
        let mut hb = hb.clone();
        let Some(key) = self.signer() else {
            hb.auth_type = AUTH_NONE;
            hb.auth.clear();
            return hb.encode();
        };
        hb.auth_type = AUTH_HMAC_SHA256;
        // Encode with a zero tag of the final length, so the header carries the
        // real auth type and length, then MAC everything before the MAC.
        hb.auth = vec![0u8; TAG_LEN];
        hb.auth[..KEY_ID_LEN].copy_from_slice(&key.id.0);
        let mut bytes = hb.encode();
        let signed = HEADER_LEN + KEY_ID_LEN;
        let mac = key.mac(&[&bytes[..signed]]);
        bytes[signed..].copy_from_slice(&mac);
        bytes
    }

    /// Check a decoded heartbeat against the bytes it was decoded from.
    pub fn verify_heartbeat(&self, hb: &Heartbeat, bytes: &[u8]) -> Result<Trust, AuthError> {
        match hb.auth_type {
            AUTH_NONE if hb.auth.is_empty() => {
                if self.requires_signature() {
                    Err(AuthError::Unsigned)
                } else {
                    Ok(Trust::Unsigned)
                }
            }
            AUTH_HMAC_SHA256 if hb.auth.len() == TAG_LEN && bytes.len() == HEADER_LEN + TAG_LEN => {
                if self.is_empty() {
                    // Nothing to check it with: a node without a secret takes
                    // everything, signed or not (the migration's first step).
                    return Ok(Trust::Unsigned);
                }
                let id = &hb.auth[..KEY_ID_LEN];
                let key = self.find(id).ok_or_else(|| {
                    let mut k = [0u8; KEY_ID_LEN];
                    k.copy_from_slice(id);
                    AuthError::UnknownKey(KeyId(k))
                })?;
                let signed = HEADER_LEN + KEY_ID_LEN;
                if key.verify(&[&bytes[..signed]], &bytes[signed..]) {
                    Ok(Trust::Signed(key.id))
                } else {
                    Err(AuthError::BadMac)
                }
            }
            other => Err(AuthError::Type(other)),
        }
    }

    /// The tag of an echo answer: key id + MAC over the question and the answer.
    /// Empty when the ring is empty.
    pub fn sign_echo(&self, question: &[u8], answer: &[u8]) -> Vec<u8> {
        let Some(key) = self.signer() else {
            return Vec::new();
        };
        let mut tag = key.id.0.to_vec();
        tag.extend_from_slice(&key.mac(&[question, answer, &key.id.0]));
        tag
    }

    /// Check an echo answer's tag (possibly empty) against our question.
    pub fn verify_echo(
        &self,
        question: &[u8],
        answer: &[u8],
        tag: &[u8],
    ) -> Result<Trust, AuthError> {
        if tag.is_empty() {
            return if self.requires_signature() {
                Err(AuthError::Unsigned)
            } else {
                Ok(Trust::Unsigned)
            };
        }
        if tag.len() != TAG_LEN {
            return Err(AuthError::Type(AUTH_HMAC_SHA256));
        }
        if self.is_empty() {
            return Ok(Trust::Unsigned);
        }
        let id = &tag[..KEY_ID_LEN];
        let key = self.find(id).ok_or_else(|| {
            let mut k = [0u8; KEY_ID_LEN];
            k.copy_from_slice(id);
            AuthError::UnknownKey(KeyId(k))
        })?;
        if key.verify(&[question, answer, id], &tag[KEY_ID_LEN..]) {
            Ok(Trust::Signed(key.id))
        } else {
            Err(AuthError::BadMac)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::wire::WireState;
    use proptest::prelude::*;

    fn hb() -> Heartbeat {
        crate::failover::wire::sample()
    }

    fn ring(secrets: &[&str]) -> Keyring {
        Keyring::from_secrets(secrets)
    }

    fn verify(r: &Keyring, bytes: &[u8]) -> Result<Trust, AuthError> {
        let hb = Heartbeat::decode(bytes).expect("decodes");
        r.verify_heartbeat(&hb, bytes)
    }

    #[test]
    fn signed_heartbeat_verifies_and_decodes_to_the_same_content() {
        let a = ring(&["correct horse battery staple"]);
        let bytes = a.encode_heartbeat(&hb());
        assert_eq!(bytes.len(), HEADER_LEN + TAG_LEN);
        let back = Heartbeat::decode(&bytes).unwrap();
        assert_eq!(
            (back.epoch, back.seq, back.state),
            (7, 42, WireState::Master)
        );
        assert_eq!(verify(&a, &bytes), Ok(Trust::Signed(a.ids()[0])));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let a = ring(&["correct horse battery staple"]);
        let bytes = a.encode_heartbeat(&hb());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                // Either it no longer decodes, or it fails authentication.
                if let Ok(h) = Heartbeat::decode(&b) {
                    assert!(
                        a.verify_heartbeat(&h, &b).is_err(),
                        "byte {i} bit {bit} flipped and still verified"
                    );
                }
            }
        }
    }

    #[test]
    fn different_secrets_name_the_key_id() {
        let a = ring(&["secret number one!!"]);
        let b = ring(&["secret number two!!"]);
        let bytes = a.encode_heartbeat(&hb());
        assert_eq!(verify(&b, &bytes), Err(AuthError::UnknownKey(a.ids()[0])));
        // A forged tag under a known key id.
        let mut forged = bytes.clone();
        let n = forged.len();
        forged[n - 1] ^= 0xff;
        assert_eq!(verify(&a, &forged), Err(AuthError::BadMac));
    }

    #[test]
    fn unsigned_is_refused_only_when_keys_are_required() {
        let none = Keyring::default();
        let plain = none.encode_heartbeat(&hb());
        assert_eq!(plain.len(), HEADER_LEN);
        assert_eq!(verify(&none, &plain), Ok(Trust::Unsigned));
        let a = ring(&["correct horse battery staple"]);
        assert_eq!(verify(&a, &plain), Err(AuthError::Unsigned));
        let mut migrating = a.clone();
        migrating.accept_unauthenticated = true;
        assert_eq!(verify(&migrating, &plain), Ok(Trust::Unsigned));
        // A node without keys takes signed heartbeats (it cannot check them).
        assert_eq!(
            verify(&none, &a.encode_heartbeat(&hb())),
            Ok(Trust::Unsigned)
        );
    }

    #[test]
    fn rotation_order_keeps_every_pair_compatible() {
        let (a, b) = ("old key 0123456789", "new key 0123456789");
        let steps = [vec![a], vec![a, b], vec![b, a], vec![b]];
        // Neighbouring steps run side by side during a rolling change.
        for w in steps.windows(2) {
            let (x, y) = (ring(&w[0]), ring(&w[1]));
            for (s, r) in [(&x, &y), (&y, &x)] {
                let bytes = s.encode_heartbeat(&hb());
                assert!(verify(r, &bytes).is_ok(), "{w:?}");
            }
        }
        // Skipping a step breaks: [a] and [b, a] are fine, [a] and [b] are not.
        assert!(verify(&ring(&[b]), &ring(&[a]).encode_heartbeat(&hb())).is_err());
    }

    #[test]
    fn echo_tags_bind_question_and_answer() {
        let a = ring(&["correct horse battery staple"]);
        let q = b"GWECnonce123";
        let ans = b"state";
        let tag = a.sign_echo(q, ans);
        assert!(matches!(a.verify_echo(q, ans, &tag), Ok(Trust::Signed(_))));
        assert_eq!(
            a.verify_echo(b"GWECnonce124", ans, &tag),
            Err(AuthError::BadMac)
        );
        assert_eq!(a.verify_echo(q, b"statf", &tag), Err(AuthError::BadMac));
        assert_eq!(a.verify_echo(q, ans, &[]), Err(AuthError::Unsigned));
        assert_eq!(
            Keyring::default().verify_echo(q, ans, &[]),
            Ok(Trust::Unsigned)
        );
    }

    #[test]
    fn configured_keys_keep_their_order_and_flag() {
        use crate::config::auth::Secret;
        let (k1, k2) = ("0123456789abcdef-one", "0123456789abcdef-two");
        let cfg = FailoverKeys {
            secrets: vec![Secret(k1.into()), Secret(k2.into())],
            accept_unauthenticated: false,
        };
        let r = Keyring::from_config(&cfg);
        assert_eq!(
            r.ids(),
            vec![Key::new(k1.as_bytes()).id(), Key::new(k2.as_bytes()).id()]
        );
        assert!(r.requires_signature());
        let lenient = Keyring::from_config(&FailoverKeys {
            accept_unauthenticated: true,
            ..cfg
        });
        assert!(!lenient.requires_signature(), "accept_unauthenticated");
        assert!(Keyring::from_config(&FailoverKeys::default()).is_empty());
    }

    #[test]
    fn debug_shows_ids_not_secrets() {
        let a = ring(&["correct horse battery staple"]);
        let s = format!("{a:?} {:?}", a.keys[0]);
        assert!(!s.contains("horse"), "{s}");
        assert!(s.contains(&a.ids()[0].to_string()), "{s}");
    }

    proptest! {
        /// No datagram made without the key verifies, whatever its bytes.
        #[test]
        fn random_tags_never_verify(data in proptest::collection::vec(any::<u8>(), HEADER_LEN..HEADER_LEN + 80)) {
            let a = ring(&["correct horse battery staple"]);
            let mut data = data;
            data[..4].copy_from_slice(b"GWHB");
            if let Ok(h) = Heartbeat::decode(&data) {
                prop_assert!(!matches!(a.verify_heartbeat(&h, &data), Ok(Trust::Signed(_))));
            }
        }
    }
}
