//! The copy buffers of the relay: 16 KiB each, taken per chunk and given back
//! once written, so an idle connection holds none.

use std::sync::Mutex;

pub(super) const BUF_SIZE: usize = 16 * 1024;
/// Buffers kept for reuse; beyond that they are freed (a burst does not pin memory).
const BUF_POOL_MAX: usize = 512;

static BUF_POOL: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// A 16 KiB buffer that goes back to the pool when dropped.
pub(super) struct PooledBuf(pub(super) Box<[u8]>);

impl PooledBuf {
    pub(super) fn get() -> PooledBuf {
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
