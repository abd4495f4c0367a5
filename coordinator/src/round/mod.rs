//! Rounds, the runs that own them, and the engine that schedules runs onto clients.
//!
//! Ownership (no locks around round state):
//! - the [`engine`](Engine) task owns the client fleet ([`fleet`]), the run queue and the
//!   table of active runs. It feeds the pure [`scheduler`], which leases clients to runs
//!   (a client holds at most `max_concurrent_tasks` leases, default 1), and forwards each
//!   request about a run or a task to that run's actor. It never waits on a run;
//! - one **run actor** per active run ([`run`]) owns that run's round state: its phase, its
//!   running sum, its pending participation writes. Several runs make progress at once;
//!   a fold, a checkpoint write or a panic in one run never holds up another;
//! - [`history`] rebuilds what happened from the store for Get, List and Watch.
//!
//! gRPC handlers talk to the engine through an [`EngineHandle`]: they convert the request,
//! send it with a oneshot reply and convert the answer back.
//!
//! A round attempt moves through typed phases, one file each under `phases/`:
//!
//! ```text
//!             offer of enough clients            target reported, or deadline with quorum,
//!   Selecting ───────────────────────▶ Training ─────────────────────────────────────────▶ Aggregating
//!       │                                 │                                                  │ average computed
//!       │ too few online by the deadline  │ deadline or dropouts, quorum unreachable,        ▼
//!       │                                 │ a fold panicked                              Publishing
//!       └──────────────▶ Failed ◀─────────┘                                                  │ checkpoint written
//!                          ▲  write or commit failed                                         ▼ + committed
//!                          └─────────────────────────────────── Done ◀── Evaluating ◀──(if the plan evaluates)
//! ```
//!
//! `Evaluating` (clients score the committed checkpoint on their held-out splits; the
//! sample-weighted means, overall and per region, are stored) runs when the plan asks
//! for federated evaluation of this round. `Done` starts the next round's `Selecting` (or
//! finishes the run); `Failed` fails the run. A round that is neither the last nor evaluated
//! does not wait in `Publishing`: it is `Released`, and the next round's `Selecting`
//! starts while its checkpoint is written and committed; the next round's average waits
//! for that commit (see `phases/publishing.rs`). Cancellation moves any phase to `Failed`
//! with reason "run cancelled". A coordinator that stops mid-round leaves the attempt
//! `in_progress` in the store; on restart it is marked `interrupted` and the same round
//! number is attempted again, from the last completed round's checkpoint, so no completed
//! round is lost or repeated.

mod activation;
mod disclosure;
mod engine;
mod fleet;
mod history;
pub mod metrics;
mod phases;
mod run;
pub mod scheduler;
pub mod stream;
mod task;
#[cfg(test)]
mod tests;

pub use engine::{DEFAULT_MAX_MODEL_PARAMETERS, Engine, EngineHandle, EngineSettings, PrivacySettings};
pub use fleet::TaskReceiver;
pub use history::RunView;
pub use metrics::{MetricsMean, TrainingMetrics};
pub use task::{
    EvaluationReport, GlobalModel, PrivacyTask, TaskAssignment, TaskKind, UpdateValues, UploadTicket, VerifiedUpdate,
};

use crate::aggregation::AggregationError;
use crate::checkpoint::CheckpointError;
use crate::ids::{CheckpointId, ClientId, RegionId, RunId, TaskId};
use crate::store::{EvaluationRecord, RunState, StoreError};

/// The phase of the active round attempt, as shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseName {
    Deferred,
    Selecting,
    Training,
    Aggregating,
    Publishing,
    Evaluating,
    Done,
    Failed,
}

impl PhaseName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deferred => "deferred",
            Self::Selecting => "selecting",
            Self::Training => "training",
            Self::Aggregating => "aggregating",
            Self::Publishing => "publishing",
            Self::Evaluating => "evaluating",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// A step in a run's life, streamed to watchers.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvent {
    pub run: RunId,
    pub round: u32,
    pub kind: RunEventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunEventKind {
    Selected {
        clients: Vec<ClientId>,
        target: u32,
    },
    UpdateReceived {
        client: ClientId,
        region: RegionId,
        samples: u64,
        reported: u32,
        target: u32,
        metrics: TrainingMetrics,
    },
    Aggregated {
        clients: u32,
        samples: u64,
        metrics: TrainingMetrics,
        /// Seconds spent folding updates (0 when rebuilt from the store).
        fold_seconds: f64,
        /// Encoded bytes of the counted updates' chunks (0 when rebuilt from the store).
        update_bytes: u64,
    },
    Published {
        checkpoint: CheckpointId,
        regions: Vec<RegionId>,
        sha256: String,
    },
    RoundFailed {
        reason: String,
    },
    /// Stopped at a round boundary by the policy in force (not an end: it may resume).
    Blocked {
        reason: String,
    },
    RunFinished {
        state: RunState,
        reason: Option<String>,
    },
    /// Held-out evaluation of the round's checkpoint: overall mean first, then per region.
    Evaluated {
        results: Vec<EvaluationRecord>,
    },
}

/// Why the engine refused a request or could not carry it out.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Aggregation(#[from] AggregationError),
    #[error("run {0} not found")]
    RunNotFound(RunId),
    #[error("checkpoint {0} not found")]
    CheckpointNotFound(CheckpointId),
    #[error("initial checkpoint {checkpoint} does not fit the plan's model: {reason}")]
    InitialCheckpoint { checkpoint: CheckpointId, reason: String },
    #[error("run {run} already ended ({state:?})")]
    RunEnded { run: RunId, state: RunState },
    #[error("client {0} is not registered: call Register first")]
    UnknownClient(ClientId),
    #[error("task {0} is unknown or its round has closed")]
    UnknownTask(TaskId),
    #[error(
        "round {round} closed before this update for task {task} arrived (target reached, deadline passed or run ended)"
    )]
    RoundClosed { task: TaskId, round: u32 },
    #[error("task {task} does not expect {expected}")]
    WrongTaskKind { task: TaskId, expected: &'static str },
    #[error("task {task} belongs to another client than {client}")]
    NotYourTask { task: TaskId, client: ClientId },
    #[error("client {client} already reported for round {round}")]
    AlreadyReported { client: ClientId, round: u32 },
    #[error(
        "client {client} was dropped from round {round} (it went away or could not take the task) and may not report"
    )]
    Dropped { client: ClientId, round: u32 },
    #[error("client {client}'s update for round {round} was refused for good and may not be sent again")]
    Refused { client: ClientId, round: u32 },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("update declares {got} values, the model has {expected}")]
    UpdateLength { expected: u64, got: u64 },
    #[error("update claims {claimed} samples, client {client} registered {registered}")]
    TooManySamples { client: ClientId, claimed: u64, registered: u64 },
    #[error("update claims 0 samples: a FedAvg weight must be positive")]
    ZeroSamples,
    #[error("plan.model has {parameters} parameters; this coordinator's max_model_parameters is {max}")]
    ModelTooLarge { parameters: u64, max: u64 },
    #[error(
        "plan.schedule.prefer_low_carbon needs a carbon-intensity feed, and this coordinator has none (set carbon_file in its config)"
    )]
    NoCarbonFeed,
    #[error("refused by policy: {0}")]
    PolicyRefused(String),
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Privacy(#[from] crate::privacy::PrivacyError),
    /// The caller belongs to another tier or region (a client of us-east at the eu-west
    /// aggregator, a client at a global coordinator, an aggregator where clients belong).
    #[error("{0}")]
    WrongTier(String),
    #[error("{field} is {got}; this participant may aggregate 1..={max} clients")]
    Contributors { field: &'static str, got: u32, max: u32 },
    #[error("cohort task {task} cannot be served: {reason}")]
    Cohort { task: TaskId, reason: String },
    /// Privacy scopes an update may not report (a client's, another region's, a run
    /// without privacy).
    #[error("trailer.scopes refused: {0}")]
    Scopes(String),
    /// Training data statistics that do not fit the run's model.
    #[error("trailer.reference refused: {0}")]
    Reference(String),
    #[error("header.is_delta is {got}, but this run expects {}", if *expected { "a clipped update (local − global)" } else { "a model" })]
    UpdateKind { expected: bool, got: bool },
}

impl RoundError {
    /// A short, stable name of the error's kind: a metric label with a bounded set of values.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Store(..) => "store",
            Self::Checkpoint(..) => "checkpoint",
            Self::Aggregation(..) => "aggregation",
            Self::RunNotFound(..) => "run_not_found",
            Self::CheckpointNotFound(..) => "checkpoint_not_found",
            Self::InitialCheckpoint { .. } => "initial_checkpoint",
            Self::RunEnded { .. } => "run_ended",
            Self::UnknownClient(..) => "unknown_client",
            Self::UnknownTask(..) => "unknown_task",
            Self::RoundClosed { .. } => "round_closed",
            Self::WrongTaskKind { .. } => "wrong_task_kind",
            Self::NotYourTask { .. } => "not_your_task",
            Self::AlreadyReported { .. } => "already_reported",
            Self::Dropped { .. } => "dropped",
            Self::Refused { .. } => "refused",
            Self::Internal(..) => "internal",
            Self::UpdateLength { .. } => "update_length",
            Self::TooManySamples { .. } => "too_many_samples",
            Self::ZeroSamples => "zero_samples",
            Self::ModelTooLarge { .. } => "model_too_large",
            Self::NoCarbonFeed => "no_carbon_feed",
            Self::PolicyRefused(..) => "policy_refused",
            Self::ShuttingDown => "shutting_down",
            Self::Privacy(..) => "privacy",
            Self::WrongTier(..) => "wrong_tier",
            Self::Contributors { .. } => "contributors",
            Self::Cohort { .. } => "cohort",
            Self::Scopes(..) => "scopes",
            Self::Reference(..) => "reference",
            Self::UpdateKind { .. } => "update_kind",
        }
    }
}

impl From<crate::privacy::release::ReleaseError> for RoundError {
    fn from(e: crate::privacy::release::ReleaseError) -> Self {
        match e {
            crate::privacy::release::ReleaseError::Privacy(p) => Self::Privacy(p),
            crate::privacy::release::ReleaseError::Aggregation(a) => Self::Aggregation(a),
        }
    }
}

impl From<crate::privacy::admission::AdmissionError> for RoundError {
    fn from(e: crate::privacy::admission::AdmissionError) -> Self {
        match e {
            crate::privacy::admission::AdmissionError::Privacy(p) => Self::Privacy(p),
            crate::privacy::admission::AdmissionError::Store(s) => Self::Store(s),
        }
    }
}
