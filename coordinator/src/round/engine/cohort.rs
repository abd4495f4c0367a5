//! The engine's part in a deployment of tiers (see [`crate::hierarchy`]): who may register
//! at which tier, a regional aggregator's inventory, and the local run that serves a cohort
//! task of the global coordinator.

use super::super::run::Reply;
use super::{Engine, EngineHandle, Queued, Request, check_model_size};
use crate::audit;
use crate::checkpoint::PublishRequest;
use crate::hierarchy::{CohortKind, CohortTask, Inventory, Tier, cohort_plan};
use crate::ids::{CheckpointId, RoundNumber, RunId};
use crate::round::RoundError;
use crate::store::{CheckpointRecord, ClientRecord, RunRecord, RunState, UpstreamState, UpstreamTask};
use chrono::Utc;
use fedra_types::audit::AuditAction;
use tokio::sync::oneshot;
use tracing::info;

/// Requests about tiers, forwarded by the engine loop to [`Engine::on_cohort`].
pub(super) enum CohortRequest {
    Inventory { reply: Reply<Inventory> },
    Submit { task: Box<CohortTask>, params: Vec<f32>, reply: Reply<RunId> },
}

impl EngineHandle {
    /// The participants online now and the clients and samples behind them: what a
    /// regional aggregator registers upstream.
    ///
    /// # Errors
    /// [`RoundError::ShuttingDown`].
    pub async fn inventory(&self) -> Result<Inventory, RoundError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Cohort(CohortRequest::Inventory { reply }))
            .await
            .map_err(|_| RoundError::ShuttingDown)?;
        rx.await.map_err(|_| RoundError::ShuttingDown)?
    }

    /// Queues the local one-round run that serves a cohort task of the global coordinator,
    /// starting from `params` (the global model it was sent), stored with the task in one
    /// transaction. A task already stored returns its run: a redelivered task is served once.
    ///
    /// # Errors
    /// Not a regional aggregator, a model that does not fit the task, store failures.
    pub async fn submit_cohort(&self, task: CohortTask, params: Vec<f32>) -> Result<RunId, RoundError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Cohort(CohortRequest::Submit { task: Box::new(task), params, reply }))
            .await
            .map_err(|_| RoundError::ShuttingDown)?;
        rx.await.map_err(|_| RoundError::ShuttingDown)?
    }
}

/// Whether `client` may register at a coordinator of `tier`: a regional aggregator takes
/// only its own region's clients; a global coordinator only participants that stand for
/// clients (`members` ≥ 1, regional aggregators: checked by certificate at the edge).
///
/// # Errors
/// [`RoundError::WrongTier`] naming the mismatch.
pub(super) fn check_registration(tier: &Tier, client: &ClientRecord) -> Result<(), RoundError> {
    match tier {
        Tier::Regional { location } if client.region != *location => Err(RoundError::WrongTier(format!(
            "client {} is in region {}, this is the regional aggregator of {location}: connect to your own region's aggregator",
            client.id, client.region
        ))),
        _ => Ok(()),
    }
}

/// What a tier cannot run, refused at submit: at the global tier, adaptive clipping (each
/// region noises its own sum, see [`crate::hierarchy::private_cohorts`]; the clipping
/// count query would have to cross tiers) and robust aggregation rules; at a regional aggregator, runs submitted
/// directly (its runs come from the global coordinator's cohort tasks).
///
/// # Errors
/// [`RoundError::WrongTier`] naming what is refused.
pub(super) fn check_plan_for_tier(tier: &Tier, plan: &crate::plan::RunPlan) -> Result<(), RoundError> {
    let refuse = |what: &str| Err(RoundError::WrongTier(format!("{what}; this is a {} coordinator", tier.name())));
    match tier {
        Tier::Standalone => Ok(()),
        Tier::Global
            if plan.privacy.as_ref().is_some_and(|p| matches!(p.clipping, crate::plan::Clipping::Adaptive { .. })) =>
        {
            refuse(
                "adaptive clipping across regional aggregators is not supported: use fixed clipping (each region noises its own sum)",
            )
        }
        // The global tier folds a handful of regional means, not client updates: a robust
        // rule there would vote between regions, and the cohort task does not carry the
        // rule down to where the client updates arrive.
        Tier::Global if plan.aggregator.is_robust() => refuse(&format!(
            "aggregator {} across regional aggregators is not supported: robust rules run where client updates \
             arrive; submit to a standalone coordinator or use aggregator = \"mean\"",
            plan.aggregator.name()
        )),
        Tier::Global => Ok(()),
        Tier::Regional { .. } => {
            refuse("runs are submitted to the global coordinator, which sends this region its cohorts")
        }
    }
}

impl Engine {
    pub(super) async fn on_cohort(&mut self, req: CohortRequest) {
        match req {
            CohortRequest::Inventory { reply } => {
                let _ = reply.send(Ok(self.fleet.inventory()));
            }
            CohortRequest::Submit { task, params, reply } => {
                let r = self.submit_cohort(*task, params).await;
                let _ = reply.send(r);
                self.start_queued();
            }
        }
    }

    async fn submit_cohort(&mut self, task: CohortTask, params: Vec<f32>) -> Result<RunId, RoundError> {
        let Tier::Regional { location } = self.env.settings.tier.clone() else {
            return Err(RoundError::WrongTier("only a regional aggregator serves cohort tasks".into()));
        };
        let store = self.env.store.as_ref();
        if let Some(known) = store.list_upstream_tasks().await?.into_iter().find(|t| t.task == task.task) {
            return Ok(known.run);
        }
        let refuse = |reason: String| RoundError::Cohort { task: task.task.clone(), reason };
        let id = RunId::generate();
        // A training run starts from the global model as its round 0; an evaluation run
        // has it as its (already done) round 1, which it then evaluates.
        let round = match task.kind {
            CohortKind::Train => 0,
            CohortKind::Evaluate => 1,
        };
        let initial = CheckpointId::for_round(&id, RoundNumber(round));
        let plan = cohort_plan(&task, &location, initial.clone()).map_err(|e| refuse(e.to_string()))?;
        check_model_size(&plan, self.env.settings.max_model_parameters)?;
        let expected = plan.model.layout().total();
        if params.len() != expected {
            return Err(refuse(format!("the global model has {} values, the task's model {expected}", params.len())));
        }
        let policy_sha256 = self.env.settings.governance.snapshot().map(|p| p.sha256().to_string());
        let request = PublishRequest {
            id: initial.clone(),
            run: id.clone(),
            round,
            attempt: 1,
            parent: None,
            model: plan.model.clone(),
            contributors: Vec::new(),
            metrics: Default::default(),
            regions: vec![location.clone()],
            privacy: None,
            policy_sha256: policy_sha256.clone(),
            server_state: None,
            references: Default::default(),
            aggregation: None,
        };
        // The global model is written before it is recorded, as a round's checkpoint is.
        let published = self.env.checkpoints.publish(request, fedra_proto::chunking::SharedParams::new(params)).await?;
        let m = &published.manifest;
        let checkpoint = CheckpointRecord {
            id: initial,
            run: id.clone(),
            round,
            model_name: m.model.name().to_string(),
            sha256: m.weights_sha256.clone(),
            parent: None,
            manifest_json: published.manifest_json.clone(),
            signature_json: published.signature_json.clone(),
            created_at: m.created_at,
            locations: published.locations.clone(),
        };
        let record = RunRecord {
            id: id.clone(),
            plan,
            state: RunState::Queued,
            completed_rounds: round,
            published_checkpoint: None,
            failure: None,
            created_at: Utc::now(),
            owner: None,
            policy_sha256,
            approvals_needed: 0,
        };
        let upstream = UpstreamTask {
            task: task.task.clone(),
            run: id.clone(),
            upstream_run: task.upstream_run.clone(),
            upstream_round: task.upstream_round,
            state: UpstreamState::Training,
            detail: None,
            created_at: Utc::now(),
        };
        store.create_cohort_run(&record, &checkpoint, &upstream).await?;
        let what = match task.kind {
            CohortKind::Train => "train",
            CohortKind::Evaluate => "evaluate the global checkpoint on",
        };
        let detail = format!(
            "cohort task {} of global run {} round {}: {what} {} of {location}'s clients (quorum {})",
            task.task, task.upstream_run, task.upstream_round, task.cohort.target, task.cohort.min
        );
        audit::record(store, audit::draft("global coordinator", AuditAction::RunSubmitted, detail).run(&id)).await?;
        info!(run = %id, task = %task.task, upstream_run = %task.upstream_run, round = task.upstream_round, "cohort run queued");
        self.queue.push(Queued { id: id.clone(), priority: record.plan.priority, seq: self.next_seq });
        self.next_seq += 1;
        Ok(id)
    }
}
