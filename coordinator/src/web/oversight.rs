//! What compliance looks at: privacy budgets per scope, where each region's data may flow
//! under the policy set, checkpoints per region with their lifecycle state and provenance,
//! and the audit log with its verification. Plain reads of the store and the policy
//! snapshot, as serializable views.

use super::Sources;
use super::runs::ViewError;
use crate::checkpoint::Manifest;
use crate::grpc::auth::Access;
use crate::ids::{CheckpointId, RegionId};
use crate::privacy::{LedgerEntry, LedgerState, PrivacyScope, ScopeStatus};
use crate::registry::RegistryFilter;
use crate::store::{AuditEntry, AuditFilter, LedgerFilter};
use fedra_types::audit::{ChainBreak, GENESIS, entry_hash};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// One privacy scope's standing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScopeRow {
    /// `model@region`.
    pub scope: String,
    /// The budget's ε; `None` when no rule covers the scope.
    pub budget: Option<f64>,
    pub delta: f64,
    /// ε of the charged rounds (their aggregates were released).
    pub spent: f64,
    /// ε the reserved rounds add on top (in progress or interrupted; they count).
    pub reserved: f64,
    pub remaining: Option<f64>,
    pub rounds_charged: u32,
    pub rounds_reserved: u32,
}

/// Every scope with ledger entries, by scope.
///
/// # Errors
/// Store failures and accounting failures (an invalid δ).
pub async fn privacy(src: &Sources) -> Result<Vec<ScopeRow>, ViewError> {
    let mut by_scope: BTreeMap<PrivacyScope, Vec<LedgerEntry>> = BTreeMap::new();
    for e in src.store.list_ledger(&LedgerFilter::default()).await? {
        by_scope.entry(e.scope.clone()).or_default().push(e);
    }
    let fail = |e: crate::privacy::PrivacyError| ViewError::Privacy(e.to_string());
    by_scope
        .into_iter()
        .map(|(scope, entries)| {
            let budget = src.governance.budget(&src.budgets, &scope);
            let status = ScopeStatus::new(scope, budget, &entries).map_err(fail)?;
            let charged: Vec<LedgerEntry> = entries.into_iter().filter(|e| e.state == LedgerState::Charged).collect();
            let spent = crate::privacy::ledger::spent(&charged, status.delta).map_err(fail)?;
            Ok(ScopeRow {
                scope: status.scope.to_string(),
                budget: status.budget.map(|b| b.epsilon),
                delta: status.delta,
                spent,
                reserved: (status.epsilon_spent - spent).max(0.0),
                remaining: status.epsilon_remaining(),
                rounds_charged: status.rounds_charged,
                rounds_reserved: status.rounds_reserved,
            })
        })
        .collect()
}

/// Where one origin region's data may go.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowRow {
    pub region: String,
    pub jurisdiction: String,
    /// Regions where its raw updates may be aggregated.
    pub aggregate_at: Vec<String>,
    /// Whether this coordinator may select its clients (aggregates them here or in-region).
    pub selectable_here: bool,
    /// When an aggregate of its data may leave it.
    pub export: String,
    /// Regions models trained on its data may be published to.
    pub publish_to: Vec<String>,
    /// The rule that decides (`file:line`), or why there is none.
    pub rule: String,
}

/// The policy set in force, as data flows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flows {
    pub policy_sha256: String,
    pub location: String,
    pub files: Vec<String>,
    pub regions: Vec<FlowRow>,
}

/// The flows of the policy set in force; `None` without a policy (plans name regions).
pub fn flows(src: &Sources) -> Option<Flows> {
    let snapshot = src.governance.snapshot()?;
    let set = &snapshot.set;
    let names = |v: Vec<&RegionId>| v.into_iter().map(ToString::to_string).collect::<Vec<_>>();
    let regions = set
        .regions()
        .iter()
        .map(|region| {
            let selectable_here = snapshot.may_select(&region.name);
            match set.residency_rule(&region.name) {
                None => FlowRow {
                    region: region.name.to_string(),
                    jurisdiction: region.jurisdiction.to_string(),
                    aggregate_at: Vec::new(),
                    selectable_here,
                    export: "never (no residency rule: denied by default)".into(),
                    publish_to: Vec::new(),
                    rule: "none covers it".into(),
                },
                Some(rule) => {
                    let t = &rule.export;
                    let mut export = format!("with ≥ {} contributors", t.min_clients);
                    if t.requires_dp() {
                        export.push_str(", differentially private");
                    }
                    if let Some(z) = t.min_noise_multiplier {
                        export.push_str(&format!(", noise multiplier ≥ {z}"));
                    }
                    FlowRow {
                        region: region.name.to_string(),
                        jurisdiction: region.jurisdiction.to_string(),
                        aggregate_at: names(set.expand(&rule.aggregate_at)),
                        selectable_here,
                        export,
                        publish_to: names(set.expand(&rule.publish_to)),
                        rule: rule.rule.to_string(),
                    }
                }
            }
        })
        .collect();
    Some(Flows {
        policy_sha256: snapshot.sha256().to_string(),
        location: snapshot.location.to_string(),
        files: set.files().to_vec(),
        regions,
    })
}

/// Registry entries the checkpoint table lists at most (the most recently changed).
pub const CHECKPOINT_ROWS: usize = 100;

/// A checkpoint in one region's registry, with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckpointRow {
    pub region: String,
    pub model: String,
    pub checkpoint: String,
    pub run: String,
    pub round: u32,
    /// candidate, canary, serving, retired or rolled_back.
    pub state: String,
    pub gate_passed: bool,
    pub gate: String,
    pub eval_accuracy: Option<f64>,
    pub approvals: String,
    pub updated_at: String,
    pub provenance: Option<Provenance>,
}

/// What the checkpoint's signed manifest says of where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    pub sha256: String,
    pub signed: bool,
    /// `eu: 3 clients` per contributing region.
    pub contributors: Vec<String>,
    /// ε at δ, for a private checkpoint.
    pub epsilon: Option<(f64, f64)>,
    pub policy_sha256: Option<String>,
    pub published_to: Vec<String>,
}

/// Registry entries, by region, model, then most recent change; `region` narrows them to
/// one region (an inference node's own).
///
/// # Errors
/// Store failures; a stored manifest that does not parse.
pub async fn checkpoints(src: &Sources, region: Option<&RegionId>) -> Result<Vec<CheckpointRow>, ViewError> {
    let filter = RegistryFilter { region: region.cloned(), model: None, all: true };
    let mut entries = src.store.registry_entries(&filter).await?;
    entries.sort_by_key(|e| std::cmp::Reverse(e.updated_at));
    entries.truncate(CHECKPOINT_ROWS);
    entries.sort_by(|a, b| (&a.region, &a.model, b.updated_at).cmp(&(&b.region, &b.model, a.updated_at)));
    let mut provenance: BTreeMap<CheckpointId, Option<Provenance>> = BTreeMap::new();
    let mut rows = Vec::with_capacity(entries.len());
    for e in entries {
        if !provenance.contains_key(&e.checkpoint) {
            let p = match src.store.get_checkpoint(&e.checkpoint).await? {
                None => None,
                Some(record) => {
                    let manifest: Manifest = serde_json::from_str(&record.manifest_json).map_err(|err| {
                        ViewError::Store(crate::store::StoreError::Corrupt(format!(
                            "manifest of checkpoint {}: {err}",
                            record.id
                        )))
                    })?;
                    Some(Provenance {
                        sha256: record.sha256,
                        signed: !record.signature_json.is_empty(),
                        contributors: manifest
                            .regions
                            .iter()
                            .map(|(r, c)| format!("{r}: {} client{}", c.clients, if c.clients == 1 { "" } else { "s" }))
                            .collect(),
                        epsilon: manifest.privacy.as_ref().map(|p| (p.epsilon, p.delta)),
                        policy_sha256: manifest.policy_sha256,
                        published_to: manifest.published_to.iter().map(ToString::to_string).collect(),
                    })
                }
            };
            provenance.insert(e.checkpoint.clone(), p);
        }
        rows.push(CheckpointRow {
            region: e.region.to_string(),
            model: e.model.clone(),
            checkpoint: e.checkpoint.to_string(),
            run: e.run.to_string(),
            round: e.round,
            state: e.state.as_str().to_string(),
            gate_passed: e.gate.passed,
            gate: e.gate.detail.clone(),
            eval_accuracy: e.eval.map(|v| v.accuracy),
            approvals: format!("{}/{}", e.approvers.len(), e.approvals_needed()),
            updated_at: e.updated_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            provenance: provenance.get(&e.checkpoint).cloned().flatten(),
        });
    }
    Ok(rows)
}

/// Which checkpoints a viewer with `access` to checkpoints sees: `Some(region)` narrows to
/// one region; an inference identity without a region sees none.
pub fn checkpoint_region(access: Access, region: Option<&RegionId>) -> Result<Option<RegionId>, ViewError> {
    match (access, region) {
        (Access::Region, Some(r)) => Ok(Some(r.clone())),
        (Access::Region, None) => {
            Err(ViewError::Forbidden("a regional reader without a region sees no checkpoints".into()))
        }
        _ => Ok(None),
    }
}

/// Audit entries the log table shows (the most recent).
pub const AUDIT_ROWS: usize = 100;
/// Entries read per store call while verifying.
const AUDIT_PAGE: u32 = 1000;

/// The audit log's tail and whether the whole chain verifies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditView {
    /// Entries checked: the whole log, from entry 1.
    pub checked: i64,
    /// `None`: every entry is intact and linked to the one before; else the first break.
    pub broken: Option<String>,
    /// The [`AUDIT_ROWS`] most recent entries, newest first.
    pub entries: Vec<AuditEntry>,
}

/// Reads the whole log page by page (memory bounded by a page), checking every link as
/// `fedra audit verify` does, and keeps the most recent entries.
///
/// # Errors
/// Store failures.
pub async fn audit(src: &Sources) -> Result<AuditView, ViewError> {
    let mut chain = ChainCheck::default();
    let mut tail: VecDeque<AuditEntry> = VecDeque::with_capacity(AUDIT_ROWS + 1);
    let mut filter = AuditFilter { limit: Some(AUDIT_PAGE), ..AuditFilter::default() };
    loop {
        let page = src.store.list_audit(&filter).await?;
        let full = page.len() == AUDIT_PAGE as usize;
        for e in page {
            chain.feed(&e);
            filter.after_seq = Some(e.seq);
            tail.push_back(e);
            if tail.len() > AUDIT_ROWS {
                tail.pop_front();
            }
        }
        if !full {
            break;
        }
    }
    Ok(AuditView {
        checked: chain.checked,
        broken: chain.broken.map(|b| b.to_string()),
        entries: tail.into_iter().rev().collect(),
    })
}

/// `fedra_types::audit::verify`, fed one entry at a time: the same checks in the same
/// order, keeping only the previous entry.
#[derive(Debug, Default)]
struct ChainCheck {
    prev: Option<(i64, String)>,
    checked: i64,
    broken: Option<ChainBreak>,
}

impl ChainCheck {
    fn feed(&mut self, e: &AuditEntry) {
        self.checked += 1;
        if self.broken.is_some() {
            return;
        }
        let expected = self.prev.as_ref().map_or(1, |p| p.0 + 1);
        let broken = if e.seq != expected {
            Some(ChainBreak::Gap { seq: e.seq, expected })
        } else if entry_hash(e.seq, &e.prev_hash, &e.draft) != e.hash {
            Some(ChainBreak::Altered { seq: e.seq })
        } else {
            match &self.prev {
                None if e.prev_hash != GENESIS => Some(ChainBreak::BadGenesis { seq: e.seq }),
                Some((seq, hash)) if &e.prev_hash != hash => Some(ChainBreak::Unlinked { seq: e.seq, prev_seq: *seq }),
                _ => None,
            }
        };
        self.broken = broken;
        self.prev = Some((e.seq, e.hash.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedra_types::audit::{AuditAction, AuditDraft, verify};

    fn log(n: i64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let d = AuditDraft::new(1_700_000_000_000 + i, "coordinator", AuditAction::ALL[0], format!("d{i}"));
            let e = AuditEntry::chain(out.last(), d);
            out.push(e);
        }
        out
    }

    fn check(entries: &[AuditEntry]) -> Option<ChainBreak> {
        let mut c = ChainCheck::default();
        entries.iter().for_each(|e| c.feed(e));
        c.broken
    }

    /// The incremental check finds exactly the break `verify` finds.
    #[test]
    fn chain_check_agrees_with_verify() {
        let good = log(5);
        assert_eq!(check(&good), None);
        assert!(verify(&good).is_ok());
        let mut altered = good.clone();
        altered[2].draft.detail = "rewritten".into();
        let mut unlinked = good.clone();
        let mut elsewhere = good[2].clone();
        elsewhere.hash = "a".repeat(64);
        unlinked[3] = AuditEntry::chain(Some(&elsewhere), good[3].draft.clone());
        let mut gap = good.clone();
        gap.remove(1);
        let mut genesis = log(1);
        genesis[0].prev_hash = "f".repeat(64);
        for bad in [altered, unlinked, gap, genesis] {
            assert_eq!(check(&bad), verify(&bad).err());
            assert!(check(&bad).is_some());
        }
    }
}
