//! The engine: the task that owns the client fleet, the scheduler's inputs and the table of active runs.
//! gRPC handlers talk to it through an [`EngineHandle`] (a request and a oneshot reply). Requests about one
//! run or one task are forwarded, reply and all, to that run's actor ([`super::run`]); the engine itself
//! never waits on a run, a fold or a checkpoint write, so heartbeats and other runs' requests are answered
//! while any run works.

use super::activation::activate_and_run;
use super::fleet::Fleet;
use super::history;
use super::run::{DemandSpec, FleetMsg, RunEnv, RunMsg, RunRequest};
use super::scheduler::{self, Decision, Demand};
use super::{PhaseName, RoundError, RunEvent, RunEventKind};
use crate::audit;
use crate::checkpoint::Checkpoints;
use crate::governance::Admission;
use crate::ids::{RunId, TaskId};
use crate::plan::RunPlan;
use crate::privacy::admission::Reservations;
use crate::store::{ApprovalCount, RunRecord, RunState, Store};
use chrono::Utc;
use fedra_types::audit::AuditAction;
use fedra_types::identity::Identity;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};

mod cohort;
mod handle;
mod policy;
mod recovery;
mod settings;
pub use handle::EngineHandle;
use handle::Request;
pub(super) use policy::check_model_size;
use policy::submitted;
pub use settings::{DEFAULT_MAX_MODEL_PARAMETERS, EngineSettings, PrivacySettings};

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
        // Here, once per batch of messages like the pass itself (both O(clients online)).
        let (connected, leased) = self.fleet.counts();
        metrics::gauge!("fedra_clients_connected").set(connected as f64);
        metrics::gauge!("fedra_tasks_leased").set(leased as f64);
        metrics::gauge!("fedra_runs_active").set(self.runs.len() as f64);
        metrics::gauge!("fedra_runs_queued").set(self.queue.len() as f64);
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
            // Every event of the run's actor carries its id (and, inside, the round's span).
            let span = tracing::info_span!("run", run = %id);
            let handle = self.actors.spawn(tracing::Instrument::instrument(
                async move {
                    activate_and_run(env, id.clone(), rx).await;
                    id
                },
                span,
            ));
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
