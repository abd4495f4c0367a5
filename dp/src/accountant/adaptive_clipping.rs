//! Adaptive clipping's privacy arithmetic: splitting one round's noise multiplier between the
//! update sum and the noised clipped-count query, so the round still costs exactly `z`.

use super::{AccountingError, check_noise_multiplier};

/// Splits a round's noise multiplier `z` between the update sum and the clipped-count query
/// of adaptive clipping (Andrew, Thakkar, McMahan & Ramaswamy 2021, "Differentially Private
/// Learning with Adaptive Clipping", Thm. 1) and returns the update sum's noise multiplier
/// `z_Δ` (update noise stddev `z_Δ · C`).
///
/// Each client reports `b_i ∈ {0, 1}` (was its update within the clip norm); the server
/// releases `Σ(b_i − 1/2) + N(0, σ_b²)`, a Gaussian query of sensitivity 1/2, so its noise
/// multiplier is `2σ_b`. Two Gaussian queries on the same clients cost
/// `1/(2z_Δ²) + 1/(2(2σ_b)²)` ([`adaptive_clipping_rho`]); setting that to `1/(2z²)` gives
/// `z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2)`. The pair is then exactly one Gaussian mechanism with
/// noise multiplier `z` on the concatenated query, so the round is charged `z` under either
/// accountant, sampled or not.
///
/// # Errors
/// [`AccountingError::InvalidParameter`] unless `z` and `σ_b` are finite and positive;
/// [`AccountingError::CountNoiseTooSmall`] unless `2σ_b > z` (otherwise the count query
/// alone costs the whole round).
pub fn split_noise_for_adaptive_clipping(noise_multiplier: f64, count_stddev: f64) -> Result<f64, AccountingError> {
    check_noise_multiplier(noise_multiplier)?;
    if !(count_stddev > 0.0 && count_stddev.is_finite()) {
        return Err(AccountingError::InvalidParameter {
            name: "count noise stddev",
            value: count_stddev,
            expected: "finite and > 0",
        });
    }
    let z = noise_multiplier;
    let z_count = 2.0 * count_stddev;
    let remaining = z.powi(-2) - z_count.powi(-2);
    if !(z_count > z && remaining > 0.0) {
        return Err(AccountingError::CountNoiseTooSmall { count_stddev, noise_multiplier, min_count_stddev: z / 2.0 });
    }
    Ok(remaining.powf(-0.5))
}

/// The zCDP cost of an adaptive-clipping round, recombined from its two Gaussian queries:
/// `1/(2z_Δ²) + 1/(2(2σ_b)²)` (zCDP composition), which is `1/(2z²)` when `z_Δ` came from
/// [`split_noise_for_adaptive_clipping`]. Inputs are not validated; it is a plain formula.
pub fn adaptive_clipping_rho(update_noise_multiplier: f64, count_stddev: f64) -> f64 {
    let z_count = 2.0 * count_stddev;
    1.0 / (2.0 * update_noise_multiplier * update_noise_multiplier) + 1.0 / (2.0 * z_count * z_count)
}
