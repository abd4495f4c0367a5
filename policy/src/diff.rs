//! What changes in meaning between two policy sets, in the words of
//! [`PolicySet::explain`]: for each origin, locations and publication targets newly
//! permitted or forbidden, export thresholds loosened or tightened, privacy budgets raised
//! or lowered, approval rules added, removed or changed, promotion gates tightened or
//! loosened, roles that gained or lost rights.
//!
//! The diff compares *decisions*, not text: both sets are evaluated region by region (each
//! selector expanded, the most specific rule applied), so reordering rules, moving them
//! between files, rewriting a jurisdiction selector as its regions or editing comments
//! yields no change.

use crate::decide::names;
use crate::explain::{conditions_text, export_text, promotion_text, terms_text};
use crate::rules::{
    Action, ApprovalRule, CheckpointScope, ExportTerms, Jurisdiction, ModelSelector, PrivacyTerms, PromotionTerms,
};
use crate::set::PolicySet;
use fedra_types::identity::Role;
use fedra_types::ids::RegionId;
use std::collections::BTreeSet;
use std::fmt;

/// Which checkpoints a role may read, per concrete region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadScope {
    OwnRegion,
    Regions(BTreeSet<RegionId>),
}

/// One difference in meaning; [`fmt::Display`] says it in plain language.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    RegionAdded {
        region: RegionId,
        jurisdiction: Jurisdiction,
    },
    RegionRemoved {
        region: RegionId,
        jurisdiction: Jurisdiction,
    },
    RegionMoved {
        region: RegionId,
        old: Jurisdiction,
        new: Jurisdiction,
    },
    /// Raw updates from `origin` may now be aggregated at `locations`.
    AggregationPermitted {
        origin: RegionId,
        locations: Vec<RegionId>,
    },
    AggregationForbidden {
        origin: RegionId,
        locations: Vec<RegionId>,
    },
    /// Models trained on `origin` data may now be published to `targets`.
    PublicationPermitted {
        origin: RegionId,
        targets: Vec<RegionId>,
    },
    PublicationForbidden {
        origin: RegionId,
        targets: Vec<RegionId>,
    },
    /// `None`: no residency rule covers the origin (nothing leaves).
    Export {
        origin: RegionId,
        old: Option<ExportTerms>,
        new: Option<ExportTerms>,
    },
    /// `model` is `Any` for models without a rule of their own. `None`: no rule, training
    /// is denied by default.
    Privacy {
        model: ModelSelector,
        region: RegionId,
        old: Option<PrivacyTerms>,
        new: Option<PrivacyTerms>,
    },
    ApprovalAdded {
        rule: ApprovalRule,
    },
    /// What checkpoints of `model` (`Any`: models without a rule of their own) must pass
    /// before serving in `region`. `None`: no rule, the run plan's gate alone.
    Promotion {
        model: ModelSelector,
        region: RegionId,
        old: Option<PromotionTerms>,
        new: Option<PromotionTerms>,
    },
    ApprovalRemoved {
        rule: ApprovalRule,
    },
    ApprovalChanged {
        old: ApprovalRule,
        new: ApprovalRule,
    },
    RoleAction {
        role: Role,
        action: Action,
        permitted: bool,
    },
    /// `None`: the role reads no checkpoints.
    CheckpointReads {
        role: Role,
        old: Option<ReadScope>,
        new: Option<ReadScope>,
    },
}

/// Every change in meaning from `old` to `new`, grouped: regions, then per origin (sorted)
/// aggregation, export and publication, then privacy, approvals and roles.
pub fn diff(old: &PolicySet, new: &PolicySet) -> Vec<Change> {
    let mut out = Vec::new();
    let all: BTreeSet<RegionId> = old.regions.iter().chain(&new.regions).map(|r| r.name.clone()).collect();
    for region in &all {
        match (old.jurisdiction(region), new.jurisdiction(region)) {
            (None, Some(j)) => out.push(Change::RegionAdded { region: region.clone(), jurisdiction: j.clone() }),
            (Some(j), None) => out.push(Change::RegionRemoved { region: region.clone(), jurisdiction: j.clone() }),
            (Some(a), Some(b)) if a != b => {
                out.push(Change::RegionMoved { region: region.clone(), old: a.clone(), new: b.clone() })
            }
            _ => {}
        }
    }
    // A removed region's data may no longer be used at all: `RegionRemoved` says so, and
    // listing each permission it lost would only bury that.
    let kept: BTreeSet<RegionId> = all.iter().filter(|r| new.region(r).is_some()).cloned().collect();
    for origin in &kept {
        let (o, n) = (old.residency_rule(origin), new.residency_rule(origin));
        let places = |set: &PolicySet, sels: Option<&[crate::Selector]>| -> BTreeSet<RegionId> {
            sels.map(|s| set.expand(s).into_iter().cloned().collect()).unwrap_or_default()
        };
        let (oa, na) = (places(old, o.map(|r| &r.aggregate_at[..])), places(new, n.map(|r| &r.aggregate_at[..])));
        let (gained, lost) = (difference(&na, &oa), difference(&oa, &na));
        if !gained.is_empty() {
            out.push(Change::AggregationPermitted { origin: origin.clone(), locations: gained });
        }
        if !lost.is_empty() {
            out.push(Change::AggregationForbidden { origin: origin.clone(), locations: lost });
        }
        let (oe, ne) = (o.map(|r| r.export), n.map(|r| r.export));
        if !same_export(oe.as_ref(), ne.as_ref()) {
            out.push(Change::Export { origin: origin.clone(), old: oe, new: ne });
        }
        let (op, np) = (places(old, o.map(|r| &r.publish_to[..])), places(new, n.map(|r| &r.publish_to[..])));
        let (gained, lost) = (difference(&np, &op), difference(&op, &np));
        if !gained.is_empty() {
            out.push(Change::PublicationPermitted { origin: origin.clone(), targets: gained });
        }
        if !lost.is_empty() {
            out.push(Change::PublicationForbidden { origin: origin.clone(), targets: lost });
        }
    }
    privacy_changes(old, new, &kept, &mut out);
    approval_changes(old, new, &mut out);
    promotion_changes(old, new, &kept, &mut out);
    for action in Action::ALL {
        for role in Role::ALL {
            let (was, is) = (old.role_may(role, action).is_ok(), new.role_may(role, action).is_ok());
            if was != is {
                out.push(Change::RoleAction { role, action, permitted: is });
            }
        }
    }
    for role in Role::ALL {
        let (was, is) = (read_scope(old, role), read_scope(new, role));
        if was != is {
            out.push(Change::CheckpointReads { role, old: was, new: is });
        }
    }
    out
}

fn difference(a: &BTreeSet<RegionId>, b: &BTreeSet<RegionId>) -> Vec<RegionId> {
    a.difference(b).cloned().collect()
}

fn same_export(a: Option<&ExportTerms>, b: Option<&ExportTerms>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.min_clients == b.min_clients
                && a.requires_dp() == b.requires_dp()
                && a.min_noise_multiplier == b.min_noise_multiplier
        }
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// Effective terms per (model, region): the `"*"` rule for models without their own, and
/// each named model whose own change differs from that.
fn privacy_changes(old: &PolicySet, new: &PolicySet, regions: &BTreeSet<RegionId>, out: &mut Vec<Change>) {
    scoped_changes(
        old,
        new,
        regions,
        |set| set.privacy.iter().map(|p| (&p.model, &p.region, p.terms)).collect(),
        |set, model, region| set.privacy_rule(model, region).map(|p| p.terms),
        |model, region, old, new| out.push(Change::Privacy { model, region, old, new }),
    );
}

/// As [`privacy_changes`], for the promotion rules of checkpoints serving in each region.
fn promotion_changes(old: &PolicySet, new: &PolicySet, regions: &BTreeSet<RegionId>, out: &mut Vec<Change>) {
    scoped_changes(
        old,
        new,
        regions,
        |set| set.promotions.iter().map(|p| (&p.model, &p.region, p.terms)).collect(),
        |set, model, region| set.promotion_rule(model, region).map(|p| p.terms),
        |model, region, old, new| out.push(Change::Promotion { model, region, old, new }),
    );
}

type Scoped<'a, T> = Vec<(&'a ModelSelector, &'a crate::Selector, T)>;

/// Per region, the effective terms of a (model, region)-scoped table: the most specific
/// `"*"` rule, then each named model's (reported only where it differs from the `"*"`
/// change), passed to `emit` as (model, region, old, new) when they differ.
fn scoped_changes<T: Copy + PartialEq>(
    old: &PolicySet,
    new: &PolicySet,
    regions: &BTreeSet<RegionId>,
    rules: impl for<'a> Fn(&'a PolicySet) -> Scoped<'a, T>,
    own: impl Fn(&PolicySet, &str, &RegionId) -> Option<T>,
    mut emit: impl FnMut(ModelSelector, RegionId, Option<T>, Option<T>),
) {
    let (old_rules, new_rules) = (rules(old), rules(new));
    let named: BTreeSet<&str> = old_rules
        .iter()
        .chain(&new_rules)
        .filter_map(|(model, _, _)| match model {
            ModelSelector::Named(m) => Some(m.as_str()),
            ModelSelector::Any => None,
        })
        .collect();
    for region in regions {
        let general = |set: &PolicySet, list: &Scoped<'_, T>| {
            let r = set.region(region)?;
            list.iter()
                .filter(|(m, sel, _)| **m == ModelSelector::Any && sel.matches(&r.name, &r.jurisdiction))
                .max_by_key(|(_, sel, _)| sel.specificity())
                .map(|(_, _, t)| *t)
        };
        let any = (general(old, &old_rules), general(new, &new_rules));
        if any.0 != any.1 {
            emit(ModelSelector::Any, region.clone(), any.0, any.1);
        }
        for model in &named {
            let mine = (own(old, model, region), own(new, model, region));
            if mine.0 != mine.1 && mine != any {
                emit(ModelSelector::Named(model.to_string()), region.clone(), mine.0, mine.1);
            }
        }
    }
}

fn approval_changes(old: &PolicySet, new: &PolicySet, out: &mut Vec<Change>) {
    let names: BTreeSet<&str> = old.approvals.iter().chain(&new.approvals).map(|a| a.name.as_str()).collect();
    for name in names {
        let find = |set: &PolicySet| set.approvals.iter().find(|a| a.name == name).cloned();
        match (find(old), find(new)) {
            (None, Some(rule)) => out.push(Change::ApprovalAdded { rule }),
            (Some(rule), None) => out.push(Change::ApprovalRemoved { rule }),
            (Some(o), Some(n)) if o.approvals != n.approvals || o.conditions != n.conditions => {
                out.push(Change::ApprovalChanged { old: o, new: n })
            }
            _ => {}
        }
    }
}

fn read_scope(set: &PolicySet, role: Role) -> Option<ReadScope> {
    let grant = set.roles.checkpoints.get(&role)?;
    Some(match &grant.scope {
        CheckpointScope::Own => ReadScope::OwnRegion,
        CheckpointScope::All => ReadScope::Regions(set.regions.iter().map(|r| r.name.clone()).collect()),
        CheckpointScope::Regions(s) => ReadScope::Regions(set.expand(s).into_iter().cloned().collect()),
    })
}

/// "tightened", "loosened" or "changed", from per-component comparisons where `Greater`
/// means stricter.
fn direction(stricter: &[std::cmp::Ordering]) -> &'static str {
    use std::cmp::Ordering::{Greater, Less};
    match (stricter.contains(&Greater), stricter.contains(&Less)) {
        (true, false) => "tightened",
        (false, true) => "loosened",
        _ => "changed",
    }
}

fn privacy_details(old: &PrivacyTerms, new: &PrivacyTerms) -> Vec<String> {
    let mut parts = Vec::new();
    let (oe, ne, od, nd) = (old.epsilon.get(), new.epsilon.get(), old.delta.get(), new.delta.get());
    if oe != ne || od != nd {
        let word = match (ne.partial_cmp(&oe), nd.partial_cmp(&od)) {
            (Some(e), Some(d)) if e.is_ge() && d.is_ge() => "raised",
            (Some(e), Some(d)) if e.is_le() && d.is_le() => "lowered",
            _ => "changed",
        };
        let (oldb, newb) =
            (format!("ε ≤ {} at δ = {}", old.epsilon, old.delta), format!("ε ≤ {} at δ = {}", new.epsilon, new.delta));
        parts.push(format!("budget {word} from {oldb} to {newb}"));
    }
    match (old.min_noise_multiplier, new.min_noise_multiplier) {
        (None, Some(z)) => parts.push(format!("now requires a noise multiplier of at least {z}")),
        (Some(z), None) => parts.push(format!("no longer requires a minimum noise multiplier (was {z})")),
        (Some(a), Some(b)) if a != b => {
            let word = if b > a { "raised" } else { "lowered" };
            parts.push(format!("minimum noise multiplier {word} from {a} to {b}"));
        }
        _ => {}
    }
    if old.allow_non_private != new.allow_non_private {
        parts.push(
            if new.allow_non_private { "non-private runs now allowed" } else { "non-private runs no longer allowed" }
                .into(),
        );
    }
    if old.per_client_metrics != new.per_client_metrics {
        parts.push(
            if new.per_client_metrics {
                "per-client metrics may now leave the coordinator"
            } else {
                "per-client metrics now stay in the coordinator"
            }
            .into(),
        );
    }
    parts
}

/// "tightened: an aggregate now needs at least 20 contributors to leave eu-west (before:
/// 10); ...", naming only the terms that changed.
fn export_details(origin: &RegionId, o: &ExportTerms, n: &ExportTerms) -> String {
    use std::cmp::Ordering;
    let noise = |t: &ExportTerms| t.min_noise_multiplier.map_or(0.0, |z| z.get());
    let stricter = [
        n.min_clients.cmp(&o.min_clients),
        n.requires_dp().cmp(&o.requires_dp()),
        noise(n).partial_cmp(&noise(o)).unwrap_or(Ordering::Equal),
    ];
    let mut parts = Vec::new();
    if n.min_clients != o.min_clients {
        parts.push(format!(
            "an aggregate now needs at least {} contributors to leave {origin} (before: {})",
            n.min_clients, o.min_clients
        ));
    }
    if n.requires_dp() != o.requires_dp() {
        parts.push(if n.requires_dp() {
            "it may now leave only as a differentially private release".to_string()
        } else {
            "it no longer needs to be a differentially private release".to_string()
        });
    }
    match (o.min_noise_multiplier, n.min_noise_multiplier) {
        (None, Some(z)) => parts.push(format!("the release now needs noise multiplier ≥ {z}")),
        (Some(z), None) => {
            parts.push(format!("the release no longer needs a minimum noise multiplier (before: ≥ {z})"))
        }
        (Some(a), Some(b)) if a != b => {
            parts.push(format!("the release now needs noise multiplier ≥ {b} (before: ≥ {a})"))
        }
        _ => {}
    }
    format!("{}: {}", direction(&stricter), parts.join("; "))
}

fn read_scope_text(scope: &Option<ReadScope>) -> String {
    match scope {
        None => "none".into(),
        Some(ReadScope::OwnRegion) => "its own region only".into(),
        Some(ReadScope::Regions(r)) if r.is_empty() => "none".into(),
        Some(ReadScope::Regions(r)) => names(r),
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::RegionAdded { region, jurisdiction } => write!(f, "region {region} ({jurisdiction}) added"),
            Change::RegionRemoved { region, jurisdiction } => {
                write!(f, "region {region} ({jurisdiction}) removed: its data may no longer be used")
            }
            Change::RegionMoved { region, old, new } => {
                write!(f, "region {region} moved from jurisdiction {old} to {new}")
            }
            Change::AggregationPermitted { origin, locations } => {
                write!(f, "data from {origin}: raw updates may now also be aggregated in {}", names(locations))
            }
            Change::AggregationForbidden { origin, locations } => {
                write!(f, "data from {origin}: raw updates may no longer be aggregated in {}", names(locations))
            }
            Change::PublicationPermitted { origin, targets } => {
                write!(f, "data from {origin}: models trained on it may now also be published to {}", names(targets))
            }
            Change::PublicationForbidden { origin, targets } => {
                write!(f, "data from {origin}: models trained on it may no longer be published to {}", names(targets))
            }
            Change::Export { origin, old: Some(o), new: Some(n) } => {
                write!(f, "data from {origin}: export {}", export_details(origin, o, n))
            }
            Change::Export { origin, old, new } => match new {
                Some(n) => write!(f, "data from {origin}: export now allowed: {}", export_text(origin, n)),
                None => write!(
                    f,
                    "data from {origin}: no residency rule covers it any more{}: nothing may leave {origin} (denied by default)",
                    old.map_or(String::new(), |o| format!(" (before: {})", export_text(origin, &o)))
                ),
            },
            Change::Privacy { model, region, old, new } => {
                let scope = match model {
                    ModelSelector::Any => "models without a rule of their own".to_string(),
                    ModelSelector::Named(m) => format!("model {m}"),
                };
                match (old, new) {
                    (Some(o), Some(n)) => {
                        write!(f, "privacy for {scope} on {region} data: {}", privacy_details(o, n).join("; "))
                    }
                    (None, Some(n)) => write!(f, "privacy for {scope} on {region} data now set: {}", terms_text(n, "")),
                    (_, None) => write!(
                        f,
                        "privacy for {scope} on {region} data no longer set: training there is denied by default"
                    ),
                }
            }
            Change::Promotion { model, region, old, new } => {
                let scope = match model {
                    ModelSelector::Any => "models without a rule of their own".to_string(),
                    ModelSelector::Named(m) => format!("model {m}"),
                };
                let text = |t: &Option<PromotionTerms>| match t {
                    Some(t) => format!("only when {}", promotion_text(t)),
                    None => "under the run plan's own gate".to_string(),
                };
                let word = match (old, new) {
                    (None, Some(_)) => "tightened",
                    (Some(_), None) => "loosened",
                    (Some(o), Some(n)) => promotion_direction(o, n),
                    (None, None) => "unchanged",
                };
                write!(f, "promotion of {scope} to serve in {region} {word}: now {} (before: {})", text(new), text(old))
            }
            Change::ApprovalAdded { rule } => write!(f, "approval rule {} added: {}", rule.name, approval_text(rule)),
            Change::ApprovalRemoved { rule } => {
                write!(f, "approval rule {} removed (was: {})", rule.name, approval_text(rule))
            }
            Change::ApprovalChanged { old, new } => {
                write!(f, "approval rule {} changed: {} (before: {})", new.name, approval_text(new), approval_text(old))
            }
            Change::RoleAction { role, action, permitted: true } => {
                write!(f, "role {role} may now {}", action.describe())
            }
            Change::RoleAction { role, action, permitted: false } => {
                write!(f, "role {role} may no longer {}", action.describe())
            }
            Change::CheckpointReads { role, old, new } => write!(
                f,
                "role {role} may now read checkpoints of: {} (before: {})",
                read_scope_text(new),
                read_scope_text(old)
            ),
        }
    }
}

/// Compares two promotion rules requirement by requirement ("tightened", "loosened" or
/// "changed"); a bound that appears counts as stricter, one that goes as looser.
fn promotion_direction(o: &PromotionTerms, n: &PromotionTerms) -> &'static str {
    use std::cmp::Ordering;
    // Larger is stricter for min_samples and approvals; smaller for tolerance and gap.
    let looser_bound = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    };
    if o.metric != n.metric && (o.tolerance.is_some() || n.tolerance.is_some()) {
        return "changed";
    }
    direction(&[
        looser_bound(o.tolerance, n.tolerance),
        n.min_samples.cmp(&o.min_samples),
        looser_bound(o.max_region_gap, n.max_region_gap),
        n.approvals.cmp(&o.approvals),
        o.allow_override.cmp(&n.allow_override),
    ])
}

fn approval_text(rule: &ApprovalRule) -> String {
    let n = rule.approvals;
    format!("{n} approval{} when {}", if n == 1 { "" } else { "s" }, conditions_text(&rule.conditions, None, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::PolicySource;

    fn set(files: &[(&str, &str)]) -> PolicySet {
        let sources = files
            .iter()
            .map(|(name, text)| PolicySource { name: name.to_string(), path: name.to_string(), text: text.to_string() })
            .collect();
        PolicySet::from_sources(sources).unwrap_or_else(|e| panic!("{e}"))
    }

    const REGIONS: &str = "version = 1\n[[region]]\nname = \"a1\"\njurisdiction = \"A\"\n[[region]]\nname = \"a2\"\njurisdiction = \"A\"\n[[region]]\nname = \"b1\"\njurisdiction = \"B\"\n";

    #[test]
    fn rewriting_a_jurisdiction_as_its_regions_changes_nothing() {
        let a = set(&[
            ("r.toml", REGIONS),
            (
                "x.toml",
                "version = 1\n[[residency]]\norigin = \"A\"\naggregate_at = [\"A\"]\nexport_min_clients = 3\npublish_to = [\"A\"]\n",
            ),
        ]);
        let b = set(&[
            ("r.toml", REGIONS),
            (
                "y.toml",
                "version = 1\n# split\n[[residency]]\norigin = \"a2\"\naggregate_at = [\"a2\", \"a1\"]\nexport_min_clients = 3\npublish_to = [\"a1\", \"a2\"]\n[[residency]]\norigin = \"a1\"\naggregate_at = [\"A\"]\nexport_min_clients = 3\npublish_to = [\"A\"]\n",
            ),
        ]);
        assert_eq!(diff(&a, &b), vec![]);
        assert_ne!(a.sha256(), b.sha256());
    }

    #[test]
    fn export_direction_is_named() {
        let rule = |n: u32, z: &str| {
            format!(
                "version = 1\n[[residency]]\norigin = \"*\"\naggregate_at = [\"*\"]\nexport_min_clients = {n}\n{z}publish_to = []\n"
            )
        };
        let a = set(&[("r.toml", REGIONS), ("x.toml", &rule(5, ""))]);
        let b = set(&[("r.toml", REGIONS), ("x.toml", &rule(10, "export_min_noise_multiplier = 0.5\n"))]);
        let changes: Vec<String> = diff(&a, &b).iter().map(ToString::to_string).collect();
        assert_eq!(changes.len(), 3, "{changes:#?}");
        assert_eq!(
            changes[0],
            "data from a1: export tightened: an aggregate now needs at least 10 contributors to leave a1 (before: 5); it may now leave only as a differentially private release; the release now needs noise multiplier ≥ 0.5"
        );
        let back: Vec<String> = diff(&b, &a).iter().map(ToString::to_string).collect();
        assert!(back[0].contains("export loosened"), "{back:#?}");
    }
}
