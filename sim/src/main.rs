//! `fedra-sim`: in-process federations for demos and experiments.

use clap::{Parser, Subcommand};
use fedra_sim::quickstart::{QuickstartOptions, run};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "fedra-sim", version, about = "Run a real coordinator and client sidecars in one process")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let Command::Quickstart { clients, rounds, out, seed } = Args::parse().command;
    if clients < 1 {
        eprintln!("fedra-sim: --clients must be at least 1");
        return ExitCode::from(64);
    }
    match run(&QuickstartOptions { clients, rounds, out, seed }).await {
        Ok(r) if r.state == fedra_client::wire::RunState::Succeeded => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(2),
        Err(e) => {
            eprintln!("fedra-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
