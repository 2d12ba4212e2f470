//! Bad input closes cleanly and leaks nothing: after rounds of resets, half-open
//! backends, stalled clients, clients that vanish and clients with no node, the
//! process has as many open file descriptors and live tasks as before.
//!
//! One test in its own binary, so no other test opens descriptors meanwhile.

mod proxy_common;

use std::net::SocketAddr;
use std::time::Duration;

use gateway::proxy::ServiceSet;
use proxy_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Backend that answers every connection with an RST.
async fn resetting_backend() -> SocketAddr {
    tcp_server(|s| async move {
        let sock = socket2::Socket::from(s.into_std().unwrap());
        let _ = sock.set_linger(Some(Duration::ZERO));
    })
    .await
}

/// Backend that accepts and then never writes or closes (until the proxy closes
/// its side): it reads but never answers, and returns when the proxy closes.
async fn half_open_backend() -> SocketAddr {
    tcp_server(|mut s| async move { drain(&mut s).await }).await
}

/// Open descriptors that are not pipes. Pipes are the relay's splice pool: it
/// grows to the highest number of transfers ever in flight at once (bounded),
/// which differs from round to round, so they are checked separately.
fn sockets_and_files() -> usize {
    fd_count() - pipe_fds()
}

/// What each open descriptor points at (`socket:[…]`, `pipe:[…]`, a path).
fn fd_links() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pipe_fds() -> usize {
    fd_links().iter().filter(|l| l.starts_with("pipe:")).count()
}

/// A TCP service forwarding to `node` alone, never benching it (`maxFails: 0`),
/// with `extra` service lines.
fn svc(name: &str, node: SocketAddr, extra: &str) -> String {
    let extra = format!("    selector: {{maxFails: 0}}\n{extra}");
    tcp_service(name, "127.0.0.1:0", &addrs_yaml(&[node]), &extra)
}

async fn round(set: &ServiceSet) {
    let echo = set.local_addr("echo").unwrap();
    let rst = set.local_addr("rst").unwrap();
    let half = set.local_addr("half").unwrap();
    let stall = set.local_addr("stall").unwrap();
    let dead = set.local_addr("dead").unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        // Normal traffic, a megabyte each way.
        tasks.push(tokio::spawn(async move {
            let mut c = connect_from(echo, None).await;
            let mut g = [0u8; 2];
            c.read_exact(&mut g).await.unwrap();
            let (mut r, mut w) = c.into_split();
            let wr = tokio::spawn(async move {
                w.write_all(&vec![i as u8; 1 << 20]).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            wr.await.unwrap();
            assert_eq!(back.len(), 1 << 20);
        }));
        // Backend resets.
        tasks.push(tokio::spawn(async move {
            let mut c = connect_from(rst, None).await;
            let _ = c.write_all(b"x").await;
            read_to_close(&mut c, Duration::from_secs(3)).await;
        }));
        // Half-open backend: the backend idle timeout closes it.
        tasks.push(tokio::spawn(async move {
            let mut c = connect_from(half, None).await;
            c.write_all(b"request").await.unwrap();
            read_to_close(&mut c, Duration::from_secs(3)).await;
        }));
        // Stalled client: connects, reads nothing, sends nothing; closed by the
        // client idle timeout (the test side just waits for the close).
        tasks.push(tokio::spawn(async move {
            let mut c = connect_from(stall, None).await;
            read_to_close(&mut c, Duration::from_secs(3)).await;
        }));
        // A client that vanishes with an RST in the middle of a transfer.
        tasks.push(tokio::spawn(async move {
            let c = connect_from(echo, None).await;
            let sock = socket2::Socket::from(c.into_std().unwrap());
            let _ = std::io::Write::write_all(&mut &sock, b"partial");
            let _ = sock.set_linger(Some(Duration::ZERO));
        }));
        // No node reachable.
        tasks.push(tokio::spawn(async move {
            let mut c = connect_from(dead, None).await;
            read_to_close(&mut c, Duration::from_secs(3)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for name in ["echo", "rst", "half", "stall", "dead"] {
        assert!(
            wait_stats(set, name, Duration::from_secs(3), |s| s.active == 0).await,
            "{name}: connections left open: {:?}",
            set.stats(name)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_leaks_no_fd_and_no_task() {
    let echo_backend = Backend::start("e").await;
    let rst = resetting_backend().await;
    let half = half_open_backend().await;
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let yaml = format!(
        "services:\n{}{}{}{}{}",
        svc("echo", echo_backend.addr, ""),
        svc("rst", rst, ""),
        svc("half", half, "  backend_idle_timeout: 200ms\n"),
        svc("stall", echo_backend.addr, "  client_idle_timeout: 200ms\n"),
        svc("dead", dead, ""),
    );
    let set = start(&yaml);
    // Warm up: pools (buffers, pipes) and lazily opened runtime resources settle.
    round(&set).await;
    round(&set).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds = sockets_and_files();
    let before_links = fd_links();
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    for _ in 0..3 {
        round(&set).await;
    }
    let mut after = 0;
    let settled = wait_for(Duration::from_secs(10), || {
        after = sockets_and_files();
        after <= fds
    })
    .await;
    if !settled {
        let now = fd_links();
        let mut new: Vec<&String> = Vec::new();
        let mut pool: Vec<&String> = before_links.iter().collect();
        for l in &now {
            match pool.iter().position(|b| *b == l) {
                Some(i) => {
                    pool.swap_remove(i);
                }
                None => new.push(l),
            }
        }
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        for l in &new {
            let inode = l.trim_start_matches("socket:[").trim_end_matches(']');
            let line = tcp
                .lines()
                .find(|t| t.split_whitespace().nth(9) == Some(inode));
            eprintln!("new fd {l}: {line:?}");
        }
    }
    assert!(settled, "fd leak: {fds} before, {after} after");
    // The pool keeps at most 512 pipes (1024 descriptors); this test never has
    // more than a few dozen transfers in flight.
    assert!(pipe_fds() <= 2 * 60, "{} pipe descriptors", pipe_fds());
    // Backend and connection tasks finish a moment after their sockets close.
    let mut tasks_after = 0;
    let settled = wait_for(Duration::from_secs(10), || {
        tasks_after = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        tasks_after <= tasks
    })
    .await;
    assert!(settled, "task leak: {tasks} before, {tasks_after} after");
    // A reset can land before the connect is even reported (then it is a failed
    // connect) or during the relay (an error); either way it is counted.
    let s = set.stats("rst").unwrap();
    assert!(s.errors + s.completed + s.no_node >= 30, "{s:?}");
    assert!(set.stats("half").unwrap().idle_closed >= 30);
    assert!(set.stats("stall").unwrap().idle_closed >= 30);
    assert!(set.stats("dead").unwrap().no_node >= 30);
    set.shutdown(Duration::from_secs(1)).await;
}
