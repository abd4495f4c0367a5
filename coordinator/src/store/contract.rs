//! The contract every [`Store`] backend must pass: each case is a function taking a fresh,
//! empty store, and [`store_contract_tests!`] turns the whole list (`contract/cases.rs`)
//! into one named `#[tokio::test]` per case for a backend, so that a failure names the
//! broken promise and a backend joins by invoking the macro with its own constructor.
//!
//! The cases pin what the trait docs promise: round trips, orderings, every refusal with
//! the record kind and key it names, and that a refused write changes nothing.

use super::*;
use crate::checkpoint::ArtifactLocation;
use crate::ids::RoundNumber;
use crate::plan::{RunPlan, fixtures::raw_plan};
use crate::privacy::accountant::{Accountant, RoundCost};
use crate::privacy::{LedgerEntry, LedgerState};
use chrono::SubsecRound;
use std::fmt::Debug;

/// Expands to a module `$module` with one `#[tokio::test]` per contract case. `$open` is
/// an expression of a future yielding `(store, guard)`: a fresh, empty store and whatever
/// must live as long as the test (a temporary directory, a schema), which also opens a
/// second handle on the same database ([`OpenPeer`]) for the cases where two coordinator
/// processes share one store.
///
/// ```ignore
/// crate::store::contract::store_contract_tests!(sqlite_contract, async {
///     let dir = tempfile::tempdir().unwrap();
///     (SqliteStore::open(&dir.path().join("fedra.db")).await.unwrap(), dir)
/// });
/// ```
macro_rules! store_contract_tests {
    ($module:ident, $open:expr) => {
        $crate::store::contract::with_contract_cases!($module, $open);
    };
    (@cases $module:ident, $open:expr, [$($case:ident),+ $(,)?], [$($peer_case:ident),* $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, _guard) = $open.await;
                    $crate::store::contract::$case(&store).await;
                }
            )+
            $(
                #[tokio::test]
                async fn $peer_case() {
                    let (store, guard) = $open.await;
                    $crate::store::contract::$peer_case(&store, &guard).await;
                }
            )*
        }
    };
}
pub(crate) use store_contract_tests;

// ------------------------------------------------------------------------------------------
// Fixtures
// ------------------------------------------------------------------------------------------

/// Stores keep microseconds; compare like with like.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub(crate) fn run_record(state: RunState) -> RunRecord {
    RunRecord {
        id: RunId::generate(),
        plan: RunPlan::new(raw_plan()).unwrap(),
        state,
        completed_rounds: 0,
        published_checkpoint: None,
        failure: None,
        created_at: now(),
        owner: Some("fedra://scientist/alice".parse().unwrap()),
        policy_sha256: None,
        approvals_needed: 0,
    }
}

async fn new_run(store: &dyn Store, state: RunState) -> RunRecord {
    let r = run_record(state);
    store.create_run(&r).await.unwrap();
    r
}

fn id<T: TryFrom<String>>(s: &str) -> T
where
    T::Error: Debug,
{
    T::try_from(s.to_string()).unwrap()
}

/// c1 in eu, c2 in us.
fn two_clients() -> Vec<(ClientId, RegionId)> {
    vec![(id("c1"), id("eu")), (id("c2"), id("us"))]
}

fn metrics(train_seconds: f64) -> TrainingMetrics {
    TrainingMetrics { loss_before: 2.0, loss_after: 1.0, accuracy_after: 0.5, train_seconds }
}

fn update(run: &RunId, round: u32, attempt: u32, client: &str, samples: u64) -> ParticipationRecord {
    ParticipationRecord {
        run: run.clone(),
        round,
        attempt,
        client: id(client),
        region: id("eu"),
        status: ParticipationStatus::Reported,
        samples,
        metrics: Some(metrics(0.0)),
        update_norm: Some(0.5),
        detail: None,
    }
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
        signature_json: String::new(),
        created_at: now(),
        locations: regions.iter().map(|r| (id(r), ArtifactLocation::new(format!("/a/{r}/{round}")))).collect(),
    }
}

fn completion(run: &RunId, round: u32, attempt: u32, final_round: bool) -> RoundCompletion {
    RoundCompletion {
        run: run.clone(),
        round,
        attempt,
        reported: 0,
        samples: 0,
        metrics: metrics(0.0),
        checkpoint: checkpoint(run, round, &["eu"]),
        final_round,
        audit: Vec::new(),
        charge: None,
        energy: Vec::new(),
        cost: Vec::new(),
    }
}

fn evaluation(run: &RunId, round: u32, region: Option<&str>) -> EvaluationRecord {
    EvaluationRecord {
        run: run.clone(),
        round,
        region: region.map(id),
        clients: 3,
        samples: 30,
        loss: 0.5,
        accuracy: 0.8,
    }
}

fn ledger_entry(run: &RunId, region: &str, round: u32, attempt: u32) -> LedgerEntry {
    LedgerEntry {
        scope: PrivacyScope::new("m", id(region)),
        run: run.clone(),
        round,
        attempt,
        state: LedgerState::Reserved,
        accountant: Accountant::PoissonRdp,
        cost: RoundCost::sampled_gaussian(0.1, 1.1).unwrap(),
        noise_multiplier: 1.1,
        clip_norm: 0.75,
        sampling_rate: 0.1,
        delta: 1e-6,
        epsilon_cumulative: ledger::claim(round),
        next_clip_norm: None,
        created_at: now(),
    }
}

/// The documented key of a round attempt, `<run>/<round>/<attempt>`.
fn attempt_key(run: &RunId, round: u32, attempt: u32) -> String {
    format!("{run}/{round}/{attempt}")
}

/// The kind of refusal, the record kind and key it names; panics on any other outcome.
#[track_caller]
fn refused<T: Debug>(r: Result<T, StoreError>) -> (&'static str, &'static str, String) {
    match r {
        Err(StoreError::AlreadyExists { what, id }) => ("already exists", what, id),
        Err(StoreError::NotFound { what, id }) => ("not found", what, id),
        Err(StoreError::Conflict { what, id, .. }) => ("conflict", what, id),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The record kind, key and stored state a conflict names; panics on any other outcome.
#[track_caller]
fn conflict<T: Debug>(r: Result<T, StoreError>) -> (&'static str, String, String) {
    match r {
        Err(StoreError::Conflict { what, id, state, .. }) => (what, id, state),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Records updates that must all be accepted.
async fn report(store: &dyn Store, updates: &[ParticipationRecord]) {
    let outcome = store.record_updates(updates).await.unwrap();
    assert_eq!(outcome, UpdatesOutcome { recorded: updates.len(), refused: vec![] });
}

async fn round_of(store: &dyn Store, run: &RunId, round: u32, attempt: u32) -> RoundRecord {
    let rounds = store.list_rounds(run).await.unwrap();
    rounds.into_iter().find(|r| r.round == round && r.attempt == attempt).expect("attempt stored")
}

async fn participation(store: &dyn Store, run: &RunId, round: u32, attempt: u32, client: &str) -> ParticipationRecord {
    let parts = store.list_participations(run).await.unwrap();
    let found = parts.into_iter().find(|p| p.round == round && p.attempt == attempt && p.client.as_str() == client);
    found.expect("participation stored")
}

// ------------------------------------------------------------------------------------------
// Runs and clients
// ------------------------------------------------------------------------------------------

pub(crate) async fn runs_round_trip_oldest_first(store: &dyn Store) {
    let a = run_record(RunState::Queued);
    let b = RunRecord {
        completed_rounds: 3,
        published_checkpoint: Some(CheckpointId::for_round(&a.id, RoundNumber(3))),
        failure: Some("round 4 failed: deadline".into()),
        created_at: a.created_at + chrono::Duration::seconds(1),
        ..run_record(RunState::Failed)
    };
    // Created newest first: the listing is by creation time, not insertion.
    store.create_run(&b).await.unwrap();
    store.create_run(&a).await.unwrap();
    assert_eq!(store.get_run(&a.id).await.unwrap().unwrap(), a);
    assert_eq!(store.get_run(&b.id).await.unwrap().unwrap(), b, "every field round-trips");
    assert!(store.get_run(&RunId::generate()).await.unwrap().is_none());
    assert_eq!(store.list_runs().await.unwrap(), vec![a, b]);
}

pub(crate) async fn runs_are_listed_page_by_page_per_owner(store: &dyn Store) {
    let alice: Identity = "fedra://scientist/alice".parse().unwrap();
    let bob: Identity = "fedra://scientist/bob".parse().unwrap();
    let base = run_record(RunState::Queued).created_at;
    let mut runs = Vec::new();
    for i in 0..7 {
        let r = RunRecord {
            created_at: base + chrono::Duration::seconds(i),
            owner: Some(if i % 3 == 0 { bob.clone() } else { alice.clone() }),
            ..run_record(RunState::Queued)
        };
        runs.push(r);
    }
    for r in runs.iter().rev() {
        store.create_run(r).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<RunId> = None;
    loop {
        let page = store.list_runs_page(None, after.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().id.clone());
        seen.extend(page);
    }
    assert_eq!(seen, runs, "every run once, oldest first");
    let bobs = store.list_runs_page(Some(&bob), None, 100).await.unwrap();
    assert_eq!(
        bobs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![runs[0].id.clone(), runs[3].id.clone(), runs[6].id.clone()]
    );
    let after_first = store.list_runs_page(Some(&alice), Some(&runs[0].id), 2).await.unwrap();
    assert_eq!(after_first, vec![runs[1].clone(), runs[2].clone()], "owner filter and cursor combine");
    assert!(store.list_runs_page(None, Some(&RunId::generate()), 3).await.unwrap().is_empty());
}

pub(crate) async fn creating_a_run_twice_is_already_exists(store: &dyn Store) {
    let a = new_run(store, RunState::Queued).await;
    let again = RunRecord { state: RunState::Running, failure: Some("other".into()), ..a.clone() };
    let err = store.create_run(&again).await.unwrap_err();
    assert!(err.is_refusal());
    assert_eq!(err.to_string(), format!("run {} already exists", a.id));
    assert_eq!(refused(Err::<(), _>(err)), ("already exists", "run", a.id.to_string()));
    assert_eq!(store.get_run(&a.id).await.unwrap().unwrap(), a, "the stored run is untouched");
    assert_eq!(store.list_runs().await.unwrap().len(), 1);
}

pub(crate) async fn run_state_writes_keep_the_last_failure_reason(store: &dyn Store) {
    let a = new_run(store, RunState::Queued).await;
    store.set_run_state(&a.id, RunState::Running, None).await.unwrap();
    let r = store.get_run(&a.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.failure), (RunState::Running, None));
    store.set_run_state(&a.id, RunState::Queued, Some("requeued: no clients")).await.unwrap();
    store.set_run_state(&a.id, RunState::Running, None).await.unwrap();
    let r = store.get_run(&a.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.failure.as_deref()), (RunState::Running, Some("requeued: no clients")));
    store.set_run_state(&a.id, RunState::Failed, Some("round 1 failed: deadline")).await.unwrap();
    let r = store.get_run(&a.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.failure.as_deref()), (RunState::Failed, Some("round 1 failed: deadline")));
}

pub(crate) async fn a_terminal_run_is_final(store: &dyn Store) {
    for terminal in RunState::TERMINAL {
        let a = new_run(store, RunState::Running).await;
        if terminal == RunState::Succeeded {
            store.finish_run(&a.id, &CheckpointId::for_round(&a.id, RoundNumber(1))).await.unwrap();
        } else {
            store.set_run_state(&a.id, terminal, Some("the end")).await.unwrap();
        }
        let before = store.get_run(&a.id).await.unwrap().unwrap();
        assert_eq!(before.state, terminal);

        let id = a.id.to_string();
        let expected = ("run", id.clone(), terminal.to_string());
        let err = store.set_run_state(&a.id, RunState::Running, None).await.unwrap_err();
        assert_eq!(err.to_string(), format!("cannot set the state of run {id}: it is {terminal}"));
        assert_eq!(conflict(store.set_run_state(&a.id, terminal, Some("again")).await), expected, "even to itself");
        assert_eq!(conflict(store.set_run_state(&a.id, RunState::Failed, Some("late")).await).0, "run");
        assert_eq!(conflict(store.finish_run(&a.id, &CheckpointId::for_round(&a.id, RoundNumber(2))).await), expected);
        assert_eq!(conflict(store.begin_round(&a.id, 1, 1, &two_clients()).await), expected);
        assert_eq!(store.get_run(&a.id).await.unwrap().unwrap(), before, "{terminal}: nothing changed");
        assert!(store.list_rounds(&a.id).await.unwrap().is_empty());
        assert!(store.list_participations(&a.id).await.unwrap().is_empty());
    }
}

pub(crate) async fn writes_naming_an_unknown_run_are_not_found(store: &dyn Store) {
    let ghost = RunId::generate();
    let expected = ("not found", "run", ghost.to_string());
    let err = store.set_run_state(&ghost, RunState::Running, None).await.unwrap_err();
    assert_eq!(err.to_string(), format!("run {ghost} does not exist"));
    assert_eq!(refused(store.finish_run(&ghost, &CheckpointId::for_round(&ghost, RoundNumber(1))).await), expected);
    assert_eq!(refused(store.begin_round(&ghost, 1, 1, &two_clients()).await), expected);
    assert_eq!(refused(store.record_evaluations(&[evaluation(&ghost, 1, None)]).await), expected);
    assert_eq!(refused(store.reserve_privacy(&[ledger_entry(&ghost, "eu", 1, 1)]).await), expected);
    assert!(store.list_runs().await.unwrap().is_empty());
    assert!(store.list_rounds(&ghost).await.unwrap().is_empty());
    assert!(store.list_evaluations(&ghost).await.unwrap().is_empty());
    assert!(store.list_ledger(&LedgerFilter::default()).await.unwrap().is_empty());
}

pub(crate) async fn clients_are_upserted_by_id(store: &dyn Store) {
    let client = ClientRecord {
        id: id("c1"),
        region: id("eu"),
        datasets: vec![DatasetDescriptor { name: "d".into(), samples: 10, features: 4, classes: 3 }],
        devices: vec!["cpu".into()],
        registered_at: now(),
        members: 1,
    };
    store.upsert_client(&client).await.unwrap();
    let moved =
        ClientRecord { region: id("us"), devices: vec!["cpu".into(), "cuda:0".into()], members: 40, ..client.clone() };
    store.upsert_client(&moved).await.unwrap();
    let first = ClientRecord { id: id("a0"), datasets: vec![], devices: vec![], ..client.clone() };
    store.upsert_client(&first).await.unwrap();
    assert_eq!(store.list_clients().await.unwrap(), vec![first, moved], "one record per id, ordered by id");
}

// ------------------------------------------------------------------------------------------
// Round attempts
// ------------------------------------------------------------------------------------------

pub(crate) async fn attempts_are_numbered_per_round(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    assert_eq!(store.next_attempt(&a.id, 1).await.unwrap(), 1);
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    assert_eq!(store.next_attempt(&a.id, 1).await.unwrap(), 2);
    assert_eq!(store.next_attempt(&a.id, 2).await.unwrap(), 1, "per round");
    store.begin_round(&a.id, 1, 2, &two_clients()[..1]).await.unwrap();
    assert_eq!(store.next_attempt(&a.id, 1).await.unwrap(), 3);

    let r = round_of(store, &a.id, 1, 1).await;
    assert_eq!((r.status, r.selected, r.reported, r.samples), (RoundStatus::InProgress, 2, 0, 0));
    assert_eq!((r.metrics, r.checkpoint, r.failure, r.finished_at), (None, None, None, None));
    let parts = store.list_participations(&a.id).await.unwrap();
    assert_eq!(
        parts.iter().map(|p| (p.attempt, p.client.as_str(), p.region.as_str(), p.status)).collect::<Vec<_>>(),
        [
            (1, "c1", "eu", ParticipationStatus::Selected),
            (1, "c2", "us", ParticipationStatus::Selected),
            (2, "c1", "eu", ParticipationStatus::Selected)
        ]
    );
    assert!(parts.iter().all(|p| p.samples == 0 && p.metrics.is_none() && p.update_norm.is_none()));
}

pub(crate) async fn beginning_an_attempt_twice_is_already_exists(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    let before = store.list_participations(&a.id).await.unwrap();
    let err = store.begin_round(&a.id, 1, 1, &[(id("c3"), id("eu"))]).await.unwrap_err();
    assert_eq!(err.to_string(), format!("round attempt {} already exists", attempt_key(&a.id, 1, 1)));
    assert_eq!(store.list_participations(&a.id).await.unwrap(), before);

    // A client selected twice: the whole attempt is refused.
    let twice = [(id("c1"), id("eu")), (id("c1"), id("us"))];
    assert_eq!(
        refused(store.begin_round(&a.id, 1, 2, &twice).await),
        ("already exists", "participation", format!("{}/c1", attempt_key(&a.id, 1, 2)))
    );
    assert_eq!(store.list_rounds(&a.id).await.unwrap().len(), 1);
    assert_eq!(store.next_attempt(&a.id, 1).await.unwrap(), 2);
    assert_eq!(store.list_participations(&a.id).await.unwrap(), before);
}

pub(crate) async fn a_completed_round_commits_participations_checkpoint_and_run_progress(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    let outcome = store.record_updates(&[update(&a.id, 1, 1, "c1", 10)]).await.unwrap();
    assert_eq!(outcome, UpdatesOutcome { recorded: 1, refused: vec![] });
    let cp1 = checkpoint(&a.id, 1, &["eu", "us"]);
    let m = metrics(0.0);
    store
        .complete_round(&RoundCompletion {
            reported: 1,
            samples: 10,
            metrics: m,
            checkpoint: cp1.clone(),
            ..completion(&a.id, 1, 1, false)
        })
        .await
        .unwrap();
    let run = store.get_run(&a.id).await.unwrap().unwrap();
    assert_eq!((run.state, run.completed_rounds, run.published_checkpoint), (RunState::Running, 1, None));
    let parts = store.list_participations(&a.id).await.unwrap();
    assert_eq!(
        parts.iter().map(|p| p.status).collect::<Vec<_>>(),
        [ParticipationStatus::Reported, ParticipationStatus::Dropped]
    );
    assert_eq!((parts[0].samples, parts[0].metrics, parts[0].update_norm), (10, Some(m), Some(0.5)));
    assert_eq!(store.get_checkpoint(&cp1.id).await.unwrap().unwrap(), cp1);
    let r = round_of(store, &a.id, 1, 1).await;
    assert_eq!((r.status, r.reported, r.samples, r.metrics), (RoundStatus::Done, 1, 10, Some(m)));
    assert_eq!((r.checkpoint.as_ref(), r.failure.as_deref()), (Some(&cp1.id), None));
    assert!(r.finished_at.is_some_and(|f| f >= r.started_at));
}

/// Bug: `train_seconds` was not stored, so a replayed history said 0 s where the live one
/// said how long clients trained.
pub(crate) async fn updates_and_round_means_keep_their_training_time(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    let m = metrics(1.25);
    let outcome =
        store.record_updates(&[ParticipationRecord { metrics: Some(m), ..update(&a.id, 1, 1, "c1", 10) }]).await;
    assert_eq!(outcome.unwrap().recorded, 1);
    assert_eq!(participation(store, &a.id, 1, 1, "c1").await.metrics, Some(m));

    let mean = TrainingMetrics { train_seconds: 2.5, ..metrics(0.0) };
    store.complete_round(&RoundCompletion { metrics: mean, ..completion(&a.id, 1, 1, false) }).await.unwrap();
    assert_eq!(round_of(store, &a.id, 1, 1).await.metrics, Some(mean));
    assert_eq!(participation(store, &a.id, 1, 1, "c1").await.metrics, Some(m));
}

pub(crate) async fn a_failed_attempt_drops_its_pending_clients(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    report(store, &[update(&a.id, 1, 1, "c1", 10)]).await;
    store.fail_round(&a.id, 1, 1, "deadline").await.unwrap();
    let r = round_of(store, &a.id, 1, 1).await;
    assert_eq!((r.status, r.failure.as_deref(), r.reported), (RoundStatus::Failed, Some("deadline"), 1));
    assert!(r.finished_at.is_some());
    let c1 = participation(store, &a.id, 1, 1, "c1").await;
    let c2 = participation(store, &a.id, 1, 1, "c2").await;
    assert_eq!((c1.status, c1.samples), (ParticipationStatus::Reported, 10), "a report stays a report");
    assert_eq!((c2.status, c2.detail), (ParticipationStatus::Dropped, None));
    let run = store.get_run(&a.id).await.unwrap().unwrap();
    assert_eq!((run.state, run.completed_rounds), (RunState::Running, 0), "the run is the caller's to end");
}

pub(crate) async fn open_attempts_are_interrupted_once(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    let b = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    store.complete_round(&completion(&a.id, 1, 1, false)).await.unwrap();
    store.begin_round(&a.id, 2, 1, &two_clients()).await.unwrap();
    report(store, &[update(&a.id, 2, 1, "c1", 10)]).await;
    store.begin_round(&b.id, 1, 1, &two_clients()).await.unwrap();

    assert_eq!(store.interrupt_open_rounds().await.unwrap(), 2);
    assert_eq!(store.interrupt_open_rounds().await.unwrap(), 0);
    let rounds = store.list_rounds(&a.id).await.unwrap();
    assert_eq!(
        rounds.iter().map(|r| (r.round, r.attempt, r.status)).collect::<Vec<_>>(),
        [(1, 1, RoundStatus::Done), (2, 1, RoundStatus::Interrupted)]
    );
    assert_eq!((rounds[0].failure.as_deref(), rounds[1].failure.as_deref()), (None, Some("coordinator restarted")));
    assert!(rounds[1].finished_at.is_some());
    assert_eq!(round_of(store, &b.id, 1, 1).await.status, RoundStatus::Interrupted);
    let c1 = participation(store, &a.id, 2, 1, "c1").await;
    let c2 = participation(store, &a.id, 2, 1, "c2").await;
    assert_eq!((c1.status, c1.detail), (ParticipationStatus::Reported, None));
    assert_eq!((c2.status, c2.detail.as_deref()), (ParticipationStatus::Dropped, Some("coordinator restarted")));
    let done = participation(store, &a.id, 1, 1, "c1").await;
    assert_eq!((done.status, done.detail), (ParticipationStatus::Dropped, None), "ended attempts are left alone");
}

pub(crate) async fn the_final_round_succeeds_the_run_and_publishes_its_checkpoint(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    store.complete_round(&completion(&a.id, 1, 1, false)).await.unwrap();
    // A failed attempt, then one that completes the last round.
    store.begin_round(&a.id, 2, 1, &two_clients()).await.unwrap();
    store.fail_round(&a.id, 2, 1, "deadline").await.unwrap();
    store.begin_round(&a.id, 2, 2, &two_clients()[..1]).await.unwrap();
    let cp2 = checkpoint(&a.id, 2, &["eu"]);
    store.complete_round(&RoundCompletion { checkpoint: cp2.clone(), ..completion(&a.id, 2, 2, true) }).await.unwrap();
    let run = store.get_run(&a.id).await.unwrap().unwrap();
    assert_eq!(
        (run.state, run.completed_rounds, run.published_checkpoint),
        (RunState::Succeeded, 2, Some(cp2.id.clone()))
    );
    let rounds = store.list_rounds(&a.id).await.unwrap();
    assert_eq!(
        rounds.iter().map(|r| (r.round, r.attempt, r.status)).collect::<Vec<_>>(),
        [(1, 1, RoundStatus::Done), (2, 1, RoundStatus::Failed), (2, 2, RoundStatus::Done)]
    );
    let stored = store.get_checkpoint(&cp2.id).await.unwrap().unwrap();
    assert_eq!(stored.parent, Some(CheckpointId::for_round(&a.id, RoundNumber(1))));
    assert_eq!(stored, cp2);
}

pub(crate) async fn completing_an_attempt_twice_is_a_conflict(store: &dyn Store) {
    let b = new_run(store, RunState::Running).await;
    store.begin_round(&b.id, 1, 1, &two_clients()).await.unwrap();
    let c = completion(&b.id, 1, 1, false);
    store.complete_round(&c).await.unwrap();
    let err = store.complete_round(&c).await.unwrap_err();
    let key = attempt_key(&b.id, 1, 1);
    assert_eq!(err.to_string(), format!("cannot complete round attempt {key}: it is done"));
    assert_eq!(conflict(Err::<(), _>(err)), ("round attempt", key, "done".to_string()));
    assert_eq!(store.get_run(&b.id).await.unwrap().unwrap().completed_rounds, 1);
    assert_eq!(store.get_checkpoint(&c.checkpoint.id).await.unwrap().unwrap(), c.checkpoint);
}

pub(crate) async fn an_ended_attempt_can_neither_fail_nor_complete(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    store.complete_round(&completion(&a.id, 1, 1, false)).await.unwrap();
    store.begin_round(&a.id, 2, 1, &two_clients()).await.unwrap();
    store.fail_round(&a.id, 2, 1, "first reason").await.unwrap();
    store.begin_round(&a.id, 2, 2, &two_clients()).await.unwrap();
    store.interrupt_open_rounds().await.unwrap();
    let before = store.list_rounds(&a.id).await.unwrap();

    let state = |s: &str| s.to_string();
    // A published round is not turned failed afterwards.
    assert_eq!(
        conflict(store.fail_round(&a.id, 1, 1, "late").await),
        ("round attempt", attempt_key(&a.id, 1, 1), state("done"))
    );
    assert_eq!(conflict(store.fail_round(&a.id, 2, 1, "again").await).2, "failed");
    assert_eq!(conflict(store.complete_round(&completion(&a.id, 2, 1, false)).await).2, "failed");
    assert_eq!(conflict(store.fail_round(&a.id, 2, 2, "late").await).2, "interrupted");
    assert_eq!(conflict(store.complete_round(&completion(&a.id, 2, 2, false)).await).2, "interrupted");
    assert_eq!(store.list_rounds(&a.id).await.unwrap(), before, "nothing changed");
    assert_eq!(store.get_run(&a.id).await.unwrap().unwrap().completed_rounds, 1);
    assert!(store.get_checkpoint(&CheckpointId::for_round(&a.id, RoundNumber(2))).await.unwrap().is_none());
}

pub(crate) async fn round_writes_naming_an_unknown_attempt_are_not_found(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    let err = store.fail_round(&a.id, 1, 2, "deadline").await.unwrap_err();
    assert_eq!(err.to_string(), format!("round attempt {} does not exist", attempt_key(&a.id, 1, 2)));
    assert_eq!(
        refused(store.complete_round(&completion(&a.id, 1, 2, false)).await),
        ("not found", "round attempt", attempt_key(&a.id, 1, 2))
    );
    assert_eq!(
        refused(store.reject_update(&a.id, 1, 1, &id("c9"), "too large").await),
        ("not found", "participation", format!("{}/c9", attempt_key(&a.id, 1, 1)))
    );
    assert_eq!(store.list_rounds(&a.id).await.unwrap().len(), 1);
    assert_eq!(round_of(store, &a.id, 1, 1).await.status, RoundStatus::InProgress);
    assert!(store.list_checkpoints(&CheckpointFilter::default()).await.unwrap().is_empty());
}

pub(crate) async fn rounds_complete_once_each_in_order(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 2, 1, &two_clients()).await.unwrap();
    let err = store.complete_round(&completion(&a.id, 2, 1, false)).await.unwrap_err();
    assert_eq!(err.to_string(), format!("cannot complete round 2 of run {}: it is at round 1", a.id));
    assert_eq!(round_of(store, &a.id, 2, 1).await.status, RoundStatus::InProgress);
    assert!(store.list_checkpoints(&CheckpointFilter::default()).await.unwrap().is_empty());

    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    store.complete_round(&completion(&a.id, 1, 1, false)).await.unwrap();
    store.complete_round(&completion(&a.id, 2, 1, false)).await.unwrap();
    // Round 1 again, in a new attempt: it is over.
    store.begin_round(&a.id, 1, 2, &two_clients()).await.unwrap();
    assert_eq!(
        conflict(store.complete_round(&completion(&a.id, 1, 2, false)).await),
        ("run", a.id.to_string(), "at round 3".to_string())
    );
    let run = store.get_run(&a.id).await.unwrap().unwrap();
    assert_eq!(run.completed_rounds, 2, "progress never goes back");
    assert_eq!(round_of(store, &a.id, 1, 2).await.status, RoundStatus::InProgress);
}

pub(crate) async fn a_terminal_run_completes_no_round(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    store.set_run_state(&a.id, RunState::Cancelled, Some("run cancelled")).await.unwrap();
    let err = store.complete_round(&completion(&a.id, 1, 1, true)).await.unwrap_err();
    assert_eq!(err.to_string(), format!("cannot complete a round of run {}: it is cancelled", a.id));
    let run = store.get_run(&a.id).await.unwrap().unwrap();
    assert_eq!((run.state, run.completed_rounds, run.published_checkpoint), (RunState::Cancelled, 0, None));
    assert!(store.list_checkpoints(&CheckpointFilter::default()).await.unwrap().is_empty());
    // The attempt can still be closed as failed.
    store.fail_round(&a.id, 1, 1, "run cancelled").await.unwrap();
    assert_eq!(round_of(store, &a.id, 1, 1).await.status, RoundStatus::Failed);
}

pub(crate) async fn a_refused_completion_writes_nothing(store: &dyn Store) {
    let a = new_run(store, RunState::Running).await;
    store.begin_round(&a.id, 1, 1, &two_clients()).await.unwrap();
    let taken = completion(&a.id, 1, 1, false);
    store.complete_round(&taken).await.unwrap();

    let b = new_run(store, RunState::Running).await;
    store.begin_round(&b.id, 1, 1, &two_clients()).await.unwrap();
    report(store, &[update(&b.id, 1, 1, "c1", 10)]).await;
    let round_before = round_of(store, &b.id, 1, 1).await;
    let parts_before = store.list_participations(&b.id).await.unwrap();
    let run_before = store.get_run(&b.id).await.unwrap().unwrap();
    let unchanged = async || {
        assert_eq!(round_of(store, &b.id, 1, 1).await, round_before);
        assert_eq!(store.list_participations(&b.id).await.unwrap(), parts_before);
        assert_eq!(store.get_run(&b.id).await.unwrap().unwrap(), run_before);
    };

    // Another run's checkpoint id.
    let clash = RoundCompletion {
        checkpoint: CheckpointRecord { run: b.id.clone(), ..taken.checkpoint.clone() },
        ..completion(&b.id, 1, 1, true)
    };
    let err = store.complete_round(&clash).await.unwrap_err();
    assert_eq!(err.to_string(), format!("checkpoint {} already exists", taken.checkpoint.id));
    unchanged().await;
    assert_eq!(store.get_checkpoint(&taken.checkpoint.id).await.unwrap().unwrap(), taken.checkpoint);

    // A region listed twice.
    let mut twice = completion(&b.id, 1, 1, true);
    twice.checkpoint.locations.push((id("eu"), ArtifactLocation::new("/b/eu")));
    assert_eq!(
        refused(store.complete_round(&twice).await),
        ("already exists", "checkpoint location", format!("{}/eu", twice.checkpoint.id))
    );
    unchanged().await;
    assert!(store.get_checkpoint(&twice.checkpoint.id).await.unwrap().is_none());

    store.complete_round(&completion(&b.id, 1, 1, true)).await.unwrap();
    assert_eq!(store.get_run(&b.id).await.unwrap().unwrap().state, RunState::Succeeded);
}

mod audit;
mod cases;
mod lease;
mod ledger;
mod records;
mod registry;
mod upstream;
pub(crate) use cases::with_contract_cases;
pub(crate) use {audit::*, lease::*, ledger::*, records::*, registry::*, upstream::*};
