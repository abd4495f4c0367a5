//! The engine's mailbox: the requests it serves and [`EngineHandle`], the cheap handle the
//! gRPC layer, the registry and the upstream session send them through.

use super::super::fleet::TaskReceiver;
use super::super::history::RunView;
use super::super::run::{Reply, RunRequest, WatchReply};
use super::super::task::{EvaluationReport, GlobalModel, UploadTicket, VerifiedUpdate};
use super::super::{RoundError, RunEvent};
use super::cohort;
use crate::ids::{ClientId, RunId, TaskId};
use crate::plan::RunPlan;
use crate::store::{ApprovalCount, ClientRecord, RunState};
use fedra_types::identity::Identity;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};

pub(super) enum Request {
    Submit {
        plan: Box<RunPlan>,
        owner: Option<Identity>,
        reply: Reply<RunId>,
    },
    Approve {
        run: RunId,
        approver: String,
        reply: Reply<ApprovalCount>,
    },
    PolicyChanged {
        reply: Reply<Vec<RunId>>,
    },
    Reject {
        run: RunId,
        approver: String,
        reason: String,
        reply: Reply<RunState>,
    },
    ForRun {
        run: RunId,
        req: RunRequest,
    },
    ForTask {
        task: TaskId,
        req: RunRequest,
    },
    Register {
        client: ClientRecord,
        session: String,
        reply: Reply<()>,
    },
    Subscribe {
        client: ClientId,
        reply: Reply<TaskReceiver>,
    },
    Heartbeat {
        client: ClientId,
        reply: Reply<Vec<TaskId>>,
    },
    Cohort(cohort::CohortRequest),
    Events {
        reply: oneshot::Sender<broadcast::Receiver<RunEvent>>,
    },
    /// Stop handing out work: no queued run starts and no client is leased any more.
    Drain {
        done: oneshot::Sender<()>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// Cheap, cloneable handle the gRPC layer uses to talk to the engine.
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) tx: mpsc::Sender<Request>,
}

macro_rules! ask {
    ($self:ident, $make:expr) => {{
        let (reply, rx) = oneshot::channel();
        $self.tx.send($make(reply)).await.map_err(|_| RoundError::ShuttingDown)?;
        rx.await.map_err(|_| RoundError::ShuttingDown)?
    }};
}

impl EngineHandle {
    /// Queues a validated plan; checks the initial checkpoint fits the model and a private
    /// run's budgets.
    ///
    /// # Errors
    /// [`RoundError::CheckpointNotFound`], [`RoundError::InitialCheckpoint`], privacy
    /// refusals, store failures.
    /// `owner` is the certified submitter (`None` on an `--insecure` coordinator).
    pub async fn submit(&self, plan: RunPlan, owner: Option<Identity>) -> Result<RunId, RoundError> {
        ask!(self, |reply| Request::Submit { plan: Box::new(plan), owner, reply })
    }
    /// Records `approver`'s approval of a `pending_approval` run (audited); the approval
    /// that completes the policy's count queues the run.
    ///
    /// # Errors
    /// Unknown run, a run not pending approval, a repeated approval, store failures.
    pub async fn approve(&self, run: RunId, approver: String) -> Result<ApprovalCount, RoundError> {
        ask!(self, |reply| Request::Approve { run, approver, reply })
    }
    /// Rejects a `pending_approval` run: it ends cancelled with the reason (audited).
    ///
    /// # Errors
    /// Unknown run, a run not pending approval, store failures.
    pub async fn reject(&self, run: RunId, approver: String, reason: String) -> Result<RunState, RoundError> {
        ask!(self, |reply| Request::Reject { run, approver, reason, reply })
    }
    /// A new policy set is in force: runs blocked by the old one that it allows are queued
    /// again (audited as `run_resumed`). Returns them.
    ///
    /// # Errors
    /// Store failures.
    pub async fn policy_changed(&self) -> Result<Vec<RunId>, RoundError> {
        ask!(self, |reply| Request::PolicyChanged { reply })
    }
    /// # Errors
    /// Unknown run, or a run that already ended.
    pub async fn cancel(&self, run: RunId) -> Result<RunState, RoundError> {
        ask!(self, |reply| Request::ForRun { run, req: RunRequest::Cancel { reply } })
    }
    /// # Errors
    /// Unknown run or store failure.
    pub async fn get(&self, run: RunId) -> Result<RunView, RoundError> {
        ask!(self, |reply| Request::ForRun { run, req: RunRequest::Get { reply } })
    }
    /// Past events of the run, then (unless it ended) a live receiver for the rest.
    ///
    /// # Errors
    /// Unknown run or store failure.
    pub async fn watch(&self, run: RunId) -> Result<WatchReply, RoundError> {
        ask!(self, |reply| Request::ForRun { run, req: RunRequest::Watch { reply } })
    }
    /// # Errors
    /// Store failure.
    pub async fn register(&self, client: ClientRecord, session: String) -> Result<(), RoundError> {
        ask!(self, |reply| Request::Register { client, session, reply })
    }
    /// # Errors
    /// [`RoundError::UnknownClient`] if the client did not register.
    pub async fn subscribe(&self, client: ClientId) -> Result<TaskReceiver, RoundError> {
        ask!(self, |reply| Request::Subscribe { client, reply })
    }
    /// Returns the client's task ids that it should abandon.
    ///
    /// # Errors
    /// [`RoundError::UnknownClient`].
    pub async fn heartbeat(&self, client: ClientId) -> Result<Vec<TaskId>, RoundError> {
        ask!(self, |reply| Request::Heartbeat { client, reply })
    }
    /// # Errors
    /// Unknown or closed task, or a task of another client.
    pub async fn fetch_model(&self, task: TaskId, client: ClientId) -> Result<Arc<GlobalModel>, RoundError> {
        ask!(self, |reply| Request::ForTask { task: task.clone(), req: RunRequest::FetchModel { task, client, reply } })
    }
    /// # Errors
    /// As [`Self::fetch_model`], plus wrong length, or a client that already reported, was
    /// dropped or was refused for good.
    pub async fn begin_upload(
        &self,
        task: TaskId,
        client: ClientId,
        total_values: u64,
    ) -> Result<UploadTicket, RoundError> {
        ask!(self, |reply| Request::ForTask {
            task: task.clone(),
            req: RunRequest::BeginUpload { task, client, total_values, reply }
        })
    }
    /// Folds a verified update into the round; returns how many have been counted.
    ///
    /// # Errors
    /// As [`Self::begin_upload`], plus sample-count and clipping checks.
    pub async fn commit_upload(
        &self,
        task: TaskId,
        client: ClientId,
        update: VerifiedUpdate,
    ) -> Result<u32, RoundError> {
        ask!(self, |reply| Request::ForTask {
            task: task.clone(),
            req: RunRequest::CommitUpload { task, client, update, reply }
        })
    }
    /// Records a client's evaluation of the round's checkpoint.
    ///
    /// # Errors
    /// Unknown or closed task, a training task, or a report already received.
    pub async fn report_evaluation(
        &self,
        task: TaskId,
        client: ClientId,
        report: EvaluationReport,
    ) -> Result<(), RoundError> {
        ask!(self, |reply| Request::ForTask {
            task: task.clone(),
            req: RunRequest::ReportEvaluation { task, client, report, reply }
        })
    }

    /// Every run's live events from now on (the model registry learns of finished runs
    /// this way). A receiver that lags loses events and must reconcile from the store.
    ///
    /// # Errors
    /// [`RoundError::ShuttingDown`].
    pub async fn all_events(&self) -> Result<broadcast::Receiver<RunEvent>, RoundError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Events { reply }).await.map_err(|_| RoundError::ShuttingDown)?;
        rx.await.map_err(|_| RoundError::ShuttingDown)
    }

    /// Stops handing out work (a graceful stop's first step): queued runs stay queued and
    /// no client gets a new task; tasks already out may still report.
    pub async fn drain(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Drain { done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops every run where it is (reported updates are written first), waits for them and
    /// records their open round attempts as interrupted; such a round is re-run after restart.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}
