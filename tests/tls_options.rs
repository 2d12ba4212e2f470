//! gobetween's TLS options (`ciphers`, `prefer_server_ciphers`, `session_tickets`,
//! `min_version` / `max_version`) seen from real clients: `openssl s_client`
//! against a `tls` listener built from the config, and a rustls server that
//! reports what the gateway's backend client (`forwarder.tls`) negotiated.
//!
//! Each test compares with the default so that an option that stopped working
//! (the default suite, resumption, or version coming back) turns it red.

mod handlers_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use gateway::config::tls::TlsConfig;
use gateway::proxy::tls::{TlsClient, acceptor};
use handlers_support::tls_greeting_server;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A self-signed ECDSA P-256 certificate for `localhost` in a temporary directory.
/// (ECDSA: the suites in these tests are the `ECDHE_ECDSA` ones.)
struct Cert {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Cert {
    fn new() -> Cert {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        Cert {
            _dir: dir,
            cert,
            key,
        }
    }

    fn server(&self, f: impl FnOnce(&mut TlsConfig)) -> TlsConfig {
        let mut c = TlsConfig {
            cert_file: Some(self.cert.clone()),
            key_file: Some(self.key.clone()),
            ..Default::default()
        };
        f(&mut c);
        c
    }
}

/// A TLS server from `cfg` that writes, after the handshake, the suite and the
/// handshake kind it saw (`"TLS13_AES_256_GCM_SHA384 Full"`), then closes.
async fn reporting_server(cfg: &TlsConfig) -> SocketAddr {
    tls_greeting_server(cfg, |conn| {
        let suite = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("?");
        format!("{suite} {:?}", conn.handshake_kind()).into_bytes()
    })
    .await
}

/// What `openssl s_client` printed (stdout), run to the server's close.
async fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", "localhost", "-ign_eof"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("openssl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `New, TLSv1.2, Cipher is X` / `Reused, ...` line, or `None` when the
/// handshake failed.
fn session_line(out: &str) -> Option<&str> {
    out.lines()
        .find(|l| (l.starts_with("New,") || l.starts_with("Reused,")) && !l.contains("(NONE)"))
}

fn cipher(out: &str) -> Option<String> {
    session_line(out).map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
}

fn protocol(out: &str) -> Option<String> {
    session_line(out).and_then(|l| l.split(", ").nth(1).map(str::to_string))
}

#[tokio::test]
async fn ciphers_restrict_the_negotiated_suite() {
    let c = Cert::new();
    // Baseline: OpenSSL's first choice for TLS 1.2 with an ECDSA key.
    let addr = reporting_server(&c.server(|_| {})).await;
    let default = cipher(&s_client(addr, &["-tls1_2"]).await);
    assert_eq!(default.as_deref(), Some("ECDHE-ECDSA-AES256-GCM-SHA384"));

    let addr = reporting_server(&c.server(|t| {
        t.ciphers = vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()];
    }))
    .await;
    let out = s_client(addr, &["-tls1_2"]).await;
    assert_eq!(
        cipher(&out).as_deref(),
        Some("ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{out}"
    );
    // A client that offers only a suite left out gets no handshake.
    let out = s_client(
        addr,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
    )
    .await;
    assert_eq!(cipher(&out), None, "{out}");
    // Only TLS 1.2 was named: TLS 1.3 keeps all its suites (Go's rule).
    let out = s_client(addr, &["-tls1_3"]).await;
    assert_eq!(
        cipher(&out).as_deref(),
        Some("TLS_AES_256_GCM_SHA384"),
        "{out}"
    );

    // Naming a TLS 1.3 suite (Go/IANA name) restricts TLS 1.3.
    let addr = reporting_server(&c.server(|t| {
        t.ciphers = vec!["TLS_CHACHA20_POLY1305_SHA256".into()];
    }))
    .await;
    let out = s_client(addr, &["-tls1_3"]).await;
    assert_eq!(
        cipher(&out).as_deref(),
        Some("TLS_CHACHA20_POLY1305_SHA256"),
        "{out}"
    );
}

#[tokio::test]
async fn prefer_server_ciphers_picks_the_server_order() {
    let c = Cert::new();
    let server_order = |prefer: bool| {
        c.server(move |t| {
            t.ciphers = vec![
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".into(),
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".into(),
            ];
            t.prefer_server_ciphers = prefer;
        })
    };
    let client_order = [
        "-tls1_2",
        "-cipher",
        "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305",
    ];
    let addr = reporting_server(&server_order(false)).await;
    let out = s_client(addr, &client_order).await;
    assert_eq!(
        cipher(&out).as_deref(),
        Some("ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{out}"
    );
    let addr = reporting_server(&server_order(true)).await;
    let out = s_client(addr, &client_order).await;
    assert_eq!(
        cipher(&out).as_deref(),
        Some("ECDHE-ECDSA-CHACHA20-POLY1305"),
        "{out}"
    );
}

/// Connect twice with openssl, the second time offering the first session.
/// Returns both outputs; the second is `None` when the first connection left
/// nothing to resume (openssl writes no session file then).
async fn twice(addr: SocketAddr, version: &str, dir: &Path) -> (String, Option<String>) {
    let sess = dir.join(format!("sess-{}{version}", addr.port()));
    let first = s_client(addr, &[version, "-sess_out", sess.to_str().unwrap()]).await;
    assert!(session_line(&first).is_some(), "{first}");
    if !sess.exists() {
        return (first, None);
    }
    let second = s_client(addr, &[version, "-sess_in", sess.to_str().unwrap()]).await;
    (first, Some(second))
}

fn resumed(second: &Option<String>) -> bool {
    second
        .as_deref()
        .and_then(session_line)
        .is_some_and(|l| l.starts_with("Reused,"))
}

#[tokio::test]
async fn session_tickets_on_and_off_show_in_resumption() {
    let c = Cert::new();
    let dir = tempfile::tempdir().unwrap();
    for version in ["-tls1_2", "-tls1_3"] {
        // On: stateless tickets, resumption works.
        let addr = reporting_server(&c.server(|t| t.session_tickets = Some(true))).await;
        let (first, second) = twice(addr, version, dir.path()).await;
        assert!(
            first.contains("TLS session ticket lifetime hint"),
            "{version}: {first}"
        );
        assert!(resumed(&second), "{version}: {second:?}");
        // Off: no ticket, a full handshake every time.
        let addr = reporting_server(&c.server(|t| t.session_tickets = Some(false))).await;
        let (first, second) = twice(addr, version, dir.path()).await;
        assert!(!first.contains("TLS session ticket"), "{version}: {first}");
        assert!(!resumed(&second), "{version}: {second:?}");
    }
    // Unset (rustls' session cache): TLS 1.2 resumes by session ID, no ticket.
    let addr = reporting_server(&c.server(|_| {})).await;
    let (first, second) = twice(addr, "-tls1_2", dir.path()).await;
    assert!(
        !first.contains("TLS session ticket lifetime hint"),
        "{first}"
    );
    assert!(resumed(&second), "{second:?}");
}

#[tokio::test]
async fn version_floor_and_ceiling_with_gobetween_names() {
    let c = Cert::new();
    // gobetween's sample: min_version = "tls1", max_version = "tls1.2". The floor
    // is raised to 1.2 (warning); the ceiling holds.
    let addr = reporting_server(&c.server(|t| {
        t.min_version = Some("tls1".into());
        t.max_version = Some("tls1.2".into());
    }))
    .await;
    let out = s_client(addr, &[]).await;
    assert_eq!(protocol(&out).as_deref(), Some("TLSv1.2"), "{out}");
    let out = s_client(addr, &["-tls1_3"]).await;
    assert_eq!(protocol(&out), None, "{out}");
    // Baseline: without a ceiling the same client gets 1.3.
    let addr = reporting_server(&c.server(|t| t.min_version = Some("ssl3".into()))).await;
    let out = s_client(addr, &[]).await;
    assert_eq!(protocol(&out).as_deref(), Some("TLSv1.3"), "{out}");
    // A 1.3 floor refuses a 1.2-only client.
    let addr = reporting_server(&c.server(|t| t.min_version = Some("tls1.3".into()))).await;
    let out = s_client(addr, &["-tls1_2"]).await;
    assert_eq!(protocol(&out), None, "{out}");
    let out = s_client(addr, &["-tls1_3"]).await;
    assert_eq!(protocol(&out).as_deref(), Some("TLSv1.3"), "{out}");
    // An old version as the ceiling is an error naming the field.
    let e = acceptor(&c.server(|t| t.max_version = Some("tls1.1".into())))
        .err()
        .expect("refused");
    assert_eq!(e.field, "max_version");
}

/// Connect with the backend client and return the server's report.
async fn backend_report(client: &TlsClient, addr: SocketAddr) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = client.connect(tcp, "localhost").await.unwrap();
    let mut report = String::new();
    tls.read_to_string(&mut report).await.unwrap();
    report
}

#[tokio::test]
async fn backend_side_ciphers_versions_and_tickets() {
    let c = Cert::new();
    let addr = reporting_server(&c.server(|t| t.session_tickets = Some(true))).await;

    // Default client: TLS 1.3, and the second connection resumes.
    let client = TlsClient::new(&TlsConfig::default()).unwrap();
    let first = backend_report(&client, addr).await;
    assert!(
        first.starts_with("TLS13_AES_256_GCM_SHA384 Some(Full)"),
        "{first}"
    );
    let second = backend_report(&client, addr).await;
    assert!(second.ends_with("Some(Resumed)"), "{second}");

    // max_version + ciphers: the server sees the client's restriction.
    let restricted = TlsClient::new(&TlsConfig {
        max_version: Some("tls1.2".into()),
        ciphers: vec!["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256".into()],
        ..Default::default()
    })
    .unwrap();
    let r = backend_report(&restricted, addr).await;
    assert!(
        r.starts_with("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 "),
        "{r}"
    );

    // session_tickets = false: never resumes.
    let no_resume = TlsClient::new(&TlsConfig {
        session_tickets: Some(false),
        ..Default::default()
    })
    .unwrap();
    for _ in 0..2 {
        let r = backend_report(&no_resume, addr).await;
        assert!(r.ends_with("Some(Full)"), "{r}");
    }

    // prefer_server_ciphers has no meaning for a client: refused.
    let e = TlsClient::new(&TlsConfig {
        prefer_server_ciphers: true,
        ..Default::default()
    })
    .expect_err("refused");
    assert_eq!(e.field, "prefer_server_ciphers");
}

/// The options as written in gateway.yml: parsed, validated, errors named.
#[test]
fn yaml_fields_and_errors() {
    let yaml = |tls: &str, fwd_tls: &str| {
        format!(
            "services:\n- name: s\n  addr: \":8443\"\n  handler: {{type: tcp}}\n  listener:\n    type: tls\n    tls: {{certFile: c.pem, keyFile: k.pem, {tls}}}\n  forwarder:\n    nodes: [{{addr: \"127.0.0.1:80\"}}]\n    tls: {{{fwd_tls}}}\n"
        )
    };
    let load = |text: &str| gateway::config::Config::from_str_named(text, Path::new("g.yml"));
    let ok = load(&yaml(
        "ciphers: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256], prefer_server_ciphers: true, session_tickets: false, min_version: tls1, max_version: tls1.3",
        "ciphers: [TLS_AES_128_GCM_SHA256], session_tickets: true, min_version: tls1.2",
    ))
    .unwrap();
    let tls = ok.services[0].listener.tls.as_ref().unwrap();
    assert_eq!(tls.session_tickets, Some(false));
    assert!(tls.prefer_server_ciphers);

    let e = load(&yaml("ciphers: [TLS_RSA_WITH_RC4_128_SHA]", "")).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("services[0].listener.tls.ciphers")
            && text.contains("TLS_RSA_WITH_RC4_128_SHA")
            && text.contains("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        "{text}"
    );
    let e = load(&yaml("max_version: ssl3", "")).unwrap_err();
    assert!(
        e.to_string()
            .contains("services[0].listener.tls.max_version"),
        "{e}"
    );
    let e = load(&yaml("", "prefer_server_ciphers: true")).unwrap_err();
    assert!(
        e.to_string()
            .contains("services[0].forwarder.tls.prefer_server_ciphers"),
        "{e}"
    );
    let e = load(&yaml("session_tickets: maybe", "")).unwrap_err();
    assert!(e.to_string().contains("session_tickets"), "{e}");
}
