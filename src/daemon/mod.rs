//! The running daemon: one owner for what can change while it runs.
//!
//! [`run`] is the process's life after the configuration was read: it starts the
//! services (a port that cannot be bound stops the start before the VIP is ever
//! touched), the failover and the Web API, then waits for signals and for the
//! failover to end. Everything that may change at run time — the configuration as
//! loaded, the [`ServiceSet`](crate::proxy::ServiceSet), the failover keys — lives
//! in one [`Daemon`] behind one mutex ([`Shared`]): SIGHUP and the Web API go
//! through the same methods, so a reload and an API edit never interleave, and a
//! change that fails validation changes nothing, whichever door it came in by.
//!
//! The signal loop never waits for a hook: a change (the start, a SIGHUP
//! reload, an API edit) runs on a task of its own ([`control`]), so SIGTERM is
//! acted on at once even while a 30 s `preUp` runs: the failover releases (or
//! hands over) the VIP straight away, the running `preUp`/`postUp` command is
//! stopped (SIGTERM, SIGKILL a second later), and the services stop, each with
//! its `preDown` and `postDown`. A SIGHUP that arrives while a change runs is
//! kept (several count as one) and the file is read again once it is done.
//!
//! [`state`] holds the [`Daemon`] and its verbs (reload, service edits, save);
//! [`control`] applies them; this file the loop.

pub mod control;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::ApiConfig;
use crate::failover::auth::Keyring;
use crate::failover::driver::{self, FailoverError, FailoverStatus};
use crate::failover::machine::State;
use crate::proxy::ProxyError;
pub use control::{Shared, lock};
pub use state::{Daemon, EditError, Source};

/// What the command line adds to the file.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration file (SIGHUP and `POST /config/reload` re-read it).
    pub config: PathBuf,
    /// On stop, how long in-flight connections may finish.
    pub grace: Duration,
    /// `-api`: overrides the file's `api:` section.
    pub api: Option<ApiConfig>,
    /// `-metrics`: overrides the file's `metrics:` section.
    pub metrics: Option<crate::config::metrics::MetricsConfig>,
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("starting services: {0}")]
    Services(#[from] ProxyError),
    #[error("api: {0}")]
    Api(String),
    #[error("{0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("failover: {0}")]
    Failover(#[from] FailoverError),
    #[error("failover stopped unexpectedly")]
    FailoverStopped,
    #[error("failover task failed: {0}")]
    FailoverTask(String),
    #[error("failover did not stop in time (5 s; the grace time + 5 s after a handover)")]
    FailoverStuck,
}

/// Whether this node is master (holds the VIP), following `status` until the
/// failover ends: what ACME needs of failover, without knowing its types.
fn holds_vip(mut status: watch::Receiver<FailoverStatus>) -> watch::Receiver<bool> {
    let master = |s: &FailoverStatus| s.state == State::Master;
    let (tx, rx) = watch::channel(master(&status.borrow_and_update()));
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let now = master(&status.borrow_and_update());
            tx.send_if_modified(|was| std::mem::replace(was, now) != now);
        }
    });
    rx
}

/// Run until SIGTERM/SIGINT (or until the failover fails).
pub async fn run(opts: Options, source: Source) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let cancel = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;

    // The failover status channel exists before the services, so that ACME
    // (src/proxy/acme.rs) can follow it: only the VIP holder orders certificates.
    let status_channel = (source.loaded.floating_ip.as_ref())
        .map(|fip| watch::channel(FailoverStatus::starting(fip)));
    if let Some(acme) = &source.loaded.config.acme {
        crate::proxy::acme::install(
            acme.clone(),
            status_channel.as_ref().map(|(_, rx)| holds_vip(rx.clone())),
        );
    }

    let keys = (source.loaded.floating_ip.as_ref())
        .map(|fip| watch::channel(Arc::new(Keyring::from_config(&fip.keys))));
    let fip = source.loaded.floating_ip.clone();
    let api_cfg = opts.api.clone().or(source.loaded.config.api.clone());
    let metrics_cfg = (opts.metrics.clone()).or(source.loaded.config.metrics.clone());
    let n_services = source.loaded.config.services.len();
    let daemon = Daemon::new(
        opts.config.clone(),
        source,
        keys.as_ref().map(|(tx, _)| tx.clone()),
    );
    let daemon = Shared::new(daemon, cancel.clone());
    // The services start before anything else (a taken port stops the daemon
    // before the VIP is touched), with SIGTERM heard meanwhile: a slow hook
    // does not hold up a stop.
    let mut starting = std::pin::pin!(daemon.start_services());
    let started = loop {
        tokio::select! {
            r = &mut starting => break r,
            _ = term.recv() => stop_signal(&cancel, "SIGTERM"),
            _ = int.recv() => stop_signal(&cancel, "SIGINT"),
        }
    };
    if cancel.is_cancelled() {
        let (services, _) = daemon.take_services().await;
        services.shutdown(opts.grace).await;
        return Ok(());
    }
    started?;
    if n_services > 0 {
        tracing::info!(services = n_services, "services started");
    }

    let status_rx = status_channel.as_ref().map(|(_, rx)| rx.clone());
    // The operator's standby/active switch, for the Web API.
    let (control, commands) = driver::control();
    // On SIGTERM a master hands its VIP connections to the peer (failover::handover).
    let commands = commands.handover_grace(opts.grace);
    if let Some(cfg) = api_cfg {
        let ctx = crate::api::Context {
            daemon: daemon.clone(),
            failover: status_rx.clone(),
            control: fip.is_some().then(|| control.clone()),
        };
        crate::api::spawn(cfg, ctx, cancel.clone())
            .await
            .map_err(|e| DaemonError::Api(e.to_string()))?;
    }
    // The metrics endpoint reads the services through a view that follows every
    // reload and API edit; like the API, a taken port stops the start here.
    if let Some(cfg) = metrics_cfg {
        let view = lock(&daemon).services().view();
        let sources = crate::metrics::Sources::new(view, status_rx.clone());
        crate::metrics::MetricsServer::start(&cfg, sources, cancel.clone()).await?;
    }

    let mut failover = fip
        .zip(status_channel)
        .zip(keys)
        .map(|((fip, (tx, rx)), (_, krx))| {
            for n in &fip.notes {
                tracing::info!("floating_ip: {n}");
            }
            (driver::spawn(fip, tx, krx, commands, cancel.clone()), rx)
        });

    // SIGHUP: re-read the file on a task of its own; SIGHUPs during a reload
    // count as one more reload (a Notify keeps one permit).
    let reload_wanted = Arc::new(tokio::sync::Notify::new());
    let reloader = {
        let (wanted, daemon) = (reload_wanted.clone(), daemon.clone());
        tokio::spawn(async move {
            loop {
                wanted.notified().await;
                // Logged by the reload itself.
                let _ = daemon.reload_file().await;
            }
        })
    };

    let mut was_master = false;
    let mut status = status_rx;
    let failover_ended = loop {
        let failover_done = async {
            match failover.as_mut() {
                Some((handle, _)) => handle.await,
                None => std::future::pending().await,
            }
        };
        let status_changed = async {
            match status.as_mut() {
                Some(rx) => rx
                    .changed()
                    .await
                    .ok()
                    .map(|()| rx.borrow_and_update().clone()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(st) = status_changed => {
                // Connections clients made to the VIP here die once it moves: cut
                // them now instead of letting them idle out — unless they were
                // handed over (failover::handover): then once that ends.
                let master = st.state == State::Master || st.handover;
                if was_master && !master {
                    crate::proxy::cut::cut(st.vip.into());
                }
                was_master = master;
            }
            _ = term.recv() => { stop_signal(&cancel, "SIGTERM"); break None; }
            _ = int.recv() => { stop_signal(&cancel, "SIGINT"); break None; }
            _ = hup.recv() => reload_wanted.notify_one(),
            r = failover_done => break Some(r),
        }
    };
    // Stops the failover, the API, and any hook of a change in flight.
    cancel.cancel();
    reloader.abort();
    let result = match failover_ended {
        // Failover stopped on its own: that is a failure, the VIP can no longer move.
        Some(Ok(Ok(()))) => Err(DaemonError::FailoverStopped),
        Some(Ok(Err(e))) => Err(e.into()),
        Some(Err(e)) => Err(DaemonError::FailoverTask(e.to_string())),
        None => {
            // The driver releases the VIP and resigns (STOPPED); after a handover
            // it keeps serving the old connections for up to the grace time, while
            // the services drain them.
            let handed_over = match failover.as_mut() {
                Some((_, rx)) => matches!(
                    tokio::time::timeout(
                        Duration::from_secs(5),
                        rx.wait_for(|s| s.state == State::Stopped)
                    )
                    .await,
                    Ok(Ok(s)) if s.handover
                ),
                None => false,
            };
            let (services, vip) = daemon.take_services().await;
            if let (Some(vip), false) = (vip, handed_over) {
                // The VIP is released; what was accepted on it cannot finish.
                crate::proxy::cut::cut(vip.into());
            }
            let stopped = async {
                match failover.take() {
                    Some((handle, _)) => {
                        let limit = opts.grace + Duration::from_secs(5);
                        match tokio::time::timeout(limit, handle).await {
                            Ok(Ok(Ok(()))) => Ok(()),
                            Ok(Ok(Err(e))) => Err(e.into()),
                            Ok(Err(e)) => Err(DaemonError::FailoverTask(e.to_string())),
                            Err(_) => Err(DaemonError::FailoverStuck),
                        }
                    }
                    None => Ok(()),
                }
            };
            let (result, ()) = tokio::join!(stopped, services.shutdown(opts.grace));
            return result;
        }
    };
    let (services, vip) = daemon.take_services().await;
    if let Some(vip) = vip {
        // The VIP is released by now; what was accepted on it cannot finish.
        crate::proxy::cut::cut(vip.into());
    }
    services.shutdown(opts.grace).await;
    result
}

/// A stop signal: log it and cancel everything that runs (see the module docs).
fn stop_signal(cancel: &CancellationToken, name: &str) {
    tracing::info!("{name} received: shutting down");
    cancel.cancel();
}
