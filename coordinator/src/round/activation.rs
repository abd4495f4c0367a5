//! Bringing a run to life: load its starting model (initial checkpoint, last completed
//! round, or a fresh seeded initialisation), its clipping bound, and its next attempt
//! number, then hand it to its actor. Runs inside the run's own task, so a slow checkpoint
//! load never holds up the engine.

use super::history;
use super::run::{AttemptKey, Internal, Resume, RunActor, RunEnv, RunMsg};
use super::task::GlobalModel;
use super::{RoundError, RunEvent, RunEventKind};
use crate::ids::{CheckpointId, RoundNumber, RunId};
use crate::privacy::LedgerState;
use crate::store::{LedgerFilter, RunState};
use tokio::sync::mpsc;
use tracing::{error, info};

/// The body of a run's task: load its starting point, then run its actor. A run that
/// cannot start is recorded as failed here.
pub(super) async fn activate_and_run(env: RunEnv, id: RunId, mut rx: mpsc::UnboundedReceiver<RunMsg>) {
    let (internal_tx, internal_rx) = mpsc::unbounded_channel();
    match activate(&env, &id, internal_tx).await {
        Ok(Some(actor)) => return actor.run(rx, internal_rx).await,
        Ok(None) => {}
        Err(e) => {
            error!(run = %id, error = %e, "run cannot start");
            let reason = format!("run cannot start: {e}");
            if let Err(e) = env.store.set_run_state(&id, RunState::Failed, Some(&reason)).await {
                error!(run = %id, error = %e, "cannot record run failure");
            }
            let _ = env.events.send(RunEvent {
                run: id.clone(),
                round: 0,
                kind: RunEventKind::RunFinished { state: RunState::Failed, reason: Some(reason) },
            });
        }
    }
    // The run never got an actor: answer what was sent to it meanwhile from the store,
    // instead of dropping the replies (callers would see "shutting down").
    rx.close();
    while let Some(msg) = rx.recv().await {
        if let RunMsg::Request(req) = msg {
            history::answer_ended(env.store.as_ref(), &env.events, &id, req, |t| RoundError::UnknownTask(t.clone()))
                .await;
        }
    }
}

/// Loads a run's starting model (initial checkpoint, last completed round, or a fresh
/// seeded initialisation) and builds its actor for the next round.
async fn activate(
    env: &RunEnv,
    id: &RunId,
    internal: mpsc::UnboundedSender<Internal>,
) -> Result<Option<RunActor>, RoundError> {
    let Some(record) = env.store.get_run(id).await? else { return Ok(None) };
    if record.state.is_terminal() {
        return Ok(None);
    }
    let done = record.completed_rounds >= record.plan.rounds;
    let evaluate_final = done && record.plan.evaluation.after_round(record.plan.rounds, record.plan.rounds);
    if done && !evaluate_final {
        // Every round is committed (an older version skipped an interrupted final
        // evaluation this way; runs that evaluate re-run it below).
        let last = CheckpointId::for_round(id, RoundNumber(record.completed_rounds));
        env.store.finish_run(id, &last).await?;
        info!(run = %id, "run succeeded");
        let _ = env.events.send(RunEvent {
            run: id.clone(),
            round: record.completed_rounds,
            kind: RunEventKind::RunFinished { state: RunState::Succeeded, reason: None },
        });
        return Ok(None);
    }
    // A run stored before the limit was lowered (or by an older version) fails alone here,
    // before its model is allocated, instead of aborting the process at every start.
    super::engine::check_model_size(&record.plan, env.settings.max_model_parameters)?;
    let layout = record.plan.model.layout();
    let start_from = if record.completed_rounds > 0 {
        Some(CheckpointId::for_round(id, RoundNumber(record.completed_rounds)))
    } else {
        record.plan.initial_checkpoint.clone()
    };
    let params = match &start_from {
        Some(cp) => {
            let c = env.store.get_checkpoint(cp).await?.ok_or_else(|| RoundError::CheckpointNotFound(cp.clone()))?;
            let manifest: crate::checkpoint::Manifest = serde_json::from_str(&c.manifest_json)
                .map_err(|e| RoundError::InitialCheckpoint { checkpoint: c.id.clone(), reason: e.to_string() })?;
            let (_, weights) = c.locations.first().ok_or_else(|| RoundError::CheckpointNotFound(c.id.clone()))?;
            env.checkpoints.load(weights, &manifest.file_sha256, &layout).await?
        }
        None => record.plan.model.initialise(record.plan.seed),
    };
    env.store.set_run_state(id, RunState::Running, None).await?;
    // The round to play, or with every round committed the last one, to evaluate again.
    let round = if done { record.completed_rounds } else { record.completed_rounds + 1 };
    let attempt = env.store.next_attempt(id, round).await?;
    info!(run = %id, round, attempt, resumed = record.completed_rounds > 0, "run active");
    let clip_norm = match &record.plan.privacy {
        Some(p) => {
            // The latest released round's next C, else the plan's initial C.
            let entries = env.store.list_ledger(&LedgerFilter { run: Some(id.clone()), scope: None }).await?;
            let latest = entries.iter().rev().find(|e| e.state == LedgerState::Charged && e.next_clip_norm.is_some());
            Some(latest.and_then(|e| e.next_clip_norm).unwrap_or_else(|| p.clipping.initial_norm()))
        }
        None => None,
    };
    let key = AttemptKey { run: id.clone(), round, attempt };
    // A server optimizer resumes from the state written with the last committed round.
    let server_state = match (&record.plan.strategy, &start_from) {
        (crate::plan::Strategy::Server(opt), Some(cp)) if record.completed_rounds > 0 => {
            Some(load_server_state(env, cp, opt, layout.total()).await?)
        }
        _ => None,
    };
    let resume = Resume { parent: start_from, clip_norm, server_state, evaluate_final };
    Ok(Some(RunActor::new(env.clone(), record.plan, key, GlobalModel::new(layout, params), resume, internal)))
}

/// The server optimizer state written with checkpoint `cp`, verified against the digest
/// its manifest recorded.
async fn load_server_state(
    env: &RunEnv,
    cp: &CheckpointId,
    opt: &fedra_types::plan::ServerOptimizer,
    len: usize,
) -> Result<crate::aggregation::server_opt::ServerState, RoundError> {
    let refuse = |reason: String| RoundError::InitialCheckpoint { checkpoint: cp.clone(), reason };
    let record = env.store.get_checkpoint(cp).await?.ok_or_else(|| RoundError::CheckpointNotFound(cp.clone()))?;
    let manifest: crate::checkpoint::Manifest =
        serde_json::from_str(&record.manifest_json).map_err(|e| refuse(e.to_string()))?;
    let sha = manifest
        .server_state_sha256
        .ok_or_else(|| refuse(format!("its manifest records no {} state to resume from", opt.name())))?;
    env.checkpoints
        .load_server_state(&manifest.run_id, manifest.round, &sha, opt, len)
        .await
        .map_err(|e| refuse(e.to_string()))
}
