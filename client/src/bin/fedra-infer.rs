//! `fedra-infer`: the regional inference node. Parse arguments (exit 64 when bad), load the
//! trusted signing keys, then follow what serves and answer predictions until Ctrl-C or
//! SIGTERM. Wiring only; the node is `fedra_client::infer`.

use clap::Parser;
use fedra_client::infer::RunningNode;
use fedra_client::infer::node::NodeSettings;
use fedra_client::infer::stats::DriftSettings;
use fedra_client::trainer::burn_logreg::{DeviceChoice, open_device};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// fedra inference node: serves a region's serving (and canary) checkpoint of one model.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Coordinator endpoint.
    #[arg(long, env = "FEDRA_COORDINATOR", default_value = "https://127.0.0.1:7070")]
    coordinator: String,
    /// The node's identity directory (an `inference` certificate of its region, from
    /// `fedra pki issue --role inference --region R`), with the trusted signing keys.
    #[arg(long, env = "FEDRA_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Plain text without a certificate (only to an `--insecure` coordinator).
    #[arg(long)]
    insecure: bool,
    /// Trusted checkpoint signing keys (default: checkpoint-signing.pub in --tls-dir).
    #[arg(long, env = "FEDRA_TRUST")]
    trust: Option<PathBuf>,
    #[arg(long)]
    region: String,
    #[arg(long)]
    model: String,
    /// Where applications reach InferenceService (plain gRPC: keep it on loopback or behind
    /// the deployment's mesh).
    #[arg(long, default_value = "127.0.0.1:7080")]
    listen: SocketAddr,
    /// The node's name in reports on an --insecure coordinator (its certificate's otherwise).
    #[arg(long, default_value = "infer")]
    name: String,
    /// cpu, cuda[:N] (build with --features cuda) or wgpu (--features wgpu).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Price of one CPU-hour, for the cost per 1,000 predictions (0: not reported).
    #[arg(long, default_value_t = 0.0)]
    price_per_cpu_hour: f64,
    /// PSI above which a feature (or the prediction mix) counts as drifted.
    #[arg(long, default_value_t = 0.25)]
    drift_psi: f64,
    /// Rows needed before drift is reported.
    #[arg(long, default_value_t = 500)]
    drift_min_rows: u64,
    /// Seconds between reports to the coordinator.
    #[arg(long, default_value_t = 10.0)]
    report_seconds: f64,
    /// Serve Prometheus metrics on http://ADDR/metrics (e.g. 0.0.0.0:9466).
    #[arg(long, env = "FEDRA_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Log lines as `text` or `json` (one object per line, for log shippers).
    #[arg(long, env = "FEDRA_LOG_FORMAT", default_value = "text")]
    log_format: fedra_telemetry::LogFormat,
}

fn fail(msg: String, code: u8) -> ExitCode {
    eprintln!("fedra-infer: {msg}");
    ExitCode::from(code)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _telemetry = match fedra_telemetry::init("fedra-infer", args.log_format, "info") {
        Ok(guard) => guard,
        Err(e) => return fail(e.to_string(), 64),
    };
    if let Some(addr) = args.metrics_listen
        && let Err(e) = fedra_telemetry::serve_metrics(addr, std::future::pending()).await
    {
        return fail(format!("--metrics-listen: {e}"), 64);
    }
    let tls = match (&args.tls_dir, args.insecure) {
        (_, true) => fedra_pki::ClientTls::Insecure,
        (Some(dir), false) => match fedra_pki::ClientTls::load(&fedra_pki::IdentityDir::new(dir)) {
            Ok(t) => t,
            Err(e) => return fail(e.to_string(), 64),
        },
        (None, false) => return fail("pass --tls-dir DIR (an inference identity) or --insecure".into(), 64),
    };
    let trust_path = match (&args.trust, &args.tls_dir) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => dir.join(fedra_pki::signing::TRUST_FILE),
        (None, None) => return fail("pass --trust FILE (the deployment's checkpoint-signing.pub)".into(), 64),
    };
    let trust = match fedra_pki::signing::TrustedKeys::load(&trust_path) {
        Ok(t) => t,
        Err(e) => return fail(e.to_string(), 64),
    };
    if !(args.report_seconds > 0.0 && args.report_seconds <= 3600.0) {
        return fail(format!("--report-seconds must be in (0, 3600], got {}", args.report_seconds), 64);
    }
    let device = match args
        .device
        .parse::<DeviceChoice>()
        .map_err(|e| e.to_string())
        .and_then(|d| open_device(d).map_err(|e| e.to_string()))
    {
        Ok(d) => d,
        Err(e) => return fail(format!("--device {}: {e}", args.device), 64),
    };
    let settings = NodeSettings {
        region: args.region,
        model: args.model,
        name: args.name,
        price_per_cpu_hour: args.price_per_cpu_hour,
        drift: DriftSettings { psi_threshold: args.drift_psi, min_rows: args.drift_min_rows },
        report_interval: Duration::from_secs_f64(args.report_seconds),
    };
    let node = match RunningNode::start(&args.coordinator, &tls, trust, device, settings, args.listen).await {
        Ok(n) => n,
        Err(e) => return fail(e.to_string(), 69),
    };
    tracing::info!(addr = %node.addr, "inference node listening");
    fedra_telemetry::stop_signal().await;
    node.shutdown().await;
    ExitCode::SUCCESS
}
