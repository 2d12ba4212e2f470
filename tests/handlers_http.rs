//! The `http` handler with curl as the client and a real origin on loopback.

mod handlers_support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway::config::auth::{AuthConfig, Secret};
use gateway::proxy::handler::HandlerStats;
use gateway::proxy::handler::http::{HttpHandler, HttpHandlerOptions};
use gateway::proxy::router::Router;
use handlers_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP proxy with these options on a loopback port, and its counters.
async fn proxy(opts: HttpHandlerOptions) -> (SocketAddr, Arc<HandlerStats>) {
    serve(HttpHandler::new(opts, Router::default())).await
}

fn opts_yaml(yaml: &str) -> HttpHandlerOptions {
    gateway::config::from_yaml(yaml).expect("options parse")
}

/// An origin and an HTTP proxy with `opts` in front of it: the origin, the proxy
/// as curl's `-x` argument, and the proxy's counters.
async fn origin_and_proxy(opts: HttpHandlerOptions) -> (Origin, String, Arc<HandlerStats>) {
    let origin = spawn_origin("127.0.0.1:0").await;
    let (p, stats) = proxy(opts).await;
    (origin, format!("http://{p}"), stats)
}

/// Read until the proxy closes `s`, which it must do within 5 s but not before
/// 250 ms (the idle limits in these tests are 300 ms). Returns how the read ended.
async fn closed_at_idle_limit(s: &mut tokio::net::TcpStream, what: &str) -> std::io::Result<usize> {
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap_or_else(|_| panic!("{what} not closed"));
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{what} closed early"
    );
    r
}

/// curl arguments: POST `payload` to `url` through the proxy `px`, asking for
/// `100 Continue` first.
fn expect_100<'a>(px: &'a str, url: &'a str) -> [&'a str; 7] {
    let expect = "Expect: 100-continue";
    ["-x", px, "-H", expect, "--data-binary", "payload", url]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_absolute_uri_and_rewrites_the_request() {
    let (origin, px, _) = origin_and_proxy(HttpHandlerOptions::default()).await;
    let r = curl(&["-i", "-x", &px, &origin.url("/hello?x=1")]).await;
    let text = r.text();
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hello"), "{text}");
    // Origin form on the wire, Host from the URI, no proxy headers leaked.
    assert!(text.contains("X-Seen-Target: /hello?x=1\r\n"), "{text}");
    assert!(
        text.contains(&format!("X-Seen-Host: {}\r\n", origin.addr)),
        "{text}"
    );
    assert!(
        !text.to_ascii_lowercase().contains("proxy-connection"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_reuses_both_connections() {
    let (origin, px, stats) = origin_and_proxy(HttpHandlerOptions::default()).await;
    let u = origin.url("/conn");
    let r = curl(&["-v", "-x", &px, &u, &u, &u]).await;
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    // The same origin connection answered all three.
    assert_eq!(r.text(), "111");
    assert!(
        r.stderr.contains("Re-using existing connection") || r.stderr.contains("Reusing existing"),
        "{}",
        r.stderr
    );
    let s = stats.snapshot();
    assert_eq!(s.connections, 1, "{s:?}");
    assert_eq!(s.requests, 3, "{s:?}");
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_content_length_and_chunked_bodies() {
    let (origin, px, _) = origin_and_proxy(HttpHandlerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.bin");
    let data = pattern(3 * 1024 * 1024 + 17);
    std::fs::File::create(&file)
        .unwrap()
        .write_all(&data)
        .unwrap();
    let upload = format!("@{}", file.display());

    // Content-Length upload, Content-Length response.
    let echo = origin.url("/echo");
    curl(&["-x", &px, "--data-binary", &upload, &echo])
        .await
        .assert_body(&data, "content-length echo");

    // Chunked upload, chunked response.
    let echo = origin.url("/echo-chunked");
    let te = "Transfer-Encoding: chunked";
    curl(&["-x", &px, "-H", te, "--data-binary", &upload, &echo])
        .await
        .assert_body(&data, "chunked echo");

    // Large chunked download.
    curl(&["-x", &px, &origin.url("/big/20000000")])
        .await
        .assert_body(&pattern(20_000_000), "download");

    // A body delimited by the origin closing.
    curl_expect(&["-x", &px, &origin.url("/close")], "bye").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_upstream_connection_is_replaced() {
    let (origin, px, stats) = origin_and_proxy(HttpHandlerOptions::default()).await;
    // The second request finds the kept connection closed and goes on a new one.
    let (first, second) = (origin.url("/close-after"), origin.url("/conn"));
    curl_expect(&["-x", &px, &first, &second], "ok2").await;
    let s = stats.snapshot();
    assert_eq!(
        (s.connections, s.requests, s.upstream_error),
        (1, 2, 0),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_both_ways() {
    let (origin, px, _) = origin_and_proxy(HttpHandlerOptions::default()).await;
    // The target says 100: the body follows at once (no 1 s wait in curl).
    let start = std::time::Instant::now();
    curl_expect(&expect_100(&px, &origin.url("/echo")), "payload").await;
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    // The target refuses before the body: the client gets the refusal.
    let r = curl_code(&expect_100(&px, &origin.url("/reject"))).await;
    assert_eq!(r.text(), "413", "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refusal_of_an_upload_reaches_the_client() {
    let (origin, px, _) = origin_and_proxy(HttpHandlerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, pattern(32 * 1024 * 1024)).unwrap();
    let upload = format!("@{}", file.display());
    let start = std::time::Instant::now();
    // "Expect:" (empty) stops curl from asking for 100-continue: the body
    // streams right away and the target refuses without reading it.
    let target = origin.url("/refuse-upload");
    let r = curl_code(&[
        "-x",
        &px,
        "-H",
        "Expect:",
        "--data-binary",
        &upload,
        &target,
    ])
    .await;
    assert_eq!(r.text(), "413", "{}", r.stderr);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_switches_to_a_raw_relay() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let (p, _) = proxy(HttpHandlerOptions::default()).await;
    let mut s = tokio::net::TcpStream::connect(p).await.unwrap();
    s.write_all(
        format!(
            "GET http://{}/upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
            origin.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("Upgrade: echo"), "{head}");
    s.write_all(b"raw bytes").await.unwrap();
    let mut back = [0u8; 9];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"raw bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnel() {
    let (origin, px, stats) = origin_and_proxy(HttpHandlerOptions::default()).await;
    // -p makes curl tunnel through CONNECT even for http://.
    let r = curl(&["-v", "-p", "-x", &px, &origin.url("/hello")]).await;
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert_eq!(r.text(), "hello");
    assert!(r.stderr.contains("CONNECT"), "{}", r.stderr);
    // Inside a tunnel the proxy sees nothing of HTTP: one request (the CONNECT).
    wait_for(Duration::from_secs(5), || stats.snapshot().completed == 1).await;
    assert_eq!(stats.snapshot().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_cut_by_relay_options() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let mut h = HttpHandler::new(HttpHandlerOptions::default(), Router::default());
    h.set_relay_opts(gateway::proxy::relay::RelayOpts {
        a_idle: Some(Duration::from_millis(300)),
        ..Default::default()
    });
    let (p, stats) = serve(h).await;
    let mut s = tokio::net::TcpStream::connect(p).await.unwrap();
    s.write_all(format!("CONNECT {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.addr).as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 39];
    s.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200 Connection established"));
    // Say nothing: the client side's idle limit ends the tunnel.
    closed_at_idle_limit(&mut s, "tunnel").await.ok();
    let counted = || stats.snapshot().upstream_error == 1;
    wait_for(Duration::from_secs(2), counted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_407_then_success() {
    let opts = HttpHandlerOptions {
        auth: Some(AuthConfig {
            username: "alice".into(),
            password: Secret("s3cret".into()),
        }),
        ..Default::default()
    };
    let (origin, px, stats) = origin_and_proxy(opts).await;
    let url = origin.url("/hello");

    let r = curl(&["-i", "-x", &px, &url]).await;
    let text = r.text();
    assert!(text.starts_with("HTTP/1.1 407"), "{text}");
    assert!(
        text.contains("Proxy-Authenticate: Basic realm=\"gateway\""),
        "{text}"
    );

    let r = curl_code(&["-s", "-x", &px, "-U", "alice:wrong", &url]).await;
    assert_eq!(r.text(), "407");

    let r = curl(&["-i", "-x", &px, "-U", "alice:s3cret", &url]).await;
    let text = r.text();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Credentials for the proxy are not passed on to the origin.
    assert!(text.contains("X-Seen-Proxy-Auth: no"), "{text}");

    // A refused upload still gets its 407 (not a reset) while the body streams.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("up.bin");
    std::fs::write(&file, pattern(8 * 1024 * 1024)).unwrap();
    let upload = format!("@{}", file.display());
    let r = curl_code(&["-x", &px, "-H", "Expect:", "--data-binary", &upload, &url]).await;
    assert_eq!(r.text(), "407", "{}", r.stderr);

    // CONNECT is protected too.
    let r = curl(&["-p", "-x", &px, &url]).await;
    assert_ne!(r.status, Some(0));
    curl_expect(&["-p", "-x", &px, "-U", "alice:s3cret", &url], "hello").await;

    let s = settled(&stats).await;
    assert_eq!(s.auth_failed, 4, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let opts = opts_yaml("metadata: {responseTimeout: 500ms, header: {X-Proxy: gw}}");
    let (p, stats) = proxy(opts).await;
    let px = format!("http://{p}");
    let code = async |url: &str| curl_code(&["-x", &px, url]).await.text();

    // Refused target → 502 (plain and CONNECT).
    let dead = format!("http://{}/", closed_port().await);
    assert_eq!(code(&dead).await, "502");
    let r = curl(&["-i", "-p", "-x", &px, &dead]).await;
    assert!(r.text().contains("502"), "{} {}", r.text(), r.stderr);
    // Target resets instead of answering → 502.
    assert_eq!(code(&origin.url("/reset")).await, "502");
    // Target too slow → 504.
    assert_eq!(code(&origin.url("/slow")).await, "504");
    // https:// absolute URIs are not proxied this way.
    let reply = raw_exchange(
        p,
        b"GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .await;
    assert!(
        reply.starts_with(b"HTTP/1.1 501"),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    // Garbage → 400 and close; configured headers on our own replies.
    let reply = raw_exchange(p, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("X-Proxy: gw\r\n"), "{text}");
    // Origin-form request to a proxy → 400.
    let reply = raw_exchange(p, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(reply.starts_with(b"HTTP/1.1 400"));
    // Conflicting framing → 400 (request smuggling guard).
    let reply = raw_exchange(
        p,
        format!("POST http://{}/echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", origin.addr).as_bytes(),
    )
    .await;
    assert!(reply.starts_with(b"HTTP/1.1 400"));
    // A head that never ends → 431 once it passes 64 KiB. One long field, so
    // the size limit is what answers, not the field-count limit (see
    // `too_many_header_fields_431`).
    let mut huge = b"GET http://a/ HTTP/1.1\r\nX-Filler: ".to_vec();
    huge.resize(70 * 1024, b'a');
    let reply = raw_exchange(p, &huge).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    let s = settled(&stats).await;
    assert_eq!(s.target_failed, 2, "{s:?}");
    assert_eq!(s.upstream_error, 2, "{s:?}");
    assert_eq!(s.unsupported, 1, "{s:?}");
    assert_eq!(s.bad_request, 4, "{s:?}");
    assert!(counts_add_up(&s), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_is_dropped_after_read_timeout() {
    let (p, stats) = proxy(opts_yaml("metadata: {readTimeout: 300ms}")).await;
    let mut s = tokio::net::TcpStream::connect(p).await.unwrap();
    s.write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let n = closed_at_idle_limit(&mut s, "stalled client").await;
    assert!(matches!(n, Ok(0)), "{n:?}");
    let counted = || stats.snapshot().handshake_timeout == 1;
    wait_for(Duration::from_secs(2), counted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_target() {
    let Ok(l) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback; skipped");
        return;
    };
    drop(l);
    let origin = spawn_origin("[::1]:0").await;
    let (p, _) = proxy(HttpHandlerOptions::default()).await;
    let url = format!("http://[::1]:{}/hello", origin.addr.port());
    curl_expect(&["-x", &format!("http://{p}"), &url], "hello").await;
}

/// The other limit on a head: more than 128 fields in a complete, small head
/// (about 5 KiB) is answered like an oversized one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_header_fields_431() {
    let (p, stats) = proxy(HttpHandlerOptions::default()).await;
    let mut head = b"GET http://a/ HTTP/1.1\r\n".to_vec();
    for i in 0..129 {
        head.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    assert!(head.len() < 8 * 1024);
    let reply = raw_exchange(p, &head).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert_eq!(settled(&stats).await.bad_request, 1);
}

#[test]
fn options_reject_unknown_fields() {
    let e =
        gateway::config::from_yaml::<HttpHandlerOptions>("metadata: {readTimout: 1s}").unwrap_err();
    assert!(e.to_string().contains("readTimout"), "{e}");
    let e = gateway::config::from_yaml::<HttpHandlerOptions>("metadata: {readTimeout: 5 apples}")
        .unwrap_err();
    assert!(e.to_string().contains("expected a duration"), "{e}");
    let o = opts_yaml("auth: {username: u, password: p}\nmetadata: {readTimeout: 2}");
    assert_eq!(o.metadata.read_timeout, Duration::from_secs(2));
    assert!(format!("{o:?}").contains("MASKED"));
}
