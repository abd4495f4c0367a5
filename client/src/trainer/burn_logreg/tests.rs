//! Unit tests of the burn trainer, in their own file for length: every architecture trains,
//! evaluates and round-trips its parameters bit-exactly, reproducibly given the seed.

use rand::{Rng, SeedableRng};

use super::*;
use crate::data::synthetic::{BlobSpec, gaussian_blobs};
use crate::trainer::LocalHyperparams;
use fedra_types::model::ConvLayer;

const SGD: Optimizer = Optimizer::Sgd { momentum: 0.0 };

fn logreg() -> Architecture {
    Architecture::LogisticRegression { input_dim: 10, classes: 4 }
}

fn mlp() -> Architecture {
    Architecture::Mlp { input_dim: 16, hidden: vec![32, 16], classes: 4 }
}

fn cnn() -> Architecture {
    Architecture::Cnn {
        height: 8,
        width: 8,
        channels: 1,
        conv: vec![ConvLayer { filters: 4, kernel: 3 }, ConvLayer { filters: 8, kernel: 3 }],
        dense: vec![16],
        classes: 10,
    }
}

fn all_architectures() -> [Architecture; 3] {
    [logreg(), mlp(), cnn()]
}

fn spec_with(architecture: Architecture, epochs: u32, lr: f64, optimizer: Optimizer, mu: f64) -> TrainSpec {
    TrainSpec {
        layout: architecture.layout(),
        architecture,
        hyper: LocalHyperparams { epochs, batch_size: 32, learning_rate: lr, optimizer, proximal_mu: mu },
        seed: 7,
    }
}

fn spec(architecture: Architecture) -> TrainSpec {
    spec_with(architecture, 1, 0.1, SGD, 0.0)
}

/// A client's synthetic data shaped for `architecture` (features of a CNN row are just
/// Gaussian blobs in 64 dimensions: enough to learn, not images). Well separated, so that a
/// few epochs on a few hundred samples visibly reduce the loss.
fn blobs_for(architecture: &Architecture, samples: usize, seed: u64) -> Dataset {
    let blob = BlobSpec {
        client_shift: 0.5,
        separation: 2.0,
        ..BlobSpec::new(architecture.input_dim(), architecture.classes(), samples, seed)
    };
    gaussian_blobs("blobs", &blob)
}

/// Seeded uniform(±1/√fan_in) weights and zero biases: a start every architecture can train
/// from (all-zero weights would leave ReLU networks stuck).
fn init_params(architecture: &Architecture, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut flat = Vec::new();
    for t in architecture.layout().tensors {
        if t.shape.len() == 1 {
            flat.extend(std::iter::repeat_n(0.0, t.numel()));
            continue;
        }
        // Dense [in, out]: fan-in is in; conv [out, in, k, k]: in·k·k.
        let fan_in = if t.shape.len() == 2 { t.shape[0] } else { t.shape[1..].iter().product() };
        let bound = 1.0 / (fan_in as f32).sqrt();
        flat.extend((0..t.numel()).map(|_| rng.random_range(-bound..bound)));
    }
    flat
}

/// Deterministic, varied values including awkward bit patterns.
fn awkward_params(n: usize) -> Vec<f32> {
    let specials = [0.0, -0.0, f32::MIN_POSITIVE, 1e-40, -1e-40, f32::MAX, f32::MIN, 1.0 / 3.0, f32::from_bits(1)];
    (0..n).map(|i| if i < specials.len() { specials[i] } else { (i as f32 * 0.7311).sin() * 10.0 }).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn logreg_layout_is_weight_then_bias() {
    let layout = logreg_layout(4, 3);
    assert_eq!(layout.total(), 15);
    assert_eq!(layout.to_string(), "linear.weight[4, 3], linear.bias[3]");
}

#[test]
fn load_then_flatten_is_bit_exact_for_every_architecture() {
    for architecture in all_architectures() {
        let layout = architecture.layout();
        let flat = awkward_params(layout.total());
        for device in [Device::flex(), Device::flex().autodiff()] {
            let back = Network::load(&architecture, &flat, &device).expect("loads").flatten(&layout).expect("flattens");
            assert_eq!(bits(&back), bits(&flat), "{architecture:?}");
        }
    }
}

/// The flat layout means logits = x·W + b with W row-major [input_dim, classes].
#[test]
fn evaluate_matches_hand_computed_cross_entropy() {
    let data = Dataset::new("t", vec![1.0, 2.0, -1.0, 0.0], vec![1, 0], 2, 3).expect("valid");
    let trainer = BurnTrainer::new(data);
    let flat = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 5.0, 0.0];
    let architecture = Architecture::LogisticRegression { input_dim: 2, classes: 3 };
    let (loss, acc) = trainer.evaluate(&spec(architecture), &flat).expect("evaluates");
    // Row 0 logits [1, 5, 2], label 1 (correct); row 1 logits [-1, 5, 0], label 0 (wrong).
    let lse = |l: [f64; 3]| l.iter().map(|v| v.exp()).sum::<f64>().ln();
    let expected = ((lse([1.0, 5.0, 2.0]) - 5.0) + (lse([-1.0, 5.0, 0.0]) + 1.0)) / 2.0;
    assert!((loss - expected).abs() < 1e-9, "{loss} vs {expected}");
    assert!((acc - 0.5).abs() < 1e-12);
}

#[test]
fn training_reduces_loss_for_every_architecture() {
    for (architecture, lr) in [(logreg(), 0.1), (mlp(), 0.1), (cnn(), 0.2)] {
        let mut trainer = BurnTrainer::new(blobs_for(&architecture, 300, 1));
        let global = init_params(&architecture, 11);
        let s = spec_with(architecture.clone(), 4, lr, SGD, 0.0);
        let out = trainer.train(&s, &global).expect("trains");
        assert_eq!(out.samples, 300);
        assert_eq!(out.params.len(), global.len());
        let m = out.metrics;
        assert!(m.loss_after < 0.7 * m.loss_before, "{architecture:?}: {m:?}");
        assert!(m.accuracy_after > 0.6, "{architecture:?}: {m:?}");
        assert!(m.train_seconds >= 0.0);
        // Reported metrics agree with an independent evaluation of the returned params.
        assert_eq!(trainer.evaluate(&s, &out.params).expect("evaluates"), (m.loss_after, m.accuracy_after));
        let (loss_before, _) = trainer.evaluate(&s, &global).expect("evaluates");
        assert_eq!(loss_before, m.loss_before);
    }
}

#[test]
fn zero_logreg_starts_at_log_classes() {
    let architecture = logreg();
    let global = vec![0.0; architecture.layout().total()];
    let out = BurnTrainer::new(blobs_for(&architecture, 200, 2)).train(&spec(architecture), &global).expect("trains");
    assert!((out.metrics.loss_before - 4f64.ln()).abs() < 1e-6, "{:?}", out.metrics);
}

#[test]
fn training_is_reproducible_given_the_seed() {
    for architecture in [mlp(), cnn()] {
        let global = init_params(&architecture, 3);
        let s = spec_with(architecture.clone(), 2, 0.05, Optimizer::Adam, 0.1);
        let a = BurnTrainer::new(blobs_for(&architecture, 100, 2)).train(&s, &global).expect("trains");
        let b = BurnTrainer::new(blobs_for(&architecture, 100, 2)).train(&s, &global).expect("trains");
        assert_eq!(bits(&a.params), bits(&b.params), "{architecture:?}");
    }
}

#[test]
fn proximal_term_keeps_params_near_global() {
    for architecture in [logreg(), mlp()] {
        let global = init_params(&architecture, 5);
        let train = |mu| {
            BurnTrainer::new(blobs_for(&architecture, 300, 3))
                .train(&spec_with(architecture.clone(), 5, 0.1, SGD, mu), &global)
                .expect("trains")
        };
        let (plain, prox) = (train(0.0), train(1.0));
        let (dp, dx) = (l2(&plain.params, &global), l2(&prox.params, &global));
        assert!(dx < 0.8 * dp, "{architecture:?}: prox distance {dx} vs plain {dp}");
        assert!(prox.metrics.loss_after < prox.metrics.loss_before);
    }
}

#[test]
fn momentum_and_adam_train_and_differ_from_plain_sgd() {
    let architecture = mlp();
    let global = init_params(&architecture, 9);
    let run = |optimizer, lr| {
        BurnTrainer::new(blobs_for(&architecture, 300, 4))
            .train(&spec_with(architecture.clone(), 2, lr, optimizer, 0.0), &global)
            .expect("trains")
    };
    let plain = run(SGD, 0.05);
    let momentum = run(Optimizer::Sgd { momentum: 0.9 }, 0.05);
    let adam = run(Optimizer::Adam, 0.01);
    for (name, out) in [("sgd", &plain), ("momentum", &momentum), ("adam", &adam)] {
        assert!(out.metrics.loss_after < 0.8 * out.metrics.loss_before, "{name}: {:?}", out.metrics);
    }
    // Same data, seed and learning rate: momentum accumulates velocity, so it moves further.
    assert!(l2(&momentum.params, &global) > l2(&plain.params, &global));
    assert_ne!(bits(&momentum.params), bits(&plain.params));
    assert_ne!(bits(&adam.params), bits(&plain.params));
}

#[test]
fn evaluate_holdout_uses_the_held_out_split() {
    for architecture in all_architectures() {
        let (train, holdout) = (blobs_for(&architecture, 120, 5), blobs_for(&architecture, 37, 6));
        let params = init_params(&architecture, 1);
        let s = spec(architecture.clone());

        let without = BurnTrainer::new(train.clone());
        assert!(without.holdout().is_none());
        assert!(matches!(without.evaluate_holdout(&s, &params), Err(TrainError::NoHoldout)));

        let with = BurnTrainer::with_holdout(train, Some(holdout.clone()));
        let outcome = with.evaluate_holdout(&s, &params).expect("evaluates");
        assert_eq!(outcome.samples, 37);
        // The same numbers as evaluating a trainer whose data is the holdout.
        let (loss, accuracy) = BurnTrainer::new(holdout).evaluate(&s, &params).expect("evaluates");
        assert_eq!((outcome.loss, outcome.accuracy), (loss, accuracy), "{architecture:?}");
        // Checked like any task.
        assert!(matches!(with.evaluate_holdout(&s, &params[1..]), Err(TrainError::ParamCount { .. })));
    }
}

#[test]
fn holdout_that_does_not_fit_the_model_is_a_data_mismatch() {
    let architecture = mlp();
    let wrong = gaussian_blobs("wrong", &BlobSpec::new(15, 4, 20, 1));
    let trainer = BurnTrainer::with_holdout(blobs_for(&architecture, 50, 1), Some(wrong));
    let err = trainer.evaluate_holdout(&spec(architecture.clone()), &init_params(&architecture, 1)).expect_err("dim");
    assert!(matches!(err, TrainError::DataMismatch { dim: 15, .. }), "{err}");
}

#[test]
fn mismatches_are_rejected() {
    let architecture = mlp();
    let mut trainer = BurnTrainer::new(blobs_for(&architecture, 60, 4));
    let global = init_params(&architecture, 1);

    // A layout of another model of the same size: hidden widths swapped.
    let mut bad_layout = spec(architecture.clone());
    bad_layout.layout = Architecture::Mlp { input_dim: 16, hidden: vec![16, 32], classes: 4 }.layout();
    let err = trainer.train(&bad_layout, &global).expect_err("layout");
    assert!(matches!(err, TrainError::LayoutMismatch { .. }), "{err}");
    let mut reordered = spec(architecture.clone());
    reordered.layout.tensors.swap(0, 1);
    assert!(matches!(trainer.evaluate(&reordered, &global), Err(TrainError::LayoutMismatch { .. })));

    let err = trainer.train(&spec(architecture.clone()), &global[1..]).expect_err("short params");
    assert!(matches!(err, TrainError::ParamCount { got, expected } if got + 1 == expected), "{err}");

    let wrong_dim = Architecture::Mlp { input_dim: 17, hidden: vec![32, 16], classes: 4 };
    let err = trainer.train(&spec(wrong_dim.clone()), &init_params(&wrong_dim, 1)).expect_err("dim");
    assert!(matches!(err, TrainError::DataMismatch { dim: 16, classes: 4, .. }), "{err}");
    let too_few_classes = Architecture::Mlp { input_dim: 16, hidden: vec![32, 16], classes: 3 };
    let err = trainer.train(&spec(too_few_classes.clone()), &init_params(&too_few_classes, 1)).expect_err("classes");
    assert!(matches!(err, TrainError::DataMismatch { .. }), "{err}");
    // More model classes than local classes is fine.
    let more_classes = Architecture::Mlp { input_dim: 16, hidden: vec![32, 16], classes: 5 };
    assert!(trainer.train(&spec(more_classes.clone()), &init_params(&more_classes, 1)).is_ok());

    // A CNN whose input is not the data's row size (8x8x1 = 64 features vs 16).
    let err = trainer.train(&spec(cnn()), &init_params(&cnn(), 1)).expect_err("cnn");
    assert!(matches!(err, TrainError::DataMismatch { dim: 16, .. }), "{err}");
    // An invalid architecture is refused before anything is built.
    let even = Architecture::Cnn {
        height: 4,
        width: 4,
        channels: 1,
        conv: vec![ConvLayer { filters: 1, kernel: 2 }],
        dense: vec![],
        classes: 4,
    };
    match trainer.train(&spec(even.clone()), &vec![0.0; even.layout().total()]) {
        Err(TrainError::Hyperparameter(msg)) => assert!(msg.contains("kernel"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_hyperparameters_are_rejected() {
    let architecture = logreg();
    let mut trainer = BurnTrainer::new(blobs_for(&architecture, 50, 5));
    let global = vec![0.0; architecture.layout().total()];
    type Breakage = fn(&mut LocalHyperparams);
    let cases: [(&str, Breakage); 9] = [
        ("epochs", |h| h.epochs = 0),
        ("batch_size", |h| h.batch_size = 0),
        ("learning_rate", |h| h.learning_rate = 0.0),
        ("learning_rate", |h| h.learning_rate = f64::NAN),
        ("proximal_mu", |h| h.proximal_mu = -1.0),
        ("proximal_mu", |h| h.proximal_mu = f64::INFINITY),
        ("momentum", |h| h.optimizer = Optimizer::Sgd { momentum: 1.0 }),
        ("momentum", |h| h.optimizer = Optimizer::Sgd { momentum: -0.1 }),
        ("momentum", |h| h.optimizer = Optimizer::Sgd { momentum: f64::NAN }),
    ];
    for (name, break_it) in cases {
        let mut s = spec(architecture.clone());
        break_it(&mut s.hyper);
        match trainer.train(&s, &global) {
            Err(TrainError::Hyperparameter(msg)) => assert!(msg.contains(name), "{msg}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn divergence_is_an_error() {
    for architecture in [logreg(), mlp()] {
        let mut trainer = BurnTrainer::new(blobs_for(&architecture, 100, 6));
        let global = init_params(&architecture, 2);
        let err = trainer.train(&spec_with(architecture.clone(), 3, 1e38, SGD, 0.0), &global).expect_err("diverges");
        assert!(matches!(err, TrainError::Diverged(_)), "{architecture:?}: {err}");
    }
}

#[test]
fn device_choices_parse_and_report_missing_features() {
    for (text, choice) in [("cpu", DeviceChoice::Cpu), ("cuda:1", DeviceChoice::Cuda(1)), ("wgpu", DeviceChoice::Wgpu)]
    {
        assert_eq!(text.parse::<DeviceChoice>().expect("parses"), choice);
        assert_eq!(choice.to_string(), text);
    }
    assert_eq!("cuda".parse::<DeviceChoice>().expect("parses"), DeviceChoice::Cuda(0));
    assert!(matches!("tpu".parse::<DeviceChoice>(), Err(DeviceError::Parse(_))));

    let trainer = BurnTrainer::new(blobs_for(&logreg(), 10, 1)).with_device(DeviceChoice::Cpu).expect("cpu works");
    assert_eq!(trainer.device(), DeviceChoice::Cpu);
    #[cfg(not(feature = "cuda"))]
    {
        let err = trainer.clone().with_device(DeviceChoice::Cuda(0)).expect_err("not compiled");
        assert_eq!(err, DeviceError::NotCompiled { device: DeviceChoice::Cuda(0), feature: "cuda" });
        assert_eq!(err.to_string(), "device cuda:0 needs fedra-client built with the `cuda` feature");
    }
    #[cfg(not(feature = "wgpu"))]
    assert!(matches!(trainer.with_device(DeviceChoice::Wgpu), Err(DeviceError::NotCompiled { feature: "wgpu", .. })));
}
