//! Confirming a suspicion: is the silent peer really gone?
//!
//! Heartbeats are one datagram every interval; on a lossy path a few in a row go
//! missing all the time, and a node that took over on silence alone would move the
//! VIP back and forth (or split the brain). So when the state machine suspects the
//! master ([`Action::Probe`](super::machine::Action::Probe)), [`Confirmer::check`]
//! asks the peer several independent ways *at once* and *repeatedly* for a short
//! window, and calls it dead only when none of them got an answer:
//!
//! | way                   | what an answer proves                 | on a crash (host up) |
//! |-----------------------|---------------------------------------|----------------------|
//! | UDP echo (`echo.port`) | the daemon is alive, and its state   | port unreachable     |
//! | TCP echo (`echo.port`) | the daemon is alive, and its state   | connection refused   |
//! | ICMP echo to the peer | the peer *host* is up                 | answered             |
//!
//! A UDP request goes out every `step` (a fifth of the window, 5–100 ms), a TCP
//! attempt every third step, a ping every step; each is independent of the others'
//! losses. The outcome:
//!
//! * any daemon answer → [`PeerCheck::Alive`] at once, with the state it reported;
//! * the window passed, and either nothing at all answered (the host is gone) or the
//!   daemon's port was refused (the host is up, the daemon is not) → [`PeerCheck::Dead`];
//! * the window passed, the host answers ping but the daemon neither answers nor
//!   refuses (a hung daemon, or heavy loss) → keep asking for `extend` more, then
//!   [`PeerCheck::Dead`] — a daemon that cannot answer cannot serve the VIP either.
//!
//! With 25 % loss in each direction one UDP round trip fails with probability
//! 1 − 0.75² ≈ 0.44; five of them, five pings and two TCP attempts all failing is
//! about 0.44¹² ≈ 5·10⁻⁵ — per suspicion, on top of the heartbeats themselves.
//!
//! The same module serves the UDP side of the echo ([`serve_udp_echo`]): the question
//! and the answer are the TCP echo's bytes ([`super::probe`]), one datagram each,
//! signed and checked with the same keys (a challenge-response with a secret). An
//! answer that does not verify proves nothing: it counts as "something is there"
//! (like a ping answer), never as a live daemon.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::auth::Keyring;
use super::machine::PeerCheck;
use super::probe::{self, ECHO_ANSWER_MAX, ECHO_REQUEST_LEN, EchoStatus};

/// What one way of asking found out.
#[derive(Debug, Clone, Copy)]
enum Evidence {
    /// The daemon answered the echo.
    Daemon(PeerCheck),
    /// The peer host said the daemon's port is closed (RST, ICMP port unreachable).
    Refused,
    /// The peer host answered ICMP.
    Host,
}

/// Runs [`Confirmer::check`]; one per driver.
pub struct Confirmer {
    echo_port: u16,
    dial_timeout: Duration,
    echo_timeout: Duration,
    window: Duration,
    extend: Duration,
    icmp: Option<surge_ping::Client>,
    ident: u16,
    seq: AtomicU16,
    keys: watch::Receiver<Arc<Keyring>>,
}

impl Confirmer {
    /// `window` is how long the peer is asked before a verdict; `extend` how much
    /// longer while its host answers but its daemon neither answers nor refuses.
    /// ICMP to the peer needs a raw (or ping) socket; without one the other ways
    /// still run.
    pub fn new(
        ifname: &str,
        echo_port: u16,
        dial_timeout: Duration,
        echo_timeout: Duration,
        window: Duration,
        extend: Duration,
    ) -> Confirmer {
        let cfg = surge_ping::Config::builder()
            .kind(surge_ping::ICMP::V4)
            .interface(ifname)
            .build();
        let icmp = match surge_ping::Client::new(&cfg) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no ICMP socket: the peer is confirmed dead by echo only");
                None
            }
        };
        Confirmer {
            echo_port,
            dial_timeout,
            echo_timeout,
            window,
            extend,
            icmp,
            ident: rand::random(),
            seq: AtomicU16::new(0),
            keys: watch::channel(Arc::new(Keyring::default())).1,
        }
    }

    /// Check echo answers with these keys (they may change on reload).
    pub fn with_keys(mut self, keys: watch::Receiver<Arc<Keyring>>) -> Confirmer {
        self.keys = keys;
        self
    }

    /// The longest [`Confirmer::check`] takes.
    pub fn max_duration(&self) -> Duration {
        self.window + self.extend
    }

    /// The spacing of the attempts.
    fn step(&self) -> Duration {
        (self.window / 5).clamp(Duration::from_millis(5), Duration::from_millis(100))
    }

    /// Ask `peer` every way at once until one answers or the verdict is due (see the
    /// module docs).
    pub async fn check(&self, peer: Ipv4Addr) -> PeerCheck {
        let start = Instant::now();
        let window_end = start + self.window;
        let hard_end = window_end + self.extend;
        let addr = SocketAddrV4::new(peer, self.echo_port);
        let udp = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await {
            Ok(s) if s.connect(addr).await.is_ok() => Some(s),
            _ => None,
        };
        let keys = self.keys.borrow().clone();
        let (tx, mut rx) = mpsc::unbounded_channel::<Evidence>();
        // Dropped at return: aborts the attempts still running.
        let mut attempts = JoinSet::new();
        let mut sent: Vec<[u8; ECHO_REQUEST_LEN]> = Vec::new();
        let mut tick = tokio::time::interval(self.step());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut refused, mut host_up) = (false, false);
        let mut round = 0u32;
        let mut buf = [0u8; ECHO_ANSWER_MAX + 1];
        loop {
            let end = if host_up && !refused {
                hard_end
            } else {
                window_end
            };
            tokio::select! {
                _ = tokio::time::sleep_until(end) => return PeerCheck::Dead,
                _ = tick.tick() => {
                    if let Some(s) = &udp {
                        let req = probe::echo_request(rand::random());
                        match s.send(&req).await {
                            Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused = true,
                            _ => {}
                        }
                        if sent.len() >= 64 {
                            sent.remove(0);
                        }
                        sent.push(req);
                    }
                    if round.is_multiple_of(3) {
                        let tx = tx.clone();
                        let (dial, to) = (self.dial_timeout, self.echo_timeout);
                        let keys = keys.clone();
                        attempts.spawn(async move {
                            if let Some(ev) = tcp_attempt(addr, dial, to, &keys).await {
                                let _ = tx.send(ev);
                            }
                        });
                    }
                    if let Some(client) = &self.icmp {
                        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                        let mut pinger = client
                            .pinger(IpAddr::V4(peer), surge_ping::PingIdentifier(self.ident))
                            .await;
                        pinger.timeout(hard_end.saturating_duration_since(Instant::now()));
                        let tx = tx.clone();
                        attempts.spawn(async move {
                            if pinger.ping(surge_ping::PingSequence(seq), b"gateway-peer").await.is_ok() {
                                let _ = tx.send(Evidence::Host);
                            }
                        });
                    }
                    round += 1;
                }
                r = recv(udp.as_ref(), &mut buf) => match r {
                    Ok(n) => {
                        let answer = &buf[..n];
                        let mut verified = None;
                        for req in &sent {
                            match probe::parse_echo_answer(req, answer, &keys) {
                                Ok(a) => verified = Some(a.check),
                                // Our question came back, but the answer does not
                                // verify: something is there; it proves nothing.
                                Err(probe::EchoError::Auth(_)) => host_up = true,
                                Err(_) => continue,
                            }
                            break;
                        }
                        if let Some(check) = verified {
                            return check;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => refused = true,
                    Err(_) => {}
                },
                Some(ev) = rx.recv() => match ev {
                    Evidence::Daemon(check) => return check,
                    Evidence::Refused => refused = true,
                    Evidence::Host => host_up = true,
                },
            }
        }
    }
}

async fn recv(sock: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<usize> {
    match sock {
        Some(s) => s.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// One TCP echo: `Refused` on RST, the daemon's verified answer, `Host` for a
/// connection that answered nothing that verifies, or nothing (timeout).
async fn tcp_attempt(
    addr: SocketAddrV4,
    dial: Duration,
    timeout: Duration,
    keys: &Keyring,
) -> Option<Evidence> {
    let stream = match tokio::time::timeout(dial, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => return Some(Evidence::Refused),
        _ => return None,
    };
    let nonce: u64 = rand::random();
    match tokio::time::timeout(timeout, probe::echo_exchange(stream, nonce, keys)).await {
        Ok(Ok(a)) => Some(Evidence::Daemon(a.check)),
        Ok(Err(_)) => Some(Evidence::Host),
        Err(_) => None,
    }
}

/// Counters of the UDP echo service.
#[derive(Debug, Default)]
pub struct UdpEchoStats {
    pub answered: AtomicU64,
    pub malformed: AtomicU64,
}

/// Bind the UDP side of the echo service on `addr`.
pub fn bind_udp_echo(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Answer UDP echo questions with `status` and `epoch`, signed with the current
/// first key of `keys`, until `cancel`. One answer datagram per well-formed
/// 12-byte question (at most 59 bytes: little to gain for a reflector).
pub async fn serve_udp_echo(
    sock: UdpSocket,
    status: watch::Receiver<EchoStatus>,
    epoch: u32,
    keys: watch::Receiver<Arc<Keyring>>,
    stats: Arc<UdpEchoStats>,
    cancel: CancellationToken,
) {
    let mut buf = [0u8; 64];
    loop {
        let r = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => r,
        };
        let Ok((n, from)) = r else {
            // ICMP errors from earlier replies surface here; nothing to do.
            continue;
        };
        let Some(req) = buf[..n]
            .try_into()
            .ok()
            .filter(|r: &[u8; ECHO_REQUEST_LEN]| probe::is_echo_request(r))
        else {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let keys = keys.borrow().clone();
        let reply = probe::echo_reply(&req, *status.borrow(), epoch, &keys);
        if sock.send_to(&reply, from).await.is_ok() {
            stats.answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::wire::WireState;

    const MS: Duration = Duration::from_millis(1);

    fn confirmer(port: u16, window: Duration) -> Confirmer {
        Confirmer::new("lo", port, 50 * MS, 50 * MS, window, 2 * window)
    }

    #[tokio::test]
    async fn udp_echo_answer_is_alive_at_once() {
        let sock = bind_udp_echo("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = sock.local_addr().unwrap().port();
        let (_tx, rx) = watch::channel((WireState::Master, 7, Ipv4Addr::new(10, 0, 0, 1)));
        let cancel = CancellationToken::new();
        let stats = Arc::new(UdpEchoStats::default());
        let keys = watch::channel(Arc::new(Keyring::default())).1;
        tokio::spawn(serve_udp_echo(
            sock,
            rx,
            5,
            keys,
            stats.clone(),
            cancel.clone(),
        ));
        // Nothing listens on TCP for that port: only the UDP side can answer.
        let t = Instant::now();
        let c = confirmer(port, 200 * MS);
        assert_eq!(
            c.check(Ipv4Addr::LOCALHOST).await,
            PeerCheck::Alive {
                state: WireState::Master,
                priority: 7,
                node: Ipv4Addr::new(10, 0, 0, 1)
            }
        );
        assert!(t.elapsed() < 100 * MS, "answered late: {:?}", t.elapsed());
        assert!(stats.answered.load(Ordering::Relaxed) >= 1);
        cancel.cancel();
    }

    #[tokio::test]
    async fn refused_everywhere_is_dead_after_the_window_not_before() {
        let l = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let t = Instant::now();
        let c = confirmer(port, 60 * MS);
        assert_eq!(c.check(Ipv4Addr::LOCALHOST).await, PeerCheck::Dead);
        let took = t.elapsed();
        // Loopback answers ping: refusals end the wait at the window, not the extension.
        assert!(took >= 60 * MS && took < 110 * MS, "{took:?}");
    }

    #[tokio::test]
    async fn hung_daemon_is_asked_for_the_extension_then_dead() {
        // TCP accepts (kernel backlog) and UDP swallows: the host is up, the daemon
        // says nothing and refuses nothing.
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let _udp = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
        let c = confirmer(port, 40 * MS);
        let t = Instant::now();
        assert_eq!(c.check(Ipv4Addr::LOCALHOST).await, PeerCheck::Dead);
        let took = t.elapsed();
        if c.icmp.is_some() {
            assert!(
                took >= 100 * MS,
                "the host answered: the extension applies ({took:?})"
            );
        }
        assert!(took < 200 * MS, "{took:?}");
    }
}
