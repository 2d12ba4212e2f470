//! Shared pieces of the handler integration tests: a proxy accept loop, a small
//! HTTP origin server, a UDP echo server and a curl runner.
//!
//! A test builds a handler, puts it on a loopback port with [`serve`], points curl
//! (or a hand-rolled client) at that port and then checks the handler's counters,
//! usually once every connection has ended ([`settled`]).
#![allow(dead_code)] // each test binary uses a different subset

pub mod lenient;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gateway::proxy::handler::conn::{BodyIdle, BufConn};
use gateway::proxy::handler::{ConnInfo, Handler, HandlerCounts, HandlerStats, Protocol};
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
            tokio::spawn(f(stream, ConnInfo::new(peer, local)));
        }
    });
    addr
}

/// Serve `handler` (any protocol, including the run-time chosen
/// `ProxyHandler`) on a fresh loopback port and return that address with the
/// handler's counters.
pub async fn serve<P: Protocol>(handler: Handler<P>) -> (SocketAddr, Arc<HandlerStats>) {
    let stats = handler.stats().clone();
    let handler = Arc::new(handler);
    let addr = spawn_proxy(move |stream, conn| {
        let handler = handler.clone();
        async move {
            // The handler has counted the outcome; the error adds nothing here.
            let _ = handler.handle(stream, conn).await;
        }
    })
    .await;
    (addr, stats)
}

/// Wait (5 s at most) until the handler serves no connection any more, then take
/// its counters: the state a test asserts on once its clients are done.
pub async fn settled(stats: &HandlerStats) -> HandlerCounts {
    wait_for(Duration::from_secs(5), || stats.snapshot().active == 0).await;
    stats.snapshot()
}

/// The handlers' bookkeeping promise: every connection ends in exactly one
/// outcome counter.
pub fn counts_add_up(s: &HandlerCounts) -> bool {
    s.connections
        == s.completed
            + s.bad_request
            + s.auth_failed
            + s.handshake_timeout
            + s.target_failed
            + s.upstream_error
            + s.unsupported
            + s.client_error
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

impl Origin {
    /// `http://ADDR{path}`: the origin by address.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://localhost:PORT{path}`: the origin by name, for proxies that resolve.
    pub fn url_by_name(&self, path: &str) -> String {
        format!("http://localhost:{}{path}", self.addr.port())
    }
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
            conn.copy_chunked(&mut raw, &mut BodyIdle::none())
                .await
                .map_err(std::io::Error::other)?;
            body = dechunk(&raw);
        } else if let Some(n) = get("content-length") {
            let n: u64 = n.trim().parse().unwrap();
            conn.copy_exact(n, &mut body, &mut BodyIdle::none())
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
            "/hello" => write_ok(io, &seen, b"hello").await?,
            "/echo" => write_ok(io, &seen, &body).await?,
            "/echo-chunked" => write_chunked(io, &seen, &body, 7000).await?,
            t if t.starts_with("/big/") => {
                let n: usize = t[5..].parse().unwrap();
                write_chunked(io, &seen, &pattern(n), 65536).await?;
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
                write_ok(io, &seen, b"slow").await?;
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
                write_ok(io, &seen, b"ok").await?;
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
            "/conn" => write_ok(io, &seen, id.to_string().as_bytes()).await?,
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

/// A 200 response (with the `X-Seen-*` headers in `seen`) carrying `body` with a
/// `Content-Length`, in one write.
async fn write_ok(io: &mut TcpStream, seen: &str, body: &[u8]) -> std::io::Result<()> {
    let mut msg = format!(
        "HTTP/1.1 200 OK\r\n{seen}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    msg.extend_from_slice(body);
    io.write_all(&msg).await
}

/// A 200 response (with the `X-Seen-*` headers in `seen`) whose `body` goes out in
/// chunks of `size` bytes.
async fn write_chunked(
    io: &mut TcpStream,
    seen: &str,
    body: &[u8],
    size: usize,
) -> std::io::Result<()> {
    io.write_all(format!("HTTP/1.1 200 OK\r\n{seen}Transfer-Encoding: chunked\r\n\r\n").as_bytes())
        .await?;
    for c in body.chunks(size) {
        io.write_all(format!("{:x}\r\n", c.len()).as_bytes())
            .await?;
        io.write_all(c).await?;
        io.write_all(b"\r\n").await?;
    }
    io.write_all(b"0\r\n\r\n").await
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

    /// Assert that curl succeeded and printed exactly `want`. The bodies are
    /// large, so a mismatch reports the length only; `what` names the case.
    pub fn assert_body(&self, want: &[u8], what: &str) {
        assert_eq!(self.status, Some(0), "{what}: {}", self.stderr);
        assert!(
            self.stdout == want,
            "{what} differs ({} bytes)",
            self.stdout.len()
        );
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

/// Run curl and assert that it printed `want` (curl's stderr shows on failure).
pub async fn curl_expect(args: &[&str], want: &str) {
    let r = curl(args).await;
    assert_eq!(r.text(), want, "curl {args:?}: {}", r.stderr);
}

/// Run curl with the body discarded and only the HTTP status code printed
/// (`-o /dev/null -w %{http_code}`): `text()` is the code, or `000` when curl got
/// no answer.
pub async fn curl_code(args: &[&str]) -> Curl {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    curl(&all).await
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

/// A TLS server on a loopback port built from `cfg`: after each handshake it writes
/// what `greeting` makes of the connection (e.g. the suite negotiated), then closes.
pub async fn tls_greeting_server(
    cfg: &gateway::config::tls::TlsConfig,
    greeting: fn(&rustls::ServerConnection) -> Vec<u8>,
) -> SocketAddr {
    let acceptor = gateway::proxy::tls::acceptor(cfg).expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let hello = greeting(tls.get_ref().1);
                    let _ = tls.write_all(&hello).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}
