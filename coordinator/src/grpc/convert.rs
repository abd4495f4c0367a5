//! Every conversion between protobuf messages and domain types. Invalid wire fields are
//! rejected here, naming the field; no `pb::` type is seen past this file.

use super::{ApiError, limits};
use crate::checkpoint::Manifest;
use crate::ids::{CheckpointId, ClientId, RegionId, RunId, TaskId};
use crate::model::{ModelSpec, TensorLayout};
use crate::plan::{
    Clipping, DpMechanism, EvaluationPlan, LocalTraining, Optimizer, OverBound, PrivacyPlan, RawPlan, RegionSet,
    RunPlan, Sampling, Strategy,
};
use crate::privacy::ScopeStatus;
use crate::round::{
    EvaluationReport, PhaseName, RunEvent, RunEventKind, RunView, TaskAssignment, TaskKind, TrainingMetrics,
};
use crate::store::{CheckpointRecord, ClientRecord, DatasetDescriptor, EvaluationRecord, RoundStatus, RunState};
use fedra_proto::pb;
use fedra_proto::{model_wire, plan_wire};

fn invalid(field: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Invalid(format!("{field}: {e}"))
}

pub fn run_id(field: &str, v: &str) -> Result<RunId, ApiError> {
    RunId::new(v).map_err(|e| invalid(field, e))
}
pub fn client_id(field: &str, v: &str) -> Result<ClientId, ApiError> {
    ClientId::new(v).map_err(|e| invalid(field, e))
}
pub fn region_id(field: &str, v: &str) -> Result<RegionId, ApiError> {
    RegionId::new(v).map_err(|e| invalid(field, e))
}
pub fn task_id(field: &str, v: &str) -> Result<TaskId, ApiError> {
    TaskId::new(v).map_err(|e| invalid(field, e))
}
pub fn checkpoint_id(field: &str, v: &str) -> Result<CheckpointId, ApiError> {
    CheckpointId::new(v).map_err(|e| invalid(field, e))
}

/// Empty string → `None`, otherwise a validated id.
pub fn optional<T>(v: &str, parse: impl FnOnce(&str) -> Result<T, ApiError>) -> Result<Option<T>, ApiError> {
    if v.is_empty() { Ok(None) } else { parse(v).map(Some) }
}

pub fn model_from_pb(m: Option<pb::ModelSpec>) -> Result<ModelSpec, ApiError> {
    let m = m.ok_or_else(|| ApiError::Invalid("plan.model is missing".into()))?;
    let arch = m.architecture.as_ref().ok_or_else(|| ApiError::Invalid("plan.model.architecture is missing".into()))?;
    ModelSpec::new(m.name, model_wire::architecture_from_pb(arch)).map_err(|e| ApiError::Invalid(format!("plan.{e}")))
}

pub fn model_to_pb(m: &ModelSpec) -> pb::ModelSpec {
    pb::ModelSpec { name: m.name().to_string(), architecture: Some(model_wire::architecture_to_pb(m.architecture())) }
}

pub fn layout_to_pb(l: &TensorLayout) -> pb::TensorLayout {
    model_wire::layout_to_pb(l)
}

pub fn local_to_pb(l: &LocalTraining) -> pb::LocalTraining {
    plan_wire::local_to_pb(l)
}

fn local_from_pb(field: &str, local: pb::LocalTraining) -> Result<LocalTraining, ApiError> {
    Ok(LocalTraining {
        epochs: local.epochs,
        batch_size: local.batch_size,
        learning_rate: local.learning_rate,
        proximal_mu: local.proximal_mu,
        optimizer: match pb::Optimizer::try_from(local.optimizer) {
            Ok(pb::Optimizer::Unspecified | pb::Optimizer::Sgd) => Optimizer::Sgd,
            Ok(pb::Optimizer::Adam) => Optimizer::Adam,
            Err(_) => return Err(ApiError::Invalid(format!("{field}.optimizer: unknown value {}", local.optimizer))),
        },
        momentum: local.momentum,
    })
}

/// A global coordinator's task as a regional aggregator reads it.
///
/// # Errors
/// A missing or malformed field, an unknown kind, or a task without a cohort, by name.
pub fn cohort_task_from_pb(t: pb::Task) -> Result<crate::hierarchy::CohortTask, ApiError> {
    let kind = match pb::TaskKind::try_from(t.kind) {
        Ok(pb::TaskKind::Train) => crate::hierarchy::CohortKind::Train,
        Ok(pb::TaskKind::Evaluate) => crate::hierarchy::CohortKind::Evaluate,
        _ => return Err(ApiError::Invalid(format!("task.kind: unknown value {}", t.kind))),
    };
    let cohort = t
        .cohort
        .ok_or_else(|| ApiError::Invalid("task.cohort is missing: a regional aggregator serves cohorts".into()))?;
    let deadline =
        limits::within("task.deadline_seconds", t.deadline_seconds, 0.0, crate::plan::MAX_DEADLINE.as_secs_f64())?;
    Ok(crate::hierarchy::CohortTask {
        kind,
        task: task_id("task.task_id", &t.task_id)?,
        upstream_run: run_id("task.run_id", &t.run_id)?,
        upstream_round: t.round,
        model: model_from_pb(t.model)?,
        local: local_from_pb("task.local", t.local.ok_or_else(|| ApiError::Invalid("task.local is missing".into()))?)?,
        deadline: std::time::Duration::from_secs_f64(deadline),
        seed: t.seed,
        compression: plan_wire::compression_from_pb(t.compression.as_ref())
            .map_err(|e| ApiError::Invalid(format!("task.{e}")))?,
        cohort: crate::hierarchy::Cohort {
            target: cohort.target,
            min: cohort.min,
            over_selection: limits::within("task.cohort.over_selection", cohort.over_selection, 0.0, 10.0)?,
            privacy: cohort
                .privacy
                .map(privacy_from_pb)
                .transpose()
                .map_err(|e| ApiError::Invalid(format!("task.cohort.{e}")))?,
        },
        chunk_bytes: (t.chunk_bytes as usize)
            .clamp(fedra_proto::chunking::MIN_CHUNK_BYTES, fedra_proto::chunking::MAX_CHUNK_BYTES),
    })
}

/// A regional aggregator's registration upstream: its region's inventory, never its clients.
pub fn aggregator_register_to_pb(
    name: &ClientId,
    location: &RegionId,
    inventory: crate::hierarchy::Inventory,
) -> pb::RegisterRequest {
    pb::RegisterRequest {
        client_id: name.to_string(),
        region: location.to_string(),
        datasets: vec![pb::DatasetDescriptor {
            name: format!("{location}-inventory"),
            samples: inventory.samples,
            features: 0,
            classes: 0,
        }],
        capabilities: None,
        members: inventory.clients,
        session_id: String::new(),
    }
}

pub fn plan_from_pb(p: pb::RunPlan) -> Result<RunPlan, ApiError> {
    let model = model_from_pb(p.model)?;
    let local = p.local.ok_or_else(|| ApiError::Invalid("plan.local is missing".into()))?;
    let strategy = strategy_from_pb(p.strategy, p.server_optimizer)?;
    let regions = p.regions.iter().map(|r| region_id("plan.regions", r)).collect::<Result<Vec<_>, _>>()?;
    let raw = RawPlan {
        model,
        initial_checkpoint: optional(&p.initial_checkpoint, |v| checkpoint_id("plan.initial_checkpoint", v))?,
        strategy,
        aggregator: plan_wire::aggregator_from_pb(p.aggregator.as_ref())
            .map_err(|e| ApiError::Invalid(format!("plan.{e}")))?,
        rounds: p.rounds,
        clients_per_round: p.clients_per_round,
        min_clients: p.min_clients,
        over_selection: p.over_selection,
        round_deadline: p.round_deadline_seconds,
        local: local_from_pb("plan.local", local)?,
        regions: RegionSet::new(regions),
        seed: p.seed,
        evaluation: p
            .evaluation
            .map(|e| EvaluationPlan { every_rounds: e.every_rounds, clients: e.clients })
            .unwrap_or_default(),
        privacy: p.privacy.map(privacy_from_pb).transpose()?,
        priority: p.priority,
        promotion: p
            .promotion
            .as_ref()
            .map(plan_wire::promotion_from_pb)
            .transpose()
            .map_err(|e| ApiError::Invalid(format!("plan.{e}")))?
            .unwrap_or_default(),
        schedule: p.schedule.as_ref().map(plan_wire::schedule_from_pb).unwrap_or_default(),
        compression: plan_wire::compression_from_pb(p.compression.as_ref())
            .map_err(|e| ApiError::Invalid(format!("plan.{e}")))?,
    };
    RunPlan::new(raw).map_err(|e| ApiError::Invalid(format!("plan.{e}")))
}

pub fn plan_to_pb(p: &RunPlan) -> pb::RunPlan {
    pb::RunPlan {
        model: Some(model_to_pb(&p.model)),
        initial_checkpoint: p.initial_checkpoint.as_ref().map(ToString::to_string).unwrap_or_default(),
        strategy: plan_wire::strategy_to_pb(&p.strategy).0 as i32,
        server_optimizer: plan_wire::strategy_to_pb(&p.strategy).1,
        rounds: p.rounds,
        clients_per_round: p.clients_per_round,
        min_clients: p.min_clients,
        over_selection: p.over_selection,
        round_deadline_seconds: p.round_deadline.as_secs_f64(),
        local: Some(local_to_pb(&p.local)),
        regions: p.regions.iter().map(ToString::to_string).collect(),
        seed: p.seed,
        evaluation: Some(pb::Evaluation { every_rounds: p.evaluation.every_rounds, clients: p.evaluation.clients }),
        privacy: p.privacy.as_ref().map(plan_wire::privacy_to_pb),
        priority: p.priority,
        promotion: Some(plan_wire::promotion_to_pb(&p.promotion)),
        schedule: Some(plan_wire::schedule_to_pb(&p.schedule)),
        aggregator: plan_wire::aggregator_to_pb(&p.aggregator),
        compression: Some(plan_wire::compression_to_pb(&p.compression)),
    }
}

/// The plan's strategy; a server optimizer needs its hyperparameters (validated by
/// `RunPlan::new`).
fn strategy_from_pb(strategy: i32, params: Option<pb::ServerOptimizer>) -> Result<Option<Strategy>, ApiError> {
    use fedra_types::plan::ServerOptimizer as O;
    let kind = pb::Strategy::try_from(strategy)
        .map_err(|_| ApiError::Invalid(format!("plan.strategy: unknown value {strategy}")))?;
    let params = || {
        params.ok_or_else(|| {
            ApiError::Invalid(format!(
                "plan.server_optimizer is missing: strategy {} needs its hyperparameters",
                kind.as_str_name()
            ))
        })
    };
    Ok(match kind {
        pb::Strategy::Unspecified => None,
        pb::Strategy::FedAvg => Some(Strategy::FedAvg),
        pb::Strategy::FedAvgM => {
            let p = params()?;
            Some(Strategy::Server(O::FedAvgM { server_learning_rate: p.server_learning_rate, momentum: p.momentum }))
        }
        pb::Strategy::FedAdagrad => {
            let p = params()?;
            Some(Strategy::Server(O::FedAdagrad {
                server_learning_rate: p.server_learning_rate,
                beta1: p.beta1,
                tau: p.tau,
            }))
        }
        pb::Strategy::FedAdam => {
            let p = params()?;
            Some(Strategy::Server(O::FedAdam {
                server_learning_rate: p.server_learning_rate,
                beta1: p.beta1,
                beta2: p.beta2,
                tau: p.tau,
            }))
        }
        pb::Strategy::FedYogi => {
            let p = params()?;
            Some(Strategy::Server(O::FedYogi {
                server_learning_rate: p.server_learning_rate,
                beta1: p.beta1,
                beta2: p.beta2,
                tau: p.tau,
            }))
        }
    })
}

fn privacy_from_pb(p: pb::PrivacyPlan) -> Result<PrivacyPlan, ApiError> {
    use pb::privacy_plan::Clipping as C;
    let mechanism = match pb::DpMechanism::try_from(p.mechanism) {
        Ok(pb::DpMechanism::Central) => DpMechanism::Central,
        Ok(pb::DpMechanism::Local) => DpMechanism::Local,
        Ok(pb::DpMechanism::Unspecified) => {
            return Err(ApiError::Invalid("plan.privacy.mechanism is unspecified: choose central or local".into()));
        }
        Err(_) => return Err(ApiError::Invalid(format!("plan.privacy.mechanism: unknown value {}", p.mechanism))),
    };
    let clipping = match p.clipping {
        Some(C::Fixed(f)) => Clipping::Fixed { norm: f.norm },
        Some(C::Adaptive(a)) => Clipping::Adaptive {
            initial_norm: a.initial_norm,
            target_quantile: a.target_quantile,
            learning_rate: a.learning_rate,
            count_noise_std: a.count_noise_std,
        },
        None => return Err(ApiError::Invalid("plan.privacy.clipping is missing: fixed or adaptive".into())),
    };
    let over_bound = match pb::OverBound::try_from(p.over_bound) {
        Ok(pb::OverBound::Reject) => OverBound::Reject,
        Ok(pb::OverBound::Reclip) => OverBound::Reclip,
        Err(_) => return Err(ApiError::Invalid(format!("plan.privacy.over_bound: unknown value {}", p.over_bound))),
    };
    Ok(PrivacyPlan {
        mechanism,
        noise_multiplier: p.noise_multiplier,
        clipping,
        over_bound,
        sampling: match p.poisson {
            Some(q) => Sampling::Poisson { rate: q.rate },
            None => Sampling::Fixed,
        },
        expected_clients: p.expected_clients,
    })
}

/// One scope's standing as the wire shows it.
pub fn scope_status_to_pb(s: &ScopeStatus) -> pb::PrivacyScopeStatus {
    let latest = s.latest.as_ref();
    pb::PrivacyScopeStatus {
        scope: s.scope.to_string(),
        model_name: s.scope.model.clone(),
        region: s.scope.region.to_string(),
        epsilon_budget: s.budget.map_or(0.0, |b| b.epsilon),
        delta: s.delta,
        epsilon_spent: s.epsilon_spent,
        epsilon_remaining: s.epsilon_remaining().unwrap_or(0.0),
        rounds_charged: s.rounds_charged,
        rounds_reserved: s.rounds_reserved,
        accountant: latest.map(|e| e.accountant.as_str().to_string()).unwrap_or_default(),
        noise_multiplier: latest.map_or(0.0, |e| e.noise_multiplier),
        clip_norm: latest.map_or(0.0, |e| e.clip_norm),
        sampling_rate: latest.map_or(0.0, |e| e.sampling_rate),
        last_run_id: latest.map(|e| e.run.to_string()).unwrap_or_default(),
        budget_configured: s.budget.is_some(),
    }
}

pub fn metrics_to_pb(m: &TrainingMetrics) -> pb::TrainingMetrics {
    pb::TrainingMetrics {
        loss_before: m.loss_before,
        loss_after: m.loss_after,
        accuracy_after: m.accuracy_after,
        train_seconds: m.train_seconds,
    }
}

/// Metrics are reported by clients: non-finite values are refused rather than averaged.
pub fn metrics_from_pb(m: Option<pb::TrainingMetrics>) -> Result<TrainingMetrics, ApiError> {
    let m = m.unwrap_or_default();
    checked_metrics(TrainingMetrics {
        loss_before: m.loss_before,
        loss_after: m.loss_after,
        accuracy_after: m.accuracy_after,
        train_seconds: m.train_seconds,
    })
}

/// An update trailer's training metrics, checked as every edge checks them (gRPC and the
/// in-process fleet, [`crate::inproc`]).
///
/// # Errors
/// [`ApiError::Invalid`] naming the `trailer.metrics` field out of range.
pub fn checked_metrics(m: TrainingMetrics) -> Result<TrainingMetrics, ApiError> {
    Ok(TrainingMetrics {
        loss_before: limits::loss("trailer.metrics.loss_before", m.loss_before)?,
        loss_after: limits::loss("trailer.metrics.loss_after", m.loss_after)?,
        accuracy_after: limits::within("trailer.metrics.accuracy_after", m.accuracy_after, 0.0, 1.0)?,
        train_seconds: limits::within(
            "trailer.metrics.train_seconds",
            m.train_seconds,
            0.0,
            limits::MAX_TRAIN_SECONDS,
        )?,
    })
}

pub fn run_state_to_pb(s: RunState) -> pb::RunState {
    match s {
        RunState::Queued => pb::RunState::Queued,
        RunState::Running => pb::RunState::Running,
        RunState::Succeeded => pb::RunState::Succeeded,
        RunState::Failed => pb::RunState::Failed,
        RunState::Cancelled => pb::RunState::Cancelled,
        RunState::PendingApproval => pb::RunState::PendingApproval,
        RunState::BlockedByPolicy => pb::RunState::BlockedByPolicy,
    }
}

pub fn run_view_to_pb(v: RunView) -> pb::RunInfo {
    let live = v.live_phase;
    let evaluations: Vec<pb::EvaluationSummary> = v.evaluations.iter().map(evaluation_to_pb).collect();
    let rounds = v
        .rounds
        .into_iter()
        .map(|r| {
            let phase = match r.status {
                RoundStatus::Done => PhaseName::Done.as_str(),
                RoundStatus::Failed | RoundStatus::Interrupted => PhaseName::Failed.as_str(),
                RoundStatus::InProgress => match live {
                    Some((round, phase)) if round == r.round => phase.as_str(),
                    _ => "in_progress",
                },
            };
            pb::RoundSummary {
                round: r.round,
                phase: phase.to_string(),
                selected: r.selected,
                reported: r.reported,
                samples: r.samples,
                metrics: r.metrics.as_ref().map(metrics_to_pb),
                checkpoint_id: r.checkpoint.map(|c| c.to_string()).unwrap_or_default(),
                failure: r.failure.unwrap_or_default(),
                energy: r
                    .energy
                    .iter()
                    .map(|e| pb::RegionEnergy {
                        region: e.region.to_string(),
                        compute_seconds: e.compute_seconds,
                        energy_kwh: e.energy_kwh,
                        carbon_g: e.carbon_g,
                    })
                    .collect(),
                cost: r.cost.iter().map(fedra_proto::cost_wire::region_cost_to_pb).collect(),
            }
        })
        .collect();
    let rec = v.record;
    pb::RunInfo {
        run_id: rec.id.to_string(),
        plan: Some(plan_to_pb(&rec.plan)),
        state: run_state_to_pb(rec.state) as i32,
        completed_rounds: rec.completed_rounds,
        published_checkpoint: rec.published_checkpoint.map(|c| c.to_string()).unwrap_or_default(),
        failure: rec.failure.unwrap_or_default(),
        created_at: rec.created_at.to_rfc3339(),
        rounds,
        evaluations,
        policy_sha256: rec.policy_sha256.unwrap_or_default(),
        approvals_needed: rec.approvals_needed,
    }
}

pub fn audit_entry_to_pb(e: fedra_types::audit::AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        seq: e.seq,
        at_ms: e.draft.at_ms,
        actor: e.draft.actor,
        action: e.draft.action.as_str().to_string(),
        run_id: e.draft.run,
        region: e.draft.region,
        detail: e.draft.detail,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

pub fn event_to_pb(e: RunEvent) -> pb::RunEvent {
    use pb::run_event::Kind;
    let kind = match e.kind {
        RunEventKind::Selected { clients, target } => {
            Kind::Selected(pb::RoundSelected { clients: clients.into_iter().map(String::from).collect(), target })
        }
        RunEventKind::UpdateReceived { client, region, samples, reported, target, metrics } => {
            Kind::UpdateReceived(pb::UpdateReceived {
                client_id: client.into(),
                region: region.into(),
                samples,
                reported,
                target,
                metrics: Some(metrics_to_pb(&metrics)),
            })
        }
        RunEventKind::Aggregated { clients, samples, metrics, fold_seconds, update_bytes } => {
            Kind::Aggregated(pb::RoundAggregated {
                clients,
                samples,
                metrics: Some(metrics_to_pb(&metrics)),
                fold_seconds,
                update_bytes,
            })
        }
        RunEventKind::Published { checkpoint, regions, sha256 } => Kind::Published(pb::CheckpointPublished {
            checkpoint_id: checkpoint.into(),
            regions: regions.into_iter().map(String::from).collect(),
            sha256,
        }),
        RunEventKind::RoundFailed { reason } => Kind::RoundFailed(pb::RoundFailed { reason }),
        RunEventKind::Evaluated { results } => {
            Kind::Evaluated(pb::RoundEvaluated { results: results.iter().map(evaluation_to_pb).collect() })
        }
        RunEventKind::Blocked { reason } => Kind::Blocked(pb::RunBlocked { reason }),
        RunEventKind::RunFinished { state, reason } => Kind::RunFinished(pb::RunFinished {
            state: run_state_to_pb(state) as i32,
            reason: reason.unwrap_or_default(),
        }),
    };
    pb::RunEvent { run_id: e.run.into(), round: e.round, kind: Some(kind) }
}

pub fn evaluation_to_pb(e: &EvaluationRecord) -> pb::EvaluationSummary {
    pb::EvaluationSummary {
        round: e.round,
        region: e.region.as_ref().map(ToString::to_string).unwrap_or_default(),
        clients: e.clients,
        samples: e.samples,
        loss: e.loss,
        accuracy: e.accuracy,
    }
}

/// A client's evaluation report; non-finite or out-of-range values are refused.
pub fn evaluation_report_from_pb(r: &pb::EvaluationReport) -> Result<EvaluationReport, ApiError> {
    checked_evaluation_report(EvaluationReport {
        samples: r.samples,
        loss: r.loss,
        accuracy: r.accuracy,
        clients: r.clients,
    })
}

/// A client's evaluation report, checked as every edge checks it.
///
/// # Errors
/// [`ApiError::Invalid`] naming the `report` field out of range.
pub fn checked_evaluation_report(r: EvaluationReport) -> Result<EvaluationReport, ApiError> {
    limits::samples("report.samples", r.samples, true)?;
    if r.samples > 0 {
        limits::loss("report.loss", r.loss)?;
        limits::within("report.accuracy", r.accuracy, 0.0, 1.0)?;
    }
    Ok(EvaluationReport { clients: limits::members("report.clients", r.clients)?, ..r })
}

/// `id` and `region` come from the caller's certificate (see `auth::Caller`), not from `r`.
pub fn client_from_pb(id: ClientId, region: RegionId, r: pb::RegisterRequest) -> Result<ClientRecord, ApiError> {
    let datasets = r
        .datasets
        .into_iter()
        .map(|d| DatasetDescriptor { name: d.name, samples: d.samples, features: d.features, classes: d.classes })
        .collect();
    let devices = r.capabilities.map(|c| c.devices).unwrap_or_default();
    checked_client(id, region, datasets, devices, r.members)
}

/// A registration, checked as every edge checks it: `id` and `region` are the caller's
/// own (certified, or bound to an in-process link); the rest is what it declares.
///
/// # Errors
/// [`ApiError::Invalid`] naming the first field out of range.
pub fn checked_client(
    id: ClientId,
    region: RegionId,
    datasets: Vec<DatasetDescriptor>,
    devices: Vec<String>,
    members: u32,
) -> Result<ClientRecord, ApiError> {
    if datasets.is_empty() {
        return Err(ApiError::Invalid("datasets: a client must describe at least one dataset".into()));
    }
    limits::count("datasets", &datasets, 1, limits::MAX_DATASETS)?;
    let datasets = datasets
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            Ok(DatasetDescriptor {
                name: limits::label(&format!("datasets[{i}].name"), d.name)?,
                samples: limits::samples(&format!("datasets[{i}].samples"), d.samples, true)?,
                features: limits::dimension(&format!("datasets[{i}].features"), d.features)?,
                classes: limits::dimension(&format!("datasets[{i}].classes"), d.classes)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    limits::count("capabilities.devices", &devices, 0, limits::MAX_DEVICES)?;
    let devices = devices
        .into_iter()
        .enumerate()
        .map(|(i, d)| limits::label(&format!("capabilities.devices[{i}]"), d))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let members = limits::members("members", members)?;
    Ok(ClientRecord { id, region, datasets, devices, registered_at: chrono::Utc::now(), members })
}

pub fn task_to_pb(t: TaskAssignment) -> pb::Task {
    pb::Task {
        task_id: t.task.into(),
        run_id: t.run.into(),
        round: t.round,
        model: Some(model_to_pb(&t.model)),
        layout: Some(layout_to_pb(&t.layout)),
        local: Some(local_to_pb(&t.local)),
        deadline_seconds: t.deadline.as_secs_f64(),
        chunk_bytes: t.chunk_bytes as u64,
        seed: t.seed,
        kind: match t.kind {
            TaskKind::Train => pb::TaskKind::Train,
            TaskKind::Evaluate => pb::TaskKind::Evaluate,
        } as i32,
        privacy: t.privacy.map(|p| pb::PrivacyTask {
            clip_norm: p.clip_norm,
            local_noise_std: p.local_noise_std,
            lattice_slack: p.lattice_slack,
        }),
        cohort: t.cohort.map(|c| pb::Cohort {
            target: c.target,
            min: c.min,
            over_selection: c.over_selection,
            privacy: c.privacy.as_ref().map(plan_wire::privacy_to_pb),
        }),
        compression: (t.compression != fedra_types::plan::Compression::None)
            .then(|| plan_wire::compression_to_pb(&t.compression)),
    }
}

pub fn checkpoint_to_pb(c: &CheckpointRecord, published: bool) -> pb::CheckpointInfo {
    pb::CheckpointInfo {
        checkpoint_id: c.id.to_string(),
        run_id: c.run.to_string(),
        round: c.round,
        model_name: c.model_name.clone(),
        regions: c.locations.iter().map(|(r, _)| r.to_string()).collect(),
        sha256: c.sha256.clone(),
        created_at: c.created_at.to_rfc3339(),
        manifest_json: c.manifest_json.clone(),
        published,
        signature_json: c.signature_json.clone(),
        reference_json: String::new(),
    }
}

/// The manifest of a stored checkpoint (for its file digest).
pub fn manifest_of(c: &CheckpointRecord) -> Result<Manifest, ApiError> {
    serde_json::from_str(&c.manifest_json)
        .map_err(|e| ApiError::Unavailable(format!("checkpoint {} has an unreadable manifest: {e}", c.id)))
}
