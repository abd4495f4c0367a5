//! The sidecar protocol: register, subscribe to tasks, and for each task fetch the global
//! model, train locally, push the update; reconnect with jittered exponential backoff when
//! the coordinator goes away.
//!
//! The loop is written once against [`FleetLink`] ([`crate::transport`]): the same code runs
//! over gRPC in production and over the in-process link in simulations.
//!
//! Never a half-finished update: an upload is built from a complete training result and
//! its trailer (sample count, metrics, digest) goes last, so a crash or a broken connection
//! mid-upload leaves the coordinator with an upload that has no trailer, which it discards.

use crate::convert::WireError;
use crate::data::DatasetInfo;
use crate::task::Task;
use crate::trainer::{TrainError, Trainer};
use crate::transport::grpc::GrpcConnector;
use crate::transport::{FleetConnector, FleetLink, ModelValues, Registration, Upload, UploadBody, UploadTrailer};
use fedra_proto::chunking::ChunkError;
use fedra_types::plan::Compression;
use fedra_types::task::{PrivacyTask, TaskKind};
use futures::StreamExt;
use rand::Rng;
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// Downloads a task's model over a raw gRPC connection (tests that play a client by hand).
pub use crate::transport::grpc::fetch_model;

/// A session with the coordinator ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot reach coordinator at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("coordinator said: {message} ({code:?})")]
    Rpc { code: tonic::Code, message: String },
    #[error("malformed message from coordinator: {0}")]
    Wire(#[from] WireError),
    #[error("model download: {0}")]
    Download(#[from] ChunkError),
    #[error("local training: {0}")]
    Train(#[from] TrainError),
    #[error("model download: {0}")]
    Protocol(String),
    #[error("privacy: {0}")]
    Privacy(#[from] fedra_dp::noise::NoiseError),
}

/// Turns a trained model into what a private run uploads: the update (local − global)
/// clipped to C, plus, for local DP, lattice Gaussian noise drawn here from an OS-seeded
/// CSPRNG. Returns the update and its L2 norm before clipping (adaptive clipping's input).
fn privatise(mut local: Vec<f32>, global: &[f32], p: &PrivacyTask) -> Result<(Vec<f32>, f64), SessionError> {
    for (l, g) in local.iter_mut().zip(global) {
        *l -= g;
    }
    let clip = fedra_dp::noise::clip_l2(&mut local, p.clip_norm)?;
    if p.local_noise_std > 0.0 {
        let lattice = fedra_dp::noise::LatticeGaussian::new(
            local.len(),
            p.clip_norm * (1.0 + fedra_dp::noise::CLIP_TOLERANCE),
            p.local_noise_std,
            p.lattice_slack,
        )?;
        let mut values: Vec<f64> = local.iter().map(|v| f64::from(*v)).collect();
        lattice.add_noise(&mut values, &mut fedra_dp::noise::SecureRng::from_os_rng()?)?;
        for (l, v) in local.iter_mut().zip(&values) {
            *l = *v as f32;
        }
    }
    Ok((local, clip.norm_before))
}

impl From<tonic::Status> for SessionError {
    fn from(s: tonic::Status) -> Self {
        SessionError::Rpc { code: s.code(), message: s.message().to_string() }
    }
}

/// Identity and connection settings of a sidecar (validated by [`crate::config`]).
#[derive(Debug, Clone)]
pub struct SidecarSettings {
    /// The coordinators to try, in order (one, or all of those sharing a store: only the
    /// leader accepts connections). Never empty.
    pub endpoints: Vec<String>,
    /// Mutual TLS with the sidecar's client certificate (or plain text against an
    /// `--insecure` coordinator). Used by the default gRPC carrier only.
    pub tls: fedra_pki::ClientTls,
    pub client_id: String,
    pub region: String,
    pub devices: Vec<String>,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// What the sidecar has done so far (for logs, sims and tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SidecarStatus {
    pub connected: bool,
    pub sessions: u32,
    pub tasks_completed: u32,
    pub tasks_failed: u32,
    pub last_round: Option<(String, u32)>,
    pub last_error: Option<String>,
}

/// Fault injection for simulations and tests; the `fedra-client` binary never sets one.
pub trait UploadFaults: Send + Sync {
    /// Before an upload of `total` values for `run`/`round`: `Some(n)` makes the sidecar
    /// send the header and the first `n` values (in the task's chunk size), then end the
    /// stream without a trailer, as an upload cut off by a crash would.
    fn crash_after_values(&self, run: &str, round: u32, total: usize) -> Option<usize>;

    /// What the coordinator answered to that cut-off upload of `sent` of `total` values:
    /// `Err(message)` is its refusal, `Ok(reported)` would mean it counted the update. A
    /// crashed process would never hear the answer; the sidecar waits for it so that a
    /// simulation can show the coordinator received part of the upload and discarded it,
    /// rather than assume so.
    fn crashed(&self, run: &str, round: u32, sent: usize, total: usize, answer: Result<u32, String>);
}

/// A client sidecar: a trainer plus the protocol loop.
pub struct Sidecar {
    settings: SidecarSettings,
    datasets: Vec<DatasetInfo>,
    trainer: Arc<Mutex<Box<dyn Trainer>>>,
    status: watch::Sender<SidecarStatus>,
    upload_faults: Option<Arc<dyn UploadFaults>>,
    /// Random per process (see `RegisterRequest.session_id`): a restart is told apart from
    /// a reconnection, whose tasks are still in hand.
    session_id: String,
    /// top_k error-feedback residuals per run (in memory: lost on restart, see
    /// [`crate::compression`]).
    residuals: Arc<Mutex<crate::compression::Residuals>>,
    /// What carries the sessions' messages: gRPC unless [`Sidecar::with_connector`].
    connector: Arc<dyn FleetConnector>,
}

impl Sidecar {
    pub fn new(settings: SidecarSettings, datasets: Vec<DatasetInfo>, trainer: Box<dyn Trainer>) -> Self {
        let (status, _) = watch::channel(SidecarStatus::default());
        let session_id = format!("{:016x}", rand::random::<u64>());
        let connector = Arc::new(GrpcConnector { tls: settings.tls.clone() });
        Self {
            connector,
            settings,
            datasets,
            trainer: Arc::new(Mutex::new(trainer)),
            status,
            upload_faults: None,
            session_id,
            residuals: Arc::default(),
        }
    }

    /// Injects upload crashes (simulations only).
    pub fn with_upload_faults(mut self, faults: Arc<dyn UploadFaults>) -> Self {
        self.upload_faults = Some(faults);
        self
    }

    /// Carries the sessions over `connector` instead of gRPC (in-process simulations); the
    /// endpoints are then whatever that connector understands.
    pub fn with_connector(mut self, connector: Arc<dyn FleetConnector>) -> Self {
        self.connector = connector;
        self
    }

    /// Follows the sidecar's progress.
    pub fn status(&self) -> watch::Receiver<SidecarStatus> {
        self.status.subscribe()
    }

    /// Runs sessions until `shutdown` resolves, reconnecting with backoff in between. After a
    /// session ends it tries the next of its endpoints (a standby coordinator that has taken
    /// over), backing off only once none of them answered.
    ///
    /// # Errors
    /// Gives up only when the coordinator refuses the sidecar's identity
    /// (PERMISSION_DENIED: its configured `client_id` or `region` is not what its certificate
    /// states), since retrying cannot fix a configuration; everything else is retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), SessionError> {
        tokio::pin!(shutdown);
        let mut backoff = self.settings.backoff_initial;
        let endpoints = &self.settings.endpoints;
        // The endpoint to try next, and how many tries in a row found no coordinator there.
        let (mut at, mut unreachable) = (0usize, 0usize);
        loop {
            let started = tokio::time::Instant::now();
            let endpoint = &endpoints[at % endpoints.len()];
            let outcome = tokio::select! {
                () = &mut shutdown => return Ok(()),
                r = self.session(endpoint) => r,
            };
            self.status.send_modify(|s| s.connected = false);
            match outcome {
                Ok(()) => {
                    info!(client = %self.settings.client_id, %endpoint, "coordinator closed the task stream; reconnecting");
                    unreachable = 0;
                }
                Err(e @ SessionError::Rpc { code: tonic::Code::PermissionDenied, .. }) => {
                    tracing::error!(client = %self.settings.client_id, error = %e, "the coordinator refuses this identity; giving up");
                    self.status.send_modify(|s| s.last_error = Some(e.to_string()));
                    return Err(e);
                }
                Err(e) => {
                    warn!(client = %self.settings.client_id, error = %e, "session ended");
                    // A standby coordinator answers UNAVAILABLE: as good as unreachable, try the next.
                    let elsewhere = matches!(
                        e,
                        SessionError::Connect { .. } | SessionError::Rpc { code: tonic::Code::Unavailable, .. }
                    );
                    unreachable = if elsewhere { unreachable + 1 } else { 0 };
                    self.status.send_modify(|s| s.last_error = Some(e.to_string()));
                }
            }
            // The coordinator may have gone (died, deposed, shut down): the next one in the
            // list may lead now. Only a whole round of the list without a coordinator waits.
            at += 1;
            if unreachable % endpoints.len() != 0 {
                continue;
            }
            // A session that lasted a while was healthy: start backing off from scratch.
            if started.elapsed() > self.settings.backoff_max {
                backoff = self.settings.backoff_initial;
            }
            let jitter = rand::rng().random_range(0.5..1.0);
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(backoff.mul_f64(jitter)) => {}
            }
            backoff = (backoff * 2).min(self.settings.backoff_max);
        }
    }

    /// One connection's life: register, subscribe, work tasks until the stream ends.
    async fn session(&self, endpoint: &str) -> Result<(), SessionError> {
        let link = self.connector.connect(endpoint).await?;
        let registration = Registration {
            client_id: self.settings.client_id.clone(),
            region: self.settings.region.clone(),
            datasets: self.datasets.clone(),
            devices: self.settings.devices.clone(),
            session_id: self.session_id.clone(),
        };
        let settings = link.register(&registration).await?;
        let mut tasks = link.subscribe(&self.settings.client_id).await?;
        self.status.send_modify(|s| {
            s.connected = true;
            s.sessions += 1;
        });
        metrics::counter!("fedra_client_sessions_total").increment(1);
        info!(client = %self.settings.client_id, region = %self.settings.region, "registered and waiting for tasks");

        let cancelled: Arc<Mutex<HashSet<String>>> = Arc::default();
        let every = Duration::from_secs_f64(settings.heartbeat_interval_seconds.clamp(0.05, 3600.0));
        let dead_after = (every * UNANSWERED_HEARTBEATS).max(MIN_UNRESPONSIVE);
        let mut heartbeat = tokio::spawn(heartbeat_loop(
            Arc::clone(&link),
            self.settings.client_id.clone(),
            every,
            dead_after,
            Arc::clone(&cancelled),
        ));
        let work = async {
            while let Some(task) = tasks.next().await {
                let task = match task {
                    Ok(t) => t,
                    Err(SessionError::Wire(e)) => {
                        warn!(client = %self.settings.client_id, error = %e, "ignoring malformed task");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let (run, round) = (task.run.clone(), task.round);
                let kind = if task.kind == TaskKind::Evaluate { "evaluate" } else { "train" };
                let outcome = |o: &'static str| {
                    metrics::counter!("fedra_client_tasks_total", "kind" => kind, "outcome" => o).increment(1);
                };
                let span = tracing::info_span!("task", run = %run, round, kind);
                match tracing::Instrument::instrument(self.work(link.as_ref(), task, &cancelled), span).await {
                    Ok(true) => {
                        outcome("completed");
                        self.status.send_modify(|s| {
                            s.tasks_completed += 1;
                            s.last_round = Some((run, round));
                        });
                    }
                    Ok(false) => outcome("cancelled"),
                    Err(e @ SessionError::Rpc { code: tonic::Code::Unavailable, .. }) => {
                        outcome("coordinator_unavailable");
                        return Err(e);
                    }
                    // The round closed without us (target reached by others, deadline, or
                    // cancellation): normal for an over-selected straggler.
                    Err(SessionError::Rpc { code: tonic::Code::FailedPrecondition, message }) => {
                        outcome("not_counted");
                        info!(client = %self.settings.client_id, run = %run, round, reason = %message, "update not counted");
                    }
                    Err(e) => {
                        outcome("failed");
                        warn!(client = %self.settings.client_id, run = %run, round, error = %e, "task failed");
                        self.status.send_modify(|s| {
                            s.tasks_failed += 1;
                            s.last_error = Some(e.to_string());
                        });
                    }
                }
            }
            Ok(())
        };
        // A coordinator that stops answering (frozen, partitioned) keeps its connections
        // open: without this, the session would wait on it forever instead of moving on to
        // the coordinator that took over.
        let result = tokio::select! {
            r = work => r,
            _ = &mut heartbeat => Err(SessionError::Connect {
                endpoint: endpoint.to_string(),
                message: format!("the coordinator answered no heartbeat for {dead_after:?}"),
            }),
        };
        heartbeat.abort();
        result
    }

    /// Fetch → train → push for one task. Returns `false` when the task was abandoned
    /// because the coordinator cancelled it.
    async fn work(
        &self,
        link: &dyn FleetLink,
        task: Task,
        cancelled: &Mutex<HashSet<String>>,
    ) -> Result<bool, SessionError> {
        let global = link.fetch_model(&task, &self.settings.client_id).await?;
        crate::transport::check_model_length(global.len(), &task)?;
        self.trainer.lock().expect("trainer mutex poisoned").begin_task(&task.run, task.round);
        let trainer = Arc::clone(&self.trainer);
        let spec = task.spec.clone();
        let g = Arc::clone(&global);
        if task.kind == TaskKind::Evaluate {
            let outcome = tokio::task::spawn_blocking(move || {
                trainer.lock().expect("trainer mutex poisoned").evaluate_holdout(&spec, &g)
            })
            .await
            .map_err(|e| SessionError::Protocol(format!("evaluation thread failed: {e}")))?;
            let outcome = match outcome {
                Ok(o) => Some(o),
                Err(TrainError::NoHoldout) => None,
                Err(e) => return Err(e.into()),
            };
            link.report_evaluation(&task.id, &self.settings.client_id, outcome).await?;
            info!(client = %self.settings.client_id, run = %task.run, round = task.round, ?outcome, "evaluation reported");
            return Ok(true);
        }
        // The drift reference's share of this client goes only with a non-private update.
        let share_reference = task.privacy.is_none();
        let (outcome, reference) = tokio::task::spawn_blocking(move || {
            let mut t = trainer.lock().expect("trainer mutex poisoned");
            let outcome = t.train(&spec, &g);
            (outcome, if share_reference { t.data_reference() } else { None })
        })
        .await
        .map_err(|e| SessionError::Protocol(format!("training thread failed: {e}")))?;
        let outcome = outcome?;
        metrics::histogram!("fedra_client_train_seconds").record(outcome.metrics.train_seconds.max(0.0));
        if cancelled.lock().expect("cancel set poisoned").remove(&task.id) {
            info!(client = %self.settings.client_id, task = %task.id, "task cancelled by the coordinator; update not sent");
            return Ok(false);
        }
        let mut outcome = outcome;
        if task.compression != Compression::None {
            return self.push_compressed(link, &task, outcome, global, reference).await;
        }
        let norm = match task.privacy {
            // A private run gets the update, clipped (and noised for local DP) here,
            // before anything leaves the client.
            Some(p) => {
                let (delta, norm) = tokio::task::spawn_blocking(move || privatise(outcome.params, &global, &p))
                    .await
                    .map_err(|e| SessionError::Protocol(format!("privacy thread failed: {e}")))??;
                outcome.params = delta;
                norm
            }
            None => {
                let norm =
                    outcome.params.iter().zip(global.iter()).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt();
                // Let go of the model before uploading: an in-process coordinator reuses its
                // buffer for the next round without a copy once no client holds it.
                drop(global);
                norm
            }
        };
        let trailer =
            UploadTrailer { samples: outcome.samples, metrics: outcome.metrics, update_norm: norm, reference };
        let total = outcome.params.len();
        let mut upload = Upload {
            task_id: task.id.clone(),
            client_id: self.settings.client_id.clone(),
            total_values: total,
            is_delta: task.privacy.is_some(),
            samples: outcome.samples,
            body: UploadBody::Dense(outcome.params),
            chunk_bytes: chunk_bytes(&task),
            trailer: Some(trailer),
            cut_off_after: 0,
        };
        if let Some(faults) = &self.upload_faults
            && let Some(n) = faults.crash_after_values(&task.run, task.round, total)
        {
            // The upload ends after the first values, without a trailer, and the
            // coordinator's answer says what it received.
            let sent = n.min(total);
            (upload.trailer, upload.cut_off_after) = (None, sent);
            let answer = link.push_update(upload).await.map_err(|e| e.refusal());
            let said = match &answer {
                Ok(reported) => format!("it counted the update ({reported} reported)"),
                Err(message) => message.clone(),
            };
            faults.crashed(&task.run, task.round, sent, total, answer);
            return Err(SessionError::Protocol(format!(
                "simulated crash after {sent} of {total} values of the upload; the coordinator answered: {said}"
            )));
        }
        let reported = link.push_update(upload).await?;
        info!(
            client = %self.settings.client_id,
            run = %task.run,
            round = task.round,
            samples = outcome.samples,
            loss_before = outcome.metrics.loss_before,
            loss_after = outcome.metrics.loss_after,
            reported,
            "update accepted"
        );
        Ok(true)
    }
}

impl Sidecar {
    /// Pushes a compressed run's update: Δ = local − global encoded as the task says, the
    /// trailer's digest over the wire bytes. A top_k residual is kept only once the
    /// coordinator has accepted the update it went with.
    async fn push_compressed(
        &self,
        link: &dyn FleetLink,
        task: &Task,
        outcome: crate::trainer::TrainOutcome,
        global: ModelValues,
        reference: Option<fedra_types::drift::DataReference>,
    ) -> Result<bool, SessionError> {
        let chunk_bytes = chunk_bytes(task);
        let (compression, seed) =
            (task.compression, crate::compression::rounding_seed(task.spec.seed, &self.settings.client_id));
        let residual = self.residuals.lock().expect("residuals poisoned").get(&task.run).map(<[f32]>::to_vec);
        let g = Arc::clone(&global);
        let params = outcome.params;
        let total = params.len();
        let (encoded, norm) = tokio::task::spawn_blocking(move || {
            let mut delta = params;
            for (l, g) in delta.iter_mut().zip(g.iter()) {
                *l -= g;
            }
            let norm = delta.iter().map(|d| f64::from(*d).powi(2)).sum::<f64>().sqrt();
            (crate::compression::encode(compression, delta, chunk_bytes, seed, residual.as_deref()), norm)
        })
        .await
        .map_err(|e| SessionError::Protocol(format!("compression thread failed: {e}")))?;
        let mut upload = Upload {
            task_id: task.id.clone(),
            client_id: self.settings.client_id.clone(),
            total_values: total,
            // The coordinator stages global + Δ: a model, as in any non-private run.
            is_delta: false,
            samples: outcome.samples,
            body: UploadBody::Encoded { chunks: encoded.chunks, compression, global },
            chunk_bytes,
            trailer: Some(UploadTrailer {
                samples: outcome.samples,
                metrics: outcome.metrics,
                update_norm: norm,
                reference,
            }),
            cut_off_after: 0,
        };
        if let Some(faults) = &self.upload_faults
            && let Some(n) = faults.crash_after_values(&task.run, task.round, total)
        {
            // Whole encoded chunks up to the n-th coordinate, then no trailer.
            let UploadBody::Encoded { chunks, .. } = &mut upload.body else { unreachable!("built encoded above") };
            chunks.retain(|c| c.offset + c.count <= n as u64);
            let covered = chunks.last().map_or(0, |c| (c.offset + c.count) as usize);
            (upload.trailer, upload.cut_off_after) = (None, covered);
            let answer = link.push_update(upload).await.map_err(|e| e.refusal());
            faults.crashed(&task.run, task.round, covered, total, answer.clone());
            return Err(SessionError::Protocol(format!(
                "simulated crash after {covered} of {total} values of the upload; the coordinator answered: {answer:?}"
            )));
        }
        let reported = link.push_update(upload).await?;
        if let Some(e) = encoded.residual {
            self.residuals.lock().expect("residuals poisoned").commit(&task.run, e);
        }
        info!(
            client = %self.settings.client_id,
            run = %task.run,
            round = task.round,
            compression = compression.name(),
            samples = outcome.samples,
            loss_after = outcome.metrics.loss_after,
            reported,
            "compressed update accepted"
        );
        Ok(true)
    }
}

/// The task's chunk size, or the protocol's default when the task leaves it to the client.
fn chunk_bytes(task: &Task) -> usize {
    if task.chunk_bytes == 0 { fedra_proto::chunking::DEFAULT_CHUNK_BYTES } else { task.chunk_bytes }
}

impl SessionError {
    /// What the coordinator said, for [`UploadFaults::crashed`]: a refusal's message, or
    /// the error itself when the upload never got an answer.
    fn refusal(self) -> String {
        match self {
            SessionError::Rpc { message, .. } => message,
            other => other.to_string(),
        }
    }
}

/// Heartbeats missed in a row (at least [`MIN_UNRESPONSIVE`]) after which the sidecar gives
/// up on a coordinator. Longer than the coordinator's own client timeout, so that a busy
/// coordinator drops the client before the client drops it.
const UNANSWERED_HEARTBEATS: u32 = 6;
const MIN_UNRESPONSIVE: Duration = Duration::from_secs(5);

/// Heartbeats every `every`; returns once no heartbeat has been answered for `dead_after`.
async fn heartbeat_loop(
    link: Arc<dyn FleetLink>,
    client_id: String,
    every: Duration,
    dead_after: Duration,
    cancelled: Arc<Mutex<HashSet<String>>>,
) {
    let mut tick = tokio::time::interval(every);
    let mut answered = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        match tokio::time::timeout(dead_after, link.heartbeat(&client_id)).await {
            Ok(Ok(ids)) => {
                answered = tokio::time::Instant::now();
                if !ids.is_empty() {
                    cancelled.lock().expect("cancel set poisoned").extend(ids);
                }
            }
            Ok(Err(e)) => warn!(client = %client_id, error = %e, "heartbeat failed"),
            Err(_) => warn!(client = %client_id, "heartbeat unanswered for {dead_after:?}"),
        }
        if answered.elapsed() >= dead_after {
            return;
        }
    }
}
