//! The 8x8 handwritten digits (UCI optical recognition of handwritten digits, the set
//! scikit-learn calls `load_digits`), embedded in the binary by the `smartcore` crate's
//! `datasets` feature: a real, small image-classification task that needs no download, for
//! demos, simulations and tests.
//!
//! 1797 samples, 64 features (an 8x8 image, row by row), 10 classes (the digits 0–9).
//! Pixel values are integers 0..=16 in the source; [`load_digits`] divides them by 16 so
//! features lie in `[0, 1]`, the scale the trainers' default learning rates expect. Split it
//! across simulated clients with [`partition`](super::partition::partition).

use super::{DataError, Dataset};

/// Samples in the embedded digits dataset.
pub const DIGITS_SAMPLES: usize = 1797;
/// Features per sample (8x8 pixels).
pub const DIGITS_FEATURES: usize = 64;
/// Classes (digits 0–9).
pub const DIGITS_CLASSES: usize = 10;
/// The largest pixel value in the source data; features are divided by it.
const MAX_PIXEL: f32 = 16.0;

/// The embedded digits, features scaled to `[0, 1]`, named `digits`.
///
/// # Errors
/// [`DataError`] only if the embedded data is not what this module documents (a broken
/// `smartcore` release): a label that is not an integer digit, or a wrong shape.
pub fn load_digits() -> Result<Dataset, DataError> {
    let raw = smartcore::dataset::digits::load_dataset();
    let name = "digits";
    if raw.num_features != DIGITS_FEATURES || raw.num_samples != DIGITS_SAMPLES {
        return Err(DataError::Shape {
            name: name.into(),
            features: raw.data.len(),
            samples: raw.num_samples,
            dim: raw.num_features,
        });
    }
    let labels = raw
        .target
        .iter()
        .enumerate()
        .map(|(index, &y)| {
            // Targets are stored as f32; a digit is an exact small integer.
            if y.fract() == 0.0 && (0.0..DIGITS_CLASSES as f32).contains(&y) {
                Ok(y as u32)
            } else {
                Err(DataError::Label { name: name.into(), label: y as u32, index, classes: DIGITS_CLASSES })
            }
        })
        .collect::<Result<Vec<u32>, DataError>>()?;
    let features = raw.data.iter().map(|&v| v / MAX_PIXEL).collect();
    Dataset::new(name, features, labels, DIGITS_FEATURES, DIGITS_CLASSES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_load_scaled_with_ten_classes() {
        let d = load_digits().unwrap();
        assert_eq!((d.len(), d.dim, d.classes), (1797, 64, 10));
        assert_eq!(d.name, "digits");
        assert!(d.features.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(d.features.contains(&1.0), "the brightest pixel maps to 1");
        let mut counts = [0usize; 10];
        d.labels.iter().for_each(|&l| counts[l as usize] += 1);
        // Roughly balanced: every digit has 174..=183 samples.
        assert!(counts.iter().all(|&c| (170..=190).contains(&c)), "{counts:?}");
        // Deterministic: the data is embedded.
        assert_eq!(load_digits().unwrap().labels, d.labels);
    }
}
