//! Privacy accounting for client-level DP-FedAvg.
//!
//! Every round of DP-FedAvg releases the sum of clipped client updates plus Gaussian noise
//! with standard deviation `z · C` (`z` the noise multiplier, `C` the clipping norm, which is
//! the L2 sensitivity of the sum under adding or removing one client). This module turns a
//! sequence of such rounds into an `(ε, δ)` guarantee. Two accountants are offered, and the
//! run plan states which one (and hence which sampling assumption) a run uses:
//!
//! * [`Accountant::Zcdp`], the conservative default. No privacy amplification by sampling is
//!   claimed: each round is the plain Gaussian mechanism, which is `ρ`-zCDP with
//!   `ρ = Δ²/(2σ²) = 1/(2z²)` (Bun & Steinke 2016, "Concentrated Differential Privacy:
//!   Simplifications, Extensions, and Lower Bounds", Prop. 1.6). zCDP composes by adding
//!   `ρ` (ibid., Lemma 2.3), and the total is converted to `(ε, δ)` by OpenDP's
//!   `make_zCDP_to_approxDP`, which implements the optimal conversion of Canonne, Kamath &
//!   Steinke 2020 ("The Discrete Gaussian for Differential Privacy", Prop. 12 / Cor. 13).
//!   This is valid whatever way the cohort is chosen, because it never relies on the
//!   cohort being random.
//! * [`Accountant::PoissonRdp`]: every client takes part in a round independently with
//!   probability `q` (Poisson sampling). The round is then the sampled Gaussian mechanism,
//!   whose Rényi-DP curve `ε(α)` is computed here following Mironov, Talwar & Zhang 2019
//!   ("Rényi Differential Privacy of the Sampled Gaussian Mechanism", arXiv:1908.10530,
//!   Sec. 3.3) exactly as TF-Privacy's `rdp_accountant` does. RDP composes by adding curves
//!   order by order (Mironov 2017, "Rényi Differential Privacy", Prop. 1), and a curve is
//!   converted with the improved conversion of Canonne, Kamath & Steinke 2020 (Prop. 12) /
//!   Asoodeh et al. 2020 (eq. 20), minimised over a fixed grid of orders. The amplification
//!   is only sound if the coordinator really samples this way; claiming it for a fixed-size
//!   or availability-driven cohort overstates privacy, hence the explicit choice.
//!
//! A round's cost is a [`RoundCost`]: its RDP curve, plus its zCDP `ρ` when no
//! amplification is claimed. Costs are serde types so the ledger can store each round's
//! curve as JSON and re-run [`epsilon`] over the stored history.
//!
//! Files, by topic: `zcdp` prices a Gaussian round, `rdp` builds and composes Rényi curves
//! (with `erfc` for the fractional orders), `conversion` turns either into `(ε, δ)`, `cost`
//! is what the ledger stores and sums, and `adaptive_clipping` splits a round's noise between
//! the update and the clipped count. Everything public is re-exported here, so callers name
//! `accountant::X` whatever file it lives in.
//!
//! This is domain code: no SQL, no protobuf, no async.

mod adaptive_clipping;
mod conversion;
mod cost;
mod erfc;
mod rdp;
mod zcdp;

#[cfg(test)]
mod tests;

pub use adaptive_clipping::{adaptive_clipping_rho, split_noise_for_adaptive_clipping};
pub use conversion::{RdpEpsilon, zcdp_epsilon};
pub use cost::{Accountant, EpsilonBound, EpsilonReport, RoundCost, epsilon};
pub use rdp::{RdpCurve, default_orders, sampled_gaussian_rdp};
pub use zcdp::{gaussian_rho, opendp_gaussian_rho};

/// Errors of the accounting layer. Every variant names the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountingError {
    /// A numeric parameter is outside its domain.
    #[error("invalid {name} = {value}: must be {expected}")]
    InvalidParameter { name: &'static str, value: f64, expected: &'static str },
    /// The clipped-count noise of adaptive clipping alone would spend more than the round's
    /// whole budget, so no noise multiplier is left for the update sum.
    #[error(
        "count noise stddev {count_stddev} is too small for noise multiplier {noise_multiplier}: \
         the count query alone would cost more than the round, need count stddev > {min_count_stddev}"
    )]
    CountNoiseTooSmall { count_stddev: f64, noise_multiplier: f64, min_count_stddev: f64 },
    /// Two RDP curves evaluated at different orders cannot be added.
    #[error(
        "rdp curves use different orders ({left_len} orders vs {right_len} orders, first difference at \
         index {index}): recompute them on one order grid"
    )]
    OrderMismatch { left_len: usize, right_len: usize, index: usize },
    /// An RDP curve (built or deserialised) is malformed.
    #[error("invalid rdp curve: {reason}")]
    InvalidCurve { reason: String },
    /// OpenDP refused to build a measurement or evaluate a map.
    #[error("opendp {operation} failed: {message}")]
    OpenDp { operation: &'static str, message: String },
}

impl AccountingError {
    fn opendp(operation: &'static str, error: opendp::error::Error) -> Self {
        // `Display` of an OpenDP error prints only its variant; the message carries the detail.
        let message = match error.message {
            Some(message) => format!("{}: {message}", error.variant),
            None => error.variant.to_string(),
        };
        AccountingError::OpenDp { operation, message }
    }
}

/// Largest Rényi order accepted; integer orders cost `O(α)` work in the binomial expansion.
pub const MAX_ORDER: f64 = 100_000.0;

fn check_sampling_rate(q: f64) -> Result<(), AccountingError> {
    if q > 0.0 && q <= 1.0 {
        Ok(())
    } else {
        Err(AccountingError::InvalidParameter { name: "sampling rate", value: q, expected: "in (0, 1]" })
    }
}

fn check_noise_multiplier(z: f64) -> Result<(), AccountingError> {
    if z > 0.0 && z.is_finite() {
        Ok(())
    } else {
        Err(AccountingError::InvalidParameter { name: "noise multiplier", value: z, expected: "finite and > 0" })
    }
}

fn check_delta(delta: f64) -> Result<(), AccountingError> {
    if delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(AccountingError::InvalidParameter { name: "delta", value: delta, expected: "in (0, 1)" })
    }
}

fn check_rho(rho: f64) -> Result<(), AccountingError> {
    if rho >= 0.0 && rho.is_finite() {
        Ok(())
    } else {
        Err(AccountingError::InvalidParameter { name: "rho", value: rho, expected: "finite and >= 0" })
    }
}

fn check_order(order: f64) -> Result<(), AccountingError> {
    if order > 1.0 && order <= MAX_ORDER {
        Ok(())
    } else {
        Err(AccountingError::InvalidParameter { name: "rdp order", value: order, expected: "in (1, 100000]" })
    }
}
