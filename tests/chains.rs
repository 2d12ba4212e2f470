//! Forwarding chains end to end (GOST's `chains:`): services started from YAML
//! through the real config loader, real proxies on loopback — Debian's
//! tinyproxy (HTTP) and dante (SOCKS5) as hops, and this gateway's own
//! handlers — and an origin that reports the source address it saw, which tells
//! which way a connection went.
//!
//! Loopback holds all of 127.0.0.0/8, so proxies and virtual nodes can leave
//! from different source addresses (127.0.0.2, .3, ...) on one host.

mod chain_support;
mod proxy_common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chain_support::*;
use proxy_common::start;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::net::TcpListener;

/// Two hops, HTTP then SOCKS5, both Debian proxies: tinyproxy (basic auth,
/// connecting out from 127.0.0.2) then dante (taking clients from 127.0.0.2
/// only, connecting out from 127.0.0.3). The origin seeing 127.0.0.3 proves the
/// connection went through both hops in that order: straight to the origin it
/// would come from 127.0.0.1, through tinyproxy alone from 127.0.0.2, and dante
/// refuses anyone but tinyproxy. Behind an `auto` service, HTTP CONNECT and
/// SOCKS5 clients both go through the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hops_http_then_socks5_through_tinyproxy_and_dante() {
    let dir = tempfile::tempdir().unwrap();
    let (tp_port, d_port) = (free_port(), free_port());
    let _tp = tinyproxy(dir.path(), tp_port, "127.0.0.2", Some(("chain", "s3cret"))).await;
    let _d = danted(dir.path(), d_port, "127.0.0.3", "127.0.0.2/32").await;
    let origin = Origin::start().await;
    let set = start(&format!(
        r#"
services:
- name: entry
  addr: "127.0.0.1:0"
  handler: {{type: auto, chain: two-hops}}
  listener: {{type: tcp}}
chains:
- name: two-hops
  hops:
  - name: hop-http
    nodes:
    - name: tinyproxy
      addr: "127.0.0.1:{tp_port}"
      connector: {{type: http, auth: {{username: chain, password: s3cret}}}}
      dialer: {{type: tcp}}
  - name: hop-socks
    nodes:
    - name: dante
      addr: "127.0.0.1:{d_port}"
      connector: {{type: socks5}}
      dialer: {{type: tcp}}
"#
    ));
    let entry = set.local_addr("entry").unwrap();
    for _ in 0..3 {
        let (code, body) = http_connect(entry, origin.addr).await;
        assert_eq!((code, body.as_str()), (200, "peer 127.0.0.3\n"));
        let (rep, body) = socks5_connect(entry, origin.addr).await;
        assert_eq!((rep, body.as_str()), (0, "peer 127.0.0.3\n"));
    }
    assert_eq!(origin.from("127.0.0.3"), 6, "{:?}", origin.peers);
    // The target refusing is the client's error, reported in its protocol.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    assert_eq!(http_connect(entry, dead).await.0, 502);
    assert_ne!(socks5_connect(entry, dead).await.0, 0);
}

/// Wrong credentials at the HTTP hop: the node fails, the client gets 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_hop_with_wrong_credentials_fails() {
    let dir = tempfile::tempdir().unwrap();
    let tp_port = free_port();
    let _tp = tinyproxy(dir.path(), tp_port, "127.0.0.2", Some(("chain", "s3cret"))).await;
    let origin = Origin::start().await;
    let set = start(&format!(
        "services: [{{name: e, addr: \"127.0.0.1:0\", handler: {{type: http, chain: c}}, listener: {{type: tcp}}}}]\nchains: [{{name: c, hops: [{{nodes: [{{addr: \"127.0.0.1:{tp_port}\", connector: {{type: http, auth: {{username: chain, password: wrong}}}}}}]}}]}}]\n"
    ));
    let (code, _) = http_connect(set.local_addr("e").unwrap(), origin.addr).await;
    assert_eq!(code, 502);
    assert_eq!(origin.peers.lock().unwrap().len(), 0);
}

/// A CA and a server certificate for `proxy.test`, written to `dir`.
fn pki(dir: &Path) -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["proxy.test".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let path = |n: &str, text: String| {
        let p = dir.join(n);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    (
        path("ca.pem", issuer.pem()),
        path("cert.pem", leaf.pem()),
        path("key.pem", key.serialize_pem()),
    )
}

/// A `tls` dialer: the hop is this gateway's SOCKS5 handler (with auth) behind a
/// TLS listener. With the right CA and server name the chain works; with
/// another CA (verification is on by default) the handshake fails and the
/// client gets 502 — the TLS really is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_dialer_hop_verifies_and_carries_socks5() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = pki(other.path());
    let far = start(&format!(
        "services: [{{name: far, addr: \"127.0.0.1:0\", handler: {{type: socks5, auth: {{username: u, password: p}}}}, listener: {{type: tls, tls: {{certFile: \"{cert}\", keyFile: \"{key}\"}}}}}}]\n"
    ));
    let far_addr = far.local_addr("far").unwrap();
    let origin = Origin::start().await;
    let chain = |name: &str, ca: &str| {
        format!(
            "- name: {name}\n  hops:\n  - nodes:\n    - addr: \"{far_addr}\"\n      connector: {{type: socks5, auth: {{username: u, password: p}}}}\n      dialer: {{type: tls, tls: {{caFile: \"{ca}\", serverName: proxy.test}}}}\n"
        )
    };
    let near = start(&format!(
        "services:\n- {{name: good, addr: \"127.0.0.1:0\", handler: {{type: http, chain: good}}, listener: {{type: tcp}}}}\n- {{name: bad, addr: \"127.0.0.1:0\", handler: {{type: http, chain: bad}}, listener: {{type: tcp}}}}\nchains:\n{}{}",
        chain("good", &ca),
        chain("bad", &other_ca)
    ));
    let (code, body) = http_connect(near.local_addr("good").unwrap(), origin.addr).await;
    assert_eq!((code, body.as_str()), (200, "peer 127.0.0.1\n"));
    let (code, _) = http_connect(near.local_addr("bad").unwrap(), origin.addr).await;
    assert_eq!(
        code, 502,
        "a node with a certificate of another CA was accepted"
    );
    assert_eq!(origin.peers.lock().unwrap().len(), 1);
    // The far service saw TLS clients: one handshake succeeded, one failed. Its
    // connection ends after the client's, asynchronously: wait for the count
    // (a deadline, not a sleep) instead of reading it once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let s = far.stats("far").unwrap();
        if s.completed >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A hop of two nodes, round robin, `maxFails: 1`: node `broken` accepts and
/// closes at once (it counts its connections), node `good` is this gateway's
/// HTTP proxy. Every client gets through (the selector moves on to `good`), and
/// `broken` is tried once: after that failure it is benched for `failTimeout`,
/// so round robin no longer sends every other connection to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_node_is_benched_and_the_selector_moves_on() {
    let tries = Arc::new(AtomicUsize::new(0));
    let broken = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let tries = tries.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tries.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
        addr
    };
    let upstream = start(
        "services: [{name: up, addr: \"127.0.0.1:0\", handler: {type: http}, listener: {type: tcp}}]\n",
    );
    let good = upstream.local_addr("up").unwrap();
    let origin = Origin::start().await;
    let set = start(&format!(
        "services: [{{name: e, addr: \"127.0.0.1:0\", handler: {{type: socks5, chain: c}}, listener: {{type: tcp}}}}]\nchains: [{{name: c, hops: [{{name: h, selector: {{strategy: round, maxFails: 1, failTimeout: 60s}}, nodes: [{{name: broken, addr: \"{broken}\"}}, {{name: good, addr: \"{good}\"}}]}}]}}]\n"
    ));
    let entry = set.local_addr("e").unwrap();
    for i in 0..10 {
        let (rep, body) = socks5_connect(entry, origin.addr).await;
        assert_eq!(
            (rep, body.as_str()),
            (0, "peer 127.0.0.1\n"),
            "connection {i}"
        );
    }
    assert_eq!(
        tries.load(Ordering::SeqCst),
        1,
        "the failed node was not benched"
    );
    assert_eq!(origin.peers.lock().unwrap().len(), 10);
}

/// Seed 001's virtual nodes: no upstream proxy, connections go straight to the
/// target, spread over the nodes' exits by the hop's selector. Node `v0` leaves
/// from its own `interface` (127.0.0.2), `v1` from its hop's (127.0.0.3). Round
/// robin splits 100 connections 50/50 between the two source addresses; `fifo`
/// sends all 100 out of the first node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_nodes_spread_connections_over_their_interfaces() {
    let origin = Origin::start().await;
    let hop = |strategy: &str| {
        format!(
            "  hops:\n  - name: uplinks\n    interface: 127.0.0.3\n    selector: {{strategy: {strategy}}}\n    nodes:\n    - name: v0\n      addr: \":0\"\n      interface: 127.0.0.2\n      connector: {{type: virtual}}\n      dialer: {{type: virtual}}\n    - name: v1\n      addr: \":0\"\n      connector: {{type: virtual}}\n      dialer: {{type: virtual}}\n"
        )
    };
    let set = start(&format!(
        "services:\n- {{name: rr, addr: \"127.0.0.1:0\", handler: {{type: http, chain: rr}}, listener: {{type: tcp}}}}\n- {{name: ff, addr: \"127.0.0.1:0\", handler: {{type: http, chain: ff}}, listener: {{type: tcp}}}}\nchains:\n- name: rr\n{}- name: ff\n{}",
        hop("round"),
        hop("fifo")
    ));
    let rr = set.local_addr("rr").unwrap();
    for _ in 0..100 {
        let (code, _) = http_connect(rr, origin.addr).await;
        assert_eq!(code, 200);
    }
    assert_eq!(
        (origin.from("127.0.0.2"), origin.from("127.0.0.3")),
        (50, 50),
        "round robin over two uplinks"
    );
    let ff = set.local_addr("ff").unwrap();
    for _ in 0..100 {
        assert_eq!(http_connect(ff, origin.addr).await.0, 200);
    }
    assert_eq!(
        (origin.from("127.0.0.2"), origin.from("127.0.0.3")),
        (150, 50),
        "fifo keeps to the first uplink"
    );
    assert_eq!(origin.from("127.0.0.1"), 0);
}

/// A forwarding (`tcp`) service with a chain: its connections to the
/// forwarder's node go through the hop (dante, leaving from 127.0.0.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_forwarder_goes_through_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d_port = free_port();
    let _d = danted(dir.path(), d_port, "127.0.0.3", "127.0.0.1/32").await;
    let origin = Origin::start().await;
    let set = start(&format!(
        "services: [{{name: f, addr: \"127.0.0.1:0\", handler: {{type: tcp, chain: c}}, listener: {{type: tcp}}, forwarder: {{nodes: [{{addr: \"{}\"}}]}}}}]\nchains: [{{name: c, hops: [{{nodes: [{{addr: \"127.0.0.1:{d_port}\", connector: {{type: socks5}}}}]}}]}}]\n",
        origin.addr
    ));
    let addr: SocketAddr = set.local_addr("f").unwrap();
    let (_s, line) = proxy_common::connect_greeted(addr).await;
    assert_eq!(line, "peer 127.0.0.3");
}

/// A UDP echo on loopback that answers each datagram with
/// `<payload> from <source address>`.
async fn udp_echo() -> SocketAddr {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let reply = format!("{} from {}", String::from_utf8_lossy(&buf[..n]), from.ip());
            let _ = s.send_to(reply.as_bytes(), from).await;
        }
    });
    addr
}

/// A `udp` service through a SOCKS5 hop (dante, UDP ASSOCIATE, relaying from
/// 127.0.0.3) and through a virtual node (leaving from 127.0.0.2): the echo
/// names the address each datagram came from. Straight to the echo they would
/// come from 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_service_through_a_socks5_hop_and_a_virtual_node() {
    let dir = tempfile::tempdir().unwrap();
    let d_port = free_port();
    let _d = danted(dir.path(), d_port, "127.0.0.3", "127.0.0.1/32").await;
    let echo = udp_echo().await;
    let set = start(&format!(
        "services:\n- {{name: viasocks, addr: \"127.0.0.1:0\", handler: {{type: udp, chain: socks}}, listener: {{type: udp}}, client_idle_timeout: 5s, forwarder: {{nodes: [{{addr: \"{echo}\"}}]}}}}\n- {{name: viavirtual, addr: \"127.0.0.1:0\", handler: {{type: udp, chain: uplink}}, listener: {{type: udp}}, client_idle_timeout: 5s, forwarder: {{nodes: [{{addr: \"{echo}\"}}]}}}}\nchains:\n- {{name: socks, hops: [{{nodes: [{{name: dante, addr: \"127.0.0.1:{d_port}\", connector: {{type: socks5}}}}]}}]}}\n- {{name: uplink, hops: [{{nodes: [{{name: v, addr: \":0\", interface: 127.0.0.2, connector: {{type: virtual}}, dialer: {{type: virtual}}}}]}}]}}\n"
    ));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 2048];
    for (service, from) in [("viasocks", "127.0.0.3"), ("viavirtual", "127.0.0.2")] {
        let to = set.local_addr(service).unwrap();
        for i in 0..3 {
            let msg = format!("{service} {i}");
            client.send_to(msg.as_bytes(), to).await.unwrap();
            let (n, _) = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                client.recv_from(&mut buf),
            )
            .await
            .unwrap_or_else(|_| panic!("no reply through {service}"))
            .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&buf[..n]),
                format!("{msg} from {from}")
            );
        }
    }
}

/// `interface` at each level for a real (proxy) node: the node's value wins
/// over its hop's, the hop's over the service's, and with neither the
/// service's applies. The hop is this gateway's HTTP proxy, admitting only
/// the one source address each chain should leave from (access rules), so a
/// connection from any other exit is refused and the client gets 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interface_of_node_then_hop_then_service() {
    let origin = Origin::start().await;
    let proxy = |name: &str, allow: &str| {
        format!(
            "- {{name: {name}, addr: \"127.0.0.1:0\", handler: {{type: http}}, listener: {{type: tcp}}, access: {{default: deny, rules: [\"allow {allow}\"]}}}}\n"
        )
    };
    let hops = start(&format!(
        "services:\n{}{}{}",
        proxy("p5", "127.0.0.5"),
        proxy("p4", "127.0.0.4"),
        proxy("p6", "127.0.0.6")
    ));
    let at = |n: &str| hops.local_addr(n).unwrap();
    let set = start(&format!(
        "services:\n\
         - {{name: node, addr: \"127.0.0.1:0\", interface: 127.0.0.6, handler: {{type: http, chain: node}}, listener: {{type: tcp}}}}\n\
         - {{name: hop, addr: \"127.0.0.1:0\", interface: 127.0.0.6, handler: {{type: http, chain: hop}}, listener: {{type: tcp}}}}\n\
         - {{name: service, addr: \"127.0.0.1:0\", interface: 127.0.0.6, handler: {{type: http, chain: service}}, listener: {{type: tcp}}}}\n\
         chains:\n\
         - {{name: node, hops: [{{interface: 127.0.0.4, nodes: [{{addr: \"{}\", interface: 127.0.0.5}}]}}]}}\n\
         - {{name: hop, hops: [{{interface: 127.0.0.4, nodes: [{{addr: \"{}\"}}]}}]}}\n\
         - {{name: service, hops: [{{nodes: [{{addr: \"{}\"}}]}}]}}\n",
        at("p5"),
        at("p4"),
        at("p6")
    ));
    for service in ["node", "hop", "service"] {
        let (code, body) = http_connect(set.local_addr(service).unwrap(), origin.addr).await;
        assert_eq!(
            (code, body.as_str()),
            (200, "peer 127.0.0.1\n"),
            "chain {service} did not leave by its exit"
        );
    }
}

/// GOST's service `metadata: {ignoreChain: true}`: the service dials directly
/// although its `handler.chain` names a chain, here one whose only proxy is
/// gone. The same service without the key fails through that chain, so the
/// direct answer is the key's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_chain_dials_direct() {
    let origin = Origin::start().await;
    let gone = free_port();
    let service = |name: &str, meta: &str| {
        format!(
            "- {{name: {name}, addr: \"127.0.0.1:0\",{meta} handler: {{type: tcp, chain: dead}}, listener: {{type: tcp}}, forwarder: {{nodes: [{{addr: \"{}\"}}]}}}}\n",
            origin.addr
        )
    };
    let set = start(&format!(
        "services:\n{}{}chains: [{{name: dead, hops: [{{nodes: [{{name: gone, addr: \"127.0.0.1:{gone}\"}}]}}]}}]\n",
        service("direct", " metadata: {ignoreChain: true},"),
        service("chained", "")
    ));
    let (_s, line) = proxy_common::connect_greeted(set.local_addr("direct").unwrap()).await;
    assert_eq!(line, "peer 127.0.0.1", "direct, not through the dead chain");
    let (_s, line) = proxy_common::connect_greeted(set.local_addr("chained").unwrap()).await;
    assert_eq!(line, "", "through the dead chain nothing answers");
}

/// A forwarder behind a chain that cannot carry anything (its only proxy is
/// gone): the failures are the chain's — counted in its errors, the proxy
/// node's failures — and not its forwarder's nodes', which stay un-benched
/// with no failure counted, although `maxFails: 1` would bench them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_failures_are_not_blamed_on_the_forwarder_nodes() {
    let (o1, o2) = (Origin::start().await, Origin::start().await);
    let gone = free_port();
    let set = start(&format!(
        "services: [{{name: f, addr: \"127.0.0.1:0\", handler: {{type: tcp, chain: dead-acct}}, listener: {{type: tcp}}, forwarder: {{selector: {{maxFails: 1, failTimeout: 60s}}, nodes: [{{name: o1, addr: \"{}\"}}, {{name: o2, addr: \"{}\"}}]}}}}]\n\
         chains: [{{name: dead-acct, hops: [{{nodes: [{{name: gone, addr: \"127.0.0.1:{gone}\"}}]}}]}}]\n",
        o1.addr, o2.addr
    ));
    let f = set.local_addr("f").unwrap();
    for _ in 0..4 {
        let (_s, line) = proxy_common::connect_greeted(f).await;
        assert_eq!(line, "");
    }
    let chain = gateway::proxy::chain::Chain::running()
        .into_iter()
        .find(|c| c.name() == "dead-acct")
        .unwrap();
    assert!(
        proxy_common::wait_for(std::time::Duration::from_secs(5), || chain.errors() >= 4).await,
        "chain errors: {}",
        chain.errors()
    );
    let proxy = chain.hop_balancer(0).unwrap().nodes()[0].clone();
    assert!(proxy.failures() >= 4, "the proxy node's failures count too");
    let now = std::time::Instant::now();
    for n in set.balancer("f").unwrap().nodes().iter() {
        assert_eq!(n.failures(), 0, "{} blamed for the chain", n.label());
        assert!(n.available(now), "{} benched for the chain", n.label());
    }
}
