//! SQLite's run of the store contract, plus what only SQLite has: the stored texts of
//! existing databases and migrations from older schemas.

use super::*;
use crate::plan::fixtures::raw_plan;

/// A second coordinator on the same file opens it again.
#[async_trait]
impl crate::store::contract::OpenPeer for tempfile::TempDir {
    async fn open_peer(&self) -> Box<dyn Store> {
        Box::new(SqliteStore::open(&self.path().join("fedra.db")).await.unwrap())
    }
}

crate::store::contract::store_contract_tests!(sqlite_contract, async {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("fedra.db")).await.unwrap();
    (store, dir)
});

fn id<T: TryFrom<String>>(s: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(s.to_string()).unwrap()
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fedra.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let c = ClientRecord {
        id: ClientId::new("c").unwrap(),
        region: RegionId::new("eu").unwrap(),
        datasets: vec![],
        devices: vec![],
        registered_at: Utc::now(),
        members: 1,
    };
    store.upsert_client(&c).await.unwrap();
    store.close().await;
    let again = SqliteStore::open(&path).await.unwrap();
    assert_eq!(again.list_clients().await.unwrap().len(), 1);
}

/// The enums are stored through their `sqlx::Type` derive; the texts must stay those the
/// hand-written conversions wrote, or existing databases stop reading.
#[tokio::test]
async fn states_are_stored_as_the_texts_existing_databases_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("fedra.db")).await.unwrap();
    let plan = crate::plan::RunPlan::new(raw_plan()).unwrap();
    let run_states = [
        (RunState::Queued, "queued"),
        (RunState::Running, "running"),
        (RunState::Succeeded, "succeeded"),
        (RunState::Failed, "failed"),
        (RunState::Cancelled, "cancelled"),
    ];
    for (state, text) in run_states {
        let run = RunRecord {
            policy_sha256: None,
            approvals_needed: 0,
            id: RunId::generate(),
            plan: plan.clone(),
            state,
            completed_rounds: 0,
            published_checkpoint: None,
            failure: None,
            created_at: Utc::now(),
            owner: None,
        };
        store.create_run(&run).await.unwrap();
        let stored: String = sqlx::query_scalar("SELECT state FROM runs WHERE id = ?")
            .bind(run.id.as_str())
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!((stored.as_str(), state.to_string().as_str()), (text, text));
        assert_eq!(store.get_run(&run.id).await.unwrap().unwrap().state, state);
    }

    // Every round and participation status, reached through the store's own writes.
    let run = store.list_runs().await.unwrap().into_iter().find(|r| r.state == RunState::Running).unwrap().id;
    let three = [(id("c1"), id("eu")), (id("c2"), id("eu")), (id("c3"), id("eu"))];
    store.begin_round(&run, 1, 1, &three).await.unwrap();
    let update = ParticipationRecord {
        run: run.clone(),
        round: 1,
        attempt: 1,
        client: id("c1"),
        region: id("eu"),
        status: ParticipationStatus::Reported,
        samples: 1,
        metrics: None,
        update_norm: None,
        detail: None,
    };
    assert_eq!(store.record_updates(&[update]).await.unwrap().recorded, 1);
    store.reject_update(&run, 1, 1, &id("c2"), "too large").await.unwrap();
    let cp = CheckpointRecord {
        id: CheckpointId::for_round(&run, crate::ids::RoundNumber(1)),
        run: run.clone(),
        round: 1,
        model_name: "lr".into(),
        sha256: String::new(),
        parent: None,
        manifest_json: "{}".into(),
        signature_json: String::new(),
        created_at: Utc::now(),
        locations: vec![],
    };
    let completion = RoundCompletion {
        run: run.clone(),
        round: 1,
        attempt: 1,
        reported: 1,
        samples: 1,
        metrics: TrainingMetrics::default(),
        checkpoint: cp,
        final_round: false,
        audit: Vec::new(),
        charge: None,
        energy: Vec::new(),
        cost: Vec::new(),
    };
    store.complete_round(&completion).await.unwrap();
    store.begin_round(&run, 2, 1, &three[..1]).await.unwrap();
    store.fail_round(&run, 2, 1, "deadline").await.unwrap();
    store.begin_round(&run, 2, 2, &three[..1]).await.unwrap();
    store.interrupt_open_rounds().await.unwrap();
    store.begin_round(&run, 2, 3, &three[..1]).await.unwrap();

    let rounds: Vec<String> = sqlx::query_scalar("SELECT status FROM rounds WHERE run_id = ? ORDER BY round, attempt")
        .bind(run.as_str())
        .fetch_all(&store.pool)
        .await
        .unwrap();
    assert_eq!(rounds, ["done", "failed", "interrupted", "in_progress"]);
    let listed = store.list_rounds(&run).await.unwrap();
    assert_eq!(listed.iter().map(|r| r.status.to_string()).collect::<Vec<_>>(), rounds);

    let parts: Vec<String> =
        sqlx::query_scalar("SELECT status FROM participations WHERE run_id = ? ORDER BY round, attempt, client_id")
            .bind(run.as_str())
            .fetch_all(&store.pool)
            .await
            .unwrap();
    assert_eq!(parts, ["reported", "rejected", "dropped", "dropped", "dropped", "selected"]);
    let listed = store.list_participations(&run).await.unwrap();
    assert_eq!(listed.iter().map(|p| p.status.to_string()).collect::<Vec<_>>(), parts);
}

/// A state text no version wrote is corruption, not a database failure.
#[tokio::test]
async fn an_unknown_state_text_reads_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("fedra.db")).await.unwrap();
    let plan = serde_json::to_string(&crate::plan::RunPlan::new(raw_plan()).unwrap()).unwrap();
    sqlx::query(
        "INSERT INTO runs (id, plan_json, state, created_at, updated_at)
         VALUES ('run-000000000001', ?, 'paused', '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z')",
    )
    .bind(plan)
    .execute(&store.pool)
    .await
    .unwrap();
    let err = store.get_run(&id("run-000000000001")).await.unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt(m) if m.contains("paused")), "{err:?}");
}

/// A database written before migration 0004 (no `train_seconds`) opens, reads its rows
/// with their state texts and 0 s of training, and takes new writes.
#[tokio::test]
async fn a_database_from_before_0004_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("migrations-0003");
    std::fs::create_dir(&old).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().as_ref() < "0004" {
            std::fs::copy(entry.path(), old.join(entry.file_name())).unwrap();
        }
    }
    assert_eq!(std::fs::read_dir(&old).unwrap().count(), 3);
    let path = dir.path().join("fedra.db");
    let opts = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
    let pool = SqlitePool::connect_with(opts).await.unwrap();
    sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&pool).await.unwrap();
    let plan = serde_json::to_string(&crate::plan::RunPlan::new(raw_plan()).unwrap()).unwrap();
    let t = "2025-01-01T00:00:00.000000Z";
    for sql in [
        "INSERT INTO runs (id, plan_json, state, completed_rounds, created_at, updated_at)
         VALUES ('run-000000000001', ?1, 'running', 1, ?2, ?2)",
        "INSERT INTO rounds (run_id, round, attempt, status, selected, reported, samples, loss_before, loss_after,
             accuracy, started_at, finished_at)
         VALUES ('run-000000000001', 1, 1, 'done', 2, 1, 10, 2.0, 1.0, 0.5, ?2, ?2)",
        "INSERT INTO rounds (run_id, round, attempt, status, selected, started_at)
         VALUES ('run-000000000001', 2, 1, 'in_progress', 2, ?2)",
        "INSERT INTO participations (run_id, round, attempt, client_id, region, status, samples, loss_before,
             loss_after, accuracy, update_norm)
         VALUES ('run-000000000001', 1, 1, 'c1', 'eu', 'reported', 10, 2.0, 1.0, 0.5, 0.25)",
        "INSERT INTO participations (run_id, round, attempt, client_id, region, status, detail)
         VALUES ('run-000000000001', 1, 1, 'c2', 'us', 'rejected', 'too large')",
        "INSERT INTO participations (run_id, round, attempt, client_id, region, status)
         VALUES ('run-000000000001', 2, 1, 'c1', 'eu', 'selected')",
    ] {
        sqlx::query(sql).bind(&plan).bind(t).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    let run: RunId = id("run-000000000001");
    assert_eq!(store.get_run(&run).await.unwrap().unwrap().state, RunState::Running);
    let old_mean = TrainingMetrics { loss_before: 2.0, loss_after: 1.0, accuracy_after: 0.5, train_seconds: 0.0 };
    let rounds = store.list_rounds(&run).await.unwrap();
    assert_eq!(
        rounds.iter().map(|r| (r.status, r.metrics)).collect::<Vec<_>>(),
        [(RoundStatus::Done, Some(old_mean)), (RoundStatus::InProgress, None)]
    );
    let parts = store.list_participations(&run).await.unwrap();
    assert_eq!(
        parts.iter().map(|p| (p.client.as_str(), p.status, p.metrics)).collect::<Vec<_>>(),
        [
            ("c1", ParticipationStatus::Reported, Some(old_mean)),
            ("c2", ParticipationStatus::Rejected, None),
            ("c1", ParticipationStatus::Selected, None)
        ]
    );

    let m = TrainingMetrics { train_seconds: 1.25, ..old_mean };
    let update = ParticipationRecord { round: 2, metrics: Some(m), detail: None, ..parts[0].clone() };
    assert_eq!(store.record_updates(&[update]).await.unwrap().recorded, 1);
    let parts = store.list_participations(&run).await.unwrap();
    assert_eq!((parts[2].status, parts[2].metrics), (ParticipationStatus::Reported, Some(m)));
}
