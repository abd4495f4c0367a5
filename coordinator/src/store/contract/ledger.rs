//! Contract cases for what a reservation states: its scope's ε including it, which the
//! store checks against the scope's stored entries in the write (`store/reservations.rs`).

use super::*;

/// ε after `rounds` rounds of the fixture's cost in one scope: what an entry of round
/// `rounds` states when the rounds before it are the scope's only entries.
pub(super) fn claim(rounds: u32) -> f64 {
    let cost = ledger_cost();
    crate::privacy::accountant::epsilon(&vec![cost; rounds as usize], 1e-6).unwrap().epsilon
}

fn ledger_cost() -> RoundCost {
    RoundCost::sampled_gaussian(0.1, 1.1).unwrap()
}

/// Bug: two coordinators on one database each read a scope's ledger, each found room for
/// one more round, and both reserved it. The second reservation states an ε computed
/// without the first, and is refused.
pub(crate) async fn a_reservation_that_understates_its_scope_is_refused(store: &dyn Store) {
    let b = new_run(store, RunState::Running).await;
    let first = ledger_entry(&b.id, "eu", 1, 1);
    store.reserve_privacy(std::slice::from_ref(&first)).await.unwrap();

    // Admitted against the ledger as it was before `first`.
    let stale = LedgerEntry { epsilon_cumulative: claim(1), ..ledger_entry(&b.id, "eu", 1, 2) };
    let err = store.reserve_privacy(std::slice::from_ref(&stale)).await.unwrap_err();
    assert!(err.is_refusal());
    assert!(
        err.to_string().starts_with(&format!("cannot reserve privacy ledger entry m@eu/{}/1/2: it is stale", b.id))
    );
    assert_eq!(refused(Err::<(), _>(err)), ("conflict", "privacy ledger entry", format!("m@eu/{}/1/2", b.id)));
    // In a batch, the stale entry costs the batch: nothing is written.
    let batch = [ledger_entry(&b.id, "us", 1, 2), stale.clone()];
    assert_eq!(refused(store.reserve_privacy(&batch).await).0, "conflict");
    assert_eq!(store.list_ledger(&LedgerFilter::default()).await.unwrap(), vec![first.clone()]);
    // A stored key is named before a stale statement.
    let again = LedgerEntry { epsilon_cumulative: 0.0, ..first.clone() };
    assert_eq!(refused(store.reserve_privacy(&[again]).await).0, "already exists");

    // Re-admitted against the ledger as it is now, it is written; stating more is allowed.
    let fresh = LedgerEntry { epsilon_cumulative: claim(2), ..stale };
    let generous = LedgerEntry { epsilon_cumulative: claim(9), ..ledger_entry(&b.id, "us", 1, 2) };
    store.reserve_privacy(&[generous.clone(), fresh.clone()]).await.unwrap();
    assert_eq!(store.list_ledger(&LedgerFilter::default()).await.unwrap().len(), 3);
    // Two entries of one scope in one batch: the second counts the first.
    let (third, fourth) = (ledger_entry(&b.id, "eu", 3, 1), ledger_entry(&b.id, "eu", 4, 1));
    let undercount = LedgerEntry { epsilon_cumulative: claim(3), ..fourth.clone() };
    assert_eq!(refused(store.reserve_privacy(&[third.clone(), undercount]).await).0, "conflict");
    store.reserve_privacy(&[third, fourth]).await.unwrap();
}
