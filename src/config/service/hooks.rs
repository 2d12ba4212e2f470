//! GOST's service hooks: `preUp`, `postUp`, `preDown`, `postDown`.
//!
//! Lists of shell commands, run in order by `/bin/sh -c`, written either as
//! plain service fields or, as GOST writes them, under the service's
//! `metadata:` (one form per service; both at once is refused):
//!
//! ```yaml
//! services:
//! - name: service-0
//!   addr: ":8080"
//!   metadata:
//!     preUp: [echo pre-up]       # before the listener binds; failing keeps the service down
//!     postUp: [echo post-up]     # once it serves
//!     preDown: [echo pre-down]   # before it stops accepting
//!     postDown: [echo post-down] # after its connections drained
//!     hookTimeout: 30s           # per command; a command still running then is killed
//!   handler: {type: http}
//!   listener: {type: tcp}
//! ```
//!
//! When they run and what they see is in `src/proxy/hooks.rs` and
//! docs/services.md ("Hooks").

use std::time::Duration;

use crate::config::FieldError;
use crate::config::duration::DurationStr;

/// A service's hooks, whichever form they were written in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub pre_up: Vec<String>,
    pub post_up: Vec<String>,
    pub pre_down: Vec<String>,
    pub post_down: Vec<String>,
    /// The limit on each command ([`default_hook_timeout`] unless set).
    pub timeout: Duration,
}

/// How long one hook command may run before it is killed: 30 s.
pub fn default_hook_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Hooks {
    /// From the five options as written (`hookTimeout` 0 = the default).
    pub fn new(
        [pre_up, post_up, pre_down, post_down]: [&[String]; 4],
        timeout: DurationStr,
    ) -> Hooks {
        Hooks {
            pre_up: pre_up.to_vec(),
            post_up: post_up.to_vec(),
            pre_down: pre_down.to_vec(),
            post_down: post_down.to_vec(),
            timeout: timeout.get().unwrap_or_else(default_hook_timeout),
        }
    }

    /// No command at all.
    pub fn is_empty(&self) -> bool {
        self.pre_up.is_empty()
            && self.post_up.is_empty()
            && self.pre_down.is_empty()
            && self.post_down.is_empty()
    }

    /// Each list with its option name.
    pub fn lists(&self) -> [(&'static str, &[String]); 4] {
        [
            ("preUp", &self.pre_up),
            ("postUp", &self.post_up),
            ("preDown", &self.pre_down),
            ("postDown", &self.post_down),
        ]
    }

    /// An empty command is a mistake (`preUp: [""]`), not a no-op. `at` is the
    /// path of the map the options are in (`services[0]` or `services[0].metadata`).
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        for (name, list) in self.lists() {
            if let Some(j) = list.iter().position(|c| c.trim().is_empty()) {
                return Err(FieldError::new(
                    format!("{at}.{name}[{j}]"),
                    "expected a shell command, got an empty string",
                ));
            }
        }
        Ok(())
    }
}
