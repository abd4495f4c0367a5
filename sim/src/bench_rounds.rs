//! `fedra-sim bench rounds`: end-to-end federated rounds over real gRPC on loopback,
//! measured the way issue #6 asks, so that fedra can be compared with Flower on the same
//! machine (`bench/rounds.sh` runs both and writes BENCHMARKS.md).
//!
//! Per grid case (N clients × P float32 parameters) a *fresh* `fedra-coordinator` process
//! is started (so its peak RSS is the case's own), N client sidecars run in this process
//! (the real [`Sidecar`] protocol loop, one gRPC connection each) with a
//! [`TrivialTrainer`] (received parameters + a seeded per-client perturbation), a FedAvg
//! run of R rounds with every client selected and evaluation off is submitted over the
//! control API like the CLI does, and its round events are timed.
//!
//! What is measured, and from where:
//! - round wall time: between consecutive `Published` events as this process receives
//!   them (round 1 from the submit call), i.e. the cadence a user sees; the steady state is
//!   the rounds between the first and the last (see [`summary`]);
//! - coordinator CPU seconds: utime + stime of the coordinator process (`/proc/<pid>/stat`)
//!   sampled at the same events;
//! - coordinator peak RSS: `VmHWM` of that process at the end of the case;
//! - bytes on the wire: kernel TCP payload counters of the sidecars' connections (see
//!   [`wire_bytes`]) against the ideal 2·N·P·4 (one model down, one update up per client),
//!   over the whole run per round;
//! - aggregation throughput: update bytes per round (N·P·4) divided by the coordinator's
//!   CPU seconds per round. The coordinator does not report the time it spends folding, so
//!   this charges *all* of its per-round CPU (gRPC, decoding, digests, checkpoint writing)
//!   to aggregation: a lower bound on the folding rate itself.

pub mod coordinator_process;
mod fleet;
pub mod floor;
mod inproc;
pub mod summary;
mod table;
pub mod tiered;
mod trivial_trainer;
pub mod wire_bytes;

pub use coordinator_process::{CoordinatorProcess, CoordinatorSettings, ProcSample};
pub use table::table;
pub use trivial_trainer::TrivialTrainer;

use anyhow::{Context, Result, bail};
use fedra_cli::control::ControlClient;
use fedra_cli::plan_file::PlanFile;
use fedra_cli::status::WatchEvent;
use fedra_types::run::RunState;
use fleet::Fleet;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use tokio_stream::StreamExt;
use wire_bytes::WireSample;

/// Classes of the benchmark's logistic-regression model; P = CLASSES · (input_dim + 1).
const CLASSES: usize = 10;
/// Sidecars started (and awaited) at a time, so that 10,000 connections do not overflow
/// the coordinator's accept backlog at once.
const CONNECT_BATCH: usize = 250;

/// One grid point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GridCase {
    pub clients: usize,
    /// Requested parameter count; the model's exact count is in [`CaseReport::params`].
    pub params: usize,
}

impl std::str::FromStr for GridCase {
    type Err = String;
    /// `NxP` with optional `k`/`M` suffixes, e.g. `10x1M`, `1000x100k`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn count(v: &str) -> Option<usize> {
            let (digits, mult) = match v.chars().last()? {
                'k' | 'K' => (&v[..v.len() - 1], 1_000),
                'm' | 'M' => (&v[..v.len() - 1], 1_000_000),
                _ => (v, 1),
            };
            digits.replace('_', "").parse::<usize>().ok().map(|n| n * mult)
        }
        let (n, p) = s.split_once(['x', 'X']).ok_or_else(|| format!("{s:?} is not NxP, e.g. 10x1M"))?;
        match (count(n), count(p)) {
            (Some(clients), Some(params)) if clients >= 1 && params >= 2 * CLASSES => Ok(Self { clients, params }),
            _ => Err(format!("{s:?}: need N ≥ 1 clients and P ≥ {} parameters, e.g. 10x1M", 2 * CLASSES)),
        }
    }
}

/// The issue's grid: 10 × 1M, 10 × 10M, 100 × 1M, 1000 × 100k.
pub const ISSUE_GRID: [GridCase; 4] = [
    GridCase { clients: 10, params: 1_000_000 },
    GridCase { clients: 10, params: 10_000_000 },
    GridCase { clients: 100, params: 1_000_000 },
    GridCase { clients: 1000, params: 100_000 },
];

/// Command-line flags of `fedra-sim bench rounds`.
#[derive(clap::Args, Debug, Clone)]
pub struct RoundsArgs {
    /// Run one case with this many clients (needs --params) instead of the issue's grid.
    #[arg(long, requires = "params")]
    pub clients: Option<usize>,
    /// Parameters of the one case (float32), e.g. 100000.
    #[arg(long, requires = "clients")]
    pub params: Option<usize>,
    /// Cases as NxP with k/M suffixes, e.g. --grid 10x1M,1000x100k (default: the issue's
    /// grid 10x1M,10x10M,100x1M,1000x100k).
    #[arg(long, value_delimiter = ',', conflicts_with = "clients")]
    pub grid: Option<Vec<GridCase>>,
    /// Rounds per case; the first is reported separately, the rest are "steady".
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// The coordinator binary (default: `fedra-coordinator` next to this executable).
    #[arg(long)]
    pub coordinator: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, default_value_t = 5.0)]
    pub heartbeat_seconds: f64,
    #[arg(long, default_value_t = 60.0)]
    pub client_timeout_seconds: f64,
    /// Coordinator's max_concurrent_uploads (default: its own default).
    #[arg(long)]
    pub max_concurrent_uploads: Option<usize>,
    /// Coordinator's chunk_bytes (default: its own default).
    #[arg(long)]
    pub chunk_bytes: Option<usize>,
    /// RUST_LOG of the coordinator process.
    #[arg(long, default_value = "warn")]
    pub coordinator_log: String,
    /// The coordinator's store (`postgres://…`; default SQLite in its data directory).
    /// Cases run one after the other on it, each coordinator releasing the lease as it stops.
    #[arg(long)]
    pub store_url: Option<String>,
    /// Round deadline in the submitted plan.
    #[arg(long, default_value_t = 1800.0)]
    pub deadline_seconds: f64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Run the coordinator with --insecure (plain text, no identities) instead of mutual
    /// TLS 1.3, e.g. to measure what TLS costs.
    #[arg(long)]
    pub insecure: bool,
    /// Also run each case in tiers, right after its flat run: a global coordinator and this
    /// many regional aggregators (processes), the clients dealt over the regions.
    #[arg(long)]
    pub regions: Option<usize>,
    /// Aggregation rule of the plan: mean (default), median, trimmed_mean:TRIM,
    /// multi_krum:F[:M] or norm_bound:FACTOR.
    #[arg(long, default_value = "mean")]
    pub aggregator: fedra_types::plan::Aggregator,
    /// Skip the floor measurement (see [`floor`]) that runs after each case.
    #[arg(long)]
    pub no_floor: bool,
    /// How the sidecars reach the coordinator: grpc (a coordinator process, loopback gRPC)
    /// or inproc (the coordinator in this process, buffers handed over; see `inproc`).
    #[arg(long, value_enum, default_value = "grpc")]
    pub transport: crate::inproc::Transport,
}

/// Validated options.
#[derive(Debug, Clone)]
pub struct RoundsBenchOptions {
    pub cases: Vec<GridCase>,
    pub rounds: u32,
    pub coordinator: CoordinatorSettings,
    pub json: Option<PathBuf>,
    pub deadline_seconds: f64,
    pub seed: u64,
    /// Also run each case in tiers with this many regions (see [`tiered`]).
    pub regions: Option<usize>,
    pub aggregator: fedra_types::plan::Aggregator,
    pub floor: bool,
    pub transport: crate::inproc::Transport,
}

impl RoundsArgs {
    /// # Errors
    /// Values out of range (the message names the flag).
    pub fn into_options(self) -> Result<RoundsBenchOptions> {
        let cases = match (self.clients, self.params, self.grid) {
            (Some(clients), Some(params), _) => {
                format!("{clients}x{params}")
                    .parse::<GridCase>()
                    .map_err(|e| anyhow::anyhow!("--clients/--params: {e}"))?;
                vec![GridCase { clients, params }]
            }
            (_, _, Some(grid)) => grid,
            _ => ISSUE_GRID.to_vec(),
        };
        if self.rounds < 1 {
            bail!("--rounds must be at least 1");
        }
        let binary = match self.coordinator {
            Some(p) => p,
            None => std::env::current_exe()?.parent().context("executable has no directory")?.join("fedra-coordinator"),
        };
        Ok(RoundsBenchOptions {
            cases,
            rounds: self.rounds,
            coordinator: CoordinatorSettings {
                binary,
                heartbeat_seconds: self.heartbeat_seconds,
                client_timeout_seconds: self.client_timeout_seconds,
                max_concurrent_uploads: self.max_concurrent_uploads,
                chunk_bytes: self.chunk_bytes,
                log_filter: self.coordinator_log,
                insecure: self.insecure,
                store_url: self.store_url,
            },
            json: self.json,
            deadline_seconds: self.deadline_seconds,
            seed: self.seed,
            regions: self.regions,
            aggregator: self.aggregator,
            floor: !self.no_floor,
            transport: self.transport,
        })
    }
}

/// One round as observed from the event stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundObservation {
    pub round: u32,
    /// Seconds since submit when `Selected` / `Published` arrived.
    pub selected_at: f64,
    pub published_at: f64,
    /// Round wall time (previous `Published`, or submit for round 1, to this `Published`).
    pub wall_s: f64,
    /// `Selected` → `Published` of this round.
    pub train_phase_s: f64,
    pub coordinator_cpu_s: f64,
    pub bench_cpu_s: f64,
    pub wire_up: u64,
    pub wire_down: u64,
    pub loopback: u64,
    /// The coordinator's own time spent folding this round's updates (Aggregated event).
    pub fold_s: f64,
    /// `Aggregated` → `Published`: writing the checkpoint and committing the round, the part
    /// of a round that overlapping publication with the next round could hide.
    pub publish_s: f64,
    /// Seconds since submit when `Aggregated` arrived.
    #[serde(skip)]
    pub aggregated_at: f64,
}

impl RoundObservation {
    /// Records the round's `Published` event at `now` (seconds since submit), the previous
    /// round's (or the submit's) at `prev_published`: the wall, train-phase and publish times.
    pub fn published(&mut self, now: f64, prev_published: f64) {
        self.published_at = now;
        self.wall_s = now - prev_published;
        self.train_phase_s = now - self.selected_at;
        self.publish_s = if self.aggregated_at > 0.0 { now - self.aggregated_at } else { 0.0 };
    }
}

/// Everything measured for one grid case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    pub clients: usize,
    /// Exact parameter count of the model used.
    pub params: usize,
    pub model: String,
    pub rounds: u32,
    pub state: String,
    pub error: Option<String>,
    /// Seconds to start all sidecars and see them connected.
    pub connect_s: f64,
    pub per_round: Vec<RoundObservation>,
    /// Round 1 and the steady rounds' times (flat in the JSON).
    #[serde(flatten)]
    pub times: summary::RoundTimes,
    pub steady_coordinator_cpu_s_median: Option<f64>,
    pub steady_bench_cpu_s_median: Option<f64>,
    pub coordinator_peak_rss: u64,
    /// 3 × model size + 64 MiB.
    pub coordinator_rss_target: u64,
    /// Peak RSS of this (sidecar) process so far; not a target, for context.
    pub bench_peak_rss: u64,
    /// 2 · N · P · 4.
    pub ideal_wire_bytes: u64,
    /// The run's wire bytes (submit to last `Published`) per published round.
    pub wire_bytes_per_round: Option<u64>,
    pub first_round_wire_bytes: Option<u64>,
    /// steady (or first, with one round) wire bytes / ideal.
    pub wire_ratio: Option<f64>,
    pub steady_loopback_bytes_median: Option<u64>,
    /// N · P · 4 / coordinator CPU seconds per round, GB/s (a lower bound, see module docs).
    pub aggregation_gbps_lower_bound: Option<f64>,
    /// Coordinator RSS growth from before the sidecars connected to all of them connected
    /// and idle, per connection (bytes).
    pub idle_bytes_per_connection: Option<u64>,
    /// The machine's floor for the same case (see [`floor`]): median steady round, s.
    pub floor_round_s: Option<f64>,
    /// Steady (or first) round time over the floor's.
    pub round_over_floor: Option<f64>,
    /// N · P · 4 / the coordinator's reported fold time (median of steady rounds), GB/s:
    /// the rate of the fold itself, off the critical path of gRPC and digests.
    pub fold_gbps: Option<f64>,
    pub sidecar_sessions_restarted: u32,
    pub sidecar_tasks_failed: u32,
}

/// Raises the soft open-files limit to the hard one; returns the new soft limit.
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// The benchmark's model for about `params` parameters: logistic regression with 10
/// classes, so P = 10 · (input_dim + 1) (exact when `params` is a multiple of 10).
pub fn model_for(params: usize) -> (usize, usize) {
    let classes = classes_for(params);
    let input_dim = (params / classes).saturating_sub(1).max(1);
    (input_dim, classes * (input_dim + 1))
}

/// Classes of the benchmark's model for `params`: 10, or more where 10 would need more input
/// features than a plan may have (2^20): a 250M-parameter model has 239.
pub fn classes_for(params: usize) -> usize {
    CLASSES.max(params.div_ceil(1 << 20))
}

fn plan(case: GridCase, rounds: u32, deadline: f64, seed: u64, regions: &[String]) -> Result<PlanFile> {
    let (input_dim, _) = model_for(case.params);
    let classes = classes_for(case.params);
    let text = format!(
        r#"
version = 1
regions = {regions:?}
rounds = {rounds}
clients_per_round = {n}
min_clients = {n}
round_deadline_seconds = {deadline}
seed = {seed}

[model]
kind = "logistic_regression"
name = "bench-rounds"
input_dim = {input_dim}
classes = {classes}

[local]
epochs = 1
batch_size = 1
learning_rate = 0.1
"#,
        n = case.clients
    );
    Ok(PlanFile::parse(&text, "bench-rounds plan")?)
}

async fn wire(port: u16) -> WireSample {
    tokio::task::spawn_blocking(move || wire_bytes::sample(port)).await.unwrap_or_default()
}

/// Runs one grid case end to end.
///
/// # Errors
/// The coordinator or the sidecars cannot start, or the control API fails; a run that
/// ends in another state than succeeded is reported in [`CaseReport::state`] instead.
pub async fn run_case(case: GridCase, opts: &RoundsBenchOptions) -> Result<CaseReport> {
    if opts.transport == crate::inproc::Transport::Inproc {
        return inproc::run_case(case, opts).await;
    }
    let (input_dim, params) = model_for(case.params);
    let nofile = raise_nofile();
    if (case.clients as u64) + 256 > nofile {
        bail!("{} clients need more than the open-files limit of {nofile}; raise `ulimit -n`", case.clients);
    }
    let coordinator = CoordinatorProcess::start(&opts.coordinator).await?;
    let endpoint = coordinator.endpoint();
    let base_rss = coordinator.sample()?.rss;
    let started = Instant::now();
    let ids: Vec<(String, String)> =
        (0..case.clients).map(|i| (format!("bench-{i:05}"), "bench".to_string())).collect();
    let tls = coordinator.client_tls(&ids)?;
    let fleet = match Fleet::start(&endpoint, &ids, tls, (input_dim, classes_for(case.params)), opts.seed).await {
        Ok(f) => f,
        Err(e) => bail!("{e:#}; coordinator log:\n{}", coordinator.log_tail()),
    };
    let connect_s = started.elapsed().as_secs_f64();
    let idle_rss = coordinator.sample()?.rss;
    eprintln!("  {} sidecars connected in {connect_s:.1} s", case.clients);

    let mut control = ControlClient::connect(&endpoint, &coordinator.control_tls()?).await?;
    let mut plan = plan(case, opts.rounds, opts.deadline_seconds, opts.seed, &[])?;
    plan.aggregator = opts.aggregator;
    let Observed { rounds, state, error } = observe(&mut control, &plan, &coordinator, None).await?;
    let peak = coordinator.sample()?.peak_rss;
    let bench_peak = coordinator_process::sample(0)?.peak_rss;
    let (restarted, failed) = fleet.totals();
    fleet.stop().await;
    let state = state.map_or("unknown", RunState::as_str);
    if state != RunState::Succeeded.as_str() {
        eprintln!("  run ended {state}; coordinator log tail:\n{}", coordinator.log_tail());
    }
    coordinator.stop().await;

    let r = summary::Rounds::of(&rounds);
    let ideal = 2 * case.clients as u64 * params as u64 * 4;
    let update_bytes = case.clients as f64 * params as f64 * 4.0;
    // Over the whole run: a round's window (Published to Published) is shifted by the overlap
    // of the previous checkpoint's write with it, by a different amount each time, while the
    // windows from the submit to the last Published cover every round's bytes exactly once.
    let published: Vec<u64> = rounds.iter().filter(|r| r.published_at > 0.0).map(|r| r.wire_up + r.wire_down).collect();
    let steady_wire = (!published.is_empty()).then(|| published.iter().sum::<u64>() / published.len() as u64);
    let first_wire = r.first.map(|r| r.wire_up + r.wire_down);
    let cpu_per_round = r.median_or_first(|r| r.coordinator_cpu_s);
    let fold_per_round = r.median_or_first(|r| r.fold_s);
    let model_bytes = params as u64 * 4;
    let floor_round_s = if opts.floor {
        floor::measure(case.clients, params, opts.rounds)
            .await
            .inspect_err(|e| eprintln!("  floor measurement failed: {e:#}"))
            .ok()
            .map(|f| f.round_s_median)
    } else {
        None
    };
    let round_s = r.median_or_first(|r| r.wall_s);
    Ok(CaseReport {
        idle_bytes_per_connection: Some(idle_rss.saturating_sub(base_rss) / case.clients as u64),
        floor_round_s,
        round_over_floor: round_s.zip(floor_round_s).map(|(r, f)| r / f),
        clients: case.clients,
        params,
        model: format!("logistic_regression input_dim={input_dim} classes={}", classes_for(case.params)),
        rounds: opts.rounds,
        state: state.to_string(),
        error,
        connect_s,
        times: r.times(),
        steady_coordinator_cpu_s_median: r.median(|r| r.coordinator_cpu_s),
        steady_bench_cpu_s_median: r.median(|r| r.bench_cpu_s),
        coordinator_peak_rss: peak,
        coordinator_rss_target: 3 * model_bytes + 64 * 1024 * 1024,
        bench_peak_rss: bench_peak,
        ideal_wire_bytes: ideal,
        wire_bytes_per_round: steady_wire,
        first_round_wire_bytes: first_wire,
        wire_ratio: steady_wire.or(first_wire).map(|b| b as f64 / ideal as f64),
        steady_loopback_bytes_median: r.median(|r| r.loopback as f64).map(|b| b as u64),
        aggregation_gbps_lower_bound: cpu_per_round.filter(|c| *c > 0.0).map(|c| update_bytes / c / 1e9),
        fold_gbps: fold_per_round.filter(|f| *f > 0.0).map(|f| update_bytes / f / 1e9),
        sidecar_sessions_restarted: restarted,
        sidecar_tasks_failed: failed,
        per_round: rounds,
    })
}

/// What the event stream of one run showed.
struct Observed {
    rounds: Vec<RoundObservation>,
    state: Option<RunState>,
    error: Option<String>,
}

/// Submits `plan` to the coordinator process `coordinator` (a standalone or a global one)
/// and times its rounds from the event stream, sampling that process's CPU and the bytes
/// it exchanged at every `Published`: this process's TCP sockets to its port, or with a
/// `relay` in front of it (other processes' connections), the relay's counts.
async fn observe(
    control: &mut ControlClient,
    plan: &PlanFile,
    coordinator: &CoordinatorProcess,
    relay: Option<&crate::proxy::CountingProxy>,
) -> Result<Observed> {
    let bytes = || async {
        match relay {
            Some(r) => WireSample { up: r.to_target(), down: r.from_target(), ..WireSample::default() },
            None => wire(coordinator.port).await,
        }
    };
    let mut prev_wire = bytes().await;
    let mut prev_cpu = coordinator.sample()?.cpu_seconds;
    let mut prev_bench_cpu = coordinator_process::sample(0)?.cpu_seconds;
    let t0 = Instant::now();
    let run_id = control.submit(plan).await?;
    let mut prev_published = 0.0;
    let mut rounds: Vec<RoundObservation> = Vec::new();
    let mut state = None;
    let mut error = None;
    let mut events = control.watch(&run_id).await?;
    while let Some(e) = events.next().await {
        match e? {
            WatchEvent::Selected { round, .. } => {
                rounds.retain(|r| r.round != round);
                rounds.push(RoundObservation { round, selected_at: t0.elapsed().as_secs_f64(), ..Default::default() });
            }
            WatchEvent::Published { round, .. } => {
                let now = t0.elapsed().as_secs_f64();
                let cpu = coordinator.sample()?.cpu_seconds;
                let bench_cpu = coordinator_process::sample(0)?.cpu_seconds;
                let w = bytes().await;
                if let Some(r) = rounds.iter_mut().find(|r| r.round == round) {
                    r.published(now, prev_published);
                    r.coordinator_cpu_s = cpu - prev_cpu;
                    r.bench_cpu_s = bench_cpu - prev_bench_cpu;
                    r.wire_up = w.up.saturating_sub(prev_wire.up);
                    r.wire_down = w.down.saturating_sub(prev_wire.down);
                    r.loopback = w.loopback.saturating_sub(prev_wire.loopback);
                    eprintln!(
                        "  round {round}: {:.3} s (train phase {:.3} s, publish {:.3} s), coordinator {:.3} CPU s, wire {:.1} MB",
                        r.wall_s,
                        r.train_phase_s,
                        r.publish_s,
                        r.coordinator_cpu_s,
                        (r.wire_up + r.wire_down) as f64 / 1e6
                    );
                }
                (prev_published, prev_cpu, prev_bench_cpu, prev_wire) = (now, cpu, bench_cpu, w);
            }
            WatchEvent::RoundFailed { round, reason } => {
                eprintln!("  round {round} failed: {reason}");
                error = Some(format!("round {round} failed: {reason}"));
            }
            WatchEvent::Blocked { round, reason } => {
                eprintln!("  blocked by policy after round {round}: {reason}");
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
            WatchEvent::Aggregated { round, fold_seconds, .. } => {
                if let Some(r) = rounds.iter_mut().find(|r| r.round == round) {
                    r.fold_s = fold_seconds;
                    r.aggregated_at = t0.elapsed().as_secs_f64();
                }
            }
            WatchEvent::UpdateReceived { .. } | WatchEvent::Evaluated { .. } => {}
        }
    }
    drop(events);
    Ok(Observed { rounds, state, error })
}

/// Host facts recorded with the results.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: kib / (1024.0 * 1024.0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
    }
}

/// Runs every case in turn (a failed case is reported and the next one runs), prints the
/// table and writes the JSON file if asked. Returns the reports.
///
/// # Errors
/// Only failures to write the JSON file; case failures are in the reports.
pub async fn run(opts: &RoundsBenchOptions) -> Result<Vec<CaseReport>> {
    let machine = machine();
    eprintln!(
        "fedra bench rounds: {} case(s), {} rounds each, coordinator {} on {} cores of {}",
        opts.cases.len(),
        opts.rounds,
        opts.coordinator.binary.display(),
        machine.cores,
        machine.cpu
    );
    let mut reports = Vec::new();
    let mut tiers = Vec::new();
    for case in &opts.cases {
        eprintln!("case {} clients × {} parameters", case.clients, model_for(case.params).1);
        let report = match run_case(*case, opts).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("  case failed: {e:#}");
                table::failed_case(*case, opts, format!("{e:#}"))
            }
        };
        reports.push(report);
        if let Some(regions) = opts.regions {
            match tiered::run_tiered(*case, regions, opts).await {
                Ok(t) => tiers.push(t),
                Err(e) => eprintln!("  case in tiers failed: {e:#}"),
            }
        }
        if let Some(path) = &opts.json {
            let doc = serde_json::json!({
                "machine": machine,
                "command": std::env::args().collect::<Vec<_>>().join(" "),
                "rounds": opts.rounds,
                "coordinator_log": opts.coordinator.log_filter,
                "store": if opts.coordinator.store_url.is_some() { "postgresql" } else { "sqlite" },
                "heartbeat_seconds": opts.coordinator.heartbeat_seconds,
                "cases": reports,
                "tiered": tiers,
            });
            std::fs::write(path, serde_json::to_string_pretty(&doc)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    println!("{}", table(&reports));
    if !tiers.is_empty() {
        println!("{}", tiered::table(&reports, &tiers));
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_cases_parse_with_suffixes_and_models_hit_p_exactly() {
        assert_eq!("10x1M".parse::<GridCase>().unwrap(), GridCase { clients: 10, params: 1_000_000 });
        assert_eq!("1000x100k".parse::<GridCase>().unwrap(), GridCase { clients: 1000, params: 100_000 });
        assert!("10".parse::<GridCase>().is_err());
        assert!("0x1M".parse::<GridCase>().is_err());
        for c in ISSUE_GRID {
            assert_eq!(model_for(c.params).1, c.params);
        }
        assert_eq!(model_for(10_000_000).0, 999_999);
    }

    #[test]
    fn plan_disables_evaluation_and_selects_everyone() {
        let p = plan(GridCase { clients: 100, params: 1_000_000 }, 5, 60.0, 7, &[]).unwrap();
        assert_eq!((p.clients_per_round, p.min_clients, p.rounds), (100, 100, 5));
        assert_eq!(p.evaluation.every_rounds, 0);
        assert_eq!(p.model.architecture.layout().total(), 1_000_000);
    }
}
