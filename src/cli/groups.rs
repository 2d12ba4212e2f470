//! `--`: one process per group of arguments, as GOST runs them.
//!
//! ```text
//! gateway -L http://:8080 -- -L http://:8000 -- -L socks://:1080 -F http://:8000
//! ```
//!
//! starts three children (this same binary, each with its own group's
//! arguments, so only the third uses the chain) and stays as their supervisor:
//!
//! * SIGTERM, SIGINT and SIGHUP are forwarded to every child still running
//!   (SIGINT as SIGTERM): a reload or a stop of the parent is a reload or a stop of
//!   every group;
//! * the parent exits once all children have exited: 0 if they were asked to
//!   stop and all exited with 0, otherwise [`EXIT_GROUP_FAILED`];
//! * **a child that dies on its own is not restarted**: the parent logs the group
//!   (its number and arguments) with how it ended, stops the other groups and
//!   exits non-zero. A half-running set of groups is worse than none, and the
//!   service manager is the one place that restarts: under systemd
//!   (`Restart=on-failure`) the whole unit comes back, every group with it.
//! * On Linux each child gets `PR_SET_PDEATHSIG` = SIGTERM, so a parent killed
//!   with SIGKILL does not leave its groups running.
//!
//! Each group's arguments are checked by the parent before anything starts, so a
//! typo in the third group fails at once with clap's message, not after two
//! groups have been started.

use std::process::ExitStatus;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

/// Exit code of the parent when a group failed (documented in docs/operations.md).
pub const EXIT_GROUP_FAILED: u8 = 4;

/// `argv` split at each `--` into one full argv per group (program name first),
/// or `None` when there is no `--`. An empty group is an error.
pub fn split(argv: &[String]) -> Option<Result<Vec<Vec<String>>, String>> {
    let (program, args) = argv.split_first()?;
    if !args.iter().any(|a| a == "--") {
        return None;
    }
    let groups: Vec<Vec<String>> = args
        .split(|a| a == "--")
        .map(|g| {
            std::iter::once(program.clone())
                .chain(g.iter().cloned())
                .collect()
        })
        .collect();
    if let Some(i) = groups.iter().position(|g| g.len() == 1) {
        return Some(Err(format!(
            "group {} of {} is empty: expected arguments between each `--`, e.g. -L http://:8080 -- -L socks5://:1080",
            i + 1,
            groups.len()
        )));
    }
    Some(Ok(groups))
}

/// A group for log lines: `group 2 of 3 (-L http://:8000)`, passwords masked.
pub fn describe(groups: &[Vec<String>], i: usize) -> String {
    let args: Vec<String> = groups[i][1..]
        .iter()
        .map(|a| super::url::masked(a))
        .collect();
    format!("group {} of {} ({})", i + 1, groups.len(), args.join(" "))
}

/// Start every group as a child process and supervise them until they have all
/// exited; returns the parent's exit code.
pub fn supervise(groups: &[Vec<String>]) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return EXIT_GROUP_FAILED;
        }
    };
    runtime.block_on(run(groups))
}

async fn run(groups: &[Vec<String>]) -> u8 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            error!("cannot find this program to start the groups: {e}");
            return EXIT_GROUP_FAILED;
        }
    };
    let signals = [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ]
    .map(signal);
    let [Ok(mut term), Ok(mut int), Ok(mut hup)] = signals else {
        error!("cannot install signal handlers");
        return EXIT_GROUP_FAILED;
    };
    let (tx, mut exited) =
        tokio::sync::mpsc::unbounded_channel::<(usize, std::io::Result<ExitStatus>)>();
    // The pid of each child still running; `None` once it exited, so that a pid
    // the kernel may reuse is never signalled.
    let mut alive: Vec<Option<Pid>> = Vec::new();
    let mut failed = false;
    let mut stopping = false;
    for (i, g) in groups.iter().enumerate() {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(&g[1..]).stdin(std::process::Stdio::null());
        #[cfg(target_os = "linux")]
        // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(mut child) => {
                let pid = child.id().map(|p| Pid::from_raw(p as i32));
                info!(pid = ?child.id(), "started {}", describe(groups, i));
                alive.push(pid);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let status = child.wait().await;
                    let _ = tx.send((i, status));
                });
            }
            Err(e) => {
                error!(
                    "cannot start {}: {e}; stopping the other groups",
                    describe(groups, i)
                );
                failed = true;
                stopping = true;
                forward(&alive, Signal::SIGTERM);
                break;
            }
        }
    }
    while alive.iter().any(Option::is_some) {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM received: stopping every group"); stopping = true; forward(&alive, Signal::SIGTERM); }
            _ = int.recv() => { info!("SIGINT received: stopping every group"); stopping = true; forward(&alive, Signal::SIGTERM); }
            _ = hup.recv() => { info!("SIGHUP received: every group reloads"); forward(&alive, Signal::SIGHUP); }
            Some((i, status)) = exited.recv() => {
                alive[i] = None;
                let how = match &status {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("cannot be waited for: {e}"),
                };
                let clean = status.as_ref().is_ok_and(|s| s.success());
                if !stopping {
                    error!("{} exited on its own ({how}): stopping the other groups; not restarted (the service manager restarts the whole set)", describe(groups, i));
                    failed = true;
                    stopping = true;
                    forward(&alive, Signal::SIGTERM);
                } else if clean {
                    info!("{} stopped", describe(groups, i));
                } else {
                    warn!("{} stopped with {how}", describe(groups, i));
                    failed = true;
                }
            }
        }
    }
    if failed {
        EXIT_GROUP_FAILED
    } else {
        info!("all groups stopped");
        0
    }
}

fn forward(alive: &[Option<Pid>], sig: Signal) {
    for pid in alive.iter().flatten() {
        if let Err(e) = kill(*pid, sig) {
            warn!(%pid, "cannot send {sig} to a group: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn splits_at_each_separator() {
        assert_eq!(split(&argv("gw -L http://:8080")), None);
        let g = split(&argv(
            "gw -L http://:8080 -- -L http://:8000 -- -L socks://:1080 -F http://:8000",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            g,
            [
                argv("gw -L http://:8080"),
                argv("gw -L http://:8000"),
                argv("gw -L socks://:1080 -F http://:8000"),
            ]
        );
        assert_eq!(
            describe(&g, 2),
            "group 3 of 3 (-L socks://:1080 -F http://:8000)"
        );
    }

    #[test]
    fn empty_groups_are_refused() {
        for a in ["gw -- -L :1", "gw -L :1 --", "gw -L :1 -- -- -L :2"] {
            let e = split(&argv(a)).unwrap().unwrap_err();
            assert!(e.contains("is empty"), "{a}: {e}");
        }
    }

    #[test]
    fn passwords_are_masked_in_group_names() {
        let g = split(&argv("gw -L http://u:pw@:1 -- -L :2"))
            .unwrap()
            .unwrap();
        assert_eq!(describe(&g, 0), "group 1 of 2 (-L http://u:MASKED@:1)");
    }
}
