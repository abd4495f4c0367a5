//! The `fedra` command line for data scientists: a thin layer over [`ControlClient`].
//! Errors print one line on stderr and exit non-zero:
//! 64 bad usage or plan file, 69 coordinator unreachable, 1 refused by the coordinator,
//! 2 a watched run ended failed or cancelled. They are the same with `--output json`
//! (see [`crate::output`]). Clap's own usage errors (an unknown flag, or an `--output`
//! other than text or json) exit 2 with clap's message, which names the bad argument.

use crate::control::{ControlClient, ControlError};
use crate::output::{AuditHead, OutputFormat, PolicyApplied, Pulled, RunStateChange, Submitted, Verified, emit};
use crate::plan_file::PlanFile;
use crate::tables;
use crate::watch::WatchEnd;
use clap::{Parser, Subcommand};
use fedra_types::run::RunState;
use std::path::PathBuf;
use std::process::ExitCode;

/// One line per watch event; kept here for callers that print the same lines.
pub use crate::watch::describe;

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
    /// How list and show commands print: text tables, or one JSON document (an array for
    /// lists, an object for records; actions print a small object).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
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
        /// One JSON object per line (for a SIEM) instead of a table; `--output json` prints
        /// the same objects as one array (pass one of the two).
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

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Self {
        Failure(format!("cannot write JSON output: {e}"), 1)
    }
}

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
    let format = cli.output;
    match cli.command {
        Command::Pki(cmd) => {
            crate::pki::run(cmd, format).map(|()| ExitCode::SUCCESS).map_err(|e| Failure(e.to_string(), 1))
        }
        Command::Policy(crate::policy::PolicyCommand::Apply) => {
            let hash = target.connect().await?.apply_policy().await?;
            emit(format, &PolicyApplied { policy_sha256: hash }, |a| {
                println!("policy set {} in force", a.policy_sha256);
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(cmd) => {
            if format == OutputFormat::Json {
                return Err(Failure(
                    "fedra policy check, explain, diff and simulate print text for review; --output json is not supported for them"
                        .into(),
                    64,
                ));
            }
            let out = crate::policy::run(cmd);
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            Ok(ExitCode::from(out.code))
        }
        Command::Run(cmd) => run_command(&target, cmd, format).await,
        Command::Audit(AuditCommand::List { run, region, actor, since, json }) => {
            if json && format == OutputFormat::Json {
                return Err(Failure(
                    "--json (one object per line) and --output json (one array) ask for two formats; pass one".into(),
                    64,
                ));
            }
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
            emit(format, &entries, |e| print!("{}", crate::status::audit_listing(e, json)))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Verify) => {
            let entries = target.connect().await?.audit(fedra_proto::pb::ListAuditRequest::default()).await?;
            match fedra_types::audit::verify(&entries) {
                Ok((head_seq, head_hash)) => {
                    emit(format, &AuditHead { entries: entries.len(), head_seq, head_hash }, |h| {
                        println!("audit log intact: {} entries, head {} {}", h.entries, h.head_seq, h.head_hash);
                    })?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(Failure(format!("audit log broken at {e}"), 1)),
            }
        }
        Command::Privacy(PrivacyCommand::Status { model, region }) => {
            let mut client = target.connect().await?;
            let scopes = client.privacy_status(model.as_deref(), region.as_deref()).await?;
            emit(format, &scopes, |s| tables::print_scopes(s))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Checkpoint(cmd) => checkpoint_command(&target, cmd, format).await,
        Command::Model(cmd) => {
            crate::registry::run_model(&mut target.connect().await?, cmd, format).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Drift(cmd) => {
            let drifted = crate::registry::run_drift(&mut target.connect().await?, cmd, format).await?;
            Ok(if drifted { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
    }
}

async fn run_command(target: &Target, cmd: RunCommand, format: OutputFormat) -> Result<ExitCode, Failure> {
    let change = |run_id: String, state, approvals: Option<(u32, u32)>| RunStateChange {
        run_id,
        state,
        approvals: approvals.map(|a| a.0),
        approvals_needed: approvals.map(|a| a.1),
    };
    let print_change = |c: &RunStateChange| match (c.approvals, c.approvals_needed) {
        (Some(a), Some(n)) => println!("{} {} ({a} of {n} approvals)", c.run_id, c.state.as_str()),
        _ => println!("{} {}", c.run_id, c.state.as_str()),
    };
    match cmd {
        RunCommand::Submit { plan, watch } => {
            let plan = PlanFile::load(&plan).map_err(|e| Failure(e.to_string(), 64))?;
            let mut client = target.connect().await?;
            let id = client.submit(&plan).await?;
            if !watch {
                emit(format, &Submitted { run_id: id }, |s| println!("{}", s.run_id))?;
                return Ok(ExitCode::SUCCESS);
            }
            if format == OutputFormat::Text {
                println!("{id}");
            }
            watch_run(&mut client, &id, format).await
        }
        RunCommand::Watch { run_id } => watch_run(&mut target.connect().await?, &run_id, format).await,
        RunCommand::List => {
            let runs = target.connect().await?.list().await?;
            emit(format, &runs, |r| tables::print_runs(r))?;
            Ok(ExitCode::SUCCESS)
        }
        RunCommand::Show { run_id } => {
            let run = target.connect().await?.get(&run_id).await?;
            emit(format, &run, tables::print_run)?;
            Ok(ExitCode::SUCCESS)
        }
        RunCommand::Cancel { run_id } => {
            let state = target.connect().await?.cancel(&run_id).await?;
            emit(format, &change(run_id, state, None), print_change)?;
            Ok(ExitCode::SUCCESS)
        }
        RunCommand::Approve { run_id } => {
            let (approvals, needed, state) = target.connect().await?.approve(&run_id).await?;
            emit(format, &change(run_id, state, Some((approvals, needed))), print_change)?;
            Ok(ExitCode::SUCCESS)
        }
        RunCommand::Reject { run_id, reason } => {
            let state = target.connect().await?.reject(&run_id, &reason).await?;
            emit(format, &change(run_id, state, None), print_change)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn checkpoint_command(
    target: &Target,
    cmd: CheckpointCommand,
    format: OutputFormat,
) -> Result<ExitCode, Failure> {
    match cmd {
        CheckpointCommand::List { region, model, run } => {
            let mut client = target.connect().await?;
            let list = client.list_checkpoints(region.as_deref(), model.as_deref(), run.as_deref()).await?;
            emit(format, &list, |l| tables::print_checkpoints(l))?;
        }
        CheckpointCommand::Verify { target: what, trust } => {
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
            let verified = Verified {
                checkpoint_id: head.checkpoint_id.clone(),
                run_id: head.run_id.clone(),
                round: head.round,
                ancestors: chain[1..].iter().map(|m| m.checkpoint_id.clone()).collect(),
            };
            emit(format, &verified, |v| {
                println!(
                    "ok: {} (run {} round {}) and {} ancestor(s): signatures, weights and parameters match",
                    v.checkpoint_id,
                    v.run_id,
                    v.round,
                    v.ancestors.len()
                );
            })?;
        }
        CheckpointCommand::Pull { checkpoint_id, out, trust } => {
            let trust = target.trust(trust.as_ref())?;
            let mut client = target.connect().await?.trusting(trust);
            let pulled = client.pull_checkpoint(&checkpoint_id, &out).await?;
            let pulled = Pulled { checkpoint_id, weights: pulled.weights, manifest: pulled.manifest };
            emit(format, &pulled, |p| {
                println!("{}", p.weights.display());
                println!("{}", p.manifest.display());
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows a run to its end: exit 0 when it succeeded, 2 when it failed or was cancelled.
/// With `--output json` nothing is printed while it runs; at the end, the run's final
/// snapshot (as `fedra run show --output json`).
async fn watch_run(client: &mut ControlClient, run: &str, format: OutputFormat) -> Result<ExitCode, Failure> {
    let end = match format {
        OutputFormat::Text => crate::watch::watch(client, run).await?,
        OutputFormat::Json => crate::watch::wait(client, run).await?,
    };
    let state = match end {
        WatchEnd::Finished(state) => state,
        WatchEnd::StreamClosed => {
            return Err(Failure("the coordinator closed the event stream before the run ended".into(), 1));
        }
    };
    if format == OutputFormat::Json {
        print!("{}", crate::output::json_document(&client.get(run).await?)?);
    }
    Ok(if state == RunState::Succeeded { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
