//! The check every backend makes when it writes privacy reservations, so that the ledger
//! stays within budget when several coordinators share one database.
//!
//! Admission (`privacy::admission`) reads a scope's ledger, checks the round against the
//! budget and states the result in the entry it reserves: `epsilon_cumulative`, the scope's
//! ε including this entry. Reading and reserving are two store calls, and a lock in one
//! process cannot keep another process's reservation out of the gap between them. The store
//! does not know budgets, but it can tell whether the entry's statement still holds: it
//! re-reads the scope's entries under a lock that keeps other reservations of the scope
//! out (SQLite's write lock, a PostgreSQL advisory lock per scope, the memory store's
//! mutex) and refuses the entry when those entries and it spend more than it states. The
//! ledger only grows, so that happens exactly when another reservation of the scope landed
//! after the caller's read; and whatever is accepted spends at most what the caller checked
//! against its budget. Two coordinators racing for the last ε of a scope: one reserves it,
//! the other is refused. (Admission does not re-read and retry on that refusal yet, so the
//! losing round fails, and with it its run: never over budget, but harsher than needed.
//! Within one process admission's own lock keeps the refusal from ever happening.)
//!
//! ε is computed exactly as admission computes it (`fedra_dp::accountant::epsilon` over the
//! scope's costs oldest first, then the new ones, at the entry's δ), so an unchanged ledger
//! gives the stated value bit for bit. Stating more than the ledger spends is accepted: it
//! over-counts, which the ledger's discipline allows.

use super::StoreError;
use crate::privacy::LedgerEntry;
use crate::privacy::accountant::{self, RoundCost};

/// Checks each of `entries` (in batch order) against `stored`: the stored entries of the
/// scopes they touch (others are ignored), oldest first as [`super::Store::list_ledger`]
/// orders them, read under the lock the write holds. The k-th entry of a scope in the batch
/// must state at least the ε of the scope's stored entries and the batch's first k.
///
/// # Errors
/// [`StoreError::Conflict`] (`"privacy ledger entry"`) for the first entry that states less;
/// [`StoreError::Corrupt`] when a cost does not account.
pub(super) fn check_claims(stored: &[LedgerEntry], entries: &[LedgerEntry]) -> Result<(), StoreError> {
    for (i, e) in entries.iter().enumerate() {
        let costs: Vec<RoundCost> =
            stored.iter().chain(&entries[..=i]).filter(|s| s.scope == e.scope).map(|s| s.cost.clone()).collect();
        let spent = accountant::epsilon(&costs, e.delta)
            .map_err(|err| StoreError::Corrupt(format!("ledger of scope {}: {err}", e.scope)))?
            .epsilon;
        if spent > e.epsilon_cumulative {
            return Err(understated(e, spent));
        }
    }
    Ok(())
}

/// The refusal of an entry whose stated ε is below what its scope spends with it.
fn understated(e: &LedgerEntry, spent: f64) -> StoreError {
    StoreError::Conflict {
        what: "privacy ledger entry",
        id: format!("{}/{}/{}/{}", e.scope, e.run, e.round, e.attempt),
        action: "reserve".into(),
        state: format!(
            "stale: it states ε={:.6} for scope {}, which spends ε={spent:.6} with it (a reservation written after \
             the ledger was read); read the ledger and admit the round again",
            e.epsilon_cumulative, e.scope
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RegionId, RunId};
    use crate::privacy::accountant::Accountant;
    use crate::privacy::{LedgerState, PrivacyScope};

    fn entry(region: &str, round: u32, claim: f64) -> LedgerEntry {
        LedgerEntry {
            scope: PrivacyScope::new("m", RegionId::new(region).unwrap()),
            run: RunId::new("run-1").unwrap(),
            round,
            attempt: 1,
            state: LedgerState::Reserved,
            accountant: Accountant::Zcdp,
            cost: RoundCost::gaussian(0.02),
            noise_multiplier: 1.0,
            clip_norm: 1.0,
            sampling_rate: 1.0,
            delta: 1e-6,
            epsilon_cumulative: claim,
            next_clip_norm: None,
            created_at: chrono::Utc::now(),
        }
    }

    fn eps(rounds: usize) -> f64 {
        accountant::epsilon(&vec![RoundCost::gaussian(0.02); rounds], 1e-6).unwrap().epsilon
    }

    #[test]
    fn an_entry_stating_what_its_scope_spends_with_it_passes_and_one_stating_less_is_refused() {
        let stored = [entry("eu", 1, eps(1)), entry("us", 1, eps(1))];
        assert!(check_claims(&stored, &[entry("eu", 2, eps(2))]).is_ok(), "exactly what it spends");
        assert!(check_claims(&stored, &[entry("eu", 2, eps(5))]).is_ok(), "over-counting is allowed");
        // Computed from an empty ledger, written after another reservation.
        let err = check_claims(&stored, &[entry("eu", 2, eps(1))]).unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict { what: "privacy ledger entry", id, .. } if id == "m@eu/run-1/2/1"),
            "{err:?}"
        );
        // Batch entries of one scope count for the ones after them; other scopes do not.
        assert!(check_claims(&stored, &[entry("eu", 2, eps(2)), entry("eu", 3, eps(3))]).is_ok());
        assert!(check_claims(&stored, &[entry("eu", 2, eps(2)), entry("eu", 3, eps(2))]).is_err());
        assert!(check_claims(&[], &[entry("ap", 1, eps(1)), entry("eu", 1, eps(1))]).is_ok());
    }
}
