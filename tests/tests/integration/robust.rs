//! Byzantine-robust aggregation through the real system: scripted honest clients and
//! attackers whose models are far away, aggregated by a coordinator that spills the round's
//! updates to its scratch directory. The published checkpoint is checked against the rule
//! computed directly from the scripts, and the manifest names the rule and whom it left out.

use crate::sandbox::*;
use fedra_cli::control::ControlError;
use fedra_types::plan::Aggregator;
use std::time::Duration;
use tonic::Code;

const HONEST: usize = 5;
const ATTACKERS: usize = 2;

/// Honest client `i`'s model: near 1.0; an attacker's: 1000 everywhere (a boosted update).
fn script(i: usize, len: usize) -> Vec<f32> {
    if i >= HONEST {
        return vec![1000.0; len];
    }
    (0..len).map(|j| 1.0 + 0.05 * ((i * 31 + j * 7) % 11) as f32 - 0.25).collect()
}

async fn cluster(len: usize) -> anyhow::Result<(Cluster, Vec<Vec<f32>>)> {
    let mut cluster = Cluster::builder().chunk_bytes(1024).start().await?;
    let mut scripts = Vec::new();
    for i in 0..HONEST + ATTACKERS {
        let params = script(i, len);
        let trainer = ScriptedTrainer { params: params.clone(), samples: 10 + i as u64, holdout: None };
        let info = trainer.info();
        cluster.add_client_with(&format!("c{i}"), ["eu", "us"][i % 2], vec![info], Box::new(trainer));
        scripts.push(params);
    }
    cluster.wait_connected(Duration::from_secs(60)).await?;
    Ok((cluster, scripts))
}

fn naive_median(scripts: &[Vec<f32>]) -> Vec<f32> {
    (0..scripts[0].len())
        .map(|j| {
            let mut c: Vec<f32> = scripts.iter().map(|s| s[j]).collect();
            c.sort_by(f32::total_cmp);
            c[c.len() / 2]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robust_rules_keep_boosted_updates_out_and_say_so_in_the_manifest() -> anyhow::Result<()> {
    // 3 · 700 + 3 parameters in 1 KiB chunks.
    let (dim, classes) = (700u32, 3u32);
    let len = (dim * classes + classes) as usize;
    let (cluster, scripts) = cluster(len).await?;
    let n = (HONEST + ATTACKERS) as u32;
    let mut control = cluster.control().await?;
    let dir = tempfile::tempdir()?;

    // Median: exactly the coordinate-wise median of the seven scripts (odd n).
    let mut p = plan(dim, classes, 1, n, n);
    p.aggregator = Aggregator::Median;
    let run = control.submit(&p).await?;
    let status = wait_for_end(&cluster, &run, Duration::from_secs(120)).await?;
    assert_succeeded(&status);
    let pulled = control.pull_checkpoint(&status.published_checkpoint.clone().expect("published"), dir.path()).await?;
    let manifest = read_manifest(&pulled.weights)?;
    let got = read_weights(&pulled.weights, &manifest)?;
    assert_eq!(got, naive_median(&scripts));
    let record = manifest.aggregation.expect("a robust round records its rule");
    assert_eq!(record.rule, "median");
    assert!(record.excluded.is_empty() && record.scaled.is_empty());
    // The boosted clients still count as contributors: they were received, not refused.
    assert_eq!(manifest.contributors.len(), HONEST + ATTACKERS);

    // Multi-Krum with f = 2 leaves exactly the two attackers out and averages the rest.
    let mut p = plan(dim, classes, 1, n, n);
    p.aggregator = Aggregator::MultiKrum { byzantine: ATTACKERS as u32, select: 0 };
    let run = control.submit(&p).await?;
    let status = wait_for_end(&cluster, &run, Duration::from_secs(120)).await?;
    assert_succeeded(&status);
    let dir2 = tempfile::tempdir()?;
    let pulled = control.pull_checkpoint(&status.published_checkpoint.clone().expect("published"), dir2.path()).await?;
    let manifest = read_manifest(&pulled.weights)?;
    let got = read_weights(&pulled.weights, &manifest)?;
    let honest: Vec<_> = scripts[..HONEST].iter().map(|s| (s, 1u64)).collect();
    let want = reference_average(&honest);
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0)));
    let record = manifest.aggregation.expect("recorded");
    let mut excluded: Vec<String> = record.excluded.iter().map(ToString::to_string).collect();
    excluded.sort();
    assert_eq!(excluded, vec!["c5".to_string(), "c6".to_string()]);
    assert_eq!(record.rule, "multi_krum(byzantine = 2, select = 0)");

    // Plans a rule cannot serve are refused at submit, naming why.
    let refused = |e: ControlError| match e {
        ControlError::Rpc { code, message } => (code, message),
        other => panic!("expected an RPC refusal, got {other}"),
    };
    let mut p = plan(dim, classes, 1, n, 3);
    p.aggregator = Aggregator::MultiKrum { byzantine: 1, select: 0 };
    let (code, message) = refused(control.submit(&p).await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("needs min_clients >= 2 * byzantine + 3 = 5, got 3"), "{message}");
    let mut p = plan(dim, classes, 1, n, n);
    p.aggregator = Aggregator::TrimmedMean { trim: 0.2 };
    p.privacy = Some(central(1.0, 0.5, n));
    let (code, message) = refused(control.submit(&p).await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("aggregator trimmed_mean is not accounted"), "{message}");
    cluster.shutdown().await;
    Ok(())
}
