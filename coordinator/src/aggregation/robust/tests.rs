use super::*;
use crate::aggregation::FedAvgAccumulator;
use proptest::prelude::*;

/// A budget that forces blocks of [`MIN_BLOCK`] coordinates, so models over 1024 values
/// are aggregated in several blocks.
const TINY_BUDGET: usize = 1;

fn stage(updates: &[Vec<f32>], weights: &[f64]) -> SpillStage {
    let mut s = SpillStage::new(&std::env::temp_dir(), updates[0].len()).unwrap();
    for (u, w) in updates.iter().zip(weights) {
        s.append(u, *w).unwrap();
    }
    s
}

fn column(updates: &[Vec<f32>], j: usize) -> Vec<f32> {
    let mut c: Vec<f32> = updates.iter().map(|u| u[j]).collect();
    c.sort_by(f32::total_cmp);
    c
}

fn naive_median(updates: &[Vec<f32>]) -> Vec<f32> {
    (0..updates[0].len())
        .map(|j| {
            let c = column(updates, j);
            let n = c.len();
            if n % 2 == 1 { c[n / 2] } else { ((f64::from(c[n / 2 - 1]) + f64::from(c[n / 2])) / 2.0) as f32 }
        })
        .collect()
}

fn naive_trimmed(updates: &[Vec<f32>], trim: f64) -> Vec<f32> {
    let n = updates.len();
    let cut = (trim * n as f64).floor() as usize;
    (0..updates[0].len())
        .map(|j| {
            let c = column(updates, j);
            let kept = &c[cut..n - cut];
            (kept.iter().map(|x| f64::from(*x)).sum::<f64>() / kept.len() as f64) as f32
        })
        .collect()
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
}

/// Multi-Krum written out directly from Blanchard et al.'s definition.
fn naive_krum(updates: &[Vec<f32>], f: usize, m: usize) -> (Vec<f32>, Vec<usize>) {
    let n = updates.len();
    let mut scores: Vec<(f64, usize)> = (0..n)
        .map(|i| {
            let mut d: Vec<f64> = (0..n).filter(|&j| j != i).map(|j| sq_dist(&updates[i], &updates[j])).collect();
            d.sort_by(f64::total_cmp);
            (d[..n - f - 2].iter().sum(), i)
        })
        .collect();
    scores.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut chosen: Vec<usize> = scores[..m].iter().map(|s| s.1).collect();
    chosen.sort_unstable();
    let mean = (0..updates[0].len())
        .map(|j| chosen.iter().map(|&i| f64::from(updates[i][j]) / m as f64).sum::<f64>() as f32)
        .collect();
    (mean, chosen)
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * x.abs().max(1.0))
}

fn updates_strategy(max_len: usize) -> impl Strategy<Value = Vec<Vec<f32>>> {
    (1usize..max_len, 1usize..14)
        .prop_flat_map(|(len, n)| proptest::collection::vec(proptest::collection::vec(-1e3f32..1e3, len), n))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn median_and_trimmed_mean_equal_the_naive_rules(
        updates in updates_strategy(2600),
        trim in 0.0f64..0.49,
    ) {
        let n = updates.len();
        let s = stage(&updates, &vec![1.0; n]);
        let global = vec![0.5f32; updates[0].len()];
        let (med, _) = s.aggregate(&Aggregator::Median, global.clone(), TINY_BUDGET).unwrap();
        prop_assert_eq!(med, naive_median(&updates));
        let (tm, _) = s.aggregate(&Aggregator::TrimmedMean { trim }, global, TINY_BUDGET).unwrap();
        prop_assert!(close(&tm, &naive_trimmed(&updates, trim), 1e-5));
    }

    #[test]
    fn robust_rules_do_not_depend_on_arrival_order(updates in updates_strategy(1500), seed in any::<u64>()) {
        let n = updates.len();
        let mut shuffled = updates.clone();
        for i in 0..n {
            let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % n as u64) as usize;
            shuffled.swap(i, j);
        }
        let global = vec![0.0f32; updates[0].len()];
        for rule in [Aggregator::Median, Aggregator::TrimmedMean { trim: 0.2 }] {
            let a = stage(&updates, &vec![1.0; n]).aggregate(&rule, global.clone(), TINY_BUDGET).unwrap().0;
            let b = stage(&shuffled, &vec![1.0; n]).aggregate(&rule, global.clone(), TINY_BUDGET).unwrap().0;
            prop_assert_eq!(a, b, "{}", rule);
        }
    }

    #[test]
    fn multi_krum_equals_the_naive_rule(updates in updates_strategy(1300), f in 0usize..4, pick in 0usize..100) {
        let n = updates.len();
        prop_assume!(n >= 2 * f + 3);
        let m = 1 + pick % (n - f);
        let s = stage(&updates, &vec![1.0; n]);
        let global = vec![0.0f32; updates[0].len()];
        let rule = Aggregator::MultiKrum { byzantine: f as u32, select: m as u32 };
        let (got, outcome) = s.aggregate(&rule, global, TINY_BUDGET).unwrap();
        let (want, chosen) = naive_krum(&updates, f, m);
        prop_assert!(close(&got, &want, 1e-5));
        let excluded: Vec<usize> = (0..n).filter(|i| !chosen.contains(i)).collect();
        prop_assert_eq!(outcome.excluded, excluded);
    }

    #[test]
    fn norm_bound_scales_only_the_long_deltas(updates in updates_strategy(1300), factor in 0.5f64..3.0) {
        let n = updates.len();
        let weights: Vec<f64> = (0..n).map(|i| 1.0 + i as f64).collect();
        let global: Vec<f32> = (0..updates[0].len()).map(|j| (j as f32 * 0.37).sin()).collect();
        let s = stage(&updates, &weights);
        let (got, outcome) = s.aggregate(&Aggregator::NormBound { factor }, global.clone(), TINY_BUDGET).unwrap();
        let norms: Vec<f64> = updates.iter().map(|u| sq_dist(u, &global).sqrt()).collect();
        let mut sorted = norms.clone();
        sorted.sort_by(f64::total_cmp);
        let med = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        let scale: Vec<f64> = norms.iter().map(|d| if *d > factor * med { factor * med / d } else { 1.0 }).collect();
        let total: f64 = weights.iter().sum();
        let want: Vec<f32> = (0..global.len())
            .map(|j| {
                let g = f64::from(global[j]);
                (g + (0..n).map(|i| weights[i] * scale[i] * (f64::from(updates[i][j]) - g)).sum::<f64>() / total) as f32
            })
            .collect();
        prop_assert!(close(&got, &want, 1e-4));
        let scaled: Vec<usize> = outcome.scaled.iter().map(|s| s.0).collect();
        prop_assert_eq!(scaled, (0..n).filter(|&i| scale[i] < 1.0).collect::<Vec<_>>());
    }

    #[test]
    fn the_mean_through_the_stage_is_fedavg(updates in updates_strategy(1500)) {
        let n = updates.len();
        let weights: Vec<f64> = (0..n).map(|i| 3.0 + i as f64).collect();
        let mut acc = FedAvgAccumulator::new(updates[0].len());
        for (u, w) in updates.iter().zip(&weights) {
            acc.fold(u, *w).unwrap();
        }
        let (got, _) = stage(&updates, &weights).aggregate(&Aggregator::Mean, vec![0.0; updates[0].len()], TINY_BUDGET).unwrap();
        prop_assert!(close(&got, &acc.average().unwrap(), 1e-5));
    }
}

#[test]
fn boosted_and_flipped_updates_move_the_robust_rules_little() {
    // 10 honest models near 1.0, 3 attackers far away: the mean moves, the robust rules don't.
    let len = 3000;
    let mut updates: Vec<Vec<f32>> = (0..10).map(|i| vec![1.0 + (i as f32 - 4.5) * 0.01; len]).collect();
    updates.extend((0..3).map(|_| vec![100.0; len]));
    let s = stage(&updates, &[1.0; 13]);
    let global = vec![0.0f32; len];
    let mean = s.aggregate(&Aggregator::Mean, global.clone(), DEFAULT_BLOCK_BUDGET_BYTES).unwrap().0;
    assert!(mean[0] > 20.0, "the mean follows the attackers: {}", mean[0]);
    for rule in [
        Aggregator::Median,
        Aggregator::TrimmedMean { trim: 0.25 },
        Aggregator::MultiKrum { byzantine: 3, select: 0 },
        Aggregator::NormBound { factor: 1.5 },
    ] {
        let (y, outcome) = s.aggregate(&rule, global.clone(), DEFAULT_BLOCK_BUDGET_BYTES).unwrap();
        let limit = if matches!(rule, Aggregator::NormBound { .. }) { 1.6 } else { 1.06 };
        assert!(y.iter().all(|v| (0.9..limit).contains(v)), "{rule}: {}", y[0]);
        if let Aggregator::MultiKrum { .. } = rule {
            assert_eq!(outcome.excluded, vec![10, 11, 12]);
        }
        if let Aggregator::NormBound { .. } = rule {
            assert_eq!(outcome.scaled.iter().map(|s| s.0).collect::<Vec<_>>(), vec![10, 11, 12]);
        }
    }
}

#[test]
fn a_refused_append_changes_nothing() {
    let honest: Vec<Vec<f32>> = (0..5).map(|i| vec![i as f32; 2100]).collect();
    let clean = stage(&honest, &[1.0; 5]);
    let mut s = SpillStage::new(&std::env::temp_dir(), 2100).unwrap();
    for (i, u) in honest.iter().enumerate() {
        s.append(u, 1.0).unwrap();
        if i == 2 {
            assert_eq!(s.append(&[9.0; 7], 1.0), Err(AggregationError::Length { expected: 2100, got: 7 }));
            assert_eq!(s.append(&[9.0; 2100], 0.0), Err(AggregationError::Weight(0.0)));
        }
    }
    assert_eq!(s.count(), 5);
    for rule in [Aggregator::Median, Aggregator::TrimmedMean { trim: 0.2 }, Aggregator::Mean] {
        assert_eq!(
            s.aggregate(&rule, vec![0.0; 2100], TINY_BUDGET).unwrap(),
            clean.aggregate(&rule, vec![0.0; 2100], TINY_BUDGET).unwrap()
        );
    }
}

#[test]
fn rules_that_do_not_fit_the_round_are_refused() {
    let s = stage(&[vec![1.0; 4], vec![2.0; 4], vec![3.0; 4], vec![4.0; 4]], &[1.0; 4]);
    let e = s.aggregate(&Aggregator::MultiKrum { byzantine: 1, select: 0 }, vec![0.0; 4], TINY_BUDGET).unwrap_err();
    assert!(e.to_string().contains("needs at least 5 updates, the round has 4"), "{e}");
    assert_eq!(
        SpillStage::new(&std::env::temp_dir(), 4).unwrap().aggregate(&Aggregator::Median, vec![0.0; 4], 1),
        Err(AggregationError::Empty)
    );
    assert!(s.aggregate(&Aggregator::Median, vec![0.0; 3], 1).is_err());
}

#[test]
fn median_and_trim_helpers() {
    assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    assert_eq!(trimmed_mean(&mut [100.0, 1.0, 2.0, 3.0, -50.0], 1), 2.0);
    assert_eq!(trimmed_mean(&mut [5.0], 0), 5.0);
}
