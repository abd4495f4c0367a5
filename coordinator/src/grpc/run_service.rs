//! `RunService`: data scientists submit, inspect, watch and cancel runs.

use super::convert;
use crate::round::{EngineHandle, RunEventKind};
use fedra_proto::pb;
use fedra_proto::pb::run_service_server::RunService;
use std::pin::Pin;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub struct RunApi {
    engine: EngineHandle,
}

impl RunApi {
    pub fn new(engine: EngineHandle) -> Self {
        Self { engine }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl RunService for RunApi {
    async fn submit_run(&self, req: Request<pb::SubmitRunRequest>) -> Result<Response<pb::SubmitRunResponse>, Status> {
        let plan = req.into_inner().plan.ok_or_else(|| Status::invalid_argument("plan is missing"))?;
        let plan = convert::plan_from_pb(plan)?;
        let id = self.engine.submit(plan).await?;
        Ok(Response::new(pb::SubmitRunResponse { run_id: id.into() }))
    }

    async fn get_run(&self, req: Request<pb::GetRunRequest>) -> Result<Response<pb::RunInfo>, Status> {
        let id = convert::run_id("run_id", &req.into_inner().run_id)?;
        let view = self.engine.get(id).await?;
        Ok(Response::new(convert::run_view_to_pb(view)))
    }

    async fn list_runs(&self, _req: Request<pb::ListRunsRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        let runs = self.engine.list().await?;
        Ok(Response::new(pb::ListRunsResponse { runs: runs.into_iter().map(convert::run_view_to_pb).collect() }))
    }

    type WatchRunStream = EventStream;

    async fn watch_run(&self, req: Request<pb::WatchRunRequest>) -> Result<Response<Self::WatchRunStream>, Status> {
        let id = convert::run_id("run_id", &req.into_inner().run_id)?;
        let (history, live) = self.engine.watch(id.clone()).await?;
        let past = tokio_stream::iter(history.into_iter().map(|e| Ok(convert::event_to_pb(e))));
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
                if tx.send(item.map(convert::event_to_pb)).await.is_err() || last {
                    break;
                }
            }
        });
        let live = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(past.chain(live))))
    }

    async fn cancel_run(&self, req: Request<pb::CancelRunRequest>) -> Result<Response<pb::CancelRunResponse>, Status> {
        let id = convert::run_id("run_id", &req.into_inner().run_id)?;
        let state = self.engine.cancel(id).await?;
        Ok(Response::new(pb::CancelRunResponse { state: convert::run_state_to_pb(state) as i32 }))
    }
}
