//! `fedra-sim bench infer`: the inference node's throughput, latency and CPU cost.
//!
//! For each model (logistic regression and an MLP over 64 features and 10 classes) a
//! coordinator and two sidecars train one round; the checkpoint is promoted to serving in
//! region `eu`; an inference node (`fedra_client::infer`, the code `fedra-infer` runs)
//! verifies and loads it. Then one gRPC client on loopback sends requests back to back at
//! batch 1 and batch 64. Predictions per second and p50/p99 are measured at the client
//! (the whole gRPC round trip); CPU seconds per 1,000 predictions are the node's own
//! per-request thread CPU time (the prediction, not the gRPC stack).

use crate::cluster::{ClientSpec, Cluster};
use anyhow::{Context, Result};
use fedra_cli::plan_file::{ModelSection, PlanFile};
use fedra_client::data::synthetic::{BlobSpec, gaussian_blobs};
use fedra_client::infer::node::NodeSettings;
use fedra_client::infer::stats::DriftSettings;
use fedra_proto::pb;
use fedra_proto::pb::inference_service_client::InferenceServiceClient;
use fedra_types::model::Architecture;
use fedra_types::plan::{EvaluationPlan, LocalTraining, Optimizer, PromoteTo, PromotionPlan, Strategy};
use std::time::{Duration, Instant};

const DIM: usize = 64;
const CLASSES: usize = 10;

#[derive(clap::Args, Debug)]
pub struct InferArgs {
    /// Requests per measured point (after as many warm-up requests / 10).
    #[arg(long, default_value_t = 3000)]
    pub requests: usize,
}

/// One measured point.
#[derive(Debug, Clone)]
pub struct Point {
    pub model: &'static str,
    pub batch: usize,
    pub predictions_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_seconds_per_1000: f64,
}

fn plan(name: &str, architecture: Architecture) -> PlanFile {
    PlanFile {
        version: 1,
        model: ModelSection { name: name.into(), architecture },
        initial_checkpoint: None,
        strategy: Strategy::FedAvg,
        rounds: 1,
        clients_per_round: 2,
        min_clients: 2,
        over_selection: 0.0,
        round_deadline_seconds: 120.0,
        local: LocalTraining {
            epochs: 1,
            batch_size: 32,
            learning_rate: 0.05,
            proximal_mu: 0.0,
            optimizer: Optimizer::Sgd,
            momentum: 0.0,
        },
        regions: Vec::new(),
        seed: 7,
        evaluation: EvaluationPlan::default(),
        privacy: None,
        priority: 0,
        promotion: PromotionPlan { promote_to: PromoteTo::Serving, min_samples: 0, ..PromotionPlan::default() },
        schedule: Default::default(),
        aggregator: Default::default(),
        compression: Default::default(),
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Runs every point.
///
/// # Errors
/// A run, promotion or request that fails.
pub async fn run(args: &InferArgs) -> Result<Vec<Point>> {
    let specs: Vec<ClientSpec> = (0..2)
        .map(|i| {
            let mut spec = BlobSpec::new(DIM, CLASSES, 500, 40 + i);
            spec.task_seed = 3;
            let id = format!("eu-{i}");
            ClientSpec { dataset: gaussian_blobs(id.clone(), &spec), id, region: "eu".into(), holdout: None }
        })
        .collect();
    let inputs: Vec<f32> = specs.iter().flat_map(|s| s.dataset.features.clone()).collect();
    let cluster = Cluster::builder().clients(specs).start().await?;
    cluster.wait_connected(Duration::from_secs(60)).await?;
    let mut control = cluster.control().await?;
    let models: [(&'static str, Architecture); 2] = [
        ("bench-lr", Architecture::LogisticRegression { input_dim: DIM, classes: CLASSES }),
        ("bench-mlp", Architecture::Mlp { input_dim: DIM, hidden: vec![256, 128], classes: CLASSES }),
    ];
    let mut points = Vec::new();
    for (name, architecture) in models {
        let run = control.submit(&plan(name, architecture)).await?;
        let checkpoint = loop {
            let status = control.get(&run).await?;
            if status.state.is_terminal() {
                break status.published_checkpoint.context("the training run published nothing")?;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let settings = NodeSettings {
            region: "eu".into(),
            model: name.into(),
            name: "bench-node".into(),
            price_per_cpu_hour: 0.0,
            drift: DriftSettings::default(),
            report_interval: Duration::from_secs(3600),
        };
        let node = cluster.inference_node(settings).await?;
        let mut loaded = node.state.loaded();
        tokio::time::timeout(Duration::from_secs(60), loaded.wait_for(|ids| ids.0.as_deref() == Some(&checkpoint)))
            .await
            .context("the node did not load the checkpoint")??;
        let mut client = InferenceServiceClient::connect(format!("http://{}", node.addr)).await?;
        for batch in [1usize, 64] {
            let request = |i: usize| {
                let start = (i * batch * DIM) % (inputs.len() - batch * DIM);
                pb::PredictRequest {
                    features: DIM as u32,
                    inputs: inputs[start..start + batch * DIM].to_vec(),
                    routing_key: String::new(),
                }
            };
            for i in 0..args.requests / 10 {
                client.predict(request(i)).await?;
            }
            let arm = |r: &fedra_types::serving::ServingReport| {
                r.arm(&checkpoint).map(|a| (a.cpu_seconds, a.rows)).unwrap_or_default()
            };
            let (cpu0, rows0) = arm(&node.state.report());
            let mut latencies = Vec::with_capacity(args.requests);
            let started = Instant::now();
            for i in 0..args.requests {
                let t = Instant::now();
                client.predict(request(i)).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let wall = started.elapsed().as_secs_f64();
            let (cpu1, rows1) = arm(&node.state.report());
            latencies.sort_by(f64::total_cmp);
            points.push(Point {
                model: name,
                batch,
                predictions_per_second: (args.requests * batch) as f64 / wall,
                p50_ms: quantile(&latencies, 0.5),
                p99_ms: quantile(&latencies, 0.99),
                cpu_seconds_per_1000: (cpu1 - cpu0) * 1000.0 / (rows1 - rows0).max(1) as f64,
            });
        }
        node.shutdown().await;
    }
    cluster.shutdown().await;
    Ok(points)
}

/// The points as a Markdown table.
pub fn table(points: &[Point]) -> String {
    let mut out = String::from(
        "| model | batch | predictions/s | p50 (ms) | p99 (ms) | node CPU s / 1,000 predictions |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.5} |\n",
            p.model, p.batch, p.predictions_per_second, p.p50_ms, p.p99_ms, p.cpu_seconds_per_1000
        ));
    }
    out
}
