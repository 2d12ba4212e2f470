//! What the pebble tests (tests/acme_pebble.rs on loopback, tests/acme_ha.rs in
//! a namespace lab) share: pebble's own HTTPS certificate.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

/// Write `pebble.crt`/`pebble.key` (for `localhost` and `ip`) and the CA that
/// signed them, `pebble-ca.pem`, into `dir`; returns the CA's PEM. A throwaway CA
/// signs the leaf because rustls refuses a self-signed certificate as a server's.
/// The gateway trusts the CA through `acme: {directory_ca: .../pebble-ca.pem}`.
pub fn write_pebble_tls(dir: &Path, ip: IpAddr) -> String {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (curl) takes a leaf whose issuer equals its subject
    // (rcgen's default name for both) for a self-signed certificate.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gateway test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "pebble");
    leaf.subject_alt_names.push(SanType::IpAddress(ip));
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("pebble.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("pebble.key"), key.serialize_pem()).unwrap();
    let ca_pem = ca.pem();
    std::fs::write(dir.join("pebble-ca.pem"), &ca_pem).unwrap();
    ca_pem
}

/// pebble-challtestsrv's arguments: DNS on `dns`, every A query answered with
/// `answer` (no AAAA), management on `mgmt`, and none of its own challenge
/// servers (they would take 5001/5002/5003).
pub fn challtestsrv_args(dns: &str, answer: &str, mgmt: &str) -> Vec<String> {
    [
        "-dns01",
        dns,
        "-http01",
        "",
        "-tlsalpn01",
        "",
        "-https01",
        "",
        "-defaultIPv6",
        "",
        "-defaultIPv4",
        answer,
        "-management",
        mgmt,
    ]
    .map(String::from)
    .to_vec()
}
