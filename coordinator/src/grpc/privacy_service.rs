//! `PrivacyService`: where each privacy scope stands. Read-only, so it reads the ledger
//! from the store directly instead of going through the round engine.

use super::auth::{Access, Gate, Rpc};
use super::{ApiError, convert};
use crate::governance::Governance;
use crate::ids::RegionId;
use crate::privacy::{Budgets, PrivacyScope, ScopeStatus};
use crate::store::{LedgerFilter, Store};
use fedra_proto::pb;
use fedra_proto::pb::privacy_service_server::PrivacyService;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct PrivacyApi {
    store: Arc<dyn Store>,
    budgets: Budgets,
    governance: Governance,
    gate: Gate,
}

impl PrivacyApi {
    pub fn new(store: Arc<dyn Store>, budgets: Budgets, governance: Governance, gate: Gate) -> Self {
        Self { store, budgets, governance, gate }
    }

    async fn status(&self, model: &str, region: Option<RegionId>) -> Result<Vec<ScopeStatus>, ApiError> {
        let entries = self.store.list_ledger(&LedgerFilter::default()).await?;
        let mut by_scope: BTreeMap<PrivacyScope, Vec<_>> = BTreeMap::new();
        for e in entries {
            by_scope.entry(e.scope.clone()).or_default().push(e);
        }
        by_scope
            .into_iter()
            .filter(|(s, _)| model.is_empty() || s.model == model)
            .filter(|(s, _)| region.as_ref().is_none_or(|r| *r == s.region))
            .map(|(scope, entries)| {
                let budget = self.governance.budget(&self.budgets, &scope);
                ScopeStatus::new(scope, budget, &entries).map_err(|e| ApiError::Invalid(e.to_string()))
            })
            .collect()
    }
}

#[tonic::async_trait]
impl PrivacyService for PrivacyApi {
    async fn status(
        &self,
        req: Request<pb::PrivacyStatusRequest>,
    ) -> Result<Response<pb::PrivacyStatusResponse>, Status> {
        let caller = self.gate.admit(&req, Rpc::PrivacyStatus)?;
        let r = req.into_inner();
        let region = if r.region.is_empty() { None } else { Some(convert::region_id("region", &r.region)?) };
        let scopes = PrivacyApi::status(self, &r.model_name, region).await?;
        let full = caller.access() == Access::Full;
        Ok(Response::new(pb::PrivacyStatusResponse {
            scopes: scopes
                .iter()
                .map(|s| {
                    let pb = convert::scope_status_to_pb(s);
                    if full { pb } else { summary(pb) }
                })
                .collect(),
        }))
    }
}

/// What roles without full ledger access see of a scope: its budget and how much of it is
/// spent or reserved, not the mechanism's parameters or which run spent it last.
fn summary(full: pb::PrivacyScopeStatus) -> pb::PrivacyScopeStatus {
    pb::PrivacyScopeStatus {
        accountant: String::new(),
        noise_multiplier: 0.0,
        clip_norm: 0.0,
        sampling_rate: 0.0,
        last_run_id: String::new(),
        ..full
    }
}
