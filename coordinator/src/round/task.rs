//! What a round hands to clients and takes back from them: the shared global model, task
//! assignments, upload tickets and verified updates. These cross between the gRPC edge and
//! the run actors, so they live apart from any one phase.

use super::TrainingMetrics;
use crate::aggregation::StagingBuffer;
use crate::ids::{RunId, TaskId};
use crate::model::TensorLayout;
use crate::plan::LocalTraining;
use fedra_proto::chunking::SharedParams;
pub use fedra_types::task::{PrivacyTask, TaskKind};
use std::sync::Arc;
use std::time::Duration;

/// The global model of a round, shared read-only with the handlers that stream it: one
/// buffer, whose chunks go out to every client as zero-copy views.
#[derive(Debug)]
pub struct GlobalModel {
    pub layout: TensorLayout,
    pub params: SharedParams,
    /// Transfer digest ([`fedra_proto::chunking::transfer_digest_hex`]) of `params`.
    pub digest: String,
}

impl GlobalModel {
    pub fn new(layout: TensorLayout, params: Vec<f32>) -> Self {
        let digest = fedra_proto::chunking::transfer_digest_hex(&params);
        Self { layout, params: SharedParams::new(params), digest }
    }

    /// The parameters, in the model's own buffer when nobody else holds it, else copied
    /// (a download still streaming from it keeps its own reference).
    pub(crate) fn into_values(self: Arc<Self>) -> Vec<f32> {
        match Arc::try_unwrap(self) {
            Ok(m) => m.params.try_into_vec().unwrap_or_else(|p| p.as_slice().to_vec()),
            Err(shared) => shared.params.as_slice().to_vec(),
        }
    }
}

/// Work sent to one client for one round attempt.
#[derive(Debug, Clone)]
pub struct TaskAssignment {
    pub task: TaskId,
    pub run: RunId,
    pub round: u32,
    pub model: crate::model::ModelSpec,
    pub layout: TensorLayout,
    pub local: LocalTraining,
    pub deadline: Duration,
    pub chunk_bytes: usize,
    pub seed: u64,
    pub kind: TaskKind,
    /// Set for private runs: clip (and, for local DP, noise) the update before upload.
    pub privacy: Option<PrivacyTask>,
    /// Set only for a regional aggregator (global tier): the cohort its region trains.
    pub cohort: Option<crate::hierarchy::Cohort>,
    /// How a training task's update is encoded on the wire (the plan's compression); a
    /// regional aggregator applies it to its cohort's clients.
    pub compression: crate::plan::Compression,
}

/// A client's evaluation of a checkpoint on its held-out split; `samples` 0 = no split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvaluationReport {
    pub samples: u64,
    pub loss: f64,
    pub accuracy: f64,
    /// Client evaluations in these means: 1 for a client, a region's count for a regional
    /// aggregator's report.
    pub clients: u32,
}

/// Permission to stream an update for a task.
#[derive(Debug, Clone)]
pub struct UploadTicket {
    pub total_values: u64,
    /// The encoding the upload's chunks must use (see `fedra_proto::compressed`).
    pub compression: crate::plan::Compression,
    /// The round's global model, for a compressed upload: its chunks carry Δ and are
    /// decoded as global + Δ into the staging buffer. `None` without compression.
    pub global: Option<Arc<GlobalModel>>,
    /// The round's deadline: an upload still streaming then is cut off, freeing its
    /// staging slot, since the round will not count it anyway.
    pub deadline: tokio::time::Instant,
    /// Set where the round folds chunks as they arrive (a plain round, see
    /// [`super::stream`]): an upload that announces its sample count streams through it.
    pub stream: Option<super::stream::StreamSink>,
}

/// Where a verified update's values are.
#[derive(Debug)]
pub enum UpdateValues {
    /// Staged whole; folded at commit.
    Staged(StagingBuffer),
    /// Already folded chunk by chunk (see [`super::stream`]); counted at commit. `len` values.
    Streamed { len: u64 },
}

impl UpdateValues {
    pub fn len(&self) -> u64 {
        match self {
            Self::Staged(b) => b.as_slice().len() as u64,
            Self::Streamed { len } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An uploaded update whose chunks and trailer checked out.
#[derive(Debug)]
pub struct VerifiedUpdate {
    pub values: UpdateValues,
    pub samples: u64,
    pub metrics: TrainingMetrics,
    pub update_norm: f64,
    /// The values are an update (local − global), as private runs ask, not a model. A
    /// compressed upload is staged as a model (global + Δ), so it is `false` there.
    pub is_delta: bool,
    /// Encoded bytes of the upload's chunk messages: what crossed the wire for the values.
    pub wire_bytes: u64,
    /// Client updates aggregated into the values: 1 for a client; a region's contributor
    /// count for a regional aggregate.
    pub contributors: u32,
    /// A private regional aggregate's ε per scope, as its region's ledger charged it
    /// (reported upward into the global manifest); empty for a client.
    pub scopes: Vec<crate::checkpoint::ScopeEpsilon>,
    /// Statistics of the client's training data (see `fedra_types::drift`), merged into
    /// its region's drift reference; ignored in a private run.
    pub reference: Option<Box<fedra_types::drift::DataReference>>,
}
