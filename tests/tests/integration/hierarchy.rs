//! Regional aggregators (`fedra_coordinator::hierarchy`): a global coordinator, three
//! regional aggregators and their clients, all over mutual TLS on loopback, with a
//! byte-counting relay in front of the global coordinator.

use crate::sandbox::*;
use fedra_coordinator::store::Store;
use fedra_sim::hierarchy::{CustomClient, Hierarchy, HierarchyBuilder};
use std::time::Duration;

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// What scripted client `k` (0..9) answers to an evaluation task.
fn holdout(k: u64) -> fedra_client::trainer::EvalOutcome {
    fedra_client::trainer::EvalOutcome {
        loss: 0.5 + 0.1 * k as f64,
        accuracy: 0.3 + 0.05 * k as f64,
        samples: 5 + 3 * k,
    }
}

fn scripted(id: String, trainer: ScriptedTrainer) -> CustomClient {
    CustomClient { id, info: trainer.info(), trainer: Box::new(trainer) }
}

/// Three regions of three scripted clients each over a model of `dim × classes` logistic
/// regression (eu-west's under `hold`, if any); returns the builder and every client's
/// (id, vector, samples).
fn scripted_regions(
    dim: u32,
    classes: u32,
    hold: Option<&TrainingHold>,
) -> (HierarchyBuilder, Vec<(String, Vec<f32>, u64)>) {
    let len = (dim * classes + classes) as usize;
    let mut builder = Hierarchy::builder().client_timeout(Duration::from_secs(5));
    let mut all = Vec::new();
    for (r, region) in REGIONS.iter().enumerate() {
        let mut specs = Vec::new();
        for i in 0..3 {
            let k = (r * 3 + i) as u64;
            let mut trainer = ScriptedTrainer::new(500 + k, len, 10 + 13 * k);
            trainer.holdout = Some(holdout(k));
            let id = format!("{region}-c{i}");
            all.push((id.clone(), trainer.params.clone(), trainer.samples));
            let mut client = scripted(id, trainer);
            if let Some(hold) = hold.filter(|_| *region == "eu-west") {
                client.trainer = Box::new(hold.wrap(client.trainer));
            }
            specs.push(client);
        }
        builder = builder.region_with(region, specs);
    }
    (builder, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_model_is_flat_fedavg_and_only_aggregates_reach_the_global_tier() -> anyhow::Result<()> {
    // 100 100 parameters: one aggregate is 400 KB, far above the heartbeats' bytes.
    let (dim, classes) = (1000u32, 100u32);
    let (builder, clients) = scripted_regions(dim, classes, None);
    // Our own directory: the global store is read after the tiers stopped.
    let root = tempfile::tempdir()?;
    let hierarchy = builder.data_dir(root.path()).start().await?;
    let mut control = hierarchy.global.control().await?;
    let rounds = 2u32;
    let mut p = plan(dim, classes, rounds, 9, 9);
    p.round_deadline_seconds = 120.0;
    let before = hierarchy.global_received_bytes();
    let run = control.submit(&p).await?;
    let status = wait_for_end(&hierarchy.global, &run, Duration::from_secs(180)).await?;
    assert_succeeded(&status);
    let received = hierarchy.global_received_bytes() - before;

    // The global model of the last round is FedAvg of the nine clients (scripted updates do
    // not depend on the model they start from), within 1e-6 relative.
    let dir = tempfile::tempdir()?;
    let cp = status.published_checkpoint.clone().expect("published");
    let pulled = control.pull_checkpoint(&cp, dir.path()).await?;
    let manifest = read_manifest(&pulled.weights)?;
    let got = read_weights(&pulled.weights, &manifest)?;
    let updates: Vec<_> = clients.iter().map(|(_, v, w)| (v, *w)).collect();
    let want = reference_average(&updates);
    let diff: f64 = got.iter().zip(&want).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum::<f64>().sqrt();
    assert!(diff <= 1e-6 * norm, "‖global − flat FedAvg‖ = {diff}, ‖flat‖ = {norm}");
    // Provenance: per region its aggregator, 3 contributors and their samples.
    assert_eq!(manifest.contributors.len(), 3, "{:?}", manifest.contributors);
    for c in &manifest.contributors {
        assert_eq!((c.client.as_str(), c.clients), (format!("agg-{}", c.region).as_str(), 3));
    }
    assert_eq!(manifest.total_samples, clients.iter().map(|(_, _, w)| w).sum::<u64>());
    assert_eq!(manifest.regions.values().map(|r| r.clients).sum::<u32>(), 9);

    // The global tier received about R·P·4 bytes per round, not N·P·4.
    let per_round = received as f64 / f64::from(rounds);
    println!("global tier received {per_round:.0} bytes per round (R·P·4 = {})", REGIONS.len() * want.len() * 4);
    let aggregates = (REGIONS.len() * want.len() * 4) as f64;
    assert!(
        (per_round - aggregates).abs() <= 0.05 * aggregates,
        "global tier received {per_round:.0} bytes per round; R·P·4 = {aggregates:.0}, N·P·4 = {}",
        clients.len() * want.len() * 4
    );

    // Nothing in the global store names a client: only the three aggregators.
    let global_dir = hierarchy.global.data_dir().to_path_buf();
    hierarchy.shutdown().await;
    let db = std::fs::read(global_dir.join("fedra.db"))?;
    let wal = std::fs::read(global_dir.join("fedra.db-wal")).unwrap_or_default();
    for (id, _, _) in &clients {
        let needle = id.as_bytes();
        assert!(
            !db.windows(needle.len()).any(|w| w == needle) && !wal.windows(needle.len()).any(|w| w == needle),
            "client {id} appears in the global store"
        );
    }
    let store = fedra_coordinator::store::SqliteStore::open(&global_dir.join("fedra.db")).await?;
    let participants: Vec<String> = store.list_clients().await?.into_iter().map(|c| c.id.to_string()).collect();
    assert_eq!(participants, ["agg-ap-south", "agg-eu-west", "agg-us-east"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_another_region_is_refused_by_an_aggregator() -> anyhow::Result<()> {
    let hierarchy = Hierarchy::builder().region("eu-west", vec![blob_client(0, "eu-west", 4, 3, 40)]).start().await?;
    let mut hierarchy = hierarchy;
    let eu = hierarchy.region_mut("eu-west").expect("region");
    eu.cluster.add_client(blob_client(1, "us-east", 4, 3, 40));
    let mut status = eu.cluster.clients().last().expect("client").status.clone();
    let refusal = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(e) = status.borrow().last_error.clone() {
                return e;
            }
            status.changed().await.expect("sidecar status");
        }
    })
    .await?;
    assert!(refusal.contains("connect to your own region's aggregator"), "{refusal}");
    assert!(refusal.contains("us-east") && refusal.contains("eu-west"), "{refusal}");
    hierarchy.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regional_aggregator_killed_mid_round_delivers_its_aggregate_once() -> anyhow::Result<()> {
    let (dim, classes) = (20u32, 5u32);
    let hold = TrainingHold::round(1);
    // eu-west's clients wait in training until the test has killed their aggregator.
    let (builder, all) = scripted_regions(dim, classes, Some(&hold));
    let mut hierarchy = builder.start().await?;
    let mut control = hierarchy.global.control().await?;
    let mut p = plan(dim, classes, 1, 9, 9);
    p.round_deadline_seconds = 120.0;
    let run = control.submit(&p).await?;
    // The region's clients are training: its local round is in progress.
    hold.wait_holding(3, Duration::from_secs(60)).await?;
    let eu = hierarchy.region_mut("eu-west").expect("region");
    eu.cluster.restart_coordinator().await?;
    hold.release();
    counted_once(&hierarchy, &mut control, &run, &all, "killed mid-round").await?;
    // The regional store shows the interrupted attempt and the task pushed once.
    let eu = hierarchy.region_mut("eu-west").expect("region");
    let store = open_store(&eu.cluster).await?;
    let tasks = store.list_upstream_tasks().await?;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].state, fedra_coordinator::store::UpstreamState::Pushed);
    let rounds = store.list_rounds(&tasks[0].run).await?;
    assert!(rounds.iter().any(|r| r.status == fedra_coordinator::store::RoundStatus::Interrupted), "{rounds:?}");
    hierarchy.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_runs_in_tiers() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let report = fedra_sim::quickstart::run(&fedra_sim::quickstart::QuickstartOptions {
        clients: 6,
        rounds: Some(2),
        out: out.path().join("qs"),
        seed: 7,
        device: fedra_client::trainer::burn_logreg::DeviceChoice::Cpu,
        regions: Some(3),
    })
    .await?;
    assert_eq!(report.state, Some(fedra_types::run::RunState::Succeeded));
    assert_eq!(report.rounds.len(), 2);
    for r in &report.rounds {
        // Three regional aggregators selected; at least the plan's quorum of client updates.
        assert_eq!(r.selected, 3, "{r:?}");
        assert!(r.reported >= 3 && r.test_accuracy > 0.5, "{r:?}");
        // Federated evaluation relayed by the regions: the clients' held-out splits.
        assert!(r.fed_eval_accuracy > 0.5, "{r:?}");
    }
    Ok(())
}

/// DP at the tier that sees raw updates: each region clips, noises and charges its own sum;
/// the global coordinator folds the noised regional releases and charges nothing. Compared
/// with a flat run of the same nine clients (same plan, same seed, so the same clipped
/// updates): the released models differ by exactly the extra noise, (N₁ + N₂ + N₃ − N)/m,
/// of std 2σ·/m per coordinate, and every scope's ε is the flat run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dp_noise_is_drawn_and_charged_at_the_regions_with_the_flat_runs_epsilon() -> anyhow::Result<()> {
    use fedra_coordinator::privacy::budget::RawBudgetRule;
    let budget = RawBudgetRule { model: None, region: None, epsilon: 100.0, delta: 1e-6 };
    // 2005 parameters: the noise's std is measured within ~1.6 % (one standard error), so
    // that one draw too many (std √5·σ, +12 %) or too few (√3·σ, −13 %) is told apart.
    let (dim, classes) = (400u32, 5u32);
    let mut p = plan(dim, classes, 1, 9, 9);
    p.round_deadline_seconds = 120.0;
    p.privacy = Some(central(1.0, 1.0, 9));
    let dir = tempfile::tempdir()?;

    // In tiers.
    let (builder, _) = scripted_regions(dim, classes, None);
    let hierarchy = builder.privacy_budget(budget.clone()).start().await?;
    let mut control = hierarchy.global.control().await?;
    let run = control.submit(&p).await?;
    let status = wait_for_end(&hierarchy.global, &run, Duration::from_secs(180)).await?;
    assert_succeeded(&status);
    let pulled = control
        .pull_checkpoint(status.published_checkpoint.as_ref().expect("published"), &dir.path().join("h"))
        .await?;
    let tiered_manifest = read_manifest(&pulled.weights)?;
    let tiered = read_weights(&pulled.weights, &tiered_manifest)?;
    // The global tier's ledger is untouched; each region charged its own scope once.
    let global_scopes = control.privacy_status(None, None).await?;
    assert!(global_scopes.iter().all(|s| s.rounds_charged == 0 && s.rounds_reserved == 0), "{global_scopes:?}");
    let mut regional = Vec::new();
    for r in &hierarchy.regions {
        let scopes = r.cluster.control().await?.privacy_status(None, None).await?;
        assert_eq!(scopes.len(), 1, "{}: {scopes:?}", r.name);
        let s = &scopes[0];
        assert_eq!((s.scope.clone(), s.rounds_charged, s.rounds_reserved), (format!("test-lr@{}", r.name), 1, 0));
        regional.push((s.scope.clone(), s.epsilon_spent));
    }
    regional.sort_by(|a, b| a.0.cmp(&b.0));
    // The global manifest reports the regions' ε as charged there.
    let privacy = tiered_manifest.privacy.clone().expect("a private run's manifest has a privacy block");
    assert_eq!(privacy.noised_by.as_deref(), Some("regional"));
    let reported: Vec<(String, f64)> = privacy.scopes.iter().map(|s| (s.scope.clone(), s.epsilon)).collect();
    assert_eq!(reported, regional);
    hierarchy.shutdown().await;

    // Flat: the same nine clients at one standalone coordinator.
    let mut flat = Cluster::builder().privacy_budget(budget).start().await?;
    let len = (dim * classes + classes) as usize;
    for (r, region) in REGIONS.iter().enumerate() {
        for i in 0..3 {
            let k = (r * 3 + i) as u64;
            let trainer = ScriptedTrainer::new(500 + k, len, 10 + 13 * k);
            flat.add_client_with(&format!("{region}-c{i}"), region, vec![trainer.info()], Box::new(trainer));
        }
    }
    flat.wait_connected(Duration::from_secs(60)).await?;
    let mut control = flat.control().await?;
    let run = control.submit(&p).await?;
    let status = wait_for_end(&flat, &run, Duration::from_secs(120)).await?;
    assert_succeeded(&status);
    let pulled = control
        .pull_checkpoint(status.published_checkpoint.as_ref().expect("published"), &dir.path().join("f"))
        .await?;
    let flat_manifest = read_manifest(&pulled.weights)?;
    let flat_model = read_weights(&pulled.weights, &flat_manifest)?;
    let flat_privacy = flat_manifest.privacy.clone().expect("privacy block");
    let flat_scopes: Vec<(String, f64)> = flat_privacy.scopes.iter().map(|s| (s.scope.clone(), s.epsilon)).collect();
    // ε per scope as the flat run reports it for the same noise.
    assert_eq!(flat_scopes.len(), 3);
    for ((scope, tiered_eps), (flat_scope, flat_eps)) in regional.iter().zip(&flat_scopes) {
        assert_eq!(scope, flat_scope);
        assert!((tiered_eps - flat_eps).abs() <= 1e-9 * flat_eps, "{scope}: {tiered_eps} vs flat {flat_eps}");
    }
    assert!((privacy.noise_std - flat_privacy.noise_std).abs() < 1e-12, "{privacy:?}");
    flat.shutdown().await;

    // The models differ by the noise alone: m·(tiered − flat) = N₁ + N₂ + N₃ − N, whose
    // coordinates are independent with std 2σ (four draws of std σ each).
    let m = 9.0;
    let d: Vec<f64> = tiered.iter().zip(&flat_model).map(|(a, b)| m * f64::from(a - b)).collect();
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let std = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let want = 2.0 * flat_privacy.noise_std;
    println!("m·(tiered − flat): mean {mean:.4}, std {std:.4}, expected std {want:.4} over {n} coordinates");
    assert!(mean.abs() < 5.0 * want / n.sqrt(), "mean {mean}");
    assert!((std / want - 1.0).abs() < 0.07, "std {std}, expected {want}");
    Ok(())
}

/// (clients, samples, loss, accuracy) of an evaluation.
type Means = (u32, u64, f64, f64);

/// Federated evaluation in tiers: each region evaluates the global checkpoint on its own
/// clients and reports their sample-weighted means with the count; the global run's means
/// are those of all nine clients, overall and per region, as a flat run's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_evaluate_the_global_checkpoint_and_the_means_are_flat() -> anyhow::Result<()> {
    let (builder, _) = scripted_regions(4, 2, None);
    let hierarchy = builder.start().await?;
    let mut control = hierarchy.global.control().await?;
    let mut p = plan(4, 2, 1, 9, 9);
    p.round_deadline_seconds = 120.0;
    p.evaluation.every_rounds = 1;
    let run = control.submit(&p).await?;
    let status = wait_for_end(&hierarchy.global, &run, Duration::from_secs(120)).await?;
    assert_succeeded(&status);
    let mean = |ks: &[u64]| {
        let samples: u64 = ks.iter().map(|&k| holdout(k).samples).sum();
        let w = |f: fn(&fedra_client::trainer::EvalOutcome) -> f64| {
            ks.iter().map(|&k| holdout(k).samples as f64 * f(&holdout(k))).sum::<f64>() / samples as f64
        };
        (ks.len() as u32, samples, w(|o| o.loss), w(|o| o.accuracy))
    };
    let by_region: Vec<(Option<String>, Means)> = std::iter::once((None, mean(&(0..9).collect::<Vec<_>>())))
        .chain(REGIONS.iter().enumerate().map(|(r, name)| {
            let ks: Vec<u64> = (0..3).map(|i| (r * 3 + i) as u64).collect();
            (Some(name.to_string()), mean(&ks))
        }))
        .collect();
    assert_eq!(status.evaluations.len(), 4, "{:?}", status.evaluations);
    for (region, (clients, samples, loss, accuracy)) in by_region {
        let e = status.evaluations.iter().find(|e| e.region == region).expect("an evaluation per region and overall");
        assert_eq!((e.round, e.clients, e.samples), (1, clients, samples), "{e:?}");
        assert!((e.loss - loss).abs() < 1e-9 && (e.accuracy - accuracy).abs() < 1e-9, "{e:?} vs {loss} {accuracy}");
    }
    hierarchy.shutdown().await;
    Ok(())
}

/// The run ends succeeded and its global checkpoint counts every region's clients once:
/// nine clients, every sample once, and the weights are the flat FedAvg of all updates.
async fn counted_once(
    hierarchy: &Hierarchy,
    control: &mut fedra_cli::control::ControlClient,
    run: &str,
    all: &[(String, Vec<f32>, u64)],
    case: &str,
) -> anyhow::Result<()> {
    let status = wait_for_end(&hierarchy.global, run, Duration::from_secs(120)).await?;
    assert_succeeded(&status);
    let dir = tempfile::tempdir()?;
    let pulled = control.pull_checkpoint(status.published_checkpoint.as_ref().expect("published"), dir.path()).await?;
    let manifest = read_manifest(&pulled.weights)?;
    assert_eq!(manifest.regions.values().map(|r| r.clients).sum::<u32>(), 9, "{case}: {:?}", manifest.regions);
    assert_eq!(manifest.total_samples, all.iter().map(|(_, _, w)| w).sum::<u64>(), "{case}");
    let got = read_weights(&pulled.weights, &manifest)?;
    let want = reference_average(&all.iter().map(|(_, v, w)| (v, *w)).collect::<Vec<_>>());
    let diff: f64 = got.iter().zip(&want).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum::<f64>().sqrt();
    assert!(diff <= 1e-6 * norm, "{case}: ‖global − flat FedAvg‖ = {diff}");
    Ok(())
}

/// Crash injection in the regional tier: eu-west's aggregator runs as a real
/// `fedra-coordinator` process armed at `point`; it kills itself there (SIGKILL) during
/// its region's cohort round, is restarted on the same store and port, and the global run
/// still ends with every region's clients counted exactly once (the global model is the
/// flat FedAvg of all nine updates).
async fn regional_crash_at(point: &str) -> anyhow::Result<()> {
    use fedra_coordinator::crash::ENV;
    use std::os::unix::process::ExitStatusExt;
    let (dim, classes) = (20u32, 5u32);
    let (builder, all) = scripted_regions(dim, classes, None);
    let spec = fedra_sim::cluster_process::ProcessSpec {
        binary: crate::cli::coordinator_binary(),
        env: vec![(ENV.to_string(), point.to_string())],
    };
    // Long enough for the restarted aggregator (which first waits out its predecessor's
    // lease) to be back before the global coordinator gives up on it.
    let builder = builder.client_timeout(Duration::from_secs(20)).region_process("eu-west", spec);
    let mut hierarchy = builder.start().await?;
    let mut control = hierarchy.global.control().await?;
    let mut p = plan(dim, classes, 1, 9, 9);
    p.round_deadline_seconds = 120.0;
    let run = control.submit(&p).await?;
    let eu = hierarchy.region_mut("eu-west").expect("region");
    let status = eu.cluster.wait_coordinator_exit(Duration::from_secs(120)).await?;
    assert_eq!(status.signal(), Some(9), "{point}: the aggregator ended with {status}");
    let log = fedra_sim::cluster_process::log_text(eu.cluster.data_dir(), false);
    assert!(log.contains(&format!("fedra crash point {point} reached")), "{point}: not in the log:\n{log}");
    eu.cluster.set_coordinator_env(ENV, None)?;
    eu.cluster.restart_coordinator().await?;
    counted_once(&hierarchy, &mut control, &run, &all, point).await?;
    hierarchy.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regional_aggregator_killed_after_selecting_its_cohort_delivers_once() -> anyhow::Result<()> {
    regional_crash_at("selected").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regional_aggregator_killed_after_a_fold_delivers_once() -> anyhow::Result<()> {
    regional_crash_at("folded").await
}
