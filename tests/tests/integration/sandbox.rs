//! Shared fixtures: federations, plans, a scripted trainer whose updates are known in
//! advance (so aggregation results can be checked exactly), and store/checkpoint readers.

use anyhow::{Context, Result};
use fedra_cli::plan_file::{ModelSection, PlanFile};
use fedra_cli::status::RunStatus;
use fedra_client::data::DatasetInfo;
use fedra_client::data::synthetic::{BlobSpec, gaussian_blobs};
use fedra_client::trainer::EvalOutcome;
use fedra_client::trainer::burn_logreg::BurnTrainer;
use fedra_client::trainer::{TrainError, TrainOutcome, TrainSpec, Trainer};
use fedra_coordinator::checkpoint::Manifest;
use fedra_coordinator::store::SqliteStore;
use fedra_types::metrics::TrainingMetrics;
use fedra_types::model::Architecture;
use fedra_types::plan::{EvaluationPlan, LocalTraining, Optimizer, Strategy};
use fedra_types::run::RunState;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Duration;
use tokio_stream::StreamExt;

pub use fedra_sim::cluster::{ClientSpec, Cluster, ClusterBuilder};
pub use fedra_sim::faults::TrainingHold;

/// A plan for logistic regression over `input_dim` features and `classes` classes.
pub fn plan(input_dim: u32, classes: u32, rounds: u32, clients_per_round: u32, min_clients: u32) -> PlanFile {
    PlanFile {
        version: 1,
        model: ModelSection {
            name: "test-lr".into(),
            architecture: Architecture::LogisticRegression { input_dim: input_dim as usize, classes: classes as usize },
        },
        initial_checkpoint: None,
        strategy: Strategy::FedAvg,
        aggregator: Default::default(),
        rounds,
        clients_per_round,
        min_clients,
        over_selection: 0.0,
        round_deadline_seconds: 60.0,
        local: LocalTraining {
            epochs: 2,
            batch_size: 16,
            learning_rate: 0.05,
            proximal_mu: 0.0,
            optimizer: Optimizer::Sgd,
            momentum: 0.0,
        },
        regions: Vec::new(),
        seed: 11,
        evaluation: EvaluationPlan::default(),
        privacy: None,
        priority: 0,
        promotion: Default::default(),
        schedule: Default::default(),
        compression: Default::default(),
    }
}

/// Client `i` of a learnable task: Gaussian blobs sharing class centres, mild shift.
/// Central DP with fixed clipping and fixed selection: what a plan file's `[privacy]` and
/// the coordinator's validated plan both hold (one type, `fedra_types::plan::PrivacyPlan`).
pub fn central(z: f64, clip: f64, expected: u32) -> fedra_types::plan::PrivacyPlan {
    use fedra_types::plan::{Clipping, DpMechanism, OverBound, Sampling};
    fedra_types::plan::PrivacyPlan {
        mechanism: DpMechanism::Central,
        noise_multiplier: z,
        clipping: Clipping::Fixed { norm: clip },
        over_bound: OverBound::Reject,
        sampling: Sampling::Fixed,
        expected_clients: expected,
    }
}

pub fn blob_client(i: usize, region: &str, dim: usize, classes: usize, samples: usize) -> ClientSpec {
    let mut spec = BlobSpec::new(dim, classes, samples, 100 + i as u64);
    spec.task_seed = 5;
    spec.client_shift = 0.3;
    let id = format!("{region}-{i}");
    ClientSpec { dataset: gaussian_blobs(id.clone(), &spec), id, region: region.into(), holdout: None }
}

/// A trainer that ignores the global model and returns a fixed, seeded parameter vector
/// with a fixed sample count: the coordinator's aggregate is then known in advance.
pub struct ScriptedTrainer {
    pub params: Vec<f32>,
    pub samples: u64,
    /// What `evaluate_holdout` answers; `None` = this client has no held-out split.
    pub holdout: Option<EvalOutcome>,
}

impl ScriptedTrainer {
    pub fn new(seed: u64, len: usize, samples: u64) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Self { params: (0..len).map(|_| rng.random_range(-4.0f32..4.0)).collect(), samples, holdout: None }
    }

    pub fn info(&self) -> DatasetInfo {
        DatasetInfo { name: "scripted".into(), samples: self.samples, features: 0, classes: 0 }
    }
}

impl Trainer for ScriptedTrainer {
    fn train(&mut self, spec: &TrainSpec, global: &[f32]) -> Result<TrainOutcome, TrainError> {
        if global.len() != self.params.len() || spec.layout.total() != self.params.len() {
            return Err(TrainError::ParamCount { got: global.len(), expected: self.params.len() });
        }
        Ok(TrainOutcome {
            params: self.params.clone(),
            samples: self.samples,
            metrics: TrainingMetrics { loss_before: 1.0, loss_after: 0.5, accuracy_after: 0.5, train_seconds: 0.0 },
        })
    }

    fn evaluate(&self, _spec: &TrainSpec, _params: &[f32]) -> Result<(f64, f64), TrainError> {
        Ok((0.0, 0.0))
    }

    fn evaluate_holdout(&self, _spec: &TrainSpec, _params: &[f32]) -> Result<EvalOutcome, TrainError> {
        self.holdout.ok_or(TrainError::NoHoldout)
    }

    fn samples(&self) -> u64 {
        self.samples
    }
}

/// Starts a cluster with `n` scripted clients over a model of `len` parameters; client `i`
/// reports `samples(i)` samples. Returns the cluster and the trainers' vectors and weights.
pub async fn scripted_cluster(
    n: usize,
    len: usize,
    samples: impl Fn(usize) -> u64,
    chunk_bytes: usize,
) -> Result<(Cluster, Vec<(Vec<f32>, u64)>)> {
    let mut cluster = Cluster::builder().chunk_bytes(chunk_bytes).start().await?;
    let mut scripts = Vec::new();
    for i in 0..n {
        let trainer = ScriptedTrainer::new(1000 + i as u64, len, samples(i));
        scripts.push((trainer.params.clone(), trainer.samples));
        let info = trainer.info();
        cluster.add_client_with(&format!("c{i:03}"), ["eu", "us"][i % 2], vec![info], Box::new(trainer));
    }
    cluster.wait_connected(Duration::from_secs(60)).await?;
    Ok((cluster, scripts))
}

/// Starts `builder`'s coordinator and one burn client per spec, each trainer under `hold`:
/// their training of the held round waits until the test releases it.
pub async fn held_cluster(builder: ClusterBuilder, specs: Vec<ClientSpec>, hold: &TrainingHold) -> Result<Cluster> {
    let mut cluster = builder.start().await?;
    for spec in specs {
        let info = spec.dataset.info();
        let trainer = BurnTrainer::with_holdout(spec.dataset, spec.holdout);
        cluster.add_client_with(&spec.id, &spec.region, vec![info], Box::new(hold.wrap(Box::new(trainer))));
    }
    cluster.wait_connected(Duration::from_secs(60)).await?;
    Ok(cluster)
}

/// Follows the run's events (WatchRun) until its final one, then returns its status. The
/// coordinator must be up (callers await `restart_coordinator` before calling this). Fails
/// after `timeout`, or when the stream breaks before the run ended.
pub async fn wait_for_end(cluster: &Cluster, run: &str, timeout: Duration) -> Result<RunStatus> {
    tokio::time::timeout(timeout, async {
        let mut c = cluster.control().await?;
        let mut events = c.watch(run).await?;
        while let Some(e) = events.next().await {
            e?;
        }
        let status = c.get(run).await?;
        anyhow::ensure!(status.state.is_terminal(), "the watch of run {run} ended while it is {:?}", status.state);
        Ok(status)
    })
    .await
    .with_context(|| format!("run {run} did not end within {timeout:?}"))?
}

/// Waits for the run's `round` to be published (the replay counts: it may be already).
/// A round's checkpoint is written while the next round starts, so "the next round is
/// training" does not prove it; this event does.
pub async fn wait_published(cluster: &Cluster, run: &str, round: u32, timeout: Duration) -> Result<()> {
    tokio::time::timeout(timeout, async {
        let mut c = cluster.control().await?;
        let mut events = c.watch(run).await?;
        while let Some(e) = events.next().await {
            if matches!(e?, fedra_cli::status::WatchEvent::Published { round: r, .. } if r == round) {
                return Ok(());
            }
        }
        anyhow::bail!("the watch of run {run} ended before round {round} was published")
    })
    .await
    .with_context(|| format!("round {round} of run {run} was not published within {timeout:?}"))?
}

/// Opens the cluster's SQLite store (a second connection, as an operator's tool would).
pub async fn open_store(cluster: &Cluster) -> Result<SqliteStore> {
    SqliteStore::open(&cluster.data_dir().join("fedra.db")).await.context("opening the store")
}

/// Reads and parses a manifest.json next to `weights`.
pub fn read_manifest(weights: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(weights.with_file_name("manifest.json"))?;
    Ok(serde_json::from_str(&text)?)
}

/// Decodes a safetensors file into the flat vector of `manifest.layout`.
pub fn read_weights(weights: &Path, manifest: &Manifest) -> Result<Vec<f32>> {
    let bytes = std::fs::read(weights)?;
    Ok(fedra_coordinator::checkpoint::decode_safetensors(&bytes, &manifest.layout, weights)?)
}

/// Sample-weighted average computed the plain way, in f64.
pub fn reference_average(updates: &[(&Vec<f32>, u64)]) -> Vec<f32> {
    let total: f64 = updates.iter().map(|(_, w)| *w as f64).sum();
    (0..updates[0].0.len())
        .map(|i| (updates.iter().map(|(u, w)| *w as f64 * f64::from(u[i])).sum::<f64>() / total) as f32)
        .collect()
}

/// Asserts two f32 vectors agree to within one unit in the last place, element-wise.
pub fn assert_ulp_equal(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let ulp = f32::EPSILON * b.abs().max(f32::MIN_POSITIVE);
        assert!((a - b).abs() <= ulp, "value {i}: got {a}, reference {b}");
    }
}

pub fn assert_succeeded(status: &RunStatus) {
    assert_eq!(status.state, RunState::Succeeded, "run failed: {:?}", status.failure);
}

/// A one-file policy set: regions eu (EU) and us (US), every origin's updates aggregated and
/// published anywhere, a budget of ε `epsilon` at δ 1e-6 per scope with non-private runs
/// allowed (18 lines), then `rest` (more rules and `[roles]`) as written.
pub fn open_policy(epsilon: u32, rest: &str) -> String {
    format!(
        r#"version = 1
[[region]]
name = "eu"
jurisdiction = "EU"
[[region]]
name = "us"
jurisdiction = "US"
[[residency]]
origin = "*"
aggregate_at = ["*"]
export_min_clients = 1
publish_to = ["*"]
[[privacy]]
model = "*"
region = "*"
epsilon = {epsilon}
delta = 1e-6
allow_non_private = true
{rest}"#
    )
}
