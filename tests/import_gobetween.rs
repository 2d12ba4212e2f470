//! `gateway import gobetween FILE`: the seed's gobetween examples and a file
//! using every mapped option are translated, the output passes `gateway -test`,
//! what cannot be mapped is listed with its line, and the exit code says
//! whether the translation is complete. A `.toml` given to `-config` gets a
//! pointer to the importer.

use std::path::{Path, PathBuf};
use std::process::Command;

use gateway::config::Config;
use gateway::config::acme::AcmeChallenge;
use gateway::config::service::{
    DiscoveryKind, HealthcheckKind, ListenerType, ProxyProtocolVersion, Strategy,
};

fn input(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs/gobetween")
        .join(name)
}

/// Run the binary; (exit code, stdout, stderr).
fn gateway(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .output()
        .expect("gateway runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The TOML files name placeholder certificate paths (`/etc/gw/web.crt`), and
/// `-test` opens and parses every file a config names: point them at the test
/// PKI (tests/configs/files) so the rest of the translation is what is tested.
fn with_real_files(yaml: &str) -> String {
    let files = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs/files");
    let mut out = String::new();
    for line in yaml.lines() {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let key = [
            ("certFile: ", "cert.pem"),
            ("keyFile: ", "key.pem"),
            ("caFile: ", "cert.pem"),
        ]
        .into_iter()
        .find(|(k, _)| body.starts_with(k));
        match key {
            Some((k, f)) => out += &format!("{indent}{k}{}\n", files.join(f).display()),
            None => out += &format!("{line}\n"),
        }
    }
    out
}

/// Import `name`, check the exit code, and run `-test` on the output.
fn import_and_check(name: &str, expect_code: i32) -> (String, String) {
    let path = input(name);
    let (code, yaml, err) = gateway(&["import", "gobetween", path.to_str().unwrap()]);
    assert_eq!(code, expect_code, "{name}: {err}\n{yaml}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gateway.yml");
    std::fs::write(&out, with_real_files(&yaml)).unwrap();
    let (code, stdout, test_err) = gateway(&["-test", "-config", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{name}: -test failed: {test_err}\n{yaml}");
    assert!(stdout.contains("test is successful"), "{stdout}");
    (yaml, err)
}

fn parse(yaml: &str) -> Config {
    Config::from_str_named(yaml, Path::new("imported.yml")).expect("valid gateway.yml")
}

#[test]
fn seed_examples_translate_and_pass_test() {
    let (yaml, err) = import_and_check("seed_tcp.toml", 0);
    assert!(!err.contains("not translated"), "{err}");
    let c = parse(&yaml);
    let s = &c.services[0];
    assert_eq!(
        (s.name.as_str(), s.addr.text.as_str()),
        ("default", ":3000")
    );
    let f = s.forwarder.as_ref().unwrap();
    // gobetween's default balance is weight, not our round robin.
    assert_eq!(f.selector.strategy, Strategy::Weight);
    assert_eq!(
        (f.nodes[0].addr.as_str(), f.nodes[0].weight),
        ("localhost:8000", 5)
    );
    assert_eq!(f.nodes[1].priority, 2);

    let (yaml, _) = import_and_check("seed_udp.toml", 0);
    let s = &parse(&yaml).services[0];
    assert_eq!(s.listener.kind, ListenerType::Udp);
    assert_eq!(s.handler.kind.name(), "udp");
    assert!(s.udp.is_some());

    // The TLS + ACME example: everything is carried over.
    let (yaml, err) = import_and_check("seed_tls_acme.toml", 0);
    assert!(!err.contains("not translated"), "{err}");
    let c = parse(&yaml);
    let acme = c.acme.as_ref().expect("acme section");
    assert_eq!(acme.challenge, AcmeChallenge::Http);
    assert_eq!(acme.http_bind.to_string(), "0.0.0.0:80");
    assert_eq!(acme.cache_dir, Path::new("/tmp"));
    let s = &c.services[0];
    assert_eq!(s.listener.kind, ListenerType::Tls);
    let tls = s.listener.tls.as_ref().unwrap();
    assert_eq!(
        tls.cert_file.as_deref(),
        Some(Path::new("/path/to/file.crt"))
    );
    assert_eq!(tls.min_version.as_deref(), Some("tls1"));
    assert_eq!(tls.max_version.as_deref(), Some("tls1.2"));
    assert_eq!(tls.session_tickets, Some(true));
    assert!(!tls.prefer_server_ciphers);
}

#[test]
fn every_mapped_option_lands_in_place() {
    let (yaml, err) = import_and_check("every_option.toml", 0);
    assert!(!err.contains("not translated"), "{err}");
    let c = parse(&yaml);
    let [web, api, dns, site] = &c.services[..] else {
        panic!("four services: {yaml}")
    };
    assert_eq!(
        c.acme.as_ref().unwrap().http_bind.to_string(),
        "0.0.0.0:8080"
    );
    let st = site.listener.tls.as_ref().unwrap();
    assert_eq!(st.acme_hosts, ["www.example.com", "example.com"]);
    assert!(st.cert_file.is_none());

    assert_eq!(web.addr.text, "127.0.0.1:8443"); // localhost → an address to bind
    assert_eq!(web.max_connections, 500); // the server's own value over [defaults]
    assert_eq!(api.max_connections, 100); // [defaults]
    assert_eq!(
        web.client_idle_timeout.get(),
        Some(std::time::Duration::from_secs(600))
    );
    assert_eq!(web.access.as_ref().unwrap().rules.len(), 2);
    let tls = web.listener.tls.as_ref().unwrap();
    assert_eq!(tls.ciphers.len(), 2);
    assert!(tls.prefer_server_ciphers);
    assert_eq!(tls.session_tickets, Some(true));
    assert_eq!(tls.max_version.as_deref(), Some("tls1.3"));
    let wf = web.forwarder.as_ref().unwrap();
    assert_eq!(wf.selector.strategy, Strategy::Leastconn);
    let btls = wf.tls.as_ref().unwrap();
    assert!(btls.secure, "ignore_verify = false verifies");
    assert_eq!(
        btls.ca_file.as_deref(),
        Some(Path::new("/etc/gw/backend-ca.pem"))
    );
    assert_eq!(
        btls.key_file.as_deref(),
        Some(Path::new("/etc/gw/client.key"))
    );
    assert_eq!(btls.ciphers, ["TLS_AES_128_GCM_SHA256"]);
    let hc = wf.healthcheck.as_ref().unwrap();
    assert_eq!(hc.kind, HealthcheckKind::Probe);
    assert_eq!(
        (&hc.probe_send.0[..], hc.probe_recv_len),
        (&b"PING\n"[..], 4)
    );
    assert_eq!((hc.fails, hc.passes), (2, 2));
    assert_eq!(wf.nodes.len(), 2);

    let af = api.forwarder.as_ref().unwrap();
    assert_eq!(af.selector.strategy, Strategy::Iphash1);
    let d = af.discovery.as_ref().unwrap();
    assert_eq!(d.kind, DiscoveryKind::Srv);
    assert_eq!(
        d.srv_lookup_pattern.as_deref(),
        Some("_api._tcp.service.consul")
    );
    assert_eq!(
        api.proxy_protocol.as_ref().unwrap().version,
        ProxyProtocolVersion::V2
    );

    let df = dns.forwarder.as_ref().unwrap();
    assert_eq!(df.discovery.as_ref().unwrap().kind, DiscoveryKind::Exec);
    assert_eq!(df.discovery.as_ref().unwrap().exec_command.len(), 2);
    assert_eq!(df.healthcheck.as_ref().unwrap().kind, HealthcheckKind::Exec);
    assert_eq!(dns.udp.as_ref().unwrap().max_requests, 1);
}

#[test]
fn unmappable_items_are_listed_with_lines_and_exit_5() {
    let path = input("unmappable.toml");
    let (code, yaml, err) = gateway(&["import", "gobetween", path.to_str().unwrap()]);
    assert_eq!(code, 5, "{err}");
    assert!(yaml.contains("# Incomplete: 7 option(s)"), "{yaml}");
    for expected in [
        "line 2: logging:",
        "line 5: api:",
        "line 11: servers.a.balance: \"iphash2\" is not offered",
        "line 13: servers.a.sni:",
        "line 17: servers.a.discovery.kind: json discovery",
        "line 24: servers.b.discovery.kind: \"docker\"",
        "line 28: acme.challenge: \"dns\": only the http and tls-alpn (sni) challenges",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(
        err.contains("translation incomplete (7 option(s) above)"),
        "{err}"
    );
}

#[test]
fn bad_toml_and_missing_file_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[servers.a]\nbind = \n").unwrap();
    let (code, out, err) = gateway(&["import", "gobetween", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(err.contains("line 2: not valid TOML"), "{err}");
    let (code, _, err) = gateway(&["import", "gobetween", "/nonexistent/g.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn config_flag_on_a_gobetween_file_points_at_import() {
    let path = input("seed_tcp.toml");
    let p = path.to_str().unwrap();
    let (code, _, err) = gateway(&["-test", "-config", p]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "this looks like a gobetween TOML config: run `gateway import gobetween {p}`"
        )),
        "{err}"
    );
    assert!(!err.contains("invalid type"), "{err}");
}
