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
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::BufConn;
use super::http::{
    HttpHandler, HttpHandlerOptions, HttpMetadata, default_response_timeout, validate_headers,
};
use super::socks::{
    Socks4Handler, Socks4HandlerOptions, Socks4Metadata, Socks5Handler, Socks5HandlerOptions,
    Socks5Metadata, default_udp_buffer_size, validate_udp_buffer,
};
use super::{
    ConnInfo, HandlerError, HandlerStats, counted, default_read_timeout, deserialize_go_duration,
    validate_timeout,
};
use crate::config::FieldError;
use crate::config::auth::AuthConfig;
use crate::proxy::relay::RelayOpts;
use crate::proxy::router::Router;

/// The `handler:` section of an `auto` service, minus `type`: the union of the
/// `http` and `socks5` options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoHandlerOptions {
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub metadata: AutoMetadata,
}

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

impl AutoHandlerOptions {
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        let m = &self.metadata;
        validate_udp_buffer(m.udp_buffer_size, field)?;
        validate_headers(&m.header, field)?;
        validate_timeout(m.read_timeout, format!("{field}.metadata.readTimeout"))?;
        validate_timeout(
            m.response_timeout,
            format!("{field}.metadata.responseTimeout"),
        )
    }
}

/// One port, three protocols. All three share one [`HandlerStats`].
pub struct AutoHandler {
    http: HttpHandler,
    socks5: Socks5Handler,
    socks4: Socks4Handler,
    read_timeout: Duration,
    stats: Arc<HandlerStats>,
}

impl AutoHandler {
    pub fn new(opts: AutoHandlerOptions, router: Router) -> Self {
        let stats = Arc::new(HandlerStats::default());
        let m = &opts.metadata;
        let http = HttpHandlerOptions {
            auth: opts.auth.clone(),
            metadata: HttpMetadata {
                header: m.header.clone(),
                read_timeout: m.read_timeout,
                response_timeout: m.response_timeout,
            },
        };
        let socks5 = Socks5HandlerOptions {
            auth: opts.auth.clone(),
            metadata: Socks5Metadata {
                read_timeout: m.read_timeout,
                udp: m.udp,
                udp_buffer_size: m.udp_buffer_size,
            },
        };
        let socks4 = Socks4HandlerOptions {
            auth: opts.auth.clone(),
            metadata: Socks4Metadata {
                read_timeout: m.read_timeout,
            },
        };
        Self {
            http: HttpHandler::with_stats(http, router.clone(), stats.clone()),
            socks5: Socks5Handler::with_stats(socks5, router.clone(), stats.clone()),
            socks4: Socks4Handler::with_stats(socks4, router, stats.clone()),
            read_timeout: m.read_timeout,
            stats,
        }
    }

    /// Idle timeouts and byte counter for tunnels, on all three protocols.
    pub fn set_relay_opts(&mut self, opts: RelayOpts) {
        self.http.set_relay_opts(opts.clone());
        self.socks5.set_relay_opts(opts.clone());
        self.socks4.set_relay_opts(opts);
    }

    pub fn stats(&self) -> &Arc<HandlerStats> {
        &self.stats
    }

    pub async fn handle<S>(&self, stream: S, conn: ConnInfo) -> Result<(), HandlerError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        counted(
            &self.stats,
            "auto",
            &conn,
            self.serve(BufConn::new(stream), conn),
        )
        .await
    }

    async fn serve<S>(&self, mut client: BufConn<S>, conn: ConnInfo) -> Result<(), HandlerError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let first = match tokio::time::timeout(self.read_timeout, client.fill_to(1)).await {
            Err(_) => return Err(HandlerError::HandshakeTimeout(self.read_timeout)),
            // Connected and closed without a byte (a TCP health check): fine.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(HandlerError::Client(e)),
            Ok(Ok(())) => client.buffered()[0],
        };
        match first {
            0x05 => self.socks5.serve(client, conn).await,
            0x04 => self.socks4.serve(client, conn).await,
            // Everything else goes to HTTP, which answers garbage with a 400.
            _ => self.http.serve(client, conn).await,
        }
    }
}
