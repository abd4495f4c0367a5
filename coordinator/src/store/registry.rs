//! What the store keeps of the regional model registry (see `crate::registry`): one entry
//! per (region, model, checkpoint) and the append-only history of its transitions.

use super::StoreError;
use crate::registry::{RegistryChange, RegistryEntry, RegistryFilter, Transition};
use async_trait::async_trait;

/// The registry's persistence contract. Like [`super::Store`], every write is atomic.
#[async_trait]
pub trait RegistryStore: Send + Sync {
    /// Entries matching `filter`, by region, model, then checkpoint id.
    async fn registry_entries(&self, filter: &RegistryFilter) -> Result<Vec<RegistryEntry>, StoreError>;

    /// Transitions matching `filter` (`all` is ignored), oldest first.
    async fn registry_history(&self, filter: &RegistryFilter) -> Result<Vec<Transition>, StoreError>;

    /// Inserts `change.inserts` as given, records `change.approvals`, then applies
    /// `change.moves` in order, recording a transition for each with the change's actor and
    /// reason, and appends `change.audit`; all of it or nothing. Returns the transitions
    /// written. Entries read back carry their approvers in the order they approved.
    ///
    /// # Errors
    /// - [`StoreError::AlreadyExists`] (`"registry entry"`) for an insert that is stored;
    /// - [`StoreError::AlreadyExists`] (`"approval"`) for an approver who approved that
    ///   entry before; [`StoreError::NotFound`] (`"registry entry"`) for an approval of an
    ///   entry not stored;
    /// - [`StoreError::NotFound`] (`"registry entry"`) for a move of an entry not stored;
    /// - [`StoreError::Conflict`] (`"registry entry"`) for a move whose entry is no longer
    ///   in `from` (another command moved it first), or that would leave two serving or two
    ///   canary entries for one (region, model).
    async fn apply_registry(&self, change: &RegistryChange) -> Result<Vec<Transition>, StoreError>;
}

/// The registry refusals every backend returns.
pub(super) mod refusal {
    use super::super::StoreError;
    use crate::registry::{Approval, ModelState, Move, RegistryEntry};

    fn key(region: &str, model: &str, checkpoint: &str) -> String {
        format!("{region}/{model}/{checkpoint}")
    }

    pub fn exists(e: &RegistryEntry) -> StoreError {
        StoreError::AlreadyExists {
            what: "registry entry",
            id: key(e.region.as_str(), &e.model, e.checkpoint.as_str()),
        }
    }

    pub fn approved(a: &Approval) -> StoreError {
        StoreError::AlreadyExists {
            what: "approval",
            id: format!("{} by {}", key(a.region.as_str(), &a.model, a.checkpoint.as_str()), a.approver),
        }
    }

    pub fn unapproved(a: &Approval) -> StoreError {
        StoreError::NotFound { what: "registry entry", id: key(a.region.as_str(), &a.model, a.checkpoint.as_str()) }
    }

    pub fn missing(m: &Move) -> StoreError {
        StoreError::NotFound { what: "registry entry", id: key(m.region.as_str(), &m.model, m.checkpoint.as_str()) }
    }

    pub fn moved(m: &Move, state: ModelState) -> StoreError {
        StoreError::Conflict {
            what: "registry entry",
            id: key(m.region.as_str(), &m.model, m.checkpoint.as_str()),
            action: format!("move {} to {}", m.from, m.to),
            state: state.to_string(),
        }
    }

    pub fn second(m: &Move) -> StoreError {
        StoreError::Conflict {
            what: "registry entry",
            id: key(m.region.as_str(), &m.model, m.checkpoint.as_str()),
            action: format!("move to {}", m.to),
            state: format!("not the only {} of {} in {}", m.to, m.model, m.region),
        }
    }
}
