//! The departure's decisions, alone and against the peer's [`Steering`] over a
//! lossy channel in simulated time (proptest picks the interleavings).

use super::*;
use crate::failover::handover::{LIVENESS, SteerAction, Steering};

const MS: Duration = Duration::from_millis(1);
const GRACE: Duration = Duration::from_secs(2);
const OLD: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 234);
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn flows(ports: impl IntoIterator<Item = u16>) -> BTreeSet<Flow> {
    ports
        .into_iter()
        .map(|p| Flow {
            client: Ipv4Addr::new(10, 0, 0, 100),
            client_port: p,
            port: 8080,
        })
        .collect()
}

fn start(t0: Instant, n: u16) -> (Leave, Vec<LeaveAction>) {
    Leave::new(t0, 7, flows(1..=n), GRACE, (OLD, VIP, MAC))
}

fn ack(from: Ipv4Addr, id: u32, generation: u32) -> Message {
    Message::control(Kind::Ack, from, VIP, id, generation)
}

fn handed(t0: Instant, n: u16) -> Leave {
    let (mut l, _) = start(t0, n);
    let a = l.on_message(t0 + MS, PEER, &ack(PEER, 7, 1));
    assert_eq!(a, vec![LeaveAction::Handed { peer: PEER }]);
    l
}

fn finish_why(a: &[LeaveAction]) -> (String, usize) {
    match a {
        [LeaveAction::Finish { done, why, left }] => {
            assert_eq!((done.kind, done.id, done.node), (Kind::Done, 7, OLD));
            (why.clone(), *left)
        }
        _ => panic!("expected a Finish: {a:?}"),
    }
}

#[test]
fn the_list_goes_out_at_once_and_is_repeated_until_acked() {
    let t0 = Instant::now();
    let (mut l, first) = start(t0, 3);
    assert!(matches!(&first[..], [LeaveAction::Send(m)] if m[0].flows.len() == 3 && m[0].id == 7));
    assert!(l.waiting());
    assert_eq!(l.next_timeout(), Some(t0 + ACK_RESEND));
    assert!(l.handle_timeout(t0 + ACK_RESEND - MS).is_empty());
    let again = l.handle_timeout(t0 + ACK_RESEND);
    assert!(matches!(&again[..], [LeaveAction::Send(_)]), "{again:?}");
    let a = l.on_message(t0 + 40 * MS, PEER, &ack(PEER, 7, 1));
    assert_eq!(a, vec![LeaveAction::Handed { peer: PEER }]);
    assert!(l.serving());
    assert_eq!(l.peer(), Some(PEER));
    assert_eq!(
        l.ends_at(),
        Some(t0 + 40 * MS + GRACE),
        "grace counts from the ACK"
    );
    // A later ACK changes nothing.
    assert!(
        l.on_message(t0 + 50 * MS, PEER, &ack(PEER, 7, 1))
            .is_empty()
    );
}

#[test]
fn no_ack_within_the_wait_aborts() {
    let t0 = Instant::now();
    let (mut l, _) = start(t0, 3);
    let mut t = t0;
    while t < t0 + ACK_WAIT {
        t = l.next_timeout().expect("a deadline while waiting");
        let a = l.handle_timeout(t);
        if t < t0 + ACK_WAIT {
            assert!(matches!(&a[..], [LeaveAction::Send(_)]), "{a:?}");
        } else {
            assert!(
                matches!(&a[..], [LeaveAction::Abort { why }] if why.contains("no peer acknowledged")),
                "{a:?}"
            );
        }
    }
    assert!(l.is_over());
    assert_eq!(l.next_timeout(), None);
    assert!(
        l.on_message(t, PEER, &ack(PEER, 7, 1)).is_empty(),
        "too late"
    );
}

#[test]
fn acks_for_another_handover_node_or_group_are_ignored() {
    let t0 = Instant::now();
    let (mut l, _) = start(t0, 1);
    assert!(
        l.on_message(t0, PEER, &ack(PEER, 8, 1)).is_empty(),
        "another id"
    );
    assert!(
        l.on_message(t0, Ipv4Addr::new(10, 0, 0, 66), &ack(PEER, 7, 1))
            .is_empty(),
        "spoofed node"
    );
    let mut other = ack(PEER, 7, 1);
    other.vip = Ipv4Addr::new(10, 0, 0, 235);
    assert!(l.on_message(t0, PEER, &other).is_empty(), "another group");
    assert!(l.on_message(t0, OLD, &ack(OLD, 7, 1)).is_empty(), "itself");
    let mut not_ack = ack(PEER, 7, 1);
    not_ack.kind = Kind::Done;
    assert!(l.on_message(t0, PEER, &not_ack).is_empty());
    assert!(l.waiting());
}

#[test]
fn serving_lists_again_and_finishes_when_the_last_connection_ended() {
    let t0 = Instant::now();
    let mut l = handed(t0, 3);
    let t = l.next_timeout().unwrap();
    assert_eq!(t, t0 + MS + RESEND);
    assert_eq!(l.handle_timeout(t), vec![LeaveAction::List]);
    let a = l.on_flows(t, flows(1..=2));
    assert!(
        matches!(&a[..], [LeaveAction::Send(m)] if m[0].generation == 2 && m[0].flows.len() == 2),
        "{a:?}"
    );
    assert_eq!(l.left(), 2);
    let (why, left) = finish_why(&l.on_flows(t + RESEND, flows([])));
    assert_eq!(left, 0);
    assert!(
        why.contains("every handed-over connection has ended"),
        "{why}"
    );
    assert!(l.is_over());
}

#[test]
fn the_grace_time_ends_the_departure() {
    let t0 = Instant::now();
    let mut l = handed(t0, 3);
    let end = l.ends_at().unwrap();
    let (why, left) = finish_why(&l.handle_timeout(end));
    assert_eq!(left, 3);
    assert!(why.contains("grace time"), "{why}");
}

#[test]
fn a_dead_peer_ends_the_departure_a_live_one_does_not() {
    let t0 = Instant::now();
    let (mut w, _) = start(t0, 2);
    assert!(w.on_peer(t0, false).is_empty(), "no peer chosen yet");
    let mut l = handed(t0, 2);
    assert!(l.on_peer(t0 + 10 * MS, true).is_empty());
    let (why, left) = finish_why(&l.on_peer(t0 + 20 * MS, false));
    assert_eq!(left, 2);
    assert!(why.contains("10.0.0.2") && why.contains("gone"), "{why}");
}

#[test]
fn losing_master_while_waiting_aborts_but_not_once_handed() {
    let t0 = Instant::now();
    let (mut l, _) = start(t0, 2);
    assert!(l.on_master(true).is_empty());
    assert!(matches!(
        &l.on_master(false)[..],
        [LeaveAction::Abort { .. }]
    ));
    let mut l = handed(t0, 2);
    assert!(
        l.on_master(false).is_empty(),
        "after the ACK the VIP is released on purpose"
    );
}

#[test]
fn active_is_refused_while_serving_unless_forced() {
    let t0 = Instant::now();
    let mut l = handed(t0, 2);
    assert_eq!(l.on_active(false), Err((2, PEER)));
    assert!(l.serving(), "a refusal changes nothing");
    let a = l.on_active(true).expect("forced");
    let (why, left) = finish_why(&a);
    assert_eq!(left, 2);
    assert!(why.contains("active requested with force"), "{why}");
    assert_eq!(
        l.on_active(false),
        Ok(Vec::new()),
        "over: nothing to refuse"
    );
}

// ---------------------------------------------------------------------------
// The departure against the peer's steering, over a lossy channel.
// ---------------------------------------------------------------------------

mod sim {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Time passes (ms).
        Wait(u64),
        /// One of the connections ends.
        End,
        /// The next datagram in either direction is lost.
        Lose,
        /// The peer dies (its steering with it, silently).
        PeerDies,
        /// This node stops being MASTER (only matters while waiting).
        MasterLost,
        /// An operator asks for active (`true`: forced).
        Active(bool),
        /// SIGTERM or another interruption.
        Interrupt,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1u64..150).prop_map(Op::Wait),
            2 => Just(Op::End),
            2 => Just(Op::Lose),
            1 => Just(Op::PeerDies),
            1 => Just(Op::MasterLost),
            1 => any::<bool>().prop_map(Op::Active),
            1 => Just(Op::Interrupt),
        ]
    }

    struct World {
        now: Instant,
        leave: Leave,
        steer: Steering,
        open: BTreeSet<Flow>,
        lose: bool,
        peer_alive: bool,
        master: bool,
        handed: usize,
        terminal: Vec<LeaveAction>,
        acked_at: Option<Instant>,
        t0: Instant,
    }

    impl World {
        /// Carry out the departure's actions: messages reach the steering (and
        /// its acks come back) unless lost or the peer is dead.
        fn apply(&mut self, actions: Vec<LeaveAction>) {
            let mut queue: std::collections::VecDeque<_> = actions.into();
            while let Some(a) = queue.pop_front() {
                assert!(
                    self.terminal.is_empty(),
                    "{a:?} after the end {:?}",
                    self.terminal
                );
                match a {
                    LeaveAction::Send(msgs) => {
                        for m in msgs {
                            assert_eq!((m.id, m.node, m.vip), (7, OLD, VIP));
                            queue.extend(self.deliver(&m));
                        }
                    }
                    LeaveAction::List => {
                        let open = self.open.clone();
                        queue.extend(self.leave.on_flows(self.now, open));
                    }
                    LeaveAction::Handed { peer } => {
                        assert_eq!(peer, PEER);
                        self.handed += 1;
                        self.acked_at = Some(self.now);
                    }
                    LeaveAction::Abort { .. } => {
                        assert_eq!(self.handed, 0, "an abort after the ACK");
                        self.terminal.push(a);
                    }
                    LeaveAction::Finish { ref done, .. } => {
                        assert_eq!(self.handed, 1, "a finish without an ACK");
                        let done = done.clone();
                        self.terminal.push(a);
                        for _ in 0..3 {
                            self.deliver(&done);
                        }
                    }
                }
            }
        }

        /// One datagram to the peer; the ACKs it answers with come back.
        fn deliver(&mut self, m: &Message) -> Vec<LeaveAction> {
            if std::mem::take(&mut self.lose) || !self.peer_alive {
                return Vec::new();
            }
            let mut back = Vec::new();
            for s in self.steer.on_message(self.now, OLD, m) {
                if let SteerAction::Ack { to, id, generation } = s {
                    assert_eq!(to, OLD);
                    if std::mem::take(&mut self.lose) {
                        continue;
                    }
                    back.extend(
                        self.leave
                            .on_message(self.now, PEER, &ack(PEER, id, generation)),
                    );
                }
            }
            back
        }

        fn advance(&mut self, until: Instant) {
            loop {
                let next = [self.leave.next_timeout(), self.steer.next_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) if t <= until => {
                        self.now = self.now.max(t);
                        let a = self.leave.handle_timeout(self.now);
                        self.apply(a);
                        self.steer.handle_timeout(self.now);
                        self.check();
                    }
                    _ => break,
                }
            }
            self.now = until;
        }

        /// What must hold at every step.
        fn check(&self) {
            if self.leave.waiting() {
                assert!(self.now < self.t0 + ACK_WAIT, "waited past ACK_WAIT");
            }
            if let (true, Some(at)) = (self.leave.serving(), self.acked_at) {
                assert!(self.now < at + GRACE, "served past the grace time");
            }
            assert_eq!(self.leave.is_over(), self.leave.next_timeout().is_none());
            assert!(self.handed <= 1);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever happens, the departure ends by itself within ACK_WAIT +
        /// grace, ends once (an abort only before the ACK, a finish only after),
        /// does nothing afterwards, and leaves no steering behind at the peer
        /// for longer than LIVENESS (DONE may be lost; silence then expires it).
        #[test]
        fn a_departure_always_ends_and_leaves_no_steering(
            n in 1u16..6,
            ops in proptest::collection::vec(op(), 0..40),
        ) {
            let t0 = Instant::now();
            let (leave, first) = start(t0, n);
            let mut w = World {
                now: t0,
                leave,
                steer: Steering::new(PEER, VIP),
                open: flows(1..=n),
                lose: false,
                peer_alive: true,
                master: true,
                handed: 0,
                terminal: Vec::new(),
                acked_at: None,
                t0,
            };
            w.apply(first);
            for op in &ops {
                match op {
                    Op::Wait(ms) => {
                        let until = w.now + Duration::from_millis(*ms);
                        w.advance(until);
                    }
                    Op::End => {
                        let first = w.open.iter().next().copied();
                        if let Some(f) = first {
                            w.open.remove(&f);
                        }
                    }
                    Op::Lose => w.lose = true,
                    Op::PeerDies => {
                        w.peer_alive = false;
                        w.steer = Steering::new(PEER, VIP);
                        let now = w.now;
                        let a = w.leave.on_peer(now, false);
                        w.apply(a);
                    }
                    Op::MasterLost => {
                        w.master = false;
                        let a = w.leave.on_master(false);
                        w.apply(a);
                    }
                    Op::Active(force) => match w.leave.on_active(*force) {
                        Ok(a) => w.apply(a),
                        Err((left, peer)) => {
                            prop_assert!(!force && w.leave.serving());
                            prop_assert_eq!((left, peer), (w.leave.left(), PEER));
                        }
                    },
                    Op::Interrupt => {
                        let a = w.leave.interrupt("test");
                        w.apply(a);
                    }
                }
                // The driver reports the peer's liveness after every event.
                let now = w.now;
                let alive = w.peer_alive;
                let a = w.leave.on_peer(now, alive);
                w.apply(a);
                let master = w.master;
                let a = w.leave.on_master(master);
                w.apply(a);
                w.check();
            }
            // Left alone, it ends by itself.
            let horizon = t0 + ACK_WAIT + GRACE + RESEND + MS;
            let until = horizon.max(w.now);
            w.advance(until);
            prop_assert!(w.leave.is_over(), "still running at the horizon");
            prop_assert_eq!(w.terminal.len(), 1);
            // No steering outlives the departure by more than LIVENESS.
            let until = w.now + LIVENESS;
            w.advance(until);
            prop_assert!(!w.steer.active(), "steering left behind");
            // The steered set was the open connections (when nothing was lost).
            if let Some(LeaveAction::Finish { left, .. }) = w.terminal.first() {
                prop_assert!(*left <= usize::from(n));
            }
        }
    }
}
