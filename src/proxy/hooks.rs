//! Running a service's hooks (`preUp`, `postUp`, `preDown`, `postDown`; the
//! options are in `crate::config::service::hooks`).
//!
//! When, relative to the service's life ([`super::ServiceSet`] calls these):
//!
//! | hook       | start / reload (new or changed service) | reload (removed or changed) / stop |
//! |------------|------------------------------------------|------------------------------------|
//! | `preUp`    | before the listener binds                |                                    |
//! | `postUp`   | once the service accepts                 |                                    |
//! | `preDown`  |                                          | before it stops accepting          |
//! | `postDown` |                                          | after its connections drained      |
//!
//! A changed service is a new one replacing the old: the new one's `preUp` and
//! `postUp` run, then the old one's `preDown` and (after its drain) `postDown`.
//! An unchanged service runs nothing on reload.
//!
//! How:
//!
//! * each command runs by `/bin/sh -c COMMAND`, in order, with stdin closed and
//!   stdout/stderr those of the daemon, and `GATEWAY_SERVICE` (the name),
//!   `GATEWAY_ADDR` (the `addr` as written) and `GATEWAY_HOOK` (`preUp`, ...) in
//!   its environment;
//! * each command runs in a process group of its own and is limited to the
//!   service's `hookTimeout` (default 30 s): still running then, the whole group
//!   (the shell and whatever it started) gets SIGKILL;
//! * a `preUp` command that fails (non-zero exit, signal, timeout) stops the list
//!   and keeps **that service** down: it is not bound, the error is logged with
//!   the command and how it failed, and the other services start normally. The
//!   next reload tries again. A failing `postUp`, `preDown` or `postDown` is
//!   logged and the list goes on: a service that is up or going down is not held
//!   back by its hook.
//!
//! Hooks never run on the daemon's control path: the daemon runs a change
//! (start, SIGHUP reload, API edit) on a task of its own and the commands on
//! blocking threads, so its signal loop answers SIGTERM and SIGHUP while a hook
//! runs; heartbeats are sent by the failover driver's own thread and runtime
//! (`failover::driver`), so no hook ever delays an election. What a stop (the
//! `stop` token of [`run`]) does to a hook that is running, as keepalived does
//! with the scripts it runs when it shuts down:
//!
//! * a `preUp` or `postUp` command (the service is going up, and the daemon is
//!   going down) gets SIGTERM on its process group, SIGKILL [`KILL_AFTER`]
//!   later, and the rest of its list is skipped. A change still binding its
//!   services is rolled back (those whose `preUp` had succeeded get their
//!   `postDown`: [`super::Plan::prepare`]); a service already serving stops with
//!   the others;
//! * a `preDown` or `postDown` command runs on to its end or its `hookTimeout`:
//!   it is what the stop is for.
//!
//! Services run on both nodes whatever the failover state (their listeners use
//! `IP_FREEBIND` and serve the VIP when it arrives), so there is no "service goes
//! up on the master" moment, and hooks do **not** run on failover transitions.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::ServiceConfig;

/// Which hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    PreUp,
    PostUp,
    PreDown,
    PostDown,
}

impl Stage {
    /// The option name, also `GATEWAY_HOOK`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::PreUp => "preUp",
            Stage::PostUp => "postUp",
            Stage::PreDown => "preDown",
            Stage::PostDown => "postDown",
        }
    }

    /// `preUp` and `postUp`: the stages a stop cuts short.
    pub fn is_up(self) -> bool {
        matches!(self, Stage::PreUp | Stage::PostUp)
    }
}

/// How long a `preUp`/`postUp` command cut short by a stop may take to exit
/// after SIGTERM before its process group gets SIGKILL (keepalived's 1 s).
pub const KILL_AFTER: Duration = Duration::from_secs(1);

/// Why a hook command failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{stage} command {command:?} could not start: {source}")]
    Spawn {
        stage: &'static str,
        command: String,
        source: io::Error,
    },
    #[error("{stage} command {command:?} failed: {status}")]
    Failed {
        stage: &'static str,
        command: String,
        status: ExitStatus,
    },
    #[error("{stage} command {command:?} still running after {timeout:?}: killed")]
    Timeout {
        stage: &'static str,
        command: String,
        timeout: Duration,
    },
    #[error("{stage} command {command:?} stopped: the daemon is stopping")]
    Stopped {
        stage: &'static str,
        command: String,
    },
}

/// Run `stage`'s commands of `cfg` in order, waiting for each (bounded by the
/// service's `hookTimeout`). `preUp` stops at the first failure and returns it;
/// the other stages log a failure and go on (and return the first one). A
/// cancelled `stop` cuts a `preUp`/`postUp` list short (module docs); the down
/// stages ignore it. Blocks: call it from a blocking thread.
pub fn run(cfg: &ServiceConfig, stage: Stage, stop: &CancellationToken) -> Result<(), HookError> {
    let hooks = cfg.hooks();
    let list = match stage {
        Stage::PreUp => &hooks.pre_up,
        Stage::PostUp => &hooks.post_up,
        Stage::PreDown => &hooks.pre_down,
        Stage::PostDown => &hooks.post_down,
    };
    let stop = stage.is_up().then_some(stop);
    let mut first_error = None;
    for command in list {
        let result = match stop {
            Some(t) if t.is_cancelled() => Err(HookError::Stopped {
                stage: stage.name(),
                command: command.clone(),
            }),
            _ => run_one(cfg, stage, command, hooks.timeout, stop),
        };
        match result {
            Ok(()) => info!(service = %cfg.name, hook = stage.name(), command, "hook ran"),
            Err(e) if stage == Stage::PreUp => return Err(e),
            // The rest of an up list is skipped once the daemon stops.
            Err(e @ HookError::Stopped { .. }) => {
                warn!(service = %cfg.name, "{e}");
                return Err(first_error.unwrap_or(e));
            }
            Err(e) => {
                warn!(service = %cfg.name, "{e}");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// `preUp` of a service about to start: `false` (and an error line) if the
/// service must stay down.
pub fn pre_up(cfg: &ServiceConfig, stop: &CancellationToken) -> bool {
    match run(cfg, Stage::PreUp, stop) {
        Ok(()) => true,
        Err(e) => {
            error!(service = %cfg.name, "service kept down: {e}");
            false
        }
    }
}

/// Run a stage whose failures are only logged (postUp, preDown, postDown).
pub fn run_logged(cfg: &ServiceConfig, stage: Stage, stop: &CancellationToken) {
    // Already logged command by command in `run`.
    let _ = run(cfg, stage, stop);
}

/// [`run_logged`] of a down stage from async code: on a blocking thread, so the
/// runtime's workers keep serving.
pub async fn run_down_async(cfg: ServiceConfig, stage: Stage) {
    debug_assert!(!stage.is_up());
    if cfg.hooks().is_empty() {
        return;
    }
    let name = cfg.name.clone();
    let never = CancellationToken::new();
    if let Err(e) = tokio::task::spawn_blocking(move || run_logged(&cfg, stage, &never)).await {
        warn!(service = %name, hook = stage.name(), "hook task failed: {e}");
    }
}

fn run_one(
    cfg: &ServiceConfig,
    stage: Stage,
    command: &str,
    timeout: Duration,
    stop: Option<&CancellationToken>,
) -> Result<(), HookError> {
    let s = stage.name();
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("GATEWAY_SERVICE", &cfg.name)
        .env("GATEWAY_ADDR", &cfg.addr.text)
        .env("GATEWAY_HOOK", s)
        .stdin(Stdio::null())
        // Its own process group, so a timeout kills what the shell started too.
        .process_group(0)
        .spawn()
        .map_err(|source| HookError::Spawn {
            stage: s,
            command: command.to_string(),
            source,
        })?;
    let group = i32::try_from(child.id()).ok().map(Pid::from_raw);
    let signal_group = |sig| {
        if let Some(pid) = group {
            let _ = killpg(pid, sig);
        }
    };
    let deadline = Instant::now() + timeout;
    // Set once a stop sent SIGTERM: SIGKILL follows at this instant.
    let mut kill_at: Option<Instant> = None;
    // Polled: std has no wait-with-timeout, and a hook is a rare, short event.
    // The pause is capped at 50 ms, which is also how soon a stop is noticed.
    let mut pause = Duration::from_millis(1);
    loop {
        let now = Instant::now();
        match child.try_wait() {
            Ok(Some(_)) if kill_at.is_some() => {
                // The group may hold what the shell started and left running.
                signal_group(Signal::SIGKILL);
                return Err(HookError::Stopped {
                    stage: s,
                    command: command.to_string(),
                });
            }
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(HookError::Failed {
                    stage: s,
                    command: command.to_string(),
                    status,
                });
            }
            Ok(None)
                if kill_at.is_some_and(|t| now >= t) || (kill_at.is_none() && now >= deadline) =>
            {
                signal_group(Signal::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                return Err(match kill_at {
                    Some(_) => HookError::Stopped {
                        stage: s,
                        command: command.to_string(),
                    },
                    None => HookError::Timeout {
                        stage: s,
                        command: command.to_string(),
                        timeout,
                    },
                });
            }
            Ok(None) if kill_at.is_none() && stop.is_some_and(CancellationToken::is_cancelled) => {
                signal_group(Signal::SIGTERM);
                kill_at = Some(now + KILL_AFTER);
                pause = Duration::from_millis(1);
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(source) => {
                signal_group(Signal::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Spawn {
                    stage: s,
                    command: command.to_string(),
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn service(hooks: &str) -> ServiceConfig {
        let yaml = format!(
            "services:\n- name: web\n  addr: \"127.0.0.1:0\"\n{hooks}  handler: {{type: http}}\n  listener: {{type: tcp}}\n"
        );
        Config::from_str_named(&yaml, Path::new("g.yml"))
            .unwrap()
            .services
            .remove(0)
    }

    #[test]
    fn commands_run_in_order_with_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let o = out.display();
        let s = service(&format!(
            "  metadata:\n    postUp:\n    - echo \"1 $GATEWAY_HOOK $GATEWAY_SERVICE $GATEWAY_ADDR\" >> {o}\n    - echo 2 >> {o}\n"
        ));
        run(&s, Stage::PostUp, &CancellationToken::new()).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text, "1 postUp web 127.0.0.1:0\n2\n");
    }

    #[test]
    fn pre_up_stops_at_the_first_failure_others_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let o = dir.path().join("out");
        let o = o.display();
        let s = service(&format!(
            "  preUp: [\"exit 3\", \"echo ran >> {o}\"]\n  postDown: [\"exit 4\", \"echo down >> {o}\"]\n"
        ));
        let e = run(&s, Stage::PreUp, &CancellationToken::new()).unwrap_err();
        assert!(
            e.to_string().contains("\"exit 3\" failed: exit status: 3"),
            "{e}"
        );
        assert!(!pre_up(&s, &CancellationToken::new()));
        assert!(!dir.path().join("out").exists());
        let e = run(&s, Stage::PostDown, &CancellationToken::new()).unwrap_err();
        assert!(e.to_string().contains("exit status: 4"), "{e}");
        let text = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(text, "down\n");
    }

    #[test]
    fn a_hanging_command_and_its_children_are_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let s = service(&format!(
            "  hookTimeout: 300ms\n  preUp: [\"sleep 60 & echo $! > {}; wait\"]\n",
            pidfile.display()
        ));
        let started = Instant::now();
        let e = run(&s, Stage::PreUp, &CancellationToken::new()).unwrap_err();
        assert!(matches!(e, HookError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // The grandchild (`sleep`) went with the shell.
        assert_gone(&pidfile);
    }

    /// The process whose pid is in `pidfile` ends (or is a zombie) within 2 s.
    fn assert_gone(pidfile: &Path) {
        let pid: i32 = std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = (0..200).any(|_| {
            let dead = nix::sys::signal::kill(Pid::from_raw(pid), None).is_err()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "));
            if !dead {
                std::thread::sleep(Duration::from_millis(10));
            }
            dead
        });
        assert!(gone, "{pid} survived");
    }

    /// Breaks if a stop does not cut a running `postUp` short (SIGTERM to its
    /// group: the shell and what it started), if the rest of the list still
    /// runs, or if a down stage is cut short too.
    #[test]
    fn a_stop_ends_an_up_hook_and_skips_the_rest_but_not_a_down_hook() {
        let dir = tempfile::tempdir().unwrap();
        let (pidfile, out) = (dir.path().join("pid"), dir.path().join("out"));
        let s = service(&format!(
            "  hookTimeout: 60s\n  postUp: [\"sleep 60 & echo $! > {p}; wait\", \"echo more >> {o}\"]\n  postDown: [\"echo down >> {o}\"]\n",
            p = pidfile.display(),
            o = out.display()
        ));
        let stop = CancellationToken::new();
        let started = Instant::now();
        let stopper = {
            let (stop, pidfile) = (stop.clone(), pidfile.clone());
            std::thread::spawn(move || {
                while !pidfile.exists() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                stop.cancel();
            })
        };
        let e = run(&s, Stage::PostUp, &stop).unwrap_err();
        stopper.join().unwrap();
        assert!(matches!(e, HookError::Stopped { .. }), "{e}");
        // SIGTERM ends `sleep` at once (KILL_AFTER is the most it may take),
        // where the command would have run for 60 s.
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_gone(&pidfile);
        assert!(!out.exists(), "the rest of the postUp list ran");
        run(&s, Stage::PostDown, &stop).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "down\n");
    }

    #[test]
    fn both_forms_at_once_are_refused() {
        let yaml = "services:\n- name: web\n  addr: \":1\"\n  preUp: [a]\n  metadata: {postUp: [b]}\n  handler: {type: http}\n  listener: {type: tcp}\n";
        let e = Config::from_str_named(yaml, Path::new("g.yml")).unwrap_err();
        assert!(
            e.to_string().contains("services[0].metadata: hooks both"),
            "{e}"
        );
        let yaml = "services:\n- name: web\n  addr: \":1\"\n  preUp: [\"\"]\n  handler: {type: http}\n  listener: {type: tcp}\n";
        let e = Config::from_str_named(yaml, Path::new("g.yml")).unwrap_err();
        assert!(e.to_string().contains("services[0].preUp[0]"), "{e}");
    }
}
