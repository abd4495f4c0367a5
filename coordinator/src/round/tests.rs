//! Engine unit tests: the real engine, run actors and scheduler over an in-process store,
//! with fake clients that read their task streams and commit updates directly (no gRPC).
//! Time is paused (`start_paused`), so grace periods and deadlines pass in virtual time and
//! every assertion waits for the event or answer that proves the state.

mod release;
mod server_opt;

use super::*;
use crate::aggregation::StagingPool;
use crate::checkpoint::Checkpoints;
use crate::ids::{ClientId, RegionId, RunId};
use crate::model::{Architecture, ModelSpec};
use crate::plan::{
    Clipping, DpMechanism, EvaluationPlan, LocalTraining, Optimizer, OverBound, PrivacyPlan, RawPlan, RegionSet,
    RunPlan, Sampling, Strategy,
};
use crate::privacy::Budgets;
use crate::privacy::budget::RawBudgetRule;
use crate::store::{ClientRecord, DatasetDescriptor, MemoryStore, ParticipationStatus, RunState, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::timeout;

const DIM: usize = 4 * 3 + 3;

struct Harness {
    engine: EngineHandle,
    store: Arc<dyn Store>,
    dir: tempfile::TempDir,
    settings: EngineSettings,
    pool: StagingPool,
}

/// The in-memory store: SQLite's pool timeouts would run on the paused clock.
fn test_store() -> MemoryStore {
    MemoryStore::new()
}

fn settings() -> EngineSettings {
    let budgets =
        Budgets::new(vec![RawBudgetRule { model: None, region: None, epsilon: 1000.0, delta: 1e-5 }]).unwrap();
    EngineSettings {
        // Long enough that silent fake clients stay online past every deadline; the
        // liveness test shortens it.
        client_timeout: Duration::from_secs(120),
        privacy: PrivacySettings { budgets, ..PrivacySettings::default() },
        ..EngineSettings::default()
    }
}

async fn harness_with(settings: EngineSettings) -> Harness {
    start(Arc::new(test_store()), tempfile::tempdir().unwrap(), settings).await
}

async fn start(store: Arc<dyn Store>, dir: tempfile::TempDir, settings: EngineSettings) -> Harness {
    let (engine, _join) = Engine::start(
        Arc::clone(&store),
        Checkpoints::with_ephemeral_key(dir.path().join("artifacts")),
        settings.clone(),
    )
    .await
    .unwrap();
    Harness { engine, store, dir, settings, pool: StagingPool::new(64, 1 << 20) }
}

async fn harness() -> Harness {
    harness_with(settings()).await
}

fn region(r: &str) -> RegionId {
    RegionId::new(r).unwrap()
}

/// A fake client: registered and subscribed; its task stream.
struct FakeClient {
    id: ClientId,
    tasks: crate::round::TaskReceiver,
}

async fn connect(h: &Harness, id: &str, r: &str) -> FakeClient {
    let id = ClientId::new(id).unwrap();
    let record = ClientRecord {
        id: id.clone(),
        region: region(r),
        datasets: vec![DatasetDescriptor { name: "d".into(), samples: 100, features: 4, classes: 3 }],
        devices: vec!["cpu".into()],
        registered_at: chrono::Utc::now(),
        members: 1,
    };
    h.engine.register(record, String::new()).await.unwrap();
    let tasks = h.engine.subscribe(id.clone()).await.unwrap();
    FakeClient { id, tasks }
}

fn plan_with(rounds: u32, per_round: u32, min: u32, regions: &[&str], f: impl FnOnce(&mut RawPlan)) -> RunPlan {
    let mut raw = RawPlan {
        model: ModelSpec::new("lr", Architecture::LogisticRegression { input_dim: 4, classes: 3 }).unwrap(),
        initial_checkpoint: None,
        strategy: Some(Strategy::FedAvg),
        aggregator: Default::default(),
        rounds,
        clients_per_round: per_round,
        min_clients: min,
        over_selection: 0.0,
        round_deadline: 30.0,
        local: LocalTraining {
            epochs: 1,
            batch_size: 8,
            learning_rate: 0.1,
            proximal_mu: 0.0,
            optimizer: Optimizer::Sgd,
            momentum: 0.0,
        },
        regions: RegionSet::new(regions.iter().map(|r| region(r))),
        seed: 7,
        evaluation: EvaluationPlan::default(),
        privacy: None,
        priority: 0,
        promotion: Default::default(),
        schedule: Default::default(),
        compression: Default::default(),
    };
    f(&mut raw);
    RunPlan::new(raw).unwrap()
}

fn plan(rounds: u32, per_round: u32, min: u32, regions: &[&str]) -> RunPlan {
    plan_with(rounds, per_round, min, regions, |_| {})
}

fn private(sampling: Sampling, over_bound: OverBound, expected: u32) -> PrivacyPlan {
    PrivacyPlan {
        mechanism: DpMechanism::Central,
        noise_multiplier: 1.0,
        clipping: Clipping::Fixed { norm: 1.0 },
        over_bound,
        sampling,
        expected_clients: expected,
    }
}

impl Harness {
    async fn update(&self, value: f32, is_delta: bool) -> VerifiedUpdate {
        let mut values = self.pool.acquire(DIM).await;
        values.as_mut_slice().fill(value);
        let update_norm = f64::from(value.abs()) * (DIM as f64).sqrt();
        VerifiedUpdate {
            values: super::UpdateValues::Staged(values),
            samples: 10,
            metrics: TrainingMetrics::default(),
            update_norm,
            is_delta,
            wire_bytes: (DIM * 4) as u64,
            contributors: 1,
            scopes: Vec::new(),
            reference: None,
        }
    }

    /// Sends the client's update for `task`.
    async fn report(&self, c: &FakeClient, task: &TaskAssignment) -> Result<u32, RoundError> {
        let u = self.update(0.01, task.privacy.is_some()).await;
        self.engine.commit_upload(task.task.clone(), c.id.clone(), u).await
    }

    async fn watch(&self, run: &RunId) -> broadcast::Receiver<RunEvent> {
        self.engine.watch(run.clone()).await.unwrap().1.expect("run is live")
    }
}

/// The next event of `run` matching `pred` (other runs' events are skipped).
async fn next_event(
    rx: &mut broadcast::Receiver<RunEvent>,
    run: &RunId,
    pred: impl Fn(&RunEventKind) -> bool,
) -> RunEvent {
    loop {
        let e = rx.recv().await.expect("event stream open");
        if &e.run == run && pred(&e.kind) {
            return e;
        }
    }
}

async fn finished(rx: &mut broadcast::Receiver<RunEvent>, run: &RunId) -> (RunState, Option<String>) {
    match next_event(rx, run, |k| matches!(k, RunEventKind::RunFinished { .. })).await.kind {
        RunEventKind::RunFinished { state, reason } => (state, reason),
        _ => unreachable!(),
    }
}

async fn task_of(c: &mut FakeClient) -> TaskAssignment {
    *c.tasks.recv().await.expect("task stream open")
}

#[tokio::test(start_paused = true)]
async fn three_runs_on_three_regions_train_at_the_same_time() {
    let h = harness().await;
    let mut clients = Vec::new();
    for r in ["eu", "us", "ap"] {
        for i in 0..2 {
            clients.push(connect(&h, &format!("{r}-{i}"), r).await);
        }
    }
    let runs: Vec<RunId> = submit_per_region(&h, &["eu", "us", "ap"]).await;
    // Every client gets a training task before anyone uploads: three rounds in Training.
    let mut tasks = Vec::new();
    for c in &mut clients {
        tasks.push(task_of(c).await);
    }
    for run in &runs {
        assert_eq!(h.engine.get(run.clone()).await.unwrap().live_phase, Some((1, PhaseName::Training)));
    }
    for (run, r) in runs.iter().zip(["eu", "us", "ap"]) {
        let mine: Vec<_> = tasks.iter().filter(|t| &t.run == run).collect();
        assert_eq!(mine.len(), 2, "run on {r} got {} tasks", mine.len());
    }
    for (c, t) in clients.iter().zip(&tasks) {
        h.report(c, t).await.unwrap();
    }
    for run in &runs {
        let (history, live) = h.engine.watch(run.clone()).await.unwrap();
        match live {
            Some(mut live) => assert_eq!(finished(&mut live, run).await.0, RunState::Succeeded),
            None => assert!(
                history.iter().any(|e| matches!(e.kind, RunEventKind::RunFinished { state: RunState::Succeeded, .. }))
            ),
        }
    }
}

async fn submit_per_region(h: &Harness, regions: &[&str]) -> Vec<RunId> {
    let mut runs = Vec::new();
    for r in regions {
        runs.push(h.engine.submit(plan(1, 2, 2, &[r]), None).await.unwrap());
    }
    runs
}

#[tokio::test(start_paused = true)]
async fn selection_waits_for_the_target_then_settles_for_the_quorum_after_the_grace_period() {
    let h = harness().await;
    let mut a = connect(&h, "a", "eu").await;
    let _b = connect(&h, "b", "eu").await;
    // Target 3, quorum 2, deadline 30 s: grace is 6 s.
    let run = h.engine.submit(plan(1, 3, 2, &[]), None).await.unwrap();
    assert!(timeout(Duration::from_millis(5_800), a.tasks.recv()).await.is_err(), "selected before the grace period");
    let t = timeout(Duration::from_secs(1), task_of(&mut a)).await.expect("selected after the grace period");
    assert_eq!(t.run, run);
}

#[tokio::test(start_paused = true)]
async fn selection_fails_at_the_deadline_without_a_quorum_online() {
    let h = harness().await;
    let _a = connect(&h, "a", "eu").await;
    let run = h.engine.submit(plan(1, 3, 2, &[]), None).await.unwrap();
    let mut rx = h.watch(&run).await;
    let (state, reason) = finished(&mut rx, &run).await;
    assert_eq!(state, RunState::Failed);
    assert!(reason.unwrap().contains("only 1 eligible clients online by the deadline, quorum is 2"));
}

#[tokio::test(start_paused = true)]
async fn training_closes_at_the_deadline_with_the_quorum_and_abandons_the_straggler() {
    let h = harness().await;
    let mut cs = vec![connect(&h, "a", "eu").await, connect(&h, "b", "eu").await, connect(&h, "c", "eu").await];
    let run = h.engine.submit(plan(1, 3, 2, &[]), None).await.unwrap();
    let mut rx = h.watch(&run).await;
    let mut tasks = Vec::new();
    for c in &mut cs {
        tasks.push(task_of(c).await);
    }
    h.report(&cs[0], &tasks[0]).await.unwrap();
    h.report(&cs[1], &tasks[1]).await.unwrap();
    // c stays silent (but alive): the deadline closes the round with 2 of 3.
    let agg = next_event(&mut rx, &run, |k| matches!(k, RunEventKind::Aggregated { .. })).await;
    // The bytes of the two counted uploads, and only theirs.
    let two = 2 * (DIM * 4) as u64;
    assert!(matches!(agg.kind, RunEventKind::Aggregated { clients: 2, update_bytes, .. } if update_bytes == two));
    assert_eq!(finished(&mut rx, &run).await.0, RunState::Succeeded);
    assert_eq!(h.engine.heartbeat(cs[2].id.clone()).await.unwrap(), vec![tasks[2].task.clone()]);
    let late = h.report(&cs[2], &tasks[2]).await.unwrap_err();
    assert!(matches!(late, RoundError::RoundClosed { round: 1, .. }), "{late}");
}

#[tokio::test(start_paused = true)]
async fn training_fails_as_soon_as_dropouts_make_the_quorum_unreachable() {
    let h = harness().await;
    let mut a = connect(&h, "a", "eu").await;
    let mut b = connect(&h, "b", "eu").await;
    let run = h.engine.submit(plan(1, 2, 2, &[]), None).await.unwrap();
    let mut rx = h.watch(&run).await;
    let _ta = task_of(&mut a).await;
    let _tb = task_of(&mut b).await;
    drop(b); // its task stream closes: the liveness check drops it
    let (state, reason) = finished(&mut rx, &run).await;
    assert_eq!(state, RunState::Failed);
    assert!(reason.unwrap().contains("only 0 updates and no client left to report"));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_client_may_not_report_later() {
    let h = harness_with(EngineSettings { client_timeout: Duration::from_secs(10), ..settings() }).await;
    let mut a = connect(&h, "a", "eu").await;
    let mut b = connect(&h, "b", "eu").await;
    let run = h.engine.submit(plan(1, 2, 1, &[]), None).await.unwrap();
    let mut rx = h.watch(&run).await;
    let ta = task_of(&mut a).await;
    let tb = task_of(&mut b).await;
    // a stops heartbeating while b keeps going: after the client timeout a is dropped.
    let timeout_at = tokio::time::Instant::now() + h.settings.client_timeout + Duration::from_secs(1);
    while tokio::time::Instant::now() < timeout_at {
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.engine.heartbeat(b.id.clone()).await.unwrap();
    }
    let r = h.report(&a, &ta).await.unwrap_err();
    assert!(matches!(r, RoundError::Dropped { .. }), "{r}");
    h.report(&b, &tb).await.unwrap();
    assert_eq!(finished(&mut rx, &run).await.0, RunState::Succeeded);
    let parts = h.store.list_participations(&run).await.unwrap();
    let pa = parts.iter().find(|p| p.client == a.id).unwrap();
    assert_ne!(pa.status, ParticipationStatus::Reported);
}

#[tokio::test(start_paused = true)]
async fn an_update_refused_for_good_cannot_be_retried() {
    let h = harness().await;
    let mut a = connect(&h, "a", "eu").await;
    let mut b = connect(&h, "b", "eu").await;
    let mut c = connect(&h, "c", "eu").await;
    let p = plan_with(1, 3, 1, &[], |raw| raw.privacy = Some(private(Sampling::Fixed, OverBound::Reject, 3)));
    let run = h.engine.submit(p, None).await.unwrap();
    let mut rx = h.watch(&run).await;
    let ta = task_of(&mut a).await;
    let tb = task_of(&mut b).await;
    let tc = task_of(&mut c).await;
    // A pre-clipping norm below the norm of what was sent is a lie about adaptive clipping's vote.
    let mut lie = h.update(0.01, true).await;
    lie.update_norm = 0.001;
    let e = h.engine.commit_upload(tc.task.clone(), c.id.clone(), lie).await.unwrap_err();
    assert!(e.to_string().contains("is below the norm"), "{e}");
    // Norm 10·√15 > C = 1: refused and recorded.
    let big = h.update(10.0, true).await;
    let e = h.engine.commit_upload(ta.task.clone(), a.id.clone(), big).await.unwrap_err();
    assert!(e.to_string().contains("exceeds the clipping bound"), "{e}");
    let retry = h.report(&a, &ta).await.unwrap_err();
    assert!(matches!(retry, RoundError::Refused { .. }), "{retry}");
    h.report(&b, &tb).await.unwrap();
    assert_eq!(finished(&mut rx, &run).await.0, RunState::Succeeded);
    let parts = h.store.list_participations(&run).await.unwrap();
    assert_eq!(parts.iter().find(|p| p.client == a.id).unwrap().status, ParticipationStatus::Rejected);
}

#[tokio::test(start_paused = true)]
async fn only_a_regional_aggregate_may_report_privacy_scopes() {
    let h = harness().await;
    let mut a = connect(&h, "a", "eu").await;
    let p = plan_with(1, 1, 1, &[], |raw| raw.privacy = Some(private(Sampling::Fixed, OverBound::Reject, 1)));
    let run = h.engine.submit(p, None).await.unwrap();
    let mut rx = h.watch(&run).await;
    let t = task_of(&mut a).await;
    // A client claiming what a region's ledger charged is refused before anything is folded.
    let mut u = h.update(0.01, true).await;
    u.scopes = vec![crate::checkpoint::ScopeEpsilon { scope: "lr@eu".into(), epsilon: 0.5, delta: 1e-6 }];
    let e = h.engine.commit_upload(t.task.clone(), a.id.clone(), u).await.unwrap_err();
    assert!(matches!(e, RoundError::Scopes(_)), "{e}");
    assert!(e.to_string().contains("only a regional aggregate of a private run"), "{e}");
    // Nothing was counted: its plain update completes the round.
    assert_eq!(h.report(&a, &t).await.unwrap(), 1);
    assert_eq!(finished(&mut rx, &run).await.0, RunState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_final_evaluation_cut_short_by_a_restart_is_run_again() {
    let h = harness().await;
    let mut a = connect(&h, "a", "eu").await;
    let p = plan_with(1, 1, 1, &[], |raw| raw.evaluation = EvaluationPlan { every_rounds: 1, clients: 0 });
    let run = h.engine.submit(p, None).await.unwrap();
    let t = task_of(&mut a).await;
    h.report(&a, &t).await.unwrap();
    // The round is committed; the evaluation task is out when the engine stops.
    let first = task_of(&mut a).await;
    assert_eq!(first.kind, TaskKind::Evaluate);
    h.engine.shutdown().await;
    let Harness { store, dir, settings, .. } = h;
    let h = start(store, dir, settings).await;
    let mut a = connect(&h, "a", "eu").await;
    let mut rx = h.watch(&run).await;
    let again = task_of(&mut a).await;
    assert_eq!((again.kind, again.round), (TaskKind::Evaluate, 1));
    let report = EvaluationReport { samples: 20, loss: 0.25, accuracy: 0.75, clients: 1 };
    h.engine.report_evaluation(again.task, a.id.clone(), report).await.unwrap();
    assert_eq!(finished(&mut rx, &run).await.0, RunState::Succeeded);
    let evaluations = h.store.list_evaluations(&run).await.unwrap();
    assert_eq!(evaluations.iter().map(|e| (e.round, e.samples, e.accuracy)).collect::<Vec<_>>()[0], (1, 20, 0.75));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_fold_fails_its_round_and_nothing_else() {
    let mut s = settings();
    s.fold_fault = Some(ClientId::new("a").unwrap());
    let h = harness_with(s).await;
    let mut a = connect(&h, "a", "eu").await;
    let mut b = connect(&h, "b", "us").await;
    let faulty = h.engine.submit(plan(1, 1, 1, &["eu"]), None).await.unwrap();
    let healthy = h.engine.submit(plan(1, 1, 1, &["us"]), None).await.unwrap();
    let mut rx = h.watch(&faulty).await;
    let ta = task_of(&mut a).await;
    let tb = task_of(&mut b).await;
    let e = h.report(&a, &ta).await.unwrap_err();
    assert!(e.to_string().contains("the fold panicked"), "{e}");
    let (state, reason) = finished(&mut rx, &faulty).await;
    assert_eq!(state, RunState::Failed);
    assert!(reason.unwrap().contains("aggregation failed: the fold panicked"));
    // The engine and the other run carry on.
    h.engine.heartbeat(a.id.clone()).await.unwrap();
    let mut rx2 = h.watch(&healthy).await;
    h.report(&b, &tb).await.unwrap();
    assert_eq!(finished(&mut rx2, &healthy).await.0, RunState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn shutdown_writes_the_reported_updates_first() {
    let h = harness().await;
    let mut a = connect(&h, "a", "eu").await;
    let _b = connect(&h, "b", "eu").await;
    let run = h.engine.submit(plan(1, 2, 2, &[]), None).await.unwrap();
    let ta = task_of(&mut a).await;
    h.report(&a, &ta).await.unwrap();
    h.engine.shutdown().await;
    let parts = h.store.list_participations(&run).await.unwrap();
    assert_eq!(parts.iter().find(|p| p.client == a.id).unwrap().status, ParticipationStatus::Reported);
}

#[tokio::test(start_paused = true)]
async fn cancelling_mid_training_ends_the_run_and_frees_its_clients() {
    let h = harness().await;
    let mut a = connect(&h, "a", "eu").await;
    let first = h.engine.submit(plan(1, 1, 1, &[]), None).await.unwrap();
    let mut rx = h.watch(&first).await;
    let ta = task_of(&mut a).await;
    assert_eq!(h.engine.cancel(first.clone()).await.unwrap(), RunState::Cancelled);
    assert_eq!(finished(&mut rx, &first).await, (RunState::Cancelled, Some("run cancelled".into())));
    assert_eq!(h.engine.heartbeat(a.id.clone()).await.unwrap(), vec![ta.task.clone()]);
    // The client is free for the next run at once.
    let second = h.engine.submit(plan(1, 1, 1, &[]), None).await.unwrap();
    assert_eq!(task_of(&mut a).await.run, second);
    let again = h.engine.cancel(first.clone()).await.unwrap_err();
    assert!(matches!(again, RoundError::RunEnded { .. }), "{again}");
}

#[tokio::test(start_paused = true)]
async fn an_empty_poisson_round_publishes_to_the_sampled_population_and_survives_a_restart() {
    let h = harness().await;
    let _a = connect(&h, "a", "eu").await;
    let _b = connect(&h, "b", "us").await;
    let p = plan_with(2, 2, 1, &[], |raw| {
        // q = 1e-6: the sample is empty (with probability 1 − 4e-6).
        raw.privacy = Some(private(Sampling::Poisson { rate: 1e-6 }, OverBound::Reject, 2));
    });
    let run = h.engine.submit(p, None).await.unwrap();
    let mut rx = h.watch(&run).await;
    let published = next_event(&mut rx, &run, |k| matches!(k, RunEventKind::Published { .. })).await;
    let RunEventKind::Published { regions, checkpoint, .. } = published.kind else { unreachable!() };
    assert_eq!(regions, vec![region("eu"), region("us")]);
    let record = h.store.get_checkpoint(&checkpoint).await.unwrap().unwrap();
    assert_eq!(record.locations.len(), 2);
    // A restart resumes from that checkpoint.
    h.engine.shutdown().await;
    let Harness { store, dir, settings, .. } = h;
    let h = start(store, dir, settings).await;
    let _a = connect(&h, "a", "eu").await;
    let _b = connect(&h, "b", "us").await;
    // The resumed round samples nobody and may finish the run before the watch is made.
    let (state, reason) = match h.engine.watch(run.clone()).await.unwrap() {
        (_, Some(mut rx)) => finished(&mut rx, &run).await,
        (history, None) => history
            .into_iter()
            .find_map(|e| match e.kind {
                RunEventKind::RunFinished { state, reason } => Some((state, reason)),
                _ => None,
            })
            .expect("an ended run's history ends with RunFinished"),
    };
    assert_eq!(state, RunState::Succeeded, "{reason:?}");
}

#[tokio::test(start_paused = true)]
async fn a_higher_priority_run_gets_shared_clients_first() {
    let h = harness().await;
    let mut a = connect(&h, "a", "eu").await;
    let busy = h.engine.submit(plan(1, 1, 1, &[]), None).await.unwrap();
    let t0 = task_of(&mut a).await;
    assert_eq!(t0.run, busy);
    // While a is busy, a low- and then a high-priority run queue up for it.
    let low = h.engine.submit(plan_with(1, 1, 1, &[], |r| r.priority = -5), None).await.unwrap();
    let high = h.engine.submit(plan_with(1, 1, 1, &[], |r| r.priority = 5), None).await.unwrap();
    h.report(&a, &t0).await.unwrap();
    let t1 = task_of(&mut a).await;
    assert_eq!(t1.run, high);
    h.report(&a, &t1).await.unwrap();
    assert_eq!(task_of(&mut a).await.run, low);
}

#[tokio::test(start_paused = true)]
async fn a_failed_participation_write_is_retried_and_the_record_matches_the_manifest() {
    let store = test_store();
    let h = start(Arc::new(store.clone()), tempfile::tempdir().unwrap(), settings()).await;
    let mut a = connect(&h, "a", "eu").await;
    let mut b = connect(&h, "b", "eu").await;
    let run = h.engine.submit(plan(1, 2, 2, &[]), None).await.unwrap();
    let mut rx = h.watch(&run).await;
    let ta = task_of(&mut a).await;
    let tb = task_of(&mut b).await;
    h.report(&a, &ta).await.unwrap();
    // The batch holding a's update fails to write (the next tick's flush); it must stay
    // queued and reach the store before the round is committed.
    store.fail_update_writes(1);
    // Proof the fault happened: the injected failure is consumed by a flush (the clock is
    // paused, so this advances virtual time tick by tick until then).
    while store.update_write_failures_left() > 0 {
        tokio::time::sleep(h.settings.tick).await;
    }
    h.report(&b, &tb).await.unwrap();
    let published = next_event(&mut rx, &run, |k| matches!(k, RunEventKind::Published { .. })).await;
    let RunEventKind::Published { checkpoint, .. } = published.kind else { unreachable!() };
    assert_eq!(finished(&mut rx, &run).await.0, RunState::Succeeded);
    let manifest: crate::checkpoint::Manifest =
        serde_json::from_str(&h.store.get_checkpoint(&checkpoint).await.unwrap().unwrap().manifest_json).unwrap();
    let parts = h.store.list_participations(&run).await.unwrap();
    assert_eq!(manifest.contributors.len(), 2);
    for c in &manifest.contributors {
        let p = parts.iter().find(|p| p.client == c.client).unwrap();
        assert_eq!(p.status, ParticipationStatus::Reported, "{} is a contributor recorded as {:?}", c.client, p.status);
    }
}

#[tokio::test(start_paused = true)]
async fn watch_replays_the_live_events_of_a_finished_run() {
    let h = harness().await;
    let mut a = connect(&h, "a", "eu").await;
    let run = h.engine.submit(plan(2, 1, 1, &[]), None).await.unwrap();
    let (history, live) = h.engine.watch(run.clone()).await.unwrap();
    let mut live = live.unwrap();
    for _ in 0..2 {
        let t = task_of(&mut a).await;
        let mut u = h.update(0.01, false).await;
        u.metrics = TrainingMetrics { loss_before: 1.5, loss_after: 0.5, accuracy_after: 0.75, train_seconds: 1.25 };
        h.engine.commit_upload(t.task, a.id.clone(), u).await.unwrap();
    }
    let mut seen = history;
    loop {
        let e = live.recv().await.unwrap();
        let end = matches!(e.kind, RunEventKind::RunFinished { .. });
        seen.push(e);
        if end {
            break;
        }
    }
    let (replayed, rest) = h.engine.watch(run.clone()).await.unwrap();
    assert!(rest.is_none());
    let strip = |events: &[RunEvent]| -> Vec<RunEvent> {
        events
            .iter()
            .cloned()
            .map(|mut e| {
                // Neither is stored: a replay reports 0 for both.
                if let RunEventKind::Aggregated { fold_seconds, update_bytes, .. } = &mut e.kind {
                    *fold_seconds = 0.0;
                    *update_bytes = 0;
                }
                e
            })
            .collect()
    };
    // Live, round 1's Published may come after round 2's first events (round 1 was
    // released while its checkpoint was written); each round's own events keep their order.
    let by_round = |mut events: Vec<RunEvent>| {
        events.sort_by_key(|e| e.round);
        events
    };
    assert_eq!(by_round(strip(&replayed)), by_round(strip(&seen)));
}

#[tokio::test(start_paused = true)]
async fn a_model_beyond_the_limit_is_refused_at_submit_and_a_stored_one_fails_alone_at_start() {
    let big = |raw: &mut RawPlan| {
        // 2^11 × 2^11 ≈ 4.2 M parameters against a limit of 2^20: the same check refuses a
        // plan of tens of GiB under the default limit, before anything is allocated.
        raw.model = ModelSpec::new("huge", Architecture::Mlp { input_dim: 1 << 11, hidden: vec![1 << 11], classes: 3 })
            .unwrap();
    };
    let h = harness_with(EngineSettings { max_model_parameters: 1 << 20, ..settings() }).await;
    let e = h.engine.submit(plan_with(1, 1, 1, &[], big), None).await.unwrap_err();
    assert!(matches!(e, RoundError::ModelTooLarge { max: 1_048_576, .. }), "{e}");
    assert!(h.store.list_runs().await.unwrap().is_empty(), "nothing stored");

    // A run already in the store (written before the limit) fails alone when activated; the
    // engine keeps serving, and a normal run next to it succeeds.
    let stored = crate::store::RunRecord {
        id: RunId::generate(),
        plan: plan_with(1, 1, 1, &[], big),
        state: RunState::Queued,
        completed_rounds: 0,
        published_checkpoint: None,
        failure: None,
        created_at: chrono::Utc::now(),
        owner: None,
        policy_sha256: None,
        approvals_needed: 0,
    };
    h.store.create_run(&stored).await.unwrap();
    let Harness { store, dir, .. } = h;
    let h = start(store, dir, EngineSettings { max_model_parameters: 1 << 20, ..settings() }).await;
    let (history, live) = h.engine.watch(stored.id.clone()).await.unwrap();
    if let Some(mut live) = live {
        assert_eq!(finished(&mut live, &stored.id).await.0, RunState::Failed);
    } else {
        assert!(history.iter().any(|e| matches!(e.kind, RunEventKind::RunFinished { state: RunState::Failed, .. })));
    }
    let view = h.engine.get(stored.id.clone()).await.unwrap();
    assert_eq!(view.record.state, RunState::Failed);
    assert!(view.record.failure.unwrap().contains("max_model_parameters is 1048576"));
    let mut a = connect(&h, "a", "eu").await;
    let run = h.engine.submit(plan(1, 1, 1, &[]), None).await.unwrap();
    let mut events = h.watch(&run).await;
    let t = task_of(&mut a).await;
    let u = h.update(0.1, false).await;
    h.engine.commit_upload(t.task, a.id.clone(), u).await.unwrap();
    assert_eq!(finished(&mut events, &run).await.0, RunState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn an_unsatisfiable_run_does_not_block_a_satisfiable_one() {
    let h = harness().await;
    let mut a = connect(&h, "a", "eu").await;
    // First in line and at the highest priority, but it needs 100,000 clients for a week.
    let huge = plan_with(1, 100_000, 100_000, &[], |raw| {
        raw.priority = 100;
        raw.round_deadline = 7.0 * 86_400.0;
    });
    let huge = h.engine.submit(huge, None).await.unwrap();
    let small = h.engine.submit(plan(1, 1, 1, &[]), None).await.unwrap();
    let mut events = h.watch(&small).await;
    let t = task_of(&mut a).await;
    assert_eq!(t.run, small, "the one client goes to the run that can use it");
    let u = h.update(0.1, false).await;
    h.engine.commit_upload(t.task, a.id.clone(), u).await.unwrap();
    assert_eq!(finished(&mut events, &small).await.0, RunState::Succeeded);
    assert_eq!(h.engine.get(huge).await.unwrap().record.state, RunState::Running, "still waiting for its week");
}
