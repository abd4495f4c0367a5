//! The per-case table `fedra-sim bench rounds` prints at the end, and the report of a case
//! that could not run.

use super::{CaseReport, GridCase, RoundsBenchOptions, classes_for, model_for};

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
            opt(r.times.first_round_s, 3),
            opt(r.times.steady_round_s_median, 3),
            opt(r.steady_coordinator_cpu_s_median.or(r.times.first_round_coordinator_cpu_s), 3),
            mib(r.coordinator_peak_rss),
            mib(r.coordinator_rss_target),
            r.wire_bytes_per_round.or(r.first_round_wire_bytes).unwrap_or(0) as f64 / 1e6,
            r.wire_ratio.unwrap_or(f64::NAN),
            opt(r.aggregation_gbps_lower_bound, 2),
            opt(r.fold_gbps, 2),
            opt(r.floor_round_s, 3),
            opt(r.round_over_floor, 2),
        );
    }
    out
}

/// The report of a case that could not run: its error, nothing measured.
pub(super) fn failed_case(case: GridCase, opts: &RoundsBenchOptions, error: String) -> CaseReport {
    let (input_dim, params) = model_for(case.params);
    CaseReport {
        clients: case.clients,
        params,
        model: format!("logistic_regression input_dim={input_dim} classes={}", classes_for(case.params)),
        rounds: opts.rounds,
        state: "error".into(),
        error: Some(error),
        connect_s: 0.0,
        per_round: Vec::new(),
        times: super::summary::RoundTimes::default(),
        steady_coordinator_cpu_s_median: None,
        steady_bench_cpu_s_median: None,
        coordinator_peak_rss: 0,
        coordinator_rss_target: 3 * params as u64 * 4 + 64 * 1024 * 1024,
        bench_peak_rss: 0,
        ideal_wire_bytes: 2 * case.clients as u64 * params as u64 * 4,
        wire_bytes_per_round: None,
        first_round_wire_bytes: None,
        wire_ratio: None,
        idle_bytes_per_connection: None,
        floor_round_s: None,
        round_over_floor: None,
        steady_loopback_bytes_median: None,
        aggregation_gbps_lower_bound: None,
        fold_gbps: None,
        sidecar_sessions_restarted: 0,
        sidecar_tasks_failed: 0,
    }
}
