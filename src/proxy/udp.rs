//! UDP forwarding, with gobetween's session semantics.
//!
//! UDP has no connections, so the service makes its own: the first datagram from
//! a client address opens a **session** — a node is chosen and a socket connected
//! to it — and later datagrams from the same address follow it. Replies from the
//! node are sent back to the client from the service's own socket. A session ends
//! when any of its limits is hit:
//!
//! * `udp.max_requests` datagrams came from the client (the session then takes no
//!   more requests; it stays only to pass on replies still due, and the client's
//!   next datagram opens a new session);
//! * `udp.max_responses` datagrams came back from the node;
//! * the client was silent for `client_idle_timeout`, or the node for
//!   `backend_idle_timeout`.
//!
//! A service with none of these limits would keep sessions forever; config
//! validation refuses it, as gobetween does since 0.6.
//!
//! `max_requests: 1` is gobetween's **fire and forget** mode: no session at all; a
//! node is chosen per datagram and the datagram is sent from a socket cached per
//! node; replies are not awaited.
//!
//! `transparent: true` sends to nodes from the *client's* address (Linux
//! `IP_TRANSPARENT` on a socket bound to that address), so the node sees the real
//! client. Replies then travel to the client's address: they reach this host only
//! if routing sends them here (the node's gateway), in which case the session
//! socket receives them and passes them on.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::balance::Node;
use super::chain::udp::UdpBackend;
use super::egress::{self, Exit, Via};
use super::router::Router;
use super::service::Service;
use super::stats::{Active, Timed, inc};
use crate::config::service::UdpConfig;

/// A UDP service: the shared [`Service`], gobetween's `udp` options and GOST's
/// `interface` exits (the same as the TCP path's; see [`egress`]).
pub(crate) struct UdpService {
    pub svc: Service,
    pub cfg: UdpConfig,
    pub exits: Vec<Exit>,
    /// The service's router: with a `handler.chain`, sessions reach their node
    /// through it (a SOCKS5 hop's UDP ASSOCIATE, or a virtual node's exit).
    pub router: Router,
}

/// Largest datagram handled (the IPv4 maximum payload).
const MAX_DATAGRAM: usize = 65_507;
/// Datagrams queued per session before new ones are dropped (and counted).
const SESSION_QUEUE: usize = 256;
/// A session that takes no more requests and has no timeout configured still ends
/// after the node was silent this long, so it cannot linger forever.
const LINGER: Duration = Duration::from_secs(30);

struct SessionHandle {
    tx: mpsc::Sender<Vec<u8>>,
}

/// Datagrams a session had queued but will not send, handed back to the receive
/// loop with their client so that they open a new session instead of being lost.
type HandBack = mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>;

/// Receive datagrams on `sock` until `stop`, dispatching them to sessions.
pub(crate) async fn serve(sock: Arc<UdpSocket>, ctx: Arc<UdpService>, stop: CancellationToken) {
    let svc = &ctx.svc;
    let cfg = &ctx.cfg;
    let (back_tx, mut back_rx) = mpsc::unbounded_channel::<(SocketAddr, Vec<u8>)>();
    let mut sessions: HashMap<SocketAddr, SessionHandle> = HashMap::new();
    let mut ff_sockets: HashMap<String, Arc<UdpBackend>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    loop {
        let (n, client, back) = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = sweep.tick() => {
                sessions.retain(|_, s| !s.tx.is_closed());
                continue;
            }
            // Already admitted and counted when it first arrived.
            Some((client, d)) = back_rx.recv() => (0, client, Some(d)),
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, client)) => {
                    if !svc.admits(client) {
                        continue;
                    }
                    inc(&svc.stats.udp_in);
                    svc.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    (n, client, None)
                }
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some kernels;
                    // they concern one peer, not the socket.
                    debug!(service = %svc.name, error = %e, "udp receive error");
                    continue;
                }
            },
        };
        let data: &[u8] = match &back {
            Some(d) => d,
            None => &buf[..n],
        };
        if cfg.max_requests == 1 {
            fire_and_forget(&ctx, client, data, &mut ff_sockets).await;
            continue;
        }
        if let Some(s) = sessions.get(&client) {
            match s.tx.try_send(data.to_vec()) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    inc(&svc.stats.udp_dropped);
                    continue;
                }
                // The session ended: this datagram opens a new one.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        // max_connections bounds the sessions alive at once.
        let max = svc.max_connections as u64;
        if max > 0 && svc.stats.active.load(Ordering::Relaxed) >= max {
            inc(&svc.stats.over_limit);
            inc(&svc.stats.udp_dropped);
            continue;
        }
        let Some((node, backend)) = open_backend(&ctx, client).await else {
            inc(&svc.stats.udp_dropped);
            continue;
        };
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        if tx.try_send(data.to_vec()).is_err() {
            inc(&svc.stats.udp_dropped);
        }
        sessions.insert(client, SessionHandle { tx });
        inc(&svc.stats.accepted);
        let session = Session {
            ctx: ctx.clone(),
            client,
            listener: sock.clone(),
            backend,
            node,
            hand_back: back_tx.clone(),
        };
        svc.tracker.spawn(session.run(rx));
    }
    debug!(service = %svc.name, "udp receive loop ended");
}

/// Pick a node and open a socket connected to it (from the client's address in
/// transparent mode). Failures are counted and logged.
async fn open_backend(u: &UdpService, client: SocketAddr) -> Option<(Arc<Node>, UdpBackend)> {
    let ctx = &u.svc;
    let mut tried: Vec<Arc<Node>> = Vec::new();
    while let Some(node) = ctx.balancer.pick(client.ip(), &tried) {
        match node_path(u, node.addr(), client, u.cfg.transparent).await {
            Ok(s) => {
                node.connect_ok();
                return Some((node, s));
            }
            Err(e) if super::chain::is_chain_failure(&e) => {
                // The chain failed (counted and logged there), not the node.
                debug!(service = %ctx.name, node = node.label(), error = %e, "chain unavailable");
                return None;
            }
            Err(e) => {
                inc(&ctx.stats.connect_failures);
                ctx.node_failed(&node);
                if let Some(suppressed) = ctx.node_fail_log.permit() {
                    warn!(service = %ctx.name, node = node.label(), error = %e, suppressed, "cannot open udp socket to node");
                }
                tried.push(node);
            }
        }
    }
    ctx.no_node(client.ip(), tried.len(), "dropping datagram");
    None
}

/// The way to the node at `addr`: through the service's chain if it has one
/// (the config refuses a chain with `transparent`), else a socket of its own.
async fn node_path(
    u: &UdpService,
    addr: &str,
    client: SocketAddr,
    transparent: bool,
) -> io::Result<UdpBackend> {
    match &u.router.chain {
        Some(chain) => chain.udp(&u.router, addr, client.ip()).await,
        None => backend_socket(u, addr, transparent.then_some(client))
            .await
            .map(UdpBackend::direct),
    }
}

/// A socket connected to the node at `addr`, leaving through the service's
/// `interface` exits; from `source` (the client's address) in transparent mode.
async fn backend_socket(
    u: &UdpService,
    addr: &str,
    source: Option<SocketAddr>,
) -> io::Result<UdpSocket> {
    // The service's hosts/resolver, as for TCP.
    let target = u.router.resolve(addr).await?[0];
    let exits = &u.exits[..];
    match source {
        None => egress::udp_connected(exits, target).await,
        Some(src) => {
            egress::through(exits, target, |exit| async move {
                let s = transparent_socket(src, exit)?;
                s.connect(target).await?;
                Ok(s)
            })
            .await
        }
    }
}

/// A socket bound to `src` although `src` is not ours (the client's address),
/// pinned to the exit's device if there is one. A source-address exit cannot
/// apply: the source is the client's (the config refuses the combination).
#[cfg(target_os = "linux")]
fn transparent_socket(src: SocketAddr, exit: Option<&Exit>) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(Domain::for_address(src), Type::DGRAM, Some(Protocol::UDP))?;
    if src.is_ipv4() {
        s.set_ip_transparent_v4(true)?;
    } else {
        s.set_ip_transparent_v6(true)?;
    }
    match exit.map(|e| &e.via) {
        Some(via @ Via::Device(_)) => egress::bind(&s, via, src.is_ipv4())?,
        Some(Via::Source(ip)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("source address {ip}: transparent mode sends from the client's address"),
            ));
        }
        None => {}
    }
    // The client's own socket may hold the same address on this very host.
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SockAddr::from(src))?;
    UdpSocket::from_std(s.into())
}

#[cfg(not(target_os = "linux"))]
fn transparent_socket(_src: SocketAddr, _exit: Option<&Exit>) -> io::Result<UdpSocket> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "transparent UDP needs Linux",
    ))
}

async fn fire_and_forget(
    u: &UdpService,
    client: SocketAddr,
    data: &[u8],
    cache: &mut HashMap<String, Arc<UdpBackend>>,
) {
    let ctx = &u.svc;
    let Some(node) = ctx.balancer.pick(client.ip(), &[]) else {
        inc(&ctx.stats.udp_dropped);
        ctx.no_node(client.ip(), 0, "dropping datagram");
        return;
    };
    let sent = if u.cfg.transparent {
        // The source differs per client: no caching.
        match node_path(u, node.addr(), client, true).await {
            Ok(s) => s.send(data).await,
            Err(e) => Err(e),
        }
    } else {
        let sock = match cache.get(node.addr()) {
            Some(s) => Ok(s.clone()),
            None => node_path(u, node.addr(), client, false).await.map(Arc::new),
        };
        match sock {
            Ok(s) => {
                cache.insert(node.addr().to_string(), s.clone());
                s.send(data).await
            }
            Err(e) => Err(e),
        }
    };
    match sent {
        Ok(n) => {
            node.byte_counter().fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(e) => {
            cache.remove(node.addr());
            inc(&ctx.stats.udp_dropped);
            ctx.node_failed(&node);
            debug!(service = %ctx.name, node = node.label(), error = %e, "udp send failed");
        }
    }
}

/// Why a session ended (each is counted).
#[derive(Debug)]
enum End {
    Killed,
    Idle,
    Done,
    Error,
}

struct Session {
    ctx: Arc<UdpService>,
    client: SocketAddr,
    listener: Arc<UdpSocket>,
    backend: UdpBackend,
    node: Arc<Node>,
    hand_back: HandBack,
}

impl Session {
    async fn run(self, mut rx: mpsc::Receiver<Vec<u8>>) {
        let ctx = &self.ctx.svc;
        let cfg = &self.ctx.cfg;
        let _lease = self.node.acquire();
        let _active = Active::new(&ctx.stats.active);
        let _timed = Timed::new(&ctx.stats.duration);
        let counter = self.node.byte_counter();
        let kill = ctx.kill.clone();
        let (mut requests, mut responses) = (0u64, 0u64);
        let mut last_client = Instant::now();
        let mut last_backend = Instant::now();
        let mut accepting = true;
        let end = loop {
            let deadline = self.deadline(accepting, last_client, last_backend);
            tokio::select! {
                _ = kill.cancelled() => break End::Killed,
                _ = tokio::time::sleep_until(deadline) => break End::Idle,
                d = rx.recv(), if accepting => match d {
                    Some(d) => {
                        last_client = Instant::now();
                        requests += 1;
                        match self.backend.send(&d).await {
                            Ok(n) => { counter.fetch_add(n as u64, Ordering::Relaxed); }
                            Err(e) => {
                                debug!(service = %ctx.name, error = %e, "send to node failed");
                                break End::Error;
                            }
                        }
                        if cfg.max_requests > 0 && requests >= cfg.max_requests {
                            // No more requests in this session; replies may still come.
                            accepting = false;
                            self.hand_back(&mut rx);
                            if self.no_timeouts() {
                                // The linger period counts from the last request.
                                last_backend = Instant::now();
                            }
                        }
                    }
                    // The receive loop stopped (drain): keep passing replies on.
                    None => accepting = false,
                },
                r = self.backend.readable() => {
                    let mut ended = None;
                    // Drain every reply already queued; each one is passed on
                    // without awaiting, so no datagram buffer lives in this task.
                    loop {
                        match self.pass_reply() {
                            Ok(Some(n)) => {
                                last_backend = Instant::now();
                                responses += 1;
                                counter.fetch_add(n as u64, Ordering::Relaxed);
                                if cfg.max_responses > 0 && responses >= cfg.max_responses {
                                    ended = Some(End::Done);
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                // ECONNREFUSED: the node's port is closed (ICMP unreachable).
                                ctx.node_failed(&self.node);
                                debug!(service = %ctx.name, node = self.node.label(), error = %e, "node receive error");
                                ended = Some(End::Error);
                                break;
                            }
                        }
                    }
                    if let Err(e) = r {
                        debug!(service = %ctx.name, error = %e, "node socket error");
                        break End::Error;
                    }
                    if let Some(end) = ended {
                        break end;
                    }
                },
            }
        };
        self.hand_back(&mut rx);
        inc(match end {
            End::Killed => &ctx.stats.killed,
            End::Idle => &ctx.stats.idle_closed,
            End::Done => &ctx.stats.completed,
            End::Error => &ctx.stats.errors,
        });
        debug!(service = %ctx.name, client = %self.client, requests, responses, ?end, "udp session ended");
    }

    /// Stop taking requests, and hand the ones already queued (they arrived
    /// after the last one this session sends) back to the receive loop, which
    /// opens a new session for them. Without this they would vanish uncounted.
    /// When the loop is gone (a drain) they are counted as dropped.
    fn hand_back(&self, rx: &mut mpsc::Receiver<Vec<u8>>) {
        rx.close();
        while let Ok(d) = rx.try_recv() {
            if self.hand_back.send((self.client, d)).is_err() {
                inc(&self.ctx.svc.stats.udp_dropped);
            }
        }
    }

    /// Move one queued reply from the node to the client. `Ok(None)`: none queued.
    /// A reply the client's socket cannot take right now is dropped and counted,
    /// as UDP would.
    fn pass_reply(&self) -> io::Result<Option<usize>> {
        let mut buf = [0u8; MAX_DATAGRAM];
        let n = match self.backend.try_recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        match self.listener.try_send_to(&buf[..n], self.client) {
            Ok(sent) => {
                inc(&self.ctx.svc.stats.udp_out);
                let stats = &self.ctx.svc.stats;
                stats.bytes_out.fetch_add(sent as u64, Ordering::Relaxed);
            }
            Err(e) => {
                inc(&self.ctx.svc.stats.udp_dropped);
                debug!(service = %self.ctx.svc.name, client = %self.client, error = %e, "send to client failed");
            }
        }
        Ok(Some(n))
    }

    fn no_timeouts(&self) -> bool {
        self.ctx.svc.client_idle.is_none() && self.ctx.svc.backend_idle.is_none()
    }

    /// When the session ends for silence, given what has been heard when.
    fn deadline(&self, accepting: bool, last_client: Instant, last_backend: Instant) -> Instant {
        let mut d: Option<Instant> = None;
        let mut earliest = |t: Instant| d = Some(d.map_or(t, |x: Instant| x.min(t)));
        if let Some(t) = self.ctx.svc.client_idle {
            earliest(super::clock::deadline_after(last_client, t));
        }
        if let Some(t) = self.ctx.svc.backend_idle {
            earliest(super::clock::deadline_after(last_backend, t));
        }
        if !accepting && self.no_timeouts() {
            earliest(last_backend + LINGER);
        }
        // No timeout applies while requests are still taken: the session ends by
        // its request/response limits. A far deadline keeps the select simple.
        d.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400))
    }
}
