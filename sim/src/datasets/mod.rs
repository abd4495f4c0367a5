//! The federated benchmark datasets a simulation runs on, already split per client into a
//! training part and a local test part.
//!
//! Two sources:
//!
//! - [`FedProxSynthetic`]: the synthetic(α, β) and synthetic-IID federations of Li et al.,
//!   "Federated Optimization in Heterogeneous Networks" (FedProx, MLSys 2020), generated
//!   as the paper's reference scripts do (`data/synthetic_*/generate_synthetic.py` and
//!   `data/synthetic_iid/generate_iid.py` in <https://github.com/litian96/FedProx>): 30
//!   devices, 60 features, 10 classes, lognormal device sizes, per-device 90/10 train/test.
//!   See [`fedprox`] for the exact generative process.
//! - [`digits_clients`]: the embedded 8x8 handwritten digits, with a central test set carved
//!   off first, the rest spread over clients by a [`Partition`] scheme, and each client's
//!   part split again into local train and test.
//!
//! Contract, for both sources:
//!
//! - **Deterministic**: the same parameters and seed give bit-identical datasets on every
//!   platform (all randomness comes from seeded ChaCha8 streams).
//! - **Disjoint**: every generated (or loaded) sample lands in exactly one place — one
//!   client's `train`, one client's `test`, or (digits) the central test set.
//! - **Valid**: every [`Dataset`] went through [`Dataset::new`]'s checks (or is a subset of
//!   one that did), and both parts of every [`ClientData`] are non-empty.
//!
//! Neither source reproduces the reference's exact numbers (numpy's Mersenne Twister
//! streams cannot be replayed here); they reproduce its *distribution*.

pub mod digits;
pub mod fedprox;

pub use digits::{DIGITS_CENTRAL_TEST_FRACTION, digits_clients};
pub use fedprox::{DeviceParams, FedProxSynthetic};
pub use fedra_client::data::partition::Partition;
pub use fedra_client::data::{DataError, Dataset};

/// One simulated client's data: what it trains on and the local held-out part it evaluates
/// on (never trained on).
#[derive(Debug, Clone)]
pub struct ClientData {
    pub train: Dataset,
    pub test: Dataset,
}

impl ClientData {
    /// Samples in both parts together.
    pub fn len(&self) -> usize {
        self.train.len() + self.test.len()
    }

    /// Always false: both parts are non-empty by construction.
    pub fn is_empty(&self) -> bool {
        self.train.is_empty() && self.test.is_empty()
    }
}

/// A seed for an independent sub-stream, derived from a base seed and a stream number
/// (SplitMix64 finaliser): fixed forever, so derived streams never move between releases.
pub(crate) fn sub_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed.wrapping_add(stream.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Test helpers shared by the submodules' tests.
#[cfg(test)]
pub(crate) mod testutil {
    use super::Dataset;

    /// Class counts of a dataset.
    pub fn histogram(d: &Dataset) -> Vec<usize> {
        let mut h = vec![0; d.classes];
        d.labels.iter().for_each(|&l| h[l as usize] += 1);
        h
    }

    /// Total-variation distance between two count histograms, as distributions.
    pub fn tv_distance(a: &[usize], b: &[usize]) -> f64 {
        let (na, nb) = (a.iter().sum::<usize>() as f64, b.iter().sum::<usize>() as f64);
        0.5 * a.iter().zip(b).map(|(&x, &y)| (x as f64 / na - y as f64 / nb).abs()).sum::<f64>()
    }

    /// Mean over `parts` of the TV distance between a part's label distribution and the
    /// pooled one: 0 for identical label mixes, up to 1 for disjoint ones.
    pub fn mean_tv_from_pooled(parts: &[Vec<usize>]) -> f64 {
        let classes = parts[0].len();
        let pooled: Vec<usize> = (0..classes).map(|c| parts.iter().map(|h| h[c]).sum()).collect();
        parts.iter().map(|h| tv_distance(h, &pooled)).sum::<f64>() / parts.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_seeds_are_stable_and_distinct() {
        assert_ne!(sub_seed(0, 0), sub_seed(0, 1));
        assert_ne!(sub_seed(0, 0), sub_seed(1, 0));
        assert_eq!(sub_seed(7, 3), sub_seed(7, 3));
    }
}
