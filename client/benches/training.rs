//! Local training throughput (samples/s) of each model on burn's CPU backend, through the
//! same `Trainer` the sidecar uses. Run with `bash bench/training.sh`, which also runs the
//! PyTorch baseline and writes BENCHMARKS.md; alone: `cargo bench -p fedra-client --bench
//! training` (prints JSON lines).
//!
//! Throughput = epochs × samples / seconds spent in the training loop (the trainer's own
//! `train_seconds`, which excludes the before/after evaluation passes). Each case runs
//! `REPEATS` times after one warm-up; the median is reported.
//!
//! `FEDRA_BENCH_DEVICE` (`cpu`, `cuda:N`, `wgpu`) picks the burn device, as
//! `fedra-client --device` does; a GPU device needs a build with the matching client feature
//! (`bash bench/gpu.sh` builds and runs it). `FEDRA_BENCH_SCALE` multiplies every case's
//! sample count (a GPU needs more samples per case than the CPU to time a steady epoch).

use fedra_client::data::synthetic::{BlobSpec, gaussian_blobs};
use fedra_client::trainer::burn_logreg::{BurnTrainer, DeviceChoice};
use fedra_client::trainer::{LocalHyperparams, Optimizer, TrainSpec, Trainer};
use fedra_types::model::{Architecture, ConvLayer};

const REPEATS: usize = 5;

fn case(device: DeviceChoice, name: &str, arch: Architecture, samples: usize, batch: u32, optimizer: Optimizer) {
    let samples = samples * scale();
    let data = gaussian_blobs(name, &BlobSpec::new(arch.input_dim(), arch.classes(), samples, 1));
    let mut trainer = BurnTrainer::new(data).with_device(device).expect("the device opens (is the client feature on?)");
    let spec = TrainSpec {
        layout: arch.layout(),
        architecture: arch.clone(),
        hyper: LocalHyperparams { epochs: 1, batch_size: batch, learning_rate: 0.01, optimizer, proximal_mu: 0.0 },
        seed: 3,
    };
    let global = vec![0.01f32; arch.layout().total()];
    let mut rates = Vec::new();
    for i in 0..=REPEATS {
        let out = trainer.train(&spec, &global).expect("training runs");
        if i > 0 {
            rates.push(samples as f64 / out.metrics.train_seconds);
        }
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "{{\"model\": \"{name}\", \"device\": \"{device}\", \"params\": {}, \"samples\": {samples}, \"batch\": {batch}, \"optimizer\": \"{optimizer:?}\", \"samples_per_s\": {median:.1}}}",
        arch.layout().total()
    );
}

fn scale() -> usize {
    std::env::var("FEDRA_BENCH_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let device: DeviceChoice = std::env::var("FEDRA_BENCH_DEVICE")
        .unwrap_or_else(|_| "cpu".into())
        .parse()
        .expect("FEDRA_BENCH_DEVICE is cpu, cuda:N or wgpu");
    let case = |name: &str, arch: Architecture, samples: usize, batch: u32, optimizer: Optimizer| {
        case(device, name, arch, samples, batch, optimizer)
    };
    let sgd = Optimizer::Sgd { momentum: 0.0 };
    case("logreg-60-10", Architecture::LogisticRegression { input_dim: 60, classes: 10 }, 50_000, 64, sgd);
    case(
        "mlp-784-200-200-10",
        Architecture::Mlp { input_dim: 784, hidden: vec![200, 200], classes: 10 },
        20_000,
        64,
        sgd,
    );
    case(
        "mlp-784-200-200-10-adam",
        Architecture::Mlp { input_dim: 784, hidden: vec![200, 200], classes: 10 },
        20_000,
        64,
        Optimizer::Adam,
    );
    case(
        "cnn-8x8-digits",
        Architecture::Cnn {
            height: 8,
            width: 8,
            channels: 1,
            conv: vec![ConvLayer { filters: 16, kernel: 3 }, ConvLayer { filters: 32, kernel: 3 }],
            dense: vec![64],
            classes: 10,
        },
        5_000,
        32,
        sgd,
    );
    case(
        "cnn-28x28-fedavg",
        Architecture::Cnn {
            height: 28,
            width: 28,
            channels: 1,
            conv: vec![ConvLayer { filters: 32, kernel: 5 }, ConvLayer { filters: 64, kernel: 5 }],
            dense: vec![512],
            classes: 10,
        },
        1_000,
        32,
        sgd,
    );
}
