//! Helpers shared by the `proxy_*` integration tests: real sockets on loopback.
//!
//! A test writes its services as YAML (often with [`tcp_service`]), starts them
//! with [`start`], talks to them with real clients and backends ([`Backend`],
//! [`tcp_server`]) and checks the service counters ([`wait_stats`]).
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gateway::config::{Config, ServiceConfig};
use gateway::proxy::ServiceSet;
use gateway::proxy::stats::ServiceCounts;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Parse a `services:` YAML document through the real config loader.
pub fn services(yaml: &str) -> Vec<ServiceConfig> {
    match Config::from_str_named(yaml, Path::new("test.yml")) {
        Ok(c) => c.services,
        Err(e) => panic!("config: {e}"),
    }
}

/// Start the services of a `services:` YAML document.
pub fn start(yaml: &str) -> ServiceSet {
    ServiceSet::start(&services(yaml)).unwrap_or_else(|e| panic!("services do not start: {e}"))
}

/// One TCP forwarding service as an item of a `services:` list: it listens on
/// `addr` and forwards to `nodes`, a YAML flow list (see [`nodes_yaml`]). `extra`
/// is appended as it is: lines indented by four spaces belong to the forwarder
/// (`selector`, `healthcheck`, `discovery`), lines indented by two to the service.
pub fn tcp_service(name: &str, addr: &str, nodes: &str, extra: &str) -> String {
    format!(
        "- name: {name}\n  addr: \"{addr}\"\n  handler: {{type: tcp}}\n  listener: {{type: tcp}}\n  forwarder:\n    nodes: {nodes}\n{extra}"
    )
}

/// A `services:` document holding one [`tcp_service`] on a free loopback port.
pub fn tcp_services(name: &str, nodes: &str, extra: &str) -> String {
    format!(
        "services:\n{}",
        tcp_service(name, "127.0.0.1:0", nodes, extra)
    )
}

/// A node list of bare addresses, as a YAML flow list.
pub fn addrs_yaml(addrs: &[SocketAddr]) -> String {
    let items: Vec<String> = addrs.iter().map(|a| format!("{{addr: \"{a}\"}}")).collect();
    format!("[{}]", items.join(", "))
}

/// Wait (polling) up to `limit` until the counters of service `name` satisfy
/// `cond`; false if they never did.
pub async fn wait_stats(
    set: &ServiceSet,
    name: &str,
    limit: Duration,
    cond: impl Fn(&ServiceCounts) -> bool,
) -> bool {
    wait_for(limit, || set.stats(name).is_some_and(|s| cond(&s))).await
}

/// A TCP server on a fresh loopback port that runs `serve` on each accepted
/// connection in a task of its own, for as long as the test runs.
pub async fn tcp_server<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// Read and discard until the peer closes or the connection fails. The buffer is
/// large so that a sink never limits what a benchmark measures.
pub async fn drain<S: AsyncRead + Unpin>(s: &mut S) {
    let mut buf = vec![0u8; 256 * 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Read until the peer closes, giving up after `limit`; the read is expected to
/// end within it (a panic otherwise), how it ended (EOF or error) does not matter.
pub async fn read_to_close<S: AsyncRead + Unpin>(s: &mut S, limit: Duration) {
    let mut sink = Vec::new();
    let r = tokio::time::timeout(limit, s.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "connection not closed within {limit:?}");
}

/// Read one line (without the `\n`), byte by byte so nothing after it is taken
/// from the stream; at EOF, what came until then.
pub async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read_exact(&mut b).await.is_ok() && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// Connect through the proxy and read the backend's greeting line; the stream
/// stays open (it counts as an active connection) and the name is returned.
pub async fn connect_greeted(proxy: SocketAddr) -> (TcpStream, String) {
    let mut s = connect_from(proxy, None).await;
    let name = read_line(&mut s).await;
    (s, name)
}

/// A TCP backend that greets each connection with `name\n`, then echoes. It
/// counts connections; `stop()` closes the listener (connections refused).
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub conns: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(name: &str, addr: SocketAddr) -> Backend {
        let l = TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        let greeting = format!("{name}\n");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let g = greeting.clone();
                tokio::spawn(async move {
                    if s.write_all(g.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; 65536];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
        Backend {
            addr,
            name: name.to_string(),
            conns,
            task,
        }
    }

    /// One backend per name, started in order.
    pub async fn start_all<const N: usize>(names: [&str; N]) -> [Backend; N] {
        let mut all = Vec::with_capacity(N);
        for name in names {
            all.push(Backend::start(name).await);
        }
        match all.try_into() {
            Ok(all) => all,
            Err(_) => unreachable!("one backend per name"),
        }
    }

    /// Close the listening socket: new connections are refused.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connect through the proxy (optionally from a chosen loopback source) and read
/// the greeting line: the name of the backend that served us. `None` if the
/// proxy closed without a greeting.
pub async fn which(proxy: SocketAddr, from: Option<&str>) -> Option<String> {
    let mut s = connect_from(proxy, from).await;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await {
            Ok(Ok(1)) if b[0] == b'\n' => break,
            Ok(Ok(1)) => line.push(b[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

pub async fn connect_from(proxy: SocketAddr, from: Option<&str>) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    }
    sock.connect(proxy).await.unwrap()
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Poll `cond` every 20 ms for up to `limit`.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// A `forwarder` YAML snippet for these backends.
pub fn nodes_yaml(backends: &[&Backend]) -> String {
    let items: Vec<String> = backends
        .iter()
        .map(|b| format!("{{name: {}, addr: \"{}\"}}", b.name, b.addr))
        .collect();
    format!("[{}]", items.join(", "))
}

/// A file `name` holding `contents` in a fresh temporary directory, which is
/// removed when the returned guard drops.
pub fn temp_file(name: &str, contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

/// A flag a test flips from another task.
pub fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}
