//! ACME certificates for `tls` listeners with `acme_hosts` (gobetween's
//! `[acme]`), with the protocol done by the `instant-acme` crate.
//!
//! # Life of a certificate
//!
//! * At start, each host's certificate and key are read from
//!   `cache_dir/HOST/{cert.pem,key.pem}` when present: a restart serves at once
//!   and places no new order.
//! * One background task per host orders a certificate when there is none, or
//!   when the cached one expires within `renew_before`, then sleeps until the
//!   next renewal time. A new certificate is written to the cache (write + rename)
//!   and swapped into the listener's resolver: handshakes after that use it,
//!   established connections are not touched.
//! * The listener's resolver picks the certificate by SNI (one listener can have
//!   several `acme_hosts`); without SNI, the first host's. A host without a
//!   certificate yet fails its handshakes, and its task logs why.
//! * Failures (CA unreachable, order refused or rate-limited, challenge port in
//!   use, `cache_dir` not writable) are logged with the host name and retried with
//!   exponential backoff (5 s doubling to 1 h); the last good certificate stays.
//!
//! # Challenges
//!
//! * `http` (http-01): a small responder on `http_bind` answers
//!   `GET /.well-known/acme-challenge/TOKEN` with the key authorization.
//! * `tls-alpn` (tls-alpn-01, RFC 8737; gobetween's old name `sni`): the CA
//!   opens a TLS connection to port 443 of the name offering only the ALPN
//!   protocol `acme-tls/1`. The `acme_hosts` listener itself answers it: the
//!   listener reads the ClientHello first ([`tls_alpn_challenge`], called from
//!   `tls::accept_with_timeout`), and when it offers `acme-tls/1` for a name with
//!   a challenge in progress, the handshake is completed with a self-signed
//!   certificate for that name carrying the `acmeIdentifier` extension (the
//!   SHA-256 of the key authorization), and the connection is closed. Every other
//!   handshake goes on with the listener's own configuration, untouched. So no
//!   second port is needed, but the listener must be what the CA reaches on 443.
//!
//! # High availability
//!
//! Only the node holding the VIP orders and answers challenges, since the CA
//! reaches the name, i.e. the VIP. The manager follows whether this node is
//! master (a `watch` the daemon derives from the failover status): a backup
//! does not order; it serves what is in its cache. Two ways for
//! both nodes to have the certificate:
//!
//! * a shared `cache_dir` (NFS, a replicated directory): whoever is master
//!   renews, the other reads the same files at its next start/takeover;
//! * separate caches: after a takeover the new master has no (or an old)
//!   certificate and orders one; meanwhile it serves its cached one, if any.
//!
//! A takeover in the middle of an order: the old master's order is abandoned
//! (its challenges become unreachable and the CA marks that order invalid); the
//! new master places its own. Orders are cheap; only the CA's rate limits count.
//! Without `floating_ip`, a node always orders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::config::acme::{AcmeChallenge, AcmeConfig};

/// First retry delay after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What can go wrong for one host; each is logged with the host and retried.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME server: {0}")]
    Protocol(#[from] instant_acme::Error),
    #[error("order for {host} ended {status}")]
    Order { host: String, status: String },
    #[error("no {kind} challenge offered for {host}")]
    NoChallenge { kind: &'static str, host: String },
    #[error("cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate from the CA: {0}")]
    Certificate(String),
    #[error(
        "ACME is not running: the acme: section was not in the configuration the daemon started with; restart it to use acme_hosts"
    )]
    NotConfigured,
}

/// One host's current certificate.
type Slot = Arc<ArcSwapOption<CertifiedKey>>;

/// The process's ACME state: configuration, failover status, certificates.
pub struct Manager {
    cfg: AcmeConfig,
    /// Whether this node holds the VIP; `None` without failover.
    holds_vip: Option<watch::Receiver<bool>>,
    slots: Mutex<HashMap<String, Slot>>,
    /// http-01: token → key authorization.
    tokens: Arc<Mutex<HashMap<String, String>>>,
    /// tls-alpn-01: host → challenge certificate, while its challenge is pending.
    alpn_certs: Arc<Mutex<HashMap<String, Arc<CertifiedKey>>>>,
    /// tls-alpn-01: the handshake configuration that serves `alpn_certs`.
    alpn_config: Arc<rustls::ServerConfig>,
    account: tokio::sync::Mutex<Option<Account>>,
}

static MANAGER: OnceLock<Arc<Manager>> = OnceLock::new();

/// Install the manager (once, at start, inside the runtime) and start the
/// http-01 responder. `holds_vip` says whether this node is the failover
/// master (holds the VIP), `None` without failover; the daemon derives it from
/// the failover status.
pub fn install(cfg: AcmeConfig, holds_vip: Option<watch::Receiver<bool>>) {
    let alpn_certs = Arc::new(Mutex::new(HashMap::new()));
    let mut alpn_config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ChallengeResolver(alpn_certs.clone())));
    alpn_config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    let m = Arc::new(Manager {
        cfg,
        holds_vip,
        slots: Mutex::new(HashMap::new()),
        tokens: Arc::new(Mutex::new(HashMap::new())),
        alpn_certs,
        alpn_config: Arc::new(alpn_config),
        account: tokio::sync::Mutex::new(None),
    });
    if MANAGER.set(m.clone()).is_ok() && m.cfg.challenge == AcmeChallenge::Http {
        tokio::spawn(http01_responder(m.cfg.http_bind, m.tokens.clone()));
    }
}

/// After a reload: ACME keeps the settings it started with (its account, cache
/// and challenge responder live as long as the process), so a changed `acme:`
/// section is reported as needing a restart. New `acme_hosts` are ordered with
/// the running settings.
pub fn reloaded(new: Option<&AcmeConfig>) {
    let running = MANAGER.get().map(|m| &m.cfg);
    if running != new {
        tracing::warn!(
            "acme: changed in the configuration: ACME keeps the settings it started with until the next restart"
        );
    }
}

/// The resolver for a listener's `acme_hosts`: cached certificates now, orders
/// and renewals in the background.
pub fn resolver(hosts: &[String]) -> Result<Arc<AcmeResolver>, AcmeError> {
    let m = MANAGER.get().ok_or(AcmeError::NotConfigured)?;
    let mut slots = Vec::new();
    for host in hosts {
        let host = host.to_ascii_lowercase();
        let (slot, new) = {
            let mut map = m.slots.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&host) {
                Some(s) => (s.clone(), false),
                None => {
                    let s: Slot = Arc::new(ArcSwapOption::empty());
                    map.insert(host.clone(), s.clone());
                    (s, true)
                }
            }
        };
        if new {
            match load_cached(&m.cfg.cache_dir, &host) {
                Ok(Some(ck)) => {
                    tracing::info!(host, "ACME: serving the cached certificate");
                    slot.store(Some(Arc::new(ck)));
                }
                Ok(None) => tracing::info!(
                    host,
                    "ACME: no certificate yet; handshakes for this name fail until the order completes"
                ),
                Err(e) => tracing::warn!(host, "ACME: cached certificate unusable: {e}"),
            }
            tokio::spawn(maintain(m.clone(), host.clone(), slot.clone()));
        }
        slots.push((host, slot));
    }
    Ok(Arc::new(AcmeResolver { slots }))
}

/// Chooses the certificate by SNI among a listener's `acme_hosts`.
#[derive(Debug)]
pub struct AcmeResolver {
    slots: Vec<(String, Slot)>,
}

impl ResolvesServerCert for AcmeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let slot = match hello.server_name() {
            Some(sni) => self
                .slots
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(sni))
                .or(self.slots.first()),
            None => self.slots.first(),
        }?;
        slot.1.load_full()
    }
}

/// The ALPN protocol of tls-alpn-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// For a ClientHello that offers `acme-tls/1` for a name whose tls-alpn-01
/// challenge is pending: the configuration that answers it with the challenge
/// certificate. `None` for every other handshake (and without tls-alpn).
pub fn tls_alpn_challenge(hello: &ClientHello<'_>) -> Option<Arc<rustls::ServerConfig>> {
    let m = MANAGER.get()?;
    if !matches!(m.cfg.challenge, AcmeChallenge::TlsAlpn { .. }) {
        return None;
    }
    let offered = hello.alpn()?.any(|p| p == ACME_TLS_ALPN);
    let sni = hello.server_name()?.to_ascii_lowercase();
    let pending = m
        .alpn_certs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&sni);
    (offered && pending).then(|| m.alpn_config.clone())
}

/// Whether listeners must look at the ClientHello before choosing their
/// configuration (a tls-alpn-01 manager is installed).
pub fn tls_alpn_enabled() -> bool {
    MANAGER
        .get()
        .is_some_and(|m| matches!(m.cfg.challenge, AcmeChallenge::TlsAlpn { .. }))
}

/// Serves the pending tls-alpn-01 challenge certificate of the SNI name.
#[derive(Debug)]
struct ChallengeResolver(Arc<Mutex<HashMap<String, Arc<CertifiedKey>>>>);

impl ResolvesServerCert for ChallengeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?.to_ascii_lowercase();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sni)
            .cloned()
    }
}

/// The tls-alpn-01 certificate for `host`: self-signed, the name as its only
/// SAN, and the critical `acmeIdentifier` extension holding `digest` (SHA-256 of
/// the key authorization).
fn challenge_certificate(host: &str, digest: &[u8]) -> Result<CertifiedKey, AcmeError> {
    let bad = |e: rcgen::Error| AcmeError::Certificate(format!("tls-alpn-01 certificate: {e}"));
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()]).map_err(bad)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(bad)?;
    let cert = params.self_signed(&key).map_err(bad)?;
    let key_der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    // Not `CertifiedKey::from_der`: its key/certificate consistency check parses
    // the certificate with webpki, which refuses the critical acmeIdentifier
    // extension; the key was generated for this very certificate.
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing_key))
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn cache_paths(dir: &Path, host: &str) -> (PathBuf, PathBuf) {
    let d = dir.join(host);
    (d.join("cert.pem"), d.join("key.pem"))
}

fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, AcmeError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| AcmeError::Certificate(e.to_string()))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| AcmeError::Certificate(e.to_string()))
}

fn load_cached(dir: &Path, host: &str) -> Result<Option<CertifiedKey>, AcmeError> {
    let (c, k) = cache_paths(dir, host);
    if !c.exists() || !k.exists() {
        return Ok(None);
    }
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| AcmeError::Cache {
            path: p.to_path_buf(),
            source,
        })
    };
    certified_key(&read(&c)?, &read(&k)?).map(Some)
}

/// Write `data` to `path` through a temporary file and a rename, readable by
/// the owner only (keys and the account's credentials are secrets).
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), AcmeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| AcmeError::Cache {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// When to renew the served certificate (`None`: no certificate, order now):
/// `renew_before` its expiry, but never before two thirds of its lifetime, so
/// that short-lived certificates (shorter than `renew_before`) are not
/// re-ordered in a loop.
fn renewal_time(ck: &CertifiedKey, renew_before: Duration) -> Option<SystemTime> {
    let leaf = ck.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    let (start, end) = (
        at(cert.validity().not_before.timestamp()),
        at(cert.validity().not_after.timestamp()),
    );
    let lifetime = end.duration_since(start).unwrap_or_default();
    let by_config = end.checked_sub(renew_before).unwrap_or(start);
    Some(by_config.max(start + lifetime * 2 / 3))
}

/// Keep `host`'s certificate fresh: order when missing or due, retry with
/// backoff on failure, only while this node holds the VIP.
async fn maintain(m: Arc<Manager>, host: String, slot: Slot) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let due = slot
            .load()
            .as_ref()
            .and_then(|ck| renewal_time(ck, m.cfg.renew_before.0));
        if let Some(due) = due
            && let Ok(wait) = due.duration_since(SystemTime::now())
        {
            tracing::info!(host, "ACME: next renewal in {}s", wait.as_secs());
            tokio::time::sleep(wait).await;
        }
        m.wait_for_vip(&host).await;
        match m.order(&host).await {
            Ok((chain, key)) => {
                let ck = match certified_key(chain.as_bytes(), key.as_bytes()) {
                    Ok(ck) => ck,
                    Err(e) => {
                        tracing::warn!(host, "ACME: {e}; retry in {}s", backoff.as_secs());
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                };
                slot.store(Some(Arc::new(ck)));
                backoff = FIRST_BACKOFF;
                tracing::info!(host, "ACME: certificate obtained and served");
                let (c, k) = cache_paths(&m.cfg.cache_dir, &host);
                if let Err(e) = write_atomic(&k, key.as_bytes())
                    .and_then(|()| write_atomic(&c, chain.as_bytes()))
                {
                    // Served from memory; a restart would have to order again.
                    tracing::warn!(host, "ACME: certificate not cached: {e}");
                }
            }
            Err(e) => {
                tracing::warn!(
                    host,
                    "ACME: order failed: {e}; keeping the current certificate, retry in {}s",
                    backoff.as_secs()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

impl Manager {
    /// Return once this node holds the VIP (at once without failover).
    async fn wait_for_vip(&self, host: &str) {
        let Some(mut rx) = self.holds_vip.clone() else {
            return;
        };
        let mut logged = false;
        loop {
            if *rx.borrow_and_update() {
                return;
            }
            if !logged {
                tracing::info!(host, "ACME: not ordering on a backup; waiting for the VIP");
                logged = true;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The account, created on first use and kept in `cache_dir/account.json`.
    async fn account(&self) -> Result<Account, AcmeError> {
        let mut guard = self.account.lock().await;
        if let Some(a) = guard.as_ref() {
            return Ok(a.clone());
        }
        let builder = || match &self.cfg.directory_ca {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        let path = self.cfg.cache_dir.join("account.json");
        let cached: Option<AccountCredentials> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let account = match cached {
            Some(creds) => builder()?.from_credentials(creds).await?,
            None => {
                let contact = self.cfg.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, creds) = builder()?
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.cfg.directory.clone(),
                        None,
                    )
                    .await?;
                if let Ok(json) = serde_json::to_vec(&creds)
                    && let Err(e) = write_atomic(&path, &json)
                {
                    tracing::warn!("ACME: account not cached: {e}");
                }
                account
            }
        };
        *guard = Some(account.clone());
        Ok(account)
    }

    /// One order for `host` with the configured challenge; returns (chain PEM,
    /// key PEM).
    async fn order(&self, host: &str) -> Result<(String, String), AcmeError> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(host.to_string())];
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let mut tokens = Vec::new();
        let mut alpn_pending = false;
        let mut auths = order.authorizations();
        while let Some(a) = auths.next().await {
            let mut a = a?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Order {
                        host: host.to_string(),
                        status: format!("with authorization {other:?}"),
                    });
                }
            }
            let (kind, label) = match self.cfg.challenge {
                AcmeChallenge::Http => (ChallengeType::Http01, "http-01"),
                AcmeChallenge::TlsAlpn { .. } => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
            };
            let mut ch = a.challenge(kind).ok_or_else(|| AcmeError::NoChallenge {
                kind: label,
                host: host.to_string(),
            })?;
            match self.cfg.challenge {
                AcmeChallenge::Http => {
                    let token = ch.token.clone();
                    let key_auth = ch.key_authorization().as_str().to_string();
                    self.tokens
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(token.clone(), key_auth);
                    tokens.push(token);
                }
                AcmeChallenge::TlsAlpn { .. } => {
                    let digest = ch.key_authorization().digest();
                    let cert = challenge_certificate(host, digest.as_ref())?;
                    self.alpn_certs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(host.to_string(), Arc::new(cert));
                    alpn_pending = true;
                }
            }
            ch.set_ready().await?;
        }
        let result = async {
            let status = order.poll_ready(&RetryPolicy::default()).await?;
            if status != OrderStatus::Ready {
                return Err(AcmeError::Order {
                    host: host.to_string(),
                    status: format!("{status:?}"),
                });
            }
            let key = order.finalize().await?;
            let chain = order.poll_certificate(&RetryPolicy::default()).await?;
            Ok((chain, key))
        }
        .await;
        let mut map = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        for t in tokens {
            map.remove(&t);
        }
        if alpn_pending {
            self.alpn_certs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(host);
        }
        result
    }
}

/// The http-01 responder: `GET /.well-known/acme-challenge/TOKEN` → the key
/// authorization. A bind failure (port in use) is logged and retried.
async fn http01_responder(bind: std::net::SocketAddr, tokens: Arc<Mutex<HashMap<String, String>>>) {
    let mut backoff = FIRST_BACKOFF;
    let listener = loop {
        match tokio::net::TcpListener::bind(bind).await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(
                    "ACME: http-01 responder cannot listen on {bind}: {e}; retry in {}s",
                    backoff.as_secs()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let tokens = tokens.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            let read = async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        return Some(());
                    }
                }
                None
            };
            if tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let answer = path
                .strip_prefix("/.well-known/acme-challenge/")
                .and_then(|t| tokens.lock().ok()?.get(t).cloned());
            let resp = match answer {
                Some(body) => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string(),
            };
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
