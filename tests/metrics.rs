//! The Prometheus endpoint of the real binary, scraped over HTTP and read with a
//! Prometheus text parser (`prometheus-parse`), never by grepping lines.
//!
//! * `traffic_moves_the_service_metrics` (loopback, `-metrics` flag): requests,
//!   in-flight, bytes in both directions while a connection is still open, the
//!   duration histogram and the node's connect latency once it closes; 401
//!   without or with wrong credentials, 404 on another path.
//! * `failover_moves_the_failover_metrics` (two-node namespace lab, `metrics:`
//!   section): exactly one node reports `gateway_vip_held 1`, its state is
//!   MASTER, heartbeats flow both ways, GARP was sent; a garbage datagram shows
//!   up as a rejected heartbeat by reason; when the master dies the other
//!   node's transition to MASTER is counted with its reason and it reports the
//!   VIP held.
//!
//! Every wait polls the endpoint against a generous deadline.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use prometheus_parse::{Scrape, Value};

/// Generous: the machine running the tests may be busy.
const DEADLINE: Duration = Duration::from_secs(20);

/// One HTTP/1.0 GET; `(status, body)`.
fn http_get(
    addr: SocketAddr,
    path: &str,
    auth: Option<(&str, &str)>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {resp:?}")))?;
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

fn parse(body: &str) -> Scrape {
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("the text format parses")
}

/// The value of the sample `metric` whose labels include all of `labels`.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .and_then(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            _ => None,
        })
}

/// The `+Inf` bucket (the count) of a histogram series.
fn histogram_count(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .and_then(|x| match &x.value {
            Value::Histogram(b) => b
                .iter()
                .find(|c| c.less_than.is_infinite())
                .map(|c| c.count),
            _ => None,
        })
}

/// Scrape until `check` accepts the result; the last scrape in the panic message.
fn scrape_until(
    what: &str,
    mut get: impl FnMut() -> std::io::Result<(u16, String)>,
    mut check: impl FnMut(&Scrape) -> bool,
) -> Scrape {
    let end = Instant::now() + DEADLINE;
    loop {
        let last = match get() {
            Ok((200, body)) => {
                let s = parse(&body);
                if check(&s) {
                    return s;
                }
                body
            }
            Ok((code, body)) => format!("HTTP {code}: {body}"),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < end,
            "{what}: not seen within {DEADLINE:?}; last scrape:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn traffic_moves_the_service_metrics() {
    // A backend that reads 5 bytes, answers 11, and holds the connection open
    // until the client closes it.
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in backend.incoming().flatten() {
            let mut buf = [0u8; 5];
            if s.read_exact(&mut buf).is_ok() && s.write_all(b"hello world").is_ok() {
                let _ = s.read(&mut [0u8; 1]);
            }
        }
    });
    let (svc_port, dead_port, chained_port, closed_port, metrics_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("g.yml");
    std::fs::write(
        &cfg,
        format!(
            "services:\n- name: fwd\n  addr: 127.0.0.1:{svc_port}\n  handler: {{type: tcp}}\n  listener: {{type: tcp}}\n  forwarder:\n    nodes:\n    - {{name: b1, addr: \"127.0.0.1:{backend_port}\"}}\n\
             - name: dead\n  addr: 127.0.0.1:{dead_port}\n  handler: {{type: tcp}}\n  listener: {{type: tcp}}\n  forwarder:\n    nodes:\n    - {{name: gone, addr: \"127.0.0.1:{closed_port}\"}}\n\
             - name: chained\n  addr: 127.0.0.1:{chained_port}\n  handler: {{type: tcp, chain: c1}}\n  listener: {{type: tcp}}\n  forwarder:\n    nodes:\n    - {{name: b1, addr: \"127.0.0.1:{backend_port}\"}}\n\
             chains:\n- name: c1\n  hops:\n  - name: hop-0\n    nodes:\n    - {{name: proxy-gone, addr: \"127.0.0.1:{closed_port}\", connector: {{type: http}}}}\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("gateway.log");
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_gateway"))
            .arg("-config")
            .arg(&cfg)
            .arg("-metrics")
            .arg(format!("prom:s3cret@127.0.0.1:{metrics_port}?path=/m"))
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let maddr: SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    let get = || http_get(maddr, "/m", Some(("prom", "s3cret")));
    let svc = [("service", "fwd")];
    let node = [("service", "fwd"), ("node", "b1")];

    // Up, with the service listed and nothing counted yet.
    let s = scrape_until("the endpoint answering", get, |s| {
        value(s, "gost_services", &[]) == Some(3.0)
    });
    assert_eq!(value(&s, "gost_service_requests_total", &svc), Some(0.0));
    assert!(
        value(&s, "gost_services", &[]).is_some()
            && s.samples.iter().any(|x| x.labels.get("host").is_some()),
        "GOST's host label"
    );

    // Credentials are required, and checked.
    let (code, _) = http_get(maddr, "/m", None).unwrap();
    assert_eq!(code, 401, "no credentials");
    let (code, _) = http_get(maddr, "/m", Some(("prom", "wrong"))).unwrap();
    assert_eq!(code, 401, "wrong password");
    let (code, _) = http_get(maddr, "/metrics", Some(("prom", "s3cret"))).unwrap();
    assert_eq!(code, 404, "only the configured path serves metrics");

    // One connection, still open: counted as a request in flight, and its bytes
    // are counted as they move, not when it ends.
    let mut c = TcpStream::connect(("127.0.0.1", svc_port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"ping!").unwrap();
    let mut answer = [0u8; 11];
    c.read_exact(&mut answer).unwrap();
    let s = scrape_until("one request in flight with its bytes", get, |s| {
        value(s, "gost_service_requests_in_flight", &svc) == Some(1.0)
            && value(s, "gost_service_transfer_input_bytes_total", &svc) == Some(5.0)
            && value(s, "gost_service_transfer_output_bytes_total", &svc) == Some(11.0)
    });
    assert_eq!(value(&s, "gost_service_requests_total", &svc), Some(1.0));
    assert_eq!(
        value(&s, "gateway_node_connections_in_flight", &node),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "gateway_node_transfer_bytes_total", &node),
        Some(16.0)
    );
    assert_eq!(value(&s, "gateway_node_up", &node), Some(1.0));
    assert_eq!(
        histogram_count(&s, "gateway_node_connect_duration_seconds", &node),
        Some(1.0),
        "the connect to the node is timed"
    );
    assert_eq!(
        histogram_count(&s, "gost_service_request_duration_seconds", &svc),
        Some(0.0),
        "a connection is timed when it ends"
    );

    // Closed: no longer in flight, its duration observed, its outcome counted.
    drop(c);
    let s = scrape_until("the request done", get, |s| {
        value(s, "gost_service_requests_in_flight", &svc) == Some(0.0)
            && histogram_count(s, "gost_service_request_duration_seconds", &svc) == Some(1.0)
    });
    assert_eq!(
        value(&s, "gateway_node_connections_total", &node),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "gateway_node_connections_in_flight", &node),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "gost_service_handler_errors_total", &svc),
        Some(0.0)
    );

    // A service whose only node refuses: the client is closed at once, which
    // is a handler error (GOST's sense) and a failed connect.
    let mut c = TcpStream::connect(("127.0.0.1", dead_port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.read(&mut [0u8; 1]);
    let dead = [("service", "dead")];
    let s = scrape_until("the refused connection counted", get, |s| {
        value(s, "gost_service_handler_errors_total", &dead) == Some(1.0)
    });
    assert!(value(&s, "gateway_service_connect_failures_total", &dead).is_some_and(|v| v >= 1.0));
    assert_eq!(
        value(
            &s,
            "gateway_service_connections_closed_total",
            &[("service", "dead"), ("outcome", "no_node")]
        ),
        Some(1.0)
    );
    assert!(
        value(
            &s,
            "gateway_node_connect_failures_total",
            &[("service", "dead"), ("node", "gone")]
        )
        .is_some_and(|v| v >= 1.0)
    );

    // GOST's chain errors: the chain's only proxy is gone, so every connection
    // through it blames that node.
    assert_eq!(
        value(
            &s,
            "gost_chain_errors_total",
            &[("chain", "c1"), ("node", "proxy-gone")]
        ),
        Some(0.0)
    );
    let mut c = TcpStream::connect(("127.0.0.1", chained_port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = c.read(&mut [0u8; 1]);
    let s = scrape_until("the chain error counted", get, |s| {
        value(
            s,
            "gost_chain_errors_total",
            &[("chain", "c1"), ("node", "proxy-gone")],
        )
        .is_some_and(|v| v >= 1.0)
            && value(
                s,
                "gost_chain_errors_total",
                &[("chain", "c1"), ("node", "")],
            )
            .is_some_and(|v| v >= 1.0)
    });
    // ... and against the chain as a whole, not the forwarder's node behind it.
    assert_eq!(
        value(
            &s,
            "gateway_node_connect_failures_total",
            &[("service", "chained"), ("node", "b1")]
        ),
        Some(0.0)
    );
    drop(log);
}

#[cfg(target_os = "linux")]
mod lab_test {
    use super::*;
    use common::lab::{Host, Lab};

    const METRICS_PORT: u16 = 9000;

    fn scrape(lab: &Lab, host: Host) -> std::io::Result<(u16, String)> {
        let addr: SocketAddr = (lab.ip(host), METRICS_PORT).into();
        lab.in_netns(Host::Client, move || http_get(addr, "/metrics", None))?
    }

    fn held(s: &Scrape) -> Option<f64> {
        s.samples
            .iter()
            .find(|x| x.metric == "gateway_vip_held")
            .and_then(|x| match x.value {
                Value::Gauge(v) => Some(v),
                _ => None,
            })
    }

    #[test]
    fn failover_moves_the_failover_metrics() {
        let lab = Lab::new("metrics-failover");
        let vip = lab.default_vip();
        let vip_s = vip.to_string();
        let cfg = |host: Host| {
            format!(
                "{}{}metrics:\n  addr: \":{METRICS_PORT}\"\n",
                lab.floating_ip_yaml(host, if host == Host::N1 { 200 } else { 100 }, &[]),
                lab.forward_service_yaml()
            )
        };
        let _g1 = lab.spawn_gateway(Host::N1, &cfg(Host::N1));
        let _g2 = lab.spawn_gateway(Host::N2, &cfg(Host::N2));
        let master = lab
            .wait_single_holder(vip, DEADLINE)
            .unwrap_or_else(|| panic!("no single VIP holder: {:?}", lab.vip_holders(vip)));
        let backup = master.peer();

        // The holder says so, the other does not: the "two holders" / "no
        // holder" alerts sum exactly this over both nodes.
        let m = scrape_until(
            "the master's metrics",
            || scrape(&lab, master),
            |s| {
                held(s) == Some(1.0)
                    && value(s, "gateway_failover_state", &[("state", "master")]) == Some(1.0)
                    && value(s, "gateway_garp_sent_total", &[]).is_some_and(|v| v > 0.0)
                    && value(s, "gateway_heartbeats_received_total", &[]).is_some_and(|v| v > 0.0)
            },
        );
        assert_eq!(
            value(&m, "gateway_vip_held", &[("vip", vip_s.as_str())]),
            Some(1.0),
            "the vip label"
        );
        assert_eq!(
            value(&m, "gateway_failover_state", &[("state", "backup")]),
            Some(0.0)
        );
        assert!(
            value(
                &m,
                "gateway_failover_transitions_total",
                &[("from", "backup"), ("to", "master")]
            )
            .is_some_and(|v| v >= 1.0),
            "the takeover is counted"
        );
        let b = scrape_until(
            "the backup's metrics",
            || scrape(&lab, backup),
            |s| {
                held(s) == Some(0.0)
                    && value(s, "gateway_failover_state", &[("state", "backup")]) == Some(1.0)
                    && value(s, "gateway_heartbeats_received_total", &[]).is_some_and(|v| v > 0.0)
            },
        );
        assert!(value(&b, "gateway_heartbeats_sent_total", &[]).is_some_and(|v| v > 0.0));
        let master_ip = lab.ip(master).to_string();
        assert!(
            value(
                &b,
                "gateway_failover_peer_last_heard_seconds",
                &[("peer", master_ip.as_str())]
            )
            .is_some(),
            "the master is on the backup's peer board"
        );
        assert_eq!(value(&b, "gateway_failover_standby", &[]), Some(0.0));
        assert!(
            value(&b, "gateway_failover_state_since_timestamp_seconds", &[])
                .is_some_and(|v| v > 1.7e9)
        );
        assert_eq!(
            value(
                &b,
                "gateway_failover_transitions_total",
                &[("from", "init"), ("to", "backup"), ("reason", "startup")]
            ),
            Some(1.0)
        );

        // A datagram that is no heartbeat is dropped and counted by reason.
        let before = value(
            &b,
            "gateway_heartbeats_rejected_total",
            &[("reason", "short")],
        )
        .unwrap_or(0.0);
        let target: SocketAddr = (lab.ip(backup), 7654).into();
        lab.in_netns(Host::Client, move || {
            let u = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            u.send_to(b"junk", target).unwrap();
        })
        .unwrap();
        scrape_until(
            "the junk datagram counted",
            || scrape(&lab, backup),
            |s| {
                value(
                    s,
                    "gateway_heartbeats_rejected_total",
                    &[("reason", "short")],
                )
                .is_some_and(|v| v > before)
            },
        );

        // The master dies: the backup takes over, counts why, and holds the VIP.
        lab.kill_node(master);
        let s = scrape_until(
            "the takeover on the backup",
            || scrape(&lab, backup),
            |s| {
                held(s) == Some(1.0)
                    && value(s, "gateway_failover_state", &[("state", "master")]) == Some(1.0)
            },
        );
        let reasons: Vec<String> = s
            .samples
            .iter()
            .filter(|x| {
                x.metric == "gateway_failover_transitions_total"
                    && x.labels.get("from") == Some("backup")
                    && x.labels.get("to") == Some("master")
            })
            .filter_map(|x| x.labels.get("reason").map(str::to_string))
            .collect();
        assert!(
            reasons.iter().any(|r| r == "master_dead"),
            "a dead master's takeover has the reason master_dead: {reasons:?}"
        );
        // (The dead node's kernel may still list it on its downed link.)
        assert!(lab.vip_holders(vip).contains(&backup), "the kernel agrees");
    }
}
