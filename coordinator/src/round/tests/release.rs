//! A round released to the next one while its checkpoint is written (see
//! `phases::publishing`): the next round starts before the commit, rounds still commit in
//! order, and a failed write, a cancel or a restart in the middle leaves the store as the
//! sequential engine would. The artifact store here holds (or fails) round 1's weights
//! write until the test lets it go, so every overlap is forced, not hoped for.

use super::*;
use crate::checkpoint::{ArtifactStore, StoreOptions, StoreSpec};
use crate::store::RoundStatus;
use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult,
};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Notify, Semaphore};

/// An in-memory bucket whose first write of round 1's weights waits for a permit (and fails
/// when told to); every other call goes straight through.
#[derive(Debug)]
struct Gate {
    inner: InMemory,
    armed: AtomicBool,
    permits: Semaphore,
    reached: Notify,
    fail: AtomicBool,
}

impl Gate {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: InMemory::new(),
            armed: AtomicBool::new(true),
            permits: Semaphore::new(0),
            reached: Notify::new(),
            fail: AtomicBool::new(false),
        })
    }

    fn open(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
        self.permits.add_permits(1);
    }
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

#[async_trait]
impl ObjectStore for Gate {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let key = location.as_ref();
        if key.contains("round-0001") && key.ends_with("model.safetensors") && self.armed.swap(false, Ordering::SeqCst)
        {
            self.reached.notify_one();
            self.permits.acquire().await.expect("the gate stays open").forget();
            if self.fail.load(Ordering::SeqCst) {
                return Err(object_store::Error::Generic { store: "gate", source: "the disk is full".into() });
            }
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// An engine whose checkpoints go through `gate`.
async fn gated(store: Arc<dyn Store>, dir: tempfile::TempDir, gate: &Arc<Gate>) -> Harness {
    let bucket: Arc<dyn ObjectStore> = Arc::clone(gate) as Arc<dyn ObjectStore>;
    let artifacts = ArtifactStore::open(
        &StoreSpec::bucket(bucket, "memory://gate", ""),
        &Default::default(),
        StoreOptions::default(),
    )
    .unwrap();
    let settings = settings();
    let (engine, _join) =
        Engine::start(Arc::clone(&store), Checkpoints::ephemeral(artifacts), settings.clone()).await.unwrap();
    Harness { engine, store, dir, settings, pool: StagingPool::new(64, 1 << 20) }
}

/// Submits a 3-round run with one client, reports round 1 and waits until round 1's
/// weights write is held at the gate; returns the run, the client and its watch.
async fn round_one_held(h: &Harness, gate: &Gate) -> (RunId, FakeClient, broadcast::Receiver<RunEvent>) {
    let mut a = connect(h, "a", "eu").await;
    let run = h.engine.submit(plan(3, 1, 1, &[]), None).await.unwrap();
    let rx = h.watch(&run).await;
    let t = task_of(&mut a).await;
    assert_eq!(t.round, 1);
    h.report(&a, &t).await.unwrap();
    gate.reached.notified().await;
    (run, a, rx)
}

/// The client's next task, which must come while round 1's write is held (the sequential
/// engine would hand none out: in virtual time the wait then fails at once).
async fn task_while_held(a: &mut FakeClient) -> TaskAssignment {
    timeout(Duration::from_secs(600), task_of(a)).await.expect("the next round starts while the checkpoint is written")
}

/// The run's attempts as the store records them, and its completed rounds.
async fn on_record(h: &Harness, run: &RunId) -> (Vec<(u32, u32, RoundStatus)>, u32) {
    let rounds = h.store.list_rounds(run).await.unwrap();
    let completed = h.store.get_run(run).await.unwrap().unwrap().completed_rounds;
    (rounds.iter().map(|r| (r.round, r.attempt, r.status)).collect(), completed)
}

#[tokio::test(start_paused = true)]
async fn the_next_round_trains_while_the_checkpoint_is_written_and_rounds_commit_in_order() {
    let gate = Gate::new();
    let h = gated(Arc::new(test_store()), tempfile::tempdir().unwrap(), &gate).await;
    let (run, mut a, mut rx) = round_one_held(&h, &gate).await;
    // Round 2 is handed out while round 1's weights are still being written.
    let t2 = task_while_held(&mut a).await;
    assert_eq!(t2.round, 2);
    assert_eq!(on_record(&h, &run).await.1, 0, "round 1 is not on record yet");
    // Round 2's update is in, but its average waits for round 1's commit.
    h.report(&a, &t2).await.unwrap();
    let view = h.engine.get(run.clone()).await.unwrap();
    assert_eq!(view.live_phase, Some((2, PhaseName::Aggregating)));
    let in_progress = [(1, 1, RoundStatus::InProgress), (2, 1, RoundStatus::InProgress)];
    assert_eq!(view.rounds.iter().map(|r| (r.round, r.attempt, r.status)).collect::<Vec<_>>(), in_progress);
    gate.open(false);
    let published = |k: &RunEventKind| matches!(k, RunEventKind::Published { .. });
    assert_eq!(next_event(&mut rx, &run, published).await.round, 1);
    assert_eq!(next_event(&mut rx, &run, published).await.round, 2);
    let t3 = task_of(&mut a).await;
    h.report(&a, &t3).await.unwrap();
    assert_eq!(finished(&mut rx, &run).await.0, RunState::Succeeded);
    assert_eq!(on_record(&h, &run).await, ([1, 2, 3].map(|r| (r, 1, RoundStatus::Done)).to_vec(), 3));
    // Each checkpoint names the one before it: round 2 trained on round 1's model.
    for r in 2..=3u32 {
        let cp = h.store.get_checkpoint(&CheckpointId::for_round(&run, crate::ids::RoundNumber(r))).await.unwrap();
        assert_eq!(cp.unwrap().parent, Some(CheckpointId::for_round(&run, crate::ids::RoundNumber(r - 1))));
    }
}

#[tokio::test(start_paused = true)]
async fn a_released_round_whose_write_fails_fails_the_round_trained_on_it_and_the_run() {
    let gate = Gate::new();
    let h = gated(Arc::new(test_store()), tempfile::tempdir().unwrap(), &gate).await;
    let (run, mut a, mut rx) = round_one_held(&h, &gate).await;
    assert_eq!(task_while_held(&mut a).await.round, 2);
    gate.open(true);
    let failed = next_event(&mut rx, &run, |k| matches!(k, RunEventKind::RoundFailed { .. })).await;
    assert_eq!(failed.round, 1);
    let (state, reason) = finished(&mut rx, &run).await;
    assert_eq!(state, RunState::Failed);
    let reason = reason.unwrap();
    assert!(reason.contains("round 1 was not committed") && reason.contains("the disk is full"), "{reason}");
    assert_eq!(on_record(&h, &run).await, (vec![(1, 1, RoundStatus::Failed), (2, 1, RoundStatus::Failed)], 0));
}

#[tokio::test(start_paused = true)]
async fn a_cancel_while_a_round_is_released_commits_that_round_first() {
    let gate = Gate::new();
    let h = gated(Arc::new(test_store()), tempfile::tempdir().unwrap(), &gate).await;
    let (run, mut a, mut rx) = round_one_held(&h, &gate).await;
    assert_eq!(task_while_held(&mut a).await.round, 2);
    let engine = h.engine.clone();
    let cancel = tokio::spawn({
        let run = run.clone();
        async move { engine.cancel(run).await }
    });
    gate.open(false);
    assert_eq!(cancel.await.unwrap().unwrap(), RunState::Cancelled);
    assert_eq!(next_event(&mut rx, &run, |k| matches!(k, RunEventKind::Published { .. })).await.round, 1);
    assert_eq!(finished(&mut rx, &run).await.0, RunState::Cancelled);
    assert_eq!(on_record(&h, &run).await, (vec![(1, 1, RoundStatus::Done), (2, 1, RoundStatus::Failed)], 1));
}

#[tokio::test(start_paused = true)]
async fn a_restart_over_a_released_round_resumes_from_the_last_committed_one() {
    let gate = Gate::new();
    let store: Arc<dyn Store> = Arc::new(test_store());
    let first = gated(Arc::clone(&store), tempfile::tempdir().unwrap(), &gate).await;
    let (run, mut a, _rx) = round_one_held(&first, &gate).await;
    assert_eq!(task_while_held(&mut a).await.round, 2);
    // The first coordinator freezes there for good (its weights write never ends), as a
    // crashed one would: round 2 trains over an unrecorded round 1. A second one starts
    // on the same store, as after a restart.
    let h = gated(store, tempfile::tempdir().unwrap(), &gate).await;
    let mut a = connect(&h, "a", "eu").await;
    let mut rx = h.watch(&run).await;
    for round in 1..=3u32 {
        let t = task_of(&mut a).await;
        assert_eq!(t.round, round, "the run resumes at round 1");
        h.report(&a, &t).await.unwrap();
    }
    assert_eq!(finished(&mut rx, &run).await.0, RunState::Succeeded);
    let attempts = vec![
        (1, 1, RoundStatus::Interrupted),
        (1, 2, RoundStatus::Done),
        (2, 1, RoundStatus::Interrupted),
        (2, 2, RoundStatus::Done),
        (3, 1, RoundStatus::Done),
    ];
    assert_eq!(on_record(&h, &run).await, (attempts, 3));
}
