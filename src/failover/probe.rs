//! Probes: is the peer alive, and can this node still reach the network?
//!
//! Two checks run side by side whenever the state machine asks
//! ([`Action::Probe`](super::machine::Action::Probe)):
//!
//! * **ICMP** (surge-ping) to the configured probe targets, from the failover
//!   interface. Any one answer within the timeout means "this node is connected".
//! * **Echo** on the peer, over TCP on `echo.port` (INFINI's option name). Our echo
//!   service answers a 12-byte question (`GWEC` + random nonce) with the same bytes
//!   plus the daemon's own state, priority and address (18 bytes, the first
//!   version's answer), then its epoch and an authentication tag:
//!
//!   ```text
//!   question(12) | state | priority | node(4) | epoch(4) | tag len | tag (0 or 36)
//!   ```
//!
//!   The tag is [`Keyring::sign_echo`] over the question and the answer, so with a
//!   secret the check is a challenge-response: an attacker cannot answer for a dead
//!   master, and a captured answer is useless for the next question. So the check
//!   tells apart "the peer host is up but its daemon is gone" (connection refused,
//!   or no answer) from "the daemon is alive and MASTER, only its heartbeats are
//!   lost" (answer). A kernel accepting TCP for a stopped process is not enough:
//!   the nonce must come back.
//!
//! What each outcome means ([`PeerCheck`]): refused, no connection within the dial
//! timeout, or connected but no answer within the timeout (a hung daemon) →
//! `Dead`. Accepted and then closed without an answer, or an answer that does not
//! verify (a different secret, a forgery) → `Unknown`: something is there, it
//! proves nothing. Only a verified answer (or, without a secret, a well-formed one)
//! is `Alive`.
//!
//! The service gives each source address at most [`ECHO_SLOTS_PER_SOURCE`]
//! connections at a time and every connection [`ECHO_FIRST_BYTES_TIMEOUT`] to
//! send its question: 40 silent connections from one host no longer fill the slots
//! the peer needs.
//!
//! Both checks are bounded; the result always arrives within [`Prober::max_duration`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::auth::{KEY_ID_LEN, Keyring, MAC_LEN, Trust};
use super::inbound::BurstLog;
use super::machine::{PeerCheck, ProbeResult};
use super::wire::WireState;

const ECHO_MAGIC: &[u8; 4] = b"GWEC";
/// Length of an echo question (on TCP, or one UDP datagram).
pub const ECHO_REQUEST_LEN: usize = 12;
/// The first version's answer: the question, state, priority, node.
const ECHO_REPLY_LEN: usize = 18;
/// What follows it: epoch and tag length (the part the tag covers ends here).
const ECHO_EXT_LEN: usize = 5;
const ECHO_TAG_LEN: usize = KEY_ID_LEN + MAC_LEN;
/// The longest answer (with a tag).
pub const ECHO_ANSWER_MAX: usize = ECHO_REPLY_LEN + ECHO_EXT_LEN + ECHO_TAG_LEN;

/// The question for `nonce`.
pub fn echo_request(nonce: u64) -> [u8; ECHO_REQUEST_LEN] {
    let mut req = [0u8; ECHO_REQUEST_LEN];
    req[..4].copy_from_slice(ECHO_MAGIC);
    req[4..].copy_from_slice(&nonce.to_be_bytes());
    req
}

/// Whether `req` is a well-formed echo question.
pub fn is_echo_request(req: &[u8; ECHO_REQUEST_LEN]) -> bool {
    &req[..4] == ECHO_MAGIC
}

/// Check a complete answer datagram (the UDP side of the echo) to `req` with
/// `keys`: the same bytes and rules as on TCP.
pub fn parse_echo_answer(
    req: &[u8; ECHO_REQUEST_LEN],
    answer: &[u8],
    keys: &Keyring,
) -> Result<EchoAnswer, EchoError> {
    let head: &[u8; ECHO_REPLY_LEN] = answer
        .get(..ECHO_REPLY_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(EchoError::Malformed)?;
    let check = parse_echo_reply(req, head).ok_or(EchoError::Malformed)?;
    let ext = ECHO_REPLY_LEN + ECHO_EXT_LEN;
    let (epoch, tag) = match answer.get(ECHO_REPLY_LEN..ext) {
        None if answer.len() == ECHO_REPLY_LEN => (None, &[][..]),
        None => return Err(EchoError::Malformed),
        Some(e) => {
            let tag_len = usize::from(e[4]);
            if (tag_len != 0 && tag_len != ECHO_TAG_LEN) || answer.len() != ext + tag_len {
                return Err(EchoError::Malformed);
            }
            (
                Some(u32::from_be_bytes([e[0], e[1], e[2], e[3]])),
                &answer[ext..],
            )
        }
    };
    let answer_end = if epoch.is_some() { ext } else { ECHO_REPLY_LEN };
    let trust = keys.verify_echo(req, &answer[ECHO_REQUEST_LEN..answer_end], tag)?;
    Ok(EchoAnswer {
        check,
        epoch,
        signed: matches!(trust, Trust::Signed(_)),
    })
}
/// Concurrent echo connections one source address may hold.
pub const ECHO_SLOTS_PER_SOURCE: usize = 2;
/// Concurrent echo connections in all.
pub const ECHO_SLOTS: usize = 64;
/// How long a connection may take to send its 12-byte question.
pub const ECHO_FIRST_BYTES_TIMEOUT: Duration = Duration::from_millis(250);

/// The state the echo service reports: (state, priority, node address).
pub type EchoStatus = (WireState, u8, Ipv4Addr);

/// Runs the checks the state machine asks for.
pub struct Prober {
    icmp: Option<surge_ping::Client>,
    targets: Vec<Ipv4Addr>,
    icmp_timeout: Duration,
    echo_port: u16,
    echo_dial_timeout: Duration,
    echo_timeout: Duration,
    ident: u16,
    seq: AtomicU64,
    keys: watch::Receiver<Arc<Keyring>>,
    log: Mutex<BurstLog>,
}

/// A verified echo answer's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoAnswer {
    pub check: PeerCheck,
    /// The answering daemon's epoch, when the answer carried one and verified.
    pub epoch: Option<u32>,
    /// Whether the answer carried a valid MAC.
    pub signed: bool,
}

impl EchoAnswer {
    fn only(check: PeerCheck) -> EchoAnswer {
        EchoAnswer {
            check,
            epoch: None,
            signed: false,
        }
    }
}

impl Prober {
    /// `ifname` pins the ICMP socket to the failover interface.
    pub fn new(
        ifname: &str,
        targets: Vec<Ipv4Addr>,
        icmp_timeout: Duration,
        echo_port: u16,
        echo_dial_timeout: Duration,
        echo_timeout: Duration,
    ) -> std::io::Result<Prober> {
        let icmp = if targets.is_empty() {
            None
        } else {
            let cfg = surge_ping::Config::builder()
                .kind(surge_ping::ICMP::V4)
                .interface(ifname)
                .build();
            Some(surge_ping::Client::new(&cfg)?)
        };
        Ok(Prober {
            icmp,
            targets,
            icmp_timeout,
            echo_port,
            echo_dial_timeout,
            echo_timeout,
            ident: rand::random::<u16>(),
            seq: AtomicU64::new(0),
            keys: watch::channel(Arc::new(Keyring::default())).1,
            log: Mutex::new(BurstLog::default()),
        })
    }

    /// Check echo answers with these keys (they may change on reload).
    pub fn with_keys(mut self, keys: watch::Receiver<Arc<Keyring>>) -> Prober {
        self.keys = keys;
        self
    }

    /// Ask `peer` which epoch it runs; `Some` only for a verified, signed answer.
    pub async fn confirm_epoch(&self, peer: Ipv4Addr) -> Option<u32> {
        let a = self.echo(peer).await;
        a.signed.then_some(a.epoch).flatten()
    }

    /// The echo check alone (for [`Action::Verify`](super::machine::Action::Verify)).
    pub async fn check_peer(&self, peer: Ipv4Addr) -> PeerCheck {
        self.echo(peer).await.check
    }

    async fn echo(&self, peer: Ipv4Addr) -> EchoAnswer {
        let keys = self.keys.borrow().clone();
        let addr = SocketAddrV4::new(peer, self.echo_port);
        let a = echo_check_keyed(addr, self.echo_dial_timeout, self.echo_timeout, &keys).await;
        if let Err(why) = &a {
            let n = self
                .log
                .lock()
                .ok()
                .and_then(|mut l| l.note(IpAddr::V4(peer), Instant::now()));
            if let Some(more) = n {
                tracing::warn!(%peer, suppressed = more, "echo answer of {peer} does not prove anything: {why}");
            }
        }
        a.unwrap_or_else(|_| EchoAnswer::only(PeerCheck::Unknown))
    }

    /// The longest a [`Prober::probe`] can take.
    pub fn max_duration(&self) -> Duration {
        self.icmp_timeout
            .max(self.echo_dial_timeout + self.echo_timeout)
    }

    pub fn has_targets(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Run both checks concurrently.
    pub async fn probe(&self, id: u64, peer: Option<Ipv4Addr>) -> ProbeResult {
        let echo = async {
            match peer {
                None => PeerCheck::Unknown,
                Some(p) => self.echo(p).await.check,
            }
        };
        let (peer, targets_ok) = tokio::join!(echo, self.ping_targets());
        ProbeResult {
            id,
            peer,
            targets_ok,
            vip_in_use: None,
        }
    }

    /// `None` without targets; otherwise whether any target answered.
    pub async fn ping_targets(&self) -> Option<bool> {
        let client = self.icmp.as_ref()?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) as u16;
        let pings = self.targets.iter().map(|t| async move {
            let mut pinger = client
                .pinger(IpAddr::V4(*t), surge_ping::PingIdentifier(self.ident))
                .await;
            pinger.timeout(self.icmp_timeout);
            pinger
                .ping(surge_ping::PingSequence(seq), b"gateway-probe")
                .await
                .is_ok()
        });
        let results = futures::future::join_all(pings).await;
        Some(results.into_iter().any(|ok| ok))
    }
}

/// Ask the peer's echo service for its state, without keys (an unsigned answer
/// is taken as it is).
pub async fn echo_check(
    addr: SocketAddrV4,
    dial_timeout: Duration,
    timeout: Duration,
) -> PeerCheck {
    echo_check_keyed(addr, dial_timeout, timeout, &Keyring::default())
        .await
        .map_or(PeerCheck::Unknown, |a| a.check)
}

/// Why an echo answer proves nothing (the check is then `Unknown`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EchoError {
    #[error("connection accepted, then closed without an answer")]
    Closed,
    #[error("the answer does not echo our question or is malformed")]
    Malformed,
    #[error("the answer does not authenticate: {0}")]
    Auth(#[from] super::auth::AuthError),
}

/// Ask the peer's echo service for its state and check the answer with `keys`.
/// `Ok` with `Dead` when nobody answers at all; `Err` when something answered that
/// proves nothing.
pub async fn echo_check_keyed(
    addr: SocketAddrV4,
    dial_timeout: Duration,
    timeout: Duration,
    keys: &Keyring,
) -> Result<EchoAnswer, EchoError> {
    let stream = match tokio::time::timeout(dial_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) | Err(_) => return Ok(EchoAnswer::only(PeerCheck::Dead)),
    };
    let nonce: u64 = rand::random();
    match tokio::time::timeout(timeout, echo_exchange(stream, nonce, keys)).await {
        Ok(r) => r,
        // Connected, but no answer in time: a hung or stopped daemon.
        Err(_) => Ok(EchoAnswer::only(PeerCheck::Dead)),
    }
}

/// One echo exchange on a connected stream, checked with `keys`.
pub(crate) async fn echo_exchange(
    mut stream: TcpStream,
    nonce: u64,
    keys: &Keyring,
) -> Result<EchoAnswer, EchoError> {
    let _ = stream.set_nodelay(true);
    let mut req = [0u8; ECHO_REQUEST_LEN];
    req[..4].copy_from_slice(ECHO_MAGIC);
    req[4..].copy_from_slice(&nonce.to_be_bytes());
    stream
        .write_all(&req)
        .await
        .map_err(|_| EchoError::Closed)?;
    let mut reply = [0u8; ECHO_REPLY_LEN + ECHO_EXT_LEN + ECHO_TAG_LEN];
    stream
        .read_exact(&mut reply[..ECHO_REPLY_LEN])
        .await
        .map_err(|_| EchoError::Closed)?;
    let head: [u8; ECHO_REPLY_LEN] = reply[..ECHO_REPLY_LEN]
        .try_into()
        .map_err(|_| EchoError::Malformed)?;
    let check = parse_echo_reply(&req, &head).ok_or(EchoError::Malformed)?;
    // The extension: a first-version peer closes after 18 bytes.
    let ext = ECHO_REPLY_LEN + ECHO_EXT_LEN;
    let (epoch, tag_len) = match stream.read_exact(&mut reply[ECHO_REPLY_LEN..ext]).await {
        Ok(_) => (
            Some(u32::from_be_bytes([
                reply[18], reply[19], reply[20], reply[21],
            ])),
            usize::from(reply[22]),
        ),
        Err(_) => (None, 0),
    };
    if tag_len != 0 && tag_len != ECHO_TAG_LEN {
        return Err(EchoError::Malformed);
    }
    let tag = &mut reply[ext..ext + tag_len];
    if tag_len > 0 {
        stream
            .read_exact(tag)
            .await
            .map_err(|_| EchoError::Malformed)?;
    }
    let answer_end = if epoch.is_some() { ext } else { ECHO_REPLY_LEN };
    let trust = keys.verify_echo(
        &req,
        &reply[ECHO_REQUEST_LEN..answer_end],
        &reply[ext..ext + tag_len],
    )?;
    Ok(EchoAnswer {
        check,
        epoch,
        signed: matches!(trust, Trust::Signed(_)),
    })
}

/// Check the echoed request and decode the status that follows it.
pub fn parse_echo_reply(
    req: &[u8; ECHO_REQUEST_LEN],
    reply: &[u8; ECHO_REPLY_LEN],
) -> Option<PeerCheck> {
    if reply[..ECHO_REQUEST_LEN] != req[..] {
        return None;
    }
    let state = match reply[12] {
        1 => WireState::Backup,
        2 => WireState::Master,
        3 => WireState::Fault,
        4 => WireState::Resign,
        _ => return None,
    };
    Some(PeerCheck::Alive {
        state,
        priority: reply[13],
        node: Ipv4Addr::new(reply[14], reply[15], reply[16], reply[17]),
    })
}

/// The answer to `req`: the first version's 18 bytes, the epoch, and the tag.
pub(crate) fn echo_reply(
    req: &[u8; ECHO_REQUEST_LEN],
    status: EchoStatus,
    epoch: u32,
    keys: &Keyring,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(ECHO_REPLY_LEN + ECHO_EXT_LEN + ECHO_TAG_LEN);
    out.extend_from_slice(req);
    out.push(status.0 as u8);
    out.push(status.1);
    out.extend_from_slice(&status.2.octets());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(if keys.is_empty() {
        0
    } else {
        ECHO_TAG_LEN as u8
    });
    let tag = keys.sign_echo(req, &out[ECHO_REQUEST_LEN..]);
    out.extend_from_slice(&tag);
    out
}

/// Counters of the echo service.
#[derive(Debug, Default)]
pub struct EchoStats {
    pub answered: AtomicU64,
    pub malformed: AtomicU64,
    /// Connections closed at once: their source already held its slots, or all
    /// slots were taken.
    pub over_limit: AtomicU64,
}

/// Connection slots per source address and in all; a [`Slot`] gives its place
/// back when dropped.
#[derive(Debug, Default)]
struct Slots {
    held: Mutex<HashMap<IpAddr, usize>>,
}

struct Slot {
    slots: Arc<Slots>,
    from: IpAddr,
}

impl Slots {
    fn take(self: &Arc<Self>, from: IpAddr) -> Option<Slot> {
        let mut held = self.held.lock().ok()?;
        let total: usize = held.values().sum();
        let mine = held.get(&from).copied().unwrap_or(0);
        if mine >= ECHO_SLOTS_PER_SOURCE || total >= ECHO_SLOTS {
            return None;
        }
        held.insert(from, mine + 1);
        Some(Slot {
            slots: self.clone(),
            from,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut held) = self.slots.held.lock()
            && let Some(n) = held.get_mut(&self.from)
        {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.from);
            }
        }
    }
}

/// Serve echo checks on `listener` until `cancel`, reporting `status`, unsigned.
pub async fn serve_echo(
    listener: TcpListener,
    status: watch::Receiver<EchoStatus>,
    stats: Arc<EchoStats>,
    cancel: CancellationToken,
) {
    let keys = watch::channel(Arc::new(Keyring::default())).1;
    serve_echo_keyed(listener, status, 0, keys, stats, cancel).await
}

/// Serve echo checks on `listener` until `cancel`, reporting `status` and `epoch`,
/// answers signed with the current first key of `keys`.
pub async fn serve_echo_keyed(
    listener: TcpListener,
    status: watch::Receiver<EchoStatus>,
    epoch: u32,
    keys: watch::Receiver<Arc<Keyring>>,
    stats: Arc<EchoStats>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Slots::default());
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut stream, from)) = accepted else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Some(slot) = slots.take(from.ip()) else {
            stats.over_limit.fetch_add(1, Ordering::Relaxed);
            continue; // dropped: over the limit (the asker reads "unknown")
        };
        let status = status.clone();
        let stats = stats.clone();
        let keys = keys.borrow().clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut req = [0u8; ECHO_REQUEST_LEN];
            let read =
                tokio::time::timeout(ECHO_FIRST_BYTES_TIMEOUT, stream.read_exact(&mut req)).await;
            if !matches!(read, Ok(Ok(_))) || &req[..4] != ECHO_MAGIC {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, "malformed echo request dropped");
                return;
            }
            let status = *status.borrow();
            let reply = echo_reply(&req, status, epoch, &keys);
            let write = tokio::time::timeout(ECHO_FIRST_BYTES_TIMEOUT, stream.write_all(&reply));
            if matches!(write.await, Ok(Ok(()))) {
                stats.answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// Bind the echo service's listener on `addr`.
pub fn bind_echo(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(64)?;
    TcpListener::from_std(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echo_roundtrip_reports_state() {
        let l = bind_echo("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = watch::channel((WireState::Master, 150, Ipv4Addr::new(10, 0, 0, 2)));
        let cancel = CancellationToken::new();
        let stats = Arc::new(EchoStats::default());
        tokio::spawn(serve_echo(l, rx, stats.clone(), cancel.clone()));
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        let ms = Duration::from_millis(500);
        assert_eq!(
            echo_check(addr, ms, ms).await,
            PeerCheck::Alive {
                state: WireState::Master,
                priority: 150,
                node: Ipv4Addr::new(10, 0, 0, 2)
            }
        );
        tx.send((WireState::Backup, 1, Ipv4Addr::new(10, 0, 0, 2)))
            .unwrap();
        assert!(matches!(
            echo_check(addr, ms, ms).await,
            PeerCheck::Alive {
                state: WireState::Backup,
                ..
            }
        ));
        // Garbage is dropped and counted.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"hello world!").await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        assert!(buf.is_empty());
        assert_eq!(stats.malformed.load(Ordering::Relaxed), 1);
        cancel.cancel();
    }

    #[tokio::test]
    async fn refused_and_silent_peers_are_dead() {
        // Nothing listens: refused.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let ms = Duration::from_millis(200);
        assert_eq!(
            echo_check(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), ms, ms).await,
            PeerCheck::Dead
        );
        // Accepts (kernel backlog) but never answers: a hung daemon.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::time::Instant::now();
        assert_eq!(
            echo_check(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), ms, ms).await,
            PeerCheck::Dead
        );
        assert!(t.elapsed() < Duration::from_millis(600));
        drop(l);
    }

    #[test]
    fn reply_must_echo_the_nonce() {
        let mut req = [0u8; ECHO_REQUEST_LEN];
        req[..4].copy_from_slice(ECHO_MAGIC);
        req[4] = 7;
        let status = (WireState::Fault, 3, Ipv4Addr::new(1, 2, 3, 4));
        let full = echo_reply(&req, status, 9, &Keyring::default());
        let reply: [u8; ECHO_REPLY_LEN] = full[..ECHO_REPLY_LEN].try_into().unwrap();
        assert!(matches!(
            parse_echo_reply(&req, &reply),
            Some(PeerCheck::Alive {
                state: WireState::Fault,
                priority: 3,
                ..
            })
        ));
        let mut other = req;
        other[4] = 8;
        assert_eq!(parse_echo_reply(&other, &reply), None);
        let mut bad = reply;
        bad[12] = 9;
        assert_eq!(parse_echo_reply(&req, &bad), None);
    }

    /// An echo service on loopback with `keys`; returns its address.
    async fn service(keys: Keyring, state: WireState) -> (SocketAddrV4, CancellationToken) {
        let l = bind_echo("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap().port();
        let (_tx, rx) = watch::channel((state, 150, Ipv4Addr::new(10, 0, 0, 2)));
        let keys = watch::channel(Arc::new(keys)).1;
        let cancel = CancellationToken::new();
        let stats = Arc::new(EchoStats::default());
        tokio::spawn(serve_echo_keyed(l, rx, 77, keys, stats, cancel.clone()));
        // Keep the status sender alive as long as the service.
        std::mem::forget(_tx);
        (SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), cancel)
    }

    const MS300: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn signed_answer_is_alive_and_names_the_epoch() {
        let keys = Keyring::from_secrets(&["correct horse battery staple"]);
        let (addr, cancel) = service(keys.clone(), WireState::Master).await;
        let a = echo_check_keyed(addr, MS300, MS300, &keys).await.unwrap();
        assert!(a.signed);
        assert_eq!(a.epoch, Some(77));
        assert!(matches!(
            a.check,
            PeerCheck::Alive {
                state: WireState::Master,
                ..
            }
        ));
        // A node without keys reads the same answer (signed, unchecked).
        assert!(matches!(
            echo_check(addr, MS300, MS300).await,
            PeerCheck::Alive { .. }
        ));
        cancel.cancel();
    }

    #[tokio::test]
    async fn answers_that_do_not_verify_prove_nothing() {
        let ours = Keyring::from_secrets(&["correct horse battery staple"]);
        // A different secret.
        let (addr, c1) = service(
            Keyring::from_secrets(&["another secret 0123456"]),
            WireState::Master,
        )
        .await;
        let r = echo_check_keyed(addr, MS300, MS300, &ours).await;
        assert!(
            matches!(
                r,
                Err(EchoError::Auth(super::super::auth::AuthError::UnknownKey(
                    _
                )))
            ),
            "{r:?}"
        );
        // No secret at all on the other side: unsigned answers are refused.
        let (addr, c2) = service(Keyring::default(), WireState::Master).await;
        let r = echo_check_keyed(addr, MS300, MS300, &ours).await;
        assert!(
            matches!(
                r,
                Err(EchoError::Auth(super::super::auth::AuthError::Unsigned))
            ),
            "{r:?}"
        );
        c1.cancel();
        c2.cancel();
    }

    #[tokio::test]
    async fn accepted_then_closed_is_unknown_not_dead() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                drop(s);
            }
        });
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        assert_eq!(
            echo_check_keyed(addr, MS300, MS300, &Keyring::default()).await,
            Err(EchoError::Closed)
        );
        assert_eq!(echo_check(addr, MS300, MS300).await, PeerCheck::Unknown);
    }

    #[tokio::test]
    async fn silent_connections_from_one_source_cannot_take_the_peers_slot() {
        let (addr, cancel) = service(Keyring::default(), WireState::Master).await;
        // 40 silent connections from 127.0.0.1 ...
        let mut silent = Vec::new();
        for _ in 0..40 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        // ... hold at most two slots; a question from another source address
        // (127.0.0.2 is loopback too) is answered at once.
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = sock.connect(addr.into()).await.unwrap();
        let mut req = [0u8; ECHO_REQUEST_LEN];
        req[..4].copy_from_slice(ECHO_MAGIC);
        s.write_all(&req).await.unwrap();
        let mut reply = [0u8; ECHO_REPLY_LEN];
        tokio::time::timeout(MS300, s.read_exact(&mut reply))
            .await
            .expect("the echo service did not answer while flooded")
            .unwrap();
        assert_eq!(reply[12], WireState::Master as u8);
        // And the silent ones are closed after the first-bytes timeout.
        let t = std::time::Instant::now();
        let mut buf = [0u8; 1];
        let n = silent[0].read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert!(t.elapsed() < ECHO_FIRST_BYTES_TIMEOUT + MS300);
        cancel.cancel();
    }
}
