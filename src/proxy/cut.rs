//! Cutting connections to an address this host no longer holds.
//!
//! When a node loses the VIP (it yields, faults or stops), the TCP connections
//! clients made to the VIP on this node are dead: their next packets reach the new
//! master, which answers with a reset. Left alone, our side would wait for an idle
//! timeout and hold a graceful stop for the whole drain period. So every accepted
//! connection is tied to a token for its local address, and [`cut`] cancels all of
//! them at once. The registry is process-wide because "this host holds address X"
//! is a fact about the host, not about one service.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};

use tokio_util::sync::CancellationToken;

static TOKENS: LazyLock<Mutex<HashMap<IpAddr, CancellationToken>>> =
    LazyLock::new(Default::default);

/// The token that [`cut`] cancels for connections accepted on `local`.
pub fn token_for(local: IpAddr) -> CancellationToken {
    match TOKENS.lock() {
        Ok(mut map) => map.entry(local).or_default().clone(),
        // A poisoned map only means a panic elsewhere; a fresh token keeps serving.
        Err(_) => CancellationToken::new(),
    }
}

/// Close every connection accepted on `local` so far. Later connections get a new
/// token (the address may come back).
pub fn cut(local: IpAddr) {
    let token = TOKENS.lock().ok().and_then(|mut m| m.remove(&local));
    if let Some(t) = token {
        t.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_ends_only_that_address() {
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        let b: IpAddr = "192.0.2.11".parse().unwrap();
        let (ta, tb) = (token_for(a), token_for(b));
        cut(a);
        assert!(ta.is_cancelled());
        assert!(!tb.is_cancelled());
        // The address comes back: new connections are not born cut.
        assert!(!token_for(a).is_cancelled());
    }
}
