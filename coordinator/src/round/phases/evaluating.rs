//! Evaluating: clients score the committed checkpoint on their held-out splits. The run
//! asks the scheduler for every free eligible client (or `evaluation.clients` of them),
//! dispatches evaluation tasks, and stores the sample-weighted means, overall and per
//! region, once every asked client answered or dropped, or at the deadline. → Done; with
//! nobody online to evaluate, the evaluation is skipped.

use super::super::fleet::{Eligibility, Lease};
use super::super::run::{DemandSpec, RunCore};
use super::super::task::{EvaluationReport, TaskAssignment, TaskKind};
use super::super::{RoundError, RunEventKind};
use super::selecting::dispatch;
use super::{AssignmentState, Assignments, Phase, Transition};
use crate::ids::{CheckpointId, ClientId, RegionId, RunId, TaskId};
use crate::store::EvaluationRecord;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;
use tracing::{error, info, warn};

/// A held-out report with samples: (region, samples, loss, accuracy, client evaluations
/// in it: 1 for a client, a region's count for a regional aggregator's means).
type Report = (RegionId, u64, f64, f64, u32);

#[derive(Debug)]
pub(in crate::round) struct Evaluating {
    checkpoint: CheckpointId,
    final_round: bool,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// Waiting for the scheduler's offer.
    Waiting,
    /// Tasks are out.
    Collecting { assignments: Assignments, reports: Vec<Report> },
}

impl Evaluating {
    pub fn assignments(&self) -> Option<&Assignments> {
        match &self.stage {
            Stage::Collecting { assignments, .. } => Some(assignments),
            Stage::Waiting => None,
        }
    }
    pub fn assignments_mut(&mut self) -> Option<&mut Assignments> {
        match &mut self.stage {
            Stage::Collecting { assignments, .. } => Some(assignments),
            Stage::Waiting => None,
        }
    }
}

/// Asks the scheduler for evaluators. Right after a round its clients are online, so with
/// none eligible the evaluation is skipped at once; a `patient` evaluation (one a restart
/// resumes, while clients reconnect) waits for one until the deadline.
pub(in crate::round) fn enter(core: &mut RunCore, checkpoint: CheckpointId, final_round: bool, patient: bool) -> Phase {
    core.deadline = Instant::now() + core.plan.round_deadline;
    core.demand(Some(DemandSpec {
        round: core.key.round,
        eligibility: Eligibility::for_plan(&core.plan, core.env.settings.governance.snapshot()),
        need: 1,
        relaxed: None,
        max: usize::MAX,
        deadline: core.deadline,
        patient,
    }));
    Phase::Evaluating(Evaluating { checkpoint, final_round, stage: Stage::Waiting })
}

/// Dispatches evaluation tasks to (a seeded sample of) the offered clients.
pub(in crate::round) fn on_offer(e: &mut Evaluating, core: &mut RunCore, mut offered: Vec<Lease>) -> Transition {
    if !matches!(e.stage, Stage::Waiting) {
        core.release(offered.into_iter().map(|l| l.task).collect(), false);
        return Transition::Stay;
    }
    let plan = &core.plan;
    let key = core.key.clone();
    offered.sort_by(|a, b| a.client.cmp(&b.client));
    let mut rng = ChaCha8Rng::seed_from_u64(plan.seed ^ 0xE7A1 ^ (u64::from(key.round) << 32));
    offered.shuffle(&mut rng);
    let mut cohorts = std::collections::HashMap::new();
    if core.env.settings.tier.is_global() {
        // Every offered region evaluates; `evaluation.clients` (0: all) is split over them
        // by client count, as training cohorts are.
        let members: Vec<u32> = offered.iter().map(|l| l.members).collect();
        let want = if plan.evaluation.clients > 0 { plan.evaluation.clients } else { members.iter().sum() };
        let split = crate::hierarchy::split_cohorts(want, 1, 0.0, &members);
        let (asked, idle): (Vec<_>, Vec<_>) = offered.into_iter().zip(split).partition(|(_, c)| c.target > 0);
        core.release(idle.into_iter().map(|(l, _)| l.task).collect(), false);
        offered = asked
            .into_iter()
            .map(|(l, c)| {
                cohorts.insert(l.task.clone(), c);
                l
            })
            .collect();
    } else if plan.evaluation.clients > 0 {
        let rest = offered.split_off((plan.evaluation.clients as usize).min(offered.len()));
        core.release(rest.into_iter().map(|l| l.task).collect(), false);
    }
    let layout = match core.global() {
        Ok(g) => g.layout.clone(),
        Err(err) => return Transition::fail(err.to_string()),
    };
    let template = TaskAssignment {
        task: TaskId::generate(),
        run: key.run.clone(),
        round: key.round,
        model: plan.model.clone(),
        layout,
        local: plan.local.clone(),
        deadline: plan.round_deadline,
        chunk_bytes: core.env.settings.chunk_bytes,
        seed: plan.seed,
        kind: TaskKind::Evaluate,
        privacy: None,
        cohort: None,
        compression: crate::plan::Compression::None,
    };
    let clients = offered.len();
    let (assignments, undelivered) = dispatch(offered, &template, &cohorts);
    core.release(undelivered, false);
    core.deadline = Instant::now() + plan.round_deadline;
    info!(run = %key.run, round = key.round, clients, "round evaluating");
    e.stage = Stage::Collecting { assignments, reports: Vec::new() };
    Transition::Stay
}

/// Nobody can evaluate: the evaluation is skipped.
pub(in crate::round) async fn on_give_up(e: &mut Evaluating, core: &mut RunCore) -> Transition {
    warn!(run = %core.key.run, round = core.key.round, "no client online to evaluate the checkpoint; evaluation skipped");
    finish(e, core, Vec::new()).await
}

/// Records a client's evaluation.
///
/// # Errors
/// Unknown or closed task, another client's task, or a report already received.
pub(in crate::round) fn report(
    e: &mut Evaluating,
    core: &mut RunCore,
    task: &TaskId,
    client: &ClientId,
    report: EvaluationReport,
) -> Result<(), RoundError> {
    let round = core.key.round;
    let Stage::Collecting { assignments, reports } = &mut e.stage else { return Err(core.not_open(task)) };
    let a = assignments.0.get_mut(task).ok_or_else(|| core.not_open(task))?;
    if a.client != *client {
        return Err(RoundError::NotYourTask { task: task.clone(), client: client.clone() });
    }
    match a.state {
        AssignmentState::Assigned => {}
        AssignmentState::Reported => return Err(RoundError::AlreadyReported { client: client.clone(), round }),
        AssignmentState::Dropped | AssignmentState::Rejected => {
            return Err(RoundError::Dropped { client: client.clone(), round });
        }
    }
    let max = a.members.max(1);
    if report.clients > max {
        return Err(RoundError::Contributors { field: "report.clients", got: report.clients, max });
    }
    a.state = AssignmentState::Reported;
    if report.samples > 0 {
        reports.push((a.region.clone(), report.samples, report.loss, report.accuracy, report.clients.max(1)));
    }
    core.release(vec![task.clone()], false);
    Ok(())
}

/// Evaluating → Done once every asked client answered or dropped, or at the deadline.
pub(in crate::round) async fn check_end(e: &mut Evaluating, core: &mut RunCore) -> Transition {
    let Stage::Collecting { assignments, reports } = &mut e.stage else { return Transition::Stay };
    if assignments.outstanding() > 0 && Instant::now() < core.deadline {
        return Transition::Stay;
    }
    let reports = std::mem::take(reports);
    finish(e, core, reports).await
}

/// Stores the sample-weighted means (overall, then per region) and moves on.
async fn finish(e: &mut Evaluating, core: &mut RunCore, reports: Vec<Report>) -> Transition {
    let key = core.key.clone();
    let results = evaluation_means(&key.run, key.round, &reports);
    if !results.is_empty() {
        if let Err(err) = core.env.store.record_evaluations(&results).await {
            error!(run = %key.run, round = key.round, error = %err, "cannot record evaluation");
        }
        crate::crash::point("evaluating");
        let overall = &results[0];
        info!(run = %key.run, round = key.round, clients = overall.clients, loss = overall.loss, accuracy = overall.accuracy, "round evaluated");
        core.emit(RunEventKind::Evaluated { results });
    }
    if e.final_round
        && let Err(err) = core.env.store.finish_run(&key.run, &e.checkpoint).await
    {
        error!(run = %key.run, error = %err, "cannot record run success");
    }
    Transition::to(Phase::Done { final_round: e.final_round })
}

/// Sample-weighted means of evaluation reports: the overall mean first (region `None`),
/// then one per region in region order. Empty when no report had samples.
pub(crate) fn evaluation_means(run: &RunId, round: u32, reports: &[Report]) -> Vec<EvaluationRecord> {
    let mean = |region: Option<RegionId>, rs: &[&Report]| {
        let samples: u64 = rs.iter().map(|r| r.1).sum();
        let w = samples as f64;
        EvaluationRecord {
            run: run.clone(),
            round,
            region,
            clients: rs.iter().map(|r| r.4).sum(),
            samples,
            loss: rs.iter().map(|r| r.1 as f64 * r.2).sum::<f64>() / w,
            accuracy: rs.iter().map(|r| r.1 as f64 * r.3).sum::<f64>() / w,
        }
    };
    if reports.is_empty() {
        return Vec::new();
    }
    let all: Vec<_> = reports.iter().collect();
    let mut out = vec![mean(None, &all)];
    let mut regions: Vec<&RegionId> = reports.iter().map(|r| &r.0).collect();
    regions.sort();
    regions.dedup();
    for region in regions {
        let rs: Vec<_> = reports.iter().filter(|r| &r.0 == region).collect();
        out.push(mean(Some(region.clone()), &rs));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_means_are_sample_weighted_overall_and_per_region() {
        let run = RunId::generate();
        let eu = RegionId::new("eu").unwrap();
        let us = RegionId::new("us").unwrap();
        let reports = vec![(eu.clone(), 10, 1.0, 0.5, 1), (us.clone(), 30, 2.0, 0.9, 1), (eu.clone(), 30, 3.0, 0.1, 1)];
        let m = evaluation_means(&run, 4, &reports);
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].region.as_ref(), m[0].clients, m[0].samples), (None, 3, 70));
        assert!((m[0].loss - (10.0 + 60.0 + 90.0) / 70.0).abs() < 1e-12);
        assert!((m[0].accuracy - (5.0 + 27.0 + 3.0) / 70.0).abs() < 1e-12);
        assert_eq!((m[1].region.as_ref(), m[1].samples), (Some(&eu), 40));
        assert!((m[1].loss - 2.5).abs() < 1e-12);
        assert!((m[1].accuracy - 0.2).abs() < 1e-12);
        assert_eq!((m[2].region.as_ref(), m[2].clients), (Some(&us), 1));
        assert!(evaluation_means(&run, 1, &[]).is_empty());
    }
}
