//! The run actor: one task per active run owns that run's round state. The engine forwards
//! it the requests that concern the run (uploads, evaluations, reads, cancel) and the
//! fleet's news (offers of clients, clients gone); it answers the engine only with
//! fire-and-forget messages ([`FleetMsg`]), so the engine never waits on a run and a slow
//! or failing run never holds up another.

mod boundary;

use super::fleet::{Eligibility, Lease};
use super::history;
use super::phases::{
    AssignmentState, Failure, Phase, Transition, aggregating, evaluating, publishing, selecting, training,
};
use super::task::{EvaluationReport, GlobalModel, UploadTicket, VerifiedUpdate};
use super::{EngineSettings, PhaseName, RoundError, RunEvent, RunEventKind, RunView};
use crate::checkpoint::{Checkpoints, Published};
use crate::ids::{CheckpointId, ClientId, RunId, TaskId};
use crate::plan::RunPlan;
use crate::privacy::admission::Reservations;
use crate::store::{ParticipationRecord, RunState, Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, info};

pub(super) type Reply<T> = oneshot::Sender<Result<T, RoundError>>;
pub(super) type WatchReply = (Vec<RunEvent>, Option<broadcast::Receiver<RunEvent>>);

/// Identifies one round attempt, so that late results of an abandoned attempt are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AttemptKey {
    pub run: RunId,
    pub round: u32,
    pub attempt: u32,
}

/// A request about one run, forwarded by the engine.
pub(super) enum RunRequest {
    Get { reply: Reply<RunView> },
    Watch { reply: Reply<WatchReply> },
    Cancel { reply: Reply<RunState> },
    FetchModel { task: TaskId, client: ClientId, reply: Reply<Arc<GlobalModel>> },
    BeginUpload { task: TaskId, client: ClientId, total_values: u64, reply: Reply<UploadTicket> },
    CommitUpload { task: TaskId, client: ClientId, update: VerifiedUpdate, reply: Reply<u32> },
    ReportEvaluation { task: TaskId, client: ClientId, report: EvaluationReport, reply: Reply<()> },
}

/// Engine → run actor.
pub(super) enum RunMsg {
    Request(RunRequest),
    /// Clients leased to the run for the demand it posted.
    Offer(Vec<Lease>),
    /// The demand cannot be met: only `online` eligible clients are online.
    GiveUp {
        online: usize,
    },
    /// The clients of these tasks went away.
    Gone(Vec<TaskId>),
    Shutdown,
}

/// What a run wants from the fleet (see [`super::scheduler`]).
#[derive(Debug, Clone)]
pub(super) struct DemandSpec {
    /// The round the leases are for (for precise answers to stragglers).
    pub round: u32,
    pub eligibility: Eligibility,
    pub need: usize,
    /// From this instant on, `need` drops to the given count (selection's grace period).
    pub relaxed: Option<(Instant, usize)>,
    pub max: usize,
    pub deadline: Instant,
    pub patient: bool,
}

/// Run actor → engine.
pub(super) enum FleetMsg {
    Demand {
        run: RunId,
        demand: Option<DemandSpec>,
    },
    Release {
        tasks: Vec<TaskId>,
        abandon: bool,
    },
    Phase {
        run: RunId,
        live: Option<(u32, PhaseName)>,
    },
    /// A registration's store write finished (the engine answers the client then).
    Registered {
        client: crate::store::ClientRecord,
        session: String,
        result: Result<(), RoundError>,
        reply: tokio::sync::oneshot::Sender<Result<(), RoundError>>,
    },
}

/// Results of blocking work a phase started.
pub(super) enum Internal {
    Averaged { key: AttemptKey, result: Result<aggregating::Averaged, RoundError> },
    Published { key: AttemptKey, result: Box<Result<Published, RoundError>> },
}

/// Where a run (re)starts from, besides its global model.
pub(super) struct Resume {
    /// The checkpoint the global model is (the run's last committed round, or its initial one).
    pub parent: Option<CheckpointId>,
    pub clip_norm: Option<f64>,
    pub server_state: Option<crate::aggregation::server_opt::ServerState>,
    /// Every round is committed but the final evaluation is owed.
    pub evaluate_final: bool,
}

/// What every run actor shares with the engine.
#[derive(Clone)]
pub(super) struct RunEnv {
    pub store: Arc<dyn Store>,
    pub checkpoints: Checkpoints,
    pub settings: EngineSettings,
    pub reservations: Reservations,
    pub events: broadcast::Sender<RunEvent>,
    pub fleet: mpsc::UnboundedSender<FleetMsg>,
}

/// Everything about a run except its phase.
pub(super) struct RunCore {
    pub env: RunEnv,
    pub id: RunId,
    pub plan: RunPlan,
    /// The round's global model; `None` while the next one is computed in its buffer.
    pub global: Option<Arc<GlobalModel>>,
    pub parent: Option<CheckpointId>,
    /// C for the next private round (moves under adaptive clipping; persisted in the ledger).
    pub clip_norm: Option<f64>,
    /// A server optimizer's state after the last committed round (`None` before the
    /// first, and for FedAvg); written with each round's checkpoint.
    pub server_state: Option<crate::aggregation::server_opt::ServerState>,
    pub key: AttemptKey,
    /// The attempt has a row in the store (it left Selecting).
    pub recorded: bool,
    /// The previous round, released to this one while its checkpoint is written; committed
    /// before this round's average starts (see [`publishing`]).
    pub releasing: Option<publishing::Releasing>,
    pub started: Instant,
    pub deadline: Instant,
    pub internal: mpsc::UnboundedSender<Internal>,
    /// Upload handlers' line to this actor for streamed uploads (see [`super::stream`]).
    pub streams: super::stream::StreamSink,
    /// Reported updates not yet written to the store (see [`RunCore::flush_updates`]).
    pending_updates: Vec<ParticipationRecord>,
    /// Tasks of this run's closed phases, so that stragglers get a precise answer.
    closed_tasks: HashMap<TaskId, u32>,
    /// The round's contributors' training data statistics merged per region (never in a
    /// private run): the drift reference published beside the checkpoint. Restarted with
    /// each round's training; a round rebuilt after a restart publishes none.
    pub references: std::collections::BTreeMap<crate::ids::RegionId, fedra_types::drift::DataReference>,
    /// Training seconds the round's contributors reported, per region (the energy
    /// estimate's input). Restarted with each round.
    pub compute: std::collections::BTreeMap<crate::ids::RegionId, f64>,
    /// Encoded update bytes the round's counted uploads carried (the Aggregated event's
    /// `update_bytes`), set when training ends.
    pub round_update_bytes: u64,
    /// The attempt's measured cost per region (see [`crate::cost`]); reset with each round.
    pub cost: crate::cost::RoundTally,
}

const CLOSED_TASKS_MAX: usize = 100_000;

impl RunCore {
    /// Publishes an event to the run's watchers, as much of it as the run may disclose
    /// (see [`super::disclosure`]).
    pub fn emit(&self, kind: RunEventKind) {
        self.emit_round(self.key.round, kind);
    }

    /// [`Self::emit`] for another round than the current one (a released round's news).
    pub fn emit_round(&self, round: u32, kind: RunEventKind) {
        let event = RunEvent { run: self.id.clone(), round, kind };
        if let Some(event) = super::disclosure::event(&self.plan, event) {
            // No receiver is fine: nobody is watching.
            let _ = self.env.events.send(event);
        }
    }

    pub fn post(&self, msg: FleetMsg) {
        // The engine outlives its runs; a send fails only during shutdown.
        let _ = self.env.fleet.send(msg);
    }

    pub fn demand(&self, demand: Option<DemandSpec>) {
        self.post(FleetMsg::Demand { run: self.id.clone(), demand });
    }

    pub fn release(&self, tasks: Vec<TaskId>, abandon: bool) {
        if !tasks.is_empty() {
            self.post(FleetMsg::Release { tasks, abandon });
        }
    }

    /// The privacy plan this coordinator applies itself: the run's, except at the global
    /// tier, where each region clips, noises and accounts (see
    /// [`crate::hierarchy::private_cohorts`]) and regional aggregates are folded as models.
    pub fn privacy_here(&self) -> Option<&crate::plan::PrivacyPlan> {
        if self.env.settings.tier.is_global() { None } else { self.plan.privacy.as_ref() }
    }

    /// The update compression uploads to this coordinator use: the plan's, except at the
    /// global tier, where regional aggregates arrive uncompressed.
    pub fn compression_here(&self) -> crate::plan::Compression {
        if self.env.settings.tier.is_global() { crate::plan::Compression::None } else { self.plan.compression }
    }

    pub fn global(&self) -> Result<&Arc<GlobalModel>, RoundError> {
        self.global.as_ref().ok_or_else(|| RoundError::Internal("the global model is being replaced".into()))
    }

    /// Queues a reported update's participation row (written in batches: one SQLite
    /// transaction per update would cap a round at ~1000 updates/s).
    pub fn queue_update(&mut self, record: ParticipationRecord) {
        self.pending_updates.push(record);
    }

    /// Writes the batched participations in one transaction. On failure the batch stays
    /// queued for the next flush, so no reporter is ever recorded as anything else.
    ///
    /// # Errors
    /// The store's error; the batch is kept.
    pub async fn flush_updates(&mut self) -> Result<(), StoreError> {
        if self.pending_updates.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending_updates);
        let writing = std::time::Instant::now();
        let written = self.env.store.record_updates(&batch).await;
        metrics::histogram!("fedra_store_seconds", "op" => "record_updates").record(writing.elapsed().as_secs_f64());
        match written {
            Ok(outcome) => {
                // The actor moves each assignment to Reported once, so the store refusing
                // one means the two disagree: say so loudly, the sum is not undone.
                for r in &outcome.refused {
                    error!(run = %r.run, round = r.round, client = %r.client, reason = %r.reason, "the store refused a counted update");
                }
                Ok(())
            }
            Err(e) => {
                error!(run = %self.id, updates = batch.len(), error = %e, "cannot record updates; will retry");
                let mut later = std::mem::take(&mut self.pending_updates);
                self.pending_updates = batch;
                self.pending_updates.append(&mut later);
                Err(e)
            }
        }
    }

    pub fn remember_closed(&mut self, tasks: Vec<TaskId>, round: u32) {
        if self.closed_tasks.len() + tasks.len() > CLOSED_TASKS_MAX {
            self.closed_tasks.clear();
        }
        self.closed_tasks.extend(tasks.into_iter().map(|t| (t, round)));
    }

    /// The error for a task this run does not have open.
    pub fn not_open(&self, task: &TaskId) -> RoundError {
        match self.closed_tasks.get(task) {
            Some(round) => RoundError::RoundClosed { task: task.clone(), round: *round },
            None => RoundError::UnknownTask(task.clone()),
        }
    }
}

/// The actor: the run's core and its phase.
pub(super) struct RunActor {
    core: RunCore,
    phase: Phase,
    ended: bool,
    /// When the current phase began (the phase-duration histogram).
    phase_since: Instant,
    streams: Option<mpsc::UnboundedReceiver<super::stream::StreamMsg>>,
}

impl RunActor {
    /// An actor for a run whose next attempt is `key`, starting from `global`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        env: RunEnv,
        plan: RunPlan,
        key: AttemptKey,
        global: GlobalModel,
        resume: Resume,
        internal: mpsc::UnboundedSender<Internal>,
    ) -> Self {
        let Resume { parent, clip_norm, server_state, evaluate_final } = resume;
        let now = Instant::now();
        let (stream_tx, stream_rx) = mpsc::unbounded_channel();
        let core = RunCore {
            streams: super::stream::StreamSink::new(stream_tx, env.settings.scratch_dir.clone()),
            env,
            id: key.run.clone(),
            deadline: now + plan.round_deadline,
            plan,
            global: Some(Arc::new(global)),
            parent,
            clip_norm,
            server_state,
            key,
            recorded: false,
            releasing: None,
            started: now,
            internal,
            pending_updates: Vec::new(),
            closed_tasks: HashMap::new(),
            references: std::collections::BTreeMap::new(),
            compute: std::collections::BTreeMap::new(),
            round_update_bytes: 0,
            cost: crate::cost::RoundTally::default(),
        };
        let mut core = core;
        // Every round is committed but the final evaluation is owed (a restart cut it short,
        // or a regional aggregator's evaluation run): evaluate the last checkpoint.
        let phase = match (evaluate_final, core.parent.clone()) {
            // Patient: after a restart the clients are still reconnecting.
            (true, Some(checkpoint)) => super::phases::evaluating::enter(&mut core, checkpoint, true, true),
            _ => selecting::begin(&mut core),
        };
        Self { core, phase, ended: false, phase_since: Instant::now(), streams: Some(stream_rx) }
    }

    /// Runs until the run ends or the engine shuts down.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<RunMsg>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        self.announce_phase();
        let mut tick = tokio::time::interval(self.core.env.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut streams = self.streams.take().expect("the stream receiver is taken once");
        use tracing::Instrument;
        while !self.ended {
            // The attempt's span: traces and JSON logs group each round's work under it.
            let key = &self.core.key;
            let span = tracing::info_span!("round", round = key.round, attempt = key.attempt);
            tokio::select! {
                msg = rx.recv() => match msg {
                    None | Some(RunMsg::Shutdown) => break,
                    Some(msg) => self.handle(msg).instrument(span).await,
                },
                Some(msg) = internal.recv() => self.handle_internal(msg).instrument(span).await,
                result = publishing::written(&mut self.core.releasing) => {
                    self.on_released(result).instrument(span).await;
                }
                Some(msg) = streams.recv() => {
                    if training::on_stream(&mut self.phase, &mut self.core, msg) {
                        self.check_end().instrument(span).await;
                    }
                }
                _ = tick.tick() => self.on_tick().instrument(span).await,
            }
        }
        // Blocking work in flight (an average, a checkpoint being written) finishes before
        // the actor goes: an engine started after this one re-runs the attempt, and must not
        // race a dead attempt's writer on the same files.
        if !self.ended {
            let computing = match &self.phase {
                Phase::Aggregating(a) => a.launched(),
                Phase::Publishing(_) => true,
                _ => false,
            };
            if computing {
                let _ = internal.recv().await;
            }
            // A released round's write too; its round is re-run as well.
            if self.core.releasing.is_some() {
                let _ = publishing::written(&mut self.core.releasing).await;
            }
        }
        // Reported updates are on record before the actor goes, whatever stopped it.
        let _ = self.core.flush_updates().await;
        if self.ended {
            self.core.post(FleetMsg::Phase { run: self.core.id.clone(), live: None });
        }
        // Requests that raced with the end get a terminal answer rather than a dropped reply.
        rx.close();
        while let Some(msg) = rx.recv().await {
            if let RunMsg::Request(req) = msg {
                self.answer_after_end(req).await;
            } else if let RunMsg::Offer(leases) = msg {
                self.core.release(leases.into_iter().map(|l| l.task).collect(), false);
            }
        }
    }

    fn announce_phase(&self) {
        self.core
            .post(FleetMsg::Phase { run: self.core.id.clone(), live: Some((self.core.key.round, self.phase.name())) });
    }

    async fn handle(&mut self, msg: RunMsg) {
        match msg {
            RunMsg::Request(req) => self.request(req).await,
            RunMsg::Offer(leases) => {
                let t = match &mut self.phase {
                    Phase::Selecting(s) => selecting::on_offer(s, &mut self.core, leases).await,
                    Phase::Evaluating(e) => evaluating::on_offer(e, &mut self.core, leases),
                    _ => {
                        self.core.release(leases.into_iter().map(|l| l.task).collect(), false);
                        Transition::Stay
                    }
                };
                self.apply(t).await;
            }
            RunMsg::GiveUp { online } => {
                let t = match &mut self.phase {
                    Phase::Selecting(_) => selecting::on_give_up(&self.core, online),
                    Phase::Evaluating(e) => evaluating::on_give_up(e, &mut self.core).await,
                    _ => Transition::Stay,
                };
                self.apply(t).await;
            }
            RunMsg::Gone(tasks) => {
                let round = self.core.key.round;
                if let Some(a) = self.phase.assignments_mut() {
                    let dropped = a.drop_gone(&tasks, round);
                    self.core.release(dropped, false);
                }
                self.on_tick().await;
            }
            RunMsg::Shutdown => {}
        }
    }

    async fn request(&mut self, req: RunRequest) {
        match req {
            RunRequest::Get { reply } => {
                let _ = self.core.flush_updates().await;
                let live = Some((self.core.key.round, self.phase.name()));
                let _ = reply.send(history::view(self.core.env.store.as_ref(), &self.core.id, live).await);
            }
            RunRequest::Watch { reply } => {
                // Inside the actor, so no live event can slip between history and subscription.
                let _ = self.core.flush_updates().await;
                let r = history::replay(self.core.env.store.as_ref(), &self.core.id).await.map(|(h, ended)| {
                    let live = (!ended).then(|| self.core.env.events.subscribe());
                    (h, live)
                });
                let _ = reply.send(r);
            }
            RunRequest::Cancel { reply } => {
                let t = Transition::to(Phase::Failed(Failure {
                    reason: "run cancelled".into(),
                    state: RunState::Cancelled,
                }));
                self.apply(t).await;
                info!(run = %self.core.id, "run cancelled");
                let _ = reply.send(Ok(RunState::Cancelled));
            }
            RunRequest::FetchModel { task, client, reply } => {
                let r = self.open_assignment(&task, &client).and_then(|_| self.core.global().cloned());
                // The round's broadcast (an evaluation's download is not a training cost).
                if let (Ok(model), Phase::Training(t)) = (&r, &self.phase)
                    && let Some(a) = t.assignments.0.get(&task)
                {
                    let bytes = 4 * model.params.as_slice().len() as u64;
                    self.core.cost.broadcast(&a.region, bytes);
                    metrics::counter!("fedra_broadcast_bytes_total", "region" => a.region.to_string()).increment(bytes);
                }
                let _ = reply.send(r);
            }
            RunRequest::BeginUpload { task, client, total_values, reply } => {
                let r = match &self.phase {
                    Phase::Training(t) => training::begin_upload(t, &self.core, &task, &client, total_values),
                    _ => self.open_assignment(&task, &client).and_then(|_| {
                        Err(RoundError::WrongTaskKind { task: task.clone(), expected: "an evaluation report" })
                    }),
                };
                let _ = reply.send(r);
            }
            RunRequest::CommitUpload { task, client, update, reply } => {
                let (r, t) = match &mut self.phase {
                    Phase::Training(t) => training::commit_upload(t, &mut self.core, task, client, update).await,
                    _ => {
                        let r = self.open_assignment(&task, &client).and_then(|_| {
                            Err(RoundError::WrongTaskKind { task: task.clone(), expected: "an evaluation report" })
                        });
                        (r, Transition::Stay)
                    }
                };
                if let Err(e) = &r {
                    metrics::counter!("fedra_updates_refused_total", "reason" => e.reason()).increment(1);
                }
                let _ = reply.send(r);
                self.apply(t).await;
                self.check_end().await;
            }
            RunRequest::ReportEvaluation { task, client, report, reply } => {
                let r = match &mut self.phase {
                    Phase::Evaluating(e) => evaluating::report(e, &mut self.core, &task, &client, report),
                    _ => self.open_assignment(&task, &client).and_then(|_| {
                        Err(RoundError::WrongTaskKind { task: task.clone(), expected: "an update push" })
                    }),
                };
                let _ = reply.send(r);
                self.check_end().await;
            }
        }
    }

    /// The open assignment of `task`, checked against `client`.
    fn open_assignment(&self, task: &TaskId, client: &ClientId) -> Result<AssignmentState, RoundError> {
        let a = self.phase.assignments().and_then(|a| a.0.get(task)).ok_or_else(|| self.core.not_open(task))?;
        if a.client != *client {
            return Err(RoundError::NotYourTask { task: task.clone(), client: client.clone() });
        }
        Ok(a.state)
    }

    async fn handle_internal(&mut self, msg: Internal) {
        let t = match (msg, &mut self.phase) {
            (Internal::Averaged { key, result }, Phase::Aggregating(a)) if key == self.core.key => {
                aggregating::on_averaged(a, &mut self.core, result)
            }
            (Internal::Published { key, result }, Phase::Publishing(p)) if key == self.core.key => {
                publishing::on_published(p, &mut self.core, *result).await
            }
            // A late result of an attempt that already failed or was cancelled.
            _ => Transition::Stay,
        };
        self.apply(t).await;
    }

    async fn on_tick(&mut self) {
        let _ = self.core.flush_updates().await;
        self.check_end().await;
    }

    /// Time- and count-driven transitions of the phases that wait on clients.
    async fn check_end(&mut self) {
        let t = match &mut self.phase {
            Phase::Deferred(d) => selecting::on_tick_deferred(d, &mut self.core),
            Phase::Training(t) => training::check_end(t, &mut self.core).await,
            Phase::Evaluating(e) => evaluating::check_end(e, &mut self.core).await,
            _ => Transition::Stay,
        };
        self.apply(t).await;
    }

    /// Applies transitions until the run rests in a phase that waits for something.
    async fn apply(&mut self, mut t: Transition) {
        loop {
            let Transition::To(next) = t else { return };
            let next = *next;
            let leaving = std::mem::replace(&mut self.phase, next);
            metrics::histogram!("fedra_round_phase_duration_seconds", "phase" => leaving.name().as_str())
                .record(self.phase_since.elapsed().as_secs_f64());
            self.phase_since = Instant::now();
            self.leave(leaving);
            t = match &mut self.phase {
                Phase::Done { final_round } => {
                    let final_round = *final_round;
                    metrics::counter!("fedra_rounds_total", "outcome" => "published").increment(1);
                    metrics::histogram!("fedra_round_duration_seconds", "outcome" => "published")
                        .record(self.core.started.elapsed().as_secs_f64());
                    self.settle_done(final_round).await
                }
                Phase::Released => self.next_round().await,
                Phase::Failed(f) => {
                    let f = f.clone();
                    let outcome = if f.state == RunState::Cancelled { "cancelled" } else { "failed" };
                    metrics::counter!("fedra_rounds_total", "outcome" => outcome).increment(1);
                    metrics::histogram!("fedra_round_duration_seconds", "outcome" => outcome)
                        .record(self.core.started.elapsed().as_secs_f64());
                    self.settle_failed(f).await;
                    Transition::Stay
                }
                // A phase may be over as soon as it starts (every client dropped at once,
                // an empty Poisson sample).
                Phase::Training(t) => training::check_end(t, &mut self.core).await,
                Phase::Evaluating(e) => evaluating::check_end(e, &mut self.core).await,
                _ => Transition::Stay,
            };
            self.announce_phase();
        }
    }

    /// Cleans up what the phase being left handed out: its demand, its open tasks.
    fn leave(&mut self, phase: Phase) {
        let round = self.core.key.round;
        match phase {
            Phase::Selecting(_) => self.core.demand(None),
            Phase::Evaluating(e) => {
                self.core.demand(None);
                if let Some(a) = e.assignments() {
                    let open = a.still_assigned();
                    let all = a.ids();
                    self.core.release(open, true);
                    self.core.remember_closed(all, round);
                }
            }
            Phase::Training(t) => {
                let open = t.assignments.still_assigned();
                metrics::counter!("fedra_clients_dropped_total", "reason" => "round_closed")
                    .increment(open.len() as u64);
                let all = t.assignments.ids();
                self.core.release(open, true);
                self.core.remember_closed(all, round);
            }
            _ => {}
        }
    }

    /// Answers a request that arrived after the run ended, from the store.
    async fn answer_after_end(&self, req: RunRequest) {
        let env = &self.core.env;
        history::answer_ended(env.store.as_ref(), &env.events, &self.core.id, req, |t| self.core.not_open(t)).await;
    }
}
