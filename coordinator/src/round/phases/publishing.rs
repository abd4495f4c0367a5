//! Publishing: the new model is written as a checkpoint into each target region's artifact
//! store (digested on a blocking thread, put asynchronously), then the round is committed in
//! one store transaction and a private round's reservations become charges.
//!
//! Two ways through, chosen when the write starts:
//! - **Released** (every round that is neither the last nor evaluated): the model goes to
//!   the next round at once (it is immutable: the writer and the broadcast share its
//!   buffer), and the write and the commit run while that round selects and trains. The
//!   run's [`RunCore::releasing`] holds the round until its commit. What the next round
//!   needs from this one (its checkpoint id as parent, a private run's next clipping bound,
//!   a server optimizer's state) is handed forward before the commit; that is safe because
//!   "a round counts only when its checkpoint is recorded" still holds:
//!   - rounds commit in order: the next round's average starts only after this commit
//!     ([`super::aggregating`]), and the store refuses an out-of-order completion anyway;
//!   - a failed write or commit fails this round and the run with it (the next round was
//!     trained on a model that is not on record);
//!   - after a crash the store has this round and the next in progress; start-up marks
//!     both interrupted and the run resumes from the last committed round, with that
//!     round's clipping bound and optimizer state (what the handed-forward values were
//!     derived from is gone with the crash);
//!   - a failure or cancel of the next round first waits for this write and commits it:
//!     the next round's end does not undo a round that was complete.
//! - **Publishing** (the last round, and rounds evaluated after training): the run waits
//!   for the write and the commit, then → Evaluating or → Done; → Failed when writing or
//!   committing fails.

use super::super::run::{AttemptKey, Internal, RunCore};
use super::super::task::GlobalModel;
use super::super::{RoundError, RunEventKind, TrainingMetrics};
use super::{Phase, Transition, evaluating};
use crate::aggregation::server_opt::ServerState;
use crate::checkpoint::{Contributor, PrivacyProvenance, PublishRequest, Published, RobustProvenance};
use crate::ids::{CheckpointId, RegionId, RoundNumber};
use crate::store::{CheckpointRecord, PrivacyCharge, RoundCompletion};
use fedra_types::audit::AuditAction;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// Waiting for the checkpoint to be written (the last round, or one evaluated next).
#[derive(Debug)]
pub(in crate::round) struct Publishing {
    round: Committing,
    /// The new global model, the run's once the round is committed.
    model: Arc<GlobalModel>,
}

/// A round released to the next one while its checkpoint is written (see the module doc).
pub(in crate::round) struct Releasing {
    round: Committing,
    work: JoinHandle<Result<Published, RoundError>>,
}

/// What committing a written round needs, kept from the moment its write starts (the run
/// may have moved on to the next round by then).
#[derive(Debug)]
struct Committing {
    key: AttemptKey,
    /// A private round's next clipping bound (recorded with the charge).
    next_clip: Option<Option<f64>>,
    /// A server optimizer's state after this round, the run's once the round is committed
    /// (`None` once handed forward).
    server_state: Option<ServerState>,
    /// Updates aggregated (a private run's manifest does not list them).
    reported: u32,
    /// The attempt's measured cost and training seconds per region.
    cost: crate::cost::RoundTally,
    compute: BTreeMap<RegionId, f64>,
    final_round: bool,
    evaluate: bool,
    started: tokio::time::Instant,
}

/// The aggregated round, as publishing writes it.
pub(in crate::round) struct RoundOutput {
    pub model: Arc<GlobalModel>,
    pub contributors: Vec<Contributor>,
    pub metrics: TrainingMetrics,
    pub regions: Vec<RegionId>,
    /// A private round's next clipping bound and its manifest block.
    pub privacy: Option<(Option<f64>, PrivacyProvenance)>,
    /// A server optimizer's state after the step, and its state file's sha256.
    pub server_state: Option<(ServerState, String)>,
    /// A robust rule's record.
    pub aggregation: Option<RobustProvenance>,
}

/// Starts writing the checkpoint: → Released (the next round starts now) or → Publishing
/// (the result comes back as [`Internal::Published`]).
pub(in crate::round) fn start(core: &mut RunCore, out: RoundOutput) -> Transition {
    let RoundOutput { model, contributors, metrics, regions, privacy, server_state, aggregation } = out;
    let key = core.key.clone();
    let final_round = key.round >= core.plan.rounds;
    let evaluate = core.plan.evaluation.after_round(key.round, core.plan.rounds);
    let id = CheckpointId::for_round(&key.run, RoundNumber(key.round));
    let req = PublishRequest {
        id: id.clone(),
        run: key.run.clone(),
        round: key.round,
        attempt: key.attempt,
        parent: core.parent.clone(),
        model: core.plan.model.clone(),
        contributors,
        metrics,
        regions,
        privacy: privacy.as_ref().map(|(_, p)| p.clone()),
        policy_sha256: core.env.settings.governance.snapshot().map(|p| p.sha256().to_string()),
        server_state: match (&core.plan.strategy, &server_state) {
            (crate::plan::Strategy::Server(opt), Some((_, sha))) => Some((opt.name(), sha.clone())),
            _ => None,
        },
        references: if core.plan.privacy.is_some() { Default::default() } else { std::mem::take(&mut core.references) },
        aggregation,
    };
    let mut round = Committing {
        key: key.clone(),
        next_clip: privacy.map(|(next, _)| next),
        server_state: server_state.map(|(s, _)| s),
        reported: req.contributors.len() as u32,
        cost: std::mem::take(&mut core.cost),
        compute: std::mem::take(&mut core.compute),
        final_round,
        evaluate,
        started: core.started,
    };
    // Digests run on a blocking thread inside `publish`, the writes are async puts: the
    // run's task goes on serving requests meanwhile. The writer shares the model's buffer.
    let checkpoints = core.env.checkpoints.clone();
    let params = model.params.clone();
    let work = tokio::spawn(async move { checkpoints.publish(req, params).await.map_err(RoundError::from) });
    if !final_round && !evaluate {
        // Handed forward: what the next round starts from (see the module doc).
        core.parent = Some(id);
        if let Some(Some(next_clip)) = round.next_clip {
            core.clip_norm = Some(next_clip);
        }
        if let Some(state) = round.server_state.take() {
            core.server_state = Some(state);
        }
        core.global = Some(model);
        // The attempt's row is the released round's to settle now, not the run's next failure.
        core.recorded = false;
        core.releasing = Some(Releasing { round, work });
        return Transition::to(Phase::Released);
    }
    let tx = core.internal.clone();
    tokio::spawn(async move {
        let result =
            work.await.unwrap_or_else(|e| Err(RoundError::Internal(format!("the publishing task failed: {e}"))));
        let _ = tx.send(Internal::Published { key, result: Box::new(result) });
    });
    Transition::to(Phase::Publishing(Publishing { round, model }))
}

/// Publishing → Done (or Evaluating): one store transaction, then the next step.
pub(in crate::round) async fn on_published(
    p: &mut Publishing,
    core: &mut RunCore,
    result: Result<Published, RoundError>,
) -> Transition {
    let published = match result {
        Ok(p) => p,
        Err(e) => return Transition::fail(format!("publishing failed: {e}")),
    };
    let checkpoint = match commit(&mut p.round, core, published).await {
        Ok(c) => c,
        Err(reason) => return Transition::fail(reason),
    };
    // The attempt is done for good: a later failure (a cancel during evaluation) ends the
    // run, not this round.
    core.recorded = false;
    // The aggregate is released and its reservations are charged (they counted already).
    if let Some(Some(next_clip)) = p.round.next_clip {
        core.clip_norm = Some(next_clip);
    }
    core.parent = Some(checkpoint.clone());
    if let Some(state) = p.round.server_state.take() {
        core.server_state = Some(state);
    }
    core.global = Some(Arc::clone(&p.model));
    let final_round = p.round.final_round;
    if p.round.evaluate {
        Transition::to(evaluating::enter(core, checkpoint, final_round, false))
    } else {
        Transition::to(Phase::Done { final_round })
    }
}

/// The write of a released round, once it is done (pending while none is released): what
/// the run actor waits for beside its messages.
pub(in crate::round) async fn written(releasing: &mut Option<Releasing>) -> Result<Published, RoundError> {
    match releasing {
        Some(r) => (&mut r.work)
            .await
            .unwrap_or_else(|e| Err(RoundError::Internal(format!("the publishing task failed: {e}")))),
        None => std::future::pending().await,
    }
}

/// Commits a released round whose write ended with `result` (the run's `releasing` was
/// taken for it).
///
/// # Errors
/// Why the round could not be committed: it is recorded failed, and the run must fail
/// (its current round was trained on that round's model).
pub(in crate::round) async fn settle_released(
    r: Releasing,
    core: &mut RunCore,
    result: Result<Published, RoundError>,
) -> Result<(), String> {
    let Releasing { mut round, work: _ } = r;
    let committed = match result {
        Ok(published) => commit(&mut round, core, published).await.map(|_| ()),
        Err(e) => Err(format!("publishing failed: {e}")),
    };
    let key = &round.key;
    match committed {
        Ok(()) => {
            metrics::counter!("fedra_rounds_total", "outcome" => "published").increment(1);
            metrics::histogram!("fedra_round_duration_seconds", "outcome" => "published")
                .record(round.started.elapsed().as_secs_f64());
            Ok(())
        }
        Err(reason) => {
            warn!(run = %key.run, round = key.round, %reason, "released round failed");
            metrics::counter!("fedra_rounds_total", "outcome" => "failed").increment(1);
            if let Err(e) = core.env.store.fail_round(&key.run, key.round, key.attempt, &reason).await {
                error!(run = %key.run, round = key.round, error = %e, "cannot record round failure");
            }
            core.emit_round(key.round, RunEventKind::RoundFailed { reason: reason.clone() });
            Err(format!("round {} was not committed ({reason}), and this round trained on its model", key.round))
        }
    }
}

/// Records a written round: its checkpoint, totals, audit entries and privacy charge in one
/// store transaction; then tells watchers. Returns the checkpoint's id.
async fn commit(p: &mut Committing, core: &mut RunCore, published: Published) -> Result<CheckpointId, String> {
    crate::crash::point("checkpoint_written");
    let key = p.key.clone();
    p.cost.shared_cpu(published.cpu_seconds);
    let m = &published.manifest;
    let checkpoint = CheckpointRecord {
        id: m.checkpoint_id.clone(),
        run: key.run.clone(),
        round: key.round,
        model_name: m.model.name().to_string(),
        sha256: m.weights_sha256.clone(),
        parent: m.parent_checkpoint.clone(),
        manifest_json: published.manifest_json.clone(),
        signature_json: published.signature_json.clone(),
        created_at: m.created_at,
        locations: published.locations.clone(),
    };
    let mut drafts: Vec<_> = published
        .locations
        .iter()
        .map(|(region, _)| {
            let policy = m.policy_sha256.as_deref().map_or_else(String::new, |h| format!(" under policy set {h}"));
            crate::audit::draft(
                crate::audit::COORDINATOR,
                AuditAction::CheckpointPublished,
                format!("checkpoint {} (weights sha256 {}){policy}", m.checkpoint_id, m.weights_sha256),
            )
            .run(&key.run)
            .region(region)
        })
        .collect();
    if let Some(p) = &m.privacy {
        let scopes = p.scopes.iter().map(|s| format!("{} ε {:.4}", s.scope, s.epsilon)).collect::<Vec<_>>().join(", ");
        drafts.push(
            crate::audit::draft(
                crate::audit::COORDINATOR,
                AuditAction::PrivacyCharged,
                match &p.noised_by {
                    None => format!("round {} charged; cumulative: {scopes}", key.round),
                    Some(tier) => {
                        format!("round {} noised and charged by the {tier} tier; reported: {scopes}", key.round)
                    }
                },
            )
            .run(&key.run),
        );
    }
    let completion = RoundCompletion {
        run: key.run.clone(),
        round: key.round,
        attempt: key.attempt,
        reported: p.reported,
        samples: m.total_samples,
        metrics: m.metrics,
        checkpoint,
        // With an evaluation to come, the run succeeds only once it is done.
        final_round: p.final_round && !p.evaluate,
        // Publications and the privacy charge are on record exactly when the round is.
        audit: drafts,
        charge: p.next_clip.map(|next_clip_norm| PrivacyCharge { next_clip_norm }),
        energy: energy(&core.env.settings, std::mem::take(&mut p.compute)),
        // A private run's training seconds follow its clients' data sizes: not recorded.
        cost: p.cost.finish(core.env.settings.prices.as_ref(), core.plan.privacy.is_some()),
    };
    let committing = std::time::Instant::now();
    if let Err(e) = core.env.store.complete_round(&completion).await {
        error!(run = %key.run, round = key.round, error = %e, "cannot commit round");
        return Err(format!("store failure: {e}"));
    }
    metrics::histogram!("fedra_store_seconds", "op" => "complete_round").record(committing.elapsed().as_secs_f64());
    if let Some(p) = &published.manifest.privacy {
        privacy_gauges(core, &p.scopes);
    }
    crate::crash::point("round_committed");
    info!(run = %key.run, round = key.round, checkpoint = %m.checkpoint_id, loss = m.metrics.loss_after, "round published");
    core.emit_round(
        key.round,
        RunEventKind::Published {
            checkpoint: m.checkpoint_id.clone(),
            regions: published.locations.iter().map(|(r, _)| r.clone()).collect(),
            sha256: m.weights_sha256.clone(),
        },
    );
    Ok(m.checkpoint_id.clone())
}

/// ε spent per privacy scope (model@region, a bounded set) and what its budget leaves.
fn privacy_gauges(core: &RunCore, scopes: &[crate::checkpoint::ScopeEpsilon]) {
    for s in scopes {
        metrics::gauge!("fedra_privacy_epsilon_spent", "scope" => s.scope.clone()).set(s.epsilon);
        let budget = crate::privacy::PrivacyScope::parse(&s.scope)
            .and_then(|scope| core.env.settings.governance.budget(&core.env.settings.privacy.budgets, &scope));
        if let Some(b) = budget {
            metrics::gauge!("fedra_privacy_epsilon_remaining", "scope" => s.scope.clone())
                .set((b.epsilon - s.epsilon).max(0.0));
        }
    }
}

/// The round's estimated energy and carbon per region: the contributors' reported training
/// seconds at the configured watts, times each region's intensity now (when the carbon feed
/// has one).
fn energy(
    settings: &super::super::EngineSettings,
    compute: BTreeMap<RegionId, f64>,
) -> Vec<crate::carbon::RegionEnergy> {
    let feed = settings.carbon.as_ref().map(|s| s.feed());
    let now = chrono::Utc::now();
    let watts = settings.client_watts;
    compute
        .into_iter()
        .map(|(region, compute_seconds)| {
            let energy_kwh = crate::carbon::energy_kwh(compute_seconds, watts);
            let carbon_g = feed.as_ref().and_then(|f| f.intensity(&region, now)).map(|g| g * energy_kwh);
            crate::carbon::RegionEnergy { region, compute_seconds, energy_kwh, carbon_g }
        })
        .collect()
}
