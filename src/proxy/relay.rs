//! Moving bytes between two connected streams.

use tokio::io::{AsyncRead, AsyncWrite};

/// Copy both directions until both sides are done; returns (a→b, b→a) byte counts.
/// (The proxy work replaces the TCP↔TCP case with splice(2).)
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional(a, b).await
}
