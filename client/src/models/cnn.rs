//! The CNN: `conv.{i}` (conv stride 1, zero padding k/2 → ReLU → 2×2 max-pool stride 2,
//! floor), flatten in C, H, W order, `dense.{j}` with ReLU, then `output`.

use burn::module::Module;
use burn::nn::Linear;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::dense::{linear, stack};
use fedra_types::model::Architecture;

/// Conv stack plus dense head; see the module doc for the exact semantics.
#[derive(Module, Debug)]
pub struct Cnn {
    conv: Vec<Conv2d>,
    /// Parameterless; shared by every conv layer.
    pool: MaxPool2d,
    dense: Vec<Linear>,
    output: Linear,
    /// `[channels, height, width]` of one input row.
    #[module(skip)]
    input: [usize; 3],
}

impl Cnn {
    /// # Panics
    /// If `architecture` is not a CNN (the caller matched on it).
    pub(super) fn new(architecture: &Architecture, device: &Device) -> Self {
        let Architecture::Cnn { height, width, channels, conv, dense, classes } = architecture else {
            panic!("Cnn::new called with {architecture:?}");
        };
        let mut c_in = *channels;
        let conv = conv
            .iter()
            .map(|layer| {
                let p = layer.kernel / 2;
                let conv = Conv2dConfig::new([c_in, layer.filters], [layer.kernel, layer.kernel])
                    .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                    .init(device);
                c_in = layer.filters;
                conv
            })
            .collect();
        let (h, w) = architecture.conv_output_hw();
        let flat = c_in * h * w;
        let last = dense.last().copied().unwrap_or(flat);
        Self {
            conv,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            dense: stack(flat, dense, device),
            output: linear(last, *classes, device),
            input: [*channels, *height, *width],
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [batch, _] = x.dims();
        let [c, h, w] = self.input;
        let x: Tensor<4> = x.reshape([batch, c, h, w]);
        // ReLU after the pool: max and ReLU commute (ReLU is monotone), so the values and the
        // gradients are those of ReLU-then-pool, but the ReLU touches a quarter of the map.
        let x = self.conv.iter().fold(x, |x, conv| relu(self.pool.forward(conv.forward(x))));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = self.dense.iter().fold(x, |x, layer| relu(layer.forward(x)));
        self.output.forward(x)
    }
}
