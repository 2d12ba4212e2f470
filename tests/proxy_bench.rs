//! In-process measurements of the TCP forwarding path on loopback. Not a timed
//! test: ignored by default, run with
//!
//! ```text
//! cargo test --release --test proxy_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! It prints bulk throughput (direct, through the proxy with splice, through the
//! proxy with copying), short connections per second, and the resident memory
//! each idle proxied connection costs. Clients and backends live in the same
//! process, so absolute numbers are lower bounds of what the proxy alone does;
//! the comparisons between rows are what matters.

mod proxy_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::proxy::{ServiceSet, relay};
use proxy_common::{addrs_yaml, drain, start, tcp_server, tcp_services};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BULK: usize = 2 << 30; // 2 GiB

/// A backend that reads and discards everything, then closes.
async fn sink() -> SocketAddr {
    tcp_server(|mut s| async move {
        drain(&mut s).await;
        let _ = s.write_all(b"k").await;
    })
    .await
}

async fn bulk(to: SocketAddr) -> f64 {
    let mut s = TcpStream::connect(to).await.unwrap();
    let chunk = vec![1u8; 256 * 1024];
    let t = Instant::now();
    let mut sent = 0;
    while sent < BULK {
        s.write_all(&chunk).await.unwrap();
        sent += chunk.len();
    }
    s.shutdown().await.unwrap();
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await.unwrap();
    (BULK as f64 / (1 << 20) as f64) / t.elapsed().as_secs_f64()
}

fn proxy(node: SocketAddr) -> ServiceSet {
    start(&tcp_services(
        "p",
        &addrs_yaml(&[node]),
        "    selector: {maxFails: 0}\n",
    ))
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Raise the descriptor limit towards `n`; returns the limit now in force.
fn raise_fd_limit(n: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with valid, initialised structs.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let want = libc::rlimit {
            rlim_cur: n,
            rlim_max: n.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            // Without CAP_SYS_RESOURCE: go up to the hard limit.
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_forwarding() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_test_writer()
        .try_init();
    let backend = sink().await;
    let direct = bulk(backend).await;
    println!("bulk direct:                {direct:8.0} MiB/s");

    let set = proxy(backend);
    let addr = set.local_addr("p").unwrap();
    relay::set_splice(true);
    let spliced = bulk(addr).await;
    println!("bulk via proxy, splice:     {spliced:8.0} MiB/s");
    relay::set_splice(false);
    let copied = bulk(addr).await;
    println!("bulk via proxy, copying:    {copied:8.0} MiB/s");
    relay::set_splice(true);

    // Short connections: connect, send a byte, close; 32 in parallel for 3 s.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while t.elapsed() < Duration::from_secs(3) {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.write_all(b"x").await.unwrap();
                s.shutdown().await.unwrap();
                let mut ack = [0u8; 1];
                if s.read_exact(&mut ack).await.is_ok() {
                    n += 1;
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    println!(
        "short connections:          {:8.0} /s",
        total as f64 / t.elapsed().as_secs_f64()
    );
    set.shutdown(Duration::from_secs(2)).await;

    // Idle connections: the backend only holds its sockets (no task, no buffer),
    // so the RSS growth is the proxy's own cost plus the two Vec slots.
    // Four descriptors per idle connection live in this process (client, both
    // proxy sockets, backend).
    let limit = raise_fd_limit(100_000);
    let idle = (((limit as usize).saturating_sub(4_000)) / 4).min(10_000);
    println!(
        "fd limit {limit}, {} open; {idle} idle connections",
        proxy_common::fd_count()
    );
    let held = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let held_addr = held.local_addr().unwrap();
    let keeper = tokio::spawn(async move {
        let mut v = Vec::new();
        loop {
            match held.accept().await {
                Ok((s, _)) => v.push(s),
                Err(e) => {
                    eprintln!("keeper: accept: {e} (holding {})", v.len());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    let set = proxy(held_addr);
    let addr = set.local_addr("p").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();
    let mut clients = Vec::with_capacity(idle);
    for _ in 0..idle {
        clients.push(TcpStream::connect(addr).await.unwrap());
    }
    let ok = proxy_common::wait_for(Duration::from_secs(20), || {
        set.stats("p").map(|s| s.active as usize) == Some(idle)
    })
    .await;
    assert!(ok, "not all connections proxied: {:?}", set.stats("p"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    println!(
        "idle connections:           {idle} use {} KiB RSS, {:.0} bytes each",
        after - before,
        (after - before) as f64 * 1024.0 / idle as f64
    );
    drop(clients);
    set.shutdown(Duration::from_secs(2)).await;
    keeper.abort();
}
