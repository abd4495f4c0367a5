//! `FleetService`: what client sidecars call. Update uploads are verified here, chunk by
//! chunk, before the engine ever sees them (see [`crate::aggregation`] for why a broken
//! upload cannot touch the running sum).

use super::auth::{Caller, Gate, Rpc};
use super::upload_slots::{Held, UploadSlots};
use super::{ApiError, convert};
use crate::aggregation::StagingPool;
use crate::round::RoundError;
use crate::round::{EngineHandle, EngineSettings};
use crate::round::{UpdateValues, UploadTicket, VerifiedUpdate};
use fedra_proto::compressed::UpdateDecoder;
use fedra_proto::pb;
use fedra_proto::pb::fleet_service_server::FleetService;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

mod streamed;

/// Budget bytes a streamed upload's slot takes (at most its update's size): what its
/// HTTP/2 window may hold while the fold consumes it. With the default 32 MiB staging
/// budget, 8 large uploads stream at once.
const STREAM_SLOT_BYTES: usize = 4 << 20;

pub struct FleetApi {
    engine: EngineHandle,
    staging: StagingPool,
    /// Downloads streaming at once. Each holds about one encoded chunk in gRPC's buffers,
    /// so without a bound a round's broadcast to N clients would cost N chunks of memory.
    downloads: Arc<Semaphore>,
    settings: EngineSettings,
    gate: Gate,
    /// Tasks with an upload streaming now: one at a time per task, so one client cannot
    /// hold several staging slots with copies of the same update.
    uploading: InFlight,
    /// Tasks with a model download streaming now: one at a time per task.
    downloading: InFlight,
    /// Staging slots reserved ahead of uploads (`ReserveUpload`).
    reserved: UploadSlots,
}

/// A set of tasks with a transfer in progress; [`InFlight::claim`] returns a guard that
/// removes the task again when the transfer ends, however it ends.
#[derive(Clone, Default)]
pub(crate) struct InFlight(Arc<std::sync::Mutex<std::collections::HashSet<crate::ids::TaskId>>>);

pub(crate) struct Claim {
    set: InFlight,
    task: crate::ids::TaskId,
}

impl InFlight {
    pub(crate) fn claim(&self, task: &crate::ids::TaskId, what: &str) -> Result<Claim, ApiError> {
        if !self.0.lock().expect("in-flight lock").insert(task.clone()) {
            return Err(ApiError::Busy(format!(
                "a {what} for task {task} is already in progress; one at a time per task"
            )));
        }
        Ok(Claim { set: self.clone(), task: task.clone() })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.0.lock().expect("in-flight lock").remove(&self.task);
    }
}

impl FleetApi {
    pub fn new(
        engine: EngineHandle,
        staging: StagingPool,
        max_downloads: usize,
        settings: EngineSettings,
        gate: Gate,
    ) -> Self {
        Self {
            engine,
            staging,
            downloads: Arc::new(Semaphore::new(max_downloads.max(1))),
            settings,
            gate,
            uploading: InFlight::default(),
            downloading: InFlight::default(),
            reserved: UploadSlots::default(),
        }
    }

    /// Who registers where: regional aggregators (and only they) at a global coordinator,
    /// clients everywhere else. Insecure callers are taken at their word.
    fn check_tier(&self, caller: &Caller) -> Result<(), ApiError> {
        use fedra_types::identity::Role;
        let Some(identity) = caller.identity() else { return Ok(()) };
        let aggregator = identity.role() == Role::RegionalAggregator;
        if self.settings.tier.is_global() != aggregator {
            let tier = self.settings.tier.name();
            let who = if aggregator {
                "regional aggregators register with a global coordinator"
            } else {
                "only regional aggregators register with a global coordinator"
            };
            return Err(ApiError::Denied(format!(
                "{who}; this coordinator is {tier} and {identity} may not register here"
            )));
        }
        Ok(())
    }

    /// Waits for a staging slot for `total_values`, until the round's deadline.
    async fn staging_slot(
        &self,
        deadline: tokio::time::Instant,
        total_values: u64,
    ) -> Result<crate::aggregation::StagingBuffer, ApiError> {
        tokio::time::timeout_at(deadline, self.staging.acquire(total_values as usize))
            .await
            .map_err(|_| ApiError::Protocol("the round's deadline passed while waiting for a staging slot".into()))
    }

    /// Waits for a streamed upload's slot (see [`STREAM_SLOT_BYTES`]), until the deadline.
    async fn stream_slot(&self, ticket: &UploadTicket) -> Result<crate::aggregation::StreamSlot, ApiError> {
        let bytes = STREAM_SLOT_BYTES.min(ticket.total_values as usize * 4);
        tokio::time::timeout_at(ticket.deadline, self.staging.admit(bytes))
            .await
            .map_err(|_| ApiError::Protocol("the round's deadline passed while waiting for a staging slot".into()))
    }

    /// Holds a staging slot for `task`'s coming upload (see [`UploadSlots`]).
    async fn reserve_slot(&self, caller: &Caller, r: pb::ReserveUploadRequest) -> Result<f64, ApiError> {
        let task = convert::task_id("task_id", &r.task_id)?;
        let client = caller.client_id("client_id", &r.client_id)?;
        let ticket = self.engine.begin_upload(task.clone(), client, r.total_values).await?;
        // One wait per task: a client cannot queue for several slots with one task.
        let _claim = self.uploading.claim(&task, "upload reservation")?;
        let held = if ticket.stream.is_some() {
            Held::Stream(self.stream_slot(&ticket).await?)
        } else {
            Held::Staged(self.staging_slot(ticket.deadline, ticket.total_values).await?)
        };
        let hold = self.settings.client_timeout;
        self.reserved.hold(task, held, hold);
        Ok(hold.as_secs_f64())
    }

    async fn receive_update(&self, caller: &Caller, mut stream: Streaming<pb::UpdatePart>) -> Result<u32, ApiError> {
        use pb::update_part::Part;
        let header = match stream.message().await.map_err(|s| ApiError::Protocol(s.message().to_string()))? {
            Some(pb::UpdatePart { part: Some(Part::Header(h)) }) => h,
            _ => return Err(ApiError::Protocol("the first message must be a header".into())),
        };
        let task = convert::task_id("header.task_id", &header.task_id)?;
        let client = caller.client_id("header.client_id", &header.client_id)?;
        let ticket = self.engine.begin_upload(task.clone(), client.clone(), header.total_values).await?;
        // After the engine confirmed the task is the caller's: nobody can claim another's.
        let _claim = self.uploading.claim(&task, "upload")?;
        // An update that announces its weight folds as it streams, where the round allows.
        if let Some(sink) = ticket.stream.clone()
            && header.samples > 0
        {
            return self.receive_streamed(stream, &header, task, client, &ticket, sink).await;
        }
        let deadline = ticket.deadline;
        // The slot reserved ahead (ReserveUpload), or one waited for now while the staging
        // budget is spent by other uploads: memory stays bounded either way.
        let mut staged = match self.reserved.take_staged(&task, ticket.total_values as usize) {
            Some(buffer) => buffer,
            None => self.staging_slot(deadline, ticket.total_values).await?,
        };
        let idle = self.settings.client_timeout;
        // A compressed upload decodes as global + Δ: the round's model, held for the upload.
        let global: &[f32] = ticket.global.as_ref().map_or(&[], |g| g.params.as_slice());
        let mut cursor = UpdateDecoder::new(ticket.compression, ticket.total_values, global)
            .map_err(|e| ApiError::Round(RoundError::Internal(e.to_string())))?;
        let mut wire_bytes = 0u64;
        let trailer = loop {
            match next_chunk(&mut stream, idle, deadline, cursor.received(), ticket.total_values).await? {
                Received::Chunk(c) => {
                    cursor.accept(&c, staged.as_mut_slice())?;
                    wire_bytes += fedra_proto::compressed::encoded_len(&c) as u64;
                    crate::crash::point("mid_upload");
                }
                Received::Trailer(t) => break t,
            }
        };
        let computed = cursor.finish()?;
        let update = verified(&header, trailer, &computed, UpdateValues::Staged(staged), wire_bytes)?;
        Ok(self.engine.commit_upload(task, client, update).await?)
    }
}

/// The update an upload's trailer completes, once the trailer checks out against what was
/// received (`computed`: the digest of the received chunks).
///
/// # Errors
/// INVALID_ARGUMENT naming the trailer field that is wrong.
fn verified(
    header: &pb::UpdateHeader,
    trailer: pb::UpdateTrailer,
    computed: &str,
    values: UpdateValues,
    wire_bytes: u64,
) -> Result<VerifiedUpdate, ApiError> {
    if !trailer.digest.eq_ignore_ascii_case(computed) {
        return Err(ApiError::Invalid(format!(
            "trailer.digest {:?} does not match the received values ({computed})",
            trailer.digest
        )));
    }
    if !(trailer.update_norm.is_finite() && trailer.update_norm >= 0.0) {
        return Err(ApiError::Invalid(format!(
            "trailer.update_norm must be finite and non-negative, got {}",
            trailer.update_norm
        )));
    }
    if header.samples != 0 && trailer.samples != header.samples {
        return Err(ApiError::Invalid(format!(
            "trailer.samples {} differs from header.samples {}, as announced",
            trailer.samples, header.samples
        )));
    }
    let metrics = convert::metrics_from_pb(trailer.metrics)?;
    Ok(VerifiedUpdate {
        values,
        samples: super::limits::samples("trailer.samples", trailer.samples, false)?,
        metrics,
        update_norm: trailer.update_norm,
        is_delta: header.is_delta,
        wire_bytes,
        contributors: super::limits::members("trailer.contributors", trailer.contributors)?,
        scopes: super::limits::scopes("trailer.scopes", trailer.scopes)?,
        reference: trailer
            .reference
            .as_ref()
            .map(fedra_proto::drift_wire::reference_from_pb)
            .transpose()
            .map(|r| r.map(Box::new))
            .map_err(|e| ApiError::Invalid(format!("trailer.reference: {e}")))?,
    })
}

/// What an upload's next message brought.
enum Received {
    Chunk(pb::ParamChunk),
    Trailer(pb::UpdateTrailer),
}

/// The upload's next chunk or its trailer, after `received` of `total` values. A stream that
/// broke, went silent or ended early, or a second header, is an error naming how far it got.
async fn next_chunk(
    stream: &mut Streaming<pb::UpdatePart>,
    idle: std::time::Duration,
    deadline: tokio::time::Instant,
    received: u64,
    total: u64,
) -> Result<Received, ApiError> {
    use pb::update_part::Part;
    let part = next_part(stream, idle, deadline, received).await?.map_err(|s| {
        ApiError::Protocol(format!("upload broke after {received} values ({}); update discarded", s.message()))
    })?;
    match part.and_then(|p| p.part) {
        Some(Part::Chunk(c)) => Ok(Received::Chunk(c)),
        Some(Part::Trailer(t)) => Ok(Received::Trailer(t)),
        Some(Part::Header(_)) => Err(ApiError::Protocol("a second header arrived".into())),
        None => Err(ApiError::Protocol(format!(
            "stream ended after {received} of {total} values without a trailer; update discarded"
        ))),
    }
}

/// The next message of an upload, or an error once the stream has been silent for `idle`
/// (the client timeout: a live sidecar never pauses that long mid-upload) or the round's
/// deadline passed. Either way the staging slot is released when the caller returns.
async fn next_part(
    stream: &mut Streaming<pb::UpdatePart>,
    idle: std::time::Duration,
    deadline: tokio::time::Instant,
    received: u64,
) -> Result<Result<Option<pb::UpdatePart>, Status>, ApiError> {
    let by = deadline.min(tokio::time::Instant::now() + idle);
    match tokio::time::timeout_at(by, stream.message()).await {
        Ok(part) => Ok(part),
        Err(_) if by == deadline => {
            Err(ApiError::Protocol(format!("the round's deadline passed after {received} values; update discarded")))
        }
        Err(_) => Err(ApiError::Protocol(format!("no data for {idle:?} after {received} values; update discarded"))),
    }
}

type TaskStream = Pin<Box<dyn Stream<Item = Result<pb::Task, Status>> + Send>>;
type ModelStream = Pin<Box<dyn Stream<Item = Result<pb::ModelPart, Status>> + Send>>;

#[tonic::async_trait]
impl FleetService for FleetApi {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let caller = self.gate.admit(&req, Rpc::Register)?;
        let r = req.into_inner();
        let id = caller.client_id("client_id", &r.client_id)?;
        let region = caller.region("region", &r.region)?;
        self.check_tier(&caller)?;
        let session = r.session_id.clone();
        let mut record = convert::client_from_pb(id, region, r)?;
        if !self.settings.tier.is_global() {
            // Only a regional aggregator stands for other clients.
            record.members = 1;
        }
        self.engine.register(record, session).await?;
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval_seconds: self.settings.heartbeat_interval.as_secs_f64(),
            chunk_bytes: self.settings.chunk_bytes as u64,
        }))
    }

    type SubscribeStream = TaskStream;

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.gate.admit(&req, Rpc::Subscribe)?;
        let client = caller.client_id("client_id", &req.into_inner().client_id)?;
        let rx = self.engine.subscribe(client).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|t| Ok(convert::task_to_pb(*t)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = self.gate.admit(&req, Rpc::Heartbeat)?;
        let client = caller.client_id("client_id", &req.into_inner().client_id)?;
        let cancelled = self.engine.heartbeat(client).await?;
        Ok(Response::new(pb::HeartbeatResponse { cancelled_tasks: cancelled.into_iter().map(String::from).collect() }))
    }

    type FetchModelStream = ModelStream;

    async fn fetch_model(
        &self,
        req: Request<pb::FetchModelRequest>,
    ) -> Result<Response<Self::FetchModelStream>, Status> {
        let caller = self.gate.admit(&req, Rpc::FetchModel)?;
        let r = req.into_inner();
        let task = convert::task_id("task_id", &r.task_id)?;
        let client = caller.client_id("client_id", &r.client_id)?;
        let model = self.engine.fetch_model(task.clone(), client).await?;
        let claim = self.downloading.claim(&task, "model download")?;
        // Held until the response stream is dropped (sent, or the client went away).
        let permit = Arc::clone(&self.downloads).acquire_owned().await.expect("download semaphore is never closed");
        metrics::gauge!("fedra_downloads_in_progress").increment(1.0);
        let header = pb::ModelPart {
            part: Some(pb::model_part::Part::Header(pb::ModelHeader {
                layout: Some(convert::layout_to_pb(&model.layout)),
                total_values: model.params.len() as u64,
                digest: model.digest.clone(),
            })),
        };
        let per = (self.settings.chunk_bytes / 4).max(1);
        let total = model.params.len();
        let idle = self.settings.client_timeout;
        // Chunks are encoded lazily, one at a time, by a task that hands each to the response
        // stream only as the client reads. A client that stops reading for `idle` loses the
        // download: the task ends, releasing the download permit and the model buffer, so an
        // unread stream cannot hold either for longer than that.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::ModelPart, Status>>(1);
        tokio::spawn(async move {
            let (_permit, _claim) = (permit, claim);
            let _gauge = DownloadGauge;
            let chunks = (0..total).step_by(per).map(|start| {
                let end = (start + per).min(total);
                pb::ModelPart {
                    part: Some(pb::model_part::Part::Chunk(pb::ParamChunk {
                        offset: start as u64,
                        data: model.params.chunk(start..end),
                        ..pb::ParamChunk::default()
                    })),
                }
            });
            for (i, part) in std::iter::once(header).chain(chunks).enumerate() {
                match tokio::time::timeout(idle, tx.send(Ok(part))).await {
                    // The header and the first chunk are on their way, the rest is not.
                    Ok(Ok(())) if i == 1 && total > per => crate::crash::point("mid_broadcast"),
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return, // the client went away
                    Err(_) => {
                        warn!(timeout = ?idle, "model download not read; abandoned");
                        let _ = tx.try_send(Err(Status::deadline_exceeded(format!(
                            "model download not read for {idle:?}; fetch it again"
                        ))));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn report_evaluation(
        &self,
        req: Request<pb::EvaluationReport>,
    ) -> Result<Response<pb::EvaluationAck>, Status> {
        let caller = self.gate.admit(&req, Rpc::ReportEvaluation)?;
        let r = req.into_inner();
        let task = convert::task_id("task_id", &r.task_id)?;
        let client = caller.client_id("client_id", &r.client_id)?;
        let report = convert::evaluation_report_from_pb(&r)?;
        self.engine.report_evaluation(task, client, report).await?;
        Ok(Response::new(pb::EvaluationAck {}))
    }

    async fn reserve_upload(
        &self,
        req: Request<pb::ReserveUploadRequest>,
    ) -> Result<Response<pb::ReserveUploadResponse>, Status> {
        let caller = self.gate.admit(&req, Rpc::ReserveUpload)?;
        let hold_seconds = self.reserve_slot(&caller, req.into_inner()).await?;
        Ok(Response::new(pb::ReserveUploadResponse { hold_seconds }))
    }

    async fn push_update(
        &self,
        req: Request<Streaming<pb::UpdatePart>>,
    ) -> Result<Response<pb::PushUpdateResponse>, Status> {
        let caller = self.gate.admit(&req, Rpc::PushUpdate)?;
        // The upload's span names who sends it (the certificate's identity; none insecure).
        let who = caller.identity().map(ToString::to_string).unwrap_or_default();
        let span = tracing::info_span!("upload", caller = %who);
        match tracing::Instrument::instrument(self.receive_update(&caller, req.into_inner()), span).await {
            Ok(reported) => Ok(Response::new(pb::PushUpdateResponse { accepted: true, reported })),
            Err(e @ ApiError::Round(RoundError::RoundClosed { .. })) => {
                info!(error = %e, "straggler update discarded");
                Err(e.into())
            }
            Err(e) => {
                warn!(error = %e, "update rejected");
                Err(e.into())
            }
        }
    }
}

/// Counts a model download in progress for as long as its streaming task lives.
struct DownloadGauge;

impl Drop for DownloadGauge {
    fn drop(&mut self) {
        metrics::gauge!("fedra_downloads_in_progress").decrement(1.0);
    }
}
