//! The operator's switch (`control.rs`): standby is refused without a healthy
//! peer unless forced, a master in standby releases then resigns, a backup in
//! standby ignores resigns and silence.

use super::*;

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
