//! The status page in a real browser, on a running two-node lab (issue 10):
//! both nodes run the real binary with the API on their LAN address; a planned
//! switchover is asked through `POST /failover/standby`; then Debian's
//! `chromium --headless` loads each node's page from the client's namespace and
//! the rendered DOM must name the new holder, the peer, the service and the
//! transition. A screenshot is saved to `target/status-page.png` for a person to
//! look at. Needs root, `chromium` (scripts/ci-deps.sh).
#![cfg(target_os = "linux")]

mod api_support;
mod common;

use std::time::Duration;

use common::lab::{Host, Lab};

const API_PORT: u16 = 18080;
const AUTH: Option<&str> = Some("op:pw");

fn node_config(lab: &Lab, host: Host, priority: u8) -> String {
    format!(
        "{}{}api:\n  addr: \"{}:{API_PORT}\"\n  auth: {{username: op, password: pw}}\n",
        lab.floating_ip_yaml(host, priority, &[]),
        lab.forward_service_yaml(),
        lab.ip(host)
    )
}

/// One API request from the client's namespace.
fn api(lab: &Lab, host: Host, method: &'static str, path: &'static str) -> api_support::Resp {
    let ip = lab.ip(host);
    lab.in_netns(Host::Client, move || {
        // The request helper talks to 127.0.0.1; reach the node's address instead.
        api_support::request_to(ip.into(), API_PORT, method, path, AUTH, b"")
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("{method} {path} on {host}: {e}"))
}

/// Chromium, headless, in the client's namespace: the DOM after scripts ran.
fn chromium(lab: &Lab, args: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let home = format!("HOME={}", profile.path().display());
    let data = format!("--user-data-dir={}", profile.path().display());
    let mut argv = vec![
        "env",
        &home,
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        &data,
        // Let the page's fetch of ./status and its first refresh run before the dump.
        "--virtual-time-budget=4000",
    ];
    argv.extend_from_slice(args);
    argv.push(url);
    let out = lab.exec(Host::Client, &argv);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in a dumped DOM.
fn text_of(dom: &str, id: &str) -> String {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest[open..].find('<').unwrap();
    rest[open..open + close].to_string()
}

/// The rendered `#controls` block (the script holds the same markup as text).
fn controls(dom: &str) -> String {
    let start =
        (dom.find("<div id=\"controls\"")).unwrap_or_else(|| panic!("no #controls in:\n{dom}"));
    let end = dom[start..].find("</div>").unwrap();
    dom[start..start + end].to_string()
}

#[test]
fn status_page_shows_holder_peer_and_services_after_a_switchover() {
    let lab = Lab::new("status_page");
    let vip = lab.default_vip();
    let _n1 = lab.spawn_gateway(Host::N1, &node_config(&lab, Host::N1, 150));
    let _n2 = lab.spawn_gateway(Host::N2, &node_config(&lab, Host::N2, 100));
    lab.expect_holders(
        vip,
        &[Host::N1],
        Duration::from_secs(15),
        "n1 (priority 150) elected",
    );
    assert!(
        lab.wait_client_reaches(vip, 8080, Duration::from_secs(10))
            .is_ok(),
        "the service does not answer on the VIP"
    );
    // Both nodes hear each other before the switchover is asked.
    assert!(
        common::lab::poll(Duration::from_secs(10), || {
            let f = api(&lab, Host::N1, "GET", "/failover").json();
            (f["data"]["peers"][0]["state"] == "BACKUP").then_some(())
        })
        .is_some()
    );

    // The planned switchover through the API: n1 hands the VIP to n2.
    let r = api(&lab, Host::N1, "POST", "/failover/standby");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["standby"], true);
    lab.expect_holders(vip, &[Host::N2], Duration::from_secs(10), "n2 took the VIP");
    // n1 stays out while in standby, although it has the higher priority.
    lab.expect_holders_stay(
        vip,
        &[Host::N2],
        Duration::from_secs(3),
        "n1 stays in standby",
    );

    // n2's page: n2 holds the VIP, n1 is its peer, the service and its backend.
    let n1 = lab.ip(Host::N1).to_string();
    let n2 = lab.ip(Host::N2).to_string();
    let url2 = format!("http://{n2}:{API_PORT}/");
    let dom = chromium(&lab, &["--dump-dom"], &url2);
    assert_eq!(text_of(&dom, "vip-holder"), n2, "{dom}");
    assert!(dom.contains("(this node) since"), "{dom}");
    assert!(
        dom.contains(&format!("<td>{n1}</td><td>peer</td>")),
        "{dom}"
    );
    // n1 in standby is not failing: the API and the page say STANDBY, not FAULT
    // (it announces FAULT on the wire, with the standby flag).
    let peer = &api(&lab, Host::N2, "GET", "/failover").json()["data"]["peers"][0];
    assert_eq!(
        (
            peer["node"].as_str(),
            peer["state"].as_str(),
            &peer["standby"]
        ),
        (
            Some(n1.as_str()),
            Some("STANDBY"),
            &serde_json::Value::Bool(true)
        ),
        "{peer}"
    );
    assert!(
        dom.contains(&format!(
            "<td>{n1}</td><td>peer</td><td><span class=\"pill STANDBY\">STANDBY</span>"
        )),
        "n1 in standby must show as STANDBY on n2's page:\n{dom}"
    );
    assert!(!dom.contains("pill FAULT"), "{dom}");
    assert!(dom.contains("<td>fwd</td>"), "{dom}");
    assert!(dom.contains("b1"), "{dom}");
    assert!(dom.contains("MASTER"), "{dom}");
    // Not logged in: no controls, a link to log in.
    let logged_out = controls(&dom);
    assert!(!logged_out.contains("<button"), "{logged_out}");
    assert!(logged_out.contains("log in"), "{logged_out}");

    // n1's page: the peer holds the VIP, the standby is in the history.
    let dom1 = chromium(&lab, &["--dump-dom"], &format!("http://{n1}:{API_PORT}/"));
    assert_eq!(text_of(&dom1, "vip-holder"), n2, "{dom1}");
    assert!(dom1.contains("(the peer)"), "{dom1}");
    assert!(dom1.contains("standby on"), "{dom1}");
    assert!(
        dom1.contains("<td>this node</td><td><span class=\"pill STANDBY\">STANDBY</span>"),
        "{dom1}"
    );

    // Logged in (credentials in the URL): the standby/active buttons appear.
    let dom_auth = chromium(
        &lab,
        &["--dump-dom"],
        &format!("http://op:pw@{n1}:{API_PORT}/login"),
    );
    let logged_in = controls(&dom_auth);
    assert!(logged_in.contains("<button id=\"standby\">"), "{dom_auth}");

    // A screenshot of the holder's page, for a person.
    let shot = concat!(env!("CARGO_MANIFEST_DIR"), "/target/status-page.png");
    let _ = std::fs::remove_file(shot);
    chromium(
        &lab,
        &[
            "--screenshot=".to_owned() + shot,
            "--window-size=1200,900".into(),
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
        &url2,
    );
    let size = std::fs::metadata(shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "screenshot {shot}: {size} bytes");
    eprintln!("status page screenshot: {shot}");

    // Active again: n1 takes part in the election again.
    let r = api(&lab, Host::N1, "POST", "/failover/active");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["standby"], false);
}
