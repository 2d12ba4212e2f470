//! Self-test of the namespace lab the end-to-end tests stand on: the topology
//! works, the helpers see what the kernel sees, and nothing outlives a lab — not
//! after a normal drop and not after a panic. Needs root (CI runs as root).

// Network namespaces (the lab in tests/common/lab.rs) exist on Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::panic;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::lab::{BACKEND_BANNER, BACKEND_PORT, Hook, Host, Lab, poll};

/// The host namespace's interfaces, read-only: the lab must never change them.
fn host_links() -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link show");
    // Counters and states may change on their own; names may not.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_string))
        .collect::<Vec<_>>()
        .join(",")
}

fn all_gone(namespaces: &[String]) -> bool {
    namespaces
        .iter()
        .all(|ns| !Path::new("/run/netns").join(ns).exists())
}

#[test]
fn hosts_reach_each_other_through_the_bridge() {
    let before = host_links();
    let lab = Lab::new("selftest-ping");
    for (from, to) in [
        (Host::N1, Host::N2),
        (Host::N2, Host::N1),
        (Host::Client, Host::N1),
        (Host::Client, Host::Backend),
        (Host::N1, Host::Backend),
    ] {
        assert!(lab.ping(from, lab.ip(to)), "{from} cannot ping {to}");
    }
    // Each host has exactly its own address on eth0 (the rule `floating_ip:
    // {enabled: true}` derives its defaults from).
    for host in Host::ALL {
        let addrs = lab.addrs(host);
        assert!(
            addrs
                .iter()
                .any(|(i, a, p)| i == "eth0" && *a == lab.ip(host) && *p == 24),
            "{host}: {addrs:?}"
        );
        assert_eq!(
            addrs.iter().filter(|(i, _, _)| i != "lo").count(),
            1,
            "{host}: {addrs:?}"
        );
    }
    let macs: Vec<String> = Host::ALL.iter().map(|&h| lab.host_mac(h)).collect();
    for (i, m) in macs.iter().enumerate() {
        assert_eq!(m.len(), 17, "{m}");
        assert!(!macs[i + 1..].contains(m), "duplicate MAC {m}");
    }
    // The backend answers the client directly.
    let text = lab
        .client_get(lab.ip(Host::Backend), BACKEND_PORT, Duration::from_secs(2))
        .expect("client -> backend");
    assert_eq!(text, BACKEND_BANNER);
    assert!(lab.backend_hits() >= 1);
    assert_eq!(
        host_links(),
        before,
        "the host namespace's interfaces changed"
    );
}

#[test]
fn vip_and_neighbour_helpers_see_the_kernel() {
    let lab = Lab::new("selftest-vip");
    let vip = lab.default_vip();
    assert!(lab.vip_holders(vip).is_empty());
    assert_eq!(lab.client_neigh_mac(vip), None);

    // Put the VIP on n1 by hand, as a daemon would.
    let cidr = format!("{vip}/24");
    lab.ip_cmd(Host::N1, &["addr", "add", &cidr, "dev", "eth0"]);
    assert_eq!(lab.vip_holders(vip), vec![Host::N1]);
    assert_eq!(
        lab.wait_single_holder(vip, Duration::from_secs(1)),
        Some(Host::N1)
    );
    assert!(lab.ping(Host::Client, vip));
    assert_eq!(lab.client_neigh_mac(vip), Some(lab.host_mac(Host::N1)));

    // Move it to n2 and announce it the way the daemon must (gratuitous ARP): the
    // client's existing entry follows.
    lab.ip_cmd(Host::N1, &["addr", "del", &cidr, "dev", "eth0"]);
    lab.ip_cmd(Host::N2, &["addr", "add", &cidr, "dev", "eth0"]);
    assert!(
        lab.holders_stay(vip, &[Host::N2], Duration::from_millis(100))
            .is_ok()
    );
    let out = lab.exec(
        Host::N2,
        &[
            "arping",
            "-U",
            "-c",
            "2",
            "-w",
            "2",
            "-I",
            "eth0",
            &vip.to_string(),
        ],
    );
    assert!(
        out.status.success() || out.status.code() == Some(1),
        "{out:?}"
    );
    let n2_mac = lab.host_mac(Host::N2);
    assert!(
        poll(Duration::from_secs(3), || {
            (lab.client_neigh_mac(vip).as_deref() == Some(n2_mac.as_str())).then_some(())
        })
        .is_some(),
        "client neighbour entry {:?}, n2 {n2_mac}",
        lab.client_neigh_mac(vip)
    );
}

#[test]
fn nft_drop_and_flush() {
    let lab = Lab::new("selftest-nft");
    let n1 = lab.ip(Host::N1).to_string();
    assert!(lab.ping(Host::N1, lab.ip(Host::N2)));
    lab.nft_drop(
        Host::N2,
        Hook::Input,
        &format!("ip saddr {n1} icmp type echo-request"),
    );
    assert!(
        !lab.ping(Host::N1, lab.ip(Host::N2)),
        "the drop rule did not apply"
    );
    // Other traffic still flows.
    assert!(lab.ping(Host::Client, lab.ip(Host::N2)));
    lab.nft_flush(Host::N2);
    assert!(lab.ping(Host::N1, lab.ip(Host::N2)));

    // Cut a host off entirely, the way the e2e test does.
    lab.nft_drop(Host::N2, Hook::Input, "iifname \"eth0\"");
    lab.nft_drop(Host::N2, Hook::Output, "oifname \"eth0\"");
    assert!(!lab.ping(Host::N2, lab.ip(Host::Backend)));
    assert!(!lab.ping(Host::Client, lab.ip(Host::N2)));
    lab.nft_flush(Host::N2);
    assert!(lab.ping(Host::N2, lab.ip(Host::Backend)));
}

#[test]
fn namespaces_and_processes_gone_after_drop() {
    let before = host_links();
    let lab = Lab::new("selftest-drop");
    let namespaces = lab.namespaces().to_vec();
    assert_eq!(namespaces.len(), 5);
    assert!(
        namespaces
            .iter()
            .all(|ns| Path::new("/run/netns").join(ns).exists())
    );
    let mut sleeper = lab.spawn(Host::N1, &["sleep", "600"]);
    lab.kill_node(Host::N2);
    assert!(!lab.ping(Host::N1, lab.ip(Host::N2)), "n2's link is down");
    drop(lab);
    assert!(all_gone(&namespaces), "left behind: {namespaces:?}");
    let status = sleeper.wait_exit(Duration::from_secs(2));
    assert!(
        status.is_some(),
        "the process started in n1 outlived the lab"
    );
    assert_eq!(host_links(), before);
}

#[test]
fn namespaces_gone_after_a_panic_in_the_test() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen2 = seen.clone();
    let result = panic::catch_unwind(move || {
        let lab = Lab::new("selftest-panic");
        let _sleeper = lab.spawn(Host::Client, &["sleep", "600"]);
        seen2
            .lock()
            .expect("lock")
            .extend(lab.namespaces().iter().cloned());
        panic!("deliberate panic inside a lab test");
    });
    assert!(result.is_err());
    let namespaces = seen.lock().expect("lock").clone();
    assert_eq!(namespaces.len(), 5);
    assert!(all_gone(&namespaces), "left behind: {namespaces:?}");
}

#[test]
fn parallel_labs_do_not_collide() {
    let a = Lab::new("selftest-par-a");
    let b = Lab::new("selftest-par-b");
    assert_ne!(a.ip(Host::N1), b.ip(Host::N1));
    for lab in [&a, &b] {
        for o in lab.ip(Host::N1).octets() {
            assert!(o != 0 && o != 255, "{}", lab.ip(Host::N1));
        }
    }
    assert!(a.namespaces().iter().all(|ns| !b.namespaces().contains(ns)));
    // Separate bridges: a's hosts cannot reach b's.
    assert!(!a.ping(Host::N1, b.ip(Host::N2)));
}
