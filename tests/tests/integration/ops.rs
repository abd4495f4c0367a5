//! What operators point their tools at: gRPC health (NOT_SERVING while standing by, SERVING
//! once leading) and server reflection, as Kubernetes probes and grpcurl use them;
//! Prometheus metrics scraped over HTTP during a run; the cost of each round on record; and
//! a graceful SIGTERM of the coordinator process in the middle of a round that loses
//! nothing.

use crate::sandbox::*;
use anyhow::{Context, Result};
use fedra_cli::status::WatchEvent;
use fedra_coordinator::Coordinator;
use fedra_coordinator::config::Config;
use fedra_coordinator::ids::RunId;
use fedra_coordinator::store::{RoundStatus, Store};
use fedra_types::identity::{Identity, Role};
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const WAIT: Duration = Duration::from_secs(120);

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.into() }
}

fn status_of(r: &HealthCheckResponse) -> ServingStatus {
    ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_while_standing_by_and_reflection_lists_every_service() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = Cluster::builder().data_dir(dir.path()).start().await?;
    let admin = cluster.pki().tls(&Identity::new(Role::Admin, None, "ops")?)?;

    // The leader serves: the whole server and each API service.
    let leader = cluster.connect_as(&admin).await?;
    let mut health = HealthClient::new(leader.clone());
    for service in ["", "fedra.v1.RunService", "fedra.v1.FleetService", "fedra.v1.CheckpointService"] {
        let r = health.check(check(service)).await?.into_inner();
        assert_eq!(status_of(&r), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health.check(check("fedra.v1.NoSuchService")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown}");

    // Reflection names every service (what `grpcurl list` prints) and serves their files.
    let services = reflect_services(leader).await?;
    for s in [
        "fedra.v1.RunService",
        "fedra.v1.FleetService",
        "fedra.v1.PrivacyService",
        "fedra.v1.GovernanceService",
        "fedra.v1.CheckpointService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.iter().any(|x| x == s), "reflection lists {s}: {services:?}");
    }

    // A second coordinator on the same store listens at once but stands by: health says
    // NOT_SERVING and the API refuses with UNAVAILABLE, naming why.
    let coordinator_dir = cluster.pki().coordinator().dir.clone();
    let mut config = Config::local(dir.path(), &coordinator_dir, Some(&cluster.pki().crl()));
    config.metrics_listen = Some("127.0.0.1:0".parse()?);
    let starting = Coordinator::bind(&config).await?;
    // Kubernetes' probe port says the same, in plain HTTP.
    let ops = starting.ops_addr().context("the ops port")?;
    let (code, body) = http_get(ops, "/readyz").await?;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("standing by"), "{body}");
    assert_eq!(http_get(ops, "/healthz").await?.0, 200);
    let standby_url = format!("https://{}", starting.addr());
    let leading = tokio::spawn(starting.lead());
    let standby = admin.endpoint(&standby_url)?.connect().await?;
    let mut watch = HealthClient::new(standby).watch(check("")).await?.into_inner();
    let first = watch.message().await?.context("the health watch ended")?;
    assert_eq!(status_of(&first), ServingStatus::NotServing);
    let mut control = cluster.control_at(&standby_url).await?;
    let refused = control.list().await.unwrap_err().to_string();
    assert!(refused.contains("standing by"), "{refused}");

    // The leader stops (releasing the lease): the standby leads, and its health watch says
    // SERVING as the next change.
    cluster.shutdown().await;
    let serving = tokio::time::timeout(WAIT, async {
        while let Some(r) = watch.message().await? {
            if status_of(&r) == ServingStatus::Serving {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("the health watch ended before the standby served")
    })
    .await
    .context("the standby did not serve after the leader stopped")?;
    serving?;
    let coordinator = leading.await??;
    assert!(control.list().await.is_ok(), "the new leader answers the API");
    assert_eq!(http_get(ops, "/readyz").await?.0, 200);
    coordinator.shutdown().await;
    Ok(())
}

/// The services a server's reflection lists.
async fn reflect_services(channel: tonic::transport::Channel) -> Result<Vec<String>> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = |m| ServerReflectionRequest { host: String::new(), message_request: Some(m) };
    let requests = vec![
        request(MessageRequest::ListServices(String::new())),
        request(MessageRequest::FileContainingSymbol("fedra.v1.RunService".into())),
    ];
    let mut answers =
        ServerReflectionClient::new(channel).server_reflection_info(tokio_stream::iter(requests)).await?.into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = answers.message().await?.and_then(|r| r.message_response)
    else {
        anyhow::bail!("reflection did not answer the service list");
    };
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.message().await?.and_then(|r| r.message_response)
    else {
        anyhow::bail!("reflection did not answer the file of fedra.v1.RunService");
    };
    anyhow::ensure!(!files.file_descriptor_proto.is_empty(), "an empty file descriptor answer");
    Ok(list.service.into_iter().map(|s| s.name).collect())
}

/// `GET path` over plain HTTP/1.1, as Prometheus and the kubelet send it: status and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: fedra\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let code = response.get(9..12).and_then(|c| c.parse().ok()).context("an HTTP status line")?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((code, body))
}

/// `GET /metrics`, as Prometheus scrapes it.
async fn scrape(addr: std::net::SocketAddr) -> Result<String> {
    let (code, body) = http_get(addr, "/metrics").await?;
    anyhow::ensure!(code == 200, "scrape answered {code}: {body}");
    Ok(body)
}

/// The value of the sample of `name` whose labels include every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_during_a_run_and_each_rounds_cost_on_record() -> Result<()> {
    // One process holds the simulated coordinator and sidecars: one recorder, one endpoint.
    let (addr, _server) = fedra_telemetry::serve_metrics("127.0.0.1:0".parse()?, std::future::pending()).await?;
    let prices = fedra_coordinator::cost::Prices {
        currency: "EUR".into(),
        per_gib_moved: 100.0,
        per_coordinator_cpu_hour: 10.0,
        per_client_training_hour: 1.0,
    };
    let regions = ["eu", "us", "eu"];
    let clients: Vec<_> = (0..3).map(|i| blob_client(i, regions[i], 4, 2, 80)).collect();
    let priced = prices.clone();
    let cluster =
        Cluster::builder().clients(clients).configure(move |c| c.engine.prices = Some(priced)).start().await?;
    let mut control = cluster.control().await?;
    let run = control.submit(&plan(4, 2, 3, 3, 3)).await?;

    // During the run: once round 1 is published, its series are there.
    let mut events = control.watch(&run).await?;
    tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if matches!(e?, WatchEvent::Published { round: 1, .. }) {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("the run ended before round 1 was published")
    })
    .await
    .context("round 1 was not published")??;
    let during = scrape(addr).await?;
    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(&during, name, labels).with_context(|| format!("no {name} {labels:?} in:\n{during}"))
    };
    assert!(value("fedra_rounds_total", &[("outcome", "published")])? >= 1.0);
    assert!(value("fedra_clients_selected_total", &[])? >= 3.0);
    assert!(value("fedra_updates_reported_total", &[])? >= 3.0);
    assert!(value("fedra_update_bytes_total", &[("region", "eu")])? > 0.0);
    assert!(value("fedra_broadcast_bytes_total", &[("region", "us")])? > 0.0);
    assert!(value("fedra_fold_seconds_count", &[])? >= 3.0);
    assert!(value("fedra_fold_bytes_total", &[])? >= 3.0 * 4.0 * 10.0);
    assert!(value("fedra_round_phase_duration_seconds_count", &[("phase", "training")])? >= 1.0);
    assert!(value("fedra_round_duration_seconds_bucket", &[("outcome", "published"), ("le", "+Inf")])? >= 1.0);
    assert!(value("fedra_store_seconds_count", &[("op", "complete_round")])? >= 1.0);
    assert_eq!(value("fedra_coordinator_serving", &[])?, 1.0);
    assert!(value("fedra_clients_connected", &[])? >= 3.0);
    assert!(value("fedra_staging_uploads_in_use", &[])? >= 0.0);
    // The sidecars' own series.
    assert!(value("fedra_client_tasks_total", &[("kind", "train"), ("outcome", "completed")])? >= 3.0);
    assert!(value("fedra_client_upload_bytes_total", &[])? > 0.0);
    assert!(value("fedra_client_download_bytes_total", &[])? > 0.0);
    assert!(value("fedra_client_train_seconds_count", &[])? >= 3.0);

    let end = wait_for_end(&cluster, &run, WAIT).await?;
    assert_succeeded(&end);
    // `fedra run show` gets the cost per round and region over the API.
    assert!(end.rounds.iter().all(|r| r.cost.len() == 2 && r.cost.iter().all(|c| c.cost.is_some())), "{end:?}");
    let after = scrape(addr).await?;
    assert_eq!(sample(&after, "fedra_rounds_total", &[("outcome", "published")]), Some(3.0), "{after}");
    assert_eq!(sample(&after, "fedra_updates_reported_total", &[]), Some(9.0), "{after}");

    // Each round's cost per region is on record, measured and priced at commit.
    let store = open_store(&cluster).await?;
    let rounds = store.list_rounds(&RunId::new(&run)?).await?;
    assert_eq!(rounds.len(), 3);
    for r in &rounds {
        let regions: Vec<_> = r.cost.iter().map(|c| c.region.as_str()).collect();
        assert_eq!(regions, ["eu", "us"], "round {}: {:?}", r.round, r.cost);
        let eu = &r.cost[0];
        assert_eq!(eu.updates, 2);
        // Every counted update carried the model, and every selected client downloaded it.
        assert!(eu.update_bytes >= 2 * 4 * 10 && eu.broadcast_bytes == 2 * 4 * 10, "{eu:?}");
        assert!(eu.coordinator_cpu_seconds > 0.0 && eu.client_train_seconds > 0.0, "{eu:?}");
        let want = prices.of(eu.update_bytes + eu.broadcast_bytes, eu.coordinator_cpu_seconds, eu.client_train_seconds);
        assert!((eu.cost.unwrap() - want).abs() < 1e-12, "{eu:?}");
        assert_eq!(eu.currency.as_deref(), Some("EUR"));
    }
    store.close().await;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_round_loses_nothing_and_the_round_is_rerun_after_restart() -> Result<()> {
    let spec = fedra_sim::cluster_process::ProcessSpec { binary: crate::cli::coordinator_binary(), env: Vec::new() };
    let hold = TrainingHold::round(2);
    let specs: Vec<_> = (0..3).map(|i| blob_client(i, ["eu", "us"][i % 2], 4, 2, 80)).collect();
    let mut cluster = held_cluster(Cluster::builder().process(spec), specs, &hold).await?;
    let run = cluster.control().await?.submit(&plan(4, 2, 3, 3, 3)).await?;

    // Round 1 is committed and every client is training round 2 when the orchestrator stops
    // the coordinator.
    hold.wait_holding(3, WAIT).await?;
    wait_published(&cluster, &run, 1, WAIT).await?;
    cluster.terminate_coordinator()?;
    let status = cluster.wait_coordinator_exit(WAIT).await?;
    let log = fedra_sim::cluster_process::log_text(cluster.data_dir(), false);
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0; log:\n{log}");
    assert!(log.contains("stop signal received"), "{log}");
    assert!(log.contains("open round attempts recorded as interrupted"), "{log}");

    // On record before any restart: round 1 done, round 2's attempt interrupted.
    let store = open_store(&cluster).await?;
    let id = RunId::new(&run)?;
    let before = store.list_rounds(&id).await?;
    let round1 = before.iter().find(|r| r.round == 1).context("round 1")?.clone();
    assert_eq!(round1.status, RoundStatus::Done, "{before:#?}");
    let round2 = before.iter().find(|r| r.round == 2).context("round 2")?;
    assert_eq!(round2.status, RoundStatus::Interrupted, "{before:#?}");
    store.close().await;

    // Restarted, the coordinator re-runs round 2 and finishes; round 1 is as it was.
    hold.release();
    cluster.restart_coordinator().await?;
    let end = wait_for_end(&cluster, &run, WAIT).await?;
    assert_succeeded(&end);
    assert_eq!(end.completed_rounds, 3);
    let store = open_store(&cluster).await?;
    let after = store.list_rounds(&id).await?;
    let done: Vec<_> = after.iter().filter(|r| r.status == RoundStatus::Done).map(|r| (r.round, r.attempt)).collect();
    assert_eq!(done, [(1, 1), (2, 2), (3, 1)], "{after:#?}");
    assert_eq!(after.iter().find(|r| r.round == 1).and_then(|r| r.checkpoint.clone()), round1.checkpoint);
    store.close().await;
    cluster.shutdown().await;
    Ok(())
}

#[test]
fn json_logs_are_one_object_per_line_with_the_events_fields() -> Result<()> {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let mut child = std::process::Command::new(crate::cli::coordinator_binary())
        .args(["--insecure", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut seen = Vec::new();
    let mut serving = None;
    // Reads until the line that says it serves (or the process closes its output).
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let event: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("a log line that is not JSON: {line}"))?;
        if event["fields"]["message"] == "coordinator serving" {
            serving = Some(event);
            break;
        }
        seen.push(line);
    }
    let serving = serving.with_context(|| format!("no `coordinator serving` line; saw:\n{}", seen.join("\n")))?;
    assert_eq!(serving["level"], "INFO", "{serving}");
    assert!(serving["fields"]["addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{serving}");
    assert!(serving["timestamp"].is_string() && serving["target"].is_string(), "{serving}");
    // SIGTERM stops it gracefully.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(child.wait()?.code(), Some(0));

    let bad = std::process::Command::new(crate::cli::coordinator_binary()).args(["--log-format", "yaml"]).output()?;
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("yaml") && err.contains("json"), "{err}");
    Ok(())
}
