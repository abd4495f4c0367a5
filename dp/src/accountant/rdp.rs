//! Rényi DP of the Poisson-sampled Gaussian mechanism (Mironov, Talwar & Zhang 2019), and
//! [`RdpCurve`], the per-order bounds that compose by addition.
//!
//! This is the accountant's amplified path ([`Accountant::PoissonRdp`](super::Accountant::PoissonRdp)):
//! sound only if every client joins every round independently with probability `q`.

use std::f64::consts::{FRAC_1_SQRT_2, LN_2};

use serde::{Deserialize, Serialize};

use super::erfc::ln_erfc;
use super::{AccountingError, check_noise_multiplier, check_order, check_rho, check_sampling_rate};

/// Terms summed by the fractional-order series before the order is given up as not
/// converged (its RDP is then `+∞`, so it is never chosen by the conversion). The terms
/// decay only polynomially once the erfc factor stops helping, so small `σ` with orders near
/// 1 needs thousands of terms (TF-Privacy's series for `q = 0.3, z = 1.2, α = 1.1` stops
/// after 3823); `dp_accounting` caps at 1000 and loses such orders.
const MAX_FRACTIONAL_TERMS: usize = 10_000;

/// The orders every curve in fedra is evaluated at: Google `dp_accounting`'s
/// `DEFAULT_RDP_ORDERS` (`1 + x/10` for `x` in `1..100`, then `11..=63`, `128`, `256`,
/// `512`, `1024`; 156 orders). Using the same grid makes our `ε` directly comparable with
/// theirs and fine enough that the grid costs at most a fraction of a percent of `ε`.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend((11..64).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// `ln(eˣ + eʸ)` without overflow.
fn log_add(x: f64, y: f64) -> f64 {
    let (small, large) = if x < y { (x, y) } else { (y, x) };
    if small == f64::NEG_INFINITY {
        return large;
    }
    large + (small - large).exp().ln_1p()
}

/// `ln(eˣ − eʸ)`, or `None` when `y > x` (the difference would be negative).
fn log_sub(x: f64, y: f64) -> Option<f64> {
    if y == f64::NEG_INFINITY {
        Some(x)
    } else if x == y {
        Some(f64::NEG_INFINITY)
    } else if x > y {
        Some(x + (-(y - x).exp()).ln_1p())
    } else {
        None
    }
}

/// `ln A_α` for integer `α ≥ 2` and `0 < q < 1`: the binomial expansion
/// `A_α = Σ_{i=0..α} C(α,i) (1−q)^{α−i} q^i exp((i²−i)/(2σ²))` (Mironov et al. 2019,
/// Sec. 3.2), summed in log space.
fn log_a_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    let ln_q = q.ln();
    let ln_1mq = (-q).ln_1p();
    let two_sigma_sq = 2.0 * sigma * sigma;
    let alpha_f = alpha as f64;
    let mut log_a = f64::NEG_INFINITY;
    let mut log_binomial = 0.0;
    for i in 0..=alpha {
        let i_f = i as f64;
        if i > 0 {
            log_binomial += (alpha_f - i_f + 1.0).ln() - i_f.ln();
        }
        let term = log_binomial + i_f * ln_q + (alpha_f - i_f) * ln_1mq + (i_f * i_f - i_f) / two_sigma_sq;
        log_a = log_add(log_a, term);
    }
    log_a
}

/// `ln A_α` for fractional `α > 1` and `0 < q < 1`: the two convergent binomial series over
/// `(−∞, z₀]` and `[z₀, ∞)`, `z₀ = σ²·ln(1/q − 1) + 1/2` (Mironov et al. 2019, Sec. 3.3),
/// with signed generalised binomial coefficients, as TF-Privacy's `_compute_log_a_frac`.
/// Stops when both terms fall below `e⁻³⁰` like TF-Privacy; returns `+∞` (order unusable)
/// if that takes more than [`MAX_FRACTIONAL_TERMS`] terms (slow polynomial decay for very
/// small `σ`) or if a partial sum would go negative in floating point.
///
/// Google's `dp_accounting` 0.6 sums the absolute values of the terms instead, an upper
/// bound that can exceed the true value by tens of percent at large `q` (for example
/// `q = 0.1, z = 0.8, α = 1.75`: 0.03191 versus the exact 0.02952) and that breaks
/// monotonicity in `α`; integer orders are identical in both.
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    let ln_q = q.ln();
    let ln_1mq = (-q).ln_1p();
    let two_sigma_sq = 2.0 * sigma * sigma;
    let z0 = sigma * sigma * (ln_1mq - ln_q) + 0.5;
    let erfc_scale = FRAC_1_SQRT_2 / sigma;
    let mut log_a0 = f64::NEG_INFINITY;
    let mut log_a1 = f64::NEG_INFINITY;
    let mut log_abs_binomial = 0.0;
    let mut positive = true;
    for i in 0..MAX_FRACTIONAL_TERMS {
        let i_f = i as f64;
        if i > 0 {
            let factor = alpha - i_f + 1.0;
            log_abs_binomial += factor.abs().ln() - i_f.ln();
            if factor < 0.0 {
                positive = !positive;
            }
        }
        let j = alpha - i_f;
        let log_t0 = log_abs_binomial + i_f * ln_q + j * ln_1mq;
        let log_t1 = log_abs_binomial + j * ln_q + i_f * ln_1mq;
        let log_e0 = -LN_2 + ln_erfc((i_f - z0) * erfc_scale);
        let log_e1 = -LN_2 + ln_erfc((z0 - j) * erfc_scale);
        let log_s0 = log_t0 + (i_f * i_f - i_f) / two_sigma_sq + log_e0;
        let log_s1 = log_t1 + (j * j - j) / two_sigma_sq + log_e1;
        if positive {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            match (log_sub(log_a0, log_s0), log_sub(log_a1, log_s1)) {
                (Some(a0), Some(a1)) => {
                    log_a0 = a0;
                    log_a1 = a1;
                }
                _ => return f64::INFINITY,
            }
        }
        if log_s0.max(log_s1) < -30.0 {
            return log_add(log_a0, log_a1);
        }
    }
    f64::INFINITY
}

/// RDP `ε(α)` of one round of the Poisson-sampled Gaussian mechanism with sampling rate `q`
/// and noise multiplier `z`: `ln(A_α)/(α − 1)` (Mironov, Talwar & Zhang 2019, Thm. 4/5),
/// which for `q = 1` is the plain Gaussian's `α/(2z²)`.
///
/// Returns `+∞` for a fractional order whose series did not converge within 10,000 terms
/// (`MAX_FRACTIONAL_TERMS`); that order is then never the optimum of the conversion.
/// Tiny negative values from rounding (the true value is `≥ 0`) are clamped to zero.
///
/// # Errors
/// [`AccountingError::InvalidParameter`] unless `q ∈ (0, 1]`, `z` is finite and positive
/// and `α ∈ (1, MAX_ORDER]`.
pub fn sampled_gaussian_rdp(sampling_rate: f64, noise_multiplier: f64, order: f64) -> Result<f64, AccountingError> {
    check_sampling_rate(sampling_rate)?;
    check_noise_multiplier(noise_multiplier)?;
    check_order(order)?;
    Ok(sampled_gaussian_rdp_unchecked(sampling_rate, noise_multiplier, order))
}

fn sampled_gaussian_rdp_unchecked(q: f64, z: f64, order: f64) -> f64 {
    if q == 1.0 {
        return order / (2.0 * z * z);
    }
    let log_a = if order.fract() == 0.0 { log_a_integer(q, z, order as u64) } else { log_a_fractional(q, z, order) };
    (log_a / (order - 1.0)).max(0.0)
}

/// Every RDP value must be `≥ 0` (`+∞` allowed, NaN not).
pub(super) fn check_curve_values(orders: &[f64], values: &[f64]) -> Result<(), AccountingError> {
    match values.iter().position(|v| v.is_nan() || *v < 0.0) {
        Some(k) => Err(AccountingError::InvalidCurve {
            reason: format!("value {} at index {k} (order {}) is not >= 0", values[k], orders[k]),
        }),
        None => Ok(()),
    }
}

/// An RDP curve: `values[k]` bounds the Rényi divergence of order `orders[k]`.
///
/// Orders are finite, strictly increasing and `> 1`; values are non-negative, `+∞` meaning
/// "no usable bound at this order". In JSON `+∞` is written as `null` (JSON has no
/// infinity), and a deserialised curve is validated like a constructed one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RdpCurveJson", into = "RdpCurveJson")]
pub struct RdpCurve {
    orders: Vec<f64>,
    values: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RdpCurveJson {
    orders: Vec<f64>,
    /// `null` is `+∞`.
    values: Vec<Option<f64>>,
}

impl TryFrom<RdpCurveJson> for RdpCurve {
    type Error = AccountingError;

    fn try_from(json: RdpCurveJson) -> Result<Self, Self::Error> {
        let values = json.values.into_iter().map(|v| v.unwrap_or(f64::INFINITY)).collect();
        RdpCurve::new(json.orders, values)
    }
}

impl From<RdpCurve> for RdpCurveJson {
    fn from(curve: RdpCurve) -> Self {
        let values = curve.values.into_iter().map(|v| v.is_finite().then_some(v)).collect();
        RdpCurveJson { orders: curve.orders, values }
    }
}

impl RdpCurve {
    /// Builds a curve from explicit orders and values.
    ///
    /// # Errors
    /// [`AccountingError::InvalidCurve`] if the lengths differ, the curve is empty, an order
    /// is not finite, `≤ 1` or out of increasing order, or a value is NaN or negative.
    pub fn new(orders: Vec<f64>, values: Vec<f64>) -> Result<Self, AccountingError> {
        let invalid = |reason: String| Err(AccountingError::InvalidCurve { reason });
        if orders.len() != values.len() {
            return invalid(format!("{} orders but {} values", orders.len(), values.len()));
        }
        if orders.is_empty() {
            return invalid("no orders".to_owned());
        }
        for (k, &order) in orders.iter().enumerate() {
            if !(order.is_finite() && order > 1.0) {
                return invalid(format!("order {order} at index {k} is not finite and > 1"));
            }
            if k > 0 && order <= orders[k - 1] {
                return invalid(format!("order {order} at index {k} does not increase"));
            }
        }
        check_curve_values(&orders, &values)?;
        Ok(RdpCurve { orders, values })
    }

    /// The zero curve (no rounds yet) on [`default_orders`].
    pub fn zero() -> Self {
        let orders = default_orders();
        let values = vec![0.0; orders.len()];
        RdpCurve { orders, values }
    }

    /// The curve `α·ρ` of a `ρ`-zCDP mechanism on [`default_orders`] (zCDP is exactly RDP
    /// linear in `α`; Bun & Steinke 2016, Def. 1.1).
    ///
    /// # Errors
    /// [`AccountingError::InvalidParameter`] unless `ρ` is finite and non-negative.
    pub fn zcdp(rho: f64) -> Result<Self, AccountingError> {
        check_rho(rho)?;
        Ok(Self::zcdp_unchecked(rho))
    }

    /// [`RdpCurve::zcdp`] without the check, for [`RoundCost::gaussian`](super::RoundCost::gaussian),
    /// which records whatever `ρ` it is given and leaves the refusal to
    /// [`epsilon`](super::epsilon).
    pub(super) fn zcdp_unchecked(rho: f64) -> Self {
        let orders = default_orders();
        let values = orders.iter().map(|a| a * rho).collect();
        RdpCurve { orders, values }
    }

    /// The curve of one Poisson-sampled Gaussian round on [`default_orders`]; see
    /// [`sampled_gaussian_rdp`].
    ///
    /// # Errors
    /// As [`sampled_gaussian_rdp`].
    pub fn sampled_gaussian(sampling_rate: f64, noise_multiplier: f64) -> Result<Self, AccountingError> {
        Self::sampled_gaussian_at(sampling_rate, noise_multiplier, &default_orders())
    }

    /// The curve of one Poisson-sampled Gaussian round at the given orders.
    ///
    /// # Errors
    /// As [`sampled_gaussian_rdp`], plus [`AccountingError::InvalidCurve`] for orders that
    /// are empty or not increasing.
    pub fn sampled_gaussian_at(
        sampling_rate: f64,
        noise_multiplier: f64,
        orders: &[f64],
    ) -> Result<Self, AccountingError> {
        check_sampling_rate(sampling_rate)?;
        check_noise_multiplier(noise_multiplier)?;
        for &order in orders {
            check_order(order)?;
        }
        let values =
            orders.iter().map(|&a| sampled_gaussian_rdp_unchecked(sampling_rate, noise_multiplier, a)).collect();
        RdpCurve::new(orders.to_vec(), values)
    }

    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The bounds, `+∞` where an order is unusable.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Sequential composition: the curve of running `self` then `other` is their sum, order
    /// by order (Mironov 2017, Prop. 1), including adaptively chosen rounds.
    ///
    /// # Errors
    /// [`AccountingError::OrderMismatch`] if the curves use different orders.
    pub fn compose(&self, other: &RdpCurve) -> Result<RdpCurve, AccountingError> {
        let mut sum = self.clone();
        sum.add_assign(other)?;
        Ok(sum)
    }

    pub(super) fn add_assign(&mut self, other: &RdpCurve) -> Result<(), AccountingError> {
        let mismatch = |index| AccountingError::OrderMismatch {
            left_len: self.orders.len(),
            right_len: other.orders.len(),
            index,
        };
        if let Some(index) = self.orders.iter().zip(&other.orders).position(|(a, b)| a != b) {
            return Err(mismatch(index));
        }
        if self.orders.len() != other.orders.len() {
            return Err(mismatch(self.orders.len().min(other.orders.len())));
        }
        for (value, added) in self.values.iter_mut().zip(&other.values) {
            *value += added;
        }
        Ok(())
    }

    /// The curve of `rounds` repetitions of this mechanism (`rounds` times each value).
    pub fn repeated(&self, rounds: u32) -> RdpCurve {
        let values = self.values.iter().map(|v| if rounds == 0 { 0.0 } else { v * f64::from(rounds) }).collect();
        RdpCurve { orders: self.orders.clone(), values }
    }
}
