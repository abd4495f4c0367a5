//! `fedra-sim bench rounds --transport inproc`: the same rounds as the gRPC case — the
//! real round engine, N real sidecar sessions with the [`super::TrivialTrainer`], a FedAvg
//! plan submitted and watched over the control API — but the coordinator runs in this
//! process and the sidecars reach it through [`crate::inproc`]: the model and the updates
//! are handed over as buffers, not encoded into chunks on loopback. The control API (submit,
//! watch) stays gRPC, plain text on loopback.
//!
//! What is measured, and how it differs from the gRPC case:
//! - round wall time, train phase and fold time: as for the gRPC case (`Published`,
//!   `Selected` and `Aggregated` events);
//! - CPU seconds per round: this whole process's (coordinator *and* sidecars together),
//!   since the coordinator has no process of its own; the report's `coordinator_cpu_s`
//!   and `bench_cpu_s` both hold it, and the aggregation lower bound (which charges the
//!   coordinator's CPU to folding) is left out;
//! - peak RSS: this whole process's `VmHWM`, reset at the start of the case (so that
//!   cases run one after the other are measured on their own); the report's
//!   `coordinator_peak_rss` and `bench_peak_rss` both hold it. It includes every
//!   sidecar's copy of its update, so it is not comparable with the coordinator bound;
//! - bytes on the wire: none move, so the wire columns are 0.

use super::coordinator_process;
use super::fleet::Fleet;
use super::{CaseReport, GridCase, Observed, RoundObservation, RoundsBenchOptions, model_for, plan};
use crate::inproc::Switchboard;
use anyhow::{Context, Result};
use fedra_cli::control::ControlClient;
use fedra_cli::plan_file::PlanFile;
use fedra_cli::status::WatchEvent;
use fedra_coordinator::Coordinator;
use fedra_coordinator::config::{Config, Transport};
use fedra_pki::ClientTls;
use fedra_types::run::RunState;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// Runs one grid case with the coordinator and the sidecars in this process.
///
/// # Errors
/// The coordinator or the sidecars cannot start, or the control API fails; a run that
/// ends in another state than succeeded is reported in [`CaseReport::state`] instead.
pub(super) async fn run_case(case: GridCase, opts: &RoundsBenchOptions) -> Result<CaseReport> {
    let (input_dim, params) = model_for(case.params);
    let dir = tempfile::Builder::new().prefix("fedra-bench-inproc-").tempdir()?;
    let settings = &opts.coordinator;
    // No TLS: the sidecars do not connect, and the control API is on loopback only.
    let mut config = Config::local(dir.path(), dir.path(), None);
    config.transport = Transport::Insecure;
    config.engine.heartbeat_interval = Duration::from_secs_f64(settings.heartbeat_seconds);
    config.engine.client_timeout = Duration::from_secs_f64(settings.client_timeout_seconds);
    if let Some(n) = settings.max_concurrent_uploads {
        config.max_concurrent_uploads = n;
    }
    if let Some(c) = settings.chunk_bytes {
        config.engine.chunk_bytes = c;
    }
    if let Some(url) = &settings.store_url {
        config.store =
            fedra_coordinator::store::StoreLocation::parse(url).map_err(|e| anyhow::anyhow!("--store-url: {e}"))?;
    }
    // Peak RSS from here on: the previous cases' sidecars and coordinators are gone.
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        eprintln!("  cannot reset this process's peak RSS ({e}); it includes earlier cases");
    }
    let coordinator = Coordinator::start(&config).await.context("starting the in-process coordinator")?;
    let switchboard = Switchboard::default();
    switchboard.set(Some(coordinator.in_process_fleet()));
    let endpoint = coordinator.endpoint();
    let started = Instant::now();
    let ids: Vec<(String, String)> =
        (0..case.clients).map(|i| (format!("bench-{i:05}"), "bench".to_string())).collect();
    let tls = vec![ClientTls::Insecure; case.clients];
    let shape = (input_dim, super::classes_for(case.params));
    let fleet = Fleet::start_via(&endpoint, &ids, tls, shape, opts.seed, Some(&switchboard)).await?;
    let connect_s = started.elapsed().as_secs_f64();
    eprintln!("  {} in-process sidecars connected in {connect_s:.1} s", case.clients);

    let mut control = ControlClient::connect(&endpoint, &ClientTls::Insecure).await?;
    let mut plan = plan(case, opts.rounds, opts.deadline_seconds, opts.seed, &[])?;
    plan.aggregator = opts.aggregator;
    let Observed { rounds, state, error } = observe(&mut control, &plan).await?;
    let peak = coordinator_process::sample(0)?.peak_rss;
    let (restarted, failed) = fleet.totals();
    fleet.stop().await;
    switchboard.set(None);
    coordinator.shutdown().await;
    let state = state.map_or("unknown", RunState::as_str);

    let r = super::summary::Rounds::of(&rounds);
    let fold_per_round = r.median_or_first(|r| r.fold_s);
    let update_bytes = case.clients as f64 * params as f64 * 4.0;
    let steady_cpu = r.median(|r| r.coordinator_cpu_s);
    Ok(CaseReport {
        clients: case.clients,
        params,
        model: format!("logistic_regression input_dim={input_dim} classes={} (transport inproc)", shape.1),
        rounds: opts.rounds,
        state: state.to_string(),
        error,
        connect_s,
        times: r.times(),
        steady_coordinator_cpu_s_median: steady_cpu,
        steady_bench_cpu_s_median: steady_cpu,
        coordinator_peak_rss: peak,
        coordinator_rss_target: 3 * params as u64 * 4 + 64 * 1024 * 1024,
        bench_peak_rss: peak,
        ideal_wire_bytes: 2 * case.clients as u64 * params as u64 * 4,
        // Nothing crosses a wire; the floor is the gRPC case's (it moves bytes over TCP).
        wire_bytes_per_round: None,
        first_round_wire_bytes: None,
        wire_ratio: None,
        steady_loopback_bytes_median: None,
        idle_bytes_per_connection: None,
        floor_round_s: None,
        round_over_floor: None,
        aggregation_gbps_lower_bound: None,
        fold_gbps: fold_per_round.filter(|f| *f > 0.0).map(|f| update_bytes / f / 1e9),
        sidecar_sessions_restarted: restarted,
        sidecar_tasks_failed: failed,
        per_round: rounds,
    })
}

/// Submits `plan` and times its rounds from the event stream, sampling this process's CPU
/// at every `Published` (see the module doc).
async fn observe(control: &mut ControlClient, plan: &PlanFile) -> Result<Observed> {
    let cpu = || coordinator_process::sample(0).map(|s| s.cpu_seconds);
    let mut prev_cpu = cpu()?;
    let t0 = Instant::now();
    let run_id = control.submit(plan).await?;
    let mut prev_published = 0.0;
    let mut rounds: Vec<RoundObservation> = Vec::new();
    let (mut state, mut error) = (None, None);
    let mut events = control.watch(&run_id).await?;
    while let Some(e) = events.next().await {
        match e? {
            WatchEvent::Selected { round, .. } => {
                rounds.retain(|r| r.round != round);
                rounds.push(RoundObservation { round, selected_at: t0.elapsed().as_secs_f64(), ..Default::default() });
            }
            WatchEvent::Published { round, .. } => {
                let now = t0.elapsed().as_secs_f64();
                let cpu = cpu()?;
                if let Some(r) = rounds.iter_mut().find(|r| r.round == round) {
                    r.published(now, prev_published);
                    r.coordinator_cpu_s = cpu - prev_cpu;
                    r.bench_cpu_s = r.coordinator_cpu_s;
                    eprintln!(
                        "  round {round}: {:.3} s (train phase {:.3} s), process {:.3} CPU s, in process",
                        r.wall_s, r.train_phase_s, r.coordinator_cpu_s
                    );
                }
                (prev_published, prev_cpu) = (now, cpu);
            }
            WatchEvent::Aggregated { round, fold_seconds, .. } => {
                if let Some(r) = rounds.iter_mut().find(|r| r.round == round) {
                    r.fold_s = fold_seconds;
                    r.aggregated_at = t0.elapsed().as_secs_f64();
                }
            }
            WatchEvent::RoundFailed { round, reason } => {
                eprintln!("  round {round} failed: {reason}");
                error = Some(format!("round {round} failed: {reason}"));
            }
            WatchEvent::Blocked { round, reason } => {
                error = Some(format!("blocked by policy after round {round}: {reason}"));
                break;
            }
            WatchEvent::RunFinished { state: s, reason } => {
                state = Some(s);
                if let Some(r) = reason {
                    error.get_or_insert(r);
                }
                break;
            }
            WatchEvent::UpdateReceived { .. } | WatchEvent::Evaluated { .. } => {}
        }
    }
    Ok(Observed { rounds, state, error })
}
