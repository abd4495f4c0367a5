//! `fedra-sim bench rounds --regions R`: each case also runs in tiers, right after its flat
//! run on the same machine: a global `fedra-coordinator` process and R regional-aggregator
//! processes (all real binaries, mutual TLS with one shared CA), the N sidecars dealt over
//! the regions round-robin, each connected to its region's aggregator.
//!
//! What is measured, and from where:
//! - round wall time: between consecutive `Published` events of the global run, as for the
//!   flat case;
//! - global-tier bytes per round: what a counting relay in this process forwarded between
//!   the aggregators and the global coordinator (TLS records of every aggregator RPC),
//!   against the ideal 2·R·P·4 (one model down, one aggregate up per region) and the flat
//!   case's 2·N·P·4;
//! - peak RSS (`VmHWM`) of the global process and of the largest regional process.
//!
//! The global coordinator starts last, so that each aggregator registers upstream with its
//! region's whole inventory and the first round's cohorts are sized on every client.

use super::coordinator_process::{CoordinatorProcess, Launch, free_port};
use super::fleet::Fleet;
use super::table::opt;
use super::{GridCase, Observed, RoundObservation, RoundsBenchOptions, model_for, observe, plan};
use crate::cluster::TierSpec;
use crate::proxy::CountingProxy;
use anyhow::{Result, bail};
use fedra_cli::control::ControlClient;
use fedra_types::run::RunState;
use serde::Serialize;
use std::time::Instant;

/// One case run in tiers.
#[derive(Debug, Clone, Serialize)]
pub struct TieredReport {
    pub clients: usize,
    pub params: usize,
    pub regions: usize,
    pub rounds: u32,
    pub state: String,
    pub error: Option<String>,
    pub connect_s: f64,
    pub per_round: Vec<RoundObservation>,
    pub first_round_s: Option<f64>,
    pub steady_round_s_median: Option<f64>,
    pub global_peak_rss: u64,
    /// The largest regional aggregator's peak RSS.
    pub regional_peak_rss_max: u64,
    /// Bytes on the global coordinator's port per round (both directions, median of the
    /// steady rounds, else the first).
    pub global_bytes_per_round: Option<u64>,
    /// 2 · R · P · 4.
    pub ideal_global_bytes: u64,
    /// 2 · N · P · 4: what a flat coordinator moves per round.
    pub flat_ideal_bytes: u64,
}

/// Runs `case` in tiers with `regions` regional aggregators.
///
/// # Errors
/// A process or the sidecars cannot start, or the control API fails; a run that ends in
/// another state than succeeded is reported in [`TieredReport::state`].
pub async fn run_tiered(case: GridCase, regions: usize, opts: &RoundsBenchOptions) -> Result<TieredReport> {
    if regions == 0 || regions > case.clients {
        bail!("--regions {regions}: need 1..={} regions for {} clients", case.clients, case.clients);
    }
    let (input_dim, params) = model_for(case.params);
    let pki = tempfile::Builder::new().prefix("fedra-bench-tiers-").tempdir()?;
    let global_port = free_port()?;
    // The aggregators reach the global coordinator through a counting relay in this
    // process: their sockets are not ours to ask the kernel about.
    let relay = CountingProxy::start(([127, 0, 0, 1], global_port).into()).await?;
    let upstream = relay.endpoint();
    let upstream = if opts.coordinator.insecure { upstream.replacen("https://", "http://", 1) } else { upstream };
    let names: Vec<String> = (0..regions).map(|r| format!("region-{r}")).collect();
    let started = Instant::now();
    let mut aggregators = Vec::new();
    let mut fleets = Vec::new();
    for (r, name) in names.iter().enumerate() {
        let tier = TierSpec::Regional { location: name.clone(), upstream: upstream.clone() };
        let launch = Launch { port: None, pki_root: Some(pki.path().to_path_buf()), tier };
        let aggregator = CoordinatorProcess::launch(&opts.coordinator, &launch).await?;
        let ids: Vec<(String, String)> =
            (r..case.clients).step_by(regions).map(|i| (format!("bench-{i:05}"), name.clone())).collect();
        let tls = aggregator.client_tls(&ids)?;
        let shape = (input_dim, super::classes_for(case.params));
        match Fleet::start(&aggregator.endpoint(), &ids, tls, shape, opts.seed ^ r as u64).await {
            Ok(f) => fleets.push(f),
            Err(e) => bail!("{e:#}; {name}'s log:\n{}", aggregator.log_tail()),
        }
        aggregators.push(aggregator);
    }
    let global_launch =
        Launch { port: Some(global_port), pki_root: Some(pki.path().to_path_buf()), tier: TierSpec::Global };
    let global = CoordinatorProcess::launch(&opts.coordinator, &global_launch).await?;
    let connect_s = started.elapsed().as_secs_f64();
    eprintln!("  in tiers: {} sidecars behind {regions} aggregators connected in {connect_s:.1} s", case.clients);

    let mut control = ControlClient::connect(&global.endpoint(), &global.control_tls()?).await?;
    // Naming the regions makes the global round wait for every aggregator.
    let plan = plan(case, opts.rounds, opts.deadline_seconds, opts.seed, &names)?;
    let Observed { rounds, state, error } = observe(&mut control, &plan, &global, Some(&relay)).await?;
    let global_peak_rss = global.sample()?.peak_rss;
    let mut regional_peak_rss_max = 0;
    for a in &aggregators {
        regional_peak_rss_max = regional_peak_rss_max.max(a.sample()?.peak_rss);
    }
    for f in fleets {
        f.stop().await;
    }
    let state = state.map_or("unknown", RunState::as_str);
    if state != RunState::Succeeded.as_str() {
        eprintln!("  run in tiers ended {state}; global log tail:\n{}", global.log_tail());
        for a in &aggregators {
            eprintln!("  aggregator log tail:\n{}", a.log_tail());
        }
    }
    for a in aggregators {
        a.stop().await;
    }
    global.stop().await;

    let r = super::summary::Rounds::of(&rounds);
    let global_bytes_per_round = r.median_or_first(|r| (r.wire_up + r.wire_down) as f64).map(|b| b as u64);
    Ok(TieredReport {
        clients: case.clients,
        params,
        regions,
        rounds: opts.rounds,
        state: state.to_string(),
        error,
        connect_s,
        first_round_s: r.first.map(|r| r.wall_s),
        steady_round_s_median: r.median(|r| r.wall_s),
        global_peak_rss,
        regional_peak_rss_max,
        global_bytes_per_round,
        ideal_global_bytes: 2 * regions as u64 * params as u64 * 4,
        flat_ideal_bytes: 2 * case.clients as u64 * params as u64 * 4,
        per_round: rounds,
    })
}

/// The side-by-side table: each tiered case against the flat run of the same case.
pub fn table(flat: &[super::CaseReport], tiered: &[TieredReport]) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut out = String::from(
        "    N           P  R  state      steady flat(s)  steady tiers(s)  coord/global RSS MiB  regional RSS MiB  bytes/rnd flat MB  global tier MB (×2RP4)\n",
    );
    for t in tiered {
        let f = flat.iter().find(|f| f.clients == t.clients && f.params == t.params);
        let global_mb = t.global_bytes_per_round.unwrap_or(0) as f64 / 1e6;
        out += &format!(
            "{:>5} {:>11} {:>2}  {:<9} {:>14} {:>16} {:>9.0} / {:<9.0} {:>16.0} {:>18.1} {:>13.1} ({:.3})\n",
            t.clients,
            t.params,
            t.regions,
            t.state,
            opt(f.and_then(|f| f.times.steady_round_s_median.or(f.times.first_round_s)), 3),
            opt(t.steady_round_s_median.or(t.first_round_s), 3),
            mib(f.map_or(0, |f| f.coordinator_peak_rss)),
            mib(t.global_peak_rss),
            mib(t.regional_peak_rss_max),
            f.and_then(|f| f.wire_bytes_per_round.or(f.first_round_wire_bytes)).unwrap_or(0) as f64 / 1e6,
            global_mb,
            global_mb * 1e6 / t.ideal_global_bytes as f64,
        );
    }
    out
}
