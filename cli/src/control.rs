//! The data scientist's API to the coordinator: submit, inspect, watch and cancel runs;
//! list and download checkpoints. The `fedra` CLI is a thin layer over this, and tests and
//! `fedra-sim` use it too, so every path is exercised the way users drive it.

use crate::convert::{self, WireError};
use crate::plan_file::PlanFile;
use crate::status::{CheckpointSummary, RunStatus, ScopeSummary, WatchEvent};
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
    /// `--output json` could not write a value (see `crate::output::json_document`).
    #[error("cannot write JSON output: {0}")]
    Output(#[from] serde_json::Error),
    #[error("malformed answer from the coordinator: {0}")]
    Wire(#[from] WireError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// A checkpoint failed verification, or there is nothing to verify it against.
    #[error("{0}")]
    Untrusted(String),
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
    pub(crate) checkpoints: CheckpointServiceClient<Channel>,
    privacy: PrivacyServiceClient<Channel>,
    governance: GovernanceServiceClient<Channel>,
    /// The checkpoint signing keys pulls are verified against (see [`Self::trusting`]).
    pub(crate) trust: Option<fedra_pki::signing::TrustedKeys>,
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
    ///
    /// `endpoint` may list several coordinators separated by commas (those sharing one
    /// store): the first that accepts the connection is used, which is the leader, since a
    /// standby does not listen.
    pub async fn connect(endpoint: &str, tls: &fedra_pki::ClientTls) -> Result<Self, ControlError> {
        let mut failures = Vec::new();
        for one in endpoint.split(',').map(str::trim) {
            let attempt = async {
                tls.endpoint(one)
                    .map_err(|e| e.to_string())?
                    .connect_timeout(std::time::Duration::from_secs(5))
                    .connect()
                    .await
                    .map_err(|e| e.to_string())
            };
            match attempt.await {
                Ok(channel) => return Ok(Self::on(channel)),
                Err(e) => failures.push(if endpoint.contains(',') { format!("{one}: {e}") } else { e }),
            }
        }
        Err(ControlError::Connect { endpoint: endpoint.to_string(), message: failures.join("; ") })
    }

    fn on(channel: tonic::transport::Channel) -> Self {
        Self {
            runs: RunServiceClient::new(channel.clone()),
            privacy: PrivacyServiceClient::new(channel.clone()),
            governance: GovernanceServiceClient::new(channel.clone()),
            checkpoints: CheckpointServiceClient::new(channel),
            trust: None,
        }
    }

    /// Verifies pulled checkpoints against these keys (the deployment's
    /// `checkpoint-signing.pub`). Without them, [`Self::pull_checkpoint`] refuses.
    #[must_use]
    pub fn trusting(mut self, trust: fedra_pki::signing::TrustedKeys) -> Self {
        self.trust = Some(trust);
        self
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

    /// Downloads `region`'s copy of a checkpoint (`None`: the coordinator's choice): its
    /// info (with manifest, signature and drift reference) and the weights file's bytes.
    ///
    /// # Errors
    /// Unknown checkpoint, refusal, or a malformed stream.
    pub async fn fetch_checkpoint(
        &mut self,
        id: &str,
        region: Option<&str>,
    ) -> Result<(pb::CheckpointInfo, Vec<u8>), ControlError> {
        let req = pb::FetchCheckpointRequest {
            checkpoint_id: id.to_string(),
            region: region.unwrap_or_default().to_string(),
        };
        let mut stream = self.checkpoints.fetch_checkpoint(req).await?.into_inner();
        let info = match stream.message().await? {
            Some(pb::CheckpointPart { part: Some(pb::checkpoint_part::Part::Info(i)) }) => i,
            _ => return Err(ControlError::Protocol("checkpoint stream did not start with its info".into())),
        };
        let mut bytes = Vec::new();
        while let Some(part) = stream.message().await? {
            match part.part {
                Some(pb::checkpoint_part::Part::Safetensors(b)) => bytes.extend_from_slice(&b),
                _ => return Err(ControlError::Protocol("unexpected message in checkpoint stream".into())),
            }
        }
        Ok((info, bytes))
    }

    /// Downloads a checkpoint into `dir` as `model.safetensors`, `manifest.json`,
    /// `manifest.sig` (and `reference.json` when the run released one), after verifying it
    /// against the trusted keys: the manifest's signature, the weights' digests and the
    /// reference's. Writes to temporary names first, so a refused or failed pull leaves no
    /// file that looks complete.
    ///
    /// # Errors
    /// [`ControlError::Untrusted`] without trusted keys or naming the first mismatch;
    /// unknown checkpoint, transport failure or I/O errors.
    pub async fn pull_checkpoint(&mut self, id: &str, dir: &Path) -> Result<PulledCheckpoint, ControlError> {
        let Some(trust) = self.trust.clone() else {
            return Err(ControlError::Untrusted(
                "no trusted checkpoint signing key to verify against: pass --trust FILE (the deployment's checkpoint-signing.pub)".into(),
            ));
        };
        let (info, bytes) = self.fetch_checkpoint(id, None).await?;
        let bundle = fedra_pki::checkpoint::Bundle {
            manifest: info.manifest_json.clone().into_bytes(),
            signature: info.signature_json.clone().into_bytes(),
            weights: bytes,
        };
        let view = fedra_pki::checkpoint::verify_bundle(id, &bundle, &trust)
            .map_err(|e| ControlError::Untrusted(e.to_string()))?;
        crate::verify::check_reference(&view, &info).map_err(ControlError::Untrusted)?;
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| ControlError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let weights = dir.join("model.safetensors");
        let manifest_path = dir.join("manifest.json");
        let mut files = vec![
            (weights.clone(), bundle.weights.as_slice()),
            (manifest_path.clone(), bundle.manifest.as_slice()),
            (dir.join(fedra_pki::signing::SIGNATURE_FILE), bundle.signature.as_slice()),
        ];
        if !info.reference_json.is_empty() {
            files.push((dir.join("reference.json"), info.reference_json.as_bytes()));
        }
        for (path, data) in &files {
            let tmp = path.with_extension("part");
            std::fs::write(&tmp, data).map_err(io(&tmp))?;
            std::fs::rename(&tmp, path).map_err(io(path))?;
        }
        Ok(PulledCheckpoint { info: convert::checkpoint_from_pb(info), weights, manifest: manifest_path })
    }
}
