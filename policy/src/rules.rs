//! The validated vocabulary of a compiled policy set: selectors, bounded numbers and one
//! struct per rule table. Values of these types are only ever built from checked input
//! (the newtypes' constructors refuse out-of-range values), so the decision code never
//! re-checks a bound; every rule carries the [`RuleRef`] that lets a refusal name it.

use fedra_types::identity::Role;
use fedra_types::ids::RegionId;
use fedra_types::plan::GateMetric;
use std::fmt;

/// Where a compiled rule came from, for refusals and audit records:
/// `policies/residency.toml:12 (residency origin=EU aggregate_at=[EU] ...)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleRef {
    /// The file's path as the set was loaded.
    pub file: String,
    /// 1-based line of the rule's table header (or of its key for `[roles]` entries).
    pub line: usize,
    /// A short canonical one-line rendering of the rule.
    pub text: String,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.file, self.line, self.text)
    }
}

/// A legal area regions belong to, such as `EU`, `US` or `IN`: 1..=32 of uppercase ASCII
/// letters, digits and `-`, starting with a letter. Uppercase keeps jurisdictions visibly
/// apart from (conventionally lowercase) region names in selectors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jurisdiction(String);

impl Jurisdiction {
    /// # Errors
    /// The reason, when `name` is not 1..=32 of `[A-Z0-9-]` starting with a letter.
    pub fn new(name: &str) -> Result<Self, &'static str> {
        if name.is_empty() || name.len() > 32 {
            return Err("must be 1 to 32 characters");
        }
        if !name.starts_with(|c: char| c.is_ascii_uppercase()) {
            return Err("must start with an uppercase letter");
        }
        if !name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-') {
            return Err("only uppercase letters, digits and '-' are allowed");
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which regions a rule field covers: one region, every region of a jurisdiction, or any.
/// The variant order is the specificity order (`Any` < `Jurisdiction` < `Region`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    Any,
    Jurisdiction(Jurisdiction),
    Region(RegionId),
}

impl Selector {
    /// 2 for a region, 1 for a jurisdiction, 0 for `"*"`: among the rules that match, the
    /// one with the highest specificity applies.
    pub fn specificity(&self) -> u8 {
        match self {
            Selector::Any => 0,
            Selector::Jurisdiction(_) => 1,
            Selector::Region(_) => 2,
        }
    }

    /// Whether `region`, which belongs to `jurisdiction`, is covered.
    pub fn matches(&self, region: &RegionId, jurisdiction: &Jurisdiction) -> bool {
        match self {
            Selector::Any => true,
            Selector::Jurisdiction(j) => j == jurisdiction,
            Selector::Region(r) => r == region,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Any => f.write_str("*"),
            Selector::Jurisdiction(j) => j.fmt(f),
            Selector::Region(r) => r.fmt(f),
        }
    }
}

/// The model a privacy rule covers: one model name, or `"*"` for any.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelSelector {
    Any,
    Named(String),
}

impl ModelSelector {
    pub fn matches(&self, model: &str) -> bool {
        match self {
            ModelSelector::Any => true,
            ModelSelector::Named(name) => name == model,
        }
    }
}

impl fmt::Display for ModelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSelector::Any => f.write_str("*"),
            ModelSelector::Named(name) => f.write_str(name),
        }
    }
}

macro_rules! bounded {
    ($(#[$doc:meta])* $name:ident, $ok:expr, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
        pub struct $name(f64);

        impl $name {
            /// What the constructor accepts, for error messages.
            pub const EXPECTED: &'static str = $expected;

            /// `None` when `value` is outside the documented range (NaN included).
            pub fn new(value: f64) -> Option<Self> {
                let ok: fn(f64) -> bool = $ok;
                ok(value).then_some(Self(value))
            }

            pub fn get(self) -> f64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&number(self.0))
            }
        }
    };
}

bounded!(
    /// A privacy budget's ε: finite and > 0.
    Epsilon, |v| v.is_finite() && v > 0.0, "a finite number > 0"
);
bounded!(
    /// A privacy budget's δ: 0 < δ < 1.
    Delta, |v| v > 0.0 && v < 1.0, "a number between 0 and 1 (both excluded)"
);
bounded!(
    /// A Gaussian noise multiplier z (noise std / clip norm): finite and > 0.
    NoiseMultiplier, |v| v.is_finite() && v > 0.0, "a finite number > 0"
);

/// A number as a reviewer writes it: `8`, `0.8`, `1e-6` (scientific below 0.001 and from
/// 10⁹ on, plain otherwise).
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e9).contains(&a) { format!("{v:e}") } else { format!("{v}") }
}

/// A `[[region]]`: a region name and the jurisdiction it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub name: RegionId,
    pub jurisdiction: Jurisdiction,
    pub rule: RuleRef,
}

/// When an aggregate of an origin's data may leave that origin region.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExportTerms {
    /// At least this many contributors (≥ 1).
    pub min_clients: u32,
    /// `export_requires_dp` as written; see [`ExportTerms::requires_dp`].
    pub dp_required: bool,
    /// The smallest noise multiplier of a release that leaves.
    pub min_noise_multiplier: Option<NoiseMultiplier>,
}

impl ExportTerms {
    /// Whether only a differentially private aggregate may leave: set explicitly, or
    /// implied by a minimum noise multiplier.
    pub fn requires_dp(&self) -> bool {
        self.dp_required || self.min_noise_multiplier.is_some()
    }
}

/// A `[[residency]]` rule: where an origin's raw updates may be aggregated, when its
/// aggregates may leave it, and where models trained on it may be published.
#[derive(Debug, Clone, PartialEq)]
pub struct ResidencyRule {
    pub origin: Selector,
    /// Never empty; written order, duplicates removed.
    pub aggregate_at: Vec<Selector>,
    pub export: ExportTerms,
    /// May be empty: models trained on the origin's data are then published nowhere.
    pub publish_to: Vec<Selector>,
    pub rule: RuleRef,
}

/// What a `[[privacy]]` rule allows for its scope (`model@region`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrivacyTerms {
    pub epsilon: Epsilon,
    pub delta: Delta,
    pub min_noise_multiplier: Option<NoiseMultiplier>,
    pub allow_non_private: bool,
    /// Whether per-client metrics may leave the coordinator.
    pub per_client_metrics: bool,
}

/// A `[[privacy]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyRule {
    pub model: ModelSelector,
    pub region: Selector,
    pub terms: PrivacyTerms,
    pub rule: RuleRef,
}

/// The conditions of an approval rule; at least one is set. A rule matches a run when
/// **all** of its set conditions hold (write two rules for "either").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApprovalConditions {
    /// The run's projected ε is above this (a non-private run counts as above any bound).
    pub epsilon_above: Option<f64>,
    /// A publication target lies outside the jurisdiction of one of the run's origins.
    pub publish_outside_jurisdiction: bool,
    /// The run uses a region the model was never trained in before.
    pub new_region: bool,
    /// The run has more rounds than this.
    pub rounds_above: Option<u32>,
}

/// An `[[approval]]` rule: runs it matches wait for `approvals` distinct approvers.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRule {
    pub name: String,
    pub approvals: u32,
    pub conditions: ApprovalConditions,
    pub rule: RuleRef,
}

/// What a `[[promotion]]` rule requires of a checkpoint before it may serve (as canary or
/// serving) in a region; at least one requirement is set. These add to the run plan's own
/// `[promotion]` gate, never replace it: a plan cannot loosen what policy requires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromotionTerms {
    /// The metric `tolerance` is stated on.
    pub metric: GateMetric,
    /// How much worse than the region's serving checkpoint the candidate may be on `metric`.
    pub tolerance: Option<f64>,
    /// Held-out evaluation samples the candidate needs in the region.
    pub min_samples: Option<u64>,
    /// Largest allowed gap between the candidate's best and worst region accuracy.
    pub max_region_gap: Option<f64>,
    /// Distinct approvers who must approve before the checkpoint goes live; 0: none.
    pub approvals: u32,
    /// Whether an approver may promote a checkpoint that failed this gate (with a reason).
    pub allow_override: bool,
}

impl PromotionTerms {
    /// Whether the terms state a measurable gate (rather than only approvals).
    pub fn has_gate(&self) -> bool {
        self.tolerance.is_some() || self.min_samples.is_some() || self.max_region_gap.is_some()
    }
}

/// A `[[promotion]]` rule: what checkpoints of `model` must pass before serving in the
/// regions `region` selects.
#[derive(Debug, Clone, PartialEq)]
pub struct PromotionRule {
    pub model: ModelSelector,
    pub region: Selector,
    pub terms: PromotionTerms,
    pub rule: RuleRef,
}

/// Something a role may be allowed to do by `[roles]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Submit,
    Approve,
    CancelAny,
    ReadAudit,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Submit, Action::Approve, Action::CancelAny, Action::ReadAudit];

    /// The `[roles]` key.
    pub fn key(self) -> &'static str {
        match self {
            Action::Submit => "submit",
            Action::Approve => "approve",
            Action::CancelAny => "cancel_any",
            Action::ReadAudit => "read_audit",
        }
    }

    /// Plain words: "submit runs".
    pub fn describe(self) -> &'static str {
        match self {
            Action::Submit => "submit runs",
            Action::Approve => "approve runs",
            Action::CancelAny => "cancel any run",
            Action::ReadAudit => "read the audit log",
        }
    }
}

/// Which checkpoints a role may read (`[roles.read_checkpoints]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointScope {
    /// Only those of the identity's own region (regional roles only).
    Own,
    All,
    /// Those of the listed regions; never empty.
    Regions(Vec<Selector>),
}

/// One role list of `[roles]`: who may perform an action.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleGrant {
    pub roles: Vec<Role>,
    pub rule: RuleRef,
}

/// One `[roles.read_checkpoints]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointGrant {
    pub scope: CheckpointScope,
    pub rule: RuleRef,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_numbers_refuse_out_of_range_values() {
        assert!(Epsilon::new(0.0).is_none());
        assert!(Epsilon::new(-1.0).is_none());
        assert!(Epsilon::new(f64::INFINITY).is_none());
        assert!(Epsilon::new(f64::NAN).is_none());
        assert!(Delta::new(1.0).is_none());
        assert!(Delta::new(1e-6).is_some());
        assert!(NoiseMultiplier::new(0.8).is_some());
    }

    #[test]
    fn numbers_render_as_a_reviewer_writes_them() {
        assert_eq!(number(8.0), "8");
        assert_eq!(number(0.8), "0.8");
        assert_eq!(number(1e-6), "1e-6");
        assert_eq!(number(1e-5), "1e-5");
        assert_eq!(number(250.0), "250");
    }

    #[test]
    fn jurisdictions_are_uppercase_words() {
        assert!(Jurisdiction::new("EU").is_ok());
        assert!(Jurisdiction::new("US-CA").is_ok());
        assert!(Jurisdiction::new("eu").is_err());
        assert!(Jurisdiction::new("").is_err());
        assert!(Jurisdiction::new("1EU").is_err());
    }

    #[test]
    fn specificity_orders_region_over_jurisdiction_over_any() {
        let eu = Jurisdiction::new("EU").unwrap();
        let r = RegionId::new("eu-west").unwrap();
        let sels = [Selector::Any, Selector::Jurisdiction(eu.clone()), Selector::Region(r.clone())];
        assert!(sels.iter().all(|s| s.matches(&r, &eu)));
        assert_eq!(sels.iter().map(Selector::specificity).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(!Selector::Jurisdiction(Jurisdiction::new("US").unwrap()).matches(&r, &eu));
    }
}
