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
//! connection stays at one read buffer no matter how large the transfer. An
//! HTTP/1.0 client never sees chunked framing (RFC 9112 §6.1): a chunked
//! response is decoded for it and ends with the connection (a body the target
//! cut short ends with a reset instead, so it does not pass for whole).
//!
//! While a request body is being sent, the target's side is watched too: a target
//! that refuses an upload (`413`, `401`) usually answers at once and stops reading.
//! Its answer is passed to the client, and the rest of the body is not sent (both
//! connections close afterwards, since the client's stream is mid-body).
//! `Expect: 100-continue` is honoured: the target gets a second to say `100` or
//! refuse before the body starts.
//!
//! # Every phase bounded
//!
//! Heads by `readTimeout` (from the accept for the first request) and
//! `responseTimeout` (once per request); bodies, and head writes, by the
//! service's idle timeouts as per-read/per-write idle limits ([`BodyIdle`]),
//! [`DEFAULT_BODY_IDLE`] when the service sets none. A client trickling its upload
//! or not reading its download, a target stalling mid-body: each is cut after one
//! idle period. The table is in docs/handlers.md.
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
//! | unparseable head, bad URI, ambiguous framing (the `framing` module) | `400 Bad Request` |
//! | head larger than 64 KiB or with more than 128 fields | `431 Request Header Fields Too Large` |
//! | auth configured and missing/wrong | `407` with `Proxy-Authenticate: Basic` |
//! | request body idle past `client_idle_timeout` | `408 Request Timeout` |
//! | target refused / unreachable / bad or ambiguous response | `502 Bad Gateway` |
//! | connect or response head timed out | `504 Gateway Timeout` |
//! | a non-`http:` absolute URI | `501 Not Implemented` |
//!
//! After an error reply the connection is closed: its remaining bytes (an unread
//! body) cannot be trusted to be a request boundary.

// The exchange lives here; its parts are submodules: `head` (reading and parsing
// heads), `message` (hop-by-hop rewriting, keep-alive, upgrades, credentials),
// `uri` (absolute URIs and CONNECT authorities). Body framing is the handler's
// `framing` module.

use std::fmt::Write as _;
use std::time::Duration;

use crate::proxy::chain::stream::{Outbound, OutboundRead, OutboundWrite};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::conn::{BodyIdle, BufConn, CopyError};
use super::framing::{Framing, header, request_framing, response_framing};
use crate::proxy::clock::deadline_in;

use super::{
    ConnInfo, Context, FromOptions, Handler, HandlerError, HandlerOptions, Io, Outcome, Protocol,
};
pub use crate::config::service::handler::HttpMetadata;
use crate::proxy::stats::inc;

mod head;
mod message;
mod uri;

pub use head::MAX_HEAD;
use head::*;
use message::*;
use uri::*;

/// The `handler:` section of an `http` service, minus `type`.
pub type HttpHandlerOptions = HandlerOptions<HttpMetadata>;

/// An HTTP proxy for one service: see [`Handler`] for its use.
pub type HttpHandler = Handler<Http>;

/// The HTTP/1.x forward proxy protocol of an [`HttpHandler`].
pub struct Http {
    opts: HttpHandlerOptions,
    /// Pre-rendered `header` lines, appended to every reply we generate.
    extra_headers: String,
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
    rx: BufConn<OutboundRead>,
    tx: OutboundWrite,
}

impl Upstream {
    fn new(target: String, stream: Outbound) -> Self {
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
            // `readTimeout` once per request head: the first one counts from when
            // the connection was accepted (the auto handler's wait included), the
            // next ones from the end of the previous exchange.
            let limit = self.opts.metadata.read_timeout;
            let deadline = if first {
                conn.handshake_deadline(limit)
            } else {
                crate::proxy::clock::deadline_in(limit)
            };
            let read =
                tokio::time::timeout_at(deadline, read_head(&mut client, parse_request)).await;
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
            inc(&ctx.stats.requests);
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
                return self.connect(ctx, client, &head, conn.peer.ip()).await;
            }
            match self
                .forward(ctx, &mut client, &mut upstream, head, conn.peer.ip())
                .await?
            {
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
        peer: std::net::IpAddr,
    ) -> Outcome {
        let Some(target) = parse_authority(&head.target, None) else {
            self.reply(&mut client, 400, "Bad Request", "").await;
            return Err(HandlerError::BadRequest(format!(
                "CONNECT target {:?}: expected host:port",
                head.target
            )));
        };
        let mut upstream = match ctx.router.dial(&target, peer).await {
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
        peer: std::net::IpAddr,
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
        let framing = match request_framing(head.version, &head.headers) {
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
        let client_version = head.version;
        let request_bytes = render_request(&head, &uri, client_keep_alive, upgrade);
        // Every phase after the request head is bounded: bodies and head writes
        // by the service's idle timeouts (each read or write may wait that long),
        // the response head by `responseTimeout`, counted once.
        let client_idle = ctx.relay.a_idle.unwrap_or(DEFAULT_BODY_IDLE);
        let backend_idle = ctx.relay.b_idle.unwrap_or(DEFAULT_BODY_IDLE);
        let mut response_deadline = None;

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
                _ => match ctx.router.dial(&uri.authority, peer).await {
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
            if let Err(e) = write_within(&mut up.tx, &request_bytes, backend_idle).await {
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
                        let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
                        write_within(client.get_mut(), cont, client_idle).await?;
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
                let mut idle = BodyIdle::new(Some(client_idle), Some(backend_idle));
                let body = copy_body(client, &mut up.tx, framing, &mut idle);
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

            let deadline = *response_deadline
                .get_or_insert_with(|| deadline_in(self.opts.metadata.response_timeout));
            let read = tokio::time::timeout_at(
                deadline,
                read_final_response(client, &mut up.rx, client_version, client_idle),
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
            let head = render_response(&response, true, client_version);
            write_within(client.get_mut(), &head, client_idle).await?;
            let (rx, pending) = up.rx.into_parts();
            write_within(client.get_mut(), &pending, client_idle).await?;
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

        let resp_framing =
            match response_framing(response.version, response.code, &response.headers, is_head) {
                Ok(f) => f,
                Err(why) => {
                    self.reply(client, 502, "Bad Gateway", "").await;
                    return Err(HandlerError::Upstream {
                        target: uri.authority,
                        message: format!("response framing: {why}"),
                    });
                }
            };
        // An HTTP/1.0 client cannot take a transfer coding (RFC 9112 §6.1): a
        // chunked body is passed on decoded and ends with the connection; any
        // other coding cannot be undone here.
        let to_client = match (client_version, resp_framing) {
            (0, Framing::Chunked) => Framing::Close,
            (0, Framing::Close) if header(&response.headers, "transfer-encoding").is_some() => {
                self.reply(client, 502, "Bad Gateway", "").await;
                return Err(HandlerError::Upstream {
                    target: uri.authority,
                    message: "a transfer coding other than chunked, for an HTTP/1.0 client".into(),
                });
            }
            (_, f) => f,
        };
        let upstream_keep_alive =
            resp_framing != Framing::Close && wants_keep_alive(response.version, &response.headers);
        // The client may keep the connection if it wants to, the response has a
        // known end, and the body it announced was consumed.
        let keep = client_keep_alive && to_client != Framing::Close && !body_skipped;
        let head = render_response(&response, keep, client_version);
        write_within(client.get_mut(), &head, client_idle).await?;
        let idle = &mut BodyIdle::new(Some(backend_idle), Some(client_idle));
        let copied = match (resp_framing, to_client) {
            (Framing::None, _) => Ok(()),
            (Framing::Length(n), _) => up.rx.copy_exact(n, client.get_mut(), idle).await,
            (Framing::Chunked, Framing::Chunked) => {
                up.rx.copy_chunked(client.get_mut(), idle).await
            }
            (Framing::Chunked, _) => up.rx.copy_dechunked(client.get_mut(), idle).await,
            (Framing::Close, _) => up.rx.copy_to_eof(client.get_mut(), idle).await,
        };
        match copied {
            Ok(()) => {}
            Err(CopyError::Write(e)) => return Err(HandlerError::Client(e)),
            Err(e) => {
                if resp_framing != to_client {
                    // The client's body ends with the connection: a plain close
                    // would pass the cut body off as whole. A reset says it is not.
                    reset_on_close(client);
                }
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
            CopyError::Read(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                // nginx's `client_body_timeout` answer.
                self.reply(client, 408, "Request Timeout", "").await;
                HandlerError::Client(e)
            }
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
/// Make the coming close of a plain TCP client a reset (`SO_LINGER` 0).
fn reset_on_close<S: 'static>(client: &BufConn<S>) {
    if let Some(tcp) = client.as_tcp() {
        let _ = tcp.set_zero_linger();
    }
}

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

/// Idle limit of body phases when the service sets no `client_idle_timeout` /
/// `backend_idle_timeout`: nginx's `client_body_timeout`, `send_timeout` and
/// `proxy_read_timeout` default.
pub const DEFAULT_BODY_IDLE: Duration = Duration::from_secs(60);

/// Write all of `data`, failing with `TimedOut` if the peer does not take it
/// within `limit` (a receiver that stopped reading).
async fn write_within<W>(w: &mut W, data: &[u8], limit: Duration) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    match tokio::time::timeout_at(deadline_in(limit), w.write_all(data)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("peer did not read for {limit:?}"),
        )),
    }
}

/// Copy a request body in its framing from the client to the target.
async fn copy_body<S>(
    client: &mut BufConn<S>,
    tx: &mut OutboundWrite,
    framing: Framing,
    idle: &mut BodyIdle,
) -> Result<(), CopyError>
where
    S: AsyncRead + Unpin,
{
    match framing {
        Framing::None | Framing::Close => Ok(()),
        Framing::Length(n) => client.copy_exact(n, tx, idle).await,
        Framing::Chunked => client.copy_chunked(tx, idle).await,
    }
}

/// A final response arriving while the body is still being sent. Interim 1xx
/// responses seen meanwhile are dropped (they are advisory, and the client is
/// busy sending). Cancel safe: a head is consumed only when complete.
async fn early_response(rx: &mut BufConn<OutboundRead>) -> Result<Option<ResponseHead>, HeadError> {
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
    up: &mut BufConn<OutboundRead>,
    client_version: u8,
    client_idle: Duration,
) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        match read_head(up, parse_response).await? {
            Some(h) if (100..200).contains(&h.code) && h.code != 101 => {
                // A client that went away shows up on the next write; the interim
                // response itself is advisory, and an HTTP/1.0 client must not
                // get one (RFC 9110 §15.2).
                if client_version == 1 {
                    let head = render_response(&h, true, client_version);
                    let _ = write_within(client.get_mut(), &head, client_idle).await;
                }
            }
            other => return Ok(other),
        }
    }
}

#[cfg(test)]
mod tests;
