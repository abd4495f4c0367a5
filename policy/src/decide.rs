//! Decisions over a compiled set: pure functions the coordinator calls at submit, round
//! start, selection, export and publication, each naming the rule that decided.
//!
//! Deny by default: data of a region no residency rule covers may not be aggregated or
//! published anywhere; an action no `[roles]` entry grants is allowed to nobody; an
//! undeclared region is never allowed anything. Among the rules that match, the most
//! specific applies (region > jurisdiction > `"*"`, and for privacy a named model before
//! `"*"`); duplicates are refused at load time, so at most one rule has the highest
//! specificity and the decision never depends on the order rules were written in.

use crate::rules::{
    Action, CheckpointScope, Jurisdiction, PrivacyRule, PromotionRule, Region, ResidencyRule, RuleRef, Selector, number,
};
use crate::set::PolicySet;
use fedra_types::identity::{Identity, Role};
use fedra_types::ids::RegionId;
use std::fmt;

/// A decision that says no: the plain-English reason, naming regions and numbers, and the
/// rule that decided (`None` when no rule allows it: denied by default).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Refusal {
    pub rule: Option<RuleRef>,
    pub reason: String,
}

impl Refusal {
    pub(crate) fn by(rule: &RuleRef, reason: String) -> Self {
        Self { rule: Some(rule.clone()), reason }
    }

    pub(crate) fn by_default(reason: String) -> Self {
        Self { rule: None, reason }
    }
}

/// `reason; see file:line (rule)`, or the reason alone when denied by default.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(rule) => write!(f, "{}; see {rule}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// Region names joined with ", ".
pub(crate) fn names<'a>(regions: impl IntoIterator<Item = &'a RegionId>) -> String {
    regions.into_iter().map(RegionId::as_str).collect::<Vec<_>>().join(", ")
}

impl PolicySet {
    pub fn region(&self, name: &RegionId) -> Option<&Region> {
        self.regions.iter().find(|r| &r.name == name)
    }

    /// The jurisdiction a declared region belongs to.
    pub fn jurisdiction(&self, region: &RegionId) -> Option<&Jurisdiction> {
        self.region(region).map(|r| &r.jurisdiction)
    }

    /// The declared regions `selectors` cover, in declaration order.
    pub fn expand(&self, selectors: &[Selector]) -> Vec<&RegionId> {
        self.regions
            .iter()
            .filter(|r| selectors.iter().any(|s| s.matches(&r.name, &r.jurisdiction)))
            .map(|r| &r.name)
            .collect()
    }

    /// Whether `selectors` cover `region` (false for an undeclared region).
    pub fn covers(&self, selectors: &[Selector], region: &RegionId) -> bool {
        self.region(region).is_some_and(|r| selectors.iter().any(|s| s.matches(&r.name, &r.jurisdiction)))
    }

    /// The residency rule that applies to data from `origin`: the most specific match.
    pub fn residency_rule(&self, origin: &RegionId) -> Option<&ResidencyRule> {
        let region = self.region(origin)?;
        self.residency
            .iter()
            .filter(|r| r.origin.matches(&region.name, &region.jurisdiction))
            .max_by_key(|r| r.origin.specificity())
    }

    /// The residency rule of a declared `origin`, or why there is none.
    fn residency_for(&self, origin: &RegionId) -> Result<(&Region, &ResidencyRule), Refusal> {
        let region = self.region(origin).ok_or_else(|| {
            Refusal::by_default(format!(
                "region {origin} is not declared in the policy set, so its data may not be used (denied by default)"
            ))
        })?;
        let rule = self.residency_rule(origin).ok_or_else(|| {
            Refusal::by_default(format!(
                "no residency rule covers data from {origin} ({}): it may not be aggregated or published anywhere (denied by default)",
                region.jurisdiction
            ))
        })?;
        Ok((region, rule))
    }

    /// Whether raw client updates from `origin` may be aggregated at `location` (the region
    /// a coordinator or regional aggregator declares).
    ///
    /// # Errors
    /// A [`Refusal`] when either region is undeclared, no rule covers `origin`, or its rule
    /// does not list `location`.
    pub fn may_aggregate_at(&self, origin: &RegionId, location: &RegionId) -> Result<RuleRef, Refusal> {
        let (region, rule) = self.residency_for(origin)?;
        if self.covers(&rule.aggregate_at, location) {
            return Ok(rule.rule.clone());
        }
        Err(Refusal::by(
            &rule.rule,
            format!(
                "raw updates from {origin} ({}) may be aggregated only in {}, not in {location}",
                region.jurisdiction,
                names(self.expand(&rule.aggregate_at))
            ),
        ))
    }

    /// Whether an aggregate with `contributors` clients from `origin`, released with
    /// `noise_multiplier` (`None`: not differentially private), may leave `origin`.
    ///
    /// # Errors
    /// A [`Refusal`] naming the threshold missed: too few contributors, not private where
    /// the rule requires it, or noise below the rule's minimum.
    pub fn export_allowed(
        &self,
        origin: &RegionId,
        contributors: u32,
        noise_multiplier: Option<f64>,
    ) -> Result<RuleRef, Refusal> {
        let (_, rule) = self.residency_for(origin)?;
        let terms = &rule.export;
        let leave = format!("an aggregate of {origin} data may leave {origin} only");
        if contributors < terms.min_clients {
            let reason =
                format!("{leave} with at least {} contributors; this one has {contributors}", terms.min_clients);
            return Err(Refusal::by(&rule.rule, reason));
        }
        match (terms.requires_dp(), noise_multiplier, terms.min_noise_multiplier) {
            (true, None, _) => {
                let reason = format!("{leave} as a differentially private release; this one is not private");
                Err(Refusal::by(&rule.rule, reason))
            }
            (_, Some(z), Some(min)) if z < min.get() => {
                let reason = format!("{leave} with noise multiplier ≥ {min}; this one has {}", number(z));
                Err(Refusal::by(&rule.rule, reason))
            }
            _ => Ok(rule.rule.clone()),
        }
    }

    /// The rule that lets a model trained on `origin` data be published to `target`.
    pub(crate) fn publish_rule(&self, origin: &RegionId, target: &RegionId) -> Result<RuleRef, Refusal> {
        let (_, rule) = self.residency_for(origin)?;
        if self.covers(&rule.publish_to, target) {
            return Ok(rule.rule.clone());
        }
        let allowed = self.expand(&rule.publish_to);
        let reason = if allowed.is_empty() {
            format!("models trained on {origin} data may not be published anywhere, so not to {target}")
        } else {
            format!("models trained on {origin} data may be published only to {}, not to {target}", names(allowed))
        };
        Err(Refusal::by(&rule.rule, reason))
    }

    /// Whether a model trained on data from every one of `origins` may be published to
    /// `target`: each origin's rule must allow it.
    ///
    /// # Errors
    /// The [`Refusal`] of the first origin (in the order given) whose rule does not.
    pub fn may_publish(&self, origins: &[RegionId], target: &RegionId) -> Result<(), Refusal> {
        origins.iter().try_for_each(|origin| self.publish_rule(origin, target).map(drop))
    }

    /// The privacy rule of scope `model@region`: the most specific match (a named model
    /// before `"*"`, then region > jurisdiction > `"*"`).
    pub fn privacy_rule(&self, model: &str, region: &RegionId) -> Option<&PrivacyRule> {
        self.most_specific(&self.privacy, model, region, |p| (&p.model, &p.region))
    }

    /// The promotion rule for checkpoints of `model` serving in `region`: the most specific
    /// match, ranked as for [`Self::privacy_rule`]. `None`: policy adds nothing to the run
    /// plan's own gate there.
    pub fn promotion_rule(&self, model: &str, region: &RegionId) -> Option<&PromotionRule> {
        self.most_specific(&self.promotions, model, region, |p| (&p.model, &p.region))
    }

    /// The rule of a (model, region)-scoped table that applies to `model` in `region`: a
    /// named model before `"*"`, then region > jurisdiction > `"*"`.
    fn most_specific<'a, T>(
        &self,
        rules: &'a [T],
        model: &str,
        region: &RegionId,
        key: impl Fn(&T) -> (&crate::rules::ModelSelector, &Selector),
    ) -> Option<&'a T> {
        let r = self.region(region)?;
        rules
            .iter()
            .filter(|p| {
                let (m, sel) = key(p);
                m.matches(model) && sel.matches(&r.name, &r.jurisdiction)
            })
            .max_by_key(|p| {
                let (m, sel) = key(p);
                (matches!(m, crate::rules::ModelSelector::Named(_)), sel.specificity())
            })
    }

    /// The smallest δ among the privacy rules of `model` on `regions`: the δ at which a
    /// run's ε should be projected for [`crate::PlanFacts`] (ε at a smaller δ is larger,
    /// so this is the conservative figure). `None` when no rule covers any of them.
    pub fn strictest_delta(&self, model: &str, regions: &[RegionId]) -> Option<f64> {
        regions.iter().filter_map(|r| self.privacy_rule(model, r)).map(|p| p.terms.delta.get()).reduce(f64::min)
    }

    /// Whether `role` may perform `action`.
    ///
    /// # Errors
    /// A [`Refusal`] naming the roles that may, or saying no entry grants it to anyone.
    pub fn role_may(&self, role: Role, action: Action) -> Result<RuleRef, Refusal> {
        let Some(grant) = self.roles.grants.get(&action) else {
            return Err(Refusal::by_default(format!(
                "no [roles] entry allows anyone to {} (denied by default)",
                action.describe()
            )));
        };
        if grant.roles.contains(&role) {
            return Ok(grant.rule.clone());
        }
        let who = grant.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
        let who = if who.is_empty() { "nobody".to_string() } else { who };
        Err(Refusal::by(&grant.rule, format!("role {role} may not {} (only: {who})", action.describe())))
    }

    /// Whether `identity` may read checkpoints published to `region`.
    ///
    /// # Errors
    /// A [`Refusal`] when the role has no `read_checkpoints` entry, reads only its own
    /// region and `region` is another, or `region` is outside its list.
    pub fn may_read_checkpoint(&self, identity: &Identity, region: &RegionId) -> Result<RuleRef, Refusal> {
        let role = identity.role();
        let Some(grant) = self.roles.checkpoints.get(&role) else {
            return Err(Refusal::by_default(format!(
                "role {role} may not read checkpoints: no read_checkpoints entry names it (denied by default)"
            )));
        };
        if self.region(region).is_none() {
            return Err(Refusal::by_default(format!(
                "region {region} is not declared in the policy set, so its checkpoints may not be read"
            )));
        }
        let allowed = match &grant.scope {
            CheckpointScope::All => true,
            CheckpointScope::Own => identity.region() == Some(region),
            CheckpointScope::Regions(selectors) => self.covers(selectors, region),
        };
        if allowed {
            return Ok(grant.rule.clone());
        }
        let reason = match &grant.scope {
            CheckpointScope::Own => match identity.region() {
                Some(own) => format!("{identity} may read only checkpoints of its own region {own}, not of {region}"),
                None => format!("{identity} has no region, and role {role} may read only its own region's checkpoints"),
            },
            CheckpointScope::Regions(selectors) => {
                format!("role {role} may read checkpoints only of {}, not of {region}", names(self.expand(selectors)))
            }
            CheckpointScope::All => unreachable!("`All` allows every declared region"),
        };
        Err(Refusal::by(&grant.rule, reason))
    }
}

#[cfg(test)]
mod tests {
    use crate::PolicySet;
    use crate::raw::PolicySource;
    use crate::rules::Action;
    use fedra_types::identity::{Identity, Role};
    use fedra_types::ids::RegionId;

    fn set(text: &str) -> PolicySet {
        let src = PolicySource { name: "p.toml".into(), path: "p.toml".into(), text: text.into() };
        PolicySet::from_sources(vec![src]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn r(name: &str) -> RegionId {
        RegionId::new(name).unwrap()
    }

    const BASE: &str = r#"version = 1
[[region]]
name = "a1"
jurisdiction = "A"
[[region]]
name = "a2"
jurisdiction = "A"
[[region]]
name = "b1"
jurisdiction = "B"
"#;

    #[test]
    fn the_most_specific_residency_rule_decides() {
        let s = set(&format!(
            "{BASE}
[[residency]]
origin = \"*\"
aggregate_at = [\"*\"]
export_min_clients = 1
publish_to = [\"*\"]
[[residency]]
origin = \"A\"
aggregate_at = [\"A\"]
export_min_clients = 5
publish_to = [\"A\"]
[[residency]]
origin = \"a2\"
aggregate_at = [\"a2\"]
export_min_clients = 10
export_min_noise_multiplier = 1.0
publish_to = []
"
        ));
        assert!(s.may_aggregate_at(&r("b1"), &r("a1")).is_ok());
        assert!(s.may_aggregate_at(&r("a1"), &r("a2")).is_ok());
        let refusal = s.may_aggregate_at(&r("a1"), &r("b1")).unwrap_err();
        assert_eq!(refusal.reason, "raw updates from a1 (A) may be aggregated only in a1, a2, not in b1");
        assert_eq!(refusal.rule.as_ref().unwrap().line, 17);
        assert!(s.may_aggregate_at(&r("a2"), &r("a1")).is_err());
        assert!(s.export_allowed(&r("a2"), 10, Some(1.0)).is_ok());
        let e = s.export_allowed(&r("a2"), 9, Some(1.0)).unwrap_err();
        assert!(e.reason.contains("at least 10 contributors; this one has 9"), "{e}");
        assert!(s.export_allowed(&r("a2"), 10, None).unwrap_err().reason.contains("not private"));
        assert!(s.export_allowed(&r("a2"), 10, Some(0.5)).unwrap_err().reason.contains("≥ 1; this one has 0.5"));
        assert!(s.export_allowed(&r("a1"), 5, None).is_ok());
        assert!(s.may_publish(&[r("a1"), r("b1")], &r("a2")).is_ok());
        let e = s.may_publish(&[r("b1"), r("a1")], &r("b1")).unwrap_err();
        assert_eq!(e.reason, "models trained on a1 data may be published only to a1, a2, not to b1");
        assert!(s.may_publish(&[r("a2")], &r("a2")).unwrap_err().reason.contains("not be published anywhere"));
    }

    #[test]
    fn uncovered_and_undeclared_regions_are_denied_by_default() {
        let s = set(BASE);
        let e = s.may_aggregate_at(&r("a1"), &r("a1")).unwrap_err();
        assert!(e.rule.is_none());
        assert!(e.to_string().contains("no residency rule covers data from a1 (A)"), "{e}");
        assert!(s.may_aggregate_at(&r("zz"), &r("a1")).unwrap_err().reason.contains("not declared"));
        assert!(s.role_may(Role::Admin, Action::Submit).unwrap_err().reason.contains("denied by default"));
        assert_eq!(s.jurisdiction(&r("b1")).map(|j| j.as_str()), Some("B"));
        assert!(s.jurisdiction(&r("zz")).is_none());
    }

    #[test]
    fn roles_and_checkpoint_reads() {
        let s = set(&format!(
            "{BASE}
[roles]
submit = [\"scientist\", \"admin\"]
read_checkpoints = {{ inference = \"own\", scientist = \"all\", approver = [\"A\"] }}
"
        ));
        assert!(s.role_may(Role::Scientist, Action::Submit).is_ok());
        let e = s.role_may(Role::Approver, Action::Submit).unwrap_err();
        assert_eq!(e.reason, "role approver may not submit runs (only: scientist, admin)");
        let inference: Identity = "fedra://inference/a1/node".parse().unwrap();
        assert!(s.may_read_checkpoint(&inference, &r("a1")).is_ok());
        assert!(s.may_read_checkpoint(&inference, &r("a2")).unwrap_err().reason.contains("own region a1"));
        let scientist: Identity = "fedra://scientist/alice".parse().unwrap();
        assert!(s.may_read_checkpoint(&scientist, &r("b1")).is_ok());
        let approver: Identity = "fedra://approver/bob".parse().unwrap();
        assert!(s.may_read_checkpoint(&approver, &r("a2")).is_ok());
        assert!(s.may_read_checkpoint(&approver, &r("b1")).is_err());
        let admin: Identity = "fedra://admin/root".parse().unwrap();
        assert!(s.may_read_checkpoint(&admin, &r("a1")).unwrap_err().rule.is_none());
    }

    #[test]
    fn a_named_model_rule_beats_a_regional_wildcard() {
        let s = set(&format!(
            "{BASE}
[[privacy]]
model = \"*\"
region = \"a1\"
epsilon = 1
delta = 1e-6
[[privacy]]
model = \"digits\"
region = \"*\"
epsilon = 3
delta = 1e-5
"
        ));
        assert_eq!(s.privacy_rule("digits", &r("a1")).unwrap().terms.epsilon.get(), 3.0);
        assert_eq!(s.privacy_rule("other", &r("a1")).unwrap().terms.epsilon.get(), 1.0);
        assert!(s.privacy_rule("other", &r("b1")).is_none());
        assert_eq!(s.strictest_delta("digits", &[r("a1"), r("b1")]), Some(1e-5));
        assert_eq!(s.strictest_delta("other", &[r("a1"), r("b1")]), Some(1e-6));
    }
}
