//! The engine: the task that owns the client fleet, the scheduler's inputs and the table of active runs.
//! gRPC handlers talk to it through an [`EngineHandle`] (a request and a oneshot reply). Requests about one
//! run or one task are forwarded, reply and all, to that run's actor ([`super::run`]); the engine itself
//! never waits on a run, a fold or a checkpoint write, so heartbeats and other runs' requests are answered
//! while any run works.

use super::activation::activate_and_run;
use super::fleet::Fleet;
use super::history::{self, RunView};
use super::run::{DemandSpec, FleetMsg, Reply, RunEnv, RunMsg, RunRequest, WatchReply};
use super::scheduler::{self, Decision, Demand};
use super::task::{EvaluationReport, GlobalModel, TaskAssignment, UploadTicket, VerifiedUpdate};
use super::{PhaseName, RoundError, RunEvent, RunEventKind};
use crate::audit;
use crate::checkpoint::Checkpoints;
use crate::governance::Admission;
use crate::ids::{ClientId, RunId, TaskId};
use crate::plan::RunPlan;
use crate::privacy::admission::Reservations;
use crate::store::{ApprovalCount, ClientRecord, RunRecord, RunState, Store};
use chrono::Utc;
use fedra_types::audit::AuditAction;
use fedra_types::identity::Identity;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};

mod cohort;
mod policy;
mod recovery;
mod settings;
pub(super) use policy::check_model_size;
use policy::submitted;
pub use settings::{DEFAULT_MAX_MODEL_PARAMETERS, EngineSettings, PrivacySettings};

enum Request {
    Submit {
        plan: Box<RunPlan>,
        owner: Option<Identity>,
        reply: Reply<RunId>,
    },
    Approve {
        run: RunId,
        approver: String,
        reply: Reply<ApprovalCount>,
    },
    PolicyChanged {
        reply: Reply<Vec<RunId>>,
    },
    Reject {
        run: RunId,
        approver: String,
        reason: String,
        reply: Reply<RunState>,
    },
    ForRun {
        run: RunId,
        req: RunRequest,
    },
    ForTask {
        task: TaskId,
        req: RunRequest,
    },
    Register {
        client: ClientRecord,
        session: String,
        reply: Reply<()>,
    },
    Subscribe {
        client: ClientId,
        reply: Reply<mpsc::Receiver<TaskAssignment>>,
    },
    Heartbeat {
        client: ClientId,
        reply: Reply<Vec<TaskId>>,
    },
    Cohort(cohort::CohortRequest),
    Events {
        reply: oneshot::Sender<broadcast::Receiver<RunEvent>>,
    },
    /// Stop handing out work: no queued run starts and no client is leased any more.
    Drain {
        done: oneshot::Sender<()>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// Cheap, cloneable handle the gRPC layer uses to talk to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Request>,
}

macro_rules! ask {
    ($self:ident, $make:expr) => {{
        let (reply, rx) = oneshot::channel();
        $self.tx.send($make(reply)).await.map_err(|_| RoundError::ShuttingDown)?;
        rx.await.map_err(|_| RoundError::ShuttingDown)?
    }};
}

impl EngineHandle {
    /// Queues a validated plan; checks the initial checkpoint fits the model and a private
    /// run's budgets.
    ///
    /// # Errors
    /// [`RoundError::CheckpointNotFound`], [`RoundError::InitialCheckpoint`], privacy
    /// refusals, store failures.
    /// `owner` is the certified submitter (`None` on an `--insecure` coordinator).
    pub async fn submit(&self, plan: RunPlan, owner: Option<Identity>) -> Result<RunId, RoundError> {
        ask!(self, |reply| Request::Submit { plan: Box::new(plan), owner, reply })
    }
    /// Records `approver`'s approval of a `pending_approval` run (audited); the approval
    /// that completes the policy's count queues the run.
    ///
    /// # Errors
    /// Unknown run, a run not pending approval, a repeated approval, store failures.
    pub async fn approve(&self, run: RunId, approver: String) -> Result<ApprovalCount, RoundError> {
        ask!(self, |reply| Request::Approve { run, approver, reply })
    }
    /// Rejects a `pending_approval` run: it ends cancelled with the reason (audited).
    ///
    /// # Errors
    /// Unknown run, a run not pending approval, store failures.
    pub async fn reject(&self, run: RunId, approver: String, reason: String) -> Result<RunState, RoundError> {
        ask!(self, |reply| Request::Reject { run, approver, reason, reply })
    }
    /// A new policy set is in force: runs blocked by the old one that it allows are queued
    /// again (audited as `run_resumed`). Returns them.
    ///
    /// # Errors
    /// Store failures.
    pub async fn policy_changed(&self) -> Result<Vec<RunId>, RoundError> {
        ask!(self, |reply| Request::PolicyChanged { reply })
    }
    /// # Errors
    /// Unknown run, or a run that already ended.
    pub async fn cancel(&self, run: RunId) -> Result<RunState, RoundError> {
        ask!(self, |reply| Request::ForRun { run, req: RunRequest::Cancel { reply } })
    }
    /// # Errors
    /// Unknown run or store failure.
    pub async fn get(&self, run: RunId) -> Result<RunView, RoundError> {
        ask!(self, |reply| Request::ForRun { run, req: RunRequest::Get { reply } })
    }
    /// Past events of the run, then (unless it ended) a live receiver for the rest.
    ///
    /// # Errors
    /// Unknown run or store failure.
    pub async fn watch(&self, run: RunId) -> Result<WatchReply, RoundError> {
        ask!(self, |reply| Request::ForRun { run, req: RunRequest::Watch { reply } })
    }
    /// # Errors
    /// Store failure.
    pub async fn register(&self, client: ClientRecord, session: String) -> Result<(), RoundError> {
        ask!(self, |reply| Request::Register { client, session, reply })
    }
    /// # Errors
    /// [`RoundError::UnknownClient`] if the client did not register.
    pub async fn subscribe(&self, client: ClientId) -> Result<mpsc::Receiver<TaskAssignment>, RoundError> {
        ask!(self, |reply| Request::Subscribe { client, reply })
    }
    /// Returns the client's task ids that it should abandon.
    ///
    /// # Errors
    /// [`RoundError::UnknownClient`].
    pub async fn heartbeat(&self, client: ClientId) -> Result<Vec<TaskId>, RoundError> {
        ask!(self, |reply| Request::Heartbeat { client, reply })
    }
    /// # Errors
    /// Unknown or closed task, or a task of another client.
    pub async fn fetch_model(&self, task: TaskId, client: ClientId) -> Result<Arc<GlobalModel>, RoundError> {
        ask!(self, |reply| Request::ForTask { task: task.clone(), req: RunRequest::FetchModel { task, client, reply } })
    }
    /// # Errors
    /// As [`Self::fetch_model`], plus wrong length, or a client that already reported, was
    /// dropped or was refused for good.
    pub async fn begin_upload(
        &self,
        task: TaskId,
        client: ClientId,
        total_values: u64,
    ) -> Result<UploadTicket, RoundError> {
        ask!(self, |reply| Request::ForTask {
            task: task.clone(),
            req: RunRequest::BeginUpload { task, client, total_values, reply }
        })
    }
    /// Folds a verified update into the round; returns how many have been counted.
    ///
    /// # Errors
    /// As [`Self::begin_upload`], plus sample-count and clipping checks.
    pub async fn commit_upload(
        &self,
        task: TaskId,
        client: ClientId,
        update: VerifiedUpdate,
    ) -> Result<u32, RoundError> {
        ask!(self, |reply| Request::ForTask {
            task: task.clone(),
            req: RunRequest::CommitUpload { task, client, update, reply }
        })
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
        ask!(self, |reply| Request::ForTask {
            task: task.clone(),
            req: RunRequest::ReportEvaluation { task, client, report, reply }
        })
    }

    /// Every run's live events from now on (the model registry learns of finished runs
    /// this way). A receiver that lags loses events and must reconcile from the store.
    ///
    /// # Errors
    /// [`RoundError::ShuttingDown`].
    pub async fn all_events(&self) -> Result<broadcast::Receiver<RunEvent>, RoundError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Events { reply }).await.map_err(|_| RoundError::ShuttingDown)?;
        rx.await.map_err(|_| RoundError::ShuttingDown)
    }

    /// Stops handing out work (a graceful stop's first step): queued runs stay queued and
    /// no client gets a new task; tasks already out may still report.
    pub async fn drain(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Drain { done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops every run where it is (reported updates are written first), waits for them and
    /// records their open round attempts as interrupted; such a round is re-run after restart.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A run in the queue, waiting for a slot.
#[derive(Debug, Clone)]
struct Queued {
    id: RunId,
    priority: i32,
    seq: u64,
}

/// An active run as the engine sees it: its actor's inbox and what it asks of the fleet.
struct ActiveRun {
    tx: mpsc::UnboundedSender<RunMsg>,
    priority: i32,
    seq: u64,
    live: Option<(u32, PhaseName)>,
    demand: Option<DemandSpec>,
    last_served: u64,
}

/// Routes of tasks whose run is gone are forgotten past this many.
const ROUTES_MAX: usize = 200_000;

/// The engine task's state. Built and spawned by [`Engine::start`].
pub struct Engine {
    env: RunEnv,
    fleet: Fleet,
    queue: Vec<Queued>,
    runs: HashMap<RunId, ActiveRun>,
    /// Which run (and round) each task handed out belongs to.
    routes: HashMap<TaskId, (RunId, u32)>,
    actors: JoinSet<RunId>,
    /// Which run each actor task drives (to name a run whose actor panicked).
    actor_ids: HashMap<tokio::task::Id, RunId>,
    /// Logical clock of offers (the scheduler's fairness input).
    clock: u64,
    /// The fleet or the demands changed: run the scheduler once the mailboxes are drained.
    /// A scheduler pass is O(clients online); running it once per batch of queued
    /// messages instead of once per message keeps a registration storm of N clients from
    /// costing O(N²) while a run waits for clients.
    reschedule: bool,
    /// A graceful stop began: no run starts and no client is leased ([`EngineHandle::drain`]).
    draining: bool,
    next_seq: u64,
}

impl Engine {
    /// Recovers persisted state (interrupting rounds that were in progress, re-queueing
    /// unfinished runs) and spawns the engine task.
    ///
    /// # Errors
    /// Store failures during recovery.
    pub async fn start(
        store: Arc<dyn Store>,
        checkpoints: Checkpoints,
        settings: EngineSettings,
    ) -> Result<(EngineHandle, tokio::task::JoinHandle<()>), RoundError> {
        let interrupted = recovery::recover(store.as_ref(), &checkpoints).await?;
        let runs = store.list_runs().await?;
        let mut queue = Vec::new();
        // Runs that were running go first, then queued ones, each in submission order.
        for state in [RunState::Running, RunState::Queued] {
            for r in runs.iter().filter(|r| r.state == state) {
                queue.push(Queued { id: r.id.clone(), priority: r.plan.priority, seq: queue.len() as u64 });
            }
        }
        if interrupted > 0 || !queue.is_empty() {
            info!(interrupted, resumed = queue.len(), "recovered runs from the store");
        }
        let fleet = Fleet::new(store.list_clients().await?, settings.client_timeout, settings.tier.is_global());
        let (tx, rx) = mpsc::channel(1024);
        let (fleet_tx, fleet_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(4096);
        let reservations = Reservations::new(
            settings.privacy.budgets.clone(),
            settings.privacy.lattice_slack,
            settings.governance.clone(),
        );
        let next_seq = queue.len() as u64;
        let engine = Engine {
            env: RunEnv { store, checkpoints, settings, reservations, events, fleet: fleet_tx },
            fleet,
            queue,
            runs: HashMap::new(),
            routes: HashMap::new(),
            actors: JoinSet::new(),
            actor_ids: HashMap::new(),
            clock: 0,
            reschedule: false,
            draining: false,
            next_seq,
        };
        let join = tokio::spawn(engine.run(rx, fleet_rx));
        Ok((EngineHandle { tx }, join))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Request>, mut fleet_rx: mpsc::UnboundedReceiver<FleetMsg>) {
        let mut tick = tokio::time::interval(self.env.settings.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let done = loop {
            tokio::select! {
                req = rx.recv() => match req {
                    None => break None,
                    Some(Request::Shutdown { done }) => break Some(done),
                    Some(req) => self.handle(req).await,
                },
                Some(msg) = fleet_rx.recv() => self.on_fleet_msg(msg),
                Some(exit) = self.actors.join_next(), if !self.actors.is_empty() => self.on_actor_exit(exit).await,
                _ = tick.tick() => self.on_tick(),
            }
            if self.reschedule && rx.is_empty() && fleet_rx.is_empty() {
                self.reschedule = false;
                self.schedule();
            }
        };
        for run in self.runs.values() {
            let _ = run.tx.send(RunMsg::Shutdown);
        }
        while self.actors.join_next().await.is_some() {}
        // On record now rather than at the next start; a deposed engine's write is refused
        // by the store's fence, and the next leader's recovery does it then.
        match self.env.store.interrupt_open_rounds().await {
            Ok(0) => {}
            Ok(n) => info!(rounds = n, "open round attempts recorded as interrupted; they are re-run after restart"),
            Err(e) => tracing::warn!(error = %e, "cannot record the open round attempts as interrupted"),
        }
        info!("round engine stopped");
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    async fn handle(&mut self, req: Request) {
        match req {
            Request::Submit { plan, owner, reply } => {
                let r = self.submit(*plan, owner).await;
                let _ = reply.send(r);
                self.start_queued();
            }
            Request::Approve { run, approver, reply } => {
                let r = self.approve(&run, &approver).await;
                let _ = reply.send(r);
                self.start_queued();
            }
            Request::Reject { run, approver, reason, reply } => {
                let _ = reply.send(self.reject(&run, &approver, &reason).await);
            }
            Request::PolicyChanged { reply } => {
                let r = self.resume_unblocked().await;
                let _ = reply.send(r);
                self.start_queued();
            }
            Request::ForRun { run, req } => match self.runs.get(&run) {
                Some(active) => {
                    if let Err(mpsc::error::SendError(RunMsg::Request(req))) = active.tx.send(RunMsg::Request(req)) {
                        self.answer_inactive(&run, req).await;
                    }
                }
                None => self.answer_inactive(&run, req).await,
            },
            Request::ForTask { task, req } => {
                let route = self.routes.get(&task).cloned();
                let req = match route.as_ref().and_then(|(run, _)| self.runs.get(run)) {
                    Some(active) => match active.tx.send(RunMsg::Request(req)) {
                        Ok(()) => return,
                        Err(mpsc::error::SendError(RunMsg::Request(req))) => req,
                        Err(_) => return,
                    },
                    None => req,
                };
                let err = match route {
                    Some((_, round)) => RoundError::RoundClosed { task, round },
                    None => RoundError::UnknownTask(task),
                };
                reply_err(req, err);
            }
            Request::Register { client, session, reply } => {
                if let Err(e) = cohort::check_registration(&self.env.settings.tier, &client) {
                    let _ = reply.send(Err(e));
                    return;
                }
                // The store write runs beside the engine, so that registrations commit
                // concurrently (PostgreSQL groups their commits) instead of one at a time in
                // this loop; the fleet learns of the client once it is on record.
                let (store, fleet) = (Arc::clone(&self.env.store), self.env.fleet.clone());
                tokio::spawn(async move {
                    let result = store.upsert_client(&client).await.map_err(RoundError::from);
                    let _ = fleet.send(FleetMsg::Registered { client, session, result, reply });
                });
            }
            Request::Subscribe { client, reply } => {
                let _ = reply.send(self.fleet.subscribe(&client).map_err(RoundError::UnknownClient));
                self.reschedule = true;
            }
            Request::Heartbeat { client, reply } => {
                let _ = reply.send(self.fleet.heartbeat(&client).map_err(RoundError::UnknownClient));
            }
            Request::Cohort(req) => self.on_cohort(req).await,
            Request::Events { reply } => {
                let _ = reply.send(self.env.events.subscribe());
            }
            Request::Drain { done } => {
                self.draining = true;
                info!("draining: no new work is handed out");
                let _ = done.send(());
            }
            Request::Shutdown { .. } => {}
        }
    }

    fn on_fleet_msg(&mut self, msg: FleetMsg) {
        match msg {
            FleetMsg::Demand { run, demand } => {
                if let Some(active) = self.runs.get_mut(&run) {
                    active.demand = demand;
                    self.reschedule = true;
                }
            }
            FleetMsg::Release { tasks, abandon } => {
                self.fleet.release(&tasks, abandon);
                self.reschedule = true;
            }
            FleetMsg::Registered { client, session, result, reply } => {
                if result.is_ok() {
                    info!(client = %client.id, region = %client.region, samples = client.samples(), "client registered");
                    self.fleet.register(client, &session);
                }
                let _ = reply.send(result);
            }
            FleetMsg::Phase { run, live } => {
                if let Some(active) = self.runs.get_mut(&run) {
                    active.live = live;
                }
            }
        }
    }

    fn on_tick(&mut self) {
        let (connected, leased) = self.fleet.counts();
        metrics::gauge!("fedra_clients_connected").set(connected as f64);
        metrics::gauge!("fedra_tasks_leased").set(leased as f64);
        metrics::gauge!("fedra_runs_active").set(self.runs.len() as f64);
        metrics::gauge!("fedra_runs_queued").set(self.queue.len() as f64);
        for (run, tasks) in self.fleet.newly_gone() {
            if let Some(active) = self.runs.get(&run) {
                let _ = active.tx.send(RunMsg::Gone(tasks));
            }
        }
        self.schedule();
        self.start_queued();
    }

    /// One pass of the scheduler over the runs that wait for clients.
    fn schedule(&mut self) {
        if self.draining {
            return;
        }
        let now = Instant::now();
        let demands: Vec<Demand> = self
            .runs
            .iter()
            .filter_map(|(id, run)| {
                let d = run.demand.as_ref()?;
                let need = match d.relaxed {
                    Some((at, relaxed)) if now >= at => relaxed.min(d.need),
                    _ => d.need,
                };
                Some(Demand {
                    run: id.clone(),
                    priority: run.priority,
                    seq: run.seq,
                    last_served: run.last_served,
                    eligible: self.fleet.eligible(&d.eligibility),
                    need,
                    max: d.max,
                    expired: now >= d.deadline,
                    patient: d.patient,
                })
            })
            .collect();
        if demands.is_empty() {
            return;
        }
        let decisions = scheduler::schedule(&self.fleet.slots(), self.env.settings.max_concurrent_tasks, &demands);
        for decision in decisions {
            match decision {
                Decision::Offer { run, clients } => {
                    self.clock += 1;
                    if self.routes.len() + clients.len() > ROUTES_MAX {
                        let runs = &self.runs;
                        self.routes.retain(|_, (r, _)| runs.contains_key(r));
                    }
                    let Some(active) = self.runs.get_mut(&run) else { continue };
                    let round = active.demand.take().map_or(0, |d| d.round);
                    active.last_served = self.clock;
                    let leases: Vec<_> = clients.iter().filter_map(|c| self.fleet.lease(&run, c)).collect();
                    for l in &leases {
                        self.routes.insert(l.task.clone(), (run.clone(), round));
                    }
                    if let Err(mpsc::error::SendError(RunMsg::Offer(leases))) = active.tx.send(RunMsg::Offer(leases)) {
                        let tasks: Vec<TaskId> = leases.into_iter().map(|l| l.task).collect();
                        self.fleet.release(&tasks, false);
                    }
                }
                Decision::GiveUp { run, online } => {
                    if let Some(active) = self.runs.get_mut(&run) {
                        active.demand = None;
                        let _ = active.tx.send(RunMsg::GiveUp { online });
                    }
                }
            }
        }
    }

    /// Starts queued runs while slots are free: highest priority first, then oldest.
    fn start_queued(&mut self) {
        if self.draining {
            return;
        }
        while self.runs.len() < self.env.settings.max_active_runs.max(1) && !self.queue.is_empty() {
            let best = (0..self.queue.len())
                .min_by_key(|&i| (std::cmp::Reverse(self.queue[i].priority), self.queue[i].seq))
                .expect("queue is not empty");
            let q = self.queue.remove(best);
            let (tx, rx) = mpsc::unbounded_channel();
            self.runs.insert(
                q.id.clone(),
                ActiveRun { tx, priority: q.priority, seq: q.seq, live: None, demand: None, last_served: 0 },
            );
            let env = self.env.clone();
            let id = q.id.clone();
            let handle = self.actors.spawn(async move {
                activate_and_run(env, id.clone(), rx).await;
                id
            });
            self.actor_ids.insert(handle.id(), q.id);
        }
    }

    async fn on_actor_exit(&mut self, exit: Result<RunId, tokio::task::JoinError>) {
        let id = match exit {
            Ok(id) => {
                self.actor_ids.retain(|_, r| *r != id);
                id
            }
            Err(e) => {
                // A panicking run fails alone.
                let Some(id) = self.actor_ids.remove(&e.id()) else {
                    error!(error = %e, "a run actor failed and cannot be identified");
                    return;
                };
                let reason = format!("run failed internally: {e}");
                error!(run = %id, error = %e, "run actor failed");
                if let Err(se) = self.env.store.set_run_state(&id, RunState::Failed, Some(&reason)).await {
                    error!(run = %id, error = %se, "cannot record run failure");
                }
                let _ = self.env.events.send(RunEvent {
                    run: id.clone(),
                    round: 0,
                    kind: RunEventKind::RunFinished { state: RunState::Failed, reason: Some(reason) },
                });
                id
            }
        };
        self.runs.remove(&id);
        self.fleet.release_run(&id);
        self.schedule();
        self.start_queued();
    }

    async fn submit(&mut self, plan: RunPlan, owner: Option<Identity>) -> Result<RunId, RoundError> {
        policy::check_settings(&plan, &self.env.settings)?;
        cohort::check_plan_for_tier(&self.env.settings.tier, &plan)?;
        if let Some(cp) = &plan.initial_checkpoint {
            let record =
                self.env.store.get_checkpoint(cp).await?.ok_or_else(|| RoundError::CheckpointNotFound(cp.clone()))?;
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
        let id = RunId::generate();
        let (admission, policy_sha256) = self.admit_by_policy(&id, &plan, owner.as_ref()).await?;
        // At the global tier the budgets are the regions' (their ledgers are charged).
        if plan.privacy.is_some() && !self.env.settings.tier.is_global() {
            self.env.reservations.admit_run(self.env.store.as_ref(), &plan, self.fleet.regions()).await?;
        }
        let (state, approvals_needed, verdict) = match admission {
            Admission::Queued { detail } => (RunState::Queued, 0, (AuditAction::RunAdmitted, detail)),
            Admission::PendingApproval { approvals, detail } => {
                (RunState::PendingApproval, approvals, (AuditAction::RunPendingApproval, detail))
            }
        };
        let record = RunRecord {
            id,
            plan,
            state,
            completed_rounds: 0,
            published_checkpoint: None,
            failure: None,
            created_at: Utc::now(),
            owner,
            policy_sha256,
            approvals_needed,
        };
        self.env.store.create_run(&record).await?;
        self.env
            .store
            .append_audit(&[
                audit::draft(audit::actor(record.owner.as_ref()), AuditAction::RunSubmitted, submitted(&record.plan))
                    .run(&record.id),
                audit::draft(audit::COORDINATOR, verdict.0, verdict.1).run(&record.id),
            ])
            .await?;
        if state == RunState::PendingApproval {
            info!(run = %record.id, approvals = approvals_needed, "run waits for approval");
            return Ok(record.id);
        }
        info!(run = %record.id, model = record.plan.model.name(), rounds = record.plan.rounds, priority = record.plan.priority, "run queued");
        self.queue.push(Queued { id: record.id.clone(), priority: record.plan.priority, seq: self.next_seq });
        self.next_seq += 1;
        Ok(record.id)
    }

    /// Answers a request about a run without an actor (queued or ended) from the store.
    async fn answer_inactive(&mut self, run: &RunId, req: RunRequest) {
        let Some(req) = history::answer_read(self.env.store.as_ref(), &self.env.events, run, req).await else {
            return;
        };
        match req {
            RunRequest::Cancel { reply } => {
                let _ = reply.send(self.cancel_queued(run).await);
            }
            other => reply_err(other, RoundError::RunNotFound(run.clone())),
        }
    }

    async fn cancel_queued(&mut self, run: &RunId) -> Result<RunState, RoundError> {
        let record = self.env.store.get_run(run).await?.ok_or_else(|| RoundError::RunNotFound(run.clone()))?;
        if record.state.is_terminal() {
            return Err(RoundError::RunEnded { run: run.clone(), state: record.state });
        }
        self.queue.retain(|q| q.id != *run);
        self.env.store.set_run_state(run, RunState::Cancelled, Some("run cancelled")).await?;
        let _ = self.env.events.send(RunEvent {
            run: run.clone(),
            round: 0,
            kind: RunEventKind::RunFinished { state: RunState::Cancelled, reason: Some("run cancelled".into()) },
        });
        info!(run = %run, "run cancelled");
        Ok(RunState::Cancelled)
    }
}

/// Answers a forwarded request with `err`.
fn reply_err(req: RunRequest, err: RoundError) {
    match req {
        RunRequest::Get { reply } => drop(reply.send(Err(err))),
        RunRequest::Watch { reply } => drop(reply.send(Err(err))),
        RunRequest::Cancel { reply } => drop(reply.send(Err(err))),
        RunRequest::FetchModel { reply, .. } => drop(reply.send(Err(err))),
        RunRequest::BeginUpload { reply, .. } => drop(reply.send(Err(err))),
        RunRequest::CommitUpload { reply, .. } => drop(reply.send(Err(err))),
        RunRequest::ReportEvaluation { reply, .. } => drop(reply.send(Err(err))),
    }
}
