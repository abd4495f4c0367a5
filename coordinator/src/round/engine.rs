//! The round engine: the single task that owns all round state (see the module diagram in
//! [`super`]). Requests arrive on a channel with a oneshot reply; slow work (averaging a
//! large model, writing checkpoints) runs on blocking threads and reports back on an
//! internal channel, so the engine keeps answering heartbeats while a round publishes.

use super::{MetricsMean, PhaseName, RoundError, RunEvent, RunEventKind, TrainingMetrics};
use crate::aggregation::{FedAvgAccumulator, StagingBuffer};
use crate::checkpoint::{CheckpointDir, Contributor, PrivacyProvenance, PublishRequest, Published, ScopeEpsilon};
use crate::ids::{CheckpointId, ClientId, RegionId, RoundNumber, RunId, TaskId};
use crate::model::TensorLayout;
use crate::plan::{Clipping, DpMechanism, LocalTraining, OverBound, RunPlan, Sampling};
use crate::privacy::{Budget, Budgets, LedgerEntry, LedgerState, PrivacyError, PrivacyScope, RoundMechanism};
use crate::store::{
    CheckpointRecord, ClientRecord, EvaluationRecord, LedgerFilter, ParticipationRecord, ParticipationStatus,
    RoundCompletion, RoundRecord, RoundStatus, RunRecord, RunState, Store,
};
use chrono::Utc;
use fedra_dp::noise::SecureRng;
use fedra_proto::chunking::SharedParams;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, info, warn};

/// Engine tunables (validated configuration).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How often clients are asked to heartbeat.
    pub heartbeat_interval: Duration,
    /// A client silent for this long is not selected.
    pub client_timeout: Duration,
    /// Payload bytes per parameter chunk announced to clients.
    pub chunk_bytes: usize,
    /// How often deadlines, liveness and selection are re-checked.
    pub tick: Duration,
    /// Privacy budgets and the noise lattice's slack.
    pub privacy: PrivacySettings,
}

/// Deployment-wide privacy settings (validated configuration).
#[derive(Debug, Clone)]
pub struct PrivacySettings {
    pub budgets: Budgets,
    /// g·√d ≤ slack·C for the noise lattice (see `fedra_dp::noise::LatticeGaussian`).
    pub lattice_slack: f64,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self { budgets: Budgets::default(), lattice_slack: crate::privacy::mechanism::DEFAULT_LATTICE_SLACK }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            client_timeout: Duration::from_secs(20),
            chunk_bytes: fedra_proto::chunking::DEFAULT_CHUNK_BYTES,
            tick: Duration::from_millis(100),
            privacy: PrivacySettings::default(),
        }
    }
}

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

    /// Stands in while the round's new model is computed from the old one's buffer; no
    /// request can reach it (downloads and uploads are closed outside Training/Evaluating).
    fn placeholder(layout: TensorLayout) -> Self {
        Self { layout, params: SharedParams::new(Vec::new()), digest: String::new() }
    }

    /// The parameters, in the model's own buffer when nobody else holds it, else copied.
    fn into_values(self: Arc<Self>) -> Vec<f32> {
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
}

/// What a client of a private run must do to its update before uploading it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacyTask {
    pub clip_norm: f64,
    /// Local DP: the target std of the noise the client adds (0 for central DP).
    pub local_noise_std: f64,
    pub lattice_slack: f64,
}

/// What a task asks of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Train locally and push the model.
    Train,
    /// Evaluate the round's checkpoint on the held-out split and report.
    Evaluate,
}

/// A client's evaluation of a checkpoint on its held-out split; `samples` 0 = no split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvaluationReport {
    pub samples: u64,
    pub loss: f64,
    pub accuracy: f64,
}

/// Permission to stream an update for a task.
#[derive(Debug, Clone)]
pub struct UploadTicket {
    pub total_values: u64,
}

/// A run with its rounds, and the live phase of its active round if any.
#[derive(Debug, Clone)]
pub struct RunView {
    pub record: RunRecord,
    pub rounds: Vec<RoundRecord>,
    pub evaluations: Vec<EvaluationRecord>,
    pub live_phase: Option<(u32, PhaseName)>,
}

/// An uploaded update whose chunks and trailer checked out.
#[derive(Debug)]
pub struct VerifiedUpdate {
    pub values: StagingBuffer,
    pub samples: u64,
    pub metrics: TrainingMetrics,
    pub update_norm: f64,
    /// The values are an update (local − global), as private runs ask, not a model.
    pub is_delta: bool,
}

type Reply<T> = oneshot::Sender<Result<T, RoundError>>;

enum Request {
    Submit { plan: RunPlan, reply: Reply<RunId> },
    Cancel { run: RunId, reply: Reply<RunState> },
    Get { run: RunId, reply: Reply<RunView> },
    List { reply: Reply<Vec<RunView>> },
    Watch { run: RunId, reply: Reply<(Vec<RunEvent>, Option<broadcast::Receiver<RunEvent>>)> },
    Register { client: ClientRecord, reply: Reply<()> },
    Subscribe { client: ClientId, reply: Reply<mpsc::Receiver<TaskAssignment>> },
    Heartbeat { client: ClientId, reply: Reply<Vec<TaskId>> },
    FetchModel { task: TaskId, client: ClientId, reply: Reply<Arc<GlobalModel>> },
    BeginUpload { task: TaskId, client: ClientId, total_values: u64, reply: Reply<UploadTicket> },
    CommitUpload { task: TaskId, client: ClientId, update: VerifiedUpdate, reply: Reply<u32> },
    ReportEvaluation { task: TaskId, client: ClientId, report: EvaluationReport, reply: Reply<()> },
    Shutdown,
}

/// Results of blocking work started by the engine.
enum Internal {
    Averaged { key: AttemptKey, result: Result<Vec<f32>, RoundError>, clients: u32, noised_count: Option<f64> },
    Published { key: AttemptKey, params: Arc<GlobalModel>, result: Box<Result<Published, RoundError>> },
}

/// Identifies one round attempt, so that late results of a cancelled attempt are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AttemptKey {
    run: RunId,
    round: u32,
    attempt: u32,
}

/// Cheap, cloneable handle the gRPC layer uses to talk to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Request>,
}

macro_rules! ask {
    ($self:ident, $variant:ident { $($field:ident),* }) => {{
        let (reply, rx) = oneshot::channel();
        $self.tx.send(Request::$variant { $($field,)* reply }).await.map_err(|_| RoundError::ShuttingDown)?;
        rx.await.map_err(|_| RoundError::ShuttingDown)?
    }};
}

impl EngineHandle {
    /// Queues a validated plan; checks the initial checkpoint fits the model.
    ///
    /// # Errors
    /// [`RoundError::CheckpointNotFound`], [`RoundError::InitialCheckpoint`], store failures.
    pub async fn submit(&self, plan: RunPlan) -> Result<RunId, RoundError> {
        ask!(self, Submit { plan })
    }
    /// # Errors
    /// Unknown run, or a run that already ended.
    pub async fn cancel(&self, run: RunId) -> Result<RunState, RoundError> {
        ask!(self, Cancel { run })
    }
    /// # Errors
    /// Unknown run or store failure.
    pub async fn get(&self, run: RunId) -> Result<RunView, RoundError> {
        ask!(self, Get { run })
    }
    /// # Errors
    /// Store failure.
    pub async fn list(&self) -> Result<Vec<RunView>, RoundError> {
        ask!(self, List {})
    }
    /// Past events of the run, then (unless it ended) a live receiver for the rest.
    ///
    /// # Errors
    /// Unknown run or store failure.
    pub async fn watch(
        &self,
        run: RunId,
    ) -> Result<(Vec<RunEvent>, Option<broadcast::Receiver<RunEvent>>), RoundError> {
        ask!(self, Watch { run })
    }
    /// # Errors
    /// Store failure.
    pub async fn register(&self, client: ClientRecord) -> Result<(), RoundError> {
        ask!(self, Register { client })
    }
    /// # Errors
    /// [`RoundError::UnknownClient`] if the client did not register.
    pub async fn subscribe(&self, client: ClientId) -> Result<mpsc::Receiver<TaskAssignment>, RoundError> {
        ask!(self, Subscribe { client })
    }
    /// Returns the client's task ids that it should abandon.
    ///
    /// # Errors
    /// [`RoundError::UnknownClient`].
    pub async fn heartbeat(&self, client: ClientId) -> Result<Vec<TaskId>, RoundError> {
        ask!(self, Heartbeat { client })
    }
    /// # Errors
    /// Unknown or closed task, or a task of another client.
    pub async fn fetch_model(&self, task: TaskId, client: ClientId) -> Result<Arc<GlobalModel>, RoundError> {
        ask!(self, FetchModel { task, client })
    }
    /// # Errors
    /// As [`Self::fetch_model`], plus wrong length or an update already counted.
    pub async fn begin_upload(
        &self,
        task: TaskId,
        client: ClientId,
        total_values: u64,
    ) -> Result<UploadTicket, RoundError> {
        ask!(self, BeginUpload { task, client, total_values })
    }
    /// Folds a verified update into the round; returns how many have been counted.
    ///
    /// # Errors
    /// As [`Self::begin_upload`], plus sample-count checks.
    pub async fn commit_upload(
        &self,
        task: TaskId,
        client: ClientId,
        update: VerifiedUpdate,
    ) -> Result<u32, RoundError> {
        ask!(self, CommitUpload { task, client, update })
    }
    /// Records a client's evaluation of the round's checkpoint.
    ///
    /// # Errors
    /// Unknown or closed task, a training task, or a report already received.
    pub async fn report_evaluation(
        &self,
        task: TaskId,
        client: ClientId,
        report: EvaluationReport,
    ) -> Result<(), RoundError> {
        ask!(self, ReportEvaluation { task, client, report })
    }

    /// Stops the engine where it is; an in-progress round is re-run after restart.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Request::Shutdown).await;
    }
}

#[derive(Debug)]
struct ConnectedClient {
    record: ClientRecord,
    tasks: Option<mpsc::Sender<TaskAssignment>>,
    last_seen: Instant,
    /// Tasks to tell the client to abandon at its next heartbeat.
    cancelled: Vec<TaskId>,
}

impl ConnectedClient {
    fn online(&self, now: Instant, timeout: Duration) -> bool {
        self.tasks.as_ref().is_some_and(|t| !t.is_closed()) && now.duration_since(self.last_seen) <= timeout
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AssignmentState {
    Assigned,
    Reported,
    Dropped,
}

#[derive(Debug)]
struct Assignment {
    client: ClientId,
    region: RegionId,
    state: AssignmentState,
}

/// State of the Training phase: who was asked, who answered, and the running sum.
#[derive(Debug)]
struct Training {
    tasks: HashMap<TaskId, Assignment>,
    acc: Option<FedAvgAccumulator>,
    metrics: MetricsMean,
    contributors: Vec<Contributor>,
    dp: Option<DpRound>,
    /// Time spent in folds so far (reported with the Aggregated event).
    fold_seconds: f64,
}

/// A private round's mechanism and what it has counted so far.
#[derive(Debug)]
struct DpRound {
    mechanism: RoundMechanism,
    /// Σ(2bᵢ − 1), bᵢ = [client i's update norm ≤ C] (adaptive clipping's count query).
    count_sum: i64,
    /// ε per scope after this round, as reserved.
    scopes: Vec<ScopeEpsilon>,
}

impl Training {
    fn reported(&self) -> u32 {
        self.contributors.len() as u32
    }
    fn outstanding(&self) -> usize {
        self.tasks.values().filter(|a| a.state == AssignmentState::Assigned).count()
    }
}

/// The typed phase of the active round attempt.
#[derive(Debug)]
enum Phase {
    Selecting,
    Training(Training),
    Aggregating {
        contributors: Vec<Contributor>,
        metrics: TrainingMetrics,
        dp: Option<(RoundMechanism, Vec<ScopeEpsilon>)>,
        fold_seconds: f64,
    },
    Publishing,
    /// The round's checkpoint is committed; clients evaluate it on held-out data.
    Evaluating(Evaluation),
}

/// State of the Evaluating phase.
#[derive(Debug)]
struct Evaluation {
    tasks: HashMap<TaskId, Assignment>,
    /// Reports with samples > 0: (region, samples, loss, accuracy).
    reports: Vec<(RegionId, u64, f64, f64)>,
    checkpoint: CheckpointId,
    final_round: bool,
}

impl Phase {
    fn name(&self) -> PhaseName {
        match self {
            Phase::Selecting => PhaseName::Selecting,
            Phase::Training(_) => PhaseName::Training,
            Phase::Aggregating { .. } => PhaseName::Aggregating,
            Phase::Publishing => PhaseName::Publishing,
            Phase::Evaluating(_) => PhaseName::Evaluating,
        }
    }

    /// The tasks of the phase that hands out tasks, if any.
    fn tasks(&self) -> Option<&HashMap<TaskId, Assignment>> {
        match self {
            Phase::Training(t) => Some(&t.tasks),
            Phase::Evaluating(e) => Some(&e.tasks),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Round {
    key: AttemptKey,
    started: Instant,
    deadline: Instant,
    phase: Phase,
}

#[derive(Debug)]
struct ActiveRun {
    id: RunId,
    plan: RunPlan,
    global: Arc<GlobalModel>,
    parent: Option<CheckpointId>,
    round: Round,
    /// C for the next private round (moves under adaptive clipping; persisted in the ledger).
    clip_norm: Option<f64>,
    /// The released round's next C and its manifest's privacy block, until it is committed.
    pending_privacy: Option<(Option<f64>, PrivacyProvenance)>,
}

/// The engine task's state. Built and spawned by [`Engine::start`].
pub struct Engine {
    store: Arc<dyn Store>,
    checkpoints: CheckpointDir,
    settings: EngineSettings,
    events: broadcast::Sender<RunEvent>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    clients: HashMap<ClientId, ConnectedClient>,
    queue: VecDeque<RunId>,
    active: Option<ActiveRun>,
    /// Reported updates not yet written to the store (see [`Engine::flush_updates`]).
    pending_updates: Vec<ParticipationRecord>,
    /// Tasks of rounds that already closed, so that stragglers get a precise answer.
    /// Bounded: cleared when it grows past [`CLOSED_TASKS_MAX`].
    closed_tasks: HashMap<TaskId, u32>,
}

const CLOSED_TASKS_MAX: usize = 100_000;

/// Outcome of a round attempt that ended without a checkpoint.
struct RoundFailure(String);

impl Engine {
    /// Recovers persisted state (interrupting rounds that were in progress, re-queueing
    /// unfinished runs) and spawns the engine task.
    ///
    /// # Errors
    /// Store failures during recovery.
    pub async fn start(
        store: Arc<dyn Store>,
        checkpoints: CheckpointDir,
        settings: EngineSettings,
    ) -> Result<(EngineHandle, tokio::task::JoinHandle<()>), RoundError> {
        let interrupted = store.interrupt_open_rounds().await?;
        let runs = store.list_runs().await?;
        let mut queue: VecDeque<RunId> =
            runs.iter().filter(|r| r.state == RunState::Running).map(|r| r.id.clone()).collect();
        queue.extend(runs.iter().filter(|r| r.state == RunState::Queued).map(|r| r.id.clone()));
        if interrupted > 0 || !queue.is_empty() {
            info!(interrupted, resumed = queue.len(), "recovered runs from the store");
        }
        let mut clients = HashMap::new();
        for record in store.list_clients().await? {
            // Known clients are remembered but offline until they subscribe again.
            clients.insert(
                record.id.clone(),
                ConnectedClient { record, tasks: None, last_seen: Instant::now(), cancelled: Vec::new() },
            );
        }
        let (tx, rx) = mpsc::channel(1024);
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(4096);
        let engine = Engine {
            store,
            checkpoints,
            settings,
            events,
            internal_tx,
            clients,
            queue,
            active: None,
            closed_tasks: HashMap::new(),
            pending_updates: Vec::new(),
        };
        let join = tokio::spawn(engine.run(rx, internal_rx));
        Ok((EngineHandle { tx }, join))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Request>, mut internal_rx: mpsc::UnboundedReceiver<Internal>) {
        let mut tick = tokio::time::interval(self.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                req = rx.recv() => match req {
                    None | Some(Request::Shutdown) => break,
                    Some(req) => self.handle(req).await,
                },
                Some(msg) = internal_rx.recv() => self.handle_internal(msg).await,
                _ = tick.tick() => self.on_tick().await,
            }
        }
        info!("round engine stopped");
    }

    async fn handle(&mut self, req: Request) {
        match req {
            Request::Submit { plan, reply } => {
                let r = self.submit(plan).await;
                let _ = reply.send(r);
                self.on_tick().await;
            }
            Request::Cancel { run, reply } => {
                let r = self.cancel(run).await;
                let _ = reply.send(r);
            }
            // Reads rebuild what happened from the store: batched updates go in first, so a
            // watcher never misses an update that was counted before it subscribed.
            Request::Get { run, reply } => {
                self.flush_updates().await;
                let _ = reply.send(self.view(&run).await);
            }
            Request::List { reply } => {
                self.flush_updates().await;
                let _ = reply.send(self.list().await);
            }
            Request::Watch { run, reply } => {
                self.flush_updates().await;
                let _ = reply.send(self.watch(&run).await);
            }
            Request::Register { client, reply } => {
                let _ = reply.send(self.register(client).await);
            }
            Request::Subscribe { client, reply } => {
                let r = self.subscribe(&client);
                let _ = reply.send(r);
                self.on_tick().await;
            }
            Request::Heartbeat { client, reply } => {
                let r = match self.clients.get_mut(&client) {
                    Some(c) => {
                        c.last_seen = Instant::now();
                        Ok(std::mem::take(&mut c.cancelled))
                    }
                    None => Err(RoundError::UnknownClient(client)),
                };
                let _ = reply.send(r);
            }
            Request::FetchModel { task, client, reply } => {
                let r = self.assignment(&task, &client).map(|_| ()).and_then(|()| {
                    self.active.as_ref().map(|a| Arc::clone(&a.global)).ok_or(RoundError::UnknownTask(task))
                });
                let _ = reply.send(r);
            }
            Request::BeginUpload { task, client, total_values, reply } => {
                let _ = reply.send(self.begin_upload(&task, &client, total_values));
            }
            Request::CommitUpload { task, client, update, reply } => {
                let r = self.commit_upload(task, client, update).await;
                let _ = reply.send(r);
                // Only what an update can change: the round may now be complete. Liveness
                // and selection stay on the tick (they are O(clients)).
                self.check_training_end().await;
            }
            Request::ReportEvaluation { task, client, report, reply } => {
                let r = self.report_evaluation(&task, &client, report);
                let _ = reply.send(r);
                self.on_tick().await;
            }
            Request::Shutdown => {}
        }
    }

    fn emit(&self, run: &RunId, round: u32, kind: RunEventKind) {
        // No receiver is fine: nobody is watching.
        let _ = self.events.send(RunEvent { run: run.clone(), round, kind });
    }

    // ----------------------------------------------------------------------------------
    // Runs
    // ----------------------------------------------------------------------------------

    async fn submit(&mut self, plan: RunPlan) -> Result<RunId, RoundError> {
        if let Some(cp) = &plan.initial_checkpoint {
            let record =
                self.store.get_checkpoint(cp).await?.ok_or_else(|| RoundError::CheckpointNotFound(cp.clone()))?;
            let manifest: crate::checkpoint::Manifest = serde_json::from_str(&record.manifest_json)
                .map_err(|e| RoundError::InitialCheckpoint { checkpoint: cp.clone(), reason: e.to_string() })?;
            if manifest.layout != plan.model.layout() {
                return Err(RoundError::InitialCheckpoint {
                    checkpoint: cp.clone(),
                    reason: format!(
                        "its model is {:?}, the plan's is {:?}",
                        manifest.model.architecture(),
                        plan.model.architecture()
                    ),
                });
            }
        }
        if plan.privacy.is_some() {
            self.admit_private_run(&plan).await?;
        }
        let record = RunRecord {
            id: RunId::generate(),
            plan,
            state: RunState::Queued,
            completed_rounds: 0,
            published_checkpoint: None,
            failure: None,
            created_at: Utc::now(),
        };
        self.store.create_run(&record).await?;
        info!(run = %record.id, model = record.plan.model.name(), rounds = record.plan.rounds, "run queued");
        self.queue.push_back(record.id.clone());
        Ok(record.id)
    }

    async fn cancel(&mut self, run: RunId) -> Result<RunState, RoundError> {
        let record = self.store.get_run(&run).await?.ok_or_else(|| RoundError::RunNotFound(run.clone()))?;
        if record.state.is_terminal() {
            return Err(RoundError::RunEnded { run, state: record.state });
        }
        if self.active.as_ref().is_some_and(|a| a.id == run) {
            self.fail_active(RoundFailure("run cancelled".into()), RunState::Cancelled).await;
        } else {
            self.queue.retain(|r| *r != run);
            self.store.set_run_state(&run, RunState::Cancelled, Some("run cancelled")).await?;
            self.emit(
                &run,
                0,
                RunEventKind::RunFinished { state: RunState::Cancelled, reason: Some("run cancelled".into()) },
            );
        }
        info!(run = %run, "run cancelled");
        Ok(RunState::Cancelled)
    }

    async fn view(&self, run: &RunId) -> Result<RunView, RoundError> {
        let record = self.store.get_run(run).await?.ok_or_else(|| RoundError::RunNotFound(run.clone()))?;
        let rounds = self.store.list_rounds(run).await?;
        let evaluations = self.store.list_evaluations(run).await?;
        let live_phase =
            self.active.as_ref().filter(|a| a.id == *run).map(|a| (a.round.key.round, a.round.phase.name()));
        Ok(RunView { record, rounds, evaluations, live_phase })
    }

    async fn list(&self) -> Result<Vec<RunView>, RoundError> {
        let runs = self.store.list_runs().await?;
        Ok(runs
            .into_iter()
            .map(|record| {
                let live_phase = self
                    .active
                    .as_ref()
                    .filter(|a| a.id == record.id)
                    .map(|a| (a.round.key.round, a.round.phase.name()));
                RunView { record, rounds: Vec::new(), evaluations: Vec::new(), live_phase }
            })
            .collect())
    }

    /// Rebuilds the run's event history from the store. Runs inside the engine, so no live
    /// event can slip between the history and the subscription.
    async fn watch(&self, run: &RunId) -> Result<(Vec<RunEvent>, Option<broadcast::Receiver<RunEvent>>), RoundError> {
        let record = self.store.get_run(run).await?.ok_or_else(|| RoundError::RunNotFound(run.clone()))?;
        let rounds = self.store.list_rounds(run).await?;
        let parts = self.store.list_participations(run).await?;
        let evaluations = self.store.list_evaluations(run).await?;
        let target = record.plan.clients_per_round;
        let mut history = Vec::new();
        let ev = |round, kind| RunEvent { run: run.clone(), round, kind };
        for r in &rounds {
            let mine: Vec<&ParticipationRecord> =
                parts.iter().filter(|p| p.round == r.round && p.attempt == r.attempt).collect();
            history.push(ev(
                r.round,
                RunEventKind::Selected { clients: mine.iter().map(|p| p.client.clone()).collect(), target },
            ));
            for (i, p) in mine.iter().filter(|p| p.status == ParticipationStatus::Reported).enumerate() {
                let reported = i as u32 + 1;
                history.push(ev(
                    r.round,
                    RunEventKind::UpdateReceived {
                        client: p.client.clone(),
                        region: p.region.clone(),
                        samples: p.samples,
                        reported,
                        target,
                        metrics: p.metrics.unwrap_or_default(),
                    },
                ));
            }
            match r.status {
                RoundStatus::Done => {
                    history.push(ev(
                        r.round,
                        RunEventKind::Aggregated {
                            clients: r.reported,
                            samples: r.samples,
                            metrics: r.metrics.unwrap_or_default(),
                            fold_seconds: 0.0,
                        },
                    ));
                    if let Some(cp) = &r.checkpoint
                        && let Some(c) = self.store.get_checkpoint(cp).await?
                    {
                        history.push(ev(
                            r.round,
                            RunEventKind::Published {
                                checkpoint: c.id.clone(),
                                regions: c.locations.iter().map(|(r, _)| r.clone()).collect(),
                                sha256: c.sha256.clone(),
                            },
                        ));
                    }
                    let results: Vec<EvaluationRecord> =
                        evaluations.iter().filter(|e| e.round == r.round).cloned().collect();
                    if !results.is_empty() {
                        history.push(ev(r.round, RunEventKind::Evaluated { results }));
                    }
                }
                RoundStatus::Failed | RoundStatus::Interrupted => history.push(ev(
                    r.round,
                    RunEventKind::RoundFailed { reason: r.failure.clone().unwrap_or_else(|| "unknown".into()) },
                )),
                RoundStatus::InProgress => {}
            }
        }
        if record.state.is_terminal() {
            history.push(ev(
                record.completed_rounds,
                RunEventKind::RunFinished { state: record.state, reason: record.failure },
            ));
            Ok((history, None))
        } else {
            Ok((history, Some(self.events.subscribe())))
        }
    }

    /// Starts the next queued run if none is active.
    async fn start_next_run(&mut self) {
        while self.active.is_none() {
            let Some(id) = self.queue.pop_front() else { return };
            match self.activate(&id).await {
                Ok(Some(active)) => {
                    self.active = Some(active);
                    // Selection may be possible right away.
                    self.try_select().await;
                }
                Ok(None) => {}
                Err(e) => {
                    error!(run = %id, error = %e, "run cannot start");
                    let reason = format!("run cannot start: {e}");
                    if let Err(e) = self.store.set_run_state(&id, RunState::Failed, Some(&reason)).await {
                        error!(run = %id, error = %e, "cannot record run failure");
                    }
                    self.emit(&id, 0, RunEventKind::RunFinished { state: RunState::Failed, reason: Some(reason) });
                }
            }
        }
    }

    /// Loads a run's starting model (initial checkpoint, last completed round, or a fresh
    /// seeded initialisation) and opens its next round.
    async fn activate(&mut self, id: &RunId) -> Result<Option<ActiveRun>, RoundError> {
        let Some(record) = self.store.get_run(id).await? else { return Ok(None) };
        if record.state.is_terminal() {
            return Ok(None);
        }
        if record.completed_rounds >= record.plan.rounds {
            // Every round is committed; only the last evaluation was cut short by a restart.
            let last = CheckpointId::for_round(id, RoundNumber(record.completed_rounds));
            self.store.finish_run(id, &last).await?;
            info!(run = %id, "run succeeded (its final evaluation was interrupted by a restart)");
            self.emit(
                id,
                record.completed_rounds,
                RunEventKind::RunFinished { state: RunState::Succeeded, reason: None },
            );
            return Ok(None);
        }
        let layout = record.plan.model.layout();
        let start_from = if record.completed_rounds > 0 {
            Some(CheckpointId::for_round(id, RoundNumber(record.completed_rounds)))
        } else {
            record.plan.initial_checkpoint.clone()
        };
        let params = match &start_from {
            Some(cp) => {
                let c =
                    self.store.get_checkpoint(cp).await?.ok_or_else(|| RoundError::CheckpointNotFound(cp.clone()))?;
                self.load_checkpoint(&c, &layout).await?
            }
            None => record.plan.model.initialise(record.plan.seed),
        };
        self.store.set_run_state(id, RunState::Running, None).await?;
        let round = record.completed_rounds + 1;
        let attempt = self.store.next_attempt(id, round).await?;
        info!(run = %id, round, attempt, resumed = record.completed_rounds > 0, "run active");
        let clip_norm = match &record.plan.privacy {
            Some(p) => {
                // The latest released round's next C, else the plan's initial C.
                let entries = self.store.list_ledger(&LedgerFilter { run: Some(id.clone()), scope: None }).await?;
                let latest =
                    entries.iter().rev().find(|e| e.state == LedgerState::Charged && e.next_clip_norm.is_some());
                Some(latest.and_then(|e| e.next_clip_norm).unwrap_or_else(|| p.clipping.initial_norm()))
            }
            None => None,
        };
        let now = Instant::now();
        Ok(Some(ActiveRun {
            clip_norm,
            pending_privacy: None,
            id: id.clone(),
            round: Round {
                key: AttemptKey { run: id.clone(), round, attempt },
                started: now,
                deadline: now + record.plan.round_deadline,
                phase: Phase::Selecting,
            },
            plan: record.plan,
            global: Arc::new(GlobalModel::new(layout, params)),
            parent: start_from,
        }))
    }

    async fn load_checkpoint(&self, c: &CheckpointRecord, layout: &TensorLayout) -> Result<Vec<f32>, RoundError> {
        let manifest: crate::checkpoint::Manifest = serde_json::from_str(&c.manifest_json)
            .map_err(|e| RoundError::InitialCheckpoint { checkpoint: c.id.clone(), reason: e.to_string() })?;
        let (_, path) = c.locations.first().ok_or_else(|| RoundError::CheckpointNotFound(c.id.clone()))?.clone();
        let layout = layout.clone();
        let file_sha = manifest.file_sha256.clone();
        tokio::task::spawn_blocking(move || CheckpointDir::load(&path, &file_sha, &layout))
            .await
            .map_err(|e| RoundError::InitialCheckpoint { checkpoint: c.id.clone(), reason: e.to_string() })?
            .map_err(RoundError::from)
    }

    // ----------------------------------------------------------------------------------
    // Clients
    // ----------------------------------------------------------------------------------

    async fn register(&mut self, record: ClientRecord) -> Result<(), RoundError> {
        self.store.upsert_client(&record).await?;
        info!(client = %record.id, region = %record.region, samples = record.samples(), "client registered");
        let now = Instant::now();
        self.clients
            .entry(record.id.clone())
            .and_modify(|c| {
                c.record = record.clone();
                c.last_seen = now;
            })
            .or_insert(ConnectedClient { record, tasks: None, last_seen: now, cancelled: Vec::new() });
        Ok(())
    }

    fn subscribe(&mut self, client: &ClientId) -> Result<mpsc::Receiver<TaskAssignment>, RoundError> {
        let c = self.clients.get_mut(client).ok_or_else(|| RoundError::UnknownClient(client.clone()))?;
        let (tx, rx) = mpsc::channel(8);
        c.tasks = Some(tx);
        c.last_seen = Instant::now();
        Ok(rx)
    }

    // ----------------------------------------------------------------------------------
    // Round phases
    // ----------------------------------------------------------------------------------

    /// Writes the batched reported updates in one transaction. A failure is logged: the
    /// updates are in the sum and the round's completion records its totals anyway.
    async fn flush_updates(&mut self) {
        if self.pending_updates.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending_updates);
        if let Err(e) = self.store.record_updates(&batch).await {
            error!(updates = batch.len(), error = %e, "cannot record updates");
        }
    }

    async fn on_tick(&mut self) {
        self.flush_updates().await;
        if self.active.is_none() {
            self.start_next_run().await;
            return;
        }
        self.check_liveness().await;
        self.try_select().await;
        self.check_training_end().await;
        self.check_evaluation_end().await;
    }

    /// Selecting → Training once enough eligible clients are online: immediately when the
    /// target count is available, after a grace period (a fifth of the deadline) when at
    /// least the quorum is. Fails the attempt at the deadline otherwise.
    async fn try_select(&mut self) {
        let now = Instant::now();
        let Some(active) = &self.active else { return };
        if !matches!(active.round.phase, Phase::Selecting) {
            return;
        }
        let plan = &active.plan;
        let mut eligible: Vec<&ConnectedClient> = self
            .clients
            .values()
            .filter(|c| c.online(now, self.settings.client_timeout) && plan.regions.allows(&c.record.region))
            .filter(|c| fits_model(&c.record, plan))
            .collect();
        let grace = active.round.started + plan.round_deadline / 5;
        let enough = eligible.len() >= plan.clients_per_round as usize
            || (eligible.len() >= plan.min_clients as usize && now >= grace);
        if !enough {
            if now >= active.round.deadline {
                let reason = format!(
                    "only {} eligible clients online by the deadline, quorum is {}",
                    eligible.len(),
                    plan.min_clients
                );
                self.fail_active(RoundFailure(reason), RunState::Failed).await;
            }
            return;
        }
        // Deterministic given the seed and the set of eligible clients.
        eligible.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        let key = active.round.key.clone();
        let population: Vec<RegionId> = eligible.iter().map(|c| c.record.region.clone()).collect();
        match plan.privacy.as_ref().map(|p| p.sampling) {
            Some(Sampling::Poisson { rate }) => {
                // What the Rényi accountant assumes: each client independently with
                // probability q, from an unpredictable source (not the plan's seed).
                let mut rng = rand::rngs::StdRng::from_os_rng();
                eligible.retain(|_| rng.random_bool(rate));
            }
            _ => {
                let mut rng =
                    ChaCha8Rng::seed_from_u64(plan.seed ^ (u64::from(key.round) << 32) ^ u64::from(key.attempt));
                eligible.shuffle(&mut rng);
                eligible.truncate(plan.selection_size());
            }
        }
        let selected: Vec<(ClientId, RegionId)> =
            eligible.iter().map(|c| (c.record.id.clone(), c.record.region.clone())).collect();
        // A private round reserves its cost before any client is asked to train.
        let dp = match self.reserve_round(&key, &selected, population).await {
            Ok(dp) => dp,
            Err(e) => {
                warn!(run = %key.run, round = key.round, error = %e, "private round refused");
                self.fail_active(RoundFailure(e.to_string()), RunState::Failed).await;
                return;
            }
        };

        if let Err(e) = self.store.begin_round(&key.run, key.round, key.attempt, &selected).await {
            error!(run = %key.run, round = key.round, error = %e, "cannot record round start");
            self.fail_active(RoundFailure(format!("store failure: {e}")), RunState::Failed).await;
            return;
        }
        let Some(active) = &self.active else { return };
        let remaining = active.round.deadline.saturating_duration_since(now);
        let template = TaskAssignment {
            task: TaskId::generate(),
            run: key.run.clone(),
            round: key.round,
            model: active.plan.model.clone(),
            layout: active.global.layout.clone(),
            local: active.plan.local.clone(),
            deadline: remaining,
            chunk_bytes: self.settings.chunk_bytes,
            seed: active.plan.seed ^ u64::from(key.round).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            kind: TaskKind::Train,
            privacy: dp.as_ref().map(|d| PrivacyTask {
                clip_norm: d.mechanism.clip_norm,
                local_noise_std: if d.mechanism.mechanism == DpMechanism::Local {
                    d.mechanism.update_noise_target_std
                } else {
                    0.0
                },
                lattice_slack: d.mechanism.lattice_slack,
            }),
        };
        let tasks = dispatch(&self.clients, &selected, &template);
        let Some(active) = &mut self.active else { return };
        let len = active.global.params.len();
        active.round.phase = Phase::Training(Training {
            tasks,
            acc: Some(FedAvgAccumulator::new(len)),
            metrics: MetricsMean::default(),
            contributors: Vec::new(),
            dp,
            fold_seconds: 0.0,
        });
        info!(run = %key.run, round = key.round, selected = selected.len(), target = active.plan.clients_per_round, "round training");
        let target = active.plan.clients_per_round;
        self.emit(
            &key.run,
            key.round,
            RunEventKind::Selected { clients: selected.into_iter().map(|(c, _)| c).collect(), target },
        );
    }

    /// Marks assignments of clients whose task stream went away as dropped.
    async fn check_liveness(&mut self) {
        let now = Instant::now();
        let timeout = self.settings.client_timeout;
        let Some(active) = &mut self.active else { return };
        let tasks = match &mut active.round.phase {
            Phase::Training(t) => &mut t.tasks,
            Phase::Evaluating(e) => &mut e.tasks,
            _ => return,
        };
        for a in tasks.values_mut() {
            if a.state == AssignmentState::Assigned
                && !self.clients.get(&a.client).is_some_and(|c| c.online(now, timeout))
            {
                warn!(client = %a.client, round = active.round.key.round, "selected client went away");
                a.state = AssignmentState::Dropped;
            }
        }
    }

    /// Training → Aggregating when the target has reported, when nobody is left to report
    /// and the quorum is met, or at the deadline with the quorum; → Failed when the quorum
    /// can no longer be met.
    async fn check_training_end(&mut self) {
        let now = Instant::now();
        let Some(active) = &mut self.active else { return };
        let Phase::Training(t) = &mut active.round.phase else { return };
        let reported = t.reported();
        let plan = &active.plan;
        let min_clients = plan.quorum();
        let quorum = reported >= min_clients;
        let target_met =
            reported >= plan.clients_per_round && plan.privacy.as_ref().is_none_or(|p| p.sampling == Sampling::Fixed);
        let nobody_left = t.outstanding() == 0;
        let past_deadline = now >= active.round.deadline;
        let unreachable = reported as usize + t.outstanding() < min_clients as usize;
        if target_met || (quorum && (nobody_left || past_deadline)) {
            // Participations are on record before the round can be committed.
            self.flush_updates().await;
            let Some(active) = &mut self.active else { return };
            let Phase::Training(t) = &mut active.round.phase else { return };
            let key = active.round.key.clone();
            let acc = t.acc.take().expect("accumulator present while training");
            let contributors = std::mem::take(&mut t.contributors);
            let metrics = t.metrics.mean();
            let fold_seconds = t.fold_seconds;
            let dp = t.dp.take();
            // Clients still working are told to stop.
            let abandoned: Vec<(ClientId, TaskId)> = t
                .tasks
                .iter()
                .filter(|(_, a)| a.state == AssignmentState::Assigned)
                .map(|(task, a)| (a.client.clone(), task.clone()))
                .collect();
            let round_no = active.round.key.round;
            let closed: Vec<TaskId> = t.tasks.keys().cloned().collect();
            let dp_noise = dp.as_ref().map(|d| (d.mechanism.clone(), d.count_sum));
            let expected = active.plan.privacy.as_ref().map_or(1, |p| p.expected_clients);
            active.round.phase =
                Phase::Aggregating { contributors, metrics, dp: dp.map(|d| (d.mechanism, d.scopes)), fold_seconds };
            let layout = active.global.layout.clone();
            let old = std::mem::replace(&mut active.global, Arc::new(GlobalModel::placeholder(layout)));
            self.remember_closed(closed, round_no);
            for (client, task) in abandoned {
                if let Some(c) = self.clients.get_mut(&client) {
                    c.cancelled.push(task);
                }
            }
            info!(run = %key.run, round = key.round, reported, "round aggregating");
            let tx = self.internal_tx.clone();
            tokio::task::spawn_blocking(move || {
                let clients = acc.contributions();
                let (result, noised_count) = match dp_noise {
                    None => {
                        let r = acc.average_into(old.into_values()).map_err(RoundError::from);
                        // The sum goes before publishing allocates anything.
                        drop(acc);
                        (r, None)
                    }
                    Some((mechanism, count_sum)) => {
                        match private_average(acc, old.into_values(), &mechanism, count_sum, expected) {
                            Ok((params, noised)) => (Ok(params), noised),
                            Err(e) => (Err(e), None),
                        }
                    }
                };
                let _ = tx.send(Internal::Averaged { key, result, clients, noised_count });
            });
        } else if unreachable || past_deadline {
            let reason = if past_deadline {
                format!("deadline passed with {reported} updates, quorum is {}", plan.min_clients)
            } else {
                format!("only {reported} updates and no client left to report, quorum is {}", plan.min_clients)
            };
            self.fail_active(RoundFailure(reason), RunState::Failed).await;
        }
    }

    async fn handle_internal(&mut self, msg: Internal) {
        match msg {
            Internal::Averaged { key, result, clients, noised_count } => {
                let Some(active) = &mut self.active else { return };
                if active.round.key != key {
                    return;
                }
                let Phase::Aggregating { contributors, metrics, dp, fold_seconds } =
                    std::mem::replace(&mut active.round.phase, Phase::Publishing)
                else {
                    return;
                };
                let params = match result {
                    Ok(p) => p,
                    Err(e) => {
                        self.fail_active(RoundFailure(format!("aggregation failed: {e}")), RunState::Failed).await;
                        return;
                    }
                };
                let privacy = dp.map(|(mechanism, scopes)| {
                    let plan = active.plan.privacy.as_ref().expect("a private round has a privacy plan");
                    let next = match (plan.clipping, noised_count) {
                        (Clipping::Adaptive { target_quantile, learning_rate, .. }, Some(count)) => {
                            Some(crate::privacy::mechanism::next_clip_norm(
                                mechanism.clip_norm,
                                count,
                                plan.expected_clients,
                                target_quantile,
                                learning_rate,
                            ))
                        }
                        _ => None,
                    };
                    (next, provenance(plan, &mechanism, scopes, key.round))
                });
                active.pending_privacy = privacy.clone();
                let samples: u64 = contributors.iter().map(|c| c.samples).sum();
                self.emit(&key.run, key.round, RunEventKind::Aggregated { clients, samples, metrics, fold_seconds });
                let Some(active) = &self.active else { return };
                let regions: Vec<RegionId> = if active.plan.regions.is_all() {
                    let mut r: Vec<RegionId> = contributors.iter().map(|c| c.region.clone()).collect();
                    r.sort();
                    r.dedup();
                    r
                } else {
                    active.plan.regions.iter().cloned().collect()
                };
                let req = PublishRequest {
                    id: CheckpointId::for_round(&key.run, RoundNumber(key.round)),
                    run: key.run.clone(),
                    round: key.round,
                    parent: active.parent.clone(),
                    model: active.plan.model.clone(),
                    contributors,
                    metrics,
                    regions,
                    privacy: privacy.map(|(_, p)| p),
                };
                let dir = self.checkpoints.clone();
                let tx = self.internal_tx.clone();
                let layout = active.global.layout.clone();
                tokio::task::spawn_blocking(move || {
                    let result = dir.publish(&req, &params).map_err(RoundError::from);
                    let model = Arc::new(GlobalModel::new(layout, params));
                    let _ = tx.send(Internal::Published { key, params: model, result: Box::new(result) });
                });
            }
            Internal::Published { key, params, result } => {
                let Some(active) = &self.active else { return };
                if active.round.key != key || !matches!(active.round.phase, Phase::Publishing) {
                    return;
                }
                match *result {
                    Ok(published) => self.complete_round(key, params, published).await,
                    Err(e) => self.fail_active(RoundFailure(format!("publishing failed: {e}")), RunState::Failed).await,
                }
            }
        }
    }

    /// Publishing → Done: one store transaction, then the next round or the end of the run.
    async fn complete_round(&mut self, key: AttemptKey, model: Arc<GlobalModel>, published: Published) {
        let Some(active) = &mut self.active else { return };
        let m = &published.manifest;
        let final_round = key.round >= active.plan.rounds;
        let evaluate = active.plan.evaluation.after_round(key.round, active.plan.rounds);
        let checkpoint = CheckpointRecord {
            id: m.checkpoint_id.clone(),
            run: key.run.clone(),
            round: key.round,
            model_name: m.model.name().to_string(),
            sha256: m.weights_sha256.clone(),
            parent: m.parent_checkpoint.clone(),
            manifest_json: published.manifest_json.clone(),
            created_at: m.created_at,
            locations: published.locations.clone(),
        };
        let completion = RoundCompletion {
            run: key.run.clone(),
            round: key.round,
            attempt: key.attempt,
            reported: m.contributors.len() as u32,
            samples: m.total_samples,
            metrics: m.metrics,
            checkpoint,
            // With an evaluation to come, the run succeeds only once it is done.
            final_round: final_round && !evaluate,
        };
        if let Err(e) = self.store.complete_round(&completion).await {
            error!(run = %key.run, round = key.round, error = %e, "cannot commit round");
            self.fail_active(RoundFailure(format!("store failure: {e}")), RunState::Failed).await;
            return;
        }
        if let Some((next_clip, _)) = active.pending_privacy.take() {
            // The aggregate is released: reservations become charges (they counted already).
            if let Err(e) = self.store.charge_privacy(&key.run, key.round, key.attempt, next_clip).await {
                error!(run = %key.run, round = key.round, error = %e, "cannot mark the privacy reservation charged; it still counts");
            }
            if next_clip.is_some() {
                active.clip_norm = next_clip;
            }
        }
        info!(run = %key.run, round = key.round, checkpoint = %m.checkpoint_id, loss = m.metrics.loss_after, "round published");
        self.emit(
            &key.run,
            key.round,
            RunEventKind::Published {
                checkpoint: m.checkpoint_id.clone(),
                regions: published.locations.iter().map(|(r, _)| r.clone()).collect(),
                sha256: m.weights_sha256.clone(),
            },
        );
        let checkpoint_id = m.checkpoint_id.clone();
        let Some(active) = &mut self.active else { return };
        active.parent = Some(checkpoint_id.clone());
        active.global = model;
        if evaluate {
            self.start_evaluation(key, checkpoint_id, final_round).await;
        } else {
            self.after_round(key, final_round).await;
        }
    }

    /// Done → the next round's Selecting, or the end of the run.
    async fn after_round(&mut self, key: AttemptKey, final_round: bool) {
        if final_round {
            info!(run = %key.run, "run succeeded");
            self.emit(&key.run, key.round, RunEventKind::RunFinished { state: RunState::Succeeded, reason: None });
            self.active = None;
            self.start_next_run().await;
            return;
        }
        let next = key.round + 1;
        let attempt = match self.store.next_attempt(&key.run, next).await {
            Ok(a) => a,
            Err(e) => {
                self.fail_active(RoundFailure(format!("store failure: {e}")), RunState::Failed).await;
                return;
            }
        };
        let Some(active) = &mut self.active else { return };
        let now = Instant::now();
        active.round = Round {
            key: AttemptKey { run: key.run.clone(), round: next, attempt },
            started: now,
            deadline: now + active.plan.round_deadline,
            phase: Phase::Selecting,
        };
        self.try_select().await;
    }

    /// Publishing → Evaluating: every eligible client (or `evaluation.clients` of them)
    /// evaluates the committed checkpoint on its held-out split. Skipped when nobody is
    /// online to do it.
    async fn start_evaluation(&mut self, key: AttemptKey, checkpoint: CheckpointId, final_round: bool) {
        let now = Instant::now();
        let Some(active) = &self.active else { return };
        let plan = &active.plan;
        let mut eligible: Vec<&ConnectedClient> = self
            .clients
            .values()
            .filter(|c| c.online(now, self.settings.client_timeout) && plan.regions.allows(&c.record.region))
            .filter(|c| fits_model(&c.record, plan))
            .collect();
        eligible.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        let mut rng = ChaCha8Rng::seed_from_u64(plan.seed ^ 0xE7A1 ^ (u64::from(key.round) << 32));
        eligible.shuffle(&mut rng);
        if plan.evaluation.clients > 0 {
            eligible.truncate(plan.evaluation.clients as usize);
        }
        let chosen: Vec<(ClientId, RegionId)> =
            eligible.iter().map(|c| (c.record.id.clone(), c.record.region.clone())).collect();
        if chosen.is_empty() {
            warn!(run = %key.run, round = key.round, "no client online to evaluate the checkpoint; evaluation skipped");
            return self.finish_evaluation_now(key, checkpoint, final_round, Vec::new()).await;
        }
        let template = TaskAssignment {
            task: TaskId::generate(),
            run: key.run.clone(),
            round: key.round,
            model: plan.model.clone(),
            layout: active.global.layout.clone(),
            local: plan.local.clone(),
            deadline: plan.round_deadline,
            chunk_bytes: self.settings.chunk_bytes,
            seed: plan.seed,
            kind: TaskKind::Evaluate,
            privacy: None,
        };
        let tasks = dispatch(&self.clients, &chosen, &template);
        let Some(active) = &mut self.active else { return };
        active.round.deadline = now + active.plan.round_deadline;
        active.round.phase = Phase::Evaluating(Evaluation { tasks, reports: Vec::new(), checkpoint, final_round });
        info!(run = %key.run, round = key.round, clients = chosen.len(), "round evaluating");
    }

    /// Evaluating → Done once every asked client answered or dropped, or at the deadline.
    async fn check_evaluation_end(&mut self) {
        let now = Instant::now();
        let Some(active) = &mut self.active else { return };
        let Phase::Evaluating(e) = &mut active.round.phase else { return };
        let outstanding = e.tasks.values().filter(|a| a.state == AssignmentState::Assigned).count();
        if outstanding > 0 && now < active.round.deadline {
            return;
        }
        let key = active.round.key.clone();
        let Phase::Evaluating(e) = std::mem::replace(&mut active.round.phase, Phase::Publishing) else { return };
        self.remember_closed(e.tasks.keys().cloned().collect(), key.round);
        for (task, a) in &e.tasks {
            if a.state == AssignmentState::Assigned
                && let Some(c) = self.clients.get_mut(&a.client)
            {
                c.cancelled.push(task.clone());
            }
        }
        self.finish_evaluation_now(key, e.checkpoint, e.final_round, e.reports).await;
    }

    /// Stores the sample-weighted means (overall, then per region) and moves on.
    async fn finish_evaluation_now(
        &mut self,
        key: AttemptKey,
        checkpoint: CheckpointId,
        final_round: bool,
        reports: Vec<(RegionId, u64, f64, f64)>,
    ) {
        let results = evaluation_means(&key.run, key.round, &reports);
        if !results.is_empty() {
            if let Err(e) = self.store.record_evaluations(&results).await {
                error!(run = %key.run, round = key.round, error = %e, "cannot record evaluation");
            }
            let overall = &results[0];
            info!(run = %key.run, round = key.round, clients = overall.clients, loss = overall.loss, accuracy = overall.accuracy, "round evaluated");
            self.emit(&key.run, key.round, RunEventKind::Evaluated { results });
        }
        if final_round && let Err(e) = self.store.finish_run(&key.run, &checkpoint).await {
            error!(run = %key.run, error = %e, "cannot record run success");
        }
        self.after_round(key, final_round).await;
    }

    fn report_evaluation(
        &mut self,
        task: &TaskId,
        client: &ClientId,
        report: EvaluationReport,
    ) -> Result<(), RoundError> {
        self.assignment(task, client)?;
        let active = self.active.as_mut().expect("assignment implies an active run");
        let round = active.round.key.round;
        let Phase::Evaluating(e) = &mut active.round.phase else {
            return Err(RoundError::WrongTaskKind { task: task.clone(), expected: "an update push" });
        };
        let a = e.tasks.get_mut(task).expect("checked by assignment");
        if a.state == AssignmentState::Reported {
            return Err(RoundError::AlreadyReported { client: client.clone(), round });
        }
        a.state = AssignmentState::Reported;
        if report.samples > 0 {
            e.reports.push((a.region.clone(), report.samples, report.loss, report.accuracy));
        }
        Ok(())
    }

    /// Ends the active round attempt without a checkpoint and ends the run with `state`.
    async fn fail_active(&mut self, failure: RoundFailure, state: RunState) {
        self.flush_updates().await;
        let Some(active) = self.active.take() else { return };
        let key = active.round.key;
        let reason = failure.0;
        warn!(run = %key.run, round = key.round, reason = %reason, "round failed");
        if let Some(tasks) = active.round.phase.tasks() {
            self.remember_closed(tasks.keys().cloned().collect(), key.round);
            for (task, a) in tasks {
                if a.state == AssignmentState::Assigned
                    && let Some(c) = self.clients.get_mut(&a.client)
                {
                    c.cancelled.push(task.clone());
                }
            }
        }
        // A round that never left Selecting has no row yet.
        let has_row = !matches!(active.round.phase, Phase::Selecting);
        if has_row && let Err(e) = self.store.fail_round(&key.run, key.round, key.attempt, &reason).await {
            error!(run = %key.run, error = %e, "cannot record round failure");
        }
        let run_reason =
            if state == RunState::Cancelled { reason.clone() } else { format!("round {} failed: {reason}", key.round) };
        if let Err(e) = self.store.set_run_state(&key.run, state, Some(&run_reason)).await {
            error!(run = %key.run, error = %e, "cannot record run state");
        }
        self.emit(&key.run, key.round, RunEventKind::RoundFailed { reason });
        self.emit(&key.run, key.round, RunEventKind::RunFinished { state, reason: Some(run_reason) });
        // The next queued run starts on the next tick (not here: this may run inside
        // `start_next_run` itself).
    }

    // ----------------------------------------------------------------------------------
    // Updates
    // ----------------------------------------------------------------------------------

    // ----------------------------------------------------------------------------------
    // Privacy
    // ----------------------------------------------------------------------------------
    /// The scopes a private run can touch as far as is known at submit time: the plan's
    /// regions, or every registered client's region when the plan allows all.
    fn known_scopes(&self, plan: &RunPlan) -> Vec<PrivacyScope> {
        let mut regions: Vec<RegionId> = if plan.regions.is_all() {
            self.clients.values().map(|c| c.record.region.clone()).collect()
        } else {
            plan.regions.iter().cloned().collect()
        };
        regions.sort();
        regions.dedup();
        regions.into_iter().map(|r| PrivacyScope::new(plan.model.name(), r)).collect()
    }

    /// A scope's budget (refusing a scope without one) and its ledger so far.
    async fn scope_ledger(&self, scope: &PrivacyScope) -> Result<(Budget, Vec<LedgerEntry>), RoundError> {
        let budget =
            self.settings.privacy.budgets.for_scope(scope).ok_or_else(|| PrivacyError::NoBudget(scope.to_string()))?;
        let entries = self.store.list_ledger(&LedgerFilter { scope: Some(scope.clone()), run: None }).await?;
        Ok((budget, entries))
    }

    /// Refuses a private run at submit time when a scope it can touch has no budget, or
    /// when all its rounds together would overspend one.
    async fn admit_private_run(&self, plan: &RunPlan) -> Result<(), RoundError> {
        let Some(p) = &plan.privacy else { return Ok(()) };
        let dim = plan.model.layout().total();
        let mechanism = RoundMechanism::new(p, dim, p.clipping.initial_norm(), self.settings.privacy.lattice_slack)?;
        let costs = vec![mechanism.cost.clone(); plan.rounds as usize];
        for scope in self.known_scopes(plan) {
            let (budget, entries) = self.scope_ledger(&scope).await?;
            if let Err(e) = crate::privacy::ledger::admit(&scope, budget, &entries, &costs) {
                warn!(scope = %scope, error = %e, rounds = plan.rounds, "private run refused at submit");
                return Err(match e {
                    PrivacyError::OverBudget { scope, budget, delta, spent, cost } => {
                        PrivacyError::RunOverBudget { scope, budget, delta, spent, cost, rounds: plan.rounds }
                    }
                    other => other,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Builds a private round's mechanism and reserves its cost in every scope it touches
    /// (the regions of the selected clients; with Poisson sampling, of every eligible
    /// client, since the analysis covers them all) in one store transaction.
    async fn reserve_round(
        &mut self,
        key: &AttemptKey,
        selected: &[(ClientId, RegionId)],
        population: Vec<RegionId>,
    ) -> Result<Option<DpRound>, RoundError> {
        let Some(active) = &self.active else { return Ok(None) };
        let Some(p) = active.plan.privacy.clone() else { return Ok(None) };
        let clip_norm = active.clip_norm.unwrap_or_else(|| p.clipping.initial_norm());
        let dim = active.global.params.len();
        let mechanism = RoundMechanism::new(&p, dim, clip_norm, self.settings.privacy.lattice_slack)?;
        let mut regions: Vec<RegionId> = match p.sampling {
            Sampling::Poisson { .. } => population,
            Sampling::Fixed => selected.iter().map(|(_, r)| r.clone()).collect(),
        };
        regions.sort();
        regions.dedup();
        let model = active.plan.model.name().to_string();
        let mut entries = Vec::with_capacity(regions.len());
        let mut scopes = Vec::with_capacity(regions.len());
        for region in regions {
            let scope = PrivacyScope::new(model.clone(), region);
            let (budget, prior) = self.scope_ledger(&scope).await?;
            let after = crate::privacy::ledger::admit(&scope, budget, &prior, std::slice::from_ref(&mechanism.cost))?;
            scopes.push(ScopeEpsilon { scope: scope.to_string(), epsilon: after, delta: budget.delta });
            entries.push(LedgerEntry {
                scope,
                run: key.run.clone(),
                round: key.round,
                attempt: key.attempt,
                state: LedgerState::Reserved,
                accountant: mechanism.accountant,
                cost: mechanism.cost.clone(),
                noise_multiplier: p.noise_multiplier,
                clip_norm,
                sampling_rate: mechanism.sampling_rate,
                delta: budget.delta,
                epsilon_cumulative: after,
                next_clip_norm: None,
                created_at: Utc::now(),
            });
        }
        self.store.reserve_privacy(&entries).await?;
        info!(run = %key.run, round = key.round, scopes = entries.len(), rho = mechanism.rho, "privacy cost reserved");
        Ok(Some(DpRound { mechanism, count_sum: 0, scopes }))
    }

    fn remember_closed(&mut self, tasks: Vec<TaskId>, round: u32) {
        if self.closed_tasks.len() + tasks.len() > CLOSED_TASKS_MAX {
            self.closed_tasks.clear();
        }
        self.closed_tasks.extend(tasks.into_iter().map(|t| (t, round)));
    }

    /// The live assignment of `task`, checked against `client`.
    fn assignment(&self, task: &TaskId, client: &ClientId) -> Result<&Assignment, RoundError> {
        let a = self.active.as_ref().and_then(|a| a.round.phase.tasks().and_then(|tasks| tasks.get(task))).ok_or_else(
            || match self.closed_tasks.get(task) {
                Some(round) => RoundError::RoundClosed { task: task.clone(), round: *round },
                None => RoundError::UnknownTask(task.clone()),
            },
        )?;
        if a.client != *client {
            return Err(RoundError::NotYourTask { task: task.clone(), client: client.clone() });
        }
        Ok(a)
    }

    fn begin_upload(&self, task: &TaskId, client: &ClientId, total_values: u64) -> Result<UploadTicket, RoundError> {
        let a = self.assignment(task, client)?;
        let active = self.active.as_ref().expect("assignment implies an active run");
        if !matches!(active.round.phase, Phase::Training(_)) {
            return Err(RoundError::WrongTaskKind { task: task.clone(), expected: "an evaluation report" });
        }
        if a.state == AssignmentState::Reported {
            return Err(RoundError::AlreadyReported { client: client.clone(), round: active.round.key.round });
        }
        let expected = active.global.params.len() as u64;
        if total_values != expected {
            return Err(RoundError::UpdateLength { expected, got: total_values });
        }
        Ok(UploadTicket { total_values })
    }

    async fn commit_upload(
        &mut self,
        task: TaskId,
        client: ClientId,
        update: VerifiedUpdate,
    ) -> Result<u32, RoundError> {
        self.begin_upload(&task, &client, update.values.as_slice().len() as u64)?;
        if update.samples == 0 {
            return Err(RoundError::ZeroSamples);
        }
        let registered = self.clients.get(&client).map(|c| c.record.samples()).unwrap_or(0);
        if update.samples > registered {
            return Err(RoundError::TooManySamples { client, claimed: update.samples, registered });
        }
        let active = self.active.as_mut().expect("checked by begin_upload");
        let key = active.round.key.clone();
        let target = active.plan.clients_per_round;
        let private = active.plan.privacy.as_ref().map(|p| (p.mechanism, p.over_bound));
        if update.is_delta != private.is_some() {
            return Err(RoundError::UpdateKind { expected: private.is_some(), got: update.is_delta });
        }
        let Phase::Training(t) = &mut active.round.phase else { unreachable!("checked by begin_upload") };
        // Central DP: the coordinator verifies every update's norm against C.
        let bound = match (private, &t.dp) {
            (Some((DpMechanism::Central, over)), Some(dp)) => Some((dp.mechanism.clip_norm, over)),
            _ => None,
        };
        let mut acc = t.acc.take().expect("accumulator present while training");
        let VerifiedUpdate { mut values, samples, metrics, update_norm, .. } = update;
        // DP-FedAvg weighs every clipped update alike; FedAvg by sample count.
        let weight = if private.is_some() { 1.0 } else { samples as f64 };
        // Folding is O(model): do it off the reactor. The engine waits, so no other
        // request can observe the accumulator missing.
        let (acc, values, folded, reclipped, took) = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let mut reclipped = None;
            if let Some((c, over)) = bound {
                let norm = fedra_dp::noise::l2_norm(values.as_slice());
                if norm > c * (1.0 + fedra_dp::noise::CLIP_TOLERANCE) {
                    if over == OverBound::Reject {
                        let e = RoundError::Privacy(PrivacyError::OverClipBound { norm, bound: c });
                        return (acc, values, Err(e), None, started.elapsed());
                    }
                    if let Err(e) = fedra_dp::noise::clip_l2(values.as_mut_slice(), c) {
                        return (acc, values, Err(RoundError::Privacy(e.into())), None, started.elapsed());
                    }
                    reclipped = Some(norm);
                }
            }
            let r = acc.fold(values.as_slice(), weight).map_err(RoundError::from);
            (acc, values, r, reclipped, started.elapsed())
        })
        .await
        .expect("fold task panicked");
        drop(values);
        let Some(active) = self.active.as_mut() else { return Err(RoundError::UnknownTask(task)) };
        let Phase::Training(t) = &mut active.round.phase else { return Err(RoundError::UnknownTask(task)) };
        t.acc = Some(acc);
        t.fold_seconds += took.as_secs_f64();
        if let Err(e) = folded {
            if matches!(e, RoundError::Privacy(_)) {
                // Refused for good: the client may not retry this round, and it is on record.
                if let Some(a) = t.tasks.get_mut(&task) {
                    a.state = AssignmentState::Dropped;
                }
                warn!(run = %key.run, round = key.round, client = %client, error = %e, "update refused");
                if let Err(se) =
                    self.store.reject_update(&key.run, key.round, key.attempt, &client, &e.to_string()).await
                {
                    error!(run = %key.run, client = %client, error = %se, "cannot record the refusal");
                }
            }
            return Err(e);
        }
        if let Some(dp) = &mut t.dp {
            // Adaptive clipping's bit, from the client's norm before clipping.
            dp.count_sum += if update_norm <= dp.mechanism.clip_norm { 1 } else { -1 };
        }
        let detail = reclipped.map(|norm| {
            warn!(run = %key.run, round = key.round, client = %client, norm, "update over the clipping bound re-clipped");
            format!("re-clipped by the coordinator from norm {norm}")
        });
        let a = t.tasks.get_mut(&task).expect("checked by begin_upload");
        a.state = AssignmentState::Reported;
        let region = a.region.clone();
        t.metrics.add(&metrics, samples);
        t.contributors.push(Contributor { client: client.clone(), region: region.clone(), samples });
        let reported = t.reported();
        let record = ParticipationRecord {
            run: key.run.clone(),
            round: key.round,
            attempt: key.attempt,
            client: client.clone(),
            region: region.clone(),
            status: ParticipationStatus::Reported,
            samples,
            metrics: Some(metrics),
            update_norm: Some(update_norm),
            detail,
        };
        // Written in batches (each tick, and before the round leaves Training): one SQLite
        // transaction per update would cap a round at ~1000 updates/s on the engine task.
        self.pending_updates.push(record);
        info!(run = %key.run, round = key.round, client = %client, samples, reported, "update folded");
        self.emit(
            &key.run,
            key.round,
            RunEventKind::UpdateReceived { client, region, samples, reported, target, metrics },
        );
        Ok(reported)
    }
}

/// DP-FedAvg's release: `global + (Σ clipped updates + noise) / expected_clients`, written
/// into the old model's buffer. Central DP draws the lattice noise here, from an OS-seeded
/// CSPRNG; local DP's updates arrived noised. With adaptive clipping also returns the
/// noised count Σ(2bᵢ − 1) + noise.
fn private_average(
    acc: FedAvgAccumulator,
    mut global: Vec<f32>,
    mechanism: &RoundMechanism,
    count_sum: i64,
    expected_clients: u32,
) -> Result<(Vec<f32>, Option<f64>), RoundError> {
    let mut sum = acc.into_sum();
    if sum.len() != global.len() {
        return Err(RoundError::Aggregation(crate::aggregation::AggregationError::Length {
            expected: global.len(),
            got: sum.len(),
        }));
    }
    let mut rng = SecureRng::from_os_rng().map_err(PrivacyError::from)?;
    if mechanism.mechanism == DpMechanism::Central {
        mechanism.update_noise.add_noise(&mut sum, &mut rng).map_err(PrivacyError::from)?;
    }
    let noised_count = match &mechanism.count_noise {
        Some(noise) => Some(count_sum as f64 + noise.sample(&mut rng).map_err(PrivacyError::from)? as f64),
        None => None,
    };
    let m = f64::from(expected_clients);
    for (g, s) in global.iter_mut().zip(&sum) {
        *g = (f64::from(*g) + s / m) as f32;
    }
    if let Some(i) = global.iter().position(|v| !v.is_finite()) {
        return Err(RoundError::Privacy(PrivacyError::Noise(format!(
            "the released model has a non-finite value at index {i}"
        ))));
    }
    Ok((global, noised_count))
}

/// The privacy block of a private round's manifest.
fn provenance(
    plan: &crate::plan::PrivacyPlan,
    mechanism: &RoundMechanism,
    scopes: Vec<ScopeEpsilon>,
    round: u32,
) -> PrivacyProvenance {
    let worst = scopes.iter().max_by(|a, b| a.epsilon.total_cmp(&b.epsilon));
    PrivacyProvenance {
        mechanism: match plan.mechanism {
            DpMechanism::Central => "central".into(),
            DpMechanism::Local => "local".into(),
        },
        accountant: mechanism.accountant.as_str().into(),
        noise_multiplier: plan.noise_multiplier,
        effective_noise_multiplier: mechanism.effective_noise_multiplier,
        clip_norm: mechanism.clip_norm,
        sampling_rate: mechanism.sampling_rate,
        noise_std: mechanism.update_noise_std,
        expected_clients: plan.expected_clients,
        rounds: round,
        epsilon: worst.map_or(0.0, |w| w.epsilon),
        delta: worst.map_or(0.0, |w| w.delta),
        scopes,
    }
}

/// Sends each chosen client its own copy of `template` (with a fresh task id) on its task
/// stream. A client whose stream is gone or full is recorded as dropped straight away.
fn dispatch(
    clients: &HashMap<ClientId, ConnectedClient>,
    chosen: &[(ClientId, RegionId)],
    template: &TaskAssignment,
) -> HashMap<TaskId, Assignment> {
    let mut tasks = HashMap::with_capacity(chosen.len());
    for (client, region) in chosen {
        let task = TaskId::generate();
        let assignment = TaskAssignment { task: task.clone(), ..template.clone() };
        let delivered =
            clients.get(client).and_then(|c| c.tasks.as_ref()).is_some_and(|tx| tx.try_send(assignment).is_ok());
        let state = if delivered { AssignmentState::Assigned } else { AssignmentState::Dropped };
        tasks.insert(task, Assignment { client: client.clone(), region: region.clone(), state });
    }
    tasks
}

/// Whether a client's datasets can feed the plan's model (unknown shapes are allowed).
fn fits_model(client: &ClientRecord, plan: &RunPlan) -> bool {
    let arch = plan.model.architecture();
    let (input_dim, classes) = (arch.input_dim(), arch.classes());
    client.samples() > 0
        && client.datasets.iter().any(|d| {
            (d.features == 0 || d.features as usize == input_dim) && (d.classes == 0 || d.classes as usize <= classes)
        })
}

/// Sample-weighted means of evaluation reports: the overall mean first (region `None`),
/// then one per region in region order. Empty when no report had samples.
pub(crate) fn evaluation_means(
    run: &RunId,
    round: u32,
    reports: &[(RegionId, u64, f64, f64)],
) -> Vec<EvaluationRecord> {
    let mean = |region: Option<RegionId>, rs: &[&(RegionId, u64, f64, f64)]| {
        let samples: u64 = rs.iter().map(|r| r.1).sum();
        let w = samples as f64;
        EvaluationRecord {
            run: run.clone(),
            round,
            region,
            clients: rs.len() as u32,
            samples,
            loss: rs.iter().map(|r| r.1 as f64 * r.2).sum::<f64>() / w,
            accuracy: rs.iter().map(|r| r.1 as f64 * r.3).sum::<f64>() / w,
        }
    };
    if reports.is_empty() {
        return Vec::new();
    }
    let all: Vec<_> = reports.iter().collect();
    let mut out = vec![mean(None, &all)];
    let mut regions: Vec<&RegionId> = reports.iter().map(|r| &r.0).collect();
    regions.sort();
    regions.dedup();
    for region in regions {
        let rs: Vec<_> = reports.iter().filter(|r| &r.0 == region).collect();
        out.push(mean(Some(region.clone()), &rs));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_means_are_sample_weighted_overall_and_per_region() {
        let run = RunId::generate();
        let eu = RegionId::new("eu").unwrap();
        let us = RegionId::new("us").unwrap();
        let reports = vec![(eu.clone(), 10, 1.0, 0.5), (us.clone(), 30, 2.0, 0.9), (eu.clone(), 30, 3.0, 0.1)];
        let m = evaluation_means(&run, 4, &reports);
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].region.as_ref(), m[0].clients, m[0].samples), (None, 3, 70));
        assert!((m[0].loss - (10.0 + 60.0 + 90.0) / 70.0).abs() < 1e-12);
        assert!((m[0].accuracy - (5.0 + 27.0 + 3.0) / 70.0).abs() < 1e-12);
        assert_eq!((m[1].region.as_ref(), m[1].samples), (Some(&eu), 40));
        assert!((m[1].loss - 2.5).abs() < 1e-12);
        assert!((m[1].accuracy - 0.2).abs() < 1e-12);
        assert_eq!((m[2].region.as_ref(), m[2].clients), (Some(&us), 1));
        assert!(evaluation_means(&run, 1, &[]).is_empty());
    }
}
