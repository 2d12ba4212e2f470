//! Tests of the election: scripted scenarios on one machine, then whole clusters
//! run in simulated time with proptest choosing the interleavings.

use super::*;
use std::collections::BTreeMap;

mod attack;
mod network;
mod sim;
mod standby;

const MS: Duration = Duration::from_millis(1);

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

fn params(node: u8, priority: u8, preempt: bool) -> Params {
    Params {
        node: ip(node),
        vip: ip(234),
        priority,
        preempt,
        interval: 100 * MS,
        dead_count: 3,
        peer: None,
        has_targets: false,
        probe_timeout: 150 * MS,
        probe_interval: 1000 * MS,
        garp_refresh: Some(Duration::from_secs(10)),
    }
}

fn hb(node: u8, priority: u8, state: WireState, seq: u64) -> Heartbeat {
    Heartbeat {
        state,
        priority,
        flags: 0,
        node: ip(node),
        vip: ip(234),
        epoch: 9,
        seq,
        interval_ms: 100,
        auth_type: 0,
        auth: vec![],
    }
}

fn states(actions: &[Action]) -> Vec<State> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StateChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect()
}

/// Run timers until `until`, answering probes with `answer`.
fn run_until(
    m: &mut Machine,
    mut now: Instant,
    until: Instant,
    answer: impl Fn(u64) -> ProbeResult,
) -> Vec<Action> {
    let mut all = Vec::new();
    loop {
        for a in m.drain_actions() {
            if let Action::Probe { id, .. } = a {
                m.handle_probe(now, answer(id));
            }
            all.push(a);
        }
        if !m.actions.is_empty() {
            continue;
        }
        match m.next_timeout() {
            Some(t) if t <= until => {
                now = t;
                m.handle_timeout(now);
            }
            _ => break,
        }
    }
    all
}

/// The probe finds n2 (priority 200) alive as MASTER.
fn master_alive(id: u64) -> ProbeResult {
    ProbeResult {
        id,
        peer: PeerCheck::Alive {
            state: WireState::Master,
            priority: 200,
            node: ip(2),
        },
        targets_ok: None,
        vip_in_use: None,
    }
}

fn dead_peer(id: u64) -> ProbeResult {
    ProbeResult {
        id,
        peer: PeerCheck::Dead,
        targets_ok: None,
        vip_in_use: None,
    }
}

#[test]
fn alone_becomes_master_after_dead_interval_and_binds_vip() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    let start = m.drain_actions();
    assert_eq!(start[0], Action::UnbindVip, "stale VIP removed first");
    assert_eq!(m.state(), State::Backup);
    let acts = run_until(&mut m, t0, t0 + 299 * MS, dead_peer);
    assert_eq!(m.state(), State::Backup, "{acts:?}");
    let acts = run_until(&mut m, t0 + 299 * MS, t0 + 400 * MS, dead_peer);
    assert_eq!(m.state(), State::Master);
    let i_bind = acts.iter().position(|a| *a == Action::BindVip).unwrap();
    let i_garp = acts.iter().position(|a| *a == Action::Garp).unwrap();
    assert!(i_bind < i_garp, "bind before announcing");
}

#[test]
fn heartbeats_are_sent_every_interval() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    let mut peer = 0u64;
    let mut now = t0;
    let mut sent = 0;
    // A master keeps talking, so this node stays backup the whole second.
    while now < t0 + Duration::from_secs(1) {
        peer += 1;
        m.handle_heartbeat(now, &hb(2, 200, WireState::Master, peer));
        let acts = run_until(&mut m, now, now + 50 * MS, dead_peer);
        sent += acts
            .iter()
            .filter(|a| matches!(a, Action::SendHeartbeat(_)))
            .count();
        now += 50 * MS;
    }
    assert_eq!(m.state(), State::Backup);
    assert!((9..=11).contains(&sent), "sent {sent}");
}

#[test]
fn own_other_group_and_stale_packets_are_dropped_and_counted() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    m.handle_heartbeat(t0, &hb(1, 100, WireState::Master, 1));
    let mut other = hb(2, 100, WireState::Master, 1);
    other.vip = ip(99);
    m.handle_heartbeat(t0, &other);
    m.handle_heartbeat(t0, &hb(2, 100, WireState::Backup, 5));
    m.handle_heartbeat(t0, &hb(2, 100, WireState::Backup, 5));
    m.handle_heartbeat(t0, &hb(2, 100, WireState::Backup, 4));
    assert_eq!(
        m.counters,
        Counters {
            own: 1,
            other_group: 1,
            stale: 2,
            received: 1,
            peers_peak: 1,
            ..Counters::default()
        }
    );
    // A restart (new epoch) resets the sequence.
    let mut restarted = hb(2, 100, WireState::Backup, 1);
    restarted.epoch = 10;
    m.handle_heartbeat(t0, &restarted);
    assert_eq!(m.counters.received, 2);
}

#[test]
fn master_yields_at_once_to_a_better_master() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    // Signed: trusted at once (unsigned claims are checked first: tests/attack.rs).
    m.set_signed(true);
    run_until(&mut m, t0, t0 + 500 * MS, dead_peer);
    assert_eq!(m.state(), State::Master);
    m.handle_heartbeat(t0 + 500 * MS, &hb(2, 100, WireState::Master, 1)); // same prio, higher address
    let acts = m.drain_actions();
    assert_eq!(m.state(), State::Backup);
    assert!(acts.contains(&Action::UnbindVip));
}

#[test]
fn master_answers_a_worse_master_immediately() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(5, 100, false), 1, t0);
    run_until(&mut m, t0, t0 + 500 * MS, dead_peer);
    m.drain_actions();
    m.handle_heartbeat(t0 + 500 * MS, &hb(2, 100, WireState::Master, 1));
    let acts = m.drain_actions();
    assert_eq!(m.state(), State::Master);
    assert!(
        matches!(acts.as_slice(), [Action::SendHeartbeat(h), Action::Garp] if h.state == WireState::Master),
        "answered and re-announced the VIP (the other's GARP pointed the LAN away): {acts:?}"
    );
}

#[test]
fn backup_takes_over_at_once_on_resign() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    m.set_signed(true);
    m.handle_heartbeat(t0, &hb(2, 200, WireState::Master, 1));
    m.drain_actions();
    m.handle_heartbeat(t0 + 10 * MS, &hb(2, 200, WireState::Resign, 2));
    let acts = m.drain_actions();
    assert_eq!(m.state(), State::Master);
    assert!(acts.contains(&Action::BindVip));
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Probe { .. })),
        "no probe on resign"
    );
}

#[test]
fn preempt_off_returning_better_node_stays_backup() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(9, 250, false), 1, t0);
    for i in 0..20u32 {
        m.handle_heartbeat(
            t0 + i * 100 * MS,
            &hb(2, 10, WireState::Master, u64::from(i) + 1),
        );
        run_until(
            &mut m,
            t0 + i * 100 * MS,
            t0 + (i + 1) * 100 * MS - MS,
            dead_peer,
        );
    }
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn preempt_on_better_node_takes_over_from_worse_master() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(9, 250, true), 1, t0);
    m.set_signed(true);
    m.handle_heartbeat(t0 + 20 * MS, &hb(2, 10, WireState::Master, 1));
    assert_eq!(m.state(), State::Master);
    // And not from a better one.
    let mut m = Machine::new(params(1, 10, true), 1, t0);
    m.handle_heartbeat(t0 + 20 * MS, &hb(2, 250, WireState::Master, 1));
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn silent_master_probe_decides() {
    let t0 = Instant::now();
    let setup = || {
        let mut m = Machine::new(params(1, 100, false), 1, t0);
        m.handle_heartbeat(t0, &hb(2, 200, WireState::Master, 1));
        m.drain_actions();
        m
    };
    // The probe starts one interval before the dead interval ends.
    let mut m = setup();
    m.handle_timeout(t0 + 200 * MS);
    let acts = m.drain_actions();
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Probe { peer: Some(p), .. } if *p == ip(2))),
        "{acts:?}"
    );

    // Peer dead → MASTER at the dead interval.
    let mut m = setup();
    run_until(&mut m, t0, t0 + 301 * MS, dead_peer);
    assert_eq!(m.state(), State::Master);

    // Peer answers the echo as MASTER → stay BACKUP.
    let mut m = setup();
    run_until(&mut m, t0, t0 + 2000 * MS, master_alive);
    assert_eq!(m.state(), State::Backup);

    // Targets unreachable → FAULT, never MASTER.
    let mut m = setup();
    let acts = run_until(&mut m, t0, t0 + 2000 * MS, |id| ProbeResult {
        id,
        peer: PeerCheck::Dead,
        targets_ok: Some(false),
        vip_in_use: None,
    });
    assert_eq!(m.state(), State::Fault);
    assert!(!acts.contains(&Action::BindVip));

    // Targets reachable, peer dead → MASTER.
    let mut m = setup();
    run_until(&mut m, t0, t0 + 400 * MS, |id| ProbeResult {
        id,
        peer: PeerCheck::Dead,
        targets_ok: Some(true),
        vip_in_use: None,
    });
    assert_eq!(m.state(), State::Master);
}

#[test]
fn probe_that_never_reports_counts_as_no_answer() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    m.handle_heartbeat(t0, &hb(2, 200, WireState::Master, 1));
    let mut now = t0;
    while let Some(t) = m.next_timeout() {
        if t > t0 + Duration::from_secs(1) || m.state() == State::Master {
            break;
        }
        now = t;
        m.handle_timeout(now);
        m.drain_actions(); // probes are dropped on the floor
    }
    assert_eq!(m.state(), State::Master);
    assert!(now <= t0 + 200 * MS + 350 * MS, "{:?}", now - t0);
}

#[test]
fn link_down_is_fault_and_releases_vip_link_up_returns_to_backup() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    run_until(&mut m, t0, t0 + 500 * MS, dead_peer);
    assert_eq!(m.state(), State::Master);
    m.handle_link(t0 + 500 * MS, false);
    let acts = m.drain_actions();
    assert_eq!(m.state(), State::Fault);
    assert!(acts.contains(&Action::UnbindVip));
    m.handle_link(t0 + 600 * MS, true);
    assert_eq!(m.state(), State::Fault, "link-up alone is not enough");
    let acts = run_until(&mut m, t0 + 600 * MS, t0 + 600 * MS, dead_peer);
    assert!(
        acts.iter().any(|a| matches!(a, Action::Probe { .. })),
        "{acts:?}"
    );
    assert_eq!(
        m.state(),
        State::Backup,
        "no targets: the probe is the check"
    );
    assert!(m.timer(Timer::MasterDown).is_some());
}

#[test]
fn master_with_targets_goes_fault_after_two_failed_health_probes() {
    let t0 = Instant::now();
    let mut p = params(1, 100, false);
    p.has_targets = true;
    let mut m = Machine::new(p, 1, t0);
    run_until(&mut m, t0, t0 + 500 * MS, |id| ProbeResult {
        id,
        peer: PeerCheck::Dead,
        targets_ok: Some(true),
        vip_in_use: None,
    });
    assert_eq!(m.state(), State::Master);
    run_until(&mut m, t0 + 500 * MS, t0 + 1600 * MS, |id| ProbeResult {
        id,
        peer: PeerCheck::Unknown,
        targets_ok: Some(false),
        vip_in_use: None,
    });
    assert_eq!(m.state(), State::Master, "one failure is tolerated");
    run_until(&mut m, t0 + 1600 * MS, t0 + 2600 * MS, |id| ProbeResult {
        id,
        peer: PeerCheck::Unknown,
        targets_ok: Some(false),
        vip_in_use: None,
    });
    assert_eq!(m.state(), State::Fault);
    // Targets come back → BACKUP.
    run_until(&mut m, t0 + 2600 * MS, t0 + 3500 * MS, |id| ProbeResult {
        id,
        peer: PeerCheck::Unknown,
        targets_ok: Some(true),
        vip_in_use: None,
    });
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn vip_removed_while_master_is_restored() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    run_until(&mut m, t0, t0 + 500 * MS, dead_peer);
    m.handle_vip_removed(t0 + 500 * MS);
    assert_eq!(m.drain_actions(), vec![Action::BindVip, Action::Garp]);
    // Not master: someone adding the VIP gets it removed.
    let mut b = Machine::new(params(1, 100, false), 1, t0);
    b.drain_actions();
    b.handle_vip_added(t0);
    assert_eq!(b.drain_actions(), vec![Action::UnbindVip]);
}

#[test]
fn shutdown_releases_vip_before_resigning() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    run_until(&mut m, t0, t0 + 500 * MS, dead_peer);
    m.drain_actions();
    m.shutdown(t0 + 600 * MS);
    let acts = m.drain_actions();
    assert_eq!(acts[0], Action::UnbindVip);
    assert!(matches!(&acts[2], Action::SendHeartbeat(h) if h.state == WireState::Resign));
    assert_eq!(states(&acts), vec![State::Stopped]);
    assert_eq!(m.next_timeout(), None);
}
