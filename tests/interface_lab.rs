//! GOST's `interface` on a two-NIC gateway, proven by what the backends see.
//!
//! The lab (namespaces private to each test, deleted by a guard):
//!
//! ```text
//!   b1 (eth0 10.1.1.2) ---- eth0 10.1.1.1 [ gw ] eth1 10.1.2.1 ---- (eth0 10.1.2.2) b2
//!   10.9.9.9 on lo                          eth2 (down)             10.9.9.9 on lo
//! ```
//!
//! The target 10.9.9.9 lives on **both** backends, so the exit decides which
//! one answers: gw routes it via eth0 (metric 100) and via eth1 (metric 200),
//! and a policy rule sends traffic *from* 10.1.2.1 out of eth1, as a
//! multi-homed host is set up. Each backend answers TCP and UDP with its name
//! and the source address it saw (`b2 10.1.2.1`): that names the exit each
//! service, list entry, hop and node took. `eth2` exists but is down, so an
//! entry naming it passes `-test` and fails at connect time: the fallback to
//! the next entry, or with `!` the end of the walk.
//!
//! The gateway is the real binary, run in gw; clients are threads that joined gw.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::lab::{enter_netns, netns_path, poll};

const TARGET: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);
static LABS: AtomicU32 = AtomicU32::new(0);

/// `ip -n NS <cmd>` (words split on spaces); panics with ip's message.
fn ip(ns: &str, cmd: &str) {
    run_ip(&[&["-n", ns][..], &cmd.split_whitespace().collect::<Vec<_>>()].concat());
}

fn netns_add(ns: &str) {
    run_ip(&["netns", "add", ns]);
}

fn run_ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ip(8) runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `f` on a thread that joined namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = netns_path(ns);
    thread::spawn(move || {
        enter_netns(&path).expect("setns");
        f()
    })
    .join()
    .expect("thread in namespace")
}

/// The two-NIC lab; dropping it stops the gateway and the backends and deletes
/// the namespaces (also while a failed assertion unwinds).
struct TwoNic {
    gw: String,
    backends: [String; 2],
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    gateway: Option<Child>,
    dir: tempfile::TempDir,
}

impl TwoNic {
    fn new() -> TwoNic {
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let p = format!("il{}-{n}", std::process::id());
        let gw = format!("{p}-gw");
        let backends = [format!("{p}-b1"), format!("{p}-b2")];
        let mut lab = TwoNic {
            gw: gw.clone(),
            backends: backends.clone(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            gateway: None,
            dir: tempfile::tempdir().unwrap(),
        };
        // Registered before anything can fail, so Drop deletes what exists.
        for ns in [&gw, &backends[0], &backends[1]] {
            netns_add(ns);
        }
        let g = gw.as_str();
        let b = &backends;
        ip(
            g,
            &format!("link add eth0 type veth peer name eth0 netns {}", b[0]),
        );
        ip(
            g,
            &format!("link add eth1 type veth peer name eth0 netns {}", b[1]),
        );
        for cmd in [
            "link add eth2 type veth peer name eth2p",
            "addr add 10.1.1.1/24 dev eth0",
            "addr add 10.1.2.1/24 dev eth1",
            "addr add 10.1.3.1/24 dev eth2",
            // Seeds 000/001 name 192.168.0.1 as a hop's exit.
            "addr add 192.168.0.1/32 dev lo",
            "link set lo up",
            "link set eth0 up",
            "link set eth1 up",
            "route add 10.9.9.9/32 via 10.1.1.2 dev eth0 metric 100",
            "route add 10.9.9.9/32 via 10.1.2.2 dev eth1 metric 200",
            "rule add from 10.1.2.1 table 102",
            "route add 10.9.9.9/32 via 10.1.2.2 dev eth1 table 102",
        ] {
            ip(g, cmd);
        }
        for (i, b) in backends.iter().enumerate() {
            let net = i + 1;
            for cmd in [
                format!("addr add 10.1.{net}.2/24 dev eth0"),
                "addr add 10.9.9.9/32 dev lo".into(),
                "link set lo up".into(),
                "link set eth0 up".into(),
                format!("route add default via 10.1.{net}.1"),
            ] {
                ip(b, &cmd);
            }
            lab.start_backend(b.clone(), format!("b{net}"));
        }
        lab
    }

    /// TCP :80 and UDP :53 on 10.9.9.9 in `ns`, answering `<name> <source ip>`.
    fn start_backend(&mut self, ns: String, name: String) {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = self.stop.clone();
        self.threads.push(thread::spawn(move || {
            enter_netns(&netns_path(&ns)).expect("setns");
            let tcp = TcpListener::bind((TARGET, 80)).expect("bind tcp");
            let udp = UdpSocket::bind((TARGET, 53)).expect("bind udp");
            tcp.set_nonblocking(true).unwrap();
            udp.set_read_timeout(Some(Duration::from_millis(10)))
                .unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((mut s, peer)) = tcp.accept() {
                    let _ = s.set_nonblocking(false);
                    let _ = writeln!(s, "{name} {}", peer.ip());
                }
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(format!("{name} {}", peer.ip()).as_bytes(), peer);
                }
            }
        }));
        rx.recv_timeout(Duration::from_secs(5)).expect("backend up");
    }

    /// Start the gateway in gw with these services; wait until `ready` (a TCP
    /// service's port) accepts.
    fn gateway(&mut self, yaml: &str, ready: u16) {
        let cfg = self.dir.path().join("gateway.yml");
        std::fs::write(&cfg, yaml).unwrap();
        let test = self.gateway_test(&cfg);
        assert!(test.0, "gateway -test refused the lab config:\n{}", test.1);
        let log = std::fs::File::create(self.dir.path().join("gateway.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.gw])
            .arg(env!("CARGO_BIN_EXE_gateway"))
            .arg("-config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("gateway starts");
        self.gateway = Some(child);
        let gw = self.gw.clone();
        let up = poll(Duration::from_secs(10), || {
            let gw = gw.clone();
            in_ns(&gw, move || TcpStream::connect(("127.0.0.1", ready)).ok()).map(drop)
        });
        assert!(up.is_some(), "gateway not listening:\n{}", self.log());
    }

    /// `gateway -test -config FILE` in gw: (success, output).
    fn gateway_test(&self, cfg: &std::path::Path) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.gw])
            .arg(env!("CARGO_BIN_EXE_gateway"))
            .arg("-test")
            .arg("-config")
            .arg(cfg)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .output()
            .expect("gateway -test runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Through the TCP service on `port`: what the backend said, or `None` if
    /// the service closed the connection without an answer.
    fn tcp(&self, port: u16) -> Option<String> {
        in_ns(&self.gw, move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            let line = text.trim().to_string();
            (!line.is_empty()).then_some(line)
        })
    }

    /// Through the UDP service on `port`: the backend's answer, or `None` if
    /// none came within `wait`.
    fn udp(&self, port: u16, wait: Duration) -> Option<String> {
        in_ns(&self.gw, move || {
            let s = UdpSocket::bind("127.0.0.1:0").ok()?;
            s.set_read_timeout(Some(wait)).ok()?;
            s.send_to(b"who", ("127.0.0.1", port)).ok()?;
            let mut buf = [0u8; 128];
            let (n, _) = s.recv_from(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
    }
}

impl Drop for TwoNic {
    fn drop(&mut self) {
        if let Some(mut c) = self.gateway.take() {
            if thread::panicking() {
                eprintln!("gateway log:\n{}", self.log());
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for ns in [&self.gw, &self.backends[0], &self.backends[1]] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn tcp_service(name: &str, port: u16, extra: &str) -> String {
    format!(
        "- name: {name}\n  addr: \"127.0.0.1:{port}\"\n{extra}  handler: {{type: tcp}}\n  listener: {{type: tcp}}\n  forwarder: {{nodes: [{{addr: \"10.9.9.9:80\"}}]}}\n"
    )
}

fn udp_service(name: &str, port: u16, extra: &str) -> String {
    format!(
        "- name: {name}\n  addr: \"127.0.0.1:{port}\"\n{extra}  handler: {{type: udp}}\n  listener: {{type: udp}}\n  udp: {{max_responses: 1}}\n  client_idle_timeout: 3s\n  forwarder: {{nodes: [{{addr: \"10.9.9.9:53\"}}]}}\n"
    )
}

/// Which exit each service and each list entry takes, the strict rule and the
/// fallback order, for TCP and for UDP.
#[test]
fn service_interface_picks_the_exit_for_tcp_and_udp() {
    let mut lab = TwoNic::new();
    let cases: [(&str, &str, Option<&str>); 8] = [
        ("none", "", Some("b1 10.1.1.1")),
        ("nic", "  interface: eth1\n", Some("b2 10.1.2.1")),
        ("addr", "  interface: 10.1.2.1\n", Some("b2 10.1.2.1")),
        (
            "meta",
            "  metadata: {interface: eth1}\n",
            Some("b2 10.1.2.1"),
        ),
        ("first", "  interface: \"eth0,eth1\"\n", Some("b1 10.1.1.1")),
        ("order", "  interface: \"eth1,eth0\"\n", Some("b2 10.1.2.1")),
        (
            "fallback",
            "  interface: \"eth2,eth1\"\n",
            Some("b2 10.1.2.1"),
        ),
        ("strict", "  interface: \"eth2!,eth1\"\n", None),
    ];
    let mut yaml = String::from("services:\n");
    for (i, (name, extra, _)) in cases.iter().enumerate() {
        yaml += &tcp_service(&format!("t-{name}"), 7000 + i as u16, extra);
        yaml += &udp_service(&format!("u-{name}"), 7100 + i as u16, extra);
    }
    lab.gateway(&yaml, 7000);
    for (i, (name, _, want)) in cases.iter().enumerate() {
        let port = 7000 + i as u16;
        assert_eq!(lab.tcp(port).as_deref(), *want, "tcp service {name}");
        // A missing UDP answer waits the whole timeout: short where none is due.
        let wait = Duration::from_secs(if want.is_some() { 5 } else { 1 });
        let got = lab.udp(7100 + i as u16, wait);
        assert_eq!(got.as_deref(), *want, "udp service {name}");
    }
}

/// Seeds 000, 001 and 004: every example file passes `-test` on a host that has
/// the interfaces it names (eth0, eth1, 192.168.0.1), and fails on one that
/// lacks them — the check is real.
#[test]
fn seed_examples_pass_test_where_their_interfaces_exist() {
    let lab = TwoNic::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/configs/valid");
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed"))
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 8, "{seeds:?}");
    let mut tested = 0;
    for f in &seeds {
        let text = std::fs::read_to_string(f).unwrap();
        if let Some(why) = text.lines().next().and_then(|l| l.strip_prefix("# skip: ")) {
            eprintln!("skipped {}: {why}", f.display());
            continue;
        }
        let (ok, out) = lab.gateway_test(f);
        assert!(ok, "{}: {out}", f.display());
        assert!(out.contains("test is successful"), "{out}");
        tested += 1;
    }
    assert!(tested >= 7, "{tested}");
    // The same check in a backend namespace, which has no eth1: refused, naming it.
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.backends[0]])
        .arg(env!("CARGO_BIN_EXE_gateway"))
        .args(["-test", "-config"])
        .arg(dir.join("seed000_virtual_nodes.yml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("chains[0].hops[0].nodes[1].interface") && text.contains("\"eth1\""),
        "{text}"
    );
}

/// Chains: a hop's `interface` is the exit of its nodes, a node's own value
/// wins; virtual nodes spread 100 connections over both exits per the
/// selector (`round`: 50/50).
#[test]
fn hop_node_and_virtual_node_exits() {
    let mut lab = TwoNic::new();
    let virt = |name: &str, iface: &str| {
        format!(
            "{{name: {name}, addr: \":0\", {iface}connector: {{type: virtual}}, dialer: {{type: virtual}}}}"
        )
    };
    let chained = |name: &str, port: u16, chain: &str| {
        format!(
            "- name: {name}\n  addr: \"127.0.0.1:{port}\"\n  handler: {{type: tcp, chain: {chain}}}\n  listener: {{type: tcp}}\n  forwarder: {{nodes: [{{addr: \"10.9.9.9:80\"}}]}}\n"
        )
    };
    let yaml = format!(
        "services:\n{}{}{}chains:\n\
         - name: hop-level\n  hops: [{{name: h, interface: eth1, nodes: [{}]}}]\n\
         - name: node-level\n  hops: [{{name: h, interface: eth1, nodes: [{}]}}]\n\
         - name: spread\n  hops: [{{name: h, selector: {{strategy: round}}, nodes: [{}, {}]}}]\n",
        chained("hop", 7200, "hop-level"),
        chained("node", 7201, "node-level"),
        chained("virtual", 7202, "spread"),
        virt("v", ""),
        virt("v", "interface: eth0, "),
        virt("v0", "interface: eth0, "),
        virt("v1", "interface: eth1, "),
    );
    lab.gateway(&yaml, 7200);
    assert_eq!(
        lab.tcp(7200).as_deref(),
        Some("b2 10.1.2.1"),
        "hop-level exit"
    );
    assert_eq!(
        lab.tcp(7201).as_deref(),
        Some("b1 10.1.1.1"),
        "node overrides hop"
    );
    let (mut b1, mut b2) = (0, 0);
    for _ in 0..100 {
        match lab.tcp(7202).as_deref() {
            Some("b1 10.1.1.1") => b1 += 1,
            Some("b2 10.1.2.1") => b2 += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((b1, b2), (50, 50), "round robin over the two exits");
}

/// One datagram through the SOCKS5 service on `port` (UDP ASSOCIATE) to the
/// target's port 53: the backend's answer, or `None`. The client reaches the
/// service on eth0's address, so the relay socket is bound there (a relay on
/// 127.0.0.1 could not send off-host at all).
fn socks5_udp(lab: &TwoNic, port: u16) -> Option<String> {
    in_ns(&lab.gw, move || {
        let mut c = TcpStream::connect(("10.1.1.1", port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        c.write_all(&[5, 1, 0]).ok()?;
        let mut hello = [0u8; 2];
        c.read_exact(&mut hello).ok()?;
        // UDP ASSOCIATE, client address not known yet (0.0.0.0:0).
        c.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).ok()?;
        let mut rep = [0u8; 10];
        c.read_exact(&mut rep).ok()?;
        if rep[1] != 0 || rep[3] != 1 {
            return None;
        }
        let relay = std::net::SocketAddr::from((
            Ipv4Addr::new(rep[4], rep[5], rep[6], rep[7]),
            u16::from_be_bytes([rep[8], rep[9]]),
        ));
        let u = UdpSocket::bind("10.1.1.1:0").ok()?;
        u.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut d = vec![0, 0, 0, 1];
        d.extend_from_slice(&TARGET.octets());
        d.extend_from_slice(&53u16.to_be_bytes());
        d.extend_from_slice(b"who");
        u.send_to(&d, relay).ok()?;
        let mut buf = [0u8; 256];
        let (n, _) = u.recv_from(&mut buf).ok()?;
        // RSV RSV FRAG ATYP(1) ADDR(4) PORT(2), then the payload.
        (n > 10).then(|| String::from_utf8_lossy(&buf[10..n]).into_owned())
    })
}

/// The SOCKS5 UDP relay sends to targets through the service's exit, and UDP
/// health probes leave through it too: a probe expecting b2's answer keeps its
/// node in rotation only if it really went out of eth1, and one expecting b1's
/// takes its node out (so the checks do run).
#[test]
fn socks5_udp_relay_and_udp_probes_use_the_exit() {
    let mut lab = TwoNic::new();
    let socks = |name: &str, port: u16, extra: &str| {
        format!(
            "- name: {name}\n  addr: \":{port}\"\n{extra}  handler: {{type: socks5, metadata: {{udp: true}}}}\n  listener: {{type: tcp}}\n"
        )
    };
    let checked = |name: &str, port: u16, want: &str| {
        udp_service(name, port, "  interface: eth1\n").replace(
            "  forwarder: {nodes: [{addr: \"10.9.9.9:53\"}]}\n",
            &format!(
                "  forwarder:\n    nodes: [{{addr: \"10.9.9.9:53\"}}]\n    healthcheck: {{kind: probe, probe_protocol: udp, probe_send: who, probe_recv: \"{want}\", interval: 200ms, timeout: 1s, fails: 1, passes: 1}}\n"
            ),
        )
    };
    let yaml = format!(
        "services:\n{}{}{}{}",
        socks("s5-none", 7300, ""),
        socks("s5-eth1", 7301, "  interface: eth1\n"),
        checked("hc-b2", 7302, "b2 10.1.2.1"),
        checked("hc-b1", 7303, "b1"),
    );
    lab.gateway(&yaml, 7300);
    assert_eq!(socks5_udp(&lab, 7300).as_deref(), Some("b1 10.1.1.1"));
    // Reached on eth0's address, relayed out of eth1.
    assert_eq!(socks5_udp(&lab, 7301).as_deref(), Some("b2 10.1.2.1"));
    // The probe expecting b1 fails (it goes out of eth1, to b2): its node leaves.
    let out = poll(Duration::from_secs(10), || {
        lab.udp(7303, Duration::from_millis(500))
            .is_none()
            .then_some(())
    });
    assert!(
        out.is_some(),
        "hc-b1's node never left rotation:\n{}",
        lab.log()
    );
    // By then the other service's probes ran as often: its node is still in.
    assert_eq!(
        lab.udp(7302, Duration::from_secs(5)).as_deref(),
        Some("b2 10.1.2.1")
    );
}
