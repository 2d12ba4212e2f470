//! Name resolution against a real DNS server: Debian's `dnsmasq`, started by each
//! test on a free loopback port with only the records the test gives it.
//!
//! * a service's `resolver:` sends its names to the configured nameserver (the
//!   name exists nowhere else), and the nameservers are asked in order;
//! * its `hosts:` table wins over DNS for the names it holds;
//! * gobetween's `srv` discovery gets *every* record of an SRV set too large for a
//!   UDP answer: dnsmasq truncates the UDP answer and the query is asked again
//!   over TCP (the hand-written client this replaced kept the truncated part);
//! * a reference to a resolver or hosts table that does not exist is refused at
//!   load, naming the field.

mod handlers_support;
mod proxy_common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::config::Config;
use gateway::proxy::ServiceSet;
use gateway::proxy::balance::Balancer;
use proxy_common::{Backend, start, tcp_services, wait_for, which};

/// A dnsmasq serving `records` (dnsmasq options such as
/// `--host-record=a.test,127.0.0.3`) on 127.0.0.1, UDP and TCP; killed on drop.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
}

impl Dnsmasq {
    fn start(records: &[String]) -> Dnsmasq {
        for _ in 0..20 {
            let port = free_port();
            let mut child = Command::new("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--no-poll",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    "--user=root",
                    "--pid-file=",
                    "--log-facility=-",
                    &format!("--port={port}"),
                ])
                .args(records)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dnsmasq (scripts/ci-deps.sh installs dnsmasq-base)");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            // Ready once its TCP socket accepts; gone early: the port was taken.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(addr).is_ok() {
                    return Dnsmasq { child, addr };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Two backends on one port: "dns" on 127.0.0.3 (what the DNS server says) and
/// "hosts" on 127.0.0.2 (what the hosts table says).
async fn two_backends() -> (Backend, Backend) {
    loop {
        let dns = Backend::start_on("dns", "127.0.0.3:0".parse().unwrap()).await;
        let port = dns.addr.port();
        if std::net::TcpListener::bind(("127.0.0.2", port)).is_err() {
            continue;
        }
        let hosts = Backend::start_on("hosts", ([127, 0, 0, 2], port).into()).await;
        return (dns, hosts);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_nameserver_answers_and_hosts_win_over_dns() {
    let (dns_backend, _hosts_backend) = two_backends().await;
    let port = dns_backend.addr.port();
    let dns = Dnsmasq::start(&["--host-record=backend.gw-test,127.0.0.3".to_string()]);
    // The first nameserver has nothing listening: the next one is asked.
    let dead = free_port();
    let tail = format!(
        "resolvers:\n- name: r0\n  nameservers:\n  - {{addr: \"tcp://127.0.0.1:{dead}\", timeout: 1s}}\n  - {{addr: \"{}\", timeout: 2s}}\n\
         hosts:\n- name: h0\n  mappings:\n  - {{ip: 127.0.0.2, hostname: other.gw-test, aliases: [backend.gw-test]}}\n",
        dns.addr
    );
    let node = format!("[{{addr: \"backend.gw-test:{port}\"}}]");
    let via_dns = tcp_services("via-dns", &node, "  resolver: r0\n");
    let via_hosts = tcp_services("via-hosts", &node, "  resolver: r0\n  hosts: h0\n")
        .replace("services:\n", "");
    let set = start(&format!("{via_dns}{via_hosts}{tail}"));
    assert_eq!(
        which(set.local_addr("via-dns").unwrap(), None)
            .await
            .as_deref(),
        Some("dns"),
        "the name exists only in the resolver's nameserver"
    );
    assert_eq!(
        which(set.local_addr("via-hosts").unwrap(), None)
            .await
            .as_deref(),
        Some("hosts"),
        "the hosts table wins over DNS"
    );
}

/// A forwarding service "srv" whose nodes come from SRV discovery of
/// `_web._tcp.gw-test` at `dns` every 200 ms, with `extra` discovery options.
fn srv_service(dns: &Dnsmasq, extra: &str) -> (ServiceSet, Arc<Balancer>) {
    let discovery = format!(
        "{{kind: srv, srv_lookup_server: \"{}\", srv_lookup_pattern: _web._tcp.gw-test, interval: 200ms, {extra}}}",
        dns.addr
    );
    let set = start(&tcp_services(
        "srv",
        "[]",
        &format!("    discovery: {discovery}\n"),
    ));
    let bal = set.balancer("srv").unwrap();
    (set, bal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_discovery_gets_every_record_of_a_truncated_answer() {
    const RECORDS: usize = 120;
    let backend = Backend::start("a").await;
    // Long distinct targets: about 70 bytes a record, ~8 KB in all: more than a
    // UDP answer carries (512 bytes without EDNS, 1232-4096 with it).
    let mut records: Vec<String> = (0..RECORDS)
        .map(|i| {
            format!(
                "--srv-host=_web._tcp.gw-test,node-{i:03}-with-a-long-label-that-defeats-compression.gw-test,{},1,{}",
                backend.addr.port(),
                i % 7 + 1
            )
        })
        .collect();
    // And one resolvable target, so the service can also be used.
    records.push("--host-record=localhost.gw-test,127.0.0.1".into());
    let dns = Dnsmasq::start(&records);
    let (set, bal) = srv_service(&dns, "timeout: 3s");
    assert!(
        wait_for(Duration::from_secs(10), || bal.nodes().len() == RECORDS).await,
        "expected all {RECORDS} SRV records as nodes, have {}",
        bal.nodes().len()
    );
    let nodes = bal.nodes();
    let n = nodes
        .iter()
        .find(|n| n.config.addr.starts_with("node-005-"))
        .expect("node-005");
    assert_eq!(
        n.config.addr,
        format!(
            "node-005-with-a-long-label-that-defeats-compression.gw-test:{}",
            backend.addr.port()
        )
    );
    assert_eq!((n.config.priority, n.config.weight), (1, 6));
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_discovery_over_tcp_only_and_nodes_are_dialled() {
    let backend = Backend::start("a").await;
    let dns = Dnsmasq::start(&[format!(
        "--srv-host=_web._tcp.gw-test,localhost,{},0,1",
        backend.addr.port()
    )]);
    let (set, bal) = srv_service(&dns, "srv_dns_protocol: tcp");
    assert!(wait_for(Duration::from_secs(10), || bal.nodes().len() == 1).await);
    assert_eq!(
        bal.nodes()[0].config.addr,
        format!("localhost:{}", backend.addr.port())
    );
    assert_eq!(
        which(set.local_addr("srv").unwrap(), None).await.as_deref(),
        Some("a")
    );
    set.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn unknown_resolver_or_hosts_name_is_refused_naming_the_field() {
    let base =
        "services:\n- name: s\n  addr: \":0\"\n  handler: {type: http}\n  listener: {type: tcp}\n";
    let e = Config::from_str_named(&format!("{base}  resolver: r9\n"), Path::new("g.yml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("services[0].resolver"), "{e}");
    assert!(e.contains("no resolver named \"r9\""), "{e}");
    let e = Config::from_str_named(
        &format!(
            "{base}  hosts: h9\nhosts:\n- name: h0\n  mappings: [{{ip: 10.0.0.1, hostname: a.lan}}]\n"
        ),
        Path::new("g.yml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("services[0].hosts"), "{e}");
    assert!(e.contains("known: h0"), "{e}");
    let e = Config::from_str_named(
        &format!("{base}resolvers:\n- name: r0\n  nameservers: [{{addr: 10.0.0.53, clientIP: 1.2.3.4}}]\n"),
        Path::new("g.yml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("resolvers[0].nameservers[0].clientIP"), "{e}");
    let e = Config::from_str_named(
        &format!("{base}resolvers:\n- name: r0\n  nameservers: [{{addr: dns.google}}]\n"),
        Path::new("g.yml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("IP address"), "{e}");
}

/// A TCP port free on both 127.0.0.2 and 127.0.0.3 right now.
fn port_on_two() -> u16 {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.3", port)).is_ok() {
            return port;
        }
    }
}

/// GOST's names in a chain (x/chain/route.go, router.go), with two of this
/// gateway's HTTP proxies on one port: `proxy-a` on 127.0.0.2, `proxy-b` on
/// 127.0.0.3, and `proxy.gw-test` known only to dnsmasq (as 127.0.0.3) and to
/// the hosts table `h0` (as 127.0.0.2). Which proxy a connection crossed tells
/// which name source answered:
///
/// * a hop's `resolver` resolves its node's address (proxy-b);
/// * a node's `hosts` wins over its hop's resolver (proxy-a);
/// * a second hop's node name is resolved here and sent to the first hop as an
///   address: proxy-a, which has no resolver, could not resolve it;
/// * the service's `resolver` resolves the target before the chain: the last
///   proxy (proxy-a) is asked for an address it could not have found.
///
/// The chains also use a top-level hop by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_and_node_resolvers_choose_the_proxy() {
    let backend = Backend::start("b").await;
    let bport = backend.addr.port();
    let port = port_on_two();
    let dns = Dnsmasq::start(&[
        "--host-record=proxy.gw-test,127.0.0.3".to_string(),
        "--host-record=backend.gw-test,127.0.0.1".to_string(),
    ]);
    let fwd = |name: &str, chain: &str, node: &str, extra: &str| {
        format!(
            "- name: {name}\n  addr: \"127.0.0.1:0\"\n{extra}  handler: {{type: tcp, chain: {chain}}}\n  listener: {{type: tcp}}\n  forwarder: {{nodes: [{{addr: \"{node}\"}}]}}\n"
        )
    };
    let direct = format!("127.0.0.1:{bport}");
    let yaml = format!(
        "services:\n\
         - {{name: proxy-a, addr: \"127.0.0.2:{port}\", handler: {{type: http}}, listener: {{type: tcp}}}}\n\
         - {{name: proxy-b, addr: \"127.0.0.3:{port}\", handler: {{type: http}}, listener: {{type: tcp}}}}\n\
         {}{}{}{}\
         resolvers: [{{name: r0, nameservers: [{{addr: \"{}\", timeout: 2s}}]}}]\n\
         hosts: [{{name: h0, mappings: [{{ip: 127.0.0.2, hostname: proxy.gw-test}}]}}]\n\
         hops: [{{name: plain, nodes: [{{name: a, addr: \"127.0.0.2:{port}\"}}]}}]\n\
         chains:\n\
         - {{name: by-hop, hops: [{{resolver: r0, nodes: [{{name: p, addr: \"proxy.gw-test:{port}\"}}]}}]}}\n\
         - {{name: by-node, hops: [{{resolver: r0, nodes: [{{name: p, addr: \"proxy.gw-test:{port}\", hosts: h0}}]}}]}}\n\
         - {{name: two, hops: [{{name: plain}}, {{resolver: r0, nodes: [{{name: p, addr: \"proxy.gw-test:{port}\"}}]}}]}}\n\
         - {{name: plain, hops: [{{name: plain}}]}}\n",
        fwd("via-hop", "by-hop", &direct, ""),
        fwd("via-node", "by-node", &direct, ""),
        fwd("second-hop", "two", &direct, ""),
        fwd(
            "named-target",
            "plain",
            &format!("backend.gw-test:{bport}"),
            "  resolver: r0\n"
        ),
        dns.addr
    );
    let set = start(&yaml);
    let crossed = |name: &str| set.stats(name).unwrap().accepted;
    let through = async |service: &str| which(set.local_addr(service).unwrap(), None).await;

    assert_eq!(through("via-hop").await.as_deref(), Some("b"));
    assert_eq!(
        (crossed("proxy-a"), crossed("proxy-b")),
        (0, 1),
        "hop resolver"
    );
    assert_eq!(through("via-node").await.as_deref(), Some("b"));
    assert_eq!(
        (crossed("proxy-a"), crossed("proxy-b")),
        (1, 1),
        "node hosts"
    );
    assert_eq!(through("second-hop").await.as_deref(), Some("b"));
    assert_eq!(
        (crossed("proxy-a"), crossed("proxy-b")),
        (2, 2),
        "second hop"
    );
    assert_eq!(through("named-target").await.as_deref(), Some("b"));
    assert_eq!((crossed("proxy-a"), crossed("proxy-b")), (3, 2), "target");
    set.shutdown(Duration::from_secs(1)).await;
}

/// UDP destinations go through the service's resolver as TCP ones do: a UDP
/// forwarder whose node is a name only dnsmasq knows, and the SOCKS5 UDP relay
/// sending to such a name (RFC 1928 ATYP 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_destinations_use_the_service_resolver() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = handlers_support::spawn_udp_echo("127.0.0.1:0").await;
    let dns = Dnsmasq::start(&["--host-record=echo.gw-test,127.0.0.1".to_string()]);
    let set = start(&format!(
        "services:\n\
         - {{name: fwd, addr: \"127.0.0.1:0\", resolver: r0, handler: {{type: udp}}, listener: {{type: udp}}, udp: {{max_responses: 1}}, forwarder: {{nodes: [{{addr: \"echo.gw-test:{}\"}}]}}}}\n\
         - {{name: relay, addr: \"127.0.0.1:0\", resolver: r0, handler: {{type: socks5, metadata: {{udp: true}}}}, listener: {{type: tcp}}}}\n\
         resolvers: [{{name: r0, nameservers: [{{addr: \"{}\", timeout: 2s}}]}}]\n",
        echo.port(),
        dns.addr
    ));
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 2048];
    client
        .send_to(b"hi", set.local_addr("fwd").unwrap())
        .await
        .unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("an answer through the forwarder")
        .unwrap();
    assert_eq!(&buf[..n], b"echo:hi");

    // SOCKS5: no-auth greeting, UDP ASSOCIATE, then a datagram to the name.
    let mut control = tokio::net::TcpStream::connect(set.local_addr("relay").unwrap())
        .await
        .unwrap();
    control.write_all(&[5, 1, 0]).await.unwrap();
    let mut m = [0u8; 2];
    control.read_exact(&mut m).await.unwrap();
    assert_eq!(m, [5, 0]);
    control
        .write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut reply = [0u8; 10];
    control.read_exact(&mut reply).await.unwrap();
    assert_eq!((reply[1], reply[3]), (0, 1), "{reply:?}");
    let relay = SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    let name = b"echo.gw-test";
    let mut dgram = vec![0, 0, 0, 3, name.len() as u8];
    dgram.extend_from_slice(name);
    dgram.extend_from_slice(&echo.port().to_be_bytes());
    dgram.extend_from_slice(b"ping");
    client.send_to(&dgram, relay).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .expect("an answer through the SOCKS5 UDP relay")
        .unwrap();
    assert!(buf[..n].ends_with(b"echo:ping"), "{:?}", &buf[..n]);
    drop(control);
    set.shutdown(Duration::from_secs(1)).await;
}
