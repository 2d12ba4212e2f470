//! The kernel-facing failover pieces against a real kernel: VIP binding over
//! rtnetlink, the netlink watcher and gratuitous ARP.
//!
//! Every test builds its own network namespaces (unique names: process id and a
//! counter) with veth pairs inside them, and a [`Netns`] guard deletes each namespace
//! — and with it every interface in it — when the test ends, panics included. The
//! host's own namespace and interfaces are never touched: `ip -n NS …` runs inside NS,
//! and the code under test runs on a thread that entered NS with `setns(2)` (see
//! [`in_ns`]): sockets, netlink and `getifaddrs` opened on that thread live in NS.
//!
//! The tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN for `setns`). Without it they
//! fail — a suite that reports green without having run anything proves nothing —
//! unless `GATEWAY_SKIP_NETNS_TESTS=1` says explicitly that skipping is intended
//! (then each says so on stderr and returns).

#![cfg(target_os = "linux")]

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use gateway::failover::arp::{garp_frames, send_garp};
use gateway::failover::netwatch::{NetEvent, link_is_up, watch};
use gateway::failover::vip::{VipController, VipError};
use pnet::datalink::{self, Channel, NetworkInterface};
use pnet::util::MacAddr;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that exists for as long as this value does.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!(
            "gwnetio-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    /// `ip -n NAME <args>`; panics with ip's stderr on failure. Returns stdout.
    fn ip(&self, args: &str) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend(args.split_whitespace());
        run("ip", &full)
    }

    fn addrs(&self, dev: &str) -> String {
        self.ip(&format!("-4 addr show dev {dev}"))
    }

    /// Run `f` on a thread that entered this namespace; its panic is ours.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_ns(&self.name, f)
    }

    /// Like [`Netns::run`], with a current-thread tokio runtime on that thread.
    fn block_on<F: Future>(&self, fut: impl FnOnce() -> F + Send) -> F::Output
    where
        F::Output: Send,
    {
        self.run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(fut())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys the veths in it (and their peers elsewhere).
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            other => eprintln!("warning: could not delete netns {}: {other:?}", self.name),
        }
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `f` on a fresh thread that first moved into network namespace `name`. Only that
/// thread changes namespace; the test's own thread stays where it was.
fn in_ns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let ns = std::fs::File::open(format!("/run/netns/{name}"))
                .unwrap_or_else(|e| panic!("open netns {name}: {e}"));
            // SAFETY: plain syscall on an fd we own; affects only the calling thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
            f()
        });
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The explicit opt-out for machines without root.
const SKIP_ENV: &str = "GATEWAY_SKIP_NETNS_TESTS";

/// `true` as root. Without root: `false` (the test returns) only when [`SKIP_ENV`] is
/// set to `1`; otherwise the test fails, naming the opt-out.
fn is_root() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    assert!(
        std::env::var(SKIP_ENV).as_deref() == Ok("1"),
        "network namespace tests need root; set {SKIP_ENV}=1 to skip them on purpose"
    );
    eprintln!("skipping ({SKIP_ENV}=1): network namespace tests need root");
    false
}

/// Poll `cond` every 20 ms until it holds or `within` has passed.
fn wait_for(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One namespace with a veth pair `a0`–`b0` inside it, both up, `a0` holding
/// `10.66.N.1/24`. Returns the guard and the VIP the test uses, `10.66.N.100`;
/// `None` without root (the test then returns).
fn single_ns_pair(tag: &str, net: u8) -> Option<(Netns, Ipv4Addr)> {
    if !is_root() {
        return None;
    }
    let ns = Netns::new(tag);
    ns.ip("link add a0 type veth peer name b0");
    ns.ip("link set a0 up");
    ns.ip("link set b0 up");
    ns.ip(&format!("addr add 10.66.{net}.1/24 dev a0"));
    Some((ns, Ipv4Addr::new(10, 66, net, 100)))
}

/// The interface `name` as pnet sees it from the calling thread's namespace.
fn interface(name: &str) -> NetworkInterface {
    datalink::interfaces()
        .into_iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("no interface {name}"))
}

/// A [`VipController`] for `vip` on `a0`, /24.
async fn controller(vip: Ipv4Addr) -> VipController {
    VipController::new("a0", vip, 24).await.expect("controller")
}

/// The netlink watcher on `a0` for `vip`, run as a task; its events are read with
/// [`Watch::next`], each within `within`.
struct Watch {
    rx: mpsc::Receiver<NetEvent>,
    task: JoinHandle<Result<(), VipError>>,
    within: Duration,
}

impl Watch {
    fn start(vip: Ipv4Addr, within: Duration) -> Watch {
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(watch("a0".to_string(), vip, tx));
        Watch { rx, task, within }
    }

    async fn next(&mut self) -> NetEvent {
        tokio::time::timeout(self.within, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no event within {:?}", self.within))
            .expect("watcher alive")
    }
}

/// Bind `vip` on `a0`, start watching, and take the state found at start: the
/// link is up. Returns the controller and the watch.
async fn bound_and_watched(vip: Ipv4Addr, within: Duration) -> (VipController, Watch) {
    let c = controller(vip).await;
    assert!(c.bind().await.unwrap());
    let mut w = Watch::start(vip, within);
    assert_eq!(w.next().await, NetEvent::Link { up: true });
    (c, w)
}

/// Poll (2 s at most) until `b`'s neighbour entry for `ip` on `b0` names `mac`;
/// `what` says which frame should have taught it.
fn wait_neighbour(b: &Netns, ip: &str, mac: MacAddr, what: &str) {
    let want = format!("lladdr {mac}");
    let show = format!("neigh show {ip} dev b0");
    assert!(
        wait_for(Duration::from_secs(2), || b.ip(&show).contains(&want)),
        "neighbour entry not updated{what}: {}",
        b.ip(&show)
    );
}

#[test]
fn bind_unbind_and_is_bound() {
    let Some((ns, vip)) = single_ns_pair("vip", 0) else {
        return;
    };
    ns.block_on(|| async {
        let c = controller(vip).await;
        assert!(!c.is_bound().await.unwrap());

        assert!(c.bind().await.unwrap(), "first bind adds");
        let shown = ns.addrs("a0");
        assert!(
            shown.contains("inet 10.66.0.100/24 brd 10.66.0.255 scope global"),
            "{shown}"
        );
        assert!(c.is_bound().await.unwrap());

        assert!(!c.bind().await.unwrap(), "second bind is a no-op");
        assert_eq!(ns.addrs("a0").matches("10.66.0.100/").count(), 1);

        assert!(c.unbind().await.unwrap(), "unbind removes");
        let shown = ns.addrs("a0");
        assert!(!shown.contains("10.66.0.100"), "{shown}");
        assert!(
            shown.contains("inet 10.66.0.1/24"),
            "own address must stay: {shown}"
        );
        assert!(!c.is_bound().await.unwrap());
        assert!(!c.unbind().await.unwrap(), "second unbind finds nothing");
    });
}

#[test]
fn unbind_matches_any_prefix_and_only_our_interface() {
    let Some((ns, vip)) = single_ns_pair("vipx", 1) else {
        return;
    };
    ns.ip("addr add 10.66.1.2/24 dev b0");
    ns.block_on(|| async {
        let c = controller(vip).await;

        // The same address on the other interface is not ours.
        ns.ip("addr add 10.66.1.100/24 dev b0");
        assert!(!c.is_bound().await.unwrap());
        assert!(!c.unbind().await.unwrap());
        assert!(ns.addrs("b0").contains("10.66.1.100/24"));

        // Added by hand with another mask: still recognised, and removed by unbind.
        ns.ip("addr add 10.66.1.100/32 dev a0");
        assert!(c.is_bound().await.unwrap());
        // bind adds our /24 entry beside the /32 (the kernel keys entries on the mask).
        assert!(c.bind().await.unwrap());
        assert!(c.unbind().await.unwrap());
        let shown = ns.addrs("a0");
        assert!(!shown.contains("10.66.1.100"), "{shown}");
        assert!(shown.contains("inet 10.66.1.1/24"), "{shown}");
        assert!(ns.addrs("b0").contains("10.66.1.100/24"));

        match VipController::new("nosuch0", vip, 24).await {
            Err(VipError::NoInterface(name)) => assert_eq!(name, "nosuch0"),
            other => panic!("expected NoInterface, got {:?}", other.err()),
        }
        match VipController::new("a0", vip, 33).await {
            Err(VipError::InvalidPrefix(33)) => {}
            other => panic!("expected InvalidPrefix, got {:?}", other.err()),
        }
    });
}

/// The default gateway comes from the kernel's routing table (rtnetlink), for the
/// interface asked about only. A parser that read the table with the wrong byte
/// order would report 1.0.66.10 here.
#[test]
fn default_gateway_is_read_over_rtnetlink() {
    let Some((ns, _)) = single_ns_pair("gw", 9) else {
        return;
    };
    assert_eq!(ns.block_on(|| gateway::net::default_gateway("a0")), None);
    ns.ip("route add default via 10.66.9.254 dev a0");
    assert_eq!(
        ns.block_on(|| gateway::net::default_gateway("a0")),
        Some(Ipv4Addr::new(10, 66, 9, 254))
    );
    assert_eq!(ns.block_on(|| gateway::net::default_gateway("b0")), None);
    assert_eq!(ns.block_on(|| gateway::net::default_gateway("nope0")), None);
}

#[test]
fn link_is_up_follows_the_veth_peer() {
    let Some((ns, _)) = single_ns_pair("link", 2) else {
        return;
    };
    let up = || ns.run(|| link_is_up("a0").expect("link_is_up"));
    assert!(wait_for(Duration::from_secs(3), &up), "a0 up");
    ns.ip("link set b0 down");
    assert!(wait_for(Duration::from_secs(3), || !up()), "peer down");
    // Administratively still up: it is the missing carrier that counts.
    assert!(ns.ip("link show a0").contains(",UP"));
    ns.ip("link set b0 up");
    assert!(wait_for(Duration::from_secs(3), &up), "peer up again");
    // Deleting the peer deletes the pair: a vanished interface is down.
    ns.ip("link del b0");
    assert!(!up());
    assert!(!ns.run(|| link_is_up("a0").expect("no error for a missing interface")));
}

#[test]
fn watch_reports_vip_removal_and_link_changes() {
    let Some((ns, vip)) = single_ns_pair("watch", 3) else {
        return;
    };
    ns.ip("addr add 10.66.3.2/24 dev b0");
    ns.block_on(|| async {
        // The state found at start (link up) is checked on the way.
        let (c, mut w) = bound_and_watched(vip, Duration::from_secs(3)).await;

        // Latencies include running `ip`; printed for the record (--nocapture).
        let t = Instant::now();
        ns.ip("addr del 10.66.3.100/24 dev a0");
        assert_eq!(w.next().await, NetEvent::VipRemoved);
        eprintln!("VipRemoved {:?} after `ip addr del` started", t.elapsed());

        // Noise the watcher must ignore: another address on a0, the VIP on b0.
        ns.ip("addr add 10.66.3.200/24 dev a0");
        ns.ip("addr add 10.66.3.100/24 dev b0");
        ns.ip("addr del 10.66.3.100/24 dev b0");
        // Our own bind is seen as well.
        assert!(c.bind().await.unwrap());
        assert_eq!(w.next().await, NetEvent::VipAdded);

        let t = Instant::now();
        ns.ip("link set b0 down");
        assert_eq!(w.next().await, NetEvent::Link { up: false });
        eprintln!(
            "Link down {:?} after `ip link set b0 down` started",
            t.elapsed()
        );
        let t = Instant::now();
        ns.ip("link set b0 up");
        assert_eq!(w.next().await, NetEvent::Link { up: true });
        eprintln!(
            "Link up {:?} after `ip link set b0 up` started",
            t.elapsed()
        );

        // Nothing else was pending (no duplicate link events).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(w.rx.try_recv().is_err(), "unexpected extra event");

        // Closing the channel ends the watcher cleanly.
        drop(w.rx);
        let res = tokio::time::timeout(Duration::from_secs(3), w.task)
            .await
            .expect("watcher returns once the receiver is gone")
            .expect("watcher task");
        assert!(res.is_ok(), "{res:?}");
    });
}

#[test]
fn watch_follows_interface_deletion_recreation_and_renaming() {
    let Some((ns, vip)) = single_ns_pair("wdel", 7) else {
        return;
    };
    ns.block_on(|| async {
        let (c, mut w) = bound_and_watched(vip, Duration::from_secs(3)).await;

        // Deleting the peer deletes the pair; the kernel takes a0's addresses along.
        ns.ip("link del b0");
        let mut got = vec![w.next().await, w.next().await];
        got.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(got, [NetEvent::Link { up: false }, NetEvent::VipRemoved]);

        // A new a0 (new index) is picked up by name, by the watcher and the controller.
        ns.ip("link add a0 type veth peer name b0");
        ns.ip("link set b0 up");
        ns.ip("link set a0 up");
        assert_eq!(w.next().await, NetEvent::Link { up: true });
        assert!(c.bind().await.unwrap());
        assert_eq!(w.next().await, NetEvent::VipAdded);
        assert!(ns.addrs("a0").contains("inet 10.66.7.100/24"));

        // Renamed away, the interface is gone for us, VIP included; renamed back, it
        // is ours again with what it carries (both learnt from a dump).
        ns.ip("link set a0 down");
        assert_eq!(w.next().await, NetEvent::Link { up: false });
        ns.ip("link set a0 name x0");
        assert_eq!(w.next().await, NetEvent::VipRemoved);
        ns.ip("link set x0 name a0");
        assert_eq!(w.next().await, NetEvent::VipAdded);
        ns.ip("link set a0 up");
        assert_eq!(w.next().await, NetEvent::Link { up: true });
    });
}

/// Netlink multicast is lossy: a reader that falls behind loses notifications and
/// gets `ENOBUFS` once. Here the watcher's (current-thread) runtime is blocked by the
/// test itself while the kernel floods the socket with thousands of address
/// notifications; the VIP's re-appearance is among the dropped ones, so only the
/// watcher's resynchronisation after the overrun can report it.
#[test]
fn watch_resynchronises_after_notification_loss() {
    let Some((ns, vip)) = single_ns_pair("flood", 8) else {
        return;
    };
    let batch = tempfile::NamedTempFile::new().expect("temp file");
    let lines: String = (0..4000u32)
        .map(|i| {
            format!(
                "addr add 10.{}.{}.{}/32 dev b0\n",
                100 + i / 65536,
                (i / 256) % 256,
                i % 256
            )
        })
        .collect();
    std::fs::write(batch.path(), lines).expect("write batch");
    let batch_path = batch.path().to_str().expect("utf-8 path").to_string();
    ns.block_on(|| async {
        let (_c, mut w) = bound_and_watched(vip, Duration::from_secs(5)).await;
        // From here until the next `.await` this thread runs no task: the kernel
        // queues notifications on the watcher's socket until it overflows.
        ns.ip("addr del 10.66.8.100/24 dev a0");
        ns.ip(&format!("-batch {batch_path}"));
        ns.ip("addr add 10.66.8.100/24 dev a0");
        assert_eq!(w.next().await, NetEvent::VipRemoved);
        assert_eq!(w.next().await, NetEvent::VipAdded);
    });
}

/// Two namespaces `NAME-a` / `NAME-b` joined by veth `a0` (in a, `10.66.N.1/24`) –
/// `b0` (in b, `10.66.N.2/24`). Returns both guards, a0's MAC address and the VIP
/// the test uses, `10.66.N.100`; `None` without root (the test then returns).
fn ns_pair(tag: &str, net: u8) -> Option<(Netns, Netns, MacAddr, Ipv4Addr)> {
    if !is_root() {
        return None;
    }
    let a = Netns::new(&format!("{tag}a"));
    let b = Netns::new(&format!("{tag}b"));
    a.ip(&format!(
        "link add a0 type veth peer name b0 netns {}",
        b.name
    ));
    a.ip(&format!("addr add 10.66.{net}.1/24 dev a0"));
    b.ip(&format!("addr add 10.66.{net}.2/24 dev b0"));
    a.ip("link set a0 up");
    b.ip("link set b0 up");
    let mac = a.run(|| interface("a0").mac.expect("a0 has a MAC"));
    assert!(
        wait_for(Duration::from_secs(3), || a
            .run(|| link_is_up("a0").unwrap())),
        "a0 never came up"
    );
    Some((a, b, mac, Ipv4Addr::new(10, 66, net, 100)))
}

#[test]
fn garp_frames_arrive_on_the_other_side() {
    let Some((a, b, mac, vip)) = ns_pair("garp", 4) else {
        return;
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let captured = std::thread::scope(|s| {
        let capture = s.spawn(|| {
            in_ns(&b.name, || {
                let iface = interface("b0");
                let config = datalink::Config {
                    read_timeout: Some(Duration::from_millis(100)),
                    promiscuous: false,
                    ..Default::default()
                };
                let Ok(Channel::Ethernet(_, mut rx)) = datalink::channel(&iface, config) else {
                    panic!("no Ethernet channel on b0");
                };
                ready_tx.send(()).expect("test thread waits");
                let mut frames = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(5);
                while frames.len() < 4 && Instant::now() < deadline {
                    // Timeouts surface as errors; keep polling until the deadline.
                    let Ok(frame) = rx.next() else { continue };
                    // ARP (0x0806) with the VIP as sender protocol address.
                    if frame.len() >= 42
                        && frame[12..14] == [0x08, 0x06]
                        && frame[28..32] == vip.octets()
                    {
                        frames.push((Instant::now(), frame.to_vec()));
                    }
                }
                frames
            })
        });
        ready_rx.recv().expect("capture thread ready");
        a.run(|| send_garp("a0", vip, 2, Duration::from_millis(100)).expect("send_garp"));
        capture
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    });
    let [request, reply] = garp_frames(mac, vip);
    let bytes: Vec<&[u8]> = captured.iter().map(|(_, f)| &f[..]).collect();
    assert_eq!(bytes, [&request[..], &reply[..], &request[..], &reply[..]]);
    // Rounds are `interval` apart.
    let gap = captured[2].0 - captured[1].0;
    eprintln!(
        "GARP: request→reply {:?}, round gap {gap:?} (interval 100 ms)",
        captured[1].0 - captured[0].0
    );
    assert!(
        gap >= Duration::from_millis(90),
        "rounds only {gap:?} apart"
    );
}

/// What a client on the LAN does with our announcement: a stale entry pointing at the
/// old master is rewritten to our MAC.
///
/// Linux ignores a changed lladdr for `locktime` (1 s by default) after an entry was
/// last updated — unless the frame is a gratuitous ARP in its sense (`arp_is_garp`:
/// sender IP = target IP, and for replies also target MAC = sender MAC). The entry
/// here was written just now, so with the default locktime it is our *request form*
/// that must do the work; the test keeps that default on purpose.
#[test]
fn garp_rewrites_a_stale_neighbour_entry() {
    let Some((a, b, mac, vip)) = ns_pair("neigh", 5) else {
        return;
    };
    b.ip("neigh replace 10.66.5.100 lladdr 02:00:00:00:00:99 dev b0 nud stale");
    assert!(
        b.ip("neigh show 10.66.5.100 dev b0")
            .contains("02:00:00:00:00:99")
    );
    a.block_on(|| async { assert!(controller(vip).await.bind().await.unwrap()) });
    a.run(|| send_garp("a0", vip, 1, Duration::ZERO).expect("send_garp"));
    wait_neighbour(&b, "10.66.5.100", mac, "");
}

/// The reply form alone is not "gratuitous" to Linux (its target MAC is broadcast,
/// not the sender's), so it only wins after `locktime`. With `locktime` set to 0 in
/// the client namespace this shows that the reply form is a well-formed ARP reply
/// that the kernel learns from — the form other stacks rely on.
#[test]
fn garp_reply_form_is_learned_once_locktime_allows() {
    let Some((a, b, mac, vip)) = ns_pair("reply", 6) else {
        return;
    };
    run(
        "ip",
        &[
            "netns",
            "exec",
            &b.name,
            "sysctl",
            "-qw",
            "net.ipv4.neigh.b0.locktime=0",
        ],
    );
    b.ip("neigh replace 10.66.6.100 lladdr 02:00:00:00:00:99 dev b0 nud stale");
    // locktime 0 still means "strictly later than the last update".
    std::thread::sleep(Duration::from_millis(50));
    let [_, reply] = garp_frames(mac, vip);
    a.run(|| {
        let iface = interface("a0");
        let config = datalink::Config {
            promiscuous: false,
            ..Default::default()
        };
        let Ok(Channel::Ethernet(mut tx, _)) = datalink::channel(&iface, config) else {
            panic!("no Ethernet channel on a0");
        };
        tx.send_to(&reply, None).expect("frame fits").expect("sent");
    });
    wait_neighbour(&b, "10.66.6.100", mac, " by the reply form");
}
