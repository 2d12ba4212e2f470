//! A private lab of network namespaces for end-to-end tests.
//!
//! Failover can only be proven on a real LAN: ARP, broadcast heartbeats, an address
//! moving between two kernels. [`Lab::new`] builds one from scratch, private to the
//! calling test:
//!
//! ```text
//!            namespace "<prefix>-sw"
//!          +-------------- br0 ---------------+
//!          |vn1      |vn2      |vclient  |vbackend      (veth, bridge side)
//!        eth0      eth0      eth0      eth0             (veth, host side)
//!         n1        n2      client   backend            (one namespace each)
//!      10.X.Y.1  10.X.Y.2  10.X.Y.100 10.X.Y.200        (/24; the VIP default is .234)
//! ```
//!
//! A fifth host, the [`Host::Attacker`] (10.X.Y.66), joins the bridge only when a
//! test asks for it ([`Lab::add_attacker`]).
//!
//! * **Isolation.** Every command names its namespace (`ip -n NS`, `ip netns exec NS`);
//!   nothing is ever run against the host's own namespace. Namespace names are
//!   `gl<pid>-<counter>-<host>`, so tests in parallel threads and parallel test binaries
//!   never meet, and `X.Y` is derived from the same pid and counter (never 0, never
//!   255), so even a log line read out of context names its lab.
//! * **Cleanup.** Dropping the [`Lab`] — at the end of a test or while a panic
//!   unwinds — kills every process inside its namespaces (found with `ip netns pids`,
//!   so grandchildren and re-spawned daemons are covered too), stops the backend
//!   thread and deletes the namespaces. When the drop happens during a panic, the
//!   daemons' logs and the nodes' addresses are printed first: that is the failure
//!   report.
//! * **Daemons** are the real `gateway` binary (`CARGO_BIN_EXE_gateway`), started
//!   with `ip netns exec`, which `exec`s, so the pid we hold is the daemon's own and
//!   `kill -9` / `SIGTERM` reach it directly.
//! * **Backend and client** are plain std sockets opened by a thread that first
//!   joined the namespace with `setns(2)` — a socket belongs to the namespace its
//!   creating thread was in, so no helper program is needed. The backend answers
//!   every connection with [`BACKEND_BANNER`] and closes.
//!
//! Assertions should rest on what the network shows — who holds the VIP
//! ([`Lab::vip_holders`]), what the client reaches ([`Lab::client_get`]), which MAC the
//! client resolved ([`Lab::client_neigh_mac`]) — polled against deadlines with
//! [`poll`], never after fixed sleeps. The common waits also come as test steps
//! that panic with what they saw instead ([`Lab::expect_holders`],
//! [`Lab::expect_holders_stay`], [`GatewayProc::assert_running`]), so a test reads
//! as its scenario.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// The interface every lab host has on the LAN.
pub const IFNAME: &str = "eth0";
/// Port the backend listens on.
pub const BACKEND_PORT: u16 = 80;
/// What the backend sends on every connection (then it closes).
pub const BACKEND_BANNER: &str = "lab-backend says hello\n";
/// How often the polling helpers look again.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Labs made by this process so far; with the pid it makes names and subnets unique.
static LABS: AtomicU32 = AtomicU32::new(0);

/// The hosts of a lab: four always, the attacker on request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    N1,
    N2,
    Client,
    Backend,
    /// Another host on the LAN, not a gateway node ([`Lab::add_attacker`]).
    Attacker,
}

impl Host {
    pub const ALL: [Host; 4] = [Host::N1, Host::N2, Host::Client, Host::Backend];
    /// The two gateway nodes.
    pub const NODES: [Host; 2] = [Host::N1, Host::N2];

    pub fn name(self) -> &'static str {
        match self {
            Host::N1 => "n1",
            Host::N2 => "n2",
            Host::Client => "client",
            Host::Backend => "backend",
            Host::Attacker => "attacker",
        }
    }

    /// Last octet of the host's address.
    fn octet(self) -> u8 {
        match self {
            Host::N1 => 1,
            Host::N2 => 2,
            Host::Client => 100,
            Host::Backend => 200,
            Host::Attacker => 66,
        }
    }

    /// The other gateway node.
    ///
    /// # Panics
    /// For hosts that are not gateway nodes.
    pub fn peer(self) -> Host {
        match self {
            Host::N1 => Host::N2,
            Host::N2 => Host::N1,
            other => panic!("{other} is not a gateway node"),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where in `/run/netns` the named namespace is mounted.
pub fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// Move the calling thread into the network namespace mounted at `path`.
/// Only this thread moves; sockets it opens afterwards live in that namespace.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns(2) with a valid open fd and a namespace type; it only changes
    // this thread's network namespace and touches no memory of ours.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Call `f` every [`POLL_EVERY`] until it returns `Some`, or `None` once `timeout`
/// has passed (`f` is always called at least once, and once more at the deadline).
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        thread::sleep(POLL_EVERY.min(deadline - now));
    }
}

/// Run a command to completion and return its output, or a readable error when it
/// could not run or exited non-zero. Never panics: used from `Drop` too.
fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A lab: a bridge in its own namespace, and the four [`Host`]s joined to it.
pub struct Lab {
    /// The test's name, for messages.
    name: String,
    /// `gl<pid>-<counter>`: every namespace of this lab starts with it.
    prefix: String,
    /// The first three octets of the lab's /24.
    net: [u8; 3],
    /// Namespaces created so far, in creation order (Drop deletes exactly these).
    namespaces: Vec<String>,
    /// Configs and daemon logs.
    dir: tempfile::TempDir,
    /// Every daemon log written in this lab, for the failure report.
    logs: Mutex<Vec<(Host, PathBuf)>>,
    /// Numbers the daemon runs, so restarts get their own log files.
    runs: AtomicU32,
    backend: Option<Backend>,
}

impl Lab {
    /// Build a lab for the test `name`.
    ///
    /// # Panics
    /// When the lab cannot be built (not root, `ip` missing, no veth/bridge support).
    /// Whatever was built until then is removed again.
    pub fn new(name: &str) -> Lab {
        let pid = std::process::id();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        // 254 * 254 distinct /24s, none with a 0 or 255 octet; labs of one process
        // take consecutive ones, processes start 64 apart.
        let v = (pid.wrapping_mul(64).wrapping_add(n)) % (254 * 254);
        let net = [10, (1 + v / 254) as u8, (1 + v % 254) as u8];
        let mut lab = Lab {
            name: name.to_string(),
            prefix: format!("gl{pid}-{n}"),
            net,
            namespaces: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix(&format!("lab-{name}-"))
                .tempdir()
                .expect("cannot create the lab's temporary directory"),
            logs: Mutex::new(Vec::new()),
            runs: AtomicU32::new(0),
            backend: None,
        };
        if let Err(e) = lab.build() {
            panic!(
                "lab {name}: cannot build the lab ({e}); the tests need root, iproute2, veth and bridge support"
            );
        }
        lab
    }

    fn build(&mut self) -> Result<(), String> {
        let sw = self.switch_ns();
        run(Command::new("ip").args(["netns", "add", &sw]))?;
        self.namespaces.push(sw.clone());
        self.ip_in(&sw, &["link", "set", "lo", "up"])?;
        self.ip_in(&sw, &["link", "add", "br0", "type", "bridge"])?;
        self.ip_in(&sw, &["link", "set", "br0", "up"])?;
        for host in Host::ALL {
            self.add_host(host)?;
        }
        self.backend = Some(
            Backend::start(&netns_path(&self.ns(Host::Backend)))
                .map_err(|e| format!("cannot start the backend: {e}"))?,
        );
        Ok(())
    }

    /// A namespace for `host`, joined to the bridge with its address.
    fn add_host(&mut self, host: Host) -> Result<(), String> {
        let sw = self.switch_ns();
        let ns = self.ns(host);
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        self.namespaces.push(ns.clone());
        // Bridge-side names only need to be unique inside the switch namespace,
        // and stay within the 15-character interface name limit.
        let port = format!("v{}", host.name());
        // The peer is created directly inside the host's namespace: neither end
        // ever exists in the namespace we run in.
        self.ip_in(
            &sw,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", IFNAME, "netns", &ns,
            ],
        )?;
        self.ip_in(&sw, &["link", "set", &port, "master", "br0", "up"])?;
        self.ip_in(&ns, &["link", "set", "lo", "up"])?;
        let cidr = format!("{}/24", self.ip(host));
        self.ip_in(&ns, &["addr", "add", &cidr, "dev", IFNAME])?;
        self.ip_in(&ns, &["link", "set", IFNAME, "up"])?;
        Ok(())
    }

    /// Join [`Host::Attacker`] to the LAN (once; later calls do nothing). Like
    /// every host it is removed with the lab.
    pub fn add_attacker(&mut self) {
        if self.namespaces.contains(&self.ns(Host::Attacker)) {
            return;
        }
        if let Err(e) = self.add_host(Host::Attacker) {
            panic!("lab {}: cannot add the attacker: {e}", self.name);
        }
    }

    /// `ip -n NS ARGS`.
    fn ip_in(&self, ns: &str, args: &[&str]) -> Result<Output, String> {
        run(Command::new("ip").arg("-n").arg(ns).args(args))
    }

    /// `ip -n <host's namespace> ARGS`; panics with the command's stderr on failure.
    pub fn ip_cmd(&self, host: Host, args: &[&str]) -> String {
        match self.ip_in(&self.ns(host), args) {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => panic!("lab {}: {e}", self.name),
        }
    }

    /// The test's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Namespace of a host.
    pub fn ns(&self, host: Host) -> String {
        format!("{}-{}", self.prefix, host.name())
    }

    /// Namespace of the bridge.
    pub fn switch_ns(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// Every namespace this lab created.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// A host's address on the LAN.
    pub fn ip(&self, host: Host) -> Ipv4Addr {
        let [a, b, c] = self.net;
        Ipv4Addr::new(a, b, c, host.octet())
    }

    /// The address `floating_ip: {enabled: true}` derives: the LAN's `.234`.
    pub fn default_vip(&self) -> Ipv4Addr {
        let [a, b, c] = self.net;
        Ipv4Addr::new(a, b, c, 234)
    }

    /// Where the backend listens.
    pub fn backend_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip(Host::Backend), BACKEND_PORT)
    }

    /// Run a program inside a host's namespace (`ip netns exec`) and wait for it.
    pub fn exec(&self, host: Host, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("lab {}: cannot run {argv:?} in {host}: {e}", self.name))
    }

    /// Start any program inside a host's namespace without waiting for it. The lab
    /// kills it on drop like everything else in its namespaces.
    pub fn spawn(&self, host: Host, argv: &[&str]) -> Background {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("lab {}: cannot start {argv:?} in {host}: {e}", self.name));
        Background { child }
    }

    /// `ping -c1` from one host to an address; true when it answered within a second.
    pub fn ping(&self, from: Host, to: Ipv4Addr) -> bool {
        self.exec(from, &["ping", "-c1", "-W1", "-n", &to.to_string()])
            .status
            .success()
    }

    /// Run `f` on a fresh thread inside a host's namespace and return its result.
    pub fn in_netns<T: Send + 'static>(
        &self,
        host: Host,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let path = netns_path(&self.ns(host));
        thread::Builder::new()
            .name(format!("lab-{host}"))
            .spawn(move || enter_netns(&path).map(|()| f()))?
            .join()
            .map_err(|_| io::Error::other("the closure run in the namespace panicked"))?
    }

    /// Start the real `gateway` binary in `host` with this config text. Its stdout
    /// and stderr go to a log file ([`GatewayProc::log`]), which is printed if the
    /// test fails.
    pub fn spawn_gateway(&self, host: Host, config_yaml: &str) -> GatewayProc {
        let run_no = self.runs.fetch_add(1, Ordering::Relaxed);
        let config = self.dir.path().join(format!("{host}-{run_no}.yml"));
        let log = self.dir.path().join(format!("{host}-{run_no}.log"));
        std::fs::write(&config, config_yaml).expect("cannot write the gateway config");
        let out = File::create(&log).expect("cannot create the gateway log");
        let err = out.try_clone().expect("cannot clone the log file handle");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .arg(env!("CARGO_BIN_EXE_gateway"))
            .arg("-config")
            .arg(&config)
            .current_dir(self.dir.path())
            .env(
                "RUST_LOG",
                std::env::var("LAB_RUST_LOG").unwrap_or_else(|_| "info".to_string()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("lab {}: cannot start gateway in {host}: {e}", self.name));
        if let Ok(mut logs) = self.logs.lock() {
            logs.push((host, log.clone()));
        }
        GatewayProc {
            host,
            child,
            log,
            config,
        }
    }

    /// Start the gateway again where `old` ran, with the config it was started with.
    pub fn respawn(&self, old: &GatewayProc) -> GatewayProc {
        let config = std::fs::read_to_string(old.config_path())
            .unwrap_or_else(|e| panic!("lab {}: cannot read the old config: {e}", self.name));
        self.spawn_gateway(old.host(), &config)
    }

    /// A `floating_ip:` section for the gateway node `host`: enabled, with
    /// `priority`, the other node as `peer_ip`, then the `extra` lines (each written
    /// at the section's indent, so `"preempt: true"` or `"notify:"` followed by
    /// `"  master: …"`).
    pub fn floating_ip_yaml(&self, host: Host, priority: u8, extra: &[&str]) -> String {
        let mut s = format!(
            "floating_ip:\n  enabled: true\n  priority: {priority}\n  peer_ip: {}\n",
            self.ip(host.peer())
        );
        for line in extra {
            s.push_str("  ");
            s.push_str(line);
            s.push('\n');
        }
        s
    }

    /// Pids of the processes living in a namespace (never our own).
    fn pids_in(ns: &str) -> Vec<i32> {
        let me = std::process::id() as i32;
        run(Command::new("ip").args(["netns", "pids", ns]))
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                    .filter(|&p| p != me)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SIGKILL everything in a namespace and wait (up to 5 s) until it is empty.
    fn kill_all_in(ns: &str) -> Result<(), String> {
        let empty = poll(Duration::from_secs(5), || {
            let pids = Self::pids_in(ns);
            for &pid in &pids {
                let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            pids.is_empty().then_some(())
        });
        empty.ok_or_else(|| format!("processes left in {ns}: {:?}", Self::pids_in(ns)))
    }

    /// The node dies: every process in it is killed, then its link goes down.
    pub fn kill_node(&self, host: Host) {
        if let Err(e) = Self::kill_all_in(&self.ns(host)) {
            panic!("lab {}: {e}", self.name);
        }
        self.link_down(host);
    }

    /// Kill every process in a host (its link stays as it is).
    pub fn kill_processes(&self, host: Host) {
        if let Err(e) = Self::kill_all_in(&self.ns(host)) {
            panic!("lab {}: {e}", self.name);
        }
    }

    pub fn link_down(&self, host: Host) {
        self.ip_cmd(host, &["link", "set", IFNAME, "down"]);
    }

    pub fn link_up(&self, host: Host) {
        self.ip_cmd(host, &["link", "set", IFNAME, "up"]);
    }

    /// Add an nftables rule in `host` that drops what `matcher` matches on `hook`
    /// (e.g. `nft_drop(Host::N2, Hook::Input, "ip saddr 10.1.2.1 udp dport 7654")`).
    /// The rules live in table `inet lab`, which [`Lab::nft_flush`] removes.
    pub fn nft_drop(&self, host: Host, hook: Hook, matcher: &str) {
        let chain = hook.chain();
        let script = format!(
            "table inet lab {{\n\
             \tchain input {{ type filter hook input priority 0; policy accept; }}\n\
             \tchain output {{ type filter hook output priority 0; policy accept; }}\n\
             }}\n\
             add rule inet lab {chain} {matcher} drop\n"
        );
        self.nft_script(host, &script);
    }

    /// Remove every rule [`Lab::nft_drop`] added in `host`.
    pub fn nft_flush(&self, host: Host) {
        self.nft_script(host, "table inet lab {}\ndelete table inet lab\n");
    }

    fn nft_script(&self, host: Host, script: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("lab {}: cannot run nft: {e}", self.name));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .expect("cannot write the nft script");
        }
        let out = child.wait_with_output().expect("nft did not finish");
        assert!(
            out.status.success(),
            "lab {}: nft in {host} failed: {}\n{script}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// IPv4 addresses on a host's interfaces, as (interface, address, prefix length).
    pub fn addrs(&self, host: Host) -> Vec<(String, Ipv4Addr, u8)> {
        let json = self.ip_cmd(host, &["-4", "-j", "addr", "show"]);
        let links: serde_json::Value =
            serde_json::from_str(&json).unwrap_or(serde_json::Value::Null);
        let mut out = Vec::new();
        for link in links.as_array().into_iter().flatten() {
            let ifname = link["ifname"].as_str().unwrap_or("?").to_string();
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if let Some(addr) = a["local"].as_str().and_then(|s| s.parse().ok()) {
                    let plen = a["prefixlen"].as_u64().unwrap_or(0) as u8;
                    out.push((ifname.clone(), addr, plen));
                }
            }
        }
        out
    }

    /// The hosts that have `vip` on any interface right now.
    pub fn vip_holders(&self, vip: Ipv4Addr) -> Vec<Host> {
        Host::ALL
            .into_iter()
            .filter(|&h| self.addrs(h).iter().any(|(_, a, _)| *a == vip))
            .collect()
    }

    /// Wait until exactly one host holds `vip`, and return it.
    pub fn wait_single_holder(&self, vip: Ipv4Addr, timeout: Duration) -> Option<Host> {
        poll(timeout, || match self.vip_holders(vip).as_slice() {
            [one] => Some(*one),
            _ => None,
        })
    }

    /// Wait until the holders of `vip` are exactly `expected`.
    pub fn wait_holders(&self, vip: Ipv4Addr, expected: &[Host], timeout: Duration) -> bool {
        poll(timeout, || {
            (self.vip_holders(vip) == expected).then_some(())
        })
        .is_some()
    }

    /// Like [`Lab::wait_holders`], but a test step: panics, naming `what` and the
    /// holders seen, when the holders never become `expected`.
    pub fn expect_holders(&self, vip: Ipv4Addr, expected: &[Host], timeout: Duration, what: &str) {
        assert!(
            self.wait_holders(vip, expected, timeout),
            "lab {}: {what}: the VIP holders should be {expected:?}, are {:?}",
            self.name,
            self.vip_holders(vip)
        );
    }

    /// Wait until `host` is one of the holders of `vip`. Others may hold it too: a
    /// dead node's downed interface still lists the address.
    pub fn wait_holder(&self, vip: Ipv4Addr, host: Host, timeout: Duration) -> bool {
        poll(timeout, || {
            self.vip_holders(vip).contains(&host).then_some(())
        })
        .is_some()
    }

    /// Check for `duration` that the holders of `vip` stay exactly `expected`;
    /// on the first deviation return what was seen instead.
    pub fn holders_stay(
        &self,
        vip: Ipv4Addr,
        expected: &[Host],
        duration: Duration,
    ) -> Result<(), Vec<Host>> {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            let seen = self.vip_holders(vip);
            if seen != expected {
                return Err(seen);
            }
            thread::sleep(POLL_EVERY);
        }
        Ok(())
    }

    /// Like [`Lab::holders_stay`], but a test step: panics, naming `what` and the
    /// holders seen, on the first deviation.
    pub fn expect_holders_stay(
        &self,
        vip: Ipv4Addr,
        expected: &[Host],
        duration: Duration,
        what: &str,
    ) {
        if let Err(seen) = self.holders_stay(vip, expected, duration) {
            panic!(
                "lab {}: {what}: the VIP holders should stay {expected:?}, saw {seen:?}",
                self.name
            );
        }
    }

    /// The usual start of a pair: n1 (priority 200) takes the VIP alone, then n2
    /// (priority 100) starts as its backup. `config(host, priority)` is a node's
    /// config text; each step may take `timeout`.
    pub fn start_pair(
        &self,
        config: impl Fn(Host, u8) -> String,
        timeout: Duration,
    ) -> (GatewayProc, GatewayProc) {
        let vip = self.default_vip();
        let g1 = self.spawn_gateway(Host::N1, &config(Host::N1, 200));
        self.expect_holders(vip, &[Host::N1], timeout, "n1 alone should take the VIP");
        let g2 = self.spawn_gateway(Host::N2, &config(Host::N2, 100));
        assert!(
            g2.wait_log("to=BACKUP reason=startup", timeout),
            "n2 did not start:\n{}",
            g2.log()
        );
        (g1, g2)
    }

    /// The MAC address of a host's LAN interface (lowercase, colon-separated).
    pub fn host_mac(&self, host: Host) -> String {
        let json = self.ip_cmd(host, &["-j", "link", "show", "dev", IFNAME]);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or(serde_json::Value::Null);
        v[0]["address"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| panic!("lab {}: no MAC for {host} in {json}", self.name))
    }

    /// The MAC the client's neighbour table holds for `ip`, if it has a resolved entry.
    pub fn client_neigh_mac(&self, ip: Ipv4Addr) -> Option<String> {
        let json = self.ip_cmd(
            Host::Client,
            &["-j", "neigh", "show", "to", &ip.to_string(), "dev", IFNAME],
        );
        let v: serde_json::Value = serde_json::from_str(&json).ok()?;
        v.as_array()?
            .iter()
            .find_map(|e| e["lladdr"].as_str().map(str::to_ascii_lowercase))
    }

    /// Wait until the client's neighbour entry for `ip` carries `mac` (as
    /// [`Lab::host_mac`] writes it), e.g. after a gratuitous ARP.
    pub fn wait_client_neigh_mac(&self, ip: Ipv4Addr, mac: &str, timeout: Duration) -> bool {
        poll(timeout, || {
            self.client_neigh_mac(ip).filter(|m| m == mac).map(drop)
        })
        .is_some()
    }

    /// From the client: connect to `ip:port`, read until the server closes, return
    /// what was read. Both the connect and the read are bounded by `timeout`.
    pub fn client_get(&self, ip: Ipv4Addr, port: u16, timeout: Duration) -> io::Result<String> {
        self.in_netns(Host::Client, move || {
            let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
            let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })?
    }

    /// True when the client gets the backend's banner from `ip:port`.
    pub fn client_reaches(&self, ip: Ipv4Addr, port: u16, timeout: Duration) -> bool {
        matches!(self.client_get(ip, port, timeout), Ok(text) if text == BACKEND_BANNER)
    }

    /// Keep trying (150 ms per attempt) until the client gets the backend's banner
    /// from `ip:port`; the time it took, or the last error at the deadline.
    pub fn wait_client_reaches(
        &self,
        ip: Ipv4Addr,
        port: u16,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let mut last = String::from("no attempt");
        poll(timeout, || {
            match self.client_get(ip, port, Duration::from_millis(150)) {
                Ok(text) if text == BACKEND_BANNER => return Some(start.elapsed()),
                Ok(text) => last = format!("unexpected answer {text:?}"),
                Err(e) => last = e.to_string(),
            }
            None
        })
        .ok_or(last)
    }

    /// Connections the backend has answered so far.
    pub fn backend_hits(&self) -> u32 {
        self.backend
            .as_ref()
            .map_or(0, |b| b.hits.load(Ordering::Relaxed))
    }

    /// The `services:` section of the issue: a TCP forwarder on `:8080` to the backend.
    pub fn forward_service_yaml(&self) -> String {
        format!(
            "services:\n\
             - name: fwd\n  addr: \":8080\"\n  handler: {{type: tcp}}\n  listener: {{type: tcp}}\n  \
             forwarder:\n    nodes:\n    - {{name: b1, addr: \"{}\"}}\n",
            self.backend_addr()
        )
    }

    /// What a failing test prints: each daemon's log and each node's addresses.
    fn report(&self) -> String {
        let mut s = format!("==== lab {} ({}) report ====\n", self.name, self.prefix);
        for host in Host::NODES {
            let addrs = self
                .ip_in(&self.ns(host), &["-4", "-br", "addr", "show"])
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_else(|e| e);
            s.push_str(&format!("---- {host} addresses:\n{addrs}"));
        }
        let logs = self.logs.lock().map(|l| l.clone()).unwrap_or_default();
        for (host, path) in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| e.to_string());
            // The end is what matters; keep the report readable.
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(200);
            s.push_str(&format!(
                "---- {host} {} (last {} lines):\n{}\n",
                path.file_name().and_then(|f| f.to_str()).unwrap_or("?"),
                lines.len() - from,
                lines[from..].join("\n")
            ));
        }
        s
    }
}

/// Which nftables hook a rule from [`Lab::nft_drop`] goes on.
#[derive(Clone, Copy, Debug)]
pub enum Hook {
    Input,
    Output,
}

impl Hook {
    fn chain(self) -> &'static str {
        match self {
            Hook::Input => "input",
            Hook::Output => "output",
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if thread::panicking() || std::env::var_os("LAB_REPORT").is_some() {
            eprintln!("{}", self.report());
        }
        // Nothing here may panic: a panic while unwinding aborts the test binary and
        // would leave the namespaces behind.
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = Self::kill_all_in(ns) {
                eprintln!("lab {}: {e}", self.name);
            }
        }
        if let Some(backend) = self.backend.take() {
            backend.stop();
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = run(Command::new("ip").args(["netns", "del", ns])) {
                eprintln!("lab {}: {e}", self.name);
            }
        }
    }
}

/// One run of the gateway daemon inside a lab host. Dropping it kills it.
pub struct GatewayProc {
    host: Host,
    child: Child,
    log: PathBuf,
    config: PathBuf,
}

impl GatewayProc {
    pub fn host(&self) -> Host {
        self.host
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file it was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Send a signal (the daemon is our direct child: `ip netns exec` execs).
    pub fn signal(&self, sig: Signal) {
        // A process that already exited is not an error for the tests' purposes.
        let _ = signal::kill(Pid::from_raw(self.child.id() as i32), sig);
    }

    /// `kill -9`, and reap it.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll(timeout, || self.child.try_wait().ok().flatten())
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A test step: panics with the daemon's log if it is no longer running.
    pub fn assert_running(&mut self, what: &str) {
        assert!(
            self.is_running(),
            "{what}: {}'s daemon exited:\n{}",
            self.host,
            self.log()
        );
    }

    /// SIGTERM, then wait up to `timeout` for the exit; panics if it does not come.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "{} did not exit within {timeout:?} of SIGTERM:\n{}",
                self.host,
                self.log()
            )
        })
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until its log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        poll(timeout, || self.log().contains(needle).then_some(())).is_some()
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A program started with [`Lab::spawn`]; killed and reaped on drop.
pub struct Background {
    child: Child,
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll(timeout, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The backend: a TCP server on a thread inside the backend namespace that answers
/// every connection with [`BACKEND_BANNER`].
struct Backend {
    stop: Arc<AtomicBool>,
    hits: Arc<AtomicU32>,
    handle: JoinHandle<()>,
}

impl Backend {
    fn start(ns_path: &Path) -> io::Result<Backend> {
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(AtomicU32::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let path = ns_path.to_path_buf();
        let (stop2, hits2) = (stop.clone(), hits.clone());
        let handle = thread::Builder::new()
            .name("lab-backend".into())
            .spawn(move || {
                let bound = enter_netns(&path)
                    .and_then(|()| TcpListener::bind((Ipv4Addr::UNSPECIFIED, BACKEND_PORT)))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l));
                let listener = match bound {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Non-blocking accept plus a short sleep: the thread notices `stop`
                // within a few milliseconds without needing a wake-up connection.
                while !stop2.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            hits2.fetch_add(1, Ordering::Relaxed);
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                            let _ = stream.write_all(BACKEND_BANNER.as_bytes());
                            let _ = stream.shutdown(Shutdown::Both);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Backend { stop, hits, handle }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err(io::Error::other("backend thread died before binding")),
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}
