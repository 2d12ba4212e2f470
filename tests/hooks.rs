//! Service hooks end to end with the real binary: the order of preUp, postUp,
//! preDown and postDown across start, a reload that changes the service, and
//! stop (by timestamps the hooks write); a failing preUp keeps only its service
//! down; a hanging hook is killed at its timeout.

#![cfg(target_os = "linux")]

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

mod gost_support;

use gost_support::{Daemon, WAIT, free_port, poll};

fn start(config: &Path) -> Daemon {
    Daemon::start(&["-config", &config.display().to_string(), "-grace", "5"])
}

/// A service whose four hooks append `<hook> <tag> <name> <addr> <ns timestamp>`
/// to `out`; `tag` tells the versions of a service apart.
fn hooked_service(name: &str, port: u16, tag: &str, out: &Path) -> String {
    let line = |hook: &str| {
        format!(
            "      - echo \"{hook} {tag} $GATEWAY_SERVICE $GATEWAY_ADDR $(date +%s%N)\" >> {}\n",
            out.display()
        )
    };
    format!(
        "- name: {name}\n  addr: \"127.0.0.1:{port}\"\n  handler: {{type: http}}\n  listener: {{type: tcp}}\n  metadata:\n    preUp:\n{}    postUp:\n{}    preDown:\n{}    postDown:\n{}",
        line("preUp"),
        line("postUp"),
        line("preDown"),
        line("postDown")
    )
}

fn lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn wait_lines(out: &Path, n: usize, d: &Daemon) -> Vec<String> {
    poll(WAIT, || {
        let l = lines(out);
        (l.len() >= n).then_some(l)
    })
    .unwrap_or_else(|| panic!("expected {n} hook lines, got {:?}\n{}", lines(out), d.log()))
}

#[test]
fn hooks_run_in_order_across_start_reload_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hooks.out");
    let port = free_port();
    let config = dir.path().join("g.yml");
    let write = |tag: &str| {
        std::fs::write(
            &config,
            format!("services:\n{}", hooked_service("web", port, tag, &out)),
        )
        .unwrap()
    };
    write("v1");
    let mut d = start(&config);
    wait_lines(&out, 2, &d);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    // A reload that changes the service: the new version comes up, the old goes down.
    write("v2");
    d.signal(Signal::SIGHUP);
    wait_lines(&out, 6, &d);
    // Stop: the running version goes down.
    d.signal(Signal::SIGTERM);
    let status = poll(WAIT, || d.child.try_wait().ok().flatten()).expect("no exit");
    assert!(status.success(), "{}", d.log());
    let l = wait_lines(&out, 8, &d);

    let what: Vec<String> = l
        .iter()
        .map(|x| x.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        what,
        [
            "preUp v1",
            "postUp v1",
            "preUp v2",
            "postUp v2",
            "preDown v1",
            "postDown v1",
            "preDown v2",
            "postDown v2"
        ],
        "{l:?}"
    );
    let stamps: Vec<u128> = l
        .iter()
        .map(|x| x.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{l:?}");
    // The environment names the service and its address.
    assert!(
        l[0].contains(&format!(" web 127.0.0.1:{port} ")),
        "{}",
        l[0]
    );
    // preUp ran before the listener bound, postDown after it closed.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_failing_pre_up_keeps_only_that_service_down() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hooks.out");
    let (good, bad) = (free_port(), free_port());
    let config = dir.path().join("g.yml");
    std::fs::write(
        &config,
        format!(
            "services:\n{}- name: bad\n  addr: \"127.0.0.1:{bad}\"\n  handler: {{type: http}}\n  listener: {{type: tcp}}\n  preUp: [\"exit 7\"]\n",
            hooked_service("good", good, "g", &out)
        ),
    )
    .unwrap();
    let d = start(&config);
    wait_lines(&out, 2, &d);
    assert!(
        TcpStream::connect(("127.0.0.1", good)).is_ok(),
        "{}",
        d.log()
    );
    let logged = poll(WAIT, || {
        let log = d.log();
        log.contains("service kept down").then_some(log)
    })
    .unwrap_or_else(|| d.log());
    assert!(
        logged.contains("bad") && logged.contains("\"exit 7\" failed: exit status: 7"),
        "{logged}"
    );
    assert!(TcpStream::connect(("127.0.0.1", bad)).is_err(), "{logged}");
}

#[test]
fn a_hanging_hook_is_killed_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("g.yml");
    std::fs::write(
        &config,
        format!(
            "services:\n- name: slow\n  addr: \"127.0.0.1:{port}\"\n  handler: {{type: http}}\n  listener: {{type: tcp}}\n  hookTimeout: 500ms\n  preUp: [\"sleep 600\"]\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let d = start(&config);
    let log = poll(WAIT, || {
        let log = d.log();
        log.contains("killed").then_some(log)
    })
    .unwrap_or_else(|| panic!("no timeout logged\n{}", d.log()));
    assert!(started.elapsed() < Duration::from_secs(20), "{log}");
    assert!(log.contains("still running after 500ms: killed"), "{log}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    // No `sleep 600` left behind.
    let ps = Command::new("pgrep")
        .args(["-f", "^sleep 600$"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&ps.stdout)
    );
}
