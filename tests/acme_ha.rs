//! The HA rule of ACME, in a namespace lab (tests/common/lab.rs): only the node
//! that holds the VIP orders certificates and answers challenges.
//!
//! pebble and its DNS (every name → the VIP) run in the lab's backend host; both
//! gateway nodes have the same `acme_hosts` listener on `:8443`, separate
//! `cache_dir`s, and an http-01 responder on `:5002` (pebble's `httpPort`), so the
//! CA's validation reaches whichever node holds the VIP. n1 (higher priority)
//! orders; n2, the backup, logs that it waits for the VIP and places no order.
//! When n1 dies, n2 takes the VIP and orders; the client then completes a
//! verified handshake through the VIP with n2's certificate.

#![cfg(target_os = "linux")]

mod common;
mod pebble_support;

use std::time::Duration;

use common::lab::{Host, Lab, poll};

const SERVICE_PORT: u16 = 8443;
const HTTP01_PORT: u16 = 5002;
const ACME_PORT: u16 = 14000;
const MGMT_PORT: u16 = 15000;
const DNS_PORT: u16 = 8053;
const HOST: &str = "ha.test";
const ELECTION: Duration = Duration::from_secs(15);
const ORDER: Duration = Duration::from_secs(60);

const OBTAINED: &str = "ACME: certificate obtained and served";
const WAITING: &str = "ACME: not ordering on a backup; waiting for the VIP";

/// A verified TLS handshake from the client to the VIP for [`HOST`] with
/// `openssl s_client`, trusting pebble's root in `root`.
fn client_verifies(lab: &Lab, root: &std::path::Path) -> bool {
    let out = lab.exec(
        Host::Client,
        &[
            "openssl",
            "s_client",
            "-connect",
            &format!("{}:{SERVICE_PORT}", lab.default_vip()),
            "-servername",
            HOST,
            "-CAfile",
            &root.display().to_string(),
            "-verify_return_error",
        ],
    );
    out.status.success()
}

#[test]
fn only_the_vip_holder_orders_and_the_new_master_orders_after_takeover() {
    let lab = Lab::new("acme-ha");
    let vip = lab.default_vip();
    let ca_ip = lab.ip(Host::Backend);
    let dir = tempfile::tempdir().unwrap();
    pebble_support::write_pebble_tls(dir.path(), ca_ip.into());
    let ca = dir.path().join("pebble-ca.pem");

    let mut dns_argv = vec!["pebble-challtestsrv".to_string()];
    dns_argv.extend(pebble_support::challtestsrv_args(
        &format!("{ca_ip}:{DNS_PORT}"),
        &vip.to_string(),
        &format!("{ca_ip}:8055"),
    ));
    let dns_argv: Vec<&str> = dns_argv.iter().map(String::as_str).collect();
    let _dns = lab.spawn(Host::Backend, &dns_argv);
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("{ca_ip}:{ACME_PORT}"),
        "managementListenAddress": format!("{ca_ip}:{MGMT_PORT}"),
        "certificate": dir.path().join("pebble.crt"),
        "privateKey": dir.path().join("pebble.key"),
        "httpPort": HTTP01_PORT,
        "tlsPort": SERVICE_PORT,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    let pebble_json = dir.path().join("pebble.json");
    std::fs::write(&pebble_json, config.to_string()).unwrap();
    // Through a shell so that pebble's output lands in a file for the report.
    let pebble_log = dir.path().join("pebble.log");
    let _pebble = lab.spawn(
        Host::Backend,
        &[
            "sh",
            "-c",
            &format!(
                "PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 exec pebble -config {} -dnsserver {ca_ip}:{DNS_PORT} >{} 2>&1",
                pebble_json.display(),
                pebble_log.display()
            ),
        ],
    );
    // pebble's root, fetched by the client from the management interface.
    let root = dir.path().join("pebble-root.pem");
    let mut curl_said = String::new();
    let fetched = poll(Duration::from_secs(20), || {
        let out = lab.exec(
            Host::Client,
            &[
                "curl",
                "-sSf",
                "--cacert",
                &ca.display().to_string(),
                &format!("https://{ca_ip}:{MGMT_PORT}/roots/0"),
            ],
        );
        curl_said = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
    })
    .unwrap_or_else(|| {
        panic!(
            "pebble's management interface does not answer ({curl_said}); pebble said:\n{}",
            std::fs::read_to_string(&pebble_log).unwrap_or_default()
        )
    });
    std::fs::write(&root, fetched).unwrap();

    let node_config = |host: Host, priority: u8| {
        format!(
            "{fip}acme:\n  http_bind: 0.0.0.0:{HTTP01_PORT}\n  cache_dir: {cache}\n  directory: https://{ca_ip}:{ACME_PORT}/dir\n  directory_ca: {ca}\n\
             services:\n- name: site\n  addr: \":{SERVICE_PORT}\"\n  listener: {{type: tls, tls: {{acme_hosts: [{HOST}]}}}}\n  handler: {{type: tcp}}\n  forwarder: {{nodes: [{{addr: \"{backend}\"}}]}}\n",
            fip = lab.floating_ip_yaml(host, priority, &[]),
            cache = dir.path().join(format!("cache-{host}")).display(),
            ca = ca.display(),
            backend = lab.backend_addr(),
        )
    };
    let g1 = lab.spawn_gateway(Host::N1, &node_config(Host::N1, 200));
    assert!(lab.wait_holder(vip, Host::N1, ELECTION), "n1 takes the VIP");
    let g2 = lab.spawn_gateway(Host::N2, &node_config(Host::N2, 100));

    assert!(
        g1.wait_log(OBTAINED, ORDER),
        "n1 (master) orders:\n{}",
        g1.log()
    );
    assert!(
        g2.wait_log(WAITING, ELECTION),
        "n2 (backup) waits:\n{}",
        g2.log()
    );
    assert!(
        poll(ELECTION, || client_verifies(&lab, &root).then_some(())).is_some(),
        "the client verifies n1's certificate through the VIP"
    );
    assert!(
        !g2.log().contains(OBTAINED),
        "the backup ordered:\n{}",
        g2.log()
    );
    assert!(
        !dir.path().join("cache-n2").join(HOST).exists(),
        "the backup cached a certificate"
    );

    // n1 dies: n2 takes the VIP, orders, and serves its own certificate.
    lab.kill_node(Host::N1);
    drop(g1);
    assert!(lab.wait_holder(vip, Host::N2, ELECTION), "n2 takes the VIP");
    assert!(
        g2.wait_log(OBTAINED, ORDER),
        "n2 orders after the takeover:\n{}",
        g2.log()
    );
    let log = g2.log();
    assert!(
        log.find(WAITING) < log.find(OBTAINED),
        "n2 waited before it ordered:\n{log}"
    );
    assert!(
        poll(ELECTION, || client_verifies(&lab, &root).then_some(())).is_some(),
        "the client verifies n2's certificate through the VIP"
    );
    assert!(
        dir.path()
            .join("cache-n2")
            .join(HOST)
            .join("cert.pem")
            .exists()
    );
}
