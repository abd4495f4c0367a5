//! Grouping of metric rows shared by plots and summaries (private to `report`).

use std::collections::BTreeMap;

use super::RoundMetrics;

/// The rows of each config, configs in order of first appearance, rows in input order.
pub(super) fn by_config(rows: &[RoundMetrics]) -> Vec<(&str, Vec<&RoundMetrics>)> {
    let mut groups: Vec<(&str, Vec<&RoundMetrics>)> = Vec::new();
    for row in rows {
        match groups.iter_mut().find(|(c, _)| *c == row.config) {
            Some((_, g)) => g.push(row),
            None => groups.push((row.config.as_str(), vec![row])),
        }
    }
    groups
}

/// The rows of each seed sorted by round (stable: equal rounds keep input order).
pub(super) fn by_seed<'a>(rows: &[&'a RoundMetrics]) -> BTreeMap<u64, Vec<&'a RoundMetrics>> {
    let mut seeds: BTreeMap<u64, Vec<&RoundMetrics>> = BTreeMap::new();
    for row in rows {
        seeds.entry(row.seed).or_default().push(row);
    }
    for series in seeds.values_mut() {
        series.sort_by_key(|r| r.round);
    }
    seeds
}

/// The finite values of `value` at each round, over all given rows (i.e. all seeds).
pub(super) fn by_round(rows: &[&RoundMetrics], value: impl Fn(&RoundMetrics) -> f64) -> BTreeMap<u32, Vec<f64>> {
    let mut rounds: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for row in rows {
        let v = value(row);
        if v.is_finite() {
            rounds.entry(row.round).or_default().push(v);
        }
    }
    rounds
}

/// The last finite value of `value` in a series sorted by round, NaN when there is none.
pub(super) fn last_finite(series: &[&RoundMetrics], value: impl Fn(&RoundMetrics) -> f64) -> f64 {
    series.iter().rev().map(|r| value(r)).find(|v| v.is_finite()).unwrap_or(f64::NAN)
}

pub(super) fn mean(values: &[f64]) -> f64 {
    if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 }
}
