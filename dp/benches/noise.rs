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
    /// CPU time per rep, the mean over all reps: the measuring thread's (one-thread rows) or
    /// the whole process's (several threads).
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
/// sensitive to other jobs than values per wall-second. The kernel brings this counter up to
/// date only at scheduler ticks and switches (every few ms), so only totals over many reps
/// are meaningful.
fn thread_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(stat.split_whitespace().next()?.parse::<f64>().ok()? * 1e-9)
}

/// CPU time of the whole process, all threads including finished ones, in seconds
/// (`/proc/self/stat` utime + stime, in clock ticks of 1/100 s: coarse, so only totals over
/// many reps are meaningful).
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Median wall time over `reps` runs of `f`, and this thread's mean CPU time per run (from
/// the total over all runs: the counter's resolution is a few ms).
fn time_reps(reps: usize, mut f: impl FnMut()) -> (f64, Option<f64>) {
    f(); // warm-up (page faults, caches)
    let cpu_before = thread_cpu_s();
    let walls: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    let cpu = cpu_before.zip(thread_cpu_s()).map(|(a, b)| (b - a) / reps as f64);
    (median(walls), cpu)
}

fn fedra_lattice(n: usize, reps: usize, threads: usize) -> Row {
    let plan = LatticeGaussian::new(n, CLIP, Z * CLIP, SLACK).unwrap();
    let mut rng = SecureRng::from_os_rng().unwrap();
    let base = input(n);
    let mut values = base.clone();
    let before = process_cpu_s();
    let (median_s, cpu_s) = time_reps(reps, || {
        values.copy_from_slice(&base);
        plan.add_noise_with_threads(black_box(&mut values), &mut rng, threads).unwrap();
    });
    // Several threads: the process's CPU time per rep (warm-up included, hence reps + 1).
    let process_cpu = before.zip(process_cpu_s()).map(|(a, b)| (b - a) / (reps + 1) as f64);
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
        cpu_s: if threads == 1 { cpu_s } else { process_cpu },
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
        let reps = if n >= 10_000_000 { 5 } else { 15 };
        report(fedra_lattice(n, reps, 1));
        if cores > 1 {
            report(fedra_lattice(n, reps, cores));
        }
        report(normal_fill(n, reps));
    }
    for shift in [2u32, 20, 44, 56] {
        report(single_sampler(1 << shift, 1_000_000, 15));
    }
    if opendp_reps > 0 {
        let n = if quick { 20_000 } else { 1_000_000 };
        report(opendp_vector(n, opendp_reps));
    }
    std::fs::write(&out, format!("[\n{}\n]\n", json.join(",\n"))).unwrap();
    eprintln!("wrote {out}");
}
