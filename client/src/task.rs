//! A task as the sidecar works it: what the coordinator asked for, already checked and
//! converted by [`crate::convert`], in the shared vocabulary ([`TaskKind`],
//! [`PrivacyTask`]) plus what the trainer needs ([`TrainSpec`]).

use crate::trainer::TrainSpec;
use fedra_types::task::{PrivacyTask, TaskKind};
use std::time::Duration;

/// One task received from the coordinator.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub run: String,
    pub round: u32,
    pub spec: TrainSpec,
    pub chunk_bytes: usize,
    pub deadline: Duration,
    pub kind: TaskKind,
    /// Set for differentially private runs: upload the clipped (and, for local DP,
    /// noised) update instead of the model.
    pub privacy: Option<PrivacyTask>,
    /// How to encode a training task's update (Δ, see [`crate::compression`]); never
    /// together with `privacy`.
    pub compression: fedra_types::plan::Compression,
}
