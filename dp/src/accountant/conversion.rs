//! From a privacy cost to an `(ε, δ)` guarantee: zCDP `ρ` through OpenDP's optimal
//! conversion, and an RDP curve through the improved per-order conversion minimised over
//! the curve's orders.
//!
//! Kept apart from the costs because this is where the guarantee a user reads is made;
//! both conversions are cross-checked against reference implementations in the tests.

use opendp::combinators::make_zCDP_to_approxDP;
use opendp::core::{Function, Measurement, PrivacyMap};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::SymmetricDistance;
use serde::Serialize;

use super::{AccountingError, RdpCurve, check_delta, check_rho};

/// Converts a total zCDP cost `ρ` into the smallest `ε` with `(ε, δ)`-DP, through OpenDP.
///
/// The composed DP-FedAvg run is modelled as an OpenDP measurement over the set of
/// participating clients (symmetric distance, so `d_in = 1` is adding or removing one
/// client: client-level DP) whose privacy map returns `ρ` at `d_in = 1`. That measurement is
/// passed through `make_zCDP_to_approxDP`, and the resulting privacy profile `δ(ε)` is
/// inverted at `δ` by OpenDP's `PrivacyProfile::epsilon`. The conversion is the optimal one
/// for zCDP (Canonne, Kamath & Steinke 2020, Cor. 13), so it satisfies
/// `ρ < ε ≤ ρ + 2·√(ρ·ln(1/δ))` for `ρ > 0` (Bun & Steinke 2016, Prop. 1.3).
///
/// # Errors
/// [`AccountingError::InvalidParameter`] unless `ρ` is finite and non-negative and
/// `δ ∈ (0, 1)`; [`AccountingError::OpenDp`] if OpenDP refuses.
pub fn zcdp_epsilon(rho: f64, delta: f64) -> Result<f64, AccountingError> {
    check_rho(rho)?;
    check_delta(delta)?;
    let measurement = Measurement::new(
        VectorDomain::new(AtomDomain::<u64>::default()),
        SymmetricDistance,
        ZeroConcentratedDivergence,
        // The ledger never runs the mechanism; only its privacy map is used.
        Function::new(|_clients: &Vec<u64>| ()),
        PrivacyMap::new_fallible(move |changed_clients: &u32| match changed_clients {
            0 => Ok(0.0),
            1 => Ok(rho),
            // Group privacy is not needed by the ledger; refuse rather than guess.
            k => Err(opendp::error::Error {
                variant: opendp::error::ErrorVariant::FailedMap,
                message: Some(format!("the ledger only accounts for one client, got {k}")),
                backtrace: std::backtrace::Backtrace::capture(),
            }),
        }),
    )
    .map_err(|e| AccountingError::opendp("ledger measurement", e))?;
    let approx = make_zCDP_to_approxDP(measurement).map_err(|e| AccountingError::opendp("zCDP to approxDP", e))?;
    let profile = approx.map(&1).map_err(|e| AccountingError::opendp("privacy profile", e))?;
    profile.epsilon(delta).map_err(|e| AccountingError::opendp("privacy profile epsilon", e))
}

/// `ε` for one order of an RDP curve at `δ`, by the improved conversion
/// `ε = r + ln((α−1)/α) − (ln δ + ln α)/(α−1)` (Canonne, Kamath & Steinke 2020, Prop. 12;
/// Asoodeh et al. 2020, eq. 20), with the same guards as `dp_accounting.compute_epsilon`:
/// `ε = 0` when `δ² > 1 − e^{−r}` (then `δ` bounds the total variation via Pinsker-type
/// `TV ≤ √(1 − e^{−KL})`, and `KL ≤ r`), and `+∞` for `α ≤ 1.01` where the formula is
/// numerically unstable.
pub(super) fn improved_epsilon_at(order: f64, value: f64, delta: f64) -> f64 {
    if delta * delta + (-value).exp_m1() > 0.0 {
        0.0
    } else if order > 1.01 {
        value + (-1.0 / order).ln_1p() - (delta * order).ln() / (order - 1.0)
    } else {
        f64::INFINITY
    }
}

/// `ε` for one order by the classic conversion `r + ln(1/δ)/(α−1)` (Mironov 2017, Prop. 3).
/// Only used to show the improved conversion is never worse.
#[cfg(test)]
pub(super) fn classic_epsilon_at(order: f64, value: f64, delta: f64) -> f64 {
    value - delta.ln() / (order - 1.0)
}

/// The best `ε` an RDP curve gives at some `δ`, and the order that gave it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RdpEpsilon {
    pub epsilon: f64,
    pub order: f64,
}

impl RdpCurve {
    /// The smallest `ε` over the curve's orders with `(ε, δ)`-DP, by the improved conversion
    /// (see the module doc); never worse than the classic `r + ln(1/δ)/(α−1)`, since the
    /// difference `ln(1 − 1/α) − ln(α)/(α − 1)` is negative for every `α > 1`. `ε` is `+∞`
    /// when no order gives a bound. Ties go to the lowest order, as in `dp_accounting`.
    ///
    /// # Errors
    /// [`AccountingError::InvalidParameter`] unless `δ ∈ (0, 1)`.
    pub fn epsilon(&self, delta: f64) -> Result<RdpEpsilon, AccountingError> {
        check_delta(delta)?;
        let mut best = RdpEpsilon { epsilon: f64::INFINITY, order: self.orders()[0] };
        for (&order, &value) in self.orders().iter().zip(self.values()) {
            let epsilon = improved_epsilon_at(order, value, delta);
            if epsilon < best.epsilon {
                best = RdpEpsilon { epsilon, order };
            }
        }
        best.epsilon = best.epsilon.max(0.0);
        Ok(best)
    }
}
