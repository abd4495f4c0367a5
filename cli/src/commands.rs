//! The `fedra` command line for data scientists: a thin layer over [`ControlClient`].
//! Errors print one line on stderr and exit non-zero:
//! 64 bad usage or plan file, 69 coordinator unreachable, 1 refused by the coordinator,
//! 2 a watched run ended failed or cancelled.

use crate::control::{ControlClient, ControlError};
use crate::plan_file::PlanFile;
use crate::status::{RunStatus, WatchEvent};
use clap::{Parser, Subcommand};
use fedra_types::run::RunState;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_stream::StreamExt;

#[derive(Parser, Debug)]
#[command(name = "fedra", version, about = "Submit and follow federated runs, list and pull checkpoints")]
pub struct Cli {
    /// Coordinator endpoint, or several separated by commas (coordinators sharing a store:
    /// the leader answers).
    #[arg(long, global = true, env = "FEDRA_COORDINATOR", default_value = "https://127.0.0.1:7070")]
    coordinator: String,
    /// Your identity directory (ca.pem, cert.pem, key.pem from `fedra pki issue`): the
    /// coordinator decides what you may do from its certificate.
    #[arg(long, global = true, env = "FEDRA_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Connect in plain text without a certificate (only to an `--insecure` coordinator).
    #[arg(long, global = true)]
    insecure: bool,
    #[command(subcommand)]
    command: Command,
}

/// Where and as whom to connect.
struct Target {
    endpoint: String,
    tls_dir: Option<PathBuf>,
    insecure: bool,
}

impl Target {
    /// The trusted checkpoint signing keys: `--trust`, else the identity directory's.
    fn trust(&self, explicit: Option<&PathBuf>) -> Result<fedra_pki::signing::TrustedKeys, Failure> {
        let path = match (explicit, &self.tls_dir) {
            (Some(p), _) => p.clone(),
            (None, Some(dir)) if dir.join(fedra_pki::signing::TRUST_FILE).exists() => {
                dir.join(fedra_pki::signing::TRUST_FILE)
            }
            _ => {
                return Err(Failure(
                    "no trusted checkpoint signing key: pass --trust FILE (the deployment's checkpoint-signing.pub)"
                        .into(),
                    64,
                ));
            }
        };
        fedra_pki::signing::TrustedKeys::load(&path).map_err(|e| Failure(e.to_string(), 64))
    }

    async fn connect(&self) -> Result<ControlClient, Failure> {
        let tls = if self.insecure {
            fedra_pki::ClientTls::Insecure
        } else {
            let Some(dir) = &self.tls_dir else {
                return Err(Failure(
                    "no identity: pass --tls-dir DIR (or FEDRA_TLS_DIR) with the certificate from `fedra pki issue`, or --insecure for an --insecure coordinator".into(),
                    64,
                ));
            };
            fedra_pki::ClientTls::load(&fedra_pki::IdentityDir::new(dir)).map_err(|e| Failure(e.to_string(), 64))?
        };
        Ok(ControlClient::connect(&self.endpoint, &tls).await?)
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs: submit, watch, list, show, cancel.
    #[command(subcommand)]
    Run(RunCommand),
    /// Checkpoints: list, pull.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Differential privacy: what each scope (model@region) has spent.
    #[command(subcommand)]
    Privacy(PrivacyCommand),
    /// Provisioning: a deployment CA, certificates per role, revocation. Works on local
    /// files only; it never contacts the coordinator.
    #[command(subcommand)]
    Pki(crate::pki::PkiCommand),
    /// Policy sets: check, explain and compare the TOML files compliance reviews. Works on
    /// local files only; it never contacts the coordinator.
    #[command(subcommand)]
    Policy(crate::policy::PolicyCommand),
    /// The audit log: list (or export as JSON lines) and verify its hash chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The regional model registry: what serves where, promotion, rollback, history.
    #[command(subcommand)]
    Model(crate::registry::ModelCommand),
    /// Inference nodes' drift and live statistics (exit 2 when any node reports drift).
    #[command(subcommand)]
    Drift(crate::registry::DriftCommand),
}

#[derive(Subcommand, Debug)]
enum PrivacyCommand {
    /// Per scope: ε spent and remaining at the budget's δ, rounds, and the latest parameters.
    Status {
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        region: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum RunCommand {
    /// Submit a run plan (TOML); prints the run id.
    Submit {
        plan: PathBuf,
        /// Follow the run until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Follow a run's progress until it ends.
    Watch { run_id: String },
    /// List runs.
    List,
    /// Show one run with its rounds.
    Show { run_id: String },
    /// Cancel a queued or running run.
    Cancel { run_id: String },
    /// Approve a run the policy parked in pending_approval (approvers; not its submitter).
    Approve { run_id: String },
    /// Reject a run waiting for approval: it ends cancelled with the reason.
    Reject {
        run_id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// List audit entries, oldest first.
    List {
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        region: Option<String>,
        /// The acting identity, e.g. fedra://scientist/alice.
        #[arg(long)]
        actor: Option<String>,
        /// Entries at or after this time (RFC 3339, e.g. 2026-11-30T12:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// One JSON object per line (for a SIEM) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-compute the whole log's hash chain; exit 1 naming the first altered, inserted or
    /// deleted entry. Prints the head (last sequence number and hash) to keep elsewhere.
    Verify,
}

#[derive(Subcommand, Debug)]
enum CheckpointCommand {
    /// List checkpoints.
    List {
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        run: Option<String>,
    },
    /// Download a checkpoint (model.safetensors, manifest.json, manifest.sig and its drift
    /// reference) into a directory, after verifying its signature and digests.
    Pull {
        checkpoint_id: String,
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Trusted signing keys (default: checkpoint-signing.pub in --tls-dir).
        #[arg(long, env = "FEDRA_TRUST")]
        trust: Option<PathBuf>,
    },
    /// Verify a checkpoint's signature, file digests and parent chain back to its run's
    /// start: a directory or an object store's round URL (offline, its ancestors among its
    /// sibling rounds; S3 settings from AWS_* variables) or an id (through the
    /// coordinator). Exit 1 naming the first mismatch.
    Verify {
        /// A checkpoint directory, a round URL (s3://bucket/…/round-NNNN), or a checkpoint id.
        target: String,
        /// Trusted signing keys (default: checkpoint-signing.pub in --tls-dir).
        #[arg(long, env = "FEDRA_TRUST")]
        trust: Option<PathBuf>,
    },
}

/// A CLI failure: its one-line message and exit code.
struct Failure(String, u8);

impl From<ControlError> for Failure {
    fn from(e: ControlError) -> Self {
        let code = match &e {
            ControlError::Connect { .. } => 69,
            ControlError::Rpc { code: tonic::Code::Unavailable, .. } => 69,
            _ => 1,
        };
        Failure(e.to_string(), code)
    }
}

/// Parses arguments and runs the command.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(Failure(msg, code)) => {
            eprintln!("fedra: {msg}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let target = Target { endpoint: cli.coordinator, tls_dir: cli.tls_dir, insecure: cli.insecure };
    match cli.command {
        Command::Pki(cmd) => crate::pki::run(cmd).map(|()| ExitCode::SUCCESS).map_err(|e| Failure(e.to_string(), 1)),
        Command::Policy(crate::policy::PolicyCommand::Apply) => {
            let hash = target.connect().await?.apply_policy().await?;
            println!("policy set {hash} in force");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(RunCommand::Approve { run_id }) => {
            let (approvals, needed, state) = target.connect().await?.approve(&run_id).await?;
            println!("{run_id} {} ({approvals} of {needed} approvals)", state.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(RunCommand::Reject { run_id, reason }) => {
            let state = target.connect().await?.reject(&run_id, &reason).await?;
            println!("{run_id} {}", state.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::List { run, region, actor, since, json }) => {
            let since_ms = match since {
                Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
                    .map_err(|e| Failure(format!("--since {t:?}: {e} (expected RFC 3339)"), 64))?
                    .timestamp_millis(),
                None => 0,
            };
            let filter = fedra_proto::pb::ListAuditRequest {
                run_id: run.unwrap_or_default(),
                region: region.unwrap_or_default(),
                actor: actor.unwrap_or_default(),
                since_ms,
            };
            let entries = target.connect().await?.audit(filter).await?;
            print!("{}", crate::status::audit_listing(&entries, json));
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify) => {
            let entries = target.connect().await?.audit(fedra_proto::pb::ListAuditRequest::default()).await?;
            match fedra_types::audit::verify(&entries) {
                Ok((seq, hash)) => {
                    println!("audit log intact: {} entries, head {seq} {hash}", entries.len());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(Failure(format!("audit log broken at {e}"), 1)),
            }
        }
        Command::Policy(cmd) => {
            let out = crate::policy::run(cmd);
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            Ok(ExitCode::from(out.code))
        }
        Command::Run(RunCommand::Submit { plan, watch }) => {
            let plan = PlanFile::load(&plan).map_err(|e| Failure(e.to_string(), 64))?;
            let mut client = target.connect().await?;
            let id = client.submit(&plan).await?;
            println!("{id}");
            if watch { watch_run(&mut client, &id).await } else { Ok(ExitCode::SUCCESS) }
        }
        Command::Run(RunCommand::Watch { run_id }) => {
            let mut client = target.connect().await?;
            watch_run(&mut client, &run_id).await
        }
        Command::Run(RunCommand::List) => {
            let mut client = target.connect().await?;
            let runs = client.list().await?;
            println!("{:<18} {:<10} {:<16} {:>7}  {:<20}  published", "RUN", "STATE", "MODEL", "ROUNDS", "CREATED");
            for r in runs {
                println!(
                    "{:<18} {:<10} {:<16} {:>3}/{:<3}  {:<20}  {}",
                    r.id,
                    r.state.as_str(),
                    r.model_name,
                    r.completed_rounds,
                    r.total_rounds,
                    r.created_at.get(..19).unwrap_or(&r.created_at),
                    r.published_checkpoint.as_deref().unwrap_or("-")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(RunCommand::Show { run_id }) => {
            let mut client = target.connect().await?;
            print_run(&client.get(&run_id).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(RunCommand::Cancel { run_id }) => {
            let mut client = target.connect().await?;
            let state = client.cancel(&run_id).await?;
            println!("{run_id} {}", state.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Privacy(PrivacyCommand::Status { model, region }) => {
            let mut client = target.connect().await?;
            let scopes = client.privacy_status(model.as_deref(), region.as_deref()).await?;
            if scopes.is_empty() {
                println!("no privacy spent yet");
                return Ok(ExitCode::SUCCESS);
            }
            let h = [
                "SCOPE",
                "EPS_SPENT",
                "EPS_LEFT",
                "BUDGET",
                "DELTA",
                "ROUNDS",
                "RESERVED",
                "Z",
                "C",
                "Q",
                "ACCOUNTANT",
            ];
            println!(
                "{:<28} {:>9} {:>9} {:>9} {:>8} {:>7} {:>8} {:>5} {:>8} {:>6}  {}",
                h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10]
            );
            let or_dash = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
            for s in scopes {
                println!(
                    "{:<28} {:>9.4} {:>9} {:>9} {:>8.0e} {:>7} {:>8} {:>5.2} {:>8.4} {:>6.3}  {}",
                    s.scope,
                    s.epsilon_spent,
                    or_dash(s.epsilon_remaining),
                    or_dash(s.epsilon_budget),
                    s.delta,
                    s.rounds_charged,
                    s.rounds_reserved,
                    s.noise_multiplier,
                    s.clip_norm,
                    s.sampling_rate,
                    s.accountant
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Checkpoint(CheckpointCommand::List { region, model, run }) => {
            let mut client = target.connect().await?;
            let list = client.list_checkpoints(region.as_deref(), model.as_deref(), run.as_deref()).await?;
            println!(
                "{:<26} {:<16} {:>5}  {:<14} {:<12} published",
                "CHECKPOINT", "MODEL", "ROUND", "REGIONS", "SHA256"
            );
            for c in list {
                println!(
                    "{:<26} {:<16} {:>5}  {:<14} {:<12} {}",
                    c.id,
                    c.model_name,
                    c.round,
                    c.regions.join(","),
                    c.sha256.get(..12).unwrap_or(&c.sha256),
                    if c.published { "yes" } else { "" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Checkpoint(CheckpointCommand::Verify { target: what, trust }) => {
            let trust = target.trust(trust.as_ref())?;
            let path = std::path::Path::new(&what);
            let location = fedra_coordinator::checkpoint::ArtifactLocation::new(what.as_str());
            let chain = if path.is_dir() {
                crate::verify::verify_dir(path, &trust).map_err(|e| Failure(e, 1))?
            } else if let Some(file) = location.file_path().filter(|_| location.scheme().is_some()) {
                crate::verify::verify_dir(&file, &trust).map_err(|e| Failure(e, 1))?
            } else if location.scheme().is_some() {
                use fedra_coordinator::checkpoint::{ArtifactStore, StoreOptions, StoreSpec};
                // The object store's settings, as the coordinator reads them (AWS_*, …).
                let options = StoreOptions::from_vars(
                    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
                );
                let spec = StoreSpec::parse(&what, &options).map_err(|e| Failure(e.to_string(), 64))?;
                let store =
                    ArtifactStore::open(&spec, &Default::default(), options).map_err(|e| Failure(e.to_string(), 1))?;
                crate::verify::verify_stored(&what, &store, &trust).await.map_err(|e| Failure(e, 1))?
            } else {
                crate::verify::verify_remote(&mut target.connect().await?, &what, &trust).await?
            };
            let head = &chain[0];
            println!(
                "ok: {} (run {} round {}) and {} ancestor(s): signatures, weights and parameters match",
                head.checkpoint_id,
                head.run_id,
                head.round,
                chain.len() - 1
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Model(cmd) => {
            crate::registry::run_model(&mut target.connect().await?, cmd).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Drift(cmd) => {
            let drifted = crate::registry::run_drift(&mut target.connect().await?, cmd).await?;
            Ok(if drifted { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
        Command::Checkpoint(CheckpointCommand::Pull { checkpoint_id, out, trust }) => {
            let trust = target.trust(trust.as_ref())?;
            let mut client = target.connect().await?.trusting(trust);
            let pulled = client.pull_checkpoint(&checkpoint_id, &out).await?;
            println!("{}", pulled.weights.display());
            println!("{}", pulled.manifest.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_run(r: &RunStatus) {
    println!(
        "run {}  model {}  state {}  rounds {}/{}",
        r.id,
        r.model_name,
        r.state.as_str(),
        r.completed_rounds,
        r.total_rounds
    );
    if let Some(f) = &r.failure {
        println!("failure: {f}");
    }
    if let Some(p) = &r.policy_sha256 {
        let approvals = if r.approvals_needed > 0 {
            format!(", {} approval(s) required", r.approvals_needed)
        } else {
            String::new()
        };
        println!("policy set: {p}{approvals}");
    }
    if let Some(p) = &r.published_checkpoint {
        println!("published checkpoint: {p}");
    }
    println!(
        "{:>5}  {:<11} {:>8} {:>8} {:>8}  {:>10} {:>10} {:>8}",
        "ROUND", "PHASE", "SELECTED", "REPORTED", "SAMPLES", "LOSS_IN", "LOSS_OUT", "ACC"
    );
    for row in &r.rounds {
        let m = row.metrics.unwrap_or_default();
        println!(
            "{:>5}  {:<11} {:>8} {:>8} {:>8}  {:>10.4} {:>10.4} {:>8.4}{}",
            row.round,
            row.phase,
            row.selected,
            row.reported,
            row.samples,
            m.loss_before,
            m.loss_after,
            m.accuracy_after,
            row.failure.as_deref().map(|f| format!("  ({f})")).unwrap_or_default()
        );
    }
    print_energy(r);
    if !r.evaluations.is_empty() {
        println!("held-out evaluation (sample-weighted):");
        println!("{:>5}  {:<8} {:>7} {:>8} {:>10} {:>8}", "ROUND", "REGION", "CLIENTS", "SAMPLES", "LOSS", "ACC");
        for e in &r.evaluations {
            println!(
                "{:>5}  {:<8} {:>7} {:>8} {:>10.4} {:>8.4}",
                e.round,
                e.region.as_deref().unwrap_or("all"),
                e.clients,
                e.samples,
                e.loss,
                e.accuracy
            );
        }
    }
}

/// One human-readable line per event.
pub fn describe(e: &WatchEvent) -> String {
    match e {
        WatchEvent::Selected { round, clients, target } => {
            format!("round {round}: selected {} clients (target {target})", clients.len())
        }
        WatchEvent::UpdateReceived { round, client, region, samples, reported, target, metrics } => format!(
            "round {round}: update {reported}/{target} from {client} ({region}), {samples} samples, loss {:.4} -> {:.4}",
            metrics.loss_before, metrics.loss_after
        ),
        WatchEvent::Aggregated { round, clients, samples, metrics, .. } => format!(
            "round {round}: aggregated {clients} updates ({samples} samples), loss {:.4} -> {:.4}, accuracy {:.4}",
            metrics.loss_before, metrics.loss_after, metrics.accuracy_after
        ),
        WatchEvent::Published { round, checkpoint, regions, sha256 } => {
            format!(
                "round {round}: published {checkpoint} to {} (sha256 {})",
                regions.join(","),
                sha256.get(..12).unwrap_or(sha256)
            )
        }
        WatchEvent::RoundFailed { round, reason } => format!("round {round}: failed: {reason}"),
        WatchEvent::Evaluated { round, results } => {
            let parts: Vec<String> = results
                .iter()
                .map(|r| {
                    format!(
                        "{} loss {:.4} accuracy {:.4} ({} clients, {} samples)",
                        r.region.as_deref().unwrap_or("all"),
                        r.loss,
                        r.accuracy,
                        r.clients,
                        r.samples
                    )
                })
                .collect();
            format!("round {round}: evaluated on held-out data: {}", parts.join("; "))
        }
        WatchEvent::Blocked { round, reason } => {
            format!("after round {round}: blocked by policy (waits for a policy that allows it): {reason}")
        }
        WatchEvent::RunFinished { state, reason } => match reason {
            Some(r) => format!("run {}: {r}", state.as_str()),
            None => format!("run {}", state.as_str()),
        },
    }
}

async fn watch_run(client: &mut ControlClient, run: &str) -> Result<ExitCode, Failure> {
    let mut events = client.watch(run).await?;
    while let Some(e) = events.next().await {
        let e = e?;
        println!("{}", describe(&e));
        if let WatchEvent::RunFinished { state, .. } = e {
            return Ok(if state == RunState::Succeeded { ExitCode::SUCCESS } else { ExitCode::from(2) });
        }
    }
    Err(Failure("the coordinator closed the event stream before the run ended".into(), 1))
}

/// The run's estimated energy and carbon per region, summed over its completed rounds.
fn print_energy(r: &RunStatus) {
    let mut per_region: std::collections::BTreeMap<&str, (f64, f64, Option<f64>)> = Default::default();
    for (region, seconds, kwh, carbon) in r.rounds.iter().flat_map(|row| &row.energy) {
        let e = per_region.entry(region.as_str()).or_insert((0.0, 0.0, Some(0.0)));
        e.0 += seconds;
        e.1 += kwh;
        e.2 = e.2.zip(*carbon).map(|(a, b)| a + b);
    }
    if per_region.is_empty() {
        return;
    }
    let total = |f: fn(&(f64, f64, Option<f64>)) -> f64| per_region.values().map(f).sum::<f64>();
    let carbon = per_region.values().try_fold(0.0, |acc, e| e.2.map(|c| acc + c));
    let text = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.3}"));
    println!("energy and carbon (estimated):");
    println!("  {:<10} {:>12} {:>12} {:>10}", "REGION", "TRAIN_S", "KWH", "G_CO2E");
    for (region, (seconds, kwh, carbon)) in &per_region {
        println!("  {region:<10} {seconds:>12.2} {kwh:>12.6} {:>10}", text(*carbon));
    }
    println!("  {:<10} {:>12.2} {:>12.6} {:>10}", "run", total(|e| e.0), total(|e| e.1), text(carbon));
}
