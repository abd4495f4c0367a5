//! What happened to a run, rebuilt from the store: the answers to Get, List and Watch.
//! Everything a user is told is in the store, so history is a pure read of it; the live
//! part (the phase of a round in progress, events still to come) is added by the caller.

use super::run::RunRequest;
use super::{PhaseName, RoundError, RunEvent, RunEventKind};
use crate::ids::{RunId, TaskId};
use crate::store::{
    EvaluationRecord, ParticipationRecord, ParticipationStatus, RoundRecord, RoundStatus, RunRecord, RunState, Store,
};
use tokio::sync::broadcast;

/// A run with its rounds, and the live phase of its active round if any. This is the
/// engine's answer to Get/List: the store's [`RunRecord`] plus what only the engine knows.
#[derive(Debug, Clone)]
pub struct RunView {
    pub record: RunRecord,
    pub rounds: Vec<RoundRecord>,
    pub evaluations: Vec<EvaluationRecord>,
    pub live_phase: Option<(u32, PhaseName)>,
}

/// The run with its rounds and evaluations.
///
/// # Errors
/// Unknown run or store failure.
pub async fn view(store: &dyn Store, run: &RunId, live_phase: Option<(u32, PhaseName)>) -> Result<RunView, RoundError> {
    let record = store.get_run(run).await?.ok_or_else(|| RoundError::RunNotFound(run.clone()))?;
    let rounds = store.list_rounds(run).await?;
    let evaluations = store.list_evaluations(run).await?;
    Ok(super::disclosure::view(RunView { record, rounds, evaluations, live_phase }))
}

/// The run's events so far, round by round, each round's in the order they were emitted
/// live, and whether it ended. (Live, a released round's `Published` may come after the
/// next round's first events: see `phases::publishing`.)
///
/// # Errors
/// Unknown run or store failure.
pub async fn replay(store: &dyn Store, run: &RunId) -> Result<(Vec<RunEvent>, bool), RoundError> {
    let record = store.get_run(run).await?.ok_or_else(|| RoundError::RunNotFound(run.clone()))?;
    let rounds = store.list_rounds(run).await?;
    let parts = store.list_participations(run).await?;
    let evaluations = store.list_evaluations(run).await?;
    let target = record.plan.clients_per_round;
    let mut history = Vec::new();
    let ev = |round, kind| RunEvent { run: run.clone(), round, kind };
    for r in &rounds {
        let mine: Vec<&ParticipationRecord> =
            parts.iter().filter(|p| p.round == r.round && p.attempt == r.attempt).collect();
        history.push(ev(
            r.round,
            RunEventKind::Selected { clients: mine.iter().map(|p| p.client.clone()).collect(), target },
        ));
        for (i, p) in mine.iter().filter(|p| p.status == ParticipationStatus::Reported).enumerate() {
            history.push(ev(
                r.round,
                RunEventKind::UpdateReceived {
                    client: p.client.clone(),
                    region: p.region.clone(),
                    samples: p.samples,
                    reported: i as u32 + 1,
                    target,
                    metrics: p.metrics.unwrap_or_default(),
                },
            ));
        }
        match r.status {
            RoundStatus::Done => {
                history.push(ev(
                    r.round,
                    RunEventKind::Aggregated {
                        clients: r.reported,
                        samples: r.samples,
                        metrics: r.metrics.unwrap_or_default(),
                        fold_seconds: 0.0,
                        update_bytes: 0,
                    },
                ));
                if let Some(cp) = &r.checkpoint
                    && let Some(c) = store.get_checkpoint(cp).await?
                {
                    history.push(ev(
                        r.round,
                        RunEventKind::Published {
                            checkpoint: c.id.clone(),
                            regions: c.locations.iter().map(|(r, _)| r.clone()).collect(),
                            sha256: c.sha256.clone(),
                        },
                    ));
                }
                let results: Vec<EvaluationRecord> =
                    evaluations.iter().filter(|e| e.round == r.round).cloned().collect();
                if !results.is_empty() {
                    history.push(ev(r.round, RunEventKind::Evaluated { results }));
                }
            }
            RoundStatus::Failed | RoundStatus::Interrupted => history.push(ev(
                r.round,
                RunEventKind::RoundFailed { reason: r.failure.clone().unwrap_or_else(|| "unknown".into()) },
            )),
            RoundStatus::InProgress => {}
        }
    }
    if record.state == RunState::BlockedByPolicy {
        let reason = record.failure.clone().unwrap_or_else(|| "blocked by policy".into());
        history.push(ev(record.completed_rounds, RunEventKind::Blocked { reason }));
    }
    let ended = record.state.is_terminal();
    if ended {
        history.push(ev(
            record.completed_rounds,
            RunEventKind::RunFinished { state: record.state, reason: record.failure },
        ));
    }
    let history = history.into_iter().filter_map(|e| super::disclosure::event(&record.plan, e)).collect();
    Ok((history, ended))
}

/// Answers a Get or a Watch about a run that has no live actor, from the store (a Watch of
/// a run not yet ended also gets the live event stream); hands any other request back.
pub(super) async fn answer_read(
    store: &dyn Store,
    events: &broadcast::Sender<RunEvent>,
    run: &RunId,
    req: RunRequest,
) -> Option<RunRequest> {
    match req {
        RunRequest::Get { reply } => {
            let _ = reply.send(view(store, run, None).await);
            None
        }
        RunRequest::Watch { reply } => {
            let r = replay(store, run).await.map(|(h, ended)| (h, (!ended).then(|| events.subscribe())));
            let _ = reply.send(r);
            None
        }
        other => Some(other),
    }
}

/// Answers any request about a run whose actor has ended (or never started): reads from
/// the store, a cancel with [`RoundError::RunEnded`], a task request with `task_error`.
pub(super) async fn answer_ended(
    store: &dyn Store,
    events: &broadcast::Sender<RunEvent>,
    run: &RunId,
    req: RunRequest,
    task_error: impl Fn(&TaskId) -> RoundError,
) {
    let Some(req) = answer_read(store, events, run, req).await else { return };
    match req {
        RunRequest::Get { .. } | RunRequest::Watch { .. } => unreachable!("answered by answer_read"),
        RunRequest::Cancel { reply } => {
            let r = match store.get_run(run).await {
                Ok(Some(r)) => Err(RoundError::RunEnded { run: run.clone(), state: r.state }),
                Ok(None) => Err(RoundError::RunNotFound(run.clone())),
                Err(e) => Err(e.into()),
            };
            let _ = reply.send(r);
        }
        RunRequest::FetchModel { task, reply, .. } => drop(reply.send(Err(task_error(&task)))),
        RunRequest::BeginUpload { task, reply, .. } => drop(reply.send(Err(task_error(&task)))),
        RunRequest::CommitUpload { task, reply, .. } => drop(reply.send(Err(task_error(&task)))),
        RunRequest::ReportEvaluation { task, reply, .. } => drop(reply.send(Err(task_error(&task)))),
    }
}
