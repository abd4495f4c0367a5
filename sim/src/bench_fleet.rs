//! `fedra-sim bench fleet`: the coordinator's round engine with a large registered fleet,
//! driven in-process through its [`EngineHandle`] (no gRPC: 100,000 TLS connections do not
//! fit this machine, and the question here is the engine's own cost).
//!
//! It registers and subscribes `registered` clients (each registration is a real store
//! write, SQLite or PostgreSQL), heartbeats every one of them, then submits a one-round run
//! that needs `select` of them and times until the engine has selected them. Reported:
//! registrations per second, the engine's resident memory per registered client (RSS growth
//! of this process over the registrations, the open task streams included), the mean
//! heartbeat latency over the whole fleet, and the submit-to-selection time.

use crate::bench_rounds::coordinator_process::sample;
use anyhow::{Context, Result};
use chrono::Utc;
use fedra_coordinator::checkpoint::Checkpoints;
use fedra_coordinator::ids::{ClientId, RegionId};
use fedra_coordinator::round::{Engine, EngineSettings, RunEventKind};
use fedra_coordinator::store::{ClientRecord, DatasetDescriptor, OpenStore, StoreLocation};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `fedra-sim bench fleet` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct FleetArgs {
    /// Clients registered and subscribed.
    #[arg(long, default_value_t = 100_000)]
    pub registered: usize,
    /// Clients the run selects.
    #[arg(long, default_value_t = 1_000)]
    pub select: u32,
    /// The store (`sqlite://PATH` or `postgres://…`); default a SQLite file in a
    /// temporary directory.
    #[arg(long)]
    pub store_url: Option<String>,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// What one run of the benchmark measured.
#[derive(Debug, Clone)]
pub struct FleetReport {
    pub store: String,
    pub registered: usize,
    pub select: u32,
    pub registrations_per_second: f64,
    pub bytes_per_client: f64,
    pub heartbeat_micros: f64,
    pub selection_seconds: f64,
    pub peak_rss_mib: f64,
}

impl FleetReport {
    /// One Markdown table row.
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.1} | {:.3} | {:.0} |",
            self.store,
            self.registered,
            self.select,
            self.registrations_per_second,
            self.bytes_per_client,
            self.heartbeat_micros,
            self.selection_seconds,
            self.peak_rss_mib
        )
    }

    /// The table's header.
    pub fn header() -> &'static str {
        "| store | registered | selected | registrations / s | engine bytes / registered client | heartbeat µs (mean) | submit → selected (s) | peak RSS MiB |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    }
}

const PLAN: &str = r#"version = 1
rounds = 1
clients_per_round = CLIENTS
min_clients = CLIENTS
round_deadline_seconds = 600
regions = ["eu", "us", "apac"]
seed = 7
[model]
kind = "logistic_regression"
name = "fleet-bench"
input_dim = 8
classes = 2
[local]
epochs = 1
batch_size = 32
learning_rate = 0.05
"#;

/// Runs the benchmark once.
///
/// # Errors
/// Store, engine or plan failures.
pub async fn run(args: &FleetArgs) -> Result<FleetReport> {
    let tmp = tempfile::tempdir()?;
    let location = match &args.store_url {
        Some(url) => StoreLocation::parse(url).map_err(anyhow::Error::msg)?,
        None => StoreLocation::Sqlite(tmp.path().join("fedra.db")),
    };
    let store_name = match &location {
        StoreLocation::Sqlite(_) => "SQLite",
        StoreLocation::Postgres(_) => "PostgreSQL",
    };
    let opened = OpenStore::open(&location).await?;
    let store = opened.shared();
    // Every client stays online without heartbeats for the length of the benchmark.
    let settings = EngineSettings {
        client_timeout: Duration::from_secs(3600),
        heartbeat_interval: Duration::from_secs(600),
        ..EngineSettings::default()
    };
    let (engine, task) =
        Engine::start(Arc::clone(&store), Checkpoints::with_ephemeral_key(tmp.path().join("artifacts")), settings)
            .await?;
    let before = sample(0)?.rss;
    let regions = ["eu", "us", "apac"];
    let ids: Vec<ClientId> =
        (0..args.registered).map(|i| ClientId::new(format!("c{i:06}"))).collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut streams = Vec::with_capacity(ids.len());
    for batch in ids.chunks(args.concurrency.max(1)) {
        let calls = batch.iter().enumerate().map(|(i, id)| {
            let engine = engine.clone();
            let record = ClientRecord {
                id: id.clone(),
                region: RegionId::new(regions[i % regions.len()]).expect("valid region"),
                datasets: vec![DatasetDescriptor { name: "d".into(), samples: 100, features: 8, classes: 2 }],
                devices: vec!["cpu".into()],
                registered_at: Utc::now(),
                members: 1,
            };
            async move {
                engine.register(record, format!("session-{id}")).await?;
                engine.subscribe(id.clone()).await
            }
        });
        for stream in futures::future::join_all(calls).await {
            streams.push(stream.context("registering a client")?);
        }
    }
    let registering = started.elapsed();
    let after = sample(0)?.rss;
    let beat = Instant::now();
    for id in &ids {
        engine.heartbeat(id.clone()).await?;
    }
    let heartbeat_micros = beat.elapsed().as_secs_f64() * 1e6 / ids.len() as f64;

    let plan_file = fedra_cli::plan_file::PlanFile::parse(&PLAN.replace("CLIENTS", &args.select.to_string()), "plan")?;
    let plan = fedra_coordinator::grpc::convert::plan_from_pb(fedra_cli::convert::plan_to_pb(&plan_file))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut events = engine.all_events().await?;
    let submitted = Instant::now();
    let run = engine.submit(plan, None).await?;
    let selection_seconds = loop {
        let e = events.recv().await.context("the event stream ended")?;
        if e.run == run
            && let RunEventKind::Selected { clients, .. } = &e.kind
        {
            anyhow::ensure!(clients.len() == args.select as usize, "selected {} clients", clients.len());
            break submitted.elapsed().as_secs_f64();
        }
    };
    let peak = sample(0)?.peak_rss;
    drop(streams);
    engine.shutdown().await;
    let _ = task.await;
    opened.close().await;
    Ok(FleetReport {
        store: store_name.to_string(),
        registered: args.registered,
        select: args.select,
        registrations_per_second: args.registered as f64 / registering.as_secs_f64(),
        bytes_per_client: after.saturating_sub(before) as f64 / args.registered as f64,
        heartbeat_micros,
        selection_seconds,
        peak_rss_mib: peak as f64 / (1024.0 * 1024.0),
    })
}
