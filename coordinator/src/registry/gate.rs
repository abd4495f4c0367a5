//! The promotion gate: whether a run's published checkpoint may serve in a region, judged
//! on the region's clients' held-out evaluation (federated evaluation of the run's final
//! round) against the checkpoint serving there now.
//!
//! Per region, every check must pass:
//! - the candidate was evaluated on at least `min_samples` held-out samples there;
//! - it is not worse than the serving checkpoint's recorded evaluation in that region by
//!   more than `tolerance` on the plan's metric (no serving checkpoint: nothing to be worse
//!   than);
//! - fairness: the gap between the candidate's best and worst region accuracy is at most
//!   `max_region_gap` (when set); a gap beyond it fails every region, since it is one
//!   model that treats regions unequally.
//!
//! The same checks come from the run plan's `[promotion]` and, where the policy has a
//! `[[promotion]]` rule for the region and model, from that rule ([`GateTerms`] for both);
//! the registry requires both verdicts.
//!
//! The serving checkpoint's numbers are those recorded when it was gated (its own run's
//! final evaluation, on the same region's clients): the two were not necessarily measured
//! on the same clients or on the same day. A gate that re-evaluates both side by side in one
//! round is the stronger design; this one needs no extra round.

use super::{RegionEval, Verdict};
use crate::ids::RegionId;
use fedra_policy::rules::PromotionTerms;
use fedra_types::plan::{GateMetric, PromotionPlan};
use std::collections::BTreeMap;

/// The measurable part of a gate, from a run plan's `[promotion]` or a policy's
/// `[[promotion]]` rule; `None` bounds are not checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateTerms {
    pub metric: GateMetric,
    pub tolerance: Option<f64>,
    pub min_samples: u64,
    pub max_region_gap: Option<f64>,
}

impl From<&PromotionPlan> for GateTerms {
    fn from(plan: &PromotionPlan) -> Self {
        Self {
            metric: plan.metric,
            tolerance: Some(plan.tolerance),
            min_samples: plan.min_samples,
            max_region_gap: (plan.max_region_gap > 0.0).then_some(plan.max_region_gap),
        }
    }
}

impl From<&PromotionTerms> for GateTerms {
    fn from(t: &PromotionTerms) -> Self {
        Self {
            metric: t.metric,
            tolerance: t.tolerance,
            min_samples: t.min_samples.unwrap_or(0),
            max_region_gap: t.max_region_gap,
        }
    }
}

/// The verdict for each of `regions`.
pub fn judge(
    terms: impl Into<GateTerms>,
    regions: &[RegionId],
    candidate: &BTreeMap<RegionId, RegionEval>,
    serving: &BTreeMap<RegionId, RegionEval>,
) -> BTreeMap<RegionId, Verdict> {
    let terms = terms.into();
    let fairness = fairness(&terms, candidate);
    regions
        .iter()
        .map(|region| {
            let mut checks = Vec::new();
            let mut passed = true;
            match candidate.get(region) {
                None => {
                    let compared = terms.tolerance.is_some() && serving.contains_key(region);
                    let ok = terms.min_samples == 0 && !compared;
                    passed &= ok;
                    checks.push(if ok {
                        "not evaluated here, and nothing to compare with".to_string()
                    } else {
                        "not evaluated in this region (the plan has no [evaluation], or no client here answered)"
                            .to_string()
                    });
                }
                Some(c) => {
                    let ok = c.samples >= terms.min_samples;
                    passed &= ok;
                    checks.push(format!(
                        "{} {} {} evaluation samples",
                        c.samples,
                        if ok { "≥" } else { "<" },
                        terms.min_samples
                    ));
                    match (serving.get(region), terms.tolerance) {
                        (_, None) => {}
                        (None, Some(_)) => checks.push("nothing serves here yet".into()),
                        (Some(s), Some(tol)) => {
                            let (ok, text) = compare(terms.metric, tol, c, s);
                            passed &= ok;
                            checks.push(text);
                        }
                    }
                }
            }
            if let Some((ok, text)) = &fairness {
                passed &= ok;
                checks.push(text.clone());
            }
            (region.clone(), Verdict { passed, detail: checks.join("; ") })
        })
        .collect()
}

fn compare(metric: GateMetric, tol: f64, c: &RegionEval, s: &RegionEval) -> (bool, String) {
    match metric {
        GateMetric::Accuracy => {
            let ok = c.accuracy >= s.accuracy - tol;
            let sign = if ok { "≥" } else { "<" };
            (ok, format!("accuracy {:.4} {sign} serving {:.4} − tolerance {tol}", c.accuracy, s.accuracy))
        }
        GateMetric::Loss => {
            let ok = c.loss <= s.loss + tol;
            let sign = if ok { "≤" } else { ">" };
            (ok, format!("loss {:.4} {sign} serving {:.4} + tolerance {tol}", c.loss, s.loss))
        }
    }
}

/// The fairness check over the candidate's evaluated regions, when the terms bound the gap.
fn fairness(terms: &GateTerms, candidate: &BTreeMap<RegionId, RegionEval>) -> Option<(bool, String)> {
    let bound = terms.max_region_gap?;
    if candidate.len() < 2 {
        return None;
    }
    let by_accuracy =
        |a: &&(&RegionId, &RegionEval), b: &&(&RegionId, &RegionEval)| a.1.accuracy.total_cmp(&b.1.accuracy);
    let entries: Vec<_> = candidate.iter().collect();
    let best = entries.iter().max_by(by_accuracy)?;
    let worst = entries.iter().min_by(by_accuracy)?;
    let gap = best.1.accuracy - worst.1.accuracy;
    let ok = gap <= bound;
    Some((
        ok,
        format!(
            "region gap {gap:.4} ({} {:.4} − {} {:.4}) {} {bound}",
            best.0,
            best.1.accuracy,
            worst.0,
            worst.1.accuracy,
            if ok { "≤" } else { ">" },
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegionId {
        RegionId::new(s).unwrap()
    }

    fn eval(accuracy: f64, samples: u64) -> RegionEval {
        RegionEval { accuracy, loss: 1.0 - accuracy, samples }
    }

    #[test]
    fn a_candidate_worse_beyond_the_tolerance_fails_only_in_that_region() {
        let plan = PromotionPlan { tolerance: 0.02, min_samples: 50, ..PromotionPlan::default() };
        let regions = [r("eu"), r("us"), r("ap")];
        let candidate =
            BTreeMap::from([(r("eu"), eval(0.80, 100)), (r("us"), eval(0.90, 100)), (r("ap"), eval(0.9, 10))]);
        let serving = BTreeMap::from([(r("eu"), eval(0.85, 100)), (r("us"), eval(0.91, 100))]);
        let v = judge(&plan, &regions, &candidate, &serving);
        assert!(!v[&r("eu")].passed, "{}", v[&r("eu")].detail);
        assert!(v[&r("eu")].detail.contains("accuracy 0.8000 < serving 0.8500"), "{}", v[&r("eu")].detail);
        assert!(v[&r("us")].passed, "{}", v[&r("us")].detail);
        assert!(!v[&r("ap")].passed && v[&r("ap")].detail.contains("10 < 50"), "{}", v[&r("ap")].detail);
    }

    #[test]
    fn loss_is_lower_better_and_an_unevaluated_region_fails_unless_nothing_is_asked() {
        let plan =
            PromotionPlan { metric: GateMetric::Loss, tolerance: 0.0, min_samples: 1, ..PromotionPlan::default() };
        let serving = BTreeMap::from([(r("eu"), eval(0.7, 10))]);
        let better = BTreeMap::from([(r("eu"), eval(0.8, 10))]);
        assert!(judge(&plan, &[r("eu")], &better, &serving)[&r("eu")].passed);
        let worse = BTreeMap::from([(r("eu"), eval(0.6, 10))]);
        assert!(!judge(&plan, &[r("eu")], &worse, &serving)[&r("eu")].passed);
        assert!(!judge(&plan, &[r("eu")], &BTreeMap::new(), &BTreeMap::new())[&r("eu")].passed);
        let lax = PromotionPlan { min_samples: 0, ..plan };
        assert!(judge(&lax, &[r("eu")], &BTreeMap::new(), &BTreeMap::new())[&r("eu")].passed);
        assert!(!judge(&lax, &[r("eu")], &BTreeMap::new(), &serving)[&r("eu")].passed);
    }

    #[test]
    fn an_unfair_gap_fails_every_region() {
        let plan = PromotionPlan { max_region_gap: 0.1, ..PromotionPlan::default() };
        let candidate = BTreeMap::from([(r("eu"), eval(0.95, 10)), (r("us"), eval(0.80, 10))]);
        let v = judge(&plan, &[r("eu"), r("us")], &candidate, &BTreeMap::new());
        assert!(v.values().all(|v| !v.passed));
        assert!(
            v[&r("eu")].detail.contains("region gap 0.1500 (eu 0.9500 − us 0.8000) > 0.1"),
            "{}",
            v[&r("eu")].detail
        );
        let fair = BTreeMap::from([(r("eu"), eval(0.85, 10)), (r("us"), eval(0.80, 10))]);
        assert!(judge(&plan, &[r("eu"), r("us")], &fair, &BTreeMap::new()).values().all(|v| v.passed));
    }
}
