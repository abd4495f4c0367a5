//! Compressed updates end to end: int8 and top_k runs over loopback gRPC with real sidecars
//! complete, move a fraction of the f32 bytes (as the coordinator counts them), and land on
//! the aggregate their codec promises; hostile compressed uploads are refused naming what
//! was wrong while the round goes on; a private plan with compression is refused at submit.

use crate::sandbox::*;
use fedra_cli::control::{ControlClient, ControlError};
use fedra_cli::plan_file::PlanFile;
use fedra_cli::status::WatchEvent;
use fedra_proto::compressed::{int8_chunks, sparse_chunks, wire_digest_hex};
use fedra_proto::pb;
use fedra_types::plan::Compression;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;

/// Submits `plan`, follows its events to the end and returns the update bytes the
/// coordinator counted (Aggregated events, summed over rounds) and the published weights.
async fn run_counting_bytes(
    cluster: &Cluster,
    control: &mut ControlClient,
    plan: &PlanFile,
) -> anyhow::Result<(u64, Vec<Vec<f32>>)> {
    let run = control.submit(plan).await?;
    let mut events = control.watch(&run).await?;
    let mut bytes = 0u64;
    let mut aggregated = 0;
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(e) = events.next().await {
            if let WatchEvent::Aggregated { update_bytes, .. } = e? {
                bytes += update_bytes;
                aggregated += 1;
            }
        }
        anyhow::Ok(())
    })
    .await??;
    let status = wait_for_end(cluster, &run, Duration::from_secs(10)).await?;
    assert_succeeded(&status);
    assert_eq!(aggregated, plan.rounds, "one Aggregated event per round");
    // Each round's checkpoint, in order.
    let mut weights = Vec::new();
    for r in &status.rounds {
        let dir = tempfile::tempdir()?;
        let pulled = control.pull_checkpoint(r.checkpoint.as_deref().expect("a checkpoint"), dir.path()).await?;
        let manifest = read_manifest(&pulled.weights)?;
        weights.push(read_weights(&pulled.weights, &manifest)?);
    }
    Ok((bytes, weights))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_runs_complete_with_a_fraction_of_the_bytes() -> anyhow::Result<()> {
    // 4000 parameters, four scripted clients whose models are known: each round's
    // aggregate of the full models is their weighted average.
    let (dim, classes) = (99u32, 40u32);
    let len = (dim * classes + classes) as usize;
    let (cluster, scripts) = scripted_cluster(4, len, |i| 10 + 5 * i as u64, 4096).await?;
    let updates: Vec<_> = scripts.iter().map(|(v, w)| (v, *w)).collect();
    let want = reference_average(&updates);
    let mut control = cluster.control().await?;
    let mut measured = Vec::new();
    for compression in
        [Compression::None, Compression::Int8, Compression::TopK { fraction: 0.1 }, Compression::TopK { fraction: 1.0 }]
    {
        let mut p = plan(dim, classes, 2, 4, 4);
        p.compression = compression;
        let (bytes, rounds) = run_counting_bytes(&cluster, &mut control, &p).await?;
        let got = rounds.last().expect("two rounds");
        measured.push((compression, bytes));
        match compression {
            Compression::None => assert_ulp_equal(got, &want),
            // Every coordinate within one quantization step (|Δ| ≤ 8 here, s ≤ 8/127) of
            // the average, and the errors average out (unbiased rounding).
            Compression::Int8 => {
                let errors: Vec<f32> = got.iter().zip(&want).map(|(g, w)| g - w).collect();
                assert!(errors.iter().all(|e| e.abs() <= 8.0 / 127.0), "an error beyond one step");
                let mean = errors.iter().map(|e| f64::from(*e)).sum::<f64>() / errors.len() as f64;
                assert!(mean.abs() < 2e-3, "int8 rounding biased the aggregate: mean error {mean}");
            }
            // Everything sent: global + (local − global) is each model up to rounding.
            Compression::TopK { fraction } if fraction >= 1.0 => {
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "value {i}: {g} vs {w}");
                }
            }
            // k = 400 coordinates per client and round: the second round moved at least
            // k coordinates and at most the four clients' k each, the rest bit for bit
            // unchanged (a dense decode would move all 4000).
            Compression::TopK { .. } => {
                let moved = rounds[0].iter().zip(got).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                assert!((400..=1600).contains(&moved), "round 2 moved {moved} coordinates");
            }
        }
    }
    let f32_bytes = measured[0].1;
    // 2 rounds × 4 updates × 4000 values × 4 bytes, plus chunk framing.
    assert!(f32_bytes >= 2 * 4 * len as u64 * 4, "{measured:?}");
    let ratio = |i: usize| measured[i].1 as f64 / f32_bytes as f64;
    assert!(ratio(1) <= 0.3, "int8 moved {:.3} of the f32 bytes", ratio(1));
    assert!(ratio(2) <= 0.25, "top_k(0.1) moved {:.3} of the f32 bytes", ratio(2));
    // Sending every coordinate as a pair costs twice the f32 bytes: the count is honest.
    assert!(ratio(3) > 1.9, "top_k(1.0) moved {:.3} of the f32 bytes", ratio(3));
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_plan_with_compression_is_refused_at_submit() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let mut control = cluster.control().await?;
    let mut p = plan(10, 3, 2, 2, 2);
    p.privacy = Some(central(1.0, 0.5, 2));
    p.compression = Compression::TopK { fraction: 0.1 };
    match control.submit(&p).await {
        Err(ControlError::Rpc { code, message }) => {
            assert_eq!(code, Code::InvalidArgument, "{message}");
            assert!(
                message.contains("compression top_k cannot be combined with differential privacy")
                    && message.contains("quantize-after-clip accounting is future work"),
                "{message}"
            );
        }
        other => anyhow::bail!("a private compressed plan was not refused: {other:?}"),
    }
    assert!(control.list().await?.is_empty(), "nothing was created");
    cluster.shutdown().await;
    Ok(())
}

/// Pushes `chunks` with `digest` for `task` and returns the coordinator's answer.
async fn push(
    fleet: &mut pb::fleet_service_client::FleetServiceClient<tonic::transport::Channel>,
    task: &pb::Task,
    client: &str,
    total: usize,
    chunks: Vec<pb::ParamChunk>,
    digest: String,
) -> Result<pb::PushUpdateResponse, tonic::Status> {
    let header = pb::UpdateHeader {
        task_id: task.task_id.clone(),
        client_id: client.into(),
        total_values: total as u64,
        is_delta: false,
        samples: 0,
    };
    let trailer = pb::UpdateTrailer { samples: 10, digest, contributors: 1, ..Default::default() };
    let parts: Vec<pb::UpdatePart> = std::iter::once(pb::update_part::Part::Header(header))
        .chain(chunks.into_iter().map(pb::update_part::Part::Chunk))
        .chain(std::iter::once(pb::update_part::Part::Trailer(trailer)))
        .map(|p| pb::UpdatePart { part: Some(p) })
        .collect();
    fleet.push_update(tokio_stream::iter(parts)).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_compressed_uploads_are_refused_and_the_round_goes_on() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let id = "raw-0";
    let mut fleet = cluster.fleet_as(id, "eu").await?;
    fleet
        .register(pb::RegisterRequest {
            client_id: id.into(),
            region: "eu".into(),
            datasets: vec![pb::DatasetDescriptor { name: "d".into(), samples: 10, features: 0, classes: 0 }],
            members: 1,
            ..Default::default()
        })
        .await?;
    let mut tasks = fleet.subscribe(pb::SubscribeRequest { client_id: id.into() }).await?.into_inner();
    let mut control = cluster.control().await?;
    let mut p = plan(20, 5, 1, 1, 1);
    p.compression = Compression::Int8;
    let run = control.submit(&p).await?;
    let task = tokio::time::timeout(Duration::from_secs(30), tasks.message()).await??.expect("a task");
    assert_eq!(task.compression.map(|c| c.kind), Some(pb::CompressionKind::Int8 as i32));
    let global =
        fedra_client::session::fetch_model(&mut fleet, &fedra_client::convert::task_from_pb(task.clone())?, id).await?;
    let total = global.len();
    // Δ that moves every parameter to 1.0.
    let delta: Vec<f32> = global.iter().map(|g| 1.0 - g).collect();
    let good = int8_chunks(&delta, 64, || 0.5);

    let refused = |answer: Result<pb::PushUpdateResponse, tonic::Status>, want: &str| {
        let status = answer.expect_err("a hostile upload was accepted");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(want), "{:?} should say {want:?}", status.message());
    };
    // Uncompressed chunks in an int8 run.
    let plain: Vec<_> = fedra_proto::chunking::chunks(&vec![1.0f32; total], 64).collect();
    refused(
        push(&mut fleet, &task, id, total, plain.clone(), wire_digest_hex(&plain)).await,
        "is f32-encoded, but this run's updates are int8",
    );
    // A NaN scale.
    let mut nan = good.clone();
    nan[1].scale = f32::NAN;
    refused(push(&mut fleet, &task, id, total, nan.clone(), wire_digest_hex(&nan)).await, "scale NaN");
    // Sparse pairs in an int8 run.
    let sparse = sparse_chunks(total, &[(3, 1.0)], 64);
    refused(push(&mut fleet, &task, id, total, sparse.clone(), wire_digest_hex(&sparse)).await, "is sparse-encoded");
    // The digest of the f32 values rather than of the bytes on the wire.
    let values_digest = fedra_proto::chunking::transfer_digest_hex(&delta);
    refused(
        push(&mut fleet, &task, id, total, good.clone(), values_digest).await,
        "does not match the received values",
    );
    // A chunk that claims more coordinates than it carries.
    let mut short = good.clone();
    short[0].count += 1;
    refused(push(&mut fleet, &task, id, total, short.clone(), wire_digest_hex(&short)).await, "bytes for");

    // None of that touched the round: the honest upload is the only one counted.
    let answer = push(&mut fleet, &task, id, total, good.clone(), wire_digest_hex(&good)).await?;
    assert_eq!(answer.reported, 1);
    let status = wait_for_end(&cluster, &run, Duration::from_secs(60)).await?;
    assert_succeeded(&status);
    assert_eq!(status.rounds[0].reported, 1);
    let dir = tempfile::tempdir()?;
    let pulled =
        control.pull_checkpoint(status.published_checkpoint.as_deref().expect("published"), dir.path()).await?;
    let got = read_weights(&pulled.weights, &read_manifest(&pulled.weights)?)?;
    let step = delta.iter().fold(0.0f32, |m, d| m.max(d.abs())) / 127.0;
    assert!(got.iter().all(|v| (v - 1.0).abs() <= step * 1.001), "the model is not global + the int8 Δ");
    cluster.shutdown().await;
    Ok(())
}
