//! Service hooks end to end with the real binary: the order of preUp, postUp,
//! preDown and postDown across start, a reload that changes the service, and
//! stop (by timestamps the hooks write); a failing preUp keeps only its service
//! down; a hanging hook is killed at its timeout; a slow hook does not hold up
//! SIGTERM; a reload that fails partway runs the down hooks of what it started.

#![cfg(target_os = "linux")]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

mod gost_support;

use gost_support::{Daemon, WAIT, free_port, poll};

/// A test's files: the directory (removed on drop: a test keeps `_dir` bound),
/// the hook output, the configuration file and a pid file for [`slow`] hooks.
struct Files {
    _dir: tempfile::TempDir,
    out: PathBuf,
    config: PathBuf,
    pidfile: PathBuf,
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let at = |n: &str| dir.path().join(n);
    Files {
        out: at("hooks.out"),
        config: at("g.yml"),
        pidfile: at("pid"),
        _dir: dir,
    }
}

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

/// The first `n` words of each hook line (`<hook> <tag> <name>`).
fn first_words(lines: &[String], n: usize) -> Vec<String> {
    (lines.iter())
        .map(|x| x.split(' ').take(n).collect::<Vec<_>>().join(" "))
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
    let Files {
        _dir, out, config, ..
    } = files();
    let port = free_port();
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

    let what = first_words(&l, 2);
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
    let Files {
        _dir, out, config, ..
    } = files();
    let (good, bad) = (free_port(), free_port());
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
    let Files { _dir, config, .. } = files();
    let port = free_port();
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

/// A daemon running one [`hooked_service`] `old` on `port`, its up hooks run;
/// and that service's YAML, for the next version of the file.
fn start_old(config: &Path, out: &Path, port: u16) -> (Daemon, String) {
    let old = hooked_service("old", port, "o", out);
    std::fs::write(config, format!("services:\n{old}")).unwrap();
    let d = start(config);
    wait_lines(out, 2, &d);
    (d, old)
}

/// A hook command that writes its pid to `pidfile` and then sleeps 10 s (the
/// shell becomes the `sleep`: one process to look for afterwards).
fn slow(pidfile: &Path) -> String {
    format!("echo $$ > {}; exec sleep 10", pidfile.display())
}

/// The pid a [`slow`] hook wrote, once it runs.
fn hook_pid(pidfile: &Path, d: &Daemon) -> i32 {
    poll(WAIT, || {
        std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .unwrap_or_else(|| panic!("the slow hook never ran\n{}", d.log()))
}

/// Whether `pid` is gone (or a zombie: exited, not reaped yet).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.contains(") Z "),
    }
}

/// SIGTERM, then the exit: within `STOP_LIMIT`, with success.
fn stop_promptly(mut d: Daemon) -> String {
    let sent = Instant::now();
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(STOP_LIMIT);
    let took = sent.elapsed();
    let log = d.log();
    let status = status.unwrap_or_else(|| panic!("still running {took:?} after SIGTERM\n{log}"));
    assert!(status.success(), "{status}\n{log}");
    log
}

/// How soon a daemon whose hook sleeps 10 s must have exited after SIGTERM:
/// well below the 10 s (the stop itself takes milliseconds; the hook gets its
/// second after SIGTERM; the rest is margin for a loaded machine).
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Breaks if a slow `postUp` at start holds up SIGTERM (it used to run before
/// the signal loop, so the stop waited for the whole hook), or if the hook
/// outlives the daemon.
#[test]
fn sigterm_during_a_slow_post_up_stops_at_once_and_kills_the_hook() {
    let Files {
        _dir,
        out,
        config,
        pidfile,
    } = files();
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "services:\n- name: slow\n  addr: \"127.0.0.1:{port}\"\n  handler: {{type: http}}\n  listener: {{type: tcp}}\n  hookTimeout: 60s\n  postUp: [{:?}, \"echo skipped >> {o}\"]\n  postDown: [\"echo postDown >> {o}\"]\n",
            slow(&pidfile),
            o = out.display()
        ),
    )
    .unwrap();
    let d = start(&config);
    let pid = hook_pid(&pidfile, &d);
    // postUp runs once the service serves.
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "{}",
        d.log()
    );
    let log = stop_promptly(d);
    assert!(
        gone(pid),
        "the postUp hook ({pid}) outlived the daemon\n{log}"
    );
    assert!(
        log.contains("postUp command") && log.contains("the daemon is stopping"),
        "{log}"
    );
    // The rest of the postUp list was skipped; the stop ran the down hooks.
    assert_eq!(lines(&out), ["postDown"], "{log}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// Breaks if a reload whose `preUp` is slow holds up SIGTERM (the reload used
/// to run inside the signal loop), if the hook outlives the daemon, or if the
/// abandoned service gets a `postDown` its `preUp` never earned.
#[test]
fn sigterm_during_a_slow_pre_up_of_a_reload_stops_at_once() {
    let Files {
        _dir,
        out,
        config,
        pidfile,
    } = files();
    let (p_old, p_new) = (free_port(), free_port());
    let (d, old) = start_old(&config, &out, p_old);
    std::fs::write(
        &config,
        format!(
            "services:\n{old}- name: new\n  addr: \"127.0.0.1:{p_new}\"\n  handler: {{type: http}}\n  listener: {{type: tcp}}\n  hookTimeout: 60s\n  preUp: [{:?}]\n  postDown: [\"echo postDown new >> {}\"]\n",
            slow(&pidfile),
            out.display()
        ),
    )
    .unwrap();
    d.signal(Signal::SIGHUP);
    let pid = hook_pid(&pidfile, &d);
    let log = stop_promptly(d);
    assert!(
        gone(pid),
        "the preUp hook ({pid}) outlived the daemon\n{log}"
    );
    assert!(
        log.contains("reload abandoned: the daemon is stopping"),
        "{log}"
    );
    let what = first_words(&lines(&out), 3);
    assert_eq!(
        what,
        [
            "preUp o old",
            "postUp o old",
            "preDown o old",
            "postDown o old"
        ],
        "{log}"
    );
    assert!(TcpStream::connect(("127.0.0.1", p_new)).is_err());
}

/// Breaks if a reload that fails partway drops the services it had started
/// without their down hooks, or changes anything that ran: the second new
/// service's port is taken, so the reload is rolled back: the first new service
/// (whose `preUp` ran and which was bound) gets its `postDown` and is not left
/// listening, the old service keeps serving, one log line says why.
#[test]
fn a_reload_that_fails_partway_rolls_back_with_the_down_hooks() {
    let Files {
        _dir, out, config, ..
    } = files();
    let (p_old, p_new) = (free_port(), free_port());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p_taken = taken.local_addr().unwrap().port();
    let (d, old) = start_old(&config, &out, p_old);
    std::fs::write(
        &config,
        format!(
            "services:\n{old}{}{}",
            hooked_service("first", p_new, "f", &out),
            hooked_service("second", p_taken, "s", &out)
        ),
    )
    .unwrap();
    d.signal(Signal::SIGHUP);
    let log = poll(WAIT, || {
        let log = d.log();
        log.contains("keeping the running configuration")
            .then_some(log)
    })
    .unwrap_or_else(|| panic!("the reload was not refused\n{}", d.log()));
    let what = first_words(&lines(&out), 3);
    // Both new services' preUp ran; neither served, so no postUp nor preDown;
    // both get their postDown, after the rollback closed the first one's socket
    // (and before the rollback is logged).
    assert_eq!(
        what,
        [
            "preUp o old",
            "postUp o old",
            "preUp f first",
            "preUp s second",
            "postDown f first",
            "postDown s second"
        ],
        "{log}"
    );
    let why: Vec<&str> = log.lines().filter(|l| l.contains("rolled back")).collect();
    assert_eq!(why.len(), 1, "{log}");
    assert!(
        why[0].contains("keeping the running configuration")
            && why[0].contains("\"second\"")
            && why[0].contains(&format!("cannot bind tcp 127.0.0.1:{p_taken}")),
        "{log}"
    );
    assert!(TcpStream::connect(("127.0.0.1", p_new)).is_err(), "{log}");
    assert!(TcpStream::connect(("127.0.0.1", p_old)).is_ok(), "{log}");
    drop(taken);
}
