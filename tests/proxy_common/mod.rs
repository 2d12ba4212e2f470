//! Helpers shared by the `proxy_*` integration tests: real sockets on loopback.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gateway::config::{Config, ServiceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Parse a `services:` YAML document through the real config loader.
pub fn services(yaml: &str) -> Vec<ServiceConfig> {
    match Config::from_str_named(yaml, Path::new("test.yml")) {
        Ok(c) => c.services,
        Err(e) => panic!("config: {e}"),
    }
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

/// A flag a test flips from another task.
pub fn flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}
