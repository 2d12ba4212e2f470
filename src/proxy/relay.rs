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
//! enters this process. The sockets stay non-blocking and stay registered with
//! tokio: readiness comes from `TcpStream::readable()` / `writable()`, and each
//! `splice` runs inside `try_io`, which clears tokio's readiness flag when the
//! kernel says `EAGAIN`. The pipe is drained completely before the next read, so
//! a splice *into* the pipe never blocks on a full pipe.
//!
//! Pipes cost two file descriptors each, so they are taken lazily (an idle
//! connection holds none) and returned, empty, to a small pool when a direction
//! ends. If the kernel refuses `splice` for a socket (`EINVAL`, e.g. a socket type
//! it does not support), the direction falls back to copying.
//!
//! ## Copying
//!
//! The copying path (non-Linux, the fallback, and [`relay`] for any
//! `AsyncRead + AsyncWrite`, e.g. TLS streams) uses 16 KiB buffers from a pool, also
//! taken only once data arrives.
//!
//! ## Idle timeouts
//!
//! gobetween's `client_idle_timeout` / `backend_idle_timeout` mean "this side sent
//! nothing for that long". A direction waiting to *read* from a side uses that
//! side's timeout; waiting to *write* to a side that does not drain its receive
//! window (a stalled client) uses the receiving side's timeout. Expiry ends the
//! connection with `ErrorKind::TimedOut`.

use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Options of one relayed connection. `a` is the client side, `b` the backend.
#[derive(Debug, Clone, Default)]
pub struct RelayOpts {
    /// End when `a` sent nothing (or did not read) for this long.
    pub a_idle: Option<Duration>,
    /// End when `b` sent nothing (or did not read) for this long.
    pub b_idle: Option<Duration>,
    /// Added to as bytes move, in both directions (for `leastbandwidth`).
    pub counter: Option<Arc<AtomicU64>>,
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
    tokio::try_join!(
        copy_stream(ar, bw, opts.a_idle, opts.b_idle, opts.counter.as_deref()),
        copy_stream(br, aw, opts.b_idle, opts.a_idle, opts.counter.as_deref()),
    )
}

async fn copy_stream<R, W>(
    src: &mut R,
    dst: &mut W,
    read_idle: Option<Duration>,
    write_idle: Option<Duration>,
    counter: Option<&AtomicU64>,
) -> io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf: Option<PooledBuf> = None;
    let mut total = 0u64;
    loop {
        let b = buf.get_or_insert_with(PooledBuf::get);
        let n = idle(read_idle, "read", src.read(&mut b.0[..])).await?;
        if n == 0 {
            break;
        }
        idle(write_idle, "write", dst.write_all(&b.0[..n])).await?;
        total += n as u64;
        if let Some(c) = counter {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    // Pass the EOF on; the peer may already be gone, which is not an error here.
    let _ = dst.shutdown().await;
    Ok(total)
}

/// Relay two TCP sockets: splice(2) on Linux, pooled-buffer copying elsewhere.
/// Returns (a→b, b→a) byte counts.
pub async fn relay_tcp(a: &TcpStream, b: &TcpStream, opts: &RelayOpts) -> io::Result<(u64, u64)> {
    let counter = opts.counter.as_deref();
    tokio::try_join!(
        tcp_direction(a, b, opts.a_idle, opts.b_idle, counter),
        tcp_direction(b, a, opts.b_idle, opts.a_idle, counter),
    )
}

async fn tcp_direction(
    src: &TcpStream,
    dst: &TcpStream,
    read_idle: Option<Duration>,
    write_idle: Option<Duration>,
    counter: Option<&AtomicU64>,
) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    if SPLICE_ENABLED.load(Ordering::Relaxed) {
        match splice::direction(src, dst, read_idle, write_idle, counter).await {
            Ok(n) => return finish(dst, n),
            Err(splice::SpliceError::Unsupported) => {
                tracing::debug!("splice unsupported for this socket pair; copying");
            }
            Err(splice::SpliceError::Io(e)) => return Err(e),
        }
    }
    let n = copy_tcp(src, dst, read_idle, write_idle, counter).await?;
    finish(dst, n)
}

static SPLICE_ENABLED: AtomicBool = AtomicBool::new(true);

/// Turn zero-copy relaying on or off for connections relayed from now on (on by
/// default). Off is the copying path everywhere: an escape hatch if a kernel
/// misbehaves, and the baseline the benchmark compares against.
pub fn set_splice(enabled: bool) {
    SPLICE_ENABLED.store(enabled, Ordering::Relaxed);
}

/// Half-close `dst` after its source ended: the peer reads EOF, the other
/// direction stays open.
fn finish(dst: &TcpStream, n: u64) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a descriptor we borrow for the duration of the call.
    let r = unsafe { libc::shutdown(dst.as_raw_fd(), libc::SHUT_WR) };
    if r != 0 {
        let e = io::Error::last_os_error();
        // ENOTCONN: the peer already closed fully; nothing left to tell it.
        if e.raw_os_error() != Some(libc::ENOTCONN) {
            return Err(e);
        }
    }
    Ok(n)
}

async fn copy_tcp(
    src: &TcpStream,
    dst: &TcpStream,
    read_idle: Option<Duration>,
    write_idle: Option<Duration>,
    counter: Option<&AtomicU64>,
) -> io::Result<u64> {
    let mut buf: Option<PooledBuf> = None;
    let mut total = 0u64;
    loop {
        idle(read_idle, "read", src.readable()).await?;
        let b = buf.get_or_insert_with(PooledBuf::get);
        let n = match src.try_read(&mut b.0[..]) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut off = 0;
        while off < n {
            idle(write_idle, "write", dst.writable()).await?;
            match dst.try_write(&b.0[off..n]) {
                Ok(m) => off += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
        if let Some(c) = counter {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Await `fut`, failing with `TimedOut` after `limit` (if any).
async fn idle<F: std::future::Future<Output = io::Result<T>>, T>(
    limit: Option<Duration>,
    what: &'static str,
    fut: F,
) -> io::Result<T> {
    match limit {
        None => fut.await,
        Some(d) => match tokio::time::timeout(d, fut).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("idle for {d:?} waiting to {what}"),
            )),
        },
    }
}

const BUF_SIZE: usize = 16 * 1024;
/// Buffers kept for reuse; beyond that they are freed (a burst does not pin memory).
const BUF_POOL_MAX: usize = 512;

static BUF_POOL: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// A 16 KiB buffer that goes back to the pool when dropped.
struct PooledBuf(Box<[u8]>);

impl PooledBuf {
    fn get() -> PooledBuf {
        let reused = BUF_POOL.lock().ok().and_then(|mut p| p.pop());
        PooledBuf(reused.unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice()))
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Ok(mut p) = BUF_POOL.lock()
            && p.len() < BUF_POOL_MAX
        {
            p.push(std::mem::take(&mut self.0));
        }
    }
}

#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use nix::errno::Errno;
    use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::idle;

    /// Bytes asked for per splice; also the pipe size we ask the kernel for.
    const CHUNK: usize = 256 * 1024;
    const PIPE_POOL_MAX: usize = 256;

    static PIPE_POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

    pub(super) enum SpliceError {
        /// The kernel does not splice this socket: copy instead.
        Unsupported,
        Io(io::Error),
    }

    impl From<io::Error> for SpliceError {
        fn from(e: io::Error) -> Self {
            SpliceError::Io(e)
        }
    }

    /// A non-blocking pipe. Only an empty pipe goes back to the pool.
    struct Pipe {
        r: OwnedFd,
        w: OwnedFd,
    }

    impl Pipe {
        fn get() -> io::Result<Pipe> {
            if let Some(p) = PIPE_POOL.lock().ok().and_then(|mut p| p.pop()) {
                return Ok(p);
            }
            let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
            // A bigger pipe means fewer syscalls per megabyte; failing to grow it
            // (pipe-max-size, per-user limits) only costs speed.
            let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
            Ok(Pipe { r, w })
        }

        fn put(self) {
            if let Ok(mut p) = PIPE_POOL.lock()
                && p.len() < PIPE_POOL_MAX
            {
                p.push(self);
            }
        }
    }

    fn flags() -> SpliceFFlags {
        SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
    }

    pub(super) async fn direction(
        src: &TcpStream,
        dst: &TcpStream,
        read_idle: Option<Duration>,
        write_idle: Option<Duration>,
        counter: Option<&AtomicU64>,
    ) -> Result<u64, SpliceError> {
        let mut pipe: Option<Pipe> = None;
        let mut total = 0u64;
        loop {
            idle(read_idle, "read", src.readable()).await?;
            let p = match &pipe {
                Some(p) => p,
                None => pipe.insert(Pipe::get()?),
            };
            let read = src.try_io(Interest::READABLE, || {
                splice(src.as_fd(), None, &p.w, None, CHUNK, flags()).map_err(io::Error::from)
            });
            let n = match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if total == 0 && is_unsupported(&e) => return Err(SpliceError::Unsupported),
                Err(e) => return Err(e.into()),
            };
            let mut left = n;
            while left > 0 {
                idle(write_idle, "write", dst.writable()).await?;
                let wrote = dst.try_io(Interest::WRITABLE, || {
                    splice(&p.r, None, dst.as_fd(), None, left, flags()).map_err(io::Error::from)
                });
                match wrote {
                    Ok(m) => {
                        left -= m;
                        total += m as u64;
                        if let Some(c) = counter {
                            c.fetch_add(m as u64, Ordering::Relaxed);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    // Bytes are stuck in the pipe: it is dropped (closed), not pooled.
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if let Some(p) = pipe {
            p.put();
        }
        Ok(total)
    }

    fn is_unsupported(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error().map(Errno::from_raw),
            Some(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.unwrap(), s.unwrap().0)
    }

    /// client <-> (ps relay pb) <-> backend, with a half-close in the middle.
    #[tokio::test]
    async fn relays_both_ways_with_half_close() {
        let (mut client, ps) = pair().await;
        let (pb, mut backend) = pair().await;
        let counter = Arc::new(AtomicU64::new(0));
        let opts = RelayOpts {
            counter: Some(counter.clone()),
            ..Default::default()
        };
        let relay = tokio::spawn(async move { relay_tcp(&ps, &pb, &opts).await });
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&p2).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), payload.len());
        assert!(got == payload);
        // After the client's EOF the backend can still answer.
        backend.write_all(b"answer").await.unwrap();
        backend.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"answer");
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!((up, down), (3_000_000, 6));
        assert_eq!(counter.load(Ordering::Relaxed), 3_000_006);
    }

    #[tokio::test]
    async fn idle_timeout_ends_relay() {
        let (_client, ps) = pair().await;
        let (pb, _backend) = pair().await;
        let opts = RelayOpts {
            a_idle: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        let e = relay_tcp(&ps, &pb, &opts).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn generic_relay_copies() {
        let (mut client, mut ps) = pair().await;
        let (mut pb, mut backend) = pair().await;
        let relay = tokio::spawn(async move { relay(&mut ps, &mut pb).await });
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        drop(backend);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(relay.await.unwrap().unwrap(), (5, 0));
    }
}
