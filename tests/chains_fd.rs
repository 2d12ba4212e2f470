//! Every node of a chain down: each client gets its protocol's error (HTTP 502,
//! a SOCKS5 failure reply), the failure is logged at most about once a second
//! however many clients fail, and no file descriptor or task is left behind.
//! Alone in its binary so that no other test's sockets disturb the count of
//! /proc/self/fd, and so that it owns the process's log subscriber.

mod chain_support;
mod proxy_common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chain_support::*;
use proxy_common::{fd_count, start, wait_for};

/// Log lines, captured for the test to count.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_hops_down_fails_cleanly_logs_rarely_and_leaks_nothing() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let dead = |_| SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (a, b): (SocketAddr, SocketAddr) = (dead(0), dead(1));
    let origin = Origin::start().await;
    let set = start(&format!(
        "services:\n- {{name: http, addr: \"127.0.0.1:0\", handler: {{type: http, chain: c}}, listener: {{type: tcp}}}}\n- {{name: socks, addr: \"127.0.0.1:0\", handler: {{type: socks5, chain: c}}, listener: {{type: tcp}}}}\nchains: [{{name: c, hops: [{{name: hop-0, selector: {{maxFails: 1, failTimeout: 1s}}, nodes: [{{name: a, addr: \"{a}\"}}, {{name: b, addr: \"{b}\", connector: {{type: socks5}}}}]}}]}}]\n"
    ));
    let (http, socks) = (
        set.local_addr("http").unwrap(),
        set.local_addr("socks").unwrap(),
    );
    let idle = || {
        ["http", "socks"]
            .iter()
            .all(|s| set.handler_stats(s).is_some_and(|h| h.active == 0))
    };
    // Warm-up: lets the runtime create whatever it creates lazily.
    let started = Instant::now();
    assert_eq!(http_connect(http, origin.addr).await.0, 502);
    wait_for(Duration::from_secs(10), idle).await;
    let fds_before = fd_count();
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();

    const ROUNDS: usize = 60;
    let mut tasks = Vec::new();
    for _ in 0..ROUNDS {
        let o = origin.addr;
        tasks.push(tokio::spawn(async move { http_connect(http, o).await.0 }));
        tasks.push(tokio::spawn(async move {
            u16::from(socks5_connect(socks, o).await.0)
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    for pair in replies.chunks(2) {
        assert_eq!(pair[0], 502, "HTTP clients get 502: {replies:?}");
        assert!(
            pair[1] != 0 && pair[1] != 0xff,
            "SOCKS5 clients get a failure reply: {replies:?}"
        );
    }
    assert!(origin.peers.lock().unwrap().is_empty());

    wait_for(Duration::from_secs(10), idle).await;
    let settled = async {
        while fd_count() > fds_before || metrics.num_alive_tasks() > tasks_before {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), settled).await;
    assert_eq!(fd_count(), fds_before, "file descriptors leaked");
    assert_eq!(metrics.num_alive_tasks(), tasks_before, "tasks leaked");

    // 121 failed clients; the chain's lines (node failures, "no node") pass at
    // most once a second each.
    let lines = logs.count("chain=c");
    let seconds = elapsed.as_secs() as usize + 2;
    eprintln!(
        "{lines} chain log lines for {} clients in {elapsed:?}",
        2 * ROUNDS + 1
    );
    assert!(lines >= 1, "the failure was logged");
    assert!(
        lines <= 2 * seconds,
        "{lines} lines in {elapsed:?}: not rate-limited"
    );
    assert!(logs.count("no node of the hop available") >= 1);
}
