//! The client side's one conversion boundary with protobuf. Everything else in this crate
//! works with the domain types below.

use crate::data::DatasetInfo;
use crate::plan_file::{OptimizerName, PlanFile, StrategyName};
use crate::trainer::{EvalOutcome, LocalHyperparams, Optimizer, TrainMetrics, TrainSpec};
use fedra_proto::model::wire as model_wire;
use fedra_proto::pb;
use std::time::Duration;

/// A message from the coordinator is malformed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

/// One task received from the coordinator.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub run: String,
    pub round: u32,
    pub spec: TrainSpec,
    pub chunk_bytes: usize,
    pub deadline: Duration,
    pub kind: TaskKind,
    /// Set for differentially private runs: upload the clipped (and, for local DP,
    /// noised) update instead of the model.
    pub privacy: Option<PrivacyTask>,
}

/// What a private run asks of the client's update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacyTask {
    pub clip_norm: f64,
    /// Target std of the local noise; 0 = central DP (the coordinator adds the noise).
    pub local_noise_std: f64,
    pub lattice_slack: f64,
}

/// What a task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Train locally and push the model.
    Train,
    /// Evaluate the model on the local held-out split and report.
    Evaluate,
}

/// Sample-weighted mean of clients' held-out evaluations of one round's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalSummary {
    pub round: u32,
    /// `None` for the mean over all regions.
    pub region: Option<String>,
    pub clients: u32,
    pub samples: u64,
    pub loss: f64,
    pub accuracy: f64,
}

/// Run lifecycle states as shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Unknown,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Unknown => "unknown",
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// One round attempt of a run.
#[derive(Debug, Clone)]
pub struct RoundRow {
    pub round: u32,
    pub phase: String,
    pub selected: u32,
    pub reported: u32,
    pub samples: u64,
    pub metrics: Option<TrainMetrics>,
    pub checkpoint: Option<String>,
    pub failure: Option<String>,
}

/// A run as the coordinator reports it.
#[derive(Debug, Clone)]
pub struct RunStatus {
    pub id: String,
    pub model_name: String,
    pub state: RunState,
    pub total_rounds: u32,
    pub completed_rounds: u32,
    pub published_checkpoint: Option<String>,
    pub failure: Option<String>,
    pub created_at: String,
    pub rounds: Vec<RoundRow>,
    pub evaluations: Vec<EvalSummary>,
}

/// A step of a run, as streamed by `WatchRun`.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    Selected {
        round: u32,
        clients: Vec<String>,
        target: u32,
    },
    UpdateReceived {
        round: u32,
        client: String,
        region: String,
        samples: u64,
        reported: u32,
        target: u32,
        metrics: TrainMetrics,
    },
    Aggregated {
        round: u32,
        clients: u32,
        samples: u64,
        metrics: TrainMetrics,
        /// Seconds the coordinator spent folding updates (0 when replayed from its store).
        fold_seconds: f64,
    },
    Published {
        round: u32,
        checkpoint: String,
        regions: Vec<String>,
        sha256: String,
    },
    RoundFailed {
        round: u32,
        reason: String,
    },
    RunFinished {
        state: RunState,
        reason: Option<String>,
    },
    /// Overall mean first, then per region.
    Evaluated {
        round: u32,
        results: Vec<EvalSummary>,
    },
}

/// A checkpoint in the registry.
#[derive(Debug, Clone)]
pub struct CheckpointSummary {
    pub id: String,
    pub run: String,
    pub round: u32,
    pub model_name: String,
    pub regions: Vec<String>,
    pub sha256: String,
    pub created_at: String,
    pub published: bool,
    pub manifest_json: String,
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

pub fn task_from_pb(t: pb::Task) -> Result<Task, WireError> {
    let model = t.model.ok_or(WireError::Missing("task.model"))?;
    let layout = t.layout.ok_or(WireError::Missing("task.layout"))?;
    let local = t.local.ok_or(WireError::Missing("task.local"))?;
    if t.task_id.is_empty() {
        return Err(WireError::Missing("task.task_id"));
    }
    let layout = model_wire::layout_from_pb(&layout);
    let architecture = model_wire::architecture_from_pb(
        model.architecture.as_ref().ok_or(WireError::Missing("task.model.architecture"))?,
    );
    let optimizer = match pb::Optimizer::try_from(local.optimizer) {
        Ok(pb::Optimizer::Unspecified | pb::Optimizer::Sgd) => Optimizer::Sgd { momentum: local.momentum },
        Ok(pb::Optimizer::Adam) => Optimizer::Adam,
        Err(_) => {
            return Err(WireError::Invalid { field: "task.local.optimizer", message: local.optimizer.to_string() });
        }
    };
    let kind = match pb::TaskKind::try_from(t.kind) {
        Ok(pb::TaskKind::Train) => TaskKind::Train,
        Ok(pb::TaskKind::Evaluate) => TaskKind::Evaluate,
        Err(_) => return Err(WireError::Invalid { field: "task.kind", message: t.kind.to_string() }),
    };
    let deadline = if t.deadline_seconds.is_finite() && t.deadline_seconds >= 0.0 {
        Duration::from_secs_f64(t.deadline_seconds)
    } else {
        return Err(WireError::Invalid { field: "task.deadline_seconds", message: t.deadline_seconds.to_string() });
    };
    let privacy = match t.privacy {
        Some(p) => {
            if !(p.clip_norm.is_finite() && p.clip_norm > 0.0) {
                return Err(WireError::Invalid { field: "task.privacy.clip_norm", message: p.clip_norm.to_string() });
            }
            if !(p.local_noise_std.is_finite() && p.local_noise_std >= 0.0) {
                return Err(WireError::Invalid {
                    field: "task.privacy.local_noise_std",
                    message: p.local_noise_std.to_string(),
                });
            }
            if p.local_noise_std > 0.0 && !(p.lattice_slack > 0.0 && p.lattice_slack <= 0.1) {
                return Err(WireError::Invalid {
                    field: "task.privacy.lattice_slack",
                    message: p.lattice_slack.to_string(),
                });
            }
            Some(PrivacyTask {
                clip_norm: p.clip_norm,
                local_noise_std: p.local_noise_std,
                lattice_slack: p.lattice_slack,
            })
        }
        None => None,
    };
    Ok(Task {
        privacy,
        id: t.task_id,
        run: t.run_id,
        round: t.round,
        spec: TrainSpec {
            architecture,
            layout,
            hyper: LocalHyperparams {
                epochs: local.epochs,
                batch_size: local.batch_size,
                learning_rate: local.learning_rate,
                optimizer,
                proximal_mu: local.proximal_mu,
            },
            seed: t.seed,
        },
        chunk_bytes: t.chunk_bytes as usize,
        deadline,
        kind,
    })
}

pub fn metrics_to_pb(m: &TrainMetrics) -> pb::TrainingMetrics {
    pb::TrainingMetrics {
        loss_before: m.loss_before,
        loss_after: m.loss_after,
        accuracy_after: m.accuracy_after,
        train_seconds: m.train_seconds,
    }
}

pub fn metrics_from_pb(m: &pb::TrainingMetrics) -> TrainMetrics {
    TrainMetrics {
        loss_before: m.loss_before,
        loss_after: m.loss_after,
        accuracy_after: m.accuracy_after,
        train_seconds: m.train_seconds,
    }
}

/// Registration message: the client's identity and what its data looks like (never the data).
pub fn register_to_pb(
    client_id: &str,
    region: &str,
    datasets: &[DatasetInfo],
    devices: &[String],
) -> pb::RegisterRequest {
    pb::RegisterRequest {
        client_id: client_id.to_string(),
        region: region.to_string(),
        datasets: datasets
            .iter()
            .map(|d| pb::DatasetDescriptor {
                name: d.name.clone(),
                samples: d.samples,
                features: d.features,
                classes: d.classes,
            })
            .collect(),
        capabilities: Some(pb::Capabilities { devices: devices.to_vec(), max_parameters: 0 }),
    }
}

pub fn plan_to_pb(p: &PlanFile) -> pb::RunPlan {
    pb::RunPlan {
        model: Some(pb::ModelSpec {
            name: p.model.name.clone(),
            architecture: Some(model_wire::architecture_to_pb(&p.model.architecture)),
        }),
        initial_checkpoint: p.initial_checkpoint.clone().unwrap_or_default(),
        strategy: match p.strategy {
            StrategyName::FedAvg => pb::Strategy::FedAvg as i32,
        },
        rounds: p.rounds,
        clients_per_round: p.clients_per_round,
        min_clients: p.min_clients,
        over_selection: p.over_selection,
        round_deadline_seconds: p.round_deadline_seconds,
        local: Some(pb::LocalTraining {
            epochs: p.local.epochs,
            batch_size: p.local.batch_size,
            learning_rate: p.local.learning_rate,
            proximal_mu: p.local.proximal_mu,
            optimizer: match p.local.optimizer {
                OptimizerName::Sgd => pb::Optimizer::Sgd,
                OptimizerName::Adam => pb::Optimizer::Adam,
            } as i32,
            momentum: p.local.momentum,
        }),
        regions: p.regions.clone(),
        seed: p.seed,
        evaluation: Some(pb::Evaluation { every_rounds: p.evaluation.every_rounds, clients: p.evaluation.clients }),
        privacy: p.privacy.as_ref().map(privacy_to_pb),
        priority: p.priority,
    }
}

fn privacy_to_pb(p: &crate::plan_file::PrivacySection) -> pb::PrivacyPlan {
    use crate::plan_file::{MechanismName, OverBoundName};
    use pb::privacy_plan::Clipping;
    pb::PrivacyPlan {
        mechanism: match p.mechanism {
            MechanismName::Central => pb::DpMechanism::Central,
            MechanismName::Local => pb::DpMechanism::Local,
        } as i32,
        noise_multiplier: p.noise_multiplier,
        clipping: match (p.clip_norm, p.adaptive) {
            (_, Some(a)) => Some(Clipping::Adaptive(pb::AdaptiveClipping {
                initial_norm: a.initial_norm,
                target_quantile: a.target_quantile,
                learning_rate: a.learning_rate,
                count_noise_std: a.count_noise_std,
            })),
            (Some(norm), None) => Some(Clipping::Fixed(pb::FixedClipping { norm })),
            (None, None) => None,
        },
        over_bound: match p.over_bound {
            OverBoundName::Reject => pb::OverBound::Reject,
            OverBoundName::Reclip => pb::OverBound::Reclip,
        } as i32,
        poisson: p.sampling_rate.map(|rate| pb::PoissonSampling { rate }),
        expected_clients: p.expected_clients,
    }
}

/// One privacy scope's standing.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeSummary {
    pub scope: String,
    pub epsilon_budget: Option<f64>,
    pub delta: f64,
    pub epsilon_spent: f64,
    pub epsilon_remaining: Option<f64>,
    pub rounds_charged: u32,
    pub rounds_reserved: u32,
    pub accountant: String,
    pub noise_multiplier: f64,
    pub clip_norm: f64,
    pub sampling_rate: f64,
    pub last_run: String,
}

pub fn scope_from_pb(s: &pb::PrivacyScopeStatus) -> ScopeSummary {
    ScopeSummary {
        scope: s.scope.clone(),
        epsilon_budget: s.budget_configured.then_some(s.epsilon_budget),
        delta: s.delta,
        epsilon_spent: s.epsilon_spent,
        epsilon_remaining: s.budget_configured.then_some(s.epsilon_remaining),
        rounds_charged: s.rounds_charged,
        rounds_reserved: s.rounds_reserved,
        accountant: s.accountant.clone(),
        noise_multiplier: s.noise_multiplier,
        clip_norm: s.clip_norm,
        sampling_rate: s.sampling_rate,
        last_run: s.last_run_id.clone(),
    }
}

pub fn run_state_from_pb(s: i32) -> RunState {
    match pb::RunState::try_from(s) {
        Ok(pb::RunState::Queued) => RunState::Queued,
        Ok(pb::RunState::Running) => RunState::Running,
        Ok(pb::RunState::Succeeded) => RunState::Succeeded,
        Ok(pb::RunState::Failed) => RunState::Failed,
        Ok(pb::RunState::Cancelled) => RunState::Cancelled,
        _ => RunState::Unknown,
    }
}

pub fn eval_from_pb(e: &pb::EvaluationSummary) -> EvalSummary {
    EvalSummary {
        round: e.round,
        region: non_empty(e.region.clone()),
        clients: e.clients,
        samples: e.samples,
        loss: e.loss,
        accuracy: e.accuracy,
    }
}

/// An evaluation task's answer; an outcome of `None` means "no held-out split here".
pub fn evaluation_report_to_pb(task_id: &str, client_id: &str, outcome: Option<EvalOutcome>) -> pb::EvaluationReport {
    let o = outcome.unwrap_or_default();
    pb::EvaluationReport {
        task_id: task_id.to_string(),
        client_id: client_id.to_string(),
        samples: o.samples,
        loss: o.loss,
        accuracy: o.accuracy,
    }
}

pub fn run_from_pb(r: pb::RunInfo) -> RunStatus {
    let (model_name, total_rounds) = r
        .plan
        .as_ref()
        .map(|p| (p.model.as_ref().map(|m| m.name.clone()).unwrap_or_default(), p.rounds))
        .unwrap_or_default();
    RunStatus {
        id: r.run_id,
        model_name,
        state: run_state_from_pb(r.state),
        total_rounds,
        completed_rounds: r.completed_rounds,
        published_checkpoint: non_empty(r.published_checkpoint),
        failure: non_empty(r.failure),
        created_at: r.created_at,
        rounds: r
            .rounds
            .into_iter()
            .map(|s| RoundRow {
                round: s.round,
                phase: s.phase,
                selected: s.selected,
                reported: s.reported,
                samples: s.samples,
                metrics: s.metrics.as_ref().map(metrics_from_pb),
                checkpoint: non_empty(s.checkpoint_id),
                failure: non_empty(s.failure),
            })
            .collect(),
        evaluations: r.evaluations.iter().map(eval_from_pb).collect(),
    }
}

pub fn event_from_pb(e: pb::RunEvent) -> Option<WatchEvent> {
    use pb::run_event::Kind;
    let round = e.round;
    let metrics = |m: Option<pb::TrainingMetrics>| m.as_ref().map(metrics_from_pb).unwrap_or_default();
    Some(match e.kind? {
        Kind::Selected(s) => WatchEvent::Selected { round, clients: s.clients, target: s.target },
        Kind::UpdateReceived(u) => WatchEvent::UpdateReceived {
            round,
            client: u.client_id,
            region: u.region,
            samples: u.samples,
            reported: u.reported,
            target: u.target,
            metrics: metrics(u.metrics),
        },
        Kind::Aggregated(a) => WatchEvent::Aggregated {
            round,
            clients: a.clients,
            samples: a.samples,
            metrics: metrics(a.metrics),
            fold_seconds: a.fold_seconds,
        },
        Kind::Published(p) => {
            WatchEvent::Published { round, checkpoint: p.checkpoint_id, regions: p.regions, sha256: p.sha256 }
        }
        Kind::RoundFailed(f) => WatchEvent::RoundFailed { round, reason: f.reason },
        Kind::RunFinished(f) => {
            WatchEvent::RunFinished { state: run_state_from_pb(f.state), reason: non_empty(f.reason) }
        }
        Kind::Evaluated(e) => WatchEvent::Evaluated { round, results: e.results.iter().map(eval_from_pb).collect() },
    })
}

pub fn checkpoint_from_pb(c: pb::CheckpointInfo) -> CheckpointSummary {
    CheckpointSummary {
        id: c.checkpoint_id,
        run: c.run_id,
        round: c.round,
        model_name: c.model_name,
        regions: c.regions,
        sha256: c.sha256,
        created_at: c.created_at,
        published: c.published,
        manifest_json: c.manifest_json,
    }
}
