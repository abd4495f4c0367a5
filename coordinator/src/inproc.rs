//! The in-process fleet edge: what `FleetService` does for sidecars over gRPC, for
//! sidecars running in the coordinator's own process (`fedra-sim --transport inproc`, the
//! sim's in-process cluster, the transport contract tests).
//!
//! Why: a simulation of 1,000 clients on one machine spends most of a round encoding,
//! framing and decoding the model and the updates on loopback. Here nothing is encoded:
//! a download is another reference to the round's shared global-model buffer
//! ([`GlobalModel`]), and an upload is the client's own `Vec<f32>`, moved into a staging
//! slot of the same [`StagingPool`] the gRPC edge uses.
//!
//! What is the same as over gRPC (`grpc::FleetApi`), on purpose, so that a simulation
//! exercises the production engine and a test can compare the two carriers:
//! - every call goes to the same [`EngineHandle`] (register, subscribe, heartbeat,
//!   `fetch_model`, `begin_upload`/`commit_upload`, evaluation reports), so selection,
//!   ownership, length, sample-count, privacy and round-state checks are the engine's own;
//! - the edge's own checks are the same functions with the same messages: registration
//!   ([`convert::checked_client`]), trailer metrics ([`convert::checked_metrics`]), sample
//!   counts ([`limits`]), non-finite values, uploads without a trailer, one upload per task;
//! - uploads wait for the same staging slots and byte budget (memory accounting, and a
//!   graceful stop's wait for uploads in flight, cover both carriers);
//! - refusals are the same [`ApiError`]s, which the gRPC edge turns into a `Status` with
//!   [`ApiError::code`]: an in-process link reports that code and message.
//!
//! What differs, and why:
//! - identity: an [`InProcClient`] is bound to one client id and region when it is made,
//!   as a certificate binds a gRPC caller; a request that claims another id is refused
//!   (PERMISSION_DENIED). There is no certificate, revocation list or connection limit:
//!   the caller is this process. As for an `--insecure` caller, the tier check (regional
//!   aggregators at a global coordinator) is not made, since there is no role to check;
//! - no transfer digest: nothing crosses a wire that could corrupt or truncate it, and the
//!   values staged are the very buffer the client produced (a cut-off upload is still
//!   modelled — values without a trailer — and refused as over gRPC);
//! - no download permit or one-download-per-task claim: a download holds no encoded chunk
//!   in any buffer, only a reference to the model the round holds anyway;
//! - a compressed run's update arrives already decoded (global + Δ, decoded by the client
//!   side with the coordinator's codec), and [`InProcUpload::wire_bytes`] is what the client
//!   says the encoded update weighs.
//!
//! Domain types only: no protobuf message and no gRPC status here.

use crate::aggregation::StagingPool;
use crate::grpc::{ApiError, InFlight, convert, limits};
use crate::ids::{ClientId, RegionId};
use crate::round::{
    EngineHandle, EngineSettings, EvaluationReport, GlobalModel, RoundError, TaskReceiver, TrainingMetrics,
    VerifiedUpdate,
};
use crate::store::DatasetDescriptor;
use fedra_proto::chunking::ChunkError;
use fedra_proto::compressed::CodecError;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// A running coordinator's fleet API for sidecars in this process; cheap to clone. Made by
/// [`crate::Coordinator::in_process_fleet`].
#[derive(Clone)]
pub struct InProcFleet {
    engine: EngineHandle,
    staging: StagingPool,
    settings: EngineSettings,
    /// Tasks with an upload in progress: one at a time per task, as over gRPC.
    uploading: InFlight,
}

/// One in-process caller: the fleet API as client `id` of `region`.
#[derive(Clone)]
pub struct InProcClient {
    fleet: InProcFleet,
    id: ClientId,
    region: RegionId,
}

/// An update handed over in process (see the module doc).
#[derive(Debug)]
pub struct InProcUpload {
    pub task: String,
    /// The id the caller claims; must be its own (or empty).
    pub client: String,
    /// Values the update declares (a gRPC upload's header).
    pub total_values: u64,
    pub is_delta: bool,
    /// The values sent: all of them, or for a cut-off upload the first ones.
    pub values: Vec<f32>,
    /// `None`: the upload was cut off before its trailer, and is refused.
    pub trailer: Option<InProcTrailer>,
    /// What the update weighs encoded, for the run's byte and cost accounting.
    pub wire_bytes: u64,
}

/// The closing part of an update.
#[derive(Debug, Clone)]
pub struct InProcTrailer {
    pub samples: u64,
    pub metrics: TrainingMetrics,
    pub update_norm: f64,
    pub reference: Option<fedra_types::drift::DataReference>,
}

impl InProcFleet {
    pub(crate) fn new(engine: EngineHandle, staging: StagingPool, settings: EngineSettings) -> Self {
        Self { engine, staging, settings, uploading: InFlight::default() }
    }

    /// The fleet API as client `id` of `region`.
    ///
    /// # Errors
    /// [`ApiError::Invalid`] for an id or region that is not valid.
    pub fn client(&self, id: &str, region: &str) -> Result<InProcClient, ApiError> {
        Ok(InProcClient {
            fleet: self.clone(),
            id: convert::client_id("client_id", id)?,
            region: convert::region_id("region", region)?,
        })
    }
}

impl InProcClient {
    pub fn id(&self) -> &ClientId {
        &self.id
    }

    /// The caller's own id, which a request's `field` must repeat or leave empty.
    fn caller(&self, field: &str, claimed: &str) -> Result<ClientId, ApiError> {
        if !claimed.is_empty() && claimed != self.id.as_str() {
            return Err(ApiError::Denied(format!(
                "{field} {claimed:?} is not the caller: this in-process link is {}",
                self.id
            )));
        }
        Ok(self.id.clone())
    }

    /// Registers the client (a new session when `session` differs from the last one).
    /// Returns the heartbeat interval the coordinator expects.
    ///
    /// # Errors
    /// Invalid descriptors (named), store failures.
    pub async fn register(
        &self,
        datasets: Vec<DatasetDescriptor>,
        devices: Vec<String>,
        session: String,
    ) -> Result<Duration, ApiError> {
        // A sidecar stands for itself (only a regional aggregator stands for others).
        let record = convert::checked_client(self.id.clone(), self.region.clone(), datasets, devices, 1)?;
        self.fleet.engine.register(record, session).await?;
        Ok(self.fleet.settings.heartbeat_interval)
    }

    /// The client's tasks from now on; the engine counts the client offline once the
    /// receiver is dropped.
    ///
    /// # Errors
    /// [`RoundError::UnknownClient`] before registration.
    pub async fn subscribe(&self) -> Result<TaskReceiver, ApiError> {
        Ok(self.fleet.engine.subscribe(self.id.clone()).await?)
    }

    /// Returns the client's tasks the coordinator cancelled.
    ///
    /// # Errors
    /// [`RoundError::UnknownClient`].
    pub async fn heartbeat(&self) -> Result<Vec<String>, ApiError> {
        Ok(self.fleet.engine.heartbeat(self.id.clone()).await?.into_iter().map(String::from).collect())
    }

    /// The task's global model: the round's own shared buffer, not a copy.
    ///
    /// # Errors
    /// An unknown or closed task, another client's task.
    pub async fn fetch_model(&self, task: &str, claimed: &str) -> Result<Arc<GlobalModel>, ApiError> {
        let task = convert::task_id("task_id", task)?;
        let client = self.caller("client_id", claimed)?;
        Ok(self.fleet.engine.fetch_model(task, client).await?)
    }

    /// Records the client's evaluation of a checkpoint.
    ///
    /// # Errors
    /// Values out of range (named), an unknown or closed task, a training task.
    pub async fn report_evaluation(&self, task: &str, claimed: &str, report: EvaluationReport) -> Result<(), ApiError> {
        let task = convert::task_id("task_id", task)?;
        let client = self.caller("client_id", claimed)?;
        let report = convert::checked_evaluation_report(report)?;
        Ok(self.fleet.engine.report_evaluation(task, client, report).await?)
    }

    /// Stages and commits an update; returns how many updates the round has counted.
    ///
    /// # Errors
    /// What the gRPC edge refuses, with the same [`ApiError`]: the engine's refusals (another
    /// client's task, a wrong length, a closed round, sample counts, privacy bounds), a
    /// non-finite value, an upload cut off before its trailer or with too few values, a
    /// trailer out of range, the round's deadline passing while waiting for a staging slot.
    pub async fn push_update(&self, upload: InProcUpload) -> Result<u32, ApiError> {
        match self.receive_update(upload).await {
            Ok(reported) => Ok(reported),
            Err(e @ ApiError::Round(RoundError::RoundClosed { .. })) => {
                info!(client = %self.id, error = %e, "straggler update discarded");
                Err(e)
            }
            Err(e) => {
                warn!(client = %self.id, error = %e, "update rejected");
                Err(e)
            }
        }
    }

    async fn receive_update(&self, upload: InProcUpload) -> Result<u32, ApiError> {
        let InProcUpload { task, client, total_values, is_delta, values, trailer, wire_bytes } = upload;
        let task = convert::task_id("header.task_id", &task)?;
        let client = self.caller("header.client_id", &client)?;
        let fleet = &self.fleet;
        let ticket = fleet.engine.begin_upload(task.clone(), client.clone(), total_values).await?;
        // After the engine confirmed the task is the caller's: nobody can claim another's.
        let _claim = fleet.uploading.claim(&task, "upload")?;
        let received = values.len() as u64;
        // Waits while the staging budget is spent by other uploads: memory stays bounded.
        let staged = tokio::time::timeout_at(ticket.deadline, fleet.staging.adopt(values))
            .await
            .map_err(|_| ApiError::Protocol("the round's deadline passed while waiting for a staging slot".into()))?;
        // In the order the gRPC edge meets them: values as they arrive, then the trailer.
        if let Some(i) = staged.as_slice().iter().position(|v| !v.is_finite()) {
            return Err(CodecError::NotFinite(i as u64).into());
        }
        let Some(trailer) = trailer else {
            return Err(ApiError::Protocol(format!(
                "stream ended after {received} of {total_values} values without a trailer; update discarded"
            )));
        };
        if received < total_values {
            return Err(ChunkError::Incomplete { received, total: total_values }.into());
        }
        if received > total_values {
            return Err(ChunkError::Overrun { offset: 0, values: received, total: total_values }.into());
        }
        if !(trailer.update_norm.is_finite() && trailer.update_norm >= 0.0) {
            return Err(ApiError::Invalid(format!(
                "trailer.update_norm must be finite and non-negative, got {}",
                trailer.update_norm
            )));
        }
        let update = VerifiedUpdate {
            values: crate::round::UpdateValues::Staged(staged),
            metrics: convert::checked_metrics(trailer.metrics)?,
            samples: limits::samples("trailer.samples", trailer.samples, false)?,
            update_norm: trailer.update_norm,
            is_delta,
            wire_bytes,
            // A sidecar's own update; regional aggregates go over gRPC.
            contributors: 1,
            scopes: Vec::new(),
            reference: trailer.reference.map(Box::new),
        };
        Ok(fleet.engine.commit_upload(task, client, update).await?)
    }
}
