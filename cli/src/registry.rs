//! `fedra model list|show|promote|rollback|history` and `fedra drift status`: the regional
//! model registry as an inference team and approvers drive it.
//!
//! The commands convert the calls' answers into the CLI's views
//! ([`crate::status::ModelEntry`] and its neighbours, in [`crate::convert`]) and print
//! those as text or, with `--output json`, as one JSON document (see [`crate::output`]).
//! (The [`ControlClient`] calls still return protobuf messages: other crates' tests read
//! them.)

use crate::control::{ControlClient, ControlError};
use crate::convert;
use crate::output::{OutputFormat, emit};
use crate::status::{ModelEntry, ModelTransitionRow, NodeReport, Rollback, ServingSummary};
use clap::Subcommand;
use fedra_coordinator::registry::ModelState;
use fedra_proto::pb;

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Registry entries (candidates, canaries, serving; --all adds retired and rolled back).
    List {
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// What serves one model in one region, with every candidate's gate verdict.
    Show {
        #[arg(long)]
        region: String,
        #[arg(long)]
        model: String,
    },
    /// Promote a candidate (or the canary) to serving or canary (approvers).
    Promote {
        checkpoint_id: String,
        #[arg(long)]
        region: String,
        #[arg(long)]
        model: String,
        /// serving or canary.
        #[arg(long, default_value = "serving")]
        to: String,
        #[arg(long)]
        reason: String,
        /// Promote although the gate failed in this region.
        #[arg(long)]
        override_gate: bool,
        /// A canary's share of requests (default: the run plan's).
        #[arg(long)]
        canary_fraction: Option<f64>,
    },
    /// Take the canary (else the serving checkpoint) out of service and restore the
    /// previous serving checkpoint, in one step (approvers).
    Rollback {
        #[arg(long)]
        region: String,
        #[arg(long)]
        model: String,
        #[arg(long)]
        reason: String,
    },
    /// Every transition of one region's model, oldest first, with actor and reason.
    History {
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        model: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DriftCommand {
    /// The inference nodes' latest reports: drift of their inputs and both arms' statistics.
    Status {
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        model: Option<String>,
    },
}

impl ControlClient {
    /// # Errors
    /// Transport failure or refusal.
    pub async fn list_models(
        &mut self,
        region: Option<&str>,
        model: Option<&str>,
        all: bool,
    ) -> Result<Vec<pb::RegistryEntry>, ControlError> {
        let req = pb::ListModelsRequest {
            region: region.unwrap_or_default().into(),
            model_name: model.unwrap_or_default().into(),
            all,
        };
        Ok(self.checkpoints.list_models(req).await?.into_inner().entries)
    }

    /// # Errors
    /// Transport failure or refusal.
    pub async fn model_history(
        &mut self,
        region: Option<&str>,
        model: Option<&str>,
    ) -> Result<Vec<pb::ModelTransition>, ControlError> {
        let req = pb::ModelHistoryRequest {
            region: region.unwrap_or_default().into(),
            model_name: model.unwrap_or_default().into(),
        };
        Ok(self.checkpoints.model_history(req).await?.into_inner().transitions)
    }

    /// # Errors
    /// Transport failure or refusal (FAILED_PRECONDITION names a failed gate).
    pub async fn promote_model(&mut self, req: pb::PromoteModelRequest) -> Result<pb::RegistryEntry, ControlError> {
        let entry = self.checkpoints.promote_model(req).await?.into_inner().entry;
        entry.ok_or_else(|| ControlError::Protocol("promotion answered without the entry".into()))
    }

    /// # Errors
    /// Transport failure or refusal.
    pub async fn rollback_model(
        &mut self,
        region: &str,
        model: &str,
        reason: &str,
    ) -> Result<pb::RollbackModelResponse, ControlError> {
        let req = pb::RollbackModelRequest { region: region.into(), model_name: model.into(), reason: reason.into() };
        Ok(self.checkpoints.rollback_model(req).await?.into_inner())
    }

    /// What serves `model` in `region` and its candidates: now, then on every change.
    ///
    /// # Errors
    /// Transport failure or refusal.
    pub async fn watch_serving(
        &mut self,
        region: &str,
        model: &str,
    ) -> Result<tonic::Streaming<pb::ServingSet>, ControlError> {
        let req = pb::WatchServingRequest { region: region.into(), model_name: model.into() };
        Ok(self.checkpoints.watch_serving(req).await?.into_inner())
    }

    /// # Errors
    /// Transport failure or refusal.
    pub async fn drift_status(
        &mut self,
        region: Option<&str>,
        model: Option<&str>,
    ) -> Result<Vec<pb::NodeStatus>, ControlError> {
        let req = pb::DriftStatusRequest {
            region: region.unwrap_or_default().into(),
            model_name: model.unwrap_or_default().into(),
        };
        Ok(self.checkpoints.drift_status(req).await?.into_inner().nodes)
    }
}

fn eval_text(e: &ModelEntry) -> String {
    match (e.accuracy, e.loss) {
        (Some(a), Some(l)) => format!("acc {a:.4} loss {l:.4} n={}", e.eval_samples),
        _ => "not evaluated".into(),
    }
}

/// "approvals 1 of 2 (fedra://approver/ann)".
fn approvals_text(e: &ModelEntry) -> String {
    let who = if e.approvers.is_empty() { "none yet".to_string() } else { e.approvers.join(", ") };
    format!("approvals {} of {} ({who})", e.approvers.len(), e.approvals_needed)
}

fn print_entries(entries: &[ModelEntry]) {
    println!(
        "{:<10} {:<14} {:<26} {:<12} {:<5} {:<32} canary",
        "REGION", "MODEL", "CHECKPOINT", "STATE", "GATE", "EVALUATION"
    );
    for e in entries {
        println!(
            "{:<10} {:<14} {:<26} {:<12} {:<5} {:<32} {}",
            e.region,
            e.model_name,
            e.checkpoint_id,
            e.state.as_str(),
            if e.gate_passed { "pass" } else { "fail" },
            eval_text(e),
            if e.state == ModelState::Canary { format!("{:.0} %", e.canary_fraction * 100.0) } else { String::new() }
        );
    }
}

fn print_serving(s: &ServingSummary) {
    println!("{} in {}", s.model_name, s.region);
    println!("  serving: {}", s.serving.as_deref().unwrap_or("-"));
    if let (Some(c), Some(f)) = (&s.canary, s.canary_fraction) {
        println!("  canary:  {c} ({:.0} % of requests)", f * 100.0);
    }
    for e in &s.entries {
        println!(
            "  {:<26} {:<12} {}; gate {}: {}",
            e.checkpoint_id,
            e.state.as_str(),
            eval_text(e),
            if e.gate_passed { "passed" } else { "failed" },
            e.gate_detail
        );
        if e.approvals_needed > 0 {
            println!("  {:<26} {}", "", approvals_text(e));
        }
        if !e.gate_passed && !e.gate_overridable {
            println!("  {:<26} the policy allows no override of this gate", "");
        }
    }
}

fn print_history(transitions: &[ModelTransitionRow]) {
    for t in transitions {
        println!(
            "{:>5} {} {:<8} {:<12} {:<26} {:>11} → {:<11} {}: {}",
            t.seq,
            t.at,
            t.region,
            t.model_name,
            t.checkpoint_id,
            t.from.map_or("-", ModelState::as_str),
            t.to.as_str(),
            t.actor,
            t.reason
        );
    }
}

/// The registry's answer as the CLI's views.
///
/// # Errors
/// An entry in a state this CLI does not know.
fn entries(entries: Vec<pb::RegistryEntry>) -> Result<Vec<ModelEntry>, ControlError> {
    Ok(entries.into_iter().map(convert::model_entry_from_pb).collect::<Result<_, _>>()?)
}

/// Runs a `fedra model` command, printing in `format`.
///
/// # Errors
/// As the calls it makes; a bad `--to` is [`ControlError::Protocol`]; JSON that cannot be
/// written is [`ControlError::Protocol`] naming the value.
pub async fn run_model(
    client: &mut ControlClient,
    cmd: ModelCommand,
    format: OutputFormat,
) -> Result<(), ControlError> {
    match cmd {
        ModelCommand::List { region, model, all } => {
            let entries = entries(client.list_models(region.as_deref(), model.as_deref(), all).await?)?;
            emit(format, &entries, |e| print_entries(e))?;
        }
        ModelCommand::Show { region, model } => {
            let entries = entries(client.list_models(Some(&region), Some(&model), true).await?)?;
            emit(format, &ServingSummary::new(region, model, entries), print_serving)?;
        }
        ModelCommand::Promote { checkpoint_id, region, model, to, reason, override_gate, canary_fraction } => {
            let to = match to.as_str() {
                "serving" => pb::ModelState::Serving,
                "canary" => pb::ModelState::Canary,
                other => return Err(ControlError::Protocol(format!("--to {other:?}: serving or canary"))),
            };
            let entry = client
                .promote_model(pb::PromoteModelRequest {
                    region,
                    model_name: model,
                    checkpoint_id,
                    to: to as i32,
                    reason,
                    override_gate,
                    canary_fraction: canary_fraction.unwrap_or(0.0),
                })
                .await?;
            let entry = convert::model_entry_from_pb(entry)?;
            emit(format, &entry, |entry| {
                println!("{} is {} in {}", entry.checkpoint_id, entry.state.as_str(), entry.region);
                if entry.state == ModelState::Candidate && entry.approvals_needed > 0 {
                    println!("{}: it goes live when the last approval needed is given", approvals_text(entry));
                }
            })?;
        }
        ModelCommand::Rollback { region, model, reason } => {
            let r = client.rollback_model(&region, &model, &reason).await?;
            let r = Rollback {
                rolled_back: r.rolled_back,
                serving: r.serving.map(convert::model_entry_from_pb).transpose()?,
            };
            emit(format, &r, |r| {
                let now = r.serving.as_ref().map_or("nothing", |e| e.checkpoint_id.as_str());
                println!("rolled back {} in {region}; serving {now}", r.rolled_back);
            })?;
        }
        ModelCommand::History { region, model } => {
            let transitions = client.model_history(region.as_deref(), model.as_deref()).await?;
            let transitions: Vec<_> =
                transitions.into_iter().map(convert::transition_from_pb).collect::<Result<_, _>>()?;
            emit(format, &transitions, |t| print_history(t))?;
        }
    }
    Ok(())
}

fn print_drift(nodes: &[NodeReport]) {
    for n in nodes {
        println!("node {} ({} / {}), reported {}", n.node, n.region, n.model_name, n.reported_at);
        for a in &n.arms {
            println!(
                "  {} {:<26} {:>8} requests {:>9} rows {:>5} errors  p50 {:.2} ms  p99 {:.2} ms  {:.4} CPU s/1k  cost/1k {:.6}",
                if a.canary { "canary " } else { "serving" },
                a.checkpoint_id,
                a.requests,
                a.rows,
                a.errors,
                a.p50_ms,
                a.p99_ms,
                a.cpu_seconds_per_1000,
                a.cost_per_1000
            );
        }
        match &n.drift {
            Some(d) if d.has_reference => {
                println!(
                    "  drift vs {}: {} over {} rows: max PSI {:.3}, max KS {:.3}, prediction PSI {:.3}",
                    d.checkpoint_id,
                    if d.drifted { "DRIFTED" } else { "stable" },
                    d.rows,
                    d.max_psi,
                    d.max_ks,
                    d.prediction_psi
                );
                for f in d.features.iter().take(5) {
                    println!(
                        "    feature {:>4}: PSI {:.3} KS {:.3} mean {:.3} → {:.3}",
                        f.feature, f.psi, f.ks, f.reference_mean, f.live_mean
                    );
                }
            }
            Some(d) => println!("  drift: {} carries no reference (a private run); nothing compared", d.checkpoint_id),
            None => println!("  drift: not reported"),
        }
    }
}

/// Runs `fedra drift status`, printing in `format`; returns whether any node reports drift
/// (against a reference: a node without one never counts).
///
/// # Errors
/// As the call it makes; JSON that cannot be written.
pub async fn run_drift(
    client: &mut ControlClient,
    cmd: DriftCommand,
    format: OutputFormat,
) -> Result<bool, ControlError> {
    let DriftCommand::Status { region, model } = cmd;
    let nodes = client.drift_status(region.as_deref(), model.as_deref()).await?;
    let nodes: Vec<NodeReport> = nodes.into_iter().filter_map(convert::node_report_from_pb).collect();
    emit(format, &nodes, |n| print_drift(n))?;
    Ok(nodes.iter().any(|n| n.drift.as_ref().is_some_and(|d| d.has_reference && d.drifted)))
}
