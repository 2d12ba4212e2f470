//! TCP forwarding services end to end on loopback: real listeners, real backends,
//! real clients.

mod proxy_common;

use std::time::{Duration, Instant};

use gateway::proxy::{ProxyError, ServiceSet};
use proxy_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Start the one TCP service [`tcp_services`] describes; returns the set and the
/// service's address.
fn start_one(name: &str, nodes: &str, extra: &str) -> (ServiceSet, std::net::SocketAddr) {
    let set = start(&tcp_services(name, nodes, extra));
    let addr = set.local_addr(name).unwrap();
    (set, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_with_half_close() {
    let b = Backend::start("b1").await;
    let (set, addr) = start_one("fwd", &nodes_yaml(&[&b]), "");
    let mut c = connect_from(addr, None).await;
    c.write_all(b"ping").await.unwrap();
    c.shutdown().await.unwrap(); // half-close: the answer must still arrive
    let mut got = String::new();
    c.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "b1\nping");
    assert!(wait_stats(&set, "fwd", Duration::from_secs(2), |s| s.completed == 1).await);
    set.shutdown(Duration::from_secs(1)).await;
}

/// The shape the failover end-to-end tests use (`addr: ":port"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_config_shape_binds_every_address() {
    let b = Backend::start("b1").await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let yaml = format!(
        "services: [{{name: fwd, addr: \":{port}\", handler: {{type: tcp}}, listener: {{type: tcp}}, forwarder: {{nodes: [{{name: b1, addr: \"{}\"}}]}}}}]\n",
        b.addr
    );
    let set = start(&yaml);
    let got = which(format!("127.0.0.1:{port}").parse().unwrap(), None).await;
    assert_eq!(got.as_deref(), Some("b1"));
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_failure_names_the_service() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let yaml = format!(
        "services: [{{name: clash, addr: \"{addr}\", handler: {{type: tcp}}, listener: {{type: tcp}}, forwarder: {{nodes: [{{addr: \"127.0.0.1:9\"}}]}}}}]\n"
    );
    let e = ServiceSet::start(&services(&yaml)).unwrap_err();
    assert!(
        matches!(&e, ProxyError::Service { service, .. } if service == "clash"),
        "{e}"
    );
    assert!(e.to_string().contains("bind"), "{e}");
}

async fn distribution(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(which(addr, None).await.unwrap_or_default());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roundrobin_weight_random_fifo() {
    let [a, b, c] = Backend::start_all(["a", "b", "c"]).await;
    let nodes = nodes_yaml(&[&a, &b, &c]);

    let (set, addr) = start_one("rr", &nodes, "    selector: {strategy: roundrobin}\n");
    let seq = distribution(addr, 6).await;
    assert_eq!(seq, ["a", "b", "c", "a", "b", "c"]);
    set.shutdown(Duration::from_secs(1)).await;

    let weighted = format!(
        "[{{name: a, addr: \"{}\", weight: 3}}, {{name: b, addr: \"{}\"}}]",
        a.addr, b.addr
    );
    let (set, addr) = start_one("w", &weighted, "    selector: {strategy: weight}\n");
    let seq = distribution(addr, 8).await;
    assert_eq!(seq.iter().filter(|s| *s == "a").count(), 6, "{seq:?}");
    set.shutdown(Duration::from_secs(1)).await;

    let (set, addr) = start_one("rand", &nodes, "    selector: {strategy: random}\n");
    let seq = distribution(addr, 60).await;
    for n in ["a", "b", "c"] {
        assert!(
            seq.iter().filter(|s| *s == n).count() >= 5,
            "{n} rarely picked: {seq:?}"
        );
    }
    set.shutdown(Duration::from_secs(1)).await;

    let (set, addr) = start_one("fifo", &nodes, "    selector: {strategy: fifo}\n");
    let seq = distribution(addr, 3).await;
    assert_eq!(seq, ["a", "a", "a"]);
    set.shutdown(Duration::from_secs(1)).await;
}

/// Breaks if leastconn stops counting connections in flight: round robin (or any
/// strategy blind to the load) would send the two new connections to different
/// nodes, leastconn sends both to the node whose connections were closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leastconn_avoids_busy_node() {
    let [a, b] = Backend::start_all(["a", "b"]).await;
    let leastconn = "    selector: {strategy: leastconn}\n";
    let (set, addr) = start_one("lc", &nodes_yaml(&[&a, &b]), leastconn);
    // Four connections: two on each node, whatever the order.
    let mut held: Vec<(TcpStream, String)> = Vec::new();
    for _ in 0..4 {
        held.push(connect_greeted(addr).await);
    }
    let on = |node: &str, held: &[(TcpStream, String)]| held.iter().filter(|h| h.1 == node).count();
    assert_eq!(
        (on("a", &held), on("b", &held)),
        (2, 2),
        "balanced while equal"
    );
    // Close the two on a: a carries 0, b still 2.
    held.retain(|h| h.1 != "a");
    let balancer = set.balancer("lc").unwrap();
    let settled = || {
        let n = balancer.nodes();
        n.iter().map(|n| n.active()).sum::<u64>() == 2
    };
    assert!(wait_for(Duration::from_secs(2), settled).await);
    // Both new connections go to the idle node: a (0 -> 1 -> 2), never b (2).
    let (_s1, first) = connect_greeted(addr).await;
    let (_s2, second) = connect_greeted(addr).await;
    assert_eq!(
        (first.as_str(), second.as_str()),
        ("a", "a"),
        "leastconn must fill the idle node"
    );
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leastbandwidth_avoids_the_busy_node() {
    let [a, b] = Backend::start_all(["a", "b"]).await;
    let leastbandwidth = "    selector: {strategy: leastbandwidth}\n";
    let (set, addr) = start_one("lb", &nodes_yaml(&[&a]), leastbandwidth);
    // Make node a busy: stream through it for the whole test.
    let (s, _) = connect_greeted(addr).await;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 65536];
        while w.write_all(&chunk).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let reader = tokio::spawn(async move { drain(&mut r).await });
    let bal = set.balancer("lb").unwrap();
    assert!(wait_for(Duration::from_secs(3), || bal.nodes()[0].rate() > 0).await);
    assert!(bal.set_nodes(&[
        bal.nodes()[0].config.clone(),
        gateway::config::service::NodeConfig {
            name: "b".into(),
            addr: b.addr.to_string(),
            weight: 1,
            priority: 0
        }
    ]));
    for _ in 0..3 {
        assert_eq!(which(addr, None).await.as_deref(), Some("b"));
    }
    writer.abort();
    reader.abort();
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iphash_and_iphash1_are_sticky_per_client_ip() {
    let [a, b, c] = Backend::start_all(["a", "b", "c"]).await;
    for strategy in ["iphash", "iphash1"] {
        let selector = format!("    selector: {{strategy: {strategy}}}\n");
        let (set, addr) = start_one("h", &nodes_yaml(&[&a, &b, &c]), &selector);
        let mut seen = std::collections::HashSet::new();
        for i in 1..=12 {
            let ip = format!("127.0.0.{i}");
            let first = which(addr, Some(&ip)).await.unwrap();
            for _ in 0..3 {
                assert_eq!(
                    which(addr, Some(&ip)).await.unwrap(),
                    first,
                    "{strategy}: {ip} moved"
                );
            }
            seen.insert(first);
        }
        assert!(seen.len() >= 2, "{strategy}: all clients on one node");
        set.shutdown(Duration::from_secs(1)).await;
    }
}

/// The consistency property over real connections: node b dies (found by the
/// ping health check); only b's clients move; b returns and they move back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iphash1_node_leaving_moves_only_its_clients() {
    let [a, b, c] = Backend::start_all(["a", "b", "c"]).await;
    let b_addr = b.addr;
    let (set, addr) = start_one(
        "h1",
        &nodes_yaml(&[&a, &b, &c]),
        "    selector: {strategy: iphash1, maxFails: 0}\n    healthcheck: {kind: ping, interval: 100ms, timeout: 200ms, fails: 1, passes: 1}\n",
    );
    let clients: Vec<String> = (1..=30).map(|i| format!("127.0.1.{i}")).collect();
    let mut before = Vec::new();
    for ip in &clients {
        before.push(which(addr, Some(ip)).await.unwrap());
    }
    assert!(
        before.iter().any(|n| n == "b"),
        "no client on b: {before:?}"
    );
    b.stop();
    let bal = set.balancer("h1").unwrap();
    assert!(wait_for(Duration::from_secs(3), || !bal.nodes()[1].is_healthy()).await);
    for (ip, was) in clients.iter().zip(&before) {
        let now = which(addr, Some(ip)).await.unwrap();
        if was == "b" {
            assert_ne!(now, "b");
        } else {
            assert_eq!(&now, was, "client {ip} moved although its node stayed");
        }
    }
    let _b2 = Backend::start_on("b", b_addr).await;
    assert!(wait_for(Duration::from_secs(3), || bal.nodes()[1].is_healthy()).await);
    for (ip, was) in clients.iter().zip(&before) {
        assert_eq!(&which(addr, Some(ip)).await.unwrap(), was);
    }
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_skips_dead_node_and_none_healthy_fails_fast() {
    let a = Backend::start("a").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap(); // closed at once
    let nodes = format!(
        "[{{name: dead, addr: \"{dead}\"}}, {{name: a, addr: \"{}\"}}]",
        a.addr
    );
    let (set, addr) = start_one(
        "p",
        &nodes,
        "    selector: {strategy: roundrobin, maxFails: 1, failTimeout: 30s}\n",
    );
    // Every client is served: the dead node is tried once, then benched.
    for _ in 0..4 {
        assert_eq!(which(addr, None).await.as_deref(), Some("a"));
    }
    assert_eq!(set.stats("p").unwrap().connect_failures, 1);
    // Now the last node dies too: clients get a prompt close.
    a.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    assert_eq!(which(addr, None).await, None);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(set.stats("p").unwrap().no_node >= 1);
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_check_takes_node_out_and_back() {
    let [a, b] = Backend::start_all(["a", "b"]).await;
    let b_addr = b.addr;
    let (set, addr) = start_one(
        "ping",
        &nodes_yaml(&[&a, &b]),
        "    selector: {maxFails: 0}\n    healthcheck: {kind: ping, interval: 100ms, timeout: 200ms, fails: 2, passes: 2}\n",
    );
    let bal = set.balancer("ping").unwrap();
    b.stop();
    assert!(wait_for(Duration::from_secs(3), || !bal.nodes()[1].is_healthy()).await);
    assert_eq!(distribution(addr, 4).await, ["a", "a", "a", "a"]);
    let _b = Backend::start_on("b", b_addr).await;
    assert!(wait_for(Duration::from_secs(3), || bal.nodes()[1].is_healthy()).await);
    let seq = distribution(addr, 4).await;
    assert!(seq.iter().any(|s| s == "b"), "{seq:?}");
    // No node healthy: prompt failure.
    a.stop();
    drop(_b);
    assert!(
        wait_for(Duration::from_secs(3), || bal
            .nodes()
            .iter()
            .all(|n| !n.is_healthy()))
        .await
    );
    let t = Instant::now();
    assert_eq!(which(addr, None).await, None);
    assert!(t.elapsed() < Duration::from_millis(500));
    set.shutdown(Duration::from_secs(1)).await;
}

/// A backend answering a probe: replies `reply` to anything.
async fn probe_backend(reply: &'static str) -> std::net::SocketAddr {
    tcp_server(move |mut s| async move {
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(reply.as_bytes()).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_check_by_prefix_and_regexp() {
    let good = probe_backend("+PONG\r\n").await;
    let bad = probe_backend("-ERR loading\r\n").await;
    for (strategy, recv) in [("starts_with", "+PONG"), ("regexp", "^\\\\+PO[N]G")] {
        let nodes = format!("[{{name: good, addr: \"{good}\"}}, {{name: bad, addr: \"{bad}\"}}]");
        let yaml = tcp_services(
            "probe",
            &nodes,
            &format!(
                "    healthcheck: {{kind: probe, interval: 100ms, timeout: 500ms, probe_send: \"PING\\r\\n\", probe_recv: \"{recv}\", probe_strategy: {strategy}}}\n"
            ),
        );
        let set = start(&yaml);
        let bal = set.balancer("probe").unwrap();
        assert!(
            wait_for(Duration::from_secs(3), || !bal.nodes()[1].is_healthy()).await,
            "{strategy}: bad node stayed healthy"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            bal.nodes()[0].is_healthy(),
            "{strategy}: good node marked unhealthy"
        );
        set.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_check_follows_command_output() {
    let a = Backend::start("a").await;
    let (dir, state) = temp_file("state", "1\n");
    let script = dir.path().join("check.sh");
    // The check gets host and port as arguments, as in gobetween.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ -n \"$1\" ] && [ -n \"$2\" ] || exit 1\ncat {}\n",
            state.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let yaml = tcp_services(
        "exec",
        &nodes_yaml(&[&a]),
        &format!(
            "    healthcheck: {{kind: exec, interval: 100ms, timeout: 1s, exec_command: \"{}\", exec_expected_positive_output: \"1\", exec_expected_negative_output: \"0\"}}\n",
            script.display()
        ),
    );
    let set = start(&yaml);
    let bal = set.balancer("exec").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(bal.nodes()[0].is_healthy());
    std::fs::write(&state, "0\n").unwrap();
    assert!(wait_for(Duration::from_secs(3), || !bal.nodes()[0].is_healthy()).await);
    std::fs::write(&state, "1\n").unwrap();
    assert!(wait_for(Duration::from_secs(3), || bal.nodes()[0].is_healthy()).await);
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_first_match_wins() {
    let a = Backend::start("a").await;
    let (set, addr) = start_one(
        "acl",
        &nodes_yaml(&[&a]),
        "  access: {default: deny, rules: [\"deny 127.0.2.7\", \"allow 127.0.2.0/24\"]}\n",
    );
    assert_eq!(which(addr, Some("127.0.2.8")).await.as_deref(), Some("a"));
    assert_eq!(which(addr, Some("127.0.2.7")).await, None);
    assert_eq!(which(addr, Some("127.0.3.1")).await, None);
    assert_eq!(set.stats("acl").unwrap().denied, 2);
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_closes_the_excess() {
    let a = Backend::start("a").await;
    let (set, addr) = start_one("max", &nodes_yaml(&[&a]), "  max_connections: 2\n");
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(connect_greeted(addr).await.0);
    }
    assert_eq!(which(addr, None).await, None);
    assert_eq!(set.stats("max").unwrap().over_limit, 1);
    drop(held);
    assert!(wait_stats(&set, "max", Duration::from_secs(2), |s| s.active == 0).await);
    assert_eq!(which(addr, None).await.as_deref(), Some("a"));
    set.shutdown(Duration::from_secs(1)).await;
}

/// A backend that records the first bytes it receives.
async fn recording_backend() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let addr = tcp_server(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut all = Vec::new();
            let _ = s.read_to_end(&mut all).await;
            let _ = tx.send(all).await;
        }
    })
    .await;
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_and_v2() {
    for version in ["1", "2"] {
        let (backend, mut rx) = recording_backend().await;
        let pp = format!("  proxy_protocol: {{version: \"{version}\"}}\n");
        let (set, addr) = start_one("pp", &addrs_yaml(&[backend]), &pp);
        let mut c = connect_from(addr, Some("127.0.4.5")).await;
        let cport = c.local_addr().unwrap().port();
        c.write_all(b"DATA").await.unwrap();
        c.shutdown().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if version == "1" {
            let want = format!(
                "PROXY TCP4 127.0.4.5 127.0.0.1 {cport} {}\r\nDATA",
                addr.port()
            );
            assert_eq!(String::from_utf8_lossy(&got), want);
        } else {
            assert_eq!(&got[..12], b"\r\n\r\n\0\r\nQUIT\n");
            assert_eq!(&got[12..14], &[0x21, 0x11]);
            assert_eq!(&got[16..20], &[127, 0, 4, 5]);
            assert_eq!(u16::from_be_bytes([got[24], got[25]]), cport);
            assert_eq!(&got[28..], b"DATA");
        }
        set.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeouts_close_stalled_client_and_half_open_backend() {
    // Half-open backend: accepts, never sends, never closes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let idle = "  backend_idle_timeout: 300ms\n";
    let (set, addr) = start_one("idle", &addrs_yaml(&[silent_addr]), idle);
    let mut c = connect_from(addr, None).await;
    let t = Instant::now();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(t.elapsed() >= Duration::from_millis(250) && t.elapsed() < Duration::from_secs(2));
    assert!(wait_stats(&set, "idle", Duration::from_secs(1), |s| s.idle_closed == 1).await);
    set.shutdown(Duration::from_secs(1)).await;

    // Stalled client: connects, never sends (the backend greets, then waits).
    let a = Backend::start("a").await;
    let idle = "  client_idle_timeout: 300ms\n";
    let (set, addr) = start_one("cidle", &nodes_yaml(&[&a]), idle);
    let mut c = connect_from(addr, None).await;
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut all))
        .await
        .unwrap()
        .ok();
    assert_eq!(all, b"a\n");
    assert!(
        wait_stats(&set, "cidle", Duration::from_secs(1), |s| s.idle_closed
            == 1)
        .await
    );
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_reset_closes_client_cleanly() {
    let baddr = tcp_server(|s| async move {
        // SO_LINGER 0 then close: an RST instead of a FIN.
        let std = s.into_std().unwrap();
        let sock = socket2::Socket::from(std);
        sock.set_linger(Some(Duration::ZERO)).unwrap();
        drop(sock);
    })
    .await;
    let (set, addr) = start_one("rst", &addrs_yaml(&[baddr]), "");
    let mut c = connect_from(addr, None).await;
    let _ = c.write_all(b"hello").await;
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "client not closed after backend reset");
    assert!(wait_stats(&set, "rst", Duration::from_secs(2), |s| s.active == 0).await);
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interface_option_sets_the_source_address() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let baddr = l.local_addr().unwrap();
    let yaml = format!(
        "services:\n- name: ifc\n  addr: \"127.0.0.1:0\"\n  interface: \"127.0.0.9\"\n  handler: {{type: tcp}}\n  listener: {{type: tcp}}\n  forwarder: {{nodes: [{{addr: \"{baddr}\"}}]}}\n"
    );
    let set = start(&yaml);
    let _c = connect_from(set.local_addr("ifc").unwrap(), None).await;
    let (_, peer) = tokio::time::timeout(Duration::from_secs(3), l.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(peer.ip().to_string(), "127.0.0.9");
    set.shutdown(Duration::from_secs(1)).await;
}
