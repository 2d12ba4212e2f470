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

use std::time::Duration;

use super::conn::BufConn;
use super::http::Http;
use super::socks::{Socks4, Socks5};
use super::{
    ConnInfo, Context, FromOptions, Handler, HandlerError, HandlerOptions, Io, Outcome, Protocol,
};
pub use crate::config::service::handler::AutoMetadata;

/// The `handler:` section of an `auto` service, minus `type`: the union of the
/// `http` and `socks5` options.
pub type AutoHandlerOptions = HandlerOptions<AutoMetadata>;

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
            http: Http::from_options(with(&opts, m.http.clone())),
            socks5: Socks5::from_options(with(&opts, m.socks5.clone())),
            socks4: Socks4::from_options(with(&opts, m.socks4.clone())),
            read_timeout: m.socks5.read_timeout,
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
