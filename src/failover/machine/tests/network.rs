//! The rules for a bad network: FAULT leaves only when the targets answer, a VIP
//! in use is not bound, a master that answers the echo is re-checked soon, and
//! flaps lengthen the hold-downs.

use super::*;

fn targets(ok: bool) -> impl Fn(u64) -> ProbeResult {
    move |id| ProbeResult {
        id,
        peer: PeerCheck::Dead,
        targets_ok: Some(ok),
        vip_in_use: None,
    }
}

/// docs/operations.md: FAULT returns to BACKUP only when the probe targets answer.
#[test]
fn fault_returns_to_backup_only_when_targets_answer_not_on_link_up() {
    let t0 = Instant::now();
    let mut p = params(1, 100, false);
    p.has_targets = true;
    let mut m = Machine::new(p, 1, t0);
    m.handle_link(t0, false);
    assert_eq!(m.state(), State::Fault);
    m.handle_link(t0 + 100 * MS, true);
    assert_eq!(m.state(), State::Fault);
    run_until(&mut m, t0 + 100 * MS, t0 + 3000 * MS, targets(false));
    assert_eq!(m.state(), State::Fault, "targets silent: stay FAULT");
    let acts = run_until(&mut m, t0 + 3000 * MS, t0 + 4100 * MS, targets(true));
    assert_eq!(states(&acts).first(), Some(&State::Backup), "{acts:?}");
}

/// RFC 5227: a foreign MAC answering for the VIP stops the takeover; the node goes
/// FAULT, re-checks with a doubling backoff, and returns once the VIP is free.
#[test]
fn vip_in_use_by_a_foreign_host_is_not_bound() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    let in_use = |id| ProbeResult {
        id,
        peer: PeerCheck::Dead,
        targets_ok: None,
        vip_in_use: Some("02:00:00:00:00:99".into()),
    };
    let acts = run_until(&mut m, t0, t0 + 400 * MS, in_use);
    assert_eq!(m.state(), State::Fault, "{acts:?}");
    assert!(!acts.contains(&Action::BindVip));
    let reason = acts.iter().find_map(|a| match a {
        Action::StateChanged {
            to: State::Fault,
            reason,
            ..
        } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.unwrap().contains("02:00:00:00:00:99"));
    // Every check in FAULT asks about the VIP, with growing gaps.
    let mut checks = Vec::new();
    let mut now = t0 + 400 * MS;
    while now < t0 + Duration::from_secs(20) {
        for a in m.drain_actions() {
            if let Action::Probe { id, vip, .. } = a {
                assert!(vip);
                checks.push(now);
                m.handle_probe(now, in_use(id));
            }
        }
        now = m.next_timeout().unwrap();
        m.handle_timeout(now);
    }
    assert_eq!(m.state(), State::Fault);
    let gaps: Vec<_> = checks.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
    assert!(gaps.last().unwrap() >= &Duration::from_secs(4), "{gaps:?}");
    // Free again: BACKUP, then (alone) MASTER with the VIP.
    let acts = run_until(&mut m, now, now + Duration::from_secs(40), dead_peer);
    assert_eq!(m.state(), State::Master, "{acts:?}");
    assert!(acts.contains(&Action::BindVip));
}

/// Lost heartbeats but the master answers the echo: no takeover, and the next
/// check comes one dead interval later (a real death then is not delayed by
/// seconds).
#[test]
fn echo_answering_master_is_rechecked_after_one_dead_interval() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    m.handle_heartbeat(t0, &hb(2, 200, WireState::Master, 1));
    let acts = run_until(&mut m, t0, t0 + 2000 * MS, master_alive);
    assert_eq!(m.state(), State::Backup);
    let probes = acts
        .iter()
        .filter(|a| matches!(a, Action::Probe { .. }))
        .count();
    assert!(probes >= 5, "re-checked every dead interval: {probes}");
    // Now it is really dead: taken over within a dead interval and a bit.
    let acts = run_until(&mut m, t0 + 2000 * MS, t0 + 2400 * MS, dead_peer);
    assert!(acts.contains(&Action::BindVip), "{acts:?}");
}

/// Flap damping: each "two masters" episode (a premature takeover) doubles the
/// silence needed for the next one, up to MAX_HOLD; the score decays again.
#[test]
fn two_master_flaps_double_the_takeover_silence() {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    let mut now = t0;
    let mut seq = 0;
    let mut silences = Vec::new();
    for _ in 0..6 {
        // The better master is heard, then goes silent; measure the takeover.
        seq += 1;
        m.handle_heartbeat(now, &hb(2, 200, WireState::Master, seq));
        let silence = m.timer(Timer::MasterDown).unwrap() - now;
        silences.push(silence);
        let until = now + silence + 200 * MS;
        let acts = run_until(&mut m, now, until, dead_peer);
        assert!(acts.contains(&Action::BindVip), "{acts:?}");
        now = until;
        assert_eq!(m.state(), State::Master);
        // It comes back as MASTER: two masters, the worse one (us) yields (after
        // the echo check confirms the unsigned heartbeat).
        seq += 1;
        m.handle_heartbeat(now, &hb(2, 200, WireState::Master, seq));
        for a in m.drain_actions() {
            if let Action::Verify { id, .. } = a {
                let alive = PeerCheck::Alive {
                    state: WireState::Master,
                    priority: 200,
                    node: ip(2),
                };
                m.handle_verify(now, id, alive);
            }
        }
        assert_eq!(m.state(), State::Backup);
    }
    assert_eq!(silences[0], 300 * MS, "{silences:?}");
    assert_eq!(
        silences[1],
        300 * MS,
        "the first flap is free: {silences:?}"
    );
    assert_eq!(silences[2], 600 * MS, "{silences:?}");
    assert!(
        silences[3] > silences[2] && silences[5] <= MAX_HOLD,
        "{silences:?}"
    );
    // Some half-lives later the path is calm again.
    assert_eq!(m.damping_level(now + 10 * DAMP_HALF_LIFE), 0);
}
