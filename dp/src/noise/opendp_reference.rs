//! fedra's exact sampler against OpenDP's (`make_gaussian` over `i64` vectors, which draws with
//! OpenDP's own CKS 2020 implementation and OS randomness): same σ, compared on mean, variance
//! and the two-sample Kolmogorov–Smirnov distance, with tolerances that a σ off by 5% fails.

use super::{DiscreteGaussian, SecureRng};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;

const SIGMA: i64 = 40;
const N: usize = 40_000;

fn opendp_samples(sigma: f64, n: usize) -> Vec<i64> {
    let meas = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L2Distance::<i64>::default(),
        sigma,
        None,
    )
    .unwrap();
    meas.invoke(&vec![0i64; n]).unwrap()
}

fn fedra_samples(sigma_sq: u64, n: usize, seed: u64) -> Vec<i64> {
    let sampler = DiscreteGaussian::with_integer_variance(sigma_sq).unwrap();
    let mut rng = SecureRng::seeded_for_tests(seed);
    (0..n).map(|_| sampler.sample(&mut rng).unwrap()).collect()
}

fn mean_var(xs: &[i64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// Two-sample Kolmogorov–Smirnov statistic `sup |F_a − F_b|` for integer samples.
fn ks_distance(a: &[i64], b: &[i64]) -> f64 {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] == x {
            i += 1;
        }
        while j < b.len() && b[j] == x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

/// The comparison's verdict: which statistics disagree beyond their tolerance.
fn disagreements(ours: &[i64], reference: &[i64]) -> Vec<String> {
    let (m1, v1) = mean_var(ours);
    let (m2, v2) = mean_var(reference);
    let (n1, n2) = (ours.len() as f64, reference.len() as f64);
    let mut out = Vec::new();
    // 4.5 standard errors: a false alarm has probability below 1e-5 per statistic.
    let mean_se = (v1 / n1 + v2 / n2).sqrt();
    if (m1 - m2).abs() > 4.5 * mean_se {
        out.push(format!("means {m1} vs {m2} (se {mean_se})"));
    }
    // ln(v1/v2) has standard error √(2/(n1−1) + 2/(n2−1)) for Gaussian data (F test).
    let log_ratio_se = (2.0 / (n1 - 1.0) + 2.0 / (n2 - 1.0)).sqrt();
    if (v1 / v2).ln().abs() > 4.5 * log_ratio_se {
        out.push(format!("variances {v1} vs {v2} (ln ratio se {log_ratio_se})"));
    }
    // KS critical value at α = 0.001 is 1.95·√((n1+n2)/(n1·n2)) (conservative for discrete data).
    let ks = ks_distance(ours, reference);
    let ks_crit = 1.95 * ((n1 + n2) / (n1 * n2)).sqrt();
    if ks > ks_crit {
        out.push(format!("KS distance {ks} > {ks_crit}"));
    }
    out
}

#[test]
fn matches_opendp_discrete_gaussian() {
    let reference = opendp_samples(SIGMA as f64, N);
    let (m, v) = mean_var(&reference);
    assert!(m.abs() < 1.0 && (v / (SIGMA * SIGMA) as f64 - 1.0).abs() < 0.05, "opendp itself: mean {m}, var {v}");

    let ours = fedra_samples((SIGMA * SIGMA) as u64, N, 21);
    let verdict = disagreements(&ours, &reference);
    assert!(verdict.is_empty(), "fedra vs OpenDP at sigma {SIGMA}: {verdict:?}");

    // Negative control: the same comparison must reject a σ 5% too large (σ² × 1.1025).
    let wrong = fedra_samples((SIGMA * SIGMA) as u64 * 11025 / 10000, N, 22);
    let verdict = disagreements(&wrong, &reference);
    assert!(!verdict.is_empty(), "a 5% wrong sigma went unnoticed");
}

#[test]
fn ks_distance_of_known_samples() {
    assert_eq!(ks_distance(&[1, 2, 3], &[1, 2, 3]), 0.0);
    assert_eq!(ks_distance(&[0, 0], &[1, 1]), 1.0);
    assert!((ks_distance(&[0, 1, 2, 3], &[2, 3, 4, 5]) - 0.5).abs() < 1e-12);
}
