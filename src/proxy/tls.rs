//! TLS with rustls: terminating it (the `tls` listener) and originating it
//! (forwarders with gobetween's `backends_tls`), both from one [`TlsConfig`].
//!
//! # Server side
//!
//! [`server_config`] turns `tls: {certFile, keyFile, caFile, options}` into a
//! rustls `ServerConfig`:
//!
//! * `certFile` / `keyFile` — PEM chain and key. They are served through a
//!   [`ReloadingCertResolver`], which looks at the files' modification time, size
//!   and inode at most once per [`RELOAD_CHECK_INTERVAL`] during handshakes and
//!   re-reads them when they changed. Replacing the files (`cp`, `mv`, a certbot
//!   renewal) therefore takes effect on the next handshake after that interval,
//!   with no restart and no dropped connection. A pair that fails to load (a
//!   half-written file, a key that does not match) is logged and the previous
//!   certificate stays in use; the check is repeated on the next interval.
//! * `caFile` — when set, clients must present a certificate signed by this CA
//!   (mutual TLS).
//! * `options.minVersion` / `maxVersion` — `VersionTLS12`/`VersionTLS13` (GOST) or
//!   `tls1.2`/`tls1.3` (gobetween). rustls implements only TLS 1.2 and 1.3, so the
//!   older names are a configuration error rather than a silent upgrade.
//! * `options.alpn` — ALPN protocols offered, in preference order.
//! * gobetween's `ciphers`, `prefer_server_ciphers`, `session_tickets`,
//!   `min_version`, `max_version` — see [`super::tls_options`].
//!
//! # Client side
//!
//! [`TlsClient::new`] builds a connector for backends:
//!
//! * `serverName` — SNI and the name checked in the backend's certificate; without
//!   it the host part of the backend address is used.
//! * `secure` — verify the backend's certificate chain *and* name. GOST's default
//!   is `false`: no verification at all (the handshake is still authenticated
//!   against the certificate the backend sent, so the session is encrypted, but
//!   anyone could have sent it). The trust anchors are `caFile`, else the system
//!   bundle.
//! * `caFile` without `secure` — GOST's certificate pinning: the backend's chain
//!   must lead to this CA, but the name in it is not checked.
//! * `certFile` / `keyFile` — a client certificate for backends that require one.
//!
//! Errors are [`TlsError`]s naming the option at fault (`certFile`,
//! `options.minVersion`, ...) so the caller can prefix the service's path and
//! produce a [`FieldError`].

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::FieldError;
use crate::config::tls::{TlsConfig, TlsVersion};

/// How often, at most, a handshake checks whether the certificate files changed.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where Debian, Fedora/RHEL and Alpine keep the system CA bundle.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A TLS setting that cannot be used, with the option it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TlsError {
    /// Option name inside the `tls:` section, e.g. `keyFile`, `options.maxVersion`.
    pub field: &'static str,
    pub message: String,
}

impl TlsError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }

    /// Attach the path of the `tls:` section: `services[0].listener.tls`.
    pub fn at(&self, section: &str) -> FieldError {
        FieldError::new(format!("{section}.{}", self.field), self.message.clone())
    }
}

/// The rustls protocol versions enabled by `options.minVersion` / `maxVersion`
/// or gobetween's `min_version` / `max_version` (names checked by the config:
/// [`TlsConfig::versions`]).
pub fn protocol_versions(
    cfg: &TlsConfig,
) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    let (min, max) = cfg.versions().map_err(|(f, m)| TlsError::new(f, m))?;
    let all: [(TlsVersion, &'static SupportedProtocolVersion); 2] = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ];
    Ok(all
        .iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, r)| *r)
        .collect())
}

fn read_certs(path: &Path, field: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    crate::config::tls::read_certs(path, field).map_err(|(f, m)| TlsError::new(f, m))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    crate::config::tls::read_key(path).map_err(|(f, m)| TlsError::new(f, m))
}

fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert, "certFile")?;
    let key_der = read_key(key)?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|e| {
        TlsError::new(
            "keyFile",
            format!("{} does not fit {}: {e}", key.display(), cert.display()),
        )
    })
}

fn roots_from(path: &Path, field: &'static str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, field)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::new(field, format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

fn both_paths(cfg: &TlsConfig) -> Result<Option<(&Path, &Path)>, TlsError> {
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(TlsError::new(
            "keyFile",
            "expected keyFile together with certFile",
        )),
        (None, Some(_)) => Err(TlsError::new(
            "certFile",
            "expected certFile together with keyFile",
        )),
    }
}

/// Build the server side (TLS termination). Reads the files now, so a broken
/// certificate fails the service at start, not at the first client.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = super::tls_options::provider(cfg)?;
    let versions = protocol_versions(cfg)?;
    // gobetween's acme_hosts: certificates from the ACME manager (src/proxy/acme.rs).
    let resolver: Arc<dyn ResolvesServerCert> = if cfg.acme_hosts.is_empty() {
        let Some((cert, key)) = both_paths(cfg)? else {
            return Err(TlsError::new(
                "certFile",
                "expected certFile and keyFile (PEM) for a TLS listener",
            ));
        };
        Arc::new(ReloadingCertResolver::new(cert, key, provider.clone())?)
    } else {
        super::acme::resolver(&cfg.acme_hosts)
            .map_err(|e| TlsError::new("acme_hosts", e.to_string()))?
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::new("options", e.to_string()))?;
    let builder = match &cfg.ca_file {
        Some(ca) => {
            let roots = Arc::new(roots_from(ca, "caFile")?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::new("caFile", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    super::tls_options::apply_server(cfg, &mut config)?;
    config.alpn_protocols = cfg
        .options
        .alpn
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Ok(Arc::new(config))
}

/// [`server_config`] wrapped for tokio: `acceptor.accept(tcp_stream).await`.
pub fn acceptor(cfg: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    server_config(cfg).map(tokio_rustls::TlsAcceptor::from)
}

/// Run the server handshake with a time limit, so a client that connects and
/// stalls (or trickles a ClientHello) cannot hold a connection open forever.
/// A timeout is reported as `io::ErrorKind::TimedOut`; garbage instead of a
/// ClientHello as `InvalidData`.
pub async fn accept_with_timeout<IO>(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: IO,
    limit: Duration,
) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    // Saturating: a huge configured limit means "no limit", never a panic.
    let deadline = super::clock::deadline_in(limit);
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("TLS handshake not completed within {limit:?}"),
        )),
    }
}

/// What identifies a file version: a new mtime, size or inode (a `mv` over the
/// old file) all count as a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// Serves the certificate in `certFile`/`keyFile`, re-reading the pair when the
/// files change (checked during handshakes, at most once per interval).
///
/// The check runs inside rustls' `resolve` call, i.e. on the task doing a
/// handshake: a `stat` of two files per interval, plus a read of two small files
/// when they changed. That is cheaper and simpler than a watcher task that would
/// need its own lifetime management, and it cannot miss a change while no one
/// connects (the next handshake checks).
pub struct ReloadingCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    check_interval: Duration,
    state: Mutex<ReloadState>,
}

struct ReloadState {
    last_check: Instant,
    stamps: (Option<FileStamp>, Option<FileStamp>),
}

impl std::fmt::Debug for ReloadingCertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCertResolver")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCertResolver {
    pub fn new(cert: &Path, key: &Path, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let stamps = (stamp(cert), stamp(key));
        let loaded = load_certified_key(cert, key, &provider)?;
        Ok(Self {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            provider,
            current: ArcSwap::from_pointee(loaded),
            check_interval: RELOAD_CHECK_INTERVAL,
            state: Mutex::new(ReloadState {
                last_check: Instant::now(),
                stamps,
            }),
        })
    }

    /// The certificate chain currently served.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Re-read the files now (e.g. on SIGHUP), whatever their timestamps say.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = (stamp(&self.cert_path), stamp(&self.key_path));
        let loaded = load_certified_key(&self.cert_path, &self.key_path, &self.provider)?;
        self.current.store(Arc::new(loaded));
        if let Ok(mut st) = self.state.lock() {
            st.stamps = stamps;
            st.last_check = Instant::now();
        }
        Ok(())
    }

    fn maybe_reload(&self) {
        // A handshake that finds another one checking just uses the current pair.
        let Ok(mut st) = self.state.try_lock() else {
            return;
        };
        if st.last_check.elapsed() < self.check_interval {
            return;
        }
        st.last_check = Instant::now();
        let stamps = (stamp(&self.cert_path), stamp(&self.key_path));
        if stamps == st.stamps || stamps.0.is_none() || stamps.1.is_none() {
            // Unchanged, or mid-replacement (a file briefly missing): next time.
            return;
        }
        match load_certified_key(&self.cert_path, &self.key_path, &self.provider) {
            Ok(loaded) => {
                self.current.store(Arc::new(loaded));
                st.stamps = stamps;
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                // Likely caught between writing the cert and the key: keep serving
                // the old pair, and since the stamps were not updated, retry.
                tracing::warn!(cert = %self.cert_path.display(), "TLS certificate not reloaded: {e}");
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.maybe_reload();
        Some(self.current.load_full())
    }
}

/// The client side: connect to backends over TLS.
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    pub fn new(cfg: &TlsConfig) -> Result<Self, TlsError> {
        cfg.client_options().map_err(|(f, m)| TlsError::new(f, m))?;
        let provider = super::tls_options::provider(cfg)?;
        let versions = protocol_versions(cfg)?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| TlsError::new("options", e.to_string()))?;
        let chain = if cfg.secure || cfg.ca_file.is_some() {
            let roots = match &cfg.ca_file {
                Some(ca) => roots_from(ca, "caFile")?,
                None => system_roots()?,
            };
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::new("caFile", e.to_string()))?;
            Some(webpki)
        } else {
            None
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(BackendVerification {
                chain,
                check_name: cfg.secure,
                algorithms: provider.signature_verification_algorithms,
            }));
        let mut config = match both_paths(cfg)? {
            Some((cert, key)) => {
                let chain = read_certs(cert, "certFile")?;
                builder
                    .with_client_auth_cert(chain, read_key(key)?)
                    .map_err(|e| TlsError::new("keyFile", e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        super::tls_options::apply_client(cfg, &mut config);
        config.alpn_protocols = cfg
            .options
            .alpn
            .iter()
            .map(|p| p.as_bytes().to_vec())
            .collect();
        let server_name = match &cfg.server_name {
            Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| {
                TlsError::new(
                    "serverName",
                    format!("expected a DNS name or IP address, got {n:?}: {e}"),
                )
            })?),
            None => None,
        };
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Run the client handshake on `stream`. `host` (the backend's host, without
    /// port) is the SNI unless `serverName` is configured.
    pub async fn connect<IO>(
        &self,
        stream: IO,
        host: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(bare.to_string()).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("{host:?} is not a valid TLS server name: {e}"),
                    )
                })?
            }
        };
        self.connector.connect(name, stream).await
    }
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    for path in SYSTEM_CA_BUNDLES {
        let path = Path::new(path);
        if path.exists() {
            let mut roots = RootCertStore::empty();
            let certs = read_certs(path, "caFile")?;
            // A bundle may hold a certificate webpki cannot parse; skip it.
            let (_added, _ignored) = roots.add_parsable_certificates(certs);
            return Ok(roots);
        }
    }
    Err(TlsError::new(
        "caFile",
        "secure: true without caFile needs the system CA bundle, and none was found; expected a caFile",
    ))
}

/// How a backend's certificate is checked. Handshake signatures are checked in
/// every mode, against the certificate presented, so the peer must hold its key.
#[derive(Debug)]
struct BackendVerification {
    /// Chain verification against the trust anchors; `None` for `secure: false`
    /// without `caFile`, which accepts any certificate.
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// `secure: true`. GOST calls a `caFile` without `secure` certificate pinning:
    /// the backend must hold a certificate from that CA, whatever name it carries.
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for BackendVerification {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        let Some(webpki) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // webpki checks the name only after the chain verified, so this error
            // means "good chain, other name".
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tls::TlsOptions;

    fn with_versions(min: Option<&str>, max: Option<&str>) -> TlsConfig {
        TlsConfig {
            options: TlsOptions {
                min_version: min.map(str::to_string),
                max_version: max.map(str::to_string),
                alpn: vec![],
            },
            ..Default::default()
        }
    }

    #[test]
    fn version_names() {
        let v = |min, max| protocol_versions(&with_versions(min, max));
        assert_eq!(v(None, None).unwrap().len(), 2);
        let only13 = v(Some("VersionTLS13"), None).unwrap();
        assert_eq!(only13.len(), 1);
        assert_eq!(only13[0].version, rustls::ProtocolVersion::TLSv1_3);
        let only12 = v(None, Some("tls1.2")).unwrap();
        assert_eq!(only12[0].version, rustls::ProtocolVersion::TLSv1_2);
        assert_eq!(v(Some("tls1.2"), Some("VersionTLS13")).unwrap().len(), 2);

        let e = v(Some("VersionTLS10"), None).unwrap_err();
        assert_eq!(e.field, "options.minVersion");
        assert!(e.message.contains("TLS 1.2 and 1.3 only"), "{e}");
        let e = v(None, Some("tls1.1")).unwrap_err();
        assert_eq!(e.field, "options.maxVersion");
        let e = v(Some("tls1.3"), Some("tls1.2")).unwrap_err();
        assert!(e.message.contains("not above"), "{e}");
        let e = v(Some("TLSv9"), None).unwrap_err();
        assert!(e.message.starts_with("expected VersionTLS12"), "{e}");
    }

    #[test]
    fn missing_files_are_named() {
        let cfg = TlsConfig {
            cert_file: Some("/nonexistent/cert.pem".into()),
            key_file: Some("/nonexistent/key.pem".into()),
            ..Default::default()
        };
        let e = server_config(&cfg).unwrap_err();
        assert_eq!(e.field, "certFile");
        assert!(e.message.contains("/nonexistent/cert.pem"), "{e}");
        let e = server_config(&TlsConfig::default()).unwrap_err();
        assert_eq!(e.field, "certFile");
    }
}
