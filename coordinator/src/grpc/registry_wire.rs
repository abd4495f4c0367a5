//! The model registry's types on the wire.

use super::ApiError;
use crate::registry::service::ServingSet;
use crate::registry::{ModelState, RegistryEntry, Transition};
use fedra_proto::pb;

pub fn state_to_pb(s: ModelState) -> pb::ModelState {
    match s {
        ModelState::Candidate => pb::ModelState::Candidate,
        ModelState::Canary => pb::ModelState::Canary,
        ModelState::Serving => pb::ModelState::Serving,
        ModelState::Retired => pb::ModelState::Retired,
        ModelState::RolledBack => pb::ModelState::RolledBack,
    }
}

/// A promotion's target: canary or serving only.
pub fn promotion_target(field: &str, v: i32) -> Result<ModelState, ApiError> {
    match pb::ModelState::try_from(v) {
        Ok(pb::ModelState::Canary) => Ok(ModelState::Canary),
        Ok(pb::ModelState::Serving) => Ok(ModelState::Serving),
        _ => Err(ApiError::Invalid(format!(
            "{field}: a promotion goes to MODEL_STATE_CANARY or MODEL_STATE_SERVING, got {v}"
        ))),
    }
}

pub fn entry_to_pb(e: &RegistryEntry) -> pb::RegistryEntry {
    pb::RegistryEntry {
        region: e.region.to_string(),
        model_name: e.model.clone(),
        checkpoint_id: e.checkpoint.to_string(),
        state: state_to_pb(e.state) as i32,
        run_id: e.run.to_string(),
        round: e.round,
        updated_ms: e.updated_at.timestamp_millis(),
        gate_passed: e.gate.passed,
        gate_detail: e.gate.detail.clone(),
        accuracy: e.eval.map(|v| v.accuracy),
        loss: e.eval.map(|v| v.loss),
        eval_samples: e.eval.map_or(0, |v| v.samples),
        canary_fraction: e.canary_fraction,
        policy_rule: e.policy.as_ref().map(|p| p.rule.clone()).unwrap_or_default(),
        gate_overridable: e.gate_overridable(),
        approvals_needed: e.approvals_needed(),
        approvers: e.approvers.clone(),
    }
}

pub fn transition_to_pb(t: &Transition) -> pb::ModelTransition {
    pb::ModelTransition {
        seq: t.seq,
        at_ms: t.at.timestamp_millis(),
        region: t.region.to_string(),
        model_name: t.model.clone(),
        checkpoint_id: t.checkpoint.to_string(),
        from: t.from.map_or(pb::ModelState::Unspecified, state_to_pb) as i32,
        to: state_to_pb(t.to) as i32,
        actor: t.actor.clone(),
        reason: t.reason.clone(),
    }
}

pub fn serving_to_pb(region: &str, model: &str, s: &ServingSet) -> pb::ServingSet {
    pb::ServingSet {
        region: region.to_string(),
        model_name: model.to_string(),
        serving: s.serving.as_ref().map(entry_to_pb),
        canary: s.canary.as_ref().map(entry_to_pb),
        candidates: s.candidates.iter().map(entry_to_pb).collect(),
    }
}
