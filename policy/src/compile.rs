//! Raw tables → validated rules, across all files of a set at once.
//!
//! Regions come first (selectors in any file may name a region declared in any other),
//! then every rule table. Each check that fails pushes a problem and drops only the rule it
//! is in, so one pass reports everything: bad names, numbers out of range, selectors naming
//! nothing, duplicates (with both places), approval rules without a condition.

use crate::error::{Location, PolicyError};
use crate::raw::{
    PolicySource, RawApproval, RawFile, RawPrivacy, RawPromotion, RawResidency, RawRoles, RawScope, SpannedList,
};
use crate::rules::{
    Action, ApprovalConditions, ApprovalRule, CheckpointGrant, CheckpointScope, Delta, Epsilon, ExportTerms,
    Jurisdiction, ModelSelector, NoiseMultiplier, PrivacyRule, PrivacyTerms, PromotionRule, PromotionTerms, Region,
    ResidencyRule, RoleGrant, RuleRef, Selector, number,
};
use crate::set::Roles;
use fedra_types::identity::Role;
use fedra_types::ids::RegionId;
use fedra_types::plan::GateMetric;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use toml::Spanned;

/// The compiled tables of a set, each in file order then position order.
#[derive(Debug, Default)]
pub(crate) struct Compiled {
    pub regions: Vec<Region>,
    pub residency: Vec<ResidencyRule>,
    pub privacy: Vec<PrivacyRule>,
    pub approvals: Vec<ApprovalRule>,
    pub promotions: Vec<PromotionRule>,
    pub roles: Roles,
}

/// Compiles `files` (in set order); the result is only meaningful when `problems` stayed
/// empty.
pub(crate) fn compile(files: &[(&PolicySource, RawFile)], problems: &mut Vec<PolicyError>) -> Compiled {
    let mut out = Compiled::default();
    let resolver = regions(files, &mut out.regions, problems);
    let mut residency_seen = BTreeMap::new();
    let mut privacy_seen = BTreeMap::new();
    let mut approval_seen = BTreeMap::new();
    let mut promotion_seen = BTreeMap::new();
    let mut roles_seen = BTreeMap::new();
    for (src, file) in files {
        let mut c = Ctx { src, problems, resolver: &resolver };
        for (span, raw) in &file.residency {
            if let Some(rule) = c.residency(span, raw) {
                c.unique(&mut residency_seen, rule.origin.clone(), span, "residency", &rule.origin.to_string());
                out.residency.push(rule);
            }
        }
        for (span, raw) in &file.privacy {
            if let Some(rule) = c.privacy(span, raw) {
                let key = (rule.model.clone(), rule.region.clone());
                c.unique(
                    &mut privacy_seen,
                    key,
                    span,
                    "privacy",
                    &format!("model={} region={}", rule.model, rule.region),
                );
                out.privacy.push(rule);
            }
        }
        for (span, raw) in &file.approvals {
            if let Some(rule) = c.approval(span, raw) {
                c.unique(&mut approval_seen, rule.name.clone(), span, "approval", &format!("name={}", rule.name));
                out.approvals.push(rule);
            }
        }
        for (span, raw) in &file.promotions {
            if let Some(rule) = c.promotion(span, raw) {
                let key = (rule.model.clone(), rule.region.clone());
                let selector = format!("model={} region={}", rule.model, rule.region);
                c.unique(&mut promotion_seen, key, span, "promotion", &selector);
                out.promotions.push(rule);
            }
        }
        if let Some(raw) = &file.roles {
            c.roles(raw, &mut out.roles, &mut roles_seen);
        }
    }
    out
}

/// What selectors may name.
struct Resolver {
    regions: BTreeMap<RegionId, Jurisdiction>,
    jurisdictions: BTreeSet<Jurisdiction>,
    /// Region names that failed validation: selectors naming them are not reported again.
    invalid: BTreeSet<String>,
}

/// Collects `[[region]]` from every file; reports bad names, duplicates and region names
/// that are also jurisdiction names (a selector naming one would be ambiguous).
fn regions(files: &[(&PolicySource, RawFile)], out: &mut Vec<Region>, problems: &mut Vec<PolicyError>) -> Resolver {
    let mut first: BTreeMap<RegionId, Location> = BTreeMap::new();
    let mut invalid = BTreeSet::new();
    for (src, file) in files {
        for (span, raw) in &file.regions {
            let name = RegionId::new(raw.name.get_ref().as_str()).map_err(|e| {
                invalid.insert(raw.name.get_ref().clone());
                bad_name(src, &raw.name, "region name", e.reason)
            });
            let jurisdiction = Jurisdiction::new(raw.jurisdiction.get_ref())
                .map_err(|reason| bad_name(src, &raw.jurisdiction, "jurisdiction", reason));
            let (name, jurisdiction) = match (name, jurisdiction) {
                (Ok(n), Ok(j)) => (n, j),
                (n, j) => {
                    problems.extend(n.err().into_iter().chain(j.err()));
                    continue;
                }
            };
            let at = src.location(span.start);
            if let Some(first) = first.get(&name) {
                problems.push(PolicyError::DuplicateRegion { at, first: first.clone(), name: name.to_string() });
                continue;
            }
            first.insert(name.clone(), at);
            let text = format!("region name={name} jurisdiction={jurisdiction}");
            out.push(Region { rule: rule_ref(src, span, text), name, jurisdiction });
        }
    }
    let jurisdictions: BTreeSet<Jurisdiction> = out.iter().map(|r| r.jurisdiction.clone()).collect();
    for r in out.iter().filter(|r| jurisdictions.iter().any(|j| j.as_str() == r.name.as_str())) {
        problems.push(PolicyError::InvalidName {
            at: Location { file: r.rule.file.clone(), line: r.rule.line, column: 1 },
            what: "region name",
            value: r.name.to_string(),
            reason: "it is also the name of a jurisdiction, so selectors naming it would be ambiguous".into(),
        });
    }
    let regions = out.iter().map(|r| (r.name.clone(), r.jurisdiction.clone())).collect();
    Resolver { regions, jurisdictions, invalid }
}

fn bad_name(src: &PolicySource, value: &Spanned<String>, what: &'static str, reason: &str) -> PolicyError {
    PolicyError::InvalidName {
        at: src.location(value.span().start),
        what,
        value: value.get_ref().clone(),
        reason: reason.to_string(),
    }
}

fn rule_ref(src: &PolicySource, span: &Range<usize>, text: String) -> RuleRef {
    RuleRef { file: src.path.clone(), line: src.location(span.start).line, text }
}

/// Model and approval names: the syntax of `fedra_types::model::ModelSpec` names.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) || name.starts_with('.') {
        return Err("only letters, digits, '.', '_' and '-' are allowed, not starting with '.'");
    }
    Ok(())
}

fn list_text<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// One file's compilation context.
struct Ctx<'a> {
    src: &'a PolicySource,
    problems: &'a mut Vec<PolicyError>,
    resolver: &'a Resolver,
}

impl Ctx<'_> {
    fn push(&mut self, problem: PolicyError) {
        self.problems.push(problem);
    }

    /// Reports a second rule with `key`.
    fn unique<K: Ord>(
        &mut self,
        seen: &mut BTreeMap<K, Location>,
        key: K,
        span: &Range<usize>,
        table: &'static str,
        selector: &str,
    ) {
        let at = self.src.location(span.start);
        match seen.get(&key) {
            Some(first) => {
                let first = first.clone();
                self.push(PolicyError::DuplicateRule { at, first, table, selector: selector.to_string() });
            }
            None => {
                seen.insert(key, at);
            }
        }
    }

    fn selector(&mut self, key: &'static str, value: &Spanned<String>) -> Option<Selector> {
        let name = value.get_ref().as_str();
        if name == "*" {
            return Some(Selector::Any);
        }
        if let Ok(region) = RegionId::new(name)
            && self.resolver.regions.contains_key(&region)
        {
            return Some(Selector::Region(region));
        }
        if let Some(j) = self.resolver.jurisdictions.iter().find(|j| j.as_str() == name) {
            return Some(Selector::Jurisdiction(j.clone()));
        }
        if !self.resolver.invalid.contains(name) {
            let regions = self.resolver.regions.keys().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            let jurisdictions = self.resolver.jurisdictions.iter().map(ToString::to_string).collect::<Vec<_>>();
            self.push(PolicyError::UnknownSelector {
                at: self.src.location(value.span().start),
                key,
                name: name.to_string(),
                regions: if regions.is_empty() { "none".into() } else { regions },
                jurisdictions: if jurisdictions.is_empty() { "none".into() } else { jurisdictions.join(", ") },
            });
        }
        None
    }

    /// Every selector of `list` (all problems reported), duplicates removed.
    fn selectors(&mut self, key: &'static str, list: &SpannedList, allow_empty: bool) -> Option<Vec<Selector>> {
        if list.get_ref().is_empty() && !allow_empty {
            let at = self.src.location(list.span().start);
            self.push(PolicyError::EmptyList { at, key, item: "region, jurisdiction or \"*\"" });
            return None;
        }
        let resolved: Vec<Option<Selector>> = list.get_ref().iter().map(|item| self.selector(key, item)).collect();
        let mut out: Vec<Selector> = Vec::new();
        for s in resolved {
            let s = s?;
            if !out.contains(&s) {
                out.push(s);
            }
        }
        Some(out)
    }

    fn float<T>(
        &mut self,
        key: &'static str,
        v: &Spanned<f64>,
        new: fn(f64) -> Option<T>,
        expected: &'static str,
    ) -> Option<T> {
        let value = new(*v.get_ref());
        if value.is_none() {
            let at = self.src.location(v.span().start);
            self.push(PolicyError::OutOfRange { at, key, value: number(*v.get_ref()), expected });
        }
        value
    }

    fn count(&mut self, key: &'static str, v: &Spanned<i64>, min: i64, expected: &'static str) -> Option<u32> {
        match u32::try_from(*v.get_ref()) {
            Ok(n) if i64::from(n) >= min => Some(n),
            _ => {
                let at = self.src.location(v.span().start);
                self.push(PolicyError::OutOfRange { at, key, value: v.get_ref().to_string(), expected });
                None
            }
        }
    }

    fn residency(&mut self, span: &Range<usize>, raw: &RawResidency) -> Option<ResidencyRule> {
        let origin = self.selector("origin", &raw.origin);
        let aggregate_at = self.selectors("aggregate_at", &raw.aggregate_at, false);
        let min_clients = self.count("export_min_clients", &raw.export_min_clients, 1, "an integer ≥ 1");
        let noise = raw
            .export_min_noise_multiplier
            .as_ref()
            .map(|v| self.float("export_min_noise_multiplier", v, NoiseMultiplier::new, NoiseMultiplier::EXPECTED));
        let publish_to = self.selectors("publish_to", &raw.publish_to, true);
        let (origin, aggregate_at, min_clients, publish_to) = (origin?, aggregate_at?, min_clients?, publish_to?);
        let min_noise_multiplier = noise.map_or(Some(None), |n| n.map(Some))?;
        let export = ExportTerms { min_clients, dp_required: raw.export_requires_dp, min_noise_multiplier };
        let mut text = format!(
            "residency origin={origin} aggregate_at=[{}] publish_to=[{}] export_min_clients={min_clients}",
            list_text(&aggregate_at),
            list_text(&publish_to)
        );
        if export.requires_dp() {
            text.push_str(" export_requires_dp=true");
        }
        if let Some(z) = min_noise_multiplier {
            text.push_str(&format!(" export_min_noise_multiplier={z}"));
        }
        Some(ResidencyRule { origin, aggregate_at, export, publish_to, rule: rule_ref(self.src, span, text) })
    }

    fn privacy(&mut self, span: &Range<usize>, raw: &RawPrivacy) -> Option<PrivacyRule> {
        let model = self.model(&raw.model);
        let region = self.selector("region", &raw.region);
        let epsilon = self.float("epsilon", &raw.epsilon, Epsilon::new, Epsilon::EXPECTED);
        let delta = self.float("delta", &raw.delta, Delta::new, Delta::EXPECTED);
        let noise = raw
            .min_noise_multiplier
            .as_ref()
            .map(|v| self.float("min_noise_multiplier", v, NoiseMultiplier::new, NoiseMultiplier::EXPECTED));
        let (model, region, epsilon, delta) = (model?, region?, epsilon?, delta?);
        let min_noise_multiplier = noise.map_or(Some(None), |n| n.map(Some))?;
        let terms = PrivacyTerms {
            epsilon,
            delta,
            min_noise_multiplier,
            allow_non_private: raw.allow_non_private,
            per_client_metrics: raw.per_client_metrics,
        };
        let mut text = format!("privacy model={model} region={region} epsilon={epsilon} delta={delta}");
        if let Some(z) = min_noise_multiplier {
            text.push_str(&format!(" min_noise_multiplier={z}"));
        }
        if terms.allow_non_private {
            text.push_str(" allow_non_private=true");
        }
        if terms.per_client_metrics {
            text.push_str(" per_client_metrics=true");
        }
        Some(PrivacyRule { model, region, terms, rule: rule_ref(self.src, span, text) })
    }

    fn model(&mut self, value: &Spanned<String>) -> Option<ModelSelector> {
        match value.get_ref().as_str() {
            "*" => Some(ModelSelector::Any),
            name => match check_name(name) {
                Ok(()) => Some(ModelSelector::Named(name.to_string())),
                Err(reason) => {
                    self.push(bad_name(self.src, value, "model name", reason));
                    None
                }
            },
        }
    }

    fn promotion(&mut self, span: &Range<usize>, raw: &RawPromotion) -> Option<PromotionRule> {
        let model = self.model(&raw.model);
        let region = self.selector("region", &raw.region);
        let tolerance = raw
            .tolerance
            .as_ref()
            .map(|v| self.float("tolerance", v, |x| (x.is_finite() && x >= 0.0).then_some(x), "a finite number ≥ 0"));
        let gap = raw
            .max_region_gap
            .as_ref()
            .map(|v| self.float("max_region_gap", v, |x| (x > 0.0 && x <= 1.0).then_some(x), "a number in (0, 1]"));
        let samples = raw.min_samples.as_ref().map(|v| self.count("min_samples", v, 0, "an integer ≥ 0"));
        let approvals = raw.approvals.as_ref().map(|v| self.count("approvals", v, 0, "an integer ≥ 0"));
        let (model, region) = (model?, region?);
        let terms = PromotionTerms {
            metric: raw.metric,
            tolerance: tolerance.map_or(Some(None), |v| v.map(Some))?,
            min_samples: samples.map_or(Some(None), |v| v.map(|n| Some(u64::from(n))))?,
            max_region_gap: gap.map_or(Some(None), |v| v.map(Some))?,
            approvals: approvals.map_or(Some(0), |v| v)?,
            allow_override: raw.allow_override,
        };
        if !terms.has_gate() && terms.approvals == 0 {
            let selector = format!("model={model} region={region}");
            self.push(PolicyError::NoRequirement { at: self.src.location(span.start), selector });
            return None;
        }
        let mut text = format!("promotion model={model} region={region}");
        if let Some(t) = terms.tolerance {
            let metric = match terms.metric {
                GateMetric::Accuracy => "accuracy",
                GateMetric::Loss => "loss",
            };
            text.push_str(&format!(" metric={metric} tolerance={}", number(t)));
        }
        if let Some(n) = terms.min_samples {
            text.push_str(&format!(" min_samples={n}"));
        }
        if let Some(g) = terms.max_region_gap {
            text.push_str(&format!(" max_region_gap={}", number(g)));
        }
        if terms.approvals > 0 {
            text.push_str(&format!(" approvals={}", terms.approvals));
        }
        if terms.allow_override {
            text.push_str(" allow_override=true");
        }
        Some(PromotionRule { model, region, terms, rule: rule_ref(self.src, span, text) })
    }

    fn approval(&mut self, span: &Range<usize>, raw: &RawApproval) -> Option<ApprovalRule> {
        let name = match check_name(raw.name.get_ref()) {
            Ok(()) => Some(raw.name.get_ref().clone()),
            Err(reason) => {
                self.push(bad_name(self.src, &raw.name, "approval name", reason));
                None
            }
        };
        let approvals = self.count("approvals", &raw.approvals, 1, "an integer ≥ 1");
        let above = raw.epsilon_above.as_ref().map(|v| {
            self.float("epsilon_above", v, |x| (x.is_finite() && x >= 0.0).then_some(x), "a finite number ≥ 0")
        });
        let rounds = raw.rounds_above.as_ref().map(|v| self.count("rounds_above", v, 0, "an integer ≥ 0"));
        let (name, approvals) = (name?, approvals?);
        let conditions = ApprovalConditions {
            epsilon_above: above.map_or(Some(None), |v| v.map(Some))?,
            publish_outside_jurisdiction: raw.publish_outside_jurisdiction == Some(true),
            new_region: raw.new_region == Some(true),
            rounds_above: rounds.map_or(Some(None), |v| v.map(Some))?,
        };
        let c = &conditions;
        if c.epsilon_above.is_none() && !c.publish_outside_jurisdiction && !c.new_region && c.rounds_above.is_none() {
            self.push(PolicyError::NoCondition { at: self.src.location(span.start), name });
            return None;
        }
        let mut text = format!("approval name={name} approvals={approvals}");
        if let Some(e) = c.epsilon_above {
            text.push_str(&format!(" epsilon_above={}", number(e)));
        }
        if c.publish_outside_jurisdiction {
            text.push_str(" publish_outside_jurisdiction=true");
        }
        if c.new_region {
            text.push_str(" new_region=true");
        }
        if let Some(r) = c.rounds_above {
            text.push_str(&format!(" rounds_above={r}"));
        }
        Some(ApprovalRule { name, approvals, conditions, rule: rule_ref(self.src, span, text) })
    }

    fn role(&mut self, name: &Spanned<String>) -> Option<Role> {
        let role = name.get_ref().parse::<Role>().ok();
        if role.is_none() {
            let at = self.src.location(name.span().start);
            self.push(PolicyError::UnknownRole { at, name: name.get_ref().clone() });
        }
        role
    }

    /// Merges one file's `[roles]` into `roles`; each key may be set in one file only.
    fn roles(&mut self, raw: &RawRoles, roles: &mut Roles, seen: &mut BTreeMap<String, Location>) {
        let lists = [
            (Action::Submit, &raw.submit),
            (Action::Approve, &raw.approve),
            (Action::CancelAny, &raw.cancel_any),
            (Action::ReadAudit, &raw.read_audit),
        ];
        for (action, list) in lists {
            let Some(list) = list else { continue };
            let parsed: Vec<Option<Role>> = list.get_ref().iter().map(|name| self.role(name)).collect();
            let Some(parsed) = parsed.into_iter().collect::<Option<Vec<Role>>>() else { continue };
            let mut granted: Vec<Role> = Vec::new();
            for role in parsed {
                if !granted.contains(&role) {
                    granted.push(role);
                }
            }
            self.unique(seen, action.key().to_string(), &list.span(), "roles", action.key());
            let text = format!("roles {}=[{}]", action.key(), list_text(&granted));
            roles.grants.insert(action, RoleGrant { roles: granted, rule: rule_ref(self.src, &list.span(), text) });
        }
        for (name, scope) in raw.read_checkpoints.iter().flatten() {
            let role = self.role(name);
            let scope_value = match scope.get_ref() {
                RawScope::Word(w) if w == "own" => match role {
                    Some(r) if !r.is_regional() => {
                        self.push(PolicyError::InvalidValue {
                            at: self.src.location(scope.span().start),
                            key: format!("read_checkpoints.{r}"),
                            value: w.clone(),
                            expected: "\"all\" or a list of regions: \"own\" applies only to roles bound to a region (client, regional-aggregator, inference)".into(),
                        });
                        None
                    }
                    _ => Some(CheckpointScope::Own),
                },
                RawScope::Word(w) if w == "all" => Some(CheckpointScope::All),
                RawScope::Word(w) => {
                    self.push(PolicyError::InvalidValue {
                        at: self.src.location(scope.span().start),
                        key: format!("read_checkpoints.{}", name.get_ref()),
                        value: w.clone(),
                        expected: "\"own\", \"all\" or a list of regions and jurisdictions".into(),
                    });
                    None
                }
                RawScope::List(items) => {
                    let list = Spanned::new(scope.span(), items.clone());
                    self.selectors("read_checkpoints", &list, false).map(CheckpointScope::Regions)
                }
            };
            let (Some(role), Some(scope_value)) = (role, scope_value) else { continue };
            let key = format!("read_checkpoints.{role}");
            self.unique(seen, key.clone(), &name.span(), "roles", &key);
            let text = match &scope_value {
                CheckpointScope::Own => format!("roles {key}=own"),
                CheckpointScope::All => format!("roles {key}=all"),
                CheckpointScope::Regions(s) => format!("roles {key}=[{}]", list_text(s)),
            };
            let rule = rule_ref(self.src, &name.span(), text);
            roles.checkpoints.insert(role, CheckpointGrant { scope: scope_value, rule });
        }
    }
}
