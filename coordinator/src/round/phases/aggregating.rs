//! Aggregating: the running sum becomes the next global model, on a blocking thread and in
//! the old model's buffer (FedAvg's weighted mean; for a private round DP-FedAvg's noised
//! release, see [`crate::privacy::release`]). → Publishing (or → Released, see
//! [`publishing`]), or → Failed when the average cannot be computed (or the computation
//! panics).
//!
//! While the previous round's checkpoint is still being written (it was released early),
//! the average waits for that round's commit: rounds commit in order, and the old model's
//! buffer is free for reuse only once its writer let go of it (a copy would break the
//! coordinator's memory bound for large models).

use super::super::run::{Internal, RunCore};
use super::super::task::GlobalModel;
use super::super::{RoundError, RunEventKind, TrainingMetrics};
use super::publishing;
use super::{Phase, Transition};
use crate::aggregation::server_opt::{self, ServerState};
use crate::aggregation::{RobustOutcome, RoundSum};
use crate::checkpoint::Contributor;
use crate::checkpoint::{RobustProvenance, ScopeEpsilon};
use crate::ids::RegionId;
use crate::plan::Strategy;
use crate::privacy::RoundMechanism;
use crate::privacy::admission::PrivateRound;
use crate::privacy::release;
use std::sync::Arc;
use tracing::{info, warn};

/// The aggregate as the blocking work computed it.
pub(in crate::round) struct Averaged {
    /// The next global model (its transfer digest computed on the blocking thread too).
    pub model: Arc<GlobalModel>,
    /// Adaptive clipping's noised count.
    pub noised_count: Option<f64>,
    /// A server optimizer's state after this round's step, and its state file's sha256.
    pub server_state: Option<(ServerState, String)>,
    /// What a robust rule did with individual updates (by arrival index).
    pub robust: Option<RobustOutcome>,
    /// Thread CPU seconds of the averaging (cost attribution).
    pub cpu_seconds: f64,
}

/// What the round carries into publishing while the average is computed.
#[derive(Debug)]
pub(in crate::round) struct Aggregating {
    contributors: Vec<Contributor>,
    metrics: TrainingMetrics,
    dp: Option<(RoundMechanism, Vec<ScopeEpsilon>)>,
    fold_seconds: f64,
    regions: Vec<RegionId>,
    clients: u32,
    /// The sum, while the average waits for the previous round's commit.
    queued: Option<Box<Queued>>,
}

/// What the average is computed from, held until it can start.
struct Queued {
    acc: RoundSum,
    dp_noise: Option<(RoundMechanism, i64)>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queued")
    }
}

impl Aggregating {
    /// The average is computing (a result will come back as [`Internal::Averaged`]).
    pub fn launched(&self) -> bool {
        self.queued.is_none()
    }
}

/// Enters Aggregating: starts computing the average now, or once the previous round is
/// committed when its checkpoint is still being written ([`launch`] then).
pub(in crate::round) fn start(
    core: &mut RunCore,
    acc: RoundSum,
    contributors: Vec<Contributor>,
    metrics: TrainingMetrics,
    dp: Option<PrivateRound>,
    fold_seconds: f64,
    regions: Vec<RegionId>,
) -> Transition {
    // Client updates in the model (a regional aggregate counts its region's).
    let clients = contributors.iter().map(|c| c.clients).sum();
    let dp_noise = dp.as_ref().map(|d| (d.mechanism.clone(), d.count_sum));
    let mut a = Aggregating {
        contributors,
        metrics,
        dp: dp.map(|d| (d.mechanism, d.scopes)),
        fold_seconds,
        regions,
        clients,
        queued: Some(Box::new(Queued { acc, dp_noise })),
    };
    if core.releasing.is_some() {
        info!(run = %core.key.run, round = core.key.round, "the average waits for the previous round's commit");
        return Transition::to(Phase::Aggregating(a));
    }
    match launch(&mut a, core) {
        Ok(()) => Transition::to(Phase::Aggregating(a)),
        Err(reason) => Transition::fail(reason),
    }
}

/// Starts computing the queued average on a blocking thread; the result comes back as
/// [`Internal::Averaged`]. Does nothing when it is computing already.
///
/// # Errors
/// The reason the round fails (its model is missing).
pub(in crate::round) fn launch(a: &mut Aggregating, core: &mut RunCore) -> Result<(), String> {
    let Some(queued) = a.queued.take() else { return Ok(()) };
    let Queued { acc, dp_noise } = *queued;
    let Some(old) = core.global.take() else { return Err("the global model is missing".into()) };
    let key = core.key.clone();
    let expected = core.plan.privacy.as_ref().map_or(1, |p| p.expected_clients);
    let layout = core.plan.model.layout();
    // A server optimizer steps from the current model with its state (cloned: a failed
    // round leaves the committed state as it was).
    let server = match core.plan.strategy {
        Strategy::Server(opt) => {
            let state =
                core.server_state.clone().unwrap_or_else(|| ServerState::new(&opt, old.params.as_slice().len()));
            Some((opt, state, old.params.as_slice().to_vec()))
        }
        Strategy::FedAvg => None,
    };
    let (run, round, checkpoints) = (key.run.clone(), key.round, core.env.checkpoints.clone());
    let (rule, block_budget) = (core.plan.aggregator, core.env.settings.robust_block_budget);
    let tx = core.internal.clone();
    let averaged = tokio::task::spawn_blocking(move || {
        crate::cost::cpu_timed(|| {
            let mut robust = None;
            let (mut params, noised_count) = match (acc, dp_noise) {
                (RoundSum::Mean(acc), None) => {
                    let r = acc.average_into(old.into_values()).map(|p| (p, None)).map_err(RoundError::from);
                    // The sum goes before publishing allocates anything.
                    drop(acc);
                    r
                }
                (RoundSum::Private(acc), None) => {
                    let r = acc.average_into(old.into_values()).map(|p| (p, None)).map_err(RoundError::from);
                    drop(acc);
                    r
                }
                (RoundSum::Private(acc), Some((mechanism, count_sum))) => {
                    release::private_average(acc, old.into_values(), &mechanism, count_sum, expected)
                        .map_err(RoundError::from)
                }
                // The rule reads the spilled updates block by block over the old model's buffer.
                (RoundSum::Robust(stage), None) => stage
                    .aggregate(&rule, old.into_values(), block_budget)
                    .map(|(p, o)| {
                        robust = Some(o);
                        (p, None)
                    })
                    .map_err(RoundError::from),
                (RoundSum::Mean(_), Some(_)) => {
                    Err(RoundError::Internal("a private round must sum in f64 (chosen at selection)".into()))
                }
                (RoundSum::Robust(_), Some(_)) => {
                    Err(RoundError::Internal("a private round cannot use a robust rule (refused at submit)".into()))
                }
            }?;
            let server_state = match server {
                None => None,
                Some((opt, mut state, model)) => {
                    server_opt::step(&opt, &mut state, &model, &mut params)
                        .map_err(|e| RoundError::Internal(format!("server optimizer: {e}")))?;
                    drop(model);
                    let (encoded, sha) = crate::checkpoint::encode_server_state(&state)?;
                    Some((state, sha, encoded))
                }
            };
            // The transfer digest is a pass over the model: here, not on the actor.
            Ok((Arc::new(GlobalModel::new(layout, params)), noised_count, server_state, robust))
        })
    });
    tokio::spawn(async move {
        let result = match averaged.await {
            Ok((Ok((model, noised_count, server_state, robust)), cpu_seconds)) => {
                // The optimizer state is written (an async put) before publishing starts.
                let written = match server_state {
                    None => Ok(None),
                    Some((state, sha, encoded)) => checkpoints
                        .write_server_state(&run, round, encoded)
                        .await
                        .map(|()| Some((state, sha)))
                        .map_err(RoundError::from),
                };
                written.map(|server_state| Averaged { model, noised_count, server_state, robust, cpu_seconds })
            }
            Ok((Err(e), _)) => Err(e),
            Err(e) => Err(RoundError::Internal(format!("the averaging task failed: {e}"))),
        };
        let _ = tx.send(Internal::Averaged { key, result });
    });
    Ok(())
}

/// The average is ready (or failed): → Publishing or → Failed.
pub(in crate::round) fn on_averaged(
    a: &mut Aggregating,
    core: &mut RunCore,
    result: Result<Averaged, RoundError>,
) -> Transition {
    let Averaged { model, noised_count, server_state, robust, cpu_seconds } = match result {
        Ok(r) => r,
        Err(e) => return Transition::fail(format!("aggregation failed: {e}")),
    };
    core.cost.shared_cpu(cpu_seconds);
    metrics::histogram!("fedra_aggregation_seconds").record(cpu_seconds);
    let privacy = match (a.dp.take(), &core.plan.privacy) {
        (Some((mechanism, scopes)), Some(plan)) => {
            let next = release::next_clip_norm(plan, &mechanism, noised_count);
            Some((next, release::provenance(plan, &mechanism, scopes, core.key.round)))
        }
        // The global tier: the regions noised and charged; their ε goes into the manifest.
        (None, Some(plan)) if core.env.settings.tier.is_global() => {
            let scopes = a.contributors.iter().flat_map(|c| c.scopes.iter().cloned()).collect();
            let slack = core.env.reservations.lattice_slack();
            match release::relayed_provenance(plan, model.params.len(), slack, scopes, core.key.round) {
                Ok(p) => Some((None, p)),
                Err(e) => return Transition::fail(format!("aggregation failed: {e}")),
            }
        }
        _ => None,
    };
    let contributors = std::mem::take(&mut a.contributors);
    let robust = robust.map(|o| robust_provenance(core, &contributors, o));
    let samples: u64 = contributors.iter().map(|c| c.samples).sum();
    core.emit(RunEventKind::Aggregated {
        clients: a.clients,
        samples,
        metrics: a.metrics,
        fold_seconds: a.fold_seconds,
        update_bytes: core.round_update_bytes,
    });
    let out = publishing::RoundOutput {
        model,
        contributors,
        metrics: a.metrics,
        regions: std::mem::take(&mut a.regions),
        privacy,
        server_state,
        aggregation: robust,
    };
    publishing::start(core, out)
}

/// The rule's effect on individual clients, by name, for the manifest; each exclusion and
/// scaling is logged too.
fn robust_provenance(core: &RunCore, contributors: &[Contributor], o: RobustOutcome) -> RobustProvenance {
    let key = &core.key;
    let name = |i: usize| contributors.get(i).map(|c| c.client.clone());
    let excluded: Vec<_> = o.excluded.iter().filter_map(|&i| name(i)).collect();
    let scaled: Vec<_> = o.scaled.iter().filter_map(|&(i, s)| name(i).map(|c| (c, s))).collect();
    for c in &excluded {
        warn!(run = %key.run, round = key.round, client = %c, rule = %core.plan.aggregator, "update left out of the aggregate");
    }
    for (c, s) in &scaled {
        warn!(run = %key.run, round = key.round, client = %c, factor = s, "update's delta scaled down to the norm bound");
    }
    RobustProvenance { rule: core.plan.aggregator.to_string(), excluded, scaled }
}
