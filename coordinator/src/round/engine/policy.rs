//! The engine's governance requests: what the policy in force makes of a submitted plan,
//! approvals and rejections of parked runs, and runs a newly applied set unblocks. They
//! run on the engine task like every other request, so the queue stays its own.

use super::*;

impl Engine {
    pub(super) async fn approve(&mut self, run: &RunId, approver: &str) -> Result<ApprovalCount, RoundError> {
        let count = self.env.store.approve_run(run, approver).await?;
        let detail = if count.queued {
            format!("approval {} of {}: the run is queued", count.approvals, count.needed)
        } else {
            format!("approval {} of {}", count.approvals, count.needed)
        };
        audit::record(self.env.store.as_ref(), audit::draft(approver, AuditAction::RunApproved, detail).run(run))
            .await?;
        if count.queued {
            let record = self.env.store.get_run(run).await?.ok_or_else(|| RoundError::RunNotFound(run.clone()))?;
            info!(run = %run, approvals = count.approvals, "run approved and queued");
            self.queue.push(Queued { id: run.clone(), priority: record.plan.priority, seq: self.next_seq });
            self.next_seq += 1;
        }
        Ok(count)
    }

    pub(super) async fn reject(&mut self, run: &RunId, approver: &str, reason: &str) -> Result<RunState, RoundError> {
        let record = self.env.store.get_run(run).await?.ok_or_else(|| RoundError::RunNotFound(run.clone()))?;
        if record.state != RunState::PendingApproval {
            return Err(crate::store::StoreError::Conflict {
                what: "run",
                id: run.to_string(),
                action: "reject".into(),
                state: record.state.to_string(),
            }
            .into());
        }
        let why = format!("rejected by {approver}: {reason}");
        self.env.store.set_run_state(run, RunState::Cancelled, Some(&why)).await?;
        audit::record(self.env.store.as_ref(), audit::draft(approver, AuditAction::RunRejected, reason).run(run))
            .await?;
        let _ = self.env.events.send(RunEvent {
            run: run.clone(),
            round: 0,
            kind: RunEventKind::RunFinished { state: RunState::Cancelled, reason: Some(why) },
        });
        info!(run = %run, approver, "run rejected");
        Ok(RunState::Cancelled)
    }

    pub(super) async fn resume_unblocked(&mut self) -> Result<Vec<RunId>, RoundError> {
        let Some(policy) = self.env.settings.governance.snapshot() else { return Ok(Vec::new()) };
        let store = self.env.store.as_ref();
        let mut resumed = Vec::new();
        for run in store.list_runs().await?.into_iter().filter(|r| r.state == RunState::BlockedByPolicy) {
            if crate::governance::still_allowed(&policy, &run, self.env.settings.privacy.lattice_slack).is_err() {
                continue;
            }
            store.set_run_state(&run.id, RunState::Queued, None).await?;
            let detail = format!("policy set {} allows the run again", policy.sha256());
            audit::record(store, audit::draft(audit::COORDINATOR, AuditAction::RunResumed, detail).run(&run.id))
                .await?;
            info!(run = %run.id, "run unblocked by the policy in force");
            self.queue.push(Queued { id: run.id.clone(), priority: run.plan.priority, seq: self.next_seq });
            self.next_seq += 1;
            resumed.push(run.id);
        }
        Ok(resumed)
    }

    /// The policy's decision on a plan (queued without a policy in force). A refusal is
    /// audited (the run is not stored) and returned with every rule that refused it.
    pub(super) async fn admit_by_policy(
        &self,
        id: &RunId,
        plan: &RunPlan,
        owner: Option<&Identity>,
    ) -> Result<(Admission, Option<String>), RoundError> {
        let Some(policy) = self.env.settings.governance.snapshot() else {
            return Ok((Admission::Queued { detail: "admitted: no policy set in force".into() }, None));
        };
        let store = self.env.store.as_ref();
        let trained = crate::governance::trained_regions(store, plan.model.name()).await?;
        let slack = self.env.settings.privacy.lattice_slack;
        let decision = crate::governance::decide_plan(&policy, plan, owner, trained, slack)?;
        match decision {
            Ok(admission) => Ok((admission, Some(policy.sha256().to_string()))),
            Err(findings) => {
                warn!(model = plan.model.name(), %findings, "plan refused by policy");
                self.env
                    .store
                    .append_audit(&[
                        audit::draft(audit::actor(owner), AuditAction::RunSubmitted, submitted(plan)).run(id),
                        audit::draft(audit::COORDINATOR, AuditAction::RunRefused, findings.clone()).run(id),
                    ])
                    .await?;
                Err(RoundError::PolicyRefused(findings))
            }
        }
    }
}

/// What an audit entry says about a submitted plan.
pub(super) fn submitted(plan: &RunPlan) -> String {
    let regions = if plan.regions.is_all() {
        "every region".to_string()
    } else {
        plan.regions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    let privacy = plan
        .privacy
        .as_ref()
        .map_or_else(|| "non-private".to_string(), |p| format!("private, z = {}", p.noise_multiplier));
    format!("model {}, {} rounds, regions: {regions}, {privacy}", plan.model.name(), plan.rounds)
}

/// Refuses, at submit, a plan this coordinator's settings cannot serve: a model larger than
/// the configured maximum, a carbon-aware schedule without a carbon feed.
///
/// # Errors
/// [`RoundError::ModelTooLarge`], [`RoundError::NoCarbonFeed`].
pub(in crate::round) fn check_settings(plan: &RunPlan, settings: &EngineSettings) -> Result<(), RoundError> {
    check_model_size(plan, settings.max_model_parameters)?;
    if plan.schedule.prefer_low_carbon && settings.carbon.is_none() {
        return Err(RoundError::NoCarbonFeed);
    }
    Ok(())
}

/// Refuses a plan whose model is larger than the configured maximum, before anything is
/// allocated or stored.
///
/// # Errors
/// [`RoundError::ModelTooLarge`].
pub(in crate::round) fn check_model_size(plan: &RunPlan, max: u64) -> Result<(), RoundError> {
    let parameters = plan.model.layout().total() as u64;
    if parameters > max {
        return Err(RoundError::ModelTooLarge { parameters, max });
    }
    Ok(())
}
