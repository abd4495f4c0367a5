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
    let specs: Vec<_> = (0..4).map(|i| blob_client(i, ["eu", "us"][i % 2], 10, 3, 300)).collect();
    // Round 2's training waits for the test, so that the kill finds it in Training with
    // every task assigned and no update counted, however fast training is.
    let hold = TrainingHold::round(2);
    let mut cluster = held_cluster(Cluster::builder(), specs, &hold).await?;
    let mut control = cluster.control().await?;
    let run = control.submit(&plan(10, 3, 4, 4, 3)).await?;

    // All four clients selected for round 2 have fetched its model and are training: the
    // coordinator shows round 1 published and round 2 training, nothing reported yet.
    hold.wait_holding(4, Duration::from_secs(60)).await?;
    wait_published(&cluster, &run, 1, Duration::from_secs(60)).await?;
    let before = control.get(&run).await?;
    assert_eq!(before.completed_rounds, 1, "{before:?}");
    let training: Vec<_> = before.rounds.iter().filter(|r| r.round == 2).collect();
    assert_eq!(training.len(), 1, "{before:?}");
    assert_eq!((training[0].phase.as_str(), training[0].selected, training[0].reported), ("training", 4, 0));
    cluster.restart_coordinator().await?;
    hold.release();

    let status = wait_for_end(&cluster, &run, Duration::from_secs(120)).await?;
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
    assert_eq!(interrupted.len(), 1, "the kill interrupts round 2's attempt, and only it: {rounds:#?}");
    assert_eq!((interrupted[0].round, interrupted[0].failure.as_deref()), (2, Some("coordinator restarted")));
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
