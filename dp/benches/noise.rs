//! DP noise throughput: fedra's exact lattice sampler on one thread and on all cores, beside
//! OpenDP's exact `make_gaussian` and a plain (unsafe) `rand_distr::Normal` fill on one
//! thread, measured in one run.
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
    /// Median CPU time of the measuring thread (one-thread rows only).
    cpu_s: Option<f64>,
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

/// This thread's CPU time in seconds (Linux `/proc/thread-self/schedstat`, nanoseconds), if
/// available: on a shared machine, values per CPU-second of a one-thread row are far less
/// sensitive to other jobs than values per wall-second.
fn thread_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(stat.split_whitespace().next()?.parse::<f64>().ok()? * 1e-9)
}

/// Median wall time and median CPU time of this thread over `reps` runs of `f`.
fn time_reps(reps: usize, mut f: impl FnMut()) -> (f64, Option<f64>) {
    f(); // warm-up (page faults, caches)
    let (walls, cpus): (Vec<f64>, Vec<Option<f64>>) = (0..reps)
        .map(|_| {
            let c = thread_cpu_s();
            let t = Instant::now();
            f();
            let wall = t.elapsed().as_secs_f64();
            (wall, c.zip(thread_cpu_s()).map(|(a, b)| b - a))
        })
        .unzip();
    (median(walls), cpus.into_iter().collect::<Option<Vec<f64>>>().map(median))
}

fn fedra_lattice(n: usize, reps: usize, threads: usize) -> Row {
    let plan = LatticeGaussian::new(n, CLIP, Z * CLIP, SLACK).unwrap();
    let mut rng = SecureRng::from_os_rng().unwrap();
    let base = input(n);
    let mut values = base.clone();
    let (median_s, cpu_s) = time_reps(reps, || {
        values.copy_from_slice(&base);
        plan.add_noise_with_threads(black_box(&mut values), &mut rng, threads).unwrap();
    });
    let what = if threads == 1 {
        "fedra LatticeGaussian::add_noise, 1 thread".to_string()
    } else {
        format!("fedra LatticeGaussian::add_noise, {threads} threads")
    };
    Row {
        what,
        values: n,
        reps,
        median_s,
        cpu_s: cpu_s.filter(|_| threads == 1),
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
    let (median_s, cpu_s) = time_reps(reps, || {
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
        cpu_s,
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
        cpu_s: None,
        note: format!("k = {k}, OS randomness per draw, dashu big rationals"),
    }
}

fn single_sampler(sigma_sq: u64, n: usize, reps: usize) -> Row {
    let sampler = DiscreteGaussian::with_integer_variance(sigma_sq).unwrap();
    let mut rng = SecureRng::from_os_rng().unwrap();
    let (median_s, cpu_s) = time_reps(reps, || {
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
        cpu_s,
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

    println!(
        "{:<50} {:>11} {:>5} {:>9} {:>12} {:>14}  note",
        "what", "values", "reps", "median s", "values/s", "values/cpu-s"
    );
    let mut json = Vec::new();
    let mut report = |r: Row| {
        let rate = r.values as f64 / r.median_s;
        let cpu_rate = r.cpu_s.map(|c| r.values as f64 / c);
        let cpu_text = cpu_rate.map_or("-".to_string(), |c| format!("{c:.0}"));
        println!(
            "{:<50} {:>11} {:>5} {:>9.4} {:>12.0} {:>14}  {}",
            r.what, r.values, r.reps, r.median_s, rate, cpu_text, r.note
        );
        let cpu_json = cpu_rate.map_or("null".to_string(), |c| c.to_string());
        json.push(format!(
            "{{\"what\":{:?},\"values\":{},\"reps\":{},\"median_s\":{},\"values_per_s\":{},\"values_per_cpu_s\":{},\"note\":{:?}}}",
            r.what, r.values, r.reps, r.median_s, rate, cpu_json, r.note
        ));
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    for &n in sizes {
        let reps = if n >= 10_000_000 { 5 } else { 9 };
        report(fedra_lattice(n, reps, 1));
        if cores > 1 {
            report(fedra_lattice(n, reps, cores));
        }
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
