//! Dialers: how a node is reached — `tcp` (a plain connection), `tls` (TLS on
//! top of it, rustls, the node's certificate verified by default) or `virtual`
//! (no node: the connection is the target's own).
//!
//! The first hop's node is dialed from this host through the router, leaving
//! through the node's (or hop's, or service's) `interface`. A later hop's node is
//! already reached through the tunnel of the hop before; its dialer only adds
//! what it layers on top (TLS).

use std::io;
use std::time::Duration;

use super::connector::ConnectError;
use super::stream::Outbound;
use crate::config::chain::{DialerConfig, DialerType};
use crate::proxy::tls::{TlsClient, TlsError};

#[derive(Debug)]
pub enum Dialer {
    Tcp,
    Tls {
        client: TlsClient,
        handshake_timeout: Duration,
    },
    Virtual,
}

impl Dialer {
    /// Built once per chain: a `tls` dialer reads its CA and certificate files now.
    pub fn new(cfg: &DialerConfig) -> Result<Dialer, TlsError> {
        Ok(match cfg.kind {
            DialerType::Tcp => Dialer::Tcp,
            DialerType::Virtual => Dialer::Virtual,
            DialerType::Tls => {
                let tls = cfg.tls.clone().unwrap_or_default();
                Dialer::Tls {
                    client: TlsClient::new(&tls.client_config())?,
                    handshake_timeout: cfg.metadata.handshake_timeout(),
                }
            }
        })
    }

    /// What this dialer layers on a stream that reaches the node at `addr`
    /// (`host:port`; the host is the TLS server name unless `serverName` is set).
    /// A failure is the node's.
    pub async fn wrap(&self, stream: Outbound, addr: &str) -> Result<Outbound, ConnectError> {
        match self {
            Dialer::Tcp | Dialer::Virtual => Ok(stream),
            Dialer::Tls {
                client,
                handshake_timeout,
            } => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                match tokio::time::timeout(*handshake_timeout, client.connect(stream, host)).await {
                    Ok(Ok(s)) => Ok(Outbound::Stream(Box::new(s))),
                    Ok(Err(e)) => Err(ConnectError::node(
                        e.kind(),
                        format!("TLS handshake with {addr}: {e}"),
                    )),
                    Err(_) => Err(ConnectError::node(
                        io::ErrorKind::TimedOut,
                        format!("TLS handshake with {addr} took over {handshake_timeout:?}"),
                    )),
                }
            }
        }
    }
}
