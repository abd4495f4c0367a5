//! What a private run discloses outside the coordinator. Its ε covers the released model
//! only; anything derived from one client (which clients were selected or reported, their
//! sample counts and training metrics) or un-noised aggregate metrics would leak beyond it.
//! So for a run with a privacy plan, every event a watcher receives (live or replayed from
//! the store) and every run view carries round-level counts only, and its manifests list no
//! contributor (see `checkpoint::publish`): per region only how many clients contributed.
//! Training metrics are withheld rather than released through the mechanism (the manifest
//! says so: `privacy.metrics_withheld`), and such a plan may not evaluate
//! (`PlanError::Privacy`). The store keeps the per-client record for the audit trail; it
//! never leaves the coordinator through the run APIs.

use super::history::RunView;
use super::{RunEvent, RunEventKind};
use crate::plan::RunPlan;
use fedra_types::metrics::TrainingMetrics;

/// The event as a watcher of `plan`'s run may see it, or `None` when it may not see it.
pub fn event(plan: &RunPlan, e: RunEvent) -> Option<RunEvent> {
    if plan.privacy.is_none() {
        return Some(e);
    }
    let kind = match e.kind {
        RunEventKind::Selected { target, .. } => RunEventKind::Selected { clients: Vec::new(), target },
        RunEventKind::UpdateReceived { .. } | RunEventKind::Evaluated { .. } => return None,
        RunEventKind::Aggregated { clients, fold_seconds, update_bytes, .. } => RunEventKind::Aggregated {
            clients,
            samples: 0,
            metrics: TrainingMetrics::default(),
            fold_seconds,
            update_bytes,
        },
        other => other,
    };
    Some(RunEvent { kind, ..e })
}

/// The run as `fedra run show` may see it: a private run's rounds without samples, metrics
/// or energy figures.
pub fn view(mut v: RunView) -> RunView {
    if v.record.plan.privacy.is_some() {
        for r in &mut v.rounds {
            r.samples = 0;
            r.metrics = None;
            // Training seconds per region follow the clients' data sizes: not accounted.
            r.energy.clear();
        }
        v.evaluations.clear();
    }
    v
}
