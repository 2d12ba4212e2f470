//! A master's connection handover inside the driver (the handover itself:
//! [`crate::failover::handover`]; its decisions: `handover/leave.rs`).
//!
//! Two ways lead here:
//!
//! * **`POST /failover/standby`** on a MASTER with a secret and a healthy peer:
//!   the loop starts a departure ([`Departure`]) and keeps running — heartbeats,
//!   echo answers, the election — while it waits for the peer's ACK. The API's
//!   answer waits too: on the ACK the VIP goes onto `lo` and the machine goes to
//!   standby (VIP released from the LAN, RESIGN); without one (or on any error)
//!   it goes to standby the ordinary way, with a log line saying why. The
//!   departure then runs inside the loop until its connections have ended, the
//!   grace time is over, or the peer that steers them is gone; the node stays a
//!   BACKUP in standby throughout and afterwards.
//! * **SIGTERM** ([`drive`], after the loop): a MASTER starts a departure and
//!   waits for the ACK there; a standby departure already serving simply goes
//!   on (its grace time still counts from its ACK). The process exits when it
//!   ends.
//!
//! While a departure serves, [`super::FailoverStatus::handover`] is set: the
//! daemon must not cut the connections on the VIP (they are the ones being
//! served); it cuts what is left once the flag drops.

use std::net::IpAddr;
use std::time::Instant;

use super::control::Reply;
use super::{Shell, inbound};
use crate::failover::auth::Keyring;
use crate::failover::handover::shell::{Leaving, Link, Outcome};
use crate::failover::machine::{Machine, Refusal, State};

/// A departure started by a standby command.
pub(super) struct Departure {
    pub leaving: Leaving,
    /// The standby command, answered once the ACK (or its absence) decided:
    /// whether it was forced, and where the answer goes.
    pub pending: Option<(bool, Reply)>,
}

impl Departure {
    /// The deadline the loop must wake for.
    pub fn next_timeout(this: &Option<Departure>) -> Option<Instant> {
        this.as_ref().and_then(|d| d.leaving.next_timeout())
    }

    /// The standby command is still waiting (the loop takes no other command
    /// meanwhile: commands are answered in order).
    pub fn pending(this: &Option<Departure>) -> bool {
        this.as_ref().is_some_and(|d| d.pending.is_some())
    }
}

/// What the loop does after each event: a departure waiting for its ACK ends
/// if this node lost MASTER meanwhile; one serving ends if its peer is gone.
pub(super) async fn check(
    dep: &mut Option<Departure>,
    link: &Link<'_>,
    machine: &mut Machine,
    shell: &mut Shell<'_>,
) {
    let Some(d) = dep.as_mut() else {
        return;
    };
    let now = Instant::now();
    let outcome = if d.leaving.leave().waiting() {
        let master = machine.state() == State::Master;
        d.leaving.on_master(link, master).await
    } else {
        let alive = (d.leaving.leave().peer()).is_some_and(|p| machine.peer_live(p, now));
        d.leaving.on_peer(link, alive).await
    };
    settle(outcome, dep, machine, shell).await;
}

/// Act on what a departure event came to (see the module docs).
pub(super) async fn settle(
    outcome: Outcome,
    dep: &mut Option<Departure>,
    machine: &mut Machine,
    shell: &mut Shell<'_>,
) {
    let now = Instant::now();
    let pending = match outcome {
        Outcome::Pending => return,
        Outcome::Handed => {
            shell.handing_over = true;
            dep.as_mut()
                .and_then(|d| d.pending.take())
                .map(|(_, reply)| {
                    // The ACK just now is proof of a live peer: no need to ask again.
                    (machine.standby(now, true), reply)
                })
        }
        Outcome::Aborted => {
            let pending = dep.take().and_then(|d| d.pending);
            pending.map(|(force, reply)| (machine.standby(now, force), reply))
        }
        Outcome::Finished => {
            *dep = None;
            shell.handing_over = false;
            shell.status_tx.send_modify(|s| s.handover = false);
            None
        }
    };
    if let Some((done, reply)) = pending {
        if let Err(e) = &done {
            tracing::warn!("standby refused: {e}");
        }
        shell.execute(machine).await;
        let _ = reply.send(done.map(|()| shell.status_tx.borrow().clone()));
    }
}

/// `POST /failover/active` while a departure runs: refused while it serves
/// unless forced (see [`crate::failover::handover::leave::Leave::on_active`]).
pub(super) async fn on_active(
    dep: &mut Option<Departure>,
    link: &Link<'_>,
    force: bool,
    machine: &mut Machine,
    shell: &mut Shell<'_>,
) -> Result<(), Refusal> {
    let Some(d) = dep.as_mut() else {
        return Ok(());
    };
    let outcome = (d.leaving.on_active(link, force).await)
        .map_err(|(left, peer)| Refusal::HandingOver { left, peer })?;
    settle(outcome, dep, machine, shell).await;
    Ok(())
}

/// After the loop (SIGTERM): run `leaving` until its outcome is no longer
/// [`Outcome::Pending`] — the ACK decided, or the departure ended. Heartbeats
/// still feed `machine` (stopped: it only keeps its peer table), so that the
/// departure ends when its peer dies.
pub(super) async fn drive(
    leaving: &mut Leaving,
    link: &Link<'_>,
    keys: &tokio::sync::watch::Receiver<std::sync::Arc<Keyring>>,
    machine: &mut Machine,
) -> Outcome {
    let mut buf = [0u8; 2048];
    loop {
        let Some(deadline) = leaving.next_timeout() else {
            return Outcome::Finished;
        };
        let outcome = tokio::select! {
            r = link.sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => on_datagram(leaving, link, &buf[..n], from.ip(), keys, machine).await,
                Err(_) => Outcome::Pending,
            },
            _ = tokio::time::sleep_until(deadline.into()) => leaving.on_timeout(link).await,
        };
        if outcome != Outcome::Pending {
            return outcome;
        }
        if leaving.leave().serving() {
            let alive =
                (leaving.leave().peer()).is_some_and(|p| machine.peer_live(p, Instant::now()));
            let outcome = leaving.on_peer(link, alive).await;
            if outcome != Outcome::Pending {
                return outcome;
            }
        }
    }
}

async fn on_datagram(
    leaving: &mut Leaving,
    link: &Link<'_>,
    bytes: &[u8],
    from: IpAddr,
    keys: &tokio::sync::watch::Receiver<std::sync::Arc<Keyring>>,
    machine: &mut Machine,
) -> Outcome {
    let IpAddr::V4(src) = from else {
        return Outcome::Pending;
    };
    if bytes.starts_with(&crate::failover::handover::wire::MAGIC) {
        let m = crate::failover::handover::Message::decode(bytes, &keys.borrow());
        return match m {
            Ok(m) => leaving.on_message(link, src, &m).await,
            Err(_) => Outcome::Pending,
        };
    }
    // Only a stopped machine hears heartbeats here: one still running (waiting
    // for the ACK, before it releases the VIP) must not change its role behind
    // the loop's back, its actions would be lost.
    if machine.state() == State::Stopped
        && let Ok((hb, _)) = inbound::accept(bytes, &keys.borrow())
    {
        machine.handle_heartbeat_from(Instant::now(), &hb, src);
        // Stopped: it only keeps its peer table; nothing to act on.
        machine.drain_actions();
    }
    Outcome::Pending
}
