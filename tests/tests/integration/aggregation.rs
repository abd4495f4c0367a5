//! Aggregation through the real system checked against a plain weighted average: the
//! clients' updates are scripted, so the published checkpoint is known in advance.

use crate::sandbox::*;
use std::time::Duration;

async fn aggregate_with(n: usize) -> anyhow::Result<()> {
    // 2 502 parameters in 1 KiB chunks: every update crosses many chunk boundaries.
    let (dim, classes) = (250u32, 9u32);
    let len = (dim * classes + classes) as usize;
    let (cluster, scripts) = scripted_cluster(n, len, |i| 10 + 7 * i as u64 % 300, 1024).await?;
    let mut control = cluster.control().await?;
    let mut p = plan(dim, classes, 1, n as u32, n as u32);
    p.round_deadline_seconds = 120.0;
    let run = control.submit(&p).await?;
    let status = wait_for_end(&cluster, &run, Duration::from_secs(120)).await?;
    assert_succeeded(&status);

    let dir = tempfile::tempdir()?;
    let cp = status.published_checkpoint.clone().expect("published");
    let pulled = control.pull_checkpoint(&cp, dir.path()).await?;
    let manifest = read_manifest(&pulled.weights)?;
    assert_eq!(manifest.contributors.len(), n);
    let got = read_weights(&pulled.weights, &manifest)?;
    let updates: Vec<_> = scripts.iter().map(|(v, w)| (v, *w)).collect();
    let want = reference_average(&updates);
    if n == 1 {
        // One client: its model comes back bit for bit.
        assert_eq!(got, scripts[0].0);
    }
    assert_ulp_equal(&got, &want);
    assert_eq!(manifest.total_samples, scripts.iter().map(|(_, w)| w).sum::<u64>());
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_aggregate_is_its_own_model() -> anyhow::Result<()> {
    aggregate_with(1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_match_the_reference_weighted_average() -> anyhow::Result<()> {
    aggregate_with(200).await
}
