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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Sleep;

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
        if up_done.is_none() {
            up.other_done = down_done.is_some();
            match up.poll(cx) {
                Poll::Ready(Ok(n)) => up_done = Some(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        if down_done.is_none() {
            down.other_done = up_done.is_some();
            match down.poll(cx) {
                Poll::Ready(Ok(n)) => down_done = Some(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
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

/// Bytes read from the source and not yet written to the destination.
enum InFlight {
    None,
    #[cfg(target_os = "linux")]
    Pipe {
        pipe: splice::Pipe,
        left: usize,
    },
    Buf {
        buf: PooledBuf,
        off: usize,
        len: usize,
    },
}

/// What the idle timer is currently measuring.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Nothing,
    Read,
    Write,
}

/// One direction of a TCP relay, `src → dst`, as a state machine.
struct Direction<'a> {
    src: &'a TcpStream,
    dst: &'a TcpStream,
    /// Added to as bytes move: the node's and the service's counters.
    counters: [Option<&'a AtomicU64>; 2],
    read_idle: Option<Duration>,
    write_idle: Option<Duration>,
    in_flight: InFlight,
    /// An empty pipe kept between chunks while data keeps coming.
    #[cfg(target_os = "linux")]
    spare: Option<splice::Pipe>,
    /// Splice now (else copy).
    splice: bool,
    /// Switch to splice once a read fills a whole buffer (a bulk transfer).
    splice_later: bool,
    total: u64,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: Waiting,
    /// The opposite direction has ended: `dst` has sent its EOF and this is the
    /// last direction, so the relay returns as soon as this one ends.
    other_done: bool,
}

impl<'a> Direction<'a> {
    fn new(
        src: &'a TcpStream,
        dst: &'a TcpStream,
        read_idle: Option<Duration>,
        write_idle: Option<Duration>,
        counters: [Option<&'a AtomicU64>; 2],
        splice: bool,
    ) -> Self {
        Direction {
            src,
            dst,
            counters,
            read_idle,
            write_idle,
            in_flight: InFlight::None,
            #[cfg(target_os = "linux")]
            spare: None,
            splice: false,
            splice_later: cfg!(target_os = "linux") && splice,
            total: 0,
            timer: None,
            waiting: Waiting::Nothing,
            other_done: false,
        }
    }

    fn moved(&mut self, n: usize) {
        self.total += n as u64;
        for c in self.counters.into_iter().flatten() {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.waiting = Waiting::Nothing;
    }

    /// Not ready: arm the idle timer for this wait (from when it began) and
    /// report a timeout if it has run out.
    fn pending(&mut self, cx: &mut Context<'_>, what: Waiting) -> Poll<io::Result<u64>> {
        let limit = if what == Waiting::Read {
            self.read_idle
        } else {
            self.write_idle
        };
        let Some(d) = limit else {
            return Poll::Pending;
        };
        if self.waiting != what {
            let deadline = super::clock::deadline_in(d);
            match &mut self.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.waiting = what;
        }
        if let Some(t) = &mut self.timer
            && t.as_mut().poll(cx).is_ready()
        {
            let verb = if what == Waiting::Read {
                "read"
            } else {
                "write"
            };
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("idle for {d:?} waiting to {verb}"),
            )));
        }
        Poll::Pending
    }

    /// The source ended: pass the EOF on and give the pipe back.
    ///
    /// When the other direction already ended, the relay is over and its caller
    /// closes both sockets: `close` sends the FIN that `shutdown` would (nothing is
    /// left unread on `dst`, whose EOF was read, so it is a FIN, not a reset), and
    /// the system call is saved; one per proxied connection.
    fn finish(&mut self) -> Poll<io::Result<u64>> {
        #[cfg(target_os = "linux")]
        if let Some(p) = self.spare.take() {
            p.put();
        }
        if self.other_done {
            return Poll::Ready(Ok(self.total));
        }
        Poll::Ready(shutdown_write(self.dst).map(|()| self.total))
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        loop {
            // 1. Write out what was read.
            match &mut self.in_flight {
                InFlight::None => {}
                #[cfg(target_os = "linux")]
                InFlight::Pipe { pipe, left } => {
                    if *left == 0 {
                        if let InFlight::Pipe { pipe, .. } =
                            std::mem::replace(&mut self.in_flight, InFlight::None)
                        {
                            self.spare = Some(pipe);
                        }
                        continue;
                    }
                    match self.dst.poll_write_ready(cx) {
                        Poll::Pending => return self.pending(cx, Waiting::Write),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {}
                    }
                    let (dst, want) = (self.dst, *left);
                    match dst.try_io(Interest::WRITABLE, || splice::to_socket(pipe, dst, want)) {
                        Ok(m) => {
                            *left -= m;
                            self.moved(m);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // Bytes stuck in the pipe: it is closed with `self`, never pooled.
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                    continue;
                }
                InFlight::Buf { buf, off, len } => {
                    if *off == *len {
                        // The buffer goes back to the pool.
                        self.in_flight = InFlight::None;
                        continue;
                    }
                    match self.dst.poll_write_ready(cx) {
                        Poll::Pending => return self.pending(cx, Waiting::Write),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) => {}
                    }
                    match self.dst.try_write(&buf.0[*off..*len]) {
                        Ok(m) => {
                            *off += m;
                            self.moved(m);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                    continue;
                }
            }
            // 2. Read more.
            match self.src.poll_read_ready(cx) {
                Poll::Pending => {
                    // Nothing to read: an idle direction holds no pipe.
                    #[cfg(target_os = "linux")]
                    if let Some(p) = self.spare.take() {
                        p.put();
                    }
                    return self.pending(cx, Waiting::Read);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            #[cfg(target_os = "linux")]
            if self.splice {
                let pipe = match self.spare.take() {
                    Some(p) => p,
                    None => match splice::Pipe::get() {
                        Ok(p) => p,
                        Err(e) => return Poll::Ready(Err(e)),
                    },
                };
                let src = self.src;
                match src.try_io(Interest::READABLE, || splice::from_socket(src, &pipe)) {
                    Ok(0) => {
                        pipe.put();
                        return self.finish();
                    }
                    Ok(n) => {
                        self.in_flight = InFlight::Pipe { pipe, left: n };
                        self.waiting = Waiting::Nothing;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.spare = Some(pipe),
                    Err(e) if self.total == 0 && splice::is_unsupported(&e) => {
                        tracing::debug!(error = %e, "splice unsupported for this socket; copying");
                        pipe.put();
                        self.splice = false;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
            let mut buf = PooledBuf::get();
            match read_draining(self.src, &mut buf.0[..]) {
                Ok(0) => return self.finish(),
                Ok(n) => {
                    if self.splice_later && n == BUF_SIZE {
                        // More was waiting than a buffer holds: a bulk transfer,
                        // where zero copy pays. Small exchanges (requests, short
                        // responses) stay on plain reads and writes, which cost
                        // fewer system calls than socket → pipe → socket.
                        self.splice = true;
                        self.splice_later = false;
                    }
                    self.in_flight = InFlight::Buf {
                        buf,
                        off: 0,
                        len: n,
                    };
                    self.waiting = Waiting::Nothing;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Read from a non-blocking socket; a read that did not fill `buf` also clears
/// tokio's readiness flag, as `AsyncRead for TcpStream` does on epoll/kqueue.
///
/// A stream socket's `read` returns less than asked only when its receive queue
/// held less, so the socket is drained and the next `read` would only say
/// `EAGAIN`: a wasted system call per message, i.e. two per proxied
/// request/response exchange. Readiness is cleared with the tick of the event
/// it came from, so data that arrives after the read raises a new event and is
/// not missed. (`try_io` clears readiness only when its closure reports
/// `WouldBlock`, hence the byte count passed out beside it.)
fn read_draining(src: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsFd;
    let mut short = None;
    let res = src.try_io(Interest::READABLE, || {
        let n = nix::unistd::read(src.as_fd(), buf)?;
        if n > 0 && n < buf.len() {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (res, short) {
        (_, Some(n)) => Ok(n),
        (res, None) => res,
    }
}

/// Half-close `dst` after its source ended: the peer reads EOF, the other
/// direction stays open.
fn shutdown_write(dst: &TcpStream) -> io::Result<()> {
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
    Ok(())
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

    use nix::errno::Errno;
    use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
    use tokio::net::TcpStream;

    /// Bytes asked for per splice; also the pipe size we ask the kernel for.
    const CHUNK: usize = 256 * 1024;
    /// Pipes kept for reuse (two descriptors each): enough for this many
    /// directions moving data at the same instant without creating pipes.
    const PIPE_POOL_MAX: usize = 512;

    static PIPE_POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

    /// A non-blocking pipe. Only an empty pipe goes back to the pool.
    pub(super) struct Pipe {
        r: OwnedFd,
        w: OwnedFd,
    }

    impl Pipe {
        pub(super) fn get() -> io::Result<Pipe> {
            if let Some(p) = PIPE_POOL.lock().ok().and_then(|mut p| p.pop()) {
                return Ok(p);
            }
            let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
            // A bigger pipe means fewer syscalls per megabyte; failing to grow it
            // (pipe-max-size, per-user limits) only costs speed.
            let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
            Ok(Pipe { r, w })
        }

        /// Return an empty pipe to the pool.
        pub(super) fn put(self) {
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

    /// Socket → pipe; 0 is end of stream.
    pub(super) fn from_socket(src: &TcpStream, pipe: &Pipe) -> io::Result<usize> {
        splice(src.as_fd(), None, &pipe.w, None, CHUNK, flags()).map_err(io::Error::from)
    }

    /// Pipe → socket, at most `len` bytes.
    pub(super) fn to_socket(pipe: &Pipe, dst: &TcpStream, len: usize) -> io::Result<usize> {
        splice(&pipe.r, None, dst.as_fd(), None, len, flags()).map_err(io::Error::from)
    }

    pub(super) fn is_unsupported(e: &io::Error) -> bool {
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
        half_close_case(true).await;
    }

    #[tokio::test]
    async fn copying_relays_both_ways_with_half_close() {
        half_close_case(false).await;
    }

    async fn half_close_case(splice: bool) {
        let (mut client, ps) = pair().await;
        let (pb, mut backend) = pair().await;
        let counter = Arc::new(AtomicU64::new(0));
        let opts = RelayOpts {
            counter: Some(counter.clone()),
            ..Default::default()
        };
        let relay = tokio::spawn(async move { relay_tcp_mode(&ps, &pb, &opts, splice).await });
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

    /// Request/response exchanges of small messages: every read is short, so
    /// every read clears readiness (`read_draining`). The next message, and a
    /// message sent together with the end of stream, must still get through.
    #[tokio::test]
    async fn short_reads_lose_no_message() {
        let (mut client, ps) = pair().await;
        let (pb, mut backend) = pair().await;
        let relay =
            tokio::spawn(
                async move { relay_tcp_mode(&ps, &pb, &RelayOpts::default(), true).await },
            );
        let echo = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                let n = backend.read(&mut buf).await.unwrap();
                if n == 0 {
                    backend.shutdown().await.unwrap();
                    return;
                }
                backend.write_all(&buf[..n]).await.unwrap();
            }
        });
        for i in 0..300u32 {
            let msg = format!("request {i}");
            client.write_all(msg.as_bytes()).await.unwrap();
            let mut back = vec![0u8; msg.len()];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg.as_bytes());
            if i % 50 == 0 {
                // A pause: the next message arrives on a socket whose readiness
                // was cleared, after the relay went back to waiting.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        client.write_all(b"last").await.unwrap();
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"last");
        echo.await.unwrap();
        let (up, down) = relay.await.unwrap().unwrap();
        assert_eq!(up, down);
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

#[cfg(all(test, target_os = "linux"))]
mod idle_tests {
    use super::*;
    use tokio::net::TcpListener;

    fn pipes() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .filter(|l| l.to_string_lossy().starts_with("pipe:"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// An idle relayed connection holds no pipe.
    #[tokio::test]
    async fn idle_connection_takes_no_pipe() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let before = pipes();
        let mut relays = Vec::new();
        let mut keep = Vec::new();
        for _ in 0..20 {
            let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
            let (client, ps) = (c.unwrap(), s.unwrap().0);
            let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
            let (pb, backend) = (c.unwrap(), s.unwrap().0);
            keep.push((client, backend));
            relays.push(tokio::spawn(async move {
                relay_tcp(&ps, &pb, &RelayOpts::default()).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Spurious first wakeups may each borrow a pooled pipe and give it back,
        // so the pool may hold a few; 20 idle connections must not hold 40.
        let now = pipes();
        assert!(
            now <= before + 16,
            "{before} pipe fds before, {now} with 20 idle connections"
        );
        for r in relays {
            r.abort();
        }
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// The point of the hand-written state machine: a relayed connection's
    /// relay state stays small.
    #[tokio::test]
    async fn relay_future_is_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let b = l.accept().await.unwrap().0;
        let opts = RelayOpts::default();
        let f = relay_tcp(&a, &b, &opts);
        assert!(
            std::mem::size_of_val(&f) <= 512,
            "{}",
            std::mem::size_of_val(&f)
        );
    }
}
