//! Contract cases for the model registry.

use super::*;
use crate::registry::{ModelState, Move, RegistryChange, RegistryEntry, RegistryFilter, Verdict};

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
    }
}

fn moved(checkpoint: &CheckpointId, region: &str, from: ModelState, to: ModelState) -> Move {
    Move { region: id(region), model: "lr".into(), checkpoint: checkpoint.clone(), from, to, canary_fraction: None }
}

fn change(inserts: Vec<RegistryEntry>, moves: Vec<Move>) -> RegistryChange {
    RegistryChange {
        inserts,
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
