//! Connectors: what is said to a node of a chain so that it connects further —
//! to the next hop's node, or for the last hop to the target.
//!
//! Each connector runs on the stream that reaches its node and, on success,
//! hands back the same stream now carrying the far end's bytes. How it failed
//! matters to the selector, so the error says whose fault it was:
//!
//! * [`ConnectError::Refused`]: the node answered in its protocol that it could
//!   not reach what was asked (HTTP 5xx, a SOCKS error reply). The node is fine;
//!   the next hop's node (or the target) is not.
//! * [`ConnectError::Node`]: the node itself failed — no answer, garbage,
//!   credentials refused, too slow. The node is counted as failed.

pub mod http;
pub mod relay;
pub mod socks;

use std::io;
use std::time::Duration;

use super::stream::Outbound;
use crate::config::chain::{ConnectorConfig, ConnectorType};

/// How a connector's request failed, and whose fault it was.
#[derive(Debug)]
pub enum ConnectError {
    /// The node could not reach the address asked for (its answer, in its
    /// protocol); the error kind says how (refused, unreachable, timed out).
    Refused(io::Error),
    /// The node failed to speak its protocol.
    Node(io::Error),
}

impl ConnectError {
    pub(crate) fn node(kind: io::ErrorKind, msg: impl Into<String>) -> Self {
        ConnectError::Node(io::Error::new(kind, msg.into()))
    }

    pub(crate) fn refused(kind: io::ErrorKind, msg: impl Into<String>) -> Self {
        ConnectError::Refused(io::Error::new(kind, msg.into()))
    }
}

impl From<io::Error> for ConnectError {
    /// An I/O error on the way to the node is the node's failure.
    fn from(e: io::Error) -> Self {
        ConnectError::Node(e)
    }
}

/// A node's connector, built once from its config.
#[derive(Debug)]
pub enum Connector {
    Http(http::HttpConnector),
    Socks5(socks::Socks5Connector),
    Socks4(socks::Socks4Connector),
    Relay(relay::RelayConnector),
    /// A virtual node: no protocol, the stream already reaches the target.
    Virtual,
}

impl Connector {
    pub fn new(cfg: &ConnectorConfig) -> Connector {
        match cfg.kind {
            ConnectorType::Http => Connector::Http(http::HttpConnector::new(cfg)),
            ConnectorType::Socks5 => Connector::Socks5(socks::Socks5Connector::new(cfg)),
            ConnectorType::Socks4 => Connector::Socks4(socks::Socks4Connector::new(cfg)),
            ConnectorType::Relay => Connector::Relay(relay::RelayConnector::new(cfg)),
            ConnectorType::Virtual => Connector::Virtual,
        }
    }

    /// Ask the node at the end of `stream` to connect to `target` (`host:port`),
    /// within `limit`.
    pub async fn connect(
        &self,
        stream: Outbound,
        target: &str,
        limit: Duration,
    ) -> Result<Outbound, ConnectError> {
        let work = async {
            match self {
                Connector::Http(c) => c.connect(stream, Target::parse(target)?).await,
                Connector::Socks5(c) => c.connect(stream, Target::parse(target)?).await,
                Connector::Socks4(c) => c.connect(stream, Target::parse(target)?).await,
                Connector::Relay(c) => c.connect(stream, Target::parse(target)?).await,
                Connector::Virtual => Ok(stream),
            }
        };
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::node(
                io::ErrorKind::TimedOut,
                format!("no answer to the connect request for {target} within {limit:?}"),
            )),
        }
    }
}

/// What a connector asks its node to reach: `host:port` as written (for
/// messages) and split once, here, for every protocol.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The name or IP literal, without brackets.
    pub host: &'a str,
    pub port: u16,
    /// The target as it was asked for, for error messages.
    text: &'a str,
}

impl<'a> Target<'a> {
    pub fn parse(text: &'a str) -> Result<Self, ConnectError> {
        let (host, port) = split_target(text)?;
        Ok(Target { host, port, text })
    }
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text)
    }
}

/// `host:port` (IPv6 literals bracketed) as host and port.
pub(crate) fn split_target(target: &str) -> Result<(&str, u16), ConnectError> {
    let bad = || {
        ConnectError::refused(
            io::ErrorKind::InvalidInput,
            format!("{target:?}: expected host:port"),
        )
    };
    let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split() {
        assert_eq!(split_target("a.b:80").unwrap(), ("a.b", 80));
        assert_eq!(split_target("[::1]:443").unwrap(), ("::1", 443));
        assert!(split_target("a.b").is_err());
        assert!(split_target(":80").is_err());
    }
}
