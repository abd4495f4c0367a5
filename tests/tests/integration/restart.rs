//! A coordinator killed mid-run comes back on the same SQLite file and finishes the run:
//! every round completes exactly once, lineage intact, the interrupted attempt recorded.

use crate::sandbox::*;
use fedra_cli::status::WatchEvent;
use fedra_coordinator::ids::RunId;
use fedra_coordinator::store::{RoundStatus, Store};
use std::time::Duration;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_run_loses_and_repeats_no_round() -> anyhow::Result<()> {
    let specs: Vec<_> = (0..4).map(|i| blob_client(i, ["eu", "us"][i % 2], 10, 3, 3000)).collect();
    let mut cluster = Cluster::builder().clients(specs).start().await?;
    let mut control = cluster.control().await?;
    let mut p = plan(10, 3, 4, 4, 3);
    // Enough local work that a round is still training when the coordinator dies.
    p.local.epochs = 8;
    p.local.batch_size = 8;
    let run = control.submit(&p).await?;

    // Kill the coordinator as soon as round 2 has selected its clients: they are training.
    let mut events = control.watch(&run).await?;
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), events.next()).await? {
        if let WatchEvent::Selected { round: 2, .. } = e? {
            break;
        }
    }
    drop(events);
    cluster.restart_coordinator().await?;

    let status = wait_for_end(&cluster.endpoint(), &run, Duration::from_secs(120)).await?;
    assert_succeeded(&status);
    assert_eq!(status.completed_rounds, 4);

    let store = open_store(&cluster).await?;
    let run_id = RunId::new(run.clone())?;
    let rounds = store.list_rounds(&run_id).await?;
    for round in 1..=4u32 {
        let done: Vec<_> = rounds.iter().filter(|r| r.round == round && r.status == RoundStatus::Done).collect();
        assert_eq!(done.len(), 1, "round {round} completed {} times: {rounds:#?}", done.len());
    }
    // Round 2 was interrupted and re-attempted (attempt numbers keep counting).
    let interrupted: Vec<_> = rounds.iter().filter(|r| r.status == RoundStatus::Interrupted).collect();
    assert!(!interrupted.is_empty(), "the kill should have interrupted a round: {rounds:#?}");
    assert!(interrupted.iter().all(|r| r.round == 2 && r.failure.as_deref() == Some("coordinator restarted")));
    let cps = store.list_checkpoints(&Default::default()).await?;
    assert_eq!(cps.iter().map(|c| c.round).collect::<Vec<_>>(), [1, 2, 3, 4]);
    for w in cps.windows(2) {
        assert_eq!(w[1].parent.as_ref(), Some(&w[0].id), "lineage");
    }
    // The watch history after restart tells the same story.
    let mut control = cluster.control().await?;
    let history: Vec<_> = control.watch(&run).await?.collect::<Vec<_>>().await;
    let published = history.iter().filter(|e| matches!(e, Ok(WatchEvent::Published { .. }))).count();
    assert_eq!(published, 4);
    cluster.shutdown().await;
    Ok(())
}
