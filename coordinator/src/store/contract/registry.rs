//! Contract cases for the model registry.

use super::*;
use crate::registry::{Approval, ModelState, Move, PolicyGate, RegistryChange, RegistryEntry, RegistryFilter, Verdict};

/// A run with one completed round whose checkpoint is in `regions`.
async fn published(store: &dyn Store, regions: &[&str]) -> CheckpointId {
    let run = new_run(store, RunState::Running).await;
    store.begin_round(&run.id, 1, 1, &two_clients()).await.unwrap();
    let cp = checkpoint(&run.id, 1, regions);
    store
        .complete_round(&RoundCompletion { checkpoint: cp.clone(), ..completion(&run.id, 1, 1, false) })
        .await
        .unwrap();
    cp.id
}

fn candidate(checkpoint: &CheckpointId, region: &str) -> RegistryEntry {
    RegistryEntry {
        region: id(region),
        model: "lr".into(),
        checkpoint: checkpoint.clone(),
        run: id(checkpoint.as_str().split('.').next().unwrap()),
        round: 1,
        state: ModelState::Candidate,
        gate: Verdict { passed: true, detail: "ok".into() },
        eval: Some(crate::registry::RegionEval { accuracy: 0.9, loss: 0.3, samples: 40 }),
        canary_fraction: 0.1,
        updated_at: now(),
        policy: None,
        approvers: Vec::new(),
    }
}

fn moved(checkpoint: &CheckpointId, region: &str, from: ModelState, to: ModelState) -> Move {
    Move { region: id(region), model: "lr".into(), checkpoint: checkpoint.clone(), from, to, canary_fraction: None }
}

fn change(inserts: Vec<RegistryEntry>, moves: Vec<Move>) -> RegistryChange {
    RegistryChange {
        inserts,
        approvals: Vec::new(),
        moves,
        actor: "fedra://approver/ann".into(),
        reason: "test".into(),
        audit: vec![crate::audit::draft(
            "fedra://approver/ann",
            fedra_types::audit::AuditAction::CheckpointPromoted,
            "x",
        )],
    }
}

pub(crate) async fn registry_changes_are_atomic_and_keep_one_serving(store: &dyn Store) {
    let a = published(store, &["eu"]).await;
    let b = published(store, &["eu"]).await;
    let t = store.apply_registry(&change(vec![candidate(&a, "eu"), candidate(&b, "eu")], vec![])).await.unwrap();
    assert_eq!(
        t.iter().map(|t| (t.seq, t.from, t.to)).collect::<Vec<_>>(),
        vec![(1, None, ModelState::Candidate), (2, None, ModelState::Candidate)]
    );
    let err = store.apply_registry(&change(vec![candidate(&a, "eu")], vec![])).await;
    assert_eq!(refused(err), ("already exists", "registry entry", format!("eu/lr/{a}")));

    store
        .apply_registry(&change(vec![], vec![moved(&a, "eu", ModelState::Candidate, ModelState::Serving)]))
        .await
        .unwrap();
    // A second serving checkpoint is refused, and so is everything else in that change.
    let audit_before = store.list_audit(&AuditFilter::default()).await.unwrap().len();
    let err = store
        .apply_registry(&change(
            vec![],
            vec![
                moved(&b, "eu", ModelState::Candidate, ModelState::Canary),
                moved(&b, "eu", ModelState::Canary, ModelState::Serving),
            ],
        ))
        .await;
    assert_eq!(conflict(err).0, "registry entry");
    let entries = store.registry_entries(&RegistryFilter::default()).await.unwrap();
    let state_of = |c: &CheckpointId| entries.iter().find(|e| &e.checkpoint == c).map(|e| e.state);
    assert_eq!((state_of(&a), state_of(&b)), (Some(ModelState::Serving), Some(ModelState::Candidate)));
    let mut ids: Vec<_> = entries.iter().map(|e| e.checkpoint.clone()).collect();
    ids.sort();
    assert_eq!(entries.iter().map(|e| e.checkpoint.clone()).collect::<Vec<_>>(), ids, "listed by checkpoint id");
    assert_eq!(store.list_audit(&AuditFilter::default()).await.unwrap().len(), audit_before, "no audit entry");
    // A move from a state the entry has left is a conflict naming the stored state.
    let err =
        store.apply_registry(&change(vec![], vec![moved(&b, "eu", ModelState::Canary, ModelState::Serving)])).await;
    assert_eq!(conflict(err).2, "candidate");
    let ghost = CheckpointId::for_round(&id("run-ghost"), RoundNumber(1));
    let err = store
        .apply_registry(&change(vec![], vec![moved(&ghost, "eu", ModelState::Candidate, ModelState::Serving)]))
        .await;
    assert_eq!(refused(err).0, "not found");

    // Promotion in one change: the serving one retires, the candidate serves.
    let t = store
        .apply_registry(&change(
            vec![],
            vec![
                moved(&a, "eu", ModelState::Serving, ModelState::Retired),
                moved(&b, "eu", ModelState::Candidate, ModelState::Serving),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(t.len(), 2);
    let live = store.registry_entries(&RegistryFilter::default()).await.unwrap();
    assert_eq!(live.len(), 1, "retired entries are listed only with `all`");
    assert_eq!((live[0].checkpoint.clone(), live[0].state), (b.clone(), ModelState::Serving));
    assert_eq!(live[0].eval, candidate(&b, "eu").eval);
    let all = store.registry_entries(&RegistryFilter { all: true, ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), 2);
    let history =
        store.registry_history(&RegistryFilter { region: Some(id("eu")), ..Default::default() }).await.unwrap();
    assert_eq!(history.len(), 5);
    assert_eq!(history.last().unwrap().actor, "fedra://approver/ann");
    assert!(
        store
            .registry_history(&RegistryFilter { region: Some(id("us")), ..Default::default() })
            .await
            .unwrap()
            .is_empty()
    );
}

fn approval(checkpoint: &CheckpointId, region: &str, approver: &str) -> Approval {
    Approval {
        region: id(region),
        model: "lr".into(),
        checkpoint: checkpoint.clone(),
        approver: approver.into(),
        reason: "reviewed".into(),
    }
}

pub(crate) async fn model_approvals_are_recorded_once_per_approver_with_the_change(store: &dyn Store) {
    let a = published(store, &["eu"]).await;
    let gate = PolicyGate {
        rule: "policies/promotion.toml:9 (promotion model=* region=EU approvals=2)".into(),
        passed: false,
        allow_override: false,
        approvals_needed: 2,
    };
    let entry = RegistryEntry { policy: Some(gate.clone()), approvers: vec!["ignored".into()], ..candidate(&a, "eu") };
    store.apply_registry(&change(vec![entry], vec![])).await.unwrap();
    let read = store.registry_entries(&RegistryFilter::default()).await.unwrap();
    assert_eq!(read[0].policy.as_ref(), Some(&gate), "the policy gate round-trips");
    assert!(read[0].approvers.is_empty(), "approvals are recorded only as approvals");
    assert!(!read[0].gate_overridable() && !read[0].approved());

    let first =
        RegistryChange { approvals: vec![approval(&a, "eu", "fedra://approver/ann")], ..change(vec![], vec![]) };
    store.apply_registry(&first).await.unwrap();
    // The same approver again is refused, and so is the move in that change.
    let again = RegistryChange {
        approvals: vec![approval(&a, "eu", "fedra://approver/ann")],
        ..change(vec![], vec![moved(&a, "eu", ModelState::Candidate, ModelState::Serving)])
    };
    let err = store.apply_registry(&again).await;
    assert_eq!(refused(err), ("already exists", "approval", format!("eu/lr/{a} by fedra://approver/ann")));
    let stray = RegistryChange { approvals: vec![approval(&a, "us", "x")], ..change(vec![], vec![]) };
    assert_eq!(refused(store.apply_registry(&stray).await).0, "not found", "an approval names a stored entry");
    let second = RegistryChange {
        approvals: vec![approval(&a, "eu", "fedra://admin/bob")],
        ..change(vec![], vec![moved(&a, "eu", ModelState::Candidate, ModelState::Serving)])
    };
    store.apply_registry(&second).await.unwrap();
    let read = store.registry_entries(&RegistryFilter::default()).await.unwrap();
    assert_eq!(read[0].approvers, ["fedra://approver/ann", "fedra://admin/bob"], "in approval order");
    assert_eq!(read[0].state, ModelState::Serving);
    assert!(read[0].approved());
}
