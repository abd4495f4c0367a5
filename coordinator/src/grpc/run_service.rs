//! `RunService`: data scientists submit, inspect, watch and cancel runs.

use super::auth::{Access, Gate, Rpc};
use super::{ApiError, convert};
use crate::governance::{Governance, Snapshot};
use crate::round::{EngineHandle, RunEventKind, RunView};
use crate::store::Store;
use fedra_proto::pb;
use fedra_proto::pb::run_service_server::RunService;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub struct RunApi {
    engine: EngineHandle,
    store: Arc<dyn Store>,
    governance: Governance,
    gate: Gate,
}

/// Per-client metrics leave the coordinator only where the policy's privacy rule for the
/// client's scope (`<model>@<region>`) allows them (`per_client_metrics`); elsewhere an
/// `UpdateReceived` event carries none. Without a policy nothing is withheld.
fn redact(policy: Option<&Snapshot>, model: &str, mut e: pb::RunEvent) -> pb::RunEvent {
    let Some(policy) = policy else { return e };
    if let Some(pb::run_event::Kind::UpdateReceived(u)) = &mut e.kind {
        let allowed = crate::ids::RegionId::new(u.region.as_str())
            .ok()
            .and_then(|region| policy.set.privacy_rule(model, &region).map(|r| r.terms.per_client_metrics))
            .unwrap_or(false);
        if !allowed {
            u.metrics = None;
        }
    }
    e
}

/// Runs per `ListRuns` page when the caller does not say, and at most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

impl RunApi {
    pub fn new(engine: EngineHandle, store: Arc<dyn Store>, governance: Governance, gate: Gate) -> Self {
        Self { engine, store, governance, gate }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl RunService for RunApi {
    async fn submit_run(&self, req: Request<pb::SubmitRunRequest>) -> Result<Response<pb::SubmitRunResponse>, Status> {
        let caller = self.gate.admit(&req, Rpc::SubmitRun)?;
        let plan = req.into_inner().plan.ok_or_else(|| Status::invalid_argument("plan is missing"))?;
        let plan = convert::plan_from_pb(plan)?;
        let id = self.engine.submit(plan, caller.identity().cloned()).await?;
        Ok(Response::new(pb::SubmitRunResponse { run_id: id.into() }))
    }

    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::RunInfo>, Status> {
        let caller = self.gate.admit(&req, Rpc::GetRun)?;
        let id = convert::run_id("run_id", &req.into_inner().run_id)?;
        let view = self.engine.get(id.clone()).await?;
        caller.check_owner(&format!("run {id}"), view.record.owner.as_ref())?;
        Ok(Response::new(convert::run_view_to_pb(view)))
    }

    /// Served from the store, page by page: a listing never waits on the engine task and
    /// never builds an unbounded answer.
    async fn list_runs(&self, req: Request<pb::ListRunsRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        let caller = self.gate.admit(&req, Rpc::ListRuns)?;
        let r = req.into_inner();
        let size = match r.page_size {
            0 => DEFAULT_PAGE,
            n if n as usize <= MAX_PAGE => n as usize,
            n => return Err(Status::invalid_argument(format!("page_size must be in 0..={MAX_PAGE}, got {n}"))),
        };
        let after = convert::optional(&r.page_token, |t| convert::run_id("page_token", t))?;
        let owner = if caller.access() == Access::Own { caller.identity() } else { None };
        let mut page = self.store.list_runs_page(owner, after.as_ref(), size + 1).await.map_err(ApiError::from)?;
        let next_page_token = if page.len() > size {
            page.truncate(size);
            page.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        let runs = page
            .into_iter()
            .map(|record| {
                convert::run_view_to_pb(RunView { record, rounds: vec![], evaluations: vec![], live_phase: None })
            })
            .collect();
        Ok(Response::new(pb::ListRunsResponse { runs, next_page_token }))
    }

    type WatchRunStream = EventStream;

    async fn watch_run(&self, req: Request<pb::WatchRunRequest>) -> Result<Response<Self::WatchRunStream>, Status> {
        let caller = self.gate.admit(&req, Rpc::WatchRun)?;
        let id = convert::run_id("run_id", &req.into_inner().run_id)?;
        let view = self.engine.get(id.clone()).await?;
        if caller.access() != Access::Full {
            caller.check_owner(&format!("run {id}"), view.record.owner.as_ref())?;
        }
        let policy = self.governance.snapshot();
        let model = view.record.plan.model.name().to_string();
        let out = move |e| redact(policy.as_ref(), &model, convert::event_to_pb(e));
        let (history, live) = self.engine.watch(id.clone()).await?;
        let past: Vec<_> = history.into_iter().map(|e| Ok(out.clone()(e))).collect();
        let past = tokio_stream::iter(past);
        let Some(live) = live else {
            return Ok(Response::new(Box::pin(past)));
        };
        // Forward this run's live events until its final one.
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut live = live;
            loop {
                let item = match live.recv().await {
                    Ok(e) if e.run != id => continue,
                    Ok(e) => Ok(e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        Err(Status::data_loss(format!("watcher fell {n} events behind; call WatchRun again")))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let last =
                    matches!(&item, Ok(e) if matches!(e.kind, RunEventKind::RunFinished { .. })) || item.is_err();
                if tx.send(item.map(&out)).await.is_err() || last {
                    break;
                }
            }
        });
        let live = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(past.chain(live))))
    }

    async fn cancel_run(&self, req: Request<pb::CancelRunRequest>) -> Result<Response<pb::CancelRunResponse>, Status> {
        let caller = self.gate.admit(&req, Rpc::CancelRun)?;
        let id = convert::run_id("run_id", &req.into_inner().run_id)?;
        if caller.access() != Access::Full {
            let view = self.engine.get(id.clone()).await?;
            caller.check_owner(&format!("run {id}"), view.record.owner.as_ref()).map_err(|e| {
                tracing::warn!(run = %id, error = %e, "cancel refused");
                e
            })?;
        }
        let state = self.engine.cancel(id).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::CancelRunResponse { state: convert::run_state_to_pb(state) as i32 }))
    }
}
