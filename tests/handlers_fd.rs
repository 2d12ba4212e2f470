//! Bad input on every handler — garbage, stalls, resets from either side,
//! unreachable targets — must close cleanly, be counted, and leave no file
//! descriptor or task behind. Alone in its binary so that no other test's
//! sockets disturb the count of /proc/self/fd.

mod handlers_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gateway::config::service::HandlerConfig;
use gateway::proxy::handler::{HandlerStats, ProxyHandler};
use gateway::proxy::router::Router;
use handlers_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Connect, send, then read until the proxy closes (bounded).
async fn send_and_wait_close(addr: SocketAddr, data: &[u8]) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = s.write_all(data).await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
}

/// Connect, send a partial request, then reset (RST) the connection.
async fn send_and_reset(addr: SocketAddr, data: &[u8]) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return;
    };
    let _ = s.write_all(data).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

fn socks5_connect(target: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = target else {
        panic!("v4")
    };
    let mut v = vec![5, 1, 0, 5, 1, 0, 1];
    v.extend_from_slice(&v4.ip().octets());
    v.extend_from_slice(&v4.port().to_be_bytes());
    v
}

async fn one_round(http: SocketAddr, socks: SocketAddr, auto: SocketAddr, origin: SocketAddr) {
    let dead = closed_port().await;
    let reset_req = format!("GET http://{origin}/reset HTTP/1.1\r\nHost: x\r\n\r\n");
    let tunnel_reset = format!(
        "CONNECT {origin} HTTP/1.1\r\nHost: x\r\n\r\nGET /reset HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    let mut socks_tunnel_reset = socks5_connect(origin);
    socks_tunnel_reset.extend_from_slice(b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n");
    let refused_http = format!("GET http://{dead}/ HTTP/1.1\r\nHost: x\r\n\r\n");
    let jobs: Vec<(SocketAddr, Vec<u8>, bool)> = vec![
        // garbage
        (http, b"\x16\x03\x01garbage\r\n\r\n".to_vec(), false),
        (socks, b"\x05\x00".to_vec(), false),
        (socks, b"\x07garbage".to_vec(), false),
        (auto, b"\xff\xfe\xfd\r\n\r\n".to_vec(), false),
        (auto, b"\x04\x09\x00".to_vec(), false),
        // stalls mid-handshake (readTimeout is 200 ms)
        (http, b"GET http://a/ HTTP/1.1\r\n".to_vec(), false),
        (socks, b"\x05\x02\x00".to_vec(), false),
        (auto, b"".to_vec(), false),
        // client resets mid-handshake
        (http, b"GET http://a/ HT".to_vec(), true),
        (socks, b"\x05\x01".to_vec(), true),
        // target refuses
        (http, refused_http.into_bytes(), false),
        (socks, socks5_connect(dead), false),
        // target resets: forwarded request, HTTP tunnel, SOCKS tunnel
        (http, reset_req.into_bytes(), false),
        (http, tunnel_reset.into_bytes(), false),
        (socks, socks_tunnel_reset, false),
    ];
    let mut tasks = Vec::new();
    for (addr, data, reset) in jobs {
        tasks.push(tokio::spawn(async move {
            if reset {
                send_and_reset(addr, &data).await
            } else {
                send_and_wait_close(addr, &data).await
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connections_leak_nothing() {
    let origin = spawn_origin("127.0.0.1:0").await;
    // Built as a service builds them, from `type` and `metadata`.
    let handler = |kind: &str| {
        let yaml = format!("{{type: {kind}, metadata: {{readTimeout: 200ms}}}}");
        let cfg: HandlerConfig = gateway::config::from_yaml(&yaml).unwrap();
        ProxyHandler::from_config(&cfg, Router::default()).unwrap()
    };
    let (hp, http) = serve(handler("http")).await;
    let (sp, socks) = serve(handler("socks5")).await;
    let (ap, auto) = serve(handler("auto")).await;
    let stats: [&Arc<HandlerStats>; 3] = [&http, &socks, &auto];
    let idle = || stats.iter().all(|s| s.snapshot().active == 0);

    // Warm-up: lets the runtime create whatever it creates lazily.
    one_round(hp, sp, ap, origin.addr).await;
    wait_for(Duration::from_secs(10), idle).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fds_before = fd_count();
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();

    const ROUNDS: usize = 40;
    // Sample the descriptor count while the rounds run, to show the test did
    // hold plenty of sockets open at once.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(fd_count());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peak
        }
    });
    for _ in 0..ROUNDS {
        one_round(hp, sp, ap, origin.addr).await;
    }
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    wait_for(Duration::from_secs(10), idle).await;
    // The origin notices closed upstream connections a moment later.
    let settled = async {
        while fd_count() > fds_before || metrics.num_alive_tasks() > tasks_before {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), settled).await;
    let (fds_after, tasks_after) = (fd_count(), metrics.num_alive_tasks());
    assert!(
        peak > fds_before + 10,
        "the rounds held sockets open (peak {peak})"
    );
    eprintln!(
        "fds: before {fds_before}, peak {peak}, after {fds_after}; tasks: {tasks_before} -> {tasks_after}"
    );
    assert_eq!(fds_after, fds_before, "file descriptors leaked");
    assert_eq!(tasks_after, tasks_before, "tasks leaked");

    let (h, s, a) = (http.snapshot(), socks.snapshot(), auto.snapshot());
    eprintln!("http {h:?}\nsocks5 {s:?}\nauto {a:?}");
    for snap in [&h, &s, &a] {
        assert!(
            counts_add_up(snap),
            "every connection counted once: {snap:?}"
        );
        assert_eq!(snap.completed, 0, "nothing here was a success: {snap:?}");
    }
    let rounds = (ROUNDS + 1) as u64;
    assert_eq!(h.connections, 6 * rounds);
    assert_eq!(h.handshake_timeout, rounds, "{h:?}");
    assert_eq!(h.target_failed, rounds, "{h:?}");
    assert_eq!(h.upstream_error, 2 * rounds, "{h:?}");
    assert_eq!(s.connections, 6 * rounds);
    assert_eq!(s.target_failed, rounds, "{s:?}");
    assert_eq!(s.handshake_timeout, rounds, "{s:?}");
    assert_eq!(s.upstream_error, rounds, "{s:?}");
    assert_eq!(a.connections, 3 * rounds);
    // The empty connection and the truncated SOCKS4 request both stall.
    assert_eq!(a.handshake_timeout, 2 * rounds, "{a:?}");
    assert_eq!(a.bad_request, rounds, "{a:?}");
}
