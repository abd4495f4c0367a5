//! Runs as the dashboard shows them: rows with progress and cost, and one run's rounds and
//! charts. Read through the engine ([`EngineHandle::get`]), which applies the same
//! disclosure rules as `fedra run show` (a private run shows round counts only), and from
//! the store for per-region training means, which are shown only where the policy lets
//! per-client metrics leave the coordinator (as `WatchRun` does).

use super::Sources;
use crate::governance::Snapshot;
use crate::ids::{RegionId, RunId};
use crate::round::{RoundError, RunView};
use crate::store::{ParticipationStatus, RoundRecord, RoundStatus, StoreError};
use fedra_types::identity::Identity;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Why a view could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("privacy accounting: {0}")]
    Privacy(String),
}

/// The most recent runs the run table lists.
pub const RUN_ROWS: usize = 20;
/// Runs read from the store per page while looking for the most recent ones.
const STORE_PAGE: usize = 500;

/// One region's share of a run's cost, summed over its completed rounds (see
/// `crate::cost` for what is measured).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionCost {
    pub region: String,
    /// Update and broadcast bytes.
    pub bytes_moved: u64,
    pub coordinator_cpu_seconds: f64,
    /// Training seconds the region's clients reported (0 for a private run).
    pub compute_seconds: f64,
    pub energy_kwh: f64,
    /// `None` when the carbon feed had no intensity for some round.
    pub carbon_g: Option<f64>,
    /// The priced total, when every round was priced.
    pub cost: Option<f64>,
    pub currency: Option<String>,
}

/// A run's cost so far.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Cost {
    pub regions: Vec<RegionCost>,
    /// A private run: the clients' training seconds (and so energy) follow their data sizes
    /// and are not recorded; bytes, coordinator CPU and the price of those are.
    pub withheld: bool,
}

/// A run as a row of the run table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub id: String,
    pub model: String,
    pub state: String,
    pub completed_rounds: u32,
    pub rounds: u32,
    /// `round 3: training` while a round is in progress.
    pub phase: Option<String>,
    pub private: bool,
    pub owner: Option<String>,
    pub created_at: String,
    pub failure: Option<String>,
    pub cost: Cost,
}

/// One round attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundRow {
    pub round: u32,
    pub attempt: u32,
    pub status: String,
    pub selected: u32,
    pub reported: u32,
    pub samples: u64,
    pub loss: Option<f64>,
    pub accuracy: Option<f64>,
    pub seconds: Option<f64>,
    pub failure: Option<String>,
}

/// A line of a chart: `(round, value)` points in round order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(u32, f64)>,
}

/// One chart: a metric over rounds, one series per region (and `all`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chart {
    pub id: &'static str,
    pub title: &'static str,
    pub series: Vec<Series>,
    /// Why some or all series are missing, when they are.
    pub note: Option<String>,
}

/// One run in full.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunDetail {
    pub row: RunRow,
    pub rounds: Vec<RoundRow>,
    pub charts: Vec<Chart>,
}

/// The [`RUN_ROWS`] most recent runs, newest first (only `owner`'s when given).
///
/// # Errors
/// Store or engine failures.
pub async fn recent(src: &Sources, owner: Option<&Identity>) -> Result<Vec<RunRow>, ViewError> {
    let mut last: VecDeque<RunId> = VecDeque::with_capacity(RUN_ROWS + 1);
    let mut after: Option<RunId> = None;
    loop {
        let page = src.store.list_runs_page(owner, after.as_ref(), STORE_PAGE).await?;
        let full = page.len() == STORE_PAGE;
        for run in page {
            after = Some(run.id.clone());
            last.push_back(run.id);
            if last.len() > RUN_ROWS {
                last.pop_front();
            }
        }
        if !full {
            break;
        }
    }
    let mut rows = Vec::with_capacity(last.len());
    for id in last.into_iter().rev() {
        // Listed a moment ago and never deleted: a failure here is the store's.
        rows.push(row(&src.engine.get(id).await?));
    }
    Ok(rows)
}

/// One run with its rounds and charts, if `viewer_owner` may see it (`None`: any run).
///
/// # Errors
/// [`ViewError::NotFound`] for an unknown run, [`ViewError::Forbidden`] for another's run.
pub async fn detail(src: &Sources, id: &str, only_owner: Option<&Identity>) -> Result<RunDetail, ViewError> {
    let not_found = || ViewError::NotFound(format!("run {id:?} does not exist"));
    let run = RunId::new(id).map_err(|_| not_found())?;
    let view = match src.engine.get(run.clone()).await {
        Ok(v) => v,
        Err(RoundError::RunNotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if let Some(me) = only_owner
        && view.record.owner.as_ref() != Some(me)
    {
        return Err(ViewError::Forbidden(format!(
            "run {run} was not submitted by {me}; its owner or a full reader may see it"
        )));
    }
    let regional = regional_training(src, &view).await?;
    Ok(RunDetail {
        row: row(&view),
        rounds: view.rounds.iter().map(round_row).collect(),
        charts: charts(&view, regional),
    })
}

fn row(view: &RunView) -> RunRow {
    let r = &view.record;
    RunRow {
        id: r.id.to_string(),
        model: r.plan.model.name().to_string(),
        state: r.state.as_str().to_string(),
        completed_rounds: r.completed_rounds,
        rounds: r.plan.rounds,
        phase: view.live_phase.map(|(round, phase)| format!("round {round}: {}", phase.as_str())),
        private: r.plan.privacy.is_some(),
        owner: r.owner.as_ref().map(ToString::to_string),
        created_at: r.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        failure: r.failure.clone(),
        cost: cost(view),
    }
}

/// Sums the completed rounds' per-region cost and energy figures.
fn cost(view: &RunView) -> Cost {
    let mut by_region: BTreeMap<String, (RegionCost, usize)> = BTreeMap::new();
    fn entry<'a>(
        by_region: &'a mut BTreeMap<String, (RegionCost, usize)>,
        region: &crate::ids::RegionId,
    ) -> &'a mut (RegionCost, usize) {
        by_region.entry(region.to_string()).or_insert_with(|| {
            let c = RegionCost {
                region: region.to_string(),
                bytes_moved: 0,
                coordinator_cpu_seconds: 0.0,
                compute_seconds: 0.0,
                energy_kwh: 0.0,
                carbon_g: Some(0.0),
                cost: Some(0.0),
                currency: None,
            };
            (c, 0)
        })
    }
    for r in view.rounds.iter().filter(|r| r.status == RoundStatus::Done) {
        for e in &r.energy {
            let (c, _) = entry(&mut by_region, &e.region);
            c.compute_seconds += e.compute_seconds;
            c.energy_kwh += e.energy_kwh;
            c.carbon_g = c.carbon_g.zip(e.carbon_g).map(|(a, b)| a + b);
        }
        for m in &r.cost {
            let (c, priced_rounds) = entry(&mut by_region, &m.region);
            c.bytes_moved += m.update_bytes + m.broadcast_bytes;
            c.coordinator_cpu_seconds += m.coordinator_cpu_seconds;
            c.cost = c.cost.zip(m.cost).map(|(a, b)| a + b);
            c.currency = c.currency.take().or_else(|| m.currency.clone());
            *priced_rounds += 1;
        }
    }
    let regions = by_region
        .into_values()
        .map(|(mut c, measured)| {
            // Rounds recorded before cost attribution have no figures: no price either.
            if measured == 0 {
                c.cost = None;
            }
            c
        })
        .collect();
    Cost { regions, withheld: view.record.plan.privacy.is_some() }
}

fn round_row(r: &RoundRecord) -> RoundRow {
    RoundRow {
        round: r.round,
        attempt: r.attempt,
        status: r.status.to_string(),
        selected: r.selected,
        reported: r.reported,
        samples: r.samples,
        loss: r.metrics.map(|m| m.loss_after),
        accuracy: r.metrics.map(|m| m.accuracy_after),
        seconds: r.finished_at.map(|f| (f - r.started_at).num_milliseconds() as f64 / 1000.0),
        failure: r.failure.clone(),
    }
}

/// Per region and round, the sample-weighted mean (loss, accuracy) of its reported clients
/// in the round's completed attempt, for the regions whose metrics may be shown, and a note
/// naming the others.
type Regional = (BTreeMap<RegionId, Vec<(u32, f64, f64)>>, Option<String>);

async fn regional_training(src: &Sources, view: &RunView) -> Result<Regional, ViewError> {
    if view.record.plan.privacy.is_some() {
        let note = "a private run's training metrics are withheld (its ε covers the released model only)";
        return Ok((BTreeMap::new(), Some(note.into())));
    }
    let done: BTreeMap<u32, u32> =
        view.rounds.iter().filter(|r| r.status == RoundStatus::Done).map(|r| (r.round, r.attempt)).collect();
    let policy = src.governance.snapshot();
    let model = view.record.plan.model.name();
    let mut sums: BTreeMap<RegionId, BTreeMap<u32, (f64, f64, f64)>> = BTreeMap::new();
    let mut hidden: Vec<String> = Vec::new();
    for p in src.store.list_participations(&view.record.id).await? {
        if p.status != ParticipationStatus::Reported || done.get(&p.round) != Some(&p.attempt) {
            continue;
        }
        let Some(m) = p.metrics else { continue };
        if !per_client_metrics_allowed(policy.as_ref(), model, &p.region) {
            if !hidden.contains(&p.region.to_string()) {
                hidden.push(p.region.to_string());
            }
            continue;
        }
        let w = p.samples.max(1) as f64;
        let s = sums.entry(p.region).or_default().entry(p.round).or_default();
        *s = (s.0 + w, s.1 + w * m.loss_after, s.2 + w * m.accuracy_after);
    }
    let series = sums
        .into_iter()
        .map(|(region, rounds)| (region, rounds.into_iter().map(|(r, (w, l, a))| (r, l / w, a / w)).collect()))
        .collect();
    let note = (!hidden.is_empty()).then(|| {
        format!(
            "per-region training metrics of {} are withheld: the policy keeps per-client metrics there",
            hidden.join(", ")
        )
    });
    Ok((series, note))
}

/// As `WatchRun` decides for `UpdateReceived`: without a policy everything may be shown.
fn per_client_metrics_allowed(policy: Option<&Snapshot>, model: &str, region: &RegionId) -> bool {
    policy.is_none_or(|p| p.set.privacy_rule(model, region).is_some_and(|r| r.terms.per_client_metrics))
}

fn charts(view: &RunView, (regional, note): Regional) -> Vec<Chart> {
    let done: Vec<&RoundRecord> = view.rounds.iter().filter(|r| r.status == RoundStatus::Done).collect();
    let overall = |f: fn(&fedra_types::metrics::TrainingMetrics) -> f64| Series {
        name: "all".into(),
        points: done.iter().filter_map(|r| r.metrics.as_ref().map(|m| (r.round, f(m)))).collect(),
    };
    let mut loss = vec![overall(|m| m.loss_after)];
    let mut accuracy = vec![overall(|m| m.accuracy_after)];
    for (region, points) in &regional {
        loss.push(Series { name: region.to_string(), points: points.iter().map(|p| (p.0, p.1)).collect() });
        accuracy.push(Series { name: region.to_string(), points: points.iter().map(|p| (p.0, p.2)).collect() });
    }
    let mut eval_loss: BTreeMap<String, Vec<(u32, f64)>> = BTreeMap::new();
    let mut eval_accuracy: BTreeMap<String, Vec<(u32, f64)>> = BTreeMap::new();
    for e in &view.evaluations {
        let name = e.region.as_ref().map_or_else(|| "all".to_string(), ToString::to_string);
        eval_loss.entry(name.clone()).or_default().push((e.round, e.loss));
        eval_accuracy.entry(name).or_default().push((e.round, e.accuracy));
    }
    let into_series =
        |m: BTreeMap<String, Vec<(u32, f64)>>| m.into_iter().map(|(name, points)| Series { name, points }).collect();
    let eval_note = view.evaluations.is_empty().then(|| {
        if view.record.plan.privacy.is_some() {
            "a private run does not evaluate".to_string()
        } else {
            "no held-out evaluation yet (the plan's [evaluation] and clients with held-out data)".to_string()
        }
    });
    vec![
        Chart { id: "training-loss", title: "Training loss (after local training)", series: loss, note: note.clone() },
        Chart { id: "training-accuracy", title: "Training accuracy", series: accuracy, note },
        Chart {
            id: "evaluation-loss",
            title: "Evaluation loss (held out)",
            series: into_series(eval_loss),
            note: eval_note.clone(),
        },
        Chart {
            id: "evaluation-accuracy",
            title: "Evaluation accuracy (held out)",
            series: into_series(eval_accuracy),
            note: eval_note,
        },
    ]
}
