//! Unit tests of the burn networks, kept in their own file because the hand-computed
//! forward passes they check are long; they pin the layout semantics of `fedra_types::model`.

use burn::tensor::{Device, Tensor, TensorData};

use super::{ModelError, Network, activation_floats_per_sample, read_f32};
use fedra_types::model::{Architecture, ConvLayer, TensorSpec};

fn forward(network: &Network, rows: Vec<f32>, dim: usize) -> Vec<f32> {
    let device = Device::flex();
    let n = rows.len() / dim;
    read_f32(network.forward(Tensor::from_data(TensorData::new(rows, [n, dim]), &device)).into_data())
}

/// Conv weights are `[out, in, kh, kw]` and cross-correlate with zero padding k/2 (PyTorch's
/// convention); ReLU then a floor 2x2 max-pool; flattening is C, H, W.
#[test]
fn cnn_forward_matches_a_hand_computed_case() {
    let architecture = Architecture::Cnn {
        height: 4,
        width: 4,
        channels: 2,
        conv: vec![ConvLayer { filters: 2, kernel: 3 }],
        dense: vec![],
        classes: 2,
    };
    let layout = architecture.layout();
    assert_eq!(layout.tensors[2], TensorSpec::new("output.weight", vec![8, 2]));
    let mut flat = vec![0.0f32; layout.total()];
    // conv.0.weight [2, 2, 3, 3]: filter 0 reads input channel 0 at kernel (0, 0), i.e.
    // out[i][j] = x0[i-1][j-1]; filter 1 reads channel 1 at the centre (identity).
    flat[0] = 1.0;
    flat[((2 + 1) * 3 + 1) * 3 + 1] = 1.0;
    // conv.0.bias [2] at 36..38: -2 (makes ReLU bite) and -100.
    flat[36] = -2.0;
    flat[37] = -100.0;
    // output.weight [8, 2] at 38..54: logit 0 = feature 1, logit 1 = feature 4.
    flat[38 + 2] = 1.0;
    flat[38 + 4 * 2 + 1] = 1.0;
    // output.bias [2] at 54..56.
    flat[55] = 0.5;
    let network = Network::load(&architecture, &flat, &Device::flex()).expect("loads");

    // Channel 0 is 1..=16 row-major, channel 1 is 101..=116.
    let row: Vec<f32> = (1..=16).chain(101..=116).map(|v| v as f32).collect();
    // Filter 0 after bias and ReLU, pooled: [[0, 1], [7, 9]]; filter 1: [[6, 8], [14, 16]].
    // Flattened C, H, W: [0, 1, 7, 9, 6, 8, 14, 16]: feature 1 = 1, feature 4 = 6.
    assert_eq!(forward(&network, row, 32), vec![1.0, 6.5]);
}

#[test]
fn mlp_forward_applies_relu_between_layers_only() {
    let architecture = Architecture::Mlp { input_dim: 2, hidden: vec![2], classes: 2 };
    // hidden.0: h = relu(x·I + [0, -10]); output: logits = h·[[1, 0], [0, 1]] + [-1, -1].
    let flat = [1.0, 0.0, 0.0, 1.0, 0.0, -10.0, 1.0, 0.0, 0.0, 1.0, -1.0, -1.0];
    let network = Network::load(&architecture, &flat, &Device::flex()).expect("loads");
    // x = [3, 4]: h = [3, 0] (ReLU clips -6); logits = [2, -1] (no ReLU on the output).
    assert_eq!(forward(&network, vec![3.0, 4.0], 2), vec![2.0, -1.0]);
}

#[test]
fn walks_check_the_layout() {
    let architecture = Architecture::Mlp { input_dim: 3, hidden: vec![4], classes: 2 };
    let layout = architecture.layout();
    let network = Network::load(&architecture, &vec![0.5; layout.total()], &Device::flex()).expect("loads");

    let mut reordered = layout.clone();
    reordered.tensors.swap(0, 1);
    let err = network.flatten(&reordered).expect_err("order is checked");
    assert_eq!(
        err,
        ModelError::Layout {
            index: 0,
            found: "hidden.0.weight[3, 4]".to_owned(),
            expected: "hidden.0.bias[4]".to_owned()
        }
    );

    let mut longer = layout.clone();
    longer.tensors.push(TensorSpec::new("extra", vec![1]));
    assert!(matches!(network.flatten(&longer), Err(ModelError::Layout { index: 4, .. })));
    let mut shorter = layout;
    shorter.tensors.pop();
    assert!(matches!(network.flatten(&shorter), Err(ModelError::Layout { index: 3, .. })));
}

#[test]
fn load_rejects_bad_input() {
    let architecture = Architecture::LogisticRegression { input_dim: 3, classes: 2 };
    let err = Network::load(&architecture, &[0.0; 7], &Device::flex()).expect_err("short");
    assert_eq!(err, ModelError::ParamCount { got: 7, expected: 8 });
    let even = Architecture::Cnn {
        height: 4,
        width: 4,
        channels: 1,
        conv: vec![ConvLayer { filters: 1, kernel: 2 }],
        dense: vec![],
        classes: 2,
    };
    let total = even.layout().total();
    assert!(matches!(Network::load(&even, &vec![0.0; total], &Device::flex()), Err(ModelError::Architecture(_))));
}

#[test]
fn activation_estimate_counts_conv_maps() {
    let cnn = Architecture::Cnn {
        height: 8,
        width: 8,
        channels: 1,
        conv: vec![ConvLayer { filters: 4, kernel: 3 }],
        dense: vec![16],
        classes: 10,
    };
    // Input 64, conv+ReLU 2·4·64, pooled 4·16, dense 16, logits 10.
    assert_eq!(activation_floats_per_sample(&cnn), 64 + 512 + 64 + 16 + 10);
}
