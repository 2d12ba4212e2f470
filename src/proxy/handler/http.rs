//! The `http` handler: an HTTP/1.x forward proxy.
//!
//! ```yaml
//! handler:
//!   type: http
//!   auth: {username: user, password: pass}   # optional: Basic proxy auth
//!   metadata:
//!     header: {X-Proxy: gateway}              # added to responses the proxy makes
//!     readTimeout: 15s                        # client must send a request head by then
//!     responseTimeout: 60s                    # target must answer with a head by then
//! ```
//!
//! Two kinds of request arrive at a forward proxy:
//!
//! * `CONNECT host:port` — open a TCP tunnel. We answer `200 Connection
//!   established` once the target accepted, then relay bytes blindly (this is how
//!   HTTPS goes through a proxy).
//! * `GET http://host:port/path HTTP/1.1` (absolute URI) — forward the request. We
//!   connect to the host, rewrite the request line to origin form (`GET /path`),
//!   drop hop-by-hop headers, and stream the body in the framing the client chose.
//!   The response comes back the same way.
//!
//! # Streaming, not buffering
//!
//! Only heads are parsed (with `httparse`, at most [`MAX_HEAD`] bytes). Bodies are
//! copied as they arrive: a `Content-Length` body byte-counted, a chunked body passed
//! through verbatim while [`BufConn::copy_chunked`] follows its framing to find the
//! end, a response without either read until the target closes. Memory per
//! connection stays at one read buffer no matter how large the transfer.
//!
//! While a request body is being sent, the target's side is watched too: a target
//! that refuses an upload (`413`, `401`) usually answers at once and stops reading.
//! Its answer is passed to the client, and the rest of the body is not sent (both
//! connections close afterwards, since the client's stream is mid-body).
//! `Expect: 100-continue` is honoured: the target gets a second to say `100` or
//! refuse before the body starts.
//!
//! # Keep-alive
//!
//! The client connection stays open across requests when both the client wants it
//! and the response has a known end. The target connection is kept as well and
//! reused while the client keeps asking the same `host:port`. A reused target
//! connection may have been closed by the target meanwhile; when that shows as a
//! response-less EOF or reset on a request without body, the request is sent again
//! on a fresh connection (that is what browsers do, and the request was never seen).
//! A `101 Switching Protocols` answer to an `Upgrade` request turns the connection
//! into a raw relay (WebSocket through the proxy).
//!
//! # Errors the client sees
//!
//! | situation | reply |
//! |---|---|
//! | unparseable head, bad URI, conflicting framing | `400 Bad Request` |
//! | head larger than 64 KiB or with more than 128 fields | `431 Request Header Fields Too Large` |
//! | auth configured and missing/wrong | `407` with `Proxy-Authenticate: Basic` |
//! | target refused / unreachable / bad response | `502 Bad Gateway` |
//! | connect or response head timed out | `504 Gateway Timeout` |
//! | a non-`http:` absolute URI | `501 Not Implemented` |
//!
//! After an error reply the connection is closed: its remaining bytes (an unread
//! body) cannot be trusted to be a request boundary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::conn::{BufConn, CopyError};
use super::{
    ConnInfo, Context, FromOptions, Handler, HandlerError, HandlerOptions, HandlerStats, Io,
    Metadata, Outcome, Protocol, credentials_match, default_read_timeout, deserialize_go_duration,
    validate_timeout,
};
use crate::config::FieldError;
use crate::config::auth::AuthConfig;

/// Largest request or response head we accept.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one head; more is answered like an oversized head.
const MAX_HEADERS: usize = 128;

/// The `handler:` section of an `http` service, minus `type`.
pub type HttpHandlerOptions = HandlerOptions<HttpMetadata>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMetadata {
    /// GOST's `header`: extra headers on the responses the proxy itself generates
    /// (`200 Connection established`, error replies).
    #[serde(default)]
    pub header: BTreeMap<String, String>,
    /// How long a client may take to send a complete request head (also the idle
    /// limit between keep-alive requests).
    #[serde(
        rename = "readTimeout",
        default = "default_read_timeout",
        deserialize_with = "deserialize_go_duration"
    )]
    pub read_timeout: Duration,
    /// How long the target may take to send its response head (504 after that).
    #[serde(
        rename = "responseTimeout",
        default = "default_response_timeout",
        deserialize_with = "deserialize_go_duration"
    )]
    pub response_timeout: Duration,
}

impl Metadata for HttpMetadata {
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        validate_headers(&self.header, field)?;
        validate_timeout(self.read_timeout, format!("{field}.metadata.readTimeout"))?;
        validate_timeout(
            self.response_timeout,
            format!("{field}.metadata.responseTimeout"),
        )
    }
}

/// Header names must be HTTP tokens and values must not break the line: a value
/// with CR/LF would let the config inject arbitrary response lines.
fn validate_headers(
    headers: &BTreeMap<String, String>,
    field: &str,
) -> Result<(), FieldError> {
    for (name, value) in headers {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(FieldError::new(
                format!("{field}.metadata.header"),
                format!(
                    "expected header names made of letters, digits and !#$%&'*+-.^_`|~, got {name:?}"
                ),
            ));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(FieldError::new(
                format!("{field}.metadata.header.{name}"),
                "expected a value without CR, LF or NUL",
            ));
        }
    }
    Ok(())
}

pub fn default_response_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for HttpMetadata {
    fn default() -> Self {
        Self {
            header: BTreeMap::new(),
            read_timeout: default_read_timeout(),
            response_timeout: default_response_timeout(),
        }
    }
}

/// An HTTP proxy for one service: see [`Handler`] for its use.
pub type HttpHandler = Handler<Http>;

/// The HTTP/1.x forward proxy protocol of an [`HttpHandler`].
pub struct Http {
    opts: HttpHandlerOptions,
    /// Pre-rendered `header` lines, appended to every reply we generate.
    extra_headers: String,
}

/// A parsed request head (owned: the read buffer moves on while we use it).
#[derive(Debug)]
struct RequestHead {
    method: String,
    target: String,
    /// Minor version: 0 or 1.
    version: u8,
    headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug)]
struct ResponseHead {
    code: u16,
    reason: String,
    version: u8,
    headers: Vec<(String, Vec<u8>)>,
}

/// How a message body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

#[derive(Debug)]
enum HeadError {
    Invalid(String),
    TooLarge,
    Io(std::io::Error),
    /// Stream ended partway through a head.
    Truncated,
}

/// What the proxy should do with the client connection after one exchange.
enum Next {
    KeepAlive,
    Close,
}

/// A target connection kept between requests, with the `host:port` it serves.
///
/// Split in halves so that the request body can be sent while the response is
/// already being read (a target may refuse an upload without reading it).
struct Upstream {
    target: String,
    rx: BufConn<OwnedReadHalf>,
    tx: OwnedWriteHalf,
}

impl Upstream {
    fn new(target: String, stream: TcpStream) -> Self {
        let (rx, tx) = stream.into_split();
        Self {
            target,
            rx: BufConn::new(rx),
            tx,
        }
    }
}

/// Which finished first while a request body was being sent.
enum Race {
    BodyDone(Result<(), CopyError>),
    Response(Result<Option<ResponseHead>, HeadError>),
}

impl FromOptions for Http {
    type Metadata = HttpMetadata;

    fn from_options(opts: HttpHandlerOptions) -> Self {
        let mut extra_headers = String::new();
        for (k, v) in &opts.metadata.header {
            // Header names/values from the config file; strip CR/LF so a typo cannot
            // split the response.
            let clean = |s: &str| s.replace(['\r', '\n'], "");
            let _ = write!(extra_headers, "{}: {}\r\n", clean(k), clean(v));
        }
        Self {
            opts,
            extra_headers,
        }
    }
}

impl Protocol for Http {
    fn kind(&self) -> &'static str {
        "http"
    }

    async fn serve<S: Io>(&self, ctx: &Context, mut client: BufConn<S>, conn: ConnInfo) -> Outcome {
        let mut upstream: Option<Upstream> = None;
        let mut first = true;
        loop {
            let read = tokio::time::timeout(
                self.opts.metadata.read_timeout,
                read_head(&mut client, parse_request),
            )
            .await;
            let head = match read {
                Err(_) => {
                    // Silence between keep-alive requests is an ordinary idle close;
                    // a client that never asked, or stopped mid-head, is stalling.
                    if first || !client.buffered().is_empty() {
                        return Err(HandlerError::HandshakeTimeout(
                            self.opts.metadata.read_timeout,
                        ));
                    }
                    return Ok(());
                }
                Ok(Ok(Some(head))) => head,
                // Closed between requests, or before the first one (a TCP health
                // check, a port probe): nothing went wrong.
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(HeadError::TooLarge)) => {
                    self.reply(&mut client, 431, "Request Header Fields Too Large", "")
                        .await;
                    return Err(HandlerError::BadRequest(format!(
                        "request head larger than {MAX_HEAD} bytes"
                    )));
                }
                Ok(Err(HeadError::Invalid(why))) => {
                    self.reply(&mut client, 400, "Bad Request", "").await;
                    return Err(HandlerError::BadRequest(why));
                }
                Ok(Err(HeadError::Truncated)) => {
                    return Err(HandlerError::BadRequest(
                        "connection closed mid request head".into(),
                    ));
                }
                Ok(Err(HeadError::Io(e))) => return Err(HandlerError::Client(e)),
            };
            first = false;
            HandlerStats::bump(&ctx.stats.requests);
            tracing::debug!(peer = %conn.peer, method = %head.method, target = %head.target, "http request");

            if let Some(auth) = &self.opts.auth
                && !authorized(auth, &head)
            {
                self.reply(
                    &mut client,
                    407,
                    "Proxy Authentication Required",
                    "Proxy-Authenticate: Basic realm=\"gateway\"\r\n",
                )
                .await;
                return Err(HandlerError::AuthFailed);
            }

            if head.method.eq_ignore_ascii_case("CONNECT") {
                return self.connect(ctx, client, &head).await;
            }
            match self.forward(ctx, &mut client, &mut upstream, head).await? {
                Next::KeepAlive => continue,
                Next::Close => return Ok(()),
            }
        }
    }
}

impl Http {
    /// `CONNECT host:port`: reach the target, confirm, relay.
    async fn connect<S: Io>(
        &self,
        ctx: &Context,
        mut client: BufConn<S>,
        head: &RequestHead,
    ) -> Outcome {
        let Some(target) = parse_authority(&head.target, None) else {
            self.reply(&mut client, 400, "Bad Request", "").await;
            return Err(HandlerError::BadRequest(format!(
                "CONNECT target {:?}: expected host:port",
                head.target
            )));
        };
        let mut upstream = match ctx.router.connect(&target).await {
            Ok(s) => s,
            Err(e) => {
                self.reply_target_error(&mut client, &e).await;
                return Err(HandlerError::Target { target, source: e });
            }
        };
        let mut ok = String::from("HTTP/1.1 200 Connection established\r\n");
        ok.push_str(&self.extra_headers);
        ok.push_str("\r\n");
        client.write_all(ok.as_bytes()).await?;
        ctx.tunnel(&mut client, &mut upstream, target).await
    }

    /// Forward one absolute-URI request and its response.
    async fn forward<S: Io>(
        &self,
        ctx: &Context,
        client: &mut BufConn<S>,
        upstream: &mut Option<Upstream>,
        head: RequestHead,
    ) -> Result<Next, HandlerError> {
        let uri = match parse_absolute_uri(&head.target) {
            Ok(u) => u,
            Err(UriError::Scheme) => {
                self.reply(client, 501, "Not Implemented", "").await;
                return Err(HandlerError::Unsupported(format!(
                    "only http:// URIs are proxied, got {:?} (use CONNECT for TLS)",
                    head.target
                )));
            }
            Err(UriError::Invalid) => {
                self.reply(client, 400, "Bad Request", "").await;
                return Err(HandlerError::BadRequest(format!(
                    "request target {:?}: expected an absolute http:// URI",
                    head.target
                )));
            }
        };
        let framing = match request_framing(&head) {
            Ok(f) => f,
            Err(why) => {
                self.reply(client, 400, "Bad Request", "").await;
                return Err(HandlerError::BadRequest(why));
            }
        };
        let client_keep_alive = wants_keep_alive(head.version, &head.headers);
        let upgrade = is_upgrade(&head.headers);
        let expect_continue = framing != Framing::None
            && head.version == 1
            && header(&head.headers, "expect")
                .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
        let is_head = head.method.eq_ignore_ascii_case("HEAD");
        let request_bytes = render_request(&head, &uri, client_keep_alive, upgrade);

        // Send the head, on a kept connection when it goes to the same place. A
        // kept connection the target closed meanwhile is replaced once.
        let mut attempt = 0;
        // Set when the target answered before the client sent its announced body:
        // those bytes are still in the client stream, so it cannot be reused.
        let mut body_skipped = false;
        let (mut up, response) = loop {
            attempt += 1;
            let (mut up, reused) = match upstream.take() {
                Some(u) if u.target == uri.authority => (u, true),
                _ => match ctx.router.connect(&uri.authority).await {
                    Ok(s) => (Upstream::new(uri.authority.clone(), s), false),
                    Err(e) => {
                        self.reply_target_error(client, &e).await;
                        return Err(HandlerError::Target {
                            target: uri.authority.clone(),
                            source: e,
                        });
                    }
                },
            };
            // Only a request the target cannot have acted on may be sent again.
            let may_retry = reused && attempt == 1 && framing == Framing::None;
            if let Err(e) = up.tx.write_all(&request_bytes).await {
                if may_retry {
                    continue;
                }
                self.reply(client, 502, "Bad Gateway", "").await;
                return Err(HandlerError::Upstream {
                    target: uri.authority,
                    message: format!("sending request: {e}"),
                });
            }

            // Body. With `Expect: 100-continue` the target gets a moment to refuse
            // before the client sends the body (RFC 9110 §10.1.1).
            if expect_continue {
                let waited = tokio::time::timeout(
                    Duration::from_secs(1),
                    read_head(&mut up.rx, parse_response),
                )
                .await;
                match waited {
                    // Silence: send the body anyway, as curl and browsers do.
                    Err(_) => {}
                    Ok(Ok(Some(h))) if h.code == 100 => {
                        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                    }
                    Ok(Ok(Some(h))) => {
                        body_skipped = true;
                        break (up, h);
                    }
                    Ok(_) => {
                        self.reply(client, 502, "Bad Gateway", "").await;
                        return Err(HandlerError::Upstream {
                            target: uri.authority,
                            message: "closed or garbled while the client waited for 100 Continue"
                                .into(),
                        });
                    }
                }
            }
            // Send the body while watching for an early final response: a target
            // that refuses an upload (413, 401) often stops reading it, and
            // insisting on sending it all would hang both sides.
            let race = {
                let body = copy_body(client, &mut up.tx, framing);
                let early = early_response(&mut up.rx);
                tokio::select! {
                    biased;
                    r = body => Race::BodyDone(r),
                    r = early => Race::Response(r),
                }
            };
            match race {
                Race::BodyDone(Ok(())) => {}
                Race::BodyDone(Err(e)) => {
                    return Err(self.body_error(client, &uri.authority, e).await);
                }
                Race::Response(Ok(Some(h))) => {
                    body_skipped = true;
                    break (up, h);
                }
                Race::Response(r) => {
                    self.reply(client, 502, "Bad Gateway", "").await;
                    let why = match r {
                        Err(HeadError::Io(e)) => e.to_string(),
                        _ => "closed or garbled".to_string(),
                    };
                    return Err(HandlerError::Upstream {
                        target: uri.authority,
                        message: format!("while the request body was sent: {why}"),
                    });
                }
            }

            let read = tokio::time::timeout(
                self.opts.metadata.response_timeout,
                read_final_response(client, &mut up.rx),
            )
            .await;
            let message = match read {
                Ok(Ok(Some(h))) => break (up, h),
                Err(_) => {
                    self.reply(client, 504, "Gateway Timeout", "").await;
                    return Err(HandlerError::Upstream {
                        target: uri.authority,
                        message: format!(
                            "no response head within {:?}",
                            self.opts.metadata.response_timeout
                        ),
                    });
                }
                // The target closed (or reset) the idle connection we kept: resend
                // on a new one.
                Ok(Ok(None) | Err(HeadError::Io(_))) if may_retry => continue,
                Ok(Ok(None)) => "closed without a response".to_string(),
                Ok(Err(HeadError::Invalid(w))) => format!("bad response head: {w}"),
                Ok(Err(HeadError::TooLarge)) => "response head too large".to_string(),
                Ok(Err(HeadError::Truncated)) => "closed mid response head".to_string(),
                Ok(Err(HeadError::Io(e))) => format!("reading response: {e}"),
            };
            self.reply(client, 502, "Bad Gateway", "").await;
            return Err(HandlerError::Upstream {
                target: uri.authority,
                message,
            });
        };

        // 101: the connection now speaks something else (WebSocket): relay it.
        if response.code == 101 {
            if !upgrade {
                self.reply(client, 502, "Bad Gateway", "").await;
                return Err(HandlerError::Upstream {
                    target: uri.authority,
                    message: "101 Switching Protocols without an upgrade request".into(),
                });
            }
            client.write_all(&render_response(&response, true)).await?;
            let (rx, pending) = up.rx.into_parts();
            client.write_all(&pending).await?;
            let mut target = rx.reunite(up.tx).map_err(|e| HandlerError::Upstream {
                target: uri.authority.clone(),
                message: format!("cannot rejoin the connection: {e}"),
            })?;
            return match client.tunnel(&mut target, &ctx.relay).await {
                Ok(_) => Ok(Next::Close),
                Err(e) => Err(HandlerError::Upstream {
                    target: uri.authority,
                    message: format!("upgraded connection ended: {e}"),
                }),
            };
        }

        let resp_framing = response_framing(&response, is_head);
        let upstream_keep_alive =
            resp_framing != Framing::Close && wants_keep_alive(response.version, &response.headers);
        // The client may keep the connection if it wants to, the response has a
        // known end, and the body it announced was consumed.
        let keep = client_keep_alive && resp_framing != Framing::Close && !body_skipped;
        client.write_all(&render_response(&response, keep)).await?;
        let copied = match resp_framing {
            Framing::None => Ok(()),
            Framing::Length(n) => up.rx.copy_exact(n, client.get_mut()).await,
            Framing::Chunked => up.rx.copy_chunked(client.get_mut()).await,
            Framing::Close => up.rx.copy_to_eof(client.get_mut()).await,
        };
        match copied {
            Ok(()) => {}
            Err(CopyError::Write(e)) => return Err(HandlerError::Client(e)),
            Err(e) => {
                return Err(HandlerError::Upstream {
                    target: uri.authority,
                    message: format!("response body: {e}"),
                });
            }
        }
        client.get_mut().flush().await?;
        if body_skipped {
            // The client may still be sending the body the target refused.
            linger_close(client).await;
        }
        // Extra bytes after a response mean the target is confused; do not let
        // them bleed into the next exchange.
        if upstream_keep_alive && !body_skipped && up.rx.buffered().is_empty() {
            *upstream = Some(up);
        }
        Ok(if keep { Next::KeepAlive } else { Next::Close })
    }

    /// Reply to and classify a failed request body copy.
    async fn body_error<S: Io>(
        &self,
        client: &mut BufConn<S>,
        target: &str,
        e: CopyError,
    ) -> HandlerError {
        match e {
            CopyError::Framing(why) => {
                self.reply(client, 400, "Bad Request", "").await;
                HandlerError::BadRequest(format!("request body: {why}"))
            }
            CopyError::Eof => HandlerError::Client(std::io::ErrorKind::UnexpectedEof.into()),
            CopyError::Read(e) => HandlerError::Client(e),
            CopyError::Write(e) => {
                self.reply(client, 502, "Bad Gateway", "").await;
                HandlerError::Upstream {
                    target: target.to_string(),
                    message: format!("sending request body: {e}"),
                }
            }
        }
    }

    /// 502 for a target that refused or failed, 504 for one that timed out.
    async fn reply_target_error<S: Io>(&self, client: &mut BufConn<S>, e: &std::io::Error) {
        if e.kind() == std::io::ErrorKind::TimedOut {
            self.reply(client, 504, "Gateway Timeout", "").await;
        } else {
            self.reply(client, 502, "Bad Gateway", "").await;
        }
    }

    /// Send a reply the proxy generates itself, and ask the client to close. Write
    /// errors are ignored: the connection is being dropped anyway.
    async fn reply<S: Io>(&self, client: &mut BufConn<S>, code: u16, reason: &str, extra: &str) {
        let body = format!("{code} {reason}\n");
        let msg = format!(
            "HTTP/1.1 {code} {reason}\r\n{extra}{}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.extra_headers,
            body.len()
        );
        let _ = client.write_all(msg.as_bytes()).await;
        linger_close(client).await;
    }
}

/// How long, and how much, a closing connection keeps reading what the client
/// still sends. A client mid-upload notices the reply only when it next looks at
/// its socket, which on a busy machine can be after megabytes more of body have
/// been sent (loopback moves them in milliseconds): the byte cap is there to stop
/// a client that never looks, not to be reached by one that is merely slow (like
/// nginx's `lingering_close`, bounded by `lingering_time`).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024 * 1024;

/// Close after a final reply without destroying it. Closing a socket that still
/// has unread input makes the kernel send a reset, and a reset can discard our
/// reply before the client read it (a 407 or 413 to a client mid-upload). So: send
/// our FIN, then read and drop the client's bytes for a moment, until it closes.
async fn linger_close<S>(client: &mut BufConn<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = client.get_mut().shutdown().await;
    let drain = async {
        let mut total = 0;
        loop {
            let n = client.buffered().len();
            client.consume(n);
            match client.fill().await {
                Ok(n) if n > 0 && total < LINGER_BYTES => total += n,
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// A head parser: `Ok(None)` while incomplete, else the head and its length.
type HeadParser<T> = fn(&[u8]) -> Result<Option<(T, usize)>, HeadError>;

/// Read and parse one head. `Ok(None)`: the stream ended cleanly before any byte
/// of a head. Cancel safe (see [`BufConn::fill`]), so it can run under a timeout.
async fn read_head<S, T>(
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

fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
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

fn parse_response(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HeadError> {
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

/// Copy a request body in its framing from the client to the target.
async fn copy_body<S>(
    client: &mut BufConn<S>,
    tx: &mut OwnedWriteHalf,
    framing: Framing,
) -> Result<(), CopyError>
where
    S: AsyncRead + Unpin,
{
    match framing {
        Framing::None | Framing::Close => Ok(()),
        Framing::Length(n) => client.copy_exact(n, tx).await,
        Framing::Chunked => client.copy_chunked(tx).await,
    }
}

/// A final response arriving while the body is still being sent. Interim 1xx
/// responses seen meanwhile are dropped (they are advisory, and the client is
/// busy sending). Cancel safe: a head is consumed only when complete.
async fn early_response(
    rx: &mut BufConn<OwnedReadHalf>,
) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        match read_head(rx, parse_response).await? {
            Some(h) if (100..200).contains(&h.code) && h.code != 101 => continue,
            other => return Ok(other),
        }
    }
}

/// Read response heads until a final one (or a 101), passing interim 1xx
/// responses (100 Continue, 103 Early Hints) on to the client.
async fn read_final_response<S: Io>(
    client: &mut BufConn<S>,
    up: &mut BufConn<OwnedReadHalf>,
) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        match read_head(up, parse_response).await? {
            Some(h) if (100..200).contains(&h.code) && h.code != 101 => {
                // A client that went away shows up on the next write; the interim
                // response itself is advisory.
                let _ = client.write_all(&render_response(&h, true)).await;
            }
            other => return Ok(other),
        }
    }
}

/// First value of a header (names are case-insensitive).
fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Comma-separated tokens of every instance of a header, lower-cased.
fn header_tokens(headers: &[(String, Vec<u8>)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn wants_keep_alive(version: u8, headers: &[(String, Vec<u8>)]) -> bool {
    let mut tokens = header_tokens(headers, "connection");
    tokens.extend(header_tokens(headers, "proxy-connection"));
    if tokens.iter().any(|t| t == "close") {
        return false;
    }
    version >= 1 || tokens.iter().any(|t| t == "keep-alive")
}

fn is_upgrade(headers: &[(String, Vec<u8>)]) -> bool {
    header(headers, "upgrade").is_some()
        && header_tokens(headers, "connection")
            .iter()
            .any(|t| t == "upgrade")
}

/// Request body framing, strict: anything ambiguous is a 400, because a proxy and
/// a target that disagree on where a body ends is how requests get smuggled.
fn request_framing(head: &RequestHead) -> Result<Framing, String> {
    let te = header_tokens(&head.headers, "transfer-encoding");
    let has_cl = header(&head.headers, "content-length").is_some();
    if !te.is_empty() {
        if has_cl {
            return Err("both Transfer-Encoding and Content-Length".into());
        }
        if te.last().map(String::as_str) != Some("chunked") {
            return Err("Transfer-Encoding without final chunked".into());
        }
        return Ok(Framing::Chunked);
    }
    if has_cl {
        return match content_length(&head.headers) {
            Some(0) => Ok(Framing::None),
            Some(n) => Ok(Framing::Length(n)),
            None => Err("invalid or conflicting Content-Length".into()),
        };
    }
    Ok(Framing::None)
}

fn response_framing(resp: &ResponseHead, request_was_head: bool) -> Framing {
    if request_was_head || (100..200).contains(&resp.code) || resp.code == 204 || resp.code == 304 {
        return Framing::None;
    }
    let te = header_tokens(&resp.headers, "transfer-encoding");
    if !te.is_empty() {
        return if te.last().map(String::as_str) == Some("chunked") {
            Framing::Chunked
        } else {
            Framing::Close
        };
    }
    match content_length(&resp.headers) {
        Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    }
}

/// All Content-Length values must be the same number (RFC 9112 §6.3).
fn content_length(headers: &[(String, Vec<u8>)]) -> Option<u64> {
    let mut value = None;
    for t in header_tokens(headers, "content-length") {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = t.parse().ok()?;
        if value.is_some_and(|v| v != n) {
            return None;
        }
        value = Some(n);
    }
    value
}

fn authorized(auth: &AuthConfig, head: &RequestHead) -> bool {
    let Some(value) = header(&head.headers, "proxy-authorization") else {
        return false;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    credentials_match(auth, &decoded[..colon], &decoded[colon + 1..])
}

/// An absolute `http://` URI split for forwarding.
#[derive(Debug, PartialEq, Eq)]
struct Uri {
    /// `host:port` for the router (port defaulted to 80).
    authority: String,
    /// The `Host` header value: the authority as written, without userinfo.
    host_header: String,
    /// Origin form: `/path?query`.
    path: String,
}

#[derive(Debug, PartialEq, Eq)]
enum UriError {
    Scheme,
    Invalid,
}

fn parse_absolute_uri(target: &str) -> Result<Uri, UriError> {
    let rest = match target.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => return Err(UriError::Scheme),
        None => return Err(UriError::Invalid),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let path = path.split('#').next().unwrap_or("");
    let path = match path.chars().next() {
        None => "/".to_string(),
        Some('?') => format!("/{path}"),
        Some(_) => path.to_string(),
    };
    let router_target = parse_authority(authority, Some(80)).ok_or(UriError::Invalid)?;
    Ok(Uri {
        authority: router_target,
        host_header: authority.to_string(),
        path,
    })
}

/// `host:port`, `[v6]:port`, or with a default port a bare `host` / `[v6]`, into
/// the router's `host:port` form. `None` when it is not a plausible authority.
fn parse_authority(s: &str, default_port: Option<u16>) -> Option<String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().ok()?,
            None if after.is_empty() => default_port?,
            None => return None,
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((host, p)) => (host, p.parse::<u16>().ok()?),
            None => (s, default_port?),
        }
    };
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if host.is_empty() || port == 0 || !host.chars().all(valid_char) {
        return None;
    }
    Some(super::join_host_port(host, port))
}

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1).
/// `Transfer-Encoding` is not among them here: bodies pass through verbatim, so
/// their framing header travels with them.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "upgrade",
];

fn is_hop_by_hop(name: &str, connection_tokens: &[String], keep_upgrade: bool) -> bool {
    let lower = name.to_ascii_lowercase();
    if keep_upgrade && lower == "upgrade" {
        return false;
    }
    HOP_BY_HOP.contains(&lower.as_str()) || connection_tokens.contains(&lower)
}

fn render_request(head: &RequestHead, uri: &Uri, keep_alive: bool, upgrade: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(
        format!("{} {} HTTP/1.{}\r\n", head.method, uri.path, head.version).as_bytes(),
    );
    out.extend_from_slice(format!("Host: {}\r\n", uri.host_header).as_bytes());
    let tokens = header_tokens(&head.headers, "connection");
    for (name, value) in &head.headers {
        if name.eq_ignore_ascii_case("host") || is_hop_by_hop(name, &tokens, upgrade) {
            continue;
        }
        push_header(&mut out, name, value);
    }
    if upgrade {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if head.version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn render_response(resp: &ResponseHead, keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", resp.code, resp.reason).as_bytes());
    let upgrade = resp.code == 101;
    let tokens = header_tokens(&resp.headers, "connection");
    for (name, value) in &resp.headers {
        if is_hop_by_hop(name, &tokens, upgrade) {
            continue;
        }
        push_header(&mut out, name, value);
    }
    if upgrade {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if !keep_alive && resp.code >= 200 {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> RequestHead {
        match parse_request(text.as_bytes()) {
            Ok(Some((h, _))) => h,
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse_request(&data);
            let _ = parse_response(&data);
            if let Ok(text) = std::str::from_utf8(&data) {
                let _ = parse_absolute_uri(text);
                let _ = parse_authority(text, Some(80));
            }
        }
    }

    #[test]
    fn absolute_uris() {
        let u = parse_absolute_uri("http://example.com/a?b=1#frag").unwrap();
        assert_eq!(u.authority, "example.com:80");
        assert_eq!(u.host_header, "example.com");
        assert_eq!(u.path, "/a?b=1");
        let u = parse_absolute_uri("HTTP://user:pw@[::1]:8080?x").unwrap();
        assert_eq!(u.authority, "[::1]:8080");
        assert_eq!(u.host_header, "[::1]:8080");
        assert_eq!(u.path, "/?x");
        assert_eq!(parse_absolute_uri("https://x/"), Err(UriError::Scheme));
        assert_eq!(parse_absolute_uri("/local"), Err(UriError::Invalid));
        assert_eq!(parse_absolute_uri("http://:80/"), Err(UriError::Invalid));
        assert_eq!(parse_absolute_uri("http://a b/"), Err(UriError::Invalid));
        assert_eq!(parse_absolute_uri("http://h:0/"), Err(UriError::Invalid));
    }

    #[test]
    fn connect_authorities() {
        assert_eq!(parse_authority("h:443", None).as_deref(), Some("h:443"));
        assert_eq!(
            parse_authority("[::1]:443", None).as_deref(),
            Some("[::1]:443")
        );
        assert_eq!(parse_authority("h", None), None);
        assert_eq!(parse_authority("[zz]:1", None), None);
        assert_eq!(parse_authority("h:99999", None), None);
    }

    #[test]
    fn framing_is_strict() {
        let h = req("POST http://h/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(request_framing(&h), Ok(Framing::Length(5)));
        let h = req("POST http://h/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert!(request_framing(&h).is_err());
        let h = req("POST http://h/ HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(request_framing(&h), Ok(Framing::Length(5)));
        let h = req("POST http://h/ HTTP/1.1\r\nContent-Length: +5\r\n\r\n");
        assert!(request_framing(&h).is_err());
        let h = req("POST http://h/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(request_framing(&h), Ok(Framing::Chunked));
        let h = req("POST http://h/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert!(request_framing(&h).is_err());
        let h = req(
            "POST http://h/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        );
        assert!(request_framing(&h).is_err());
        let h = req("GET http://h/ HTTP/1.1\r\n\r\n");
        assert_eq!(request_framing(&h), Ok(Framing::None));
    }

    #[test]
    fn request_rewrite_drops_hop_by_hop() {
        let h = req(
            "GET http://h:81/p HTTP/1.1\r\nHost: wrong\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nProxy-Authorization: Basic eDp5\r\nAccept: */*\r\n\r\n",
        );
        let uri = parse_absolute_uri(&h.target).unwrap();
        let out = String::from_utf8(render_request(&h, &uri, true, false)).unwrap();
        assert_eq!(out, "GET /p HTTP/1.1\r\nHost: h:81\r\nAccept: */*\r\n\r\n");
    }

    #[test]
    fn basic_auth() {
        let auth = AuthConfig {
            username: "user".into(),
            password: crate::config::auth::Secret("p:ss".into()),
        };
        // "user:p:ss"
        let ok = req("GET http://h/ HTTP/1.1\r\nProxy-Authorization: basic dXNlcjpwOnNz\r\n\r\n");
        assert!(authorized(&auth, &ok));
        let bad = req("GET http://h/ HTTP/1.1\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n");
        assert!(!authorized(&auth, &bad));
        let garbage = req("GET http://h/ HTTP/1.1\r\nProxy-Authorization: Basic !!!\r\n\r\n");
        assert!(!authorized(&auth, &garbage));
        let none = req("GET http://h/ HTTP/1.1\r\n\r\n");
        assert!(!authorized(&auth, &none));
    }

    #[test]
    fn header_option_validation() {
        let mut h = BTreeMap::new();
        h.insert("X-Proxy".to_string(), "gw 1".to_string());
        assert!(validate_headers(&h, "s").is_ok());
        h.insert("Bad Name".to_string(), "v".to_string());
        assert_eq!(
            validate_headers(&h, "s").unwrap_err().field,
            "s.metadata.header"
        );
        let mut h = BTreeMap::new();
        h.insert("X".to_string(), "a\r\nSet-Cookie: x".to_string());
        assert_eq!(
            validate_headers(&h, "s").unwrap_err().field,
            "s.metadata.header.X"
        );
    }

    #[test]
    fn response_rewrite() {
        let r = ResponseHead {
            code: 200,
            reason: "OK".into(),
            version: 0,
            headers: vec![
                ("Keep-Alive".into(), b"timeout=5".to_vec()),
                ("Connection".into(), b"keep-alive".to_vec()),
                ("Transfer-Encoding".into(), b"chunked".to_vec()),
            ],
        };
        let out = String::from_utf8(render_response(&r, false)).unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn keep_alive_rules() {
        let h = |s: &str| req(s).headers;
        assert!(wants_keep_alive(1, &h("GET / HTTP/1.1\r\n\r\n")));
        assert!(!wants_keep_alive(
            1,
            &h("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        ));
        assert!(!wants_keep_alive(0, &h("GET / HTTP/1.0\r\n\r\n")));
        assert!(wants_keep_alive(
            0,
            &h("GET / HTTP/1.0\r\nProxy-Connection: Keep-Alive\r\n\r\n")
        ));
    }
}
