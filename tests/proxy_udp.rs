//! UDP forwarding services on loopback: sessions, limits, fire-and-forget,
//! idle timeouts, transparent mode.

mod proxy_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gateway::config::Config;
use gateway::proxy::ServiceSet;
use proxy_common::*;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// A UDP backend answering `name:payload`, counting datagrams and reporting the
/// source address of each.
struct UdpBackend {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    sources: mpsc::UnboundedReceiver<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn udp_backend(name: &'static str) -> UdpBackend {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let (tx, sources) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            c.fetch_add(1, Ordering::SeqCst);
            let _ = tx.send(from);
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from).await;
        }
    });
    UdpBackend {
        addr,
        count,
        sources,
        task,
    }
}

/// Start a UDP forwarding service `name` on a free loopback port with these
/// nodes and `extra` service lines; returns the set and the service's address.
fn start_udp(name: &str, nodes: &[&UdpBackend], extra: &str) -> (ServiceSet, SocketAddr) {
    let addrs: Vec<SocketAddr> = nodes.iter().map(|b| b.addr).collect();
    let set = start(&format!(
        "services:\n- name: {name}\n  addr: \"127.0.0.1:0\"\n  handler: {{type: udp}}\n  listener: {{type: udp}}\n  forwarder: {{nodes: {}}}\n{extra}",
        addrs_yaml(&addrs)
    ));
    let addr = set.local_addr(name).unwrap();
    (set, addr)
}

/// A client socket on loopback.
async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

async fn ask(client: &UdpSocket, to: SocketAddr, msg: &str) -> Option<String> {
    client.send_to(msg.as_bytes(), to).await.unwrap();
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(Duration::from_millis(800), client.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            assert_eq!(from, to, "reply must come from the service address");
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        }
        _ => None,
    }
}

/// Send `0`, `1`, … `n-1` from `c`, each answered, and return the node that
/// answered each. A short pause after each lets an ended session be noticed
/// before the next datagram.
async fn nodes_answering(c: &UdpSocket, to: SocketAddr, n: usize) -> Vec<String> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let r = ask(c, to, &i.to_string()).await.unwrap();
        nodes.push(r[..1].to_string());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_sticks_to_its_node() {
    let (a, b) = (udp_backend("a").await, udp_backend("b").await);
    let (set, to) = start_udp("s", &[&a, &b], "  client_idle_timeout: 2s\n");
    let c1 = client().await;
    let c2 = client().await;
    let first = ask(&c1, to, "1").await.unwrap();
    let node = &first[..1];
    for i in 2..6 {
        assert_eq!(
            ask(&c1, to, &i.to_string()).await.unwrap(),
            format!("{node}:{i}")
        );
    }
    // A second client is a second session: round robin gives it the other node.
    let other = ask(&c2, to, "x").await.unwrap();
    assert_ne!(&other[..1], node);
    assert_eq!(set.stats("s").unwrap().accepted, 2);
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_responses_ends_the_session() {
    let (a, b) = (udp_backend("a").await, udp_backend("b").await);
    let (set, to) = start_udp("r", &[&a, &b], "  udp: {max_responses: 1}\n");
    let nodes = nodes_answering(&client().await, to, 4).await;
    assert_eq!(nodes, ["a", "b", "a", "b"], "each datagram a new session");
    assert!(wait_stats(&set, "r", Duration::from_secs(1), |s| s.completed == 4).await);
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_two_then_new_session() {
    let (a, b) = (udp_backend("a").await, udp_backend("b").await);
    let (set, to) = start_udp(
        "q",
        &[&a, &b],
        "  udp: {max_requests: 2}\n  backend_idle_timeout: 300ms\n",
    );
    let nodes = nodes_answering(&client().await, to, 4).await;
    assert_eq!(nodes, ["a", "a", "b", "b"]);
    set.shutdown(Duration::from_secs(1)).await;
}

/// Datagrams that reach a session after the last one it takes (`max_requests`)
/// but before it stops are not lost: they open the next session. The three are
/// sent back to back, so on this single-threaded runtime the receive loop queues
/// all of them before the first session runs; the session takes two, and the
/// third used to vanish without being sent or counted.
#[tokio::test]
async fn datagrams_queued_past_a_sessions_end_open_the_next_one() {
    let a = udp_backend("a").await;
    let (set, to) = start_udp(
        "hb",
        &[&a],
        "  udp: {max_requests: 2}\n  backend_idle_timeout: 300ms\n",
    );
    let c = client().await;
    for m in ["1", "2", "3"] {
        c.send_to(m.as_bytes(), to).await.unwrap();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(2), c.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => break,
        }
    }
    got.sort();
    assert_eq!(got, ["a:1", "a:2", "a:3"]);
    assert_eq!(a.count.load(Ordering::SeqCst), 3);
    let s = set.stats("hb").unwrap();
    assert_eq!((s.udp_in, s.accepted, s.udp_dropped), (3, 2, 0), "{s:?}");
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget_picks_a_node_per_datagram() {
    let (a, b) = (udp_backend("a").await, udp_backend("b").await);
    let (set, to) = start_udp("ff", &[&a, &b], "  udp: {max_requests: 1}\n");
    let c = client().await;
    for i in 0..10 {
        c.send_to(format!("{i}").as_bytes(), to).await.unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(2), || a.count.load(Ordering::SeqCst)
            == 5
            && b.count.load(Ordering::SeqCst) == 5)
        .await,
        "a={} b={}",
        a.count.load(Ordering::SeqCst),
        b.count.load(Ordering::SeqCst)
    );
    // No session, no reply relayed.
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), c.recv_from(&mut buf))
            .await
            .is_err()
    );
    let st = set.stats("ff").unwrap();
    assert_eq!((st.accepted, st.udp_in), (0, 10));
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_expires() {
    let a = udp_backend("a").await;
    let (set, to) = start_udp("i", &[&a], "  client_idle_timeout: 200ms\n");
    let c = client().await;
    assert!(ask(&c, to, "x").await.is_some());
    assert_eq!(set.stats("i").unwrap().active, 1);
    assert!(wait_stats(&set, "i", Duration::from_secs(2), |s| s.active == 0).await);
    assert_eq!(set.stats("i").unwrap().idle_closed, 1);
    // The next datagram opens a new session.
    assert!(ask(&c, to, "y").await.is_some());
    assert_eq!(set.stats("i").unwrap().accepted, 2);
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_udp_service_is_refused_at_load() {
    let yaml = "services: [{name: u, addr: \":5353\", handler: {type: udp}, listener: {type: udp}, forwarder: {nodes: [{addr: \"127.0.0.1:53\"}]}}]\n";
    let e = Config::from_str_named(yaml, std::path::Path::new("g.yml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("services[0].udp"), "{e}");
    assert!(
        e.contains("max_requests") && e.contains("client_idle_timeout"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_drops_and_counts() {
    let a = udp_backend("a").await;
    let (set, to) = start_udp("n", &[&a], "  client_idle_timeout: 1s\n");
    set.balancer("n").unwrap().nodes()[0].set_healthy(false);
    let c = client().await;
    assert!(ask(&c, to, "x").await.is_none());
    let st = set.stats("n").unwrap();
    assert_eq!((st.no_node, st.udp_dropped), (1, 1));
    set.shutdown(Duration::from_secs(1)).await;
}

/// Transparent mode: the backend sees the client's own address as the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_keeps_client_source_address() {
    let mut a = udp_backend("a").await;
    let (set, to) = start_udp(
        "t",
        &[&a],
        "  client_idle_timeout: 1s\n  udp: {transparent: true}\n",
    );
    // The client's socket shares its address with the proxy's transparent socket
    // (both on this host), so both set SO_REUSEADDR.
    let raw = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    raw.set_reuse_address(true).unwrap();
    raw.set_nonblocking(true).unwrap();
    raw.bind(&"127.0.0.42:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let c = UdpSocket::from_std(raw.into()).unwrap();
    let me = c.local_addr().unwrap();
    c.send_to(b"hi", to).await.unwrap();
    let src = tokio::time::timeout(Duration::from_secs(2), a.sources.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(src, me, "backend must see the client's address");
    // The reply comes back through the session to the client.
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), c.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..n], from), (&b"a:hi"[..], to));
    set.shutdown(Duration::from_secs(1)).await;
}

/// UDP probe health check: a node that answers stays, a closed port leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_probe_health_check() {
    let a = udp_backend("a").await;
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let yaml = format!(
        "services:\n- name: hc\n  addr: \"127.0.0.1:0\"\n  handler: {{type: udp}}\n  listener: {{type: udp}}\n  client_idle_timeout: 1s\n  forwarder:\n    nodes: [{{name: a, addr: \"{}\"}}, {{name: closed, addr: \"{closed}\"}}]\n    healthcheck: {{kind: probe, probe_protocol: udp, probe_send: \"PING\", probe_recv: \"a:PING\", interval: 100ms, timeout: 300ms}}\n",
        a.addr
    );
    let set = start(&yaml);
    let bal = set.balancer("hc").unwrap();
    assert!(wait_for(Duration::from_secs(3), || !bal.nodes()[1].is_healthy()).await);
    assert!(bal.nodes()[0].is_healthy());
    // Every session now goes to a.
    for _ in 0..3 {
        let c = client().await;
        assert_eq!(
            ask(&c, set.local_addr("hc").unwrap(), "q").await.as_deref(),
            Some("a:q")
        );
    }
    set.shutdown(Duration::from_secs(1)).await;
}

/// On a UDP service `max_connections` bounds the sessions alive at once. The
/// refused client is checked by its counter, not by waiting for a reply that
/// does not come: that wait would outlast the idle timeout, and the first
/// client's next datagram would then open a new session instead of proving that
/// the existing one goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_bounds_sessions() {
    let a = udp_backend("a").await;
    let (set, to) = start_udp(
        "m",
        &[&a],
        "  client_idle_timeout: 1500ms\n  max_connections: 1\n",
    );
    let (c1, c2) = (client().await, client().await);
    assert!(ask(&c1, to, "1").await.is_some());
    c2.send_to(b"2", to).await.unwrap();
    assert!(
        wait_stats(&set, "m", Duration::from_secs(1), |s| s.over_limit == 1).await,
        "second session must be refused"
    );
    assert!(
        ask(&c1, to, "3").await.is_some(),
        "the existing session goes on"
    );
    let s = set.stats("m").unwrap();
    assert_eq!(
        (s.accepted, s.idle_closed),
        (1, 0),
        "still the first session: {s:?}"
    );
    // Once the first session idles out, there is room again.
    assert!(wait_stats(&set, "m", Duration::from_secs(4), |s| s.active == 0).await);
    assert!(ask(&c2, to, "4").await.is_some());
    set.shutdown(Duration::from_secs(1)).await;
}
