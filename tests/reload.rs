//! The real binary on loopback. SIGHUP reload: a bad file keeps the running
//! configuration, a good one adds and removes services without a restart, and
//! SIGTERM stops the process promptly when nothing is in flight. Also what the
//! binary logs when every connection fails the same way (fd exhaustion).

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

/// Start the binary on `cfg`, its log in `log`; the daemon and its pid.
fn start(cfg: &std::path::Path, log: &std::path::Path) -> (Daemon, i32) {
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("-config")
        .arg(cfg)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    (Daemon(child), pid)
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
    let (mut d, pid) = start(&cfg, &log);
    let pid = Pid::from_raw(pid);
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

/// Issue 13: an empty or truncated gateway.yml asks for nothing. `-test` and
/// start-up refuse it, and a SIGHUP with it keeps every running service; a file
/// that really asks for no services may stop them all, with a warning.
#[test]
fn empty_and_truncated_files_are_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("g.yml");
    let refusal = "no services and no floating_ip: refusing an empty configuration";
    for text in ["", "\n", "# all commented out\n", "services: []\n"] {
        std::fs::write(&cfg, text).unwrap();
        for args in [&["-test", "-config"][..], &["-config"]] {
            let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
                .args(args)
                .arg(&cfg)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{text:?} {args:?}: {err}");
            assert!(
                err.contains(&format!("g.yml:1: {refusal}")),
                "{text:?} {args:?}: {err}"
            );
        }
    }

    let b = backend();
    let p = free_port();
    let log = dir.path().join("log");
    let good = format!("services:\n{}", service("one", p, b));
    std::fs::write(&cfg, &good).unwrap();
    let (_d, pid) = start(&cfg, &log);
    let pid = Pid::from_raw(pid);
    let logtext = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait(|| get(p).as_deref() == Some("backend\n")),
        "{}",
        logtext()
    );

    // Truncated to nothing (an editor mid-save): refused, the service stays.
    std::fs::write(&cfg, "").unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    assert!(wait(|| logtext().contains(refusal)), "{}", logtext());
    assert!(logtext().contains("reload rejected"), "{}", logtext());
    assert_eq!(get(p).as_deref(), Some("backend\n"));
    assert!(
        !logtext().contains("configuration reloaded"),
        "{}",
        logtext()
    );

    // Truncated mid-file: refused too.
    std::fs::write(&cfg, &good[..good.len() / 2]).unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    assert!(
        wait(|| logtext().matches("reload rejected").count() == 2),
        "{}",
        logtext()
    );
    assert_eq!(get(p).as_deref(), Some("backend\n"));

    // A file that asks for no services: allowed, said at warn level.
    std::fs::write(&cfg, "floating_ip:\n  enabled: false\n").unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    assert!(
        wait(|| logtext().contains("reload stops every running service")),
        "{}",
        logtext()
    );
    let line = logtext()
        .lines()
        .find(|l| l.contains("reload stops every running service"))
        .unwrap()
        .to_string();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("stopped=1"), "{line}");
    assert!(wait(|| get(p).is_none()), "service one still answers");
}

/// Issue 13: out of file descriptors, every new connection fails to reach its
/// node, and each failure used to log its own warning: a flood at the rate
/// clients arrive. Now: at most one line a second, with the count held back.
#[test]
#[cfg(target_os = "linux")]
fn fd_exhaustion_warning_is_rate_limited() {
    let b = backend();
    let p = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("g.yml");
    let log = dir.path().join("log");
    std::fs::write(&cfg, format!("services:\n{}", service("one", p, b))).unwrap();
    let (_d, pid) = start(&cfg, &log);
    let logtext = || std::fs::read_to_string(&log).unwrap_or_default();
    // Up, and no connection made yet (one would hold descriptors a while).
    assert!(
        wait(|| logtext().contains("services started")),
        "{}",
        logtext()
    );

    // Leave the daemon exactly one free descriptor number: accepting a client
    // takes it, and the socket to the node then fails with EMFILE.
    let fds = || -> Vec<(i64, String)> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let link = std::fs::read_link(e.path()).ok()?;
                let n = e.file_name().to_str()?.parse().ok()?;
                Some((n, link.display().to_string()))
            })
            .collect()
    };
    let used: std::collections::HashSet<i64> = fds().into_iter().map(|(n, _)| n).collect();
    let mut limit = 0i64;
    let mut free = 0;
    while free < 1 || used.contains(&limit) {
        if !used.contains(&limit) {
            free += 1;
        }
        limit += 1;
    }
    let lim = libc::rlimit {
        rlim_cur: limit as libc::rlim_t,
        rlim_max: limit as libc::rlim_t,
    };
    // SAFETY: a valid rlimit for a process we started; the old value is not wanted.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());

    let start = Instant::now();
    let attempts = 60;
    for _ in 0..attempts {
        // Each client is accepted and closed at once: no node could be dialled.
        assert_eq!(get(p).as_deref(), Some(""), "{}", logtext());
    }
    let seconds = start.elapsed().as_secs() as usize;
    let text = logtext();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("local resources exhausted"))
        .collect();
    assert!(!lines.is_empty(), "{text}");
    assert!(
        lines.len() <= seconds + 2,
        "{} warnings for {attempts} connections in {seconds} s:\n{text}",
        lines.len()
    );
    // The connections held back are counted on the next line that passes.
    assert!(
        wait(|| {
            let _ = get(p);
            logtext()
                .lines()
                .filter(|l| l.contains("local resources exhausted"))
                .any(|l| l.contains("suppressed=") && !l.contains("suppressed=0"))
        }),
        "{}",
        logtext()
    );
}
