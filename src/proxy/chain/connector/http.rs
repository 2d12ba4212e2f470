//! The `http` connector: `CONNECT host:port` (RFC 9110 §9.3.6), with
//! `Proxy-Authorization: Basic` when the node has `auth`.

use std::fmt::Write as _;
use std::io;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ConnectError, Target};
use crate::config::chain::ConnectorConfig;
use crate::proxy::chain::stream::{Outbound, Prefixed};

/// The longest response head accepted from a node.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug)]
pub struct HttpConnector {
    /// Header lines sent with every CONNECT (credentials, `metadata.header`),
    /// each ending in CRLF. Holds the password: never logged.
    extra: String,
}

impl HttpConnector {
    pub fn new(cfg: &ConnectorConfig) -> Self {
        let mut extra = String::new();
        if let Some(a) = &cfg.auth {
            let raw = format!("{}:{}", a.username, a.password.expose());
            let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
            let _ = write!(extra, "Proxy-Authorization: Basic {b64}\r\n");
        }
        for (k, v) in cfg.metadata.header.iter().flatten() {
            // Checked at load: tokens and values without CR/LF.
            let _ = write!(extra, "{k}: {v}\r\n");
        }
        Self { extra }
    }

    pub async fn connect(
        &self,
        mut stream: Outbound,
        target: Target<'_>,
    ) -> Result<Outbound, ConnectError> {
        let Target { host, port, .. } = target;
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let req = format!(
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{}Proxy-Connection: keep-alive\r\n\r\n",
            self.extra
        );
        stream.write_all(req.as_bytes()).await?;
        // Read until the end of the head; what follows it is the target's.
        let mut buf = Vec::with_capacity(512);
        let end = loop {
            if let Some(i) = find_head_end(&buf) {
                break i;
            }
            if buf.len() >= MAX_HEAD {
                return Err(ConnectError::node(
                    io::ErrorKind::InvalidData,
                    format!("response head to CONNECT longer than {MAX_HEAD} bytes"),
                ));
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ConnectError::node(
                    io::ErrorKind::UnexpectedEof,
                    "the proxy closed the connection before answering CONNECT",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let status = parse_status(&buf[..end]).ok_or_else(|| {
            ConnectError::node(
                io::ErrorKind::InvalidData,
                "the answer to CONNECT is not an HTTP response",
            )
        })?;
        match status {
            200..=299 => {}
            407 => {
                return Err(ConnectError::node(
                    io::ErrorKind::PermissionDenied,
                    "the proxy refused the credentials (407)",
                ));
            }
            504 => {
                return Err(ConnectError::refused(
                    io::ErrorKind::TimedOut,
                    format!("the proxy timed out connecting to {target} (504)"),
                ));
            }
            s => {
                return Err(ConnectError::refused(
                    io::ErrorKind::ConnectionRefused,
                    format!("the proxy could not connect to {target} ({s})"),
                ));
            }
        }
        let rest = buf.split_off(end);
        if rest.is_empty() {
            Ok(stream)
        } else {
            Ok(Outbound::Stream(Box::new(Prefixed::new(rest, stream))))
        }
    }
}

/// The index just past `\r\n\r\n` (or a bare `\n\n`).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some(i + 4);
    }
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// The status code of `HTTP/1.x NNN ...`.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 Connection established\r\n"),
            Some(200)
        );
        assert_eq!(
            parse_status(b"HTTP/1.0 407 Proxy Authentication Required\r\n"),
            Some(407)
        );
        assert_eq!(parse_status(b"SSH-2.0-x\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2000 x\r\n"), None);
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\r\n\r\nhello"), Some(19));
    }
}
