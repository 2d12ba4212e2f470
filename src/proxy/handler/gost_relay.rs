//! The `relay` handler: GOST's relay protocol, server side (the wire format is
//! [`crate::proxy::relay_proto`]).
//!
//! ```yaml
//! services:
//! - name: relay-0
//!   addr: ":8420"
//!   handler:
//!     type: relay
//!     auth: {username: user, password: pass}   # optional: the user auth feature
//!     metadata:
//!       readTimeout: 15s       # the whole request must arrive by then
//!       udpBufferSize: 4096    # largest datagram of a UDP request
//!   listener: {type: tcp}      # or tls (GOST's relay+tls)
//! ```
//!
//! One request per connection, then the tunnel:
//!
//! * **proxy** (no forwarder): the request's address feature names the target;
//!   it is reached through the service's router (its `interface`, its chain),
//!   the client gets status 0 and the bytes flow. A request for UDP (flag
//!   `0x80` or the network feature) gets a UDP socket towards the target and the
//!   datagrams travel on the stream as `LEN | payload`.
//! * **forward** (with a `forwarder:`): every connection goes to one of the
//!   forwarder's nodes, picked by its selector (the next node tried when one
//!   fails, passive health as for a `tcp` service); a request that names an
//!   address is refused with `forbidden`, as GOST does.
//!
//! Answers: `unauthorized` (2) for missing or wrong credentials, `bad request`
//! (1) for a malformed frame or a command other than CONNECT, `forbidden` (3)
//! for BIND (off, as GOST's default) or an address in forward mode, `timeout`
//! (4), `host unreachable` (6), `network unreachable` (7) when the target cannot
//! be reached, `service unavailable` (5) when no forwarder node can. A frame of
//! another version is dropped without an answer (there is no version to answer
//! in). Every outcome is counted once in the handler's counters.
//!
//! GOST's server `nodelay: false` (the default) holds the OK status back until
//! the target's first bytes; this handler always answers at once. GOST's
//! clients read the status whenever it comes, so both of its modes work, and a
//! client that waits for the status (`nodelay: true`) works with a target that
//! never speaks first.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;

use super::conn::BufConn;
use super::socks::within;
use super::{
    ConnInfo, Context, FromOptions, Handler, HandlerError, HandlerOptions, Io, Outcome, Protocol,
};
pub use crate::config::service::handler::RelayMetadata;
use crate::proxy::balance::Balancer;
use crate::proxy::chain::stream::Outbound;
use crate::proxy::egress;
use crate::proxy::relay_proto::{self as wire, Addr, Request, cmd, status};
use crate::proxy::stats::inc;

/// The `handler:` section of a `relay` service, minus `type`.
pub type RelayHandlerOptions = HandlerOptions<RelayMetadata>;

/// The relay protocol of a [`RelayHandler`].
pub struct Relay {
    opts: RelayHandlerOptions,
}

/// A GOST relay server for one service: see [`Handler`] for its use.
pub type RelayHandler = Handler<Relay>;

impl FromOptions for Relay {
    type Metadata = RelayMetadata;

    fn from_options(opts: RelayHandlerOptions) -> Self {
        Self { opts }
    }
}

impl Protocol for Relay {
    fn kind(&self) -> &'static str {
        "relay"
    }

    async fn serve<S: Io>(&self, ctx: &Context, mut client: BufConn<S>, conn: ConnInfo) -> Outcome {
        let req = within(
            &conn,
            self.opts.metadata.read_timeout,
            read_request(&mut client),
        )
        .await?;
        inc(&ctx.stats.requests);
        let user = req.features.auth.as_ref().map(|a| a.username.as_str());
        tracing::debug!(peer = %conn.peer, cmd = req.cmd, target = ?req.features.addr, ?user, "relay request");
        if let Some(want) = &self.opts.auth {
            let (u, p) = req.features.auth.as_ref().map_or((&[][..], &[][..]), |a| {
                (a.username.as_bytes(), a.password.expose().as_bytes())
            });
            if !want.matches(u, p) {
                return answer(&mut client, status::UNAUTHORIZED, HandlerError::AuthFailed).await;
            }
        }
        match req.command() {
            cmd::CONNECT => {}
            cmd::BIND => {
                return answer(
                    &mut client,
                    status::FORBIDDEN,
                    HandlerError::Unsupported("relay BIND (bind is off)".into()),
                )
                .await;
            }
            c => {
                return answer(
                    &mut client,
                    status::BAD_REQUEST,
                    HandlerError::Unsupported(format!("relay command {c:#04x}")),
                )
                .await;
            }
        }
        let udp = req.is_udp();
        let target = match (&ctx.forward, req.features.addr) {
            (Some(_), Some(addr)) => {
                return answer(
                    &mut client,
                    status::FORBIDDEN,
                    HandlerError::BadRequest(format!(
                        "address {addr} asked of a relay that forwards to its nodes"
                    )),
                )
                .await;
            }
            (Some(balancer), None) => Target::Node(balancer.clone()),
            (None, Some(addr)) => match checked(addr) {
                Some(a) => Target::Addr(a),
                None => {
                    return answer(
                        &mut client,
                        status::BAD_REQUEST,
                        HandlerError::BadRequest("malformed target name".into()),
                    )
                    .await;
                }
            },
            (None, None) => {
                return answer(
                    &mut client,
                    status::BAD_REQUEST,
                    HandlerError::BadRequest("no target address".into()),
                )
                .await;
            }
        };
        if udp {
            return self.udp(ctx, client, conn, target).await;
        }
        let (name, upstream) = match target.dial(ctx, conn.peer.ip()).await {
            Ok(x) => x,
            Err(failed) => return answer_target_failed(&mut client, failed).await,
        };
        let mut upstream = upstream;
        client.write_all(&wire::status_frame(status::OK)).await?;
        ctx.tunnel(&mut client, &mut upstream, name).await
    }
}

/// Answer `code` and end the connection with `err`.
async fn answer<S: Io>(client: &mut BufConn<S>, code: u8, err: HandlerError) -> Outcome {
    client.write_all(&wire::status_frame(code)).await?;
    Err(err)
}

/// Answer a target that could not be reached (or resolved) with its status.
async fn answer_target_failed<S: Io>(
    client: &mut BufConn<S>,
    (target, code, source): (String, u8, std::io::Error),
) -> Outcome {
    answer(client, code, HandlerError::Target { target, source }).await
}

/// Read one request frame; a malformed one is answered with `bad request`
/// (a wrong version is dropped: no version to answer in).
async fn read_request<S: Io>(client: &mut BufConn<S>) -> Result<Request, HandlerError> {
    let head = client.take(wire::HEAD_LEN).await?;
    let head: [u8; wire::HEAD_LEN] = [head[0], head[1], head[2], head[3]];
    let len = wire::frame_len(head).map_err(|e| HandlerError::BadRequest(e.to_string()))?;
    let body = client.take(len - wire::HEAD_LEN).await?;
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&head);
    frame.extend_from_slice(&body);
    match Request::decode(&frame) {
        Ok(r) => Ok(r),
        Err(e) => {
            client
                .write_all(&wire::status_frame(status::BAD_REQUEST))
                .await?;
            Err(HandlerError::BadRequest(e.to_string()))
        }
    }
}

/// A name must look like a host name before it is resolved.
fn checked(addr: Addr) -> Option<Addr> {
    match &addr {
        Addr::Ip(_) => Some(addr),
        Addr::Domain(h, _) => (!h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        .then_some(addr),
    }
}

/// Where a request goes.
enum Target {
    /// The address the client named (proxy mode).
    Addr(Addr),
    /// One of the forwarder's nodes (forward mode).
    Node(Arc<Balancer>),
}

/// A failed dial: what was dialled, the status to answer, the error.
type DialError = (String, u8, io::Error);

impl Target {
    /// Connect over TCP: the target's name and the stream.
    async fn dial(&self, ctx: &Context, client: IpAddr) -> Result<(String, Outbound), DialError> {
        match self {
            Target::Addr(a) => {
                let name = a.to_string();
                match ctx.router.dial(&name, client).await {
                    Ok(s) => Ok((name, s)),
                    Err(e) => Err((name, dial_status(&e), e)),
                }
            }
            Target::Node(balancer) => {
                let mut tried = Vec::new();
                let mut last = None;
                while let Some(node) = balancer.pick(client, &tried) {
                    match ctx.router.dial(node.addr(), client).await {
                        Ok(s) => {
                            node.connect_ok();
                            return Ok((node.addr().to_string(), s));
                        }
                        Err(e) => {
                            let benched = balancer.node_failed(&node);
                            tracing::debug!(node = node.label(), error = %e, benched, "relay: forwarder node failed");
                            last = Some((node.addr().to_string(), e));
                            tried.push(node);
                        }
                    }
                }
                Err(match last {
                    Some((name, e)) => (name, status::HOST_UNREACHABLE, e),
                    None => (
                        "the forwarder's nodes".into(),
                        status::SERVICE_UNAVAILABLE,
                        io::Error::new(io::ErrorKind::NotConnected, "no node available"),
                    ),
                })
            }
        }
    }

    /// The address of a UDP target (a node's address, or the name resolved).
    async fn udp_addr(
        &self,
        ctx: &Context,
        client: IpAddr,
    ) -> Result<(String, SocketAddr), DialError> {
        let name = match self {
            Target::Addr(a) => a.to_string(),
            Target::Node(b) => match b.pick(client, &[]) {
                Some(n) => n.addr().to_string(),
                None => {
                    return Err((
                        "the forwarder's nodes".into(),
                        status::SERVICE_UNAVAILABLE,
                        io::Error::new(io::ErrorKind::NotConnected, "no node available"),
                    ));
                }
            },
        };
        match ctx.router.resolve(&name).await {
            Ok(addrs) => match addrs.first() {
                Some(a) => Ok((name, *a)),
                None => Err((
                    name,
                    status::HOST_UNREACHABLE,
                    io::ErrorKind::NotFound.into(),
                )),
            },
            Err(e) => Err((name, status::HOST_UNREACHABLE, e)),
        }
    }
}

/// The status that says why a dial failed (GOST answers every dial failure
/// with `network unreachable`; the kinds it has are used where they fit).
fn dial_status(e: &io::Error) -> u8 {
    match e.kind() {
        io::ErrorKind::TimedOut => status::TIMEOUT,
        io::ErrorKind::PermissionDenied => status::FORBIDDEN,
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NotFound => status::HOST_UNREACHABLE,
        _ => status::NETWORK_UNREACHABLE,
    }
}

impl Relay {
    /// UDP over the relay stream: one UDP socket towards the target, datagrams
    /// framed `LEN | payload` both ways, until the client closes the stream.
    async fn udp<S: Io>(
        &self,
        ctx: &Context,
        mut client: BufConn<S>,
        conn: ConnInfo,
        target: Target,
    ) -> Outcome {
        if ctx.router.chain.is_some() {
            // A chain carries streams; datagrams would leave from here, around it.
            return answer(
                &mut client,
                status::SERVICE_UNAVAILABLE,
                HandlerError::Unsupported(
                    "UDP over relay on a service with a chain (the datagrams would bypass it)"
                        .into(),
                ),
            )
            .await;
        }
        let (name, addr) = match target.udp_addr(ctx, conn.peer.ip()).await {
            Ok(x) => x,
            Err(failed) => return answer_target_failed(&mut client, failed).await,
        };
        let socket = match egress::udp_connected(&ctx.router.exits, addr).await {
            Ok(s) => s,
            Err(e) => {
                return answer(
                    &mut client,
                    dial_status(&e),
                    HandlerError::Target {
                        target: name,
                        source: e,
                    },
                )
                .await;
            }
        };
        client.write_all(&wire::status_frame(status::OK)).await?;
        inc(&ctx.stats.udp_associations);
        udp_loop(ctx, client, &socket, self.opts.metadata.udp_buffer_size).await
    }
}

/// Move datagrams between the framed stream and `socket` until the client
/// closes. A datagram over `max` bytes is dropped and counted either way.
async fn udp_loop<S: Io>(
    ctx: &Context,
    mut client: BufConn<S>,
    socket: &UdpSocket,
    max: usize,
) -> Outcome {
    let mut buf = vec![0u8; max + 1];
    loop {
        // Send every complete frame already buffered.
        loop {
            let b = client.buffered();
            let Some(len) = b
                .get(..2)
                .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
            else {
                break;
            };
            if b.len() < 2 + len {
                break;
            }
            if len <= max {
                // A send error (ICMP refused from an earlier datagram) concerns
                // one datagram, not the session.
                let _ = socket.send(&b[2..2 + len]).await;
            } else {
                inc(&ctx.stats.udp_dropped);
            }
            client.consume(2 + len);
        }
        tokio::select! {
            read = client.fill() => match read {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(HandlerError::Client(e)),
            },
            recv = socket.recv(&mut buf) => match recv {
                Ok(n) if n <= max => {
                    // n ≤ 65535: udpBufferSize is bounded at load.
                    if let Some(frame) = wire::encode_datagram(&buf[..n]) {
                        client.write_all(&frame).await?;
                    }
                }
                Ok(_) => inc(&ctx.stats.udp_dropped),
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable) => {}
                Err(e) => return Err(HandlerError::Target { target: "udp socket".into(), source: e }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_at_load() {
        use crate::config::service::handler::HandlerConfig;
        let h = |y: &str| -> HandlerConfig { crate::config::from_yaml(y).unwrap() };
        let ok = h(
            "{type: relay, metadata: {readTimeout: 5s, nodelay: true, bind: false, udpBufferSize: 1500}}",
        );
        ok.validate("h").unwrap();
        let m = ok.options::<RelayMetadata>().metadata;
        assert_eq!(m.read_timeout, std::time::Duration::from_secs(5));
        assert_eq!(m.udp_buffer_size, 1500);
        let bind = h("{type: relay, metadata: {bind: true}}").validate("h");
        assert_eq!(bind.unwrap_err().field, "h.metadata.bind");
        let udp = h("{type: relay, metadata: {udp: true}}").validate("h");
        assert_eq!(udp.unwrap_err().field, "h.metadata.udp");
        let nd = h("{type: socks5, metadata: {nodelay: true}}").validate("h");
        assert_eq!(nd.unwrap_err().field, "h.metadata.nodelay");
    }

    #[test]
    fn names_are_checked_and_failures_mapped() {
        assert!(checked(Addr::Domain("a-b.c_d".into(), 1)).is_some());
        assert!(checked(Addr::Domain("a b".into(), 1)).is_none());
        assert!(checked(Addr::Domain(String::new(), 1)).is_none());
        assert_eq!(
            dial_status(&io::ErrorKind::TimedOut.into()),
            status::TIMEOUT
        );
        assert_eq!(
            dial_status(&io::ErrorKind::ConnectionRefused.into()),
            status::HOST_UNREACHABLE
        );
        assert_eq!(
            dial_status(&io::ErrorKind::Other.into()),
            status::NETWORK_UNREACHABLE
        );
    }
}
