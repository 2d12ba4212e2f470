//! TLS: rustls termination from a `TlsConfig` (versions, ALPN, certificate
//! reload without restart, client certificates) and the backend TLS client, with
//! certificates made at test time by rcgen and real handshakes (tokio-rustls,
//! openssl s_client, curl through an HTTPS proxy).

mod handlers_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gateway::config::tls::{TlsConfig, TlsOptions};
use gateway::proxy::handler::http::HttpHandler;
use gateway::proxy::router::Router;
use gateway::proxy::tls::{TlsClient, accept_with_timeout, acceptor};
use handlers_support::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// A leaf for `names`; returns (cert PEM, key PEM, cert DER).
    fn leaf(&self, names: &[&str], client: bool) -> (String, String, Vec<u8>) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, self.issuer.pem()).unwrap();
        p
    }
}

/// A CA (written to `ca.pem` in a temporary directory) and a server certificate
/// it issued for `names`, installed there as `server.crt` / `server.key`.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    ca_path: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// The server certificate, DER: what a client should be shown.
    der: Vec<u8>,
}

impl Pki {
    fn new(ca_name: &str, names: &[&str]) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(ca_name);
        let ca_path = ca.write(dir.path(), "ca.pem");
        let (c, k, der) = ca.leaf(names, false);
        let (cert, key) = install(dir.path(), &c, &k);
        Pki {
            dir,
            ca,
            ca_path,
            cert,
            key,
            der,
        }
    }

    /// A server config serving the installed pair, everything else at its defaults.
    fn server(&self) -> TlsConfig {
        TlsConfig {
            cert_file: Some(self.cert.clone()),
            key_file: Some(self.key.clone()),
            ..Default::default()
        }
    }
}

/// Write a cert/key pair the way a renewal tool does: new files, then rename.
fn install(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(dir.join("server.crt.tmp"), cert).unwrap();
    std::fs::write(dir.join("server.key.tmp"), key).unwrap();
    std::fs::rename(dir.join("server.key.tmp"), &k).unwrap();
    std::fs::rename(dir.join("server.crt.tmp"), &c).unwrap();
    (c, k)
}

/// A TLS server built from `cfg` that greets with `hello` after the handshake.
async fn hello_server(cfg: &TlsConfig) -> SocketAddr {
    tls_greeting_server(cfg, |_| b"hello".to_vec()).await
}

/// A plain rustls client trusting `ca`; returns the server's leaf and the TLS
/// version and ALPN protocol negotiated.
async fn handshake(
    addr: SocketAddr,
    ca: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&str],
) -> Result<(Vec<u8>, rustls::ProtocolVersion, Option<Vec<u8>>), std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_protocol_versions(versions)
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let (_, conn) = tls.get_ref();
    let leaf = conn.peer_certificates().unwrap()[0].to_vec();
    let version = conn.protocol_version().unwrap();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let mut greeting = String::new();
    tls.read_to_string(&mut greeting).await?;
    assert_eq!(greeting, "hello");
    Ok((leaf, version, alpn))
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_swapped_on_disk_is_served_without_restart() {
    let pki = Pki::new("test ca", &["localhost"]);
    let cfg = TlsConfig {
        options: TlsOptions {
            alpn: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        },
        ..pki.server()
    };
    let addr = hello_server(&cfg).await;

    let (leaf, version, alpn) = handshake(addr, &pki.ca_path, BOTH, &["http/1.1"])
        .await
        .unwrap();
    assert_eq!(leaf, pki.der);
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

    // Renewal by rename.
    let (c2, k2, der2) = pki.ca.leaf(&["localhost"], false);
    install(pki.dir.path(), &c2, &k2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (leaf, _, _) = handshake(addr, &pki.ca_path, BOTH, &[]).await.unwrap();
    assert_eq!(leaf, der2, "new certificate served after the swap");

    // A broken key (caught mid-write) keeps the previous pair in service.
    std::fs::write(&pki.key, "-----BEGIN PRIVATE KEY-----\ngarbage\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (leaf, _, _) = handshake(addr, &pki.ca_path, BOTH, &[]).await.unwrap();
    assert_eq!(
        leaf, der2,
        "old certificate kept while the new pair is broken"
    );

    // In-place overwrite (no rename) once the pair is whole again.
    let (c3, k3, der3) = pki.ca.leaf(&["localhost"], false);
    std::fs::write(&pki.cert, &c3).unwrap();
    std::fs::write(&pki.key, &k3).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (leaf, _, _) = handshake(addr, &pki.ca_path, BOTH, &[]).await.unwrap();
    assert_eq!(leaf, der3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_limits() {
    let pki = Pki::new("test ca", &["localhost"]);
    let with = |min: Option<&str>, max: Option<&str>| TlsConfig {
        options: TlsOptions {
            min_version: min.map(str::to_string),
            max_version: max.map(str::to_string),
            alpn: vec![],
        },
        ..pki.server()
    };
    // gobetween spelling: at most TLS 1.2.
    let addr = hello_server(&with(None, Some("tls1.2"))).await;
    let (_, v, _) = handshake(addr, &pki.ca_path, BOTH, &[]).await.unwrap();
    assert_eq!(v, rustls::ProtocolVersion::TLSv1_2);
    // GOST spelling: at least TLS 1.3; a TLS 1.2-only client is refused.
    let addr = hello_server(&with(Some("VersionTLS13"), None)).await;
    assert!(
        handshake(addr, &pki.ca_path, &[&rustls::version::TLS12], &[])
            .await
            .is_err()
    );
    let (_, v, _) = handshake(addr, &pki.ca_path, BOTH, &[]).await.unwrap();
    assert_eq!(v, rustls::ProtocolVersion::TLSv1_3);
    // TLS 1.0 cannot be configured.
    let e = acceptor(&with(Some("VersionTLS10"), None))
        .err()
        .expect("TLS 1.0 refused");
    assert_eq!(e.field, "options.minVersion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_verifies_chain_and_alpn() {
    let pki = Pki::new("test ca", &["localhost"]);
    let cfg = TlsConfig {
        options: TlsOptions {
            alpn: vec!["http/1.1".into()],
            ..Default::default()
        },
        ..pki.server()
    };
    let addr = hello_server(&cfg).await;
    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args(["-verify_hostname", "localhost", "-CAfile"])
        .arg(&pki.ca_path)
        .args(["-alpn", "http/1.1"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_through_tls_listener_and_http_handler() {
    // TLS termination in front of a handler: the handler is generic over the stream.
    let pki = Pki::new("test ca", &["localhost"]);
    let acceptor = acceptor(&pki.server()).unwrap();
    let h = Arc::new(HttpHandler::new(Default::default(), Router::default()));
    let p = spawn_proxy(move |tcp, conn| {
        let (h, acceptor) = (h.clone(), acceptor.clone());
        async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let _ = h.handle(tls, conn).await;
            }
        }
    })
    .await;
    let origin = spawn_origin("127.0.0.1:0").await;
    let proxy = format!("https://localhost:{}", p.port());
    let ca = pki.ca_path.to_str().unwrap();
    let url = origin.url("/hello");
    curl_expect(&["--proxy", &proxy, "--proxy-cacert", ca, &url], "hello").await;
}

/// The backend side: a server that requires client certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_client_with_ca_client_cert_and_sni() {
    let pki = Pki::new("backend ca", &["backend.test"]);
    let (dir, ca, ca_path) = (&pki.dir, &pki.ca, &pki.ca_path);
    let addr = hello_server(&TlsConfig {
        ca_file: Some(ca_path.clone()),
        ..pki.server()
    })
    .await;
    let (cc, ck, _) = ca.leaf(&["gateway-client"], true);
    let (ccert, ckey) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    std::fs::write(&ccert, cc).unwrap();
    std::fs::write(&ckey, ck).unwrap();

    let other = Ca::new("other ca");
    let other_path = other.write(dir.path(), "other.pem");

    let base = TlsConfig {
        cert_file: Some(ccert.clone()),
        key_file: Some(ckey.clone()),
        ca_file: Some(ca_path.clone()),
        server_name: Some("backend.test".into()),
        secure: true,
        ..Default::default()
    };
    async fn talk(cfg: &TlsConfig, addr: SocketAddr) -> std::io::Result<String> {
        let client = TlsClient::new(cfg).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = client.connect(tcp, "127.0.0.1").await?;
        let mut s = String::new();
        // TLS 1.3: a rejected client certificate shows on the first read.
        tls.read_to_string(&mut s).await?;
        Ok(s)
    }

    assert_eq!(talk(&base, addr).await.unwrap(), "hello");

    // Without a client certificate the backend refuses.
    let no_cert = TlsConfig {
        cert_file: None,
        key_file: None,
        ..base.clone()
    };
    assert!(talk(&no_cert, addr).await.is_err());

    // Wrong name, or a CA that did not sign the backend: verification fails.
    let wrong_name = TlsConfig {
        server_name: Some("other.test".into()),
        ..base.clone()
    };
    assert!(talk(&wrong_name, addr).await.is_err());
    // caFile without secure is GOST's pinning: the chain counts, the name not.
    let pinned = TlsConfig {
        secure: false,
        ..wrong_name.clone()
    };
    assert_eq!(talk(&pinned, addr).await.unwrap(), "hello");
    let pinned_other_ca = TlsConfig {
        ca_file: Some(other_path.clone()),
        ..pinned.clone()
    };
    assert!(talk(&pinned_other_ca, addr).await.is_err());
    let wrong_ca = TlsConfig {
        ca_file: Some(other_path),
        ..base.clone()
    };
    assert!(talk(&wrong_ca, addr).await.is_err());

    // GOST's secure: false (and no caFile): no verification, any name.
    let insecure = TlsConfig {
        ca_file: None,
        secure: false,
        server_name: Some("whatever.example".into()),
        ..base.clone()
    };
    assert_eq!(talk(&insecure, addr).await.unwrap(), "hello");

    // Without serverName the host passed to connect() is the SNI/verified name.
    let by_host = TlsConfig {
        server_name: None,
        ..base.clone()
    };
    let client = TlsClient::new(&by_host).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(
        client.connect(tcp, "127.0.0.1").await.is_err(),
        "cert is for backend.test"
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = client.connect(tcp, "backend.test").await.unwrap();
    let mut s = String::new();
    tls.read_to_string(&mut s).await.unwrap();
    assert_eq!(s, "hello");

    // Half a client pair is a config error naming the field.
    let half = TlsConfig {
        key_file: None,
        ..base.clone()
    };
    assert_eq!(TlsClient::new(&half).unwrap_err().field, "keyFile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_or_garbage_tls_clients_are_dropped() {
    let pki = Pki::new("test ca", &["localhost"]);
    let acceptor = acceptor(&pki.server()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    // Connects and says nothing.
    let _silent = TcpStream::connect(addr).await.unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let start = std::time::Instant::now();
    let Err(err) = accept_with_timeout(&acceptor, tcp, Duration::from_millis(200)).await else {
        panic!("stalled handshake accepted");
    };
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(start.elapsed() < Duration::from_secs(2));

    // Sends HTTP to a TLS port.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let Err(err) = accept_with_timeout(&acceptor, tcp, Duration::from_secs(2)).await else {
        panic!("garbage handshake accepted");
    };
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}
