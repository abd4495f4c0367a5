//! Differential-privacy noise and clipping shared by the coordinator and the clients.
//!
//! DP-FedAvg: clients clip their update to L2 norm `C` ([`clip_l2`]), the coordinator verifies
//! the norm ([`l2_norm`], allowing [`CLIP_TOLERANCE`]), sums the updates and adds Gaussian noise
//! of standard deviation `σ = z·C` to every coordinate ([`LatticeGaussian`]).
//!
//! Why not `rand_distr::Normal`: floating-point Gaussian samplers have gaps and rounding
//! artefacts that can reveal the un-noised value (Mironov 2012, "On significance of the least
//! significant bits for differential privacy"), and their RNG is whatever the caller passed.
//! Here instead:
//! * randomness comes only from [`SecureRng`] (ChaCha12 seeded by the OS, no seeded public
//!   constructor);
//! * values are rounded to a power-of-two lattice and receive *exact* discrete Gaussian noise
//!   ([`DiscreteGaussian`]); every sampling decision is made with integer arithmetic, so the
//!   output distribution is exactly the one the privacy analysis assumes (CKS 2020);
//! * the privacy parameter ([`LatticeGaussian::rho`], zCDP) accounts for the rounding.
//!
//! Throughput, one core here: about 7–8 ns of CPU time per sample (125–150M samples per
//! CPU-second) and about 10 ns per value for [`LatticeGaussian::add_noise`] on 10M values
//! (~100M values per CPU-second, ≥ 70M values/s wall-clock even with the machine loaded),
//! against ~130–150M per CPU-second for an unsafe `rand_distr::Normal` fill and ~0.16M
//! values/s for OpenDP's exact sampler; see the "DP noise sampling" section of
//! `BENCHMARKS.md` (`bash bench/noise.sh`).
//!
//! Parallel contract: [`LatticeGaussian::add_noise`] noises vectors of at least
//! [`PARALLEL_MIN_VALUES`] values on all available cores, in contiguous ranges, each from its
//! own ChaCha12 stream (one fresh 256-bit key drawn from the caller's [`SecureRng`], stream id
//! = range index). Every coordinate still receives an independent exact `N_Z(0, σ_L²)`
//! sample, so the output's distribution, and hence ρ, does not depend on the thread count;
//! the values do.

mod clip;
mod exact;
mod lattice;
mod rng;

#[cfg(test)]
mod opendp_reference;

pub use clip::{CLIP_TOLERANCE, ClipOutcome, clip_l2, l2_norm};
pub use exact::{DiscreteGaussian, MAX_SIGMA_SQ_TERM, sample_discrete_gaussian};
pub use lattice::{IntegerGaussian, LatticeGaussian, PARALLEL_MIN_VALUES};
pub use rng::SecureRng;

/// Failures of noise planning, sampling and clipping. Messages name the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoiseError {
    /// The operating system's entropy source failed; no noise can be drawn safely.
    #[error("os entropy source failed: {0}")]
    Entropy(String),
    /// A parameter that must be finite and positive was not.
    #[error("{what} must be finite and positive, got {value}")]
    InvalidParameter { what: &'static str, value: f64 },
    /// The requested variance is outside what the exact sampler supports.
    #[error("unsupported noise variance: {0}")]
    InvalidSigma(String),
    /// A value to be noised is not finite or too large for the lattice.
    #[error("value {value} at index {index} is not finite or exceeds 2^52 lattice steps")]
    ValueOutOfRange { index: usize, value: f64 },
    /// The vector's length differs from the dimension the noise (and its ρ) was planned for.
    #[error("vector of {got} values given to noise planned for {expected} dimensions")]
    DimensionMismatch { expected: usize, got: usize },
    /// An update to clip contains NaN or an infinity.
    #[error("update value at index {index} is not finite")]
    NonFiniteUpdate { index: usize },
    /// A noise sample or noised value left the exactly representable range; probability zero
    /// in practice, reported rather than wrapped.
    #[error("noise sample out of exactly representable range")]
    SampleOverflow,
}
