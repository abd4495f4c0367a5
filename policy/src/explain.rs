//! A policy set in plain language, for a compliance officer rather than an engineer: per
//! origin region, where its data may go and under which conditions, then who may do what.
//!
//! Selectors are expanded to the concrete regions they cover (in declaration order), and
//! everything stated is what the decision functions would decide, computed through them
//! (the most specific rule per region), not a paraphrase of the files.

use crate::decide::names;
use crate::rules::{
    Action, ApprovalConditions, CheckpointScope, ExportTerms, ModelSelector, PrivacyRule, PrivacyTerms, PromotionRule,
    PromotionTerms, Region, Selector, number,
};
use crate::set::PolicySet;
use fedra_types::ids::RegionId;
use fedra_types::plan::GateMetric;
use std::fmt::Write as _;

impl PolicySet {
    /// The set in plain language: one section per origin region (sorted by name), then the
    /// roles; with `region`, only that region's section.
    pub fn explain(&self, region: Option<&RegionId>) -> String {
        let mut out = String::new();
        match region {
            Some(name) => match self.region(name) {
                Some(r) => self.explain_region(r, &mut out),
                None => {
                    let _ = writeln!(
                        out,
                        "Region {name} is not declared in this policy set: its data may not be used, and nothing may be published to it."
                    );
                }
            },
            None => {
                let mut regions: Vec<&Region> = self.regions.iter().collect();
                regions.sort_by(|a, b| a.name.cmp(&b.name));
                for r in regions {
                    self.explain_region(r, &mut out);
                    out.push('\n');
                }
                self.explain_roles(&mut out);
            }
        }
        out
    }

    fn explain_region(&self, region: &Region, out: &mut String) {
        let name = &region.name;
        let _ = writeln!(out, "Data from {name} ({}):", region.jurisdiction);
        let mut line = |text: String| {
            let _ = writeln!(out, "  - {text}");
        };
        match self.residency_rule(name) {
            None => line(
                "no residency rule covers this data: its raw updates may not be aggregated anywhere and models trained on it may not be published (denied by default)".into(),
            ),
            Some(rule) => {
                let all = self.regions.len();
                let at = self.expand(&rule.aggregate_at);
                if at.len() == all {
                    line(format!("raw updates may be aggregated in any region: {}", names(at)));
                } else {
                    line(format!("raw updates may be aggregated only in: {}", names(at)));
                }
                line(export_text(name, &rule.export));
                let to = self.expand(&rule.publish_to);
                if to.is_empty() {
                    line("models trained on it may not be published anywhere".into());
                } else if to.len() == all {
                    line(format!("models trained on it may be published to any region: {}", names(to)));
                } else {
                    line(format!("models trained on it may be published to: {}", names(to)));
                }
            }
        }
        let privacy = self.privacy_rules_for(region);
        let general = privacy.iter().find(|p| p.model == ModelSelector::Any);
        match general {
            Some(p) => line(format!("privacy budget: {}", terms_text(&p.terms, " per model"))),
            None if privacy.is_empty() => {
                line("privacy budget: none, so no model may be trained on this data (denied by default)".into())
            }
            None => line(
                "privacy budget: none for models not named below, so they may not be trained on this data (denied by default)"
                    .into(),
            ),
        }
        for p in privacy.iter().filter(|p| p.model != ModelSelector::Any) {
            line(format!("privacy budget for model {}: {}", p.model, terms_text(&p.terms, "")));
        }
        self.explain_promotion(region, out);
        if self.approvals.is_empty() {
            let _ = writeln!(out, "  - approvals: none required");
            return;
        }
        let non_private = privacy.iter().any(|p| p.terms.allow_non_private);
        let _ = writeln!(out, "  - a run on this data waits for approval when:");
        for rule in &self.approvals {
            let n = rule.approvals;
            let _ = writeln!(
                out,
                "      - {}: {n} approval{} (rule {})",
                conditions_text(&rule.conditions, Some(region), non_private),
                if n == 1 { "" } else { "s" },
                rule.name
            );
        }
    }

    /// The privacy rules that apply to `region`: the most specific `"*"` rule, then the
    /// most specific rule of each named model, by model name.
    fn privacy_rules_for(&self, region: &Region) -> Vec<&PrivacyRule> {
        per_model(&self.privacy, region, |p| (&p.model, &p.region), |m| self.privacy_rule(m, &region.name))
    }

    /// The promotion rules that apply to checkpoints serving in `region`, ordered as
    /// [`Self::privacy_rules_for`].
    fn promotion_rules_for(&self, region: &Region) -> Vec<&PromotionRule> {
        per_model(&self.promotions, region, |p| (&p.model, &p.region), |m| self.promotion_rule(m, &region.name))
    }

    fn explain_promotion(&self, region: &Region, out: &mut String) {
        let rules = self.promotion_rules_for(region);
        let general = rules.iter().find(|p| p.model == ModelSelector::Any);
        let _ = match general {
            Some(p) => writeln!(out, "  - a model serves here only when {}", promotion_text(&p.terms)),
            None => {
                writeln!(out, "  - models serve here under their run plan's own promotion gate (no promotion rule)")
            }
        };
        for p in rules.iter().filter(|p| p.model != ModelSelector::Any) {
            let _ = writeln!(out, "  - model {} serves here only when {}", p.model, promotion_text(&p.terms));
        }
    }

    fn explain_roles(&self, out: &mut String) {
        out.push_str("Roles:\n");
        for action in Action::ALL {
            let who = match self.roles.grants.get(&action) {
                None => "nobody (no entry: denied by default)".to_string(),
                Some(g) if g.roles.is_empty() => "nobody".to_string(),
                Some(g) => g.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
            };
            let _ = writeln!(out, "  - {}: {who}", action.describe());
        }
        let readers: Vec<String> = self
            .roles
            .checkpoints
            .iter()
            .map(|(role, grant)| match &grant.scope {
                CheckpointScope::Own => format!("{role} (own region only)"),
                CheckpointScope::All => format!("{role} (all regions)"),
                CheckpointScope::Regions(s) => format!("{role} ({})", names(self.expand(s))),
            })
            .collect();
        let readers =
            if readers.is_empty() { "nobody (no entry: denied by default)".into() } else { readers.join(", ") };
        let _ = writeln!(out, "  - read checkpoints: {readers}");
    }
}

/// "an aggregate may leave eu-west only with at least 10 contributors and as a
/// differentially private release with noise multiplier ≥ 0.8".
pub(crate) fn export_text(origin: &RegionId, t: &ExportTerms) -> String {
    let n = t.min_clients;
    let mut text =
        format!("an aggregate may leave {origin} only with at least {n} contributor{}", if n == 1 { "" } else { "s" });
    if t.requires_dp() {
        text.push_str(" and as a differentially private release");
        if let Some(z) = t.min_noise_multiplier {
            text.push_str(&format!(" with noise multiplier ≥ {z}"));
        }
    }
    text
}

/// "ε ≤ 8 at δ = 1e-6{scope} (minimum noise multiplier 0.8); non-private runs are not
/// allowed; per-client metrics stay in the coordinator".
pub(crate) fn terms_text(t: &PrivacyTerms, scope: &str) -> String {
    let mut text = format!("ε ≤ {} at δ = {}{scope}", t.epsilon, t.delta);
    if let Some(z) = t.min_noise_multiplier {
        text.push_str(&format!(" (minimum noise multiplier {z})"));
    }
    text.push_str(if t.allow_non_private {
        "; non-private runs are allowed"
    } else {
        "; non-private runs are not allowed"
    });
    text.push_str(if t.per_client_metrics {
        "; per-client metrics may leave the coordinator"
    } else {
        "; per-client metrics stay in the coordinator"
    });
    text
}

/// The rules of `rules` that apply in `region` keyed by model: the most specific `"*"`
/// rule, then `lookup` of each named model, by model name.
fn per_model<'a, T>(
    rules: &'a [T],
    region: &Region,
    key: impl Fn(&T) -> (&ModelSelector, &Selector),
    lookup: impl Fn(&str) -> Option<&'a T>,
) -> Vec<&'a T> {
    let mut models: Vec<&str> = rules
        .iter()
        .filter_map(|p| match key(p) {
            (ModelSelector::Named(m), sel) if sel.matches(&region.name, &region.jurisdiction) => Some(m.as_str()),
            _ => None,
        })
        .collect();
    models.sort_unstable();
    models.dedup();
    let general = rules
        .iter()
        .filter(|p| {
            let (model, sel) = key(p);
            *model == ModelSelector::Any && sel.matches(&region.name, &region.jurisdiction)
        })
        .max_by_key(|p| key(p).1.specificity());
    general.into_iter().chain(models.into_iter().filter_map(lookup)).collect()
}

/// "its accuracy is at most 0.01 below the serving checkpoint's, it was evaluated on at
/// least 200 held-out samples here, ... and 2 approvers approved it; the gate cannot be
/// overridden".
pub(crate) fn promotion_text(t: &PromotionTerms) -> String {
    let mut parts = Vec::new();
    if let Some(tol) = t.tolerance {
        parts.push(match t.metric {
            GateMetric::Accuracy => {
                format!("its accuracy is at most {} below the serving checkpoint's", number(tol))
            }
            GateMetric::Loss => format!("its loss is at most {} above the serving checkpoint's", number(tol)),
        });
    }
    if let Some(n) = t.min_samples {
        parts.push(format!("it was evaluated on at least {n} held-out samples here"));
    }
    if let Some(g) = t.max_region_gap {
        parts.push(format!("its best and worst region accuracies differ by at most {}", number(g)));
    }
    if t.approvals > 0 {
        let n = t.approvals;
        parts.push(format!("{n} approver{} approved it", if n == 1 { "" } else { "s" }));
    }
    let last = parts.pop().unwrap_or_default();
    let mut text = if parts.is_empty() { last } else { format!("{} and {last}", parts.join(", ")) };
    if t.has_gate() {
        text.push_str(if t.allow_override {
            "; an approver may override a failed gate, with a reason"
        } else {
            "; a failed gate cannot be overridden"
        });
    }
    text
}

/// An approval rule's conditions, joined with "and"; relative to `origin` when given.
pub(crate) fn conditions_text(c: &ApprovalConditions, origin: Option<&Region>, non_private: bool) -> String {
    let mut parts = Vec::new();
    if let Some(e) = c.epsilon_above {
        let or = if non_private { " (or it is not private)" } else { "" };
        parts.push(format!("its projected ε is above {}{or}", number(e)));
    }
    if c.publish_outside_jurisdiction {
        parts.push(match origin {
            Some(r) => format!("it publishes a model outside {}", r.jurisdiction),
            None => "it publishes a model outside the jurisdiction of its data".into(),
        });
    }
    if c.new_region {
        parts.push(match origin {
            Some(r) => format!("the model was never trained on {} data before", r.name),
            None => "the model was never trained on one of its regions' data before".into(),
        });
    }
    if let Some(n) = c.rounds_above {
        parts.push(format!("it has more than {n} rounds"));
    }
    parts.join(" and ")
}

#[cfg(test)]
mod tests {
    use crate::PolicySet;
    use crate::raw::PolicySource;

    #[test]
    fn what_no_rule_allows_is_said_to_be_denied_by_default() {
        let text = "version = 1\n[[region]]\nname = \"x\"\njurisdiction = \"X\"\n";
        let src = PolicySource { name: "p.toml".into(), path: "p.toml".into(), text: text.into() };
        let set = PolicySet::from_sources(vec![src]).unwrap();
        assert_eq!(
            set.explain(None),
            "Data from x (X):
  - no residency rule covers this data: its raw updates may not be aggregated anywhere and models trained on it may not be published (denied by default)
  - privacy budget: none, so no model may be trained on this data (denied by default)
  - models serve here under their run plan's own promotion gate (no promotion rule)
  - approvals: none required

Roles:
  - submit runs: nobody (no entry: denied by default)
  - approve runs: nobody (no entry: denied by default)
  - cancel any run: nobody (no entry: denied by default)
  - read the audit log: nobody (no entry: denied by default)
  - read checkpoints: nobody (no entry: denied by default)
"
        );
    }
}
