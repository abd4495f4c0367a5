//! Drift references (`fedra_types::drift`) on the wire, both ways: clients send their
//! training inputs' sketches with an update, the coordinator publishes the merged reference
//! beside a checkpoint, and inference nodes read it back.
//!
//! Buckets travel as parallel key/count arrays in ascending key order.

use std::collections::BTreeMap;

use crate::pb;
use fedra_types::drift::{DataReference, FeatureSketch, MAX_BUCKETS};

pub fn reference_to_pb(r: &DataReference) -> pb::DataReference {
    pb::DataReference { features: r.features.iter().map(sketch_to_pb).collect(), class_counts: r.class_counts.clone() }
}

/// Reads a reference sent by a peer. Every sketch must satisfy
/// [`FeatureSketch::validate`]; key/count arrays of different lengths, duplicate keys and
/// more than [`MAX_BUCKETS`] keys per side are rejected before any map is built. Errors name
/// the feature index. Dimensions are not checked here: the caller knows the model's and
/// calls [`DataReference::validate`].
pub fn reference_from_pb(p: &pb::DataReference) -> Result<DataReference, String> {
    let features = p
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| sketch_from_pb(f).map_err(|e| format!("drift reference feature {i}: {e}")))
        .collect::<Result<_, _>>()?;
    Ok(DataReference { features, class_counts: p.class_counts.clone() })
}

fn sketch_to_pb(s: &FeatureSketch) -> pb::FeatureSketch {
    pb::FeatureSketch {
        count: s.count,
        sum: s.sum,
        sum_squares: s.sum_squares,
        zeros: s.zeros,
        positive_keys: s.positive.keys().copied().collect(),
        positive_counts: s.positive.values().copied().collect(),
        negative_keys: s.negative.keys().copied().collect(),
        negative_counts: s.negative.values().copied().collect(),
    }
}

fn sketch_from_pb(p: &pb::FeatureSketch) -> Result<FeatureSketch, String> {
    let sketch = FeatureSketch {
        count: p.count,
        sum: p.sum,
        sum_squares: p.sum_squares,
        zeros: p.zeros,
        positive: buckets("positive", &p.positive_keys, &p.positive_counts)?,
        negative: buckets("negative", &p.negative_keys, &p.negative_counts)?,
    };
    sketch.validate().map_err(|e| e.to_string())?;
    Ok(sketch)
}

fn buckets(side: &str, keys: &[i32], counts: &[u64]) -> Result<BTreeMap<i32, u64>, String> {
    if keys.len() != counts.len() {
        return Err(format!("{side} side has {} keys but {} counts", keys.len(), counts.len()));
    }
    if keys.len() > MAX_BUCKETS {
        return Err(format!("{side} side has {} buckets, more than {MAX_BUCKETS}", keys.len()));
    }
    let mut map = BTreeMap::new();
    for (&key, &count) in keys.iter().zip(counts) {
        if map.insert(key, count).is_some() {
            return Err(format!("{side} side repeats bucket key {key}"));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let mut r = DataReference::new(2, 2);
        for row in [[-3.5, 0.0], [2.0, 1e-3], [2.1, f32::NAN]] {
            r.add_row(&row, Some(1)).unwrap();
        }
        let wire = reference_to_pb(&r);
        assert_eq!(reference_from_pb(&wire).unwrap(), r);

        let mut bad = wire.clone();
        bad.features[1].positive_counts.push(1);
        assert!(reference_from_pb(&bad).unwrap_err().contains("feature 1"));
        let mut bad = wire.clone();
        let key = bad.features[0].negative_keys[0];
        bad.features[0].negative_keys.push(key);
        bad.features[0].negative_counts.push(1);
        assert!(reference_from_pb(&bad).unwrap_err().contains("repeats"));
        let mut bad = wire.clone();
        bad.features[0].positive_keys = (0..=MAX_BUCKETS as i32).collect();
        bad.features[0].positive_counts = vec![1; MAX_BUCKETS + 1];
        assert!(reference_from_pb(&bad).unwrap_err().contains("more than"));
        let mut bad = wire;
        bad.features[1].count += 1;
        assert!(reference_from_pb(&bad).unwrap_err().contains("feature 1"));
    }
}
