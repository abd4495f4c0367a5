//! `fedra-client`: the regional sidecar. Parse config (exit 64 on bad config), load the
//! local dataset, then register and work tasks until Ctrl-C or SIGTERM (a task in
//! progress is abandoned; the coordinator's round goes on without it).

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
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 0.0.0.0:9465).
    #[arg(long, env = "FEDRA_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Log lines as `text` or `json` (one object per line, for log shippers).
    #[arg(long, env = "FEDRA_LOG_FORMAT", default_value = "text")]
    log_format: fedra_telemetry::LogFormat,
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
    let _telemetry = match fedra_telemetry::init("fedra-client", args.log_format, "info") {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("fedra-client: bad config: {e}");
            return ExitCode::from(64);
        }
    };
    if let Some(addr) = args.metrics_listen
        && let Err(e) = fedra_telemetry::serve_metrics(addr, std::future::pending()).await
    {
        eprintln!("fedra-client: --metrics-listen: {e}");
        return ExitCode::from(64);
    }
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
    let outcome = sidecar.run(fedra_telemetry::stop_signal()).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedra-client: {e} (check client_id and region against the certificate in tls_dir)");
            ExitCode::from(77)
        }
    }
}
