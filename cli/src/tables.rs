//! The text form of what the read commands print: the tables and records people read.
//! `--output json` prints the same values as JSON instead (see [`crate::output`]); a column
//! added here is a field of a [`crate::status`] type first.

use crate::status::{CheckpointSummary, RunStatus, ScopeSummary};

/// `fedra run list`.
pub fn print_runs(runs: &[RunStatus]) {
    println!("{:<18} {:<10} {:<16} {:>7}  {:<20}  published", "RUN", "STATE", "MODEL", "ROUNDS", "CREATED");
    for r in runs {
        println!(
            "{:<18} {:<10} {:<16} {:>3}/{:<3}  {:<20}  {}",
            r.id,
            r.state.as_str(),
            r.model_name,
            r.completed_rounds,
            r.total_rounds,
            r.created_at.get(..19).unwrap_or(&r.created_at),
            r.published_checkpoint.as_deref().unwrap_or("-")
        );
    }
}

/// `fedra checkpoint list`.
pub fn print_checkpoints(list: &[CheckpointSummary]) {
    println!("{:<26} {:<16} {:>5}  {:<14} {:<12} published", "CHECKPOINT", "MODEL", "ROUND", "REGIONS", "SHA256");
    for c in list {
        println!(
            "{:<26} {:<16} {:>5}  {:<14} {:<12} {}",
            c.id,
            c.model_name,
            c.round,
            c.regions.join(","),
            c.sha256.get(..12).unwrap_or(&c.sha256),
            if c.published { "yes" } else { "" }
        );
    }
}

/// `fedra privacy status`.
pub fn print_scopes(scopes: &[ScopeSummary]) {
    if scopes.is_empty() {
        println!("no privacy spent yet");
        return;
    }
    let h = ["SCOPE", "EPS_SPENT", "EPS_LEFT", "BUDGET", "DELTA", "ROUNDS", "RESERVED", "Z", "C", "Q", "ACCOUNTANT"];
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>8} {:>7} {:>8} {:>5} {:>8} {:>6}  {}",
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10]
    );
    let or_dash = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for s in scopes {
        println!(
            "{:<28} {:>9.4} {:>9} {:>9} {:>8.0e} {:>7} {:>8} {:>5.2} {:>8.4} {:>6.3}  {}",
            s.scope,
            s.epsilon_spent,
            or_dash(s.epsilon_remaining),
            or_dash(s.epsilon_budget),
            s.delta,
            s.rounds_charged,
            s.rounds_reserved,
            s.noise_multiplier,
            s.clip_norm,
            s.sampling_rate,
            s.accountant
        );
    }
}

/// `fedra run show`.
pub fn print_run(r: &RunStatus) {
    println!(
        "run {}  model {}  state {}  rounds {}/{}",
        r.id,
        r.model_name,
        r.state.as_str(),
        r.completed_rounds,
        r.total_rounds
    );
    if let Some(f) = &r.failure {
        println!("failure: {f}");
    }
    if let Some(p) = &r.policy_sha256 {
        let approvals = if r.approvals_needed > 0 {
            format!(", {} approval(s) required", r.approvals_needed)
        } else {
            String::new()
        };
        println!("policy set: {p}{approvals}");
    }
    if let Some(p) = &r.published_checkpoint {
        println!("published checkpoint: {p}");
    }
    println!(
        "{:>5}  {:<11} {:>8} {:>8} {:>8}  {:>10} {:>10} {:>8}",
        "ROUND", "PHASE", "SELECTED", "REPORTED", "SAMPLES", "LOSS_IN", "LOSS_OUT", "ACC"
    );
    for row in &r.rounds {
        let m = row.metrics.unwrap_or_default();
        println!(
            "{:>5}  {:<11} {:>8} {:>8} {:>8}  {:>10.4} {:>10.4} {:>8.4}{}",
            row.round,
            row.phase,
            row.selected,
            row.reported,
            row.samples,
            m.loss_before,
            m.loss_after,
            m.accuracy_after,
            row.failure.as_deref().map(|f| format!("  ({f})")).unwrap_or_default()
        );
    }
    print_energy(r);
    print_cost(r);
    if !r.evaluations.is_empty() {
        println!("held-out evaluation (sample-weighted):");
        println!("{:>5}  {:<8} {:>7} {:>8} {:>10} {:>8}", "ROUND", "REGION", "CLIENTS", "SAMPLES", "LOSS", "ACC");
        for e in &r.evaluations {
            println!(
                "{:>5}  {:<8} {:>7} {:>8} {:>10.4} {:>8.4}",
                e.round,
                e.region.as_deref().unwrap_or("all"),
                e.clients,
                e.samples,
                e.loss,
                e.accuracy
            );
        }
    }
}

/// The run's measured cost per region, summed over its completed rounds, with the money
/// figure when every round was priced (in one currency).
fn print_cost(r: &RunStatus) {
    #[derive(Default)]
    struct Sum {
        bytes: u64,
        cpu: f64,
        train: f64,
        cost: Option<f64>,
    }
    let mut per_region: std::collections::BTreeMap<&str, Sum> = Default::default();
    let currencies: std::collections::BTreeSet<_> =
        r.rounds.iter().flat_map(|row| &row.cost).filter_map(|c| c.currency.as_deref()).collect();
    for c in r.rounds.iter().flat_map(|row| &row.cost) {
        let e = per_region.entry(c.region.as_str()).or_insert_with(|| Sum { cost: Some(0.0), ..Sum::default() });
        e.bytes += c.update_bytes + c.broadcast_bytes;
        e.cpu += c.coordinator_cpu_seconds;
        e.train += c.client_train_seconds;
        e.cost = e.cost.zip(c.cost).map(|(a, b)| a + b);
    }
    if per_region.is_empty() {
        return;
    }
    let currency = if currencies.len() == 1 { currencies.first().copied() } else { None };
    let money = |c: Option<f64>| match (c, currency) {
        (Some(c), Some(unit)) => format!("{c:.4} {unit}"),
        _ => "-".to_string(),
    };
    println!("cost (measured):");
    println!("  {:<10} {:>14} {:>12} {:>12} {:>16}", "REGION", "BYTES_MOVED", "COORD_CPU_S", "TRAIN_S", "COST");
    let mut total = Sum { cost: Some(0.0), ..Sum::default() };
    for (region, s) in &per_region {
        println!("  {region:<10} {:>14} {:>12.3} {:>12.2} {:>16}", s.bytes, s.cpu, s.train, money(s.cost));
        total.bytes += s.bytes;
        total.cpu += s.cpu;
        total.train += s.train;
        total.cost = total.cost.zip(s.cost).map(|(a, b)| a + b);
    }
    let t = &total;
    println!("  {:<10} {:>14} {:>12.3} {:>12.2} {:>16}", "run", t.bytes, t.cpu, t.train, money(t.cost));
}

/// The run's estimated energy and carbon per region, summed over its completed rounds.
fn print_energy(r: &RunStatus) {
    let mut per_region: std::collections::BTreeMap<&str, (f64, f64, Option<f64>)> = Default::default();
    for (region, seconds, kwh, carbon) in r.rounds.iter().flat_map(|row| &row.energy) {
        let e = per_region.entry(region.as_str()).or_insert((0.0, 0.0, Some(0.0)));
        e.0 += seconds;
        e.1 += kwh;
        e.2 = e.2.zip(*carbon).map(|(a, b)| a + b);
    }
    if per_region.is_empty() {
        return;
    }
    let total = |f: fn(&(f64, f64, Option<f64>)) -> f64| per_region.values().map(f).sum::<f64>();
    let carbon = per_region.values().try_fold(0.0, |acc, e| e.2.map(|c| acc + c));
    let text = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.3}"));
    println!("energy and carbon (estimated):");
    println!("  {:<10} {:>12} {:>12} {:>10}", "REGION", "TRAIN_S", "KWH", "G_CO2E");
    for (region, (seconds, kwh, carbon)) in &per_region {
        println!("  {region:<10} {seconds:>12.2} {kwh:>12.6} {:>10}", text(*carbon));
    }
    println!("  {:<10} {:>12.2} {:>12.6} {:>10}", "run", total(|e| e.0), total(|e| e.1), text(carbon));
}
