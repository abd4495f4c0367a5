//! Statistical and exactness tests of the sampler: every Bernoulli decision against its
//! probability, the enclosures against 192-bit references, the alias table's weights
//! recounted, and samples against the exact pmf (chi-square), on every decision stage.

use super::enclosure::exp_table;
use super::plan::{ALIAS_COLUMNS, build_alias};
use super::reference::{bernoulli_exp, bernoulli_exp_scaled, bernoulli_ratio};
use super::*;

fn rng(seed: u64) -> SecureRng {
    SecureRng::seeded_for_tests(seed)
}

/// |observed − expected| of a Bernoulli frequency within 5 standard errors.
fn assert_frequency(hits: usize, n: usize, p: f64, what: &str) {
    let se = (p * (1.0 - p) / n as f64).sqrt().max(1e-9);
    let got = hits as f64 / n as f64;
    assert!((got - p).abs() < 5.0 * se, "{what}: frequency {got}, expected {p} (se {se})");
}

#[test]
fn bernoulli_ratio_matches_probability_on_both_paths() {
    let mut r = rng(2);
    let n = 100_000;
    for (num, den) in [(1u128, 3u128), (2, 7), (999_999, 1_000_000), (1, 1 << 40)] {
        let hits = (0..n).filter(|_| bernoulli_ratio(&mut r, num, den)).count();
        assert_frequency(hits, n, num as f64 / den as f64, "words");
    }
    // Denominators above 2⁶⁴ take the bit-by-bit path.
    let big = 3u128 << 100;
    for num in [1u128 << 100, (5u128 << 99) + 12345] {
        let hits = (0..n).filter(|_| bernoulli_ratio(&mut r, num, big)).count();
        assert_frequency(hits, n, num as f64 / big as f64, "bits");
    }
}

#[test]
fn bernoulli_exp_matches_exp() {
    let mut r = rng(3);
    let n = 100_000;
    for (num, den) in [(0u128, 1u64), (1, 2), (1, 1), (7, 3), (5, 1), (123_456_789, 100_000_000)] {
        let hits = (0..n).filter(|_| bernoulli_exp(&mut r, num, den)).count();
        assert_frequency(hits, n, (-(num as f64) / den as f64).exp(), &format!("exp(-{num}/{den})"));
    }
    // The overflow-avoiding split gives the same law: exp(-m·q/d) with m·q > 2¹²⁸ is 0,
    // and a small case through both branches agrees with the closed form.
    assert!((0..1000).all(|_| !bernoulli_exp_scaled(&mut r, u128::MAX / 3, 1 << 62, 7)));
    let hits = (0..n).filter(|_| bernoulli_exp_scaled(&mut r, 3, 5, 9)).count();
    assert_frequency(hits, n, (-15.0f64 / 9.0).exp(), "scaled");
}

/// `e^{−x}` of an enclosure as f64 (for comparisons with `f64::exp` only).
fn big_to_f64(a: &[u64], limbs: usize) -> f64 {
    a.iter().enumerate().map(|(i, &l)| l as f64 * 2f64.powi(64 * (i as i32 - limbs as i32))).sum()
}

#[test]
fn exp_enclosure_brackets_exp_and_narrows_with_precision() {
    for (num, den) in
        [(0u128, 1u64), (1, 1), (1, 64), (7, 3), (123_456_789, 100_000_000), (45, 1), (5, 2), (1 << 70, 1 << 62)]
    {
        let exact = (-(num as f64) / den as f64).exp();
        let mut prev: Option<(big::Big, big::Big, usize)> = None;
        for limbs in 1..=4 {
            let (lo, hi) = exp_neg_enclosure(num, den, limbs);
            assert!(big::cmp(&lo, &hi) != std::cmp::Ordering::Greater, "{num}/{den}");
            let (l, h) = (big_to_f64(&lo, limbs), big_to_f64(&hi, limbs));
            assert!(l <= exact * (1.0 + 1e-12) && h >= exact * (1.0 - 1e-12), "{num}/{den}: [{l}, {h}] vs {exact}");
            assert!(h - l <= 2f64.powi(-64 * limbs as i32 + 12), "{num}/{den}: width {}", h - l);
            if let Some((plo, phi, pl)) = prev {
                // Nested: the finer enclosure lies inside the coarser one.
                let shift = limbs - pl;
                assert!(big::cmp(&big::shl_limbs(&plo, shift), &lo) != std::cmp::Ordering::Greater);
                assert!(big::cmp(&big::shl_limbs(&phi, shift), &hi) != std::cmp::Ordering::Less);
            }
            prev = Some((lo, hi, limbs));
        }
    }
    // e^{-1} to 192 bits: 0.36787944117144233...
    let (lo, _) = exp_neg_enclosure(1, 1, 3);
    assert!((big_to_f64(&lo, 3) - 0.367_879_441_171_442_33).abs() < 1e-16);
}

#[test]
fn exp_table_entries_enclose_exp() {
    let table = exp_table();
    assert_eq!(table[0], [1 << 63, 1 << 63]);
    for (i, &[lo, hi]) in table.iter().enumerate() {
        let (elo, ehi) = exp_neg_enclosure(i as u128, 64, 3);
        // In 2^-192 units: lo·2^129 ≤ elo and hi·2^129 ≥ ehi.
        assert!(big::cmp(&big_shl_bits(&[lo], 129), &elo) != std::cmp::Ordering::Greater, "entry {i} lo");
        assert!(big::cmp(&big_shl_bits(&[hi], 129), &ehi) != std::cmp::Ordering::Less, "entry {i} hi");
        assert!(hi - lo <= 4, "entry {i}: width {}", hi - lo);
    }
}

/// The fast path's 64-bit bounds contain a 192-bit enclosure of e^{−n/den} (so they contain
/// the true value) for random and edge-case numerators and denominators.
#[test]
fn fast_bounds_contain_exact_enclosure() {
    let mut r = rng(20);
    for den in [2u64, 3, 8, 1 << 20, 2 * 1_234_567_891, (1 << 63) - 25, 1 << 63] {
        let e = ExpDenominator::new(den);
        let mut ns: Vec<u128> = vec![0, 1, e.limit - 1, e.limit / 2, u128::from(den), u128::from(den) / 64];
        // Numerators at and just around table steps (ρ near 0 and near 2^-6).
        for i in [1u128, 63, 64, 500, 1023] {
            let at = i * u128::from(den) / 64;
            ns.extend([at.saturating_sub(1), at, at + 1]);
        }
        ns.extend((0..2000).map(|_| (u128::from(r.next_u64()) << 64 | u128::from(r.next_u64())) % e.limit));
        for n in ns.into_iter().filter(|&n| n < e.limit) {
            let (lo, hi) = e.bounds64(n);
            let (elo, ehi) = exp_neg_enclosure(n, den, 3);
            let (lo_b, hi_b) = (big::shl_limbs(&big::from_u128(lo), 2), big::shl_limbs(&big::from_u128(hi), 2));
            assert!(big::cmp(&lo_b, &elo) != std::cmp::Ordering::Greater, "lo for {n}/{den}");
            assert!(big::cmp(&hi_b, &ehi) != std::cmp::Ordering::Less, "hi for {n}/{den}");
            assert!(hi - lo < 1 << 40, "width {} for {n}/{den}", hi - lo);
        }
    }
}

#[test]
fn alias_table_reproduces_weights_exactly() {
    let mut r = rng(21);
    for case in 0..50 {
        let mut w: Vec<u64> = (0..ALIAS_COLUMNS).map(|_| r.next_u64() >> (40 + case % 20)).collect();
        w[case % ALIAS_COLUMNS] = 0;
        let total: u64 = w.iter().sum();
        let capacity = total.div_ceil(ALIAS_COLUMNS as u64).max(1);
        w[(case + 1) % ALIAS_COLUMNS] += capacity * ALIAS_COLUMNS as u64 - total;
        let table = build_alias(w.clone(), capacity);
        let mut mass = vec![0u64; ALIAS_COLUMNS];
        for (col, c) in table.iter().enumerate() {
            assert!(u64::from(c.threshold) <= capacity);
            mass[col] += u64::from(c.threshold);
            mass[usize::from(c.alias)] += capacity - u64::from(c.threshold);
        }
        assert_eq!(mass, w, "case {case}");
    }
}

fn with_widening<T>(w: u128, f: impl FnOnce() -> T) -> T {
    FAST_PATH_WIDENING.with(|c| c.set(w));
    let out = f();
    FAST_PATH_WIDENING.with(|c| c.set(0));
    out
}

/// Stages 2 and 3 (`accept_from_prefix`) are Bernoulli(e^{−γ}·scale/height): on the 64-bit
/// stage, and with the exact bignum fallback (forced by widening the fast enclosures), and
/// for exponents beyond the fast path (γ ≥ 16, straight to the bignum).
#[test]
fn accept_from_prefix_matches_probability_on_every_stage() {
    for widening in [0u128, 1 << 62, u128::MAX] {
        let mut r = rng(22);
        for (num, den, height, scale) in [
            (1u128, 2u64, 1u64 << 20, 1u64 << 20),
            (7, 3, 50_000, 50_000),
            (50, 64, 70_001, 100_000),
            (0, 5, 3, 3),
            (9, 8, 1_500_000_000, 1 << 32),
            (33, 2, 1, 1_000_000), // γ = 16.5: no fast path
        ] {
            let e = ExpDenominator::new(den);
            // Decisions that all take the bignum fallback (the last widening, γ ≥ 16) are
            // slow in debug builds: fewer draws.
            let n = if widening == u128::MAX || num >= 16 * u128::from(den) { 5_000 } else { 100_000 };
            let hits = with_widening(widening, || {
                (0..n)
                    .filter(|_| {
                        let w = r.next_u64();
                        accept_from_prefix(&mut r, w, height, scale, num, &e)
                    })
                    .count()
            });
            let p = (-(num as f64) / den as f64).exp() * scale as f64 / height as f64;
            assert_frequency(hits, n, p, &format!("e^-{num}/{den}·{scale}/{height}, widening {widening}"));
        }
    }
}

/// Pearson chi-square of N_Z(0, σ²) samples over |x| ≤ `reach` plus one tail bin; the
/// statistic must stay below the 0.999 quantile for `2·reach + 1` degrees of freedom.
fn chi_square_against_pmf(mut draw: impl FnMut() -> i64, sigma_sq: f64, reach: i64, n: usize, limit: f64) {
    let bins = (2 * reach + 1) as usize;
    let mut counts = vec![0usize; bins + 1];
    for _ in 0..n {
        let x = draw();
        counts[if x.abs() <= reach { (x + reach) as usize } else { bins }] += 1;
    }
    let mut chi2 = 0.0;
    let mut body = 0.0;
    for (i, &c) in counts.iter().take(bins).enumerate() {
        let p = discrete_gaussian_pmf(sigma_sq, i as i64 - reach);
        body += p;
        chi2 += (c as f64 - n as f64 * p).powi(2) / (n as f64 * p);
    }
    let tail = ((1.0 - body) * n as f64).max(1e-9);
    chi2 += (counts[bins] as f64 - tail).powi(2) / tail;
    assert!(chi2 < limit, "chi2 {chi2}, counts {counts:?}");
}

/// With the fast enclosures widened so that about a quarter of the acceptance decisions
/// go to the 64-bit stage and the bignum fallback, the samples still follow the exact pmf.
#[test]
fn forced_fallback_matches_exact_pmf() {
    let sampler = DiscreteGaussian::new(5, 2).unwrap(); // σ² = 2.5
    let mut r = rng(23);
    with_widening(1 << 62, || {
        chi_square_against_pmf(|| sampler.sample(&mut r).unwrap(), 2.5, 6, 100_000, 34.5); // 14 dof
    });
    let sampler = DiscreteGaussian::new(1, 3).unwrap(); // σ² = 1/3 (B = 1, K = 4)
    with_widening(u128::MAX, || {
        chi_square_against_pmf(|| sampler.sample(&mut r).unwrap(), 1.0 / 3.0, 2, 50_000, 20.5); // 6 dof
    });
}

/// The new sampler against the previous (digit-by-digit) exact sampler: both against the
/// exact pmf, for several σ², including σ = 8·B boundaries of the block width.
#[test]
fn matches_reference_sampler_and_pmf() {
    for (num, den, reach, limit) in
        [(2u64, 1u64, 5, 31.3), (64, 1, 20, 68.0), (65, 1, 20, 68.0), (1, 4, 2, 20.5), (300, 7, 16, 58.4)]
    {
        let sampler = DiscreteGaussian::new(num, den).unwrap();
        let sigma_sq = num as f64 / den as f64;
        let mut r = rng(24 + num);
        chi_square_against_pmf(|| sampler.sample(&mut r).unwrap(), sigma_sq, reach, 200_000, limit);
        chi_square_against_pmf(|| sampler.sample_reference(&mut r).unwrap(), sigma_sq, reach, 50_000, limit);
    }
}

/// The halving tail, tested directly: with K = 1 at σ² = 1/2 (a = 1, so 2aK ≥ ln 2), the
/// tail accepts x ≥ 1 with probability e^{−x²}/(2h), h = H₁/S.
#[test]
fn tail_blocks_follow_the_gaussian() {
    let mut sampler = DiscreteGaussian::new(1, 2).unwrap();
    assert_eq!(sampler.block_log2, 0);
    sampler.blocks = 1;
    let h = sampler.heights[1] as f64 / sampler.scale as f64;
    assert!(h >= (-1f64).exp());
    let mut r = rng(25);
    let n = 200_000;
    let mut counts = [0usize; 4];
    for _ in 0..n {
        if let Some(x) = sampler.sample_tail(&mut r, 0).unwrap() {
            counts[(x as usize).min(3)] += 1;
        }
    }
    assert_eq!(counts[0], 0);
    for (x, &hits) in counts.iter().enumerate().take(3).skip(1) {
        let p = (-((x * x) as f64)).exp() / (2.0 * h);
        assert_frequency(hits, n, p, &format!("tail x = {x}"));
    }
}

const TABLE_CASES: [(u64, u64); 9] = [
    (1, 1),
    (2, 1),
    (64, 1),
    (255, 1),
    (1 << 44, 1),
    (MAX_SIGMA_SQ_TERM, 1),
    (1, MAX_SIGMA_SQ_TERM),
    (5_300_000, 1 << 20),
    (300, 7),
];

/// Block width, table reach, heights and the padding of the alias weights, for small,
/// fractional and extreme σ².
#[test]
fn table_covers_to_exponent_64_and_heights_dominate() {
    for (num, den) in TABLE_CASES {
        let s = DiscreteGaussian::new(num, den).unwrap();
        let sigma = (num as f64 / den as f64).sqrt();
        let block = (1u64 << s.block_log2) as f64;
        assert!(block <= sigma / 8.0 || s.block_log2 == 0, "{num}/{den}: B = {block}");
        assert!(2.0 * block > sigma / 8.0, "{num}/{den}: B = {block} is not the largest");
        assert!(s.blocks >= 1 && s.blocks + 2 <= ALIAS_COLUMNS);
        let a = block * block / (2.0 * sigma * sigma);
        assert!(a * (s.blocks as f64).powi(2) >= 64.0 * (1.0 - 1e-12), "{num}/{den}: K = {}", s.blocks);
        assert_eq!(s.heights[0], s.scale);
        for (k, &h) in s.heights.iter().enumerate() {
            let bound = (-a * (k * k) as f64).exp() * s.scale as f64;
            assert!(h as f64 >= bound * (1.0 - 1e-9) && h <= s.scale && (h as f64) < bound + 1.0 + 1e-6, "k {k}");
        }
        // The restart padding stays small: S was chosen as large as the 2²⁰ total allows.
        let used: u64 = s.heights[..s.blocks].iter().sum::<u64>() + 2 * s.heights[s.blocks];
        assert!(used <= 1 << 20 && used as f64 >= (1u64 << 20) as f64 * (1.0 - 2.0 / 1024.0), "{num}/{den}: {used}");
        assert!(8 + 12 + 1 + s.block_log2 + s.u_bits <= 64 && s.u_bits >= 15);
    }
}

/// The squeeze thresholds are sound (checked against f64 e^{−γ} with a relative margin far
/// above f64's error but far below their own granularity) and tight: the undecided band
/// [A, R) covers a small fraction of all (x, u) pairs, weighted by the proposal.
#[test]
fn squeeze_thresholds_bracket_the_acceptance_and_are_tight() {
    for (num, den) in TABLE_CASES {
        let s = DiscreteGaussian::new(num, den).unwrap();
        let sigma_sq = num as f64 / den as f64;
        let t = 2f64.powi(s.u_bits as i32);
        let sub_width = 1u64 << (s.block_log2 - s.sub_log2);
        let (mut band, mut mass) = (0.0, 0.0);
        for k in 0..s.blocks {
            let h = s.heights[k] as f64 / s.scale as f64;
            for sub in 0..1u64 << s.sub_log2 {
                let [acc, rej] = s.squeeze[(k << SUB_BITS) + sub as usize];
                let x0 = ((k as u64) << s.block_log2) + sub * sub_width;
                let x1 = x0 + sub_width - 1;
                let e_lo = (-((x1 as f64).powi(2)) / (2.0 * sigma_sq)).exp();
                let e_hi = (-((x0 as f64).powi(2)) / (2.0 * sigma_sq)).exp();
                assert!(acc <= rej && f64::from(rej) <= t, "{num}/{den} k {k} sub {sub}");
                // u < A ⇒ (u+1)/2^t·h ≤ A/2^t·h ≤ e^{−γ(x1)}; u ≥ R ⇒ u/2^t·h ≥ e^{−γ(x0)}.
                assert!(f64::from(acc) / t * h <= e_lo * (1.0 + 1e-9) + 1e-300, "accept bound {num}/{den} k {k}");
                assert!(f64::from(rej) == t || f64::from(rej) / t * h >= e_hi * (1.0 - 1e-9), "reject bound");
                let weight = s.heights[k] as f64 * sub_width as f64;
                band += weight * f64::from(rej - acc) / t;
                mass += weight;
            }
        }
        let band = band / mass;
        assert!(band < 0.02, "{num}/{den}: undecided fraction {band}");
    }
}

/// Sub-blocks wider than one value (σ² = 2¹⁶: B = 32, sub-blocks of 2), where one threshold
/// pair serves several x: the exact pmf over |x| ≤ 3σ, value by value (1537 bins + tail).
#[test]
fn wide_sub_blocks_match_exact_pmf() {
    let sampler = DiscreteGaussian::new(1 << 16, 1).unwrap();
    assert_eq!((sampler.block_log2, sampler.sub_log2), (5, 4));
    let mut r = rng(27);
    // 1537 degrees of freedom: 0.999 quantile ≈ 1714 (Wilson–Hilferty).
    chi_square_against_pmf(|| sampler.sample(&mut r).unwrap(), 65536.0, 768, 2_000_000, 1714.0);
}

/// With every squeeze lookup treated as undecided (all decisions through stage 2) and then
/// with the fast enclosures widened as well (stage 3), the samples follow the exact pmf.
#[test]
fn skipped_squeeze_matches_exact_pmf() {
    SKIP_SQUEEZE.with(|c| c.set(true));
    let sampler = DiscreteGaussian::new(300, 7).unwrap(); // σ² ≈ 42.9, B = 1 (no sub-blocks)
    let mut r = rng(26);
    chi_square_against_pmf(|| sampler.sample(&mut r).unwrap(), 300.0 / 7.0, 16, 100_000, 58.4);
    let sampler = DiscreteGaussian::new(5000, 1).unwrap(); // B = 8, sub-blocks of width 1
    chi_square_against_pmf(|| sampler.sample(&mut r).unwrap(), 5000.0, 150, 200_000, 370.0);
    with_widening(1 << 62, || {
        let sampler = DiscreteGaussian::new(5, 2).unwrap();
        chi_square_against_pmf(|| sampler.sample(&mut r).unwrap(), 2.5, 6, 50_000, 34.5);
    });
    SKIP_SQUEEZE.with(|c| c.set(false));
}

#[test]
fn rejects_invalid_sigma() {
    for (num, den) in [(0, 1), (1, 0), (MAX_SIGMA_SQ_TERM + 1, 1), (1, MAX_SIGMA_SQ_TERM + 1)] {
        assert!(matches!(DiscreteGaussian::new(num, den), Err(NoiseError::InvalidSigma(_))), "{num}/{den}");
    }
    assert!(DiscreteGaussian::new(MAX_SIGMA_SQ_TERM, 1).is_ok());
    assert!(DiscreteGaussian::new(1, MAX_SIGMA_SQ_TERM).is_ok());
}

#[test]
fn width_is_ceil_two_sigma() {
    assert_eq!(DiscreteGaussian::new(2, 1).unwrap().width, 3); // 2√2 = 2.83
    assert_eq!(DiscreteGaussian::new(4, 1).unwrap().width, 4);
    assert_eq!(DiscreteGaussian::new(1, 100).unwrap().width, 1);
    assert_eq!(DiscreteGaussian::new(1 << 40, 1).unwrap().width, 1 << 21);
}

/// Empirical frequencies of N_Z(0, 2) against its exact pmf: Pearson chi-square over
/// |x| ≤ 5 plus one tail bin.
#[test]
fn small_sigma_matches_exact_pmf() {
    let sigma_sq = 2.0;
    let sampler = DiscreteGaussian::new(2, 1).unwrap();
    let mut r = rng(4);
    let n = 200_000;
    let mut counts = [0usize; 12]; // bins -5..=5, then the tail
    for _ in 0..n {
        let x = sampler.sample(&mut r).unwrap();
        counts[if x.abs() <= 5 { (x + 5) as usize } else { 11 }] += 1;
    }
    let mut chi2 = 0.0;
    let mut body = 0.0;
    for (i, &c) in counts.iter().take(11).enumerate() {
        let p = discrete_gaussian_pmf(sigma_sq, i as i64 - 5);
        body += p;
        chi2 += (c as f64 - n as f64 * p).powi(2) / (n as f64 * p);
    }
    let tail = (1.0 - body) * n as f64; // ≈ 0.9 expected counts
    chi2 += (counts[11] as f64 - tail).powi(2) / tail.max(1e-9);
    // 11 degrees of freedom: 0.999 quantile 31.3.
    assert!(chi2 < 31.3, "chi2 {chi2}, counts {counts:?}");
}

/// Rational σ² (here 1/4, below one lattice step) also matches the exact pmf.
#[test]
fn fractional_sigma_matches_exact_pmf() {
    let sampler = DiscreteGaussian::new(1, 4).unwrap();
    let mut r = rng(5);
    let n = 100_000;
    let mut counts = [0usize; 5];
    for _ in 0..n {
        let x = sampler.sample(&mut r).unwrap();
        assert!(x.abs() <= 2, "implausible sample {x} for sigma^2 = 1/4");
        counts[(x + 2) as usize] += 1;
    }
    for (i, &c) in counts.iter().enumerate() {
        let p = discrete_gaussian_pmf(0.25, i as i64 - 2);
        assert_frequency(c, n, p, &format!("x = {}", i as i64 - 2));
    }
}

/// Mean and variance for σ² = 2⁴⁰ (σ = 2²⁰), within 5 standard errors.
#[test]
fn large_sigma_mean_and_variance() {
    let sigma_sq = (1u64 << 40) as f64;
    let sampler = DiscreteGaussian::with_integer_variance(1 << 40).unwrap();
    let mut r = rng(6);
    let n = 100_000;
    let xs: Vec<f64> = (0..n).map(|_| sampler.sample(&mut r).unwrap() as f64).collect();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sigma = sigma_sq.sqrt();
    assert!(mean.abs() < 5.0 * sigma / (n as f64).sqrt(), "mean {mean}");
    // Var of the sample variance of a Gaussian is 2σ⁴/(n − 1).
    let se = sigma_sq * (2.0 / (n - 1) as f64).sqrt();
    assert!((var - sigma_sq).abs() < 5.0 * se, "variance {var} vs {sigma_sq} (se {se})");
    // Kurtosis 3 (tails of the right weight, not just the right variance).
    let m4 = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64;
    let kurt = m4 / (var * var);
    assert!((kurt - 3.0).abs() < 5.0 * (24.0 / n as f64).sqrt(), "kurtosis {kurt}");
}

#[test]
fn huge_sigma_does_not_overflow() {
    let sampler = DiscreteGaussian::new(MAX_SIGMA_SQ_TERM, 1).unwrap();
    let mut r = rng(7);
    for _ in 0..1000 {
        let x = sampler.sample(&mut r).unwrap();
        assert!(x.unsigned_abs() < 10 * (1u64 << 31), "{x}");
    }
}
