//! Bad input gets a clear error naming what was wrong, and changes nothing else.

use crate::sandbox::*;
use fedra_cli::control::ControlError;
use fedra_proto::chunking::{chunks, transfer_digest_hex};
use fedra_proto::pb;
use std::time::Duration;
use tonic::Code;

fn rpc(e: ControlError) -> (Code, String) {
    match e {
        ControlError::Rpc { code, message } => (code, message),
        other => panic!("expected an RPC error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_plans_are_refused_at_submit_naming_the_field() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let mut control = cluster.control().await?;
    type Edit = Box<dyn Fn(&mut fedra_cli::plan_file::PlanFile)>;
    let cases: Vec<(Edit, Code, &str)> = vec![
        (Box::new(|p| p.rounds = 0), Code::InvalidArgument, "plan.rounds must be in 1..=100000, got 0"),
        (
            Box::new(|p| p.min_clients = 9),
            Code::InvalidArgument,
            "plan.min_clients (9) must not exceed clients_per_round (3)",
        ),
        (Box::new(|p| p.local.learning_rate = -1.0), Code::InvalidArgument, "plan.local.learning_rate"),
        (Box::new(|p| p.round_deadline_seconds = 0.0), Code::InvalidArgument, "plan.round_deadline_seconds"),
        (Box::new(|p| p.regions = vec!["eu west".into()]), Code::InvalidArgument, "plan.regions"),
        (
            Box::new(|p| {
                p.model = fedra_cli::plan_file::ModelSection {
                    name: "m".into(),
                    architecture: fedra_types::model::Architecture::LogisticRegression { input_dim: 0, classes: 3 },
                }
            }),
            Code::InvalidArgument,
            "plan.model.input_dim must be in 1..=1048576, got 0",
        ),
        (
            Box::new(|p| {
                p.model.architecture = fedra_types::model::Architecture::Cnn {
                    height: 8,
                    width: 8,
                    channels: 1,
                    conv: vec![fedra_types::model::ConvLayer { filters: 4, kernel: 4 }],
                    dense: vec![],
                    classes: 10,
                }
            }),
            Code::InvalidArgument,
            "plan.model.conv[0].kernel: kernel size 4 must be odd",
        ),
        (
            Box::new(|p| {
                p.model.architecture =
                    fedra_types::model::Architecture::Mlp { input_dim: 4, hidden: vec![8, 0], classes: 3 }
            }),
            Code::InvalidArgument,
            "plan.model.hidden[1] must be in 1..=1048576, got 0",
        ),
        (
            Box::new(|p| p.local.momentum = 1.5),
            Code::InvalidArgument,
            "plan.local.momentum must be in 0..=0.999, got 1.5",
        ),
        (
            Box::new(|p| p.evaluation.every_rounds = 5),
            Code::InvalidArgument,
            "plan.evaluation.every_rounds must be in 0..=2, got 5",
        ),
        (
            Box::new(|p| p.initial_checkpoint = Some("run-000000000000.r0001".into())),
            Code::NotFound,
            "checkpoint run-000000000000.r0001 not found",
        ),
    ];
    for (edit, code, text) in cases {
        let mut p = plan(4, 3, 2, 3, 2);
        edit(&mut p);
        let (got_code, message) = rpc(control.submit(&p).await.expect_err("must be refused"));
        assert_eq!(got_code, code, "{message}");
        assert!(message.contains(text), "{message:?} should contain {text:?}");
    }
    assert!(control.list().await?.is_empty(), "refused plans leave no run behind");
    let (code, message) = rpc(control.cancel("run-000000000000").await.unwrap_err());
    assert_eq!((code, message.as_str()), (Code::NotFound, "run run-000000000000 not found"));
    let (code, _) = rpc(control.get("not a run").await.unwrap_err());
    assert_eq!(code, Code::InvalidArgument);
    cluster.shutdown().await;
    Ok(())
}

fn header(task: &str, client: &str, total: u64) -> pb::UpdatePart {
    pb::UpdatePart {
        part: Some(pb::update_part::Part::Header(pb::UpdateHeader {
            task_id: task.into(),
            client_id: client.into(),
            total_values: total,
            is_delta: false,
            samples: 0,
        })),
    }
}

fn trailer(samples: u64, digest: String) -> pb::UpdatePart {
    pb::UpdatePart {
        part: Some(pb::update_part::Part::Trailer(pb::UpdateTrailer {
            contributors: 1,
            samples,
            metrics: None,
            update_norm: 1.0,
            digest,
            scopes: vec![],
            reference: None,
        })),
    }
}

fn upload(task: &str, client: &str, values: &[f32], samples: u64, sha: Option<String>) -> Vec<pb::UpdatePart> {
    let mut parts = vec![header(task, client, values.len() as u64)];
    parts.extend(chunks(values, 16).map(|c| pb::UpdatePart { part: Some(pb::update_part::Part::Chunk(c)) }));
    parts.push(trailer(samples, sha.unwrap_or_else(|| transfer_digest_hex(values))));
    parts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_updates_are_refused_and_the_round_still_completes() -> anyhow::Result<()> {
    let cluster = Cluster::builder().start().await?;
    let mut fleet = cluster.fleet_as("raw", "eu").await?;
    let mut other = cluster.fleet_as("other", "eu").await?;

    // Subscribing before registering is refused.
    let mut ghost = cluster.fleet_as("ghost", "eu").await?;
    let e = ghost.subscribe(pb::SubscribeRequest { client_id: "ghost".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("ghost is not registered"), "{}", e.message());
    let e = fleet
        .register(pb::RegisterRequest {
            members: 1,
            session_id: String::new(),
            client_id: "raw".into(),
            region: "eu".into(),
            datasets: vec![],
            capabilities: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "datasets: a client must describe at least one dataset")
    );

    // Oversized registrations are refused before anything is stored: too many datasets,
    // a megabyte-long name (echoed truncated), a sample count beyond the documented range.
    let dataset = |name: String, samples: u64| pb::DatasetDescriptor { name, samples, features: 4, classes: 3 };
    let oversized = [
        ((0..65).map(|i| dataset(format!("d{i}"), 1)).collect::<Vec<_>>(), "datasets must hold 1..=64 items, got 65"),
        (vec![dataset("n".repeat(1 << 20), 1)], "datasets[0].name must be 1..=128 bytes, got 1048576"),
        (vec![dataset("d".into(), u64::MAX)], "datasets[0].samples must be in 0..=1099511627776"),
    ];
    for (datasets, want) in oversized {
        let e = fleet
            .register(pb::RegisterRequest {
                members: 1,
                session_id: String::new(),
                client_id: "raw".into(),
                region: "eu".into(),
                datasets,
                capabilities: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with(want) && e.message().len() < 300, "{}", e.message());
    }
    for (id, fleet) in [("raw", &mut fleet), ("other", &mut other)] {
        fleet
            .register(pb::RegisterRequest {
                members: 1,
                session_id: String::new(),
                client_id: id.into(),
                region: "eu".into(),
                datasets: vec![pb::DatasetDescriptor { name: "d".into(), samples: 10, features: 4, classes: 3 }],
                capabilities: None,
            })
            .await?;
    }
    let mut tasks = fleet.subscribe(pb::SubscribeRequest { client_id: "raw".into() }).await?.into_inner();
    let mut control = cluster.control().await?;
    let mut p = plan(4, 3, 1, 1, 1);
    p.regions = vec!["eu".into()];
    let run = control.submit(&p).await?;
    // "other" never subscribed, so "raw" is the only eligible client.
    let task = tokio::time::timeout(Duration::from_secs(10), tasks.message()).await??.expect("task");
    let total = 4 * 3 + 3;
    let good: Vec<f32> = (0..total).map(|i| i as f32 / 10.0).collect();
    let id = task.task_id.as_str();

    let refuse = |parts: Vec<pb::UpdatePart>| {
        let mut fleet = fleet.clone();
        async move { fleet.push_update(tokio_stream::iter(parts)).await.expect_err("must be refused") }
    };
    let e = refuse(upload(id, "raw", &good[..10], 10, None)).await;
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "update declares 10 values, the model has 15"));
    let e = refuse(upload(id, "raw", &good, 10, Some("00".repeat(32)))).await;
    assert!(e.message().starts_with("trailer.digest"), "{}", e.message());
    let e = refuse(upload(id, "raw", &good, 11, None)).await;
    assert_eq!(e.message(), "update claims 11 samples, client raw registered 10");
    let e = refuse(upload(id, "raw", &good, 0, None)).await;
    assert!(e.message().contains("0 samples") || e.message().contains("trailer.samples"), "{}", e.message());
    // Numbers that would break the store or the manifest are refused at the edge.
    let e = refuse(upload(id, "raw", &good, u64::MAX, None)).await;
    assert!(e.message().starts_with("trailer.samples must be in 1..="), "{}", e.message());
    let mut huge_metric = upload(id, "raw", &good, 10, None);
    if let Some(pb::update_part::Part::Trailer(t)) = &mut huge_metric.last_mut().unwrap().part {
        t.metrics = Some(pb::TrainingMetrics { loss_after: 1.7e308, ..Default::default() });
    }
    let e = refuse(huge_metric).await;
    assert!(e.message().starts_with("trailer.metrics.loss_after must be finite and in 0..=1e12"), "{}", e.message());
    // Claiming another client's id on raw's own connection is refused at the edge ...
    let e = refuse(upload(id, "other", &good, 10, None)).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("the certificate says fedra://client/eu/raw"), "{}", e.message());
    // ... and another certified client cannot push for raw's task either.
    let e = other.push_update(tokio_stream::iter(upload(id, "other", &good, 10, None))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    let mut nan = good.clone();
    nan[7] = f32::NAN;
    let e = refuse(upload(id, "raw", &nan, 10, None)).await;
    assert_eq!(e.message(), "update value at index 7 is not finite");
    let mut no_trailer = upload(id, "raw", &good, 10, None);
    no_trailer.pop();
    let e = refuse(no_trailer).await;
    assert!(e.message().contains("without a trailer"), "{}", e.message());
    let mut out_of_order = upload(id, "raw", &good, 10, None);
    out_of_order.swap(1, 2);
    let e = refuse(out_of_order).await;
    assert!(e.message().contains("out of order"), "{}", e.message());
    let e = refuse(upload("task-unknown", "raw", &good, 10, None)).await;
    assert_eq!(e.code(), Code::FailedPrecondition);

    // None of that touched the round: the good update is counted and is the whole average.
    let resp = fleet.clone().push_update(tokio_stream::iter(upload(id, "raw", &good, 10, None))).await?.into_inner();
    assert!(resp.accepted);
    assert_eq!(resp.reported, 1);
    let e = refuse(upload(id, "raw", &good, 10, None)).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "a second update for the same task: {}", e.message());

    let status = wait_for_end(&cluster, &run, Duration::from_secs(30)).await?;
    assert_succeeded(&status);
    let dir = tempfile::tempdir()?;
    let pulled = control.pull_checkpoint(status.published_checkpoint.as_deref().unwrap(), dir.path()).await?;
    let manifest = read_manifest(&pulled.weights)?;
    assert_eq!(read_weights(&pulled.weights, &manifest)?, good);
    let (code, _) = rpc(control.cancel(&run).await.unwrap_err());
    assert_eq!(code, Code::FailedPrecondition, "a finished run cannot be cancelled");
    cluster.shutdown().await;
    Ok(())
}
