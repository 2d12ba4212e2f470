//! The operator's handle on a running failover: [`Control`] sends a [`Command`]
//! (standby, active) to the failover thread and waits for its answer; the thread
//! holds the other end, [`Commands`]. The rules of the commands themselves are the
//! machine's (`machine/control.rs`).

use std::time::Duration;

use tokio::sync::mpsc;

use super::FailoverStatus;
use crate::failover::machine::Refusal;

/// An operator's command for the running failover (see [`Control`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Standby {
        force: bool,
    },
    /// `force`: end a running standby departure first (its connections are cut).
    Active {
        force: bool,
    },
}

/// Why a [`Control`] command did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("failover is not running")]
    NotRunning,
}

pub(super) type Reply = tokio::sync::oneshot::Sender<Result<FailoverStatus, Refusal>>;

/// The handle to steer a running failover: put the node in standby (release the
/// VIP to the peer and stay out of the election) or make it active again. Cheap
/// to clone; every call is one message to the failover thread, answered once the
/// machine's actions (releasing the VIP, resigning) are done. Rules:
/// [`machine/control.rs`](super::machine::Refusal).
#[derive(Debug, Clone)]
pub struct Control {
    tx: mpsc::Sender<(Command, Reply)>,
}

/// The failover thread's end of [`Control`]; give it to [`spawn`].
#[derive(Debug)]
pub struct Commands {
    pub(super) rx: mpsc::Receiver<(Command, Reply)>,
    pub(super) grace: Option<Duration>,
}

impl Commands {
    /// On cancellation, a MASTER hands its connections over to the peer and
    /// serves them for at most `grace` ([`super::handover`]). Without it (or
    /// with zero) it releases the VIP as before.
    pub fn handover_grace(mut self, grace: Duration) -> Self {
        self.grace = (!grace.is_zero()).then_some(grace);
        self
    }
}

/// A control handle and the receiving end for [`spawn`].
pub fn control() -> (Control, Commands) {
    let (tx, rx) = mpsc::channel(8);
    (Control { tx }, Commands { rx, grace: None })
}

impl Control {
    /// Release the VIP to the peer (if MASTER) and stay BACKUP until
    /// [`Control::active`]. Refused unless a healthy peer is heard, or `force`.
    /// Returns the status after the change.
    pub async fn standby(&self, force: bool) -> Result<FailoverStatus, ControlError> {
        self.send(Command::Standby { force }).await
    }

    /// Take part in the election again. Refused while this node still serves
    /// the connections it handed over when it went to standby, unless `force`
    /// (which ends that first, cutting them).
    pub async fn active(&self, force: bool) -> Result<FailoverStatus, ControlError> {
        self.send(Command::Active { force }).await
    }

    pub async fn send(&self, cmd: Command) -> Result<FailoverStatus, ControlError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send((cmd, reply))
            .await
            .map_err(|_| ControlError::NotRunning)?;
        match answer.await {
            Ok(r) => r.map_err(ControlError::Refused),
            Err(_) => Err(ControlError::NotRunning),
        }
    }
}
