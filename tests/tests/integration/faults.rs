//! Clients that break off mid-upload. A raw gRPC client plays the failing sidecar: it takes
//! its task, fetches the model, streams the header and about half of an update full of
//! garbage, in chunks, and ends the stream without a trailer. The coordinator's answer to
//! the cut-off stream ("stream ended after N of M values …") is the proof that it received
//! part of the upload, and discarded it.

use crate::sandbox::*;
use fedra_cli::status::WatchEvent;
use fedra_coordinator::ids::RunId;
use fedra_coordinator::store::{ParticipationStatus, RoundStatus, Store};
use fedra_proto::pb;
use fedra_proto::pb::fleet_service_client::FleetServiceClient;
use fedra_types::run::RunState;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

type Fleet = FleetServiceClient<tonic::transport::Channel>;

/// A client that registers, takes one task and uploads only half of its update.
pub struct DyingClient {
    id: String,
    fleet: Fleet,
    tasks: tonic::Streaming<pb::Task>,
    /// Heartbeats, while [`DyingClient::keep_alive`] keeps the client online.
    heartbeat: Option<JoinHandle<()>>,
    heartbeat_every: Duration,
}

/// An upload stream left open after its first half: the header and `sent` of `total`
/// values have been queued, no trailer.
pub struct HalfUpload {
    /// The stream stays open while this lives.
    parts: mpsc::Sender<pb::UpdatePart>,
    answer: JoinHandle<Result<tonic::Response<pb::PushUpdateResponse>, tonic::Status>>,
    pub sent: usize,
    pub total: usize,
    /// The round's global model, as the client downloaded it.
    pub global: Vec<f32>,
}

impl HalfUpload {
    /// Ends the stream without a trailer and returns the coordinator's answer, which must
    /// be a refusal.
    /// Keeps the stream open, silent, and returns the coordinator's answer (it must cut the
    /// upload off itself).
    pub async fn wait_cut_off(self) -> anyhow::Result<tonic::Status> {
        let _open = self.parts;
        match tokio::time::timeout(Duration::from_secs(60), self.answer).await?? {
            Ok(resp) => anyhow::bail!("the coordinator accepted a silent upload: {:?}", resp.into_inner()),
            Err(status) => Ok(status),
        }
    }

    pub async fn break_off(self) -> anyhow::Result<tonic::Status> {
        drop(self.parts);
        match tokio::time::timeout(Duration::from_secs(30), self.answer).await?? {
            Ok(resp) => anyhow::bail!("the coordinator accepted an upload without a trailer: {:?}", resp.into_inner()),
            Err(status) => Ok(status),
        }
    }
}

impl DyingClient {
    pub async fn connect(cluster: &Cluster, id: &str, samples: u64) -> anyhow::Result<Self> {
        Self::connect_in(cluster, id, "eu", samples).await
    }

    pub async fn connect_in(cluster: &Cluster, id: &str, region: &str, samples: u64) -> anyhow::Result<Self> {
        let mut fleet = cluster.fleet_as(id, region).await?;
        let settings = fleet
            .register(pb::RegisterRequest {
                members: 1,
                session_id: String::new(),
                client_id: id.into(),
                region: region.into(),
                datasets: vec![pb::DatasetDescriptor { name: "d".into(), samples, features: 0, classes: 0 }],
                capabilities: None,
            })
            .await?
            .into_inner();
        let tasks = fleet.subscribe(pb::SubscribeRequest { client_id: id.into() }).await?.into_inner();
        let heartbeat_every = Duration::from_secs_f64(settings.heartbeat_interval_seconds);
        Ok(Self { id: id.into(), fleet, tasks, heartbeat: None, heartbeat_every })
    }

    /// Heartbeats from now on, so that the coordinator counts this client as online for as
    /// long as it exists: only a deadline can end its task.
    pub fn keep_alive(&mut self) {
        let (mut fleet, id, every) = (self.fleet.clone(), self.id.clone(), self.heartbeat_every);
        self.heartbeat = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let _ = fleet.heartbeat(pb::HeartbeatRequest { client_id: id.clone(), task_id: String::new() }).await;
            }
        }));
    }

    /// Waits for a task and opens its model download without reading it: the coordinator
    /// keeps a download permit for it until it gives up on the reader.
    pub async fn hold_download(&mut self) -> anyhow::Result<tonic::Streaming<pb::ModelPart>> {
        let task = tokio::time::timeout(Duration::from_secs(30), self.tasks.message()).await??.expect("a task");
        let fetch = pb::FetchModelRequest { task_id: task.task_id.clone(), client_id: self.id.clone() };
        Ok(self.fleet.fetch_model(fetch).await?.into_inner())
    }

    /// Waits for a task, fetches its model, then opens the upload and queues the header
    /// and the first half of the values (1e6 each, which would visibly poison the average)
    /// in chunks of `chunk_values` values. Returns the open upload.
    pub async fn upload_half(&mut self, chunk_values: usize) -> anyhow::Result<HalfUpload> {
        self.upload_half_with(chunk_values, 0, 1.0e6).await
    }

    /// [`Self::upload_half`] with the header announcing `samples` (0: none; else the round
    /// folds the chunks as they arrive) and every value `value`.
    pub async fn upload_half_with(
        &mut self,
        chunk_values: usize,
        samples: u64,
        value: f32,
    ) -> anyhow::Result<HalfUpload> {
        let task = tokio::time::timeout(Duration::from_secs(30), self.tasks.message()).await??.expect("a task");
        let mut model = self
            .fleet
            .fetch_model(pb::FetchModelRequest { task_id: task.task_id.clone(), client_id: self.id.clone() })
            .await?
            .into_inner();
        let mut total = 0;
        let mut global = Vec::new();
        while let Some(part) = model.message().await? {
            match part.part {
                Some(pb::model_part::Part::Header(h)) => total = h.total_values as usize,
                Some(pb::model_part::Part::Chunk(c)) => {
                    global.extend(c.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
                }
                _ => {}
            }
        }
        let sent = total / 2;
        let poison = vec![value; sent];
        let chunks: Vec<_> = fedra_proto::chunking::chunks(&poison, chunk_values * 4).collect();
        assert!(chunks.len() >= 2, "half an upload goes out in several chunks, not {}", chunks.len());
        let (tx, rx) = mpsc::channel::<pb::UpdatePart>(chunks.len() + 1);
        tx.send(pb::UpdatePart {
            part: Some(pb::update_part::Part::Header(pb::UpdateHeader {
                task_id: task.task_id,
                client_id: self.id.clone(),
                total_values: total as u64,
                is_delta: false,
                samples,
            })),
        })
        .await?;
        for c in chunks {
            tx.send(pb::UpdatePart { part: Some(pb::update_part::Part::Chunk(c)) }).await?;
        }
        let mut fleet = self.fleet.clone();
        let answer =
            tokio::spawn(async move { fleet.push_update(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
        Ok(HalfUpload { parts: tx, answer, sent, total, global })
    }
}

impl Drop for DyingClient {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

/// Asserts that `answer` is the coordinator's refusal of `upload` as incomplete, naming
/// exactly how many values it received: proof that the partial upload reached it.
fn assert_refused_as_incomplete(answer: &tonic::Status, sent: usize, total: usize) {
    assert_eq!(answer.code(), tonic::Code::InvalidArgument, "{answer:?}");
    assert_eq!(
        answer.message(),
        format!("update stream: stream ended after {sent} of {total} values without a trailer; update discarded"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_uploader_does_not_corrupt_the_round() -> anyhow::Result<()> {
    let (dim, classes) = (100u32, 5u32);
    let len = (dim * classes + classes) as usize;
    let (cluster, scripts) = scripted_cluster(4, len, |i| 20 + 10 * i as u64, 1024).await?;
    let mut dying = DyingClient::connect(&cluster, "dying", 1000).await?;

    let mut control = cluster.control().await?;
    // Five clients for a target of five: the round cannot close before the dying client
    // has either reported or gone, so its upload arrives while the round is training.
    let mut p = plan(dim, classes, 1, 5, 3);
    p.round_deadline_seconds = 30.0;
    let run = control.submit(&p).await?;
    let upload = dying.upload_half(128).await?;
    let (sent, total) = (upload.sent, upload.total);
    assert_eq!((sent, total), (252, 505));
    let answer = upload.break_off().await?;
    assert_refused_as_incomplete(&answer, sent, total);
    // Then the whole process is gone: its task subscription too.
    drop(dying);

    let status = wait_for_end(&cluster, &run, Duration::from_secs(60)).await?;
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

    let history: Vec<_> = control.watch(&run).await?.collect::<Vec<_>>().await;
    let received: Vec<_> = history
        .iter()
        .filter_map(|e| match e {
            Ok(WatchEvent::UpdateReceived { client, .. }) => Some(client.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(received.len(), 4, "{received:?}");
    assert!(!received.contains(&"dying"), "{received:?}");

    let store = open_store(&cluster).await?;
    let parts = store.list_participations(&RunId::new(run)?).await?;
    let dead = parts.iter().find(|p| p.client.as_str() == "dying").expect("dying client was selected");
    assert_eq!(dead.status, ParticipationStatus::Dropped);
    cluster.shutdown().await;
    Ok(())
}

/// The same with streamed uploads: the headers announce their samples, so the round folds
/// each chunk as it arrives. One upload breaks off halfway, after its chunks were folded;
/// another carries a value beyond the round's fixed-point range. Both are subtracted, and
/// the checkpoint is bit for bit the honest clients' aggregate in the round's own format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_uploads_broken_halfway_leave_the_aggregate_bit_identical() -> anyhow::Result<()> {
    use fedra_coordinator::aggregation::{FixedPointAccumulator, FixedScale};
    let (dim, classes) = (100u32, 5u32);
    let len = (dim * classes + classes) as usize;
    let (cluster, scripts) = scripted_cluster(4, len, |i| 20 + 10 * i as u64, 1024).await?;
    let mut dying = DyingClient::connect(&cluster, "dying", 1000).await?;
    let mut poison = DyingClient::connect(&cluster, "poison", 500).await?;
    let mut control = cluster.control().await?;
    let mut p = plan(dim, classes, 1, 6, 3);
    p.round_deadline_seconds = 30.0;
    let run = control.submit(&p).await?;

    // 100.0 is within the round's range (±256): every chunk of the first half is folded.
    let upload = dying.upload_half_with(128, 1000, 100.0).await?;
    let (sent, total, global) = (upload.sent, upload.total, upload.global.clone());
    let answer = upload.break_off().await?;
    assert_eq!(answer.code(), tonic::Code::InvalidArgument, "{answer:?}");
    assert_eq!(
        answer.message(),
        format!(
            "update stream: stream ended after {sent} of {total} values without a trailer; update discarded \
             (the {sent} values already folded were subtracted)"
        ),
    );
    drop(dying);
    // 1e6 is not: the first chunk is refused, naming the value, and nothing of it stays.
    let answer = poison.upload_half_with(128, 500, 1.0e6).await?.break_off().await?;
    assert_eq!(answer.code(), tonic::Code::InvalidArgument, "{answer:?}");
    assert!(
        answer.message().contains("update value 1000000 at index 0 is beyond the round's fixed-point range ±256"),
        "{answer:?}"
    );
    drop(poison);

    let status = wait_for_end(&cluster, &run, Duration::from_secs(60)).await?;
    assert_succeeded(&status);
    assert_eq!(status.rounds[0].reported, 4);
    let dir = tempfile::tempdir()?;
    let pulled = control.pull_checkpoint(status.published_checkpoint.as_deref().unwrap(), dir.path()).await?;
    let got = read_weights(&pulled.weights, &read_manifest(&pulled.weights)?)?;
    // The cohort registered 20 + 30 + 40 + 50 + 1000 + 500 samples: the round's scale.
    let registered: u64 = scripts.iter().map(|(_, w)| w).sum::<u64>() + 1500;
    let mut honest =
        FixedPointAccumulator::new(len, FixedScale::for_round(&global, registered as f64)).expect("the sum's memory");
    for (u, w) in &scripts {
        honest.fold(u, *w as f64)?;
    }
    let want = honest.average()?;
    let differ = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differ, 0, "{differ} of {len} values differ from the honest-only aggregate");
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_without_quorum_fails_cleanly_at_the_deadline() -> anyhow::Result<()> {
    let (dim, classes) = (20u32, 3u32);
    let len = (dim * classes + classes) as usize;
    let (cluster, scripts) = scripted_cluster(2, len, |i| 50 + i as u64, 1024).await?;
    // This client stalls half-way through its upload and stays online (it heartbeats):
    // only the deadline ends its task.
    let mut hung = DyingClient::connect(&cluster, "hung", 1000).await?;
    hung.keep_alive();

    let mut control = cluster.control().await?;
    let mut p = plan(dim, classes, 2, 3, 3);
    p.round_deadline_seconds = 2.0;
    let run = control.submit(&p).await?;
    let mut events = control.watch(&run).await?;
    // 31 of 63 values in chunks of 4 values: 8 chunks, then the stream stalls, open.
    let upload = hung.upload_half(4).await?;
    let (sent, total) = (upload.sent, upload.total);
    assert_eq!((sent, total), (31, 63));

    // The round fails at its deadline while the upload is still open.
    let failed = loop {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await? {
            Some(Ok(WatchEvent::RoundFailed { round: 1, reason })) => break reason,
            Some(Ok(WatchEvent::UpdateReceived { client, .. })) => assert_ne!(client, "hung"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("the watch ended before round 1 failed"),
        }
    };
    assert!(failed.contains("deadline passed with 2 updates, quorum is 3"), "{failed}");
    drop(events);
    // The coordinator itself cut the stalled upload off at the deadline (releasing its
    // staging slot), naming the half it had received.
    let answer = upload.break_off().await?;
    assert_eq!(answer.code(), tonic::Code::InvalidArgument, "{answer:?}");
    assert_eq!(
        answer.message(),
        format!("update stream: the round's deadline passed after {sent} values; update discarded")
    );

    let status = wait_for_end(&cluster, &run, Duration::from_secs(30)).await?;
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

    // The coordinator is still consistent: a run the two healthy clients can serve
    // succeeds. Over-selection picks the hung client too if the coordinator has not yet
    // seen it go; the target of two is reached without it either way.
    drop(hung);
    let mut p = plan(dim, classes, 1, 2, 2);
    p.over_selection = 0.5;
    p.round_deadline_seconds = 30.0;
    let run = control.submit(&p).await?;
    let status = wait_for_end(&cluster, &run, Duration::from_secs(30)).await?;
    assert_succeeded(&status);
    let dir = tempfile::tempdir()?;
    let pulled = control.pull_checkpoint(status.published_checkpoint.as_deref().unwrap(), dir.path()).await?;
    let manifest = read_manifest(&pulled.weights)?;
    let updates: Vec<_> = scripts.iter().map(|(v, w)| (v, *w)).collect();
    assert_ulp_equal(&read_weights(&pulled.weights, &manifest)?, &reference_average(&updates));
    cluster.shutdown().await;
    Ok(())
}
