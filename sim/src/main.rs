//! `fedra-sim`: in-process federations for demos and experiments.

use clap::{Parser, Subcommand};
use fedra_client::trainer::burn_logreg::DeviceChoice;
use fedra_sim::quickstart::{QuickstartOptions, run};
use fedra_sim::scenario::Scenario;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "fedra-sim", version, about = "Run a real coordinator and client sidecars in one process")]
struct Args {
    /// Serve Prometheus metrics of the simulated coordinator and sidecars (one process) on
    /// http://ADDR/metrics while the command runs.
    #[arg(long, global = true)]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a scenario file (dataset, federation, plan, faults, sweep) and write its run
    /// directory: metrics.csv/json, SVG plots, summary.md with the fault report.
    Run {
        scenario: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Override the scenario's number of rounds.
        #[arg(long)]
        rounds: Option<u32>,
        /// Override the scenario's seeds, e.g. --seeds 0,1,2.
        #[arg(long, value_delimiter = ',')]
        seeds: Option<Vec<u64>>,
        /// How the sidecars reach the coordinator: grpc (loopback, mutual TLS) or inproc
        /// (the same session and engine code, buffers handed over instead of chunks).
        #[arg(long, value_enum, default_value = "grpc")]
        transport: fedra_sim::inproc::Transport,
    },
    /// Compare two run directories (final metrics and per-round test accuracy).
    Compare { a: PathBuf, b: PathBuf },
    /// Six clients in three regions, five FedAvg rounds on generated data.
    Quickstart {
        #[arg(long, default_value_t = 6)]
        clients: usize,
        /// Override the plan's number of rounds.
        #[arg(long)]
        rounds: Option<u32>,
        /// Output directory (coordinator store, checkpoints, pulled copies).
        #[arg(long, default_value = "fedra-quickstart")]
        out: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Where the clients train: cpu, cuda:N or wgpu (GPUs need a build with
        /// `--features cuda` or `--features wgpu`).
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
        /// Run in tiers: a global coordinator and this many regional aggregators (1 to 3),
        /// each next to its region's clients; only regional aggregates reach the global one.
        #[arg(long)]
        regions: Option<usize>,
    },
    /// Benchmarks (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// End-to-end rounds: a fedra-coordinator process and N sidecars over loopback gRPC
    /// (or `--transport inproc`: the coordinator in this process, buffers handed over)
    /// with trivial training; round time, coordinator CPU and peak RSS, bytes on the wire.
    Rounds(Box<fedra_sim::bench_rounds::RoundsArgs>),
    /// Memory that certified but hostile connections can pin in a coordinator process:
    /// every stream a partial message of the largest accepted size (SECURITY.md's bound).
    PinnedMemory(fedra_sim::bench_pinned::PinnedArgs),
    /// The round engine with a large registered fleet (in-process, real store):
    /// registrations per second, memory per registered client, heartbeat cost and the
    /// time to select a cohort.
    Fleet(fedra_sim::bench_fleet::FleetArgs),
    /// The inference node: predictions per second, p50/p99 latency and CPU seconds per
    /// 1,000 predictions for logistic regression and an MLP at batch 1 and 64.
    Infer(fedra_sim::bench_infer::InferArgs),
    /// The server side of `bench rounds`' floor measurement (started by it, in a process of
    /// its own).
    #[command(hide = true)]
    FloorPeer {
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        params: usize,
        #[arg(long)]
        rounds: u32,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .init();
    let args = Args::parse();
    if let Some(addr) = args.metrics_listen
        && let Err(e) = fedra_telemetry::serve_metrics(addr, std::future::pending()).await
    {
        eprintln!("fedra-sim: --metrics-listen: {e}");
        return ExitCode::from(64);
    }
    match args.command {
        Command::Quickstart { clients, rounds, out, seed, device, regions } => {
            if clients < 1 {
                eprintln!("fedra-sim: --clients must be at least 1");
                return ExitCode::from(64);
            }
            if regions.is_some_and(|r| !(1..=3).contains(&r)) {
                eprintln!("fedra-sim: --regions must be 1, 2 or 3 (the quickstart's regions are eu, us and apac)");
                return ExitCode::from(64);
            }
            match run(&QuickstartOptions { clients, rounds, out, seed, device, regions }).await {
                Ok(r) if r.state == Some(fedra_types::run::RunState::Succeeded) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(2),
                Err(e) => {
                    eprintln!("fedra-sim: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { scenario, out, rounds, seeds, transport } => {
            let mut s = match Scenario::load(&scenario) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("fedra-sim: {e:#}");
                    return ExitCode::from(64);
                }
            };
            if let Some(r) = rounds {
                s.rounds = r;
            }
            if let Some(seeds) = seeds {
                s.seeds = seeds;
            }
            s.transport = transport;
            match fedra_sim::scenario::run(&s, &out).await {
                Ok(report) => {
                    println!("{}", std::fs::read_to_string(out.join("summary.md")).unwrap_or_default());
                    println!("run directory: {}", report.dir.display());
                    if report.failed_runs.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) }
                }
                Err(e) => {
                    eprintln!("fedra-sim: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench { what: BenchCommand::Rounds(args) } => {
            let opts = match (*args).into_options() {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("fedra-sim: {e:#}");
                    return ExitCode::from(64);
                }
            };
            match fedra_sim::bench_rounds::run(&opts).await {
                Ok(reports) if reports.iter().all(|r| r.state == "succeeded") => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(2),
                Err(e) => {
                    eprintln!("fedra-sim: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench { what: BenchCommand::FloorPeer { clients, params, rounds } } => {
            match fedra_sim::bench_rounds::floor::serve_peer(clients, params, rounds).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fedra-sim: floor server: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Bench { what: BenchCommand::Fleet(args) } => match fedra_sim::bench_fleet::run(&args).await {
            Ok(report) => {
                println!("{}\n{}", fedra_sim::bench_fleet::FleetReport::header(), report.row());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fedra-sim: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench { what: BenchCommand::Infer(args) } => match fedra_sim::bench_infer::run(&args).await {
            Ok(points) => {
                println!("{}", fedra_sim::bench_infer::table(&points));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fedra-sim: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Bench { what: BenchCommand::PinnedMemory(args) } => match fedra_sim::bench_pinned::run(&args).await {
            Ok(report) => {
                println!("{}", report.table());
                let within = report.per_connection() <= report.bound_per_connection;
                if within && report.honest_call_ok && !report.over_limit_admitted {
                    ExitCode::SUCCESS
                } else {
                    eprintln!("fedra-sim: a bound did not hold (see the table)");
                    ExitCode::from(2)
                }
            }
            Err(e) => {
                eprintln!("fedra-sim: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Compare { a, b } => match fedra_sim::scenario::compare_dirs(&a, &b) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fedra-sim: {e:#}");
                ExitCode::from(64)
            }
        },
    }
}
