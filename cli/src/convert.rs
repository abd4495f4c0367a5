//! The CLI side's one conversion boundary with protobuf: plans out, run snapshots, events,
//! checkpoints and privacy standings in. Everything else in this crate works with
//! [`crate::status`], [`crate::plan_file`] and the shared `fedra-types` vocabulary; a
//! malformed answer from the coordinator is rejected here, naming the field.
//!
//! Request envelopes that carry only ids or filter strings, and the framing of the
//! checkpoint stream, are built where the RPC is made ([`crate::control`]), as the
//! coordinator's services build theirs; every message with domain content goes through here.

use crate::plan_file::PlanFile;
use crate::status::{
    ArmStats, CheckpointSummary, DriftSummary, EvalSummary, FeatureDrift, ModelEntry, ModelTransitionRow, NodeReport,
    RoundRow, RunStatus, ScopeSummary, WatchEvent,
};
use fedra_coordinator::registry::ModelState;
use fedra_proto::pb;
use fedra_proto::{model_wire, plan_wire};
use fedra_types::metrics::TrainingMetrics;
use fedra_types::run::RunState;

/// An answer from the coordinator is malformed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{field}: unknown value {value}")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("{field}: {source}")]
    UnknownAction { field: &'static str, source: fedra_types::audit::UnknownAction },
    #[error("{field}: {source}")]
    Id { field: &'static str, source: fedra_types::ids::IdError },
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// The plan as written, for `SubmitRun`. Values are not judged here: the coordinator
/// validates them and names any bad field.
pub fn plan_to_pb(p: &PlanFile) -> pb::RunPlan {
    pb::RunPlan {
        model: Some(pb::ModelSpec {
            name: p.model.name.clone(),
            architecture: Some(model_wire::architecture_to_pb(&p.model.architecture)),
        }),
        initial_checkpoint: p.initial_checkpoint.clone().unwrap_or_default(),
        strategy: fedra_proto::plan_wire::strategy_to_pb(&p.strategy).0 as i32,
        server_optimizer: fedra_proto::plan_wire::strategy_to_pb(&p.strategy).1,
        rounds: p.rounds,
        clients_per_round: p.clients_per_round,
        min_clients: p.min_clients,
        over_selection: p.over_selection,
        round_deadline_seconds: p.round_deadline_seconds,
        local: Some(plan_wire::local_to_pb(&p.local)),
        regions: p.regions.clone(),
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

/// # Errors
/// [`WireError::UnknownEnum`] for a state this CLI does not know (unset included): a newer
/// coordinator's state is reported rather than guessed at.
pub fn run_state_from_pb(field: &'static str, s: i32) -> Result<RunState, WireError> {
    match pb::RunState::try_from(s) {
        Ok(pb::RunState::Queued) => Ok(RunState::Queued),
        Ok(pb::RunState::Running) => Ok(RunState::Running),
        Ok(pb::RunState::Succeeded) => Ok(RunState::Succeeded),
        Ok(pb::RunState::Failed) => Ok(RunState::Failed),
        Ok(pb::RunState::Cancelled) => Ok(RunState::Cancelled),
        Ok(pb::RunState::PendingApproval) => Ok(RunState::PendingApproval),
        Ok(pb::RunState::BlockedByPolicy) => Ok(RunState::BlockedByPolicy),
        Ok(pb::RunState::Unspecified) | Err(_) => Err(WireError::UnknownEnum { field, value: s }),
    }
}

fn metrics_from_pb(m: &pb::TrainingMetrics) -> TrainingMetrics {
    TrainingMetrics {
        loss_before: m.loss_before,
        loss_after: m.loss_after,
        accuracy_after: m.accuracy_after,
        train_seconds: m.train_seconds,
    }
}

fn eval_from_pb(e: &pb::EvaluationSummary) -> EvalSummary {
    EvalSummary {
        round: e.round,
        region: non_empty(e.region.clone()),
        clients: e.clients,
        samples: e.samples,
        loss: e.loss,
        accuracy: e.accuracy,
    }
}

/// # Errors
/// [`WireError`] when the run's state is unknown.
pub fn run_from_pb(r: pb::RunInfo) -> Result<RunStatus, WireError> {
    let (model_name, total_rounds, private) = r
        .plan
        .as_ref()
        .map(|p| (p.model.as_ref().map(|m| m.name.clone()).unwrap_or_default(), p.rounds, p.privacy.is_some()))
        .unwrap_or_default();
    Ok(RunStatus {
        policy_sha256: non_empty(r.policy_sha256),
        approvals_needed: r.approvals_needed,
        private,
        state: run_state_from_pb("run.state", r.state)?,
        id: r.run_id,
        model_name,
        total_rounds,
        completed_rounds: r.completed_rounds,
        published_checkpoint: non_empty(r.published_checkpoint),
        failure: non_empty(r.failure),
        created_at: r.created_at,
        rounds: r
            .rounds
            .into_iter()
            .map(|s| -> Result<RoundRow, WireError> {
                Ok(RoundRow {
                    round: s.round,
                    phase: s.phase,
                    selected: s.selected,
                    reported: s.reported,
                    samples: s.samples,
                    metrics: s.metrics.as_ref().map(metrics_from_pb),
                    checkpoint: non_empty(s.checkpoint_id),
                    failure: non_empty(s.failure),
                    energy: s
                        .energy
                        .iter()
                        .map(|e| (e.region.clone(), e.compute_seconds, e.energy_kwh, e.carbon_g))
                        .collect(),
                    cost: s
                        .cost
                        .into_iter()
                        .map(|c| {
                            fedra_proto::cost_wire::region_cost_from_pb(c)
                                .map_err(|source| WireError::Id { field: "round.cost.region", source })
                        })
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, _>>()?,
        evaluations: r.evaluations.iter().map(eval_from_pb).collect(),
    })
}

/// `Ok(None)` for an event without a kind (one a newer coordinator added): watchers skip it.
///
/// # Errors
/// [`WireError`] when a finished run's state is unknown.
pub fn event_from_pb(e: pb::RunEvent) -> Result<Option<WatchEvent>, WireError> {
    use pb::run_event::Kind;
    let round = e.round;
    let metrics = |m: Option<pb::TrainingMetrics>| m.as_ref().map(metrics_from_pb).unwrap_or_default();
    let Some(kind) = e.kind else { return Ok(None) };
    Ok(Some(match kind {
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
            update_bytes: a.update_bytes,
        },
        Kind::Published(p) => {
            WatchEvent::Published { round, checkpoint: p.checkpoint_id, regions: p.regions, sha256: p.sha256 }
        }
        Kind::RoundFailed(f) => WatchEvent::RoundFailed { round, reason: f.reason },
        Kind::Blocked(b) => WatchEvent::Blocked { round, reason: b.reason },
        Kind::RunFinished(f) => WatchEvent::RunFinished {
            state: run_state_from_pb("run_finished.state", f.state)?,
            reason: non_empty(f.reason),
        },
        Kind::Evaluated(e) => WatchEvent::Evaluated { round, results: e.results.iter().map(eval_from_pb).collect() },
    }))
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

/// RFC 3339 with milliseconds, UTC; the raw number when it is out of chrono's range.
fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// # Errors
/// [`WireError::UnknownEnum`] for a state this CLI does not know; `None` only for unset.
fn model_state_from_pb(field: &'static str, v: i32) -> Result<Option<ModelState>, WireError> {
    Ok(Some(match pb::ModelState::try_from(v) {
        Ok(pb::ModelState::Unspecified) => return Ok(None),
        Ok(pb::ModelState::Candidate) => ModelState::Candidate,
        Ok(pb::ModelState::Canary) => ModelState::Canary,
        Ok(pb::ModelState::Serving) => ModelState::Serving,
        Ok(pb::ModelState::Retired) => ModelState::Retired,
        Ok(pb::ModelState::RolledBack) => ModelState::RolledBack,
        Err(_) => return Err(WireError::UnknownEnum { field, value: v }),
    }))
}

/// # Errors
/// [`WireError::UnknownEnum`] for an unknown or unset state.
pub fn model_entry_from_pb(e: pb::RegistryEntry) -> Result<ModelEntry, WireError> {
    let state = model_state_from_pb("registry_entry.state", e.state)?
        .ok_or(WireError::UnknownEnum { field: "registry_entry.state", value: 0 })?;
    Ok(ModelEntry {
        state,
        updated_at: rfc3339_ms(e.updated_ms),
        policy_rule: non_empty(e.policy_rule),
        region: e.region,
        model_name: e.model_name,
        checkpoint_id: e.checkpoint_id,
        run_id: e.run_id,
        round: e.round,
        gate_passed: e.gate_passed,
        gate_detail: e.gate_detail,
        gate_overridable: e.gate_overridable,
        accuracy: e.accuracy,
        loss: e.loss,
        eval_samples: e.eval_samples,
        canary_fraction: e.canary_fraction,
        approvals_needed: e.approvals_needed,
        approvers: e.approvers,
    })
}

/// # Errors
/// [`WireError::UnknownEnum`] for an unknown state, or an unset `to`.
pub fn transition_from_pb(t: pb::ModelTransition) -> Result<ModelTransitionRow, WireError> {
    Ok(ModelTransitionRow {
        from: model_state_from_pb("model_transition.from", t.from)?,
        to: model_state_from_pb("model_transition.to", t.to)?
            .ok_or(WireError::UnknownEnum { field: "model_transition.to", value: 0 })?,
        seq: t.seq,
        at: rfc3339_ms(t.at_ms),
        region: t.region,
        model_name: t.model_name,
        checkpoint_id: t.checkpoint_id,
        actor: t.actor,
        reason: t.reason,
    })
}

/// A node's latest report; `None` for a status without a report (nothing to show).
pub fn node_report_from_pb(n: pb::NodeStatus) -> Option<NodeReport> {
    let r = n.report?;
    Some(NodeReport {
        node: r.node,
        region: r.region,
        model_name: r.model_name,
        reported_at: rfc3339_ms(n.reported_ms),
        arms: r
            .arms
            .into_iter()
            .map(|a| ArmStats {
                checkpoint_id: a.checkpoint_id,
                canary: a.canary,
                requests: a.requests,
                rows: a.rows,
                errors: a.errors,
                p50_ms: a.p50_ms,
                p99_ms: a.p99_ms,
                cpu_seconds: a.cpu_seconds,
                cpu_seconds_per_1000: a.cpu_seconds_per_1000,
                cost_per_1000: a.cost_per_1000,
            })
            .collect(),
        drift: r.drift.map(|d| DriftSummary {
            checkpoint_id: d.checkpoint_id,
            has_reference: d.has_reference,
            drifted: d.drifted,
            rows: d.rows,
            max_psi: d.max_psi,
            max_ks: d.max_ks,
            prediction_psi: d.prediction_psi,
            features: d
                .features
                .into_iter()
                .map(|f| FeatureDrift {
                    feature: f.feature,
                    psi: f.psi,
                    ks: f.ks,
                    reference_mean: f.reference_mean,
                    live_mean: f.live_mean,
                })
                .collect(),
        }),
        refused: r.refused,
    })
}

/// An audit entry as the coordinator sent it; the chain is checked by the caller.
///
/// # Errors
/// An unknown action name.
pub fn audit_entry_from_pb(e: pb::AuditEntry) -> Result<fedra_types::audit::AuditEntry, WireError> {
    let action = e.action.parse().map_err(|source| WireError::UnknownAction { field: "audit.action", source })?;
    Ok(fedra_types::audit::AuditEntry {
        seq: e.seq,
        draft: fedra_types::audit::AuditDraft {
            at_ms: e.at_ms,
            actor: e.actor,
            action,
            run: e.run_id,
            region: e.region,
            detail: e.detail,
        },
        prev_hash: e.prev_hash,
        hash: e.hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedra_types::plan::{Clipping, DpMechanism, Optimizer, OverBound, PrivacyPlan, Sampling};

    #[test]
    fn unknown_run_states_are_refused_naming_the_field() {
        assert_eq!(run_state_from_pb("run.state", pb::RunState::Cancelled as i32).unwrap(), RunState::Cancelled);
        let e = run_state_from_pb("run.state", 99).unwrap_err();
        assert_eq!(e.to_string(), "run.state: unknown value 99");
        let finished = pb::RunEvent {
            run_id: "run-1".into(),
            round: 2,
            kind: Some(pb::run_event::Kind::RunFinished(pb::RunFinished { state: 0, reason: String::new() })),
        };
        assert!(event_from_pb(finished).is_err());
        assert!(event_from_pb(pb::RunEvent { run_id: "run-1".into(), round: 2, kind: None }).unwrap().is_none());
    }

    #[test]
    fn plans_carry_the_shared_vocabulary_to_the_wire() {
        let mut plan = PlanFile::parse(crate::plan_file::tests::PLAN, "p").unwrap();
        plan.local.optimizer = Optimizer::Adam;
        plan.privacy = Some(PrivacyPlan {
            mechanism: DpMechanism::Local,
            noise_multiplier: 2.0,
            clipping: Clipping::Fixed { norm: 0.5 },
            over_bound: OverBound::Reclip,
            sampling: Sampling::Poisson { rate: 0.25 },
            expected_clients: 3,
        });
        let pb = plan_to_pb(&plan);
        assert_eq!(pb.strategy, pb::Strategy::FedAvg as i32);
        assert_eq!(pb.local.unwrap().optimizer, pb::Optimizer::Adam as i32);
        let p = pb.privacy.unwrap();
        assert_eq!((p.mechanism, p.over_bound), (pb::DpMechanism::Local as i32, pb::OverBound::Reclip as i32));
        assert_eq!(p.poisson.map(|q| q.rate), Some(0.25));
        assert!(matches!(p.clipping, Some(pb::privacy_plan::Clipping::Fixed(pb::FixedClipping { norm: 0.5 }))));
    }
}
