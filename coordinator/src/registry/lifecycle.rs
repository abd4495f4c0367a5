//! The registry's state machine, as pure functions from one (region, model)'s entries to
//! the [`Move`]s a command makes. The invariant every function keeps (and the property
//! test checks over random command sequences): at most one `serving` and at most one
//! `canary` per (region, model), and a canary only beside a serving checkpoint.

use super::{ModelState, Move, RegistryEntry, RegistryError};
use crate::ids::CheckpointId;
use fedra_types::plan::{PromoteTo, PromotionPlan};

fn find(entries: &[RegistryEntry], state: ModelState) -> Option<&RegistryEntry> {
    entries.iter().find(|e| e.state == state)
}

fn moved(e: &RegistryEntry, to: ModelState, canary_fraction: Option<f64>) -> Move {
    Move {
        region: e.region.clone(),
        model: e.model.clone(),
        checkpoint: e.checkpoint.clone(),
        from: e.state,
        to,
        canary_fraction,
    }
}

/// Promotes `checkpoint` (a candidate, or the canary) to `to` in one (region, model).
///
/// - To `serving`: the serving checkpoint, if another, is retired.
/// - To `canary`: needs a serving checkpoint to run beside; a previous canary goes back to
///   candidate (it was not judged bad).
///
/// # Errors
/// [`RegistryError`] naming what stands in the way: a failed gate unless `override_gate`
/// (and never when the policy's rule failed it without allowing overrides), approvals the
/// policy requires and the entry does not have yet.
pub fn promote(
    entries: &[RegistryEntry],
    checkpoint: &CheckpointId,
    to: ModelState,
    override_gate: bool,
    canary_fraction: f64,
) -> Result<Vec<Move>, RegistryError> {
    if !matches!(to, ModelState::Canary | ModelState::Serving) {
        return Err(RegistryError::BadTarget(to));
    }
    let entry = entries.iter().find(|e| &e.checkpoint == checkpoint).ok_or_else(|| RegistryError::NotRegistered {
        region: entries
            .first()
            .map(|e| e.region.clone())
            .unwrap_or_else(|| crate::ids::RegionId::new("unknown").expect("valid")),
        model: entries.first().map(|e| e.model.clone()).unwrap_or_default(),
        checkpoint: checkpoint.clone(),
    })?;
    let promotable =
        matches!((entry.state, to), (ModelState::Candidate, _) | (ModelState::Canary, ModelState::Serving));
    if !promotable {
        return Err(RegistryError::NotPromotable {
            region: entry.region.clone(),
            checkpoint: checkpoint.clone(),
            state: entry.state,
        });
    }
    if let Some(policy) = entry.policy.as_ref().filter(|_| !entry.gate_overridable()) {
        return Err(RegistryError::PolicyGateFailed {
            region: entry.region.clone(),
            checkpoint: checkpoint.clone(),
            rule: policy.rule.clone(),
            detail: entry.gate.detail.clone(),
        });
    }
    if !entry.gate.passed && !override_gate {
        return Err(RegistryError::GateFailed {
            region: entry.region.clone(),
            checkpoint: checkpoint.clone(),
            detail: entry.gate.detail.clone(),
        });
    }
    let mut moves = Vec::new();
    match to {
        ModelState::Serving => {
            if let Some(s) = find(entries, ModelState::Serving) {
                moves.push(moved(s, ModelState::Retired, None));
            }
            moves.push(moved(entry, ModelState::Serving, None));
        }
        _ => {
            if find(entries, ModelState::Serving).is_none() {
                return Err(RegistryError::Invalid(format!(
                    "nothing serves {} in region {} for a canary to run beside: promote {checkpoint} to serving",
                    entry.model, entry.region
                )));
            }
            if !(canary_fraction > 0.0 && canary_fraction < 1.0) {
                return Err(RegistryError::Invalid(format!(
                    "canary_fraction must be in (0, 1), got {canary_fraction}"
                )));
            }
            if let Some(c) = find(entries, ModelState::Canary) {
                moves.push(moved(c, ModelState::Candidate, None));
            }
            moves.push(moved(entry, ModelState::Canary, Some(canary_fraction)));
        }
    }
    // Last, so that a refusal for any other reason comes first: an approval is recorded
    // only for a promotion that its approvals alone stand in the way of.
    if !entry.approved() && entry.state == ModelState::Candidate {
        return Err(RegistryError::AwaitingApprovals {
            region: entry.region.clone(),
            checkpoint: checkpoint.clone(),
            needed: entry.approvals_needed(),
            have: u32::try_from(entry.approvers.len()).unwrap_or(u32::MAX),
            approvers: if entry.approvers.is_empty() { "none yet".into() } else { entry.approvers.join(", ") },
        });
    }
    Ok(moves)
}

/// Takes the canary, if any, out of service; otherwise the serving checkpoint, restoring
/// the most recently retired one in its place.
///
/// # Errors
/// [`RegistryError::NothingServing`]; [`RegistryError::Invalid`] when the serving one has
/// no predecessor to restore (roll back would leave the region without a model).
pub fn rollback(entries: &[RegistryEntry]) -> Result<Vec<Move>, RegistryError> {
    if let Some(c) = find(entries, ModelState::Canary) {
        return Ok(vec![moved(c, ModelState::RolledBack, None)]);
    }
    let Some(serving) = find(entries, ModelState::Serving) else {
        let (region, model) = entries
            .first()
            .map(|e| (e.region.clone(), e.model.clone()))
            .ok_or_else(|| RegistryError::Invalid("no such region and model in the registry".into()))?;
        return Err(RegistryError::NothingServing { region, model });
    };
    let previous = entries
        .iter()
        .filter(|e| e.state == ModelState::Retired)
        .max_by(|a, b| a.updated_at.cmp(&b.updated_at).then_with(|| a.round.cmp(&b.round)))
        .ok_or_else(|| {
            RegistryError::Invalid(format!(
                "{} is the first checkpoint to serve {} in region {}: there is no previous one to restore",
                serving.checkpoint, serving.model, serving.region
            ))
        })?;
    Ok(vec![moved(serving, ModelState::RolledBack, None), moved(previous, ModelState::Serving, None)])
}

/// What a newly registered candidate becomes right away: the plan's `promote_to` when the
/// gate passed. A canary needs something serving beside it; the first checkpoint of a
/// region therefore serves directly.
pub fn on_registration(
    plan: &PromotionPlan,
    entries: &[RegistryEntry],
    candidate: &CheckpointId,
) -> Result<Vec<Move>, RegistryError> {
    // Approvals are people's decisions: nothing the policy wants approved moves by rule.
    let passed = entries.iter().any(|e| &e.checkpoint == candidate && e.gate.passed && e.approved());
    let to = match plan.promote_to {
        PromoteTo::None => return Ok(Vec::new()),
        _ if !passed => return Ok(Vec::new()),
        PromoteTo::Canary if find(entries, ModelState::Serving).is_some() => ModelState::Canary,
        PromoteTo::Canary | PromoteTo::Serving => ModelState::Serving,
    };
    promote(entries, candidate, to, false, plan.canary_fraction)
}

/// The canary rule's decision on a node's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryDecision {
    Promote,
    RollBack,
}

/// After `canary_min_requests` canary requests: promote when its error rate is at most
/// `canary_max_error_rate`, roll back otherwise. Nothing before, or without a rule.
pub fn canary_rule(plan: &PromotionPlan, requests: u64, errors: u64) -> Option<CanaryDecision> {
    if plan.canary_min_requests == 0 || requests < plan.canary_min_requests {
        return None;
    }
    let rate = errors as f64 / requests as f64;
    Some(if rate <= plan.canary_max_error_rate { CanaryDecision::Promote } else { CanaryDecision::RollBack })
}

/// Applies moves to entries in memory, as the store does (tests, and previews).
pub fn apply(entries: &mut [RegistryEntry], moves: &[Move]) {
    for m in moves {
        if let Some(e) = entries.iter_mut().find(|e| e.checkpoint == m.checkpoint) {
            e.state = m.to;
            if let Some(f) = m.canary_fraction {
                e.canary_fraction = f;
            }
            e.updated_at += chrono::Duration::microseconds(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RegionId, RunId};
    use crate::registry::{PolicyGate, Verdict};
    use proptest::prelude::*;

    fn entry(i: u32, passed: bool) -> RegistryEntry {
        let run = RunId::new(format!("run{i}")).unwrap();
        RegistryEntry {
            region: RegionId::new("eu").unwrap(),
            model: "m".into(),
            checkpoint: CheckpointId::for_round(&run, crate::ids::RoundNumber(1)),
            run,
            round: 1,
            state: ModelState::Candidate,
            gate: Verdict { passed, detail: String::new() },
            eval: None,
            canary_fraction: 0.1,
            updated_at: chrono::DateTime::from_timestamp(i64::from(i), 0).unwrap(),
            policy: None,
            approvers: Vec::new(),
        }
    }

    fn governed(i: u32, passed: bool, allow_override: bool, approvals_needed: u32) -> RegistryEntry {
        let policy = PolicyGate { rule: "promotion.toml:3".into(), passed, allow_override, approvals_needed };
        RegistryEntry { policy: Some(policy), ..entry(i, passed) }
    }

    #[test]
    fn policy_gates_bind_overrides_and_need_their_approvals() {
        use ModelState::*;
        let mut e = vec![entry(0, true), governed(1, false, false, 0), governed(2, false, true, 0)];
        let ids: Vec<_> = e.iter().map(|e| e.checkpoint.clone()).collect();
        let m = promote(&e, &ids[0], Serving, false, 0.1).unwrap();
        apply(&mut e, &m);
        // A policy gate that allows no override refuses even an approver who overrides.
        let err = promote(&e, &ids[1], Serving, true, 0.1).unwrap_err();
        assert!(matches!(&err, RegistryError::PolicyGateFailed { rule, .. } if rule == "promotion.toml:3"), "{err}");
        assert!(matches!(promote(&e, &ids[2], Serving, false, 0.1), Err(RegistryError::GateFailed { .. })));
        assert!(promote(&e, &ids[2], Canary, true, 0.1).is_ok(), "this rule allows overrides");
        // Approvals: refused until enough distinct approvers, then it moves.
        let mut e = vec![governed(3, true, false, 2)];
        let id = e[0].checkpoint.clone();
        e[0].approvers.push("ann".into());
        let err = promote(&e, &id, Serving, false, 0.1).unwrap_err();
        assert!(matches!(err, RegistryError::AwaitingApprovals { needed: 2, have: 1, .. }), "{err}");
        e[0].approvers.push("bob".into());
        assert_eq!(promote(&e, &id, Serving, false, 0.1).unwrap().last().unwrap().to, Serving);
        // Registration never promotes what needs approving.
        let plan = PromotionPlan { promote_to: PromoteTo::Serving, ..PromotionPlan::default() };
        let waiting = vec![governed(4, true, false, 1)];
        assert!(on_registration(&plan, &waiting, &waiting[0].checkpoint).unwrap().is_empty());
    }

    fn states(entries: &[RegistryEntry]) -> Vec<ModelState> {
        entries.iter().map(|e| e.state).collect()
    }

    #[test]
    fn promote_retires_the_serving_one_and_rollback_restores_it() {
        use ModelState::*;
        let mut e = vec![entry(0, true), entry(1, true), entry(2, false)];
        let ids: Vec<_> = e.iter().map(|e| e.checkpoint.clone()).collect();
        let m = promote(&e, &ids[0], Serving, false, 0.1).unwrap();
        apply(&mut e, &m);
        let m = promote(&e, &ids[1], Canary, false, 0.2).unwrap();
        apply(&mut e, &m);
        assert_eq!(states(&e), [Serving, Canary, Candidate]);
        assert_eq!(e[1].canary_fraction, 0.2);
        assert!(matches!(promote(&e, &ids[2], Serving, false, 0.1), Err(RegistryError::GateFailed { .. })));
        let m = promote(&e, &ids[1], Serving, false, 0.1).unwrap();
        apply(&mut e, &m);
        assert_eq!(states(&e), [Retired, Serving, Candidate]);
        let m = rollback(&e).unwrap();
        apply(&mut e, &m);
        assert_eq!(states(&e), [Serving, RolledBack, Candidate]);
        assert!(matches!(rollback(&e), Err(RegistryError::Invalid(_))));
        assert!(matches!(promote(&e, &ids[1], Serving, false, 0.1), Err(RegistryError::NotPromotable { .. })));
        // An approver may override a failed gate.
        let m = promote(&e, &ids[2], Canary, true, 0.1).unwrap();
        apply(&mut e, &m);
        let m = rollback(&e).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].checkpoint.clone(), m[0].to), (ids[2].clone(), RolledBack));
    }

    #[test]
    fn registration_follows_the_plan_and_the_first_checkpoint_serves() {
        let plan = PromotionPlan { promote_to: PromoteTo::Canary, ..PromotionPlan::default() };
        let mut e = vec![entry(0, true)];
        let first = e[0].checkpoint.clone();
        let m = on_registration(&plan, &e, &first).unwrap();
        assert_eq!(m.last().unwrap().to, ModelState::Serving);
        apply(&mut e, &m);
        e.push(entry(1, true));
        let second = e[1].checkpoint.clone();
        assert_eq!(on_registration(&plan, &e, &second).unwrap().last().unwrap().to, ModelState::Canary);
        e.push(entry(2, false));
        let failed = e[2].checkpoint.clone();
        assert!(on_registration(&plan, &e, &failed).unwrap().is_empty());
        let manual = PromotionPlan::default();
        assert!(on_registration(&manual, &e, &second).unwrap().is_empty());
    }

    #[test]
    fn the_canary_rule_decides_only_after_its_requests() {
        let plan = PromotionPlan { canary_min_requests: 100, canary_max_error_rate: 0.01, ..PromotionPlan::default() };
        assert_eq!(canary_rule(&plan, 99, 0), None);
        assert_eq!(canary_rule(&plan, 100, 1), Some(CanaryDecision::Promote));
        assert_eq!(canary_rule(&plan, 100, 2), Some(CanaryDecision::RollBack));
        assert_eq!(canary_rule(&PromotionPlan::default(), 1_000_000, 0), None);
    }

    proptest! {
        /// Any sequence of commands, accepted or refused, keeps at most one serving and one
        /// canary, and never a canary without a serving checkpoint.
        #[test]
        fn commands_keep_one_serving_and_one_canary(
            cmds in proptest::collection::vec((0u8..3, 0usize..5, any::<bool>()), 1..40),
            gates in proptest::collection::vec(any::<bool>(), 5),
        ) {
            let mut e: Vec<_> = gates.iter().enumerate().map(|(i, g)| entry(i as u32, *g)).collect();
            for (kind, target, force) in cmds {
                let id = e[target].checkpoint.clone();
                let result = match kind {
                    0 => promote(&e, &id, ModelState::Serving, force, 0.1),
                    1 => promote(&e, &id, ModelState::Canary, force, 0.1),
                    _ => rollback(&e),
                };
                if let Ok(m) = result {
                    apply(&mut e, &m);
                }
                let serving = e.iter().filter(|x| x.state == ModelState::Serving).count();
                let canary = e.iter().filter(|x| x.state == ModelState::Canary).count();
                prop_assert!(serving <= 1 && canary <= 1);
                prop_assert!(canary == 0 || serving == 1);
            }
        }
    }
}
