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
use std::future::Future;
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

/// Run `fut` until it ends or the address it was accepted on is cut.
pub async fn until_cut<F: Future<Output = ()>>(local: Option<IpAddr>, fut: F) {
    match local {
        Some(ip) => {
            let token = token_for(ip);
            tokio::select! {
                _ = fut => {}
                _ = token.cancelled() => tracing::debug!(%ip, "connection cut: address released"),
            }
        }
        None => fut.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn cut_ends_only_that_address() {
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        let b: IpAddr = "192.0.2.11".parse().unwrap();
        let ta = tokio::spawn(until_cut(Some(a), std::future::pending()));
        let tb = tokio::spawn(until_cut(Some(b), std::future::pending()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        cut(a);
        tokio::time::timeout(Duration::from_secs(1), ta)
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!tb.is_finished());
        tb.abort();
        // The address comes back: new connections are not born cut.
        assert!(!token_for(a).is_cancelled());
    }
}
