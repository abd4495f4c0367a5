//! The compression section of a scenario's summary: the update bytes each configuration
//! moved per round, against the uncompressed (f32) configuration of the same sweep, and
//! what that cost in final test accuracy. The goal is written beside each: at most
//! 0.3 × the f32 bytes at no more than 0.5 accuracy points lost.

use super::RoundMetrics;
use super::summary::final_by_config;
use std::fmt::Write;

/// Bytes ratio and accuracy points of the goal (≤ 0.3 × f32 bytes, ≤ 0.5 points lost).
pub const GOAL_RATIO: f64 = 0.3;
pub const GOAL_POINTS: f64 = 0.5;

/// One configuration's totals: rounds with updates, updates counted, their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UpdateBytes {
    pub rounds: u64,
    pub updates: u64,
    pub bytes: u64,
}

impl UpdateBytes {
    /// Summed over `rows` (every seed of a configuration).
    pub fn of<'a>(rows: impl IntoIterator<Item = &'a RoundMetrics>) -> Self {
        rows.into_iter().filter(|r| r.reported > 0).fold(Self::default(), |a, r| Self {
            rounds: a.rounds + 1,
            updates: a.updates + u64::from(r.reported),
            bytes: a.bytes.saturating_add(r.bytes_in),
        })
    }

    pub fn per_round(&self) -> f64 {
        if self.rounds == 0 { f64::NAN } else { self.bytes as f64 / self.rounds as f64 }
    }

    pub fn per_update(&self) -> f64 {
        if self.updates == 0 { f64::NAN } else { self.bytes as f64 / self.updates as f64 }
    }
}

/// The uncompressed configuration a label compares with: the same label with its last word
/// (the compression) replaced by `f32`.
fn baseline_of<'a>(label: &str, configs: &'a [(String, bool)]) -> Option<&'a str> {
    let prefix = label.rsplit_once(' ').map_or("", |(p, _)| p);
    configs.iter().find(|(l, f32)| *f32 && l.rsplit_once(' ').map_or("", |(p, _)| p) == prefix).map(|(l, _)| l.as_str())
}

/// A Markdown section: per configuration, update bytes per round and per update, the ratio
/// to the f32 configuration's bytes per update (or to `params` × 4 when the sweep has none),
/// final test accuracy and its difference in points. `configs` lists (label, uncompressed).
pub fn table(rows: &[RoundMetrics], configs: &[(String, bool)], params: u64) -> String {
    let finals = final_by_config(rows);
    let accuracy = |label: &str| finals.iter().find(|s| s.config == label).map(|s| s.final_test_accuracy);
    let bytes = |label: &str| UpdateBytes::of(rows.iter().filter(|r| r.config == label));
    let mut out = format!(
        "\n## Update compression: bytes on the wire and accuracy\n\n\
         Update bytes are the encoded chunk messages of the counted updates, as the coordinator \
         counted them. The ratio is to the f32 configuration's bytes per update (raw f32 payload: \
         {} B per update). Goal: ≤ {GOAL_RATIO} × at ≤ {GOAL_POINTS} accuracy points lost.\n\n\
         | config | update bytes / round | bytes / update | ratio to f32 | final test accuracy | Δ accuracy (points) | goal |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
        params * 4
    );
    for (label, _) in configs {
        let b = bytes(label);
        let base = baseline_of(label, configs);
        let base_per_update = base.map_or((params * 4) as f64, |l| bytes(l).per_update());
        let ratio = b.per_update() / base_per_update;
        let acc = accuracy(label);
        let points = match (acc, base.and_then(accuracy)) {
            (Some(a), Some(f)) => (a.mean - f.mean) * 100.0,
            _ => f64::NAN,
        };
        let goal = if base == Some(label.as_str()) {
            "baseline".to_string()
        } else if points.is_nan() || ratio.is_nan() {
            "–".to_string()
        } else if ratio <= GOAL_RATIO && points >= -GOAL_POINTS {
            "met".to_string()
        } else {
            let mut why = Vec::new();
            if ratio > GOAL_RATIO {
                why.push("bytes");
            }
            if points < -GOAL_POINTS {
                why.push("accuracy");
            }
            format!("missed ({})", why.join(", "))
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.3} | {} | {} | {} |",
            label.replace('|', "\\|"),
            b.per_round(),
            b.per_update(),
            ratio,
            acc.map_or("–".to_string(), |a| a.cell()),
            if points.is_nan() { "–".to_string() } else { format!("{points:+.2}") },
            goal
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &str, round: u32, reported: u32, bytes_in: u64, acc: f64) -> RoundMetrics {
        RoundMetrics { reported, bytes_in, test_accuracy: acc, ..RoundMetrics::empty(config, 0, round) }
    }

    #[test]
    fn ratios_and_goals_are_against_the_f32_config_of_the_same_sweep() {
        let rows = vec![
            row("mu=0 f32", 1, 2, 8000, 0.90),
            row("mu=0 f32", 2, 2, 8000, 0.95),
            row("mu=0 int8", 1, 2, 2100, 0.80),
            row("mu=0 int8", 2, 2, 2100, 0.948),
            row("mu=0 top_k(0.5)", 1, 2, 6000, 0.96),
            row("mu=0 top_k(0.5)", 2, 1, 3000, 0.96),
        ];
        let configs = vec![
            ("mu=0 f32".to_string(), true),
            ("mu=0 int8".to_string(), false),
            ("mu=0 top_k(0.5)".to_string(), false),
        ];
        let t = table(&rows, &configs, 1000);
        assert!(t.contains("| mu=0 f32 | 8000 | 4000 | 1.000 |"), "{t}");
        assert!(t.contains("| mu=0 int8 | 2100 | 1050 | 0.263 |"), "{t}");
        assert!(t.contains("| -0.20 | met |"), "{t}");
        // 9000 bytes over 3 updates: 0.75 of f32, more accurate: missed on bytes only.
        assert!(t.contains("| mu=0 top_k(0.5) | 4500 | 3000 | 0.750 |") && t.contains("missed (bytes)"), "{t}");
        assert!(UpdateBytes::of(&[]).per_round().is_nan());
    }
}
