//! The coordinator lease: one leader at a time, takeover only after expiry or release, and
//! a deposed leader's writes refused by the fencing token, with nothing written.

use super::*;
use crate::store::lease::{Acquired, FencingToken, LeaseState};
use std::time::Duration;

/// What a backend's contract guard provides for the cases with two coordinators: a second
/// handle on the same database with its own fence, as a second process would open it.
#[async_trait]
pub(crate) trait OpenPeer: Send + Sync {
    async fn open_peer(&self) -> Box<dyn Store>;
}

const LONG: Duration = Duration::from_secs(3600);

#[track_caller]
fn granted(a: Acquired) -> LeaseState {
    match a {
        Acquired::Granted(l) => l,
        other => panic!("expected the lease to be granted, got {other:?}"),
    }
}

#[track_caller]
fn fenced<T: Debug>(r: Result<T, StoreError>) -> (FencingToken, FencingToken, String) {
    match r {
        Err(StoreError::Fenced { mine, current, holder }) => (mine, current, holder),
        other => panic!("expected a fenced refusal, got {other:?}"),
    }
}

pub(crate) async fn the_lease_is_held_by_one_coordinator_until_it_expires(store: &dyn Store, peers: &dyn OpenPeer) {
    let other = peers.open_peer().await;
    let before = store.lease().await.unwrap();
    let a = granted(store.acquire_lease("coordinator-a", LONG).await.unwrap());
    assert_eq!((a.holder.as_str(), a.token), ("coordinator-a", FencingToken(before.token.0 + 1)));
    assert!(a.expires_at > Utc::now() + chrono::Duration::minutes(59), "{a:?}");
    // The other coordinator stands by: the lease is not expired.
    match other.acquire_lease("coordinator-b", LONG).await.unwrap() {
        Acquired::HeldBy(held) => assert_eq!(held, a),
        granted => panic!("a second coordinator took an unexpired lease: {granted:?}"),
    }
    let renewed = store.renew_lease(a.token, LONG).await.unwrap();
    assert_eq!((renewed.holder.as_str(), renewed.token), ("coordinator-a", a.token));
    assert!(renewed.expires_at >= a.expires_at);
    assert_eq!(other.lease().await.unwrap(), renewed);
    // The leader writes.
    let run = run_record(RunState::Queued);
    store.create_run(&run).await.unwrap();
    assert!(other.get_run(&run.id).await.unwrap().is_some());
}

pub(crate) async fn a_taken_over_lease_refuses_the_old_leaders_writes(store: &dyn Store, peers: &dyn OpenPeer) {
    let other = peers.open_peer().await;
    // A lease of zero length has expired by the time anyone else asks.
    let a = granted(store.acquire_lease("coordinator-a", Duration::ZERO).await.unwrap());
    let kept = run_record(RunState::Queued);
    store.create_run(&kept).await.unwrap();
    let b = granted(other.acquire_lease("coordinator-b", LONG).await.unwrap());
    assert_eq!(b.token, FencingToken(a.token.0 + 1));
    // Every kind of write of the deposed leader is refused, naming both tokens and the
    // new holder, and none is applied.
    let late = run_record(RunState::Queued);
    let (mine, current, holder) = fenced(store.create_run(&late).await);
    assert_eq!((mine, current, holder.as_str()), (a.token, b.token, "coordinator-b"));
    fenced(store.set_run_state(&kept.id, RunState::Cancelled, Some("late")).await);
    let late_client = ClientRecord {
        id: id("late-client"),
        region: id("eu"),
        datasets: vec![],
        devices: vec![],
        registered_at: now(),
        members: 1,
    };
    fenced(store.upsert_client(&late_client).await);
    let late_entry = AuditDraft {
        at_ms: 1_000,
        actor: "coordinator-a".into(),
        action: fedra_types::audit::AuditAction::ALL[0],
        run: None,
        region: None,
        detail: "a deposed leader's late entry".into(),
    };
    fenced(store.append_audit(&[late_entry]).await);
    assert!(other.get_run(&late.id).await.unwrap().is_none());
    assert_eq!(other.get_run(&kept.id).await.unwrap().unwrap().state, RunState::Queued);
    assert!(other.list_clients().await.unwrap().is_empty());
    assert!(other.list_audit(&AuditFilter::default()).await.unwrap().is_empty());
    // Nor can it renew or release the lease it lost.
    let (mine, current, _) = fenced(store.renew_lease(a.token, LONG).await);
    assert_eq!((mine, current), (a.token, b.token));
    store.release_lease(a.token).await.unwrap();
    assert_eq!(other.lease().await.unwrap(), b);
    // The new leader writes.
    other.set_run_state(&kept.id, RunState::Running, None).await.unwrap();
    assert_eq!(store.get_run(&kept.id).await.unwrap().unwrap().state, RunState::Running);
}

pub(crate) async fn a_released_lease_is_taken_over_at_once(store: &dyn Store, peers: &dyn OpenPeer) {
    let other = peers.open_peer().await;
    let a = granted(store.acquire_lease("coordinator-a", LONG).await.unwrap());
    assert!(matches!(other.acquire_lease("coordinator-b", LONG).await.unwrap(), Acquired::HeldBy(_)));
    store.release_lease(a.token).await.unwrap();
    let b = granted(other.acquire_lease("coordinator-b", LONG).await.unwrap());
    assert_eq!((b.holder.as_str(), b.token), ("coordinator-b", FencingToken(a.token.0 + 1)));
    fenced(store.create_run(&run_record(RunState::Queued)).await);
}
