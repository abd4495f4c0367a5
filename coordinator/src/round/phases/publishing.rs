//! Publishing: the new model is written as a checkpoint into each target region's artifact
//! store (encoded on a blocking thread, put asynchronously), then the round is committed in one store transaction and a
//! private round's reservations become charges. → Evaluating when the plan evaluates this
//! round, else → Done; → Failed when writing or committing fails.

use super::super::run::{Internal, RunCore};
use super::super::task::GlobalModel;
use super::super::{RoundError, RunEventKind, TrainingMetrics};
use super::{Phase, Transition, evaluating};
use crate::aggregation::server_opt::ServerState;
use crate::checkpoint::{Contributor, PrivacyProvenance, PublishRequest, Published, RobustProvenance};
use crate::ids::{CheckpointId, RegionId, RoundNumber};
use crate::store::{CheckpointRecord, PrivacyCharge, RoundCompletion};
use fedra_types::audit::AuditAction;
use std::sync::Arc;
use tracing::{error, info};

/// Waiting for the checkpoint to be written.
#[derive(Debug)]
pub(in crate::round) struct Publishing {
    /// A private round's next clipping bound, applied once the round is committed.
    next_clip: Option<Option<f64>>,
    /// A server optimizer's state after this round, the run's once the round is committed.
    server_state: Option<ServerState>,
    /// Updates aggregated (a private run's manifest does not list them).
    reported: u32,
}

/// The aggregated round, as publishing writes it.
pub(in crate::round) struct RoundOutput {
    pub params: Vec<f32>,
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

/// Starts writing the checkpoint; the result comes back as [`Internal::Published`].
pub(in crate::round) fn start(core: &mut RunCore, out: RoundOutput) -> Transition {
    let RoundOutput { params, contributors, metrics, regions, privacy, server_state, aggregation } = out;
    let key = core.key.clone();
    let next_clip = privacy.as_ref().map(|(next, _)| *next);
    let reported = contributors.len() as u32;
    let req = PublishRequest {
        id: CheckpointId::for_round(&key.run, RoundNumber(key.round)),
        run: key.run.clone(),
        round: key.round,
        attempt: key.attempt,
        parent: core.parent.clone(),
        model: core.plan.model.clone(),
        contributors,
        metrics,
        regions,
        privacy: privacy.map(|(_, p)| p),
        policy_sha256: core.env.settings.governance.snapshot().map(|p| p.sha256().to_string()),
        server_state: match (&core.plan.strategy, &server_state) {
            (crate::plan::Strategy::Server(opt), Some((_, sha))) => Some((opt.name(), sha.clone())),
            _ => None,
        },
        references: if core.plan.privacy.is_some() { Default::default() } else { std::mem::take(&mut core.references) },
        aggregation,
    };
    let checkpoints = core.env.checkpoints.clone();
    let tx = core.internal.clone();
    let layout = core.plan.model.layout();
    // Encoding runs on a blocking thread inside `publish`, the writes are async puts: the
    // run's task goes on serving requests meanwhile.
    let work = tokio::spawn(async move {
        let (published, params) = checkpoints.publish(req, params).await.map_err(RoundError::from)?;
        Ok((published, Arc::new(GlobalModel::new(layout, params))))
    });
    tokio::spawn(async move {
        let result = match work.await {
            Ok(r) => r,
            Err(e) => Err(RoundError::Internal(format!("the publishing task failed: {e}"))),
        };
        let _ = tx.send(Internal::Published { key, result: Box::new(result) });
    });
    Transition::to(Phase::Publishing(Publishing { next_clip, server_state: server_state.map(|(s, _)| s), reported }))
}

/// Publishing → Done (or Evaluating): one store transaction, then the next step.
pub(in crate::round) async fn on_published(
    p: &mut Publishing,
    core: &mut RunCore,
    result: Result<(Published, Arc<GlobalModel>), RoundError>,
) -> Transition {
    let (published, model) = match result {
        Ok(p) => p,
        Err(e) => return Transition::fail(format!("publishing failed: {e}")),
    };
    crate::crash::point("checkpoint_written");
    let key = core.key.clone();
    core.cost.shared_cpu(published.cpu_seconds);
    let m = &published.manifest;
    let final_round = key.round >= core.plan.rounds;
    let evaluate = core.plan.evaluation.after_round(key.round, core.plan.rounds);
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
        final_round: final_round && !evaluate,
        // Publications and the privacy charge are on record exactly when the round is.
        audit: drafts,
        charge: p.next_clip.map(|next_clip_norm| PrivacyCharge { next_clip_norm }),
        energy: energy(core),
        // A private run's training seconds follow its clients' data sizes: not recorded.
        cost: core.cost.finish(core.env.settings.prices.as_ref(), core.plan.privacy.is_some()),
    };
    let committing = std::time::Instant::now();
    if let Err(e) = core.env.store.complete_round(&completion).await {
        error!(run = %key.run, round = key.round, error = %e, "cannot commit round");
        return Transition::fail(format!("store failure: {e}"));
    }
    metrics::histogram!("fedra_store_seconds", "op" => "complete_round").record(committing.elapsed().as_secs_f64());
    if let Some(p) = &published.manifest.privacy {
        privacy_gauges(core, &p.scopes);
    }
    // The attempt is done for good: a later failure (a cancel during evaluation) ends the
    // run, not this round.
    core.recorded = false;
    crate::crash::point("round_committed");
    // The aggregate is released and its reservations are charged (they counted already).
    if let Some(Some(next_clip)) = p.next_clip.take() {
        core.clip_norm = Some(next_clip);
    }
    info!(run = %key.run, round = key.round, checkpoint = %m.checkpoint_id, loss = m.metrics.loss_after, "round published");
    core.emit(RunEventKind::Published {
        checkpoint: m.checkpoint_id.clone(),
        regions: published.locations.iter().map(|(r, _)| r.clone()).collect(),
        sha256: m.weights_sha256.clone(),
    });
    core.parent = Some(m.checkpoint_id.clone());
    if let Some(state) = p.server_state.take() {
        core.server_state = Some(state);
    }
    let checkpoint = m.checkpoint_id.clone();
    core.global = Some(model);
    if evaluate {
        Transition::to(evaluating::enter(core, checkpoint, final_round, false))
    } else {
        Transition::to(Phase::Done { final_round })
    }
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
fn energy(core: &mut RunCore) -> Vec<crate::carbon::RegionEnergy> {
    let feed = core.env.settings.carbon.as_ref().map(|s| s.feed());
    let now = chrono::Utc::now();
    let watts = core.env.settings.client_watts;
    std::mem::take(&mut core.compute)
        .into_iter()
        .map(|(region, compute_seconds)| {
            let energy_kwh = crate::carbon::energy_kwh(compute_seconds, watts);
            let carbon_g = feed.as_ref().and_then(|f| f.intensity(&region, now)).map(|g| g * energy_kwh);
            crate::carbon::RegionEnergy { region, compute_seconds, energy_kwh, carbon_g }
        })
        .collect()
}
