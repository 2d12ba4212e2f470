//! Probes: is the peer alive, and can this node still reach the network?
//!
//! Two checks run side by side whenever the state machine asks
//! ([`Action::Probe`](super::machine::Action::Probe)):
//!
//! * **ICMP** (surge-ping) to the configured probe targets, from the failover
//!   interface. Any one answer within the timeout means "this node is connected".
//! * **Echo** on the peer, over TCP on `echo.port` (INFINI's option name). Our echo
//!   service answers a 12-byte request (`GWEC` + nonce) with the same bytes plus the
//!   daemon's own state, priority and address. So the check tells apart "the peer
//!   host is up but its daemon is gone" (connection refused, or no answer) from "the
//!   daemon is alive and MASTER, only its heartbeats are lost" (answer). A kernel
//!   accepting TCP for a stopped process is not enough: the nonce must come back.
//!
//! Both are bounded; the result always arrives within [`Prober::max_duration`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;

use super::machine::{PeerCheck, ProbeResult};
use super::wire::WireState;

const ECHO_MAGIC: &[u8; 4] = b"GWEC";
/// Length of an echo request (TCP stream or one UDP datagram).
pub const ECHO_REQUEST_LEN: usize = 12;
/// Length of an echo reply.
pub const ECHO_REPLY_LEN: usize = 18;

/// The request bytes for `nonce`.
pub fn echo_request(nonce: u64) -> [u8; ECHO_REQUEST_LEN] {
    let mut req = [0u8; ECHO_REQUEST_LEN];
    req[..4].copy_from_slice(ECHO_MAGIC);
    req[4..].copy_from_slice(&nonce.to_be_bytes());
    req
}

/// Whether `req` is a well-formed echo request.
pub fn is_echo_request(req: &[u8; ECHO_REQUEST_LEN]) -> bool {
    &req[..4] == ECHO_MAGIC
}

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
        })
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
                Some(p) => {
                    echo_check(
                        SocketAddrV4::new(p, self.echo_port),
                        self.echo_dial_timeout,
                        self.echo_timeout,
                    )
                    .await
                }
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

/// Ask the peer's echo service for its state.
pub async fn echo_check(
    addr: SocketAddrV4,
    dial_timeout: Duration,
    timeout: Duration,
) -> PeerCheck {
    let stream = match tokio::time::timeout(dial_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) | Err(_) => return PeerCheck::Dead,
    };
    let nonce: u64 = rand::random();
    match tokio::time::timeout(timeout, echo_exchange(stream, nonce)).await {
        Ok(Some(check)) => check,
        Ok(None) | Err(_) => PeerCheck::Dead,
    }
}

/// One echo exchange on a connected stream.
pub(crate) async fn echo_exchange(mut stream: TcpStream, nonce: u64) -> Option<PeerCheck> {
    let _ = stream.set_nodelay(true);
    let req = echo_request(nonce);
    stream.write_all(&req).await.ok()?;
    let mut reply = [0u8; ECHO_REPLY_LEN];
    stream.read_exact(&mut reply).await.ok()?;
    parse_echo_reply(&req, &reply)
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

/// The reply to `req` carrying `status`.
pub fn echo_reply(req: &[u8; ECHO_REQUEST_LEN], status: EchoStatus) -> [u8; ECHO_REPLY_LEN] {
    let mut out = [0u8; ECHO_REPLY_LEN];
    out[..ECHO_REQUEST_LEN].copy_from_slice(req);
    out[12] = status.0 as u8;
    out[13] = status.1;
    out[14..].copy_from_slice(&status.2.octets());
    out
}

/// Counters of the echo service.
#[derive(Debug, Default)]
pub struct EchoStats {
    pub answered: AtomicU64,
    pub malformed: AtomicU64,
}

/// Serve echo checks on `listener` until `cancel`, reporting `status`.
pub async fn serve_echo(
    listener: TcpListener,
    status: watch::Receiver<EchoStatus>,
    stats: Arc<EchoStats>,
    cancel: CancellationToken,
) {
    // A peer needs one connection at a time; a flood must not exhaust descriptors.
    let slots = Arc::new(Semaphore::new(32));
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // dropped: over the limit
        };
        let status = status.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut req = [0u8; ECHO_REQUEST_LEN];
            let read =
                tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut req)).await;
            if !matches!(read, Ok(Ok(_))) || &req[..4] != ECHO_MAGIC {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, "malformed echo request dropped");
                return;
            }
            let reply = echo_reply(&req, *status.borrow());
            if stream.write_all(&reply).await.is_ok() {
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
        let reply = echo_reply(&req, (WireState::Fault, 3, Ipv4Addr::new(1, 2, 3, 4)));
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
}
