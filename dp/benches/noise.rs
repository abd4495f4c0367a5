//! DP noise throughput, one core: fedra's exact lattice sampler beside OpenDP's exact
//! `make_gaussian` and a plain (unsafe) `rand_distr::Normal` fill, measured in one run.
//!
//! Usage: `cargo bench -p fedra-dp --bench noise -- [--quick] [--opendp-reps N] [--out PATH]`.
//! Prints a table and writes JSON (default `target/noise_bench.json`) for `bench/noise.sh`.

use fedra_dp::noise::{DiscreteGaussian, LatticeGaussian, SecureRng};
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, Normal};
use std::hint::black_box;
use std::time::Instant;

/// Noise multiplier z and clipping bound C of the benchmarked release (σ = z·C).
const Z: f64 = 1.0;
const CLIP: f64 = 1.0;
const SLACK: f64 = 1e-3;

struct Row {
    what: String,
    values: usize,
    reps: usize,
    median_s: f64,
    note: String,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

fn input(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i as f64) * 0.618_033_988_7).fract() - 0.5).collect()
}

fn time_reps(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up (page faults, caches)
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn fedra_lattice(n: usize, reps: usize) -> Row {
    let plan = LatticeGaussian::new(n, CLIP, Z * CLIP, SLACK).unwrap();
    let mut rng = SecureRng::from_os_rng().unwrap();
    let base = input(n);
    let mut values = base.clone();
    let median_s = time_reps(reps, || {
        values.copy_from_slice(&base);
        plan.add_noise(black_box(&mut values), &mut rng).unwrap();
    });
    Row {
        what: "fedra LatticeGaussian::add_noise".into(),
        values: n,
        reps,
        median_s,
        note: format!(
            "g = 2^{}, sigma_L^2 = {} (~2^{:.1}), rho = {:.4}",
            plan.granularity().log2(),
            plan.lattice_variance(),
            (plan.lattice_variance() as f64).log2(),
            plan.rho()
        ),
    }
}

fn normal_fill(n: usize, reps: usize) -> Row {
    let normal = Normal::new(0.0, Z * CLIP).unwrap();
    let mut rng = ChaCha12Rng::from_os_rng();
    let base = input(n);
    let mut values = base.clone();
    let median_s = time_reps(reps, || {
        values.copy_from_slice(&base);
        for v in values.iter_mut() {
            *v += normal.sample(&mut rng);
        }
        black_box(&values);
    });
    Row {
        what: "rand_distr::Normal fill (unsafe baseline)".into(),
        values: n,
        reps,
        median_s,
        note: "ChaCha12Rng, Ziggurat, f64 addition".into(),
    }
}

fn opendp_vector(n: usize, reps: usize) -> Row {
    let plan = LatticeGaussian::new(n, CLIP, Z * CLIP, SLACK).unwrap();
    let k = plan.granularity().log2() as i32;
    let meas = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()).with_size(n),
        L2Distance::<f64>::default(),
        Z * CLIP,
        Some(k),
    )
    .unwrap();
    let base = input(n);
    // No warm-up run here: one rep of 1M values already takes tens of seconds.
    let times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            black_box(meas.invoke(&base).unwrap());
            t.elapsed().as_secs_f64()
        })
        .collect();
    Row {
        what: "OpenDP make_gaussian (f64 vector)".into(),
        values: n,
        reps,
        median_s: median(times),
        note: format!("k = {k}, OS randomness per draw, dashu big rationals"),
    }
}

fn single_sampler(sigma_sq: u64, n: usize, reps: usize) -> Row {
    let sampler = DiscreteGaussian::with_integer_variance(sigma_sq).unwrap();
    let mut rng = SecureRng::from_os_rng().unwrap();
    let median_s = time_reps(reps, || {
        let mut acc = 0i64;
        for _ in 0..n {
            acc = acc.wrapping_add(sampler.sample(&mut rng).unwrap());
        }
        black_box(acc);
    });
    Row {
        what: format!("fedra DiscreteGaussian::sample, sigma^2 = 2^{}", sigma_sq.ilog2()),
        values: n,
        reps,
        median_s,
        note: String::new(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let opendp_reps: usize = flag("--opendp-reps").map(|s| s.parse().unwrap()).unwrap_or(1);
    let out = flag("--out").unwrap_or_else(|| "target/noise_bench.json".into());
    let sizes: &[usize] = if quick { &[1_000_000] } else { &[1_000_000, 10_000_000] };

    println!("{:<55} {:>11} {:>5} {:>11} {:>14}  note", "what", "values", "reps", "median s", "values/s");
    let mut json = Vec::new();
    let mut report = |r: Row| {
        let rate = r.values as f64 / r.median_s;
        println!("{:<55} {:>11} {:>5} {:>11.4} {:>14.0}  {}", r.what, r.values, r.reps, r.median_s, rate, r.note);
        json.push(format!(
            "{{\"what\":{:?},\"values\":{},\"reps\":{},\"median_s\":{},\"values_per_s\":{},\"note\":{:?}}}",
            r.what, r.values, r.reps, r.median_s, rate, r.note
        ));
    };
    for &n in sizes {
        let reps = if n >= 10_000_000 { 5 } else { 9 };
        report(fedra_lattice(n, reps));
        report(normal_fill(n, reps));
    }
    for shift in [2u32, 20, 44, 56] {
        report(single_sampler(1 << shift, 1_000_000, 5));
    }
    if opendp_reps > 0 {
        let n = if quick { 20_000 } else { 1_000_000 };
        report(opendp_vector(n, opendp_reps));
    }
    std::fs::write(&out, format!("[\n{}\n]\n", json.join(",\n"))).unwrap();
    eprintln!("wrote {out}");
}
