//! End-to-end failover proof (issue #2): the real `gateway` binary runs in lab
//! nodes n1 and n2 (see `tests/common/lab.rs`), each with the TCP forwarding
//! service on `:8080` to the backend, and the client talks to the backend through
//! the VIP. Every assertion is about what the network shows — which host holds the
//! VIP, whether the client gets the backend's answer through it, which MAC the
//! client's neighbour table has for it — polled against deadlines.
//!
//! Needs root (network namespaces) and nftables; `scripts/ci-deps.sh` installs the
//! tools. Run with `cargo test --test failover_e2e`.

// Network namespaces (the lab in tests/common/lab.rs) exist on Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::lab::{GatewayProc, Hook, Host, Lab};
use nix::sys::signal::Signal;

/// The forwarding service's port on the VIP.
const SERVICE_PORT: u16 = 8080;
/// The heartbeat port (the port of the default `broadcast.binding`, 224.3.2.2:7654).
const HEARTBEAT_PORT: u16 = 7654;
/// Generous bounds: these tests prove behaviour, `scripts/bench-failover.sh`
/// measures speed. CI machines can be slow and busy.
const ELECTION: Duration = Duration::from_secs(10);
const FAILOVER: Duration = Duration::from_secs(10);
/// How long "nothing changes" is watched: many times the default dead interval
/// (3 missed heartbeats of 100 ms).
const STABLE: Duration = Duration::from_secs(3);

/// A config with `floating_ip: {enabled: true}` and the forwarding service.
fn config(lab: &Lab) -> String {
    format!(
        "floating_ip:\n  enabled: true\n{}",
        lab.forward_service_yaml()
    )
}

/// `priority` and `peer_ip` for `host`, plus `extra` (see [`Lab::floating_ip_yaml`]),
/// and the forwarding service.
fn node_config(lab: &Lab, host: Host, priority: u8, extra: &[&str]) -> String {
    lab.floating_ip_yaml(host, priority, extra) + &lab.forward_service_yaml()
}

/// Start both nodes at once with the same config; wait for exactly one VIP holder
/// and for the client to reach the backend through it. Returns the daemons of the
/// elected master and of the backup (`GatewayProc::host` tells which is which).
fn start_both(lab: &Lab, cfg: &str) -> (GatewayProc, GatewayProc) {
    let vip = lab.default_vip();
    // A VIP left behind by killed daemons must first be removed (the start removes
    // it; the winner binds it again a dead interval later), or the stale holder
    // would pass for the elected one. The daemon says when it has done so: wait for
    // that event, not for a short window with no holder that a poll may miss.
    let stale = lab.vip_holders(vip);
    let g1 = lab.spawn_gateway(Host::N1, cfg);
    let g2 = lab.spawn_gateway(Host::N2, cfg);
    for g in [&g1, &g2] {
        if stale.contains(&g.host()) {
            assert!(
                g.wait_log("removed a VIP left behind by an earlier run", ELECTION),
                "{}: the stale VIP was never removed:\n{}",
                g.host(),
                g.log()
            );
        }
    }
    let master = lab
        .wait_single_holder(vip, ELECTION)
        .unwrap_or_else(|| panic!("no single VIP holder: {:?}", lab.vip_holders(vip)));
    let took = lab
        .wait_client_reaches(vip, SERVICE_PORT, ELECTION)
        .unwrap_or_else(|e| panic!("client cannot reach the service on the VIP: {e}"));
    eprintln!(
        "{}: master {master}, service answered after {took:?}",
        lab.name()
    );
    if master == Host::N1 {
        (g1, g2)
    } else {
        (g2, g1)
    }
}

/// Start n1 (priority 200), wait until it is master, then start n2 (priority 100)
/// and check that n1 stays the only holder. Both configs get the `extra` lines.
fn start_n1_then_n2(lab: &Lab, extra: &[&str]) -> (GatewayProc, GatewayProc) {
    let vip = lab.default_vip();
    let g1 = lab.spawn_gateway(Host::N1, &node_config(lab, Host::N1, 200, extra));
    lab.expect_holders(vip, &[Host::N1], ELECTION, "n1 alone should take the VIP");
    let mut g2 = lab.spawn_gateway(Host::N2, &node_config(lab, Host::N2, 100, extra));
    lab.expect_holders_stay(vip, &[Host::N1], Duration::from_secs(1), "n2 joining");
    g2.assert_running("n2 joining");
    (g1, g2)
}

/// SIGTERM to n1, the master: it exits and n2 takes the VIP.
fn stop_n1(lab: &Lab, g1: &mut GatewayProc) {
    g1.terminate(Duration::from_secs(5));
    lab.expect_holders(lab.default_vip(), &[Host::N2], FAILOVER, "n1 stopped");
}

fn assert_reaches(lab: &Lab, vip: Ipv4Addr, what: &str) -> Duration {
    lab.wait_client_reaches(vip, SERVICE_PORT, FAILOVER)
        .unwrap_or_else(|e| panic!("{what}: the client does not reach the service on the VIP: {e}"))
}

/// The settled state after a change: for [`STABLE`] exactly `holder` has the VIP,
/// `daemon` keeps running, and the client reaches the service.
fn assert_stable(lab: &Lab, holder: Host, daemon: &mut GatewayProc, what: &str) {
    let vip = lab.default_vip();
    lab.expect_holders_stay(vip, &[holder], STABLE, what);
    daemon.assert_running(what);
    assert_reaches(lab, vip, what);
}

/// (1) `floating_ip: {enabled: true}` alone, both nodes started at the same moment:
/// exactly one of them holds the derived VIP (.234), and it serves. Three rounds; from
/// the second on, both daemons were `kill -9`ed just before, so the start also has to
/// clean up the stale VIP the last master left behind.
#[test]
fn simultaneous_start_elects_exactly_one_master() {
    let lab = Lab::new("e2e-start");
    let vip = lab.default_vip();
    let cfg = format!(
        "floating_ip: {{enabled: true}}\n{}",
        lab.forward_service_yaml()
    );
    for round in 1..=3 {
        let (gm, gb) = start_both(&lab, &cfg);
        let master = gm.host();
        let settled = format!("round {round}: the election settling");
        lab.expect_holders_stay(vip, &[master], Duration::from_secs(1), &settled);
        assert!(lab.client_reaches(vip, SERVICE_PORT, Duration::from_secs(2)));
        // The VIP carries the interface's prefix (/24 here).
        let on_master = lab.addrs(master);
        assert!(
            on_master
                .iter()
                .any(|(i, a, p)| i == "eth0" && *a == vip && *p == 24),
            "round {round}: {on_master:?}"
        );
        // Dropping a GatewayProc is kill -9: the VIP stays behind on `master`.
        drop((gm, gb));
        assert_eq!(
            lab.vip_holders(vip),
            vec![master],
            "round {round}: stale VIP"
        );
    }
}

/// (2) The master's host dies (every process killed, link down): the backup takes
/// over, the client reaches the service on the VIP again, and the client's existing
/// neighbour entry for the VIP now carries the new master's MAC (gratuitous ARP).
#[test]
fn node_death_moves_vip_and_client_arp() {
    let lab = Lab::new("e2e-death");
    let vip = lab.default_vip();
    let (gm, _gb) = start_both(&lab, &config(&lab));
    let master = gm.host();
    let backup = master.peer();
    // start_both made the client connect: it has a neighbour entry for the VIP.
    assert_eq!(
        lab.client_neigh_mac(vip),
        Some(lab.host_mac(master)),
        "before the failure the client resolves the VIP to the master"
    );
    let backup_mac = lab.host_mac(backup);

    let t0 = Instant::now();
    lab.kill_node(master);
    let took = assert_reaches(&lab, vip, "after the master's death");
    eprintln!(
        "node death: service back after {took:?} ({:?} since the kill)",
        t0.elapsed()
    );
    // The dead node's downed interface still lists the address; what counts is that
    // the survivor holds it.
    assert!(
        lab.vip_holders(vip).contains(&backup),
        "{:?}",
        lab.vip_holders(vip)
    );
    assert!(
        lab.wait_client_neigh_mac(vip, &backup_mac, Duration::from_secs(3)),
        "client's neighbour entry for the VIP is {:?}, the new master's MAC is {backup_mac}",
        lab.client_neigh_mac(vip)
    );
}

/// (3) `kill -9` of the master's daemon, its host staying up: the backup takes
/// over (the stale VIP is still on the old master's interface, nobody removed it);
/// when the killed daemon starts again it removes that stale VIP, so only the new
/// master holds it.
#[test]
fn daemon_crash_fails_over_and_restart_removes_stale_vip() {
    let lab = Lab::new("e2e-crash");
    let vip = lab.default_vip();
    let (mut dead, _alive) = start_both(&lab, &config(&lab));
    let backup = dead.host().peer();

    dead.kill9();
    assert!(
        lab.wait_holder(vip, backup, FAILOVER),
        "the backup did not take the VIP after kill -9 of the master: {:?}",
        lab.vip_holders(vip)
    );
    assert_reaches(&lab, vip, "after kill -9 of the master");
    let backup_mac = lab.host_mac(backup);
    assert!(
        lab.wait_client_neigh_mac(vip, &backup_mac, Duration::from_secs(3)),
        "client still resolves the VIP to {:?}",
        lab.client_neigh_mac(vip)
    );

    let mut restarted = lab.respawn(&dead);
    let what = "the restarted daemon removing its stale VIP";
    lab.expect_holders(vip, &[backup], FAILOVER, what);
    // preempt is off by default: it stays backup and the service stays where it is.
    assert_stable(
        &lab,
        backup,
        &mut restarted,
        "after the old master's restart",
    );
}

/// (4) SIGTERM on the master: it releases the VIP and resigns, the backup takes
/// over, the stopped node keeps no VIP, and the daemon exits 0.
#[test]
fn sigterm_switches_over() {
    let lab = Lab::new("e2e-sigterm");
    let vip = lab.default_vip();
    let (mut stopping, alive) = start_both(&lab, &config(&lab));
    let master = stopping.host();
    let backup = master.peer();

    let t0 = Instant::now();
    stopping.signal(Signal::SIGTERM);
    // The instant path: the backup takes over because the master resigned, not
    // because its dead timer ran out (which would also move the VIP, only later).
    let resigned = format!("to=MASTER reason=master {} resigned", lab.ip(master));
    assert!(
        alive.wait_log(&resigned, FAILOVER),
        "the backup did not take over on the resign:\n{}",
        alive.log()
    );
    assert!(
        !alive.log().contains("silent for"),
        "the backup took over on silence, not on the resign:\n{}",
        alive.log()
    );
    let took = assert_reaches(&lab, vip, "after SIGTERM on the master");
    eprintln!(
        "graceful stop: service back after {took:?} (150 ms per client attempt here; scripts/bench-failover.sh measures finely)"
    );
    // Connections accepted on the VIP are cut when it is released (they could never
    // finish), so even one caught mid-switchover does not hold the exit for the
    // whole drain grace period.
    let status = stopping
        .wait_exit(Duration::from_secs(5))
        .expect("the master did not exit within 5 s of SIGTERM");
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        stopping.log()
    );
    lab.expect_holders(vip, &[backup], FAILOVER, "after the switchover");
    assert!(
        !lab.vip_holders(vip).contains(&master),
        "the stopped node kept the VIP"
    );
    eprintln!("daemon exited {:?} after SIGTERM", t0.elapsed());
}

/// (5a) `preempt: false` (the default): the higher-priority node comes back and
/// stays BACKUP — no second interruption.
#[test]
fn returning_master_without_preempt_stays_backup() {
    let lab = Lab::new("e2e-nopreempt");
    let vip = lab.default_vip();
    let (mut g1, _g2) = start_n1_then_n2(&lab, &[]);
    stop_n1(&lab, &mut g1);
    assert_reaches(&lab, vip, "after n1 stopped");

    let mut back = lab.respawn(&g1);
    let what = "without preempt the returning n1 must stay backup";
    assert_stable(&lab, Host::N2, &mut back, what);
}

/// (5b) `preempt: true`: the returning higher-priority node takes the VIP back,
/// and at the end exactly one node holds it.
#[test]
fn returning_master_with_preempt_takes_vip_back() {
    let lab = Lab::new("e2e-preempt");
    let vip = lab.default_vip();
    let (mut g1, _g2) = start_n1_then_n2(&lab, &["preempt: true"]);
    stop_n1(&lab, &mut g1);

    let mut back = lab.respawn(&g1);
    let what = "with preempt the returning n1 (priority 200) must take the VIP back";
    lab.expect_holders(vip, &[Host::N1], FAILOVER, what);
    assert_stable(&lab, Host::N1, &mut back, "after the preemption");
}

/// (6a) The backup stops hearing the master's heartbeats (nftables in n2 drops UDP
/// to the heartbeat port from n1) while ICMP and TCP still pass: the backup's echo
/// probe (TCP 61111) finds the peer's daemon alive, so it does not take the VIP.
#[test]
fn lost_heartbeats_with_live_peer_keep_one_master() {
    let lab = Lab::new("e2e-hbloss");
    let (_g1, mut g2) = start_n1_then_n2(&lab, &[]);

    lab.nft_drop(
        Host::N2,
        Hook::Input,
        &format!("ip saddr {} udp dport {HEARTBEAT_PORT}", lab.ip(Host::N1)),
    );
    assert!(lab.ping(Host::N2, lab.ip(Host::N1)), "ICMP must still pass");
    let what = "heartbeats lost but the peer alive: exactly n1 must hold the VIP";
    assert_stable(&lab, Host::N1, &mut g2, what);
}

/// (6b) The backup is cut off from everything (nftables drops all traffic in and
/// out of its interface), then the master dies: the cut-off node cannot reach its
/// peer nor its probe target (the backend), so it goes FAULT and never holds the VIP.
/// When its network comes back it recovers and, the master being dead, takes over.
#[test]
fn cut_off_backup_goes_fault_and_takes_no_vip() {
    let lab = Lab::new("e2e-cutoff");
    let vip = lab.default_vip();
    let probe = format!("probe: {{targets: [{}]}}", lab.ip(Host::Backend));
    let (_g1, mut g2) = start_n1_then_n2(&lab, &[&probe]);

    lab.nft_drop(Host::N2, Hook::Input, "iifname \"eth0\"");
    lab.nft_drop(Host::N2, Hook::Output, "oifname \"eth0\"");
    assert!(
        !lab.ping(Host::N2, lab.ip(Host::Backend)),
        "n2 is not cut off"
    );
    lab.kill_node(Host::N1);

    // n1's downed interface still lists the VIP; n2 must never get it.
    let end = Instant::now() + STABLE;
    while Instant::now() < end {
        let holders = lab.vip_holders(vip);
        assert!(
            !holders.contains(&Host::N2),
            "the cut-off node took the VIP: holders {holders:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    g2.assert_running("cut off");
    assert!(
        g2.wait_log("to=FAULT", Duration::from_secs(2)),
        "n2 never logged a change to FAULT:\n{}",
        g2.log()
    );

    // Network back: n2 sees its probe target again, hears no master, takes over.
    lab.nft_flush(Host::N2);
    assert!(
        lab.wait_holder(vip, Host::N2, FAILOVER),
        "n2 did not recover from FAULT and take the VIP once its network was back"
    );
    assert_reaches(&lab, vip, "after n2 recovered");
}
