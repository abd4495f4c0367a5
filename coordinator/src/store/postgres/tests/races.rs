//! Two coordinator processes on one database, played by two stores (two pools) on one
//! schema, many tasks each, released together: what SQLite's single writer made safe must
//! stay safe (see the parent module's "Concurrency").

use super::*;
use crate::privacy::accountant::{Accountant, RoundCost};
use crate::privacy::{Budget, LedgerState, PrivacyError, PrivacyScope};
use std::sync::Arc;
use tokio::sync::Barrier;

const TASKS_PER_STORE: usize = 8;

async fn two_stores() -> (PgStore, PgStore, Schema) {
    let schema = Schema::create().await;
    let a = schema.store().await;
    let b = schema.store().await;
    (a, b, schema)
}

/// Runs `work(store, task)` on `TASKS_PER_STORE` tasks per store, all released at once,
/// and returns their results in task order.
async fn race<T, F, Fut>(a: &PgStore, b: &PgStore, work: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(PgStore, usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(2 * TASKS_PER_STORE));
    let mut tasks = Vec::new();
    for i in 0..2 * TASKS_PER_STORE {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (barrier, job) = (Arc::clone(&barrier), work(store, i));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            job.await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("a racing task panicked"));
    }
    out
}

fn cost() -> RoundCost {
    RoundCost::gaussian(0.02)
}

/// What admission does (`privacy::admission`), as a coordinator would from its own
/// process: read the scope's ledger, admit one round against the budget, reserve it with
/// the ε it was admitted at; again until the budget refuses. A stale reservation is
/// re-admitted from a fresh read. Returns how many rounds this task reserved; its
/// reservations are round `task`, attempts 1, 2, ….
async fn reserve_until_refused(store: PgStore, run: RunId, scope: PrivacyScope, budget: Budget, task: u32) -> u32 {
    let mut reserved = 0;
    loop {
        let filter = LedgerFilter { scope: Some(scope.clone()), run: None };
        let prior = store.list_ledger(&filter).await.unwrap();
        let after = match crate::privacy::ledger::admit(&scope, budget, &prior, &[cost()]) {
            Ok(after) => after,
            Err(PrivacyError::OverBudget { .. }) => return reserved,
            Err(e) => panic!("{e}"),
        };
        let entry = LedgerEntry {
            scope: scope.clone(),
            run: run.clone(),
            round: task,
            attempt: reserved + 1,
            state: LedgerState::Reserved,
            accountant: Accountant::Zcdp,
            cost: cost(),
            noise_multiplier: 1.0,
            clip_norm: 1.0,
            sampling_rate: 1.0,
            delta: budget.delta,
            epsilon_cumulative: after,
            next_clip_norm: None,
            created_at: Utc::now(),
        };
        match store.reserve_privacy(&[entry]).await {
            Ok(()) => reserved += 1,
            Err(StoreError::Conflict { what: "privacy ledger entry", .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Bug: each coordinator checked the budget against the ledger it had read, so two could
/// both take the last round's worth of ε. With the scope locked while the reservation's
/// stated ε is checked, exactly what the budget leaves is reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_coordinators_racing_for_the_last_epsilon_reserve_exactly_what_is_left() {
    let (a, b, _schema) = two_stores().await;
    let run = run_record(RunState::Running);
    a.create_run(&run).await.unwrap();
    let scope = PrivacyScope::new("lr", RegionId::new("eu").unwrap());
    let epsilon_of = |rounds: usize| crate::privacy::accountant::epsilon(&vec![cost(); rounds], 1e-6).unwrap().epsilon;
    // Room for exactly 12 rounds; 3 are spent, so 9 are left for 16 contenders.
    let budget = Budget { epsilon: epsilon_of(12), delta: 1e-6 };
    let three = Budget { epsilon: epsilon_of(3), ..budget };
    assert_eq!(reserve_until_refused(a.clone(), run.id.clone(), scope.clone(), three, 100).await, 3);

    let won = race(&a, &b, |store, i| reserve_until_refused(store, run.id.clone(), scope.clone(), budget, i as u32));
    let won = won.await;
    assert_eq!(won.iter().sum::<u32>(), 9, "reserved per task: {won:?}");
    let ledger = b.list_ledger(&LedgerFilter { scope: Some(scope.clone()), run: None }).await.unwrap();
    assert_eq!(ledger.len(), 12);
    let spent = crate::privacy::ledger::spent(&ledger, budget.delta).unwrap();
    assert!(spent <= budget.epsilon, "spent {spent} of {}", budget.epsilon);
    // Every stored statement is what the scope spent up to and including it.
    for (k, e) in ledger.iter().enumerate() {
        assert_eq!(e.epsilon_cumulative, crate::privacy::ledger::spent(&ledger[..=k], budget.delta).unwrap());
    }
}

/// Two approvers per process for a run that needs three: three approvals are recorded,
/// exactly one of them queues the run, and the others find it queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_approvals_queue_the_run_exactly_once() {
    let (a, b, _schema) = two_stores().await;
    let run = RunRecord { approvals_needed: 3, ..run_record(RunState::PendingApproval) };
    a.create_run(&run).await.unwrap();
    let results = race(&a, &b, |store, i| {
        let id = run.id.clone();
        async move { store.approve_run(&id, &format!("fedra://admin/approver-{i}")).await }
    })
    .await;
    let counts: Vec<ApprovalCount> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    let mut seen: Vec<u32> = counts.iter().map(|c| c.approvals).collect();
    seen.sort();
    assert_eq!(seen, [1, 2, 3], "{results:?}");
    assert_eq!(counts.iter().filter(|c| c.queued).count(), 1);
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(refused, StoreError::Conflict { what: "run", state, .. } if state == "queued"), "{refused:?}");
    }
    assert_eq!(a.get_run(&run.id).await.unwrap().unwrap().state, RunState::Queued);
}

/// Appends from two processes form one chain: no two entries share a head.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_audit_appends_never_fork_the_chain() {
    let (a, b, _schema) = two_stores().await;
    let appended = race(&a, &b, |store, i| async move {
        let drafts: Vec<AuditDraft> = (0..3)
            .map(|k| AuditDraft {
                at_ms: 1_000 + k,
                actor: format!("fedra://admin/writer-{i}"),
                action: fedra_types::audit::AuditAction::ALL[0],
                run: None,
                region: None,
                detail: format!("entry {k} of writer {i}"),
            })
            .collect();
        store.append_audit(&drafts).await.unwrap().len()
    })
    .await;
    assert_eq!(appended.iter().sum::<usize>(), 6 * TASKS_PER_STORE);
    let log = a.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(log.len(), 6 * TASKS_PER_STORE);
    let (last, _) = fedra_types::audit::verify(&log).expect("one unbroken chain");
    assert_eq!(last, (6 * TASKS_PER_STORE) as i64);
}

/// Update batches of one process and the attempt's failure in another touch the same
/// rows in opposite directions (participation then round, round then participations):
/// they serialise instead of deadlocking, and every update is either recorded or refused
/// because the attempt ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_batches_and_a_failing_attempt_serialise() {
    let (a, b, _schema) = two_stores().await;
    let run = run_record(RunState::Running);
    a.create_run(&run).await.unwrap();
    let clients: Vec<(ClientId, RegionId)> = (0..2 * TASKS_PER_STORE)
        .map(|i| (ClientId::new(format!("c{i:02}")).unwrap(), RegionId::new("eu").unwrap()))
        .collect();
    a.begin_round(&run.id, 1, 1, &clients).await.unwrap();
    let results = race(&a, &b, |store, i| {
        let (id, client) = (run.id.clone(), clients[i].0.clone());
        async move {
            if i == TASKS_PER_STORE {
                store.fail_round(&id, 1, 1, "deadline").await.map(|()| None)
            } else {
                let update = ParticipationRecord {
                    run: id,
                    round: 1,
                    attempt: 1,
                    client,
                    region: RegionId::new("eu").unwrap(),
                    status: ParticipationStatus::Reported,
                    samples: 10,
                    metrics: None,
                    update_norm: Some(0.5),
                    detail: None,
                };
                store.record_updates(&[update]).await.map(Some)
            }
        }
    })
    .await;
    let mut recorded = 0;
    for r in &results {
        match r.as_ref().expect("no database error (a deadlock is one)") {
            None => {}
            Some(outcome) if outcome.recorded == 1 => recorded += 1,
            Some(outcome) => assert_eq!(
                outcome.refused.iter().map(|r| r.reason).collect::<Vec<_>>(),
                [UpdateRefusal::Closed(ParticipationStatus::Dropped)]
            ),
        }
    }
    let rounds = b.list_rounds(&run.id).await.unwrap();
    assert_eq!((rounds[0].status, rounds[0].reported as usize), (RoundStatus::Failed, recorded));
    let parts = b.list_participations(&run.id).await.unwrap();
    let reported = parts.iter().filter(|p| p.status == ParticipationStatus::Reported).count();
    assert_eq!(reported, recorded);
    assert_eq!(parts.iter().filter(|p| p.status == ParticipationStatus::Selected).count(), 0);
}
