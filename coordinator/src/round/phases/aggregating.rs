//! Aggregating: the running sum becomes the next global model, on a blocking thread and in
//! the old model's buffer (FedAvg's weighted mean; for a private round DP-FedAvg's noised
//! release, see [`crate::privacy::release`]). → Publishing, or → Failed when the average
//! cannot be computed (or the computation panics).

use super::super::run::{Internal, RunCore};
use super::super::{RoundError, RunEventKind, TrainingMetrics};
use super::publishing;
use super::{Phase, Transition};
use crate::aggregation::FedAvgAccumulator;
use crate::checkpoint::Contributor;
use crate::checkpoint::ScopeEpsilon;
use crate::ids::RegionId;
use crate::privacy::RoundMechanism;
use crate::privacy::admission::PrivateRound;
use crate::privacy::release;

/// What the round carries into publishing while the average is computed.
#[derive(Debug)]
pub(in crate::round) struct Aggregating {
    contributors: Vec<Contributor>,
    metrics: TrainingMetrics,
    dp: Option<(RoundMechanism, Vec<ScopeEpsilon>)>,
    fold_seconds: f64,
    regions: Vec<RegionId>,
    clients: u32,
}

/// Starts computing the average; the result comes back as [`Internal::Averaged`].
pub(in crate::round) fn start(
    core: &mut RunCore,
    acc: FedAvgAccumulator,
    contributors: Vec<Contributor>,
    metrics: TrainingMetrics,
    dp: Option<PrivateRound>,
    fold_seconds: f64,
    regions: Vec<RegionId>,
) -> Transition {
    let Some(old) = core.global.take() else { return Transition::fail("the global model is missing") };
    let key = core.key.clone();
    let expected = core.plan.privacy.as_ref().map_or(1, |p| p.expected_clients);
    // Client updates in the model (a regional aggregate counts its region's).
    let clients = contributors.iter().map(|c| c.clients).sum();
    let dp_noise = dp.as_ref().map(|d| (d.mechanism.clone(), d.count_sum));
    let tx = core.internal.clone();
    let work = tokio::task::spawn_blocking(move || match dp_noise {
        None => {
            let r = acc.average_into(old.into_values()).map(|p| (p, None)).map_err(RoundError::from);
            // The sum goes before publishing allocates anything.
            drop(acc);
            r
        }
        Some((mechanism, count_sum)) => {
            release::private_average(acc, old.into_values(), &mechanism, count_sum, expected).map_err(RoundError::from)
        }
    });
    tokio::spawn(async move {
        let result = match work.await {
            Ok(r) => r,
            Err(e) => Err(RoundError::Internal(format!("the averaging task failed: {e}"))),
        };
        let _ = tx.send(Internal::Averaged { key, result });
    });
    Transition::to(Phase::Aggregating(Aggregating {
        contributors,
        metrics,
        dp: dp.map(|d| (d.mechanism, d.scopes)),
        fold_seconds,
        regions,
        clients,
    }))
}

/// The average is ready (or failed): → Publishing or → Failed.
pub(in crate::round) fn on_averaged(
    a: &mut Aggregating,
    core: &mut RunCore,
    result: Result<(Vec<f32>, Option<f64>), RoundError>,
) -> Transition {
    let (params, noised_count) = match result {
        Ok(r) => r,
        Err(e) => return Transition::fail(format!("aggregation failed: {e}")),
    };
    let privacy = match (a.dp.take(), &core.plan.privacy) {
        (Some((mechanism, scopes)), Some(plan)) => {
            let next = release::next_clip_norm(plan, &mechanism, noised_count);
            Some((next, release::provenance(plan, &mechanism, scopes, core.key.round)))
        }
        // The global tier: the regions noised and charged; their ε goes into the manifest.
        (None, Some(plan)) if core.env.settings.tier.is_global() => {
            let scopes = a.contributors.iter().flat_map(|c| c.scopes.iter().cloned()).collect();
            let slack = core.env.reservations.lattice_slack();
            match release::relayed_provenance(plan, params.len(), slack, scopes, core.key.round) {
                Ok(p) => Some((None, p)),
                Err(e) => return Transition::fail(format!("aggregation failed: {e}")),
            }
        }
        _ => None,
    };
    let contributors = std::mem::take(&mut a.contributors);
    let samples: u64 = contributors.iter().map(|c| c.samples).sum();
    core.emit(RunEventKind::Aggregated {
        clients: a.clients,
        samples,
        metrics: a.metrics,
        fold_seconds: a.fold_seconds,
    });
    publishing::start(core, params, contributors, a.metrics, std::mem::take(&mut a.regions), privacy)
}
