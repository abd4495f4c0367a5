//! The zCDP cost of one Gaussian-mechanism round: `ρ = 1/(2z²)` in closed form, and the same
//! number asked of OpenDP's `make_gaussian` as a cross-check against a vetted implementation.
//!
//! zCDP is the accountant's conservative path: it claims no amplification by sampling, so
//! it holds however the cohort was chosen.

use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;

use super::{AccountingError, check_noise_multiplier, check_rho};

/// The zCDP cost `ρ = 1/(2z²)` of one Gaussian-mechanism round with noise multiplier `z`
/// (noise stddev `z·Δ` for L2 sensitivity `Δ`; Bun & Steinke 2016, Prop. 1.6).
///
/// # Errors
/// [`AccountingError::InvalidParameter`] unless `z` is finite and positive, or when `z` is
/// so small that `ρ` overflows.
pub fn gaussian_rho(noise_multiplier: f64) -> Result<f64, AccountingError> {
    check_noise_multiplier(noise_multiplier)?;
    let rho = 1.0 / (2.0 * noise_multiplier * noise_multiplier);
    check_rho(rho)?;
    Ok(rho)
}

/// Asks OpenDP's Gaussian mechanism for its zCDP cost: the privacy map of
/// `make_gaussian` over `Vec<f64>` with the L2 metric, noise scale `sigma`, evaluated at
/// `l2_sensitivity`. Mathematically `(Δ/σ)²/2`; OpenDP computes it in exact rational
/// arithmetic and rounds up, so the result is at least that by at most an ulp or so. This
/// is the cross-check that fedra's own `ρ` agrees with a vetted implementation.
///
/// # Errors
/// [`AccountingError::InvalidParameter`] for a negative or non-finite sensitivity or a
/// non-positive or non-finite `sigma`; [`AccountingError::OpenDp`] if OpenDP refuses.
pub fn opendp_gaussian_rho(l2_sensitivity: f64, sigma: f64) -> Result<f64, AccountingError> {
    if !(l2_sensitivity >= 0.0 && l2_sensitivity.is_finite()) {
        return Err(AccountingError::InvalidParameter {
            name: "l2 sensitivity",
            value: l2_sensitivity,
            expected: "finite and >= 0",
        });
    }
    if !(sigma > 0.0 && sigma.is_finite()) {
        return Err(AccountingError::InvalidParameter {
            name: "noise stddev",
            value: sigma,
            expected: "finite and > 0",
        });
    }
    let measurement = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L2Distance::<f64>::default(),
        sigma,
        None,
    )
    .map_err(|e| AccountingError::opendp("make_gaussian", e))?;
    measurement.map(&l2_sensitivity).map_err(|e| AccountingError::opendp("gaussian privacy map", e))
}
