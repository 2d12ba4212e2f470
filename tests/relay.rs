//! GOST's relay protocol end to end: this gateway's `relay` connector (a chain
//! hop) talking to its `relay` handler, over loopback, and raw relay frames
//! written byte by byte against the handler.
//!
//! No real GOST takes part: Debian does not package it (its `gost` names are
//! GOST cryptography), so interoperability rests on the wire format being
//! GOST's byte for byte — the unit tests of `proxy::relay_proto` check frames
//! laid out from the spec — and on the raw-frame tests here, which speak to
//! the handler exactly as GOST's connector does (request and first data in one
//! segment, status read afterwards).
//!
//! The relay service leaves from 127.0.0.2 (`interface`), so an origin that
//! reports `peer 127.0.0.2` proves the connection went through the relay hop.

mod chain_support;
mod proxy_common;

use std::net::SocketAddr;
use std::time::Duration;

use chain_support::*;
use gateway::proxy::ServiceSet;
use proxy_common::{Backend, start, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const LIMIT: Duration = Duration::from_secs(20);

/// A relay server (auth `u`/`p`, leaving from 127.0.0.2) and its address.
fn relay_server(extra: &str) -> (ServiceSet, SocketAddr) {
    let set = start(&format!(
        "services: [{{name: relay, addr: \"127.0.0.1:0\", interface: 127.0.0.2, handler: {{type: relay, auth: {{username: u, password: p}}{extra}}}, listener: {{type: tcp}}}}]\n"
    ));
    let addr = set.local_addr("relay").unwrap();
    (set, addr)
}

/// An `auto` entry service whose chain is one relay hop with these nodes
/// (YAML flow items).
fn chain_entry(nodes: &str) -> (ServiceSet, SocketAddr) {
    let set = start(&format!(
        "services: [{{name: e, addr: \"127.0.0.1:0\", handler: {{type: auto, chain: c}}, listener: {{type: tcp}}}}]\nchains: [{{name: c, hops: [{{name: h, selector: {{strategy: round, maxFails: 1, failTimeout: 60s}}, nodes: [{nodes}]}}]}}]\n"
    ));
    let addr = set.local_addr("e").unwrap();
    (set, addr)
}

fn relay_node(name: &str, addr: SocketAddr, pass: &str, nodelay: bool) -> String {
    format!(
        "{{name: {name}, addr: \"{addr}\", connector: {{type: relay, auth: {{username: u, password: {pass}}}, metadata: {{nodelay: {nodelay}}}}}}}"
    )
}

/// HTTP CONNECT and SOCKS5 clients reach the origin through the relay hop, in
/// both of the connector's modes; the relay server counts each request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_through_relay_hop_reaches_origin() {
    let (relay, raddr) = relay_server("");
    let origin = Origin::start().await;
    for nodelay in [false, true] {
        let (_e, entry) = chain_entry(&relay_node("r", raddr, "p", nodelay));
        for _ in 0..3 {
            let (code, body) = http_connect(entry, origin.addr).await;
            assert_eq!(
                (code, body.as_str()),
                (200, "peer 127.0.0.2\n"),
                "nodelay {nodelay}"
            );
            let (rep, body) = socks5_connect(entry, origin.addr).await;
            assert_eq!(
                (rep, body.as_str()),
                (0, "peer 127.0.0.2\n"),
                "nodelay {nodelay}"
            );
        }
    }
    assert_eq!(origin.from("127.0.0.2"), 12, "{:?}", origin.peers);
    assert!(
        wait_for(LIMIT, || relay
            .handler_stats("relay")
            .is_some_and(|h| h.completed == 12))
        .await,
        "{:?}",
        relay.handler_stats("relay")
    );
}

/// A client-first exchange through the relay hop: an echo backend answers what
/// the client sends, byte for byte, in both directions (the bytes the client
/// sends before the status arrives are not lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_through_relay_hop_to_echo_backend() {
    let (_relay, raddr) = relay_server("");
    let backend = Backend::start("echo").await;
    for nodelay in [false, true] {
        let (_e, entry) = chain_entry(&relay_node("r", raddr, "p", nodelay));
        let mut s = TcpStream::connect(entry).await.unwrap();
        // SOCKS5 CONNECT, then data at once.
        let SocketAddr::V4(t) = backend.addr else {
            unreachable!()
        };
        let mut req = vec![5, 1, 0, 5, 1, 0, 1];
        req.extend_from_slice(&t.ip().octets());
        req.extend_from_slice(&t.port().to_be_bytes());
        s.write_all(&req).await.unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(head[3], 0);
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut want = b"echo\n".to_vec();
        want.extend_from_slice(&payload);
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            w.write_all(&payload).await.unwrap();
            w
        });
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(LIMIT, r.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(got == want, "nodelay {nodelay}: echoed bytes differ");
        drop(writer.await.unwrap());
    }
}

/// The wrong password: the relay answers `unauthorized` and counts it; with
/// `nodelay: true` the connector knows before answering its client, which gets
/// HTTP 502 / a SOCKS failure reply; with GOST's default `nodelay: false` the
/// client was already told "connected" and sees the connection close without
/// a byte of the target's. The origin is never reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused() {
    let (relay, raddr) = relay_server("");
    let origin = Origin::start().await;
    let (_e, entry) = chain_entry(&relay_node("r", raddr, "wrong", true));
    assert_eq!(http_connect(entry, origin.addr).await.0, 502);
    assert_ne!(socks5_connect(entry, origin.addr).await.0, 0);
    let (_e2, entry2) = chain_entry(&relay_node("r", raddr, "wrong", false));
    assert_eq!(
        http_connect(entry2, origin.addr).await,
        (200, String::new())
    );
    assert_eq!(origin.peers.lock().unwrap().len(), 0);
    assert!(
        wait_for(LIMIT, || relay
            .handler_stats("relay")
            .is_some_and(|h| h.auth_failed == 3))
        .await,
        "{:?}",
        relay.handler_stats("relay")
    );
    // Raw: no credentials at all get status 2 too.
    let mut s = TcpStream::connect(raddr).await.unwrap();
    s.write_all(&[1, 1, 0, 0]).await.unwrap();
    let mut resp = [0u8; 4];
    s.read_exact(&mut resp).await.unwrap();
    assert_eq!(resp, [1, 2, 0, 0]);
}

/// A hop of two relay nodes, the first down (nothing listens): every client
/// gets through, the selector moving on to the live node, and the dead one is
/// benched after its first failure. With every node down the client gets the
/// error other connectors give: 502, a SOCKS failure reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_hop_down_moves_on_then_fails_clearly() {
    let (_relay, raddr) = relay_server("");
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let origin = Origin::start().await;
    let nodes = format!(
        "{}, {}",
        relay_node("dead", dead, "p", true),
        relay_node("live", raddr, "p", true)
    );
    let (set, entry) = chain_entry(&nodes);
    for i in 0..6 {
        let (code, body) = http_connect(entry, origin.addr).await;
        assert_eq!(
            (code, body.as_str()),
            (200, "peer 127.0.0.2\n"),
            "connection {i}"
        );
    }
    drop(set);
    let dead2 = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let nodes = format!(
        "{}, {}",
        relay_node("dead", dead, "p", true),
        relay_node("dead2", dead2, "p", false)
    );
    let (_set, entry) = chain_entry(&nodes);
    assert_eq!(http_connect(entry, origin.addr).await.0, 502);
    assert_ne!(socks5_connect(entry, origin.addr).await.0, 0);
    // The relay reached, its target refusing: status 6, the client's error.
    let (_e, entry) = chain_entry(&relay_node("live", raddr, "p", true));
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    assert_eq!(http_connect(entry, closed).await.0, 502);
}

/// What GOST's connector sends, byte for byte: request and first data in one
/// segment; the handler answers status 0 and relays (a name target).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_gost_style_request_with_data_behind_it() {
    let (_relay, raddr) = relay_server("");
    let backend = Backend::start("b").await;
    let port = backend.addr.port().to_be_bytes();
    let mut frame = vec![1, 1, 0, 0];
    frame.extend_from_slice(&[1, 0, 4, 1, b'u', 1, b'p']);
    let name = b"localhost";
    frame.extend_from_slice(&[2, 0, (name.len() + 4) as u8, 3, name.len() as u8]);
    frame.extend_from_slice(name);
    frame.extend_from_slice(&port);
    let flen = (frame.len() - 4) as u16;
    frame[2..4].copy_from_slice(&flen.to_be_bytes());
    frame.extend_from_slice(b"hello");
    let mut s = TcpStream::connect(raddr).await.unwrap();
    s.write_all(&frame).await.unwrap();
    let mut got = [0u8; 4 + 2 + 5];
    tokio::time::timeout(LIMIT, s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"\x01\x00\x00\x00b\nhello");
}

/// Malformed requests are answered (status 1) or dropped, and counted; the
/// handler goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_counted() {
    let (relay, raddr) = relay_server("");
    let cases: [(&[u8], Option<[u8; 4]>); 4] = [
        // Version 2: dropped, nothing to answer in.
        (&[2, 1, 0, 0], None),
        // A feature claiming 10 bytes of 3.
        (&[1, 1, 0, 6, 1, 0, 10, 1, b'a', b'b'], Some([1, 1, 0, 0])),
        // Unknown feature type.
        (&[1, 1, 0, 3, 9, 0, 0], Some([1, 1, 0, 0])),
        // HTTP instead of relay.
        (b"GET / HTTP/1.1\r\n\r\n", None),
    ];
    for (bytes, want) in cases {
        let mut s = TcpStream::connect(raddr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut all = Vec::new();
        tokio::time::timeout(LIMIT, s.read_to_end(&mut all))
            .await
            .unwrap()
            .unwrap();
        match want {
            Some(w) => assert_eq!(all, w, "{bytes:?}"),
            None => assert!(all.is_empty(), "{bytes:?}: {all:?}"),
        }
    }
    assert!(
        wait_for(LIMIT, || relay
            .handler_stats("relay")
            .is_some_and(|h| h.bad_request == 4))
        .await,
        "{:?}",
        relay.handler_stats("relay")
    );
    // Still serving.
    let origin = Origin::start().await;
    let (_e, entry) = chain_entry(&relay_node("r", raddr, "p", false));
    assert_eq!(http_connect(entry, origin.addr).await.0, 200);
}

/// Forward mode: a relay handler with a forwarder relays every request that
/// names no address to its nodes; one that names an address is refused with
/// status 3 (forbidden), as GOST does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_relays_to_the_forwarder_nodes() {
    let backend = Backend::start("fwd").await;
    let set = start(&format!(
        "services: [{{name: relay, addr: \"127.0.0.1:0\", handler: {{type: relay}}, listener: {{type: tcp}}, forwarder: {{nodes: [{{name: n, addr: \"{}\"}}]}}}}]\n",
        backend.addr
    ));
    let raddr = set.local_addr("relay").unwrap();
    let mut s = TcpStream::connect(raddr).await.unwrap();
    s.write_all(&[1, 1, 0, 0]).await.unwrap();
    let mut got = [0u8; 8];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"\x01\x00\x00\x00fwd\n");
    // Naming an address: forbidden.
    let mut s = TcpStream::connect(raddr).await.unwrap();
    s.write_all(&[1, 1, 0, 10, 2, 0, 7, 1, 127, 0, 0, 1, 0, 80])
        .await
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, [1, 3, 0, 0]);
    assert!(
        set.balancer("relay").is_some(),
        "the forwarder's nodes are shown"
    );
}

/// UDP over relay (flag 0x80): datagrams framed `LEN | payload` on the stream
/// reach a UDP echo server and its replies come back framed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_over_relay_stream() {
    let (relay, raddr) = relay_server("");
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let eaddr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let SocketAddr::V4(t) = eaddr else {
        unreachable!()
    };
    let mut frame = vec![1, 0x81, 0, 17, 1, 0, 4, 1, b'u', 1, b'p', 2, 0, 7, 1];
    frame.extend_from_slice(&t.ip().octets());
    frame.extend_from_slice(&t.port().to_be_bytes());
    let mut s = TcpStream::connect(raddr).await.unwrap();
    s.write_all(&frame).await.unwrap();
    let mut resp = [0u8; 4];
    s.read_exact(&mut resp).await.unwrap();
    assert_eq!(resp, [1, 0, 0, 0]);
    for msg in [&b"one"[..], b"second datagram", b""] {
        let mut d = (msg.len() as u16).to_be_bytes().to_vec();
        d.extend_from_slice(msg);
        s.write_all(&d).await.unwrap();
        let mut len = [0u8; 2];
        tokio::time::timeout(LIMIT, s.read_exact(&mut len))
            .await
            .unwrap()
            .unwrap();
        let mut back = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
    drop(s);
    assert!(
        wait_for(LIMIT, || relay
            .handler_stats("relay")
            .is_some_and(|h| h.udp_associations == 1 && h.completed == 1))
        .await,
        "{:?}",
        relay.handler_stats("relay")
    );
}
