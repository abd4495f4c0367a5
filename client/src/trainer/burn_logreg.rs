//! Multinomial logistic regression trained with burn on the CPU (flex backend + autodiff).
//!
//! Contract (see [`super`]): the flat parameter vector is exactly
//! `"linear.weight"` `[input_dim, classes]` (row-major) followed by `"linear.bias"`
//! `[classes]` — [`logreg_layout`]. That is burn's own `nn::Linear` layout (`[d_input,
//! d_output]`, logits = x·W + b), so loading copies the received bytes into the module
//! unchanged and flattening reads them back unchanged: with no training the round trip is
//! bit-exact, which the coordinator relies on when it averages full models. Flattening walks
//! the module with a [`ModuleVisitor`] and checks every tensor's path and shape against the
//! layout, so a change in burn's naming fails loudly instead of silently permuting weights.
//!
//! Training is `epochs` passes of plain minibatch SGD on mean softmax cross-entropy, batches
//! shuffled by a ChaCha8 RNG seeded from the task seed (reproducible rounds). With FedProx
//! (`proximal_mu` = μ > 0) each batch loss gets μ/2·‖w − w_global‖² over all parameters, which
//! keeps a client on skewed data from drifting far from the global model. Losses reported
//! in [`TrainMetrics`] are evaluated on all local data in large batches without autodiff and
//! accumulated in `f64`.

use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::{Architecture, TensorLayout, TensorSpec, TrainError, TrainMetrics, TrainOutcome, TrainSpec, Trainer};
use crate::data::Dataset;

/// Rows per forward pass when evaluating (no autodiff, so memory is just the batch).
const EVAL_CHUNK: usize = 8192;

/// The flat layout of a logistic regression with `input_dim` features and `classes` classes.
pub fn logreg_layout(input_dim: usize, classes: usize) -> TensorLayout {
    TensorLayout {
        tensors: vec![
            TensorSpec { name: "linear.weight".to_owned(), shape: vec![input_dim, classes] },
            TensorSpec { name: "linear.bias".to_owned(), shape: vec![classes] },
        ],
    }
}

/// Trains logistic regression on one client's local dataset.
#[derive(Debug, Clone)]
pub struct BurnTrainer {
    dataset: Dataset,
}

impl BurnTrainer {
    pub fn new(dataset: Dataset) -> Self {
        Self { dataset }
    }

    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// Checks everything but the hyperparameters; returns the model's `(input_dim, classes)`.
    fn check_task(&self, spec: &TrainSpec, params: &[f32]) -> Result<(usize, usize), TrainError> {
        let (input_dim, classes) = match spec.architecture {
            Architecture::LogisticRegression { input_dim, classes } => (input_dim, classes),
        };
        let layout = logreg_layout(input_dim, classes);
        if spec.layout != layout {
            return Err(TrainError::LayoutMismatch { task: spec.layout.to_string(), model: layout.to_string() });
        }
        if params.len() != layout.total() {
            return Err(TrainError::ParamCount { got: params.len(), expected: layout.total() });
        }
        // Fewer local classes than model classes is fine (labels still index logits).
        if input_dim == 0 || classes == 0 || self.dataset.dim != input_dim || self.dataset.classes > classes {
            return Err(TrainError::DataMismatch {
                architecture: spec.architecture.clone(),
                dim: self.dataset.dim,
                classes: self.dataset.classes,
            });
        }
        Ok((input_dim, classes))
    }

    /// Mean cross-entropy and accuracy of `model` on all local data.
    fn eval_model(&self, model: &LogReg, device: &Device) -> (f64, f64) {
        let (n, dim, classes) = (self.dataset.len(), self.dataset.dim, model.classes());
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for start in (0..n).step_by(EVAL_CHUNK) {
            let end = (start + EVAL_CHUNK).min(n);
            let rows = end - start;
            let x = TensorData::new(self.dataset.features[start * dim..end * dim].to_vec(), [rows, dim]);
            let logits = model.forward(Tensor::from_data(x, device));
            let logits = read_f32(logits.into_data());
            for (row, &label) in logits.chunks_exact(classes).zip(&self.dataset.labels[start..end]) {
                let (loss, argmax) = cross_entropy_row(row, label as usize);
                loss_sum += loss;
                correct += usize::from(argmax == label as usize);
            }
        }
        (loss_sum / n as f64, correct as f64 / n as f64)
    }
}

fn check_hyper(spec: &TrainSpec) -> Result<(), TrainError> {
    let h = &spec.hyper;
    if h.epochs == 0 {
        return Err(TrainError::Hyperparameter("epochs is 0, need at least 1".to_owned()));
    }
    if h.batch_size == 0 {
        return Err(TrainError::Hyperparameter("batch_size is 0, need at least 1".to_owned()));
    }
    if !(h.learning_rate.is_finite() && h.learning_rate > 0.0) {
        return Err(TrainError::Hyperparameter(format!(
            "learning_rate is {}, need a finite value > 0",
            h.learning_rate
        )));
    }
    if !(h.proximal_mu.is_finite() && h.proximal_mu >= 0.0) {
        return Err(TrainError::Hyperparameter(format!("proximal_mu is {}, need a finite value >= 0", h.proximal_mu)));
    }
    Ok(())
}

impl Trainer for BurnTrainer {
    fn train(&mut self, spec: &TrainSpec, global: &[f32]) -> Result<TrainOutcome, TrainError> {
        let (input_dim, classes) = self.check_task(spec, global)?;
        check_hyper(spec)?;
        let plain = Device::flex();
        let (loss_before, _) = self.eval_model(&LogReg::load(global, input_dim, classes, &plain), &plain);

        let started = Instant::now();
        let device = Device::flex().autodiff();
        let mut model = LogReg::load(global, input_dim, classes, &device);
        let mu = spec.hyper.proximal_mu;
        // Constants (no gradient) on the autodiff device: the FedProx anchor.
        let anchor = (mu > 0.0).then(|| {
            let (w, b) = global.split_at(input_dim * classes);
            (
                Tensor::<2>::from_data(TensorData::new(w.to_vec(), [input_dim, classes]), &device),
                Tensor::<1>::from_data(TensorData::new(b.to_vec(), [classes]), &device),
            )
        });
        let mut optim = SgdConfig::new().init();
        let lr = spec.hyper.learning_rate;

        let n = self.dataset.len();
        let batch = (spec.hyper.batch_size as usize).min(n);
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        for _ in 0..spec.hyper.epochs {
            order.shuffle(&mut rng);
            for idx in order.chunks(batch) {
                let rows = idx.len();
                let mut x = Vec::with_capacity(rows * input_dim);
                let mut y = vec![0.0f32; rows * classes];
                for (r, &i) in idx.iter().enumerate() {
                    x.extend_from_slice(self.dataset.row(i));
                    y[r * classes + self.dataset.labels[i] as usize] = 1.0;
                }
                let x = Tensor::<2>::from_data(TensorData::new(x, [rows, input_dim]), &device);
                let y = Tensor::<2>::from_data(TensorData::new(y, [rows, classes]), &device);
                let log_probs = log_softmax(model.forward(x), 1);
                let mut loss = (log_probs * y).sum().mul_scalar(-1.0 / rows as f64);
                if let Some((w_global, b_global)) = &anchor {
                    let dist = (model.linear.weight.val() - w_global.clone()).square().sum()
                        + (model.bias() - b_global.clone()).square().sum();
                    loss = loss + dist.mul_scalar(mu / 2.0);
                }
                let value = read_f32(loss.to_data()).first().map_or(f64::NAN, |&v| f64::from(v));
                if !value.is_finite() {
                    return Err(TrainError::Diverged(value));
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(lr, model, grads);
            }
        }
        let params = model.flatten(&spec.layout);
        let train_seconds = started.elapsed().as_secs_f64();

        let (loss_after, accuracy_after) = self.eval_model(&LogReg::load(&params, input_dim, classes, &plain), &plain);
        if !loss_after.is_finite() || params.iter().any(|v| !v.is_finite()) {
            return Err(TrainError::Diverged(loss_after));
        }
        Ok(TrainOutcome {
            params,
            samples: self.samples(),
            metrics: TrainMetrics { loss_before, loss_after, accuracy_after, train_seconds },
        })
    }

    fn evaluate(&self, spec: &TrainSpec, params: &[f32]) -> Result<(f64, f64), TrainError> {
        let (input_dim, classes) = self.check_task(spec, params)?;
        let device = Device::flex();
        Ok(self.eval_model(&LogReg::load(params, input_dim, classes, &device), &device))
    }

    fn samples(&self) -> u64 {
        self.dataset.len() as u64
    }
}

/// The burn module: one `Linear` named `linear`, so parameter paths are `linear.weight` and
/// `linear.bias`.
#[derive(Module, Debug)]
struct LogReg {
    linear: Linear,
}

impl LogReg {
    /// Builds the module from a flat vector in [`logreg_layout`] order (length already
    /// checked); on an autodiff device the parameters require gradients.
    fn load(flat: &[f32], input_dim: usize, classes: usize, device: &Device) -> Self {
        let (w, b) = flat.split_at(input_dim * classes);
        let linear = Linear {
            weight: Param::from_data(TensorData::new(w.to_vec(), [input_dim, classes]), device),
            bias: Some(Param::from_data(TensorData::new(b.to_vec(), [classes]), device)),
        };
        Self { linear }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear.forward(x)
    }

    fn classes(&self) -> usize {
        self.linear.weight.dims()[1]
    }

    fn bias(&self) -> Tensor<1> {
        self.linear.bias.as_ref().expect("LogReg is always built with a bias").val()
    }

    /// The parameters as a flat vector in `layout` order.
    ///
    /// # Panics
    /// If the module's tensors do not match `layout` by path and shape: the caller checked
    /// `layout == logreg_layout(..)`, so this is a broken invariant, not bad input.
    fn flatten(&self, layout: &TensorLayout) -> Vec<f32> {
        let mut visitor = Flattener::default();
        self.visit(&mut visitor);
        assert_eq!(visitor.tensors.len(), layout.tensors.len(), "module has extra or missing tensors");
        let mut flat = Vec::with_capacity(layout.total());
        for want in &layout.tensors {
            let (_, shape, values) = visitor
                .tensors
                .iter()
                .find(|(name, _, _)| *name == want.name)
                .unwrap_or_else(|| panic!("module has no tensor {}", want.name));
            assert_eq!(*shape, want.shape, "tensor {} has shape {shape:?}", want.name);
            flat.extend_from_slice(values);
        }
        flat
    }
}

/// Collects every float parameter with its dotted module path.
#[derive(Default)]
struct Flattener {
    path: Vec<String>,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Flattener {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        self.tensors.push((self.path.join("."), shape, read_f32(tensor.into_data())));
    }
}

/// Host copy of an f32 tensor's values, bit for bit.
fn read_f32(data: TensorData) -> Vec<f32> {
    data.try_into_vec::<f32>().expect("fedra creates only f32 tensors")
}

/// Cross-entropy of one row of logits against `label`, in f64, and the row's argmax
/// (first maximum on ties).
fn cross_entropy_row(logits: &[f32], label: usize) -> (f64, usize) {
    let mut argmax = 0;
    for (k, &v) in logits.iter().enumerate() {
        if v > logits[argmax] {
            argmax = k;
        }
    }
    let max = f64::from(logits[argmax]);
    let log_sum_exp = max + logits.iter().map(|&v| (f64::from(v) - max).exp()).sum::<f64>().ln();
    (log_sum_exp - f64::from(logits[label]), argmax)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{BlobSpec, gaussian_blobs};
    use crate::trainer::LocalHyperparams;

    fn spec(input_dim: usize, classes: usize, epochs: u32, lr: f64, mu: f64) -> TrainSpec {
        TrainSpec {
            architecture: Architecture::LogisticRegression { input_dim, classes },
            layout: logreg_layout(input_dim, classes),
            hyper: LocalHyperparams { epochs, batch_size: 32, learning_rate: lr, proximal_mu: mu },
            seed: 7,
        }
    }

    /// Deterministic, varied values including awkward bit patterns.
    fn awkward_params(n: usize) -> Vec<f32> {
        let specials = [0.0, -0.0, f32::MIN_POSITIVE, 1e-40, -1e-40, f32::MAX, f32::MIN, 1.0 / 3.0];
        (0..n).map(|i| if i < specials.len() { specials[i] } else { (i as f32 * 0.7311).sin() * 10.0 }).collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn layout_is_weight_then_bias() {
        let layout = logreg_layout(4, 3);
        assert_eq!(layout.total(), 15);
        assert_eq!(layout.to_string(), "linear.weight[4, 3], linear.bias[3]");
    }

    #[test]
    fn load_then_flatten_is_bit_exact() {
        let (d, c) = (5, 3);
        let flat = awkward_params(d * c + c);
        let layout = logreg_layout(d, c);
        for device in [Device::flex(), Device::flex().autodiff()] {
            let back = LogReg::load(&flat, d, c, &device).flatten(&layout);
            assert_eq!(bits(&back), bits(&flat));
        }
    }

    /// The flat layout means logits = x·W + b with W row-major [input_dim, classes].
    #[test]
    fn layout_matches_the_math() {
        // x = [1, 2]; W = [[1, 0, 0], [0, 0, 1]]; b = [0, 5, 0] -> logits [1, 5, 2].
        let flat = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 5.0, 0.0];
        let device = Device::flex();
        let model = LogReg::load(&flat, 2, 3, &device);
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 2]), &device);
        assert_eq!(read_f32(model.forward(x).into_data()), vec![1.0, 5.0, 2.0]);
    }

    #[test]
    fn evaluate_matches_hand_computed_cross_entropy() {
        let data = Dataset::new("t", vec![1.0, 2.0, -1.0, 0.0], vec![1, 0], 2, 3).expect("valid");
        let trainer = BurnTrainer::new(data);
        let flat = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 5.0, 0.0];
        let (loss, acc) = trainer.evaluate(&spec(2, 3, 1, 0.1, 0.0), &flat).expect("evaluates");
        // Row 0 logits [1, 5, 2], label 1 (correct); row 1 logits [-1, 5, 0], label 0 (wrong).
        let lse = |l: [f64; 3]| l.iter().map(|v| v.exp()).sum::<f64>().ln();
        let expected = ((lse([1.0, 5.0, 2.0]) - 5.0) + (lse([-1.0, 5.0, 0.0]) + 1.0)) / 2.0;
        assert!((loss - expected).abs() < 1e-9, "{loss} vs {expected}");
        assert!((acc - 0.5).abs() < 1e-12);
    }

    fn blobs(seed: u64) -> Dataset {
        gaussian_blobs("blobs", &BlobSpec { client_shift: 0.5, ..BlobSpec::new(10, 4, 600, seed) })
    }

    #[test]
    fn training_reduces_loss_on_separable_data() {
        let (d, c) = (10, 4);
        let mut trainer = BurnTrainer::new(blobs(1));
        let global = vec![0.0; d * c + c];
        let out = trainer.train(&spec(d, c, 3, 0.1, 0.0), &global).expect("trains");
        assert_eq!(out.samples, 600);
        assert_eq!(out.params.len(), global.len());
        let m = out.metrics;
        assert!((m.loss_before - (c as f64).ln()).abs() < 1e-6, "{m:?}");
        assert!(m.loss_after < 0.5 * m.loss_before, "{m:?}");
        assert!(m.accuracy_after > 0.9, "{m:?}");
        assert!(m.train_seconds >= 0.0);
        // Reported metrics agree with an independent evaluation of the returned params.
        let (loss, acc) = trainer.evaluate(&spec(d, c, 3, 0.1, 0.0), &out.params).expect("evaluates");
        assert_eq!((loss, acc), (m.loss_after, m.accuracy_after));
    }

    #[test]
    fn training_is_reproducible_given_the_seed() {
        let (d, c) = (10, 4);
        let global = awkward_params(d * c + c).iter().map(|v| v.clamp(-1.0, 1.0)).collect::<Vec<_>>();
        let a = BurnTrainer::new(blobs(2)).train(&spec(d, c, 2, 0.05, 0.0), &global).expect("trains");
        let b = BurnTrainer::new(blobs(2)).train(&spec(d, c, 2, 0.05, 0.0), &global).expect("trains");
        assert_eq!(bits(&a.params), bits(&b.params));
    }

    fn l2(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt()
    }

    #[test]
    fn proximal_term_keeps_params_near_global() {
        let (d, c) = (10, 4);
        let global: Vec<f32> = (0..d * c + c).map(|i| ((i as f32) * 0.37).cos() * 0.5).collect();
        let plain = BurnTrainer::new(blobs(3)).train(&spec(d, c, 5, 0.1, 0.0), &global).expect("trains");
        let prox = BurnTrainer::new(blobs(3)).train(&spec(d, c, 5, 0.1, 1.0), &global).expect("trains");
        let (dp, dx) = (l2(&plain.params, &global), l2(&prox.params, &global));
        assert!(dx < 0.8 * dp, "prox distance {dx} vs plain {dp}");
        assert!(prox.metrics.loss_after < prox.metrics.loss_before);
    }

    #[test]
    fn mismatches_are_rejected() {
        let (d, c) = (10, 4);
        let mut trainer = BurnTrainer::new(blobs(4));
        let global = vec![0.0; d * c + c];

        let mut bad_layout = spec(d, c, 1, 0.1, 0.0);
        bad_layout.layout.tensors.reverse();
        assert!(matches!(trainer.train(&bad_layout, &global), Err(TrainError::LayoutMismatch { .. })));

        let err = trainer.train(&spec(d, c, 1, 0.1, 0.0), &global[1..]).expect_err("short params");
        assert!(matches!(err, TrainError::ParamCount { got: 43, expected: 44 }), "{err}");
        assert!(matches!(trainer.evaluate(&spec(d, c, 1, 0.1, 0.0), &[0.0; 3]), Err(TrainError::ParamCount { .. })));

        let wrong_dim = spec(d + 1, c, 1, 0.1, 0.0);
        let err = trainer.train(&wrong_dim, &vec![0.0; (d + 1) * c + c]).expect_err("dim");
        assert!(matches!(err, TrainError::DataMismatch { dim: 10, classes: 4, .. }), "{err}");
        let too_few_classes = spec(d, c - 1, 1, 0.1, 0.0);
        let err = trainer.train(&too_few_classes, &vec![0.0; d * (c - 1) + c - 1]).expect_err("classes");
        assert!(matches!(err, TrainError::DataMismatch { .. }), "{err}");
        // More model classes than local classes is fine.
        assert!(trainer.train(&spec(d, c + 1, 1, 0.1, 0.0), &vec![0.0; d * (c + 1) + c + 1]).is_ok());
    }

    #[test]
    fn bad_hyperparameters_are_rejected() {
        let (d, c) = (10, 4);
        let mut trainer = BurnTrainer::new(blobs(5));
        let global = vec![0.0; d * c + c];
        type Breakage = fn(&mut LocalHyperparams);
        let cases: [(&str, Breakage); 6] = [
            ("epochs", |h| h.epochs = 0),
            ("batch_size", |h| h.batch_size = 0),
            ("learning_rate", |h| h.learning_rate = 0.0),
            ("learning_rate", |h| h.learning_rate = f64::NAN),
            ("proximal_mu", |h| h.proximal_mu = -1.0),
            ("proximal_mu", |h| h.proximal_mu = f64::INFINITY),
        ];
        for (name, break_it) in cases {
            let mut s = spec(d, c, 1, 0.1, 0.0);
            break_it(&mut s.hyper);
            match trainer.train(&s, &global) {
                Err(TrainError::Hyperparameter(msg)) => assert!(msg.contains(name), "{msg}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn divergence_is_an_error() {
        let (d, c) = (10, 4);
        let mut trainer = BurnTrainer::new(blobs(6));
        let global = vec![0.0; d * c + c];
        let err = trainer.train(&spec(d, c, 3, 1e38, 0.0), &global).expect_err("diverges");
        assert!(matches!(err, TrainError::Diverged(_)), "{err}");
    }
}
