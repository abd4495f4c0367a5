//! Fully connected networks: logistic regression (one `Linear` named `linear`) and the MLP
//! (`hidden.{i}` with ReLU, then `output`). Field names are the layout's tensor prefixes.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, LinearLayout};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// A `[d_input, d_output]` linear layer whose parameters are created lazily (never, when a
/// loader replaces them first). Row layout keeps the weight as stored, without transposes.
pub(super) fn linear(d_input: usize, d_output: usize, device: &Device) -> Linear {
    LinearConfig::new(d_input, d_output).with_layout(LinearLayout::Row).init(device)
}

/// Dense layers `d_0 → d_1 → … → d_last` (empty when `widths` is empty).
pub(super) fn stack(input_dim: usize, widths: &[usize], device: &Device) -> Vec<Linear> {
    let mut d_in = input_dim;
    widths
        .iter()
        .map(|&d_out| {
            let layer = linear(d_in, d_out, device);
            d_in = d_out;
            layer
        })
        .collect()
}

/// logits = x·W + b: parameters `linear.weight` `[input_dim, classes]`, `linear.bias`.
#[derive(Module, Debug)]
pub struct LogisticRegression {
    linear: Linear,
}

impl LogisticRegression {
    pub(super) fn new(input_dim: usize, classes: usize, device: &Device) -> Self {
        Self { linear: linear(input_dim, classes, device) }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear.forward(x)
    }
}

/// Hidden dense layers with ReLU, then the `output` layer.
#[derive(Module, Debug)]
pub struct Mlp {
    hidden: Vec<Linear>,
    output: Linear,
}

impl Mlp {
    pub(super) fn new(input_dim: usize, hidden: &[usize], classes: usize, device: &Device) -> Self {
        let last = hidden.last().copied().unwrap_or(input_dim);
        Self { hidden: stack(input_dim, hidden, device), output: linear(last, classes, device) }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.hidden.iter().fold(x, |x, layer| relu(layer.forward(x)));
        self.output.forward(x)
    }
}
