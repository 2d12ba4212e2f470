//! The `http` handler with curl as the client and a real origin on loopback.

mod handlers_support;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gateway::config::auth::{AuthConfig, Secret};
use gateway::proxy::handler::http::{HttpHandler, HttpHandlerOptions};
use gateway::proxy::router::Router;
use handlers_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn proxy(opts: HttpHandlerOptions) -> (SocketAddr, Arc<HttpHandler>) {
    let handler = Arc::new(HttpHandler::new(opts, Router::default()));
    let h = handler.clone();
    let addr = spawn_proxy(move |s, c| {
        let h = h.clone();
        async move {
            let _ = h.handle(s, c).await;
        }
    })
    .await;
    (addr, handler)
}

fn opts_yaml(yaml: &str) -> HttpHandlerOptions {
    serde_yaml_ng::from_str(yaml).expect("options parse")
}

#[tokio::test]
async fn forwards_absolute_uri_and_rewrites_the_request() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let (p, _) = proxy(HttpHandlerOptions::default()).await;
    let r = curl(&[
        "-i",
        "-x",
        &format!("http://{p}"),
        &format!("http://{}/hello?x=1", origin.addr),
    ])
    .await;
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

#[tokio::test]
async fn keep_alive_reuses_both_connections() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let (p, handler) = proxy(HttpHandlerOptions::default()).await;
    let u = format!("http://{}/conn", origin.addr);
    let r = curl(&["-v", "-x", &format!("http://{p}"), &u, &u, &u]).await;
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    // The same origin connection answered all three.
    assert_eq!(r.text(), "111");
    assert!(
        r.stderr.contains("Re-using existing connection") || r.stderr.contains("Reusing existing"),
        "{}",
        r.stderr
    );
    let s = handler.stats().snapshot();
    assert_eq!(s.connections, 1, "{s:?}");
    assert_eq!(s.requests, 3, "{s:?}");
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn streams_content_length_and_chunked_bodies() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let (p, _) = proxy(HttpHandlerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.bin");
    let data = pattern(3 * 1024 * 1024 + 17);
    std::fs::File::create(&file)
        .unwrap()
        .write_all(&data)
        .unwrap();
    let upload = format!("@{}", file.display());
    let px = format!("http://{p}");

    // Content-Length upload, Content-Length response.
    let r = curl(&[
        "-x",
        &px,
        "--data-binary",
        &upload,
        &format!("http://{}/echo", origin.addr),
    ])
    .await;
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert!(
        r.stdout == data,
        "content-length echo differs ({} bytes)",
        r.stdout.len()
    );

    // Chunked upload, chunked response.
    let r = curl(&[
        "-x",
        &px,
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &upload,
        &format!("http://{}/echo-chunked", origin.addr),
    ])
    .await;
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert!(
        r.stdout == data,
        "chunked echo differs ({} bytes)",
        r.stdout.len()
    );

    // Large chunked download.
    let r = curl(&["-x", &px, &format!("http://{}/big/20000000", origin.addr)]).await;
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert!(
        r.stdout == pattern(20_000_000),
        "download differs ({} bytes)",
        r.stdout.len()
    );

    // A body delimited by the origin closing.
    let r = curl(&["-x", &px, &format!("http://{}/close", origin.addr)]).await;
    assert_eq!(r.text(), "bye", "{}", r.stderr);
}

#[tokio::test]
async fn stale_upstream_connection_is_replaced() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let (p, handler) = proxy(HttpHandlerOptions::default()).await;
    let r = curl(&[
        "-x",
        &format!("http://{p}"),
        &format!("http://{}/close-after", origin.addr),
        &format!("http://{}/conn", origin.addr),
    ])
    .await;
    // The second request found the kept connection closed and went on a new one.
    assert_eq!(r.text(), "ok2", "{}", r.stderr);
    let s = handler.stats().snapshot();
    assert_eq!(
        (s.connections, s.requests, s.upstream_error),
        (1, 2, 0),
        "{s:?}"
    );
}

#[tokio::test]
async fn expect_continue_both_ways() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let (p, _) = proxy(HttpHandlerOptions::default()).await;
    let px = format!("http://{p}");
    // The target says 100: the body follows at once (no 1 s wait in curl).
    let start = std::time::Instant::now();
    let r = curl(&[
        "-x",
        &px,
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        "payload",
        &format!("http://{}/echo", origin.addr),
    ])
    .await;
    assert_eq!(r.text(), "payload", "{}", r.stderr);
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    // The target refuses before the body: the client gets the refusal.
    let r = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &px,
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        "payload",
        &format!("http://{}/reject", origin.addr),
    ])
    .await;
    assert_eq!(r.text(), "413", "{}", r.stderr);
}

#[tokio::test]
async fn early_refusal_of_an_upload_reaches_the_client() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let (p, _) = proxy(HttpHandlerOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, pattern(32 * 1024 * 1024)).unwrap();
    let start = std::time::Instant::now();
    // "Expect:" (empty) stops curl from asking for 100-continue: the body
    // streams right away and the target refuses without reading it.
    let r = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &format!("http://{p}"),
        "-H",
        "Expect:",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{}/refuse-upload", origin.addr),
    ])
    .await;
    assert_eq!(r.text(), "413", "{}", r.stderr);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
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

#[tokio::test]
async fn connect_tunnel() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let (p, handler) = proxy(HttpHandlerOptions::default()).await;
    // -p makes curl tunnel through CONNECT even for http://.
    let r = curl(&[
        "-v",
        "-p",
        "-x",
        &format!("http://{p}"),
        &format!("http://{}/hello", origin.addr),
    ])
    .await;
    assert_eq!(r.status, Some(0), "{}", r.stderr);
    assert_eq!(r.text(), "hello");
    assert!(r.stderr.contains("CONNECT"), "{}", r.stderr);
    // Inside a tunnel the proxy sees nothing of HTTP: one request (the CONNECT).
    wait_for(Duration::from_secs(5), || {
        handler.stats().snapshot().completed == 1
    })
    .await;
    assert_eq!(handler.stats().snapshot().requests, 1);
}

#[tokio::test]
async fn idle_tunnel_is_cut_by_relay_options() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let mut h = HttpHandler::new(HttpHandlerOptions::default(), Router::default());
    h.set_relay_opts(gateway::proxy::relay::RelayOpts {
        a_idle: Some(Duration::from_millis(300)),
        ..Default::default()
    });
    let handler = Arc::new(h);
    let hh = handler.clone();
    let p = spawn_proxy(move |s, c| {
        let h = hh.clone();
        async move {
            let _ = h.handle(s, c).await;
        }
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(p).await.unwrap();
    s.write_all(format!("CONNECT {} HTTP/1.1\r\nHost: x\r\n\r\n", origin.addr).as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 39];
    s.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200 Connection established"));
    // Say nothing: the client side's idle limit ends the tunnel.
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "tunnel not closed");
    assert!(start.elapsed() >= Duration::from_millis(250));
    wait_for(Duration::from_secs(2), || {
        handler.stats().snapshot().upstream_error == 1
    })
    .await;
}

#[tokio::test]
async fn basic_auth_407_then_success() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let opts = HttpHandlerOptions {
        auth: Some(AuthConfig {
            username: "alice".into(),
            password: Secret("s3cret".into()),
        }),
        ..Default::default()
    };
    let (p, handler) = proxy(opts).await;
    let px = format!("http://{p}");
    let url = format!("http://{}/hello", origin.addr);

    let r = curl(&["-i", "-x", &px, &url]).await;
    let text = r.text();
    assert!(text.starts_with("HTTP/1.1 407"), "{text}");
    assert!(
        text.contains("Proxy-Authenticate: Basic realm=\"gateway\""),
        "{text}"
    );

    let r = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &px,
        "-U",
        "alice:wrong",
        &url,
    ])
    .await;
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
    let r = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &px,
        "-H",
        "Expect:",
        "--data-binary",
        &format!("@{}", file.display()),
        &url,
    ])
    .await;
    assert_eq!(r.text(), "407", "{}", r.stderr);

    // CONNECT is protected too.
    let r = curl(&["-p", "-x", &px, &url]).await;
    assert_ne!(r.status, Some(0));
    let r = curl(&["-p", "-x", &px, "-U", "alice:s3cret", &url]).await;
    assert_eq!(r.text(), "hello", "{}", r.stderr);

    wait_for(Duration::from_secs(5), || {
        handler.stats().snapshot().active == 0
    })
    .await;
    let s = handler.stats().snapshot();
    assert_eq!(s.auth_failed, 4, "{s:?}");
}

#[tokio::test]
async fn error_statuses() {
    let origin = spawn_origin("127.0.0.1:0").await;
    let opts = opts_yaml("metadata: {responseTimeout: 500ms, header: {X-Proxy: gw}}");
    let (p, handler) = proxy(opts).await;
    let px = format!("http://{p}");
    let code = |args: Vec<String>| async move {
        let mut a = vec![
            "-o".to_string(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
        ];
        a.extend(args);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        curl(&refs).await.text()
    };

    // Refused target → 502 (plain and CONNECT).
    let dead = closed_port().await;
    assert_eq!(
        code(vec!["-x".into(), px.clone(), format!("http://{dead}/")]).await,
        "502"
    );
    let r = curl(&["-i", "-p", "-x", &px, &format!("http://{dead}/")]).await;
    assert!(r.text().contains("502"), "{} {}", r.text(), r.stderr);
    // Target resets instead of answering → 502.
    assert_eq!(
        code(vec![
            "-x".into(),
            px.clone(),
            format!("http://{}/reset", origin.addr)
        ])
        .await,
        "502"
    );
    // Target too slow → 504.
    assert_eq!(
        code(vec![
            "-x".into(),
            px.clone(),
            format!("http://{}/slow", origin.addr)
        ])
        .await,
        "504"
    );
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
    // A head that never ends → 431.
    let mut huge = b"GET http://a/ HTTP/1.1\r\n".to_vec();
    while huge.len() < 70 * 1024 {
        huge.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let reply = raw_exchange(p, &huge).await;
    assert!(
        reply.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    wait_for(Duration::from_secs(5), || {
        handler.stats().snapshot().active == 0
    })
    .await;
    let s = handler.stats().snapshot();
    assert_eq!(s.target_failed, 2, "{s:?}");
    assert_eq!(s.upstream_error, 2, "{s:?}");
    assert_eq!(s.unsupported, 1, "{s:?}");
    assert_eq!(s.bad_request, 4, "{s:?}");
    assert_eq!(
        s.connections,
        s.completed
            + s.bad_request
            + s.auth_failed
            + s.handshake_timeout
            + s.target_failed
            + s.upstream_error
            + s.unsupported
            + s.client_error,
        "{s:?}"
    );
}

#[tokio::test]
async fn stalled_client_is_dropped_after_read_timeout() {
    let (p, handler) = proxy(opts_yaml("metadata: {readTimeout: 300ms}")).await;
    let mut s = tokio::net::TcpStream::connect(p).await.unwrap();
    s.write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0))), "{n:?}");
    assert!(start.elapsed() >= Duration::from_millis(250));
    wait_for(Duration::from_secs(2), || {
        handler.stats().snapshot().handshake_timeout == 1
    })
    .await;
}

#[tokio::test]
async fn ipv6_target() {
    let Ok(l) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback; skipped");
        return;
    };
    drop(l);
    let origin = spawn_origin("[::1]:0").await;
    let (p, _) = proxy(HttpHandlerOptions::default()).await;
    let r = curl(&[
        "-x",
        &format!("http://{p}"),
        &format!("http://[::1]:{}/hello", origin.addr.port()),
    ])
    .await;
    assert_eq!(r.text(), "hello", "{}", r.stderr);
}

#[test]
fn options_reject_unknown_fields() {
    let e =
        serde_yaml_ng::from_str::<HttpHandlerOptions>("metadata: {readTimout: 1s}").unwrap_err();
    assert!(e.to_string().contains("readTimout"), "{e}");
    let e = serde_yaml_ng::from_str::<HttpHandlerOptions>("metadata: {readTimeout: 5 apples}")
        .unwrap_err();
    assert!(e.to_string().contains("expected a duration"), "{e}");
    let o = opts_yaml("auth: {username: u, password: p}\nmetadata: {readTimeout: 2}");
    assert_eq!(o.metadata.read_timeout, Duration::from_secs(2));
    assert!(format!("{o:?}").contains("MASKED"));
}
