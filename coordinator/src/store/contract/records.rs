//! Contract cases for participations, checkpoints, evaluations and the privacy ledger
//! (the run and round-attempt cases, and the fixtures, are in the parent module).

use super::*;

// ------------------------------------------------------------------------------------------
// Participations
// ------------------------------------------------------------------------------------------

pub(crate) async fn record_updates_moves_selected_clients_to_reported(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    let three = [(id("c1"), id("eu")), (id("c2"), id("us")), (id("c3"), id("us"))];
    store.begin_round(&a.id, 1, 1, &three).await.unwrap();
    let c1 = ParticipationRecord {
        detail: Some("re-clipped by the coordinator from norm 3".into()),
        ..update(&a.id, 1, 1, "c1", 10)
    };
    // Neither the status nor the region of the record is read.
    let c2 = ParticipationRecord {
        region: id("ap"),
        status: ParticipationStatus::Dropped,
        metrics: None,
        update_norm: None,
        ..update(&a.id, 1, 1, "c2", 5)
    };
    let outcome = store.record_updates(&[c1.clone(), c2.clone()]).await.unwrap();
    assert_eq!(outcome, UpdatesOutcome { recorded: 2, refused: vec![] });
    assert_eq!(participation(store, &a.id, 1, 1, "c1").await, c1);
    assert_eq!(
        participation(store, &a.id, 1, 1, "c2").await,
        ParticipationRecord { region: id("us"), status: ParticipationStatus::Reported, ..c2 }
    );
    assert_eq!(participation(store, &a.id, 1, 1, "c3").await.status, ParticipationStatus::Selected);
    let r = round_of(store, &a.id, 1, 1).await;
    assert_eq!((r.reported, r.samples, r.status), (2, 15, RoundStatus::InProgress));
    assert_eq!(store.record_updates(&[]).await.unwrap(), UpdatesOutcome::default());
}

/// Bug: a refusal on record was overwritten by a later `record_updates` of the same client.
pub(crate) async fn a_rejected_update_stays_rejected(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    store.reject_update(&a.id, 1, 1, &id("c1"), "norm 9 over the bound 1").await.unwrap();
    let rejected = participation(store, &a.id, 1, 1, "c1").await;
    assert_eq!(
        (rejected.status, rejected.detail.as_deref()),
        (ParticipationStatus::Rejected, Some("norm 9 over the bound 1"))
    );

    let outcome = store.record_updates(&[update(&a.id, 1, 1, "c1", 10), update(&a.id, 1, 1, "c2", 7)]).await.unwrap();
    assert_eq!(
        outcome,
        UpdatesOutcome {
            recorded: 1,
            refused: vec![RefusedUpdate {
                run: a.id.clone(),
                round: 1,
                attempt: 1,
                client: id("c1"),
                reason: UpdateRefusal::Closed(ParticipationStatus::Rejected),
            }],
        },
        "the rest of the batch is recorded"
    );
    assert_eq!(participation(store, &a.id, 1, 1, "c1").await, rejected, "the refusal stays on record");
    assert_eq!(participation(store, &a.id, 1, 1, "c2").await.status, ParticipationStatus::Reported);
    let r = round_of(store, &a.id, 1, 1).await;
    assert_eq!((r.reported, r.samples), (1, 7));
}

pub(crate) async fn an_update_is_recorded_once(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    let first = update(&a.id, 1, 1, "c1", 10);
    assert_eq!(store.record_updates(std::slice::from_ref(&first)).await.unwrap().recorded, 1);
    let again = ParticipationRecord { samples: 99, metrics: Some(metrics(9.0)), ..first.clone() };
    let outcome = store.record_updates(&[again]).await.unwrap();
    assert_eq!(outcome.recorded, 0);
    assert_eq!(
        outcome.refused.iter().map(|r| (r.client.as_str(), r.reason)).collect::<Vec<_>>(),
        [("c1", UpdateRefusal::Closed(ParticipationStatus::Reported))]
    );
    assert_eq!(participation(store, &a.id, 1, 1, "c1").await, first, "the first report stays");

    // Twice in one batch.
    let outcome = store.record_updates(&[update(&a.id, 1, 1, "c2", 5), update(&a.id, 1, 1, "c2", 7)]).await.unwrap();
    assert_eq!(outcome.recorded, 1);
    assert_eq!(
        outcome.refused.iter().map(|r| (r.client.as_str(), r.reason)).collect::<Vec<_>>(),
        [("c2", UpdateRefusal::Closed(ParticipationStatus::Reported))]
    );
    assert_eq!(participation(store, &a.id, 1, 1, "c2").await.samples, 5);
    let r = round_of(store, &a.id, 1, 1).await;
    assert_eq!((r.reported, r.samples), (2, 15));
}

pub(crate) async fn updates_of_unselected_clients_or_ended_attempts_are_refused(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    let outcome = store
        .record_updates(&[
            update(&a.id, 1, 1, "c9", 10),
            update(&a.id, 1, 5, "c1", 10),
            update(&RunId::generate(), 1, 1, "c1", 10),
        ])
        .await
        .unwrap();
    assert_eq!(outcome.recorded, 0);
    assert_eq!(
        outcome.refused.iter().map(|r| (r.client.as_str(), r.attempt, r.reason)).collect::<Vec<_>>(),
        [
            ("c9", 1, UpdateRefusal::NotSelected),
            ("c1", 5, UpdateRefusal::NotSelected),
            ("c1", 1, UpdateRefusal::NotSelected)
        ],
        "in batch order"
    );

    store.fail_round(&a.id, 1, 1, "deadline").await.unwrap();
    let outcome = store.record_updates(&[update(&a.id, 1, 1, "c2", 10)]).await.unwrap();
    assert_eq!(outcome.refused[0].reason, UpdateRefusal::Closed(ParticipationStatus::Dropped));
    assert_eq!(participation(store, &a.id, 1, 1, "c2").await.status, ParticipationStatus::Dropped);
    let r = round_of(store, &a.id, 1, 1).await;
    assert_eq!((r.reported, r.samples), (0, 0));
    assert_eq!(store.list_participations(&a.id).await.unwrap().len(), 2);
}

pub(crate) async fn only_a_pending_update_can_be_rejected(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    let three = [(id("c1"), id("eu")), (id("c2"), id("us")), (id("c3"), id("us"))];
    store.begin_round(&a.id, 1, 1, &three).await.unwrap();
    let key = |c: &str| format!("{}/{c}", attempt_key(&a.id, 1, 1));

    report(store, &[update(&a.id, 1, 1, "c1", 10)]).await;
    let err = store.reject_update(&a.id, 1, 1, &id("c1"), "late refusal").await.unwrap_err();
    assert_eq!(err.to_string(), format!("cannot reject the update of participation {}: it is reported", key("c1")));
    let c1 = participation(store, &a.id, 1, 1, "c1").await;
    assert_eq!((c1.status, c1.detail), (ParticipationStatus::Reported, None));

    store.reject_update(&a.id, 1, 1, &id("c2"), "first reason").await.unwrap();
    assert_eq!(
        conflict(store.reject_update(&a.id, 1, 1, &id("c2"), "second reason").await),
        ("participation", key("c2"), "rejected".to_string())
    );
    assert_eq!(participation(store, &a.id, 1, 1, "c2").await.detail.as_deref(), Some("first reason"));

    store.fail_round(&a.id, 1, 1, "deadline").await.unwrap();
    assert_eq!(conflict(store.reject_update(&a.id, 1, 1, &id("c3"), "late").await).2, "dropped");
    assert_eq!(participation(store, &a.id, 1, 1, "c3").await.detail, None);
}

// ------------------------------------------------------------------------------------------
// Checkpoints and evaluations
// ------------------------------------------------------------------------------------------

pub(crate) async fn checkpoints_are_listed_by_filter(store: &dyn Store) {
    let a = run_record(RunState::Running);
    let b = RunRecord { created_at: a.created_at + chrono::Duration::seconds(1), ..run_record(RunState::Running) };
    // Created newest first: listing is by run creation, then round.
    store.create_run(&b).await.unwrap();
    store.create_run(&a).await.unwrap();
    store.begin_round(&b.id, 1, 1, &two_clients()).await.unwrap();
    let cpb = checkpoint(&b.id, 1, &["us"]);
    store.complete_round(&RoundCompletion { checkpoint: cpb.clone(), ..completion(&b.id, 1, 1, false) }).await.unwrap();
    let mut cp1 = checkpoint(&a.id, 1, &["us", "eu"]);
    let cp2 = checkpoint(&a.id, 2, &["eu"]);
    for (round, cp) in [(1, &cp1), (2, &cp2)] {
        store.begin_round(&a.id, round, 1, &two_clients()).await.unwrap();
        store
            .complete_round(&RoundCompletion { checkpoint: cp.clone(), ..completion(&a.id, round, 1, false) })
            .await
            .unwrap();
    }
    cp1.locations.reverse();
    assert_eq!(store.get_checkpoint(&cp1.id).await.unwrap().unwrap(), cp1, "locations ordered by region");
    assert!(store.get_checkpoint(&CheckpointId::for_round(&a.id, RoundNumber(9))).await.unwrap().is_none());

    let all = store.list_checkpoints(&CheckpointFilter::default()).await.unwrap();
    assert_eq!(all, vec![cp1.clone(), cp2.clone(), cpb.clone()]);
    let eu = store.list_checkpoints(&CheckpointFilter { region: Some(id("eu")), ..Default::default() }).await.unwrap();
    assert_eq!(eu, vec![cp1.clone(), cp2.clone()]);
    let us = store.list_checkpoints(&CheckpointFilter { region: Some(id("us")), ..Default::default() }).await.unwrap();
    assert_eq!(us, vec![cp1.clone(), cpb.clone()]);
    let of_b =
        store.list_checkpoints(&CheckpointFilter { run: Some(b.id.clone()), ..Default::default() }).await.unwrap();
    assert_eq!(of_b, vec![cpb.clone()]);
    let lr = store.list_checkpoints(&CheckpointFilter { model_name: Some("lr".into()), ..Default::default() }).await;
    assert_eq!(lr.unwrap().len(), 3);
    let other = CheckpointFilter { model_name: Some("other".into()), ..Default::default() };
    assert!(store.list_checkpoints(&other).await.unwrap().is_empty());
    let none = CheckpointFilter { region: Some(id("ap")), run: Some(a.id.clone()), model_name: None };
    assert!(store.list_checkpoints(&none).await.unwrap().is_empty(), "filters combine");
}

pub(crate) async fn evaluations_round_trip_and_a_run_finishes_after_its_last(store: &dyn Store) {
    let b = new_run(store, RunState::Running).await;
    store.begin_round(&b.id, 1, 1, &two_clients()).await.unwrap();
    let c = completion(&b.id, 1, 1, false);
    store.complete_round(&c).await.unwrap();
    let us = EvaluationRecord { clients: 1, samples: 10, loss: 0.7, accuracy: 0.6, ..evaluation(&b.id, 1, Some("us")) };
    let all = evaluation(&b.id, 1, None);
    let eu = EvaluationRecord { loss: 0.1, ..evaluation(&b.id, 1, Some("eu")) };
    store.record_evaluations(&[us.clone(), all.clone(), eu.clone()]).await.unwrap();
    let later = evaluation(&b.id, 2, None);
    store.record_evaluations(std::slice::from_ref(&later)).await.unwrap();
    assert_eq!(store.list_evaluations(&b.id).await.unwrap(), vec![all, eu, us, later], "by round, overall first");
    assert!(store.list_evaluations(&RunId::generate()).await.unwrap().is_empty());

    store.finish_run(&b.id, &c.checkpoint.id).await.unwrap();
    let done = store.get_run(&b.id).await.unwrap().unwrap();
    assert_eq!(
        (done.state, done.published_checkpoint, done.completed_rounds),
        (RunState::Succeeded, Some(c.checkpoint.id.clone()), 1)
    );
}

pub(crate) async fn an_evaluation_is_recorded_once(store: &dyn Store) {
    let b = new_run(store, RunState::Running).await;
    let evals = vec![evaluation(&b.id, 1, None), evaluation(&b.id, 1, Some("eu"))];
    store.record_evaluations(&evals).await.unwrap();
    let err = store.record_evaluations(&evals[..1]).await.unwrap_err();
    assert_eq!(err.to_string(), format!("evaluation {}/1/all already exists", b.id));
    // A batch with one stored result writes none of it.
    assert_eq!(
        refused(store.record_evaluations(&[evaluation(&b.id, 2, None), evals[1].clone()]).await),
        ("already exists", "evaluation", format!("{}/1/eu", b.id))
    );
    // So does a batch that names one result twice.
    assert_eq!(
        refused(store.record_evaluations(&[evaluation(&b.id, 3, Some("us")), evaluation(&b.id, 3, Some("us"))]).await),
        ("already exists", "evaluation", format!("{}/3/us", b.id))
    );
    assert_eq!(store.list_evaluations(&b.id).await.unwrap(), evals);
}

// ------------------------------------------------------------------------------------------
// The privacy ledger
// ------------------------------------------------------------------------------------------

/// Reservations of one round in two scopes, written together, charged together, never
/// removed.
pub(crate) async fn ledger_reservations_are_charged_once(store: &dyn Store) {
    let b = new_run(store, RunState::Running).await;
    let r1 = vec![ledger_entry(&b.id, "eu", 1, 1), ledger_entry(&b.id, "us", 1, 1)];
    store.reserve_privacy(&r1).await.unwrap();
    store.reserve_privacy(&[ledger_entry(&b.id, "eu", 2, 1)]).await.unwrap();
    let all = store.list_ledger(&LedgerFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], r1[0], "entries round-trip, cost curve included");
    assert_eq!(store.charge_privacy(&b.id, 1, 1, Some(0.5)).await.unwrap(), 2);
    assert_eq!(store.charge_privacy(&b.id, 1, 1, Some(0.9)).await.unwrap(), 0, "charged once");
    assert_eq!(store.charge_privacy(&b.id, 7, 1, None).await.unwrap(), 0, "nothing reserved");
    let of_b = store.list_ledger(&LedgerFilter { scope: None, run: Some(b.id.clone()) }).await.unwrap();
    assert_eq!(
        of_b.iter()
            .map(|e| (e.scope.region.as_str().to_string(), e.round, e.state, e.next_clip_norm))
            .collect::<Vec<_>>(),
        [
            ("eu".to_string(), 1, LedgerState::Charged, Some(0.5)),
            ("us".to_string(), 1, LedgerState::Charged, Some(0.5)),
            ("eu".to_string(), 2, LedgerState::Reserved, None)
        ]
    );
    // A reservation whose attempt never got its round row keeps its number.
    assert_eq!(store.next_attempt(&b.id, 2).await.unwrap(), 2);
    assert_eq!(store.next_attempt(&b.id, 3).await.unwrap(), 1);
    // A private round's completion charges its attempt in the same transaction.
    let c = new_run(store, RunState::Running).await;
    // A scope of its own: the ledger fixture states ε as if it were the scope's only run.
    store.reserve_privacy(&[ledger_entry(&c.id, "ap", 1, 1)]).await.unwrap();
    store.begin_round(&c.id, 1, 1, &two_clients()).await.unwrap();
    let charge = Some(crate::store::PrivacyCharge { next_clip_norm: Some(0.7) });
    let energy = vec![crate::carbon::RegionEnergy {
        region: id("eu"),
        compute_seconds: 12.5,
        energy_kwh: 0.0005,
        carbon_g: Some(0.15),
    }];
    let cost = vec![crate::cost::RegionCost {
        region: id("eu"),
        updates: 2,
        update_bytes: 800,
        broadcast_bytes: 1600,
        coordinator_cpu_seconds: 0.25,
        client_train_seconds: 12.5,
        cost: Some(0.001),
        currency: Some("EUR".into()),
    }];
    let done = RoundCompletion { charge, energy: energy.clone(), cost: cost.clone(), ..completion(&c.id, 1, 1, false) };
    store.complete_round(&done).await.unwrap();
    let of_c = store.list_ledger(&LedgerFilter { scope: None, run: Some(c.id.clone()) }).await.unwrap();
    assert_eq!((of_c[0].state, of_c[0].next_clip_norm), (LedgerState::Charged, Some(0.7)));
    let round = &store.list_rounds(&c.id).await.unwrap()[0];
    assert_eq!(round.energy, energy, "the round's energy is stored with it");
    assert_eq!(round.cost, cost, "and its cost");
}

pub(crate) async fn a_ledger_entry_is_written_once(store: &dyn Store) {
    let b = new_run(store, RunState::Running).await;
    let r1 = vec![ledger_entry(&b.id, "eu", 1, 1), ledger_entry(&b.id, "us", 1, 1)];
    store.reserve_privacy(&r1).await.unwrap();
    let err = store.reserve_privacy(&r1[..1]).await.unwrap_err();
    assert_eq!(err.to_string(), format!("privacy ledger entry m@eu/{}/1/1 already exists", b.id));
    assert_eq!(
        refused(store.reserve_privacy(&[ledger_entry(&b.id, "eu", 2, 1), r1[1].clone()]).await),
        ("already exists", "privacy ledger entry", format!("m@us/{}/1/1", b.id)),
        "a batch with one stored entry writes none of it"
    );
    let twice = [ledger_entry(&b.id, "eu", 3, 1), ledger_entry(&b.id, "eu", 3, 1)];
    assert_eq!(refused(store.reserve_privacy(&twice).await).2, format!("m@eu/{}/3/1", b.id));
    assert_eq!(store.list_ledger(&LedgerFilter::default()).await.unwrap(), r1);
}

pub(crate) async fn the_ledger_lists_oldest_first_by_scope_or_run(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    let b = new_run(store, RunState::Running).await;
    let eu1 = ledger_entry(&b.id, "eu", 1, 1);
    let us1 = ledger_entry(&b.id, "us", 1, 1);
    // Written later, created earlier (a reservation restored from elsewhere): it lists first.
    let early =
        LedgerEntry { created_at: eu1.created_at - chrono::Duration::hours(1), ..ledger_entry(&a.id, "eu", 5, 2) };
    store.reserve_privacy(&[eu1.clone(), us1.clone()]).await.unwrap();
    store.reserve_privacy(std::slice::from_ref(&early)).await.unwrap();

    assert_eq!(
        store.list_ledger(&LedgerFilter::default()).await.unwrap(),
        vec![early.clone(), eu1.clone(), us1.clone()]
    );
    let eu_scope = PrivacyScope::new("m", id("eu"));
    let eu = store.list_ledger(&LedgerFilter { scope: Some(eu_scope.clone()), run: None }).await.unwrap();
    assert_eq!(eu, vec![early.clone(), eu1.clone()]);
    let of_a = store.list_ledger(&LedgerFilter { scope: None, run: Some(a.id.clone()) }).await.unwrap();
    assert_eq!(of_a, vec![early]);
    let both = store.list_ledger(&LedgerFilter { scope: Some(eu_scope), run: Some(b.id.clone()) }).await.unwrap();
    assert_eq!(both, vec![eu1]);
    let other = LedgerFilter { scope: Some(PrivacyScope::new("other", id("eu"))), run: None };
    assert!(store.list_ledger(&other).await.unwrap().is_empty());
    assert!(store.list_ledger(&LedgerFilter { scope: None, run: Some(RunId::generate()) }).await.unwrap().is_empty());
}
