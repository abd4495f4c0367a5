//! Privacy scopes and budgets.
//!
//! A **scope** is the data a run's model touches in one region: `<model>@<region>`. Every
//! region whose clients could take part in a private round is charged that round's cost;
//! runs of the same model name on the same region's data accumulate in one scope.
//!
//! A **budget** caps a scope at ε for a fixed δ. Budgets are configured per deployment
//! (the `[privacy]` table of the coordinator config) until policy files carry them. Rules
//! may leave the model or the region out (= any); the most specific rule wins. A private
//! round whose scope has no budget is refused: spending privacy without a cap is not a
//! default a regulated deployment wants.

use crate::ids::RegionId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// `<model>@<region>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PrivacyScope {
    pub model: String,
    pub region: RegionId,
}

impl PrivacyScope {
    pub fn new(model: impl Into<String>, region: RegionId) -> Self {
        Self { model: model.into(), region }
    }

    /// Parses `<model>@<region>`.
    pub fn parse(text: &str) -> Option<Self> {
        let (model, region) = text.rsplit_once('@')?;
        if model.is_empty() {
            return None;
        }
        Some(Self { model: model.to_string(), region: RegionId::new(region).ok()? })
    }
}

impl fmt::Display for PrivacyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.model, self.region)
    }
}

/// At most `epsilon` at `delta`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub epsilon: f64,
    pub delta: f64,
}

/// One `[[privacy.budgets]]` entry of the coordinator config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudgetRule {
    pub model: Option<String>,
    pub region: Option<String>,
    pub epsilon: f64,
    pub delta: f64,
}

/// A validated budget rule.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetRule {
    pub model: Option<String>,
    pub region: Option<RegionId>,
    pub budget: Budget,
}

/// The deployment's budget rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Budgets {
    rules: Vec<BudgetRule>,
}

/// A budget rule is invalid (the message names the rule by index and the field).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("privacy.budgets[{index}].{field}: {message}")]
pub struct BudgetRuleError {
    pub index: usize,
    pub field: &'static str,
    pub message: String,
}

impl Budgets {
    /// Validates rules: ε in (0, 1000], δ in (0, 0.1], region a valid id, no two rules for
    /// the same (model, region).
    ///
    /// # Errors
    /// The first invalid rule.
    pub fn new(raw: Vec<RawBudgetRule>) -> Result<Self, BudgetRuleError> {
        let mut rules: Vec<BudgetRule> = Vec::with_capacity(raw.len());
        for (index, r) in raw.into_iter().enumerate() {
            let err = |field, message: String| BudgetRuleError { index, field, message };
            if !(r.epsilon.is_finite() && r.epsilon > 0.0 && r.epsilon <= 1000.0) {
                return Err(err("epsilon", format!("must be in (0, 1000], got {}", r.epsilon)));
            }
            if !(r.delta > 0.0 && r.delta <= 0.1) {
                return Err(err("delta", format!("must be in (0, 0.1], got {}", r.delta)));
            }
            let region = match r.region {
                Some(text) => Some(RegionId::new(text).map_err(|e| err("region", e.to_string()))?),
                None => None,
            };
            if let Some(m) = &r.model
                && m.is_empty()
            {
                return Err(err("model", "must not be empty (leave it out to match any model)".into()));
            }
            if rules.iter().any(|o| o.model == r.model && o.region == region) {
                return Err(err("model", "another rule already covers this model and region".into()));
            }
            rules.push(BudgetRule { model: r.model, region, budget: Budget { epsilon: r.epsilon, delta: r.delta } });
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The most specific rule matching `scope`: model and region > region only > model
    /// only > catch-all.
    pub fn for_scope(&self, scope: &PrivacyScope) -> Option<Budget> {
        self.rules
            .iter()
            .filter(|r| r.model.as_deref().is_none_or(|m| m == scope.model))
            .filter(|r| r.region.as_ref().is_none_or(|g| *g == scope.region))
            .max_by_key(|r| (r.region.is_some(), r.model.is_some()))
            .map(|r| r.budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(model: Option<&str>, region: Option<&str>, epsilon: f64) -> RawBudgetRule {
        RawBudgetRule { model: model.map(Into::into), region: region.map(Into::into), epsilon, delta: 1e-6 }
    }

    #[test]
    fn most_specific_rule_wins() {
        let b = Budgets::new(vec![
            rule(None, None, 1.0),
            rule(Some("m"), None, 2.0),
            rule(None, Some("eu"), 3.0),
            rule(Some("m"), Some("eu"), 4.0),
        ])
        .unwrap();
        let scope = |m: &str, r: &str| PrivacyScope::new(m, RegionId::new(r).unwrap());
        assert_eq!(b.for_scope(&scope("m", "eu")).unwrap().epsilon, 4.0);
        assert_eq!(b.for_scope(&scope("x", "eu")).unwrap().epsilon, 3.0);
        assert_eq!(b.for_scope(&scope("m", "us")).unwrap().epsilon, 2.0);
        assert_eq!(b.for_scope(&scope("x", "us")).unwrap().epsilon, 1.0);
        assert_eq!(Budgets::default().for_scope(&scope("m", "eu")), None);
    }

    #[test]
    fn invalid_rules_are_named() {
        let e = Budgets::new(vec![rule(None, None, 1.0), rule(None, None, -1.0)]).unwrap_err();
        assert_eq!(e.to_string(), "privacy.budgets[1].epsilon: must be in (0, 1000], got -1");
        let e = Budgets::new(vec![rule(None, Some("e u"), 1.0)]).unwrap_err();
        assert!(e.to_string().starts_with("privacy.budgets[0].region"), "{e}");
        let e = Budgets::new(vec![rule(Some("m"), None, 1.0), rule(Some("m"), None, 2.0)]).unwrap_err();
        assert!(e.to_string().contains("already covers"), "{e}");
    }

    #[test]
    fn scope_round_trips_through_text() {
        let s = PrivacyScope::new("digits-mlp", RegionId::new("eu-west").unwrap());
        assert_eq!(s.to_string(), "digits-mlp@eu-west");
        assert_eq!(PrivacyScope::parse("digits-mlp@eu-west"), Some(s));
        assert_eq!(PrivacyScope::parse("@eu"), None);
    }
}
