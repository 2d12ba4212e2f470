//! Helpers of the chain tests: Debian proxies run from a config file in a
//! temporary directory, an origin that reports the address it was reached
//! from, and raw clients for HTTP CONNECT and SOCKS5.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A daemon started by a test, in a process group of its own: dropping the
/// guard (also on a panic) stops the whole group and reaps the leader.
pub struct Daemon {
    child: Child,
    pub name: &'static str,
}

impl Daemon {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Daemon {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log).unwrap();
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{name} does not start (scripts/ci-deps.sh installs it): {e}")
            });
        Daemon { child, name }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group this guard created.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Wait until something accepts on `addr` (a daemon finished starting).
pub async fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} does not listen on {addr}");
}

/// tinyproxy on `127.0.0.1:port`, connecting out from `bind` (its `Bind`), taking
/// clients from 127.0.0.1 with the basic credentials `auth` if given.
pub async fn tinyproxy(dir: &Path, port: u16, bind: &str, auth: Option<(&str, &str)>) -> Daemon {
    let conf = dir.join("tinyproxy.conf");
    let mut text = format!(
        "Port {port}\nListen 127.0.0.1\nBind {bind}\nTimeout 30\nMaxClients 200\nAllow 127.0.0.1\nLogLevel Info\nPidFile \"{}\"\n",
        dir.join("tinyproxy.pid").display()
    );
    if let Some((u, p)) = auth {
        text.push_str(&format!("BasicAuth {u} {p}\n"));
    }
    std::fs::write(&conf, text).unwrap();
    let d = Daemon::spawn(
        "tinyproxy",
        Command::new("tinyproxy").arg("-d").arg("-c").arg(&conf),
        &dir.join("tinyproxy.log"),
    );
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), "tinyproxy").await;
    d
}

/// dante (danted) on `127.0.0.1:port`, connecting out from `external`, taking
/// clients from `clients` (a CIDR) only, CONNECT and UDP ASSOCIATE.
pub async fn danted(dir: &Path, port: u16, external: &str, clients: &str) -> Daemon {
    let conf = dir.join("danted.conf");
    let text = format!(
        "logoutput: {log}\ninternal: 127.0.0.1 port = {port}\nexternal: {external}\n\
         clientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n\
         client pass {{\n  from: {clients} to: 0.0.0.0/0\n}}\n\
         socks pass {{\n  from: 0.0.0.0/0 to: 0.0.0.0/0\n  command: connect udpassociate\n}}\n\
         socks pass {{\n  from: 0.0.0.0/0 to: 0.0.0.0/0\n  command: udpreply\n}}\n",
        log = dir.join("danted.log").display()
    );
    std::fs::write(&conf, text).unwrap();
    let d = Daemon::spawn(
        "danted",
        Command::new("danted")
            .arg("-f")
            .arg(&conf)
            .arg("-N")
            .arg("1")
            .arg("-p")
            .arg(dir.join("danted.pid")),
        &dir.join("danted.out"),
    );
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), "danted").await;
    d
}

/// An origin on `127.0.0.1:0` that answers each connection with
/// `peer <source address>\n` and records the source addresses.
pub struct Origin {
    pub addr: SocketAddr,
    pub peers: Arc<Mutex<Vec<IpAddr>>>,
}

impl Origin {
    pub async fn start() -> Origin {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        tokio::spawn(async move {
            while let Ok((mut s, peer)) = l.accept().await {
                seen.lock().unwrap().push(peer.ip());
                tokio::spawn(async move {
                    let _ = s
                        .write_all(format!("peer {}\n", peer.ip()).as_bytes())
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Origin { addr, peers }
    }

    /// How many connections came from `ip`.
    pub fn from(&self, ip: &str) -> usize {
        let ip: IpAddr = ip.parse().unwrap();
        self.peers
            .lock()
            .unwrap()
            .iter()
            .filter(|p| **p == ip)
            .count()
    }
}

/// `CONNECT target` through the HTTP proxy at `proxy`: the status code and,
/// on success, everything the target sent until it closed.
pub async fn http_connect(proxy: SocketAddr, target: SocketAddr) -> (u16, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut all)).await;
    let text = String::from_utf8_lossy(&all).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// SOCKS5 CONNECT (no authentication) to an IPv4 `target` through `proxy`: the
/// reply code and, on success, what the target sent until it closed.
pub async fn socks5_connect(proxy: SocketAddr, target: SocketAddr) -> (u8, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let SocketAddr::V4(t) = target else {
        panic!("IPv4 targets only")
    };
    let mut req = vec![5, 1, 0, 5, 1, 0, 1];
    req.extend_from_slice(&t.ip().octets());
    req.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut head = [0u8; 12];
    if tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut head))
        .await
        .is_err()
    {
        return (0xff, String::new());
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut rest)).await;
    (head[3], String::from_utf8_lossy(&rest).into_owned())
}
