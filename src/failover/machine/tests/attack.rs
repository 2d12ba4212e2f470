//! The attacks on the election, without I/O: forged and replayed
//! heartbeats as the machine sees them once decoded (the MAC check happens before,
//! in the driver, so these are the cases that pass it: anything when the group has
//! no secret, replays when it has one).

use super::*;

/// A master (n2, priority 200) followed by backup n1 (priority 100); returns the
/// machine at the time `t` it last heard the master, and the master's next seq.
fn following(signed: bool) -> (Machine, Instant, u64) {
    let t0 = Instant::now();
    let mut m = Machine::new(params(1, 100, false), 1, t0);
    m.set_signed(signed);
    let mut t = t0;
    for seq in 1..=5 {
        m.handle_heartbeat_from(t, &hb(2, 200, WireState::Master, seq), ip(2));
        run_until(&mut m, t, t + 100 * MS, dead_peer);
        t += 100 * MS;
    }
    assert_eq!(m.state(), State::Backup);
    (m, t, 6)
}

/// Keep the real master talking from `seq` every interval until `until`; returns
/// the next seq.
fn master_talks(m: &mut Machine, mut t: Instant, until: Instant, mut seq: u64) -> u64 {
    while t < until {
        m.handle_heartbeat_from(t, &hb(2, 200, WireState::Master, seq), ip(2));
        run_until(m, t, t + 100 * MS, dead_peer);
        seq += 1;
        t += 100 * MS;
    }
    seq
}

#[test]
fn a_heartbeat_naming_another_sender_is_ignored() {
    let (mut m, t, _) = following(false);
    // From the attacker's own address, claiming to be the master: resign.
    m.handle_heartbeat_from(t, &hb(2, 200, WireState::Resign, 1000), ip(66));
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.counters.spoofed, 1);
}

/// The one `Action::Verify` pending, answered with `check`.
fn answer_verify(m: &mut Machine, now: Instant, check: PeerCheck) {
    let ids: Vec<u64> = m
        .drain_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Verify { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1, "expected one verification");
    m.handle_verify(now, ids[0], check);
}

fn alive(node: u8, state: WireState) -> PeerCheck {
    PeerCheck::Alive {
        state,
        priority: 200,
        node: ip(node),
    }
}

#[test]
fn forged_resign_then_max_sequence_cannot_make_the_backup_deaf() {
    // Unsigned: the RESIGN is held and checked over TCP; the master answers as
    // MASTER, so it is ignored. The sequence 2^64-1 after it is refused, so the
    // real master's next heartbeat is heard.
    let (mut m, t, seq) = following(false);
    m.handle_heartbeat_from(t, &hb(2, 200, WireState::Resign, seq), ip(2));
    assert_eq!(m.state(), State::Backup, "held for its echo check");
    answer_verify(&mut m, t + MS, alive(2, WireState::Master));
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.counters.unconfirmed, 1);
    m.handle_heartbeat_from(t + MS, &hb(2, 200, WireState::Master, u64::MAX), ip(2));
    assert_eq!(m.counters.seq_jump, 1);
    let before = m.counters.received;
    m.handle_heartbeat_from(t + 100 * MS, &hb(2, 200, WireState::Master, seq + 1), ip(2));
    assert_eq!(m.counters.received, before + 1, "the real master is heard");
}

#[test]
fn a_genuine_unsigned_resign_is_taken_after_one_echo_check() {
    let (mut m, t, seq) = following(false);
    m.handle_heartbeat_from(t, &hb(2, 200, WireState::Resign, seq), ip(2));
    // A resigning daemon answers RESIGN, or is already gone.
    answer_verify(&mut m, t + MS, alive(2, WireState::Resign));
    assert_eq!(m.state(), State::Master);
    let (mut m, t, seq) = following(false);
    m.handle_heartbeat_from(t, &hb(2, 200, WireState::Resign, seq), ip(2));
    answer_verify(&mut m, t + MS, PeerCheck::Dead);
    assert_eq!(m.state(), State::Master);
}

#[test]
fn a_signed_resign_needs_no_echo_check() {
    let (mut m, t, seq) = following(true);
    m.handle_heartbeat_from(t, &hb(2, 200, WireState::Resign, seq), ip(2));
    assert_eq!(m.state(), State::Master);
}

#[test]
fn replays_of_captured_heartbeats_change_nothing() {
    for signed in [false, true] {
        let (mut m, t, seq) = following(signed);
        // The master's own earlier heartbeats, replayed: all stale.
        for s in 1..seq {
            m.handle_heartbeat_from(t, &hb(2, 200, WireState::Resign, s), ip(2));
        }
        assert_eq!(m.state(), State::Backup, "signed={signed}");
        assert_eq!(m.counters.stale, seq - 1);
    }
}

#[test]
fn old_epoch_replayed_after_a_restart_is_refused_and_confirmation_asked() {
    let (mut m, t, _) = following(true);
    // The master restarts: epoch 10 instead of 9.
    let mut new = hb(2, 200, WireState::Master, 1);
    new.epoch = 10;
    m.handle_heartbeat_from(t, &new, ip(2));
    assert_eq!(m.counters.received, 6);
    // A captured RESIGN of the old run, replayed long after the master went quiet.
    let later = t + Duration::from_secs(3600);
    m.drain_actions();
    m.handle_heartbeat_from(later, &hb(2, 200, WireState::Resign, 99), ip(2));
    assert_eq!(m.counters.old_epoch, 1);
    assert!(
        m.drain_actions()
            .contains(&Action::ConfirmEpoch { peer: ip(2) }),
        "a signed old epoch asks the sender which epoch it runs"
    );
    // Asked at most once a second.
    m.handle_heartbeat_from(later + MS, &hb(2, 200, WireState::Resign, 100), ip(2));
    assert!(
        !m.drain_actions()
            .iter()
            .any(|a| matches!(a, Action::ConfirmEpoch { .. }))
    );
    // The resign did nothing: the backup is master by now only because the master
    // really fell silent for an hour, not because of the replay.
    assert_eq!(m.counters.old_epoch, 2);
}

#[test]
fn a_sender_whose_clock_went_back_is_heard_after_confirmation() {
    let (mut m, t, _) = following(true);
    let mut back = hb(2, 200, WireState::Master, 1);
    back.epoch = 3; // lower than 9
    m.handle_heartbeat_from(t, &back, ip(2));
    assert_eq!(m.counters.old_epoch, 1);
    m.confirm_epoch(t, ip(2), 3);
    back.seq = 2;
    m.handle_heartbeat_from(t + MS, &back, ip(2));
    assert_eq!(m.counters.received, 6);
}

#[test]
fn announced_interval_is_held_to_the_configured_range() {
    // A forged MASTER from a ghost outranking everybody, announcing 65535 ms: the
    // real master yields to it, and takes the VIP back once the ghost has been
    // silent for twice our interval × dead_count (not 65535 ms × 3).
    let t0 = Instant::now();
    let mut m = Machine::new(params(2, 200, false), 1, t0);
    run_until(&mut m, t0, t0 + 500 * MS, dead_peer);
    assert_eq!(m.state(), State::Master);
    let t = t0 + 500 * MS;
    let mut ghost = hb(50, 255, WireState::Master, 1);
    ghost.interval_ms = 65535;
    // Unsigned: the ghost does not answer the echo check, the claim is ignored.
    m.drain_actions();
    m.handle_heartbeat_from(t, &ghost, ip(50));
    answer_verify(&mut m, t + MS, PeerCheck::Dead);
    assert_eq!(m.state(), State::Master);
    // Signed (a node with the key gone rogue, or a bug): held to the range.
    m.set_signed(true);
    ghost.seq = 2;
    m.handle_heartbeat_from(t, &ghost, ip(50));
    assert_eq!(m.state(), State::Backup);
    run_until(&mut m, t, t + 2 * Duration::from_millis(600), dead_peer);
    assert_eq!(
        m.state(),
        State::Master,
        "the ghost was followed for too long"
    );
}

#[test]
fn a_flood_of_forged_senders_is_capped_and_the_master_still_followed() {
    let (mut m, mut t, mut seq) = following(false);
    for i in 0..100_000u32 {
        let a = Ipv4Addr::from(0x0a00_1000 + i);
        let mut f = hb(1, 1, WireState::Backup, 1);
        f.node = a;
        m.handle_heartbeat_from(t, &f, a);
        if i % 10_000 == 0 {
            seq = master_talks(&mut m, t, t + 100 * MS, seq);
            t += 100 * MS;
        }
        assert!(m.peer_count() <= MAX_PEERS);
    }
    assert_eq!(m.state(), State::Backup);
    // Once the flood stops, its senders expire.
    let end = t + Duration::from_secs(2);
    master_talks(&mut m, t, end, seq);
    assert_eq!(m.state(), State::Backup);
    assert_eq!(m.peer_count(), 1);
}
