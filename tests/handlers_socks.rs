//! The `socks5`, `socks4` and `auto` handlers with curl and hand-rolled SOCKS
//! clients (curl has no UDP ASSOCIATE) on loopback.

mod handlers_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway::config::auth::{AuthConfig, Secret};
use gateway::config::service::HandlerConfig;
use gateway::proxy::handler::auto::{AutoHandler, AutoHandlerOptions};
use gateway::proxy::handler::socks::{Socks4Handler, Socks5Handler, Socks5HandlerOptions};
use gateway::proxy::handler::{HandlerStats, ProxyHandler};
use gateway::proxy::router::Router;
use handlers_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A SOCKS5 proxy with these options on a loopback port, and its counters.
async fn socks5(opts: Socks5HandlerOptions) -> (SocketAddr, Arc<HandlerStats>) {
    serve(Socks5Handler::new(opts, Router::default())).await
}

/// An `auto` proxy with these options on a loopback port, and its counters.
async fn auto(opts: AutoHandlerOptions) -> (SocketAddr, Arc<HandlerStats>) {
    serve(AutoHandler::new(opts, Router::default())).await
}

/// An origin, and in front of it a `kind` proxy (`socks5`, `auto`, ...) that
/// wants alice's credentials, built the way a service builds it. Returns the
/// origin's `/hello` URL, the proxy's `host:port` and the proxy's counters.
async fn hello_behind_alice(kind: &str) -> (String, String, Arc<HandlerStats>) {
    let origin = spawn_origin("127.0.0.1:0").await;
    let alice = AuthConfig {
        username: "alice".into(),
        password: Secret("s3cret".into()),
    };
    let cfg = HandlerConfig {
        kind: gateway::config::from_yaml(kind).expect("handler type"),
        auth: Some(alice),
        chain: None,
        metadata: None,
    };
    let handler = ProxyHandler::from_config(&cfg, Router::default());
    let (p, stats) = serve(handler.expect("handler")).await;
    (origin.url("/hello"), p.to_string(), stats)
}

/// curl arguments: fetch `url` through the SOCKS proxy `px` (`--socks5`,
/// `--socks4`, ...) with `--proxy-user user[:password]`.
fn as_user<'a>(flag: &'a str, px: &'a str, user: &'a str, url: &'a str) -> [&'a str; 5] {
    [flag, px, "--proxy-user", user, url]
}

fn with_udp() -> Socks5HandlerOptions {
    gateway::config::from_yaml("metadata: {udp: true, readTimeout: 2s}").unwrap()
}

/// Greeting with no auth, then a request; returns the stream and the reply.
async fn request(proxy: SocketAddr, cmd: u8, addr: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0]);
    let mut req = vec![5, cmd, 0];
    req.extend_from_slice(addr);
    s.write_all(&req).await.unwrap();
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.unwrap();
    let rest = match head[3] {
        1 => 6,
        4 => 18,
        t => panic!("reply atyp {t}"),
    };
    let mut tail = vec![0u8; rest];
    s.read_exact(&mut tail).await.unwrap();
    let mut reply = head.to_vec();
    reply.extend_from_slice(&tail);
    (s, reply)
}

fn ipv4_addr(a: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = a else {
        panic!("v4 expected")
    };
    let mut out = vec![1];
    out.extend_from_slice(&v4.ip().octets());
    out.extend_from_slice(&v4.port().to_be_bytes());
    out
}

/// A SOCKS5 domain-name address (ATYP 3): length, name, port.
fn domain_addr(host: &str, port: u16) -> Vec<u8> {
    let mut out = vec![3, host.len() as u8];
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out
}

/// A SOCKS5 UDP datagram (RFC 1928 section 7): two reserved bytes, the fragment
/// number, the address (as from [`ipv4_addr`] or [`domain_addr`]) and the payload.
fn udp_dgram(frag: u8, addr: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, frag];
    out.extend_from_slice(addr);
    out.extend_from_slice(payload);
    out
}

fn reply_addr(reply: &[u8]) -> SocketAddr {
    assert_eq!(reply[3], 1);
    let ip = std::net::Ipv4Addr::new(reply[4], reply[5], reply[6], reply[7]);
    SocketAddr::new(ip.into(), u16::from_be_bytes([reply[8], reply[9]]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_connect_ipv4_domain_ipv6() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let (p, stats) = socks5(Socks5HandlerOptions::default()).await;
    // --socks5: curl resolves, sends IPv4. --socks5-hostname: sends the name.
    let p = p.to_string();
    curl_expect(&["--socks5", &p, &origin.url("/hello")], "hello").await;
    curl_expect(
        &["--socks5-hostname", &p, &origin.url_by_name("/hello")],
        "hello",
    )
    .await;
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let o6 = spawn_origin("[::1]:0").await;
        let url = format!("http://[::1]:{}/hello", o6.addr.port());
        curl_expect(&["--socks5", &p, &url], "hello").await;
    }
    let s = settled(&stats).await;
    assert!(s.completed >= 2 && s.completed == s.connections, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_user_password() {
    let (url, px, stats) = hello_behind_alice("socks5").await;
    curl_expect(&as_user("--socks5", &px, "alice:s3cret", &url), "hello").await;
    let r = curl(&as_user("--socks5", &px, "alice:nope", &url)).await;
    assert_ne!(r.status, Some(0));
    // No credentials: curl offers only "no auth", which we refuse (0xFF).
    let r = curl(&["--socks5", &px, &url]).await;
    assert_ne!(r.status, Some(0));
    let mut s = TcpStream::connect(&px).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0xFF]);
    wait_for(Duration::from_secs(5), || stats.snapshot().auth_failed == 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_codes() {
    let (p, stats) = socks5(Socks5HandlerOptions::default()).await;
    // Refused → 0x05.
    let dead = closed_port().await;
    let (_, reply) = request(p, 1, &ipv4_addr(dead)).await;
    assert_eq!(reply[1], 0x05);
    // Unresolvable name (RFC 6761 `.invalid`) → 0x04 host unreachable; 0x06
    // where no resolver answers and the lookup runs into the connect timeout.
    let name = domain_addr("no-such-host.invalid", 80);
    let (_, reply) = request(p, 1, &name).await;
    assert!(matches!(reply[1], 0x04 | 0x06), "reply {:#04x}", reply[1]);
    // BIND → 0x07; UDP ASSOCIATE while udp is off → 0x07.
    let (_, reply) = request(p, 2, &ipv4_addr(dead)).await;
    assert_eq!(reply[1], 0x07);
    let (_, reply) = request(p, 3, &[1, 0, 0, 0, 0, 0, 0]).await;
    assert_eq!(reply[1], 0x07);
    // Unknown address type → 0x08.
    let (_, reply) = request(p, 1, &[9, 1, 2, 3, 4, 0, 80]).await;
    assert_eq!(reply[1], 0x08);
    // Success → 0x00 and BND.ADDR is the proxy's local end towards the target.
    let origin = spawn_origin("127.0.0.1:0").await;
    let (mut s, reply) = request(p, 1, &ipv4_addr(origin.addr)).await;
    assert_eq!(reply[1], 0x00);
    assert_eq!(reply_addr(&reply).ip(), origin.addr.ip());
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.ends_with("hello"), "{resp}");
    // The tunnel lasts until both halves are closed: close ours.
    drop(s);

    let s = settled(&stats).await;
    assert_eq!(s.target_failed, 2, "{s:?}");
    assert_eq!(s.unsupported, 2, "{s:?}");
    assert_eq!(s.bad_request, 1, "{s:?}");
    assert_eq!(s.completed, 1, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_associate_relays_and_ends_with_the_tcp_connection() {
    let echo = spawn_udp_echo("127.0.0.1:0").await;
    let (p, stats) = socks5(with_udp()).await;
    let (control, reply) = request(p, 3, &[1, 0, 0, 0, 0, 0, 0]).await;
    assert_eq!(reply[1], 0x00);
    let relay = reply_addr(&reply);
    assert_eq!(
        relay.ip(),
        p.ip(),
        "relay bound where the client reached us"
    );

    // The control connection has TCP keepalive on the proxy's side (so a vanished
    // client frees the relay); `ss -o` shows the keepalive timer once no
    // retransmission timer is pending.
    let ss = || {
        std::process::Command::new("ss")
            .args(["-tnoH", "state", "established"])
            .arg(format!("( sport = :{} )", p.port()))
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    };
    if ss().is_some() {
        let mut seen = String::new();
        for _ in 0..50 {
            seen = ss().unwrap_or_default();
            if seen.contains("timer:(keepalive") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        assert!(seen.contains("timer:(keepalive"), "{seen}");
    }

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 2048];
    // Send a datagram to the relay; the answer within 3 s: its length and sender.
    let exchange = async |dgram: Vec<u8>, buf: &mut [u8]| {
        client.send_to(&dgram, relay).await.unwrap();
        tokio::time::timeout(Duration::from_secs(3), client.recv_from(buf))
            .await
            .expect("udp reply")
            .unwrap()
    };

    // IPv4 destination.
    let (n, from) = exchange(udp_dgram(0, &ipv4_addr(echo), b"ping"), &mut buf).await;
    assert_eq!(from, relay);
    assert_eq!(&buf[..n], &udp_dgram(0, &ipv4_addr(echo), b"echo:ping")[..]);

    // Domain destination.
    let by_name = udp_dgram(0, &domain_addr("localhost", echo.port()), b"by-name");
    let (n, _) = exchange(by_name, &mut buf).await;
    assert!(buf[..n].ends_with(b"echo:by-name"));

    // A fragment and a stranger's datagram are dropped.
    let frag = udp_dgram(1, &ipv4_addr(echo), b"frag");
    client.send_to(&frag, relay).await.unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger.send_to(b"inject", relay).await.unwrap();
    wait_for(Duration::from_secs(3), || stats.snapshot().udp_dropped == 2).await;
    let s = stats.snapshot();
    assert_eq!(
        (s.udp_associations, s.udp_datagrams_out, s.udp_datagrams_in),
        (1, 2, 2),
        "{s:?}"
    );

    // Closing the control connection closes the relay socket: the kernel answers
    // a datagram to it with port unreachable, which shows as ECONNREFUSED.
    drop(control);
    wait_for(Duration::from_secs(3), || stats.snapshot().active == 0).await;
    let probe = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    probe.connect(relay).await.unwrap();
    probe.send(b"anyone?").await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(3), probe.recv(&mut buf)).await;
    match r {
        Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("relay still answers: {other:?}"),
    }
    assert_eq!(stats.snapshot().completed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshake_times_out() {
    let opts: Socks5HandlerOptions =
        gateway::config::from_yaml("metadata: {readTimeout: 300ms}").unwrap();
    let (p, stats) = socks5(opts).await;
    let mut s = TcpStream::connect(p).await.unwrap();
    s.write_all(&[5, 2]).await.unwrap(); // promises two methods, sends one
    s.write_all(&[0]).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0))), "{r:?}");
    wait_for(Duration::from_secs(2), || {
        stats.snapshot().handshake_timeout == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks4_and_4a() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let (p, stats) = serve(Socks4Handler::new(Default::default(), Router::default())).await;
    let p = p.to_string();
    curl_expect(&["--socks4", &p, &origin.url("/hello")], "hello").await;
    curl_expect(&["--socks4a", &p, &origin.url_by_name("/hello")], "hello").await;
    let dead = closed_port().await;
    let r = curl(&["--socks4", &p, &format!("http://{dead}/")]).await;
    assert_ne!(r.status, Some(0));
    let s = settled(&stats).await;
    assert_eq!((s.completed, s.target_failed), (2, 1), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_detects_all_protocols_on_one_port() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let (p, stats) = auto(AutoHandlerOptions::default()).await;
    let url = origin.url("/hello");
    let host_url = origin.url_by_name("/hello");
    let proxy = p.to_string();
    for args in [
        vec!["-x", &format!("http://{proxy}"), &url],
        vec!["-p", "-x", &format!("http://{proxy}"), &url],
        vec!["--socks5", &proxy, &url],
        vec!["--socks5-hostname", &proxy, &host_url],
        vec!["--socks4", &proxy, &url],
        vec!["--socks4a", &proxy, &host_url],
    ] {
        let r = curl(&args).await;
        assert_eq!(r.text(), "hello", "{args:?}: {}", r.stderr);
    }
    // Garbage goes to HTTP, which says 400.
    let reply = raw_exchange(p, b"\x00\x01\x02\x03\r\n\r\n").await;
    assert!(reply.starts_with(b"HTTP/1.1 400"), "{reply:?}");
    let s = settled(&stats).await;
    assert_eq!(
        (s.connections, s.completed, s.bad_request),
        (7, 6, 1),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_with_auth_applies_to_every_protocol() {
    let (url, proxy, stats) = hello_behind_alice("auto").await;
    let http = format!("http://{proxy}");
    curl_expect(&["-x", &http, "-U", "alice:s3cret", &url], "hello").await;
    curl_expect(&as_user("--socks5", &proxy, "alice:s3cret", &url), "hello").await;
    // SOCKS4 cannot carry a password: refused when one is configured.
    let r = curl(&as_user("--socks4", &proxy, "alice", &url)).await;
    assert_ne!(r.status, Some(0));
    assert_eq!(curl_code(&["-x", &http, &url]).await.text(), "407");
    assert_eq!(settled(&stats).await.auth_failed, 2);
}

#[test]
fn options_validation() {
    let o: Socks5HandlerOptions =
        gateway::config::from_yaml("metadata: {udpBufferSize: 100}").unwrap();
    let e = o.validate("services[3].handler").unwrap_err();
    assert_eq!(e.field, "services[3].handler.metadata.udpBufferSize");
    assert!(gateway::config::from_yaml::<Socks5HandlerOptions>("metadata: {bind: true}").is_err());
    let o: AutoHandlerOptions = gateway::config::from_yaml(
        "auth: {username: a, password: b}\nmetadata: {udp: true, header: {X: y}}",
    )
    .unwrap();
    assert!(o.validate("h").is_ok());
}
