//! Shared pieces of the handler integration tests: a proxy accept loop, a small
//! HTTP origin server, a UDP echo server and a curl runner.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gateway::proxy::handler::ConnInfo;
use gateway::proxy::handler::conn::BufConn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Accept on a fresh loopback port and run `f` for each connection in its own task.
pub async fn spawn_proxy<F, Fut>(f: F) -> SocketAddr
where
    F: Fn(TcpStream, ConnInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let f = Arc::new(f);
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let local = stream.local_addr().unwrap();
            tokio::spawn(f(stream, ConnInfo { peer, local }));
        }
    });
    addr
}

/// A tiny HTTP/1.1 origin with keep-alive. Routes:
/// * `/hello` — `hello` (Content-Length)
/// * `/echo` — the request body back (Content-Length)
/// * `/echo-chunked` — the request body back, chunked in 7000-byte chunks
/// * `/big/N` — N bytes of a pattern, chunked
/// * `/close` — `bye`, no length, connection closed to end the body
/// * `/slow` — answers after 3 s
/// * `/reset` — resets the connection without answering
/// * `/conn` — the number of this connection (1-based), to see reuse
/// * `/close-after` — `ok`, then the connection is closed without notice
/// * `/upgrade` — 101, then echoes raw bytes
/// * `/reject` — with `Expect: 100-continue`: 413 before the body is sent
/// * `/refuse-upload` — 413 at once, body never read, connection held 5 s
/// * any request with `Expect: 100-continue` gets `100 Continue` first
///
/// Every response carries `X-Seen-Target`, `X-Seen-Host` and `X-Seen-Proxy-Auth`.
pub struct Origin {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

pub async fn spawn_origin(bind: &str) -> Origin {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let id = count.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let _ = origin_conn(stream, id).await;
            });
        }
    });
    Origin { addr, connections }
}

async fn origin_conn(stream: TcpStream, id: usize) -> std::io::Result<()> {
    let mut conn = BufConn::new(stream);
    loop {
        // Read a head.
        let (method, target, headers, len) = loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut hs);
            if let Ok(httparse::Status::Complete(n)) = req.parse(conn.buffered()) {
                let headers: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).to_string(),
                        )
                    })
                    .collect();
                break (
                    req.method.unwrap().to_string(),
                    req.path.unwrap().to_string(),
                    headers,
                    n,
                );
            }
            if conn.fill().await? == 0 {
                return Ok(());
            }
        };
        conn.consume(len);
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let route = target.split('?').next().unwrap_or_default().to_string();
        if get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            if route == "/reject" {
                // Refuse before the body is sent; the body never arrives here.
                conn.get_mut()
                    .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await?;
                return Ok(());
            }
            conn.get_mut()
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        if route == "/refuse-upload" {
            // Refuse an upload without reading it, and keep the connection open
            // (not reading) for a while, as a busy server would.
            conn.get_mut()
                .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            return Ok(());
        }
        let mut body = Vec::new();
        if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut raw = Vec::new();
            conn.copy_chunked(&mut raw)
                .await
                .map_err(std::io::Error::other)?;
            body = dechunk(&raw);
        } else if let Some(n) = get("content-length") {
            let n: u64 = n.trim().parse().unwrap();
            conn.copy_exact(n, &mut body)
                .await
                .map_err(std::io::Error::other)?;
        }
        if get("expect").is_some() {
            // We read the body already (curl sends it after its own wait); fine.
        }
        let seen = format!(
            "X-Seen-Target: {target}\r\nX-Seen-Host: {}\r\nX-Seen-Proxy-Auth: {}\r\nX-Seen-Method: {method}\r\n",
            get("host").unwrap_or_default(),
            if get("proxy-authorization").is_some() {
                "yes"
            } else {
                "no"
            },
        );
        let io = conn.get_mut();
        match route.as_str() {
            "/hello" => {
                io.write_all(
                    format!("HTTP/1.1 200 OK\r\n{seen}Content-Length: 5\r\n\r\nhello").as_bytes(),
                )
                .await?;
            }
            "/echo" => {
                io.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\n{seen}Content-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await?;
                io.write_all(&body).await?;
            }
            "/echo-chunked" => {
                io.write_all(
                    format!("HTTP/1.1 200 OK\r\n{seen}Transfer-Encoding: chunked\r\n\r\n")
                        .as_bytes(),
                )
                .await?;
                for c in body.chunks(7000) {
                    io.write_all(format!("{:x}\r\n", c.len()).as_bytes())
                        .await?;
                    io.write_all(c).await?;
                    io.write_all(b"\r\n").await?;
                }
                io.write_all(b"0\r\n\r\n").await?;
            }
            t if t.starts_with("/big/") => {
                let n: usize = t[5..].parse().unwrap();
                io.write_all(
                    format!("HTTP/1.1 200 OK\r\n{seen}Transfer-Encoding: chunked\r\n\r\n")
                        .as_bytes(),
                )
                .await?;
                let data = pattern(n);
                for c in data.chunks(65536) {
                    io.write_all(format!("{:x}\r\n", c.len()).as_bytes())
                        .await?;
                    io.write_all(c).await?;
                    io.write_all(b"\r\n").await?;
                }
                io.write_all(b"0\r\n\r\n").await?;
            }
            "/close" => {
                io.write_all(
                    format!("HTTP/1.1 200 OK\r\n{seen}Connection: close\r\n\r\nbye").as_bytes(),
                )
                .await?;
                return Ok(());
            }
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                io.write_all(
                    format!("HTTP/1.1 200 OK\r\n{seen}Content-Length: 4\r\n\r\nslow").as_bytes(),
                )
                .await?;
            }
            "/reset" => {
                let (stream, _) = conn.into_parts();
                // Linger 0: close sends RST instead of FIN.
                socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
                drop(stream);
                return Ok(());
            }
            "/close-after" => {
                // Answer as if keeping the connection, then drop it (an idle
                // timeout on the target's side).
                io.write_all(
                    format!("HTTP/1.1 200 OK\r\n{seen}Content-Length: 2\r\n\r\nok").as_bytes(),
                )
                .await?;
                return Ok(());
            }
            "/upgrade" => {
                io.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
                    .await?;
                let (mut stream, pending) = conn.into_parts();
                stream.write_all(&pending).await?;
                let (mut r, mut w) = stream.split();
                tokio::io::copy(&mut r, &mut w).await?;
                return Ok(());
            }
            "/conn" => {
                let b = id.to_string();
                io.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\n{seen}Content-Length: {}\r\n\r\n{b}",
                        b.len()
                    )
                    .as_bytes(),
                )
                .await?;
            }
            _ => {
                io.write_all(
                    format!("HTTP/1.1 404 Not Found\r\n{seen}Content-Length: 0\r\n\r\n").as_bytes(),
                )
                .await?;
            }
        }
        if get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
            return Ok(());
        }
    }
}

/// Deterministic test data.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let nl = i + raw[i..].iter().position(|&b| b == b'\n').unwrap();
        let line = std::str::from_utf8(&raw[i..nl]).unwrap().trim();
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
        i = nl + 1;
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[i..i + size]);
        i += size + 2;
    }
}

/// A UDP echo server; returns its address.
pub async fn spawn_udp_echo(bind: &str) -> SocketAddr {
    let sock = UdpSocket::bind(bind).await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = sock.send_to(&reply, from).await;
        }
    });
    addr
}

/// Result of one curl run.
pub struct Curl {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Curl {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).to_string()
    }
}

/// Run curl with a 15 s limit; proxies from the environment are ignored.
pub async fn curl(args: &[&str]) -> Curl {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "15"])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl runs");
    Curl {
        status: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Send raw bytes, then read until the peer closes (or 5 s pass).
pub async fn raw_exchange(addr: SocketAddr, send: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(send).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

/// A port on loopback with nothing listening (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// Wait until `cond` holds (polling), or fail after `limit`.
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
