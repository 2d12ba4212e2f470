//! Applying a change (start, reload, API edit) without ever blocking the
//! daemon's signal loop or its lock on a hook.
//!
//! A change runs in four steps (`crate::proxy`'s [`Plan`](crate::proxy::Plan)):
//!
//! 1. under the [`Daemon`] lock, quick: validate it, and plan which services
//!    start and stop;
//! 2. on a blocking thread, no lock: each new service's `preUp`, then its bind.
//!    A service that cannot start rolls the whole change back (the services of
//!    step 2 run their `postDown`, nothing of the running configuration is
//!    touched) and one log line says why;
//! 3. under the lock, quick: the new services serve, the change becomes what
//!    runs;
//! 4. on a blocking thread, no lock: the new services' `postUp`, then the
//!    retired ones' `preDown` before they stop accepting (their drain and
//!    `postDown` go on in the background).
//!
//! Changes are serialised by a turn ([`tokio::sync::Mutex`]) held across all
//! four steps, so two never interleave and a service's hooks keep their order;
//! readers (the status page, `GET /config`) take only the short lock and are
//! never held up by a hook. A change runs on a task of its own: an API client
//! that hangs up does not cut it in half.
//!
//! The daemon's stop token cancels a change in flight: the `preUp` or `postUp`
//! command running gets SIGTERM (SIGKILL a second later,
//! [`hooks::KILL_AFTER`](crate::proxy::hooks::KILL_AFTER)), a change still in
//! step 2 rolls back, and a change asked for afterwards is refused. Down hooks
//! run on: see `crate::proxy::hooks`.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use super::state::{Change, Daemon, EditError, Section};
use crate::proxy::{ProxyError, ServiceSet};

/// The daemon's state, shared by the signal loop and the Web API. A clone is a
/// handle on the same daemon.
#[derive(Debug, Clone)]
pub struct Shared {
    daemon: Arc<Mutex<Daemon>>,
    /// One change at a time, across its hooks.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Cancelled when the daemon stops.
    stop: CancellationToken,
}

/// Why a change did not apply.
enum Failed {
    /// Refused before anything started (validation).
    Refused(EditError),
    /// A service could not start (or the daemon is stopping): rolled back.
    Services(ProxyError),
}

impl From<Failed> for EditError {
    fn from(f: Failed) -> EditError {
        match f {
            Failed::Refused(e) => e,
            Failed::Services(e) => EditError::Create(e.to_string()),
        }
    }
}

/// Lock the daemon; a panic elsewhere while holding it does not stop the rest.
pub fn lock(d: &Shared) -> MutexGuard<'_, Daemon> {
    d.daemon.lock().unwrap_or_else(|p| p.into_inner())
}

/// The result of a task that never gets aborted: a panic goes on unwinding.
fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, ProxyError> {
    match r {
        Ok(v) => Ok(v),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only the runtime shutting down cancels it.
        Err(_) => Err(ProxyError::Stopping),
    }
}

impl Shared {
    /// Share `daemon`; `stop` is the daemon's stop token (module docs).
    pub fn new(daemon: Daemon, stop: CancellationToken) -> Shared {
        Shared {
            daemon: Arc::new(Mutex::new(daemon)),
            turn: Arc::new(tokio::sync::Mutex::new(())),
            stop,
        }
    }

    /// Start the services the daemon was created with. An error names the
    /// service that could not start (those before it were rolled back), or
    /// says the daemon began to stop meanwhile.
    pub async fn start_services(&self) -> Result<(), ProxyError> {
        match self.apply("start", |_| Ok((Change::Start, ()))).await {
            Ok(()) => Ok(()),
            Err(Failed::Services(e)) => Err(e),
            Err(Failed::Refused(e)) => Err(ProxyError::Service {
                service: String::new(),
                message: e.to_string(),
            }),
        }
    }

    /// SIGHUP and `POST /config/reload`: re-read the file (and flags) and apply
    /// it; a bad file, or a service that cannot start, changes nothing.
    pub async fn reload_file(&self) -> Result<(), EditError> {
        Ok(self.apply("reload", |d| Ok((d.load_file()?, ()))).await?)
    }

    /// `POST /config/services` (or `chains`): add the object `body` describes
    /// (YAML or JSON). Returns its name.
    pub async fn add<T: Section>(&self, body: Vec<u8>) -> Result<String, EditError> {
        let name = self.apply("API edit", move |d| d.add::<T>(&body)).await?;
        tracing::info!(name = %name, "{} added through the API", T::NOUN);
        Ok(name)
    }

    /// `PUT /config/services/{name}`: replace an object.
    pub async fn replace<T: Section>(&self, name: String, body: Vec<u8>) -> Result<(), EditError> {
        let n = name.clone();
        (self
            .apply("API edit", move |d| Ok((d.replace::<T>(&n, &body)?, ())))
            .await)?;
        tracing::info!(name = %name, "{} replaced through the API", T::NOUN);
        Ok(())
    }

    /// `DELETE /config/services/{name}`: remove an object.
    pub async fn delete<T: Section>(&self, name: String) -> Result<(), EditError> {
        let n = name.clone();
        (self
            .apply("API edit", move |d| Ok((d.delete::<T>(&n)?, ())))
            .await)?;
        tracing::info!(name = %name, "{} deleted through the API", T::NOUN);
        Ok(())
    }

    /// Take the services for the final shutdown, with the VIP to cut (if any),
    /// once the change in flight (cut short by the stop token) has ended.
    pub async fn take_services(&self) -> (ServiceSet, Option<Ipv4Addr>) {
        let _turn = self.turn.lock().await;
        lock(self).take_services()
    }

    /// Run one change through its four steps (module docs), on a task of its
    /// own. `what` names it in the log.
    async fn apply<R, F>(&self, what: &'static str, build: F) -> Result<R, Failed>
    where
        R: Send + 'static,
        F: FnOnce(&Daemon) -> Result<(Change, R), EditError> + Send + 'static,
    {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let _turn = this.turn.lock().await;
            if this.stop.is_cancelled() {
                return Err(Failed::Services(ProxyError::Stopping));
            }
            // 1. Validate and plan.
            let (change, out, plan) = {
                let d = lock(&this);
                let (change, out) = build(&d).map_err(Failed::Refused)?;
                let plan = d.plan(&change);
                (change, out, plan)
            };
            // 2. preUp hooks and binds.
            let stop = this.stop.clone();
            let prepared = tokio::task::spawn_blocking(move || plan.prepare(&stop)).await;
            let prepared = match joined(prepared).and_then(|p| p) {
                Ok(p) => p,
                Err(e) => {
                    match (&e, what) {
                        (ProxyError::Stopping, _) => {
                            tracing::info!("{what} abandoned: the daemon is stopping")
                        }
                        // The daemon reports it as it exits.
                        (_, "start") => {}
                        _ => tracing::error!(
                            "{what} rolled back, keeping the running configuration: {e}"
                        ),
                    }
                    return Err(Failed::Services(e));
                }
            };
            // 3. Serve, and make the change what runs.
            let committed = lock(&this).commit(change, prepared);
            // 4. postUp, preDown.
            let stop = this.stop.clone();
            let finished = tokio::task::spawn_blocking(move || committed.finish(&stop)).await;
            joined(finished).map_err(Failed::Services)?;
            Ok(out)
        });
        joined(task.await).map_err(Failed::Services)?
    }
}
