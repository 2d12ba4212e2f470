//! The `relay` connector: GOST's relay protocol, client side (the wire format
//! is [`crate::proxy::relay_proto`]). One CONNECT request per connection,
//! with the user auth feature when the node has `auth`, and the target in the
//! address feature.
//!
//! When is the node's answer read? GOST's relay server, in its default mode,
//! sends its OK status together with the target's first bytes, so a client
//! that waits for it before sending anything waits for ever when the target
//! waits for the client (HTTP, TLS). Hence GOST's connector option `nodelay`:
//!
//! * `nodelay: false` (GOST's default): the request is sent at once and the
//!   connection handed on; the status is read in front of the target's first
//!   bytes. A refusal (wrong credentials, unreachable target) then shows as an
//!   error on that first read: the client's connection is closed, and the node
//!   is not counted as failed.
//! * `nodelay: true`: the request is sent and the status awaited (within
//!   `connectTimeout`), so a refusal is known before the client is answered
//!   (HTTP 502, a SOCKS error reply) and counts toward the node's health. Right
//!   with this project's relay handler and with GOST servers running with
//!   `nodelay: true`, which both answer at once.
//!
//! (Unlike GOST's, the request is written at once in both modes rather than
//! with the client's first bytes: same bytes on the wire, and a target that
//! speaks first, such as SSH or SMTP, works with this project's handler.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{ConnectError, Target};
use crate::config::auth::AuthConfig;
use crate::config::chain::ConnectorConfig;
use crate::proxy::chain::stream::{Outbound, Prefixed};
use crate::proxy::relay_proto::{self as wire, Addr, Request, Response, status};

#[derive(Debug)]
pub struct RelayConnector {
    /// Sent as the user auth feature; the password is masked in `Debug`.
    auth: Option<AuthConfig>,
    nodelay: bool,
}

impl RelayConnector {
    pub fn new(cfg: &ConnectorConfig) -> Self {
        Self {
            auth: cfg.auth.clone(),
            nodelay: cfg.metadata.nodelay(),
        }
    }

    pub async fn connect(
        &self,
        mut stream: Outbound,
        target: Target<'_>,
    ) -> Result<Outbound, ConnectError> {
        let target = &target.to_string();
        let refused = |e: wire::WireError| {
            ConnectError::refused(io::ErrorKind::InvalidInput, format!("{target}: {e}"))
        };
        let addr = Addr::from_target(target).map_err(refused)?;
        // Lengths were checked at load (at most 255 bytes each).
        let req = Request::connect(addr, false, self.auth.clone())
            .encode()
            .map_err(refused)?;
        stream.write_all(&req).await?;
        if !self.nodelay {
            return Ok(Outbound::Stream(Box::new(Deferred::new(stream, target))));
        }
        let (resp, rest) = read_response(&mut stream).await?;
        if let Some(e) = refusal(resp.status, target) {
            return Err(e);
        }
        if rest.is_empty() {
            Ok(stream)
        } else {
            Ok(Outbound::Stream(Box::new(Prefixed::new(rest, stream))))
        }
    }
}

/// Read one response frame; what follows it in the last read is returned too
/// (the target's first bytes).
async fn read_response(stream: &mut Outbound) -> Result<(Response, Vec<u8>), ConnectError> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 512];
    loop {
        match parse(&buf) {
            Ok(Some((resp, used))) => return Ok((resp, buf.split_off(used))),
            Ok(None) => {}
            Err(e) => return Err(ConnectError::Node(e)),
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(ConnectError::node(
                io::ErrorKind::UnexpectedEof,
                "the relay closed the connection before answering",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A complete response at the start of `buf` and its length; `None` if more
/// bytes are needed.
fn parse(buf: &[u8]) -> io::Result<Option<(Response, usize)>> {
    let Some(head) = buf.get(..wire::HEAD_LEN) else {
        return Ok(None);
    };
    let head = [head[0], head[1], head[2], head[3]];
    let bad = |e: wire::WireError| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the relay's answer is malformed: {e}"),
        )
    };
    let len = wire::frame_len(head).map_err(bad)?;
    if buf.len() < len {
        return Ok(None);
    }
    Response::decode(&buf[..len])
        .map(|r| Some((r, len)))
        .map_err(bad)
}

/// What a status other than OK means, and whose fault it is.
fn refusal(code: u8, target: &str) -> Option<ConnectError> {
    use io::ErrorKind as K;
    let what = status::name(code);
    let (node_fault, kind) = match code {
        status::OK => return None,
        status::UNAUTHORIZED => (true, K::PermissionDenied),
        status::BAD_REQUEST => (true, K::InvalidData),
        status::INTERNAL_SERVER_ERROR => (true, K::Other),
        status::FORBIDDEN => (false, K::PermissionDenied),
        status::TIMEOUT => (false, K::TimedOut),
        status::SERVICE_UNAVAILABLE => (false, K::ConnectionRefused),
        status::HOST_UNREACHABLE => (false, K::HostUnreachable),
        status::NETWORK_UNREACHABLE => (false, K::NetworkUnreachable),
        _ => (true, K::InvalidData),
    };
    Some(if node_fault {
        let msg = if code == status::UNAUTHORIZED {
            "the relay refused the credentials (status 2, unauthorized)".to_string()
        } else {
            format!("the relay answered status {code} ({what})")
        };
        ConnectError::node(kind, msg)
    } else {
        ConnectError::refused(
            kind,
            format!("the relay could not connect to {target}: status {code} ({what})"),
        )
    })
}

/// `nodelay: false`: a stream whose first read first takes the relay's status
/// off the front. A refusal becomes the read's error (and every later one's).
struct Deferred {
    inner: Outbound,
    target: String,
    /// Bytes of the answer gathered so far; `None` once it has been read.
    pending: Option<Vec<u8>>,
    /// Bytes that came behind the answer: the target's, given out first.
    rest: Vec<u8>,
    pos: usize,
    failed: Option<(io::ErrorKind, String)>,
}

impl Deferred {
    fn new(inner: Outbound, target: &str) -> Self {
        Self {
            inner,
            target: target.to_string(),
            pending: Some(Vec::new()),
            rest: Vec::new(),
            pos: 0,
            failed: None,
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failed = Some((e.kind(), e.to_string()));
        e
    }
}

impl AsyncRead for Deferred {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some((kind, msg)) = &this.failed {
                return Poll::Ready(Err(io::Error::new(*kind, msg.clone())));
            }
            let Some(acc) = &mut this.pending else {
                break;
            };
            match parse(acc) {
                Ok(Some((resp, used))) => {
                    this.rest = acc.split_off(used);
                    this.pending = None;
                    if let Some(e) = refusal(resp.status, &this.target) {
                        let e = match e {
                            ConnectError::Node(e) | ConnectError::Refused(e) => e,
                        };
                        return Poll::Ready(Err(this.fail(e)));
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(this.fail(e))),
            }
            let mut chunk = [0u8; 512];
            let mut rb = ReadBuf::new(&mut chunk);
            if let Err(e) = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb)) {
                return Poll::Ready(Err(e));
            }
            if rb.filled().is_empty() {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the relay closed the connection before answering",
                );
                return Poll::Ready(Err(this.fail(e)));
            }
            acc.extend_from_slice(rb.filled());
        }
        if this.pos < this.rest.len() {
            let n = (this.rest.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.rest[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.rest.len() {
                this.rest = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Deferred {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(nodelay: bool) -> ConnectorConfig {
        let y = format!(
            "{{type: relay, auth: {{username: u, password: p}}, metadata: {{nodelay: {nodelay}}}}}"
        );
        crate::config::from_yaml(&y).unwrap()
    }

    /// A fake relay server on a socket pair: reads the request, answers
    /// `answer`, then sends `after`.
    async fn serve(
        answer: Vec<u8>,
        after: &'static [u8],
    ) -> (Outbound, tokio::task::JoinHandle<Vec<u8>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = [0u8; 4];
            s.read_exact(&mut head).await.unwrap();
            let mut body = vec![0u8; wire::frame_len(head).unwrap() - 4];
            s.read_exact(&mut body).await.unwrap();
            s.write_all(&answer).await.unwrap();
            s.write_all(after).await.unwrap();
            let mut req = head.to_vec();
            req.extend_from_slice(&body);
            req
        });
        let c = tokio::net::TcpStream::connect(addr).await.unwrap();
        (Outbound::Tcp(c), server)
    }

    #[test]
    fn options_are_checked_at_load() {
        let c: ConnectorConfig = crate::config::from_yaml(
            "{type: relay, metadata: {nodelay: true, connectTimeout: 3s}}",
        )
        .unwrap();
        c.validate("n").unwrap();
        assert!(c.metadata.nodelay());
        let c: ConnectorConfig =
            crate::config::from_yaml("{type: socks5, metadata: {nodelay: true}}").unwrap();
        assert_eq!(c.validate("n").unwrap_err().field, "n.metadata.nodelay");
        let long = "x".repeat(256);
        let c: ConnectorConfig = crate::config::from_yaml(&format!(
            "{{type: relay, auth: {{username: {long}, password: p}}}}"
        ))
        .unwrap();
        assert_eq!(c.validate("n").unwrap_err().field, "n.auth");
        // GOST's default: the status is read later.
        assert!(!RelayConnector::new(&crate::config::from_yaml("{type: relay}").unwrap()).nodelay);
    }

    #[tokio::test]
    async fn nodelay_reads_the_status_first() {
        let (s, server) = serve(wire::status_frame(0).to_vec(), b"hello").await;
        let mut out = RelayConnector::new(&cfg(true))
            .connect(s, Target::parse("example.com:80").unwrap())
            .await
            .unwrap();
        let req = Request::decode(&server.await.unwrap()).unwrap();
        assert_eq!(req.features.auth.unwrap().password.expose(), "p");
        assert_eq!(
            req.features.addr,
            Some(Addr::Domain("example.com".into(), 80))
        );
        let mut got = [0u8; 5];
        out.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }

    #[tokio::test]
    async fn refusals_say_whose_fault() {
        let (s, _server) = serve(wire::status_frame(status::UNAUTHORIZED).to_vec(), b"").await;
        let e = RelayConnector::new(&cfg(true))
            .connect(s, Target::parse("a:1").unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(e, ConnectError::Node(ref e) if e.kind() == io::ErrorKind::PermissionDenied),
            "{e:?}"
        );
        let (s, _server) = serve(wire::status_frame(status::HOST_UNREACHABLE).to_vec(), b"").await;
        let e = RelayConnector::new(&cfg(true))
            .connect(s, Target::parse("a:1").unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(e, ConnectError::Refused(ref e) if e.kind() == io::ErrorKind::HostUnreachable),
            "{e:?}"
        );
        // Garbage instead of a status: the node's fault.
        let (s, _server) = serve(b"HTTP/1.1 400 Bad\r\n\r\n".to_vec(), b"").await;
        let e = RelayConnector::new(&cfg(true))
            .connect(s, Target::parse("a:1").unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(e, ConnectError::Node(ref e) if e.kind() == io::ErrorKind::InvalidData),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn deferred_takes_the_status_off_the_first_read() {
        // The answer and the target's bytes in one segment, as GOST sends them.
        let mut both = wire::status_frame(0).to_vec();
        both.extend_from_slice(b"hi");
        let (s, _server) = serve(both, b" there").await;
        let mut out = RelayConnector::new(&cfg(false))
            .connect(s, Target::parse("a:1").unwrap())
            .await
            .unwrap();
        let mut got = Vec::new();
        out.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hi there");
        // A refusal is the first read's error.
        let (s, _server) = serve(wire::status_frame(status::UNAUTHORIZED).to_vec(), b"").await;
        let mut out = RelayConnector::new(&cfg(false))
            .connect(s, Target::parse("a:1").unwrap())
            .await
            .unwrap();
        let e = out.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(out.read(&mut [0u8; 8]).await.is_err(), "the error stays");
    }
}
