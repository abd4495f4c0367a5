//! Federated evaluation: after each round clients score the new checkpoint on their
//! held-out splits; the coordinator keeps sample-weighted means overall and per region.

use crate::sandbox::*;
use fedra_cli::status::WatchEvent;
use fedra_client::trainer::EvalOutcome;
use std::time::Duration;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_rounds_are_weighted_by_samples_per_region() -> anyhow::Result<()> {
    let (dim, classes) = (4u32, 3u32);
    let len = (dim * classes + classes) as usize;
    let mut cluster = Cluster::builder().start().await?;
    // (region, held-out samples, loss, accuracy); the last client has no held-out split.
    let holdouts = [("eu", 10, 1.0, 0.5), ("eu", 30, 3.0, 0.1), ("us", 30, 2.0, 0.9)];
    for (i, (region, samples, loss, accuracy)) in holdouts.iter().enumerate() {
        let mut t = ScriptedTrainer::new(i as u64, len, 20);
        t.holdout = Some(EvalOutcome { loss: *loss, accuracy: *accuracy, samples: *samples });
        let info = t.info();
        cluster.add_client_with(&format!("c{i}"), region, vec![info], Box::new(t));
    }
    let t = ScriptedTrainer::new(9, len, 20);
    let info = t.info();
    cluster.add_client_with("no-holdout", "us", vec![info], Box::new(t));
    cluster.wait_connected(Duration::from_secs(30)).await?;

    let mut control = cluster.control().await?;
    let mut p = plan(dim, classes, 2, 4, 4);
    p.evaluation.every_rounds = 1;
    let run = control.submit(&p).await?;
    let mut events = control.watch(&run).await?;
    let mut evaluated = Vec::new();
    let mut finished_after_last_evaluation = false;
    while let Some(e) = tokio::time::timeout(Duration::from_secs(60), events.next()).await? {
        match e? {
            WatchEvent::Evaluated { round, results } => evaluated.push((round, results)),
            WatchEvent::RunFinished { .. } => {
                finished_after_last_evaluation = evaluated.iter().any(|(r, _)| *r == 2);
                break;
            }
            _ => {}
        }
    }
    assert!(finished_after_last_evaluation, "the run ends after its last evaluation");
    assert_eq!(evaluated.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [1, 2]);

    let status = wait_for_end(&cluster, &run, Duration::from_secs(30)).await?;
    assert_succeeded(&status);
    assert_eq!(status.evaluations.len(), 6, "overall + eu + us for each of 2 rounds: {:?}", status.evaluations);
    for round in [1, 2] {
        let of = |region: Option<&str>| {
            status
                .evaluations
                .iter()
                .find(|e| e.round == round && e.region.as_deref() == region)
                .expect("present")
                .clone()
        };
        let all = of(None);
        assert_eq!((all.clients, all.samples), (3, 70), "the client without a held-out split is not counted");
        assert!((all.loss - (10.0 * 1.0 + 30.0 * 3.0 + 30.0 * 2.0) / 70.0).abs() < 1e-9, "{all:?}");
        assert!((all.accuracy - (10.0 * 0.5 + 30.0 * 0.1 + 30.0 * 0.9) / 70.0).abs() < 1e-9, "{all:?}");
        let eu = of(Some("eu"));
        assert_eq!((eu.clients, eu.samples), (2, 40));
        assert!((eu.loss - 2.5).abs() < 1e-9 && (eu.accuracy - 0.2).abs() < 1e-9, "{eu:?}");
        let us = of(Some("us"));
        assert_eq!((us.clients, us.samples, us.loss, us.accuracy), (1, 30, 2.0, 0.9));
    }
    // The replayed history carries the same results.
    let history: Vec<_> = control.watch(&run).await?.collect::<Vec<_>>().await;
    let replayed = history.iter().filter(|e| matches!(e, Ok(WatchEvent::Evaluated { .. }))).count();
    assert_eq!(replayed, 2);
    cluster.shutdown().await;
    Ok(())
}
