//! Clients that die mid-upload. A raw gRPC client plays the dying sidecar: it takes its
//! task, fetches the model, streams part of an update full of garbage, and vanishes.

use crate::sandbox::*;
use fedra_coordinator::ids::RunId;
use fedra_coordinator::store::{ParticipationStatus, RoundStatus, Store};
use fedra_proto::pb;
use fedra_proto::pb::fleet_service_client::FleetServiceClient;
use fedra_types::run::RunState;
use std::time::Duration;

/// A client that registers, takes one task and streams only half its update.
pub struct DyingClient {
    pub fleet: FleetServiceClient<tonic::transport::Channel>,
    pub tasks: tonic::Streaming<pb::Task>,
}

impl DyingClient {
    pub async fn connect(endpoint: &str, id: &str, samples: u64) -> anyhow::Result<Self> {
        let mut fleet = FleetServiceClient::connect(endpoint.to_string()).await?;
        fleet
            .register(pb::RegisterRequest {
                client_id: id.into(),
                region: "eu".into(),
                datasets: vec![pb::DatasetDescriptor { name: "d".into(), samples, features: 0, classes: 0 }],
                capabilities: None,
            })
            .await?;
        let tasks = fleet.subscribe(pb::SubscribeRequest { client_id: id.into() }).await?.into_inner();
        Ok(Self { fleet, tasks })
    }

    /// Waits for a task, fetches the model, then sends the header and half of the chunks
    /// (values 1e6, which would visibly poison the average) and drops the stream.
    pub async fn die_mid_upload(&mut self, id: &str) -> anyhow::Result<()> {
        let task = self.tasks.message().await?.expect("a task");
        let mut model = self
            .fleet
            .fetch_model(pb::FetchModelRequest { task_id: task.task_id.clone(), client_id: id.into() })
            .await?
            .into_inner();
        let mut total = 0;
        while let Some(part) = model.message().await? {
            if let Some(pb::model_part::Part::Header(h)) = part.part {
                total = h.total_values as usize;
            }
        }
        let poison = vec![1.0e6f32; total];
        let chunks: Vec<_> = fedra_proto::chunking::chunks(&poison, 1024).collect();
        let half = chunks.len() / 2;
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::UpdatePart>(4);
        tx.send(pb::UpdatePart {
            part: Some(pb::update_part::Part::Header(pb::UpdateHeader {
                task_id: task.task_id,
                client_id: id.into(),
                total_values: total as u64,
                is_delta: false,
            })),
        })
        .await?;
        for c in chunks.into_iter().take(half) {
            tx.send(pb::UpdatePart { part: Some(pb::update_part::Part::Chunk(c)) }).await?;
        }
        let mut fleet = self.fleet.clone();
        let push =
            tokio::spawn(async move { fleet.push_update(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The process dies: the upload stream is torn down without a trailer.
        push.abort();
        drop(tx);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_uploader_does_not_corrupt_the_round() -> anyhow::Result<()> {
    let (dim, classes) = (100u32, 5u32);
    let len = (dim * classes + classes) as usize;
    let (cluster, scripts) = scripted_cluster(4, len, |i| 20 + 10 * i as u64, 1024).await?;
    let mut dying = DyingClient::connect(&cluster.endpoint(), "dying", 1000).await?;

    let mut control = cluster.control().await?;
    let mut p = plan(dim, classes, 1, 5, 3);
    p.round_deadline_seconds = 30.0;
    let run = control.submit(&p).await?;
    dying.die_mid_upload("dying").await?;
    // The whole process is gone: its task subscription too.
    drop(dying);

    let status = wait_for_end(&cluster.endpoint(), &run, Duration::from_secs(60)).await?;
    assert_succeeded(&status);
    assert_eq!(status.rounds[0].reported, 4);

    // The checkpoint is exactly the average of the four complete updates.
    let dir = tempfile::tempdir()?;
    let pulled = control.pull_checkpoint(status.published_checkpoint.as_deref().unwrap(), dir.path()).await?;
    let manifest = read_manifest(&pulled.weights)?;
    let got = read_weights(&pulled.weights, &manifest)?;
    let updates: Vec<_> = scripts.iter().map(|(v, w)| (v, *w)).collect();
    assert_ulp_equal(&got, &reference_average(&updates));
    assert!(manifest.contributors.iter().all(|c| c.client.as_str() != "dying"));

    let store = open_store(&cluster).await?;
    let parts = store.list_participations(&RunId::new(run)?).await?;
    let dead = parts.iter().find(|p| p.client.as_str() == "dying").expect("dying client was selected");
    assert_eq!(dead.status, ParticipationStatus::Dropped);
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_without_quorum_fails_cleanly_at_the_deadline() -> anyhow::Result<()> {
    let (dim, classes) = (20u32, 3u32);
    let len = (dim * classes + classes) as usize;
    let (cluster, scripts) = scripted_cluster(2, len, |i| 50 + i as u64, 1024).await?;
    // This client hangs after half an upload but stays connected: only the deadline ends it.
    let mut hung = DyingClient::connect(&cluster.endpoint(), "hung", 1000).await?;

    let mut control = cluster.control().await?;
    let mut p = plan(dim, classes, 2, 3, 3);
    p.round_deadline_seconds = 2.0;
    let run = control.submit(&p).await?;
    hung.die_mid_upload("hung").await?;

    let status = wait_for_end(&cluster.endpoint(), &run, Duration::from_secs(30)).await?;
    assert_eq!(status.state, RunState::Failed);
    let reason = status.failure.clone().unwrap_or_default();
    assert!(reason.contains("round 1 failed") && reason.contains("quorum is 3"), "{reason}");
    assert_eq!(status.completed_rounds, 0);
    assert!(status.published_checkpoint.is_none());

    let store = open_store(&cluster).await?;
    let run_id = RunId::new(run)?;
    let rounds = store.list_rounds(&run_id).await?;
    assert_eq!(rounds.len(), 1);
    assert_eq!(rounds[0].status, RoundStatus::Failed);
    assert_eq!(rounds[0].reported, 2);
    assert!(store.list_checkpoints(&Default::default()).await?.is_empty(), "no checkpoint for a failed round");
    let parts = store.list_participations(&run_id).await?;
    assert_eq!(parts.iter().filter(|p| p.status == ParticipationStatus::Reported).count(), 2);
    assert_eq!(parts.iter().find(|p| p.client.as_str() == "hung").unwrap().status, ParticipationStatus::Dropped);

    // The coordinator is still consistent: a run the two healthy clients can serve succeeds.
    drop(hung);
    let mut p = plan(dim, classes, 1, 2, 2);
    p.round_deadline_seconds = 30.0;
    let run = control.submit(&p).await?;
    let status = wait_for_end(&cluster.endpoint(), &run, Duration::from_secs(30)).await?;
    assert_succeeded(&status);
    let dir = tempfile::tempdir()?;
    let pulled = control.pull_checkpoint(status.published_checkpoint.as_deref().unwrap(), dir.path()).await?;
    let manifest = read_manifest(&pulled.weights)?;
    let updates: Vec<_> = scripts.iter().map(|(v, w)| (v, *w)).collect();
    assert_ulp_equal(&read_weights(&pulled.weights, &manifest)?, &reference_average(&updates));
    cluster.shutdown().await;
    Ok(())
}
