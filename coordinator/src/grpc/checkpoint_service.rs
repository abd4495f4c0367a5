//! `CheckpointService`: listing and downloading checkpoints (read-only, so from the store
//! directly instead of through the round engine), and the model registry's RPCs
//! (`registry_service`).

use super::auth::{Access, Caller, Gate, Rpc};
use super::{ApiError, convert};
use crate::checkpoint::Checkpoints;
use crate::governance::Governance;
use crate::ids::RegionId;
use crate::registry::RegistryHandle;
use crate::store::{CheckpointFilter, Store};
use fedra_proto::pb;
use fedra_proto::pb::checkpoint_service_server::CheckpointService;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

pub struct CheckpointApi {
    store: Arc<dyn Store>,
    /// Where the checkpoints' files or objects are read from.
    checkpoints: Checkpoints,
    chunk_bytes: usize,
    governance: Governance,
    gate: Gate,
    registry: RegistryHandle,
}

/// The region an inference node is confined to, or `None` for callers who see every region.
pub(super) fn confined_region(caller: &Caller) -> Option<&RegionId> {
    match caller.access() {
        Access::Region => caller.identity().and_then(|i| i.region()),
        _ => None,
    }
}

impl CheckpointApi {
    pub fn new(
        store: Arc<dyn Store>,
        checkpoints: Checkpoints,
        chunk_bytes: usize,
        governance: Governance,
        gate: Gate,
        registry: RegistryHandle,
    ) -> Self {
        Self { store, checkpoints, chunk_bytes, governance, gate, registry }
    }

    pub(super) fn gate(&self) -> &Gate {
        &self.gate
    }

    pub(super) fn governance(&self) -> &Governance {
        &self.governance
    }

    pub(super) fn registry(&self) -> &RegistryHandle {
        &self.registry
    }

    /// With a policy in force, whether its `[roles] read_checkpoints` lets the caller read a
    /// checkpoint stored in `regions` (any one of them suffices); the refusal of the first
    /// region otherwise. Without a policy or an identity, everything the table allowed.
    fn policy_reads(&self, caller: &Caller, regions: &[RegionId]) -> Result<(), String> {
        let (Some(identity), Some(policy)) = (caller.identity(), self.governance.snapshot()) else { return Ok(()) };
        let mut first = None;
        for region in regions {
            match policy.set.may_read_checkpoint(identity, region) {
                Ok(_) => return Ok(()),
                Err(refusal) => {
                    first.get_or_insert_with(|| refusal.to_string());
                }
            }
        }
        Err(first.unwrap_or_else(|| "the checkpoint has no stored copy".into()))
    }

    async fn published_ids(&self) -> Result<HashSet<String>, ApiError> {
        Ok(self.store.list_runs().await?.into_iter().filter_map(|r| r.published_checkpoint.map(String::from)).collect())
    }
}

type PartStream = Pin<Box<dyn Stream<Item = Result<pb::CheckpointPart, Status>> + Send>>;

#[tonic::async_trait]
impl CheckpointService for CheckpointApi {
    async fn list_checkpoints(
        &self,
        req: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::ListCheckpointsResponse>, Status> {
        let caller = self.gate.admit(&req, Rpc::ListCheckpoints)?;
        let r = req.into_inner();
        let mut region = convert::optional(&r.region, |v| convert::region_id("region", v))?;
        if let Some(own) = confined_region(&caller) {
            if region.as_ref().is_some_and(|r| r != own) {
                return Err(ApiError::Denied(format!(
                    "an inference node of region {own} may list only that region's checkpoints"
                ))
                .into());
            }
            region = Some(own.clone());
        }
        let filter = CheckpointFilter {
            region,
            model_name: if r.model_name.is_empty() { None } else { Some(r.model_name) },
            run: convert::optional(&r.run_id, |v| convert::run_id("run_id", v))?,
        };
        let published = self.published_ids().await?;
        let mut list = self.store.list_checkpoints(&filter).await.map_err(ApiError::from)?;
        list.retain(|c| {
            let regions: Vec<RegionId> = c.locations.iter().map(|(r, _)| r.clone()).collect();
            self.policy_reads(&caller, &regions).is_ok()
        });
        Ok(Response::new(pb::ListCheckpointsResponse {
            checkpoints: list.iter().map(|c| convert::checkpoint_to_pb(c, published.contains(c.id.as_str()))).collect(),
        }))
    }

    type FetchCheckpointStream = PartStream;

    /// Streams the info then the weights, verifying their digest as they are read from the
    /// artifact store: a copy that changed in storage ends the stream with DATA_LOSS instead
    /// of serving bad weights.
    async fn fetch_checkpoint(
        &self,
        req: Request<pb::FetchCheckpointRequest>,
    ) -> Result<Response<Self::FetchCheckpointStream>, Status> {
        let caller = self.gate.admit(&req, Rpc::FetchCheckpoint)?;
        let r = req.into_inner();
        let id = convert::checkpoint_id("checkpoint_id", &r.checkpoint_id)?;
        let asked = convert::optional(&r.region, |v| convert::region_id("region", v))?;
        let record = self
            .store
            .get_checkpoint(&id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("checkpoint {id} not found")))?;
        if let Some(own) = confined_region(&caller) {
            if asked.as_ref().is_some_and(|r| r != own) {
                return Err(ApiError::Denied(format!(
                    "an inference node of region {own} reads only that region's copy"
                ))
                .into());
            }
            if !record.locations.iter().any(|(r, _)| r == own) {
                return Err(ApiError::Denied(format!("checkpoint {id} was not published to region {own}")).into());
            }
        }
        let want = asked.or_else(|| confined_region(&caller).cloned());
        let regions: Vec<RegionId> = record.locations.iter().map(|(r, _)| r.clone()).collect();
        self.policy_reads(&caller, &regions)
            .map_err(|why| ApiError::Denied(format!("checkpoint {id} may not be read: {why}")))?;
        let manifest = convert::manifest_of(&record)?;
        let (_, location) =
            match &want {
                Some(region) => record.locations.iter().find(|(r, _)| r == region).cloned().ok_or_else(|| {
                    ApiError::NotFound(format!("checkpoint {id} was not published to region {region}"))
                })?,
                None => record
                    .locations
                    .first()
                    .cloned()
                    .ok_or_else(|| ApiError::Unavailable(format!("checkpoint {id} has no stored copy")))?,
            };
        let unavailable = |what: &str, e: crate::checkpoint::CheckpointError| {
            ApiError::Unavailable(format!("checkpoint {id}: {what} {location}: {e}"))
        };
        let weights = self.checkpoints.artifacts().resolve(&location).map_err(|e| unavailable("cannot resolve", e))?;
        // The region copy's drift reference, when the run released one (its digest is in
        // the signed manifest, so a verifier checks it like the weights).
        let reference = weights.sibling(crate::checkpoint::REFERENCE_FILE);
        let reference_json = match reference.get_if_exists().await {
            Ok(None) => String::new(),
            Ok(Some(bytes)) => String::from_utf8(bytes.to_vec()).map_err(|_| {
                ApiError::Unavailable(format!(
                    "checkpoint {id}: its drift reference {} is not UTF-8",
                    reference.location()
                ))
            })?,
            Err(e) => return Err(unavailable("reading the drift reference beside", e).into()),
        };
        let mut stream = weights.stream().await.map_err(|e| unavailable("cannot open", e))?;
        let published = self.published_ids().await?.contains(id.as_str());
        let info = pb::CheckpointInfo { reference_json, ..convert::checkpoint_to_pb(&record, published) };
        let chunk = self.chunk_bytes;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            if tx.send(Ok(pb::CheckpointPart { part: Some(pb::checkpoint_part::Part::Info(info)) })).await.is_err() {
                return;
            }
            let send = |buf: Vec<u8>| {
                tx.send(Ok(pb::CheckpointPart { part: Some(pb::checkpoint_part::Part::Safetensors(buf)) }))
            };
            // The store's pieces (a file's are small) are regrouped into `chunk`-byte parts.
            let mut hasher = Sha256::new();
            let mut buf = Vec::with_capacity(chunk);
            while let Some(piece) = stream.next().await {
                let piece = match piece {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(Status::unavailable(format!("reading checkpoint: {e}")))).await;
                        return;
                    }
                };
                hasher.update(&piece);
                let mut rest = &piece[..];
                while !rest.is_empty() {
                    let take = (chunk - buf.len()).min(rest.len());
                    buf.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if buf.len() == chunk && send(std::mem::replace(&mut buf, Vec::with_capacity(chunk))).await.is_err()
                    {
                        return;
                    }
                }
            }
            if !buf.is_empty() && send(buf).await.is_err() {
                return;
            }
            let computed = hex::encode(hasher.finalize());
            if computed != manifest.file_sha256 {
                let _ = tx
                    .send(Err(Status::data_loss(format!(
                        "checkpoint file sha256 {computed} differs from its manifest's {}",
                        manifest.file_sha256
                    ))))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn list_models(
        &self,
        req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        Ok(self.list_models_rpc(req).await?)
    }

    async fn model_history(
        &self,
        req: Request<pb::ModelHistoryRequest>,
    ) -> Result<Response<pb::ModelHistoryResponse>, Status> {
        Ok(self.model_history_rpc(req).await?)
    }

    async fn promote_model(
        &self,
        req: Request<pb::PromoteModelRequest>,
    ) -> Result<Response<pb::PromoteModelResponse>, Status> {
        Ok(self.promote_rpc(req).await?)
    }

    async fn rollback_model(
        &self,
        req: Request<pb::RollbackModelRequest>,
    ) -> Result<Response<pb::RollbackModelResponse>, Status> {
        Ok(self.rollback_rpc(req).await?)
    }

    type WatchServingStream = super::registry_service::ServingStream;

    async fn watch_serving(
        &self,
        req: Request<pb::WatchServingRequest>,
    ) -> Result<Response<Self::WatchServingStream>, Status> {
        Ok(self.watch_serving_rpc(req).await?)
    }

    async fn report_serving(
        &self,
        req: Request<pb::ServingReport>,
    ) -> Result<Response<pb::ReportServingResponse>, Status> {
        Ok(self.report_serving_rpc(req).await?)
    }

    async fn drift_status(
        &self,
        req: Request<pb::DriftStatusRequest>,
    ) -> Result<Response<pb::DriftStatusResponse>, Status> {
        Ok(self.drift_status_rpc(req).await?)
    }
}
