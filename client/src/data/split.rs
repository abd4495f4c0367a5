//! Carving a held-out part off a client's dataset, deterministically.
//!
//! A client evaluates the global model on rows it never trains on. Which rows those are must
//! not change between restarts (or a restarted client would train on its former holdout), so
//! the split is a seeded shuffle of row indices (ChaCha8, portable across platforms): the
//! same dataset, fraction and seed always give the same two parts. Both parts keep the
//! original row order. The default seed is derived from the client id with
//! [`seed_from_name`], a fixed FNV-1a hash — not std's randomly keyed `RandomState`, whose
//! output differs from process to process.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::{DataError, Dataset};

/// The largest holdout fraction accepted: a client must keep most of its data for training.
pub const MAX_HOLDOUT_FRACTION: f64 = 0.9;

/// A stable 64-bit seed from a name (FNV-1a over its UTF-8 bytes): the same on every
/// platform, process and release.
pub fn seed_from_name(name: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    name.bytes().fold(OFFSET, |hash, b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

impl Dataset {
    /// Splits off `round(len * fraction)` rows (at least 1, and never all of them) chosen by a
    /// shuffle seeded with `seed`. The training part keeps this dataset's name; the holdout
    /// is named `<name>.holdout`. A `fraction` of 0 returns the dataset unchanged and `None`.
    ///
    /// # Errors
    /// [`DataError::HoldoutFraction`] when `fraction` is not in `[0, 0.9]` (NaN included);
    /// [`DataError::HoldoutTooSmall`] when `fraction > 0` and the dataset has fewer than two
    /// rows, so one part would be empty.
    pub fn split_holdout(self, fraction: f64, seed: u64) -> Result<(Dataset, Option<Dataset>), DataError> {
        if !(0.0..=MAX_HOLDOUT_FRACTION).contains(&fraction) {
            return Err(DataError::HoldoutFraction { name: self.name, fraction });
        }
        if fraction == 0.0 {
            return Ok((self, None));
        }
        let n = self.len();
        if n < 2 {
            return Err(DataError::HoldoutTooSmall { name: self.name, samples: n });
        }
        // `n * fraction` is at most 0.9 n, so the cast cannot overflow.
        let held = ((n as f64 * fraction).round() as usize).clamp(1, n - 1);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let (holdout, train) = order.split_at_mut(held);
        holdout.sort_unstable();
        train.sort_unstable();
        let holdout = self.subset(format!("{}.holdout", self.name), holdout);
        let train = self.subset(self.name.clone(), train);
        Ok((train, Some(holdout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 rows whose single feature is the row number, so rows can be traced.
    fn numbered(n: usize) -> Dataset {
        let features = (0..n).map(|i| i as f32).collect();
        let labels = (0..n).map(|i| (i % 3) as u32).collect();
        Dataset::new("d", features, labels, 1, 3).unwrap()
    }

    fn ids(d: &Dataset) -> Vec<usize> {
        d.features.iter().map(|&v| v as usize).collect()
    }

    #[test]
    fn split_is_deterministic_disjoint_and_sized() {
        let (train, holdout) = numbered(100).split_holdout(0.2, 7).unwrap();
        let holdout = holdout.unwrap();
        assert_eq!((train.len(), holdout.len()), (80, 20));
        assert_eq!((train.name.as_str(), holdout.name.as_str()), ("d", "d.holdout"));
        let mut all: Vec<usize> = ids(&train).into_iter().chain(ids(&holdout)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>(), "every row in exactly one part");
        // Labels travel with their rows, and both parts keep file order.
        assert!(train.features.iter().zip(&train.labels).all(|(&f, &l)| (f as usize % 3) as u32 == l));
        assert!(ids(&holdout).windows(2).all(|w| w[0] < w[1]));

        let (train2, holdout2) = numbered(100).split_holdout(0.2, 7).unwrap();
        assert_eq!(ids(&train2), ids(&train));
        assert_eq!(ids(&holdout2.unwrap()), ids(&holdout));
        let (_, other) = numbered(100).split_holdout(0.2, 8).unwrap();
        assert_ne!(ids(&other.unwrap()), ids(&holdout), "another seed picks other rows");
    }

    #[test]
    fn small_and_edge_fractions() {
        let (train, holdout) = numbered(10).split_holdout(0.0, 1).unwrap();
        assert!(holdout.is_none());
        assert_eq!(train.len(), 10);
        // A tiny fraction still holds out one row; the largest keeps one for training.
        let (train, holdout) = numbered(10).split_holdout(0.01, 1).unwrap();
        assert_eq!((train.len(), holdout.unwrap().len()), (9, 1));
        let (train, holdout) = numbered(2).split_holdout(0.9, 1).unwrap();
        assert_eq!((train.len(), holdout.unwrap().len()), (1, 1));
        assert!(matches!(numbered(1).split_holdout(0.5, 1), Err(DataError::HoldoutTooSmall { samples: 1, .. })));
        for bad in [-0.1, 0.95, f64::NAN] {
            let e = numbered(10).split_holdout(bad, 1).unwrap_err();
            assert!(matches!(e, DataError::HoldoutFraction { .. }), "{e}");
        }
    }

    #[test]
    fn name_seeds_are_stable() {
        // FNV-1a reference values: a changed hash would silently move every client's holdout.
        assert_eq!(seed_from_name(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(seed_from_name("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(seed_from_name("eu-1"), seed_from_name("eu-2"));
    }
}
