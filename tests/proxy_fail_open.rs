//! Passive health must not lengthen an outage (issue 7). The backends of a
//! forwarding service go down, clients keep coming (so passive health benches
//! every node, `failTimeout` one minute), then the backends come back on the
//! same ports: the service must answer within 1 s of their return — for a
//! one-node group (a lone node is never benched) and a two-node group (every
//! node benched: the balancer fails open and tries them anyway).
//!
//! Without fail-open both would refuse every client for the whole minute.

mod proxy_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proxy_common::*;

/// Addresses on which nothing listens (connections refused), for backends
/// that will come up there later.
fn free_ports(n: usize) -> Vec<SocketAddr> {
    let ls: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// One client: the backend's greeting, or `None` if the service closed the
/// connection (no node reached).
async fn greeting(proxy: SocketAddr) -> Option<String> {
    let attempt = async {
        let (_s, name) = connect_greeted(proxy).await;
        name
    };
    match tokio::time::timeout(Duration::from_secs(2), attempt).await {
        Ok(name) if !name.is_empty() => Some(name),
        _ => None,
    }
}

async fn outage_then_return(nodes: usize) {
    let addrs = free_ports(nodes);
    let set = start(&tcp_services(
        "fo",
        &addrs_yaml(&addrs),
        "    selector: {strategy: roundrobin, maxFails: 1, failTimeout: 60s}\n",
    ));
    let proxy = set.local_addr("fo").unwrap();
    // The outage: every client is turned away, and every node fails.
    for _ in 0..5 {
        assert_eq!(greeting(proxy).await, None);
    }
    // maxFails: 1 — one failure each would bench every node.
    let failures = set.stats("fo").unwrap().connect_failures;
    assert!(failures >= nodes as u64, "every node was tried: {failures}");

    // The backends return on their old ports.
    let mut backends = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        backends.push(Backend::start_on(&format!("b{i}"), *a).await);
    }
    let back = Instant::now();
    let answered = loop {
        if let Some(name) = greeting(proxy).await {
            break name;
        }
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "{nodes}-node group still refusing {:?} after its backends returned",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = back.elapsed();
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    assert!(answered.starts_with('b'), "{answered}");
    // And it stays up: the next clients are served without a miss.
    for _ in 0..4 {
        assert!(greeting(proxy).await.is_some());
    }
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_group_answers_within_a_second_of_its_return() {
    outage_then_return(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_node_group_answers_within_a_second_of_their_return() {
    outage_then_return(2).await;
}
