//! One direction of a TCP relay, `src → dst`, as a hand-written state machine:
//! write out what is in flight, read more (by `splice` into a pipe or into a
//! pooled buffer), pass the EOF on. See the module above for why it is not an
//! `async fn` and when it switches from copying to splice.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::pool::{BUF_SIZE, PooledBuf};
#[cfg(target_os = "linux")]
use super::splice;

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
pub(super) struct Direction<'a> {
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
    pub(super) fn new(
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
            let deadline = crate::proxy::clock::deadline_in(d);
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

    /// Poll unless this direction has ended (`done` holds its byte count
    /// then); `other_done` says whether the opposite one has. An error ends
    /// the relay.
    pub(super) fn poll_unless_done(
        &mut self,
        cx: &mut Context<'_>,
        done: &mut Option<u64>,
        other_done: bool,
    ) -> io::Result<()> {
        if done.is_none() {
            self.other_done = other_done;
            if let Poll::Ready(n) = self.poll(cx) {
                *done = Some(n?);
            }
        }
        Ok(())
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
