//! A logging origin that parses the way real origin servers do: leniently. It is
//! the victim in the smuggling tests. If the proxy lets an ambiguous message
//! through, this server finds two requests where the proxy saw one, and its log
//! shows it.
//!
//! Lenient, on purpose:
//! * a `Transfer-Encoding` containing `chunked` anywhere wins over everything;
//! * otherwise the first `Content-Length` counts, read as its leading digits;
//! * chunk sizes are the leading hex digits of a line, lines end at LF.
//!
//! Routes (the path of each request):
//! * `/resp/NAME` — send the bytes registered under NAME with
//!   [`Lenient::respond`], then close;
//! * `/stall-body` — announce 100 bytes, send 10, then hold the connection;
//! * `/big` — a 64 MB `Content-Length` body (more than socket buffers hold);
//! * `/no-read` — never read the request body, hold the connection;
//! * anything else — `200`, `Content-Length`, body `seen PATH`.
//!
//! Each complete request is logged; when a connection ends, all the bytes it
//! received are kept too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request the lenient origin parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub body: Vec<u8>,
}

#[derive(Clone)]
pub struct Lenient {
    pub addr: SocketAddr,
    /// Every complete request, in arrival order.
    pub log: Arc<Mutex<Vec<Seen>>>,
    /// The raw bytes of every connection that ended.
    pub raw: Arc<Mutex<Vec<Vec<u8>>>>,
    pub accepted: Arc<AtomicUsize>,
    responses: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl Lenient {
    pub async fn spawn() -> Lenient {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = Lenient {
            addr: listener.local_addr().unwrap(),
            log: Arc::default(),
            raw: Arc::default(),
            accepted: Arc::default(),
            responses: Arc::default(),
        };
        let m = me.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                m.accepted.fetch_add(1, Ordering::SeqCst);
                let m = m.clone();
                tokio::spawn(async move {
                    let mut c = Conn {
                        s,
                        buf: Vec::new(),
                        pos: 0,
                    };
                    let _ = m.serve(&mut c).await;
                    m.raw.lock().unwrap().push(c.buf);
                });
            }
        });
        me
    }

    /// Register the raw response sent for `/resp/NAME`.
    pub fn respond(&self, name: &str, bytes: &[u8]) {
        self.responses
            .lock()
            .unwrap()
            .insert(name.to_string(), bytes.to_vec());
    }

    pub fn targets(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.target.clone())
            .collect()
    }

    /// Wait until every accepted connection has ended (5 s at most), then take
    /// the raw bytes of all of them.
    pub async fn ended(&self) -> Vec<Vec<u8>> {
        super::wait_for(Duration::from_secs(5), || {
            self.raw.lock().unwrap().len() == self.accepted.load(Ordering::SeqCst)
        })
        .await;
        self.raw.lock().unwrap().clone()
    }

    async fn serve(&self, c: &mut Conn) -> std::io::Result<()> {
        loop {
            let Some((method, target, headers)) = c.head().await? else {
                return Ok(());
            };
            if target == "/no-read" {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return Ok(());
            }
            let get = |n: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.clone())
            };
            let chunked = headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
            });
            let body = if chunked {
                c.dechunk().await?
            } else if let Some(cl) = get("content-length") {
                let digits: String = cl.trim().chars().take_while(char::is_ascii_digit).collect();
                c.take(digits.parse().unwrap_or(0)).await?
            } else {
                Vec::new()
            };
            self.log.lock().unwrap().push(Seen {
                method,
                target: target.clone(),
                body,
            });
            if let Some(name) = target.strip_prefix("/resp/") {
                let bytes = self.responses.lock().unwrap().get(name).cloned();
                c.s.write_all(&bytes.unwrap_or_default()).await?;
                return Ok(());
            }
            match target.as_str() {
                "/stall-body" => {
                    c.s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                        .await?;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return Ok(());
                }
                "/big" => {
                    let n = 64 * 1024 * 1024;
                    c.s.write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").as_bytes(),
                    )
                    .await?;
                    c.s.write_all(&vec![b'x'; n]).await?;
                }
                _ => {
                    let body = format!("seen {target}");
                    c.s.write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await?;
                }
            }
        }
    }
}

/// A connection with everything it received kept in `buf` (`pos` is how far
/// it has been parsed).
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Conn {
    async fn more(&mut self) -> std::io::Result<bool> {
        let mut b = [0u8; 16384];
        let n = self.s.read(&mut b).await?;
        self.buf.extend_from_slice(&b[..n]);
        Ok(n > 0)
    }

    /// A head, parsed by httparse (which accepts bare LF line ends).
    #[allow(clippy::type_complexity)]
    async fn head(&mut self) -> std::io::Result<Option<(String, String, Vec<(String, String)>)>> {
        loop {
            let mut hs = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut hs);
            match req.parse(&self.buf[self.pos..]) {
                Ok(httparse::Status::Complete(n)) => {
                    let headers = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).to_string(),
                            )
                        })
                        .collect();
                    let out = (
                        req.method.unwrap_or_default().to_string(),
                        req.path.unwrap_or_default().to_string(),
                        headers,
                    );
                    self.pos += n;
                    return Ok(Some(out));
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => {
                    // Garbage: read on until the peer is done, then stop.
                    while self.more().await? {}
                    return Ok(None);
                }
            }
            if !self.more().await? {
                return Ok(None);
            }
        }
    }

    async fn take(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            if !self.more().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    async fn line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let out = self.buf[self.pos..self.pos + i + 1].to_vec();
                self.pos += i + 1;
                return Ok(out);
            }
            if !self.more().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    async fn dechunk(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let hex: String = line
                .iter()
                .map(|&b| b as char)
                .skip_while(|c| *c == ' ')
                .take_while(char::is_ascii_hexdigit)
                .collect();
            let size = usize::from_str_radix(&hex, 16).unwrap_or(0);
            if size == 0 {
                // Trailers, leniently: up to a line that is empty but for CR.
                loop {
                    let t = self.line().await?;
                    if t.iter().all(|&b| b == b'\r' || b == b'\n') {
                        return Ok(body);
                    }
                }
            }
            body.extend(self.take(size).await?);
            self.line().await?;
        }
    }
}
