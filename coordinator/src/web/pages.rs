//! The dashboard's HTML, rendered on the server from the views in [`super::runs`] and
//! [`super::oversight`]. Every page is a layout around `<main id="live">`; the page's script
//! (`assets/live.js`) asks the same address again with `X-Fedra-Partial: 1` and swaps in the
//! new `<main>` content when the coordinator reports a change. Every text that comes from
//! the store or the policy is escaped ([`escape`]).

use super::charts;
use super::oversight::{AuditView, CheckpointRow, Flows, ScopeRow};
use super::runs::{Cost, RunDetail, RunRow};
use std::fmt::Write;

/// The pages in the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Runs,
    Privacy,
    Policy,
    Checkpoints,
    Audit,
}

const NAV: [(Nav, &str, &str); 5] = [
    (Nav::Runs, "/", "Runs"),
    (Nav::Privacy, "/privacy", "Privacy budgets"),
    (Nav::Policy, "/policy", "Data flows"),
    (Nav::Checkpoints, "/checkpoints", "Checkpoints"),
    (Nav::Audit, "/audit", "Audit log"),
];

/// `text` safe inside HTML text and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: the navigation, who is looking, and `main` as the live part.
pub fn layout(title: &str, active: Nav, viewer: &str, main: &str) -> String {
    let mut nav = String::new();
    for (page, href, label) in NAV {
        let current = if page == active { " aria-current=\"page\"" } else { "" };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{label}</a>");
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · fedra</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"stylesheet\" href=\"/assets/dashboard.css\"><script src=\"/assets/live.js\" defer></script></head>\
         <body><header><strong>fedra</strong><nav>{nav}</nav><span class=\"viewer\">{viewer} · <span id=\"live-status\">connecting…</span></span></header>\
         <main id=\"live\">{main}</main></body></html>",
        title = escape(title),
        viewer = escape(viewer),
    )
}

fn number(v: f64) -> String {
    if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.3}") }
}

fn cost_cell(cost: &Cost) -> String {
    if cost.regions.is_empty() {
        return "<span class=\"muted\">none yet</span>".into();
    }
    let mut out = String::from("<ul class=\"cost\">");
    for r in &cost.regions {
        let money = match (r.cost, &r.currency) {
            (Some(c), Some(unit)) => format!(" · <b class=\"money\">{c:.4} {}</b>", escape(unit)),
            _ => String::new(),
        };
        let compute = if cost.withheld {
            "training time withheld (private run)".to_string()
        } else {
            let carbon = r.carbon_g.map_or_else(|| "carbon unknown".to_string(), |g| format!("{} gCO₂", number(g)));
            format!("{} s training · {} kWh · {carbon}", number(r.compute_seconds), number(r.energy_kwh))
        };
        let _ = write!(
            out,
            "<li data-region=\"{region}\"><b>{region}</b> {} KiB moved · {} s coordinator CPU · {compute}{money}</li>",
            number(r.bytes_moved as f64 / 1024.0),
            number(r.coordinator_cpu_seconds),
            region = escape(&r.region),
        );
    }
    out.push_str("</ul>");
    out
}

fn progress(completed: u32, total: u32) -> String {
    let pct = if total == 0 { 0.0 } else { 100.0 * completed.min(total) as f64 / total as f64 };
    format!(
        "<div class=\"progress\" title=\"{completed} of {total} rounds\"><span style=\"width:{pct:.1}%\"></span></div>\
         <span class=\"rounds\" data-completed=\"{completed}\" data-total=\"{total}\">{completed} / {total}</span>"
    )
}

/// The run table.
pub fn runs(rows: &[RunRow]) -> String {
    let mut out = String::from("<h1>Runs</h1>");
    if rows.is_empty() {
        out.push_str("<p class=\"empty\">No runs yet. Submit one with <code>fedra run submit plan.toml</code>.</p>");
        return out;
    }
    out.push_str(
        "<table id=\"runs\"><thead><tr><th>Run</th><th>Model</th><th>State</th><th>Rounds</th><th>Now</th>\
         <th>Privacy</th><th>Cost per region</th></tr></thead><tbody>",
    );
    for r in rows {
        let _ = write!(
            out,
            "<tr class=\"run\" data-run=\"{id}\" data-state=\"{state}\"><td><a href=\"/runs/{id}\">{id}</a><br><small>{created}</small></td>\
             <td>{model}</td><td><span class=\"state {state}\">{state}</span>{failure}</td><td>{progress}</td><td>{phase}</td>\
             <td>{privacy}</td><td>{cost}</td></tr>",
            id = escape(&r.id),
            created = escape(&r.created_at),
            model = escape(&r.model),
            state = escape(&r.state),
            failure = r.failure.as_deref().map(|f| format!("<br><small>{}</small>", escape(f))).unwrap_or_default(),
            progress = progress(r.completed_rounds, r.rounds),
            phase = r.phase.as_deref().map(escape).unwrap_or_else(|| "—".into()),
            privacy = if r.private { "differentially private" } else { "not private" },
            cost = cost_cell(&r.cost),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// One run: its row, charts and round attempts.
pub fn run(d: &RunDetail) -> String {
    let r = &d.row;
    let mut out = format!(
        "<h1>Run <code>{id}</code></h1><table id=\"runs\"><tbody><tr class=\"run\" data-run=\"{id}\" data-state=\"{state}\">\
         <th>Model</th><td>{model}</td><th>State</th><td><span class=\"state {state}\">{state}</span></td>\
         <th>Rounds</th><td>{progress}</td><th>Now</th><td>{phase}</td></tr></tbody></table>",
        id = escape(&r.id),
        model = escape(&r.model),
        state = escape(&r.state),
        progress = progress(r.completed_rounds, r.rounds),
        phase = r.phase.as_deref().map(escape).unwrap_or_else(|| "—".into()),
    );
    if let Some(f) = &r.failure {
        let _ = write!(out, "<p class=\"failure\">{}</p>", escape(f));
    }
    out.push_str("<section class=\"charts\">");
    for c in &d.charts {
        out.push_str(&charts::render(c));
    }
    out.push_str("</section><h2>Cost per region</h2>");
    out.push_str(&cost_cell(&r.cost));
    out.push_str(
        "<h2>Round attempts</h2><table id=\"rounds\"><thead><tr><th>Round</th><th>Attempt</th><th>Status</th>\
         <th>Selected</th><th>Reported</th><th>Samples</th><th>Loss</th><th>Accuracy</th><th>Seconds</th></tr></thead><tbody>",
    );
    let opt = |v: Option<f64>| v.map_or_else(|| "—".to_string(), number);
    for a in d.rounds.iter().rev() {
        let _ = write!(
            out,
            "<tr class=\"round {status}\"><td>{}</td><td>{}</td><td>{status}{failure}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            a.round,
            a.attempt,
            a.selected,
            a.reported,
            a.samples,
            opt(a.loss),
            opt(a.accuracy),
            opt(a.seconds),
            status = escape(&a.status),
            failure = a.failure.as_deref().map(|f| format!("<br><small>{}</small>", escape(f))).unwrap_or_default(),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// Budgets per scope, each as a bar: charged, reserved, remaining.
pub fn privacy(rows: &[ScopeRow]) -> String {
    let mut out = String::from("<h1>Privacy budgets</h1>");
    if rows.is_empty() {
        out.push_str("<p class=\"empty\">No private round has been charged or reserved yet.</p>");
        return out;
    }
    out.push_str(
        "<p class=\"note\">ε per scope (model@region) at its δ: <span class=\"key spent\"></span> spent (released) \
         <span class=\"key reserved\"></span> reserved (in progress; counts as spent) <span class=\"key remaining\"></span> remaining.</p>\
         <table id=\"budgets\"><thead><tr><th>Scope</th><th>Budget</th><th>Spent</th><th>Reserved</th><th>Remaining</th><th>Rounds</th></tr></thead><tbody>",
    );
    for s in rows {
        let scale = s.budget.unwrap_or(s.spent + s.reserved).max(f64::MIN_POSITIVE);
        let pct = |v: f64| (100.0 * v / scale).clamp(0.0, 100.0);
        let (spent, reserved) = (pct(s.spent), pct(s.reserved).min(100.0 - pct(s.spent)));
        let budget =
            s.budget.map_or_else(|| "no rule covers it".to_string(), |b| format!("ε {} at δ {:e}", number(b), s.delta));
        let _ = write!(
            out,
            "<tr class=\"scope\" data-scope=\"{scope}\"><td><code>{scope}</code>\
             <div class=\"budget\" data-spent=\"{:.6}\" data-reserved=\"{:.6}\" data-budget=\"{}\">\
             <span class=\"spent\" style=\"width:{spent:.2}%\"></span><span class=\"reserved\" style=\"width:{reserved:.2}%\"></span></div></td>\
             <td>{budget}</td><td>{}</td><td>{}</td><td>{}</td><td>{} charged, {} reserved</td></tr>",
            s.spent,
            s.reserved,
            s.budget.map_or_else(String::new, |b| format!("{b}")),
            number(s.spent),
            number(s.reserved),
            s.remaining.map_or_else(|| "—".to_string(), number),
            s.rounds_charged,
            s.rounds_reserved,
            scope = escape(&s.scope),
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "<span class=\"muted\">nowhere</span>".into() } else { escape(&items.join(", ")) }
}

/// Where each region's data may flow under the policy set in force.
pub fn flows(flows: Option<&Flows>) -> String {
    let mut out = String::from("<h1>Data flows</h1>");
    let Some(f) = flows else {
        out.push_str(
            "<p class=\"empty\">No policy set is in force (no <code>policy_dir</code>): each run plan's own \
             <code>regions</code> decide whose clients train, and nothing restricts where aggregates go.</p>",
        );
        return out;
    };
    let _ = write!(
        out,
        "<p>Policy set <code>{}</code> from {}; this coordinator aggregates in <b>{}</b>.</p>\
         <table id=\"flows\"><thead><tr><th>Data from</th><th>Raw updates aggregated in</th><th>Clients selectable here</th>\
         <th>An aggregate may leave</th><th>Models published to</th><th>Rule</th></tr></thead><tbody>",
        escape(&f.policy_sha256[..f.policy_sha256.len().min(16)]),
        escape(&f.files.join(", ")),
        escape(&f.location),
    );
    for r in &f.regions {
        let _ = write!(
            out,
            "<tr data-region=\"{region}\"><td><b>{region}</b> <small>({})</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><small>{}</small></td></tr>",
            escape(&r.jurisdiction),
            list(&r.aggregate_at),
            if r.selectable_here { "yes" } else { "no" },
            escape(&r.export),
            list(&r.publish_to),
            escape(&r.rule),
            region = escape(&r.region),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The regional registry, grouped by region.
pub fn checkpoints(rows: &[CheckpointRow]) -> String {
    let mut out = String::from("<h1>Checkpoints per region</h1>");
    if rows.is_empty() {
        out.push_str("<p class=\"empty\">No checkpoint has been published to a region yet.</p>");
        return out;
    }
    let mut region: Option<&str> = None;
    for r in rows {
        if region != Some(r.region.as_str()) {
            if region.is_some() {
                out.push_str("</tbody></table>");
            }
            region = Some(&r.region);
            let _ = write!(
                out,
                "<h2>{}</h2><table class=\"checkpoints\"><thead><tr><th>Model</th><th>Checkpoint</th><th>State</th><th>Gate</th>\
                 <th>Eval accuracy</th><th>Approvals</th><th>Provenance</th><th>Changed</th></tr></thead><tbody>",
                escape(&r.region)
            );
        }
        let provenance = match &r.provenance {
            None => "<span class=\"muted\">not in the store</span>".to_string(),
            Some(p) => format!(
                "run <code>{}</code> round {} · sha256 <code>{}</code> · {} · from {} · published to {}{}{}",
                escape(&r.run),
                r.round,
                escape(&p.sha256[..p.sha256.len().min(12)]),
                if p.signed { "signed" } else { "<b>unsigned</b>" },
                list(&p.contributors),
                list(&p.published_to),
                p.epsilon.map(|(e, d)| format!(" · ε {} at δ {d:e}", number(e))).unwrap_or_default(),
                p.policy_sha256
                    .as_deref()
                    .map(|h| format!(" · policy <code>{}</code>", escape(&h[..h.len().min(12)])))
                    .unwrap_or_default(),
            ),
        };
        let _ = write!(
            out,
            "<tr class=\"checkpoint\" data-state=\"{state}\"><td>{}</td><td><code>{}</code></td><td><span class=\"state {state}\">{state}</span></td>\
             <td title=\"{gate}\">{}</td><td>{}</td><td>{}</td><td><small>{provenance}</small></td><td><small>{}</small></td></tr>",
            escape(&r.model),
            escape(&r.checkpoint),
            if r.gate_passed { "passed" } else { "failed" },
            r.eval_accuracy.map_or_else(|| "—".to_string(), number),
            escape(&r.approvals),
            escape(&r.updated_at),
            state = escape(&r.state),
            gate = escape(&r.gate),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The audit log's verification and its most recent entries.
pub fn audit(view: &AuditView) -> String {
    let mut out = String::from("<h1>Audit log</h1>");
    match &view.broken {
        None => {
            let _ = write!(
                out,
                "<p class=\"verified ok\" data-verified=\"true\">✔ All {} entries verified: each is intact and linked to the one before.</p>",
                view.checked
            );
        }
        Some(why) => {
            let _ = write!(
                out,
                "<p class=\"verified broken\" data-verified=\"false\">✘ The chain is broken at {} ({} entries read). Run <code>fedra audit verify</code>.</p>",
                escape(why),
                view.checked
            );
        }
    }
    out.push_str(
        "<table id=\"audit\"><thead><tr><th>#</th><th>When</th><th>Actor</th><th>Action</th><th>Run</th><th>Region</th><th>Detail</th></tr></thead><tbody>",
    );
    for e in &view.entries {
        let d = &e.draft;
        let when = chrono::DateTime::from_timestamp_millis(d.at_ms)
            .map_or_else(|| d.at_ms.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string());
        let _ = write!(
            out,
            "<tr><td>{}</td><td><small>{when}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><small>{}</small></td></tr>",
            e.seq,
            escape(&d.actor),
            escape(d.action.as_str()),
            escape(d.run.as_deref().unwrap_or("")),
            escape(d.region.as_deref().unwrap_or("")),
            escape(&d.detail),
        );
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::runs::RegionCost;

    fn row(completed: u32, cost: Cost) -> RunRow {
        RunRow {
            id: "run-1".into(),
            model: "lr<1>".into(),
            state: "running".into(),
            completed_rounds: completed,
            rounds: 4,
            phase: Some("round 3: training".into()),
            private: false,
            owner: None,
            created_at: "2026-01-01 00:00:00 UTC".into(),
            failure: None,
            cost,
        }
    }

    #[test]
    fn a_run_row_shows_progress_and_cost() {
        let region = RegionCost {
            region: "eu".into(),
            bytes_moved: 2048,
            coordinator_cpu_seconds: 0.25,
            compute_seconds: 12.5,
            energy_kwh: 0.0005,
            carbon_g: None,
            cost: Some(0.125),
            currency: Some("EUR".into()),
        };
        let cost = Cost { regions: vec![region.clone()], withheld: false };
        let html = runs(&[row(2, cost)]);
        assert!(html.contains("data-run=\"run-1\"") && html.contains("lr&lt;1&gt;"), "{html}");
        assert!(
            html.contains("data-completed=\"2\" data-total=\"4\">2 / 4<") && html.contains("width:50.0%"),
            "{html}"
        );
        assert!(html.contains("<b>eu</b> 2.000 KiB moved · 0.250 s coordinator CPU · 12.500 s training"), "{html}");
        assert!(html.contains("carbon unknown") && html.contains("0.1250 EUR"), "{html}");
        assert!(html.contains("round 3: training"), "{html}");
        let private = runs(&[row(0, Cost { regions: vec![region], withheld: true })]);
        assert!(
            private.contains("training time withheld (private run)") && private.contains("0.1250 EUR"),
            "{private}"
        );
    }

    #[test]
    fn a_budget_bar_splits_spent_reserved_and_remaining() {
        let s = ScopeRow {
            scope: "lr@eu".into(),
            budget: Some(4.0),
            delta: 1e-6,
            spent: 1.0,
            reserved: 0.5,
            remaining: Some(2.5),
            rounds_charged: 2,
            rounds_reserved: 1,
        };
        let html = privacy(&[s]);
        assert!(html.contains("class=\"spent\" style=\"width:25.00%\""), "{html}");
        assert!(html.contains("class=\"reserved\" style=\"width:12.50%\""), "{html}");
        assert!(html.contains("data-budget=\"4\"") && html.contains("2 charged, 1 reserved"), "{html}");
    }

    #[test]
    fn the_layout_escapes_and_marks_the_current_page() {
        let html = layout("<x>", Nav::Audit, "token holder (compliance)", "<p>body</p>");
        assert!(
            html.contains("<title>&lt;x&gt; · fedra</title>") && html.contains("<main id=\"live\"><p>body</p></main>")
        );
        assert!(html.contains("<a href=\"/audit\" aria-current=\"page\">"), "{html}");
        assert!(!html.contains("http://") && !html.contains("https://"), "no external asset: {html}");
    }
}
