//! The quickstart: six client sidecars in three regions train a logistic regression with
//! a coordinator, all in this process over loopback gRPC, on generated data. Prints a
//! per-round table and leaves the coordinator's store and checkpoints in the output dir.

use crate::cluster::{ClientSpec, Cluster};
use crate::hierarchy::Hierarchy;
use anyhow::{Context, Result, bail};
use fedra_cli::commands::describe;
use fedra_cli::plan_file::PlanFile;
use fedra_cli::status::WatchEvent;
use fedra_client::data::Dataset;
use fedra_client::data::synthetic::{BlobSpec, gaussian_blobs};
use fedra_client::trainer::burn_logreg::{BurnTrainer, DeviceChoice};
use fedra_client::trainer::{LocalHyperparams, Optimizer, TrainSpec, Trainer};
use fedra_types::model::Architecture;
use fedra_types::run::RunState;
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;

/// The plan the quickstart submits (also usable with `fedra run submit`).
pub const QUICKSTART_PLAN: &str = include_str!("../plans/quickstart.toml");
/// The permissive example policy set (regions eu, us, apac; everything allowed, with a
/// privacy budget), under which the quickstart's coordinator runs like a governed one.
pub const QUICKSTART_POLICY: &str = include_str!("../../policies/permissive/permissive.toml");
const REGIONS: [&str; 3] = ["eu", "us", "apac"];
const MARKER: &str = ".fedra-sim-output";

#[derive(Debug, Clone)]
pub struct QuickstartOptions {
    pub clients: usize,
    pub rounds: Option<u32>,
    pub out: PathBuf,
    pub seed: u64,
    /// Where the clients train.
    pub device: DeviceChoice,
    /// Hierarchical mode: a global coordinator and this many regional aggregators (1..=3),
    /// each with its region's clients; only regional aggregates reach the global tier.
    pub regions: Option<usize>,
}

/// One row of the per-round table.
#[derive(Debug, Clone, Default)]
pub struct RoundRow {
    pub round: u32,
    pub selected: usize,
    pub reported: u32,
    pub samples: u64,
    pub loss_before: f64,
    pub loss_after: f64,
    pub train_accuracy: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    /// Sample-weighted mean over the clients' own held-out splits (federated evaluation).
    pub fed_eval_loss: f64,
    pub fed_eval_accuracy: f64,
    pub checkpoint: String,
}

#[derive(Debug, Clone)]
pub struct QuickstartReport {
    pub run_id: String,
    /// How the run ended; `None` if the event stream closed before it did.
    pub state: Option<RunState>,
    pub rounds: Vec<RoundRow>,
    pub out: PathBuf,
}

/// Makes `out` usable: creates it, or clears it if a previous sim left it; refuses to
/// touch a non-empty directory the sim did not create.
fn prepare_out(out: &Path) -> Result<()> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        if !out.join(MARKER).exists() {
            bail!("{} exists and was not written by fedra-sim; choose another --out", out.display());
        }
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join(MARKER), "written by fedra-sim; safe to delete\n")?;
    Ok(())
}

fn blobs(dim: usize, classes: usize, samples: usize, seed: u64, task_seed: u64, shift: f32) -> BlobSpec {
    let mut spec = BlobSpec::new(dim, classes, samples, seed);
    spec.task_seed = task_seed;
    spec.client_shift = shift;
    spec
}

/// Evaluates a pulled checkpoint on the central test set.
fn evaluate(weights: &Path, test: &Dataset, architecture: &Architecture) -> Result<(f64, f64)> {
    let layout = architecture.layout();
    let params = fedra_coordinator::checkpoint::decode_safetensors(&std::fs::read(weights)?, &layout, weights)?;
    let spec = TrainSpec {
        architecture: architecture.clone(),
        layout,
        hyper: LocalHyperparams {
            epochs: 1,
            batch_size: 64,
            learning_rate: 0.1,
            optimizer: Optimizer::Sgd { momentum: 0.0 },
            proximal_mu: 0.0,
        },
        seed: 0,
    };
    Ok(BurnTrainer::new(test.clone()).evaluate(&spec, &params)?)
}

/// Runs the quickstart and returns its table.
///
/// # Errors
/// Any failure to start the federation, submit, follow or evaluate the run.
pub async fn run(opts: &QuickstartOptions) -> Result<QuickstartReport> {
    prepare_out(&opts.out)?;
    let mut plan = PlanFile::parse(QUICKSTART_PLAN, "quickstart.toml")?;
    if let Some(r) = opts.rounds {
        plan.rounds = r;
    }
    plan.seed = opts.seed;
    plan.clients_per_round = plan.clients_per_round.min(opts.clients as u32);
    plan.min_clients = plan.min_clients.min(plan.clients_per_round);
    let architecture = plan.model.architecture.clone();
    let (dim, k) = (architecture.input_dim(), architecture.classes());
    let task_seed = opts.seed.wrapping_mul(31).wrapping_add(1);

    let specs = (0..opts.clients).map(|i| {
        let region = REGIONS[i % REGIONS.len()];
        let id = format!("{region}-{}", i / REGIONS.len() + 1);
        let samples = 200 + 100 * (i % 4);
        let all = gaussian_blobs(id.clone(), &blobs(dim, k, samples, opts.seed * 1000 + i as u64, task_seed, 0.5));
        // A fifth of each client's data is held out for federated evaluation.
        let (dataset, holdout) = all.split_holdout(0.2, i as u64).expect("valid fraction");
        ClientSpec { id, region: region.into(), dataset, holdout }
    });
    let test = gaussian_blobs("test", &blobs(dim, k, 2000, opts.seed * 1000 + 999, task_seed, 0.0));

    let policies = opts.out.join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(policies.join("permissive.toml"), QUICKSTART_POLICY)?;
    let (flat, tiers) = match opts.regions {
        None => {
            println!("fedra quickstart: coordinator + {} client sidecars over loopback gRPC", opts.clients);
            let cluster = Cluster::builder()
                .data_dir(opts.out.join("coordinator"))
                .policy(&policies, REGIONS[0])
                .clients(specs)
                .device(opts.device)
                .start()
                .await?;
            (Some(cluster), None)
        }
        Some(n) => {
            let n = n.clamp(1, REGIONS.len());
            println!(
                "fedra quickstart, in tiers: a global coordinator, {n} regional aggregators and {} client sidecars",
                opts.clients
            );
            let mut by_region: Vec<(&str, Vec<ClientSpec>)> = REGIONS[..n].iter().map(|r| (*r, Vec::new())).collect();
            for (i, mut spec) in specs.enumerate() {
                // Clients are dealt over the regions that run an aggregator.
                let (region, list) = &mut by_region[i % n];
                spec.region = region.to_string();
                spec.id = format!("{region}-{}", i / n + 1);
                list.push(spec);
            }
            let mut builder = Hierarchy::builder().data_dir(opts.out.join("tiers")).policy(&policies, REGIONS[0]);
            for (region, list) in by_region {
                builder = builder.region(region, list);
            }
            plan.regions = REGIONS[..n].iter().map(|r| r.to_string()).collect();
            let tiers = builder.start().await?;
            for r in &tiers.regions {
                println!(
                    "  regional aggregator {} at {} with {} clients",
                    r.name,
                    r.cluster.endpoint(),
                    r.cluster.clients().len()
                );
            }
            (None, Some(tiers))
        }
    };
    let cluster = flat.as_ref().or(tiers.as_ref().map(|t| &t.global)).expect("one federation");
    let global_bytes_before = tiers.as_ref().map_or(0, Hierarchy::global_received_bytes);
    println!("coordinator at {}, state in {}", cluster.endpoint(), cluster.data_dir().display());
    println!("policy set {} (permissive example) in force, coordinator located in {}", policies.display(), REGIONS[0]);
    let mut control = cluster.control().await?;
    let run_id = control.submit(&plan).await?;
    println!("submitted run {run_id}: {} rounds, {} clients per round\n", plan.rounds, plan.clients_per_round);

    let mut rows: Vec<RoundRow> = Vec::new();
    let mut state = None;
    let mut events = control.watch(&run_id).await?;
    while let Some(e) = events.next().await {
        let e = e?;
        tracing::debug!("{}", describe(&e));
        match e {
            WatchEvent::Selected { round, clients, .. } => {
                rows.push(RoundRow { round, selected: clients.len(), ..RoundRow::default() })
            }
            WatchEvent::Aggregated { round, clients, samples, metrics, .. } => {
                if let Some(r) = rows.iter_mut().rev().find(|r| r.round == round) {
                    r.reported = clients;
                    r.samples = samples;
                    r.loss_before = metrics.loss_before;
                    r.loss_after = metrics.loss_after;
                    r.train_accuracy = metrics.accuracy_after;
                }
            }
            WatchEvent::Published { round, checkpoint, .. } => {
                if let Some(r) = rows.iter_mut().rev().find(|r| r.round == round) {
                    r.checkpoint = checkpoint;
                }
            }
            WatchEvent::RoundFailed { round, reason } => println!("round {round} failed: {reason}"),
            WatchEvent::Blocked { round, reason } => println!("blocked by policy after round {round}: {reason}"),
            WatchEvent::RunFinished { state: s, reason } => {
                state = Some(s);
                if let Some(r) = reason {
                    println!("run {s}: {r}");
                }
                break;
            }
            WatchEvent::Evaluated { round, results } => {
                if let (Some(r), Some(all)) = (rows.iter_mut().rev().find(|r| r.round == round), results.first()) {
                    r.fed_eval_loss = all.loss;
                    r.fed_eval_accuracy = all.accuracy;
                }
            }
            WatchEvent::UpdateReceived { .. } => {}
        }
    }
    drop(events);

    // Pull every round's checkpoint over gRPC, as an inference node would, and test it.
    for r in rows.iter_mut().filter(|r| !r.checkpoint.is_empty()) {
        let pulled = control.pull_checkpoint(&r.checkpoint, &opts.out.join("pulled").join(&r.checkpoint)).await?;
        (r.test_loss, r.test_accuracy) = evaluate(&pulled.weights, &test, &architecture)?;
    }
    println!(
        "{:>5} {:>8} {:>8} {:>7}  {:>9} {:>9} {:>9}  {:>9} {:>9}  {:>9} {:>8}  checkpoint",
        "round",
        "selected",
        "reported",
        "samples",
        "loss_in",
        "loss_out",
        "train_acc",
        "fed_loss",
        "fed_acc",
        "test_loss",
        "test_acc"
    );
    for r in &rows {
        println!(
            "{:>5} {:>8} {:>8} {:>7}  {:>9.4} {:>9.4} {:>9.4}  {:>9.4} {:>9.4}  {:>9.4} {:>8.4}  {}",
            r.round,
            r.selected,
            r.reported,
            r.samples,
            r.loss_before,
            r.loss_after,
            r.train_accuracy,
            r.fed_eval_loss,
            r.fed_eval_accuracy,
            r.test_loss,
            r.test_accuracy,
            r.checkpoint
        );
    }
    println!(
        "\nrun {run_id} {}; checkpoints under {}",
        state.map_or("unknown", RunState::as_str),
        cluster.artifact_dir().display()
    );
    if let Some(t) = tiers {
        let bytes = t.global_received_bytes() - global_bytes_before;
        println!(
            "the global coordinator received {bytes} bytes from {} regional aggregators; no client update reached it",
            t.regions.len()
        );
        t.shutdown().await;
    }
    if let Some(c) = flat {
        c.shutdown().await;
    }
    Ok(QuickstartReport { run_id, state, rounds: rows, out: opts.out.clone() })
}
