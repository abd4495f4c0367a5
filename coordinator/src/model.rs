//! Model specifications as the coordinator sees them: a name (checkpoints are listed per
//! name) and a validated architecture whose flat parameter layout is the shared wire
//! contract in [`fedra_proto::model`]. The coordinator never runs a model; clients build
//! the real network from the same spec and refuse a task whose layout differs from theirs.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};
use serde::{Deserialize, Serialize};

pub use fedra_proto::model::{Architecture, ArchitectureError, ConvLayer, TensorLayout, TensorSpec};

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

/// A validated model spec.
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
