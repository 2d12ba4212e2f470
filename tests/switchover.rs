//! A planned switchover that drops no connection (issue #12): SIGTERM on the
//! master while clients hold long-lived connections through it, and a steady
//! stream of new short requests. The old master hands its connections over
//! (src/failover/handover/): the new master steers their packets back to it until
//! they end. Then the same with the old master killed (-9) during the grace time.
//!
//! The 15 s stream and 10 s idle period are shortened to 7 s and 5 s
//! (SIGTERM at second 3, as in the issue): what is proven — connections that
//! outlive the switchover by seconds, idle across it, then active — is the same,
//! and the suite stays short.

#![cfg(target_os = "linux")]

mod common;
mod switchover_support;

use std::thread;
use std::time::{Duration, Instant};

use common::lab::{Hook, Host, Lab, poll};
use switchover_support::*;

#[test]
fn switchover_keeps_every_connection() {
    let lab = Lab::new("switchover_keeps");
    let _backends = backends(&lab);
    let (mut g1, mut g2) = start_pair(&lab);
    let t0 = Instant::now();
    let conns = long_lived(&lab, Duration::from_secs(6));
    let requests = Requests::start(&lab);
    thread::sleep(Duration::from_secs(3).saturating_sub(t0.elapsed()));

    let term = Instant::now();
    g1.signal(nix::sys::signal::Signal::SIGTERM);
    expect_lan_holder(&lab, Host::N2);
    assert!(
        poll(WAIT, || steering_present(&lab, Host::N2).then_some(())).is_some(),
        "n2 never steered:\n{}\n{}",
        g1.log(),
        g2.log()
    );

    expect_all_complete(conns, &mut g1, &mut g2);
    // The old master leaves once its last connection has ended.
    let status = g1
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("n1 did not exit after its connections ended:\n{}", g1.log()));
    assert!(status.success(), "n1 exited with {status}:\n{}", g1.log());
    let (sent, failed, window) = requests.finish(t0);
    eprintln!(
        "switchover: {sent} short requests, {failed} failed, window {:?} (SIGTERM at {:?})",
        window,
        term - t0
    );
    if let Some((_, span)) = window {
        assert!(
            span <= Duration::from_millis(500),
            "new requests failed over {span:?}: more than a switchover window"
        );
    }
    assert!(
        g1.log()
            .contains("planned switchover: every handed-over connection has ended"),
        "{}",
        g1.log()
    );
    expect_departure_cleaned_up(&lab);
    g2.assert_running("after the switchover");
}

#[test]
fn killed_old_master_loses_only_its_connections() {
    let lab = Lab::new("switchover_kill9");
    let _backends = backends(&lab);
    let (mut g1, g2) = start_pair(&lab);
    let t0 = Instant::now();
    let s = connect(&lab, STREAM_PORT);
    let stream = thread::spawn(move || read_pattern(s, stream_len()));
    let requests = Requests::start(&lab);
    thread::sleep(Duration::from_secs(1));

    g1.signal(nix::sys::signal::Signal::SIGTERM);
    expect_lan_holder(&lab, Host::N2);
    assert!(
        poll(WAIT, || steering_present(&lab, Host::N2).then_some(())).is_some(),
        "n2 never steered:\n{}\n{}",
        g1.log(),
        g2.log()
    );
    thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    g1.kill9();
    let gone = poll(Duration::from_secs(3), || {
        (!steering_present(&lab, Host::N2)).then(|| killed.elapsed())
    })
    .unwrap_or_else(|| panic!("n2 kept the steering of a dead node:\n{}", g2.log()));
    eprintln!("steering removed {gone:?} after kill -9");
    assert!(
        gone <= Duration::from_secs(1),
        "steering removed after {gone:?}"
    );
    assert!(
        stream.join().expect("stream client").is_err(),
        "a connection of a killed node cannot complete"
    );
    // New connections were never affected by the kill.
    thread::sleep(Duration::from_millis(500));
    let after_kill = killed - t0;
    let (sent, failed, window) = requests.finish(t0);
    eprintln!("kill -9: {sent} short requests, {failed} failed, window {window:?}");
    if let Some((start, span)) = window {
        assert!(
            start + span < after_kill,
            "a new request failed after the kill (window {start:?} + {span:?}, kill at {after_kill:?})"
        );
    }
    // The killed node's leftovers (VIP on lo, gate) go when it starts again.
    assert!(
        !leftovers(&lab, Host::N1).is_empty(),
        "kill -9 leaves state behind"
    );
    let g1 = lab.respawn(&g1);
    assert!(
        poll(WAIT, || leftovers(&lab, Host::N1).is_empty().then_some(())).is_some(),
        "stale handover state not cleaned at start: {:?}\n{}",
        leftovers(&lab, Host::N1),
        g1.log()
    );
    assert_eq!(leftovers(&lab, Host::N2), Vec::<String>::new());
}

/// The peer never acknowledges (here its handover messages are dropped, as an
/// older version would drop them): the old master says why and switches over
/// as before — its connections are cut, the VIP moves at once, nothing is left.
#[test]
fn without_an_ack_the_switchover_is_the_old_one() {
    let lab = Lab::new("switchover_noack");
    let _backends = backends(&lab);
    let (mut g1, mut g2) = start_pair(&lab);
    // "GWHO" at the start of the UDP payload.
    lab.nft_drop(Host::N2, Hook::Input, "udp dport 7654 @th,64,32 0x4757484f");
    let s = connect(&lab, STREAM_PORT);
    let stream = thread::spawn(move || read_pattern(s, stream_len()));
    thread::sleep(Duration::from_millis(500));
    g1.signal(nix::sys::signal::Signal::SIGTERM);
    expect_lan_holder(&lab, Host::N2);
    assert!(
        g1.wait_log("no peer acknowledged", WAIT),
        "no fallback line:\n{}",
        g1.log()
    );
    let status = g1
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("n1 kept running without a handover:\n{}", g1.log()));
    assert!(status.success(), "{}", g1.log());
    assert!(
        stream.join().expect("stream client").is_err(),
        "without a handover the connection is cut"
    );
    assert!(!steering_present(&lab, Host::N2));
    for host in Host::NODES {
        assert_eq!(
            leftovers(&lab, host),
            Vec::<String>::new(),
            "{host} kept state"
        );
    }
    g2.assert_running("after the fallback");
}
