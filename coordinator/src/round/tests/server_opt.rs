//! A server optimizer's state across rounds and restarts.

use super::*;

/// Runs a 3-round FedAdam plan to the end with one client reporting `0.1 · round`,
/// restarting the engine once round 1 is published when `restart` is set; returns the
/// final model and its manifest's server-state digest.
async fn fed_adam_run(restart: bool) -> (Vec<f32>, Option<String>) {
    use crate::plan::ServerOptimizer;
    let h = harness().await;
    let mut a = connect(&h, "a", "eu").await;
    let adam = ServerOptimizer::FedAdam { server_learning_rate: 0.05, beta1: 0.9, beta2: 0.99, tau: 1e-3 };
    let run = h
        .engine
        .submit(plan_with(3, 1, 1, &[], |raw| raw.strategy = Some(Strategy::Server(adam))), None)
        .await
        .unwrap();
    let mut rx = h.watch(&run).await;
    let mut h = h;
    for round in 1..=3u32 {
        let t = task_of(&mut a).await;
        assert_eq!(t.round, round);
        let u = h.update(0.1 * round as f32, false).await;
        h.engine.commit_upload(t.task, a.id.clone(), u).await.unwrap();
        next_event(&mut rx, &run, |k| matches!(k, RunEventKind::Published { .. })).await;
        if restart && round == 1 {
            h.engine.shutdown().await;
            let Harness { store, dir, settings, .. } = h;
            h = start(store, dir, settings).await;
            a = connect(&h, "a", "eu").await;
            rx = h.watch(&run).await;
        }
    }
    assert_eq!(finished(&mut rx, &run).await.0, RunState::Succeeded);
    let record =
        h.store.get_checkpoint(&CheckpointId::for_round(&run, crate::ids::RoundNumber(3))).await.unwrap().unwrap();
    let manifest: crate::checkpoint::Manifest = serde_json::from_str(&record.manifest_json).unwrap();
    assert_eq!(manifest.strategy, "fed_adam");
    let checkpoints = Checkpoints::with_ephemeral_key(h.dir.path().join("artifacts"));
    let params = checkpoints.load(&record.locations[0].1, &manifest.file_sha256, &manifest.layout).await.unwrap();
    (params, manifest.server_state_sha256)
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_the_server_optimizer_state_exactly() {
    let (straight, straight_state) = fed_adam_run(false).await;
    let (resumed, resumed_state) = fed_adam_run(true).await;
    assert!(straight_state.is_some());
    // Bit for bit: the same model and the same optimizer state after round 3.
    assert_eq!(straight, resumed);
    assert_eq!(straight_state, resumed_state);
    // And the optimizer did act: FedAvg would publish the last update itself (0.3).
    assert!(straight.iter().all(|v| (v - 0.3).abs() > 1e-3), "{straight:?}");
}
