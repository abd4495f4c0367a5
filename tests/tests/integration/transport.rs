//! The transport contract: whichever carrier joins the sidecars to the coordinator — gRPC
//! (production) or the in-process link of `fedra-sim --transport inproc` — the same round
//! engine and the same sidecar session behave the same. Each contract is written once, as
//! a function of the [`Transport`], and run on both; the test then compares the answers.
//!
//! Refusals are compared as the `(code, message)` a sidecar sees: the in-process link
//! reports the coordinator's error with the code and text the gRPC edge would send.

use crate::sandbox::*;
use anyhow::{Context, bail, ensure};
use fedra_client::session::SessionError;
use fedra_client::task::Task;
use fedra_client::transport::{FleetLink, Registration, TaskStream, Upload, UploadBody, UploadTrailer};
use fedra_coordinator::ids::RunId;
use fedra_coordinator::store::{CheckpointFilter, Store};
use fedra_sim::bench_rounds::TrivialTrainer;
use fedra_sim::inproc::Transport;
use fedra_types::metrics::TrainingMetrics;
use fedra_types::run::RunState;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;

const BOTH: [Transport; 2] = [Transport::Grpc, Transport::Inproc];
const WAIT: Duration = Duration::from_secs(60);
/// A model of 3,010 values: several chunks of 1 KiB on the gRPC path.
const DIM: u32 = 300;
const CLASSES: u32 = 10;

/// A cluster whose sidecars use `transport`, with 1 KiB chunks so that gRPC transfers are
/// really chunked, and `n` sidecars running the deterministic [`TrivialTrainer`] (the
/// global model plus a perturbation seeded by client and round).
async fn trivial_cluster(transport: Transport, n: usize) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster::builder().transport(transport).chunk_bytes(1024).start().await?;
    for i in 0..n {
        let info =
            fedra_client::data::DatasetInfo { name: "trivial".into(), samples: 1, features: DIM, classes: CLASSES };
        cluster.add_client_with(&format!("t{i}"), "eu", vec![info], Box::new(TrivialTrainer::new(500 + i as u64)));
    }
    cluster.wait_connected(WAIT).await?;
    Ok(cluster)
}

/// Runs 3 rounds of 3 clients; returns each published checkpoint's (round, reported,
/// weights digest).
async fn published_models(transport: Transport) -> anyhow::Result<Vec<(u32, u32, String)>> {
    let cluster = trivial_cluster(transport, 3).await?;
    let run = cluster.control().await?.submit(&plan(DIM, CLASSES, 3, 3, 3)).await?;
    let end = wait_for_end(&cluster, &run, WAIT).await?;
    assert_succeeded(&end);
    let store = open_store(&cluster).await?;
    let filter = CheckpointFilter { run: Some(RunId::new(run)?), ..Default::default() };
    let records = store.list_checkpoints(&filter).await?;
    let published = records
        .iter()
        .map(|c| {
            let row = end.rounds.iter().find(|r| r.round == c.round).expect("a round row per checkpoint");
            (c.round, row.reported, c.sha256.clone())
        })
        .collect();
    cluster.shutdown().await;
    Ok(published)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_transports_publish_the_same_models() -> anyhow::Result<()> {
    let mut runs = Vec::new();
    for t in BOTH {
        runs.push(published_models(t).await.with_context(|| format!("over {}", t.name()))?);
    }
    assert_eq!(runs[0].len(), 3, "{:?}", runs[0]);
    assert!(runs[0].iter().all(|(_, reported, _)| *reported == 3), "{:?}", runs[0]);
    assert!(runs[0].windows(2).all(|w| w[0].2 != w[1].2), "each round moves the model: {:?}", runs[0]);
    assert_eq!(runs[0], runs[1], "gRPC vs in-process");
    println!("{runs:?}");
    Ok(())
}

/// A client played by hand over a raw link: registered and subscribed.
struct RawClient {
    id: String,
    link: Arc<dyn FleetLink>,
    tasks: TaskStream,
}

impl RawClient {
    async fn join(cluster: &Cluster, transport: Transport, id: &str) -> anyhow::Result<Self> {
        let link = cluster.link_as(transport, id, "eu").await?;
        let datasets =
            vec![fedra_client::data::DatasetInfo { name: "d".into(), samples: 10, features: DIM, classes: CLASSES }];
        let registration = Registration {
            client_id: id.into(),
            region: "eu".into(),
            datasets,
            devices: vec![],
            session_id: format!("raw-{id}"),
        };
        link.register(&registration).await?;
        let tasks = link.subscribe(id).await?;
        Ok(Self { id: id.into(), link, tasks })
    }

    async fn next_task(&mut self) -> anyhow::Result<Task> {
        Ok(tokio::time::timeout(WAIT, self.tasks.next()).await?.context("the task stream ended")??)
    }

    /// A complete upload of `values` for `task`, claimed as this client's.
    fn upload(&self, task: &Task, values: Vec<f32>) -> Upload {
        Upload {
            task_id: task.id.clone(),
            client_id: self.id.clone(),
            total_values: values.len(),
            is_delta: false,
            samples: 10,
            body: UploadBody::Dense(values),
            chunk_bytes: 1024,
            trailer: Some(UploadTrailer {
                samples: 10,
                metrics: TrainingMetrics { loss_before: 1.0, loss_after: 0.5, accuracy_after: 0.5, train_seconds: 0.1 },
                update_norm: 0.0,
                reference: None,
            }),
            cut_off_after: 0,
        }
    }
}

/// The refusal a sidecar sees.
fn refusal(r: Result<impl std::fmt::Debug, SessionError>) -> anyhow::Result<(Code, String)> {
    match r {
        Err(SessionError::Rpc { code, message }) => Ok((code, message)),
        other => bail!("expected the coordinator to refuse, got {other:?}"),
    }
}

/// One raw client takes its task and uploads one value too many.
async fn wrong_length_refusal(transport: Transport) -> anyhow::Result<(Code, String)> {
    let cluster = Cluster::builder().transport(transport).chunk_bytes(1024).start().await?;
    let mut raw = RawClient::join(&cluster, transport, "raw-1").await?;
    cluster.control().await?.submit(&plan(DIM, CLASSES, 1, 1, 1)).await?;
    let task = raw.next_task().await?;
    let mut values = raw.link.fetch_model(&task, &raw.id).await?.to_vec();
    values.push(0.5);
    let answer = refusal(raw.link.push_update(raw.upload(&task, values)).await)?;
    cluster.shutdown().await;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_length_update_is_refused_alike() -> anyhow::Result<()> {
    let mut answers = Vec::new();
    for t in BOTH {
        answers.push(wrong_length_refusal(t).await.with_context(|| format!("over {}", t.name()))?);
    }
    assert_eq!(answers[0].0, Code::InvalidArgument, "{answers:?}");
    let p = (CLASSES * (DIM + 1)) as usize;
    assert!(answers[0].1.contains(&p.to_string()) && answers[0].1.contains(&(p + 1).to_string()), "{answers:?}");
    assert_eq!(answers[0], answers[1], "gRPC vs in-process");
    println!("{answers:?}");
    Ok(())
}

/// One raw client takes its task and sends half of its update, then no trailer (a crash).
async fn cut_off_refusal(transport: Transport) -> anyhow::Result<(Code, String)> {
    let cluster = Cluster::builder().transport(transport).chunk_bytes(1024).start().await?;
    let mut raw = RawClient::join(&cluster, transport, "raw-1").await?;
    cluster.control().await?.submit(&plan(DIM, CLASSES, 1, 1, 1)).await?;
    let task = raw.next_task().await?;
    let values = raw.link.fetch_model(&task, &raw.id).await?.to_vec();
    let mut upload = raw.upload(&task, values);
    (upload.trailer, upload.cut_off_after) = (None, upload.total_values / 2);
    let answer = refusal(raw.link.push_update(upload).await)?;
    cluster.shutdown().await;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_before_its_trailer_is_refused_alike() -> anyhow::Result<()> {
    let mut answers = Vec::new();
    for t in BOTH {
        answers.push(cut_off_refusal(t).await.with_context(|| format!("over {}", t.name()))?);
    }
    assert_eq!(answers[0].0, Code::InvalidArgument, "{answers:?}");
    assert!(answers[0].1.contains("1505 of 3010 values without a trailer"), "{answers:?}");
    // Over gRPC the upload announced its samples and streamed into the sum, so its refusal
    // also says what was subtracted again; in process it was staged. The rest is the same.
    let refusal = |(code, m): &(Code, String)| (*code, m.split(" (the ").next().unwrap_or_default().to_string());
    assert!(answers[0].1.ends_with("(the 1505 values already folded were subtracted)"), "{answers:?}");
    assert_eq!(refusal(&answers[0]), refusal(&answers[1]), "gRPC vs in-process");
    Ok(())
}

/// Two raw clients take their tasks; the second fetches and uploads for the first's task.
async fn foreign_task_refusals(transport: Transport) -> anyhow::Result<[(Code, String); 2]> {
    let cluster = Cluster::builder().transport(transport).chunk_bytes(1024).start().await?;
    let mut a = RawClient::join(&cluster, transport, "raw-a").await?;
    let mut b = RawClient::join(&cluster, transport, "raw-b").await?;
    cluster.control().await?.submit(&plan(DIM, CLASSES, 1, 2, 2)).await?;
    let (task_a, task_b) = (a.next_task().await?, b.next_task().await?);
    ensure!(task_a.id != task_b.id, "each client has its own task");
    let own = b.link.fetch_model(&task_b, &b.id).await?.to_vec();
    // Task ids are random: the messages are compared with the id masked.
    let masked = |(code, message): (Code, String)| (code, message.replace(&task_a.id, "<task of raw-a>"));
    let fetch = masked(refusal(b.link.fetch_model(&task_a, &b.id).await)?);
    let push = masked(refusal(b.link.push_update(b.upload(&task_a, own)).await)?);
    cluster.shutdown().await;
    Ok([fetch, push])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_for_another_clients_task_is_refused_alike() -> anyhow::Result<()> {
    let mut answers = Vec::new();
    for t in BOTH {
        answers.push(foreign_task_refusals(t).await.with_context(|| format!("over {}", t.name()))?);
    }
    for (code, message) in &answers[0] {
        assert_eq!(*code, Code::PermissionDenied, "{answers:?}");
        assert!(message.contains("<task of raw-a>") && message.contains("raw-b"), "names task and caller: {message}");
    }
    assert_eq!(answers[0], answers[1], "gRPC vs in-process");
    Ok(())
}

/// Three sidecars, one of which stops (its process gone) while it trains round 1; the plan
/// needs `min_clients` of 3. Returns the run's state, round 1's phase and reported count,
/// and the run's failure.
async fn dropout(transport: Transport, min_clients: u32) -> anyhow::Result<(RunState, String, u32, Option<String>)> {
    let mut cluster = trivial_cluster(transport, 2).await?;
    let hold = TrainingHold::round(1);
    let info = fedra_client::data::DatasetInfo { name: "trivial".into(), samples: 1, features: DIM, classes: CLASSES };
    cluster.add_client_with("leaver", "eu", vec![info], Box::new(hold.wrap(Box::new(TrivialTrainer::new(9)))));
    cluster.wait_connected(WAIT).await?;
    let mut p = plan(DIM, CLASSES, 1, 3, min_clients);
    // Only the sidecar's departure can end the round early: the deadline is far away.
    p.round_deadline_seconds = 600.0;
    let mut control = cluster.control().await?;
    let run = control.submit(&p).await?;
    // The leaver has fetched the model and is training when it goes, after the two others
    // reported (a round that cannot reach its quorum fails at once, with what it has).
    let mut events = control.watch(&run).await?;
    let mut reported = 0;
    while reported < 2 {
        let event = tokio::time::timeout(WAIT, events.next()).await?.context("the watch ended")??;
        reported += usize::from(matches!(event, fedra_cli::status::WatchEvent::UpdateReceived { .. }));
    }
    hold.wait_holding(1, WAIT).await?;
    cluster.clients_mut().iter_mut().find(|c| c.id == "leaver").context("the leaver")?.stop().await;
    let end = wait_for_end(&cluster, &run, WAIT).await;
    hold.release();
    let end = end?;
    let round = end.rounds.iter().find(|r| r.round == 1).context("round 1")?;
    let outcome = (end.state, round.phase.clone(), round.reported, end.failure.clone());
    cluster.shutdown().await;
    Ok(outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_mid_round_is_handled_alike() -> anyhow::Result<()> {
    // With a quorum of 2 the round closes without the leaver; with 3 it cannot, and fails.
    for (min_clients, state) in [(2, RunState::Succeeded), (3, RunState::Failed)] {
        let mut outcomes = Vec::new();
        for t in BOTH {
            outcomes.push(dropout(t, min_clients).await.with_context(|| format!("over {}", t.name()))?);
        }
        assert_eq!(outcomes[0].0, state, "min_clients {min_clients}: {outcomes:?}");
        assert_eq!(outcomes[0].2, 2, "the two others reported: {outcomes:?}");
        assert_eq!(outcomes[0], outcomes[1], "gRPC vs in-process, min_clients {min_clients}");
        println!("min_clients {min_clients}: {:?}", outcomes[0]);
    }
    Ok(())
}
