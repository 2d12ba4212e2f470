//! A planned switchover through the Web API drops no connection (issue #10):
//! `POST /failover/standby` on the master while clients hold long-lived
//! connections through it (a stream, an echo, an idle one; checked byte for
//! byte) and a steady stream of new short requests runs. The old master hands
//! its connections over as on SIGTERM (src/failover/handover/), but keeps
//! running: a BACKUP in standby, which serves them to their end, then removes
//! everything the mechanism put in the kernel — and stays BACKUP, although it
//! outranks the new master and preempts, until `POST /failover/active`.
//!
//! Goes red if standby released the VIP the plain way (the long-lived
//! connections are cut, `handover` is never set), if the node left standby by
//! itself, or if any table, rule or `lo` address is left behind.

#![cfg(target_os = "linux")]

mod api_support;
mod common;
mod switchover_support;

use std::thread;
use std::time::{Duration, Instant};

use common::lab::{Host, Lab, poll};
use switchover_support::*;

const API_PORT: u16 = 18080;
const AUTH: Option<&str> = Some("op:pw");

fn api_yaml(lab: &Lab, host: Host) -> String {
    format!(
        "api:\n  addr: \"{}:{API_PORT}\"\n  auth: {{username: op, password: pw}}\n",
        lab.ip(host)
    )
}

/// One API request from the client's namespace to `host`'s API.
fn api(lab: &Lab, host: Host, method: &'static str, path: &'static str) -> api_support::Resp {
    let ip = lab.ip(host);
    lab.in_netns(Host::Client, move || {
        api_support::request_to(ip.into(), API_PORT, method, path, AUTH, b"")
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("{method} {path} on {host}: {e}"))
}

fn failover(lab: &Lab, host: Host) -> serde_json::Value {
    api(lab, host, "GET", "/failover").json()["data"].clone()
}

#[test]
fn standby_through_the_api_keeps_every_connection_and_stays_backup() {
    let lab = Lab::new("switchover_api");
    let vip = lab.default_vip();
    let _backends = backends(&lab);
    // n1 preempts: only standby keeps it from taking the VIP back at once.
    let (mut g1, mut g2) = start_pair_with(&lab, &["preempt: true"], |h| api_yaml(&lab, h));
    assert!(
        poll(WAIT, || (failover(&lab, Host::N1)["peers"][0]["state"]
            == "BACKUP")
            .then_some(()))
        .is_some(),
        "n1 never heard n2"
    );
    let t0 = Instant::now();
    let conns = long_lived(&lab, Duration::from_secs(6));
    let requests = Requests::start(&lab);
    thread::sleep(Duration::from_secs(3).saturating_sub(t0.elapsed()));

    // The switchover: answered once the VIP has moved, with the connections
    // handed over (the API's answer waits for the peer's ACK).
    let asked = Instant::now();
    let r = api(&lab, Host::N1, "POST", "/failover/standby");
    let answered = Instant::now();
    assert_eq!(r.status, 200, "{}", r.body);
    let d = &r.json()["data"];
    assert_eq!(
        (&d["state"], &d["standby"], &d["handover"]),
        (&"BACKUP".into(), &true.into(), &true.into()),
        "standby must hand the connections over, not cut them:\n{d}\n{}",
        g1.log()
    );
    eprintln!("standby answered in {:?}", answered - asked);
    expect_lan_holder(&lab, Host::N2);
    assert!(
        poll(WAIT, || steering_present(&lab, Host::N2).then_some(())).is_some(),
        "n2 never steered:\n{}\n{}",
        g1.log(),
        g2.log()
    );

    // While n1 still serves them, active is refused with a clear reason.
    let r = api(&lab, Host::N1, "POST", "/failover/active");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("handed over to"), "{}", r.body);

    expect_all_complete(conns, &mut g1, &mut g2);
    assert!(
        g1.wait_log(
            "planned switchover: every handed-over connection has ended",
            WAIT
        ),
        "{}",
        g1.log()
    );
    assert!(
        poll(WAIT, || (failover(&lab, Host::N1)["handover"] == false)
            .then_some(()))
        .is_some(),
        "n1 still reports a handover:\n{}",
        g1.log()
    );
    expect_departure_cleaned_up(&lab);

    // The short requests: only those caught by the switchover may fail.
    let (sent, failed, window) = requests.finish(t0);
    eprintln!(
        "standby switchover: {sent} short requests, {failed} failed, window {window:?} (standby asked at {:?}, answered at {:?})",
        asked - t0,
        answered - t0
    );
    if let Some((start, span)) = window {
        assert!(
            start + Duration::from_millis(50) >= asked - t0
                && start + span <= answered - t0 + Duration::from_millis(500),
            "requests failed outside the switchover: window {start:?} + {span:?}"
        );
    }

    // n1 stays BACKUP in standby (it outranks n2 and preempts), still running.
    lab.expect_holders_stay(
        vip,
        &[Host::N2],
        Duration::from_secs(2),
        "n1 stays in standby",
    );
    let f = failover(&lab, Host::N1);
    assert_eq!(
        (&f["state"], &f["standby"]),
        (&"BACKUP".into(), &true.into()),
        "{f}"
    );
    g1.assert_running("after the standby departure");

    // Active again: n1 preempts n2 and serves new requests; nothing is left over.
    let r = api(&lab, Host::N1, "POST", "/failover/active");
    assert_eq!(r.status, 200, "{}", r.body);
    expect_lan_holder(&lab, Host::N1);
    assert!(
        lab.wait_client_reaches(vip, 8080, WAIT).is_ok(),
        "no service on the VIP after active"
    );
    for host in Host::NODES {
        assert_eq!(
            leftovers(&lab, host),
            Vec::<String>::new(),
            "{host} kept state"
        );
    }
    g2.assert_running("after active");
}
