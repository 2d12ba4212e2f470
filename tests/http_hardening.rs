//! Issue 13, as an attacker and a careless backend would try it: request
//! smuggling and response desync through `Connection`, bodies that never end
//! (both directions), bad chunk lines, the `auto` handler's head timing, HTTP/1.0
//! keep-alive, and the largest accepted durations. The origin is the lenient
//! logging server of `handlers_support::lenient`: it parses the way real
//! origin servers do, so a smuggled request shows up in its log.
//!
//! Idle limits are 1 s here, so each timing test takes about that long; each
//! asserts the close happened within a window around the configured limit.

mod handlers_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::proxy::handler::HandlerStats;
use gateway::proxy::handler::auto::{AutoHandler, AutoHandlerOptions};
use gateway::proxy::handler::http::{HttpHandler, HttpHandlerOptions};
use gateway::proxy::relay::RelayOpts;
use gateway::proxy::router::Router;
use handlers_support::lenient::Lenient;
use handlers_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE: Duration = Duration::from_secs(1);

/// An `http` proxy whose service sets `client_idle_timeout` and
/// `backend_idle_timeout` to `idle`.
async fn gateway(
    opts: HttpHandlerOptions,
    idle: Option<Duration>,
) -> (SocketAddr, Arc<HandlerStats>) {
    let mut h = HttpHandler::new(opts, Router::default());
    h.set_relay_opts(RelayOpts {
        a_idle: idle,
        b_idle: idle,
        ..Default::default()
    });
    serve(h).await
}

/// Read one response (head, then a `Content-Length` body) within 5 s.
async fn response(s: &mut TcpStream) -> (String, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut b = [0u8; 4096];
            let n = s.read(&mut b).await.unwrap();
            assert!(
                n > 0,
                "closed mid head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&b[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = buf[head_end..].to_vec();
        while body.len() < len {
            let mut b = [0u8; 4096];
            let n = s.read(&mut b).await.unwrap();
            assert!(n > 0, "closed mid body");
            body.extend_from_slice(&b[..n]);
        }
        (head, body)
    })
    .await
    .expect("a response within 5 s")
}

/// Wait for the peer to close; how long it took from `since`.
async fn closed_after(s: &mut TcpStream, since: Instant) -> Duration {
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink))
        .await
        .expect("closed within 10 s")
        .ok();
    since.elapsed()
}

/// The configured idle limit, give or take scheduling: not before it, and well
/// before the next multiple (a limit applied twice, or not at all, fails).
fn around_idle(took: Duration, what: &str) {
    assert!(
        took >= IDLE - Duration::from_millis(50) && took < IDLE * 2,
        "{what}: closed after {took:?}, idle limit {IDLE:?}"
    );
}

/// Send `first` (whose body is the request `SMUGGLED`, framed by `framing`,
/// a header block naming its framing header in `Connection`), then a second
/// request on the same connection. The origin must see exactly `/a` and
/// `/second`, and the client must get the answer to each.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: b\r\n\r\n";

async fn assert_not_smuggled(framing: impl Fn(&str) -> String) {
    let origin = Lenient::spawn().await;
    let (gw, _) = gateway(HttpHandlerOptions::default(), Some(IDLE)).await;
    let b = origin.addr;
    let mut s = TcpStream::connect(gw).await.unwrap();
    let first = format!(
        "POST http://{b}/a HTTP/1.1\r\nHost: {b}\r\n{}",
        framing(SMUGGLED)
    );
    s.write_all(first.as_bytes()).await.unwrap();
    assert_eq!(response(&mut s).await.1, b"seen /a");
    s.write_all(format!("GET http://{b}/second HTTP/1.1\r\nHost: {b}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (_, body) = response(&mut s).await;
    assert_eq!(
        body, b"seen /second",
        "the client got someone else's response"
    );
    assert_eq!(origin.targets(), ["/a", "/second"]);
    assert_eq!(origin.log.lock().unwrap()[0].body, SMUGGLED.as_bytes());
}

#[tokio::test]
async fn connection_naming_content_length_does_not_smuggle() {
    assert_not_smuggled(|body| {
        format!(
            "Connection: content-length\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    })
    .await;
}

#[tokio::test]
async fn connection_naming_transfer_encoding_does_not_smuggle() {
    assert_not_smuggled(|body| {
        format!(
            "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    })
    .await;
}

#[tokio::test]
async fn backend_naming_framing_headers_in_connection_does_not_desync() {
    let origin = Lenient::spawn().await;
    origin.respond(
        "cl",
        b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello",
    );
    origin.respond(
        "te",
        b"HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    // A long client idle limit: curl must finish because the response is framed,
    // not because something timed out.
    let (gw, _) = gateway(HttpHandlerOptions::default(), Some(Duration::from_secs(30))).await;
    let px = format!("http://{gw}");
    for route in ["cl", "te"] {
        let t = Instant::now();
        let url = format!("http://{}/resp/{route}", origin.addr);
        let r = curl(&["--max-time", "3", "-x", &px, &url]).await;
        assert_eq!(r.status, Some(0), "{route}: {}", r.stderr);
        assert_eq!(r.text(), "hello", "{route}: raw framing or a hang");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{route}: {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn bad_chunk_size_line_is_refused() {
    let origin = Lenient::spawn().await;
    let (gw, stats) = gateway(HttpHandlerOptions::default(), Some(IDLE)).await;
    let b = origin.addr;
    for line in ["5\rXYZ\n", "5 5\r\n", "5;\r\n", "5\n", "0x5\r\n"] {
        let mut s = TcpStream::connect(gw).await.unwrap();
        let req = format!(
            "POST http://{b}/a HTTP/1.1\r\nHost: {b}\r\nTransfer-Encoding: chunked\r\n\r\n{line}hello\r\n0\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let (head, _) = response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{line:?}: {head}");
    }
    origin.ended().await;
    assert!(origin.targets().is_empty(), "{:?}", origin.targets());
    assert_eq!(settled(&stats).await.bad_request, 5);
}

#[tokio::test]
async fn request_body_never_sent_is_closed_at_client_idle() {
    let origin = Lenient::spawn().await;
    let (gw, stats) = gateway(HttpHandlerOptions::default(), Some(IDLE)).await;
    let mut s = TcpStream::connect(gw).await.unwrap();
    let req = format!(
        "POST http://{}/a HTTP/1.1\r\nContent-Length: 10\r\n\r\n",
        origin.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let t = Instant::now();
    let (head, _) = response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    around_idle(t.elapsed(), "silent request body");
    assert_eq!(settled(&stats).await.client_error, 1);
}

#[tokio::test]
async fn trickled_request_body_is_closed_at_client_idle() {
    let origin = Lenient::spawn().await;
    let (gw, _) = gateway(HttpHandlerOptions::default(), Some(IDLE)).await;
    let s = TcpStream::connect(gw).await.unwrap();
    let (mut rx, mut tx) = s.into_split();
    let req = format!(
        "POST http://{}/a HTTP/1.1\r\nContent-Length: 100\r\n\r\nx",
        origin.addr
    );
    tx.write_all(req.as_bytes()).await.unwrap();
    let t = Instant::now();
    // One byte every 2 s: slower than the 1 s idle limit.
    let trickle = tokio::spawn(async move {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            if tx.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), rx.read_exact(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 408");
    around_idle(t.elapsed(), "trickled request body");
    trickle.abort();
}

#[tokio::test]
async fn backend_stalling_mid_body_is_closed_at_backend_idle() {
    let origin = Lenient::spawn().await;
    let (gw, stats) = gateway(HttpHandlerOptions::default(), Some(IDLE)).await;
    let mut s = TcpStream::connect(gw).await.unwrap();
    let req = format!("GET http://{}/stall-body HTTP/1.1\r\n\r\n", origin.addr);
    s.write_all(req.as_bytes()).await.unwrap();
    // Head and the first 10 of 100 bytes arrive; then the origin stalls.
    let mut got = Vec::new();
    while !got.ends_with(b"0123456789") {
        let mut b = [0u8; 256];
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    let took = closed_after(&mut s, Instant::now()).await;
    around_idle(took, "stalled response body");
    assert_eq!(settled(&stats).await.upstream_error, 1);
}

#[tokio::test]
async fn backend_not_reading_the_upload_is_cut_at_backend_idle() {
    let origin = Lenient::spawn().await;
    let (gw, stats) = gateway(HttpHandlerOptions::default(), Some(IDLE)).await;
    let s = TcpStream::connect(gw).await.unwrap();
    let (mut rx, mut tx) = s.into_split();
    let n = 64 * 1024 * 1024;
    let req = format!(
        "POST http://{}/no-read HTTP/1.1\r\nContent-Length: {n}\r\n\r\n",
        origin.addr
    );
    tx.write_all(req.as_bytes()).await.unwrap();
    let upload = tokio::spawn(async move {
        let block = vec![b'u'; 1 << 20];
        for _ in 0..64 {
            if tx.write_all(&block).await.is_err() {
                return;
            }
        }
    });
    let t = Instant::now();
    let mut buf = vec![0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), rx.read_exact(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 502");
    // The socket buffers fill within milliseconds on loopback; then the idle
    // limit runs.
    let took = t.elapsed();
    assert!(
        took >= IDLE - Duration::from_millis(50) && took < IDLE * 3,
        "{took:?}"
    );
    upload.abort();
    assert_eq!(settled(&stats).await.upstream_error, 1);
}

#[tokio::test]
async fn client_reading_nothing_of_a_large_response_is_cut_at_client_idle() {
    let origin = Lenient::spawn().await;
    let (gw, stats) = gateway(HttpHandlerOptions::default(), Some(IDLE)).await;
    let mut s = TcpStream::connect(gw).await.unwrap();
    let req = format!("GET http://{}/big HTTP/1.1\r\n\r\n", origin.addr);
    s.write_all(req.as_bytes()).await.unwrap();
    let t = Instant::now();
    // Never read: the 64 MB cannot all fit in the socket buffers.
    wait_for(Duration::from_secs(5), || {
        let st = stats.snapshot();
        st.connections == 1 && st.active == 0
    })
    .await;
    let took = t.elapsed();
    assert!(
        took >= IDLE - Duration::from_millis(50) && took < IDLE * 3,
        "{took:?}"
    );
    assert_eq!(stats.snapshot().client_error, 1);
    drop(s);
}

#[tokio::test]
async fn auto_applies_read_timeout_once() {
    let opts: AutoHandlerOptions =
        gateway::config::from_yaml("metadata: {readTimeout: 1s}").unwrap();
    let (gw, stats) = serve(AutoHandler::new(opts, Router::default())).await;
    let mut s = TcpStream::connect(gw).await.unwrap();
    let t = Instant::now();
    // The first byte late, then nothing: the HTTP head must be complete by the
    // same 1 s deadline, not by a second one counted from the first byte.
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.write_all(b"G").await.unwrap();
    let took = closed_after(&mut s, t).await;
    around_idle(took, "auto handler, head after a late first byte");
    assert!(
        took < Duration::from_millis(1500),
        "readTimeout applied twice: {took:?}"
    );
    assert_eq!(settled(&stats).await.handshake_timeout, 1);
}

#[tokio::test]
async fn http10_keep_alive_is_announced_and_kept() {
    let origin = Lenient::spawn().await;
    let (gw, _) = gateway(HttpHandlerOptions::default(), Some(IDLE)).await;
    let b = origin.addr;
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(
        format!("GET http://{b}/one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let (head, body) = response(&mut s).await;
    assert!(head.contains("\r\nConnection: keep-alive\r\n"), "{head}");
    assert_eq!(body, b"seen /one");
    s.write_all(
        format!("GET http://{b}/two HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(response(&mut s).await.1, b"seen /two");
}

#[tokio::test]
async fn largest_accepted_durations_work_without_panic() {
    // The ceiling itself, through the same parser the config uses, and idle
    // limits far beyond it in the relay options: nothing may overflow a clock.
    let opts: HttpHandlerOptions =
        gateway::config::from_yaml("metadata: {readTimeout: 8760h, responseTimeout: 8760h}")
            .unwrap();
    let origin = Lenient::spawn().await;
    for idle in [gateway::proxy::clock::MAX_DURATION, Duration::MAX] {
        let (gw, stats) = gateway(opts.clone(), Some(idle)).await;
        let mut s = TcpStream::connect(gw).await.unwrap();
        s.write_all(
            format!(
                "POST http://{}/a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
                origin.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(response(&mut s).await.1, b"seen /a");
        // A CONNECT tunnel runs the relay's idle timers.
        s.write_all(format!("CONNECT {} HTTP/1.1\r\n\r\n", origin.addr).as_bytes())
            .await
            .unwrap();
        let (head, _) = response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        s.write_all(b"GET /t HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(response(&mut s).await.1, b"seen /t");
        drop(s);
        let st = settled(&stats).await;
        assert_eq!(st.connections, st.completed + st.upstream_error, "{st:?}");
    }
}
