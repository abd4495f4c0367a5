//! The model registry's RPCs of `CheckpointService`: listing, history, promotion, rollback,
//! what serves (streamed to inference nodes), and the nodes' reports. Writes go through
//! the registry task; reads to the store.

use super::auth::{Caller, Rpc};
use super::checkpoint_service::{CheckpointApi, confined_region};
use super::{ApiError, convert, registry_wire};
use crate::ids::RegionId;
use crate::registry::RegistryFilter;
use crate::registry::service::PromoteCommand;
use fedra_proto::pb;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The most a reason may say.
const MAX_REASON_BYTES: usize = 1024;
/// Bounds on a node's report: arms (serving and canary) and drifted features listed.
const MAX_ARMS: usize = 4;
const MAX_DRIFT_FEATURES: usize = 16;

pub(super) type ServingStream = Pin<Box<dyn Stream<Item = Result<pb::ServingSet, Status>> + Send>>;

fn reason(v: &str) -> Result<String, ApiError> {
    if v.trim().is_empty() {
        return Err(ApiError::Invalid("reason: required (it goes into the history and the audit log)".into()));
    }
    if v.len() > MAX_REASON_BYTES {
        return Err(ApiError::Invalid(format!("reason: at most {MAX_REASON_BYTES} bytes, got {}", v.len())));
    }
    Ok(v.to_string())
}

fn model_name(v: &str) -> Result<String, ApiError> {
    if v.is_empty() || v.len() > 128 {
        return Err(ApiError::Invalid(format!("model_name: 1 to 128 bytes, got {}", v.len())));
    }
    Ok(v.to_string())
}

/// The region a request acts on: the field, which an inference node may only leave empty or
/// set to its own region.
fn region_for(caller: &Caller, field: &str, v: &str, required: bool) -> Result<Option<RegionId>, ApiError> {
    let asked = convert::optional(v, |v| convert::region_id(field, v))?;
    if let Some(own) = confined_region(caller) {
        if asked.as_ref().is_some_and(|r| r != own) {
            return Err(ApiError::Denied(format!("an inference node of region {own} may act only on that region")));
        }
        return Ok(Some(own.clone()));
    }
    if required && asked.is_none() {
        return Err(ApiError::Invalid(format!("{field}: required")));
    }
    Ok(asked)
}

impl CheckpointApi {
    pub(super) async fn list_models_rpc(
        &self,
        req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, ApiError> {
        let caller = self.gate().admit(&req, Rpc::ListModels)?;
        let r = req.into_inner();
        let filter = RegistryFilter {
            region: region_for(&caller, "region", &r.region, false)?,
            model: if r.model_name.is_empty() { None } else { Some(r.model_name) },
            all: r.all,
        };
        let entries = self.registry().entries(&filter).await?;
        Ok(Response::new(pb::ListModelsResponse { entries: entries.iter().map(registry_wire::entry_to_pb).collect() }))
    }

    pub(super) async fn model_history_rpc(
        &self,
        req: Request<pb::ModelHistoryRequest>,
    ) -> Result<Response<pb::ModelHistoryResponse>, ApiError> {
        let caller = self.gate().admit(&req, Rpc::ModelHistory)?;
        let r = req.into_inner();
        let filter = RegistryFilter {
            region: region_for(&caller, "region", &r.region, false)?,
            model: if r.model_name.is_empty() { None } else { Some(r.model_name) },
            all: true,
        };
        let history = self.registry().history(&filter).await?;
        Ok(Response::new(pb::ModelHistoryResponse {
            transitions: history.iter().map(registry_wire::transition_to_pb).collect(),
        }))
    }

    pub(super) async fn promote_rpc(
        &self,
        req: Request<pb::PromoteModelRequest>,
    ) -> Result<Response<pb::PromoteModelResponse>, ApiError> {
        let caller = self.gate().admit(&req, Rpc::PromoteModel)?;
        super::governance_service::role_allowed(self.governance(), &caller, fedra_policy::Action::Approve)?;
        let r = req.into_inner();
        let fraction = (r.canary_fraction != 0.0).then_some(r.canary_fraction);
        if let Some(f) = fraction
            && !(f > 0.0 && f < 1.0)
        {
            return Err(ApiError::Invalid(format!("canary_fraction: must be in (0, 1), got {f}")));
        }
        let cmd = PromoteCommand {
            region: region_for(&caller, "region", &r.region, true)?.expect("required"),
            model: model_name(&r.model_name)?,
            checkpoint: convert::checkpoint_id("checkpoint_id", &r.checkpoint_id)?,
            to: registry_wire::promotion_target("to", r.to)?,
            actor: crate::audit::actor(caller.identity()),
            reason: reason(&r.reason)?,
            override_gate: r.override_gate,
            canary_fraction: fraction,
        };
        let entry = self.registry().promote(cmd).await?;
        Ok(Response::new(pb::PromoteModelResponse { entry: Some(registry_wire::entry_to_pb(&entry)) }))
    }

    pub(super) async fn rollback_rpc(
        &self,
        req: Request<pb::RollbackModelRequest>,
    ) -> Result<Response<pb::RollbackModelResponse>, ApiError> {
        let caller = self.gate().admit(&req, Rpc::RollbackModel)?;
        super::governance_service::role_allowed(self.governance(), &caller, fedra_policy::Action::Approve)?;
        let r = req.into_inner();
        let region = region_for(&caller, "region", &r.region, true)?.expect("required");
        let done = self
            .registry()
            .rollback(region, model_name(&r.model_name)?, crate::audit::actor(caller.identity()), reason(&r.reason)?)
            .await?;
        Ok(Response::new(pb::RollbackModelResponse {
            rolled_back: done.rolled_back.to_string(),
            serving: done.serving.as_ref().map(registry_wire::entry_to_pb),
        }))
    }

    /// The serving set (with its candidates) now, then again whenever it changes (never the
    /// same set twice).
    pub(super) async fn watch_serving_rpc(
        &self,
        req: Request<pb::WatchServingRequest>,
    ) -> Result<Response<ServingStream>, ApiError> {
        let caller = self.gate().admit(&req, Rpc::WatchServing)?;
        let r = req.into_inner();
        let region = region_for(&caller, "region", &r.region, true)?.expect("required");
        let model = model_name(&r.model_name)?;
        let registry = self.registry().clone();
        let mut changes = registry.changes();
        let first = registry.serving(&region, &model).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(registry_wire::serving_to_pb(region.as_str(), &model, &last))).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    change = changes.recv() => match change {
                        Ok((r, m)) if r != region || m != model => continue,
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                }
                let now = match registry.serving(&region, &model).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(ApiError::from(e).into())).await;
                        return;
                    }
                };
                if now == last {
                    continue;
                }
                last = now;
                if tx.send(Ok(registry_wire::serving_to_pb(region.as_str(), &model, &last))).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    pub(super) async fn report_serving_rpc(
        &self,
        req: Request<pb::ServingReport>,
    ) -> Result<Response<pb::ReportServingResponse>, ApiError> {
        let caller = self.gate().admit(&req, Rpc::ReportServing)?;
        let r = req.into_inner();
        if r.arms.len() > MAX_ARMS {
            return Err(ApiError::Invalid(format!("arms: at most {MAX_ARMS}, got {}", r.arms.len())));
        }
        if r.refused.len() > 8 || r.refused.iter().any(|s| s.len() > MAX_REASON_BYTES) {
            return Err(ApiError::Invalid(format!("refused: at most 8 entries of {MAX_REASON_BYTES} bytes")));
        }
        if r.drift.as_ref().is_some_and(|d| d.features.len() > MAX_DRIFT_FEATURES) {
            return Err(ApiError::Invalid(format!("drift.features: at most {MAX_DRIFT_FEATURES}")));
        }
        let region = region_for(&caller, "region", &r.region, true)?.expect("required");
        let mut report = fedra_proto::serving_wire::report_from_pb(&r);
        report.model = model_name(&report.model)?;
        report.region = region.to_string();
        // The node is who the certificate says; an insecure caller is taken at its word.
        match caller.identity() {
            Some(identity) => report.node = identity.name().to_string(),
            None if report.node.is_empty() || report.node.len() > 128 => {
                return Err(ApiError::Invalid("node: 1 to 128 bytes".into()));
            }
            None => {}
        }
        let action = self.registry().report(report, region).await?;
        Ok(Response::new(pb::ReportServingResponse { action }))
    }

    pub(super) async fn drift_status_rpc(
        &self,
        req: Request<pb::DriftStatusRequest>,
    ) -> Result<Response<pb::DriftStatusResponse>, ApiError> {
        let caller = self.gate().admit(&req, Rpc::ListModels)?;
        let r = req.into_inner();
        let region = region_for(&caller, "region", &r.region, false)?;
        let model = (!r.model_name.is_empty()).then_some(r.model_name.as_str());
        let nodes = self
            .registry()
            .node_reports(region.as_ref(), model)
            .into_iter()
            .map(|(at, report)| pb::NodeStatus {
                reported_ms: at.timestamp_millis(),
                report: Some(fedra_proto::serving_wire::report_to_pb(&report)),
            })
            .collect();
        Ok(Response::new(pb::DriftStatusResponse { nodes }))
    }
}
