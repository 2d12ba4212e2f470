//! Failover behaviours beyond the six scenarios of `failover_e2e.rs`: the VIP removed
//! behind the daemon's back, notify hooks, garbage on the heartbeat port, unicast
//! heartbeats to `peer_ip` when broadcast is lost, and a link that goes down under a
//! master. Same lab, same rule: assert on what the network shows.

// Network namespaces (the lab in tests/common/lab.rs) exist on Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::lab::{GatewayProc, Hook, Host, Lab, poll};

const WAIT: Duration = Duration::from_secs(10);

/// Start n1 with priority 200 and the `extra` `floating_ip:` lines, and wait until
/// it holds the VIP.
fn start_n1_master(lab: &Lab, extra: &[&str]) -> GatewayProc {
    let g1 = lab.spawn_gateway(Host::N1, &lab.floating_ip_yaml(Host::N1, 200, extra));
    lab.expect_holders(lab.default_vip(), &[Host::N1], WAIT, "n1 alone");
    g1
}

/// Start n2 as the backup (priority 100).
fn start_n2(lab: &Lab) -> GatewayProc {
    lab.spawn_gateway(Host::N2, &lab.floating_ip_yaml(Host::N2, 100, &[]))
}

#[test]
fn vip_removed_by_someone_else_is_restored() {
    let lab = Lab::new("x-restore");
    let vip = lab.default_vip();
    let _g1 = start_n1_master(&lab, &[]);
    lab.ip_cmd(
        Host::N1,
        &["addr", "del", &format!("{vip}/24"), "dev", "eth0"],
    );
    lab.expect_holders(vip, &[Host::N1], Duration::from_secs(2), "VIP restored");
}

#[test]
fn notify_hooks_run_with_state_in_environment() {
    let lab = Lab::new("x-notify");
    let vip = lab.default_vip();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("states");
    let master = format!("  master: \"echo master-hook >> {}\"", out.display());
    let any = format!(
        "  any: \"echo $GATEWAY_PREVIOUS_STATE-$GATEWAY_STATE-$GATEWAY_VIP >> {}\"",
        out.display()
    );
    let g1 = start_n1_master(&lab, &["notify:", &master, &any]);
    let text = poll(WAIT, || {
        let t = std::fs::read_to_string(&out).unwrap_or_default();
        t.contains(&format!("BACKUP-MASTER-{vip}")).then_some(t)
    })
    .unwrap_or_else(|| panic!("hooks did not run:\n{}", g1.log()));
    assert!(text.contains("INIT-BACKUP"), "{text}");
    assert!(text.contains("master-hook"), "{text}");
}

#[test]
fn garbage_on_the_heartbeat_port_is_dropped_and_counted() {
    let lab = Lab::new("x-garbage");
    let vip = lab.default_vip();
    let mut g1 = start_n1_master(&lab, &[]);
    // Random datagrams, a truncated heartbeat and a wrong version, from the client.
    let n1 = lab.ip(Host::N1);
    lab.in_netns(Host::Client, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut hb = b"GWHB\x01\x02\x64\x00".to_vec();
        hb.extend_from_slice(&[0u8; 24]);
        let mut v9 = hb.clone();
        v9[4] = 9;
        for _ in 0..50 {
            s.send_to(b"hello", (n1, 7654)).unwrap();
            s.send_to(&hb[..20], (n1, 7654)).unwrap();
            s.send_to(&v9, (n1, 7654)).unwrap();
        }
    })
    .unwrap();
    lab.expect_holders_stay(vip, &[Host::N1], Duration::from_secs(1), "garbage");
    g1.assert_running("garbage");
    g1.terminate(WAIT);
    let log = g1.log();
    let malformed = log
        .lines()
        .find(|l| l.contains("failover stopped"))
        .and_then(|l| l.split("malformed=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no counters in log:\n{log}"));
    assert!(malformed >= 150, "malformed={malformed}\n{log}");
}

#[test]
fn unicast_heartbeats_to_peer_ip_survive_lost_broadcast() {
    let lab = Lab::new("x-unicast");
    let vip = lab.default_vip();
    // Broadcast heartbeats never arrive at n2; unicast ones do.
    let bcast = format!("ip daddr {} udp dport 7654", {
        let o = lab.ip(Host::N1).octets();
        std::net::Ipv4Addr::new(o[0], o[1], o[2], 255)
    });
    lab.nft_drop(Host::N2, Hook::Input, &bcast);
    lab.nft_drop(Host::N1, Hook::Input, &bcast);
    let _g1 = start_n1_master(&lab, &[]);
    // Every other way n2 could learn that n1 is alive is closed too (echo over TCP
    // and UDP, ICMP to n1), so only heartbeats keep n2 from taking over.
    lab.nft_drop(Host::N2, Hook::Output, "tcp dport 61111");
    lab.nft_drop(Host::N2, Hook::Output, "udp dport 61111");
    lab.nft_drop(Host::N2, Hook::Output, "icmp type echo-request");
    let mut g2 = start_n2(&lab);
    // n2 must really be running as a backup for the watch below to mean anything.
    assert!(
        g2.wait_log("to=BACKUP reason=startup", WAIT),
        "n2 never started:\n{}",
        g2.log()
    );
    if let Err(seen) = lab.holders_stay(vip, &[Host::N1], Duration::from_secs(2)) {
        panic!(
            "n2 took the VIP although unicast heartbeats flow: {seen:?}\n{}",
            g2.log()
        );
    }
    g2.assert_running("unicast heartbeats");
    assert!(
        !g2.log().contains("to=MASTER"),
        "n2 was MASTER at some point:\n{}",
        g2.log()
    );
}

#[test]
fn master_link_down_goes_fault_and_backup_takes_over() {
    let lab = Lab::new("x-linkdown");
    let vip = lab.default_vip();
    let g1 = start_n1_master(&lab, &[]);
    let _g2 = start_n2(&lab);
    std::thread::sleep(Duration::from_millis(500));
    lab.link_down(Host::N1);
    lab.expect_holders(vip, &[Host::N2], WAIT, "n1's link down");
    assert!(
        g1.wait_log("to=FAULT reason=link down", WAIT),
        "{}",
        g1.log()
    );
    // Link back: n1 returns as BACKUP (no preemption) and n2 keeps the VIP.
    lab.link_up(Host::N1);
    assert!(
        g1.wait_log("to=BACKUP reason=link up", WAIT),
        "{}",
        g1.log()
    );
    lab.expect_holders_stay(vip, &[Host::N2], Duration::from_secs(1), "n1's link up");
}
