//! SIGHUP reload of the real binary on loopback: a bad file keeps the running
//! configuration, a good one adds and removes services without a restart, and
//! SIGTERM stops the process promptly when nothing is in flight.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"backend\n");
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn service(name: &str, port: u16, backend: u16) -> String {
    format!(
        "- name: {name}\n  addr: 127.0.0.1:{port}\n  handler: {{type: tcp}}\n  listener: {{type: tcp}}\n  forwarder:\n    nodes:\n    - {{name: b, addr: \"127.0.0.1:{backend}\"}}\n"
    )
}

fn get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn wait(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn sighup_reload_applies_good_files_and_rejects_bad_ones() {
    let b = backend();
    let (p1, p2) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("g.yml");
    let log = dir.path().join("log");
    std::fs::write(&cfg, format!("services:\n{}", service("one", p1, b))).unwrap();
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("-config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    let mut d = Daemon(child);
    let logtext = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait(|| get(p1).as_deref() == Some("backend\n")),
        "{}",
        logtext()
    );

    // A broken file: the error is logged with file and line, service one keeps serving.
    std::fs::write(&cfg, "services:\n- name: one\n  adr: x\n").unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    assert!(
        wait(|| logtext().contains("reload rejected")),
        "{}",
        logtext()
    );
    assert!(logtext().contains("g.yml:3"), "{}", logtext());
    assert_eq!(get(p1).as_deref(), Some("backend\n"));

    // A good file: service two appears, one goes away.
    std::fs::write(&cfg, format!("services:\n{}", service("two", p2, b))).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    assert!(
        wait(|| get(p2).as_deref() == Some("backend\n")),
        "{}",
        logtext()
    );
    assert!(wait(|| get(p1).is_none()), "service one still answers");

    // SIGTERM with nothing in flight: a prompt, clean exit.
    let t = Instant::now();
    kill(pid, Signal::SIGTERM).unwrap();
    let status = d.0.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", logtext());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}
