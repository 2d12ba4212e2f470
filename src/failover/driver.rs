//! The async shell around the [`Machine`].
//!
//! It owns every piece of I/O: the heartbeat socket, the echo service, the
//! prober, the netlink watcher, the VIP controller and the notify hooks. Its loop
//! is always the same:
//!
//! 1. wait for whichever comes first — the machine's next deadline, a heartbeat,
//!    a probe result, a netlink event, or cancellation;
//! 2. hand that event to the machine with the current time;
//! 3. carry out the actions the machine queued, in order.
//!
//! Slow work (gratuitous ARP bursts, probes, hooks) runs in spawned tasks so that
//! heartbeats keep flowing; binding and unbinding the VIP are awaited in place,
//! because the order "release the VIP, then resign" matters.
//!
//! Every received datagram goes through [`inbound::accept`] (decode, then check
//! its MAC against the current keys) and only then, with its UDP source address,
//! to the machine, which applies the replay and peer-table rules. Drops are
//! counted by reason ([`DropCounters`], the machine's counters) and logged once
//! per sender and burst ([`inbound::BurstLog`]). Outgoing heartbeats are signed
//! here, with the first key at the moment of sending: the keys may change on
//! reload ([`run_keyed`]).
//!
//! [`spawn`] runs all of it on a thread of its own, with a single-threaded runtime
//! of its own and a raised scheduling priority (nice −10): the proxy's runtime may
//! keep both CPUs busy, but the heartbeat sender, the receiver and the echo
//! answers never queue behind its tasks. A heartbeat that leaves late looks like a
//! lost one to the peer; a late echo answer looks like a dead daemon.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::arp;
use super::auth::{AuthError, Keyring};
use super::confirm::{self, Confirmer, UdpEchoStats};
use super::handover::shell::{self as handover, Link, Steer};
use super::inbound::{self, BurstLog, Dropped};
use super::machine::{Action, Counters, Machine, Params, PeerCheck, ProbeResult, Refusal, State};
use super::netwatch::{self, NetEvent};
use super::probe::{self, EchoStats, Prober};
use super::replay;
use super::vip::{VipController, VipError};
use super::wire::DecodeError;
use crate::config::floating_ip::FloatingIp;

#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("VIP control on {0}: {1}")]
    Vip(String, VipError),
    #[error("heartbeat socket on {iface} port {port}: {source}")]
    Heartbeat {
        iface: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("echo service on {addr}: {source}")]
    Echo {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("ICMP prober on {0}: {1}")]
    Prober(String, std::io::Error),
    #[error("failover thread: {0}")]
    Thread(std::io::Error),
}

/// Run [`run_keyed`] on a dedicated thread with its own runtime (see the module
/// docs). The returned task ends with its result.
pub fn spawn(
    fip: FloatingIp,
    status_tx: watch::Sender<FailoverStatus>,
    keys: watch::Receiver<Arc<Keyring>>,
    commands: Commands,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<Result<(), FailoverError>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("failover".into())
        .spawn(move || {
            raise_priority();
            let result = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("failover-blocking")
                .build()
            {
                Ok(rt) => rt.block_on(run_keyed(fip, status_tx, keys, commands, cancel)),
                Err(e) => Err(FailoverError::Thread(e)),
            };
            let _ = tx.send(result);
        });
    tokio::spawn(async move {
        thread.map_err(FailoverError::Thread)?;
        rx.await.unwrap_or_else(|_| {
            Err(FailoverError::Thread(std::io::Error::other(
                "the failover thread panicked",
            )))
        })
    })
}

/// nice −10 for the calling thread (Linux has per-thread nice values; the threads
/// it starts inherit it). Failing (no CAP_SYS_NICE) only costs the head start.
fn raise_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = nix::unistd::gettid().as_raw();
        // SAFETY: plain syscall on our own thread id.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -10) };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the failover thread's priority");
        }
    }
}

/// What the daemon exposes about failover (read by the daemon, ACME and the Web
/// API; see [`super::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverStatus {
    pub state: State,
    /// Why the node is in this state (or why standby changed), one line.
    pub reason: String,
    /// When `state`, `standby` or `reason` last changed.
    pub since: SystemTime,
    /// In operator standby ([`Control::standby`]): never takes the VIP.
    pub standby: bool,
    /// Set with STOPPED when the VIP was handed over with its connections: they
    /// keep working through the peer until they end ([`super::handover`]), so
    /// they must not be cut.
    pub handover: bool,
    pub vip: Ipv4Addr,
    pub interface: String,
    /// This node's own address and priority.
    pub node: Ipv4Addr,
    pub priority: u8,
    /// The last [`super::status::HISTORY`] transitions, oldest first.
    pub history: Arc<std::collections::VecDeque<super::status::Transition>>,
    /// The peers heard, refreshed after every event.
    pub peers: super::status::PeerBoard,
}

impl FailoverStatus {
    /// A status as of now, not in standby.
    pub fn new(state: State, reason: impl Into<String>, vip: Ipv4Addr, interface: &str) -> Self {
        FailoverStatus {
            state,
            reason: reason.into(),
            since: SystemTime::now(),
            standby: false,
            handover: false,
            vip,
            interface: interface.to_string(),
            node: Ipv4Addr::UNSPECIFIED,
            priority: 0,
            history: Arc::default(),
            peers: super::status::PeerBoard::default(),
        }
    }
}

/// An operator's command for the running failover (see [`Control`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Standby { force: bool },
    Active,
}

/// Why a [`Control`] command did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("failover is not running")]
    NotRunning,
}

type Reply = tokio::sync::oneshot::Sender<Result<FailoverStatus, Refusal>>;

/// The handle to steer a running failover: put the node in standby (release the
/// VIP to the peer and stay out of the election) or make it active again. Cheap
/// to clone; every call is one message to the failover thread, answered once the
/// machine's actions (releasing the VIP, resigning) are done. Rules:
/// [`machine/control.rs`](super::machine::Refusal).
#[derive(Debug, Clone)]
pub struct Control {
    tx: mpsc::Sender<(Command, Reply)>,
}

/// The failover thread's end of [`Control`]; give it to [`spawn`].
#[derive(Debug)]
pub struct Commands {
    rx: mpsc::Receiver<(Command, Reply)>,
    grace: Option<Duration>,
}

impl Commands {
    /// On cancellation, a MASTER hands its connections over to the peer and
    /// serves them for at most `grace` ([`super::handover`]). Without it (or
    /// with zero) it releases the VIP as before.
    pub fn handover_grace(mut self, grace: Duration) -> Self {
        self.grace = (!grace.is_zero()).then_some(grace);
        self
    }
}

/// A control handle and the receiving end for [`spawn`].
pub fn control() -> (Control, Commands) {
    let (tx, rx) = mpsc::channel(8);
    (Control { tx }, Commands { rx, grace: None })
}

impl Control {
    /// Release the VIP to the peer (if MASTER) and stay BACKUP until
    /// [`Control::active`]. Refused unless a healthy peer is heard, or `force`.
    /// Returns the status after the change.
    pub async fn standby(&self, force: bool) -> Result<FailoverStatus, ControlError> {
        self.send(Command::Standby { force }).await
    }

    /// Take part in the election again.
    pub async fn active(&self) -> Result<FailoverStatus, ControlError> {
        self.send(Command::Active).await
    }

    pub async fn send(&self, cmd: Command) -> Result<FailoverStatus, ControlError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send((cmd, reply))
            .await
            .map_err(|_| ControlError::NotRunning)?;
        match answer.await {
            Ok(r) => r.map_err(ControlError::Refused),
            Err(_) => Err(ControlError::NotRunning),
        }
    }
}

/// Counters of heartbeat datagrams dropped before the machine, by cause:
/// malformed ones (the first five), then those failing authentication.
#[derive(Debug, Default)]
pub struct DropCounters {
    pub short: AtomicU64,
    pub magic: AtomicU64,
    pub version: AtomicU64,
    pub state: AtomicU64,
    /// An authentication length that does not match the datagram.
    pub auth: AtomicU64,
    /// Unsigned while this node requires signatures.
    pub unsigned: AtomicU64,
    /// Signed with a key this node does not have (a different secret).
    pub unknown_key: AtomicU64,
    /// A known key id with a wrong MAC: forged or corrupted.
    pub bad_mac: AtomicU64,
    /// An authentication type this version does not know.
    pub auth_type: AtomicU64,
}

impl DropCounters {
    fn count(&self, e: Dropped) {
        let c = match e {
            Dropped::Decode(DecodeError::Short) => &self.short,
            Dropped::Decode(DecodeError::Magic) => &self.magic,
            Dropped::Decode(DecodeError::Version) => &self.version,
            Dropped::Decode(DecodeError::State) => &self.state,
            Dropped::Decode(DecodeError::AuthLen) => &self.auth,
            Dropped::Auth(AuthError::Unsigned) => &self.unsigned,
            Dropped::Auth(AuthError::UnknownKey(_)) => &self.unknown_key,
            Dropped::Auth(AuthError::BadMac) => &self.bad_mac,
            Dropped::Auth(AuthError::Type(_)) => &self.auth_type,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Malformed datagrams (decode errors).
    pub fn total(&self) -> u64 {
        [
            &self.short,
            &self.magic,
            &self.version,
            &self.state,
            &self.auth,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    /// Datagrams that failed authentication.
    pub fn auth_failed(&self) -> u64 {
        [
            &self.unsigned,
            &self.unknown_key,
            &self.bad_mac,
            &self.auth_type,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// Log a dropped datagram, once per sender and burst. Authentication failures
/// are warnings (a different secret is an error: it splits the group); malformed
/// datagrams are for debugging.
fn log_drop(log: &mut BurstLog, from: SocketAddr, why: &dyn std::fmt::Display, error: bool) {
    let Some(more) = log.note(from.ip(), Instant::now()) else {
        return;
    };
    let from = from.ip();
    if error {
        tracing::error!(%from, suppressed = more, "heartbeat from {from} dropped: {why}; the nodes' secrets differ? They cannot hear each other and each acts alone (see docs/security.md)");
    } else {
        tracing::warn!(%from, suppressed = more, "heartbeat from {from} dropped: {why} (logged once per sender every 10 s)");
    }
}

/// The machine drops a heartbeat by counting it: tell which count grew.
fn machine_drop(before: &Counters, after: &Counters) -> Option<&'static str> {
    if after.old_epoch > before.old_epoch {
        Some("an epoch older than the sender's current one (a replay of an earlier run?)")
    } else if after.seq_jump > before.seq_jump {
        Some("its sequence number jumps further than the sender can have counted (forged?)")
    } else if after.spoofed > before.spoofed {
        Some("it names another node than the address it came from (spoofed?)")
    } else if after.table_full > before.table_full {
        Some("the peer table is full (a flood of senders?)")
    } else {
        // Stale ones are expected: with peer_ip set every heartbeat arrives twice.
        None
    }
}

/// Removing a primary address makes Linux drop the secondaries of its subnet too,
/// unless `promote_secondaries` is set. Should the VIP ever be the primary (it was
/// added before the node's own address), releasing it must not take the node's own
/// address with it; keepalived sets the same switch.
fn promote_secondaries(iface: &str) {
    #[cfg(target_os = "linux")]
    {
        let path = format!("/proc/sys/net/ipv4/conf/{iface}/promote_secondaries");
        match std::fs::read_to_string(&path) {
            Ok(v) if v.trim() == "1" => {}
            _ => match std::fs::write(&path, "1") {
                Ok(()) => tracing::info!("set net.ipv4.conf.{iface}.promote_secondaries=1"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set net.ipv4.conf.{iface}.promote_secondaries")
                }
            },
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = iface;
}

/// Open a UDP socket for heartbeats: bound to the interface, broadcast allowed.
fn heartbeat_socket(iface: &str, port: u16) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    #[cfg(target_os = "linux")]
    s.bind_device(Some(iface.as_bytes()))?;
    // macOS has no SO_BINDTODEVICE; IP_BOUND_IF pins the socket to the interface.
    #[cfg(target_os = "macos")]
    {
        let index = crate::net::interface_index(iface)
            .and_then(std::num::NonZeroU32::new)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no interface {iface}"),
                )
            })?;
        s.bind_device_by_index_v4(Some(index))?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    let _ = iface;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    UdpSocket::from_std(s.into())
}

/// Run failover until `cancel`, then release the VIP and resign. The keys are
/// those of `fip` for the whole run.
pub async fn run(
    fip: FloatingIp,
    status_tx: watch::Sender<FailoverStatus>,
    cancel: CancellationToken,
) -> Result<(), FailoverError> {
    let keys = watch::channel(Arc::new(Keyring::from_config(&fip.keys))).1;
    run_keyed(fip, status_tx, keys, control().1, cancel).await
}

/// [`run`], with keys that may change while it runs (a reload sends new ones)
/// and the operator's [`Commands`].
pub async fn run_keyed(
    fip: FloatingIp,
    status_tx: watch::Sender<FailoverStatus>,
    mut keys: watch::Receiver<Arc<Keyring>>,
    mut commands: Commands,
    cancel: CancellationToken,
) -> Result<(), FailoverError> {
    let iface = fip.interface.clone();
    warn_if_unauthenticated(&keys.borrow_and_update());
    promote_secondaries(&iface);
    let vip = VipController::new(&iface, fip.vip, fip.prefix)
        .await
        .map_err(|e| FailoverError::Vip(iface.clone(), e))?;
    handover::clean_stale(fip.vip).await;
    let sock = heartbeat_socket(&iface, fip.heartbeat_port).map_err(|source| {
        FailoverError::Heartbeat {
            iface: iface.clone(),
            port: fip.heartbeat_port,
            source,
        }
    })?;
    let mut targets = fip.probe_targets.clone();
    if targets.is_empty()
        && let Some(gw) = crate::net::default_gateway(&iface).await
    {
        tracing::info!(gateway = %gw, "no probe targets configured: probing the default gateway of {iface}");
        targets.push(gw);
    }
    if targets.is_empty() {
        tracing::warn!(
            "no probe targets and no default gateway on {iface}: a backup cut off from the LAN cannot tell that it is the one cut off, and will take the VIP (set floating_ip.probe.targets)"
        );
    }
    let prober = Arc::new(
        Prober::new(
            &iface,
            targets,
            fip.probe_timeout,
            fip.echo_port,
            fip.echo_dial_timeout,
            fip.echo_timeout,
        )
        .map_err(|e| FailoverError::Prober(iface.clone(), e))?
        .with_keys(keys.clone()),
    );
    let echo_addr = SocketAddr::from((fip.local_ip, fip.echo_port));
    let echo_listener = probe::bind_echo(echo_addr).map_err(|source| FailoverError::Echo {
        addr: echo_addr,
        source,
    })?;
    let udp_echo = confirm::bind_udp_echo(echo_addr).map_err(|source| FailoverError::Echo {
        addr: echo_addr,
        source,
    })?;
    // The confirmation window: one heartbeat interval (at least 30 ms, so that a few
    // attempts fit), started one interval before the dead timer fires.
    let window = fip.heartbeat_interval.max(Duration::from_millis(30));
    let confirmer = Arc::new(
        Confirmer::new(
            &iface,
            fip.echo_port,
            fip.echo_dial_timeout,
            fip.echo_timeout,
            window,
            window * 2,
        )
        .with_keys(keys.clone()),
    );

    let params = Params {
        node: fip.local_ip,
        vip: fip.vip,
        priority: fip.priority,
        preempt: fip.preempt,
        interval: fip.heartbeat_interval,
        dead_count: fip.dead_count,
        peer: fip.peer_ip,
        has_targets: prober.has_targets(),
        probe_timeout: prober.max_duration().max(confirmer.max_duration()),
        probe_interval: fip.probe_interval,
        garp_refresh: fip.garp_refresh,
    };
    // Epoch and first sequence from the clock: a restart always counts higher, so
    // receivers can refuse replays of earlier runs (see `replay`).
    let started = SystemTime::now();
    let epoch = replay::start_epoch(started);
    let mut machine = Machine::new(params, epoch, Instant::now());
    machine.set_sequence(replay::start_seq(started));
    machine.set_signed(keys.borrow().requires_signature());

    let (echo_tx, echo_rx) = watch::channel(machine.echo_status());
    let echo_stats = Arc::new(EchoStats::default());
    let tasks = CancellationToken::new();
    tokio::spawn(confirm::serve_udp_echo(
        udp_echo,
        echo_rx.clone(),
        epoch,
        keys.clone(),
        Arc::new(UdpEchoStats::default()),
        tasks.clone(),
    ));
    tokio::spawn(probe::serve_echo_keyed(
        echo_listener,
        echo_rx,
        epoch,
        keys.clone(),
        echo_stats,
        tasks.clone(),
    ));

    let (net_tx, mut net_rx) = mpsc::channel::<NetEvent>(64);
    {
        let iface = iface.clone();
        let vip_addr = fip.vip;
        tokio::spawn(async move {
            if let Err(e) = netwatch::watch(iface, vip_addr, net_tx).await {
                tracing::error!(error = %e, "netlink watcher stopped: link and VIP changes are no longer seen");
            }
        });
    }
    match netwatch::link_is_up(&iface) {
        Ok(up) => machine.handle_link(Instant::now(), up),
        Err(e) => tracing::warn!(error = %e, "cannot read link state of {iface}"),
    }

    let (probe_tx, mut probe_rx) = mpsc::channel::<ProbeResult>(16);
    let (confirm_tx, mut confirm_rx) = mpsc::channel::<(Ipv4Addr, u32)>(16);
    let (verify_tx, mut verify_rx) = mpsc::channel::<(u64, PeerCheck)>(16);
    let mut dests = vec![SocketAddrV4::new(fip.heartbeat_dest, fip.heartbeat_port)];
    if let Some(peer) = fip.peer_ip {
        dests.push(SocketAddrV4::new(peer, fip.heartbeat_port));
    }
    let counters = super::counters::global();
    let drops = &counters.drops;
    let mut shell = Shell {
        fip: &fip,
        vip,
        sock: &sock,
        dests,
        prober,
        confirmer,
        window,
        group_macs: Arc::new(Mutex::new(HashMap::new())),
        probe_tx,
        confirm_tx,
        verify_tx,
        keys: keys.clone(),
        status_tx,
        echo_tx,
        started: true,
        handing_over: false,
    };
    shell.execute(&mut machine).await;
    let dests = shell.dests.clone();
    let link_keys = keys.clone();
    let link = Link {
        sock: &sock,
        dests: &dests,
        keys: &link_keys,
        iface: &iface,
        node: fip.local_ip,
        vip: fip.vip,
        port: fip.heartbeat_port,
    };
    let mut steer = Steer::new(&iface, fip.local_ip, fip.vip);

    let mut buf = [0u8; 512];
    let mut drop_log = BurstLog::default();
    loop {
        let deadline = machine.next_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        let steer_deadline = steer.state.next_timeout();
        let steer_sleep = async {
            match steer_deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) if buf[..n].starts_with(&super::handover::wire::MAGIC) => {
                    if let Some(e) = steer.on_datagram(&link, &buf[..n], from).await {
                        log_drop(&mut drop_log, from, &e, false);
                    }
                }
                Ok((n, from)) => {
                    let accepted = inbound::accept(&buf[..n], &keys.borrow());
                    match (accepted, from.ip()) {
                        (Ok((hb, _)), IpAddr::V4(src)) => {
                            let before = machine.counters.clone();
                            machine.handle_heartbeat_from(Instant::now(), &hb, src);
                            if let Some(why) = machine_drop(&before, &machine.counters) {
                                log_drop(&mut drop_log, from, &why, false);
                            }
                        }
                        (Ok(_), IpAddr::V6(_)) => {}
                        (Err(e @ Dropped::Decode(_)), _) => {
                            drops.count(e);
                            tracing::debug!(%from, error = %e, "malformed heartbeat dropped");
                        }
                        (Err(e), _) => {
                            drops.count(e);
                            let mismatch = matches!(e, Dropped::Auth(AuthError::UnknownKey(_)));
                            log_drop(&mut drop_log, from, &e, mismatch);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(r) = probe_rx.recv() => machine.handle_probe(Instant::now(), r),
            Some((id, check)) = verify_rx.recv() => machine.handle_verify(Instant::now(), id, check),
            Some((peer, epoch)) = confirm_rx.recv() => machine.confirm_epoch(Instant::now(), peer, epoch),
            Some((cmd, reply)) = commands.rx.recv() => {
                let now = Instant::now();
                let done = match cmd {
                    Command::Standby { force } => machine.standby(now, force),
                    Command::Active => machine.active(now),
                };
                if let Err(e) = &done {
                    tracing::warn!(command = ?cmd, "failover command refused: {e}");
                }
                // Answer once the VIP is released and the resign sent.
                shell.execute(&mut machine).await;
                let _ = reply.send(done.map(|()| shell.status_tx.borrow().clone()));
            }
            Ok(()) = keys.changed() => {
                let k = keys.borrow_and_update().clone();
                tracing::info!(keys = ?k.ids(), "floating_ip keys reloaded: signing with the first");
                warn_if_unauthenticated(&k);
                machine.set_signed(k.requires_signature());
            }
            Some(ev) = net_rx.recv() => {
                let now = Instant::now();
                match ev {
                    NetEvent::Link { up } => machine.handle_link(now, up),
                    NetEvent::VipRemoved => machine.handle_vip_removed(now),
                    NetEvent::VipAdded => machine.handle_vip_added(now),
                }
            }
            _ = sleep => machine.handle_timeout(Instant::now()),
            _ = steer_sleep => steer.on_timeout(&link).await,
        }
        counters.set_machine(&machine.counters);
        shell.execute(&mut machine).await;
        shell.status_tx.borrow().peers.set(machine.peers());
    }

    // A planned switchover: a MASTER hands its connections over first (gate, list,
    // the peer's ACK, VIP on lo), then releases the VIP and resigns as always.
    let leaving = match commands.grace {
        Some(_) if machine.state() == State::Master => handover::begin(&link).await,
        _ => None,
    };
    shell.handing_over = leaving.is_some();
    machine.shutdown(Instant::now());
    shell.execute(&mut machine).await;
    if let (Some(leaving), Some(grace)) = (leaving, commands.grace) {
        leaving.run(&link, grace).await;
    }
    steer.stop().await;
    tasks.cancel();
    let c = &machine.counters;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    tracing::info!(
        received = c.received,
        own = c.own,
        other_group = c.other_group,
        stale = c.stale,
        old_epoch = c.old_epoch,
        seq_jump = c.seq_jump,
        spoofed = c.spoofed,
        table_full = c.table_full,
        unconfirmed = c.unconfirmed,
        peers = machine.peer_count(),
        peers_peak = c.peers_peak,
        malformed = drops.total(),
        auth_failed = drops.auth_failed(),
        unsigned = n(&drops.unsigned),
        unknown_key = n(&drops.unknown_key),
        bad_mac = n(&drops.bad_mac),
        handover_malformed = n(&steer.drops.malformed),
        handover_unsigned = n(&steer.drops.unsigned),
        handover_auth_failed = n(&steer.drops.auth_failed),
        "failover stopped"
    );
    Ok(())
}

/// The I/O half: carries out actions.
struct Shell<'a> {
    fip: &'a FloatingIp,
    vip: VipController,
    sock: &'a UdpSocket,
    dests: Vec<SocketAddrV4>,
    prober: Arc<Prober>,
    confirmer: Arc<Confirmer>,
    /// How long a takeover probe asks (the ARP probe listens as long).
    window: Duration,
    /// MACs the nodes of this group answered ARP with: a VIP claimed by one of them
    /// (a crashed node's kernel still holding it) is not a conflict.
    group_macs: Arc<Mutex<HashMap<Ipv4Addr, pnet::util::MacAddr>>>,
    probe_tx: mpsc::Sender<ProbeResult>,
    confirm_tx: mpsc::Sender<(Ipv4Addr, u32)>,
    verify_tx: mpsc::Sender<(u64, PeerCheck)>,
    keys: watch::Receiver<Arc<Keyring>>,
    status_tx: watch::Sender<FailoverStatus>,
    echo_tx: watch::Sender<probe::EchoStatus>,
    /// True until the first UnbindVip has run (the crash clean-up at start).
    started: bool,
    /// The coming STOPPED is a handover ([`FailoverStatus::handover`]).
    handing_over: bool,
}

impl Shell<'_> {
    async fn execute(&mut self, machine: &mut Machine) {
        while let Some(action) = machine.poll_action() {
            match action {
                Action::SendHeartbeat(hb) => {
                    let bytes = self.keys.borrow().encode_heartbeat(&hb);
                    // A resign is the last word: repeat it against loss.
                    let copies = if hb.state == super::wire::WireState::Resign {
                        3
                    } else {
                        1
                    };
                    let counters = super::counters::global();
                    for _ in 0..copies {
                        for d in &self.dests {
                            match self.sock.send_to(&bytes, *d).await {
                                Ok(_) => counters.heartbeats_sent.fetch_add(1, Ordering::Relaxed),
                                Err(e) => {
                                    tracing::debug!(dest = %d, error = %e, "heartbeat send failed");
                                    counters
                                        .heartbeat_send_errors
                                        .fetch_add(1, Ordering::Relaxed)
                                }
                            };
                        }
                    }
                }
                Action::BindVip => match self.vip.bind().await {
                    Ok(true) => {
                        tracing::info!(vip = %self.fip.vip, iface = %self.fip.interface, "VIP bound")
                    }
                    Ok(false) => tracing::debug!("VIP already bound"),
                    Err(e) => tracing::error!(error = %e, "binding the VIP failed"),
                },
                Action::UnbindVip => {
                    let first = std::mem::replace(&mut self.started, false);
                    match self.vip.unbind().await {
                        Ok(true) if first => {
                            tracing::info!(vip = %self.fip.vip, "removed a VIP left behind by an earlier run")
                        }
                        Ok(true) => tracing::info!(vip = %self.fip.vip, "VIP released"),
                        Ok(false) => {}
                        Err(e) => tracing::error!(error = %e, "releasing the VIP failed"),
                    }
                }
                Action::Garp | Action::GarpRefresh => {
                    let (count, interval) = if matches!(action, Action::Garp) {
                        (self.fip.garp_count, self.fip.garp_interval)
                    } else {
                        (1, Duration::ZERO)
                    };
                    let iface = self.fip.interface.clone();
                    let vip = self.fip.vip;
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = arp::send_garp(&iface, vip, count, interval) {
                            tracing::warn!(error = %e, "gratuitous ARP failed");
                        }
                    });
                }
                Action::Probe { id, peer, vip } => {
                    let prober = self.prober.clone();
                    let confirmer = self.confirmer.clone();
                    let tx = self.probe_tx.clone();
                    let arp = vip.then(|| self.arp_probe(peer));
                    tokio::spawn(async move {
                        let peer_check = async {
                            match peer {
                                Some(p) => confirmer.check(p).await,
                                None => PeerCheck::Unknown,
                            }
                        };
                        let vip_check = async {
                            match arp {
                                Some(task) => task.await.unwrap_or(None),
                                None => None,
                            }
                        };
                        let (peer, targets_ok, vip_in_use) =
                            tokio::join!(peer_check, prober.ping_targets(), vip_check);
                        let _ = tx
                            .send(ProbeResult {
                                id,
                                peer,
                                targets_ok,
                                vip_in_use,
                            })
                            .await;
                    });
                }
                Action::Verify { id, peer } => {
                    let prober = self.prober.clone();
                    let tx = self.verify_tx.clone();
                    tokio::spawn(async move {
                        let check = prober.check_peer(peer).await;
                        let _ = tx.send((id, check)).await;
                    });
                }
                Action::ConfirmEpoch { peer } => {
                    let prober = self.prober.clone();
                    let tx = self.confirm_tx.clone();
                    tokio::spawn(async move {
                        if let Some(epoch) = prober.confirm_epoch(peer).await {
                            let _ = tx.send((peer, epoch)).await;
                        }
                    });
                }
                Action::StateChanged { from, to, reason } => {
                    tracing::info!(from = %from, to = %to, reason = %reason, "state change");
                    super::counters::global().transition(from, to, &reason);
                    let _ = self.echo_tx.send(machine.echo_status());
                    let standby = machine.is_standby();
                    let handover = to == State::Stopped && self.handing_over;
                    self.status_tx.send_modify(|s| {
                        s.transition(to, &reason);
                        s.standby = standby;
                        s.handover = handover;
                    });
                    self.notify(from, to, &reason);
                }
                Action::StandbyChanged { standby, reason } => {
                    tracing::info!(standby, state = %machine.state(), reason = %reason, "standby {}", if standby { "on" } else { "off" });
                    let _ = self.echo_tx.send(machine.echo_status());
                    let state = machine.state();
                    let on = if standby { "on" } else { "off" };
                    self.status_tx.send_modify(|s| {
                        s.transition(state, &format!("standby {on}: {reason}"));
                        s.reason = reason;
                        s.standby = standby;
                    });
                }
            }
        }
    }

    /// Start the RFC 5227 ARP probe of the VIP (see [`arp::probe_vip`]); the task
    /// ends with the MAC of a host outside this group that claims it, if any.
    fn arp_probe(&self, peer: Option<Ipv4Addr>) -> tokio::task::JoinHandle<Option<String>> {
        let iface = self.fip.interface.clone();
        let vip = self.fip.vip;
        // The peer is asked for its own MAC in the same breath, so that its kernel
        // answering for the VIP (a crashed daemon's leftover, or a live master seen
        // from a FAULT node) is recognised as one of ours. Health probes name no
        // peer: the configured one is asked then.
        let ask = peer.or(self.fip.peer_ip).map(|p| (self.fip.local_ip, p));
        let window = self.window;
        let group = self.group_macs.clone();
        tokio::task::spawn_blocking(move || {
            let found = match arp::probe_vip(&iface, vip, ask, 3, window) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "ARP probe of the VIP failed: binding without it");
                    return None;
                }
            };
            let mut group = group.lock().unwrap_or_else(|p| p.into_inner());
            if let (Some((_, p)), Some(mac)) = (ask, found.peer_mac) {
                group.insert(p, mac);
            }
            found
                .vip_claimed_by
                .iter()
                .find(|m| !group.values().any(|g| g == *m))
                .map(|m| m.to_string())
        })
    }

    /// Run the configured notify commands (keepalived's notify scripts), without
    /// waiting for them: a slow hook must not delay failover.
    fn notify(&self, from: State, to: State, reason: &str) {
        let n = &self.fip.notify;
        let own = match to {
            State::Master => n.master.as_ref(),
            State::Backup => n.backup.as_ref(),
            State::Fault => n.fault.as_ref(),
            _ => None,
        };
        for cmd in own.into_iter().chain(n.any.as_ref()) {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c")
                .arg(cmd)
                .env("GATEWAY_STATE", to.to_string())
                .env("GATEWAY_PREVIOUS_STATE", from.to_string())
                .env("GATEWAY_REASON", reason)
                .env("GATEWAY_VIP", self.fip.vip.to_string())
                .env("GATEWAY_INTERFACE", &self.fip.interface)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(false);
            let cmd = cmd.clone();
            match c.spawn() {
                Ok(mut child) => {
                    tokio::spawn(async move {
                        match child.wait().await {
                            Ok(s) if s.success() => {
                                tracing::debug!(command = %cmd, "notify command done")
                            }
                            Ok(s) => {
                                tracing::warn!(command = %cmd, status = %s, "notify command failed")
                            }
                            Err(e) => {
                                tracing::warn!(command = %cmd, error = %e, "notify command failed")
                            }
                        }
                    });
                }
                Err(e) => tracing::warn!(command = %cmd, error = %e, "cannot run notify command"),
            }
        }
    }
}

/// Without a key any host on the LAN can take the VIP: say so at start (and when
/// a reload removes the keys).
fn warn_if_unauthenticated(keys: &Keyring) {
    if keys.is_empty() {
        tracing::warn!(
            "floating_ip has no secret: heartbeats are not authenticated and any host on this LAN can take the VIP (set floating_ip.secret or secret_file; see docs/security.md)"
        );
    } else if keys.accept_unauthenticated {
        tracing::warn!(
            "floating_ip.accept_unauthenticated is set: unsigned heartbeats are accepted too and any host on this LAN can take the VIP; remove it once every node has the secret"
        );
    }
}
