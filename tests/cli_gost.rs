//! GOST's command line end to end, with the real binary on loopback: `-L`
//! forwards, `--` runs supervised process groups, `-O yaml` round-trips through
//! `-test` and serves the same. Each daemon is held by a guard that kills it (and,
//! through PR_SET_PDEATHSIG, its groups) on drop, also when a test panics.

#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod gost_support;

use gost_support::{BIN, Daemon, WAIT, free_port, poll};

/// A backend on loopback that answers every connection with `banner` and closes.
fn backend(banner: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let mut c = c;
            let _ = c.write_all(banner.as_bytes());
        }
    });
    port
}

/// What a connection to 127.0.0.1:`port` receives, once the port serves.
fn fetch(port: u16) -> Option<String> {
    poll(WAIT, || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut s = String::new();
        c.read_to_string(&mut s).ok()?;
        (!s.is_empty()).then_some(s)
    })
}

/// An HTTP proxy on `port` answers CONNECT to the backend with 200 and relays.
fn via_http_proxy(port: u16, target: u16) -> Option<String> {
    poll(WAIT, || {
        let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            c,
            "CONNECT 127.0.0.1:{target} HTTP/1.1\r\nHost: 127.0.0.1:{target}\r\n\r\n"
        )
        .ok()?;
        let mut s = String::new();
        c.read_to_string(&mut s).ok()?;
        s.contains("200").then_some(s)
    })
}

#[test]
fn tcp_url_forwards() {
    let back = backend("hello from the backend\n");
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}/127.0.0.1:{back}");
    let d = Daemon::start(&["-L", &url]);
    let got = fetch(port);
    assert_eq!(
        got.as_deref(),
        Some("hello from the backend\n"),
        "{}",
        d.log()
    );
}

#[test]
fn bad_url_is_a_clear_error_and_exit_1() {
    let out = Command::new(BIN)
        .args(["-L", "http://:8080?bogus=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("-L \"http://:8080?bogus=1\": unknown option \"bogus\""),
        "{err}"
    );
}

/// GOST's example with loopback ports: three processes, each serving its group;
/// SIGTERM to the parent stops all three.
#[test]
fn groups_run_as_three_processes_and_stop_together() {
    let back = backend("group backend\n");
    let ports = [free_port(), free_port(), free_port()];
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut d = Daemon::start(&["-L", &urls[0], "--", "-L", &urls[1], "--", "-L", &urls[2]]);
    for p in ports {
        let got = via_http_proxy(p, back);
        assert!(
            got.is_some_and(|s| s.ends_with("group backend\n")),
            "port {p}: {}",
            d.log()
        );
    }
    let kids = poll(WAIT, || {
        let k = d.children();
        (k.len() == 3).then_some(k)
    })
    .unwrap_or_else(|| panic!("children: {:?}\n{}", d.children(), d.log()));
    let mut distinct = kids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{kids:?}");
    assert!(!kids.contains(&(d.child.id() as i32)));

    d.signal(Signal::SIGTERM);
    let status = d
        .wait_exit(WAIT)
        .expect("the parent did not exit after SIGTERM");
    assert!(status.success(), "{status}\n{}", d.log());
    for k in kids {
        // Reaped by the parent before it exited: the pid is gone.
        assert!(
            kill(Pid::from_raw(k), None).is_err(),
            "child {k} outlived the parent"
        );
    }
    assert!(d.log().contains("all groups stopped"), "{}", d.log());
}

/// A child that dies on its own takes the set down: the parent names the group
/// and exits non-zero (systemd then restarts the whole unit).
#[test]
fn a_killed_group_stops_the_parent_non_zero() {
    let ports = [free_port(), free_port()];
    let a = format!("http://127.0.0.1:{}", ports[0]);
    let b = format!("socks5://127.0.0.1:{}", ports[1]);
    let mut d = Daemon::start(&["-L", &a, "--", "-L", &b]);
    let kids = poll(WAIT, || {
        let k = d.children();
        (k.len() == 2).then_some(k)
    })
    .unwrap_or_else(|| panic!("{}", d.log()));
    // Which child is group 2: the one whose command line has the socks5 URL.
    let second = kids
        .iter()
        .copied()
        .find(|k| {
            std::fs::read(format!("/proc/{k}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&b))
        })
        .unwrap();
    kill(Pid::from_raw(second), Signal::SIGKILL).unwrap();
    let status = d.wait_exit(WAIT).expect("the parent did not exit");
    assert_eq!(status.code(), Some(4), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains(&format!("group 2 of 2 (-L {b}) exited on its own")),
        "{log}"
    );
    assert!(
        log.contains("SIGKILL") || log.contains("signal: 9"),
        "{log}"
    );
    for k in kids {
        assert!(
            kill(Pid::from_raw(k), None).is_err(),
            "child {k} left running"
        );
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// `-O yaml` prints a file that passes `-test` and serves what the flags served.
#[test]
fn printed_yaml_passes_test_and_serves_the_same() {
    let back = backend("round trip\n");
    let port = free_port();
    let url = format!(
        "tcp://127.0.0.1:{port}/127.0.0.1:{back}?strategy=fifo&maxFails=2&failTimeout=3s&client_idle_timeout=30s"
    );
    let out = Command::new(BIN)
        .args(["-L", &url, "-O", "yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("strategy: fifo"), "{yaml}");
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "gateway.yml", &yaml);
    let test = Command::new(BIN)
        .args(["-test", "-config", &file])
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    let d = Daemon::start(&["-config", &file]);
    assert_eq!(fetch(port).as_deref(), Some("round trip\n"), "{}", d.log());

    // JSON too: YAML reads it.
    let out = Command::new(BIN)
        .args(["-L", &url, "-O", "json"])
        .output()
        .unwrap();
    let json = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str::<serde_json::Value>(&json).unwrap();
    let file = write(dir.path(), "gateway.json", &json);
    let test = Command::new(BIN)
        .args(["-test", "-config", &file])
        .output()
        .unwrap();
    assert!(test.status.success());
}

/// `-config` and `-L` combine: the file's services and the flag's both serve.
#[test]
fn config_and_flags_combine() {
    let back = backend("combined\n");
    let (p1, p2) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "g.yml",
        &format!(
            "services:\n- name: from-file\n  addr: \"127.0.0.1:{p1}\"\n  handler: {{type: tcp}}\n  listener: {{type: tcp}}\n  forwarder: {{nodes: [{{name: b, addr: \"127.0.0.1:{back}\"}}]}}\n"
        ),
    );
    let url = format!("tcp://127.0.0.1:{p2}/127.0.0.1:{back}");
    let d = Daemon::start(&["-config", &file, "-L", &url]);
    assert_eq!(fetch(p1).as_deref(), Some("combined\n"), "{}", d.log());
    assert_eq!(fetch(p2).as_deref(), Some("combined\n"), "{}", d.log());
    // -O does not pretend to rewrite the file.
    let out = Command::new(BIN)
        .args(["-config", &file, "-L", &url, "-O", "yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

mod chain_support;

use std::net::SocketAddr;

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `?interface=ADDR` on `-L`: the connection to the target leaves from ADDR
/// (127.0.0.2 is a second address of loopback; the origin echoes the source).
#[tokio::test(flavor = "multi_thread")]
async fn interface_query_sets_the_source_address() {
    let origin = chain_support::Origin::start().await;
    let (p1, p2) = (free_port(), free_port());
    let d = Daemon::start(&[
        "-L",
        &format!("http://127.0.0.1:{p1}?interface=127.0.0.2"),
        "-L",
        &format!("http://127.0.0.1:{p2}"),
    ]);
    chain_support::wait_listening(local(p1), "service-0").await;
    chain_support::wait_listening(local(p2), "service-1").await;
    let (code, body) = chain_support::http_connect(local(p1), origin.addr).await;
    assert_eq!(
        (code, body.as_str()),
        (200, "peer 127.0.0.2\n"),
        "{}",
        d.log()
    );
    let (code, body) = chain_support::http_connect(local(p2), origin.addr).await;
    assert_eq!(
        (code, body.as_str()),
        (200, "peer 127.0.0.1\n"),
        "{}",
        d.log()
    );
}

/// `-L socks5://… -F http://…`: the SOCKS5 service reaches its target through
/// tinyproxy (which connects out from 127.0.0.2, so the origin tells the paths
/// apart); `?ignoreChain=true` goes direct (from 127.0.0.1).
#[tokio::test(flavor = "multi_thread")]
async fn forward_flag_goes_through_an_upstream_http_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let tp = free_port();
    let _tinyproxy = chain_support::tinyproxy(dir.path(), tp, "127.0.0.2", None).await;
    let origin = chain_support::Origin::start().await;
    let (p1, p2) = (free_port(), free_port());
    let d = Daemon::start(&[
        "-L",
        &format!("socks5://127.0.0.1:{p1}"),
        "-L",
        &format!("socks5://127.0.0.1:{p2}?ignoreChain=true"),
        "-F",
        &format!("http://127.0.0.1:{tp}"),
    ]);
    chain_support::wait_listening(local(p1), "service-0").await;
    chain_support::wait_listening(local(p2), "service-1").await;
    let (rep, body) = chain_support::socks5_connect(local(p1), origin.addr).await;
    assert_eq!((rep, body.as_str()), (0, "peer 127.0.0.2\n"), "{}", d.log());
    let (rep, body) = chain_support::socks5_connect(local(p2), origin.addr).await;
    assert_eq!((rep, body.as_str()), (0, "peer 127.0.0.1\n"), "{}", d.log());
    assert_eq!(origin.from("127.0.0.2"), 1);
    assert_eq!(origin.from("127.0.0.1"), 1);
}
