//! The seam between the sidecar's protocol loop ([`crate::session`]) and what carries its
//! messages to the coordinator.
//!
//! [`crate::session::Sidecar`] is written against [`FleetLink`] only: register, subscribe
//! to tasks, heartbeat, fetch the model, push an update, report an evaluation. Two
//! carriers implement it:
//! - [`grpc`]: the production path and the default, the `FleetService` over HTTP/2 with
//!   mutual TLS, the model and updates in encoded chunks;
//! - an in-process link (`fedra_sim::inproc`), for simulations, that calls a coordinator
//!   running in the same process and hands it the buffers themselves: the download is the
//!   coordinator's shared global-model buffer ([`ModelValues`]), the upload is the
//!   trainer's own `Vec<f32>`, moved into the coordinator's staging slot.
//!
//! Everything else — what to do with a task, training, privatising or compressing the
//! update, the trailer's content, fault injection, reconnecting — happens once, in the
//! session, whatever the carrier. The coordinator answers both carriers from the same round
//! engine with the same checks, and a refusal reaches the session as the same
//! [`SessionError::Rpc`] (code and message) on both, so the session reacts alike and tests
//! can compare carriers (see `tests/tests/integration/transport.rs`).

pub mod grpc;

use crate::data::DatasetInfo;
use crate::session::SessionError;
use crate::task::Task;
use crate::trainer::EvalOutcome;
use fedra_proto::pb::ParamChunk;
use fedra_types::drift::DataReference;
use fedra_types::metrics::TrainingMetrics;
use fedra_types::plan::Compression;
use std::sync::Arc;

/// The round's global model as the sidecar holds it: one shared, read-only buffer. Over
/// gRPC it is the reassembled download; in process it is the coordinator's own buffer,
/// shared without a copy.
pub type ModelValues = Arc<Vec<f32>>;

/// Tasks as the coordinator sends them, in order; the stream ends when the coordinator
/// closes the subscription. A malformed task is an `Err(SessionError::Wire(_))` item the
/// session skips; any other error ends the session.
pub type TaskStream = futures::stream::BoxStream<'static, Result<Task, SessionError>>;

/// What a sidecar tells the coordinator about itself when it registers (never its data).
#[derive(Debug, Clone)]
pub struct Registration {
    pub client_id: String,
    pub region: String,
    pub datasets: Vec<DatasetInfo>,
    pub devices: Vec<String>,
    /// Random per process: a restart is told apart from a reconnection.
    pub session_id: String,
}

/// What the coordinator answers to a registration.
#[derive(Debug, Clone, Copy)]
pub struct LinkSettings {
    /// How often the coordinator expects a heartbeat, in seconds.
    pub heartbeat_interval_seconds: f64,
}

/// The values of an update, as the session prepared them.
#[derive(Debug)]
pub enum UploadBody {
    /// Every value, uncompressed: the model (or, in a private run, the clipped update).
    Dense(Vec<f32>),
    /// A compressed run's Δ, encoded by [`crate::compression`] against `global` (the model
    /// it was trained from). A link that moves no bytes decodes them to global + Δ with the
    /// same codec the coordinator uses, so the staged values are the same either way.
    Encoded { chunks: Vec<ParamChunk>, compression: Compression, global: ModelValues },
}

/// The closing part of an update: what the coordinator checks before counting it.
#[derive(Debug, Clone)]
pub struct UploadTrailer {
    pub samples: u64,
    pub metrics: TrainingMetrics,
    /// L2 norm of local − global before any clipping.
    pub update_norm: f64,
    pub reference: Option<DataReference>,
}

/// One update for one task.
#[derive(Debug)]
pub struct Upload {
    pub task_id: String,
    pub client_id: String,
    /// Values the update has (the header's count).
    pub total_values: usize,
    /// The values are local − global (private runs), not a model.
    pub is_delta: bool,
    /// The FedAvg weight the trailer carries, announced in the header as well so that a
    /// plain round's coordinator folds the values as they stream (gRPC framing only).
    pub samples: u64,
    pub body: UploadBody,
    /// Encoded chunk size (gRPC framing only).
    pub chunk_bytes: usize,
    /// `None` when the upload is cut off (fault injection): only the first
    /// [`Upload::cut_off_after`] values go out and the upload ends without a trailer, which
    /// the coordinator must refuse.
    pub trailer: Option<UploadTrailer>,
    /// With no trailer: how many values were sent before the cut.
    pub cut_off_after: usize,
}

/// One connection's worth of calls to the coordinator's fleet API. Implementations are
/// cheap to share: the session clones the `Arc` for its heartbeat task.
///
/// Every method's errors are the coordinator's refusals as [`SessionError::Rpc`] (the same
/// code and message on every carrier) or carrier failures ([`SessionError::Connect`],
/// [`SessionError::Download`], [`SessionError::Protocol`]).
#[async_trait::async_trait]
pub trait FleetLink: Send + Sync {
    /// # Errors
    /// See the trait docs.
    async fn register(&self, registration: &Registration) -> Result<LinkSettings, SessionError>;
    /// # Errors
    /// See the trait docs.
    async fn subscribe(&self, client_id: &str) -> Result<TaskStream, SessionError>;
    /// Returns the ids of the client's tasks that the coordinator cancelled.
    ///
    /// # Errors
    /// See the trait docs.
    async fn heartbeat(&self, client_id: &str) -> Result<Vec<String>, SessionError>;
    /// The task's global model, checked against the task's layout.
    ///
    /// # Errors
    /// See the trait docs.
    async fn fetch_model(&self, task: &Task, client_id: &str) -> Result<ModelValues, SessionError>;
    /// Returns how many updates the round has counted, this one included.
    ///
    /// # Errors
    /// See the trait docs.
    async fn push_update(&self, upload: Upload) -> Result<u32, SessionError>;
    /// `None`: this client has no held-out split.
    ///
    /// # Errors
    /// See the trait docs.
    async fn report_evaluation(
        &self,
        task_id: &str,
        client_id: &str,
        outcome: Option<EvalOutcome>,
    ) -> Result<(), SessionError>;
}

/// Opens [`FleetLink`]s: one per session, to one of the sidecar's endpoints.
#[async_trait::async_trait]
pub trait FleetConnector: Send + Sync {
    /// # Errors
    /// [`SessionError::Connect`] when no coordinator answers at `endpoint`.
    async fn connect(&self, endpoint: &str) -> Result<Arc<dyn FleetLink>, SessionError>;
}

/// A downloaded model must have the task layout's length: the trainer indexes it by layout.
///
/// # Errors
/// [`SessionError::Protocol`] naming both lengths.
pub(crate) fn check_model_length(values: usize, task: &Task) -> Result<(), SessionError> {
    if values != task.spec.layout.total() {
        return Err(SessionError::Protocol(format!(
            "model has {values} values, the task layout needs {}",
            task.spec.layout.total()
        )));
    }
    Ok(())
}
