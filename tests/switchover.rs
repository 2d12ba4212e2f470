//! A planned switchover that drops no connection (issue #12): SIGTERM on the
//! master while clients hold long-lived connections through it, and a steady
//! stream of new short requests. The old master hands its connections over
//! (src/failover/handover/): the new master steers their packets back to it until
//! they end. Then the same with the old master killed (-9) during the grace time.
//!
//! The 15 s stream and 10 s idle period are shortened to 7 s and 5 s
//! (SIGTERM at second 3, as in the issue): what is proven — connections that
//! outlive the switchover by seconds, idle across it, then active — is the same,
//! and the suite stays short.

#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::lab::{BACKEND_BANNER, GatewayProc, Hook, Host, Lab, poll};
use common::load::{self, Server};

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "switchover test secret 0123456789";
const STREAM_PORT: u16 = 9001;
const ECHO_PORT: u16 = 9002;
const IDLE_PORT: u16 = 9003;
/// How long the stream backend sends (issue: 15 s).
const STREAM_FOR: Duration = Duration::from_secs(7);
/// How long the idle backend waits before it sends (issue: 10 s).
const IDLE_FOR: Duration = Duration::from_secs(5);
const CHUNK: usize = 4096;
const CHUNK_EVERY: Duration = Duration::from_millis(50);

fn pattern(offset: usize) -> u8 {
    (offset.wrapping_mul(7) % 251) as u8
}

/// The expected stream: whole chunks for `STREAM_FOR`.
fn stream_len() -> usize {
    CHUNK * (STREAM_FOR.as_millis() / CHUNK_EVERY.as_millis()) as usize
}

fn service(lab: &Lab, name: &str, port: u16) -> String {
    format!(
        "- name: {name}\n  addr: \":{port}\"\n  handler: {{type: tcp}}\n  listener: {{type: tcp}}\n  \
         forwarder:\n    nodes:\n    - {{name: b, addr: \"{}:{port}\"}}\n",
        lab.ip(Host::Backend)
    )
}

/// The three backends of the issue, in the backend host.
fn backends(lab: &Lab) -> Vec<Server> {
    let stream = Server::start(lab, Host::Backend, STREAM_PORT, |mut c, stop| {
        let mut off = 0;
        for _ in 0..stream_len() / CHUNK {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let chunk: Vec<u8> = (off..off + CHUNK).map(pattern).collect();
            if c.write_all(&chunk).is_err() {
                return;
            }
            off += CHUNK;
            thread::sleep(CHUNK_EVERY);
        }
    });
    let echo = Server::start(lab, Host::Backend, ECHO_PORT, |mut c, _| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 || c.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let idle = Server::start(lab, Host::Backend, IDLE_PORT, |mut c, stop| {
        let t = Instant::now();
        while t.elapsed() < IDLE_FOR {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let data: Vec<u8> = (0..64 * 1024).map(pattern).collect();
        let _ = c.write_all(&data);
    });
    vec![stream, echo, idle]
}

/// n1 (priority 200) master, n2 (100) backup, both with the secret and the four
/// services on every address.
fn start_pair(lab: &Lab) -> (GatewayProc, GatewayProc) {
    let secret = format!("secret: \"{SECRET}\"");
    let cfg = |h, p| {
        lab.floating_ip_yaml(h, p, &[&secret])
            + &lab.forward_service_yaml()
            + &service(lab, "stream", STREAM_PORT)
            + &service(lab, "echo", ECHO_PORT)
            + &service(lab, "idle", IDLE_PORT)
    };
    let (g1, g2) = lab.start_pair(cfg, WAIT);
    // n1 must have heard n2 before the switchover (the ACK needs it running).
    thread::sleep(Duration::from_millis(300));
    (g1, g2)
}

/// What one long-lived client connection saw.
type Outcome = Result<usize, String>;

fn connect(lab: &Lab, port: u16) -> TcpStream {
    let addr = SocketAddr::from((lab.default_vip(), port));
    lab.in_netns(Host::Client, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .and_then(|r| r)
    .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
}

/// Read to the end and compare with the pattern.
fn read_pattern(mut c: TcpStream, want: usize) -> Outcome {
    c.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::with_capacity(want);
    c.read_to_end(&mut got)
        .map_err(|e| format!("after {} bytes: {e}", got.len()))?;
    if got.len() != want {
        return Err(format!("{} bytes, expected {want}", got.len()));
    }
    match got.iter().enumerate().find(|(i, b)| **b != pattern(*i)) {
        Some((i, _)) => Err(format!("byte {i} differs")),
        None => Ok(got.len()),
    }
}

/// The long-lived connections of the issue, each on its own thread.
fn long_lived(lab: &Lab, echo_for: Duration) -> Vec<(&'static str, JoinHandle<Outcome>)> {
    let s = connect(lab, STREAM_PORT);
    let stream = thread::spawn(move || read_pattern(s, stream_len()));
    let mut e = connect(lab, ECHO_PORT);
    let echo = thread::spawn(move || -> Outcome {
        e.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        let mut n = 0usize;
        while t.elapsed() < echo_for {
            let line = format!("line {n} {}\n", "x".repeat(n % 300));
            e.write_all(line.as_bytes())
                .map_err(|err| format!("write {n}: {err}"))?;
            let mut back = vec![0u8; line.len()];
            e.read_exact(&mut back)
                .map_err(|err| format!("echo {n}: {err}"))?;
            if back != line.as_bytes() {
                return Err(format!("echo {n} differs"));
            }
            n += 1;
            thread::sleep(Duration::from_millis(50));
        }
        e.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let mut rest = Vec::new();
        e.read_to_end(&mut rest).map_err(|e| e.to_string())?;
        Ok(n)
    });
    let i = connect(lab, IDLE_PORT);
    let idle = thread::spawn(move || read_pattern(i, 64 * 1024));
    vec![("stream", stream), ("echo", echo), ("idle", idle)]
}

/// New short requests every 10 ms, each recorded with its start time and result.
struct Requests {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(Instant, Duration, bool)>>>,
    thread: Option<JoinHandle<()>>,
}

impl Requests {
    fn start(lab: &Lab) -> Requests {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (stop.clone(), log.clone());
        let addr = SocketAddr::from((lab.default_vip(), 8080));
        let ns = lab.ns(Host::Client);
        let thread = thread::spawn(move || {
            load::enter(&ns).expect("enter the client's namespace");
            while !s.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    .and_then(|mut c| {
                        c.set_read_timeout(Some(Duration::from_secs(1)))?;
                        let mut text = String::new();
                        c.read_to_string(&mut text)?;
                        Ok(text)
                    })
                    .is_ok_and(|text| text == BACKEND_BANNER);
                if let Ok(mut l) = l.lock() {
                    l.push((t, t.elapsed(), ok));
                }
                thread::sleep(Duration::from_millis(10).saturating_sub(t.elapsed()));
            }
        });
        Requests {
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// Stop; the failed requests and the window they fall in (first failure's
    /// start to the end of the last one), relative to `t0`.
    fn finish(mut self, t0: Instant) -> (usize, usize, Option<(Duration, Duration)>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let failed: Vec<_> = log.iter().filter(|(_, _, ok)| !ok).collect();
        let window = match (failed.first(), failed.last()) {
            (Some(a), Some(b)) => Some((a.0 - t0, (b.0 + b.1) - a.0)),
            _ => None,
        };
        (log.len(), failed.len(), window)
    }
}

/// The mechanism's kernel state in a host: nftables tables and the VIP on `lo`.
fn leftovers(lab: &Lab, host: Host) -> Vec<String> {
    let vip = lab.default_vip();
    let mut left: Vec<String> =
        String::from_utf8_lossy(&lab.exec(host, &["nft", "list", "tables"]).stdout)
            .lines()
            .filter(|l| l.contains("gateway_handover"))
            .map(str::to_string)
            .collect();
    for (ifname, a, p) in lab.addrs(host) {
        if a == vip && ifname == "lo" {
            left.push(format!("{a}/{p} on lo"));
        }
    }
    let rules = lab.ip_cmd(host, &["rule", "show"]);
    if rules.lines().count() != 3 {
        left.push(format!("ip rules: {rules}"));
    }
    left
}

/// Wait until `host` is the only one with the VIP on its LAN interface (the old
/// master keeps it on `lo`, unannounced, during the grace time).
fn expect_lan_holder(lab: &Lab, host: Host) {
    let vip = lab.default_vip();
    let on_lan = |h: Host| lab.addrs(h).iter().any(|(i, a, _)| *a == vip && i != "lo");
    assert!(
        poll(WAIT, || Host::NODES
            .iter()
            .all(|&h| on_lan(h) == (h == host))
            .then_some(()))
        .is_some(),
        "{host} should be the only node with the VIP on the LAN: {:?} / {:?}",
        lab.addrs(Host::N1),
        lab.addrs(Host::N2)
    );
}

fn steering_present(lab: &Lab, host: Host) -> bool {
    String::from_utf8_lossy(&lab.exec(host, &["nft", "list", "tables"]).stdout)
        .contains("netdev gateway_handover")
}

#[test]
fn switchover_keeps_every_connection() {
    let lab = Lab::new("switchover_keeps");
    let _backends = backends(&lab);
    let (mut g1, mut g2) = start_pair(&lab);
    let t0 = Instant::now();
    let conns = long_lived(&lab, Duration::from_secs(6));
    let requests = Requests::start(&lab);
    thread::sleep(Duration::from_secs(3).saturating_sub(t0.elapsed()));

    let term = Instant::now();
    g1.signal(nix::sys::signal::Signal::SIGTERM);
    expect_lan_holder(&lab, Host::N2);
    assert!(
        poll(WAIT, || steering_present(&lab, Host::N2).then_some(())).is_some(),
        "n2 never steered:\n{}\n{}",
        g1.log(),
        g2.log()
    );

    for (name, h) in conns {
        match h.join() {
            Ok(Ok(n)) => eprintln!("{name}: complete ({n})"),
            Ok(Err(e)) => panic!(
                "{name} connection broke: {e}\n---- n1:\n{}\n---- n2:\n{}",
                g1.log(),
                g2.log()
            ),
            Err(_) => panic!("{name} client panicked"),
        }
    }
    // The old master leaves once its last connection has ended.
    let status = g1
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("n1 did not exit after its connections ended:\n{}", g1.log()));
    assert!(status.success(), "n1 exited with {status}:\n{}", g1.log());
    let (sent, failed, window) = requests.finish(t0);
    eprintln!(
        "switchover: {sent} short requests, {failed} failed, window {:?} (SIGTERM at {:?})",
        window,
        term - t0
    );
    if let Some((_, span)) = window {
        assert!(
            span <= Duration::from_millis(500),
            "new requests failed over {span:?}: more than a switchover window"
        );
    }
    assert!(
        g1.log()
            .contains("planned switchover: every handed-over connection has ended"),
        "{}",
        g1.log()
    );
    assert!(
        poll(Duration::from_secs(2), || (!steering_present(
            &lab,
            Host::N2
        ))
        .then_some(()))
        .is_some(),
        "n2 kept its steering after the old master left"
    );
    for host in Host::NODES {
        assert_eq!(
            leftovers(&lab, host),
            Vec::<String>::new(),
            "{host} kept state"
        );
    }
    let quiet = lab.exec(
        Host::N1,
        &["cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore"],
    );
    assert_eq!(
        String::from_utf8_lossy(&quiet.stdout).trim(),
        "0",
        "arp_ignore restored"
    );
    g2.assert_running("after the switchover");
}

#[test]
fn killed_old_master_loses_only_its_connections() {
    let lab = Lab::new("switchover_kill9");
    let _backends = backends(&lab);
    let (mut g1, g2) = start_pair(&lab);
    let t0 = Instant::now();
    let s = connect(&lab, STREAM_PORT);
    let stream = thread::spawn(move || read_pattern(s, stream_len()));
    let requests = Requests::start(&lab);
    thread::sleep(Duration::from_secs(1));

    g1.signal(nix::sys::signal::Signal::SIGTERM);
    expect_lan_holder(&lab, Host::N2);
    assert!(
        poll(WAIT, || steering_present(&lab, Host::N2).then_some(())).is_some(),
        "n2 never steered:\n{}\n{}",
        g1.log(),
        g2.log()
    );
    thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    g1.kill9();
    let gone = poll(Duration::from_secs(3), || {
        (!steering_present(&lab, Host::N2)).then(|| killed.elapsed())
    })
    .unwrap_or_else(|| panic!("n2 kept the steering of a dead node:\n{}", g2.log()));
    eprintln!("steering removed {gone:?} after kill -9");
    assert!(
        gone <= Duration::from_secs(1),
        "steering removed after {gone:?}"
    );
    assert!(
        stream.join().expect("stream client").is_err(),
        "a connection of a killed node cannot complete"
    );
    // New connections were never affected by the kill.
    thread::sleep(Duration::from_millis(500));
    let after_kill = killed - t0;
    let (sent, failed, window) = requests.finish(t0);
    eprintln!("kill -9: {sent} short requests, {failed} failed, window {window:?}");
    if let Some((start, span)) = window {
        assert!(
            start + span < after_kill,
            "a new request failed after the kill (window {start:?} + {span:?}, kill at {after_kill:?})"
        );
    }
    // The killed node's leftovers (VIP on lo, gate) go when it starts again.
    assert!(
        !leftovers(&lab, Host::N1).is_empty(),
        "kill -9 leaves state behind"
    );
    let g1 = lab.respawn(&g1);
    assert!(
        poll(WAIT, || leftovers(&lab, Host::N1).is_empty().then_some(())).is_some(),
        "stale handover state not cleaned at start: {:?}\n{}",
        leftovers(&lab, Host::N1),
        g1.log()
    );
    assert_eq!(leftovers(&lab, Host::N2), Vec::<String>::new());
}

/// The peer never acknowledges (here its handover messages are dropped, as an
/// older version would drop them): the old master says why and switches over
/// as before — its connections are cut, the VIP moves at once, nothing is left.
#[test]
fn without_an_ack_the_switchover_is_the_old_one() {
    let lab = Lab::new("switchover_noack");
    let _backends = backends(&lab);
    let (mut g1, mut g2) = start_pair(&lab);
    // "GWHO" at the start of the UDP payload.
    lab.nft_drop(Host::N2, Hook::Input, "udp dport 7654 @th,64,32 0x4757484f");
    let s = connect(&lab, STREAM_PORT);
    let stream = thread::spawn(move || read_pattern(s, stream_len()));
    thread::sleep(Duration::from_millis(500));
    g1.signal(nix::sys::signal::Signal::SIGTERM);
    expect_lan_holder(&lab, Host::N2);
    assert!(
        g1.wait_log("no peer acknowledged", WAIT),
        "no fallback line:\n{}",
        g1.log()
    );
    let status = g1
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("n1 kept running without a handover:\n{}", g1.log()));
    assert!(status.success(), "{}", g1.log());
    assert!(
        stream.join().expect("stream client").is_err(),
        "without a handover the connection is cut"
    );
    assert!(!steering_present(&lab, Host::N2));
    for host in Host::NODES {
        assert_eq!(
            leftovers(&lab, host),
            Vec::<String>::new(),
            "{host} kept state"
        );
    }
    g2.assert_running("after the fallback");
}
