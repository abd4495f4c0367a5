//! Streamed uploads: in a plain round (FedAvg, not private, uncompressed) an update's chunks
//! are folded into the round's fixed-point sum as they arrive, instead of being staged whole
//! and folded after the trailer. The coordinator then holds no model-sized buffer per
//! upload, whatever the model's size or the number of clients reporting.
//!
//! The rule that a broken upload never changes the result still holds, because the sum is
//! exactly reversible ([`crate::aggregation::fixed`]): every chunk is first appended to the
//! upload's spill file ([`UploadSpill`], an unlinked file in the scratch directory, which
//! lives in the page cache rather than in the process), then folded. An upload that breaks
//! (the stream ends, the digest or the trailer is wrong, the round refuses it, or the round
//! closes while it streams) has its folded chunks read back and subtracted, leaving the sum
//! bit for bit as if it had never arrived.
//!
//! The run actor owns the sum's books, as it owns all round state: the upload handler sends
//! each chunk to it ([`StreamSink::fold`]) and waits for the fold before reading the next,
//! so at most one chunk per upload is in flight. The actor checks and books the chunk and
//! has it folded on a blocking thread (the sum's values sit in shards behind their own
//! locks), so uploads fold in parallel on every core; the round closes, and streams are
//! subtracted, only when no chunk is in flight.

use super::RoundError;
use crate::ids::{ClientId, TaskId};
use bytes::Bytes;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// An upload's received bytes, kept so that what was folded can be subtracted again.
#[derive(Debug)]
pub struct UploadSpill {
    file: std::fs::File,
    len: AtomicU64,
}

impl UploadSpill {
    /// An anonymous file in `dir`, removed by the OS when the last handle closes.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        Ok(Self { file: tempfile::tempfile_in(dir)?, len: AtomicU64::new(0) })
    }

    /// Appends `bytes` (one writer: the upload's handler).
    ///
    /// # Errors
    /// The write failed (the disk is full, say).
    pub fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let at = self.len.load(Ordering::Acquire);
        self.file.write_all_at(bytes, at)?;
        self.len.store(at + bytes.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Bytes appended so far.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads `buf.len()` bytes from `offset`.
    ///
    /// # Errors
    /// The read failed or the range was never written.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if offset + buf.len() as u64 > self.len() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past what was spilled"));
        }
        self.file.read_exact_at(buf, offset)
    }
}

/// Upload handler → run actor, about one streamed upload.
pub(super) enum StreamMsg {
    /// Fold the values `data` (little-endian f32) at coordinate `offset` with the update's
    /// FedAvg weight (its announced sample count); `data` is already in `spill`.
    Fold {
        task: TaskId,
        client: ClientId,
        offset: usize,
        data: Bytes,
        samples: u64,
        spill: Arc<UploadSpill>,
        reply: oneshot::Sender<Result<(), RoundError>>,
    },
    /// A chunk's fold, run on a blocking thread, is done (`outcome`: the fold's own verdict;
    /// the actor answers the handler through `reply`).
    Folded {
        task: TaskId,
        values: usize,
        outcome: Result<(), crate::aggregation::AggregationError>,
        seconds: f64,
        cpu: f64,
        reply: oneshot::Sender<Result<(), RoundError>>,
    },
    /// The upload broke: subtract what it folded. Answers with the values subtracted.
    Revert { task: TaskId, reply: Option<oneshot::Sender<u64>> },
}

/// The upload handler's line to the run actor that owns the round's sum.
#[derive(Clone)]
pub struct StreamSink {
    tx: mpsc::UnboundedSender<StreamMsg>,
    scratch_dir: PathBuf,
}

impl std::fmt::Debug for StreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamSink")
    }
}

impl StreamSink {
    pub(super) fn new(tx: mpsc::UnboundedSender<StreamMsg>, scratch_dir: PathBuf) -> Self {
        Self { tx, scratch_dir }
    }

    /// Where the upload's spill file goes.
    pub fn scratch_dir(&self) -> &Path {
        &self.scratch_dir
    }

    /// Folds one received chunk (already appended to `spill`) and waits for the fold.
    ///
    /// # Errors
    /// The round refused it (a value out of range, the task no longer open) or ended.
    #[allow(clippy::too_many_arguments)]
    pub async fn fold(
        &self,
        task: &TaskId,
        client: &ClientId,
        offset: usize,
        data: Bytes,
        samples: u64,
        spill: &Arc<UploadSpill>,
    ) -> Result<(), RoundError> {
        let (reply, rx) = oneshot::channel();
        let msg = StreamMsg::Fold {
            task: task.clone(),
            client: client.clone(),
            offset,
            data,
            samples,
            spill: Arc::clone(spill),
            reply,
        };
        self.tx.send(msg).map_err(|_| RoundError::ShuttingDown)?;
        rx.await.map_err(|_| RoundError::ShuttingDown)?
    }

    /// Subtracts what the task's upload folded and returns how many values that was (0 when
    /// nothing was folded, or the round has moved on and dropped its sum).
    pub async fn revert(&self, task: &TaskId) -> u64 {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(StreamMsg::Revert { task: task.clone(), reply: Some(reply) }).is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Reports a finished fold to the run actor (from the blocking thread that ran it).
    pub(super) fn folded(&self, msg: StreamMsg) {
        // No actor left: the round and its sum are gone, and so is whoever waited.
        let _ = self.tx.send(msg);
    }

    /// [`Self::revert`] without waiting (a handler that is being dropped).
    pub fn revert_later(&self, task: &TaskId) {
        let _ = self.tx.send(StreamMsg::Revert { task: task.clone(), reply: None });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spill_gives_back_what_was_appended() {
        let spill = UploadSpill::create(&std::env::temp_dir()).unwrap();
        assert!(spill.is_empty());
        spill.append(&[1, 2, 3, 4]).unwrap();
        spill.append(&[5, 6]).unwrap();
        assert_eq!(spill.len(), 6);
        let mut buf = [0u8; 4];
        spill.read_at(&mut buf, 2).unwrap();
        assert_eq!(buf, [3, 4, 5, 6]);
        assert!(spill.read_at(&mut buf, 3).is_err(), "past the end");
    }
}
