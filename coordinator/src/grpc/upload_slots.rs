//! Staging slots reserved ahead of an upload (`ReserveUpload`), so that an update's bytes
//! travel only once the coordinator can consume them.
//!
//! Why: HTTP/2 flow control lets every open upload stream park up to its window of data in
//! the coordinator before the handler reads it, and windows grow (adaptively) to 16 MiB on
//! fast links. When N clients push at once and only a few staging slots exist, the others'
//! windows filled with bytes nobody could read yet: the coordinator's memory grew with N
//! (238 MiB at 100 × 1M against a 75 MiB target). A sidecar that reserves first sends
//! nothing until its slot is held, so large windows serve only uploads that stream.
//!
//! A reservation is keyed by task (the engine has already checked the task is the caller's)
//! and kept for `hold`; the task's next PushUpdate takes it, or it is dropped (the slot goes
//! back to the pool) when the hold runs out.

use crate::aggregation::{StagingBuffer, StreamSlot};
use crate::ids::TaskId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Reservations by task; cheap to clone.
#[derive(Clone, Default)]
pub(super) struct UploadSlots(Arc<Mutex<Slots>>);

#[derive(Default)]
struct Slots {
    held: HashMap<TaskId, (u64, Held)>,
    next: u64,
}

/// A reserved place: a whole staging buffer, or a streamed upload's slot.
pub(super) enum Held {
    Staged(StagingBuffer),
    Stream(StreamSlot),
}

impl UploadSlots {
    /// Keeps `buffer` for `task`'s next upload for `hold` (replacing an earlier reservation
    /// of the same task, whose slot goes back to the pool).
    pub(super) fn hold(&self, task: TaskId, buffer: Held, hold: Duration) {
        let generation = {
            let mut slots = self.0.lock().expect("upload slots lock");
            slots.next += 1;
            let generation = slots.next;
            slots.held.insert(task.clone(), (generation, buffer));
            generation
        };
        let slots = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            let mut s = slots.0.lock().expect("upload slots lock");
            if s.held.get(&task).is_some_and(|(g, _)| *g == generation) {
                s.held.remove(&task);
            }
        });
    }

    /// The staging buffer reserved for `task`'s upload of `len` values, if one is held
    /// (another reservation of the task is given back).
    pub(super) fn take_staged(&self, task: &TaskId, len: usize) -> Option<StagingBuffer> {
        match self.0.lock().expect("upload slots lock").held.remove(task)?.1 {
            Held::Staged(buffer) => (buffer.as_slice().len() == len).then_some(buffer),
            Held::Stream(_) => None,
        }
    }

    /// The streamed upload's slot reserved for `task`, if one is held.
    pub(super) fn take_stream(&self, task: &TaskId) -> Option<StreamSlot> {
        match self.0.lock().expect("upload slots lock").held.remove(task)?.1 {
            Held::Stream(slot) => Some(slot),
            Held::Staged(_) => None,
        }
    }

    /// Reservations held now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.lock().expect("upload slots lock").held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::StagingPool;

    #[tokio::test(start_paused = true)]
    async fn a_reservation_is_taken_once_or_expires() {
        let pool = StagingPool::new(1, 1 << 20);
        let slots = UploadSlots::default();
        let task = TaskId::generate();
        slots.hold(task.clone(), Held::Staged(pool.acquire(16).await), Duration::from_secs(5));
        assert_eq!(pool.in_use(), 1);
        assert!(slots.take_staged(&task, 8).is_none(), "a reservation for another length is not used");
        assert_eq!(pool.in_use(), 0, "and its slot is back in the pool");
        slots.hold(task.clone(), Held::Staged(pool.acquire(16).await), Duration::from_secs(5));
        let taken = slots.take_staged(&task, 16).expect("the reserved slot");
        assert!(slots.take_staged(&task, 16).is_none(), "taken once");
        drop(taken);
        // Not taken: the hold runs out and the slot goes back to the pool.
        slots.hold(task.clone(), Held::Staged(pool.acquire(16).await), Duration::from_secs(5));
        assert_eq!((slots.len(), pool.in_use()), (1, 1));
        // Resolves when the expiry has handed the slot back (the paused clock jumps to it).
        pool.idle().await;
        assert_eq!(slots.len(), 0);
    }
}
