//! A bounded pool of staging buffers for uploads in flight.
//!
//! The semaphore is what makes coordinator memory independent of the client count: an
//! upload must hold a buffer before it reads its first chunk, so at most `capacity`
//! updates are ever materialised at once; the others wait (gRPC flow control pushes back
//! on their senders). Buffers are reused, so steady-state rounds allocate nothing.

use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shared pool; cheap to clone.
#[derive(Clone)]
pub struct StagingPool {
    permits: Arc<Semaphore>,
    free: Arc<Mutex<Vec<Vec<f32>>>>,
    capacity: usize,
}

impl StagingPool {
    /// A pool that lets at most `capacity` (≥ 1) uploads stage at once.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { permits: Arc::new(Semaphore::new(capacity)), free: Arc::default(), capacity }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Waits for a free slot and returns a zeroed buffer of `len` values.
    pub async fn acquire(&self, len: usize) -> StagingBuffer {
        let permit = Arc::clone(&self.permits).acquire_owned().await.expect("staging semaphore is never closed");
        let mut values = self.free.lock().expect("staging pool poisoned").pop().unwrap_or_default();
        values.clear();
        values.resize(len, 0.0);
        StagingBuffer { values, pool: Arc::clone(&self.free), _permit: permit }
    }
}

/// One upload's staged values; returns itself to the pool when dropped.
pub struct StagingBuffer {
    values: Vec<f32>,
    pool: Arc<Mutex<Vec<Vec<f32>>>>,
    _permit: OwnedSemaphorePermit,
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
        let values = std::mem::take(&mut self.values);
        if let Ok(mut free) = self.pool.lock() {
            free.push(values);
        }
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

    #[tokio::test]
    async fn bounded_and_reused() {
        let pool = StagingPool::new(2);
        let mut a = pool.acquire(4).await;
        a.as_mut_slice()[0] = 5.0;
        let _b = pool.acquire(4).await;
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), pool.acquire(4)).await;
        assert!(third.is_err(), "a third buffer must wait");
        drop(a);
        let c = tokio::time::timeout(std::time::Duration::from_millis(50), pool.acquire(4)).await.unwrap();
        assert_eq!(c.as_slice(), &[0.0; 4], "reused buffers come back zeroed");
    }
}
