//! The sidecar's one conversion boundary with protobuf: tasks in; registration, metrics
//! and evaluation reports out. Everything else in this crate works with [`Task`], the
//! trainer's types and the shared `fedra-types` vocabulary; a malformed task is rejected
//! here, naming the field.
//!
//! Request envelopes that carry only ids, and the framing of the model and update streams
//! (header, chunks, trailer), are built by the protocol driver, [`crate::session`], as the
//! coordinator's fleet service builds its side; their domain content (metrics) comes from
//! here.

use crate::data::DatasetInfo;
use crate::task::Task;
use crate::trainer::{EvalOutcome, LocalHyperparams, Optimizer, TrainSpec};
use fedra_proto::model_wire;
use fedra_proto::pb;
use fedra_types::metrics::TrainingMetrics;
use fedra_types::plan::Compression;
use fedra_types::task::{PrivacyTask, TaskKind};
use std::time::Duration;

/// A message from the coordinator is malformed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

/// A task from the coordinator's stream, checked field by field.
///
/// # Errors
/// [`WireError`] naming the first missing or invalid field.
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
    let compression = fedra_proto::plan_wire::compression_from_pb(t.compression.as_ref())
        .map_err(|message| WireError::Invalid { field: "task.compression", message })?;
    if let Compression::TopK { fraction } = compression
        && !(fraction > 0.0 && fraction <= 1.0)
    {
        return Err(WireError::Invalid { field: "task.compression.fraction", message: fraction.to_string() });
    }
    if compression != Compression::None && privacy.is_some() {
        return Err(WireError::Invalid {
            field: "task.compression",
            message: format!("{} together with privacy", compression.name()),
        });
    }
    Ok(Task {
        compression,
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

pub fn metrics_to_pb(m: &TrainingMetrics) -> pb::TrainingMetrics {
    pb::TrainingMetrics {
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
    session_id: &str,
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
        // A sidecar stands for itself.
        members: 1,
        session_id: session_id.to_string(),
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
        clients: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedra_types::model::Architecture;

    fn task() -> pb::Task {
        let arch = Architecture::LogisticRegression { input_dim: 3, classes: 2 };
        pb::Task {
            cohort: None,
            task_id: "task-1".into(),
            run_id: "run-1".into(),
            round: 2,
            model: Some(pb::ModelSpec { name: "lr".into(), architecture: Some(model_wire::architecture_to_pb(&arch)) }),
            layout: Some(model_wire::layout_to_pb(&arch.layout())),
            local: Some(pb::LocalTraining {
                epochs: 1,
                batch_size: 4,
                learning_rate: 0.1,
                proximal_mu: 0.0,
                optimizer: pb::Optimizer::Sgd as i32,
                momentum: 0.5,
            }),
            deadline_seconds: 30.0,
            chunk_bytes: 1024,
            seed: 7,
            kind: pb::TaskKind::Evaluate as i32,
            privacy: Some(pb::PrivacyTask { clip_norm: 1.0, local_noise_std: 0.0, lattice_slack: 0.0 }),
            compression: None,
        }
    }

    #[test]
    fn tasks_arrive_in_the_shared_vocabulary() {
        let t = task_from_pb(task()).unwrap();
        assert_eq!(t.kind, TaskKind::Evaluate);
        assert_eq!(t.privacy, Some(PrivacyTask { clip_norm: 1.0, local_noise_std: 0.0, lattice_slack: 0.0 }));
        assert_eq!(t.spec.hyper.optimizer, Optimizer::Sgd { momentum: 0.5 });
        assert_eq!(t.spec.layout, t.spec.architecture.layout());
    }

    #[test]
    fn malformed_tasks_name_the_field() {
        let mut bad = task();
        bad.privacy = Some(pb::PrivacyTask { clip_norm: f64::NAN, local_noise_std: 0.0, lattice_slack: 0.0 });
        assert_eq!(task_from_pb(bad).unwrap_err().to_string(), "task.privacy.clip_norm: NaN");
        let mut bad = task();
        bad.kind = 9;
        assert_eq!(task_from_pb(bad).unwrap_err().to_string(), "task.kind: 9");
        let mut bad = task();
        bad.compression = Some(pb::Compression { kind: pb::CompressionKind::TopK as i32, fraction: 0.0 });
        bad.privacy = None;
        assert_eq!(task_from_pb(bad).unwrap_err().to_string(), "task.compression.fraction: 0");
        let mut bad = task();
        bad.compression = Some(pb::Compression { kind: pb::CompressionKind::Int8 as i32, fraction: 0.0 });
        assert_eq!(task_from_pb(bad).unwrap_err().to_string(), "task.compression: int8 together with privacy");
        let mut ok = task();
        ok.privacy = None;
        ok.compression = Some(pb::Compression { kind: pb::CompressionKind::TopK as i32, fraction: 0.25 });
        assert_eq!(task_from_pb(ok).unwrap().compression, Compression::TopK { fraction: 0.25 });
        let mut bad = task();
        bad.layout = None;
        assert_eq!(task_from_pb(bad).unwrap_err().to_string(), "task.layout is missing");
    }
}
