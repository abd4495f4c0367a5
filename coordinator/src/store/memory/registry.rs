//! The model registry in memory: the same refusals, in the same order, as SQLite's.

use super::*;
use crate::registry::{ModelState, RegistryChange, RegistryEntry, RegistryFilter, Transition};
use crate::store::registry::{RegistryStore, refusal};

/// The registry's rows, keyed like the table's primary key.
#[derive(Debug, Default)]
pub(super) struct RegistryData {
    entries: BTreeMap<(RegionId, String, CheckpointId), RegistryEntry>,
    transitions: Vec<Transition>,
}

fn matches(f: &RegistryFilter, region: &RegionId, model: &str) -> bool {
    f.region.as_ref().is_none_or(|r| r == region) && f.model.as_deref().is_none_or(|m| m == model)
}

#[async_trait]
impl RegistryStore for MemoryStore {
    async fn registry_entries(&self, f: &RegistryFilter) -> Result<Vec<RegistryEntry>, StoreError> {
        let d = self.data();
        Ok(d.registry
            .entries
            .values()
            .filter(|e| matches(f, &e.region, &e.model))
            .filter(|e| f.all || matches!(e.state, ModelState::Candidate | ModelState::Canary | ModelState::Serving))
            .cloned()
            .collect())
    }

    async fn registry_history(&self, f: &RegistryFilter) -> Result<Vec<Transition>, StoreError> {
        let d = self.data();
        Ok(d.registry.transitions.iter().filter(|t| matches(f, &t.region, &t.model)).cloned().collect())
    }

    async fn apply_registry(&self, change: &RegistryChange) -> Result<Vec<Transition>, StoreError> {
        let mut d = self.write()?;
        // Everything is checked on a copy first, so a refusal changes nothing.
        let mut entries = d.registry.entries.clone();
        let at = now();
        let mut planned: Vec<(RegionId, String, CheckpointId, Option<ModelState>, ModelState)> = Vec::new();
        for e in &change.inserts {
            let key = (e.region.clone(), e.model.clone(), e.checkpoint.clone());
            if entries.contains_key(&key) {
                return Err(refusal::exists(e));
            }
            // As in SQLite, approvals are recorded only through `change.approvals`.
            entries.insert(key, RegistryEntry { updated_at: at, approvers: Vec::new(), ..e.clone() });
            planned.push((e.region.clone(), e.model.clone(), e.checkpoint.clone(), None, e.state));
        }
        for a in &change.approvals {
            let key = (a.region.clone(), a.model.clone(), a.checkpoint.clone());
            let e = entries.get_mut(&key).ok_or_else(|| refusal::unapproved(a))?;
            if e.approvers.contains(&a.approver) {
                return Err(refusal::approved(a));
            }
            e.approvers.push(a.approver.clone());
        }
        for m in &change.moves {
            let key = (m.region.clone(), m.model.clone(), m.checkpoint.clone());
            let state = entries.get(&key).ok_or_else(|| refusal::missing(m))?.state;
            if state != m.from {
                return Err(refusal::moved(m, state));
            }
            let unique = matches!(m.to, ModelState::Serving | ModelState::Canary);
            if unique
                && entries.values().any(|e| {
                    e.region == m.region && e.model == m.model && e.state == m.to && e.checkpoint != m.checkpoint
                })
            {
                return Err(refusal::second(m));
            }
            let e = entries.get_mut(&key).expect("checked");
            e.state = m.to;
            if let Some(f) = m.canary_fraction {
                e.canary_fraction = f;
            }
            e.updated_at = at;
            planned.push((m.region.clone(), m.model.clone(), m.checkpoint.clone(), Some(m.from), m.to));
        }
        d.registry.entries = entries;
        let mut out = Vec::with_capacity(planned.len());
        for (region, model, checkpoint, from, to) in planned {
            let seq = d.registry.transitions.last().map_or(1, |t| t.seq + 1);
            let t = Transition {
                seq,
                at,
                region,
                model,
                checkpoint,
                from,
                to,
                actor: change.actor.clone(),
                reason: change.reason.clone(),
            };
            d.registry.transitions.push(t.clone());
            out.push(t);
        }
        for draft in &change.audit {
            let entry = AuditEntry::chain(d.audit.last(), draft.clone());
            d.audit.push(entry);
        }
        Ok(out)
    }
}
