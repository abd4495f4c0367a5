//! Model specifications as the coordinator sees them: enough to know the flat parameter
//! layout (tensor names, shapes, order) and to initialise a fresh global model. The
//! coordinator never runs a model; clients build the real network from the same spec and
//! refuse a task whose layout differs from theirs.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Largest model the coordinator accepts (in parameters): 4 G values is 16 GB of f32.
pub const MAX_PARAMETERS: u64 = 1 << 32;

/// A model specification was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("model.name {0:?} must be 1..=64 chars of letters, digits, '.', '_' or '-'")]
    Name(String),
    #[error("model.{field} must be at least {min}, got {got}")]
    Dimension { field: &'static str, min: u64, got: u64 },
    #[error("model has {0} parameters, more than the supported {MAX_PARAMETERS}")]
    TooLarge(u64),
    #[error("model architecture is missing")]
    MissingArchitecture,
}

/// Network architectures fedra trains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Architecture {
    /// logits = x · W + b (the FedProx synthetic benchmarks' model).
    LogisticRegression { input_dim: u32, classes: u32 },
}

/// A validated model spec: a name (checkpoints are listed per name) and an architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    name: String,
    architecture: Architecture,
}

/// One tensor of the flat parameter vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<u64>,
}

impl TensorSpec {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// Ordered tensors; the flat vector is their row-major concatenation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TensorLayout {
    pub tensors: Vec<TensorSpec>,
}

impl TensorLayout {
    pub fn total(&self) -> u64 {
        self.tensors.iter().map(TensorSpec::numel).sum()
    }
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
        match &architecture {
            Architecture::LogisticRegression { input_dim, classes } => {
                if *input_dim < 1 {
                    return Err(ModelError::Dimension { field: "input_dim", min: 1, got: u64::from(*input_dim) });
                }
                if *classes < 2 {
                    return Err(ModelError::Dimension { field: "classes", min: 2, got: u64::from(*classes) });
                }
            }
        }
        let spec = Self { name, architecture };
        let total = spec.layout().total();
        if total > MAX_PARAMETERS {
            return Err(ModelError::TooLarge(total));
        }
        Ok(spec)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// The documented tensor layout of this architecture (see the proto's `ModelSpec`).
    pub fn layout(&self) -> TensorLayout {
        match self.architecture {
            Architecture::LogisticRegression { input_dim, classes } => TensorLayout {
                tensors: vec![
                    TensorSpec { name: "linear.weight".into(), shape: vec![u64::from(input_dim), u64::from(classes)] },
                    TensorSpec { name: "linear.bias".into(), shape: vec![u64::from(classes)] },
                ],
            },
        }
    }

    /// A fresh, seeded initialisation: Glorot-uniform weights, zero biases. The same seed
    /// always gives the same model, so runs are reproducible.
    pub fn initialise(&self, seed: u64) -> Vec<f32> {
        let layout = self.layout();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(layout.total() as usize);
        for t in &layout.tensors {
            let n = t.numel() as usize;
            if t.shape.len() >= 2 {
                let fan_in = t.shape[0] as f64;
                let fan_out = t.shape[1..].iter().product::<u64>() as f64;
                let a = (6.0 / (fan_in + fan_out)).sqrt() as f32;
                out.extend((0..n).map(|_| rng.random_range(-a..=a)));
            } else {
                out.extend(std::iter::repeat_n(0.0f32, n));
            }
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
    fn bad_specs_name_the_field() {
        let e = ModelSpec::new("lr", Architecture::LogisticRegression { input_dim: 0, classes: 10 }).unwrap_err();
        assert_eq!(e.to_string(), "model.input_dim must be at least 1, got 0");
        let e = ModelSpec::new("lr", Architecture::LogisticRegression { input_dim: 3, classes: 1 }).unwrap_err();
        assert!(e.to_string().contains("model.classes"));
        assert!(ModelSpec::new("a b", Architecture::LogisticRegression { input_dim: 3, classes: 2 }).is_err());
    }
}
