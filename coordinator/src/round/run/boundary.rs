//! The run actor at a round's edges: the next round, a stop by the policy in force, the
//! commit of a round released while its successor runs, and a failed or cancelled
//! attempt's records.

use super::super::phases::{Failure, Transition, aggregating, publishing, selecting};
use super::super::{RoundError, RunEventKind};
use super::{AttemptKey, Phase, RunActor};
use crate::checkpoint::Published;
use crate::store::RunState;
use tokio::time::Instant;
use tracing::{error, info, warn};

impl RunActor {
    /// Done → the next round's Selecting, or the end of the run.
    pub(super) async fn settle_done(&mut self, final_round: bool) -> Transition {
        if final_round {
            info!(run = %self.core.id, "run succeeded");
            self.core.emit(RunEventKind::RunFinished { state: RunState::Succeeded, reason: None });
            self.ended = true;
            return Transition::Stay;
        }
        self.next_round().await
    }

    /// Done or Released → the next round's Selecting (unless the policy in force stops the
    /// run here).
    pub(super) async fn next_round(&mut self) -> Transition {
        if let Some(stop) = self.blocked_by_policy().await {
            return stop;
        }
        let next = self.core.key.round + 1;
        match self.core.env.store.next_attempt(&self.core.id, next).await {
            Ok(attempt) => {
                let now = Instant::now();
                self.core.key = AttemptKey { run: self.core.id.clone(), round: next, attempt };
                self.core.recorded = false;
                self.core.started = now;
                self.core.deadline = now + self.core.plan.round_deadline;
                Transition::to(selecting::begin(&mut self.core))
            }
            Err(e) => Transition::fail(format!("store failure: {e}")),
        }
    }

    /// At a round boundary: when the policy in force would now refuse the run, it stops here
    /// as `blocked_by_policy` (recorded with the rules, audited) and the actor ends; the
    /// engine queues it again once a policy in force allows it. A store failure while
    /// checking lets the run go on (the rules it was admitted under still hold for it).
    /// Returns how the run stops, `None` when it goes on. A released round is committed
    /// before the block is recorded (the run resumes after it).
    async fn blocked_by_policy(&mut self) -> Option<Transition> {
        let env = &self.core.env;
        let policy = env.settings.governance.snapshot()?;
        let record = match env.store.get_run(&self.core.id).await {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                error!(run = %self.core.id, error = %e, "cannot re-check the policy; the run goes on");
                return None;
            }
        };
        let findings = crate::governance::still_allowed(&policy, &record, env.settings.privacy.lattice_slack).err()?;
        let reason =
            format!("blocked by policy set {} after round {}: {findings}", policy.sha256(), self.core.key.round);
        if let Err(reason) = self.settle_releasing().await {
            return Some(Transition::fail(reason));
        }
        let env = &self.core.env;
        warn!(run = %self.core.id, %reason, "run blocked by policy");
        if let Err(e) = env.store.set_run_state(&self.core.id, RunState::BlockedByPolicy, Some(&reason)).await {
            error!(run = %self.core.id, error = %e, "cannot record the block; the run goes on");
            return None;
        }
        let draft = crate::audit::draft(
            crate::audit::COORDINATOR,
            fedra_types::audit::AuditAction::RunBlockedByPolicy,
            reason.clone(),
        )
        .run(&self.core.id);
        if let Err(e) = crate::audit::record(env.store.as_ref(), draft).await {
            error!(run = %self.core.id, error = %e, "cannot audit the block");
        }
        self.core.emit(RunEventKind::Blocked { reason: reason.clone() });
        self.ended = true;
        Some(Transition::Stay)
    }

    /// A released round's write is done: commit it, then start the average that waited
    /// for it; a round that cannot be committed fails the run.
    pub(super) async fn on_released(&mut self, result: Result<Published, RoundError>) {
        let Some(r) = self.core.releasing.take() else { return };
        let t = match publishing::settle_released(r, &mut self.core, result).await {
            Ok(()) => match &mut self.phase {
                Phase::Aggregating(a) => match aggregating::launch(a, &mut self.core) {
                    Ok(()) => Transition::Stay,
                    Err(reason) => Transition::fail(reason),
                },
                _ => Transition::Stay,
            },
            Err(reason) => Transition::fail(reason),
        };
        self.apply(t).await;
    }

    /// Waits for a released round's write and commits it (before the run stops for any
    /// reason: what was complete stays complete).
    ///
    /// # Errors
    /// Why the released round could not be committed (it is recorded failed).
    async fn settle_releasing(&mut self) -> Result<(), String> {
        if self.core.releasing.is_none() {
            return Ok(());
        }
        let result = publishing::written(&mut self.core.releasing).await;
        let r = self.core.releasing.take().expect("checked above");
        publishing::settle_released(r, &mut self.core, result).await
    }

    /// Failed: records the attempt and the run's end, tells watchers.
    pub(super) async fn settle_failed(&mut self, failure: Failure) {
        let _ = self.core.flush_updates().await;
        // A released round is committed (or recorded failed) first; this round's failure
        // does not undo it. Its own failure is on record already.
        let _ = self.settle_releasing().await;
        let key = self.core.key.clone();
        let reason = failure.reason;
        warn!(run = %key.run, round = key.round, reason = %reason, "round failed");
        // A round that never left Selecting has no row yet.
        if self.core.recorded
            && let Err(e) = self.core.env.store.fail_round(&key.run, key.round, key.attempt, &reason).await
        {
            error!(run = %key.run, error = %e, "cannot record round failure");
        }
        let run_reason = if failure.state == RunState::Cancelled {
            reason.clone()
        } else {
            format!("round {} failed: {reason}", key.round)
        };
        if let Err(e) = self.core.env.store.set_run_state(&key.run, failure.state, Some(&run_reason)).await {
            error!(run = %key.run, error = %e, "cannot record run state");
        }
        self.core.emit(RunEventKind::RoundFailed { reason });
        self.core.emit(RunEventKind::RunFinished { state: failure.state, reason: Some(run_reason) });
        self.ended = true;
    }
}
