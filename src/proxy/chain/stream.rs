//! The connection the router hands a handler: a plain socket when nothing but
//! TCP lies between us and the target, any byte stream otherwise.
//!
//! A chain of `http`/`socks` hops over `tcp` dialers still ends in a plain
//! socket: once a proxy has said "connected", its tunnel is transparent, and the
//! relay keeps `splice(2)`. A `tls` dialer (or a proxy that sent bytes of the
//! target right behind its reply) makes it a boxed stream, copied through
//! buffers.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Any byte stream a chain can end in (TLS over a tunnel, a tunnel with bytes
/// read ahead).
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// A connection to a target, direct or through a chain.
pub enum Outbound {
    /// A socket whose bytes are the target's: direct, or through tunnels of
    /// plain TCP.
    Tcp(TcpStream),
    /// Anything else (TLS to a node, bytes read ahead of the target's).
    Stream(Box<dyn ByteStream>),
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outbound::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            Outbound::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

impl Outbound {
    /// The local address of a plain socket (`None` behind TLS).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Outbound::Tcp(s) => s.local_addr().ok(),
            Outbound::Stream(_) => None,
        }
    }

    /// Halves that can be used from two places at once (sending a request body
    /// while the response is read). A plain socket splits without a lock.
    pub fn into_split(self) -> (OutboundRead, OutboundWrite) {
        match self {
            Outbound::Tcp(s) => {
                let (r, w) = s.into_split();
                (OutboundRead::Tcp(r), OutboundWrite::Tcp(w))
            }
            Outbound::Stream(s) => {
                let (r, w) = tokio::io::split(s);
                (OutboundRead::Stream(r), OutboundWrite::Stream(w))
            }
        }
    }
}

/// Call `$call` on whichever variant `$self` holds (all variants hold a stream).
macro_rules! delegate {
    ($self:ident, $a:path, $b:path, |$s:ident| $call:expr) => {
        match $self.get_mut() {
            $a($s) => {
                let $s = Pin::new($s);
                $call
            }
            $b($s) => {
                let $s = Pin::new($s);
                $call
            }
        }
    };
}

impl AsyncRead for Outbound {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, Outbound::Tcp, Outbound::Stream, |s| s
            .poll_read(cx, buf))
    }
}

impl AsyncWrite for Outbound {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, Outbound::Tcp, Outbound::Stream, |s| s
            .poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, Outbound::Tcp, Outbound::Stream, |s| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, Outbound::Tcp, Outbound::Stream, |s| s
            .poll_shutdown(cx))
    }
}

/// The read half of an [`Outbound`].
pub enum OutboundRead {
    Tcp(OwnedReadHalf),
    Stream(tokio::io::ReadHalf<Box<dyn ByteStream>>),
}

impl OutboundRead {
    /// The connection again, from both its halves (an HTTP upgrade turns an
    /// exchange into a tunnel).
    pub fn reunite(self, w: OutboundWrite) -> io::Result<Outbound> {
        match (self, w) {
            (OutboundRead::Tcp(r), OutboundWrite::Tcp(w)) => r
                .reunite(w)
                .map(Outbound::Tcp)
                .map_err(|e| io::Error::other(e.to_string())),
            (OutboundRead::Stream(r), OutboundWrite::Stream(w)) if r.is_pair_of(&w) => {
                Ok(Outbound::Stream(r.unsplit(w)))
            }
            _ => Err(io::Error::other(
                "the halves belong to different connections",
            )),
        }
    }
}

/// The write half of an [`Outbound`].
pub enum OutboundWrite {
    Tcp(OwnedWriteHalf),
    Stream(tokio::io::WriteHalf<Box<dyn ByteStream>>),
}

impl AsyncRead for OutboundRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, OutboundRead::Tcp, OutboundRead::Stream, |s| s
            .poll_read(cx, buf))
    }
}

impl AsyncWrite for OutboundWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, OutboundWrite::Tcp, OutboundWrite::Stream, |s| s
            .poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, OutboundWrite::Tcp, OutboundWrite::Stream, |s| s
            .poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, OutboundWrite::Tcp, OutboundWrite::Stream, |s| s
            .poll_shutdown(cx))
    }
}

/// A stream with bytes already read from it in front: what a proxy sent right
/// behind its reply belongs to the target and must not be lost.
pub struct Prefixed<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(head: Vec<u8>, inner: S) -> Self {
        Self {
            head,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.head.len() {
            let n = (this.head.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.head.len() {
                this.head = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefixed_reads_the_head_first() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut p = Prefixed::new(b"SSH-2.0".to_vec(), a);
        b.write_all(b" rest").await.unwrap();
        drop(b);
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "SSH-2.0 rest");
    }
}
