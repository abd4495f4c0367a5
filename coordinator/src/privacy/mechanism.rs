//! One private round's mechanism, fixed before any client trains: the clipping norm, the
//! noise that will be drawn, and what it costs.
//!
//! Central DP-FedAvg (McMahan et al. 2018): clients clip their update to C; the coordinator
//! sums the clipped updates, rounds the sum to a power-of-two lattice, adds exact discrete
//! Gaussian noise of std ≥ z·C (see `fedra_dp::noise::LatticeGaussian`), and divides by
//! the plan's fixed `expected_clients`. The cost accounts for the discretisation: the
//! sensitivity grows by g·√d and σ is rounded up, so ρ is slightly above 1/(2z²).
//!
//! Adaptive clipping (Andrew et al. 2021) adds a second query, Σ(2bᵢ − 1) with
//! bᵢ = [‖Δᵢ‖ ≤ C] (sensitivity 1), noised with std 2σ_b; the update noise multiplier is
//! lowered to z_Δ = (z⁻² − (2σ_b)⁻²)^(−½) so that both together cost what z alone would.
//!
//! Local DP: each client clips and adds the same lattice noise to its own update; the
//! coordinator only averages. Its cost is the same ρ per round, without any amplification
//! by sampling (the coordinator sees which clients took part).
//!
//! What a lying client can steer: under central DP the coordinator measures every update's
//! norm itself and refuses (or re-clips) one over C, so no client moves the sum by more than
//! C whatever it claims. The one number it reports that steers the mechanism is its norm
//! before clipping (`UpdateTrailer.update_norm`, checked finite and ≥ 0 at the edge, and
//! refused when below the norm of the update it sent, which clipping can only shrink), which
//! only sets its bit in adaptive clipping's count query: one vote of ±1, the query's
//! sensitivity, noised like every other vote. A coalition of k liars can move the noised
//! count by at most 2k, so C by a factor of at most exp(η·k/m) per round, and never the
//! privacy guarantee, which holds for any C. Under local DP the clients add the noise, and a
//! client that skips it weakens only its own protection.

use super::PrivacyError;
use super::accountant::{self, Accountant, RoundCost};
use crate::plan::{DpMechanism, PrivacyPlan, Sampling};
use fedra_dp::noise::{CLIP_TOLERANCE, IntegerGaussian, LatticeGaussian};

/// Default slack of the lattice: the rounding adds at most this fraction of C to the
/// sensitivity (g·√d ≤ slack·C).
pub const DEFAULT_LATTICE_SLACK: f64 = 1e-3;

/// A round's privacy mechanism.
#[derive(Debug, Clone)]
pub struct RoundMechanism {
    pub mechanism: DpMechanism,
    pub accountant: Accountant,
    /// C for this round.
    pub clip_norm: f64,
    /// The sensitivity the noise is calibrated to: C widened by the float tolerance that
    /// the coordinator's norm check allows.
    pub sensitivity: f64,
    /// Std of the noise on each coordinate of the update sum (central) or of each client's
    /// update (local), after discretisation.
    pub update_noise_std: f64,
    /// The std asked of the lattice before discretisation (z·C, or z_Δ·C under adaptive
    /// clipping): a client rebuilds the same lattice from it for local DP.
    pub update_noise_target_std: f64,
    /// The update noise; drawn by the coordinator (central) or by each client (local).
    pub update_noise: LatticeGaussian,
    /// Noise on Σ(2bᵢ − 1) under adaptive clipping.
    pub count_noise: Option<IntegerGaussian>,
    /// ρ of the whole round (update + count), zCDP.
    pub rho: f64,
    /// The single Gaussian noise multiplier equivalent to the round, 1/√(2ρ).
    pub effective_noise_multiplier: f64,
    /// The cost the ledger records.
    pub cost: RoundCost,
    pub sampling_rate: f64,
    pub lattice_slack: f64,
}

impl RoundMechanism {
    /// Builds the mechanism for a model of `dim` parameters at clipping norm `clip_norm`.
    ///
    /// # Errors
    /// Invalid parameters (e.g. a count noise too small for the noise multiplier).
    pub fn new(plan: &PrivacyPlan, dim: usize, clip_norm: f64, lattice_slack: f64) -> Result<Self, PrivacyError> {
        let sensitivity = clip_norm * (1.0 + CLIP_TOLERANCE);
        let (update_z, count_noise) = match plan.count_noise_std() {
            Some(sigma_b) => {
                let z_delta = accountant::split_noise_for_adaptive_clipping(plan.noise_multiplier, sigma_b)?;
                (z_delta, Some(IntegerGaussian::new(2.0 * sigma_b)?))
            }
            None => (plan.noise_multiplier, None),
        };
        let update_noise_target_std = update_z * sensitivity;
        let update_noise = LatticeGaussian::new(dim, sensitivity, update_noise_target_std, lattice_slack)?;
        let rho = update_noise.rho() + count_noise.as_ref().map_or(0.0, IntegerGaussian::rho);
        let effective_noise_multiplier = 1.0 / (2.0 * rho).sqrt();
        let sampling_rate = plan.sampling.rate();
        let (accountant, cost) = match (plan.mechanism, plan.sampling) {
            (DpMechanism::Central, Sampling::Poisson { rate }) => {
                // The lattice Gaussian is accounted at integer Rényi orders only (see
                // `RoundCost::sampled_lattice_gaussian` for why).
                (Accountant::PoissonRdp, RoundCost::sampled_lattice_gaussian(rate, effective_noise_multiplier)?)
            }
            _ => (Accountant::Zcdp, RoundCost::gaussian(rho)),
        };
        Ok(Self {
            mechanism: plan.mechanism,
            accountant,
            clip_norm,
            sensitivity,
            update_noise_std: update_noise.sigma(),
            update_noise_target_std,
            update_noise,
            count_noise,
            rho,
            effective_noise_multiplier,
            cost,
            sampling_rate,
            lattice_slack,
        })
    }
}

/// Adaptive clipping's update (Andrew et al. 2021, geometric rule): C ← C·exp(−η(b̃ − γ)),
/// with b̃ = (Σ(2bᵢ − 1) + noise)/(2m) + ½ the noised fraction of clients at or under C.
pub fn next_clip_norm(clip_norm: f64, noised_count_sum: f64, expected_clients: u32, quantile: f64, eta: f64) -> f64 {
    let b = noised_count_sum / (2.0 * f64::from(expected_clients)) + 0.5;
    clip_norm * (-eta * (b - quantile)).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Clipping, OverBound};

    fn plan(clipping: Clipping, sampling: Sampling) -> PrivacyPlan {
        PrivacyPlan {
            mechanism: DpMechanism::Central,
            noise_multiplier: 1.0,
            clipping,
            over_bound: OverBound::Reject,
            sampling,
            expected_clients: 100,
        }
    }

    #[test]
    fn fixed_clipping_costs_about_one_over_two_z_squared() {
        let m = RoundMechanism::new(&plan(Clipping::Fixed { norm: 2.0 }, Sampling::Fixed), 100_000, 2.0, 1e-3).unwrap();
        assert_eq!(m.accountant, Accountant::Zcdp);
        // Discretisation only ever adds cost, and only a little.
        assert!(m.rho >= 0.5 && m.rho < 0.5 * 1.01, "rho {}", m.rho);
        assert!(m.update_noise_std >= 2.0 && m.update_noise_std < 2.0 * 1.001, "{}", m.update_noise_std);
    }

    #[test]
    fn adaptive_clipping_splits_the_same_budget() {
        let adaptive =
            Clipping::Adaptive { initial_norm: 1.0, target_quantile: 0.5, learning_rate: 0.2, count_noise_std: 0.0 };
        let m = RoundMechanism::new(&plan(adaptive, Sampling::Poisson { rate: 0.1 }), 1000, 1.0, 1e-3).unwrap();
        assert_eq!(m.accountant, Accountant::PoissonRdp);
        assert!(m.count_noise.is_some());
        // Update noise is a bit larger than z·C, and both parts together cost ≈ 1/(2z²).
        assert!(m.update_noise_std > 1.0, "{}", m.update_noise_std);
        assert!(m.rho >= 0.5 && m.rho < 0.505, "rho {}", m.rho);
    }

    #[test]
    fn adaptive_clipping_converges_to_the_target_quantile() {
        // A fixed norm distribution: 100 clients with norms 0.05, 0.10, …, 5.0. With the
        // paper's count noise (σ_b = m/20) and η = 0.2, C settles where a fraction γ of
        // the norms is at or under it, from far above and from far below.
        let norms: Vec<f64> = (1..=100).map(|i| f64::from(i) * 0.05).collect();
        let m = norms.len() as u32;
        let count_noise = IntegerGaussian::new(2.0 * f64::from(m) / 20.0).unwrap();
        let mut rng = fedra_dp::noise::SecureRng::from_os_rng().unwrap();
        for gamma in [0.3, 0.5, 0.8] {
            for start in [0.01, 50.0] {
                let mut c: f64 = start;
                let mut tail = Vec::new();
                for round in 0..400 {
                    let count: i64 = norms.iter().map(|n| if *n <= c { 1 } else { -1 }).sum();
                    let noised = count as f64 + count_noise.sample(&mut rng).unwrap() as f64;
                    c = next_clip_norm(c, noised, m, gamma, 0.2);
                    if round >= 300 {
                        tail.push(norms.iter().filter(|n| **n <= c).count() as f64 / f64::from(m));
                    }
                }
                let mean = tail.iter().sum::<f64>() / tail.len() as f64;
                assert!((mean - gamma).abs() < 0.05, "γ={gamma} from C={start}: fraction under C is {mean}");
            }
        }
    }

    #[test]
    fn clip_norm_moves_toward_the_target_quantile() {
        // Everyone under C (b̃ = 1 > γ = 0.5): C shrinks; nobody under C: C grows.
        assert!(next_clip_norm(1.0, 100.0, 50, 0.5, 0.2) < 1.0);
        assert!(next_clip_norm(1.0, -100.0, 50, 0.5, 0.2) > 1.0);
        assert!((next_clip_norm(1.0, 0.0, 50, 0.5, 0.2) - 1.0).abs() < 1e-12);
    }
}
