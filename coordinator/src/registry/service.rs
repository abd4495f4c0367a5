//! The registry task: the one writer of the model registry. It registers each succeeded
//! run's published checkpoint as a candidate (gated, and promoted when the plan says so),
//! applies approvers' promotions and rollbacks, and runs the canary rule on inference
//! nodes' reports. Reads (listing, history, what serves) go to the store directly.
//!
//! It learns of finished runs from the engine's events; at start, and whenever it lagged
//! behind them, it reconciles from the store instead, so a crash between a run's success
//! and its registration loses nothing (registration is idempotent per region).

use super::gate;
use super::lifecycle::{self, CanaryDecision};
use super::{
    Approval, ModelState, Move, PolicyGate, RegionEval, RegistryChange, RegistryEntry, RegistryError, RegistryFilter,
    Verdict,
};
use crate::audit;
use crate::governance::Governance;
use crate::ids::{CheckpointId, RegionId, RunId};
use crate::round::{EngineHandle, RunEvent, RunEventKind};
use crate::store::{RunState, Store};
use chrono::{DateTime, Utc};
use fedra_types::audit::AuditAction;
use fedra_types::serving::ServingReport;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{error, info, warn};

type Reply<T> = oneshot::Sender<Result<T, RegistryError>>;

/// The actor recorded for what the coordinator does by rule.
const GATE_ACTOR: &str = "coordinator (promotion gate)";
const CANARY_ACTOR: &str = "coordinator (canary rule)";

/// A promotion asked for by an approver.
#[derive(Debug, Clone)]
pub struct PromoteCommand {
    pub region: RegionId,
    pub model: String,
    pub checkpoint: CheckpointId,
    pub to: ModelState,
    pub actor: String,
    pub reason: String,
    pub override_gate: bool,
    /// `None`: the run plan's canary fraction.
    pub canary_fraction: Option<f64>,
}

enum Command {
    Promote(PromoteCommand, Reply<RegistryEntry>),
    Rollback { region: RegionId, model: String, actor: String, reason: String, reply: Reply<RolledBack> },
    Report { report: ServingReport, region: RegionId, reply: Reply<String> },
}

/// What a rollback did.
#[derive(Debug, Clone)]
pub struct RolledBack {
    pub rolled_back: CheckpointId,
    pub serving: Option<RegistryEntry>,
}

/// What serves one region's model, and the candidates that may serve next.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServingSet {
    pub serving: Option<RegistryEntry>,
    pub canary: Option<RegistryEntry>,
    pub candidates: Vec<RegistryEntry>,
}

type ReportKey = (RegionId, String, String);
/// Each node's latest report and when it came, by (region, model, node).
type Reports = Arc<Mutex<BTreeMap<ReportKey, (DateTime<Utc>, ServingReport)>>>;

/// Cheap, cloneable handle to the registry task.
#[derive(Clone)]
pub struct RegistryHandle {
    tx: mpsc::Sender<Command>,
    store: Arc<dyn Store>,
    changes: broadcast::Sender<(RegionId, String)>,
    reports: Reports,
}

/// Starts the registry task.
pub struct Registry;

impl Registry {
    /// Spawns the registry task, which follows `engine`'s events.
    ///
    /// # Errors
    /// [`RegistryError::Stopped`] when the engine is already gone.
    pub async fn start(
        store: Arc<dyn Store>,
        engine: &EngineHandle,
        governance: Governance,
    ) -> Result<(RegistryHandle, tokio::task::JoinHandle<()>), RegistryError> {
        let events = engine.all_events().await.map_err(|_| RegistryError::Stopped)?;
        let (tx, rx) = mpsc::channel(256);
        let (changes, _) = broadcast::channel(256);
        let handle =
            RegistryHandle { tx, store: Arc::clone(&store), changes: changes.clone(), reports: Arc::default() };
        let task = Task { store, changes, engine: engine.clone(), governance, retrained: Mutex::default() };
        Ok((handle, tokio::spawn(task.run(rx, events))))
    }
}

macro_rules! ask {
    ($self:ident, $make:expr) => {{
        let (reply, rx) = oneshot::channel();
        $self.tx.send($make(reply)).await.map_err(|_| RegistryError::Stopped)?;
        rx.await.map_err(|_| RegistryError::Stopped)?
    }};
}

impl RegistryHandle {
    pub async fn entries(&self, filter: &RegistryFilter) -> Result<Vec<RegistryEntry>, RegistryError> {
        Ok(self.store.registry_entries(filter).await?)
    }

    pub async fn history(&self, filter: &RegistryFilter) -> Result<Vec<super::Transition>, RegistryError> {
        Ok(self.store.registry_history(filter).await?)
    }

    /// What serves `model` in `region` now, and its candidates.
    pub async fn serving(&self, region: &RegionId, model: &str) -> Result<ServingSet, RegistryError> {
        let filter = RegistryFilter { region: Some(region.clone()), model: Some(model.to_string()), all: false };
        let entries = self.store.registry_entries(&filter).await?;
        let pick = |s: ModelState| entries.iter().find(|e| e.state == s).cloned();
        Ok(ServingSet {
            serving: pick(ModelState::Serving),
            canary: pick(ModelState::Canary),
            candidates: entries.iter().filter(|e| e.state == ModelState::Candidate).cloned().collect(),
        })
    }

    /// Notified with (region, model) after every change.
    pub fn changes(&self) -> broadcast::Receiver<(RegionId, String)> {
        self.changes.subscribe()
    }

    pub async fn promote(&self, cmd: PromoteCommand) -> Result<RegistryEntry, RegistryError> {
        ask!(self, |reply| Command::Promote(cmd, reply))
    }

    pub async fn rollback(
        &self,
        region: RegionId,
        model: String,
        actor: String,
        reason: String,
    ) -> Result<RolledBack, RegistryError> {
        ask!(self, |reply| Command::Rollback { region, model, actor, reason, reply })
    }

    /// Keeps a node's report (the latest per node) and runs the canary rule on it; returns
    /// what the rule did ("" for nothing).
    pub async fn report(&self, report: ServingReport, region: RegionId) -> Result<String, RegistryError> {
        {
            let key = (region.clone(), report.model.clone(), report.node.clone());
            let mut reports = self.reports.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            reports.insert(key, (Utc::now(), report.clone()));
        }
        ask!(self, |reply| Command::Report { report, region, reply })
    }

    /// The latest report of every node matching the filter.
    pub fn node_reports(&self, region: Option<&RegionId>, model: Option<&str>) -> Vec<(DateTime<Utc>, ServingReport)> {
        let reports = self.reports.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        reports
            .iter()
            .filter(|((r, m, _), _)| region.is_none_or(|x| x == r) && model.is_none_or(|x| x == m))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

struct Task {
    store: Arc<dyn Store>,
    changes: broadcast::Sender<(RegionId, String)>,
    /// Submits retraining runs when a node reports drift.
    engine: EngineHandle,
    /// The policy in force: its `[[promotion]]` rules add to each plan's gate.
    governance: Governance,
    /// Serving checkpoints a retraining run was submitted for, and the runs submitted:
    /// once per checkpoint, and never for a checkpoint that a drift retraining produced
    /// (training again on data that still drifts would loop; a person decides then).
    retrained: Mutex<(HashSet<CheckpointId>, HashSet<RunId>)>,
}

impl Task {
    async fn run(self, mut rx: mpsc::Receiver<Command>, mut events: broadcast::Receiver<RunEvent>) {
        self.reconcile().await;
        let mut following = true;
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(cmd) => self.handle(cmd).await,
                },
                ev = events.recv(), if following => match ev {
                    Ok(RunEvent { run, kind: RunEventKind::RunFinished { state: RunState::Succeeded, .. }, .. }) => {
                        if let Err(e) = self.register_run(&run).await {
                            error!(%run, error = %e, "cannot register the run's checkpoint; retried at the next start");
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "the registry lagged behind run events; reconciling from the store");
                        self.reconcile().await;
                    }
                    Err(broadcast::error::RecvError::Closed) => following = false,
                },
            }
        }
    }

    async fn handle(&self, cmd: Command) {
        match cmd {
            Command::Promote(cmd, reply) => {
                let _ = reply.send(self.promote(cmd).await);
            }
            Command::Rollback { region, model, actor, reason, reply } => {
                let _ = reply.send(self.rollback(&region, &model, &actor, &reason).await);
            }
            Command::Report { report, region, reply } => {
                let mut result = self.canary_rule(&report, &region).await;
                if let Ok(action) = &mut result {
                    match self.retrain_on_drift(&report, &region).await {
                        Ok(Some(run)) => {
                            let sep = if action.is_empty() { "" } else { "; " };
                            action.push_str(&format!("{sep}retraining run {run} submitted"));
                        }
                        Ok(None) => {}
                        Err(e) => error!(%region, error = %e, "cannot submit the retraining run"),
                    }
                }
                let _ = reply.send(result);
            }
        }
    }

    /// Registers every succeeded run's published checkpoint that is not yet registered.
    async fn reconcile(&self) {
        let runs = match self.store.list_runs().await {
            Ok(r) => r,
            Err(e) => return error!(error = %e, "cannot reconcile the model registry"),
        };
        for run in runs.iter().filter(|r| r.state == RunState::Succeeded && r.published_checkpoint.is_some()) {
            if let Err(e) = self.register_run(&run.id).await {
                error!(run = %run.id, error = %e, "cannot register the run's checkpoint");
            }
        }
    }

    fn key(region: &RegionId, model: &str) -> RegistryFilter {
        RegistryFilter { region: Some(region.clone()), model: Some(model.to_string()), all: true }
    }

    /// Enters a succeeded run's published checkpoint into each region it was published to,
    /// gated, and promoted when the gate passed and the plan asks for it: one transaction
    /// per region. Regions where it is registered already are left alone; a regional
    /// aggregator's cohort runs are not registered (their checkpoints go upstream).
    async fn register_run(&self, run: &RunId) -> Result<(), RegistryError> {
        let Some(record) = self.store.get_run(run).await? else { return Ok(()) };
        let Some(published) = record.published_checkpoint.clone() else { return Ok(()) };
        if self.store.list_upstream_tasks().await?.iter().any(|t| &t.run == run) {
            return Ok(());
        }
        let Some(checkpoint) = self.store.get_checkpoint(&published).await? else { return Ok(()) };
        let regions: Vec<RegionId> = checkpoint.locations.iter().map(|(r, _)| r.clone()).collect();
        let model = checkpoint.model_name.clone();
        let candidate: BTreeMap<RegionId, RegionEval> = self
            .store
            .list_evaluations(run)
            .await?
            .into_iter()
            .filter(|e| e.round == checkpoint.round)
            .filter_map(|e| {
                let region = e.region?;
                Some((region, RegionEval { accuracy: e.accuracy, loss: e.loss, samples: e.samples }))
            })
            .collect();
        let mut existing = BTreeMap::new();
        let mut serving = BTreeMap::new();
        for region in &regions {
            let entries = self.store.registry_entries(&Self::key(region, &model)).await?;
            if let Some(eval) = entries.iter().find(|e| e.state == ModelState::Serving).and_then(|e| e.eval) {
                serving.insert(region.clone(), eval);
            }
            existing.insert(region.clone(), entries);
        }
        let promotion = record.plan.promotion;
        let verdicts = gate::judge(&promotion, &regions, &candidate, &serving);
        let policy = self.governance.snapshot();
        for region in &regions {
            let mut entries = existing.remove(region).unwrap_or_default();
            if entries.iter().any(|e| e.checkpoint == published) {
                continue;
            }
            let rule = policy.as_ref().and_then(|p| p.set.promotion_rule(&model, region));
            let (verdict, policy_gate) = match rule {
                None => (verdicts[region].clone(), None),
                Some(rule) => {
                    let own = if rule.terms.has_gate() {
                        gate::judge(&rule.terms, std::slice::from_ref(region), &candidate, &serving)[region].clone()
                    } else {
                        Verdict { passed: true, detail: "no measured requirement".into() }
                    };
                    let plan = &verdicts[region];
                    let combined = Verdict {
                        passed: plan.passed && own.passed,
                        detail: format!("plan: {}; policy {}: {}", plan.detail, rule.rule, own.detail),
                    };
                    let gate = PolicyGate {
                        rule: rule.rule.to_string(),
                        passed: own.passed,
                        allow_override: rule.terms.allow_override,
                        approvals_needed: rule.terms.approvals,
                    };
                    (combined, Some(gate))
                }
            };
            let entry = RegistryEntry {
                region: region.clone(),
                model: model.clone(),
                checkpoint: published.clone(),
                run: run.clone(),
                round: checkpoint.round,
                state: ModelState::Candidate,
                gate: verdict.clone(),
                eval: candidate.get(region).copied(),
                canary_fraction: promotion.canary_fraction,
                updated_at: Utc::now(),
                policy: policy_gate,
                approvers: Vec::new(),
            };
            entries.push(entry.clone());
            let moves = lifecycle::on_registration(&promotion, &entries, &published)?;
            let mut outcome = (if verdict.passed { "passed" } else { "failed" }).to_string();
            if entry.approvals_needed() > 0 {
                outcome.push_str(&format!(", awaiting {} approval(s)", entry.approvals_needed()));
            }
            if let Some(p) = &policy {
                outcome.push_str(&format!(" under policy set {}", p.sha256()));
            }
            let mut audit = vec![
                audit::draft(
                    GATE_ACTOR,
                    AuditAction::CheckpointGated,
                    format!("checkpoint {published} of {model}: gate {outcome} in {region}: {}", verdict.detail),
                )
                .run(run)
                .region(region),
            ];
            audit.extend(moves_audit(&moves, GATE_ACTOR, "the gate passed and the plan promotes"));
            let change = RegistryChange {
                inserts: vec![entry],
                approvals: Vec::new(),
                moves,
                actor: GATE_ACTOR.into(),
                reason: format!(
                    "published by run {run} round {}; gate {outcome}: {}",
                    checkpoint.round, verdict.detail
                ),
                audit,
            };
            self.store.apply_registry(&change).await?;
            info!(%run, %region, checkpoint = %published, gate = %outcome, "checkpoint registered");
            let _ = self.changes.send((region.clone(), model.clone()));
        }
        Ok(())
    }

    async fn apply(
        &self,
        region: &RegionId,
        model: &str,
        moves: Vec<Move>,
        actor: &str,
        reason: &str,
    ) -> Result<(), RegistryError> {
        let audit = moves_audit(&moves, actor, reason);
        let change = RegistryChange {
            inserts: Vec::new(),
            approvals: Vec::new(),
            moves,
            actor: actor.into(),
            reason: reason.into(),
            audit,
        };
        self.store.apply_registry(&change).await?;
        let _ = self.changes.send((region.clone(), model.to_string()));
        Ok(())
    }

    async fn promote(&self, cmd: PromoteCommand) -> Result<RegistryEntry, RegistryError> {
        let entries = self.store.registry_entries(&Self::key(&cmd.region, &cmd.model)).await?;
        let fraction = match cmd.canary_fraction {
            Some(f) => f,
            None => match entries.iter().find(|e| e.checkpoint == cmd.checkpoint) {
                Some(e) => e.canary_fraction,
                None => 0.1,
            },
        };
        if entries.is_empty() {
            return Err(RegistryError::NotRegistered {
                region: cmd.region,
                model: cmd.model,
                checkpoint: cmd.checkpoint,
            });
        }
        let mut entries = entries;
        let approval = Self::approval(&mut entries, &cmd)?;
        if approval.is_some() {
            // Four eyes, as for runs: whoever submitted the run cannot approve its model.
            let entry = entries.iter().find(|e| e.checkpoint == cmd.checkpoint).expect("found above");
            let owner = self.store.get_run(&entry.run).await?.and_then(|r| r.owner);
            if owner.is_some() && audit::actor(owner.as_ref()) == cmd.actor {
                return Err(RegistryError::SelfApproval {
                    approver: cmd.actor.clone(),
                    run: entry.run.clone(),
                    checkpoint: cmd.checkpoint.clone(),
                });
            }
        }
        let reason = if cmd.override_gate { format!("{} (gate overridden)", cmd.reason) } else { cmd.reason.clone() };
        let (moves, mut audit) =
            match lifecycle::promote(&entries, &cmd.checkpoint, cmd.to, cmd.override_gate, fraction) {
                Ok(moves) => {
                    let audit = moves_audit(&moves, &cmd.actor, &reason);
                    (moves, audit)
                }
                // Only the approvals are missing: this one is recorded, the move waits.
                Err(RegistryError::AwaitingApprovals { .. }) if approval.is_some() => (Vec::new(), Vec::new()),
                Err(e) => return Err(e),
            };
        if let Some(a) = &approval {
            let e = entries.iter().find(|e| e.checkpoint == cmd.checkpoint).expect("found above");
            let detail = format!(
                "checkpoint {} of {} in {}: approval {} of {} to go live ({}): {}",
                a.checkpoint,
                a.model,
                a.region,
                e.approvers.len(),
                e.approvals_needed(),
                e.policy.as_ref().map_or("", |p| p.rule.as_str()),
                a.reason
            );
            audit.insert(0, audit::draft(&cmd.actor, AuditAction::CheckpointApproved, detail).region(&a.region));
        }
        let change = RegistryChange {
            inserts: Vec::new(),
            approvals: approval.into_iter().collect(),
            moves,
            actor: cmd.actor.clone(),
            reason,
            audit,
        };
        self.store.apply_registry(&change).await?;
        let _ = self.changes.send((cmd.region.clone(), cmd.model.clone()));
        let after = self.store.registry_entries(&Self::key(&cmd.region, &cmd.model)).await?;
        after.into_iter().find(|e| e.checkpoint == cmd.checkpoint).ok_or(RegistryError::NotRegistered {
            region: cmd.region,
            model: cmd.model,
            checkpoint: cmd.checkpoint,
        })
    }

    /// The approval `cmd` gives, added to its entry in `entries`, when the entry still needs
    /// approvals to go live; `None` when it needs none.
    ///
    /// # Errors
    /// [`RegistryError::AlreadyApproved`] when this approver already has.
    fn approval(entries: &mut [RegistryEntry], cmd: &PromoteCommand) -> Result<Option<Approval>, RegistryError> {
        let Some(entry) = entries.iter_mut().find(|e| e.checkpoint == cmd.checkpoint) else { return Ok(None) };
        if entry.approved() || entry.state != ModelState::Candidate {
            return Ok(None);
        }
        if entry.approvers.contains(&cmd.actor) {
            return Err(RegistryError::AlreadyApproved {
                region: cmd.region.clone(),
                checkpoint: cmd.checkpoint.clone(),
                approver: cmd.actor.clone(),
            });
        }
        entry.approvers.push(cmd.actor.clone());
        Ok(Some(Approval {
            region: cmd.region.clone(),
            model: cmd.model.clone(),
            checkpoint: cmd.checkpoint.clone(),
            approver: cmd.actor.clone(),
            reason: cmd.reason.clone(),
        }))
    }

    async fn rollback(
        &self,
        region: &RegionId,
        model: &str,
        actor: &str,
        reason: &str,
    ) -> Result<RolledBack, RegistryError> {
        let entries = self.store.registry_entries(&Self::key(region, model)).await?;
        if entries.is_empty() {
            return Err(RegistryError::NothingServing { region: region.clone(), model: model.to_string() });
        }
        let moves = lifecycle::rollback(&entries)?;
        let rolled_back = moves[0].checkpoint.clone();
        self.apply(region, model, moves, actor, reason).await?;
        let after = self.store.registry_entries(&Self::key(region, model)).await?;
        Ok(RolledBack { rolled_back, serving: after.into_iter().find(|e| e.state == ModelState::Serving) })
    }

    /// The canary rule on one node's report: acts on the canary arm of (region, model)
    /// when the canary's run plan has a rule and the arm has enough requests.
    async fn canary_rule(&self, report: &ServingReport, region: &RegionId) -> Result<String, RegistryError> {
        let entries = self.store.registry_entries(&Self::key(region, &report.model)).await?;
        let Some(canary) = entries.iter().find(|e| e.state == ModelState::Canary) else { return Ok(String::new()) };
        let Some(arm) = report.arm(canary.checkpoint.as_str()).filter(|a| a.canary) else { return Ok(String::new()) };
        let Some(run) = self.store.get_run(&canary.run).await? else { return Ok(String::new()) };
        let decision = lifecycle::canary_rule(&run.plan.promotion, arm.requests, arm.errors);
        let detail = format!(
            "node {} saw {} canary requests, {} errors (at most {} of them allowed)",
            report.node, arm.requests, arm.errors, run.plan.promotion.canary_max_error_rate
        );
        match decision {
            None => Ok(String::new()),
            Some(CanaryDecision::Promote) => {
                let moves = lifecycle::promote(
                    &entries,
                    &canary.checkpoint,
                    ModelState::Serving,
                    true,
                    canary.canary_fraction,
                )?;
                self.apply(region, &report.model, moves, CANARY_ACTOR, &detail).await?;
                Ok(format!("promoted {}", canary.checkpoint))
            }
            Some(CanaryDecision::RollBack) => {
                let moves = lifecycle::rollback(&entries)?;
                self.apply(region, &report.model, moves, CANARY_ACTOR, &detail).await?;
                Ok(format!("rolled back {}", canary.checkpoint))
            }
        }
    }
}

impl Task {
    /// A node reporting drift against the serving checkpoint of a run whose plan asks for it
    /// gets that plan submitted again, starting from the serving checkpoint, as the original
    /// run's owner; once per serving checkpoint, and not again for the retrained one.
    async fn retrain_on_drift(
        &self,
        report: &ServingReport,
        region: &RegionId,
    ) -> Result<Option<RunId>, RegistryError> {
        let Some(drift) = report.drift.as_ref().filter(|d| d.drifted) else { return Ok(None) };
        let entries = self.store.registry_entries(&Self::key(region, &report.model)).await?;
        let Some(serving) = entries.iter().find(|e| e.state == ModelState::Serving) else { return Ok(None) };
        if serving.checkpoint.as_str() != drift.checkpoint {
            return Ok(None);
        }
        let Some(record) = self.store.get_run(&serving.run).await? else { return Ok(None) };
        if !record.plan.promotion.retrain_on_drift {
            return Ok(None);
        }
        {
            let mut done = self.retrained.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if done.1.contains(&serving.run) || !done.0.insert(serving.checkpoint.clone()) {
                return Ok(None);
            }
        }
        let mut plan = record.plan.clone();
        plan.initial_checkpoint = Some(serving.checkpoint.clone());
        let run =
            self.engine.submit(plan, record.owner.clone()).await.map_err(|e| RegistryError::Invalid(e.to_string()))?;
        self.retrained.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.insert(run.clone());
        info!(%region, checkpoint = %serving.checkpoint, %run, max_psi = drift.max_psi, "drift: retraining run submitted");
        let draft = audit::draft(
            "coordinator (drift)",
            AuditAction::RunSubmitted,
            format!(
                "node {} reported drift in {region} against {} (max PSI {:.3}, prediction PSI {:.3}): retraining run {run}",
                report.node, serving.checkpoint, drift.max_psi, drift.prediction_psi
            ),
        )
        .run(&run)
        .region(region);
        audit::record(self.store.as_ref(), draft).await?;
        Ok(Some(run))
    }
}

/// One audit entry per move, with who and why.
fn moves_audit(moves: &[Move], actor: &str, reason: &str) -> Vec<crate::store::AuditDraft> {
    let mut seen = HashSet::new();
    moves
        .iter()
        .filter(|m| seen.insert((m.checkpoint.clone(), m.to)))
        .map(|m| {
            let action = match m.to {
                ModelState::RolledBack => AuditAction::CheckpointRolledBack,
                _ => AuditAction::CheckpointPromoted,
            };
            audit::draft(
                actor,
                action,
                format!("checkpoint {} of {} in {}: {} → {}: {reason}", m.checkpoint, m.model, m.region, m.from, m.to),
            )
            .region(&m.region)
        })
        .collect()
}
