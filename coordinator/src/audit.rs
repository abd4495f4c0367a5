//! Writing the audit log (see `fedra_types::audit` for the entries and their hash chain).
//!
//! Who writes what: the gRPC edge records what callers ask for (submissions, approvals,
//! cancellations, refusals), the engine what it decides (admissions, blocks, privacy
//! reservations and charges, publications and withheld publications), launch and reload
//! what policy is in force. An action that must be audited and cannot be is not done: the
//! caller gets the store's error.

use crate::store::{Store, StoreError};
use fedra_types::audit::{AuditAction, AuditDraft};

/// The actor of entries the coordinator makes on its own (engine decisions).
pub const COORDINATOR: &str = "coordinator";

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A draft stamped now.
pub fn draft(actor: impl Into<String>, action: AuditAction, detail: impl Into<String>) -> AuditDraft {
    AuditDraft::new(now_ms(), actor, action, detail)
}

/// Appends one entry.
///
/// # Errors
/// The store's failure; the entry is then not written.
pub async fn record(store: &dyn Store, draft: AuditDraft) -> Result<(), StoreError> {
    store.append_audit(std::slice::from_ref(&draft)).await.map(drop)
}

/// The actor string of a caller: its certified identity, or `anonymous (--insecure)`.
pub fn actor(identity: Option<&fedra_types::identity::Identity>) -> String {
    identity.map_or_else(|| "anonymous (--insecure)".to_string(), ToString::to_string)
}
