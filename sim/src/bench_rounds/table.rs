//! The per-case table `fedra-sim bench rounds` prints at the end.

use super::CaseReport;

pub(super) fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// The per-case table printed at the end.
pub fn table(reports: &[CaseReport]) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut out = String::from(
        "    N           P  state      first(s)  steady(s)  coordCPU(s/rnd)  peakRSS MiB (target)  wire/rnd MB (×ideal)  agg GB/s(≥)  fold GB/s  floor(s)  ×floor\n",
    );
    for r in reports {
        out += &format!(
            "{:>5} {:>11}  {:<9} {:>9} {:>10} {:>16} {:>10.0} ({:>7.0}) {:>11.1} ({:>6.3}) {:>11} {:>10} {:>9} {:>7}\n",
            r.clients,
            r.params,
            r.state,
            opt(r.first_round_s, 3),
            opt(r.steady_round_s_median, 3),
            opt(r.steady_coordinator_cpu_s_median.or(r.first_round_coordinator_cpu_s), 3),
            mib(r.coordinator_peak_rss),
            mib(r.coordinator_rss_target),
            r.steady_wire_bytes_median.or(r.first_round_wire_bytes).unwrap_or(0) as f64 / 1e6,
            r.wire_ratio.unwrap_or(f64::NAN),
            opt(r.aggregation_gbps_lower_bound, 2),
            opt(r.fold_gbps, 2),
            opt(r.floor_round_s, 3),
            opt(r.round_over_floor, 2),
        );
    }
    out
}
