//! Local training behind one trait, so that the sidecar's session logic does not know
//! which framework or device trains the model.
//!
//! Contract: a trainer receives the round's global parameters as a flat `f32` vector laid
//! out by the task's [`TensorLayout`] and returns the *full* locally trained parameters in
//! the same layout (not a delta), the number of samples it trained on (the FedAvg weight)
//! and metrics. Training is CPU-heavy and synchronous: callers run it on a blocking thread.

pub mod burn_logreg;

use fedra_types::metrics::TrainingMetrics;
use fedra_types::model::{Architecture, TensorLayout};

/// Local optimizer of one task, as the trainer runs it.
///
/// Not `fedra_types::plan::Optimizer`: the plan (and the wire) name the optimizer and carry
/// `momentum` beside it for every optimizer; the sidecar's conversion resolves the two into
/// this form, where momentum exists only for SGD, so a trainer cannot misread it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// SGD, with heavy-ball momentum when `momentum > 0`.
    Sgd { momentum: f64 },
    /// Adam with the usual defaults (β1 0.9, β2 0.999, ε 1e-8).
    Adam,
}

/// Local training hyperparameters of one task: the plan's `fedra_types::plan::LocalTraining`
/// with its optimizer and momentum resolved into [`Optimizer`].
#[derive(Debug, Clone, PartialEq)]
pub struct LocalHyperparams {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub optimizer: Optimizer,
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

/// Result of one local training task.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Full locally trained parameters, laid out like the input.
    pub params: Vec<f32>,
    /// Samples trained on: the FedAvg weight.
    pub samples: u64,
    pub metrics: TrainingMetrics,
}

/// Result of evaluating a model on local held-out data.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvalOutcome {
    /// Mean cross-entropy.
    pub loss: f64,
    pub accuracy: f64,
    /// Held-out samples evaluated: the weight of this result in the round's mean.
    pub samples: u64,
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
    #[error("this client has no held-out split to evaluate on")]
    NoHoldout,
    #[error("training interrupted: {0}")]
    Interrupted(String),
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

    /// Loss and accuracy of `params` on the client's held-out split (never trained on).
    ///
    /// # Errors
    /// [`TrainError::NoHoldout`] when the client has none; otherwise as [`Trainer::train`].
    fn evaluate_holdout(&self, spec: &TrainSpec, params: &[f32]) -> Result<EvalOutcome, TrainError>;

    /// Number of local training samples.
    fn samples(&self) -> u64;

    /// Called before each task with its run and round (for logging and simulations).
    fn begin_task(&mut self, _run: &str, _round: u32) {}

    /// Aggregate statistics of the local training inputs and labels (never rows), sent
    /// with non-private updates as the drift reference's share of this client; `None`
    /// when the trainer has none to give.
    fn data_reference(&self) -> Option<fedra_types::drift::DataReference> {
        None
    }
}
