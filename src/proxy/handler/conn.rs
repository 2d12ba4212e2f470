//! A stream with a read buffer we can look into.
//!
//! Proxy protocols are parsed from a buffer (httparse wants the whole head in one
//! slice, SOCKS is read field by field), and whatever arrived behind the parsed part
//! (the first bytes of a tunnelled TLS handshake, a pipelined request, the start of a
//! body) must not be lost. [`BufConn`] keeps those bytes and hands them on: to the
//! body copier, or to the target before a tunnel starts relaying. The auto handler
//! uses it to look at the first byte and then give the untouched stream to the
//! protocol it picked.

use std::any::Any;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::chain::stream::Outbound;

use super::HandlerError;
use super::framing;

use crate::proxy::relay::{IdleTimer, RelayOpts, relay_tcp, relay_with};

/// Read granularity; also the size a body copy moves per write.
const READ_CHUNK: usize = 16 * 1024;

/// Longest line accepted in chunked framing (chunk size + extensions, trailers).
const MAX_LINE: usize = 8 * 1024;

pub struct BufConn<S> {
    io: S,
    buf: BytesMut,
}

/// The idle limits of one body copy: how long a read from the source and a write
/// to the destination may each wait (a trickling or silent sender, a receiver
/// that does not read). Expiry is a `TimedOut` error of that side.
pub struct BodyIdle {
    read: IdleTimer,
    write: IdleTimer,
}

impl BodyIdle {
    pub fn new(read: Option<std::time::Duration>, write: Option<std::time::Duration>) -> Self {
        Self {
            read: IdleTimer::new(read, "read"),
            write: IdleTimer::new(write, "write"),
        }
    }

    /// No limits (tests, in-memory sources).
    pub fn none() -> Self {
        Self::new(None, None)
    }

    async fn write<W>(&mut self, w: &mut W, data: &[u8]) -> Result<(), CopyError>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        self.write
            .wait(w.write_all(data))
            .await
            .map_err(CopyError::Write)
    }
}

/// Why a framed body copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("reading: {0}")]
    Read(std::io::Error),
    #[error("writing: {0}")]
    Write(std::io::Error),
    #[error("connection closed mid-body")]
    Eof,
    #[error("bad chunked framing: {0}")]
    Framing(&'static str),
}

impl<S> BufConn<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    /// The underlying stream (for writing; reading past the buffer loses order).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The stream and the bytes read from it but not consumed.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.buf)
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n.min(self.buf.len()));
    }
}

impl<S: AsyncRead + Unpin> BufConn<S> {
    /// Read once more into the buffer; `Ok(0)` means end of stream. Cancel safe: a
    /// read either completes into the buffer or leaves it untouched.
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        self.io.read_buf(&mut self.buf).await
    }

    /// Make sure at least `n` bytes are buffered.
    pub async fn fill_to(&mut self, n: usize) -> std::io::Result<()> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// Take exactly `n` bytes.
    pub async fn take(&mut self, n: usize) -> std::io::Result<BytesMut> {
        self.fill_to(n).await?;
        Ok(self.buf.split_to(n))
    }

    pub async fn take_u8(&mut self) -> std::io::Result<u8> {
        self.fill_to(1).await?;
        Ok(self.buf.get_u8())
    }

    /// Read up to and including a NUL byte (SOCKS4 user id, 4a host name), at most
    /// `max` bytes; the NUL is not returned.
    pub async fn take_until_nul(&mut self, max: usize) -> Result<BytesMut, HandlerError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == 0) {
                let mut field = self.buf.split_to(i + 1);
                field.truncate(i);
                return Ok(field);
            }
            if self.buf.len() >= max {
                return Err(HandlerError::BadRequest(format!(
                    "field longer than {max} bytes"
                )));
            }
            if self.fill().await? == 0 {
                return Err(HandlerError::Client(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    }

    /// [`fill`](Self::fill) within the read idle limit.
    async fn fill_within(&mut self, idle: &mut BodyIdle) -> Result<usize, CopyError> {
        idle.read.wait(self.fill()).await.map_err(CopyError::Read)
    }

    /// Copy exactly `n` bytes (buffered first, then from the stream) to `w`.
    pub async fn copy_exact<W>(
        &mut self,
        mut n: u64,
        w: &mut W,
        idle: &mut BodyIdle,
    ) -> Result<(), CopyError>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        while n > 0 {
            if self.buf.is_empty() && self.fill_within(idle).await? == 0 {
                return Err(CopyError::Eof);
            }
            let take = self.buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            idle.write(w, &self.buf[..take]).await?;
            self.buf.advance(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Copy everything until the stream ends (an HTTP/1.0-style body).
    pub async fn copy_to_eof<W>(&mut self, w: &mut W, idle: &mut BodyIdle) -> Result<(), CopyError>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if !self.buf.is_empty() {
                idle.write(w, &self.buf).await?;
                self.buf.clear();
            }
            if self.fill_within(idle).await? == 0 {
                return Ok(());
            }
        }
    }

    /// Copy one chunked body verbatim (sizes, extensions, data, trailers), checking
    /// its framing strictly (see the `framing` module) as it goes. Nothing is buffered
    /// beyond one read, so a gigabyte upload streams through in constant memory.
    pub async fn copy_chunked<W>(&mut self, w: &mut W, idle: &mut BodyIdle) -> Result<(), CopyError>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        self.follow_chunked(w, idle, true).await
    }

    /// Copy only the data of one chunked body, checked as [`copy_chunked`]
    /// checks it: chunk sizes, extensions and trailers are dropped. For a
    /// recipient that cannot take chunked (an HTTP/1.0 client, RFC 9112 §6.1),
    /// whose body then ends with the connection.
    ///
    /// [`copy_chunked`]: Self::copy_chunked
    pub async fn copy_dechunked<W>(
        &mut self,
        w: &mut W,
        idle: &mut BodyIdle,
    ) -> Result<(), CopyError>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        self.follow_chunked(w, idle, false).await
    }

    /// The one chunked parser: the data always goes to `w`, the framing lines
    /// too when `keep_framing`.
    async fn follow_chunked<W>(
        &mut self,
        w: &mut W,
        idle: &mut BodyIdle,
        keep_framing: bool,
    ) -> Result<(), CopyError>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            let line = self.take_line(idle).await?;
            let size = framing::chunk_size(&line).map_err(CopyError::Framing)?;
            if keep_framing {
                idle.write(w, &line).await?;
            }
            if size == 0 {
                // Trailer section: field lines up to an empty line.
                for _ in 0..=framing::MAX_TRAILERS {
                    let line = self.take_line(idle).await?;
                    let end = framing::trailer_line(&line).map_err(CopyError::Framing)?;
                    if keep_framing {
                        idle.write(w, &line).await?;
                    }
                    if end {
                        return Ok(());
                    }
                }
                return Err(CopyError::Framing("too many trailer fields"));
            }
            self.copy_exact(size, w, idle).await?;
            let crlf = self.take_line(idle).await?;
            if crlf.as_ref() != b"\r\n" {
                return Err(CopyError::Framing("chunk data not followed by CRLF"));
            }
            if keep_framing {
                idle.write(w, &crlf).await?;
            }
        }
    }

    /// One line including its terminator.
    async fn take_line(&mut self, idle: &mut BodyIdle) -> Result<BytesMut, CopyError> {
        let mut searched = 0;
        loop {
            if let Some(i) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                return Ok(self.buf.split_to(searched + i + 1));
            }
            searched = self.buf.len();
            if searched > MAX_LINE {
                return Err(CopyError::Framing("line too long"));
            }
            if self.fill_within(idle).await? == 0 {
                return Err(CopyError::Eof);
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> BufConn<S> {
    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.io.write_all(data).await
    }
}

impl<S: 'static> BufConn<S> {
    /// The underlying socket when the stream is plain TCP (not TLS), for socket
    /// options and zero-copy relaying.
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        (&self.io as &dyn Any).downcast_ref::<TcpStream>()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> BufConn<S> {
    /// Hand the connection over to a tunnel: bytes the client sent behind its
    /// request go to the target first, then both directions are relayed until
    /// both sides are done. A plain TCP client is relayed with `splice(2)`
    /// ([`relay_tcp`]); anything else (TLS) is copied.
    pub async fn tunnel(
        &mut self,
        target: &mut Outbound,
        opts: &RelayOpts,
    ) -> std::io::Result<(u64, u64)> {
        if !self.buf.is_empty() {
            target.write_all(&self.buf).await?;
            self.buf.clear();
        }
        // The handlers are generic over the stream; the zero-copy path needs to
        // know it holds a TcpStream, which `Any` answers at run time. The target
        // side is plain TCP unless a chain put TLS (or read-ahead bytes) on it.
        if let Outbound::Tcp(up) = target
            && let Some(tcp) = (&mut self.io as &mut dyn Any).downcast_mut::<TcpStream>()
        {
            return relay_tcp(tcp, up, opts).await;
        }
        relay_with(&mut self.io, target, opts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dechunked_keeps_only_the_data_and_the_same_checks() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let mut c = BufConn::new(&wire[..]);
        let mut out = Vec::new();
        c.copy_dechunked(&mut out, &mut BodyIdle::none())
            .await
            .unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(c.buffered(), b"NEXT");
        let mut c = BufConn::new(&b"5\r\nhello\n0\r\n\r\n"[..]);
        let e = c
            .copy_dechunked(&mut Vec::new(), &mut BodyIdle::none())
            .await;
        assert!(matches!(e, Err(CopyError::Framing(_))), "{e:?}");
    }

    async fn chunked(input: &[u8]) -> Result<(Vec<u8>, Vec<u8>), CopyError> {
        let mut c = BufConn::new(input);
        let mut out = Vec::new();
        c.copy_chunked(&mut out, &mut BodyIdle::none()).await?;
        Ok((out, c.buffered().to_vec()))
    }

    #[tokio::test]
    async fn chunked_copies_verbatim_and_stops_at_the_end() {
        let body = b"5;x=y\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: 1\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"GET /next");
        let (out, rest) = chunked(&input).await.unwrap();
        assert_eq!(out, body);
        assert_eq!(rest, b"GET /next");
    }

    #[tokio::test]
    async fn chunked_rejects_bad_framing() {
        assert!(matches!(
            chunked(b"zz\r\n").await,
            Err(CopyError::Framing(_))
        ));
        assert!(matches!(
            chunked(b"3\r\nabcX\r\n").await,
            Err(CopyError::Framing(_))
        ));
        assert!(matches!(chunked(b"5\r\nab").await, Err(CopyError::Eof)));
        assert!(matches!(
            chunked(b"ffffffffffffffffff\r\n").await,
            Err(CopyError::Framing(_))
        ));
        // The example: a bare CR inside the size line.
        assert!(matches!(
            chunked(b"5\rXYZ\nhello\r\n0\r\n\r\n").await,
            Err(CopyError::Framing(_))
        ));
        assert!(matches!(
            chunked(b"5\nhello\n0\n\n").await,
            Err(CopyError::Framing(_))
        ));
    }

    /// Hands out at most `step` bytes per read, so framing is split everywhere.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self
                .step
                .min(buf.remaining())
                .min(self.data.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.data[start..start + n]);
            self.pos += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    proptest::proptest! {
        #[test]
        fn chunked_roundtrip_any_split(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..3000),
            sizes in proptest::collection::vec(1usize..700, 1..20),
            step in 1usize..40,
            ext in proptest::bool::ANY,
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = sizes[i % sizes.len()].min(rest.len());
                wire.extend_from_slice(format!("{n:X}").as_bytes());
                if ext { wire.extend_from_slice(b";name=value"); }
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let mut input = wire.clone();
            input.extend_from_slice(b"NEXT");
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (out, left) = rt.block_on(async {
                let mut c = BufConn::new(Trickle { data: input, pos: 0, step });
                let mut out = Vec::new();
                c.copy_chunked(&mut out, &mut BodyIdle::none()).await.unwrap();
                let mut left = Vec::new();
                c.copy_to_eof(&mut left, &mut BodyIdle::none()).await.unwrap();
                (out, left)
            });
            proptest::prop_assert_eq!(out, wire);
            proptest::prop_assert_eq!(left, b"NEXT".to_vec());
        }

        #[test]
        fn chunked_garbage_never_panics(input in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let mut c = BufConn::new(&input[..]);
                let mut out = Vec::new();
                let _ = c.copy_chunked(&mut out, &mut BodyIdle::none()).await;
            });
        }
    }

    #[tokio::test]
    async fn exact_copy_leaves_the_rest() {
        let mut c = BufConn::new(&b"0123456789"[..]);
        let mut out = Vec::new();
        c.copy_exact(4, &mut out, &mut BodyIdle::none())
            .await
            .unwrap();
        assert_eq!(out, b"0123");
        assert_eq!(c.take(2).await.unwrap().as_ref(), b"45");
    }
}
