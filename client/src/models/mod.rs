//! Burn networks for every [`Architecture`] fedra trains, built so that burn's own
//! parameter paths *are* the canonical tensor names of the flat layout
//! ([`Architecture::layout`]): `linear.*`, `hidden.{i}.*`, `conv.{i}.*`, `dense.{j}.*`,
//! `output.*`.
//!
//! Contract: [`Network::load`] turns a flat vector in the canonical layout into a module on
//! any burn device, and [`Network::flatten`] turns a module back into that vector; with no
//! training in between the round trip is bit-exact (the coordinator averages full models and
//! relies on untouched parameters coming back unchanged). Both walks check every parameter's
//! path, shape and position against the layout (module `flat`), so a change in burn's naming or a
//! mistake here fails loudly with [`ModelError::Layout`] instead of silently permuting
//! weights.
//!
//! Why the layout maps onto burn without transposes: burn's `nn::Linear` stores its weight
//! `[d_input, d_output]` (logits = x·W + b), which is the layout's dense convention, and
//! `nn::conv::Conv2d` stores `[out, in, kh, kw]` and computes a cross-correlation, exactly
//! PyTorch's `nn.Conv2d`, which is the layout's conv convention. Linear layers are built with
//! `LinearLayout::Row` explicitly: the `Col` layout would transpose on load.
//!
//! Semantics (documented in `fedra_types::model`): conv layers are stride 1, zero padding
//! k/2 on every side ("same" for the odd kernels validation allows), then ReLU, then a 2×2
//! max-pool with stride 2 rounding down; the result is flattened in C, H, W order; hidden
//! dense layers use ReLU; the last layer (`output`, or `linear` for logistic regression)
//! gives logits. Inputs are rows of `input_dim` values; a CNN row is C·H·W values in C, H, W
//! order.

mod cnn;
mod dense;
mod flat;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

pub use cnn::Cnn;
pub use dense::{LogisticRegression, Mlp};
pub(crate) use flat::read_f32;

use fedra_types::model::{Architecture, ArchitectureError, TensorLayout};

/// A parameter vector does not fit a network.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("received {got} parameters, layout needs {expected}")]
    ParamCount { got: usize, expected: usize },
    /// The module's parameters are not the layout's tensors: a bug in this module or a change
    /// in burn's naming, never bad input.
    #[error("module parameter {index} is {found}, the layout says {expected}")]
    Layout { index: usize, found: String, expected: String },
    #[error("invalid model: {0}")]
    Architecture(#[from] ArchitectureError),
}

/// One network of any supported architecture. Enum variants add no component to parameter
/// paths (see module `flat`), so a variant's paths are those of the struct inside.
#[derive(Module, Debug)]
pub enum Network {
    LogisticRegression(LogisticRegression),
    Mlp(Mlp),
    Cnn(Cnn),
}

impl Network {
    /// Builds the network of `architecture` on `device` with the parameters in `flat`
    /// (canonical layout). On an autodiff device the parameters require gradients.
    ///
    /// # Errors
    /// [`ModelError::Architecture`] for an invalid architecture, [`ModelError::ParamCount`]
    /// when `flat` has the wrong length, [`ModelError::Layout`] if the module does not match
    /// the layout (a bug).
    pub fn load(architecture: &Architecture, flat: &[f32], device: &Device) -> Result<Self, ModelError> {
        architecture.validate()?;
        let layout = architecture.layout();
        if flat.len() != layout.total() {
            return Err(ModelError::ParamCount { got: flat.len(), expected: layout.total() });
        }
        // Burn's layers initialise lazily, so the skeleton allocates nothing: the loader
        // replaces every parameter before anything reads it.
        let skeleton = match architecture {
            Architecture::LogisticRegression { input_dim, classes } => {
                Network::LogisticRegression(LogisticRegression::new(*input_dim, *classes, device))
            }
            Architecture::Mlp { input_dim, hidden, classes } => {
                Network::Mlp(Mlp::new(*input_dim, hidden, *classes, device))
            }
            Architecture::Cnn { .. } => Network::Cnn(Cnn::new(architecture, device)),
        };
        let mut loader = flat::Loader::new(&layout, flat);
        let network = skeleton.map(&mut loader);
        loader.finish()?;
        Ok(network)
    }

    /// The parameters as a flat vector in `layout` order (host copy).
    ///
    /// # Errors
    /// [`ModelError::Layout`] if the module's parameters are not `layout`'s tensors.
    pub fn flatten(&self, layout: &TensorLayout) -> Result<Vec<f32>, ModelError> {
        let mut flattener = flat::Flattener::new(layout);
        self.visit(&mut flattener);
        flattener.finish()
    }

    /// Every parameter as a rank-1 tensor in layout order (for a module built by
    /// [`Network::load`]); on an autodiff device they are part of the graph, which is what
    /// the FedProx term needs.
    pub fn parameters(&self) -> Vec<Tensor<1>> {
        let mut collector = flat::ParamCollector::default();
        self.visit(&mut collector);
        collector.tensors
    }

    /// Logits `[batch, classes]` for input rows `[batch, input_dim]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Network::LogisticRegression(m) => m.forward(x),
            Network::Mlp(m) => m.forward(x),
            Network::Cnn(m) => m.forward(x),
        }
    }
}

/// Floats of activations one sample needs in a forward pass (all layers' outputs summed, a
/// deliberate over-estimate): sizes evaluation chunks so that a large CNN does not allocate
/// gigabytes of feature maps.
pub fn activation_floats_per_sample(architecture: &Architecture) -> usize {
    match architecture {
        Architecture::LogisticRegression { input_dim, classes } => input_dim + classes,
        Architecture::Mlp { input_dim, hidden, classes } => input_dim + hidden.iter().sum::<usize>() + classes,
        Architecture::Cnn { height, width, channels, conv, dense, classes } => {
            let (mut h, mut w) = (*height, *width);
            let mut total = channels * h * w;
            for layer in conv {
                // Conv output and its ReLU at full size, then the pooled map.
                total += 2 * layer.filters * h * w;
                (h, w) = (h / 2, w / 2);
                total += layer.filters * h * w;
            }
            total + dense.iter().sum::<usize>() + classes
        }
    }
}

#[cfg(test)]
mod tests;
