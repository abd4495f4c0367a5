//! Local training behind one trait, so that the sidecar's session logic does not know
//! which framework or device trains the model.
//!
//! Contract: a trainer receives the round's global parameters as a flat `f32` vector laid
//! out by the task's [`TensorLayout`] and returns the *full* locally trained parameters in
//! the same layout (not a delta), the number of samples it trained on (the FedAvg weight)
//! and metrics. Training is CPU-heavy and synchronous: callers run it on a blocking thread.

pub mod burn_logreg;

use std::fmt;

/// Architectures a client can train. Mirrors the wire `ModelSpec`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Architecture {
    /// logits = x · W + b; tensors "linear.weight" [input_dim, classes], "linear.bias" [classes].
    LogisticRegression { input_dim: usize, classes: usize },
}

/// One named tensor of the flat parameter vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Ordered tensors; the flat vector is their row-major concatenation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TensorLayout {
    pub tensors: Vec<TensorSpec>,
}

impl TensorLayout {
    pub fn total(&self) -> usize {
        self.tensors.iter().map(TensorSpec::numel).sum()
    }
}

impl fmt::Display for TensorLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.tensors.iter().map(|t| format!("{}{:?}", t.name, t.shape)).collect();
        write!(f, "{}", parts.join(", "))
    }
}

/// Local training hyperparameters of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalHyperparams {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    /// FedProx proximal weight μ; 0 is plain local SGD.
    pub proximal_mu: f64,
}

/// What to train in one task.
#[derive(Debug, Clone)]
pub struct TrainSpec {
    pub architecture: Architecture,
    pub layout: TensorLayout,
    pub hyper: LocalHyperparams,
    /// Seeds batch shuffling so that a round is reproducible.
    pub seed: u64,
}

/// Metrics of one local training task.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrainMetrics {
    /// Mean cross-entropy on the local training data under the received global model.
    pub loss_before: f64,
    /// Mean cross-entropy on the local training data after local training.
    pub loss_after: f64,
    /// Accuracy on the local training data after local training.
    pub accuracy_after: f64,
    pub train_seconds: f64,
}

/// Result of one local training task.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Full locally trained parameters, laid out like the input.
    pub params: Vec<f32>,
    /// Samples trained on: the FedAvg weight.
    pub samples: u64,
    pub metrics: TrainMetrics,
}

/// Local training could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("model {architecture:?} does not fit local data with {dim} features and {classes} classes")]
    DataMismatch { architecture: Architecture, dim: usize, classes: usize },
    #[error("task layout [{task}] differs from the model's layout [{model}]")]
    LayoutMismatch { task: String, model: String },
    #[error("received {got} parameters, layout needs {expected}")]
    ParamCount { got: usize, expected: usize },
    #[error("invalid hyperparameter: {0}")]
    Hyperparameter(String),
    #[error("training diverged: loss is {0}")]
    Diverged(f64),
}

/// Trains a model on the client's local data.
pub trait Trainer: Send {
    /// Trains from `global` (laid out by `spec.layout`) and returns the full local model.
    ///
    /// # Errors
    /// [`TrainError`] when the task does not fit the local data or training fails; no
    /// partial result is ever returned.
    fn train(&mut self, spec: &TrainSpec, global: &[f32]) -> Result<TrainOutcome, TrainError>;

    /// Mean loss and accuracy of `params` on the local data, without training.
    ///
    /// # Errors
    /// As for [`Trainer::train`].
    fn evaluate(&self, spec: &TrainSpec, params: &[f32]) -> Result<(f64, f64), TrainError>;

    /// Number of local training samples.
    fn samples(&self) -> u64;
}
