//! Summaries of runs: one line per config ([`final_by_config`], [`summary_table`]) and the
//! comparison of two runs ([`compare`]).
//!
//! Contract:
//! - A *series* is the rows of one (config, seed), taken in round order. Rows are expected
//!   to be unique per (config, seed, round); nothing is deduplicated.
//! - The *final* value of a metric in a series is its value at the **latest round where it
//!   is finite** (NaN = not measured is skipped: `global_train_loss` of the last round is
//!   only known one round later, and evaluation may run every few rounds). A series with
//!   no finite value of a metric does not count towards that metric's statistics.
//! - Over series: the mean and the **sample** standard deviation (n − 1 denominator; 0 for
//!   a single series; both NaN when no series has a value) — see [`MeanStd`].
//! - `final_round` is the largest round of any series; `total_dropped` and the byte
//!   totals are sums over **all** rows (every seed, every round); `mean_wall_seconds` is
//!   the mean over all rows with a finite `wall_seconds`.
//! - Configs appear in order of their first row in the input.
//! - Markdown: numbers with 4 decimals, `mean ± std`; a value that is not there is `–`;
//!   byte counts in binary units (KiB, MiB, …); a `|` in a label is escaped.
//! - [`compare`] pools each run: every (config, seed) series of a run counts as one
//!   sample, whatever its config. Differences are always `b − a`. To compare the configs
//!   inside one run, use [`summary_table`].

use std::collections::BTreeMap;
use std::fmt::Write;

use super::RoundMetrics;
use super::series;

/// Mean and sample standard deviation of one number over seeds (series).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanStd {
    /// NaN when `n == 0`.
    pub mean: f64,
    /// Sample standard deviation (n − 1 denominator): 0 when `n == 1`, NaN when `n == 0`.
    pub std: f64,
    /// How many series had a finite value.
    pub n: usize,
}

impl MeanStd {
    /// Mean and sample std of the finite numbers in `values` (others are ignored).
    pub fn of(values: &[f64]) -> MeanStd {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let n = finite.len();
        let mean = series::mean(&finite);
        let std = match n {
            0 => f64::NAN,
            1 => 0.0,
            _ => (finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt(),
        };
        MeanStd { mean, std, n }
    }

    pub(super) fn cell(&self) -> String {
        if self.n == 0 { "–".to_string() } else { format!("{:.4} ± {:.4}", self.mean, self.std) }
    }
}

/// The end state of one config (or, in [`compare`], of one whole run).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSummary {
    pub config: String,
    /// Number of seeds (series).
    pub seeds: usize,
    /// The largest round of any seed.
    pub final_round: u32,
    pub final_test_accuracy: MeanStd,
    pub final_test_loss: MeanStd,
    pub final_global_train_loss: MeanStd,
    pub final_train_loss: MeanStd,
    /// Sum over all rows (seeds and rounds).
    pub total_dropped: u64,
    /// Mean over all rows with a finite `wall_seconds`; NaN when none.
    pub mean_wall_seconds: f64,
    /// Sums over all rows (seeds and rounds).
    pub total_bytes_in: u64,
    pub total_bytes_out: u64,
}

fn summarize(config: &str, rows: &[&RoundMetrics], series: &[Vec<&RoundMetrics>]) -> ConfigSummary {
    let finals = |value: fn(&RoundMetrics) -> f64| {
        let values: Vec<f64> = series.iter().map(|s| series::last_finite(s, value)).collect();
        MeanStd::of(&values)
    };
    let walls: Vec<f64> = rows.iter().map(|r| r.wall_seconds).filter(|w| w.is_finite()).collect();
    ConfigSummary {
        config: config.to_string(),
        seeds: series.len(),
        final_round: rows.iter().map(|r| r.round).max().unwrap_or(0),
        final_test_accuracy: finals(|r| r.test_accuracy),
        final_test_loss: finals(|r| r.test_loss),
        final_global_train_loss: finals(|r| r.global_train_loss),
        final_train_loss: finals(|r| r.train_loss),
        total_dropped: rows.iter().map(|r| u64::from(r.dropped)).sum(),
        mean_wall_seconds: series::mean(&walls),
        total_bytes_in: rows.iter().fold(0u64, |a, r| a.saturating_add(r.bytes_in)),
        total_bytes_out: rows.iter().fold(0u64, |a, r| a.saturating_add(r.bytes_out)),
    }
}

/// One [`ConfigSummary`] per config, in order of first appearance in `rows`.
pub fn final_by_config(rows: &[RoundMetrics]) -> Vec<ConfigSummary> {
    series::by_config(rows)
        .into_iter()
        .map(|(config, group)| {
            let seeds: Vec<_> = series::by_seed(&group).into_values().collect();
            summarize(config, &group, &seeds)
        })
        .collect()
}

/// All of a run pooled: one series per (config, seed).
fn pooled(label: &str, rows: &[RoundMetrics]) -> ConfigSummary {
    let all: Vec<&RoundMetrics> = rows.iter().collect();
    let series: Vec<_> =
        series::by_config(rows).into_iter().flat_map(|(_, group)| series::by_seed(&group).into_values()).collect();
    summarize(label, &all, &series)
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn num(v: f64) -> String {
    if v.is_nan() { "–".to_string() } else { format!("{v:.4}") }
}

fn diff(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() { "–".to_string() } else { format!("{:+.4}", b - a) }
}

/// `n` bytes in binary units: `512 B`, `1.50 KiB`, `3.25 MiB`, …
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

fn signed_bytes(a: u64, b: u64) -> String {
    if b >= a { format!("+{}", bytes(b - a)) } else { format!("-{}", bytes(a - b)) }
}

/// A Markdown table, one line per config (see the [module docs](self)).
pub fn summary_table(rows: &[RoundMetrics]) -> String {
    let mut out = String::from(
        "| config | seeds | final round | test accuracy | test loss | global train loss \
         | train loss | dropped | mean round time (s) | bytes in | bytes out |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in final_by_config(rows) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            escape(&s.config),
            s.seeds,
            s.final_round,
            s.final_test_accuracy.cell(),
            s.final_test_loss.cell(),
            s.final_global_train_loss.cell(),
            s.final_train_loss.cell(),
            s.total_dropped,
            num(s.mean_wall_seconds),
            bytes(s.total_bytes_in),
            bytes(s.total_bytes_out),
        );
    }
    out
}

/// A Markdown comparison of two runs: final metrics side by side with the difference
/// `b − a`, then test accuracy per round for both (see the [module docs](self)).
pub fn compare(a: &[RoundMetrics], b: &[RoundMetrics], label_a: &str, label_b: &str) -> String {
    let (la, lb) = (escape(label_a), escape(label_b));
    let (sa, sb) = (pooled(label_a, a), pooled(label_b, b));
    let mut out = format!("### {la} vs {lb}\n\n");
    let _ = writeln!(
        out,
        "Final values: mean ± std over each run's (config, seed) series \
         ({} for {la}, {} for {lb}); difference = {lb} − {la}.\n",
        sa.seeds, sb.seeds
    );
    let _ = writeln!(out, "| metric | {la} | {lb} | {lb} − {la} |");
    out.push_str("|---|---:|---:|---:|\n");
    type Get = fn(&ConfigSummary) -> MeanStd;
    let metrics: [(&str, Get); 4] = [
        ("final test accuracy", |s| s.final_test_accuracy),
        ("final test loss", |s| s.final_test_loss),
        ("final global train loss", |s| s.final_global_train_loss),
        ("final train loss", |s| s.final_train_loss),
    ];
    for (name, get) in metrics {
        let (ma, mb) = (get(&sa), get(&sb));
        let _ = writeln!(out, "| {name} | {} | {} | {} |", ma.cell(), mb.cell(), diff(ma.mean, mb.mean));
    }
    let _ = writeln!(
        out,
        "| final round | {} | {} | {:+} |",
        sa.final_round,
        sb.final_round,
        i64::from(sb.final_round) - i64::from(sa.final_round)
    );
    let _ = writeln!(
        out,
        "| total dropped | {} | {} | {:+} |",
        sa.total_dropped,
        sb.total_dropped,
        i128::from(sb.total_dropped) - i128::from(sa.total_dropped)
    );
    let _ = writeln!(
        out,
        "| mean round time (s) | {} | {} | {} |",
        num(sa.mean_wall_seconds),
        num(sb.mean_wall_seconds),
        diff(sa.mean_wall_seconds, sb.mean_wall_seconds)
    );
    let _ = writeln!(
        out,
        "| bytes in | {} | {} | {} |",
        bytes(sa.total_bytes_in),
        bytes(sb.total_bytes_in),
        signed_bytes(sa.total_bytes_in, sb.total_bytes_in)
    );
    let _ = writeln!(
        out,
        "| bytes out | {} | {} | {} |",
        bytes(sa.total_bytes_out),
        bytes(sb.total_bytes_out),
        signed_bytes(sa.total_bytes_out, sb.total_bytes_out)
    );

    out.push_str("\n#### Test accuracy per round\n\n");
    let per_round = |rows: &[RoundMetrics]| -> BTreeMap<u32, f64> {
        let all: Vec<&RoundMetrics> = rows.iter().collect();
        series::by_round(&all, |r| r.test_accuracy)
            .into_iter()
            .map(|(round, values)| (round, series::mean(&values)))
            .collect()
    };
    let (ra, rb) = (per_round(a), per_round(b));
    let mut rounds: Vec<u32> = ra.keys().chain(rb.keys()).copied().collect();
    rounds.sort_unstable();
    rounds.dedup();
    if rounds.is_empty() {
        out.push_str("(no test accuracy measured in either run)\n");
        return out;
    }
    out.push_str("Mean over each run's series that measured the round.\n\n");
    let _ = writeln!(out, "| round | {la} | {lb} | {lb} − {la} |");
    out.push_str("|---:|---:|---:|---:|\n");
    for round in rounds {
        let va = ra.get(&round).copied().unwrap_or(f64::NAN);
        let vb = rb.get(&round).copied().unwrap_or(f64::NAN);
        let _ = writeln!(out, "| {round} | {} | {} | {} |", num(va), num(vb), diff(va, vb));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &str, seed: u64, round: u32, acc: f64) -> RoundMetrics {
        RoundMetrics {
            selected: 5,
            reported: 4,
            dropped: 1,
            train_loss: 1.0,
            test_loss: 1.0 - acc,
            test_accuracy: acc,
            bytes_out: 1024,
            bytes_in: 512,
            wall_seconds: 0.5,
            ..RoundMetrics::empty(config, seed, round)
        }
    }

    /// "good": seeds 1, 2, 3 end at accuracy 0.7, 0.8, 0.9 (mean 0.8, sample std 0.1);
    /// "bad": one seed ending at 0.4, and its last round has no evaluation.
    fn example() -> Vec<RoundMetrics> {
        let mut rows = Vec::new();
        for (seed, end) in [(1, 0.7), (2, 0.8), (3, 0.9)] {
            rows.push(row("good", seed, 0, 0.1));
            let mut last = row("good", seed, 1, end);
            last.global_train_loss = f64::NAN;
            rows.push(last);
        }
        // global_train_loss of round 0 is known, of round 1 not (as in a real run).
        rows[0].global_train_loss = 0.3;
        rows[2].global_train_loss = 0.5;
        rows[4].global_train_loss = 0.7;
        rows.push(row("bad", 9, 0, 0.2));
        rows.push(row("bad", 9, 1, 0.4));
        let mut unmeasured = row("bad", 9, 2, f64::NAN);
        unmeasured.dropped = 4;
        unmeasured.wall_seconds = 1.5;
        rows.push(unmeasured);
        rows
    }

    #[test]
    fn mean_std_by_hand() {
        let m = MeanStd::of(&[0.7, 0.8, 0.9]);
        assert_eq!(m.n, 3);
        assert!((m.mean - 0.8).abs() < 1e-12);
        assert!((m.std - 0.1).abs() < 1e-12);
        let one = MeanStd::of(&[2.0, f64::NAN]);
        assert_eq!((one.mean, one.std, one.n), (2.0, 0.0, 1));
        let none = MeanStd::of(&[f64::NAN]);
        assert!(none.mean.is_nan() && none.std.is_nan() && none.n == 0);
    }

    #[test]
    fn final_by_config_numbers() {
        let s = final_by_config(&example());
        assert_eq!(s.len(), 2);
        let (good, bad) = (&s[0], &s[1]);
        assert_eq!(good.config, "good");
        assert_eq!(good.seeds, 3);
        assert_eq!(good.final_round, 1);
        assert!((good.final_test_accuracy.mean - 0.8).abs() < 1e-12);
        assert!((good.final_test_accuracy.std - 0.1).abs() < 1e-12);
        assert!((good.final_test_loss.mean - 0.2).abs() < 1e-12);
        // Latest finite global_train_loss per seed: 0.3, 0.5, 0.7.
        assert!((good.final_global_train_loss.mean - 0.5).abs() < 1e-12);
        assert!((good.final_global_train_loss.std - 0.2).abs() < 1e-12);
        assert_eq!(good.total_dropped, 6);
        assert_eq!(good.total_bytes_in, 6 * 512);
        assert_eq!(good.total_bytes_out, 6 * 1024);
        assert!((good.mean_wall_seconds - 0.5).abs() < 1e-12);

        assert_eq!(bad.seeds, 1);
        assert_eq!(bad.final_round, 2);
        // Round 2 was not evaluated: the final accuracy is round 1's.
        assert_eq!(bad.final_test_accuracy.mean, 0.4);
        assert_eq!(bad.final_test_accuracy.std, 0.0);
        assert_eq!(bad.final_global_train_loss.n, 0);
        assert_eq!(bad.total_dropped, 1 + 1 + 4);
        assert!((bad.mean_wall_seconds - 2.5 / 3.0).abs() < 1e-12);

        assert!(good.final_test_accuracy.mean > bad.final_test_accuracy.mean);
    }

    #[test]
    fn summary_table_lines() {
        let table = summary_table(&example());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("| config | seeds | final round | test accuracy"));
        assert!(lines[1].starts_with("|---|"));
        assert!(lines[2].starts_with("| good | 3 | 1 | 0.8000 ± 0.1000 | 0.2000 ± 0.1000 |"));
        assert!(lines[2].contains("| 0.5000 ± 0.2000 |"), "{}", lines[2]);
        assert!(lines[2].ends_with("| 6 | 0.5000 | 3.00 KiB | 6.00 KiB |"), "{}", lines[2]);
        assert!(lines[3].starts_with("| bad | 1 | 2 | 0.4000 ± 0.0000 |"));
        // Not measured at all: a dash.
        assert!(lines[3].contains("| – |"), "{}", lines[3]);
        // Every line has the header's column count.
        let cols = lines[0].matches('|').count();
        assert!(lines.iter().all(|l| l.matches('|').count() == cols));
        assert_eq!(summary_table(&[]).lines().count(), 2);
    }

    #[test]
    fn pipes_in_labels_are_escaped() {
        let table = summary_table(&[row("a|b", 1, 0, 0.5)]);
        assert!(table.contains("| a\\|b |"), "{table}");
    }

    #[test]
    fn compare_labels_and_difference() {
        let a: Vec<_> = (0..3).map(|r| row("fedavg", 1, r, 0.25 * f64::from(r))).collect();
        let mut b: Vec<_> = (0..3).map(|r| row("fedprox", 1, r, 0.375 * f64::from(r))).collect();
        b[1].dropped = 3;
        b.push(row("fedprox", 1, 3, f64::NAN));
        let md = compare(&a, &b, "FedAvg", "FedProx μ=1");
        assert!(md.contains("FedAvg"), "{md}");
        assert!(md.contains("FedProx μ=1"), "{md}");
        let line = |prefix: &str| {
            md.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line {prefix:?} in\n{md}"))
                .to_string()
        };
        // Final accuracy: a 0.5, b 0.75 (round 3 is unmeasured) -> +0.25.
        assert_eq!(
            line("| final test accuracy |"),
            "| final test accuracy | 0.5000 ± 0.0000 | 0.7500 ± 0.0000 | +0.2500 |"
        );
        assert!(line("| final test loss |").ends_with("| -0.2500 |"));
        assert_eq!(line("| final round |"), "| final round | 2 | 3 | +1 |");
        assert_eq!(line("| total dropped |"), "| total dropped | 3 | 6 | +3 |");
        assert!(line("| bytes in |").ends_with("| +512 B |"));
        // Per-round accuracy table.
        assert_eq!(line("| 2 |"), "| 2 | 0.5000 | 0.7500 | +0.2500 |");
        assert_eq!(line("| 0 |"), "| 0 | 0.0000 | 0.0000 | +0.0000 |");
        assert!(!md.lines().any(|l| l.starts_with("| 3 |")), "round 3 has no accuracy in either run:\n{md}");
    }

    #[test]
    fn compare_pools_seeds_and_handles_missing_rounds() {
        let a = vec![row("x", 1, 0, 0.2), row("x", 2, 0, 0.4), row("x", 1, 1, 0.6)];
        let b = vec![row("y", 1, 1, 0.9)];
        let md = compare(&a, &b, "A", "B");
        // a's finals: seed 1 -> 0.6, seed 2 -> 0.4: mean 0.5.
        assert!(md.contains("| final test accuracy | 0.5000 ± 0.1414 | 0.9000 ± 0.0000 | +0.4000 |"), "{md}");
        assert!(md.contains("| 0 | 0.3000 | – | – |"), "{md}");
        assert!(md.contains("| 1 | 0.6000 | 0.9000 | +0.3000 |"), "{md}");
        let empty = compare(&[], &[], "A", "B");
        assert!(empty.contains("no test accuracy"), "{empty}");
    }
}
