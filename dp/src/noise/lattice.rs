//! Releasing a real vector (the clipped-update sum) or an integer count with discrete Gaussian
//! noise, and the zCDP guarantee of that release.
//!
//! Why a lattice: adding floating-point Gaussian noise leaks through the gaps and rounding of
//! floating-point arithmetic (Mironov 2012). Instead the sum is rounded to the lattice `g·Z`
//! (`g` a power of two, so scaling is exact), exact integer noise from
//! [`DiscreteGaussian`] is added, and `(n + noise)·g` is written back,
//! which is exact in `f64`. Everything released is post-processing of the noised integer
//! vector, whose privacy Canonne, Kamath and Steinke 2020 (Theorem 14) bound.
//!
//! Large vectors (at least [`PARALLEL_MIN_VALUES`]) are noised on all cores, one independent
//! ChaCha12 stream per contiguous range (see [`LatticeGaussian::add_noise_with_threads`]);
//! each coordinate's noise is an independent exact sample either way. One core here adds
//! noise to 10M values in about 0.1 s of CPU time (~100M values per CPU-second;
//! `BENCHMARKS.md`).

use super::{DiscreteGaussian, NoiseError, SecureRng};

/// [`LatticeGaussian::add_noise`] spreads vectors of at least this many values over all
/// available cores. Below it (≈ 15 ms of single-core work here) the thread start-up and the
/// extra key derivation are not worth it, and small releases stay on the caller's thread.
pub const PARALLEL_MIN_VALUES: usize = 1 << 20;

/// Lattice coordinates must stay below this magnitude so that `(n + noise)·g` is exact in `f64`.
const MAX_LATTICE_MAGNITUDE: f64 = (1u64 << 52) as f64;

/// `⌈v²·2^shift⌉` exactly, for a finite `v > 0`; `None` if it exceeds `u64::MAX` or `v` is not
/// a positive finite number.
fn ceil_scaled_square(v: f64, shift: i32) -> Option<u64> {
    if !(v.is_finite() && v > 0.0) {
        return None;
    }
    // v = m·2^e exactly, m < 2⁵³.
    let bits = v.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    let (m, e) = if exp_bits == 0 { (frac, -1074) } else { (frac | (1 << 52), exp_bits - 1075) };
    let m_sq = u128::from(m) * u128::from(m); // < 2¹⁰⁶
    let power = 2 * e + shift; // v²·2^shift = m²·2^power
    let value = if power >= 0 {
        if power >= 128 || m_sq.leading_zeros() < power as u32 {
            return None;
        }
        m_sq << power
    } else if -power >= 127 {
        1 // 0 < value < 1
    } else {
        let div = 1u128 << (-power);
        m_sq.div_ceil(div)
    };
    u64::try_from(value).ok()
}

/// `v.round() as i64` for `|v| < 2⁵²`, without the libm call: `t = trunc(v)` is exact, so is
/// `v − t` (same sign, `|v − t| < 1`, representable), and ties go away from zero as in
/// [`f64::round`].
#[inline(always)]
fn round_half_away(v: f64) -> i64 {
    let t = v as i64; // truncation toward zero
    let frac = v - t as f64;
    t + i64::from(frac >= 0.5) - i64::from(frac <= -0.5)
}

/// `x` rounded up to the next representable `f64` a few times: a cheap, sufficient margin for
/// the handful of roundings in the privacy arithmetic below.
fn round_up(x: f64) -> f64 {
    x.next_up().next_up().next_up().next_up()
}

/// `τ` of CKS 2020 Theorem 14 for `d` coordinates of variance `σ²` (lattice units):
/// `10·Σ_{k=1}^{d−1} e^{−2π²σ²·k/(k+1)}`, rounded up.
///
/// The sum runs to `d − 1` (the theorem's dimension), not to infinity: its terms tend to
/// `e^{−2π²σ²} > 0`, so the infinite series diverges. The first 64 terms are summed; the
/// rest are bounded by their largest member. For `σ² ≳ 38` every term underflows to 0, and
/// the true value is below `10·d·e^{−π²σ²}`, far under one ulp of `ε²` (which is at least
/// `d/σ² ≥ 2⁻⁶²`), so it cannot change the rounded-up result.
fn cks_tau(dim: u64, sigma_sq: f64) -> f64 {
    use std::f64::consts::PI;
    let c = 2.0 * PI * PI * sigma_sq;
    let head = (dim.saturating_sub(1)).min(64);
    let mut sum = 0.0;
    for k in 1..=head {
        let k = k as f64;
        sum += (-c * k / (k + 1.0)).exp();
    }
    let rest = dim.saturating_sub(1) - head;
    if rest > 0 {
        sum += rest as f64 * (-c * 64.0 / 65.0).exp();
    }
    round_up(10.0 * sum)
}

/// zCDP `ρ` of adding independent `N_Z(0, σ²)` to each of `dim` integer coordinates of a
/// query with L2 sensitivity `delta` (lattice units): `ε²/2` with
/// `ε² = min{Δ²/σ² + 2τd, (Δ/σ + τ√d)²}` (CKS 2020 Theorem 14), rounded up.
fn cks_rho(delta: f64, sigma_sq: f64, dim: u64) -> f64 {
    let tau = cks_tau(dim, sigma_sq);
    let d = dim as f64;
    let eps_sq_a = delta * delta / sigma_sq + 2.0 * tau * d;
    let eps_b = delta / sigma_sq.sqrt() + tau * d.sqrt();
    round_up(eps_sq_a.min(eps_b * eps_b) / 2.0)
}

fn check_positive(what: &'static str, value: f64) -> Result<f64, NoiseError> {
    if value.is_finite() && value > 0.0 { Ok(value) } else { Err(NoiseError::InvalidParameter { what, value }) }
}

/// Discrete Gaussian noise on the lattice `g·Z^d` for a real vector of L2 sensitivity `C`
/// (the sum of updates clipped to norm `C`), at a target standard deviation `σ = z·C`.
///
/// Construction picks, once:
/// * the granularity `g = 2^k`: the largest power of two with `g·√d ≤ slack·C`, so rounding
///   costs at most a fraction `slack` of extra sensitivity;
/// * the lattice variance `σ_L² = ⌈(σ/g)²⌉` (an integer, computed exactly), so the actual
///   standard deviation `g·σ_L` is at least the target: more noise is always safe;
/// * `ρ`, the zCDP parameter of one release, from the *effective* sensitivity `C + g√d`.
#[derive(Debug, Clone)]
pub struct LatticeGaussian {
    dim: usize,
    sensitivity: f64,
    /// `k` in `g = 2^k`.
    granularity_log2: i32,
    sampler: DiscreteGaussian,
    lattice_variance: u64,
    rho: f64,
}

impl LatticeGaussian {
    /// Plans the noise for a `dim`-coordinate release with L2 sensitivity `sensitivity` (`C`),
    /// target standard deviation `sigma` (`z·C`, real units) and rounding `slack` (e.g. `1e-3`).
    ///
    /// # Errors
    /// [`NoiseError::InvalidParameter`] if `dim` is 0 or a float argument is not finite and
    /// positive; [`NoiseError::InvalidSigma`] if `σ_L² = ⌈(σ/g)²⌉` exceeds `2⁶²` (choose a
    /// larger `slack`) or `g` leaves the normal `f64` range.
    pub fn new(dim: usize, sensitivity: f64, sigma: f64, slack: f64) -> Result<Self, NoiseError> {
        if dim == 0 {
            return Err(NoiseError::InvalidParameter { what: "dimension", value: 0.0 });
        }
        let sensitivity = check_positive("sensitivity", sensitivity)?;
        let sigma = check_positive("sigma", sigma)?;
        let slack = check_positive("slack", slack)?;
        let root_d = (dim as f64).sqrt();
        let budget = slack * sensitivity;
        let fits = |k: i32| 2f64.powi(k) * root_d <= budget;
        let mut k = (budget / root_d).log2().floor() as i32;
        if !(-1000..=1000).contains(&k) {
            return Err(NoiseError::InvalidSigma(format!(
                "granularity 2^{k} for dimension {dim}, sensitivity {sensitivity}, slack {slack} is outside f64's normal range"
            )));
        }
        while !fits(k) {
            k -= 1;
        }
        while fits(k + 1) {
            k += 1;
        }
        let lattice_sigma = sigma * 2f64.powi(-k); // exact: scaling by a power of two
        let lattice_variance = ceil_scaled_square(lattice_sigma, 0)
            .filter(|&s| (1..=super::MAX_SIGMA_SQ_TERM).contains(&s))
            .ok_or_else(|| {
                NoiseError::InvalidSigma(format!(
                    "lattice variance (sigma/g)^2 = ({sigma}/2^{k})^2 exceeds 2^62; use a larger slack"
                ))
            })?;
        let sampler = DiscreteGaussian::with_integer_variance(lattice_variance)?;
        let delta = sensitivity * 2f64.powi(-k) + root_d; // (C + g√d)/g
        let rho = cks_rho(round_up(delta), lattice_variance as f64, dim as u64);
        Ok(Self { dim, sensitivity, granularity_log2: k, sampler, lattice_variance, rho })
    }

    /// Number of coordinates this plan is for.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The lattice step `g` (a power of two).
    pub fn granularity(&self) -> f64 {
        2f64.powi(self.granularity_log2)
    }

    /// The integer variance `σ_L²` of the noise in lattice units.
    pub fn lattice_variance(&self) -> u64 {
        self.lattice_variance
    }

    /// The actual standard deviation in real units, `g·σ_L`; at least the requested target.
    pub fn sigma(&self) -> f64 {
        self.granularity() * (self.lattice_variance as f64).sqrt()
    }

    /// `C + g√d`: the L2 distance between the *rounded* sums of neighbouring datasets.
    /// Rounding to the nearest lattice point moves each coordinate by at most `g/2`, so each
    /// rounded sum is within `g√d/2` of the exact one, and the two rounded sums are within
    /// `C + g√d` of each other. By the choice of `g`, this is at most `C·(1 + slack)`.
    pub fn effective_sensitivity(&self) -> f64 {
        self.sensitivity + self.granularity() * (self.dim as f64).sqrt()
    }

    /// The zCDP parameter `ρ` of one [`add_noise`](Self::add_noise) release for the declared
    /// sensitivity: CKS 2020 Theorem 14 with `Δ = effective_sensitivity()/g` and `σ_L²`,
    /// `ρ = ε²/2`, `ε² = min{Δ²/σ_L² + 2τd, (Δ/σ_L + τ√d)²}`, rounded up. For realistic `σ_L`
    /// `τ` is 0 and `ρ = Δ²/(2σ_L²)`, the continuous Gaussian's value.
    pub fn rho(&self) -> f64 {
        self.rho
    }

    /// Adds the noise in place: each `x` becomes `(round(x/g) + N_Z(0, σ_L²))·g`, exactly.
    ///
    /// Vectors of at least [`PARALLEL_MIN_VALUES`] values are split into contiguous ranges,
    /// one per available core ([`std::thread::available_parallelism`]), as
    /// [`add_noise_with_threads`](Self::add_noise_with_threads) describes; shorter ones are
    /// noised on the calling thread from `rng` itself. Either way every coordinate receives
    /// an independent exact `N_Z(0, σ_L²)` sample: the distribution of the output does not
    /// depend on the number of threads (the values do).
    ///
    /// All values are checked before any is changed, so on an input error the slice is
    /// untouched.
    ///
    /// # Errors
    /// [`NoiseError::DimensionMismatch`] if `values.len() != dim()` (ρ depends on it);
    /// [`NoiseError::ValueOutOfRange`] naming the first index whose value is not finite or has
    /// `|x/g| ≥ 2⁵²`; [`NoiseError::SampleOverflow`] if a noised coordinate would leave the
    /// exact range (probability zero in practice; other values may then already be noised).
    pub fn add_noise(&self, values: &mut [f64], rng: &mut SecureRng) -> Result<(), NoiseError> {
        let threads = if values.len() >= PARALLEL_MIN_VALUES {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        } else {
            1
        };
        self.add_noise_with_threads(values, rng, threads)
    }

    /// [`add_noise`](Self::add_noise) on exactly `threads` threads (at most one per value;
    /// `0` is taken as `1`), whatever the vector's length: for benchmarks and tests.
    ///
    /// With one thread the noise comes from `rng` directly. With `n > 1` the vector is cut
    /// into `n` contiguous ranges of `⌈len/n⌉` values (the last one shorter), and range `i`
    /// is noised on its own scoped thread from its own ChaCha12 generator: all `n` share a
    /// fresh 256-bit key drawn from `rng` and generator `i` uses ChaCha stream `i`, so the
    /// streams are independent of each other and of `rng`'s later output, and as
    /// unpredictable as `rng` (see `SecureRng::split`). Each range is noised exactly as the
    /// single-threaded path noises a vector, so each coordinate's noise is an independent
    /// exact `N_Z(0, σ_L²)` draw for any `n`.
    ///
    /// # Errors
    /// As [`add_noise`](Self::add_noise).
    pub fn add_noise_with_threads(
        &self,
        values: &mut [f64],
        rng: &mut SecureRng,
        threads: usize,
    ) -> Result<(), NoiseError> {
        if values.len() != self.dim {
            return Err(NoiseError::DimensionMismatch { expected: self.dim, got: values.len() });
        }
        self.check_range(values)?;
        let threads = threads.clamp(1, values.len());
        if threads == 1 {
            return self.noise_range(values, rng);
        }
        let mut streams = rng.split(threads);
        let chunk = values.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = values
                .chunks_mut(chunk)
                .zip(streams.iter_mut())
                .map(|(range, stream)| scope.spawn(move || self.noise_range(range, stream)))
                .collect();
            // Join every worker before reporting, so that an error never leaves one running.
            let results: Vec<_> = workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect();
            results.into_iter().collect()
        })
    }

    /// [`NoiseError::ValueOutOfRange`] for the first value that is not finite or has
    /// `|x/g| ≥ 2⁵²`. Blocks of values are tested without early exit (which vectorises);
    /// only a block with a bad value is searched for its index.
    fn check_range(&self, values: &[f64]) -> Result<(), NoiseError> {
        let inv_g = 2f64.powi(-self.granularity_log2);
        // `steps < MAX` is false for NaN and ±∞ too.
        let in_range = |x: f64| (x * inv_g).abs() < MAX_LATTICE_MAGNITUDE;
        const BLOCK: usize = 1024;
        for (b, block) in values.chunks(BLOCK).enumerate() {
            if !block.iter().fold(true, |ok, &x| ok & in_range(x)) {
                let index = b * BLOCK + block.iter().position(|&x| !in_range(x)).expect("a bad value");
                return Err(NoiseError::ValueOutOfRange { index, value: values[index] });
            }
        }
        Ok(())
    }

    /// The noise loop on checked values (`|x/g| < 2⁵²`), drawing from `rng`.
    ///
    /// Batched: the samples for [`NOISE_BATCH`] values are drawn first into a small buffer,
    /// then added to the rounded values in a second loop. Fused into one loop, the rounding
    /// and the load and store of each value sit in the sampler's loop and stretch it (the
    /// sampler's state and the value compete for registers); separated, each loop is tight.
    fn noise_range(&self, values: &mut [f64], rng: &mut SecureRng) -> Result<(), NoiseError> {
        let inv_g = 2f64.powi(-self.granularity_log2);
        let g = self.granularity();
        let mut noise = [0i64; NOISE_BATCH];
        for chunk in values.chunks_mut(NOISE_BATCH) {
            let noise = &mut noise[..chunk.len()];
            for n in noise.iter_mut() {
                *n = self.sampler.sample(rng)?;
            }
            let mut overflow = false;
            for (x, &n) in chunk.iter_mut().zip(noise.iter()) {
                let noised = round_half_away(*x * inv_g) + n; // |point| ≤ 2⁵², |n| < 2⁶²: no overflow
                overflow |= noised.unsigned_abs() > 1 << 53;
                *x = noised as f64 * g; // exact when |noised| ≤ 2⁵³, g a power of two
            }
            if overflow {
                return Err(NoiseError::SampleOverflow);
            }
        }
        Ok(())
    }
}

/// Values per batch of [`LatticeGaussian::noise_range`]: 2 KiB of samples, in L1.
const NOISE_BATCH: usize = 256;

/// Discrete Gaussian noise for an integer query of sensitivity 1, such as the adaptive-clipping
/// count `Σ(2bᵢ − 1)`, with `σ` in count units.
///
/// `σ²` is rounded up to a multiple of `2⁻²⁰` (exactly), so the actual σ is at least the
/// requested one and differs from it by a relative `2⁻²⁰/σ²` at most.
#[derive(Debug, Clone)]
pub struct IntegerGaussian {
    sampler: DiscreteGaussian,
}

impl IntegerGaussian {
    const VARIANCE_DENOMINATOR_LOG2: i32 = 20;

    /// # Errors
    /// [`NoiseError::InvalidParameter`] unless `sigma` is finite and positive;
    /// [`NoiseError::InvalidSigma`] if `σ² > 2⁴²` or `σ²` rounds to more than the sampler allows.
    pub fn new(sigma: f64) -> Result<Self, NoiseError> {
        let sigma = check_positive("sigma", sigma)?;
        let num = ceil_scaled_square(sigma, Self::VARIANCE_DENOMINATOR_LOG2)
            .filter(|&n| n <= super::MAX_SIGMA_SQ_TERM)
            .ok_or_else(|| NoiseError::InvalidSigma(format!("sigma {sigma} for an integer query exceeds 2^21")))?;
        Ok(Self { sampler: DiscreteGaussian::new(num, 1 << Self::VARIANCE_DENOMINATOR_LOG2)? })
    }

    /// The actual standard deviation (count units).
    pub fn sigma(&self) -> f64 {
        self.sampler.variance().sqrt()
    }

    /// zCDP `ρ = 1/(2σ²)` of one release of a sensitivity-1 integer query (CKS 2020 Theorem 4;
    /// exact for the discrete Gaussian, no `τ` term in one dimension), rounded up.
    pub fn rho(&self) -> f64 {
        let (num, den) = self.sampler.variance_ratio();
        round_up(den as f64 / (2.0 * num as f64))
    }

    /// One draw of integer noise.
    ///
    /// # Errors
    /// [`NoiseError::SampleOverflow`], with probability zero in practice.
    pub fn sample(&self, rng: &mut SecureRng) -> Result<i64, NoiseError> {
        self.sampler.sample(rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_away_matches_f64_round() {
        let mut rng = SecureRng::seeded_for_tests(14);
        let specials = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            0.49999999999999994,
            -0.49999999999999994,
            4503599627370495.5,
            -4503599627370495.5,
            4503599627370495.0,
            1e-300,
        ];
        for v in specials.into_iter().chain((0..100_000).map(|_| {
            let bits = rng.next_u64();
            (bits >> 11) as f64 * 2f64.powi(-((bits % 60) as i32)) * if bits & 1 == 1 { -1.0 } else { 1.0 }
        })) {
            if v.abs() < MAX_LATTICE_MAGNITUDE {
                assert_eq!(round_half_away(v), v.round() as i64, "{v}");
            }
        }
    }

    #[test]
    fn ceil_scaled_square_is_exact() {
        assert_eq!(ceil_scaled_square(3.0, 0), Some(9));
        assert_eq!(ceil_scaled_square(1.5, 0), Some(3)); // 2.25
        assert_eq!(ceil_scaled_square(1.5, 2), Some(9));
        assert_eq!(ceil_scaled_square(0.1, 0), Some(1));
        assert_eq!(ceil_scaled_square(1e-300, 0), Some(1));
        assert_eq!(ceil_scaled_square(2f64.powi(32), 0), None);
        assert_eq!(ceil_scaled_square(2f64.powi(31), 0), Some(1 << 62));
        // 1 + 2⁻⁵²: square is 1 + 2⁻⁵¹ + 2⁻¹⁰⁴, whose f64 rounding would be 1 + 2⁻⁵¹ but the
        // ceiling must be 2 (and the f64 square's ceiling is 2 too); 3 + tiny must give 10.
        assert_eq!(ceil_scaled_square(1.0f64.next_up(), 0), Some(2));
        assert_eq!(ceil_scaled_square(3.0f64.next_up(), 0), Some(10));
        assert_eq!(ceil_scaled_square(f64::NAN, 0), None);
        assert_eq!(ceil_scaled_square(-1.0, 0), None);
    }

    fn plan() -> LatticeGaussian {
        // d = 200k, C = 1, z = 1.1: g = 2⁻¹⁹ (g√d = 8.4e-4 ≤ 1e-3).
        LatticeGaussian::new(200_000, 1.0, 1.1, 1e-3).unwrap()
    }

    #[test]
    fn granularity_is_largest_fitting_power_of_two() {
        let p = plan();
        assert_eq!(p.granularity(), 2f64.powi(-19));
        assert!(p.granularity() * (200_000f64).sqrt() <= 1e-3);
        assert!(2.0 * p.granularity() * (200_000f64).sqrt() > 1e-3);
        assert!(p.sigma() >= 1.1 && p.sigma() < 1.1 * (1.0 + 1e-9), "{}", p.sigma());
        assert_eq!(p.lattice_variance(), ((1.1 * 2f64.powi(19)).powi(2)).ceil() as u64);
        assert!(p.effective_sensitivity() <= 1.001 && p.effective_sensitivity() > 1.0);
    }

    #[test]
    fn rho_matches_closed_form_when_tau_vanishes() {
        let p = plan();
        let closed = (p.effective_sensitivity() / p.sigma()).powi(2) / 2.0;
        assert!(p.rho() >= closed && p.rho() <= closed * (1.0 + 1e-12), "{} vs {closed}", p.rho());
        // z = 1.1: ρ ≈ 1/(2·1.1²)·(1 + slack)².
        assert!((p.rho() - 0.5 / 1.21).abs() < 0.5 / 1.21 * 2.1e-3);
    }

    #[test]
    fn tau_matters_only_for_tiny_lattice_variance() {
        // Underflowed sums come back as a few subnormal ulps (the rounding up), i.e. nothing.
        assert!(cks_tau(1_000_000, 100.0) < 1e-300);
        assert!(cks_tau(1, 0.5) < 1e-300);
        // σ² = 0.5, d = 3: 10·(e^{−π²/2}... ) with terms k = 1, 2.
        let c = 2.0 * std::f64::consts::PI.powi(2) * 0.5;
        let expect = 10.0 * ((-c / 2.0).exp() + (-c * 2.0 / 3.0).exp());
        assert!((cks_tau(3, 0.5) - expect).abs() < 1e-15);
        // With τ > 0 the bound is strictly above the closed form, and below its second branch.
        let rho = cks_rho(1.0, 0.5, 3);
        assert!(rho > 1.0 / (2.0 * 0.5));
        assert!(rho <= round_up((1.0 / 0.5f64.sqrt() + expect * 3f64.sqrt()).powi(2) / 2.0));
    }

    #[test]
    fn release_is_on_the_lattice_and_has_the_planned_std() {
        let p = plan();
        let mut rng = SecureRng::seeded_for_tests(11);
        let n = p.dim();
        let input: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.618).sin() * 3.0 + 1e-7).collect();
        let mut out = input.clone();
        p.add_noise(&mut out, &mut rng).unwrap();
        let g = p.granularity();
        let mut sum_sq = 0.0;
        let mut sum = 0.0;
        for (x, y) in input.iter().zip(&out) {
            let lattice = y / g;
            assert_eq!(lattice, lattice.round(), "{y} is not on the lattice {g}");
            let diff = y - x;
            sum += diff;
            sum_sq += diff * diff;
        }
        let mean = sum / n as f64;
        let std = (sum_sq / n as f64 - mean * mean).sqrt();
        let se = p.sigma() / (2.0 * n as f64).sqrt();
        assert!(mean.abs() < 5.0 * p.sigma() / (n as f64).sqrt(), "mean {mean}");
        assert!((std - p.sigma()).abs() < 5.0 * se, "std {std} vs sigma {} (se {se})", p.sigma());
        assert!((std - 1.1).abs() < 5.0 * se, "std {std} vs target z·C = 1.1");
    }

    #[test]
    fn rejects_bad_inputs_without_touching_values() {
        let p = LatticeGaussian::new(4, 1.0, 1.0, 1e-3).unwrap();
        let mut rng = SecureRng::seeded_for_tests(12);
        let huge = 2f64.powi(52) * p.granularity();
        for (bad, index) in [(f64::NAN, 2), (f64::INFINITY, 0), (f64::NEG_INFINITY, 3), (huge, 1), (-huge, 1)] {
            let mut values = vec![0.5; 4];
            values[index] = bad;
            let before = values.clone();
            match p.add_noise(&mut values, &mut rng) {
                Err(NoiseError::ValueOutOfRange { index: i, .. }) => assert_eq!(i, index),
                other => panic!("{bad} at {index}: {other:?}"),
            }
            assert!(values.iter().zip(&before).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        let mut short = vec![0.0; 3];
        assert!(matches!(
            p.add_noise(&mut short, &mut rng),
            Err(NoiseError::DimensionMismatch { expected: 4, got: 3 })
        ));
        let mut ok = vec![huge.next_down() / 2.0; 4];
        p.add_noise(&mut ok, &mut rng).unwrap();
    }

    #[test]
    fn rejects_bad_plans() {
        assert!(matches!(LatticeGaussian::new(0, 1.0, 1.0, 1e-3), Err(NoiseError::InvalidParameter { .. })));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(LatticeGaussian::new(10, bad, 1.0, 1e-3).is_err(), "sensitivity {bad}");
            assert!(LatticeGaussian::new(10, 1.0, bad, 1e-3).is_err(), "sigma {bad}");
            assert!(LatticeGaussian::new(10, 1.0, 1.0, bad).is_err(), "slack {bad}");
            assert!(IntegerGaussian::new(bad).is_err(), "integer sigma {bad}");
        }
        // σ/g = 1e6·1e10 → σ_L² ≈ 1e32 > 2⁶².
        assert!(matches!(LatticeGaussian::new(100, 1e-6, 1e4, 1e-6), Err(NoiseError::InvalidSigma(_))));
        assert!(matches!(IntegerGaussian::new(3e6), Err(NoiseError::InvalidSigma(_))));
    }

    /// A plan for `2²⁰` coordinates (the parallel threshold) with `σ_L² = 4`: `g = 2⁻¹⁰`
    /// (`g·√d = 1 ≤ slack·C`), `σ = 2g`.
    fn small_variance_plan() -> LatticeGaussian {
        let p = LatticeGaussian::new(PARALLEL_MIN_VALUES, 1.0, 2f64.powi(-9), 1.0).unwrap();
        assert_eq!((p.granularity(), p.lattice_variance()), (2f64.powi(-10), 4));
        p
    }

    /// Pearson chi-square of integer samples against `N_Z(0, σ²)` over `|x| ≤ reach` plus a
    /// tail bin.
    fn chi_square(samples: &[i64], sigma_sq: f64, reach: i64) -> f64 {
        let bins = (2 * reach + 1) as usize;
        let mut counts = vec![0usize; bins + 1];
        for &x in samples {
            counts[if x.abs() <= reach { (x + reach) as usize } else { bins }] += 1;
        }
        let n = samples.len() as f64;
        let mut body = 0.0;
        let mut chi2 = 0.0;
        for (i, &c) in counts.iter().take(bins).enumerate() {
            let p = crate::noise::exact::discrete_gaussian_pmf(sigma_sq, i as i64 - reach);
            body += p;
            chi2 += (c as f64 - n * p).powi(2) / (n * p);
        }
        let tail = ((1.0 - body) * n).max(1e-9);
        chi2 + (counts[bins] as f64 - tail).powi(2) / tail
    }

    /// The parallel path's noise (4 threads, whatever this machine has) follows the exact pmf
    /// of N_Z(0, 4) over 2²⁰ coordinates, overall and in every thread's range, with mean 0 and
    /// variance σ_L²; the same statistic rejects σ² = 4.4 (a 5% wrong σ).
    #[test]
    fn parallel_path_matches_exact_pmf() {
        let p = small_variance_plan();
        let mut rng = SecureRng::seeded_for_tests(31);
        let g = p.granularity();
        // Inputs on the lattice and off it: the noise is what was added to the rounded value.
        let input: Vec<f64> = (0..p.dim()).map(|i| (i % 7) as f64 * g * 0.75).collect();
        let mut out = input.clone();
        p.add_noise_with_threads(&mut out, &mut rng, 4).unwrap();
        let noise: Vec<i64> = input.iter().zip(&out).map(|(x, y)| (y / g) as i64 - round_half_away(x / g)).collect();
        // 17 bins + tail = 17 degrees of freedom: 0.999 quantile 40.8.
        let chi2 = chi_square(&noise, 4.0, 8);
        assert!(chi2 < 40.8, "parallel noise vs N_Z(0, 4): chi2 {chi2}");
        assert!(chi_square(&noise, 4.4, 8) > 40.8, "a 5% wrong sigma went unnoticed");
        for (i, range) in noise.chunks(noise.len().div_ceil(4)).enumerate() {
            let chi2 = chi_square(range, 4.0, 8);
            assert!(chi2 < 40.8, "range {i}: chi2 {chi2}");
        }
        let n = noise.len() as f64;
        let mean = noise.iter().sum::<i64>() as f64 / n;
        let var = noise.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        assert!(mean.abs() < 5.0 * 2.0 / n.sqrt(), "mean {mean}");
        // N_Z(0, 4)'s variance is 4 up to e^{−2π²·4} ≈ 1e-34; se of the sample variance ≈ σ²√(2/n).
        assert!((var - 4.0).abs() < 5.0 * 4.0 * (2.0 / n).sqrt(), "variance {var}");
    }

    /// Every thread's range gets its own stream: no two ranges (nor the single-threaded path
    /// from the same parent state) receive the same noise, a fixed parent state and thread
    /// count reproduce the same noise (the streams are derived from it alone), and a different
    /// thread count gives different values.
    #[test]
    fn parallel_ranges_get_distinct_streams() {
        let p = small_variance_plan();
        let noise = |seed: u64, threads: usize| {
            let mut values = vec![0.0; p.dim()];
            p.add_noise_with_threads(&mut values, &mut SecureRng::seeded_for_tests(seed), threads).unwrap();
            values.iter().map(|y| (y / p.granularity()) as i64).collect::<Vec<i64>>()
        };
        let four = noise(32, 4);
        let chunk = four.len() / 4;
        let starts: Vec<&[i64]> = (0..4).map(|i| &four[i * chunk..i * chunk + 256]).collect();
        let single = noise(32, 1);
        for i in 0..4 {
            assert_ne!(starts[i], &single[..256], "range {i} replays the caller's stream");
            for j in 0..i {
                assert_ne!(starts[i], starts[j], "ranges {i} and {j} got the same noise");
            }
        }
        assert_eq!(noise(32, 4), four, "same parent state and thread count must reproduce");
        // Range 0 uses stream 0 of the same key for any thread count; the others start
        // elsewhere, so the vectors differ.
        assert_ne!(noise(32, 3), four, "three threads must not give four threads' values");
        // add_noise itself takes the parallel path at this size and gives lattice values.
        let mut values = vec![0.0; p.dim()];
        p.add_noise(&mut values, &mut SecureRng::seeded_for_tests(33)).unwrap();
        assert!(values.iter().all(|y| (y / p.granularity()).fract() == 0.0));
    }

    /// Input errors are found before any thread starts, whatever the thread count.
    #[test]
    fn parallel_path_checks_all_values_first() {
        let p = small_variance_plan();
        let mut values = vec![0.25; p.dim()];
        values[p.dim() - 3] = f64::NAN;
        let before = values.clone();
        let err = p.add_noise_with_threads(&mut values, &mut SecureRng::seeded_for_tests(34), 4);
        assert!(matches!(err, Err(NoiseError::ValueOutOfRange { index, .. }) if index == p.dim() - 3), "{err:?}");
        assert!(values.iter().zip(&before).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn integer_gaussian_rho_and_std() {
        let q = IntegerGaussian::new(5.3).unwrap();
        assert!(q.sigma() >= 5.3 && q.sigma() < 5.3 + 1e-6);
        assert!((q.rho() - 1.0 / (2.0 * 5.3 * 5.3)).abs() < 1e-6);
        let mut rng = SecureRng::seeded_for_tests(13);
        let n = 50_000;
        let xs: Vec<f64> = (0..n).map(|_| q.sample(&mut rng).unwrap() as f64).collect();
        let var = xs.iter().map(|x| x * x).sum::<f64>() / n as f64;
        let se = 5.3f64.powi(2) * (2.0 / n as f64).sqrt();
        assert!((var - 5.3f64.powi(2)).abs() < 5.0 * se, "variance {var}");
    }
}
