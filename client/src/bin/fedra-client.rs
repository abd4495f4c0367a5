//! `fedra-client`: the regional sidecar. Parse config (exit 64 on bad config), load the
//! local dataset, then register and work tasks until Ctrl-C or SIGTERM.

use clap::Parser;
use fedra_client::config::ClientConfig;
use fedra_client::session::Sidecar;
use fedra_client::trainer::burn_logreg::{BurnTrainer, DeviceChoice};
use std::path::PathBuf;
use std::process::ExitCode;

/// fedra client sidecar: trains locally on this region's data.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Sidecar config file (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// Coordinator endpoint, or several separated by commas (the coordinators sharing a
    /// store; the one that leads answers); overrides FEDRA_COORDINATOR and the file.
    #[arg(long)]
    coordinator: Option<String>,
    /// Training device: cpu, cuda[:N] (build with --features cuda) or wgpu (--features wgpu).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Connect in plain text without a certificate (only to an `--insecure` coordinator).
    #[arg(long)]
    insecure: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match ClientConfig::load(&args.config, args.coordinator, args.insecure) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fedra-client: bad config: {e}");
            return ExitCode::from(64);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let device = match args.device.parse::<DeviceChoice>() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("fedra-client: --device: {e}");
            return ExitCode::from(64);
        }
    };
    let data = match config.dataset.load(&config.settings.client_id, &config.base_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("fedra-client: {e}");
            return ExitCode::from(65);
        }
    };
    let info = vec![data.train.info()];
    let trainer = match BurnTrainer::with_holdout(data.train, data.holdout).with_device(device) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("fedra-client: --device {}: {e}", args.device);
            return ExitCode::from(69);
        }
    };
    let sidecar = Sidecar::new(config.settings, info, Box::new(trainer));
    let outcome = sidecar
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedra-client: {e} (check client_id and region against the certificate in tls_dir)");
            ExitCode::from(77)
        }
    }
}
