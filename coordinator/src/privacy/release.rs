//! DP-FedAvg's release: the noised average a private round publishes, adaptive clipping's
//! next bound, and the privacy block of the round's manifest. Pure computation, run on a
//! blocking thread by the aggregating phase.

use super::{PrivacyError, RoundMechanism};
use crate::aggregation::{AggregationError, FedAvgAccumulator};
use crate::checkpoint::{PrivacyProvenance, ScopeEpsilon};
use crate::plan::{Clipping, DpMechanism, PrivacyPlan};
use fedra_dp::noise::SecureRng;

/// Why a release could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    #[error(transparent)]
    Aggregation(#[from] AggregationError),
}

/// `global + (Σ clipped updates + noise) / expected_clients`, written into the old model's
/// buffer. Central DP draws the lattice noise here, from an OS-seeded CSPRNG; local DP's
/// updates arrived noised. With adaptive clipping also returns the noised count
/// Σ(2bᵢ − 1) + noise.
///
/// # Errors
/// A sum of the wrong length, a noise failure, or a non-finite released value.
pub fn private_average(
    acc: FedAvgAccumulator,
    mut global: Vec<f32>,
    mechanism: &RoundMechanism,
    count_sum: i64,
    expected_clients: u32,
) -> Result<(Vec<f32>, Option<f64>), ReleaseError> {
    let mut sum = acc.into_sum();
    if sum.len() != global.len() {
        return Err(AggregationError::Length { expected: global.len(), got: sum.len() }.into());
    }
    let mut rng = SecureRng::from_os_rng().map_err(PrivacyError::from)?;
    if mechanism.mechanism == DpMechanism::Central {
        mechanism.update_noise.add_noise(&mut sum, &mut rng).map_err(PrivacyError::from)?;
    }
    let noised_count = match &mechanism.count_noise {
        Some(noise) => Some(count_sum as f64 + noise.sample(&mut rng).map_err(PrivacyError::from)? as f64),
        None => None,
    };
    let m = f64::from(expected_clients);
    for (g, s) in global.iter_mut().zip(&sum) {
        *g = (f64::from(*g) + s / m) as f32;
    }
    if let Some(i) = global.iter().position(|v| !v.is_finite()) {
        return Err(PrivacyError::Noise(format!("the released model has a non-finite value at index {i}")).into());
    }
    Ok((global, noised_count))
}

/// Adaptive clipping's next C from the released noised count, or `None` for a fixed C.
pub fn next_clip_norm(plan: &PrivacyPlan, mechanism: &RoundMechanism, noised_count: Option<f64>) -> Option<f64> {
    match (plan.clipping, noised_count) {
        (Clipping::Adaptive { target_quantile, learning_rate, .. }, Some(count)) => {
            Some(super::mechanism::next_clip_norm(
                mechanism.clip_norm,
                count,
                plan.expected_clients,
                target_quantile,
                learning_rate,
            ))
        }
        _ => None,
    }
}

/// The privacy block of a private round's manifest.
pub fn provenance(
    plan: &PrivacyPlan,
    mechanism: &RoundMechanism,
    scopes: Vec<ScopeEpsilon>,
    round: u32,
) -> PrivacyProvenance {
    let worst = scopes.iter().max_by(|a, b| a.epsilon.total_cmp(&b.epsilon));
    PrivacyProvenance {
        mechanism: match plan.mechanism {
            DpMechanism::Central => "central".into(),
            DpMechanism::Local => "local".into(),
        },
        accountant: mechanism.accountant.as_str().into(),
        noise_multiplier: plan.noise_multiplier,
        effective_noise_multiplier: mechanism.effective_noise_multiplier,
        clip_norm: mechanism.clip_norm,
        sampling_rate: mechanism.sampling_rate,
        noise_std: mechanism.update_noise_std,
        expected_clients: plan.expected_clients,
        rounds: round,
        epsilon: worst.map_or(0.0, |w| w.epsilon),
        delta: worst.map_or(0.0, |w| w.delta),
        scopes,
        metrics_withheld: true,
        noised_by: None,
    }
}

/// The privacy block of a global coordinator's manifest for a private run: each region
/// noised its own sum with the run's mechanism (over its share of the denominator) and
/// charged its own ledger, and its ε per scope is carried up as the region reported it.
///
/// # Errors
/// Mechanism parameters that are invalid for a model of `dim` parameters.
pub fn relayed_provenance(
    plan: &PrivacyPlan,
    dim: usize,
    lattice_slack: f64,
    mut scopes: Vec<ScopeEpsilon>,
    round: u32,
) -> Result<PrivacyProvenance, PrivacyError> {
    let mechanism = RoundMechanism::new(plan, dim, plan.clipping.initial_norm(), lattice_slack)?;
    scopes.sort_by(|a, b| a.scope.cmp(&b.scope));
    Ok(PrivacyProvenance { noised_by: Some("regional".into()), ..provenance(plan, &mechanism, scopes, round) })
}
