//! Persistence behind one trait, so that the round engine does not know which database it
//! talks to. The embedded default is SQLite ([`SqliteStore`]); the schema in
//! `coordinator/migrations/` is portable SQL so that a PostgreSQL implementation of the
//! same trait can run the same migrations and the same contract tests.
//!
//! What is stored is everything needed to tell a user what happened after a restart:
//! runs and their plans, every round attempt and its outcome, who was selected and who
//! reported, the client registry and the checkpoint registry. Each engine transition that
//! must be atomic (a round completing: round row, participations, checkpoint, run progress)
//! is one method, executed in one transaction.
//!
//! Infrastructure failures are [`StoreError`]; "not found" is `Ok(None)`.

mod sqlite;

pub use sqlite::SqliteStore;

use crate::ids::{CheckpointId, ClientId, RegionId, RunId};
use crate::plan::RunPlan;
use crate::privacy::{LedgerEntry, PrivacyScope};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fedra_types::metrics::TrainingMetrics;
use std::path::PathBuf;

/// The store failed (I/O, database, corrupted stored value).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("schema migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot open store at {path}: {reason}")]
    Open { path: String, reason: String },
}

/// Which ledger entries to list; all `None` = every entry.
#[derive(Debug, Clone, Default)]
pub struct LedgerFilter {
    pub scope: Option<PrivacyScope>,
    pub run: Option<RunId>,
}

/// Lifecycle of a run as persisted: the shared vocabulary's `fedra_types::run::RunState`,
/// re-exported so that `crate::store::RunState` keeps resolving.
pub use fedra_types::run::RunState;

#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: RunId,
    pub plan: RunPlan,
    pub state: RunState,
    /// Rounds completed and published, in order; the next round is `completed_rounds + 1`.
    pub completed_rounds: u32,
    pub published_checkpoint: Option<CheckpointId>,
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Outcome of one round attempt as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundStatus {
    /// Started, not finished (selecting, training, aggregating or publishing).
    InProgress,
    Done,
    Failed,
    /// The coordinator stopped while the attempt was in progress; the round is re-run.
    Interrupted,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoundRecord {
    pub run: RunId,
    pub round: u32,
    pub attempt: u32,
    pub status: RoundStatus,
    pub selected: u32,
    pub reported: u32,
    pub samples: u64,
    pub metrics: Option<TrainingMetrics>,
    pub checkpoint: Option<CheckpointId>,
    pub failure: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What became of a selected client in one round attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParticipationStatus {
    Selected,
    Reported,
    /// Selected but did not report before the round closed.
    Dropped,
    /// Reported an update that was refused (e.g. over the clipping bound).
    Rejected,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParticipationRecord {
    pub run: RunId,
    pub round: u32,
    pub attempt: u32,
    pub client: ClientId,
    pub region: RegionId,
    pub status: ParticipationStatus,
    pub samples: u64,
    pub metrics: Option<TrainingMetrics>,
    pub update_norm: Option<f64>,
    /// Why a participation ended as it did, when that needs saying (a restart, a refusal,
    /// an update the coordinator re-clipped).
    pub detail: Option<String>,
}

/// A dataset as a client describes it (never the data itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DatasetDescriptor {
    pub name: String,
    pub samples: u64,
    pub features: u32,
    pub classes: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientRecord {
    pub id: ClientId,
    pub region: RegionId,
    pub datasets: Vec<DatasetDescriptor>,
    pub devices: Vec<String>,
    pub registered_at: DateTime<Utc>,
}

impl ClientRecord {
    /// Total samples over the client's datasets: the most it may claim as a FedAvg weight.
    pub fn samples(&self) -> u64 {
        self.datasets.iter().map(|d| d.samples).sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRecord {
    pub id: CheckpointId,
    pub run: RunId,
    pub round: u32,
    pub model_name: String,
    pub sha256: String,
    pub parent: Option<CheckpointId>,
    /// The provenance manifest exactly as written next to the weights.
    pub manifest_json: String,
    pub created_at: DateTime<Utc>,
    /// Where the checkpoint was published, one safetensors file per region.
    pub locations: Vec<(RegionId, PathBuf)>,
}

/// Sample-weighted mean of clients' held-out evaluations of one round's checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationRecord {
    pub run: RunId,
    pub round: u32,
    /// `None` for the mean over all regions.
    pub region: Option<RegionId>,
    pub clients: u32,
    pub samples: u64,
    pub loss: f64,
    pub accuracy: f64,
}

/// Filter for [`Store::list_checkpoints`]; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct CheckpointFilter {
    pub region: Option<RegionId>,
    pub model_name: Option<String>,
    pub run: Option<RunId>,
}

/// Everything that changes when a round completes, written in one transaction.
#[derive(Debug, Clone)]
pub struct RoundCompletion {
    pub run: RunId,
    pub round: u32,
    pub attempt: u32,
    pub reported: u32,
    pub samples: u64,
    pub metrics: TrainingMetrics,
    pub checkpoint: CheckpointRecord,
    /// The run's last round: the run succeeds and this checkpoint becomes its published one.
    pub final_round: bool,
}

/// The persistence contract of the coordinator. Every method is atomic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    /// Sets the run's state (and failure reason, when given).
    async fn set_run_state(&self, run: &RunId, state: RunState, failure: Option<&str>) -> Result<(), StoreError>;
    async fn get_run(&self, run: &RunId) -> Result<Option<RunRecord>, StoreError>;
    /// All runs, oldest first.
    async fn list_runs(&self) -> Result<Vec<RunRecord>, StoreError>;

    /// The attempt number a new attempt of `round` must use (1 for the first).
    async fn next_attempt(&self, run: &RunId, round: u32) -> Result<u32, StoreError>;
    /// Records a round attempt as in progress with its selected clients.
    async fn begin_round(
        &self,
        run: &RunId,
        round: u32,
        attempt: u32,
        selected: &[(ClientId, RegionId)],
    ) -> Result<(), StoreError>;
    /// Marks selected clients as reported with their weight and metrics, in one transaction (the engine batches them).
    async fn record_updates(&self, updates: &[ParticipationRecord]) -> Result<(), StoreError>;
    /// Marks the attempt failed; selected clients that did not report become dropped.
    async fn fail_round(&self, run: &RunId, round: u32, attempt: u32, reason: &str) -> Result<(), StoreError>;
    /// Completes the attempt, registers its checkpoint and advances the run, atomically.
    async fn complete_round(&self, completion: &RoundCompletion) -> Result<(), StoreError>;
    /// Marks every in-progress attempt interrupted (called once at start-up); returns how many.
    async fn interrupt_open_rounds(&self) -> Result<u64, StoreError>;
    /// Every attempt of a run, ordered by round then attempt.
    async fn list_rounds(&self, run: &RunId) -> Result<Vec<RoundRecord>, StoreError>;
    /// Every participation of a run, ordered by round, attempt, client.
    async fn list_participations(&self, run: &RunId) -> Result<Vec<ParticipationRecord>, StoreError>;

    /// Marks a run succeeded with `published` as its published checkpoint (used when the
    /// last round's evaluation ends after the round itself was committed).
    async fn finish_run(&self, run: &RunId, published: &CheckpointId) -> Result<(), StoreError>;
    /// Stores a round's evaluation results (overall and per region), atomically.
    async fn record_evaluations(&self, results: &[EvaluationRecord]) -> Result<(), StoreError>;
    /// Every evaluation result of a run, ordered by round then region ('' first).
    async fn list_evaluations(&self, run: &RunId) -> Result<Vec<EvaluationRecord>, StoreError>;

    /// Marks a selected client's update as refused, with the reason (audit trail).
    async fn reject_update(
        &self,
        run: &RunId,
        round: u32,
        attempt: u32,
        client: &ClientId,
        reason: &str,
    ) -> Result<(), StoreError>;
    /// Writes a round's privacy reservations (one per scope) in one transaction.
    async fn reserve_privacy(&self, entries: &[LedgerEntry]) -> Result<(), StoreError>;
    /// Turns a round attempt's reservations into charges (its aggregate was released),
    /// recording the clipping norm for the next round. Returns the rows changed.
    async fn charge_privacy(
        &self,
        run: &RunId,
        round: u32,
        attempt: u32,
        next_clip_norm: Option<f64>,
    ) -> Result<u64, StoreError>;
    /// Ledger entries, oldest first, of one scope, one run, or all.
    async fn list_ledger(&self, filter: &LedgerFilter) -> Result<Vec<LedgerEntry>, StoreError>;

    async fn upsert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError>;

    async fn get_checkpoint(&self, id: &CheckpointId) -> Result<Option<CheckpointRecord>, StoreError>;
    /// Matching checkpoints, ordered by run creation, then round.
    async fn list_checkpoints(&self, filter: &CheckpointFilter) -> Result<Vec<CheckpointRecord>, StoreError>;
}

/// The contract every [`Store`] implementation must pass. Backends call [`contract::run`]
/// from their own test with a fresh, empty store.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;
    use crate::ids::RoundNumber;
    use crate::plan::{RunPlan, fixtures::raw_plan};
    use chrono::SubsecRound;

    /// Stores keep microseconds; compare like with like.
    fn now() -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }

    fn run_record(state: RunState) -> RunRecord {
        RunRecord {
            id: RunId::generate(),
            plan: RunPlan::new(raw_plan()).unwrap(),
            state,
            completed_rounds: 0,
            published_checkpoint: None,
            failure: None,
            created_at: now(),
        }
    }

    fn id<T: TryFrom<String>>(s: &str) -> T
    where
        T::Error: std::fmt::Debug,
    {
        T::try_from(s.to_string()).unwrap()
    }

    fn checkpoint(run: &RunId, round: u32, regions: &[&str]) -> CheckpointRecord {
        CheckpointRecord {
            id: CheckpointId::for_round(run, RoundNumber(round)),
            run: run.clone(),
            round,
            model_name: "lr".into(),
            sha256: format!("{round:064}"),
            parent: (round > 1).then(|| CheckpointId::for_round(run, RoundNumber(round - 1))),
            manifest_json: "{}".into(),
            created_at: now(),
            locations: regions.iter().map(|r| (id(r), PathBuf::from(format!("/a/{r}/{round}")))).collect(),
        }
    }

    pub async fn run(store: &dyn Store) {
        // Runs.
        let a = run_record(RunState::Queued);
        store.create_run(&a).await.unwrap();
        assert_eq!(store.get_run(&a.id).await.unwrap().unwrap(), a);
        assert!(store.get_run(&RunId::generate()).await.unwrap().is_none());
        assert!(store.create_run(&a).await.is_err(), "duplicate run ids are refused");
        store.set_run_state(&a.id, RunState::Running, None).await.unwrap();

        // Clients.
        let client = ClientRecord {
            id: id("c1"),
            region: id("eu"),
            datasets: vec![DatasetDescriptor { name: "d".into(), samples: 10, features: 4, classes: 3 }],
            devices: vec!["cpu".into()],
            registered_at: now(),
        };
        store.upsert_client(&client).await.unwrap();
        let mut moved = client.clone();
        moved.region = id("us");
        store.upsert_client(&moved).await.unwrap();
        let clients = store.list_clients().await.unwrap();
        assert_eq!(clients.len(), 1);
        assert_eq!(clients[0].region.as_str(), "us");

        // A round that completes: participations, checkpoint and run progress in one go.
        assert_eq!(store.next_attempt(&a.id, 1).await.unwrap(), 1);
        let selected = vec![(id("c1"), id("eu")), (id("c2"), id("us"))];
        store.begin_round(&a.id, 1, 1, &selected).await.unwrap();
        assert_eq!(store.next_attempt(&a.id, 1).await.unwrap(), 2);
        let m = fedra_types::metrics::TrainingMetrics {
            loss_before: 2.0,
            loss_after: 1.0,
            accuracy_after: 0.5,
            train_seconds: 0.0,
        };
        store
            .record_updates(&[ParticipationRecord {
                run: a.id.clone(),
                round: 1,
                attempt: 1,
                client: id("c1"),
                region: id("eu"),
                status: ParticipationStatus::Reported,
                samples: 10,
                metrics: Some(m),
                update_norm: Some(0.5),
                detail: None,
            }])
            .await
            .unwrap();
        let cp1 = checkpoint(&a.id, 1, &["eu", "us"]);
        store
            .complete_round(&RoundCompletion {
                run: a.id.clone(),
                round: 1,
                attempt: 1,
                reported: 1,
                samples: 10,
                metrics: m,
                checkpoint: cp1.clone(),
                final_round: false,
            })
            .await
            .unwrap();
        let run = store.get_run(&a.id).await.unwrap().unwrap();
        assert_eq!((run.state, run.completed_rounds, run.published_checkpoint.clone()), (RunState::Running, 1, None));
        let parts = store.list_participations(&a.id).await.unwrap();
        assert_eq!(
            parts.iter().map(|p| p.status).collect::<Vec<_>>(),
            [ParticipationStatus::Reported, ParticipationStatus::Dropped]
        );
        assert_eq!(parts[0].metrics, Some(m));
        assert_eq!(store.get_checkpoint(&cp1.id).await.unwrap().unwrap(), cp1);

        // A failed attempt, then one interrupted by a restart, then the final round.
        store.begin_round(&a.id, 2, 1, &selected).await.unwrap();
        store.fail_round(&a.id, 2, 1, "deadline").await.unwrap();
        store.begin_round(&a.id, 2, 2, &selected).await.unwrap();
        assert_eq!(store.interrupt_open_rounds().await.unwrap(), 1);
        assert_eq!(store.interrupt_open_rounds().await.unwrap(), 0);
        let rounds = store.list_rounds(&a.id).await.unwrap();
        assert_eq!(
            rounds.iter().map(|r| (r.round, r.attempt, r.status)).collect::<Vec<_>>(),
            [(1, 1, RoundStatus::Done), (2, 1, RoundStatus::Failed), (2, 2, RoundStatus::Interrupted)]
        );
        assert_eq!(rounds[1].failure.as_deref(), Some("deadline"));
        assert_eq!(rounds[0].checkpoint.as_ref(), Some(&cp1.id));
        store.begin_round(&a.id, 2, 3, &selected[..1]).await.unwrap();
        let cp2 = checkpoint(&a.id, 2, &["eu"]);
        store
            .complete_round(&RoundCompletion {
                run: a.id.clone(),
                round: 2,
                attempt: 3,
                reported: 0,
                samples: 0,
                metrics: m,
                checkpoint: cp2.clone(),
                final_round: true,
            })
            .await
            .unwrap();
        let run = store.get_run(&a.id).await.unwrap().unwrap();
        assert_eq!(
            (run.state, run.completed_rounds, run.published_checkpoint),
            (RunState::Succeeded, 2, Some(cp2.id.clone()))
        );

        // A second run's checkpoint completing twice is refused as a whole.
        let b = run_record(RunState::Running);
        store.create_run(&b).await.unwrap();
        store.begin_round(&b.id, 1, 1, &selected).await.unwrap();
        let cpb = checkpoint(&b.id, 1, &["us"]);
        let completion = RoundCompletion {
            run: b.id.clone(),
            round: 1,
            attempt: 1,
            reported: 0,
            samples: 0,
            metrics: m,
            checkpoint: cpb.clone(),
            final_round: false,
        };
        store.complete_round(&completion).await.unwrap();
        assert!(store.complete_round(&completion).await.is_err());
        assert_eq!(store.get_run(&b.id).await.unwrap().unwrap().completed_rounds, 1);

        // Checkpoint filters.
        let all = store.list_checkpoints(&CheckpointFilter::default()).await.unwrap();
        assert_eq!(
            all.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
            [cp1.id.clone(), cp2.id.clone(), cpb.id.clone()]
        );
        let eu =
            store.list_checkpoints(&CheckpointFilter { region: Some(id("eu")), ..Default::default() }).await.unwrap();
        assert_eq!(eu.len(), 2);
        let of_b =
            store.list_checkpoints(&CheckpointFilter { run: Some(b.id.clone()), ..Default::default() }).await.unwrap();
        assert_eq!(of_b, vec![cpb.clone()]);
        let none = store
            .list_checkpoints(&CheckpointFilter { model_name: Some("other".into()), ..Default::default() })
            .await
            .unwrap();
        assert!(none.is_empty());
        assert_eq!(store.list_runs().await.unwrap().len(), 2);

        // Evaluations and finishing a run after its last evaluation.
        let evals = vec![
            EvaluationRecord {
                run: b.id.clone(),
                round: 1,
                region: None,
                clients: 3,
                samples: 30,
                loss: 0.5,
                accuracy: 0.8,
            },
            EvaluationRecord {
                run: b.id.clone(),
                round: 1,
                region: Some(id("eu")),
                clients: 1,
                samples: 10,
                loss: 0.7,
                accuracy: 0.6,
            },
        ];
        store.record_evaluations(&evals).await.unwrap();
        assert_eq!(store.list_evaluations(&b.id).await.unwrap(), evals);
        assert!(store.record_evaluations(&evals[..1]).await.is_err(), "one result per run, round and region");
        assert_eq!(store.list_evaluations(&b.id).await.unwrap().len(), 2);
        store.finish_run(&b.id, &cpb.id).await.unwrap();
        let done = store.get_run(&b.id).await.unwrap().unwrap();
        assert_eq!((done.state, done.published_checkpoint), (RunState::Succeeded, Some(cpb.id.clone())));

        // The privacy ledger: reservations of one round in two scopes, written together,
        // charged together, never removed.
        use crate::privacy::accountant::{Accountant, RoundCost};
        use crate::privacy::{LedgerEntry, LedgerState};
        let entry = |region: &str, round: u32, attempt: u32| LedgerEntry {
            scope: PrivacyScope::new("m", id(region)),
            run: b.id.clone(),
            round,
            attempt,
            state: LedgerState::Reserved,
            accountant: Accountant::PoissonRdp,
            cost: RoundCost::sampled_gaussian(0.1, 1.1).unwrap(),
            noise_multiplier: 1.1,
            clip_norm: 0.75,
            sampling_rate: 0.1,
            delta: 1e-6,
            epsilon_cumulative: 0.25 * f64::from(round),
            next_clip_norm: None,
            created_at: now(),
        };
        let r1 = vec![entry("eu", 1, 1), entry("us", 1, 1)];
        store.reserve_privacy(&r1).await.unwrap();
        assert!(store.reserve_privacy(&r1[..1]).await.is_err(), "one entry per scope and round attempt");
        store.reserve_privacy(&[entry("eu", 2, 1)]).await.unwrap();
        let all = store.list_ledger(&LedgerFilter::default()).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], r1[0], "entries round-trip, cost curve included");
        let eu_scope = PrivacyScope::new("m", id("eu"));
        let eu = store.list_ledger(&LedgerFilter { scope: Some(eu_scope.clone()), run: None }).await.unwrap();
        assert_eq!(eu.iter().map(|e| e.round).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(store.charge_privacy(&b.id, 1, 1, Some(0.5)).await.unwrap(), 2);
        assert_eq!(store.charge_privacy(&b.id, 1, 1, Some(0.5)).await.unwrap(), 0, "charged once");
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
        assert!(store.list_ledger(&LedgerFilter { scope: None, run: Some(a.id.clone()) }).await.unwrap().is_empty());
    }
}
