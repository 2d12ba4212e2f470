//! Moving bytes between two connected streams.
//!
//! A forwarded TCP connection is two sockets and two directions. Each direction
//! is a loop: wait until the source is readable, move what is there to the
//! destination, repeat until the source says end-of-stream; then half-close the
//! destination (`shutdown(SHUT_WR)`) so the peer sees the EOF too, while the other
//! direction keeps running. The connection is done when both directions are; an
//! error in either ends both (a reset on one side is passed on as a close).
//!
//! ## Zero copy on Linux
//!
//! Copying through user space costs two copies per byte (kernel → buffer →
//! kernel). `splice(2)` moves pages between a socket and a pipe without copying
//! them, so [`relay_tcp`] moves `socket → pipe → socket` and the payload never
//! enters this process. The sockets stay non-blocking and registered with tokio:
//! readiness comes from `poll_read_ready` / `poll_write_ready`, and each `splice`
//! runs inside `try_io`, which clears tokio's readiness flag when the kernel says
//! `EAGAIN`. The pipe is drained completely before the next read, so a splice
//! *into* the pipe never blocks on a full pipe.
//!
//! A direction starts by copying and switches to splice once one read fills a
//! whole 16 KiB buffer (HAProxy's `splice-auto` idea): for a short request or
//! response, `read` + `write` is fewer system calls and no pipe, while a bulk
//! transfer moves everything after its first 16 KiB without copying.
//!
//! Pipes cost two file descriptors and some kernel memory each, so a direction
//! holds one only while data flows: when its socket has nothing more to give, the
//! (then empty) pipe goes back to a small pool. An idle connection holds none. If
//! the kernel refuses `splice` for a socket (`EINVAL`, a socket type it does not
//! support), the direction falls back to copying.
//!
//! ## Small idle connections
//!
//! Each direction is a hand-written state machine (`Direction`) rather than an
//! `async fn`: a few words of state instead of nested futures, so ten thousand
//! idle connections cost little more than their sockets. The copying path takes a
//! 16 KiB buffer from a pool per chunk and gives it back once written.
//!
//! [`relay`] / [`relay_with`] are the generic versions for any
//! `AsyncRead + AsyncWrite` (TLS streams): pooled buffers, same half-close.
//!
//! ## Idle timeouts
//!
//! gobetween's `client_idle_timeout` / `backend_idle_timeout` mean "this side sent
//! nothing for that long". A direction waiting to *read* from a side uses that
//! side's timeout; waiting to *write* to a side that does not drain its receive
//! window (a stalled client) uses the receiving side's timeout. Expiry ends the
//! connection with `ErrorKind::TimedOut`.
//!
//! ## Files
//!
//! * this file: the entry points ([`relay`], [`relay_with`], [`relay_tcp`]),
//!   the generic copying loop and its [`IdleTimer`];
//! * `direction.rs`: one direction of a TCP relay, the state machine above;
//! * `splice.rs` (Linux): pipes, their pool and the two `splice(2)` calls;
//! * `pool.rs`: the pool of 16 KiB copy buffers;
//! * `tests.rs`: both paths end to end over loopback.

mod direction;
mod pool;
#[cfg(target_os = "linux")]
mod splice;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use self::direction::Direction;
use self::pool::PooledBuf;
use super::stats::ServiceStats;

/// Options of one relayed connection. `a` is the client side, `b` the backend.
#[derive(Debug, Clone, Default)]
pub struct RelayOpts {
    /// End when `a` sent nothing (or did not read) for this long.
    pub a_idle: Option<Duration>,
    /// End when `b` sent nothing (or did not read) for this long.
    pub b_idle: Option<Duration>,
    /// Added to as bytes move, in both directions (for `leastbandwidth`).
    pub counter: Option<Arc<AtomicU64>>,
    /// The service's counters: `a → b` bytes are added to `bytes_in` (from the
    /// client), `b → a` to `bytes_out`, as they move.
    pub service: Option<Arc<ServiceStats>>,
}

/// Copy both directions until both sides are done; returns (a→b, b→a) byte counts.
/// For any stream type; TCP↔TCP should use [`relay_tcp`].
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    relay_with(a, b, &RelayOpts::default()).await
}

/// [`relay`] with idle timeouts and a byte counter, using pooled buffers.
pub async fn relay_with<A, B>(a: &mut A, b: &mut B, opts: &RelayOpts) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (ar, aw) = &mut tokio::io::split(a);
    let (br, bw) = &mut tokio::io::split(b);
    let (up, down) = served(opts);
    tokio::try_join!(
        copy_stream(
            ar,
            bw,
            opts.a_idle,
            opts.b_idle,
            [opts.counter.as_deref(), up]
        ),
        copy_stream(
            br,
            aw,
            opts.b_idle,
            opts.a_idle,
            [opts.counter.as_deref(), down]
        ),
    )
}

/// The service counters of the two directions: (`a → b`, `b → a`).
fn served(opts: &RelayOpts) -> (Option<&AtomicU64>, Option<&AtomicU64>) {
    match opts.service.as_deref() {
        Some(s) => (Some(&s.bytes_in), Some(&s.bytes_out)),
        None => (None, None),
    }
}

async fn copy_stream<R, W>(
    src: &mut R,
    dst: &mut W,
    read_idle: Option<Duration>,
    write_idle: Option<Duration>,
    counters: [Option<&AtomicU64>; 2],
) -> io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf: Option<PooledBuf> = None;
    let mut total = 0u64;
    let (mut rt, mut wt) = (
        IdleTimer::new(read_idle, "read"),
        IdleTimer::new(write_idle, "write"),
    );
    loop {
        let b = buf.get_or_insert_with(PooledBuf::get);
        let n = rt.wait(src.read(&mut b.0[..])).await?;
        if n == 0 {
            break;
        }
        wt.wait(dst.write_all(&b.0[..n])).await?;
        total += n as u64;
        for c in counters.into_iter().flatten() {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    // Pass the EOF on; the peer may already be gone, which is not an error here.
    let _ = dst.shutdown().await;
    Ok(total)
}

/// Relay two TCP sockets: splice(2) on Linux, pooled-buffer copying elsewhere.
/// Returns (a→b, b→a) byte counts.
///
/// On success both directions have ended and the side that ended last has not
/// been half-closed: the caller is expected to drop (close) both sockets, which
/// sends that last FIN.
pub async fn relay_tcp(a: &TcpStream, b: &TcpStream, opts: &RelayOpts) -> io::Result<(u64, u64)> {
    relay_tcp_mode(a, b, opts, SPLICE_ENABLED.load(Ordering::Relaxed)).await
}

async fn relay_tcp_mode(
    a: &TcpStream,
    b: &TcpStream,
    opts: &RelayOpts,
    splice: bool,
) -> io::Result<(u64, u64)> {
    let counter = opts.counter.as_deref();
    let (served_up, served_down) = served(opts);
    let mut up = Direction::new(a, b, opts.a_idle, opts.b_idle, [counter, served_up], splice);
    let mut down = Direction::new(
        b,
        a,
        opts.b_idle,
        opts.a_idle,
        [counter, served_down],
        splice,
    );
    let (mut up_done, mut down_done) = (None, None);
    std::future::poll_fn(|cx| {
        if let Err(e) = up.poll_unless_done(cx, &mut up_done, down_done.is_some()) {
            return Poll::Ready(Err(e));
        }
        if let Err(e) = down.poll_unless_done(cx, &mut down_done, up_done.is_some()) {
            return Poll::Ready(Err(e));
        }
        match (up_done, down_done) {
            (Some(u), Some(d)) => Poll::Ready(Ok((u, d))),
            _ => Poll::Pending,
        }
    })
    .await
}

static SPLICE_ENABLED: AtomicBool = AtomicBool::new(true);

/// Turn zero-copy relaying on or off for connections relayed from now on (on by
/// default). Off is the copying path everywhere: an escape hatch if a kernel
/// misbehaves, and the baseline the benchmark compares against.
pub fn set_splice(enabled: bool) {
    SPLICE_ENABLED.store(enabled, Ordering::Relaxed);
}

/// An idle timer reused across waits of the generic relay. The `Sleep` is boxed
/// and created on first use, so a relay without idle timeouts carries none.
pub(crate) struct IdleTimer {
    limit: Option<Duration>,
    what: &'static str,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    pub(crate) fn new(limit: Option<Duration>, what: &'static str) -> IdleTimer {
        IdleTimer {
            limit,
            what,
            sleep: None,
        }
    }

    /// Await `fut`, failing with `TimedOut` if it takes longer than the limit.
    pub(crate) async fn wait<F, T>(&mut self, fut: F) -> io::Result<T>
    where
        F: Future<Output = io::Result<T>>,
    {
        let Some(d) = self.limit else {
            return fut.await;
        };
        let deadline = super::clock::deadline_in(d);
        let sleep = match &mut self.sleep {
            Some(s) => {
                s.as_mut().reset(deadline);
                s
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        tokio::select! {
            biased;
            r = fut => r,
            _ = sleep.as_mut() => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("idle for {d:?} waiting to {}", self.what),
            )),
        }
    }
}
