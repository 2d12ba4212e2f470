//! Services that combine listeners and handlers through `ServiceSet`: TLS
//! termination in front of a forwarder, TLS towards nodes (gobetween's
//! `backends_tls`), and the HTTP / SOCKS5 / auto proxy handlers, each with a real
//! client on loopback.

mod proxy_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gateway::config::Config;
use proxy_common::*;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A self-signed certificate for `localhost`, written as cert.pem / key.pem.
fn cert(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, ck.cert.pem()).unwrap();
    std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
    (c, k)
}

/// A TLS client trusting `ca`, talking to `addr` as `localhost`.
async fn tls_connect(addr: SocketAddr, ca: &Path) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_terminates_in_front_of_a_forwarder() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = cert(dir.path());
    let b = Backend::start("plain").await;
    let yaml = format!(
        "services:\n- name: tls\n  addr: \"127.0.0.1:0\"\n  listener: {{type: tls, tls: {{certFile: \"{}\", keyFile: \"{}\"}}}}\n  handler: {{type: tcp}}\n  forwarder: {{nodes: [{{addr: \"{}\"}}]}}\n",
        c.display(),
        k.display(),
        b.addr
    );
    let set = start(&yaml);
    let addr = set.local_addr("tls").unwrap();
    let mut s = tls_connect(addr, &c).await;
    assert_eq!(read_line(&mut s).await, "plain");
    s.write_all(b"over tls").await.unwrap();
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"over tls");
    // A client speaking plain TCP to the TLS port is dropped, counted.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    read_to_close(&mut raw, Duration::from_secs(3)).await;
    assert!(wait_stats(&set, "tls", Duration::from_secs(2), |s| s.errors == 1).await);
    set.shutdown(Duration::from_secs(1)).await;
}

/// A TLS backend: greets with `tls-node\n`, then echoes.
async fn tls_backend(c: &Path, k: &Path) -> SocketAddr {
    let cfg = gateway::config::tls::TlsConfig {
        cert_file: Some(c.to_path_buf()),
        key_file: Some(k.to_path_buf()),
        ..Default::default()
    };
    let acceptor = gateway::proxy::tls::acceptor(&cfg).unwrap();
    tcp_server(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut s) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = s.write_all(b"tls-node\n").await;
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_tls_connects_to_nodes_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = cert(dir.path());
    let node = tls_backend(&c, &k).await;
    // Verified against the CA, with the name from serverName (the address is an IP).
    let yaml = format!(
        "services:\n- name: btls\n  addr: \"127.0.0.1:0\"\n  listener: {{type: tcp}}\n  handler: {{type: tcp}}\n  forwarder:\n    nodes: [{{addr: \"{node}\"}}]\n    tls: {{caFile: \"{}\", serverName: localhost, secure: true}}\n",
        c.display()
    );
    let set = start(&yaml);
    let got = which(set.local_addr("btls").unwrap(), None).await;
    assert_eq!(got.as_deref(), Some("tls-node"));
    set.shutdown(Duration::from_secs(1)).await;

    // A wrong serverName fails verification: the client is closed, the failure counted.
    let yaml = yaml.replace("serverName: localhost", "serverName: other.example");
    let set = start(&yaml);
    assert_eq!(which(set.local_addr("btls").unwrap(), None).await, None);
    assert_eq!(set.stats("btls").unwrap().errors, 1);
    set.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connect_through_a_service() {
    let b = Backend::start("target").await;
    let yaml = "services:\n- name: hp\n  addr: \"127.0.0.1:0\"\n  listener: {type: tcp}\n  handler: {type: http, auth: {username: u, password: p}}\n";
    let set = start(yaml);
    let addr = set.local_addr("hp").unwrap();
    // Without credentials: 407.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\n", b.addr, b.addr).as_bytes())
        .await
        .unwrap();
    assert!(read_line(&mut s).await.starts_with("HTTP/1.1 407"));
    drop(s);
    // With them (u:p): the tunnel reaches the target.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "CONNECT {} HTTP/1.1\r\nHost: {}\r\nProxy-Authorization: Basic dTpw\r\n\r\n",
            b.addr, b.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert!(read_line(&mut s).await.starts_with("HTTP/1.1 200"));
    loop {
        if read_line(&mut s).await.trim().is_empty() {
            break;
        }
    }
    assert_eq!(read_line(&mut s).await, "target");
    drop(s);
    let auth_failed = || set.handler_stats("hp").is_some_and(|s| s.auth_failed == 1);
    assert!(
        wait_for(Duration::from_secs(2), auth_failed).await,
        "{:?}",
        set.handler_stats("hp")
    );
    set.shutdown(Duration::from_secs(1)).await;
}

async fn socks5_connect(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut r = [0u8; 2];
    s.read_exact(&mut r).await.unwrap();
    assert_eq!(r, [5, 0]);
    let SocketAddr::V4(t) = target else {
        panic!("v4 only")
    };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&t.ip().octets());
    req.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut rep = [0u8; 10];
    s.read_exact(&mut rep).await.unwrap();
    assert_eq!(rep[1], 0, "SOCKS5 reply {rep:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks5_and_auto_through_services() {
    let b = Backend::start("target").await;
    let yaml = "services:\n- name: s5\n  addr: \"127.0.0.1:0\"\n  listener: {type: tcp}\n  handler: {type: socks5}\n- name: auto\n  addr: \"127.0.0.1:0\"\n  listener: {type: tcp}\n  handler: {type: auto}\n";
    let set = start(yaml);
    for name in ["s5", "auto"] {
        let mut s = socks5_connect(set.local_addr(name).unwrap(), b.addr).await;
        assert_eq!(read_line(&mut s).await, "target", "{name}");
    }
    // auto also speaks HTTP on the same port.
    let mut s = TcpStream::connect(set.local_addr("auto").unwrap())
        .await
        .unwrap();
    s.write_all(format!("CONNECT {} HTTP/1.1\r\n\r\n", b.addr).as_bytes())
        .await
        .unwrap();
    assert!(read_line(&mut s).await.starts_with("HTTP/1.1 200"));
    // Garbage on a SOCKS port: closed, counted as a bad request.
    let mut g = TcpStream::connect(set.local_addr("s5").unwrap())
        .await
        .unwrap();
    g.write_all(b"\x16\x03\x01garbage").await.unwrap();
    read_to_close(&mut g, Duration::from_secs(3)).await;
    let bad_request = || set.handler_stats("s5").is_some_and(|s| s.bad_request == 1);
    assert!(wait_for(Duration::from_secs(2), bad_request).await);
    set.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn proxy_handler_options_are_checked_at_load() {
    let load = |y: &str| Config::from_str_named(y, Path::new("g.yml")).map_err(|e| e.to_string());
    let e = load("services: [{name: h, addr: \":1\", listener: {type: tcp}, handler: {type: http, metadata: {readTimeot: 5s}}}]").unwrap_err();
    assert!(
        e.contains("services[0].handler.metadata") && e.contains("readTimeot"),
        "{e}"
    );
    let e = load("services: [{name: h, addr: \":1\", listener: {type: tcp}, handler: {type: socks5}, forwarder: {nodes: [{addr: \"a:1\"}]}}]").unwrap_err();
    assert!(e.contains("services[0].forwarder"), "{e}");
    let e = load("services: [{name: h, addr: \":1\", listener: {type: tls, tls: {certFile: a, keyFile: b, options: {minVersion: tls1.0}}}, handler: {type: auto}}]").unwrap_err();
    assert!(e.contains("services[0].listener.tls"), "{e}");
    load("services: [{name: h, addr: \":1\", listener: {type: tcp}, handler: {type: socks5, metadata: {udp: true}}}]").unwrap();
}
