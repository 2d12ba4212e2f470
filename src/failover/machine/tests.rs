//! Tests of the election: scripted scenarios on one machine, then whole clusters
//! run in simulated time with proptest choosing the interleavings.

use super::*;
use std::collections::BTreeMap;

mod attack;
mod network;

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

#[test]
fn standby_is_refused_without_a_healthy_peer_unless_forced() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    run_until(&mut m, t0, t0 + 500 * MS, dead_peer);
    assert_eq!(m.state(), State::Master);
    m.drain_actions();
    let now = t0 + 500 * MS;
    assert_eq!(m.standby(now, false), Err(Refusal::NoHealthyPeer));
    assert_eq!(
        m.state(),
        State::Master,
        "a refused command changes nothing"
    );
    assert!(m.drain_actions().is_empty());
    assert!(!m.is_standby());
    // Forced: the VIP goes, and the node never takes it back on its own.
    assert_eq!(m.standby(now, true), Ok(()));
    let acts = m.drain_actions();
    assert_eq!(acts[0], Action::UnbindVip);
    assert_eq!(m.state(), State::Backup);
    let acts = run_until(&mut m, now, now + Duration::from_secs(5), dead_peer);
    assert!(!acts.contains(&Action::BindVip), "{acts:?}");
    assert_eq!(m.state(), State::Backup);
    // Active again: alone, it takes the VIP after the dead interval.
    let now = now + Duration::from_secs(5);
    assert_eq!(m.active(now), Ok(()));
    let acts = run_until(&mut m, now, now + 500 * MS, dead_peer);
    assert_eq!(m.state(), State::Master, "{acts:?}");
    assert!(acts.contains(&Action::BindVip));
}

#[test]
fn master_standby_releases_then_resigns_and_the_peer_takes_over_at_once() {
    let t0 = Instant::now();
    // Epoch 9 like `hb`'s: m2 hears both the test's and m1's own heartbeats.
    let mut m1 = Machine::new(params(1, 200, true), 9, t0);
    let mut m2 = Machine::new(params(2, 100, false), 1, t0);
    // Signed: the driver checked the MACs, no echo check before acting.
    m1.set_signed(true);
    m2.set_signed(true);
    run_until(&mut m1, t0, t0 + 500 * MS, dead_peer);
    assert_eq!(m1.state(), State::Master);
    m1.drain_actions();
    let now = t0 + 500 * MS;
    // m1 hears m2 as a live BACKUP; m2 follows m1.
    m1.handle_heartbeat(now, &hb(2, 100, WireState::Backup, 1));
    m2.handle_heartbeat(now, &hb(1, 200, WireState::Master, 1));
    m2.drain_actions();
    assert_eq!(m1.healthy_peer(now), Some(ip(2)));
    assert_eq!(m1.standby(now, false), Ok(()));
    let acts = m1.drain_actions();
    let unbind = acts.iter().position(|a| *a == Action::UnbindVip).unwrap();
    let resign = acts
        .iter()
        .position(|a| matches!(a, Action::SendHeartbeat(h) if h.state == WireState::Resign))
        .unwrap();
    assert!(unbind < resign, "release before resigning: {acts:?}");
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::StandbyChanged { standby: true, .. }))
    );
    let Action::SendHeartbeat(r) = &acts[resign] else {
        unreachable!()
    };
    // The resign reaches m2: it takes over at once, without a dead interval.
    m2.handle_heartbeat(now, r);
    assert_eq!(m2.state(), State::Master);
    // m1's next heartbeats say FAULT + standby: m2 never waits for it.
    let acts = run_until(&mut m1, now, now + 250 * MS, dead_peer);
    let hbs: Vec<&Heartbeat> = acts
        .iter()
        .filter_map(|a| match a {
            Action::SendHeartbeat(h) => Some(h),
            _ => None,
        })
        .collect();
    assert!(!hbs.is_empty());
    for h in hbs {
        assert_eq!(h.state, WireState::Fault);
        assert_eq!(
            h.flags & crate::failover::wire::FLAG_STANDBY,
            crate::failover::wire::FLAG_STANDBY
        );
    }
    assert_eq!(m1.echo_status().0, WireState::Fault);
    // m1 outranks m2 and preempts, but not in standby.
    let mut seq = 10;
    let mut now = now;
    for _ in 0..20 {
        seq += 1;
        now += 100 * MS;
        m1.handle_heartbeat(now, &hb(2, 100, WireState::Master, seq));
        let acts = run_until(&mut m1, now, now + 100 * MS, master_alive);
        assert!(!acts.contains(&Action::BindVip), "{acts:?}");
    }
    // Active: preemption applies again.
    assert_eq!(m1.active(now), Ok(()));
    m1.drain_actions();
    m1.handle_heartbeat(now + MS, &hb(2, 100, WireState::Master, seq + 1));
    assert_eq!(m1.state(), State::Master);
}

#[test]
fn a_backup_in_standby_ignores_resign_and_silence() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    m.handle_heartbeat(t0, &hb(2, 200, WireState::Master, 1));
    m.drain_actions();
    assert_eq!(m.standby(t0, false), Ok(()), "the master is a healthy peer");
    assert_eq!(m.state(), State::Backup);
    m.handle_heartbeat(t0 + 10 * MS, &hb(2, 200, WireState::Resign, 2));
    assert_eq!(m.state(), State::Backup, "no takeover on resign in standby");
    let acts = run_until(&mut m, t0, t0 + Duration::from_secs(3), dead_peer);
    assert!(!acts.contains(&Action::BindVip), "{acts:?}");
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Probe { .. })),
        "no takeover probe in standby"
    );
    // Stopping ends the switch.
    m.shutdown(t0 + Duration::from_secs(3));
    assert_eq!(
        m.active(t0 + Duration::from_secs(3)),
        Err(Refusal::Stopping)
    );
}

// ---------------------------------------------------------------------------
// Whole clusters in simulated time.
// ---------------------------------------------------------------------------

mod sim {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    #[derive(Debug, Clone)]
    pub enum Op {
        /// Process and host die (no resign).
        Crash(usize),
        /// Graceful stop (resign).
        Stop(usize),
        /// Start again (if down).
        Start(usize),
        /// Heartbeats between a and b dropped (both ways), echo still answers.
        DropHeartbeats(usize, usize, bool),
        /// The node is cut off from everything (heartbeats, echo, targets).
        CutOff(usize, bool),
        /// Link of a node down/up.
        Link(usize, bool),
        /// The operator puts a node in standby (`true`: forced) ...
        Standby(usize, bool),
        /// ... or makes it active again.
        Active(usize),
    }

    fn op(n: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..n).prop_map(Op::Crash),
            (0..n).prop_map(Op::Stop),
            (0..n).prop_map(Op::Start),
            (0..n, 0..n, any::<bool>()).prop_map(|(a, b, d)| Op::DropHeartbeats(a, b, d)),
            (0..n, any::<bool>()).prop_map(|(a, c)| Op::CutOff(a, c)),
            (0..n, any::<bool>()).prop_map(|(a, u)| Op::Link(a, u)),
            (0..n, any::<bool>()).prop_map(|(a, f)| Op::Standby(a, f)),
            (0..n).prop_map(Op::Active),
        ]
    }

    #[derive(Debug, Clone)]
    pub struct Scenario {
        pub priorities: Vec<u8>,
        pub preempt: Vec<bool>,
        pub targets: bool,
        pub ops: Vec<(u64, Op)>,
        pub jitter: Vec<u8>,
    }

    pub fn scenario() -> impl Strategy<Value = Scenario> {
        (2usize..=3).prop_flat_map(|n| {
            (
                proptest::collection::vec(prop_oneof![Just(100u8), 1u8..=255], n),
                proptest::collection::vec(any::<bool>(), n),
                any::<bool>(),
                proptest::collection::vec((0u64..1500, op(n)), 0..12),
                proptest::collection::vec(any::<u8>(), 64),
            )
                .prop_map(|(priorities, preempt, targets, ops, jitter)| Scenario {
                    priorities,
                    preempt,
                    targets,
                    ops,
                    jitter,
                })
        })
    }

    #[derive(Debug)]
    enum Ev {
        Deliver(usize, Heartbeat),
        Probe(usize, ProbeResult),
    }

    struct Node {
        m: Option<Machine>,
        holds_vip: bool,
        link: bool,
        cut: bool,
        epoch: u32,
    }

    pub struct Sim {
        pub now: Instant,
        nodes: Vec<Node>,
        drop_hb: Vec<Vec<bool>>,
        queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
        events: BTreeMap<u64, Ev>,
        seq: u64,
        jitter: Vec<u8>,
        jitter_i: usize,
        pub prio: Vec<u8>,
        pub preempt: Vec<bool>,
        targets: bool,
        /// Whether a probe may never report (a broken driver); `heal` ends that.
        lossy_probes: bool,
    }

    impl Sim {
        pub fn new(s: &Scenario) -> Sim {
            let t0 = Instant::now();
            let n = s.priorities.len();
            let mut sim = Sim {
                now: t0,
                nodes: Vec::new(),
                drop_hb: vec![vec![false; n]; n],
                queue: BinaryHeap::new(),
                events: BTreeMap::new(),
                seq: 0,
                jitter: s.jitter.clone(),
                jitter_i: 0,
                prio: s.priorities.clone(),
                preempt: s.preempt.clone(),
                targets: s.targets,
                lossy_probes: true,
            };
            for _ in 0..n {
                sim.nodes.push(Node {
                    m: None,
                    holds_vip: false,
                    link: true,
                    cut: false,
                    epoch: 0,
                });
            }
            for i in 0..n {
                sim.start(i);
            }
            sim
        }

        fn jitter(&mut self) -> Duration {
            let j = self
                .jitter
                .get(self.jitter_i % self.jitter.len().max(1))
                .copied()
                .unwrap_or(0);
            self.jitter_i += 1;
            Duration::from_micros(200 + u64::from(j) * 20)
        }

        fn params(&self, i: usize) -> Params {
            let mut p = params(i as u8 + 1, self.prio[i], self.preempt[i]);
            p.has_targets = self.targets;
            p
        }

        pub fn start(&mut self, i: usize) {
            if self.nodes[i].m.is_some() {
                return;
            }
            self.nodes[i].epoch += 1;
            let m = Machine::new(self.params(i), self.nodes[i].epoch, self.now);
            self.nodes[i].m = Some(m);
            self.pump(i);
        }

        fn schedule(&mut self, at: Instant, ev: Ev) {
            self.seq += 1;
            self.events.insert(self.seq, ev);
            self.queue.push(Reverse((at, self.seq, 0)));
        }

        /// Can `a` reach `b` at all (IP level)?
        fn reach(&self, a: usize, b: usize) -> bool {
            let (x, y) = (&self.nodes[a], &self.nodes[b]);
            x.link && y.link && !x.cut && !y.cut
        }

        /// Node `i`'s echo check on `addr`: its state if reachable, else dead.
        fn echo(&self, i: usize, addr: Ipv4Addr) -> PeerCheck {
            let j = (addr.octets()[3] - 1) as usize;
            match self.nodes.get(j).and_then(|n| n.m.as_ref()) {
                Some(pm) if self.reach(i, j) => {
                    let (state, priority, node) = pm.echo_status();
                    PeerCheck::Alive {
                        state,
                        priority,
                        node,
                    }
                }
                _ => PeerCheck::Dead,
            }
        }

        pub fn pump(&mut self, i: usize) {
            loop {
                let Some(m) = self.nodes[i].m.as_mut() else {
                    return;
                };
                let Some(a) = m.poll_action() else { return };
                match a {
                    Action::BindVip => self.nodes[i].holds_vip = true,
                    Action::UnbindVip => self.nodes[i].holds_vip = false,
                    Action::SendHeartbeat(hb) => {
                        for j in 0..self.nodes.len() {
                            if j != i && self.reach(i, j) && !self.drop_hb[i][j] {
                                let d = self.jitter();
                                self.schedule(self.now + d, Ev::Deliver(j, hb.clone()));
                            }
                        }
                    }
                    Action::Probe { id, peer, .. } => {
                        let peer_check = match peer {
                            None => PeerCheck::Unknown,
                            Some(addr) => self.echo(i, addr),
                        };
                        let n = &self.nodes[i];
                        let targets_ok = self.targets.then_some(n.link && !n.cut);
                        // The driver reports within the probe timeout; now and then a
                        // probe never reports, to exercise the machine's deadline.
                        let d = self.jitter() * 30;
                        if d < Duration::from_millis(150) || !self.lossy_probes {
                            self.schedule(
                                self.now + d,
                                Ev::Probe(
                                    i,
                                    ProbeResult {
                                        id,
                                        peer: peer_check,
                                        targets_ok,
                                        vip_in_use: None,
                                    },
                                ),
                            );
                        }
                    }
                    Action::StateChanged { from, to, reason } => {
                        if std::env::var_os("SIM_TRACE").is_some() {
                            eprintln!("{:?} node{i} {from}->{to}: {reason}", self.now);
                        }
                    }
                    Action::Verify { id, peer } => {
                        // The echo check alone, answered at once.
                        let check = self.echo(i, peer);
                        let now = self.now;
                        if let Some(m) = self.nodes[i].m.as_mut() {
                            m.handle_verify(now, id, check);
                        }
                    }
                    Action::Garp
                    | Action::GarpRefresh
                    | Action::ConfirmEpoch { .. }
                    | Action::StandbyChanged { .. } => {}
                }
            }
        }

        pub fn apply(&mut self, op: &Op) {
            match *op {
                Op::Crash(i) => {
                    self.nodes[i].m = None;
                    self.nodes[i].holds_vip = false;
                }
                Op::Stop(i) => {
                    if let Some(m) = self.nodes[i].m.as_mut() {
                        m.shutdown(self.now);
                        self.pump(i);
                    }
                    self.nodes[i].m = None;
                    self.nodes[i].holds_vip = false;
                }
                Op::Start(i) => self.start(i),
                Op::DropHeartbeats(a, b, d) => {
                    if a != b {
                        self.drop_hb[a][b] = d;
                        self.drop_hb[b][a] = d;
                    }
                }
                Op::CutOff(i, c) => self.nodes[i].cut = c,
                Op::Link(i, up) => {
                    self.nodes[i].link = up;
                    if let Some(m) = self.nodes[i].m.as_mut() {
                        m.handle_link(self.now, up);
                    }
                    self.pump(i);
                }
                Op::Standby(i, force) => {
                    if let Some(m) = self.nodes[i].m.as_mut() {
                        let _ = m.standby(self.now, force);
                    }
                    self.pump(i);
                }
                Op::Active(i) => {
                    if let Some(m) = self.nodes[i].m.as_mut() {
                        let _ = m.active(self.now);
                    }
                    self.pump(i);
                }
            }
        }

        pub fn standby(&self, i: usize) -> bool {
            self.nodes[i].m.as_ref().is_some_and(|m| m.is_standby())
        }

        /// Heal everything (links, cuts, drops) without restarting anybody.
        pub fn heal(&mut self) {
            self.lossy_probes = false;
            for i in 0..self.nodes.len() {
                self.apply(&Op::CutOff(i, false));
                self.apply(&Op::Link(i, true));
                for j in 0..self.nodes.len() {
                    self.drop_hb[i][j] = false;
                }
            }
        }

        /// Advance simulated time to `until`, processing everything in order.
        pub fn run(&mut self, until: Instant, mut check: impl FnMut(&Sim)) {
            loop {
                // Next node timer.
                let mut next: Option<(Instant, usize)> = None;
                for (i, n) in self.nodes.iter().enumerate() {
                    if let Some(t) = n.m.as_ref().and_then(|m| m.next_timeout())
                        && next.is_none_or(|(nt, _)| t < nt)
                    {
                        next = Some((t, i));
                    }
                }
                let q = self.queue.peek().map(|Reverse((t, _, _))| *t);
                let take_queue = match (q, next) {
                    (Some(qt), Some((nt, _))) => qt <= nt,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                let at = if take_queue {
                    q.unwrap_or(until)
                } else {
                    next.map(|n| n.0).unwrap_or(until)
                };
                if at > until {
                    break;
                }
                self.now = at;
                if take_queue {
                    let Some(Reverse((_, id, _))) = self.queue.pop() else {
                        break;
                    };
                    match self.events.remove(&id) {
                        Some(Ev::Deliver(j, hb)) => {
                            if let Some(m) = self.nodes[j].m.as_mut() {
                                m.handle_heartbeat(at, &hb);
                                self.pump(j);
                            }
                        }
                        Some(Ev::Probe(i, r)) => {
                            if let Some(m) = self.nodes[i].m.as_mut() {
                                m.handle_probe(at, r);
                                self.pump(i);
                            }
                        }
                        None => {}
                    }
                } else if let Some((_, i)) = next {
                    if let Some(m) = self.nodes[i].m.as_mut() {
                        m.handle_timeout(at);
                    }
                    self.pump(i);
                }
                check(self);
            }
            self.now = until;
        }

        pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
            (0..self.nodes.len()).filter(|i| self.nodes[*i].m.is_some())
        }

        pub fn state(&self, i: usize) -> Option<State> {
            self.nodes[i].m.as_ref().map(|m| m.state())
        }

        pub fn holders(&self) -> Vec<usize> {
            self.live().filter(|i| self.nodes[*i].holds_vip).collect()
        }

        pub fn masters(&self) -> Vec<usize> {
            self.live()
                .filter(|i| self.state(*i) == Some(State::Master))
                .collect()
        }

        pub fn rank(&self, i: usize) -> (u8, u8) {
            (self.prio[i], i as u8 + 1)
        }
    }

    proptest! {
        // PROPTEST_CASES=20000 for a deeper search than CI's 400.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400),
            .. ProptestConfig::default()
        })]

        /// Whatever happened, once the network heals and heartbeats flow there is
        /// exactly one master, it is the only VIP holder, and while nothing changes
        /// it stays that way. A node holds the VIP exactly when it is MASTER.
        #[test]
        fn one_master_once_heartbeats_flow(s in scenario()) {
            let mut sim = Sim::new(&s);
            let mut ops = s.ops.clone();
            ops.sort_by_key(|(t, _)| *t);
            let consistent = |sim: &Sim| {
                for i in sim.live() {
                    let master = sim.state(i) == Some(State::Master);
                    assert_eq!(master, sim.nodes[i].holds_vip, "node {i} VIP/state mismatch: {:?}", sim.state(i));
                    assert!(!(sim.standby(i) && sim.nodes[i].holds_vip), "node {i} holds the VIP in standby");
                }
            };
            for (dt, op) in &ops {
                let until = sim.now + Duration::from_millis(*dt);
                sim.run(until, consistent);
                sim.apply(op);
            }
            sim.heal();
            // Make sure at least one node runs.
            if sim.live().count() == 0 {
                sim.start(0);
            }
            // Settle: dead interval + probe + a restart's startup + preemption.
            let settle = sim.now + Duration::from_millis(3000);
            sim.run(settle, consistent);
            // Nodes in standby stay out; one of the others (if any) is master.
            let eligible: Vec<usize> = sim.live().filter(|i| !sim.standby(*i)).collect();
            let masters = sim.masters();
            if eligible.is_empty() {
                prop_assert!(masters.is_empty(), "masters {:?} while every node is in standby", masters);
            } else {
                prop_assert_eq!(masters.len(), 1, "masters {:?} eligible {:?}", masters, eligible);
                prop_assert!(eligible.contains(&masters[0]));
            }
            // Everybody active again: the usual election rules from here on.
            let live: Vec<usize> = sim.live().collect();
            for i in live {
                sim.apply(&Op::Active(i));
            }
            let settle = sim.now + Duration::from_millis(3000);
            sim.run(settle, consistent);
            let masters = sim.masters();
            prop_assert_eq!(masters.len(), 1, "masters {:?} states {:?}", masters,
                sim.live().map(|i| sim.state(i)).collect::<Vec<_>>());
            prop_assert_eq!(sim.holders(), masters.clone());
            // Stable afterwards: no further changes while healthy.
            let before = masters[0];
            let mut changes = 0;
            let end = sim.now + Duration::from_millis(3000);
            sim.run(end, |sim| { if sim.masters() != vec![before] { changes += 1; } });
            prop_assert_eq!(changes, 0);
            // With preemption everywhere, the best live node is the master.
            if sim.live().all(|i| sim.preempt[i]) {
                let best = sim.live().max_by_key(|i| sim.rank(*i)).unwrap_or(0);
                prop_assert_eq!(sim.masters(), vec![best]);
            }
        }

        /// Standby and active at random moments, with crashes and heartbeat loss:
        /// a node in standby never holds the VIP; when the master goes to standby
        /// with a healthy peer, a peer holds the VIP again within a few
        /// milliseconds (the resign); and once all are active, one master.
        #[test]
        fn standby_hands_over_at_once(prios in proptest::collection::vec(1u8..=255, 2..=3),
                                      preempt in any::<bool>(),
                                      ops in proptest::collection::vec((0u64..800, 0usize..3, 0u8..4), 1..10)) {
            let n = prios.len();
            let s = Scenario { preempt: vec![preempt; n], priorities: prios, targets: false, ops: vec![], jitter: vec![1, 40, 9, 200] };
            let mut sim = Sim::new(&s);
            let t = sim.now + Duration::from_millis(1000);
            sim.run(t, |_| {});
            let mut dropping = vec![vec![false; n]; n];
            for (dt, who, what) in ops {
                let i = who % n;
                let t = sim.now + Duration::from_millis(dt);
                sim.run(t, |sim| {
                    for j in sim.live() {
                        assert!(!(sim.standby(j) && sim.nodes[j].holds_vip), "node {j} holds the VIP in standby");
                    }
                });
                match what {
                    0 | 1 => {
                        let was_master = sim.state(i) == Some(State::Master);
                        let now = sim.now;
                        let accepted = sim.nodes[i].m.as_mut().map(|m| m.standby(now, what == 1));
                        sim.pump(i);
                        if accepted == Some(Ok(())) {
                            prop_assert!(!sim.nodes[i].holds_vip);
                        }
                        let lossless = dropping.iter().flatten().all(|d| !d);
                        // Two nodes sent to standby within a delivery delay of each
                        // other may each still count the other as healthy: only a
                        // peer that really is eligible must take over.
                        let eligible = (0..n).any(|j| j != i && sim.nodes[j].m.is_some() && !sim.standby(j));
                        if was_master && accepted == Some(Ok(())) && what == 0 && lossless && eligible {
                            // A healthy peer was heard: it holds the VIP within a few ms.
                            let t = sim.now + Duration::from_millis(20);
                            sim.run(t, |_| {});
                            prop_assert_eq!(sim.holders().len(), 1, "no holder 20 ms after standby of node {}", i);
                        }
                    }
                    2 => sim.apply(&Op::Active(i)),
                    _ => {
                        let (j, d) = ((i + 1) % n, dt % 2 == 0);
                        dropping[i][j] = d;
                        dropping[j][i] = d;
                        sim.apply(&Op::DropHeartbeats(i, j, d));
                    }
                }
            }
            sim.heal();
            for i in 0..n {
                sim.apply(&Op::Active(i));
            }
            let t = sim.now + Duration::from_millis(3000);
            sim.run(t, |_| {});
            prop_assert_eq!(sim.masters().len(), 1);
            prop_assert_eq!(sim.holders(), sim.masters());
        }

        /// A master never lingers after hearing a better master: two nodes that were
        /// split (both master) converge within a few milliseconds of hearing each other.
        #[test]
        fn split_brain_heals_fast(p1 in 1u8..=255, p2 in 1u8..=255, pre in any::<bool>()) {
            let s = Scenario { priorities: vec![p1, p2], preempt: vec![pre, pre], targets: false,
                ops: vec![], jitter: vec![0] };
            let mut sim = Sim::new(&s);
            sim.apply(&Op::DropHeartbeats(0, 1, true));
            // Make the echo check fail too so both become master: cut both off from
            // each other's echo by crashing... instead, run each alone first.
            sim.apply(&Op::CutOff(0, true));
            sim.apply(&Op::CutOff(1, true));
            let t = sim.now + Duration::from_millis(1000);
            sim.run(t, |_| {});
            prop_assert_eq!(sim.masters().len(), 2, "without targets a cut-off node takes over");
            sim.heal();
            let t = sim.now + Duration::from_millis(50);
            sim.run(t, |_| {});
            // Heartbeats every 100 ms: within one interval + delivery both have spoken.
            let t = sim.now + Duration::from_millis(110);
            sim.run(t, |_| {});
            prop_assert_eq!(sim.masters().len(), 1);
            let best = if sim.rank(0) > sim.rank(1) { 0 } else { 1 };
            prop_assert_eq!(sim.masters(), vec![best]);
        }

        /// With probe targets, a node cut off from everything never takes the VIP.
        #[test]
        fn cut_off_node_never_holds_vip(prios in proptest::collection::vec(1u8..=255, 2), kill_master in any::<bool>()) {
            let s = Scenario { priorities: prios, preempt: vec![false, false], targets: true, ops: vec![], jitter: vec![3, 200, 17] };
            let mut sim = Sim::new(&s);
            let t = sim.now + Duration::from_millis(1000);
            sim.run(t, |_| {});
            let m = sim.masters();
            prop_assert_eq!(m.len(), 1);
            let backup = 1 - m[0];
            sim.apply(&Op::CutOff(backup, true));
            if kill_master { sim.apply(&Op::Crash(m[0])); }
            let t = sim.now + Duration::from_millis(3000);
            let mut held = false;
            sim.run(t, |sim| { if sim.nodes[backup].holds_vip { held = true; } });
            prop_assert!(!held);
            prop_assert_eq!(sim.state(backup), Some(State::Fault));
        }
    }

    #[test]
    fn failover_time_after_crash_is_bounded() {
        // Deterministic: the master crashes right after a heartbeat; the backup must
        // be master within dead interval + probe timeout.
        let s = Scenario {
            priorities: vec![200, 100],
            preempt: vec![false, false],
            targets: false,
            ops: vec![],
            jitter: vec![0],
        };
        let mut sim = Sim::new(&s);
        let t = sim.now + Duration::from_millis(1000);
        sim.run(t, |_| {});
        assert_eq!(sim.masters(), vec![0]);
        sim.apply(&Op::Crash(0));
        let crash = sim.now;
        let mut took: Option<Instant> = None;
        let t = sim.now + Duration::from_millis(2000);
        sim.run(t, |sim| {
            if took.is_none() && sim.masters() == vec![1] {
                took = Some(sim.now);
            }
        });
        let d = took.expect("backup took over") - crash;
        assert!(d <= Duration::from_millis(460), "{d:?}");
    }
}
