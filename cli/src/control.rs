//! The data scientist's API to the coordinator: submit, inspect, watch and cancel runs;
//! list and download checkpoints. The `fedra` CLI is a thin layer over this, and tests and
//! `fedra-sim` use it too, so every path is exercised the way users drive it.

use crate::convert::{self, WireError};
use crate::plan_file::PlanFile;
use crate::status::{CheckpointSummary, RunStatus, ScopeSummary, WatchEvent};
use fedra_proto::chunking::sha256_bytes_hex;
use fedra_proto::pb;
use fedra_proto::pb::checkpoint_service_client::CheckpointServiceClient;
use fedra_proto::pb::governance_service_client::GovernanceServiceClient;
use fedra_proto::pb::privacy_service_client::PrivacyServiceClient;
use fedra_proto::pb::run_service_client::RunServiceClient;
use fedra_types::run::RunState;
use std::path::{Path, PathBuf};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;

/// A control-plane call failed. `Rpc` carries the coordinator's own message.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot connect to coordinator at {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("{message} ({code:?})")]
    Rpc { code: tonic::Code, message: String },
    #[error("{0}")]
    Protocol(String),
    #[error("malformed answer from the coordinator: {0}")]
    Wire(#[from] WireError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl From<tonic::Status> for ControlError {
    fn from(s: tonic::Status) -> Self {
        ControlError::Rpc { code: s.code(), message: s.message().to_string() }
    }
}

/// Connection to a coordinator's `RunService` and `CheckpointService`.
#[derive(Clone)]
pub struct ControlClient {
    runs: RunServiceClient<Channel>,
    checkpoints: CheckpointServiceClient<Channel>,
    privacy: PrivacyServiceClient<Channel>,
    governance: GovernanceServiceClient<Channel>,
}

/// A pulled checkpoint on local disk.
#[derive(Debug, Clone)]
pub struct PulledCheckpoint {
    pub info: CheckpointSummary,
    pub weights: PathBuf,
    pub manifest: PathBuf,
}

impl ControlClient {
    /// # Errors
    /// [`ControlError::Connect`] when the coordinator cannot be reached.
    /// `tls` is the caller's identity (its certificate decides what it may do), or
    /// [`fedra_pki::ClientTls::Insecure`] for an `--insecure` coordinator.
    pub async fn connect(endpoint: &str, tls: &fedra_pki::ClientTls) -> Result<Self, ControlError> {
        let err = |message: String| ControlError::Connect { endpoint: endpoint.to_string(), message };
        let channel = tls
            .endpoint(endpoint)
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            runs: RunServiceClient::new(channel.clone()),
            privacy: PrivacyServiceClient::new(channel.clone()),
            governance: GovernanceServiceClient::new(channel.clone()),
            checkpoints: CheckpointServiceClient::new(channel),
        })
    }

    /// Where each privacy scope stands, optionally filtered by model and region.
    ///
    /// # Errors
    /// Transport failure or an invalid filter.
    pub async fn privacy_status(
        &mut self,
        model: Option<&str>,
        region: Option<&str>,
    ) -> Result<Vec<ScopeSummary>, ControlError> {
        let resp = self
            .privacy
            .status(pb::PrivacyStatusRequest {
                model_name: model.unwrap_or_default().to_string(),
                region: region.unwrap_or_default().to_string(),
            })
            .await?;
        Ok(resp.into_inner().scopes.iter().map(convert::scope_from_pb).collect())
    }

    /// Submits a plan; returns the run id.
    ///
    /// # Errors
    /// The coordinator's rejection (INVALID_ARGUMENT names the bad field).
    pub async fn submit(&mut self, plan: &PlanFile) -> Result<String, ControlError> {
        let resp = self.runs.submit_run(pb::SubmitRunRequest { plan: Some(convert::plan_to_pb(plan)) }).await?;
        Ok(resp.into_inner().run_id)
    }

    /// # Errors
    /// Unknown run or transport failure.
    pub async fn get(&mut self, run: &str) -> Result<RunStatus, ControlError> {
        let resp = self.runs.get_run(pb::GetRunRequest { run_id: run.to_string() }).await?;
        Ok(convert::run_from_pb(resp.into_inner())?)
    }

    /// # Errors
    /// Transport failure.
    pub async fn list(&mut self) -> Result<Vec<RunStatus>, ControlError> {
        let mut runs = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self.runs.list_runs(pb::ListRunsRequest { page_size: 1000, page_token }).await?.into_inner();
            for r in page.runs {
                runs.push(convert::run_from_pb(r)?);
            }
            if page.next_page_token.is_empty() {
                return Ok(runs);
            }
            page_token = page.next_page_token;
        }
    }

    /// Streams the run's events: history first, then live ones, ending with
    /// [`WatchEvent::RunFinished`].
    ///
    /// # Errors
    /// Unknown run or transport failure.
    pub async fn watch(
        &mut self,
        run: &str,
    ) -> Result<impl Stream<Item = Result<WatchEvent, ControlError>> + use<>, ControlError> {
        let stream = self.runs.watch_run(pb::WatchRunRequest { run_id: run.to_string() }).await?.into_inner();
        Ok(stream.filter_map(|e| match e {
            Ok(e) => convert::event_from_pb(e).map_err(ControlError::from).transpose(),
            Err(s) => Some(Err(ControlError::from(s))),
        }))
    }

    /// Approves a run waiting for approval; returns (approvals, needed, state after).
    ///
    /// # Errors
    /// Not allowed to approve, not pending, approved already, transport failure.
    pub async fn approve(&mut self, run: &str) -> Result<(u32, u32, RunState), ControlError> {
        let r = self.governance.approve_run(pb::ApproveRunRequest { run_id: run.to_string() }).await?.into_inner();
        Ok((r.approvals, r.needed, convert::run_state_from_pb("approve.state", r.state)?))
    }

    /// Rejects a run waiting for approval; it ends cancelled with `reason`.
    ///
    /// # Errors
    /// Not allowed to reject, not pending, transport failure.
    pub async fn reject(&mut self, run: &str, reason: &str) -> Result<RunState, ControlError> {
        let req = pb::RejectRunRequest { run_id: run.to_string(), reason: reason.to_string() };
        let r = self.governance.reject_run(req).await?.into_inner();
        Ok(convert::run_state_from_pb("reject.state", r.state)?)
    }

    /// Asks the coordinator to re-read its policy directory; returns the set's sha256.
    ///
    /// # Errors
    /// An invalid set (every problem in the message), not an admin, transport failure.
    pub async fn apply_policy(&mut self) -> Result<String, ControlError> {
        Ok(self.governance.apply_policy(pb::ApplyPolicyRequest {}).await?.into_inner().policy_sha256)
    }

    /// The audit log, oldest first, filtered (empty strings and 0: any).
    ///
    /// # Errors
    /// Not allowed to read it, a bad filter, transport failure.
    pub async fn audit(
        &mut self,
        filter: pb::ListAuditRequest,
    ) -> Result<Vec<fedra_types::audit::AuditEntry>, ControlError> {
        let mut stream = self.governance.list_audit(filter).await?.into_inner();
        let mut out = Vec::new();
        while let Some(e) = stream.message().await? {
            out.push(convert::audit_entry_from_pb(e)?);
        }
        Ok(out)
    }

    /// # Errors
    /// Unknown or already finished run.
    pub async fn cancel(&mut self, run: &str) -> Result<RunState, ControlError> {
        let resp = self.runs.cancel_run(pb::CancelRunRequest { run_id: run.to_string() }).await?;
        Ok(convert::run_state_from_pb("cancel.state", resp.into_inner().state)?)
    }

    /// # Errors
    /// Bad filter value or transport failure.
    pub async fn list_checkpoints(
        &mut self,
        region: Option<&str>,
        model: Option<&str>,
        run: Option<&str>,
    ) -> Result<Vec<CheckpointSummary>, ControlError> {
        let req = pb::ListCheckpointsRequest {
            region: region.unwrap_or_default().to_string(),
            model_name: model.unwrap_or_default().to_string(),
            run_id: run.unwrap_or_default().to_string(),
        };
        let resp = self.checkpoints.list_checkpoints(req).await?;
        Ok(resp.into_inner().checkpoints.into_iter().map(convert::checkpoint_from_pb).collect())
    }

    /// Downloads a checkpoint into `dir` as `model.safetensors` + `manifest.json`, verifying
    /// the file digest recorded in the manifest. Writes to temporary names first, so a
    /// failed pull leaves no file that looks complete.
    ///
    /// # Errors
    /// Unknown checkpoint, transport failure, digest mismatch or I/O errors.
    pub async fn pull_checkpoint(&mut self, id: &str, dir: &Path) -> Result<PulledCheckpoint, ControlError> {
        let mut stream = self
            .checkpoints
            .fetch_checkpoint(pb::FetchCheckpointRequest { checkpoint_id: id.to_string() })
            .await?
            .into_inner();
        let info = match stream.message().await? {
            Some(pb::CheckpointPart { part: Some(pb::checkpoint_part::Part::Info(i)) }) => {
                convert::checkpoint_from_pb(i)
            }
            _ => return Err(ControlError::Protocol("checkpoint stream did not start with its info".into())),
        };
        let mut bytes = Vec::new();
        while let Some(part) = stream.message().await? {
            match part.part {
                Some(pb::checkpoint_part::Part::Safetensors(b)) => bytes.extend_from_slice(&b),
                _ => return Err(ControlError::Protocol("unexpected message in checkpoint stream".into())),
            }
        }
        let manifest: serde_json::Value = serde_json::from_str(&info.manifest_json)
            .map_err(|e| ControlError::Protocol(format!("manifest is not JSON: {e}")))?;
        let recorded = manifest.get("file_sha256").and_then(|v| v.as_str()).unwrap_or_default();
        let computed = sha256_bytes_hex(&bytes);
        if recorded != computed {
            return Err(ControlError::Protocol(format!(
                "downloaded file sha256 {computed} differs from the manifest's {recorded}"
            )));
        }
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| ControlError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let weights = dir.join("model.safetensors");
        let manifest_path = dir.join("manifest.json");
        for (path, data) in [(&weights, bytes.as_slice()), (&manifest_path, info.manifest_json.as_bytes())] {
            let tmp = path.with_extension("part");
            std::fs::write(&tmp, data).map_err(io(&tmp))?;
            std::fs::rename(&tmp, path).map_err(io(path))?;
        }
        Ok(PulledCheckpoint { info, weights, manifest: manifest_path })
    }
}
