//! Model architectures, the meaning of a flat parameter vector, and validated model
//! specs: the contract both the coordinator (which initialises, averages and publishes
//! parameters) and the clients (which load them into real networks) must agree on. It is
//! part of the wire format — a `ParamChunk` stream is only meaningful with a layout — but
//! holds no wire code: `fedra_proto::model_wire` converts these types to protobuf.
//!
//! Layouts (row-major, concatenated in this order):
//!
//! | architecture | tensors |
//! |---|---|
//! | logistic regression | `linear.weight` [input_dim, classes], `linear.bias` [classes] |
//! | MLP | `hidden.{i}.weight` [d_i, d_{i+1}], `hidden.{i}.bias` [d_{i+1}] for each hidden layer, then `output.weight` [d_last, classes], `output.bias` [classes] |
//! | CNN | `conv.{i}.weight` [filters_i, in_channels_i, k, k], `conv.{i}.bias` [filters_i], then `dense.{j}.*` and `output.*` as for the MLP |
//!
//! Dense weights are stored `[in, out]` (logits = x·W + b), i.e. the transpose of
//! PyTorch's `nn.Linear.weight`; conv weights are `[out, in, kh, kw]`, exactly PyTorch's
//! `nn.Conv2d.weight`. A CNN's conv layer is: conv (stride 1, "same" padding k/2) → ReLU →
//! 2×2 max-pool (stride 2, floor); its output is flattened in C, H, W order (PyTorch's
//! `x.flatten(1)` on NCHW) before the dense layers. Hidden dense layers use ReLU.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};
use serde::{Deserialize, Serialize};

/// Bounds that keep a typo from allocating the machine away.
pub const MAX_LAYER_WIDTH: usize = 1 << 20;
pub const MAX_LAYERS: usize = 64;
pub const MAX_KERNEL: usize = 15;
/// Largest model accepted, in parameters (16 GiB of f32).
pub const MAX_PARAMETERS: usize = 1 << 32;

/// An architecture is invalid; the message names the field (relative to `model.`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchitectureError {
    #[error("model.{field} must be in {min}..={max}, got {got}")]
    Range { field: String, min: usize, max: usize, got: usize },
    #[error("model.{field}: kernel size {got} must be odd (\"same\" padding)")]
    EvenKernel { field: String, got: usize },
    #[error("model.conv: after {layers} conv+pool layers a {height}x{width} input has no pixels left")]
    TooManyPools { layers: usize, height: usize, width: usize },
    #[error("model has {0} parameters, more than the supported {MAX_PARAMETERS}")]
    TooLarge(usize),
}

/// One convolutional layer of a [`Architecture::Cnn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvLayer {
    pub filters: usize,
    pub kernel: usize,
}

/// Network architectures fedra trains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Architecture {
    /// logits = x · W + b.
    LogisticRegression { input_dim: usize, classes: usize },
    /// Dense layers with ReLU between them.
    Mlp { input_dim: usize, hidden: Vec<usize>, classes: usize },
    /// Conv(+ReLU+2x2 max-pool) layers, then dense layers, on `channels × height × width`
    /// inputs given as flat rows in C, H, W order.
    Cnn { height: usize, width: usize, channels: usize, conv: Vec<ConvLayer>, dense: Vec<usize>, classes: usize },
}

/// One named tensor of the flat parameter vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, shape: Vec<usize>) -> Self {
        Self { name: name.into(), shape }
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Ordered tensors; the flat vector is their row-major concatenation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TensorLayout {
    pub tensors: Vec<TensorSpec>,
}

impl TensorLayout {
    pub fn total(&self) -> usize {
        self.tensors.iter().map(TensorSpec::numel).sum()
    }
}

impl std::fmt::Display for TensorLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.tensors.iter().map(|t| format!("{}{:?}", t.name, t.shape)).collect();
        write!(f, "{}", parts.join(", "))
    }
}

fn range(field: impl Into<String>, got: usize, min: usize, max: usize) -> Result<(), ArchitectureError> {
    if (min..=max).contains(&got) {
        Ok(())
    } else {
        Err(ArchitectureError::Range { field: field.into(), min, max, got })
    }
}

fn dense_stack(layout: &mut Vec<TensorSpec>, prefix: &str, mut width: usize, hidden: &[usize], classes: usize) {
    for (i, h) in hidden.iter().enumerate() {
        layout.push(TensorSpec::new(format!("{prefix}.{i}.weight"), vec![width, *h]));
        layout.push(TensorSpec::new(format!("{prefix}.{i}.bias"), vec![*h]));
        width = *h;
    }
    layout.push(TensorSpec::new("output.weight", vec![width, classes]));
    layout.push(TensorSpec::new("output.bias", vec![classes]));
}

impl Architecture {
    /// Checks every dimension, naming the first bad field.
    ///
    /// # Errors
    /// [`ArchitectureError`].
    pub fn validate(&self) -> Result<(), ArchitectureError> {
        let w = MAX_LAYER_WIDTH;
        match self {
            Architecture::LogisticRegression { input_dim, classes } => {
                range("input_dim", *input_dim, 1, w)?;
                range("classes", *classes, 2, w)?;
            }
            Architecture::Mlp { input_dim, hidden, classes } => {
                range("input_dim", *input_dim, 1, w)?;
                range("classes", *classes, 2, w)?;
                range("hidden (number of layers)", hidden.len(), 0, MAX_LAYERS)?;
                for (i, h) in hidden.iter().enumerate() {
                    range(format!("hidden[{i}]"), *h, 1, w)?;
                }
            }
            Architecture::Cnn { height, width, channels, conv, dense, classes } => {
                range("height", *height, 1, 4096)?;
                range("width", *width, 1, 4096)?;
                range("channels", *channels, 1, 4096)?;
                range("classes", *classes, 2, w)?;
                range("conv (number of layers)", conv.len(), 1, MAX_LAYERS)?;
                range("dense (number of layers)", dense.len(), 0, MAX_LAYERS)?;
                for (i, c) in conv.iter().enumerate() {
                    range(format!("conv[{i}].filters"), c.filters, 1, 4096)?;
                    range(format!("conv[{i}].kernel"), c.kernel, 1, MAX_KERNEL)?;
                    if c.kernel % 2 == 0 {
                        return Err(ArchitectureError::EvenKernel {
                            field: format!("conv[{i}].kernel"),
                            got: c.kernel,
                        });
                    }
                }
                for (i, h) in dense.iter().enumerate() {
                    range(format!("dense[{i}]"), *h, 1, w)?;
                }
                let (h, wd) = self.conv_output_hw();
                if h == 0 || wd == 0 {
                    return Err(ArchitectureError::TooManyPools { layers: conv.len(), height: *height, width: *width });
                }
            }
        }
        let total = self.layout().total();
        if total > MAX_PARAMETERS {
            return Err(ArchitectureError::TooLarge(total));
        }
        Ok(())
    }

    /// Spatial size after the conv stack (each layer halves it, rounding down).
    pub fn conv_output_hw(&self) -> (usize, usize) {
        match self {
            Architecture::Cnn { height, width, conv, .. } => (height >> conv.len(), width >> conv.len()),
            _ => (0, 0),
        }
    }

    /// Features per input sample.
    pub fn input_dim(&self) -> usize {
        match self {
            Architecture::LogisticRegression { input_dim, .. } | Architecture::Mlp { input_dim, .. } => *input_dim,
            Architecture::Cnn { height, width, channels, .. } => height * width * channels,
        }
    }

    pub fn classes(&self) -> usize {
        match self {
            Architecture::LogisticRegression { classes, .. }
            | Architecture::Mlp { classes, .. }
            | Architecture::Cnn { classes, .. } => *classes,
        }
    }

    /// The documented layout (see the module table).
    pub fn layout(&self) -> TensorLayout {
        let mut t = Vec::new();
        match self {
            Architecture::LogisticRegression { input_dim, classes } => {
                t.push(TensorSpec::new("linear.weight", vec![*input_dim, *classes]));
                t.push(TensorSpec::new("linear.bias", vec![*classes]));
            }
            Architecture::Mlp { input_dim, hidden, classes } => {
                dense_stack(&mut t, "hidden", *input_dim, hidden, *classes)
            }
            Architecture::Cnn { channels, conv, dense, classes, .. } => {
                let mut c_in = *channels;
                for (i, c) in conv.iter().enumerate() {
                    t.push(TensorSpec::new(format!("conv.{i}.weight"), vec![c.filters, c_in, c.kernel, c.kernel]));
                    t.push(TensorSpec::new(format!("conv.{i}.bias"), vec![c.filters]));
                    c_in = c.filters;
                }
                let (h, w) = self.conv_output_hw();
                dense_stack(&mut t, "dense", c_in * h * w, dense, *classes);
            }
        }
        TensorLayout { tensors: t }
    }
}

/// A model specification was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("model.name {0:?} must be 1..=64 chars of letters, digits, '.', '_' or '-'")]
    Name(String),
    #[error(transparent)]
    Architecture(#[from] ArchitectureError),
    #[error("model architecture is missing")]
    MissingArchitecture,
}

/// A validated model spec: a name (checkpoints are listed per name) and an architecture
/// whose every dimension is in range. Only [`ModelSpec::new`] builds one; the coordinator
/// does so when it admits a plan. The `fedra` CLI's plan file carries the `[model]` table
/// as written and leaves judging it to the coordinator, so a bad model is refused in one
/// place, with one message.
///
/// The serde form (`{"name": .., "architecture": {"kind": ..}}`) is stored in run plans
/// and checkpoint manifests; deserializing does not re-validate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    name: String,
    architecture: Architecture,
}

impl ModelSpec {
    /// # Errors
    /// [`ModelError`] naming the bad field.
    pub fn new(name: impl Into<String>, architecture: Architecture) -> Result<Self, ModelError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && !name.starts_with('.');
        if !ok {
            return Err(ModelError::Name(name));
        }
        architecture.validate()?;
        Ok(Self { name, architecture })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// The documented tensor layout of this architecture.
    pub fn layout(&self) -> TensorLayout {
        self.architecture.layout()
    }

    /// A fresh, seeded initialisation: weights uniform in ±sqrt(6 / (fan_in + fan_out))
    /// (Glorot), biases zero. The same seed always gives the same model, so runs are
    /// reproducible. Fans: dense `[in, out]`; conv `[out, in, k, k]` has fan_in = in·k²,
    /// fan_out = out·k².
    pub fn initialise(&self, seed: u64) -> Vec<f32> {
        let layout = self.layout();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(layout.total());
        for t in &layout.tensors {
            let n = t.numel();
            let (fan_in, fan_out) = match t.shape.as_slice() {
                [i, o] => (*i, *o),
                [o, i, kh, kw] => (i * kh * kw, o * kh * kw),
                _ => {
                    out.extend(std::iter::repeat_n(0.0f32, n));
                    continue;
                }
            };
            let a = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            let dist = Uniform::new_inclusive(-a, a).expect("finite, ordered bounds");
            out.extend((0..n).map(|_| dist.sample(&mut rng)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_follow_the_documented_names() {
        let mlp = Architecture::Mlp { input_dim: 784, hidden: vec![200, 200], classes: 10 };
        mlp.validate().unwrap();
        let names: Vec<_> = mlp.layout().tensors.iter().map(|t| t.name.clone()).collect();
        assert_eq!(
            names,
            ["hidden.0.weight", "hidden.0.bias", "hidden.1.weight", "hidden.1.bias", "output.weight", "output.bias"]
        );
        // The classic 2NN: 199,210 parameters.
        assert_eq!(mlp.layout().total(), 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10);

        // The classic FedAvg CNN for 28x28: 5x5x32, 5x5x64, 512 dense.
        let cnn = Architecture::Cnn {
            height: 28,
            width: 28,
            channels: 1,
            conv: vec![ConvLayer { filters: 32, kernel: 5 }, ConvLayer { filters: 64, kernel: 5 }],
            dense: vec![512],
            classes: 10,
        };
        cnn.validate().unwrap();
        let l = cnn.layout();
        assert_eq!(l.tensors[0], TensorSpec::new("conv.0.weight", vec![32, 1, 5, 5]));
        assert_eq!(l.tensors[2], TensorSpec::new("conv.1.weight", vec![64, 32, 5, 5]));
        assert_eq!(l.tensors[4], TensorSpec::new("dense.0.weight", vec![7 * 7 * 64, 512]));
        assert_eq!(l.total(), 1_663_370);
        assert_eq!(cnn.input_dim(), 784);
    }

    #[test]
    fn invalid_architectures_name_the_field() {
        let e = Architecture::Mlp { input_dim: 4, hidden: vec![8, 0], classes: 3 }.validate().unwrap_err();
        assert_eq!(e.to_string(), "model.hidden[1] must be in 1..=1048576, got 0");
        let cnn = |conv: Vec<ConvLayer>| Architecture::Cnn {
            height: 8,
            width: 8,
            channels: 1,
            conv,
            dense: vec![],
            classes: 10,
        };
        let e = cnn(vec![ConvLayer { filters: 4, kernel: 4 }]).validate().unwrap_err();
        assert!(e.to_string().contains("conv[0].kernel"), "{e}");
        let four = vec![ConvLayer { filters: 4, kernel: 3 }; 4];
        assert!(matches!(cnn(four).validate(), Err(ArchitectureError::TooManyPools { .. })));
        let e = Architecture::LogisticRegression { input_dim: 3, classes: 1 }.validate().unwrap_err();
        assert_eq!(e.to_string(), "model.classes must be in 2..=1048576, got 1");
    }

    #[test]
    fn logistic_regression_layout_and_init() {
        let spec = ModelSpec::new("lr", Architecture::LogisticRegression { input_dim: 60, classes: 10 }).unwrap();
        assert_eq!(spec.layout().total(), 610);
        let a = spec.initialise(7);
        assert_eq!(a.len(), 610);
        assert_eq!(a, spec.initialise(7));
        assert_ne!(a, spec.initialise(8));
        assert!(a[600..].iter().all(|b| *b == 0.0));
    }

    #[test]
    fn cnn_init_bounds_follow_fans() {
        let spec = ModelSpec::new(
            "cnn",
            Architecture::Cnn {
                height: 8,
                width: 8,
                channels: 1,
                conv: vec![ConvLayer { filters: 4, kernel: 3 }],
                dense: vec![],
                classes: 10,
            },
        )
        .unwrap();
        let p = spec.initialise(1);
        let bound = (6.0f32 / (9.0 + 36.0)).sqrt();
        assert!(p[..36].iter().all(|v| v.abs() <= bound) && p[..36].iter().any(|v| *v != 0.0));
        assert!(p[36..40].iter().all(|v| *v == 0.0), "conv bias starts at zero");
    }

    #[test]
    fn bad_specs_name_the_field() {
        let e = ModelSpec::new("lr", Architecture::LogisticRegression { input_dim: 0, classes: 10 }).unwrap_err();
        assert_eq!(e.to_string(), "model.input_dim must be in 1..=1048576, got 0");
        assert!(ModelSpec::new("a b", Architecture::LogisticRegression { input_dim: 3, classes: 2 }).is_err());
    }
}
