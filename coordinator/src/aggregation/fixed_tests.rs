use super::*;
use proptest::prelude::*;

/// Weights together of the strategy's updates (24 × 100,000) and more.
const COHORT_WEIGHT: f64 = 2.5e6;

fn updates_strategy() -> impl Strategy<Value = (Vec<(Vec<f32>, f64)>, Vec<f32>)> {
    (1usize..48).prop_flat_map(|len| {
        (
            proptest::collection::vec(
                (proptest::collection::vec(-30.0f32..30.0, len), (1u32..100_000).prop_map(f64::from)),
                1..24,
            ),
            proptest::collection::vec(-0.5f32..0.5, len),
        )
    })
}

/// A seeded Fisher-Yates permutation of `0..n`.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.swap(i, (x % (i as u64 + 1)) as usize);
    }
    p
}

fn folded(len: usize, scale: FixedScale, updates: &[(Vec<f32>, f64)], order: &[usize]) -> FixedPointAccumulator {
    let mut acc = FixedPointAccumulator::new(len, scale).expect("the sum's memory");
    for &i in order {
        acc.fold(&updates[i].0, updates[i].1).unwrap();
    }
    acc
}

proptest! {
    /// Arrival order does not change the result: the sum and the average are bit-identical.
    #[test]
    fn arrival_order_does_not_change_a_bit((updates, global) in updates_strategy(), seed in any::<u64>()) {
        let scale = FixedScale::for_round(&global, COHORT_WEIGHT);
        let len = global.len();
        let forward: Vec<usize> = (0..updates.len()).collect();
        let a = folded(len, scale, &updates, &forward);
        let b = folded(len, scale, &updates, &permutation(updates.len(), seed));
        prop_assert_eq!(&a.sum(), &b.sum());
        prop_assert_eq!(a.weight_units, b.weight_units);
        let (x, y) = (a.average().unwrap(), b.average().unwrap());
        prop_assert!(x.iter().zip(&y).all(|(x, y)| x.to_bits() == y.to_bits()));
    }

    /// A broken upload folded halfway (any prefix of its chunks), then subtracted, leaves
    /// the aggregate bit-identical to the honest-only aggregate.
    #[test]
    fn a_broken_upload_folded_halfway_leaves_no_trace(
        (updates, global) in updates_strategy(),
        broken in proptest::collection::vec(-200.0f32..200.0, 48),
        weight in 1.0f64..1e6,
        cut in 0usize..48,
        at in 0usize..24,
    ) {
        let scale = FixedScale::for_round(&global, COHORT_WEIGHT);
        let len = global.len();
        let honest: Vec<usize> = (0..updates.len()).collect();
        let want = folded(len, scale, &updates, &honest);
        // The broken upload arrives in 3-value chunks between honest updates, folds the
        // chunks it got through, then breaks and is subtracted chunk by chunk.
        let at = at % (updates.len() + 1);
        let mut acc = folded(len, scale, &updates, &honest[..at]);
        let cut = cut % (len + 1);
        let broken = &broken[..len];
        let mut offset = 0;
        while offset < cut {
            let end = (offset + 3).min(cut);
            acc.fold_range(offset, &broken[offset..end], weight).unwrap();
            offset = end;
        }
        for &i in &honest[at..] {
            acc.fold(&updates[i].0, updates[i].1).unwrap();
        }
        let mut offset = 0;
        while offset < cut {
            let end = (offset + 3).min(cut);
            acc.unfold_range(offset, &broken[offset..end], weight).unwrap();
            offset = end;
        }
        prop_assert_eq!(&acc.sum(), &want.sum());
        prop_assert_eq!(acc.contributions(), want.contributions());
        let (x, y) = (acc.average().unwrap(), want.average().unwrap());
        prop_assert!(x.iter().zip(&y).all(|(x, y)| x.to_bits() == y.to_bits()));
    }

    /// Against the exact weighted mean (computed in f64): within half a unit of the scale,
    /// plus the final rounding to f32.
    #[test]
    fn error_against_the_exact_mean_is_within_the_documented_bound((updates, global) in updates_strategy()) {
        let scale = FixedScale::for_round(&global, COHORT_WEIGHT);
        let len = global.len();
        let order: Vec<usize> = (0..updates.len()).collect();
        let avg = folded(len, scale, &updates, &order).average().unwrap();
        let total: f64 = updates.iter().map(|(_, w)| w).sum();
        for (i, a) in avg.iter().enumerate() {
            let exact = updates.iter().map(|(u, w)| w * f64::from(u[i])).sum::<f64>() / total;
            let bound = scale.resolution() / 2.0 + exact.abs() * f64::from(f32::EPSILON);
            prop_assert!((f64::from(*a) - exact).abs() <= bound * 1.000_001, "{a} vs {exact} (bound {bound})");
        }
    }

    /// Unfolding a counted update in any order restores the state before it exactly.
    #[test]
    fn unfold_is_the_exact_inverse_of_fold((updates, global) in updates_strategy(), seed in any::<u64>()) {
        let scale = FixedScale::for_round(&global, COHORT_WEIGHT);
        let len = global.len();
        let order: Vec<usize> = (0..updates.len()).collect();
        let mut acc = folded(len, scale, &updates, &order);
        for i in permutation(updates.len(), seed) {
            acc.unfold(&updates[i].0, updates[i].1).unwrap();
        }
        prop_assert!(acc.sum().iter().all(|s| *s == 0));
        prop_assert_eq!(acc.weight_units, 0);
        prop_assert_eq!(acc.contributions(), 0);
    }
}

#[test]
fn the_scale_follows_the_model_with_headroom() {
    assert_eq!(FixedScale::for_round(&[0.0, 0.0], 10.0).bound(), 256.0, "at least 2^8");
    assert_eq!(FixedScale::for_round(&[0.3, -0.9], 10.0).bound(), 256.0);
    assert_eq!(FixedScale::for_round(&[3.0, -5.0], 10.0).bound(), 2048.0, "8 × 256");
    // 10 clients with 1,000 samples: W = 14, s = 62 − 14 − 8 = 40.
    let s = FixedScale::for_round(&[1.0], 10_000.0);
    assert_eq!((s.resolution(), s.weight_budget()), (2f64.powi(-40), 16_384.0));
    // The widest budget: s = 62 − 32 − 8 = 22.
    let s = FixedScale::for_round(&[1.0], 1e12);
    assert_eq!((s.resolution(), s.weight_budget()), (2f64.powi(-22), 2f64.powi(32)));
}

#[test]
fn a_value_beyond_the_range_is_refused_and_the_sum_is_untouched() {
    let scale = FixedScale::for_round(&[1.0; 4], 100.0);
    let mut acc = FixedPointAccumulator::new(4, scale).expect("the sum's memory");
    acc.fold(&[1.0, 2.0, 3.0, 4.0], 3.0).unwrap();
    let before = acc.sum();
    let err = acc.fold(&[1.0, 300.0, 1.0, 1.0], 2.0).unwrap_err();
    assert_eq!(err, AggregationError::OutOfRange { index: 1, value: 300.0, bound: 256.0 });
    assert!(err.to_string().contains("index 1"), "{err}");
    assert_eq!(acc.fold(&[1.0, f32::NAN, 1.0, 1.0], 2.0), Err(AggregationError::NotFinite(1)));
    assert_eq!(acc.fold_range(2, &[f32::INFINITY, 1.0], 2.0), Err(AggregationError::NotFinite(2)));
    assert_eq!(acc.sum(), before);
    assert_eq!(acc.contributions(), 1);
    assert_eq!(acc.average().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn weights_beyond_the_budget_and_bad_lengths_are_refused() {
    let mut acc = FixedPointAccumulator::new(2, FixedScale::for_round(&[1.0, 1.0], 1000.0)).expect("the sum's memory");
    let budget = acc.scale().weight_budget();
    assert_eq!(budget, 1024.0);
    assert!(matches!(acc.fold(&[1.0, 1.0], budget * 2.0), Err(AggregationError::WeightBudget { .. })));
    acc.fold(&[1.0, 1.0], budget * 0.75).unwrap();
    assert!(matches!(acc.fold(&[1.0, 1.0], budget * 0.5), Err(AggregationError::WeightBudget { .. })));
    assert_eq!(acc.fold(&[1.0], 1.0), Err(AggregationError::Length { expected: 2, got: 1 }));
    assert!(acc.fold_range(1, &[1.0, 1.0], 1.0).is_err(), "a range past the end");
    assert_eq!(acc.fold(&[1.0, 1.0], 0.0), Err(AggregationError::Weight(0.0)));
    assert_eq!(acc.contributions(), 1);
    assert_eq!(
        FixedPointAccumulator::new(2, acc.scale()).expect("the sum's memory").average(),
        Err(AggregationError::Empty)
    );
}

#[test]
fn the_largest_weights_and_values_do_not_overflow() {
    // Every value at the bound, the whole weight budget: the partial sums stay below 2^63.
    let scale = FixedScale::for_round(&[1.0; 3], 1e12);
    let mut acc = FixedPointAccumulator::new(3, scale).expect("the sum's memory");
    let b = scale.bound() as f32;
    let w = scale.weight_budget() / 4.0;
    for _ in 0..4 {
        acc.fold(&[b, -b, b], w).unwrap();
    }
    assert_eq!(acc.average().unwrap(), vec![b, -b, b]);
}

#[test]
fn threads_and_chunks_give_the_same_bits() {
    // Large enough for the threaded path; the reference folds 4 KiB ranges on one thread.
    let len = PARALLEL_MIN_VALUES + 12_345;
    let scale = FixedScale::for_round(&[1.0], 1e4);
    let update: Vec<f32> = (0..len).map(|i| ((i as f32) * 0.618).sin() * 3.0).collect();
    let mut whole = FixedPointAccumulator::new(len, scale).expect("the sum's memory");
    whole.fold(&update, 1234.0).unwrap();
    let mut pieces = FixedPointAccumulator::new(len, scale).expect("the sum's memory");
    for (i, c) in update.chunks(1024).enumerate() {
        pieces.fold_range(i * 1024, c, 1234.0).unwrap();
    }
    assert!(whole.sum() == pieces.sum());
    // A value out of range on the threaded path is reported and fully undone.
    let mut bad = update.clone();
    bad[len - 3] = 1e6;
    let before = whole.sum();
    assert!(matches!(whole.fold(&bad, 7.0), Err(AggregationError::OutOfRange { index, .. }) if index == len - 3));
    assert!(whole.sum() == before);
}

#[test]
fn folding_received_bytes_range_by_range_equals_folding_the_update() {
    let len = 10_000;
    let scale = FixedScale::for_round(&[0.5], 100.0);
    let update: Vec<f32> = (0..len).map(|i| ((i as f32) * 0.37).cos() * 2.0).collect();
    let le = fedra_proto::chunking::encode_le(&update);
    let mut whole = FixedPointAccumulator::new(len, scale).expect("the sum's memory");
    whole.fold(&update, 12.0).unwrap();
    let mut streamed = FixedPointAccumulator::new(len, scale).expect("the sum's memory");
    for (i, piece) in le.chunks(4 * 999).enumerate() {
        streamed.fold_le_range(i * 999, piece, 12.0).unwrap();
    }
    streamed.count(12.0).unwrap();
    assert!(whole.sum() == streamed.sum());
    assert_eq!(whole.average().unwrap(), streamed.average().unwrap());
    // A bad value in received bytes is refused and its piece undone; whole pieces unfold.
    let mut bad = le[..400].to_vec();
    bad[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    let before = streamed.sum();
    assert_eq!(streamed.fold_le_range(0, &bad, 3.0), Err(AggregationError::NotFinite(10)));
    assert!(matches!(streamed.fold_le_range(0, &bad[..7], 3.0), Err(AggregationError::Rule(_))));
    streamed.fold_le_range(5, &le[..400], 3.0).unwrap();
    streamed.unfold_le_range(5, &le[..400], 3.0).unwrap();
    assert!(streamed.sum() == before);
}

#[test]
fn uploads_folded_on_several_threads_at_once_give_the_same_bits() {
    // Three updates over several shards, each folded chunk by chunk (chunks straddle shard
    // edges) on its own thread through a RangeFolder while the others fold: the same bits
    // as folding them one after the other.
    let len = 3 * SHARD_VALUES + 1000;
    let scale = FixedScale::for_round(&[1.0], 1e4);
    let updates: Vec<(Vec<f32>, f64)> =
        (0..3).map(|k| ((0..len).map(|i| ((i * (k + 1)) as f32 * 0.001).sin()).collect(), 10.0 + k as f64)).collect();
    let mut serial = FixedPointAccumulator::new(len, scale).expect("the sum's memory");
    for (u, w) in &updates {
        serial.fold(u, *w).unwrap();
    }
    let mut parallel = FixedPointAccumulator::new(len, scale).expect("the sum's memory");
    let folders: Vec<RangeFolder> = updates.iter().map(|(_, w)| parallel.folder(*w).unwrap()).collect();
    std::thread::scope(|s| {
        for ((u, _), folder) in updates.iter().zip(&folders) {
            s.spawn(move || {
                let le = fedra_proto::chunking::encode_le(u);
                for (i, c) in le.chunks(4 * 100_003).enumerate() {
                    folder.fold_le_range(i * 100_003, c).unwrap();
                }
            });
        }
    });
    // A refused range from a folder leaves no trace either.
    let mut bad = fedra_proto::chunking::encode_le(&updates[0].0[..10]);
    bad[8..12].copy_from_slice(&1e9f32.to_le_bytes());
    assert!(matches!(folders[0].fold_le_range(SHARD_VALUES - 5, &bad), Err(AggregationError::OutOfRange { .. })));
    for (_, w) in &updates {
        parallel.count(*w).unwrap();
    }
    assert!(serial.sum() == parallel.sum());
    let (x, y) = (serial.average().unwrap(), parallel.average().unwrap());
    assert!(x.iter().zip(&y).all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// Resident memory of this process (nextest runs each test in its own), in bytes.
#[cfg(target_os = "linux")]
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
}

#[cfg(target_os = "linux")]
#[test]
fn a_dropped_sum_gives_its_memory_back_to_the_system() {
    // Freeing a large buffer raises glibc's mmap threshold, after which shard-sized
    // allocations come from the heap and stay resident once freed: the sum must not use it.
    drop(std::hint::black_box(vec![1u8; 16 << 20]));
    let len = 8 << 20; // 64 MiB of i64
    let scale = FixedScale::for_round(&[1.0], 1.0);
    let mut acc = FixedPointAccumulator::new(len, scale).expect("the sum's memory");
    acc.fold(&vec![0.5; len], 1.0).unwrap();
    // A live allocation above the sum's memory, as a coordinator always has: heap memory
    // below it cannot be trimmed.
    let pin = std::hint::black_box(vec![1u8; 1024]);
    let held = rss();
    drop(acc);
    let after = rss();
    assert!(held - after >= 60 << 20, "dropping a 64 MiB sum freed {} MiB", (held - after) >> 20);
    drop(pin);
}
