//! `GovernanceService`: approvers approve parked runs, admins put a re-read policy set in
//! force, compliance reads the audit log.
//!
//! The authorization table decides which roles may call each RPC; with a policy set in
//! force its `[roles]` narrows that further (`approve`, `read_audit`), and every refusal
//! names the rule.

use super::auth::{Caller, Gate, Rpc};
use super::{ApiError, convert};
use crate::governance::{Governance, PolicyReloader};
use crate::round::EngineHandle;
use crate::store::{AuditFilter, Store};
use fedra_policy::Action;
use fedra_proto::pb;
use fedra_proto::pb::governance_service_server::GovernanceService;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Audit entries per store read while streaming.
const AUDIT_PAGE: u32 = 500;

pub struct GovernanceApi {
    engine: EngineHandle,
    store: Arc<dyn Store>,
    policy: PolicyReloader,
    gate: Gate,
}

impl GovernanceApi {
    pub fn new(engine: EngineHandle, store: Arc<dyn Store>, policy: PolicyReloader, gate: Gate) -> Self {
        Self { engine, store, policy, gate }
    }

    /// With a policy in force, the caller's role must be granted `action` by its `[roles]`.
    fn policy_allows(&self, caller: &Caller, action: Action) -> Result<(), ApiError> {
        role_allowed(self.policy.governance(), caller, action)
    }
}

/// Whether the policy in force lets the caller's role perform `action` (always, without a
/// policy or an identity: the static matrix decided already).
pub(super) fn role_allowed(governance: &Governance, caller: &Caller, action: Action) -> Result<(), ApiError> {
    let (Some(identity), Some(policy)) = (caller.identity(), governance.snapshot()) else {
        return Ok(());
    };
    policy.set.role_may(identity.role(), action).map(drop).map_err(|refusal| ApiError::Denied(refusal.to_string()))
}

type AuditStream = Pin<Box<dyn Stream<Item = Result<pb::AuditEntry, Status>> + Send>>;

#[tonic::async_trait]
impl GovernanceService for GovernanceApi {
    async fn approve_run(
        &self,
        req: Request<pb::ApproveRunRequest>,
    ) -> Result<Response<pb::ApproveRunResponse>, Status> {
        let caller = self.gate.admit(&req, Rpc::ApproveRun)?;
        self.policy_allows(&caller, Action::Approve)?;
        let id = convert::run_id("run_id", &req.into_inner().run_id)?;
        let view = self.engine.get(id.clone()).await?;
        // Four eyes: whoever submitted a run cannot approve it.
        if let (Some(me), Some(owner)) = (caller.identity(), view.record.owner.as_ref())
            && me == owner
        {
            return Err(ApiError::Denied(format!("{me} submitted run {id} and may not approve it")).into());
        }
        let count = self.engine.approve(id, crate::audit::actor(caller.identity())).await?;
        let state = if count.queued { crate::store::RunState::Queued } else { crate::store::RunState::PendingApproval };
        Ok(Response::new(pb::ApproveRunResponse {
            approvals: count.approvals,
            needed: count.needed,
            state: convert::run_state_to_pb(state) as i32,
        }))
    }

    async fn reject_run(&self, req: Request<pb::RejectRunRequest>) -> Result<Response<pb::RejectRunResponse>, Status> {
        let caller = self.gate.admit(&req, Rpc::RejectRun)?;
        self.policy_allows(&caller, Action::Approve)?;
        let r = req.into_inner();
        let id = convert::run_id("run_id", &r.run_id)?;
        let reason = r.reason.trim();
        if reason.is_empty() || reason.len() > 1024 {
            return Err(ApiError::Invalid("reason must be 1..=1024 bytes: say why the run is rejected".into()).into());
        }
        let state = self.engine.reject(id, crate::audit::actor(caller.identity()), reason.to_string()).await?;
        Ok(Response::new(pb::RejectRunResponse { state: convert::run_state_to_pb(state) as i32 }))
    }

    async fn apply_policy(
        &self,
        req: Request<pb::ApplyPolicyRequest>,
    ) -> Result<Response<pb::ApplyPolicyResponse>, Status> {
        let caller = self.gate.admit(&req, Rpc::ApplyPolicy)?;
        let hash = self.policy.reload(&crate::audit::actor(caller.identity())).await.map_err(ApiError::Precondition)?;
        Ok(Response::new(pb::ApplyPolicyResponse { policy_sha256: hash }))
    }

    type ListAuditStream = AuditStream;

    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Result<Response<Self::ListAuditStream>, Status> {
        let caller = self.gate.admit(&req, Rpc::ListAudit)?;
        self.policy_allows(&caller, Action::ReadAudit)?;
        let r = req.into_inner();
        let mut filter = AuditFilter {
            run: convert::optional(&r.run_id, |t| convert::run_id("run_id", t))?,
            region: convert::optional(&r.region, |t| convert::region_id("region", t))?,
            actor: (!r.actor.is_empty()).then_some(r.actor),
            since_ms: (r.since_ms > 0).then_some(r.since_ms),
            after_seq: None,
            limit: Some(AUDIT_PAGE),
        };
        let store = Arc::clone(&self.store);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        // Page through the store so that a long log is never held whole in memory.
        tokio::spawn(async move {
            loop {
                let page = match store.list_audit(&filter).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                        return;
                    }
                };
                let Some(last) = page.last().map(|e| e.seq) else { return };
                for entry in page {
                    if tx.send(Ok(convert::audit_entry_to_pb(entry))).await.is_err() {
                        return;
                    }
                }
                filter.after_seq = Some(last);
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
