//! Statistics for detecting data drift, without ever moving rows.
//!
//! Each client sketches its training inputs ([`DataReference`]: one mergeable
//! [`FeatureSketch`] per feature plus label counts); the coordinator merges the sketches per
//! region into the reference published beside a checkpoint; an inference node sketches its
//! live inputs the same way and compares them with the reference per feature ([`compare`]:
//! [`psi`] and [`ks`]).
//!
//! The sketch is DDSketch-style: values are counted in logarithmic buckets of relative
//! accuracy [`ALPHA`], so merging is exact (bucket counts add) and independent of order,
//! which is what lets sketches from many clients and regions add up to the sketch of the
//! union. Everything here is pure: no I/O, no randomness.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Relative accuracy of the log buckets (DDSketch-style): bucket k holds |x| in
/// (g^(k-1), g^k], g = (1+ALPHA)/(1-ALPHA).
pub const ALPHA: f64 = 0.05;
/// |x| below this counts as zero.
pub const MIN_MAGNITUDE: f64 = 1e-9;
/// Bound on distinct buckets per sign per feature (so a hostile client cannot blow memory);
/// a sketch with more is invalid. Honest data reaches it only with magnitudes spanning more
/// than about 10^178, so no collapsing of buckets is needed.
pub const MAX_BUCKETS: usize = 4096;

/// The bucket growth factor g.
const GAMMA: f64 = (1.0 + ALPHA) / (1.0 - ALPHA);
/// Every PSI fraction is floored at this, so an empty bin costs a large but finite amount.
const PSI_FLOOR: f64 = 1e-4;
/// PSI bins: the reference's deciles.
const PSI_BINS: u128 = 10;

/// What is wrong with a sketch, a reference, or a pair of them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    #[error("count {count} but zeros and buckets hold {held}")]
    CountMismatch { count: u64, held: u128 },
    #[error("{side} side has {buckets} buckets, more than {MAX_BUCKETS}")]
    TooManyBuckets { side: &'static str, buckets: usize },
    #[error("{side} bucket key {key} is outside the range of finite values")]
    KeyOutOfRange { side: &'static str, key: i32 },
    #[error("{side} bucket {key} has count 0 (empty buckets are not stored)")]
    EmptyBucket { side: &'static str, key: i32 },
    #[error("sum {sum} and sum_squares {sum_squares} must be finite, sum_squares non-negative")]
    BadMoments { sum: f64, sum_squares: f64 },
    #[error("{what}: expected {expected}, found {found}")]
    DimensionMismatch { what: &'static str, expected: usize, found: usize },
    #[error("label {label} is not below the {classes} classes")]
    LabelOutOfRange { label: usize, classes: usize },
    #[error("feature {feature}: {source}")]
    Feature { feature: usize, source: Box<DriftError> },
}

/// A mergeable sketch of one feature's values: count, moments, and log buckets per sign.
///
/// Invariants (checked by [`FeatureSketch::validate`], upheld by [`FeatureSketch::add`]):
/// `zeros + Σ positive + Σ negative == count`, no stored bucket has count 0, keys lie in the
/// range finite values produce, and the sums are finite.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSketch {
    pub count: u64,
    pub sum: f64,
    pub sum_squares: f64,
    /// Values with |x| < [`MIN_MAGNITUDE`].
    pub zeros: u64,
    /// Bucket key of x -> count, for x ≥ [`MIN_MAGNITUDE`].
    pub positive: BTreeMap<i32, u64>,
    /// Bucket key of |x| -> count, for x ≤ -[`MIN_MAGNITUDE`].
    pub negative: BTreeMap<i32, u64>,
}

impl FeatureSketch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `x`. Non-finite values are ignored and not counted: they say nothing about a
    /// distribution and would poison the sums.
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.count += 1;
        self.sum += x;
        self.sum_squares += x * x;
        let magnitude = x.abs();
        if magnitude < MIN_MAGNITUDE {
            self.zeros += 1;
        } else {
            let side = if x > 0.0 { &mut self.positive } else { &mut self.negative };
            *side.entry(Self::key(magnitude)).or_insert(0) += 1;
        }
    }

    /// Adds `other`'s values to these. Exact for counts and buckets (the result equals the
    /// sketch of both inputs' values concatenated); counts saturate rather than wrap, so
    /// hostile counts end up failing [`FeatureSketch::validate`] instead of panicking.
    pub fn merge(&mut self, other: &Self) {
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
        self.sum_squares += other.sum_squares;
        self.zeros = self.zeros.saturating_add(other.zeros);
        for (mine, theirs) in [(&mut self.positive, &other.positive), (&mut self.negative, &other.negative)] {
            for (&key, &count) in theirs {
                let slot = mine.entry(key).or_insert(0);
                *slot = slot.saturating_add(count);
            }
        }
    }

    /// The mean, 0 for an empty sketch.
    pub fn mean(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum / self.count as f64 }
    }

    /// The population variance, clamped at 0 (cancellation in `E[x²] - E[x]²` can dip below).
    pub fn variance(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let mean = self.mean();
        (self.sum_squares / self.count as f64 - mean * mean).max(0.0)
    }

    /// The bucket of a magnitude `x_abs ≥ MIN_MAGNITUDE`: `ceil(ln x / ln g)`.
    pub fn key(x_abs: f64) -> i32 {
        (x_abs.ln() / GAMMA.ln()).ceil() as i32
    }

    /// Representative magnitude of bucket `key`: `2·g^k/(g+1)` (DDSketch's estimate, within
    /// [`ALPHA`] relative error of every value in the bucket); a negative bucket stands for
    /// its negation. Saturates at `f64::MAX` for the topmost key.
    pub fn representative(key: i32) -> f64 {
        (f64::from(key) * GAMMA.ln() + (2.0 / (GAMMA + 1.0)).ln()).exp().min(f64::MAX)
    }

    /// Checks the invariants listed on the type; a sketch from outside (a client, the wire)
    /// must pass this before it is merged or compared.
    pub fn validate(&self) -> Result<(), DriftError> {
        if !self.sum.is_finite() || !self.sum_squares.is_finite() || self.sum_squares < 0.0 {
            return Err(DriftError::BadMoments { sum: self.sum, sum_squares: self.sum_squares });
        }
        let (lowest, highest) = (Self::key(MIN_MAGNITUDE), Self::key(f64::MAX));
        let mut held = u128::from(self.zeros);
        for (side, buckets) in [("positive", &self.positive), ("negative", &self.negative)] {
            if buckets.len() > MAX_BUCKETS {
                return Err(DriftError::TooManyBuckets { side, buckets: buckets.len() });
            }
            for (&key, &count) in buckets {
                if !(lowest..=highest).contains(&key) {
                    return Err(DriftError::KeyOutOfRange { side, key });
                }
                if count == 0 {
                    return Err(DriftError::EmptyBucket { side, key });
                }
                held += u128::from(count);
            }
        }
        if held != u128::from(self.count) {
            return Err(DriftError::CountMismatch { count: self.count, held });
        }
        Ok(())
    }

    /// Buckets in ascending value order: (representative value, count), negative side first
    /// (largest |x| first), then zero (if any), then positive ascending. Representative
    /// values are strictly increasing, so two sketches' buckets match by value exactly.
    fn ordered(&self) -> Vec<(f64, u64)> {
        let negative = self.negative.iter().rev().map(|(&k, &c)| (-Self::representative(k), c));
        let zero = (self.zeros > 0).then_some((0.0, self.zeros));
        let positive = self.positive.iter().map(|(&k, &c)| (Self::representative(k), c));
        negative.chain(zero).chain(positive).collect()
    }
}

/// The data a checkpoint was trained on (or a node serves), as statistics: one sketch per
/// input feature and a count per class label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataReference {
    pub features: Vec<FeatureSketch>,
    pub class_counts: Vec<u64>,
}

impl DataReference {
    /// An empty reference for `features` inputs and `classes` labels.
    pub fn new(features: usize, classes: usize) -> Self {
        Self { features: vec![FeatureSketch::new(); features], class_counts: vec![0; classes] }
    }

    /// Adds one row (its length must equal the feature count) and optionally its label (below
    /// the class count). On error nothing is added, so a malformed live request cannot leave
    /// the features' counts out of step.
    pub fn add_row(&mut self, row: &[f32], label: Option<usize>) -> Result<(), DriftError> {
        if row.len() != self.features.len() {
            return Err(DriftError::DimensionMismatch {
                what: "row length",
                expected: self.features.len(),
                found: row.len(),
            });
        }
        if let Some(label) = label {
            let classes = self.class_counts.len();
            let slot = self.class_counts.get_mut(label).ok_or(DriftError::LabelOutOfRange { label, classes })?;
            *slot = slot.saturating_add(1);
        }
        for (sketch, &x) in self.features.iter_mut().zip(row) {
            sketch.add(f64::from(x));
        }
        Ok(())
    }

    /// Adds `other` into this reference. Feature and class counts must match, and the merged
    /// result must be valid (it is not when either side was not, or when the union exceeds
    /// [`MAX_BUCKETS`]); on error `self` is unchanged.
    pub fn merge(&mut self, other: &Self) -> Result<(), DriftError> {
        let (features, classes) = (self.features.len(), self.class_counts.len());
        check_dims(other, features, classes)?;
        let mut merged = self.clone();
        for (mine, theirs) in merged.features.iter_mut().zip(&other.features) {
            mine.merge(theirs);
        }
        for (mine, theirs) in merged.class_counts.iter_mut().zip(&other.class_counts) {
            *mine = mine.saturating_add(*theirs);
        }
        merged.validate(features, classes)?;
        *self = merged;
        Ok(())
    }

    /// Rows seen: the largest feature count (features skip non-finite values), or 0.
    pub fn rows(&self) -> u64 {
        self.features.iter().map(|f| f.count).max().unwrap_or(0)
    }

    /// Checks the dimensions against the model's and every feature's invariants; errors name
    /// the offending feature.
    pub fn validate(&self, features: usize, classes: usize) -> Result<(), DriftError> {
        check_dims(self, features, classes)?;
        for (feature, sketch) in self.features.iter().enumerate() {
            sketch.validate().map_err(|e| DriftError::Feature { feature, source: Box::new(e) })?;
        }
        Ok(())
    }
}

fn check_dims(r: &DataReference, features: usize, classes: usize) -> Result<(), DriftError> {
    if r.features.len() != features {
        return Err(DriftError::DimensionMismatch { what: "features", expected: features, found: r.features.len() });
    }
    if r.class_counts.len() != classes {
        return Err(DriftError::DimensionMismatch { what: "classes", expected: classes, found: r.class_counts.len() });
    }
    Ok(())
}

/// One feature's drift of live inputs against the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureDrift {
    pub feature: u32,
    pub psi: f64,
    pub ks: f64,
    pub reference_mean: f64,
    pub live_mean: f64,
}

/// PSI of live against reference for one feature: 10 bins whose edges are the reference's
/// deciles (bins built by walking the reference's ordered buckets and cutting after each
/// ~10 % of mass; a bucket is never split, so discrete features with heavy ties get fewer,
/// uneven bins — expected fractions are the reference's actual mass per bin, never assumed
/// 0.1). Live mass per bin uses the same bucket->bin map (live buckets below the first edge
/// go to bin 0, above the last to the last bin).
/// PSI = Σ (l - r)·ln(l / r) with each fraction floored at 1e-4 to avoid ln 0.
///
/// PSI cannot see mass moving within a bin or beyond the outer edges (a constant reference
/// has one bin, so its PSI is always 0); [`ks`] covers that. An empty side gives 0.
pub fn psi(reference: &FeatureSketch, live: &FeatureSketch) -> f64 {
    let (reference, live) = (reference.ordered(), live.ordered());
    let total = reference.iter().map(|&(_, c)| u128::from(c)).sum::<u128>();
    if total == 0 || live.iter().all(|&(_, c)| c == 0) {
        return 0.0;
    }
    // Each edge is the value of the last bucket in its bin; `next` is the next decile to reach.
    let mut edges = Vec::with_capacity(PSI_BINS as usize);
    let (mut cumulative, mut next) = (0u128, 1u128);
    for &(value, count) in &reference {
        cumulative += u128::from(count);
        if cumulative * PSI_BINS >= next * total {
            edges.push(value);
            next = cumulative * PSI_BINS / total + 1;
        }
    }
    let fractions = |buckets: &[(f64, u64)]| {
        let mut mass = vec![0.0; edges.len()];
        for &(value, count) in buckets {
            let bin = edges.partition_point(|&edge| edge < value).min(edges.len() - 1);
            mass[bin] += count as f64;
        }
        let sum: f64 = mass.iter().sum();
        mass.iter().map(|m| m / sum).collect::<Vec<_>>()
    };
    psi_of_fractions(&fractions(&reference), &fractions(&live))
}

/// Kolmogorov–Smirnov distance: max |F_ref - F_live| over the union of bucket boundaries in
/// value order, in [0, 1]. An empty side gives 0.
pub fn ks(reference: &FeatureSketch, live: &FeatureSketch) -> f64 {
    let (r, l) = (reference.ordered(), live.ordered());
    let total = |b: &[(f64, u64)]| b.iter().map(|&(_, c)| c as f64).sum::<f64>();
    let (r_total, l_total) = (total(&r), total(&l));
    if r_total == 0.0 || l_total == 0.0 {
        return 0.0;
    }
    let (mut i, mut j, mut r_cum, mut l_cum, mut distance) = (0, 0, 0.0, 0.0, 0.0f64);
    while i < r.len() || j < l.len() {
        let value = match (r.get(i), l.get(j)) {
            (Some(a), Some(b)) => a.0.min(b.0),
            (Some(a), None) => a.0,
            (None, Some(b)) => b.0,
            (None, None) => break,
        };
        if r.get(i).is_some_and(|b| b.0 == value) {
            r_cum += r[i].1 as f64;
            i += 1;
        }
        if l.get(j).is_some_and(|b| b.0 == value) {
            l_cum += l[j].1 as f64;
            j += 1;
        }
        distance = distance.max((r_cum / r_total - l_cum / l_total).abs());
    }
    distance
}

/// PSI between two categorical distributions (class counts), each fraction floored at 1e-4;
/// a class missing from the shorter slice counts 0. An empty side gives 0.
pub fn categorical_psi(reference: &[u64], live: &[u64]) -> f64 {
    let classes = reference.len().max(live.len());
    let fractions = |counts: &[u64]| {
        let total = counts.iter().map(|&c| c as f64).sum::<f64>();
        (0..classes).map(|i| counts.get(i).map_or(0.0, |&c| c as f64 / total)).collect::<Vec<_>>()
    };
    if reference.iter().all(|&c| c == 0) || live.iter().all(|&c| c == 0) {
        return 0.0;
    }
    psi_of_fractions(&fractions(reference), &fractions(live))
}

fn psi_of_fractions(reference: &[f64], live: &[f64]) -> f64 {
    reference
        .iter()
        .zip(live)
        .map(|(&r, &l)| {
            let (r, l) = (r.max(PSI_FLOOR), l.max(PSI_FLOOR));
            (l - r) * (l / r).ln()
        })
        .sum()
}

/// Per-feature drift of `live` against `reference`, sorted by PSI descending (ties keep
/// feature order). The feature counts must match; class counts are compared separately
/// with [`categorical_psi`], since live inputs usually have no labels.
pub fn compare(reference: &DataReference, live: &DataReference) -> Result<Vec<FeatureDrift>, DriftError> {
    if reference.features.len() != live.features.len() {
        return Err(DriftError::DimensionMismatch {
            what: "features",
            expected: reference.features.len(),
            found: live.features.len(),
        });
    }
    let mut drifts: Vec<FeatureDrift> = reference
        .features
        .iter()
        .zip(&live.features)
        .enumerate()
        .map(|(i, (r, l))| FeatureDrift {
            feature: u32::try_from(i).unwrap_or(u32::MAX),
            psi: psi(r, l),
            ks: ks(r, l),
            reference_mean: r.mean(),
            live_mean: l.mean(),
        })
        .collect();
    drifts.sort_by(|a, b| b.psi.total_cmp(&a.psi));
    Ok(drifts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal};

    fn sketch(values: &[f64]) -> FeatureSketch {
        let mut s = FeatureSketch::new();
        values.iter().for_each(|&x| s.add(x));
        s
    }

    fn normal(seed: u64, shift: f64) -> FeatureSketch {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = Normal::new(shift, 1.0).unwrap();
        sketch(&(0..5000).map(|_| n.sample(&mut rng)).collect::<Vec<_>>())
    }

    /// Digit-like pixels 0..=16: 60 % zeros, the rest skewed to bright values, then `f` applied.
    fn pixels(seed: u64, f: impl Fn(f64) -> f64) -> FeatureSketch {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let values: Vec<f64> = (0..5000)
            .map(|_| match rng.random_range(0..100) {
                0..60 => 0.0,
                60..75 => f64::from(rng.random_range(1..=11)),
                _ => f64::from(rng.random_range(12..=16)),
            })
            .map(f)
            .collect();
        sketch(&values)
    }

    #[test]
    fn buckets_and_moments() {
        let s = sketch(&[0.0, 1e-12, 1.0, 1.0, -2.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
        assert_eq!((s.count, s.zeros), (5, 2));
        assert_eq!(s.positive, BTreeMap::from([(0, 2)]));
        assert_eq!(s.negative, BTreeMap::from([(FeatureSketch::key(2.0), 1)]));
        assert!(s.mean().abs() < 1e-12);
        assert!((s.variance() - 6.0 / 5.0).abs() < 1e-12);
        s.validate().unwrap();
        let ordered = s.ordered();
        assert!(ordered.windows(2).all(|w| w[0].0 < w[1].0), "{ordered:?}");
        assert_eq!(FeatureSketch::new().variance(), 0.0);
        assert!(FeatureSketch::representative(FeatureSketch::key(f64::MAX)).is_finite());
    }

    #[test]
    fn validate_rejects_inconsistent_counts() {
        let mut s = sketch(&[1.0, -1.0, 0.0]);
        s.count = 4;
        assert!(matches!(s.validate(), Err(DriftError::CountMismatch { count: 4, held: 3 })));
        let mut s = sketch(&[1.0]);
        s.positive.insert(5, 0);
        assert!(matches!(s.validate(), Err(DriftError::EmptyBucket { key: 5, .. })));
        let mut s = sketch(&[1.0]);
        s.positive = BTreeMap::from([(i32::MAX, 1)]);
        assert!(matches!(s.validate(), Err(DriftError::KeyOutOfRange { key: i32::MAX, .. })));
        let mut s = sketch(&[1.0]);
        s.sum = f64::NAN;
        assert!(matches!(s.validate(), Err(DriftError::BadMoments { .. })));
        // Counts that would overflow u64 when summed are caught, not wrapped.
        let mut s = FeatureSketch { count: u64::MAX, zeros: u64::MAX, ..FeatureSketch::new() };
        s.positive.insert(0, 1);
        assert!(matches!(s.validate(), Err(DriftError::CountMismatch { .. })));
    }

    #[test]
    fn validate_rejects_too_many_buckets() {
        let mut s = FeatureSketch::new();
        s.negative = (0..=MAX_BUCKETS as i32).map(|key| (key, 1)).collect();
        s.count = s.negative.len() as u64;
        assert!(matches!(s.validate(), Err(DriftError::TooManyBuckets { side: "negative", buckets: 4097 })));
        s.negative.pop_last();
        s.count -= 1;
        s.validate().unwrap();
    }

    #[test]
    fn reference_rows_merge_and_dims() {
        let mut a = DataReference::new(2, 3);
        a.add_row(&[1.0, f32::NAN], Some(2)).unwrap();
        a.add_row(&[2.0, 3.0], None).unwrap();
        assert!(matches!(a.add_row(&[1.0], None), Err(DriftError::DimensionMismatch { found: 1, .. })));
        assert_eq!(a.add_row(&[1.0, 1.0], Some(3)), Err(DriftError::LabelOutOfRange { label: 3, classes: 3 }));
        assert_eq!((a.rows(), a.features[1].count, a.class_counts.clone()), (2, 1, vec![0, 0, 1]));
        let before = a.clone();
        for (other, what) in [(DataReference::new(3, 3), "features"), (DataReference::new(2, 2), "classes")] {
            assert!(matches!(a.merge(&other), Err(DriftError::DimensionMismatch { what: w, .. }) if w == what));
        }
        let mut bad = DataReference::new(2, 3);
        bad.features[1].count = 7;
        let err = a.merge(&bad).unwrap_err();
        assert!(matches!(err, DriftError::Feature { feature: 1, .. }), "{err}");
        assert_eq!(a, before, "a failed merge leaves the reference unchanged");
        a.merge(&before).unwrap();
        assert_eq!((a.rows(), a.class_counts.clone()), (4, vec![0, 0, 2]));
        a.validate(2, 3).unwrap();
        assert!(a.validate(2, 4).is_err());
        assert_eq!(DataReference::new(0, 0).rows(), 0);
        assert!(compare(&a, &DataReference::new(1, 3)).is_err());
    }

    #[test]
    fn serde_round_trip_rejects_unknown_fields() {
        let mut r = DataReference::new(2, 2);
        r.add_row(&[-3.5, 0.25], Some(1)).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<DataReference>(&json).unwrap(), r);
        let extra = json.replacen("\"class_counts\"", "\"bogus\":1,\"class_counts\"", 1);
        assert!(serde_json::from_str::<DataReference>(&extra).is_err());
    }

    #[test]
    fn empty_sketches_give_zero() {
        let (empty, full) = (FeatureSketch::new(), normal(1, 0.0));
        for (a, b) in [(&empty, &full), (&full, &empty), (&empty, &empty)] {
            assert_eq!((psi(a, b), ks(a, b)), (0.0, 0.0));
        }
        assert_eq!(categorical_psi(&[], &[1, 2]), 0.0);
        assert_eq!(categorical_psi(&[0, 0], &[1, 2]), 0.0);
    }

    #[test]
    fn normal_same_distribution_small_drift_shifted_large() {
        let (reference, same, shifted) = (normal(1, 0.0), normal(2, 0.0), normal(3, 1.0));
        let (p, k) = (psi(&reference, &same), ks(&reference, &same));
        let (ps, ks_shift) = (psi(&reference, &shifted), ks(&reference, &shifted));
        eprintln!("normal: same psi {p:.4} ks {k:.4}; +1 sd psi {ps:.4} ks {ks_shift:.4}");
        assert!(p < 0.1 && k < 0.05, "psi {p} ks {k}");
        assert!(ps > 0.25 && ks_shift > 0.3, "psi {ps} ks {ks_shift}");
    }

    #[test]
    fn discrete_pixels_same_small_drift_scaled_or_shifted_large() {
        let reference = pixels(1, |x| x);
        let same = pixels(2, |x| x);
        let doubled = pixels(3, |x| 2.0 * x);
        let shifted = pixels(4, |x| x + 4.0);
        let (p, k) = (psi(&reference, &same), ks(&reference, &same));
        let (pd, kd) = (psi(&reference, &doubled), ks(&reference, &doubled));
        let (pshift, kshift) = (psi(&reference, &shifted), ks(&reference, &shifted));
        eprintln!("pixels: same psi {p:.4} ks {k:.4}; x2 psi {pd:.4} ks {kd:.4}; +4 psi {pshift:.4} ks {kshift:.4}");
        assert!(p < 0.1 && k < 0.05, "psi {p} ks {k}");
        assert!(pd > 0.25, "psi {pd}");
        assert!(pshift > 0.25 && kshift > 0.5, "psi {pshift} ks {kshift}");
    }

    #[test]
    fn constant_reference_psi_is_blind_ks_is_not() {
        let (reference, live) = (sketch(&[5.0; 100]), sketch(&[50.0; 100]));
        assert_eq!(psi(&reference, &live), 0.0, "one bin: all live mass lands in it");
        assert_eq!(ks(&reference, &live), 1.0);
    }

    #[test]
    fn categorical_psi_identical_is_zero_different_is_large() {
        assert_eq!(categorical_psi(&[10, 20, 30], &[1, 2, 3]), 0.0);
        let p = categorical_psi(&[90, 10], &[10, 90]);
        eprintln!("categorical: 90/10 vs 10/90 psi {p:.4}");
        assert!(p > 1.0, "{p}");
        assert!(categorical_psi(&[50, 50], &[100]) > 1.0, "a missing class counts as empty");
    }

    #[test]
    fn compare_sorts_by_psi_descending() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = Normal::new(0.0, 1.0).unwrap();
        let (mut reference, mut live) = (DataReference::new(3, 0), DataReference::new(3, 0));
        for _ in 0..2000 {
            let row: Vec<f32> = (0..3).map(|_| n.sample(&mut rng) as f32).collect();
            reference.add_row(&row, None).unwrap();
            let row: Vec<f32> = (0..3).map(|_| n.sample(&mut rng) as f32).collect();
            live.add_row(&[row[0], row[1] + 2.0, row[2] + 0.5], None).unwrap();
        }
        let drifts = compare(&reference, &live).unwrap();
        assert_eq!(drifts.iter().map(|d| d.feature).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert!(drifts.windows(2).all(|w| w[0].psi >= w[1].psi));
        assert!((drifts[0].live_mean - drifts[0].reference_mean - 2.0).abs() < 0.15);
    }

    /// Mostly ordinary values, with zeros, near-zeros and non-finite values mixed in.
    fn values(min_len: usize) -> impl Strategy<Value = Vec<f64>> {
        let non_finite = prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)];
        let value = prop_oneof![4 => -1e6f64..1e6, 1 => -1e-8f64..1e-8, 1 => Just(0.0), 1 => non_finite];
        prop::collection::vec(value, min_len..200)
    }

    proptest! {
        #[test]
        fn merge_is_exact(a in values(0), b in values(0)) {
            let whole = sketch(&[a.clone(), b.clone()].concat());
            let mut merged = sketch(&a);
            merged.merge(&sketch(&b));
            prop_assert_eq!((whole.count, whole.zeros), (merged.count, merged.zeros));
            prop_assert_eq!(&whole.positive, &merged.positive);
            prop_assert_eq!(&whole.negative, &merged.negative);
            let finite = || a.iter().chain(&b).filter(|x| x.is_finite());
            let scale = finite().map(|x| x.abs()).sum::<f64>().max(1e-300);
            prop_assert!((whole.sum - merged.sum).abs() <= 1e-9 * scale);
            let scale = finite().map(|x| x * x).sum::<f64>().max(1e-300);
            prop_assert!((whole.sum_squares - merged.sum_squares).abs() <= 1e-9 * scale);
            merged.validate().unwrap();
        }

        #[test]
        fn representative_is_within_alpha(exponent in -9.0f64..300.0, negative in any::<bool>()) {
            let x = 10f64.powf(exponent) * if negative { -1.0 } else { 1.0 };
            let s = sketch(&[x]);
            let (&key, _) = s.positive.iter().chain(&s.negative).next().unwrap();
            let estimate = FeatureSketch::representative(key);
            prop_assert!((estimate - x.abs()).abs() <= ALPHA * (1.0 + 1e-9) * x.abs(), "{} -> {}", x, estimate);
        }

        #[test]
        fn self_comparison_is_zero_and_ks_is_a_distance(a in values(1), b in values(1)) {
            let (a, b) = (sketch(&a), sketch(&b));
            prop_assert_eq!((psi(&a, &a), ks(&a, &a)), (0.0, 0.0));
            let (p, k) = (psi(&a, &b), ks(&a, &b));
            prop_assert!(p >= 0.0 && (0.0..=1.0).contains(&k), "psi {} ks {}", p, k);
            prop_assert!((k - ks(&b, &a)).abs() < 1e-12);
        }
    }
}
