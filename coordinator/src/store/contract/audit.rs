//! Contract cases for the audit log: chaining, atomic appends, filters, paging.

use super::*;
use fedra_types::audit::{AuditAction, GENESIS, verify};

fn draft(i: i64, run: Option<&str>, region: Option<&str>, actor: &str) -> AuditDraft {
    AuditDraft {
        at_ms: 1_000 + i,
        actor: actor.to_string(),
        action: AuditAction::ALL[(i as usize) % AuditAction::ALL.len()],
        run: run.map(str::to_string),
        region: region.map(str::to_string),
        detail: format!("entry {i}"),
    }
}

pub(crate) async fn audit_entries_are_numbered_and_chained_across_appends(store: &dyn Store) {
    assert!(store.append_audit(&[]).await.unwrap().is_empty());
    let first = store
        .append_audit(&[
            draft(0, Some("run-a"), None, "fedra://scientist/s"),
            draft(1, None, Some("eu"), "coordinator"),
        ])
        .await
        .unwrap();
    assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(first[0].prev_hash, GENESIS);
    assert_eq!(first[1].prev_hash, first[0].hash);
    let more = store.append_audit(&[draft(2, Some("run-b"), Some("us"), "coordinator")]).await.unwrap();
    assert_eq!((more[0].seq, more[0].prev_hash.as_str()), (3, first[1].hash.as_str()));
    let all = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[..2], first[..]);
    assert_eq!(verify(&all), Ok((3, more[0].hash.clone())));
}

pub(crate) async fn audit_entries_are_listed_by_filter_oldest_first(store: &dyn Store) {
    let drafts = [
        draft(0, Some("run-a"), Some("eu"), "fedra://scientist/s"),
        draft(1, Some("run-b"), Some("us"), "coordinator"),
        draft(2, Some("run-a"), Some("us"), "coordinator"),
        draft(3, None, None, "fedra://approver/p"),
    ];
    store.append_audit(&drafts).await.unwrap();
    let seqs = |f: AuditFilter| async move {
        store.list_audit(&f).await.unwrap().into_iter().map(|e| e.seq).collect::<Vec<_>>()
    };
    assert_eq!(seqs(AuditFilter { run: Some(id("run-a")), ..AuditFilter::default() }).await, [1, 3]);
    assert_eq!(seqs(AuditFilter { region: Some(id("us")), ..AuditFilter::default() }).await, [2, 3]);
    assert_eq!(seqs(AuditFilter { actor: Some("coordinator".into()), ..AuditFilter::default() }).await, [2, 3]);
    assert_eq!(seqs(AuditFilter { since_ms: Some(1_002), ..AuditFilter::default() }).await, [3, 4]);
    assert_eq!(seqs(AuditFilter { after_seq: Some(1), limit: Some(2), ..AuditFilter::default() }).await, [2, 3]);
    assert_eq!(seqs(AuditFilter { run: Some(id("run-z")), ..AuditFilter::default() }).await, Vec::<i64>::new());
}

pub(crate) async fn approvals_queue_a_pending_run_once_enough_approvers_agree(store: &dyn Store) {
    let run = RunRecord { approvals_needed: 2, ..run_record(RunState::PendingApproval) };
    store.create_run(&run).await.unwrap();
    let first = store.approve_run(&run.id, "fedra://approver/a").await.unwrap();
    assert_eq!(first, ApprovalCount { approvals: 1, needed: 2, queued: false });
    let again = store.approve_run(&run.id, "fedra://approver/a").await.unwrap_err();
    assert!(
        matches!(&again, StoreError::AlreadyExists { what: "approval", id } if *id == format!("{}/fedra://approver/a", run.id)),
        "{again}"
    );
    assert_eq!(store.get_run(&run.id).await.unwrap().unwrap().state, RunState::PendingApproval);
    let second = store.approve_run(&run.id, "fedra://approver/b").await.unwrap();
    assert_eq!(second, ApprovalCount { approvals: 2, needed: 2, queued: true });
    let stored = store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!((stored.state, stored.approvals_needed), (RunState::Queued, 2));
    let late = store.approve_run(&run.id, "fedra://approver/c").await.unwrap_err();
    assert!(matches!(late, StoreError::Conflict { what: "run", .. }), "{late}");
    let unknown = store.approve_run(&RunId::generate(), "fedra://approver/a").await.unwrap_err();
    assert!(matches!(unknown, StoreError::NotFound { what: "run", .. }), "{unknown}");
}

pub(crate) async fn a_round_completion_appends_its_audit_entries_atomically(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &[(id("c1"), id("eu"))]).await.unwrap();
    let drafts = vec![draft(0, Some(a.id.as_str()), Some("eu"), "coordinator"), draft(1, None, None, "coordinator")];
    store.complete_round(&RoundCompletion { audit: drafts.clone(), ..completion(&a.id, 1, 1, false) }).await.unwrap();
    let log = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(log.iter().map(|e| e.draft.clone()).collect::<Vec<_>>(), drafts);
    assert!(verify(&log).is_ok());
    // A refused completion (the attempt is done already) appends nothing.
    let again = RoundCompletion { audit: drafts.clone(), ..completion(&a.id, 1, 1, false) };
    assert!(store.complete_round(&again).await.is_err());
    assert_eq!(store.list_audit(&AuditFilter::default()).await.unwrap().len(), 2);
}
