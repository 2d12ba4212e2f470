//! Zero copy on Linux: non-blocking pipes, a pool of them, and the two
//! `splice(2)` calls (socket → pipe, pipe → socket).

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
