//! The burn trainer: one training loop for every [`Architecture`] (logistic regression, MLP,
//! CNN; the networks live in [`crate::models`]) on any burn device. (The module keeps its
//! historical name so that `trainer::burn_logreg::{BurnTrainer, logreg_layout}` keeps
//! working.)
//!
//! Contract (see [`super`]): parameters cross this module as flat `f32` vectors in the
//! task's canonical layout, which must equal `spec.architecture.layout()`. Loading them into
//! a network and flattening them back is bit-exact and checked tensor by tensor against the
//! layout ([`Network::load`], [`Network::flatten`]). The local dataset must fit the model:
//! `dim == architecture.input_dim()` and at most `architecture.classes()` classes (fewer is
//! fine: labels still index logits).
//!
//! Training is `epochs` passes of minibatch SGD (optionally with heavy-ball momentum, no
//! dampening) or Adam on mean softmax cross-entropy, batches shuffled by a ChaCha8 RNG seeded
//! from the task seed, so a round is reproducible bit for bit on the CPU backend (GPU kernels
//! may sum gradients in a nondeterministic order, e.g. the scatter-add behind the batch
//! gather's backward pass, so there only up to rounding). Optimizer state starts
//! fresh in every task: clients are stateless between rounds, and the coordinator only ever
//! sees parameters. With FedProx (`proximal_mu` = μ > 0) every batch loss gets
//! μ/2·‖w − w_global‖² over all parameters, which keeps a client on skewed data from drifting
//! far from the global model.
//!
//! Devices: burn 0.22 picks the backend from the [`Device`] at run time, so the code below is
//! the same for every [`DeviceChoice`]; the CPU tests exercise the GPU path too. The training
//! set is uploaded once per task and batches are gathered on the device; the loss is read back
//! once per epoch (for the divergence check), not per batch, so a GPU is not forced to
//! synchronise after every step. CUDA and wgpu exist only in builds with the client's `cuda`
//! / `wgpu` features; [`BurnTrainer::with_device`] opens the device and fails with a
//! [`DeviceError`] instead of panicking later in the middle of a round.
//!
//! Metrics ([`TrainingMetrics`], [`EvalOutcome`]) are evaluated without autodiff in chunks
//! sized by the model's activation memory, and the cross-entropy is accumulated in `f64` on
//! the host, so [`Trainer::evaluate`] of the returned parameters on the same device
//! reproduces `loss_after` exactly. A divergence (non-finite loss) is noticed at the end of
//! the epoch it happens in and is [`TrainError::Diverged`]; no partial result is returned.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;
use std::time::Instant;

use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use fedra_types::metrics::TrainingMetrics;
use fedra_types::model::{Architecture, TensorLayout};

use super::{EvalOutcome, Optimizer, TrainError, TrainOutcome, TrainSpec, Trainer};
use crate::data::Dataset;
use crate::models::{ModelError, Network, activation_floats_per_sample, read_f32};

/// At most this many rows per evaluation forward pass.
const EVAL_CHUNK_MAX: usize = 8192;
/// Activation floats one evaluation forward pass may use (64 MiB): a big CNN evaluates in
/// smaller chunks than a logistic regression.
const EVAL_ACTIVATION_BUDGET: usize = 1 << 24;

/// The flat layout of a logistic regression with `input_dim` features and `classes` classes.
pub fn logreg_layout(input_dim: usize, classes: usize) -> TensorLayout {
    Architecture::LogisticRegression { input_dim, classes }.layout()
}

/// Where a [`BurnTrainer`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// burn's flex backend on the CPU: always available.
    #[default]
    Cpu,
    /// The CUDA GPU with this index (client feature `cuda`).
    Cuda(usize),
    /// wgpu's default adapter (client feature `wgpu`).
    Wgpu,
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Cuda(index) => write!(f, "cuda:{index}"),
            DeviceChoice::Wgpu => write!(f, "wgpu"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;

    /// `cpu`, `cuda` (index 0), `cuda:N` or `wgpu`: the inverse of `Display`.
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            "wgpu" => Ok(DeviceChoice::Wgpu),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|index| index.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| DeviceError::Parse(s.to_owned())),
        }
    }
}

/// A device cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("device {device} needs fedra-client built with the `{feature}` feature")]
    NotCompiled { device: DeviceChoice, feature: &'static str },
    #[error("device {device} is unavailable: {reason}")]
    Unavailable { device: DeviceChoice, reason: String },
    #[error("unknown device {0:?}: expected cpu, cuda, cuda:N or wgpu")]
    Parse(String),
}

/// Trains any supported architecture on one client's local data, with an optional held-out
/// split for evaluation only.
#[derive(Debug, Clone)]
pub struct BurnTrainer {
    train: Dataset,
    holdout: Option<Dataset>,
    choice: DeviceChoice,
    /// The plain (no autodiff) device of `choice`; training adds autodiff on top.
    device: Device,
    /// The training data's statistics, computed once (the data never changes).
    reference: std::sync::Arc<std::sync::OnceLock<Option<fedra_types::drift::DataReference>>>,
}

impl BurnTrainer {
    /// A CPU trainer without a held-out split.
    pub fn new(train: Dataset) -> Self {
        Self::with_holdout(train, None)
    }

    /// A CPU trainer; `holdout` is only ever evaluated on, never trained on.
    pub fn with_holdout(train: Dataset, holdout: Option<Dataset>) -> Self {
        Self { train, holdout, choice: DeviceChoice::Cpu, device: Device::flex(), reference: Default::default() }
    }

    /// Moves training and evaluation to `choice`, after checking that the device opens and
    /// round-trips a tensor.
    ///
    /// # Errors
    /// [`DeviceError::NotCompiled`] for CUDA/wgpu in a build without the matching client
    /// feature, [`DeviceError::Unavailable`] when the device does not work on this machine.
    pub fn with_device(mut self, choice: DeviceChoice) -> Result<Self, DeviceError> {
        self.device = open_device(choice)?;
        self.choice = choice;
        Ok(self)
    }

    pub fn dataset(&self) -> &Dataset {
        &self.train
    }

    pub fn holdout(&self) -> Option<&Dataset> {
        self.holdout.as_ref()
    }

    pub fn device(&self) -> DeviceChoice {
        self.choice
    }

    /// Loads `params` on the plain device after checking the task against `data`.
    fn load_checked(&self, spec: &TrainSpec, params: &[f32], data: &Dataset) -> Result<Network, TrainError> {
        check_task(spec, params, data)?;
        Network::load(&spec.architecture, params, &self.device).map_err(model_error)
    }
}

impl Trainer for BurnTrainer {
    fn data_reference(&self) -> Option<fedra_types::drift::DataReference> {
        self.reference
            .get_or_init(|| {
                let d = &self.train;
                let mut r = fedra_types::drift::DataReference::new(d.dim, d.classes);
                for (row, &label) in d.features.chunks_exact(d.dim.max(1)).zip(&d.labels) {
                    r.add_row(row, Some(label as usize)).ok()?;
                }
                Some(r)
            })
            .clone()
    }

    fn train(&mut self, spec: &TrainSpec, global: &[f32]) -> Result<TrainOutcome, TrainError> {
        check_hyper(spec)?;
        let start_model = self.load_checked(spec, global, &self.train)?;
        let (loss_before, _) = evaluate_on(&start_model, &spec.architecture, &self.train, &self.device);
        drop(start_model);

        let started = Instant::now();
        let params = train_on(spec, global, &self.train, &self.device.clone().autodiff())?;
        let train_seconds = started.elapsed().as_secs_f64();

        // Metrics of exactly the returned parameters, as `evaluate` would compute them.
        let trained = Network::load(&spec.architecture, &params, &self.device).map_err(model_error)?;
        let (loss_after, accuracy_after) = evaluate_on(&trained, &spec.architecture, &self.train, &self.device);
        if !loss_after.is_finite() || params.iter().any(|v| !v.is_finite()) {
            return Err(TrainError::Diverged(loss_after));
        }
        Ok(TrainOutcome {
            params,
            samples: self.samples(),
            metrics: TrainingMetrics { loss_before, loss_after, accuracy_after, train_seconds },
        })
    }

    fn evaluate(&self, spec: &TrainSpec, params: &[f32]) -> Result<(f64, f64), TrainError> {
        let model = self.load_checked(spec, params, &self.train)?;
        Ok(evaluate_on(&model, &spec.architecture, &self.train, &self.device))
    }

    fn evaluate_holdout(&self, spec: &TrainSpec, params: &[f32]) -> Result<EvalOutcome, TrainError> {
        let holdout = self.holdout.as_ref().filter(|d| !d.is_empty()).ok_or(TrainError::NoHoldout)?;
        let model = self.load_checked(spec, params, holdout)?;
        let (loss, accuracy) = evaluate_on(&model, &spec.architecture, holdout, &self.device);
        Ok(EvalOutcome { loss, accuracy, samples: holdout.len() as u64 })
    }

    fn samples(&self) -> u64 {
        self.train.len() as u64
    }
}

/// Checks everything but the hyperparameters: the architecture, the task layout, the
/// parameter count and that `data` fits the model.
fn check_task(spec: &TrainSpec, params: &[f32], data: &Dataset) -> Result<(), TrainError> {
    let architecture = &spec.architecture;
    architecture.validate().map_err(|e| TrainError::Hyperparameter(format!("invalid model: {e}")))?;
    let layout = architecture.layout();
    if spec.layout != layout {
        return Err(TrainError::LayoutMismatch { task: spec.layout.to_string(), model: layout.to_string() });
    }
    if params.len() != layout.total() {
        return Err(TrainError::ParamCount { got: params.len(), expected: layout.total() });
    }
    if data.is_empty() || data.dim != architecture.input_dim() || data.classes > architecture.classes() {
        return Err(TrainError::DataMismatch {
            architecture: architecture.clone(),
            dim: data.dim,
            classes: data.classes,
        });
    }
    Ok(())
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
    if let Optimizer::Sgd { momentum } = h.optimizer
        && !(0.0..1.0).contains(&momentum)
    {
        return Err(TrainError::Hyperparameter(format!("momentum is {momentum}, need a value in [0, 1)")));
    }
    Ok(())
}

fn model_error(e: ModelError) -> TrainError {
    match e {
        ModelError::ParamCount { got, expected } => TrainError::ParamCount { got, expected },
        // The task layout was already checked against the architecture, so this is the
        // module disagreeing with the canonical layout: report both sides.
        ModelError::Layout { index, found, expected } => TrainError::LayoutMismatch {
            task: format!("tensor {index}: {expected}"),
            model: format!("tensor {index}: {found}"),
        },
        ModelError::Architecture(e) => TrainError::Hyperparameter(format!("invalid model: {e}")),
    }
}

/// A fresh optimizer for one task (see the module doc for the exact variants).
fn optimizer(choice: Optimizer) -> ModuleOptimizer {
    match choice {
        Optimizer::Sgd { momentum } if momentum > 0.0 => {
            // burn's momentum defaults to dampening 0.1; heavy-ball momentum has none.
            let momentum = MomentumConfig::new().with_momentum(momentum).with_dampening(0.0).with_nesterov(false);
            SgdConfig::new().with_momentum(Some(momentum)).init()
        }
        Optimizer::Sgd { .. } => SgdConfig::new().init(),
        // burn's Adam defaults to ε = 1e-5; the contract says 1e-8.
        Optimizer::Adam => AdamConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-8).init(),
    }
}

/// The training loop (task and hyperparameters already checked); `device` has autodiff.
/// Returns the trained parameters in the canonical layout.
fn train_on(spec: &TrainSpec, global: &[f32], data: &Dataset, device: &Device) -> Result<Vec<f32>, TrainError> {
    let architecture = &spec.architecture;
    let hyper = &spec.hyper;
    let layout = architecture.layout();
    let mut model = Network::load(architecture, global, device).map_err(model_error)?;
    let mut optim = optimizer(hyper.optimizer);
    let mu = hyper.proximal_mu;
    // FedProx anchors: constants (no gradient), in layout order like `Network::parameters`.
    let anchor: Option<Vec<Tensor<1>>> = (mu > 0.0).then(|| {
        let mut offset = 0;
        layout
            .tensors
            .iter()
            .map(|t| {
                let values = global[offset..offset + t.numel()].to_vec();
                offset += t.numel();
                Tensor::<1>::from_data(TensorData::new(values, [t.numel()]), device)
            })
            .collect()
    });

    let (n, dim) = (data.len(), data.dim);
    let batch = (hyper.batch_size as usize).min(n);
    let x_all = Tensor::<2>::from_data(TensorData::new(data.features.clone(), [n, dim]), device);
    let labels: Vec<i64> = data.labels.iter().map(|&l| i64::from(l)).collect();
    let y_all = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device);
    let mut order: Vec<i64> = (0..n as i64).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    for _ in 0..hyper.epochs {
        order.shuffle(&mut rng);
        let order_on_device = Tensor::<1, Int>::from_data(TensorData::new(order.clone(), [n]), device);
        let mut epoch_loss: Option<Tensor<1>> = None;
        for start in (0..n).step_by(batch) {
            let rows = batch.min(n - start);
            let idx = order_on_device.clone().narrow(0, start, rows);
            let x = x_all.clone().select(0, idx.clone());
            let y = y_all.clone().select(0, idx).reshape([rows, 1]);
            let mut loss = log_softmax(model.forward(x), 1).gather(1, y).mean().neg();
            if let Some(anchor) = &anchor {
                let dist = model
                    .parameters()
                    .into_iter()
                    .zip(anchor)
                    .map(|(w, w_global)| (w - w_global.clone()).square().sum())
                    .reduce(|a, b| a + b)
                    .expect("every architecture has parameters");
                loss = loss + dist.mul_scalar(mu / 2.0);
            }
            let detached = loss.clone().detach();
            epoch_loss = Some(match epoch_loss {
                Some(sum) => sum + detached,
                None => detached,
            });
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(hyper.learning_rate, model, grads);
        }
        // One read per epoch: a non-finite batch loss makes the sum non-finite, and NaN
        // parameters keep it so.
        if let Some(sum) = epoch_loss {
            let sum = read_f32(sum.into_data()).first().map_or(f64::NAN, |&v| f64::from(v));
            if !sum.is_finite() {
                return Err(TrainError::Diverged(sum));
            }
        }
    }
    model.flatten(&layout).map_err(model_error)
}

/// Mean cross-entropy and accuracy of `model` on `data` (plain device, no autodiff).
fn evaluate_on(model: &Network, architecture: &Architecture, data: &Dataset, device: &Device) -> (f64, f64) {
    let (n, dim, classes) = (data.len(), data.dim, architecture.classes());
    let chunk = (EVAL_ACTIVATION_BUDGET / activation_floats_per_sample(architecture).max(1)).clamp(1, EVAL_CHUNK_MAX);
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let x = TensorData::new(data.features[start * dim..end * dim].to_vec(), [end - start, dim]);
        let logits = read_f32(model.forward(Tensor::from_data(x, device)).into_data());
        for (row, &label) in logits.chunks_exact(classes).zip(&data.labels[start..end]) {
            let (loss, argmax) = cross_entropy_row(row, label as usize);
            loss_sum += loss;
            correct += usize::from(argmax == label as usize);
        }
    }
    (loss_sum / n as f64, correct as f64 / n as f64)
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

/// The plain device of `choice`, opened and checked with a small round trip.
pub fn open_device(choice: DeviceChoice) -> Result<Device, DeviceError> {
    let device = match choice {
        DeviceChoice::Cpu => Device::flex(),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(index) => Device::cuda(index),
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => return Err(DeviceError::NotCompiled { device: choice, feature: "cuda" }),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(not(feature = "wgpu"))]
        DeviceChoice::Wgpu => return Err(DeviceError::NotCompiled { device: choice, feature: "wgpu" }),
    };
    // burn opens devices lazily and reports failures (no driver, bad index) by panicking on
    // first use; do that use here, where it can become an error.
    let probe = [1.5f32, -0.0, 3.0e-3];
    let back = catch_unwind(AssertUnwindSafe(|| {
        let tensor = Tensor::<1>::from_data(TensorData::new(probe.to_vec(), [probe.len()]), &device);
        read_f32(tensor.into_data())
    }));
    match back {
        Ok(values) if values.iter().map(|v| v.to_bits()).eq(probe.iter().map(|v| v.to_bits())) => Ok(device),
        Ok(values) => Err(DeviceError::Unavailable {
            device: choice,
            reason: format!("a tensor round trip returned {values:?} instead of {probe:?}"),
        }),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the backend panicked while opening it".to_owned());
            Err(DeviceError::Unavailable { device: choice, reason })
        }
    }
}

#[cfg(test)]
mod tests;
