//! The `auto` handler: HTTP, SOCKS4/4a and SOCKS5 on one port.
//!
//! ```yaml
//! handler:
//!   type: auto
//!   auth: {username: user, password: pass}   # applies to every protocol
//!   metadata:
//!     readTimeout: 15s
//!     udp: true              # SOCKS5 UDP ASSOCIATE
//!     udpBufferSize: 4096
//!     header: {X-Proxy: gw}  # HTTP replies
//!     responseTimeout: 60s   # HTTP
//! ```
//!
//! The three protocols can be told apart by their first byte: a SOCKS5 greeting
//! starts with `0x05`, a SOCKS4 request with `0x04`, and an HTTP request with a
//! method name, i.e. a printable letter. We read that one byte (it stays in the
//! [`BufConn`] buffer, so the chosen handler parses the stream from its start) and
//! hand over. A client that connects and sends nothing is a handshake timeout
//! like on any other handler.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::conn::BufConn;
use super::http::{Http, HttpMetadata, default_response_timeout};
use super::socks::{Socks4, Socks4Metadata, Socks5, Socks5Metadata, default_udp_buffer_size};
use super::{
    ConnInfo, Context, FromOptions, Handler, HandlerError, HandlerOptions, Io, Metadata, Outcome,
    Protocol, default_read_timeout, deserialize_go_duration,
};
use crate::config::FieldError;

/// The `handler:` section of an `auto` service, minus `type`: the union of the
/// `http` and `socks5` options.
pub type AutoHandlerOptions = HandlerOptions<AutoMetadata>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoMetadata {
    #[serde(
        rename = "readTimeout",
        default = "default_read_timeout",
        deserialize_with = "deserialize_go_duration"
    )]
    pub read_timeout: Duration,
    #[serde(default)]
    pub udp: bool,
    #[serde(rename = "udpBufferSize", default = "default_udp_buffer_size")]
    pub udp_buffer_size: usize,
    #[serde(default)]
    pub header: BTreeMap<String, String>,
    #[serde(
        rename = "responseTimeout",
        default = "default_response_timeout",
        deserialize_with = "deserialize_go_duration"
    )]
    pub response_timeout: Duration,
}

impl Default for AutoMetadata {
    fn default() -> Self {
        Self {
            read_timeout: default_read_timeout(),
            udp: false,
            udp_buffer_size: default_udp_buffer_size(),
            header: BTreeMap::new(),
            response_timeout: default_response_timeout(),
        }
    }
}

impl AutoMetadata {
    /// The part of these options the HTTP protocol reads.
    fn http(&self) -> HttpMetadata {
        HttpMetadata {
            header: self.header.clone(),
            read_timeout: self.read_timeout,
            response_timeout: self.response_timeout,
        }
    }

    /// The part of these options SOCKS5 reads.
    fn socks5(&self) -> Socks5Metadata {
        Socks5Metadata {
            read_timeout: self.read_timeout,
            udp: self.udp,
            udp_buffer_size: self.udp_buffer_size,
        }
    }

    /// The part of these options SOCKS4 reads.
    fn socks4(&self) -> Socks4Metadata {
        Socks4Metadata {
            read_timeout: self.read_timeout,
        }
    }
}

impl Metadata for AutoMetadata {
    /// Each protocol checks its own part, so `auto` accepts exactly what the
    /// protocols it dispatches to accept.
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        self.socks5().validate(field)?;
        self.http().validate(field)?;
        self.socks4().validate(field)
    }
}

/// One port, three protocols: see [`Handler`] for its use.
pub type AutoHandler = Handler<Auto>;

/// The protocol of an [`AutoHandler`]: it hands each connection to one of the
/// others, which then count under the auto handler's [`HandlerStats`](super::HandlerStats).
pub struct Auto {
    http: Http,
    socks5: Socks5,
    socks4: Socks4,
    read_timeout: Duration,
}

impl FromOptions for Auto {
    type Metadata = AutoMetadata;

    fn from_options(opts: AutoHandlerOptions) -> Self {
        // The same credentials under each protocol's part of the metadata.
        fn with<M>(opts: &AutoHandlerOptions, metadata: M) -> HandlerOptions<M> {
            HandlerOptions {
                auth: opts.auth.clone(),
                metadata,
            }
        }
        let m = &opts.metadata;
        Self {
            http: Http::from_options(with(&opts, m.http())),
            socks5: Socks5::from_options(with(&opts, m.socks5())),
            socks4: Socks4::from_options(with(&opts, m.socks4())),
            read_timeout: m.read_timeout,
        }
    }
}

impl Protocol for Auto {
    fn kind(&self) -> &'static str {
        "auto"
    }

    async fn serve<S: Io>(&self, ctx: &Context, mut client: BufConn<S>, conn: ConnInfo) -> Outcome {
        // The same deadline the chosen protocol applies to its handshake: waiting
        // for the first byte spends the client's `readTimeout`, it does not add one.
        let deadline = conn.handshake_deadline(self.read_timeout);
        let first = match tokio::time::timeout_at(deadline, client.fill_to(1)).await {
            Err(_) => return Err(HandlerError::HandshakeTimeout(self.read_timeout)),
            // Connected and closed without a byte (a TCP health check): fine.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(HandlerError::Client(e)),
            Ok(Ok(())) => client.buffered()[0],
        };
        match first {
            0x05 => self.socks5.serve(ctx, client, conn).await,
            0x04 => self.socks4.serve(ctx, client, conn).await,
            // Everything else goes to HTTP, which answers garbage with a 400.
            _ => self.http.serve(ctx, client, conn).await,
        }
    }
}
