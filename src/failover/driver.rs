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
//!
//! The pieces:
//! * this file — the loop ([`run_keyed`]) and the thread it runs on ([`spawn`]);
//! * `driver/actions.rs` — the shell that carries out the machine's actions
//!   (sockets, VIP, gratuitous ARP, probes, notify hooks) and publishes the status;
//! * `driver/control.rs` — the operator's handle ([`Control`]: standby / active);
//! * `driver/drops.rs` — counting and logging the datagrams dropped before the
//!   machine ([`DropCounters`]);
//! * `driver/host.rs` — what the driver sets on the host at start (scheduling
//!   priority, `promote_secondaries`, the heartbeat socket).
//!
//! [`FailoverStatus`], what the driver publishes, lives in [`super::status`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::auth::{AuthError, Keyring};
use super::confirm::{self, Confirmer, UdpEchoStats};
use super::handover::shell::{self as handover, Link, Outcome, Steer};
use super::inbound::{self, BurstLog, Dropped};
use super::machine::{Machine, Params, PeerCheck, ProbeResult, Refusal, State};
use super::netwatch::{self, NetEvent};
use super::probe::{self, EchoStats, Prober};
use super::replay;
use super::vip::{VipController, VipError};
use crate::config::floating_ip::FloatingIp;

mod actions;
mod control;
mod departure;
mod drops;
mod host;

pub use super::status::FailoverStatus;
use actions::Shell;
pub use control::{Command, Commands, Control, ControlError, control};
use departure::Departure;
pub use drops::DropCounters;
use drops::{log_drop, machine_drop};

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
            host::raise_priority();
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
    host::promote_secondaries(&iface);
    let vip = VipController::new(&iface, fip.vip, fip.prefix)
        .await
        .map_err(|e| FailoverError::Vip(iface.clone(), e))?;
    handover::clean_stale(fip.vip).await;
    let sock = host::heartbeat_socket(&iface, fip.heartbeat_port).map_err(|source| {
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
    let mut departure: Option<Departure> = None;

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
        let leave_deadline = Departure::next_timeout(&departure);
        let leave_sleep = async {
            match leave_deadline {
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
                    match steer.on_datagram(&link, &buf[..n], from).await {
                        Err(e) => log_drop(&mut drop_log, from, &e, false),
                        Ok(Some((src, ack))) => {
                            if let Some(d) = departure.as_mut() {
                                let outcome = d.leaving.on_message(&link, src, &ack).await;
                                departure::settle(outcome, &mut departure, &mut machine, &mut shell).await;
                            }
                        }
                        Ok(None) => {}
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
            Some((cmd, reply)) = commands.rx.recv(), if !Departure::pending(&departure) => {
                let now = Instant::now();
                let done = match cmd {
                    Command::Standby { force } => {
                        // A MASTER with a healthy peer hands its connections over
                        // first; the answer waits for the peer's ACK (driver/departure.rs).
                        let hand_over = commands.grace.filter(|_| {
                            machine.check_standby(now, force).is_ok()
                                && machine.state() == State::Master
                                && !machine.is_standby()
                                && departure.is_none()
                                && machine.healthy_peer(now).is_some()
                        });
                        let leaving = match hand_over {
                            Some(grace) => handover::start(&link, grace).await,
                            None => None,
                        };
                        if let Some(leaving) = leaving {
                            departure = Some(Departure { leaving, pending: Some((force, reply)) });
                            continue;
                        }
                        machine.standby(now, force)
                    }
                    Command::Active { force } => {
                        match departure::on_active(&mut departure, &link, force, &mut machine, &mut shell).await {
                            Ok(()) => machine.active(Instant::now()),
                            Err(e) => Err(e),
                        }
                    }
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
            _ = leave_sleep => {
                if let Some(d) = departure.as_mut() {
                    let outcome = d.leaving.on_timeout(&link).await;
                    departure::settle(outcome, &mut departure, &mut machine, &mut shell).await;
                }
            }
        }
        counters.set_machine(&machine.counters);
        shell.execute(&mut machine).await;
        departure::check(&mut departure, &link, &mut machine, &mut shell).await;
        shell.status_tx.borrow().peers.set(machine.peers());
    }

    // A planned switchover: a MASTER hands its connections over first (gate, list,
    // the peer's ACK, VIP on lo), then releases the VIP and resigns as always. A
    // standby departure that already serves goes on; one still waiting for its ACK
    // is dropped (its standby command is answered "stopping") and started afresh.
    let mut leaving = match departure.take() {
        Some(d) if d.leaving.leave().serving() => Some(d.leaving),
        Some(mut d) => {
            d.leaving.interrupt(&link, "failover is stopping").await;
            if let Some((_, reply)) = d.pending {
                let _ = reply.send(Err(Refusal::Stopping));
            }
            None
        }
        None => None,
    };
    if let (None, Some(grace), State::Master) = (&leaving, commands.grace, machine.state())
        && let Some(mut l) = handover::start(&link, grace).await
        && departure::drive(&mut l, &link, &keys, &mut machine).await == Outcome::Handed
    {
        leaving = Some(l);
    }
    shell.handing_over = leaving.is_some();
    machine.shutdown(Instant::now());
    shell.execute(&mut machine).await;
    if let Some(l) = leaving.as_mut() {
        departure::drive(l, &link, &keys, &mut machine).await;
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
