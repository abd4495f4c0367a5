//! The verdict on a run plan at submit time: admitted (with the rules that allowed it),
//! refused (with every finding, not just the first), or parked until enough approvers
//! have approved.
//!
//! What [`PolicySet::admit`] checks can be known before the run starts. Per-round facts
//! (how many clients of an origin actually contributed, the noise actually used) are for
//! [`PolicySet::export_allowed`] and [`PolicySet::may_publish`] at export and publication.

use crate::decide::{Refusal, names};
use crate::rules::{Action, ApprovalConditions, ApprovalRule, Jurisdiction, RuleRef, number};
use crate::set::PolicySet;
use fedra_types::identity::Identity;
use fedra_types::ids::RegionId;
use std::fmt;

/// The facts of a run plan that policies decide on.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFacts {
    pub model: String,
    /// Regions whose clients may take part (= the run's origins); empty means every
    /// declared region.
    pub regions: Vec<RegionId>,
    /// The coordinator's location region: where raw updates are aggregated, unless
    /// `aggregate_in_region`, and where aggregates go.
    pub location: RegionId,
    /// The run is coordinated through regional aggregators (a global coordinator): each
    /// origin's raw updates are aggregated in the origin itself, and only its aggregate
    /// travels to `location`.
    pub aggregate_in_region: bool,
    pub rounds: u32,
    /// The fewest contributors a round may aggregate.
    pub min_clients: u32,
    /// `None` for a non-private run.
    pub privacy: Option<PrivacyFacts>,
    /// Regions the model will be published to; empty means the run's regions.
    pub publish_to: Vec<RegionId>,
    /// Regions the model was trained in by earlier runs.
    pub trained_before: Vec<RegionId>,
    pub submitter: Identity,
}

/// A private run's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacyFacts {
    pub noise_multiplier: f64,
    /// The ε the whole run would spend, projected at the δ of the covering privacy rules
    /// (with several, at the smallest: [`PolicySet::strictest_delta`]).
    pub projected_epsilon: f64,
}

/// One reason in a verdict: a plain-English message and the rule behind it (`None`: no
/// rule allows it, denied by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Option<RuleRef>,
    pub message: String,
}

impl From<Refusal> for Finding {
    fn from(r: Refusal) -> Self {
        Self { rule: r.rule, message: r.reason }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(rule) => write!(f, "{}; see {rule}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What to do with a submitted plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Allowed; `rules` are the rules that allowed it (sorted, without repeats).
    Admit { rules: Vec<RuleRef> },
    /// Not allowed; every reason found.
    Refuse { findings: Vec<Finding> },
    /// Allowed once `approvals_needed` distinct approvers approve: the largest count among
    /// the matching approval rules, one finding per rule.
    PendingApproval { approvals_needed: u32, findings: Vec<Finding> },
}

impl PolicySet {
    /// Decides on a plan. Refuses when the submitter's role may not submit; an origin's
    /// raw updates may not be aggregated at the location; an aggregate would leave an
    /// origin that requires more contributors than `min_clients`, a private release, or
    /// more noise; no privacy rule covers a scope; a private plan's noise multiplier is
    /// below a privacy rule's minimum or its projected ε above the budget; a non-private
    /// plan runs on a scope that forbids it; a publication target is forbidden for some
    /// origin, or a named region is undeclared. Otherwise parks the plan when an approval
    /// rule matches, and admits it if none does.
    pub fn admit(&self, plan: &PlanFacts) -> Verdict {
        let mut allowed: Vec<RuleRef> = Vec::new();
        let mut refused: Vec<Finding> = Vec::new();
        let mut note = |result: Result<RuleRef, Refusal>| match result {
            Ok(rule) => allowed.push(rule),
            Err(refusal) => refused.push(refusal.into()),
        };
        note(self.role_may(plan.submitter.role(), Action::Submit));
        let origins: Vec<RegionId> = if plan.regions.is_empty() {
            self.regions.iter().map(|r| r.name.clone()).collect()
        } else {
            plan.regions.clone()
        };
        let targets = if plan.publish_to.is_empty() { &origins } else { &plan.publish_to };
        for region in origins.iter().chain(targets).chain([&plan.location]) {
            if self.region(region).is_none() {
                note(Err(Refusal::by_default(format!(
                    "region {region} is not declared in the policy set (denied by default)"
                ))));
            }
        }
        let declared = |r: &&RegionId| self.region(r).is_some();
        for origin in origins.iter().filter(declared) {
            let at = if plan.aggregate_in_region { origin } else { &plan.location };
            let aggregated = self.may_aggregate_at(origin, at);
            let covered = aggregated.is_ok();
            note(aggregated);
            let leaves = plan.location != *origin || targets.iter().any(|t| t != origin);
            if let Some(rule) = self.residency_rule(origin).filter(|_| covered && leaves) {
                let needed = rule.export.min_clients;
                if plan.min_clients < needed {
                    note(Err(Refusal::by(
                        &rule.rule,
                        format!(
                            "an aggregate of {origin} data may leave {origin} only with at least {needed} contributors; this run's rounds may aggregate as few as {}",
                            plan.min_clients
                        ),
                    )));
                }
                // Contributors are checked above; this checks the release's privacy.
                note(self.export_allowed(
                    origin,
                    needed.max(plan.min_clients),
                    plan.privacy.map(|p| p.noise_multiplier),
                ));
            }
            note(self.privacy_allows(plan, origin));
            for target in targets.iter().filter(declared) {
                note(self.publish_rule(origin, target));
            }
        }
        if !refused.is_empty() {
            return Verdict::Refuse { findings: dedup(refused) };
        }
        let mut approvals_needed = 0;
        let mut findings = Vec::new();
        for rule in &self.approvals {
            if let Some(why) = self.approval_reason(rule, plan, &origins, targets) {
                let n = rule.approvals;
                approvals_needed = approvals_needed.max(n);
                let s = if n == 1 { "" } else { "s" };
                let message = format!("approval rule {} requires {n} approval{s}: {why}", rule.name);
                findings.push(Finding { rule: Some(rule.rule.clone()), message });
            }
        }
        if !findings.is_empty() {
            return Verdict::PendingApproval { approvals_needed, findings };
        }
        allowed.sort();
        allowed.dedup();
        Verdict::Admit { rules: allowed }
    }

    /// The privacy rule of `model@origin`, if it allows the plan.
    fn privacy_allows(&self, plan: &PlanFacts, origin: &RegionId) -> Result<RuleRef, Refusal> {
        let model = &plan.model;
        let Some(rule) = self.privacy_rule(model, origin) else {
            return Err(Refusal::by_default(format!(
                "no privacy rule covers model {model} on data from {origin}: it may not be trained there (denied by default)"
            )));
        };
        let t = &rule.terms;
        match plan.privacy {
            None if !t.allow_non_private => Err(Refusal::by(
                &rule.rule,
                format!(
                    "model {model} may be trained on {origin} data only with differential privacy; this run is not private"
                ),
            )),
            Some(p) if t.min_noise_multiplier.is_some_and(|min| p.noise_multiplier < min.get()) => Err(Refusal::by(
                &rule.rule,
                format!(
                    "model {model} on {origin} data needs a noise multiplier of at least {}; this run uses {}",
                    t.min_noise_multiplier.map_or(String::new(), |z| z.to_string()),
                    number(p.noise_multiplier)
                ),
            )),
            Some(p) if p.projected_epsilon > t.epsilon.get() => Err(Refusal::by(
                &rule.rule,
                format!(
                    "model {model} on {origin} data has a privacy budget of ε ≤ {} at δ = {}; this run would spend ε = {}",
                    t.epsilon,
                    t.delta,
                    number(p.projected_epsilon)
                ),
            )),
            _ => Ok(rule.rule.clone()),
        }
    }

    /// Why `rule` matches the plan (every set condition holds), or `None`.
    fn approval_reason(
        &self,
        rule: &ApprovalRule,
        plan: &PlanFacts,
        origins: &[RegionId],
        targets: &[RegionId],
    ) -> Option<String> {
        let ApprovalConditions { epsilon_above, publish_outside_jurisdiction, new_region, rounds_above } =
            rule.conditions;
        let mut why = Vec::new();
        if let Some(bound) = epsilon_above {
            match plan.privacy {
                Some(p) if p.projected_epsilon > bound => {
                    why.push(format!("projected ε {} is above {}", number(p.projected_epsilon), number(bound)))
                }
                None => why.push(format!("the run is not private (its ε is unbounded, above {})", number(bound))),
                Some(_) => return None,
            }
        }
        if publish_outside_jurisdiction {
            let jurisdiction = |r: &RegionId| self.jurisdiction(r).cloned();
            let origin_js: Vec<Jurisdiction> = origins.iter().filter_map(jurisdiction).collect();
            let abroad: Vec<&RegionId> =
                targets.iter().filter(|t| jurisdiction(t).is_some_and(|j| origin_js.iter().any(|o| *o != j))).collect();
            if abroad.is_empty() {
                return None;
            }
            why.push(format!("it publishes to {} outside the jurisdiction of some of its data", names(abroad)));
        }
        if new_region {
            let new: Vec<&RegionId> = origins.iter().filter(|r| !plan.trained_before.contains(r)).collect();
            if new.is_empty() {
                return None;
            }
            why.push(format!("model {} was never trained on data from {} before", plan.model, names(new)));
        }
        if let Some(bound) = rounds_above {
            if plan.rounds <= bound {
                return None;
            }
            why.push(format!("{} rounds is more than {bound}", plan.rounds));
        }
        Some(why.join(" and "))
    }
}

/// Findings in first-seen order without repeats (an undeclared region named twice).
fn dedup(findings: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    for f in findings {
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::PolicySource;

    const SET: &str = r#"version = 1
[[region]]
name = "a1"
jurisdiction = "A"
[[residency]]
origin = "*"
aggregate_at = ["*"]
export_min_clients = 1
publish_to = ["*"]
[[privacy]]
model = "*"
region = "*"
epsilon = 10
delta = 1e-5
allow_non_private = true
[[approval]]
name = "big-and-long"
approvals = 3
epsilon_above = 5
rounds_above = 100
[roles]
submit = ["scientist"]
"#;

    fn plan(epsilon: f64, rounds: u32) -> PlanFacts {
        let a1 = RegionId::new("a1").unwrap();
        PlanFacts {
            model: "m".into(),
            regions: vec![],
            location: a1.clone(),
            aggregate_in_region: false,
            rounds,
            min_clients: 1,
            privacy: Some(PrivacyFacts { noise_multiplier: 1.0, projected_epsilon: epsilon }),
            publish_to: vec![],
            trained_before: vec![a1],
            submitter: "fedra://scientist/alice".parse().unwrap(),
        }
    }

    #[test]
    fn an_approval_rule_matches_only_when_all_its_conditions_hold() {
        let src = PolicySource { name: "p.toml".into(), path: "p.toml".into(), text: SET.into() };
        let set = PolicySet::from_sources(vec![src]).unwrap();
        assert!(matches!(set.admit(&plan(6.0, 100)), Verdict::Admit { .. }));
        assert!(matches!(set.admit(&plan(5.0, 101)), Verdict::Admit { .. }));
        match set.admit(&plan(6.0, 101)) {
            Verdict::PendingApproval { approvals_needed: 3, findings } => assert_eq!(
                findings[0].message,
                "approval rule big-and-long requires 3 approvals: projected ε 6 is above 5 and 101 rounds is more than 100"
            ),
            other => panic!("{other:?}"),
        }
        let mut non_private = plan(0.0, 101);
        non_private.privacy = None;
        assert!(
            matches!(set.admit(&non_private), Verdict::PendingApproval { .. }),
            "non-private counts as above any ε"
        );
    }
}
