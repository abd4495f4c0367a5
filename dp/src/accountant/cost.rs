//! What the ledger stores and sums: the [`Accountant`] a run chose, each round's
//! [`RoundCost`], and [`epsilon`], the `(ε, δ)` guarantee of a sequence of rounds.

use serde::{Deserialize, Serialize};

use super::conversion::zcdp_epsilon;
use super::rdp::check_curve_values;
use super::{AccountingError, RdpCurve, check_delta, check_rho, check_sampling_rate, gaussian_rho};

/// Which privacy analysis a run uses; the run plan records it, with the sampling it
/// assumes ([`Accountant::sampling_assumption`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accountant {
    /// No amplification: every round is charged the full Gaussian `ρ = 1/(2z²)`.
    #[default]
    Zcdp,
    /// Amplification by Poisson sampling at rate `q`, tracked as an RDP curve.
    PoissonRdp,
}

impl Accountant {
    /// The serde name (`"zcdp"`, `"poisson_rdp"`), for the ledger and provenance records.
    pub fn as_str(self) -> &'static str {
        match self {
            Accountant::Zcdp => "zcdp",
            Accountant::PoissonRdp => "poisson_rdp",
        }
    }

    /// The inverse of [`Accountant::as_str`]; `None` for any other string.
    pub fn parse(name: &str) -> Option<Self> {
        [Accountant::Zcdp, Accountant::PoissonRdp].into_iter().find(|a| a.as_str() == name)
    }

    /// The sampling the accountant's guarantee relies on, for the run plan.
    pub fn sampling_assumption(self) -> &'static str {
        match self {
            Accountant::Zcdp => "none: no amplification by sampling is claimed; any cohort selection is sound",
            Accountant::PoissonRdp => {
                "poisson: each client joins each round independently with probability q; \
                 the guarantee is void for fixed-size or availability-driven cohorts"
            }
        }
    }

    /// The cost of one round with sampling rate `q` and noise multiplier `z` under this
    /// accountant. [`Accountant::Zcdp`] validates but ignores `q`.
    ///
    /// # Errors
    /// As [`RoundCost::gaussian_round`] and [`RoundCost::sampled_gaussian`].
    pub fn round_cost(self, sampling_rate: f64, noise_multiplier: f64) -> Result<RoundCost, AccountingError> {
        check_sampling_rate(sampling_rate)?;
        match self {
            Accountant::Zcdp => RoundCost::gaussian_round(noise_multiplier),
            Accountant::PoissonRdp => RoundCost::sampled_gaussian(sampling_rate, noise_multiplier),
        }
    }
}

/// The privacy cost of one round, as the ledger stores it.
///
/// `rho` is the round's zCDP cost when no amplification is claimed (it is `None` for a
/// sampled round with `q < 1`, whose cost exists only as an RDP curve); `rdp` is always
/// present, so any mix of rounds can be composed as RDP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RoundCostJson", into = "RoundCostJson")]
pub struct RoundCost {
    // pub(super): the tests build costs from hand-made curves.
    pub(super) rho: Option<f64>,
    pub(super) rdp: RdpCurve,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoundCostJson {
    rho: Option<f64>,
    rdp: RdpCurve,
}

impl TryFrom<RoundCostJson> for RoundCost {
    type Error = AccountingError;

    fn try_from(json: RoundCostJson) -> Result<Self, Self::Error> {
        if let Some(rho) = json.rho {
            check_rho(rho)?;
        }
        Ok(RoundCost { rho: json.rho, rdp: json.rdp })
    }
}

impl From<RoundCost> for RoundCostJson {
    fn from(cost: RoundCost) -> Self {
        RoundCostJson { rho: cost.rho, rdp: cost.rdp }
    }
}

impl RoundCost {
    /// A `ρ`-zCDP round (no amplification claimed); its RDP curve is `α·ρ`.
    ///
    /// Infallible so that callers holding a `ρ` computed from their noise can record it
    /// directly. A `ρ` that is NaN, negative or infinite is kept as is and refused by
    /// [`epsilon`] (so it can never be accounted as a small cost); use
    /// [`RoundCost::try_gaussian`] to be told at construction.
    pub fn gaussian(rho: f64) -> Self {
        RoundCost { rho: Some(rho), rdp: RdpCurve::zcdp_unchecked(rho) }
    }

    /// [`RoundCost::gaussian`], validating `ρ`.
    ///
    /// # Errors
    /// [`AccountingError::InvalidParameter`] unless `ρ` is finite and non-negative.
    pub fn try_gaussian(rho: f64) -> Result<Self, AccountingError> {
        check_rho(rho)?;
        Ok(Self::gaussian(rho))
    }

    /// Checks what [`RoundCost::gaussian`] leaves unchecked.
    fn validate(&self) -> Result<(), AccountingError> {
        if let Some(rho) = self.rho {
            check_rho(rho)?;
        }
        check_curve_values(self.rdp.orders(), self.rdp.values())?;
        Ok(())
    }

    /// A Gaussian round with noise multiplier `z`, charged `ρ = 1/(2z²)`.
    ///
    /// # Errors
    /// As [`gaussian_rho`].
    pub fn gaussian_round(noise_multiplier: f64) -> Result<Self, AccountingError> {
        Ok(Self::gaussian(gaussian_rho(noise_multiplier)?))
    }

    /// A Poisson-sampled Gaussian round. With `q = 1` nothing is sampled, so this is the
    /// plain Gaussian round and carries its `ρ` too.
    ///
    /// # Errors
    /// As [`sampled_gaussian_rdp`](super::sampled_gaussian_rdp).
    pub fn sampled_gaussian(sampling_rate: f64, noise_multiplier: f64) -> Result<Self, AccountingError> {
        if sampling_rate == 1.0 {
            return Self::gaussian_round(noise_multiplier);
        }
        Ok(RoundCost { rho: None, rdp: RdpCurve::sampled_gaussian(sampling_rate, noise_multiplier)? })
    }

    /// A Poisson-sampled round of the **lattice** (discrete) Gaussian that fedra's central
    /// mechanism adds (see `noise::LatticeGaussian`), with effective noise multiplier `z`:
    /// the sampled Gaussian's curve at **integer orders only**; every fractional order is
    /// `+∞`, so the conversion never picks one. With `q = 1` it is the plain Gaussian
    /// round, whose zCDP `ρ` the lattice satisfies exactly (Canonne, Kamath & Steinke 2020,
    /// Thm. 14 and Prop. 5 per coordinate).
    ///
    /// Why integer orders. Let `μ₀ = N_L(0, σ²)` and `μ₁ = N_L(Δ, σ²)` be lattice Gaussians on
    /// the noise lattice `L = gℤᵈ`, where `Δ ∈ L` is one client's rounded, clipped update
    /// with `‖Δ‖ ≤ C_eff` (the sensitivity after rounding, `z = σ / C_eff`), and
    /// `μ = (1−q)μ₀ + qμ₁` the sampled mechanism's output. For integer `α` the binomial
    /// expansion (Mironov, Talwar & Zhang 2019, Sec. 3.3)
    /// `E_{μ₀}[(μ/μ₀)^α] = Σₖ C(α,k) (1−q)^{α−k} qᵏ E_{μ₀}[(μ₁/μ₀)ᵏ]` needs only the
    /// integer moments of the likelihood ratio, and for a shift `Δ` inside the lattice the
    /// normalising constants of `μ₀` and `μ₁` are equal, so
    /// `E_{μ₀}[(μ₁/μ₀)ᵏ] = exp(k(k−1)‖Δ‖²/(2σ²))`, exactly the continuous Gaussian's value
    /// (CKS20, Prop. 5, applied coordinate by coordinate). Every term of the expansion is
    /// therefore at most the continuous sampled Gaussian's at `z`, and so is the sum: the
    /// integer-order values below are upper bounds for the lattice mechanism.
    ///
    /// At fractional orders the series of MTZ19 (Sec. 3.3, with `erfc`) integrates the
    /// continuous density, which the lattice does not have; no argument for the lattice is
    /// known to us, so fedra does not use those orders (ε grows slightly: the optimum moves
    /// to the nearest integer order; pinned by a test). For the other neighbouring
    /// direction, `D_α(μ₀‖μ)`, MTZ19 (Sec. 3.3, Thm. 5) show it is at most `D_α(μ‖μ₀)` for
    /// the sampled Gaussian; their argument uses the likelihood ratio `μ₁/μ₀`, which on the
    /// lattice has the same form `exp((2⟨x,Δ⟩ − ‖Δ‖²)/(2σ²))`, but it also uses the
    /// continuous distribution of `⟨x,Δ⟩`. That step is not re-proven for the lattice here:
    /// it is the one assumption this accountant still carries (stated in SECURITY.md).
    ///
    /// # Errors
    /// As [`sampled_gaussian_rdp`](super::sampled_gaussian_rdp).
    pub fn sampled_lattice_gaussian(sampling_rate: f64, noise_multiplier: f64) -> Result<Self, AccountingError> {
        if sampling_rate == 1.0 {
            return Self::gaussian_round(noise_multiplier);
        }
        let curve = RdpCurve::sampled_gaussian(sampling_rate, noise_multiplier)?;
        let values = curve
            .orders()
            .iter()
            .zip(curve.values())
            .map(|(order, v)| if order.fract() == 0.0 { *v } else { f64::INFINITY })
            .collect();
        Ok(RoundCost { rho: None, rdp: RdpCurve::new(curve.orders().to_vec(), values)? })
    }

    pub fn rho(&self) -> Option<f64> {
        self.rho
    }

    pub fn rdp(&self) -> &RdpCurve {
        &self.rdp
    }
}

/// Which conversion produced a report's `epsilon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EpsilonBound {
    /// Total `ρ` through OpenDP's zCDP → approximate-DP conversion.
    Zcdp,
    /// Summed RDP curve through the improved conversion, best order on the grid.
    Rdp,
}

/// The `(ε, δ)` guarantee of a sequence of rounds, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpsilonReport {
    /// The guarantee: the smallest of the valid bounds below.
    pub epsilon: f64,
    pub delta: f64,
    pub bound: EpsilonBound,
    pub rounds: usize,
    /// `Σρ`, when every round has a zCDP cost.
    pub total_rho: Option<f64>,
    /// OpenDP's conversion of `total_rho`.
    pub zcdp_epsilon: Option<f64>,
    /// The RDP conversion of the summed curves, and the order that achieved it.
    pub rdp_epsilon: f64,
    pub rdp_order: f64,
}

/// The `(ε, δ)` guarantee of running all `costs` (client-level, add/remove one client).
///
/// The summed RDP curve is always converted. When every round carries a `ρ`, `Σρ` is also
/// converted through OpenDP ([`zcdp_epsilon`]) and the report's `epsilon` is the smaller of
/// the two. Taking the minimum is sound because both are valid `(ε, δ)` statements about the
/// same composed mechanism, and a mechanism that is `(ε₁, δ)`-DP and `(ε₂, δ)`-DP is
/// `(min, δ)`-DP. (For a curve `α·Σρ` the RDP conversion is the same formula as OpenDP's,
/// minimised over the grid instead of continuously, so in practice the zCDP bound wins by
/// under a percent.) No rounds means `ε = 0`.
///
/// # Errors
/// [`AccountingError::InvalidParameter`] unless `δ ∈ (0, 1)`, or for a round whose `ρ` is
/// not finite and non-negative; [`AccountingError::InvalidCurve`] for a NaN or negative RDP
/// value; [`AccountingError::OrderMismatch`] if stored curves use different orders;
/// [`AccountingError::OpenDp`] if OpenDP refuses.
pub fn epsilon(costs: &[RoundCost], delta: f64) -> Result<EpsilonReport, AccountingError> {
    check_delta(delta)?;
    let mut curve = match costs.first() {
        Some(first) => first.rdp.repeated(0),
        None => RdpCurve::zero(),
    };
    let mut total_rho = Some(0.0);
    for cost in costs {
        cost.validate()?;
        curve.add_assign(&cost.rdp)?;
        total_rho = total_rho.zip(cost.rho).map(|(sum, rho)| sum + rho);
    }
    let rdp = curve.epsilon(delta)?;
    let zcdp = total_rho.map(|rho| zcdp_epsilon(rho, delta)).transpose()?;
    let (epsilon, bound) = match zcdp {
        Some(zcdp) if zcdp <= rdp.epsilon => (zcdp, EpsilonBound::Zcdp),
        _ => (rdp.epsilon, EpsilonBound::Rdp),
    };
    Ok(EpsilonReport {
        epsilon,
        delta,
        bound,
        rounds: costs.len(),
        total_rho,
        zcdp_epsilon: zcdp,
        rdp_epsilon: rdp.epsilon,
        rdp_order: rdp.order,
    })
}
