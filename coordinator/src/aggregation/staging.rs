//! A bounded pool of staging buffers for uploads in flight.
//!
//! Two semaphores make coordinator memory independent of the client count: one caps the
//! number of uploads staging at once (`max_uploads`), the other caps their bytes
//! (`budget_bytes`). An upload must hold both before it reads its first chunk; the others
//! wait, and gRPC flow control pushes back on their senders. An update larger than the
//! whole budget still proceeds, alone (it takes the entire budget), so a big model never
//! deadlocks; with the default budget that happens from ~8M parameters up.
//!
//! Buffers are reused across uploads, so steady-state rounds allocate nothing; the free
//! list never keeps more than the budget's worth of bytes.

use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default byte budget of all staging buffers together: what the memory target
/// (3 × model + 64 MiB) leaves for staging after the model, the sum and the runtime.
pub const DEFAULT_STAGING_BUDGET_BYTES: usize = 32 << 20;

/// Budget accounting granularity: permits are KiB so that any budget fits a semaphore.
const UNIT: usize = 1024;

/// Shared pool; cheap to clone.
#[derive(Clone)]
pub struct StagingPool {
    uploads: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    budget_units: u32,
    free: Arc<Mutex<FreeList>>,
    max_uploads: usize,
}

#[derive(Default)]
struct FreeList {
    buffers: Vec<Vec<f32>>,
    bytes: usize,
    budget: usize,
}

impl StagingPool {
    /// A pool that lets at most `max_uploads` (≥ 1) uploads holding at most `budget_bytes`
    /// together stage at once.
    pub fn new(max_uploads: usize, budget_bytes: usize) -> Self {
        let max_uploads = max_uploads.max(1);
        let budget_units = u32::try_from((budget_bytes / UNIT).max(1)).unwrap_or(u32::MAX >> 3).min(u32::MAX >> 3);
        Self {
            uploads: Arc::new(Semaphore::new(max_uploads)),
            bytes: Arc::new(Semaphore::new(budget_units as usize)),
            budget_units,
            free: Arc::new(Mutex::new(FreeList { budget: budget_units as usize * UNIT, ..FreeList::default() })),
            max_uploads,
        }
    }

    /// Resolves once no upload holds a staging buffer (a graceful stop waits for this).
    pub async fn idle(&self) {
        // Holding every upload permit at once means none is in use; released at once.
        let all = u32::try_from(self.max_uploads).unwrap_or(u32::MAX);
        let _ = self.uploads.acquire_many(all).await;
    }

    /// Uploads holding a staging buffer now.
    pub fn in_use(&self) -> usize {
        self.max_uploads.saturating_sub(self.uploads.available_permits())
    }

    pub fn max_uploads(&self) -> usize {
        self.max_uploads
    }

    /// How many uploads of `len` values can stage at once.
    pub fn slots_for(&self, len: usize) -> usize {
        let need = Self::units(len).min(self.budget_units);
        (self.budget_units / need.max(1)) as usize
    }

    fn units(len: usize) -> u32 {
        u32::try_from((len * 4).div_ceil(UNIT)).unwrap_or(u32::MAX).max(1)
    }

    /// Waits for a free slot for a streamed upload, which folds its chunks as they arrive
    /// and needs no buffer: the slot takes `bytes` of the budget for what its HTTP/2
    /// window may hold while the fold consumes it.
    pub async fn admit(&self, bytes: usize) -> StreamSlot {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).max(1);
        StreamSlot { _permits: self.permits_for(units).await }
    }

    /// Waits for a slot for `len` values: an upload permit and the bytes of the budget.
    async fn permits(&self, len: usize) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        self.permits_for(Self::units(len)).await
    }

    /// An upload permit and `units` KiB of the budget (all of it at most).
    async fn permits_for(&self, units: u32) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        let upload = Arc::clone(&self.uploads).acquire_owned().await.expect("staging semaphore is never closed");
        metrics::gauge!("fedra_staging_uploads_in_use").increment(1.0);
        let need = units.min(self.budget_units);
        let bytes = Arc::clone(&self.bytes).acquire_many_owned(need).await.expect("staging semaphore is never closed");
        (upload, bytes)
    }

    /// Waits for a free slot for `values` and stages them as they are, without a copy: an
    /// in-process upload ([`crate::inproc`]) hands over the buffer the client trained into.
    /// It counts against the same slots and budget as a staged gRPC upload, so memory
    /// accounting and a graceful stop's wait for uploads in flight are the same for both;
    /// the buffer is freed, not kept for reuse, when dropped (in-process uploads bring
    /// their own).
    pub async fn adopt(&self, values: Vec<f32>) -> StagingBuffer {
        let permits = self.permits(values.len()).await;
        StagingBuffer { values, pool: Arc::clone(&self.free), recycle: false, _permits: permits }
    }

    /// Waits for a free slot and returns a buffer of `len` values whose contents are
    /// unspecified (zero when new, a previous upload's values when reused).
    pub async fn acquire(&self, len: usize) -> StagingBuffer {
        let (upload, bytes) = self.permits(len).await;
        let mut values = {
            let mut free = self.free.lock().expect("staging pool poisoned");
            // Prefer a buffer that already has the capacity.
            match free.buffers.iter().position(|b| b.capacity() >= len) {
                Some(i) => {
                    let b = free.buffers.swap_remove(i);
                    free.bytes -= b.capacity() * 4;
                    b
                }
                None => Vec::new(),
            }
        };
        // A reused buffer keeps its old values: the upload overwrites every one of them
        // (the chunk cursor refuses a transfer that does not cover [0, len) exactly), so
        // zeroing would be a wasted pass over the model per update.
        values.truncate(len);
        values.resize(len, 0.0);
        StagingBuffer { values, pool: Arc::clone(&self.free), recycle: true, _permits: (upload, bytes) }
    }
}

/// One upload's staged values; returns itself to the pool when dropped.
pub struct StagingBuffer {
    values: Vec<f32>,
    pool: Arc<Mutex<FreeList>>,
    /// Return the buffer to the free list when dropped (see [`StagingPool::adopt`]).
    recycle: bool,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl StagingBuffer {
    pub fn as_slice(&self) -> &[f32] {
        &self.values
    }
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.values
    }
}

impl Drop for StagingBuffer {
    fn drop(&mut self) {
        metrics::gauge!("fedra_staging_uploads_in_use").decrement(1.0);
        let values = std::mem::take(&mut self.values);
        if !self.recycle {
            return;
        }
        if let Ok(mut free) = self.pool.lock() {
            let bytes = values.capacity() * 4;
            // Keep it for reuse only while the free list stays within the budget;
            // otherwise give the memory back.
            if free.bytes + bytes <= free.budget {
                free.bytes += bytes;
                free.buffers.push(values);
            }
        }
    }
}

/// A streamed upload's place in the pool (see [`StagingPool::admit`]); freed when dropped.
pub struct StreamSlot {
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        metrics::gauge!("fedra_staging_uploads_in_use").decrement(1.0);
    }
}

impl std::fmt::Debug for StreamSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamSlot")
    }
}

impl std::fmt::Debug for StagingBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StagingBuffer({} values)", self.values.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn try_acquire(pool: &StagingPool, len: usize) -> Option<StagingBuffer> {
        tokio::time::timeout(Duration::from_millis(50), pool.acquire(len)).await.ok()
    }

    #[tokio::test]
    async fn bounded_by_count_and_reused() {
        let pool = StagingPool::new(2, 1 << 20);
        let mut a = pool.acquire(4).await;
        a.as_mut_slice()[0] = 5.0;
        let _b = pool.acquire(4).await;
        assert!(try_acquire(&pool, 4).await.is_none(), "a third buffer must wait");
        drop(a);
        let c = try_acquire(&pool, 4).await.expect("a slot was freed");
        assert_eq!(c.as_slice().len(), 4);
        assert_eq!(c.as_slice()[0], 5.0, "a reused buffer is not zeroed again");
    }

    #[tokio::test]
    async fn adopted_buffers_take_a_slot_and_are_not_kept() {
        let pool = StagingPool::new(1, 1 << 20);
        let a = pool.adopt(vec![3.0; 4]).await;
        assert_eq!(a.as_slice(), [3.0; 4], "staged as handed over");
        assert!(try_acquire(&pool, 4).await.is_none(), "an adopted buffer holds its slot");
        drop(a);
        let b = try_acquire(&pool, 4).await.expect("the slot was freed");
        assert_eq!(pool.free.lock().unwrap().bytes, 0, "the adopted buffer was not kept");
        drop(b);
    }

    #[tokio::test]
    async fn bounded_by_bytes() {
        // 64 KiB budget: two 32 KiB updates fit, a third waits.
        let pool = StagingPool::new(100, 64 << 10);
        assert_eq!(pool.slots_for(8 << 10), 2);
        let a = pool.acquire(8 << 10).await;
        let _b = pool.acquire(8 << 10).await;
        assert!(try_acquire(&pool, 8 << 10).await.is_none(), "the byte budget is spent");
        drop(a);
        assert!(try_acquire(&pool, 8 << 10).await.is_some());
    }

    #[tokio::test]
    async fn streamed_uploads_take_slots_without_buffers() {
        let pool = StagingPool::new(8, 64 << 10);
        let a = pool.admit(32 << 10).await;
        let _b = pool.admit(32 << 10).await;
        assert_eq!(pool.in_use(), 2);
        assert!(try_acquire(&pool, 16).await.is_none(), "the streams hold the byte budget");
        drop(a);
        assert!(try_acquire(&pool, 16).await.is_some());
    }

    #[tokio::test]
    async fn an_update_larger_than_the_budget_proceeds_alone() {
        let pool = StagingPool::new(8, 16 << 10);
        assert_eq!(pool.slots_for(1 << 20), 1);
        let big = pool.acquire(1 << 20).await;
        assert_eq!(big.as_slice().len(), 1 << 20);
        assert!(try_acquire(&pool, 16).await.is_none(), "the big update holds the whole budget");
        drop(big);
        assert!(try_acquire(&pool, 16).await.is_some());
    }
}
