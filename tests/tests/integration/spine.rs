//! The whole path of a federated run: submit through the CLI's client code, 5 real burn
//! clients over gRPC, 3 rounds, checkpoints on disk and in the store.

use crate::sandbox::*;
use fedra_cli::status::WatchEvent;
use fedra_client::trainer::burn_logreg::{BurnTrainer, logreg_layout};
use fedra_client::trainer::{LocalHyperparams, TrainSpec, Trainer};
use fedra_coordinator::ids::RunId;
use fedra_coordinator::store::{CheckpointFilter, ParticipationStatus, RoundStatus, Store};
use fedra_types::model::{Architecture, ModelSpec};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio_stream::StreamExt;

const DIM: usize = 10;
const CLASSES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_round_run_learns_and_publishes_consistent_checkpoints() -> anyhow::Result<()> {
    let regions = ["eu", "eu", "us", "us", "apac"];
    let specs: Vec<_> =
        regions.iter().enumerate().map(|(i, r)| blob_client(i, r, DIM, CLASSES, 120 + 40 * i)).collect();
    let datasets: Vec<_> = specs.iter().map(|s| s.dataset.clone()).collect();
    let cluster = Cluster::builder().clients(specs).start().await?;

    let mut control = cluster.control().await?;
    let plan = plan(DIM as u32, CLASSES as u32, 3, 5, 5);
    let run = control.submit(&plan).await?;

    // Follow the run the way `fedra run watch` does.
    let mut events = control.watch(&run).await?;
    let mut seen = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), events.next()).await? {
        let e = e?;
        let done = matches!(e, WatchEvent::RunFinished { .. });
        seen.push(e);
        if done {
            break;
        }
    }
    let published: Vec<_> = seen
        .iter()
        .filter_map(|e| if let WatchEvent::Published { checkpoint, .. } = e { Some(checkpoint.clone()) } else { None })
        .collect();
    assert_eq!(published.len(), 3, "events: {seen:#?}");
    assert_eq!(seen.iter().filter(|e| matches!(e, WatchEvent::UpdateReceived { .. })).count(), 15);

    let status = control.get(&run).await?;
    assert_succeeded(&status);
    assert_eq!(status.completed_rounds, 3);
    assert_eq!(status.published_checkpoint.as_deref(), Some(published[2].as_str()));
    assert!(status.rounds.iter().all(|r| r.phase == "done" && r.reported == 5));

    // Loss on every client's data went down: initial model vs the published one.
    let layout = logreg_layout(DIM, CLASSES);
    let spec = TrainSpec {
        architecture: Architecture::LogisticRegression { input_dim: DIM, classes: CLASSES },
        layout,
        hyper: LocalHyperparams {
            epochs: 1,
            batch_size: 16,
            learning_rate: 0.05,
            optimizer: fedra_client::trainer::Optimizer::Sgd { momentum: 0.0 },
            proximal_mu: 0.0,
        },
        seed: 0,
    };
    let status_plan_seed = plan.seed;
    let initial = ModelSpec::new("test-lr", Architecture::LogisticRegression { input_dim: DIM, classes: CLASSES })?
        .initialise(status_plan_seed);
    let dir = tempfile::tempdir()?;
    let pulled = control.pull_checkpoint(&published[2], dir.path()).await?;
    let manifest = read_manifest(&pulled.weights)?;
    let final_params = read_weights(&pulled.weights, &manifest)?;
    for d in &datasets {
        let t = BurnTrainer::new(d.clone());
        let (before, _) = t.evaluate(&spec, &initial)?;
        let (after, acc) = t.evaluate(&spec, &final_params)?;
        assert!(after < before * 0.8, "client {}: loss {before} -> {after}", d.name);
        assert!(acc > 0.6, "client {}: accuracy {acc}", d.name);
    }
    // The round means say the same.
    let first = status.rounds[0].metrics.unwrap();
    let last = status.rounds[2].metrics.unwrap();
    assert!(last.loss_before < first.loss_before, "{first:?} vs {last:?}");

    // Checkpoints on disk: manifests, digests, lineage.
    let store = open_store(&cluster).await?;
    let run_id = RunId::new(run.clone())?;
    let records = store.list_checkpoints(&CheckpointFilter { run: Some(run_id.clone()), ..Default::default() }).await?;
    assert_eq!(records.len(), 3);
    let participations = store.list_participations(&run_id).await?;
    let rounds = store.list_rounds(&run_id).await?;
    assert_eq!(rounds.len(), 3);
    let mut parent = None;
    for (k, rec) in records.iter().enumerate() {
        let round = k as u32 + 1;
        assert_eq!(rec.round, round);
        assert_eq!(rec.id.as_str(), published[k]);
        assert_eq!(rec.parent, parent);
        // One copy per region that contributed, laid out <region>/<model>/<run>/round-N.
        let mut regions: Vec<_> = rec.locations.iter().map(|(r, _)| r.to_string()).collect();
        regions.sort();
        assert_eq!(regions, ["apac", "eu", "us"]);
        for (region, location) in &rec.locations {
            let path = &location.file_path().expect("a file in the artifact directory");
            assert!(
                path.starts_with(cluster.artifact_dir().join(region.as_str()).join("test-lr").join(&run)),
                "{}",
                path.display()
            );
            let m = read_manifest(path)?;
            let bytes = std::fs::read(path)?;
            assert_eq!(hex::encode(Sha256::digest(&bytes)), m.file_sha256, "file digest of {}", path.display());
            let weights = read_weights(path, &m)?;
            assert_eq!(fedra_proto::chunking::sha256_hex(&weights), m.weights_sha256);
            assert_eq!(m.weights_sha256, rec.sha256, "store and manifest agree on the digest");
            assert_eq!(
                std::fs::read_to_string(path.with_file_name("manifest.json"))?,
                rec.manifest_json,
                "the store holds the manifest verbatim"
            );
            assert_eq!(serde_json::to_string_pretty(&m)?, rec.manifest_json);
            assert_eq!(m.round, round);
            assert_eq!(m.parent_checkpoint, parent);
            // Store rows agree with the manifest: same contributors and sample counts.
            let mut from_store: Vec<_> = participations
                .iter()
                .filter(|p| p.round == round && p.status == ParticipationStatus::Reported)
                .map(|p| (p.client.to_string(), p.region.to_string(), p.samples))
                .collect();
            from_store.sort();
            let mut from_manifest: Vec<_> =
                m.contributors.iter().map(|c| (c.client.to_string(), c.region.to_string(), c.samples)).collect();
            from_manifest.sort();
            assert_eq!(from_store, from_manifest);
            let r = rounds.iter().find(|r| r.round == round).unwrap();
            assert_eq!(r.status, RoundStatus::Done);
            assert_eq!(r.samples, m.total_samples);
            assert_eq!(r.checkpoint.as_ref(), Some(&rec.id));
        }
        parent = Some(rec.id.clone());
    }
    // The pulled copy is byte-identical to the stored ones.
    assert_eq!(std::fs::read(&pulled.weights)?, std::fs::read(records[2].locations[0].1.as_str())?);
    cluster.shutdown().await;
    Ok(())
}
