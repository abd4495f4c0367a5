//! Local datasets a client trains on. Raw samples never leave this module's owner: only
//! their count (the FedAvg weight) and shape are described to the coordinator.
//!
//! Every loader ends in [`Dataset::new`], which checks shapes, labels and finiteness once, so
//! trainers can rely on a [`Dataset`] being consistent. The loaders check the same things
//! earlier, while they still know the file and row, so a bad file is rejected at client start
//! with a message that says where to look:
//!
//! - [`csv`]: a CSV file with a declared schema (label column, feature count, classes);
//! - [`npy`]: a pair of NumPy `.npy` files (features `[n, d]`, labels `[n]`);
//! - [`digits`]: the 8x8 handwritten digits embedded in the binary (no download);
//! - [`synthetic`]: seeded Gaussian blobs for simulations.
//!
//! [`partition`] splits one dataset across simulated clients and [`Dataset::split_holdout`]
//! carves a seeded held-out part for local evaluation; both are deterministic given a seed.

pub mod csv;
pub mod digits;
pub mod npy;
pub mod partition;
pub mod split;
pub mod synthetic;

/// An in-memory labelled dataset of dense `f32` features (row-major, `dim` per sample).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub name: String,
    pub features: Vec<f32>,
    pub labels: Vec<u32>,
    pub dim: usize,
    pub classes: usize,
}

/// A client's local data: what it trains on and, when configured, the held-out part it
/// evaluates on (never trained on).
#[derive(Debug, Clone)]
pub struct LocalData {
    pub train: Dataset,
    pub holdout: Option<Dataset>,
}

/// A dataset is inconsistent or cannot be loaded, split or partitioned.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset {name}: {features} feature values is not {samples} samples x {dim} features")]
    Shape { name: String, features: usize, samples: usize, dim: usize },
    #[error("dataset {name}: label {label} at sample {index} is not below {classes} classes")]
    Label { name: String, label: u32, index: usize, classes: usize },
    #[error("dataset {name}: non-finite feature value at sample {index}")]
    NonFinite { name: String, index: usize },
    #[error("dataset {name} is empty")]
    Empty { name: String },
    #[error("dataset {name}: holdout fraction {fraction} is not in [0, 0.9]")]
    HoldoutFraction { name: String, fraction: f64 },
    #[error("dataset {name}: {samples} sample(s) cannot be split into a holdout and a non-empty training part")]
    HoldoutTooSmall { name: String, samples: usize },
    #[error("dataset {name}: cannot partition: {message}")]
    Partition { name: String, message: String },
}

/// What a client tells the coordinator about a dataset: its shape and size, never its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetInfo {
    pub name: String,
    pub samples: u64,
    pub features: u32,
    pub classes: u32,
}

impl Dataset {
    /// The dataset's description for registration.
    pub fn info(&self) -> DatasetInfo {
        DatasetInfo {
            name: self.name.clone(),
            samples: self.len() as u64,
            features: self.dim as u32,
            classes: self.classes as u32,
        }
    }

    /// Builds a dataset, checking shapes, labels and finiteness once so that trainers can
    /// rely on them.
    ///
    /// # Errors
    /// [`DataError`] naming the first problem found.
    pub fn new(
        name: impl Into<String>,
        features: Vec<f32>,
        labels: Vec<u32>,
        dim: usize,
        classes: usize,
    ) -> Result<Self, DataError> {
        let name = name.into();
        if labels.is_empty() {
            return Err(DataError::Empty { name });
        }
        if dim == 0 || features.len() != labels.len() * dim {
            return Err(DataError::Shape { name, features: features.len(), samples: labels.len(), dim });
        }
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l as usize >= classes) {
            return Err(DataError::Label { name, label, index, classes });
        }
        if let Some(pos) = features.iter().position(|v| !v.is_finite()) {
            return Err(DataError::NonFinite { name, index: pos / dim });
        }
        Ok(Self { name, features, labels, dim, classes })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features of sample `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// The samples at `indices` (in that order) as a new dataset called `name`. Rows of a
    /// valid dataset stay valid, so only emptiness needs the caller's care.
    pub(crate) fn subset(&self, name: String, indices: &[usize]) -> Dataset {
        debug_assert!(!indices.is_empty(), "a subset must keep at least one sample");
        let mut features = Vec::with_capacity(indices.len() * self.dim);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            features.extend_from_slice(self.row(i));
            labels.push(self.labels[i]);
        }
        Dataset { name, features, labels, dim: self.dim, classes: self.classes }
    }
}
