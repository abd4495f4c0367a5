//! A regional aggregator's session with its global coordinator (see [`crate::hierarchy`]):
//! it registers as its region's participant with the region's inventory, takes cohort
//! tasks, serves each with a local one-round run, and pushes that run's aggregate upstream
//! as one update: the region's sample-weighted mean, with the region's total samples as its
//! weight and its contributor count. An evaluation task is served by a local run that only
//! evaluates the global checkpoint, and its sample-weighted means go upstream as one
//! evaluation report. Nothing that names a client leaves the region.
//!
//! What it owes survives a restart: every task and its local run are in the store
//! ([`UpstreamTask`]); a new session first resumes the tasks still `training` (an
//! interrupted local round is re-run by the engine, a finished one is pushed again), and
//! the global coordinator counts one aggregate per task (a resend is `already reported`,
//! recorded here as pushed).

use super::{ApiError, convert};
use crate::checkpoint::{Checkpoints, Manifest};
use crate::config::topology::UpstreamConfig;
use crate::hierarchy::{CohortKind, CohortTask};
use crate::ids::{CheckpointId, RegionId, RoundNumber, RunId, TaskId};
use crate::round::{EngineHandle, RoundError, RunEventKind};
use crate::store::{RunState, Store, StoreError, UpstreamState, UpstreamTask};
use fedra_proto::chunking::{Reassembler, chunks, transfer_digest_hex};
use fedra_proto::pb;
use fedra_proto::pb::fleet_service_client::FleetServiceClient;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;
use tracing::{info, warn};

/// Why an upstream session ended or a task could not be served.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach the global coordinator at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("the global coordinator answered {code:?}: {message}")]
    Rpc { code: tonic::Code, message: String },
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{0}")]
    Protocol(String),
}

impl From<tonic::Status> for UpstreamError {
    fn from(s: tonic::Status) -> Self {
        Self::Rpc { code: s.code(), message: s.message().to_string() }
    }
}

/// The upstream side of a regional aggregator. Cheap to share; one per coordinator.
pub struct Upstream {
    config: UpstreamConfig,
    location: RegionId,
    engine: EngineHandle,
    store: Arc<dyn Store>,
    /// Where the region's checkpoints are read back from.
    checkpoints: Checkpoints,
    /// Tasks being served now, so that a redelivered task or a resumed one runs once.
    serving: Mutex<HashSet<TaskId>>,
    /// The serving tasks' handles: they end with [`Self::run`] (stopped, or aborted as a
    /// crash would), never outlive it.
    spawned: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// Aborts every serving task when [`Upstream::run`] ends or is dropped.
struct AbortServing(Arc<Upstream>);

impl Drop for AbortServing {
    fn drop(&mut self) {
        for h in self.0.spawned.lock().expect("spawned lock").drain(..) {
            h.abort();
        }
    }
}

/// Reconnection backoff bounds.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Upstream {
    pub fn new(
        config: UpstreamConfig,
        location: RegionId,
        engine: EngineHandle,
        store: Arc<dyn Store>,
        checkpoints: Checkpoints,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            location,
            engine,
            store,
            checkpoints,
            serving: Mutex::default(),
            spawned: Mutex::default(),
        })
    }

    /// Runs sessions until `stop` turns true, reconnecting with backoff in between. A
    /// refusal of this aggregator's identity (PERMISSION_DENIED) is logged and retried
    /// slowly: the global coordinator's operator may fix its side without restarting ours.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let _serving = AbortServing(Arc::clone(&self));
        let mut backoff = BACKOFF_INITIAL;
        loop {
            let started = tokio::time::Instant::now();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = self.session() => match r {
                    Ok(()) => info!(upstream = %self.config.url, "global coordinator closed the task stream; reconnecting"),
                    Err(e) => warn!(upstream = %self.config.url, error = %e, "upstream session ended"),
                },
            }
            if started.elapsed() > BACKOFF_MAX {
                backoff = BACKOFF_INITIAL;
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect(&self) -> Result<FleetServiceClient<Channel>, UpstreamError> {
        let err = |message: String| UpstreamError::Connect { url: self.config.url.clone(), message };
        let endpoint = match &self.config.tls_dir {
            Some(dir) => fedra_pki::ClientTls::load(dir)
                .and_then(|t| t.endpoint(&self.config.url))
                .map_err(|e| err(e.to_string()))?,
            None => Channel::from_shared(self.config.url.clone()).map_err(|e| err(e.to_string()))?,
        };
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(FleetServiceClient::new(channel)
            .max_decoding_message_size(super::limits::FLEET_MAX_MESSAGE_BYTES)
            .max_encoding_message_size(super::limits::FLEET_MAX_MESSAGE_BYTES))
    }

    /// One connection's life: register, resume what is owed, serve tasks until the stream ends.
    async fn session(self: &Arc<Self>) -> Result<(), UpstreamError> {
        let mut fleet = self.connect().await?;
        let inventory = self.engine.inventory().await?;
        let reg = convert::aggregator_register_to_pb(&self.config.name, &self.location, inventory);
        let settings = fleet.register(reg).await?.into_inner();
        let mut tasks =
            fleet.subscribe(pb::SubscribeRequest { client_id: self.config.name.to_string() }).await?.into_inner();
        info!(upstream = %self.config.url, region = %self.location, clients = inventory.clients, "registered with the global coordinator");
        let every = Duration::from_secs_f64(settings.heartbeat_interval_seconds.clamp(0.05, 3600.0));
        let heartbeat = tokio::spawn(Arc::clone(self).heartbeats(fleet.clone(), every, inventory));
        for owed in self.store.list_upstream_tasks().await?.into_iter().filter(|t| t.state == UpstreamState::Training) {
            info!(task = %owed.task, run = %owed.run, "resuming a cohort task owed upstream");
            self.spawn_serve(fleet.clone(), owed.task.clone(), None);
        }
        let result = async {
            while let Some(task) = tasks.message().await? {
                match convert::cohort_task_from_pb(task) {
                    Ok(cohort) => self.spawn_serve(fleet.clone(), cohort.task.clone(), Some(cohort)),
                    Err(e) => warn!(error = %e, "ignoring a malformed task from the global coordinator"),
                }
            }
            Ok(())
        }
        .await;
        heartbeat.abort();
        result
    }

    /// Heartbeats; re-registers when the region's inventory changed; cancels the local run
    /// of a task the global coordinator abandoned.
    async fn heartbeats(
        self: Arc<Self>,
        mut fleet: FleetServiceClient<Channel>,
        every: Duration,
        mut sent: crate::hierarchy::Inventory,
    ) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let req = pb::HeartbeatRequest { client_id: self.config.name.to_string(), task_id: String::new() };
            match fleet.heartbeat(req).await {
                Ok(resp) => {
                    for id in resp.into_inner().cancelled_tasks {
                        self.cancel_local(&id).await;
                    }
                }
                Err(e) => warn!(error = %e, "heartbeat to the global coordinator failed"),
            }
            if let Ok(now) = self.engine.inventory().await
                && now != sent
            {
                let reg = convert::aggregator_register_to_pb(&self.config.name, &self.location, now);
                if fleet.register(reg).await.is_ok() {
                    sent = now;
                }
            }
        }
    }

    async fn cancel_local(&self, task: &str) {
        let Ok(tasks) = self.store.list_upstream_tasks().await else { return };
        if let Some(t) = tasks.iter().find(|t| t.task.as_str() == task && t.state == UpstreamState::Training) {
            info!(task, run = %t.run, "the global coordinator abandoned the task; cancelling its local run");
            let _ = self.engine.cancel(t.run.clone()).await;
        }
    }

    fn spawn_serve(self: &Arc<Self>, fleet: FleetServiceClient<Channel>, id: TaskId, new: Option<CohortTask>) {
        if !self.serving.lock().expect("serving lock").insert(id.clone()) {
            return;
        }
        let me = Arc::clone(self);
        let handle = tokio::spawn(async move {
            if let Err(e) = me.serve(fleet, &id, new).await {
                warn!(task = %id, error = %e, "cohort task not finished; retried on the next session");
            }
            me.serving.lock().expect("serving lock").remove(&id);
        });
        let mut spawned = self.spawned.lock().expect("spawned lock");
        spawned.retain(|h| !h.is_finished());
        spawned.push(handle.abort_handle());
    }

    /// Serves one task: starts its local run (a new task) or finds it (a resumed one), waits
    /// for it to end and pushes its aggregate, recording the outcome.
    async fn serve(
        &self,
        mut fleet: FleetServiceClient<Channel>,
        id: &TaskId,
        new: Option<CohortTask>,
    ) -> Result<(), UpstreamError> {
        let known = self.store.list_upstream_tasks().await?.into_iter().find(|t| t.task == *id);
        let run = match (known, new) {
            (Some(t), _) if t.state != UpstreamState::Training => return Ok(()),
            (Some(t), _) => t.run,
            (None, Some(task)) => {
                let params = fetch_model(&mut fleet, &task, &self.config.name).await?;
                self.engine.submit_cohort(task, params).await?
            }
            (None, None) => return Ok(()),
        };
        let (state, reason) = self.wait_for_end(&run).await?;
        let record = self.store.list_upstream_tasks().await?.into_iter().find(|t| t.task == *id);
        if state != RunState::Succeeded {
            let why = format!("local run {run} ended {state}: {}", reason.unwrap_or_default());
            warn!(task = %id, "{why}; nothing to push");
            return Ok(self.store.end_upstream_task(id, UpstreamState::Abandoned, Some(&why)).await?);
        }
        let Some(record) = record else { return Ok(()) };
        let plan = self.store.get_run(&run).await?.ok_or_else(|| RoundError::RunNotFound(run.clone()))?.plan;
        let sent = match CohortKind::of(&plan) {
            CohortKind::Train => self
                .push(&mut fleet, &record)
                .await
                .map(|reported| format!("accepted; {reported} client updates in the global round so far")),
            CohortKind::Evaluate => self.report_evaluation(&mut fleet, &record).await,
        };
        let (outcome, detail) = match sent {
            Ok(detail) => (UpstreamState::Pushed, detail),
            Err(UpstreamError::Rpc { code: tonic::Code::FailedPrecondition, message })
                if message.contains("already reported") =>
            {
                (UpstreamState::Pushed, format!("already accepted before: {message}"))
            }
            Err(UpstreamError::Rpc { code, message })
                if matches!(
                    code,
                    tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
                ) =>
            {
                (UpstreamState::Abandoned, format!("refused upstream ({code:?}): {message}"))
            }
            Err(e) => return Err(e),
        };
        info!(task = %id, run = %run, ?outcome, detail, "cohort task ended");
        Ok(self.store.end_upstream_task(id, outcome, Some(&detail)).await?)
    }

    /// The local run's terminal state and reason, from its events.
    async fn wait_for_end(&self, run: &RunId) -> Result<(RunState, Option<String>), UpstreamError> {
        loop {
            let (past, live) = self.engine.watch(run.clone()).await?;
            let ended = |e: &crate::round::RunEvent| match &e.kind {
                RunEventKind::RunFinished { state, reason } if e.run == *run => Some((*state, reason.clone())),
                _ => None,
            };
            if let Some(end) = past.iter().find_map(ended) {
                return Ok(end);
            }
            let Some(mut live) = live else {
                let record = self.store.get_run(run).await?.ok_or_else(|| RoundError::RunNotFound(run.clone()))?;
                return Ok((record.state, record.failure));
            };
            loop {
                match live.recv().await {
                    Ok(e) => {
                        if let Some(end) = ended(&e) {
                            return Ok(end);
                        }
                    }
                    // Missed events: ask again from the store's record.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err(RoundError::ShuttingDown.into());
                    }
                }
            }
        }
    }

    /// Pushes the local run's checkpoint as one update: the region's sample-weighted mean
    /// with weight Σ samples, or for a private cohort its noised release with weight its
    /// share of the denominator and the ε its ledger charged (sample counts are not
    /// released: DP-FedAvg weighs clients alike).
    async fn push(&self, fleet: &mut FleetServiceClient<Channel>, t: &UpstreamTask) -> Result<u32, UpstreamError> {
        let (mean, manifest) = self.load(&CheckpointId::for_round(&t.run, RoundNumber(1))).await?;
        let (global, _) = self.load(&CheckpointId::for_round(&t.run, RoundNumber(0))).await?;
        let contributors: u32 = manifest.regions.values().map(|r| r.clients).sum();
        let norm = mean.iter().zip(&global).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt();
        let (weight, scopes) = match &manifest.privacy {
            Some(p) => (
                u64::from(p.expected_clients),
                p.scopes
                    .iter()
                    .map(|s| pb::ScopeSpent { scope: s.scope.clone(), epsilon: s.epsilon, delta: s.delta })
                    .collect(),
            ),
            None => (manifest.total_samples, Vec::new()),
        };
        let header = pb::UpdatePart {
            part: Some(pb::update_part::Part::Header(pb::UpdateHeader {
                task_id: t.task.to_string(),
                client_id: self.config.name.to_string(),
                total_values: mean.len() as u64,
                is_delta: false,
                samples: weight,
            })),
        };
        let trailer = pb::UpdatePart {
            part: Some(pb::update_part::Part::Trailer(pb::UpdateTrailer {
                samples: weight,
                metrics: Some(convert::metrics_to_pb(&manifest.metrics)),
                update_norm: norm,
                digest: transfer_digest_hex(&mean),
                contributors,
                scopes,
                reference: None,
            })),
        };
        let parts: Vec<pb::UpdatePart> = std::iter::once(header)
            .chain(
                chunks(&mean, fedra_proto::chunking::DEFAULT_CHUNK_BYTES)
                    .map(|c| pb::UpdatePart { part: Some(pb::update_part::Part::Chunk(c)) }),
            )
            .chain(std::iter::once(trailer))
            .collect();
        info!(task = %t.task, weight, contributors, "pushing the region's aggregate upstream");
        Ok(fleet.push_update(tokio_stream::iter(parts)).await?.into_inner().reported)
    }

    /// Reports the local evaluation run's overall means (sample-weighted over the region's
    /// clients that evaluated) as one evaluation; no client evaluated is a report without
    /// samples.
    async fn report_evaluation(
        &self,
        fleet: &mut FleetServiceClient<Channel>,
        t: &UpstreamTask,
    ) -> Result<String, UpstreamError> {
        let overall = self.store.list_evaluations(&t.run).await?.into_iter().find(|e| e.region.is_none());
        let (samples, loss, accuracy, clients) =
            overall.map_or((0, 0.0, 0.0, 0), |e| (e.samples, e.loss, e.accuracy, e.clients));
        info!(task = %t.task, samples, clients, "reporting the region's evaluation upstream");
        fleet
            .report_evaluation(pb::EvaluationReport {
                task_id: t.task.to_string(),
                client_id: self.config.name.to_string(),
                samples,
                loss,
                accuracy,
                clients,
            })
            .await?;
        Ok(format!("evaluation of {clients} clients ({samples} samples) accepted"))
    }

    async fn load(&self, id: &CheckpointId) -> Result<(Vec<f32>, Manifest), UpstreamError> {
        let record = self.store.get_checkpoint(id).await?.ok_or_else(|| RoundError::CheckpointNotFound(id.clone()))?;
        let manifest = convert::manifest_of(&record)?;
        let (_, weights) = record.locations.first().ok_or_else(|| RoundError::CheckpointNotFound(id.clone()))?;
        let params =
            self.checkpoints.load(weights, &manifest.file_sha256, &manifest.layout).await.map_err(RoundError::from)?;
        Ok((params, manifest))
    }
}

/// Downloads and verifies the task's global model.
async fn fetch_model(
    fleet: &mut FleetServiceClient<Channel>,
    task: &CohortTask,
    name: &crate::ids::ClientId,
) -> Result<Vec<f32>, UpstreamError> {
    let mut stream = fleet
        .fetch_model(pb::FetchModelRequest { task_id: task.task.to_string(), client_id: name.to_string() })
        .await?
        .into_inner();
    let header = match stream.message().await? {
        Some(pb::ModelPart { part: Some(pb::model_part::Part::Header(h)) }) => h,
        _ => return Err(UpstreamError::Protocol("model stream did not start with a header".into())),
    };
    let expected = task.model.layout().total() as u64;
    if header.total_values != expected {
        return Err(UpstreamError::Protocol(format!(
            "the global model has {} values, the task's model {expected}",
            header.total_values
        )));
    }
    let mut r = Reassembler::new(header.total_values);
    while let Some(part) = stream.message().await? {
        match part.part {
            Some(pb::model_part::Part::Chunk(c)) => r.push(&c).map_err(|e| UpstreamError::Protocol(e.to_string()))?,
            _ => return Err(UpstreamError::Protocol("unexpected message in the model stream".into())),
        }
    }
    r.finish(&header.digest).map_err(|e| UpstreamError::Protocol(e.to_string()))
}
