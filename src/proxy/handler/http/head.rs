//! Request and response heads: read from a `BufConn` buffer and parsed with
//! `httparse`, at most [`MAX_HEAD`] bytes and `MAX_HEADERS` fields; the
//! headers are owned because the buffer moves on while they are used.

use tokio::io::AsyncRead;

use super::super::conn::BufConn;

/// Largest request or response head we accept.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one head; more is answered like an oversized head.
pub(super) const MAX_HEADERS: usize = 128;

/// A parsed request head (owned: the read buffer moves on while we use it).
#[derive(Debug)]
pub(super) struct RequestHead {
    pub(super) method: String,
    pub(super) target: String,
    /// Minor version: 0 or 1.
    pub(super) version: u8,
    pub(super) headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug)]
pub(super) struct ResponseHead {
    pub(super) code: u16,
    pub(super) reason: String,
    pub(super) version: u8,
    pub(super) headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug)]
pub(super) enum HeadError {
    Invalid(String),
    TooLarge,
    Io(std::io::Error),
    /// Stream ended partway through a head.
    Truncated,
}

/// A head parser: `Ok(None)` while incomplete, else the head and its length.
pub(super) type HeadParser<T> = fn(&[u8]) -> Result<Option<(T, usize)>, HeadError>;

/// Read and parse one head. `Ok(None)`: the stream ended cleanly before any byte
/// of a head. Cancel safe (see [`BufConn::fill`]), so it can run under a timeout.
pub(super) async fn read_head<S, T>(
    conn: &mut BufConn<S>,
    parse: HeadParser<T>,
) -> Result<Option<T>, HeadError>
where
    S: AsyncRead + Unpin,
{
    loop {
        // RFC 9112 §2.2: ignore empty lines before a request line.
        let blank = conn
            .buffered()
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        conn.consume(blank);
        if !conn.buffered().is_empty() {
            match parse(conn.buffered()) {
                Ok(Some((head, len))) => {
                    conn.consume(len);
                    return Ok(Some(head));
                }
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            if conn.buffered().len() >= MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
        }
        match conn.fill().await {
            Ok(0) if conn.buffered().is_empty() => return Ok(None),
            Ok(0) => return Err(HeadError::Truncated),
            Ok(_) => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

pub(super) fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

pub(super) fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
            else {
                return Err(HeadError::Invalid("incomplete request line".into()));
            };
            Ok(Some((
                RequestHead {
                    method: method.to_string(),
                    target: target.to_string(),
                    version,
                    headers: owned_headers(req.headers),
                },
                len,
            )))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Invalid(format!("request head: {e}"))),
    }
}

pub(super) fn parse_response(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (Some(code), Some(version)) = (resp.code, resp.version) else {
                return Err(HeadError::Invalid("incomplete status line".into()));
            };
            Ok(Some((
                ResponseHead {
                    code,
                    reason: resp.reason.unwrap_or("").to_string(),
                    version,
                    headers: owned_headers(resp.headers),
                },
                len,
            )))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Invalid(format!("response head: {e}"))),
    }
}
