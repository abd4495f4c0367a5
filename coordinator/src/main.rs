//! `fedra-coordinator`: parse config (exit 64 on bad config), start (standing by while
//! another coordinator on the same store leads), serve until Ctrl-C or SIGTERM, then stop;
//! exit 75 when deposed (another coordinator took the lease over).

use clap::Parser;
use fedra_coordinator::Coordinator;
use fedra_coordinator::config::{Config, RawConfig, RawTls, Transport};
use std::path::PathBuf;
use std::process::ExitCode;

/// fedra coordinator: schedules federated rounds and aggregates client updates.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TOML config file (see README); FEDRA_* environment variables and flags override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:7070.
    #[arg(long)]
    listen: Option<String>,
    /// Directory for the SQLite store (and artifacts unless --artifact-dir is given).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The store: sqlite://PATH or postgres://…; overrides store_url (default: the SQLite
    /// file in the data directory).
    #[arg(long)]
    store_url: Option<String>,
    /// Directory checkpoints are published into, laid out by region (unless the config's
    /// [artifacts] names object stores).
    #[arg(long)]
    artifact_dir: Option<PathBuf>,
    /// Identity directory (ca.pem, cert.pem, key.pem) for mutual TLS; overrides [tls].dir.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// The CA's revocation list, re-read when it changes; overrides [tls].crl.
    #[arg(long)]
    tls_crl: Option<PathBuf>,
    /// The policy set in force (a directory of policies/*.toml); overrides policy_dir.
    /// Re-read on SIGHUP (an invalid set is refused and the old one kept).
    #[arg(long)]
    policy_dir: Option<PathBuf>,
    /// The region this coordinator runs in (one of the policy set's); overrides location.
    #[arg(long)]
    location: Option<String>,
    /// Serve plain text without identities. Only on a loopback address; for local debugging.
    #[arg(long)]
    insecure: bool,
    /// Log lines as `text` or `json` (one object per line, for log shippers).
    #[arg(long, env = "FEDRA_LOG_FORMAT", default_value = "text")]
    log_format: fedra_telemetry::LogFormat,
    /// Serve the read-only dashboard on this loopback address, e.g. 127.0.0.1:9464 (`[web]`).
    #[arg(long)]
    web_listen: Option<String>,
    /// Serve /metrics, /healthz and /readyz (no auth) on this address, e.g. 0.0.0.0:9463, for
    /// Prometheus and Kubernetes probes; overrides metrics_listen (FEDRA_METRICS_LISTEN).
    #[arg(long)]
    metrics_listen: Option<String>,
}

fn load(args: Args) -> Result<Config, fedra_coordinator::config::ConfigError> {
    let file = match &args.config {
        Some(p) => RawConfig::from_file(p)?,
        None => RawConfig::default(),
    };
    let flags = RawConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        store_url: args.store_url,
        artifact_dir: args.artifact_dir,
        tls: (args.tls_dir.is_some() || args.tls_crl.is_some()).then_some(RawTls {
            dir: args.tls_dir,
            crl: args.tls_crl,
            handshake_timeout_seconds: None,
            max_connections_per_identity: None,
        }),
        insecure: args.insecure,
        policy_dir: args.policy_dir,
        location: args.location,
        web: args
            .web_listen
            .map(|listen| fedra_coordinator::config::web::RawWeb { listen: Some(listen), ..Default::default() }),
        metrics_listen: args.metrics_listen,
        ..RawConfig::default()
    };
    Config::validate(file.merge_env()?.merge(flags))
}

#[tokio::main]
async fn main() -> ExitCode {
    if let Err(e) = fedra_coordinator::crash::check_env() {
        eprintln!("fedra-coordinator: bad config: {e}");
        return ExitCode::from(64);
    }
    let args = Args::parse();
    let log_format = args.log_format;
    let config = match load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fedra-coordinator: bad config: {e}");
            return ExitCode::from(64);
        }
    };
    let _telemetry = match fedra_telemetry::init("fedra-coordinator", log_format, "info") {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("fedra-coordinator: bad config: {e}");
            return ExitCode::from(64);
        }
    };
    if config.transport == Transport::Insecure {
        tracing::warn!(listen = %config.listen, "--insecure: serving plain text WITHOUT identities or authorization; every caller may do everything");
    }
    // Handlers installed before anything starts: a SIGTERM while standing by (or starting)
    // stops the process cleanly instead of killing it.
    let mut stop = std::pin::pin!(fedra_telemetry::stop_signal());
    let started = tokio::select! {
        started = Coordinator::start(&config) => started,
        () = &mut stop => {
            tracing::info!("stopped before leading");
            return ExitCode::SUCCESS;
        }
    };
    let coordinator = match started {
        Ok(c) => c,
        Err(fedra_coordinator::LaunchError::Config(e)) => {
            eprintln!("fedra-coordinator: bad config: {e}");
            return ExitCode::from(64);
        }
        Err(e) => {
            eprintln!("fedra-coordinator: {e}");
            return ExitCode::FAILURE;
        }
    };
    #[cfg(unix)]
    let reloads = tokio::spawn(reload_on_sighup(coordinator.governance()));
    let deposed = tokio::select! {
        () = &mut stop => None,
        reason = coordinator.deposed() => Some(reason),
    };
    #[cfg(unix)]
    reloads.abort();
    coordinator.shutdown().await;
    match deposed {
        None => ExitCode::SUCCESS,
        Some(reason) => {
            // Another coordinator leads; an orchestrator restarts this one as a standby.
            eprintln!("fedra-coordinator: deposed: {reason}");
            ExitCode::from(DEPOSED)
        }
    }
}

/// Exit status of a coordinator that lost the lease (EX_TEMPFAIL: start it again).
const DEPOSED: u8 = 75;

/// SIGHUP re-reads the policy directory (`Coordinator::reload_policy`'s rules apply).
#[cfg(unix)]
async fn reload_on_sighup(governance: fedra_coordinator::governance::PolicyReloader) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        // The reloader logs and audits both outcomes; nothing more to do with either here.
        let _ = governance.reload("coordinator (SIGHUP)").await;
    }
}
