//! ACME against a real ACME server: Debian's `pebble` and `pebble-challtestsrv`,
//! started by the test on loopback (pebble resolves every name to 127.0.0.1
//! through challtestsrv's DNS). The gateway binary runs with a `tls` listener
//! whose certificate comes from `acme_hosts` and answers http-01 on `http_bind`.
//!
//! Proven here: a client completes a TLS handshake for the host with a chain
//! that verifies against pebble's root (fetched from pebble's management
//! interface); a restart serves the cached certificate (the very same leaf, so no
//! new order); with pebble stopped, a restart still serves it.
//! Every process is killed by a guard, also on panic.

mod pebble_support;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Kills its process on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(what: &'static str, cmd: &mut Command) -> Proc {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} starts (is the pebble package installed?): {e}"));
    Proc(child)
}

/// A free loopback port (bound, then released; the test then binds it).
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until `addr` accepts TCP connections.
async fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn roots_of(pem: &[u8]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// TLS handshake to `addr` for `name`, verifying against `roots`; returns the
/// leaf the server presented.
async fn handshake(
    addr: SocketAddr,
    name: &str,
    roots: rustls::RootCertStore,
) -> std::io::Result<(Vec<u8>, tokio_rustls::client::TlsStream<TcpStream>)> {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok((leaf, tls))
}

/// GET over HTTPS (pebble's management interface), trusting `ca`.
async fn https_get(addr: SocketAddr, path: &str, ca: &[u8]) -> Vec<u8> {
    let (_, mut tls) = handshake(addr, "localhost", roots_of(ca)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    let _ = tls.read_to_end(&mut resp).await;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    resp[split..].to_vec()
}

/// pebble, its DNS, and the CA that signs pebble's own HTTPS certificate.
struct Pebble {
    _dns: Proc,
    pebble: Option<Proc>,
    dir_url: String,
    mgmt: SocketAddr,
    ca_pem: String,
}

impl Pebble {
    /// Start challtestsrv and pebble; pebble validates http-01 on `http_port`.
    async fn start(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
        Self::start_with(dir, http_port, tls_port, None, &[]).await
    }

    /// As [`Pebble::start`], with certificates valid `validity` seconds, and
    /// orders for the names in `blocklist` refused.
    async fn start_with(
        dir: &Path,
        http_port: u16,
        tls_port: u16,
        validity: Option<u64>,
        blocklist: &[&str],
    ) -> Pebble {
        let ca_pem = pebble_support::write_pebble_tls(dir, "127.0.0.1".parse().unwrap());

        let (dns_port, acme_port, mgmt_port, chall_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let dns = spawn(
            "pebble-challtestsrv",
            Command::new("pebble-challtestsrv").args(pebble_support::challtestsrv_args(
                &format!("127.0.0.1:{dns_port}"),
                "127.0.0.1",
                &format!("127.0.0.1:{chall_mgmt}"),
            )),
        );
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": dir.join("pebble.crt"),
            "privateKey": dir.join("pebble.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let mut config = config;
        if let Some(v) = validity {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        if !blocklist.is_empty() {
            config["pebble"]["domainBlocklist"] = blocklist.into();
        }
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let pebble = spawn(
            "pebble",
            Command::new("pebble")
                .arg("-config")
                .arg(dir.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0"),
        );
        let mgmt: SocketAddr = format!("127.0.0.1:{mgmt_port}").parse().unwrap();
        wait_listening(format!("127.0.0.1:{acme_port}").parse().unwrap(), "pebble").await;
        wait_listening(mgmt, "pebble management").await;
        Pebble {
            _dns: dns,
            pebble: Some(pebble),
            dir_url: format!("https://127.0.0.1:{acme_port}/dir"),
            mgmt,
            ca_pem,
        }
    }

    /// pebble's root (it changes at every pebble start).
    async fn root(&self) -> Vec<u8> {
        https_get(self.mgmt, "/roots/0", self.ca_pem.as_bytes()).await
    }
}

/// Write the gateway config: `acme:` pointing at `pebble` (plus `extra_acme`
/// lines), one tls service with `acme_hosts: [host]` forwarding to `backend`
/// (`host` may be several names: `"a.test, b.test"`).
fn write_config(
    dir: &Path,
    pebble: &Pebble,
    http_port: u16,
    tls_port: u16,
    host: &str,
    backend: &str,
    extra_acme: &str,
) -> std::path::PathBuf {
    let config = dir.join("gateway.yml");
    std::fs::write(
        &config,
        format!(
            "acme:\n  http_bind: 127.0.0.1:{http_port}\n  cache_dir: {cache}\n  directory: {url}\n  directory_ca: {ca}\n{extra_acme}services:\n- name: web\n  addr: 127.0.0.1:{tls_port}\n  listener: {{type: tls, tls: {{acme_hosts: [{host}]}}}}\n  handler: {{type: tcp}}\n  forwarder: {{nodes: [{{addr: \"{backend}\"}}]}}\n",
            cache = dir.join("cache").display(),
            url = pebble.dir_url,
            ca = dir.join("pebble-ca.pem").display(),
        ),
    )
    .unwrap();
    config
}

/// The gateway binary with `config`, its log in `log`.
fn gateway(config: &Path, log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("-config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .expect("gateway starts");
    Proc(child)
}

/// Handshake until it succeeds (the order takes a few seconds); the leaf.
async fn wait_for_certificate(addr: SocketAddr, host: &str, root: &[u8], log: &Path) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match handshake(addr, host, roots_of(root)).await {
            Ok((leaf, _)) => return leaf,
            Err(e) => {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                assert!(
                    Instant::now() < deadline,
                    "no valid certificate for {host}: {e}\ngateway log:\n{text}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_order_cache_reuse_and_ca_down() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, tls_port, backend) = (free_port(), free_port(), free_port());
    let mut pebble = Pebble::start(dir.path(), http_port, tls_port).await;
    let host = "acme-a.test";
    let backend = format!("127.0.0.1:{backend}");
    let extra = "  challenge: http\n  email: ops@example.test\n";
    let config = write_config(
        dir.path(),
        &pebble,
        http_port,
        tls_port,
        host,
        &backend,
        extra,
    );
    let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let root = pebble.root().await;
    let log = dir.path().join("gateway.log");

    // First start: no cache, an order through http-01.
    let gw = gateway(&config, &log);
    let first = wait_for_certificate(addr, host, &root, &log).await;
    assert!(
        dir.path()
            .join("cache")
            .join(host)
            .join("cert.pem")
            .exists(),
        "certificate cached"
    );
    // Keys and the account's credentials are readable by the owner only.
    {
        use std::os::unix::fs::PermissionsExt;
        let cache = dir.path().join("cache");
        for secret in [cache.join(host).join("key.pem"), cache.join("account.json")] {
            let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", secret.display());
        }
    }
    drop(gw);

    // Restart: the cached certificate is served, the same leaf (no new order).
    let log2 = dir.path().join("gateway2.log");
    let gw = gateway(&config, &log2);
    let again = wait_for_certificate(addr, host, &root, &log2).await;
    assert_eq!(again, first, "restart served a new certificate");
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(text.contains("serving the cached certificate"), "{text}");
    assert!(!text.contains("certificate obtained"), "{text}");
    drop(gw);

    // The CA is down: a restart still serves the cached certificate.
    pebble.pebble.take();
    let log3 = dir.path().join("gateway3.log");
    let _gw = gateway(&config, &log3);
    let still = wait_for_certificate(addr, host, &root, &log3).await;
    assert_eq!(still, first);
}

/// The config rules around ACME, each a clear error naming the field.
#[test]
fn acme_config_errors() {
    let load = |text: &str| {
        gateway::config::Config::from_str_named(text, Path::new("g.yml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let svc = |tls: &str| {
        format!(
            "services:\n- name: s\n  addr: \":8443\"\n  handler: {{type: tcp}}\n  listener: {{type: tls, tls: {{{tls}}}}}\n  forwarder: {{nodes: [{{addr: \"127.0.0.1:80\"}}]}}\n"
        )
    };
    let e = load(&svc("acme_hosts: [a.test]"));
    assert!(
        e.contains("services[0].listener.tls.acme_hosts: acme_hosts needs the top-level acme:"),
        "{e}"
    );
    let both = format!(
        "acme: {{cache_dir: /tmp/x}}\n{}",
        svc("acme_hosts: [a.test], certFile: c.pem, keyFile: k.pem")
    );
    let e = load(&both);
    assert!(e.contains("expected one of the two"), "{e}");
    let e = load(&format!(
        "acme: {{challenge: dns}}\n{}",
        svc("acme_hosts: [a.test]")
    ));
    assert!(
        e.contains("acme.challenge") && e.contains("dns-01) is not implemented"),
        "{e}"
    );
    // gobetween's old name of tls-alpn: accepted, with a note.
    let sni = format!("acme: {{challenge: sni}}\n{}", svc("acme_hosts: [a.test]"));
    let config = gateway::config::Config::from_str_named(&sni, Path::new("g.yml")).unwrap();
    assert_eq!(
        config.acme.as_ref().unwrap().challenge,
        gateway::config::acme::AcmeChallenge::TlsAlpn { old_name: true }
    );
    assert!(
        config
            .notes()
            .iter()
            .any(|n| n.starts_with("acme.challenge: \"sni\" is gobetween's old name of tls-alpn")),
        "{:?}",
        config.notes()
    );
    let e = load(&format!(
        "acme: {{http_bind: nowhere}}\n{}",
        svc("acme_hosts: [a.test]")
    ));
    assert!(e.contains("acme.http_bind"), "{e}");
    let ok = format!(
        "acme: {{cache_dir: /tmp/x}}\n{}",
        svc("acme_hosts: [a.test]")
    );
    assert_eq!(load(&ok), "");
}

/// A renewal swaps the certificate for new handshakes while a connection made
/// with the old one keeps working. pebble issues 15-second certificates here;
/// the default `renew_before` (30 days) is longer than that, so the renewal
/// comes at two thirds of the lifetime (10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_established_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start_with(dir.path(), http_port, tls_port, Some(15), &[]).await;
    // An echo backend.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let host = "acme-renew.test";
    let backend = backend.to_string();
    let config = write_config(dir.path(), &pebble, http_port, tls_port, host, &backend, "");
    let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let root = pebble.root().await;
    let log = dir.path().join("gateway.log");
    let _gw = gateway(&config, &log);
    let first = wait_for_certificate(addr, host, &root, &log).await;

    // A long-lived connection on the first certificate.
    let (leaf, mut long) = handshake(addr, host, roots_of(&root)).await.unwrap();
    let mut buf = [0u8; 5];
    long.write_all(b"ping1").await.unwrap();
    long.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping1");

    // Wait for a renewal: new handshakes get another leaf.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (now, _) = handshake(addr, host, roots_of(&root)).await.unwrap();
        if now != first && now != leaf {
            break;
        }
        assert!(Instant::now() < deadline, "no renewal within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The old connection is untouched.
    long.write_all(b"ping2").await.unwrap();
    long.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping2");
}

/// Wait until the gateway's log contains all of `needles`.
async fn wait_for_log(log: &Path, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if needles.iter().all(|n| text.contains(n)) {
            return text;
        }
        assert!(Instant::now() < deadline, "{needles:?} not logged:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bad inputs without a CA: an unreachable ACME server and a challenge port in
/// use are each logged with what failed (and the host), retried, and the
/// daemon keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_ca_and_busy_challenge_port_are_logged_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (closed, tls_port) = (free_port(), free_port());
    // The challenge port is taken by someone else.
    let squatter = StdListener::bind("127.0.0.1:0").unwrap();
    let http_port = squatter.local_addr().unwrap().port();
    let host = "acme-bad.test";
    let config = dir.path().join("gateway.yml");
    std::fs::write(
        &config,
        format!(
            "acme:\n  http_bind: 127.0.0.1:{http_port}\n  cache_dir: {cache}\n  directory: https://127.0.0.1:{closed}/dir\nservices:\n- name: web\n  addr: 127.0.0.1:{tls_port}\n  listener: {{type: tls, tls: {{acme_hosts: [{host}]}}}}\n  handler: {{type: tcp}}\n  forwarder: {{nodes: [{{addr: \"127.0.0.1:9\"}}]}}\n",
            cache = dir.path().join("cache").display(),
        ),
    )
    .unwrap();
    let log = dir.path().join("gateway.log");
    let mut gw = gateway(&config, &log);
    wait_for_log(
        &log,
        &[
            "no certificate yet",
            "ACME: order failed",
            host,
            "retry in 5s",
            &format!("cannot listen on 127.0.0.1:{http_port}"),
        ],
    )
    .await;
    assert!(gw.0.try_wait().unwrap().is_none(), "the daemon exited");
    drop(squatter);
}

/// The SAN DNS names of a certificate.
fn dns_names(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// tls-alpn-01, answered by the `acme_hosts` listener itself (pebble's
/// `tlsPort` is the listener's port), for a listener with two hosts: each name
/// gets its own certificate, chosen by SNI. No http-01 responder runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_two_hosts_on_one_listener_chosen_by_sni() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, tls_port) = (free_port(), free_port());
    let pebble = Pebble::start(dir.path(), http_port, tls_port).await;
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            let _ = s.write_all(b"hello\n").await;
        }
    });
    let (a, b) = ("alpn-a.test", "alpn-b.test");
    let config = write_config(
        dir.path(),
        &pebble,
        http_port,
        tls_port,
        &format!("{a}, {b}"),
        &backend_addr,
        "  challenge: tls-alpn\n",
    );
    let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let root = pebble.root().await;
    let log = dir.path().join("gateway.log");
    let _gw = gateway(&config, &log);
    let leaf_a = wait_for_certificate(addr, a, &root, &log).await;
    let leaf_b = wait_for_certificate(addr, b, &root, &log).await;
    assert_eq!(dns_names(&leaf_a), vec![a.to_string()]);
    assert_eq!(dns_names(&leaf_b), vec![b.to_string()]);
    // The service behind the listener works over the ACME certificate.
    let (_, mut tls) = handshake(addr, b, roots_of(&root)).await.unwrap();
    let mut hello = [0u8; 6];
    tls.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello\n");
    // tls-alpn-01 needs no http-01 responder: nothing listens on http_bind.
    assert!(TcpStream::connect(("127.0.0.1", http_port)).await.is_err());
}

/// Bad inputs with a CA that answers: an order the CA refuses (pebble's
/// blocklist) is logged with its host and retried with backoff, while the other
/// host of the same listener gets its certificate; a `cache_dir` that cannot be
/// written (it lies under a regular file) is logged with the host, and the
/// certificate is served from memory all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_order_and_unwritable_cache_are_logged_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, tls_port) = (free_port(), free_port());
    let (good, blocked) = ("acme-good.test", "acme-blocked.test");
    let pebble = Pebble::start_with(dir.path(), http_port, tls_port, None, &[blocked]).await;
    let config = write_config(
        dir.path(),
        &pebble,
        http_port,
        tls_port,
        &format!("{good}, {blocked}"),
        "127.0.0.1:9",
        "",
    );
    // cache_dir under a regular file: every write fails (also for root).
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("cache_dir: {}", dir.path().join("cache").display()),
        &format!("cache_dir: {}", file.join("cache").display()),
    );
    std::fs::write(&config, text).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let root = pebble.root().await;
    let log = dir.path().join("gateway.log");
    let mut gw = gateway(&config, &log);
    wait_for_certificate(addr, good, &root, &log).await;
    let text = wait_for_log(
        &log,
        &[
            "ACME: order failed",
            "rejectedIdentifier",
            "retry in 5s",
            "certificate not cached",
        ],
    )
    .await;
    let refused = text
        .lines()
        .find(|l| l.contains("ACME: order failed"))
        .unwrap();
    assert!(refused.contains(blocked), "{refused}");
    let uncached = text
        .lines()
        .find(|l| l.contains("certificate not cached"))
        .unwrap();
    assert!(uncached.contains(good), "{uncached}");
    // Retried with backoff: the second attempt waits longer than the first.
    let text = wait_for_log(&log, &["retry in 10s"]).await;
    assert!(
        text.lines()
            .any(|l| l.contains("retry in 10s") && l.contains(blocked)),
        "{text}"
    );
    assert!(gw.0.try_wait().unwrap().is_none(), "the daemon exited");
    // The refused host has no certificate; the good one keeps being served.
    assert!(handshake(addr, blocked, roots_of(&root)).await.is_err());
    handshake(addr, good, roots_of(&root)).await.unwrap();
}
