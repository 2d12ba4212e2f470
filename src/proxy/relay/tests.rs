//! The relay end to end over loopback: both paths (splice and copying), short
//! reads, idle timeouts, the pipes idle connections hold, the size of the relay.

use super::*;
use tokio::net::TcpListener;

async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
    (c.unwrap(), s.unwrap().0)
}

/// client <-> (ps relay pb) <-> backend, with a half-close in the middle.
#[tokio::test]
async fn relays_both_ways_with_half_close() {
    half_close_case(true).await;
}

#[tokio::test]
async fn copying_relays_both_ways_with_half_close() {
    half_close_case(false).await;
}

async fn half_close_case(splice: bool) {
    let (mut client, ps) = pair().await;
    let (pb, mut backend) = pair().await;
    let counter = Arc::new(AtomicU64::new(0));
    let opts = RelayOpts {
        counter: Some(counter.clone()),
        ..Default::default()
    };
    let relay = tokio::spawn(async move { relay_tcp_mode(&ps, &pb, &opts, splice).await });
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let p2 = payload.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&p2).await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        back
    });
    let mut got = Vec::new();
    backend.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload);
    // After the client's EOF the backend can still answer.
    backend.write_all(b"answer").await.unwrap();
    backend.shutdown().await.unwrap();
    assert_eq!(writer.await.unwrap(), b"answer");
    let (up, down) = relay.await.unwrap().unwrap();
    assert_eq!((up, down), (3_000_000, 6));
    assert_eq!(counter.load(Ordering::Relaxed), 3_000_006);
}

/// Request/response exchanges of small messages: every read is short, so
/// every read clears readiness (`read_draining`). The next message, and a
/// message sent together with the end of stream, must still get through.
#[tokio::test]
async fn short_reads_lose_no_message() {
    let (mut client, ps) = pair().await;
    let (pb, mut backend) = pair().await;
    let relay =
        tokio::spawn(async move { relay_tcp_mode(&ps, &pb, &RelayOpts::default(), true).await });
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            let n = backend.read(&mut buf).await.unwrap();
            if n == 0 {
                backend.shutdown().await.unwrap();
                return;
            }
            backend.write_all(&buf[..n]).await.unwrap();
        }
    });
    for i in 0..300u32 {
        let msg = format!("request {i}");
        client.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg.as_bytes());
        if i % 50 == 0 {
            // A pause: the next message arrives on a socket whose readiness
            // was cleared, after the relay went back to waiting.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    client.write_all(b"last").await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"last");
    echo.await.unwrap();
    let (up, down) = relay.await.unwrap().unwrap();
    assert_eq!(up, down);
}

#[tokio::test]
async fn idle_timeout_ends_relay() {
    let (_client, ps) = pair().await;
    let (pb, _backend) = pair().await;
    let opts = RelayOpts {
        a_idle: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let e = relay_tcp(&ps, &pb, &opts).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn generic_relay_copies() {
    let (mut client, mut ps) = pair().await;
    let (mut pb, mut backend) = pair().await;
    let relay = tokio::spawn(async move { relay(&mut ps, &mut pb).await });
    client.write_all(b"hello").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    backend.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello");
    drop(backend);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(relay.await.unwrap().unwrap(), (5, 0));
}

#[cfg(target_os = "linux")]
fn pipes() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("pipe:"))
                .count()
        })
        .unwrap_or(0)
}

/// An idle relayed connection holds no pipe.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn idle_connection_takes_no_pipe() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let before = pipes();
    let mut relays = Vec::new();
    let mut keep = Vec::new();
    for _ in 0..20 {
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (client, ps) = (c.unwrap(), s.unwrap().0);
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (pb, backend) = (c.unwrap(), s.unwrap().0);
        keep.push((client, backend));
        relays.push(tokio::spawn(async move {
            relay_tcp(&ps, &pb, &RelayOpts::default()).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Spurious first wakeups may each borrow a pooled pipe and give it back,
    // so the pool may hold a few; 20 idle connections must not hold 40.
    let now = pipes();
    assert!(
        now <= before + 16,
        "{before} pipe fds before, {now} with 20 idle connections"
    );
    for r in relays {
        r.abort();
    }
}

/// The point of the hand-written state machine: a relayed connection's
/// relay state stays small.
#[tokio::test]
async fn relay_future_is_small() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let b = l.accept().await.unwrap().0;
    let opts = RelayOpts::default();
    let f = relay_tcp(&a, &b, &opts);
    assert!(
        std::mem::size_of_val(&f) <= 512,
        "{}",
        std::mem::size_of_val(&f)
    );
}
