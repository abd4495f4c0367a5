//! `CheckpointService`: listing and downloading checkpoints. Read-only, so it reads the
//! store directly instead of going through the round engine.

use super::auth::{Access, Caller, Gate, Rpc};
use super::{ApiError, convert};
use crate::governance::Governance;
use crate::ids::RegionId;
use crate::store::{CheckpointFilter, Store};
use fedra_proto::pb;
use fedra_proto::pb::checkpoint_service_server::CheckpointService;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct CheckpointApi {
    store: Arc<dyn Store>,
    chunk_bytes: usize,
    governance: Governance,
    gate: Gate,
}

/// The region an inference node is confined to, or `None` for callers who see every region.
fn confined_region(caller: &Caller) -> Option<&RegionId> {
    match caller.access() {
        Access::Region => caller.identity().and_then(|i| i.region()),
        _ => None,
    }
}

impl CheckpointApi {
    pub fn new(store: Arc<dyn Store>, chunk_bytes: usize, governance: Governance, gate: Gate) -> Self {
        Self { store, chunk_bytes, governance, gate }
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

    /// Streams the info then the file, verifying the file's digest as it is read: a copy
    /// that changed on disk ends the stream with DATA_LOSS instead of serving bad weights.
    async fn fetch_checkpoint(
        &self,
        req: Request<pb::FetchCheckpointRequest>,
    ) -> Result<Response<Self::FetchCheckpointStream>, Status> {
        let caller = self.gate.admit(&req, Rpc::FetchCheckpoint)?;
        let id = convert::checkpoint_id("checkpoint_id", &req.into_inner().checkpoint_id)?;
        let record = self
            .store
            .get_checkpoint(&id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("checkpoint {id} not found")))?;
        if let Some(own) = confined_region(&caller)
            && !record.locations.iter().any(|(r, _)| r == own)
        {
            return Err(ApiError::Denied(format!("checkpoint {id} was not published to region {own}")).into());
        }
        let regions: Vec<RegionId> = record.locations.iter().map(|(r, _)| r.clone()).collect();
        self.policy_reads(&caller, &regions)
            .map_err(|why| ApiError::Denied(format!("checkpoint {id} may not be read: {why}")))?;
        let manifest = convert::manifest_of(&record)?;
        let (_, path) = record
            .locations
            .first()
            .cloned()
            .ok_or_else(|| ApiError::Unavailable(format!("checkpoint {id} has no stored copy")))?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| ApiError::Unavailable(format!("checkpoint {id}: cannot open {}: {e}", path.display())))?;
        let published = self.published_ids().await?.contains(id.as_str());
        let info = convert::checkpoint_to_pb(&record, published);
        let chunk = self.chunk_bytes;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            if tx.send(Ok(pb::CheckpointPart { part: Some(pb::checkpoint_part::Part::Info(info)) })).await.is_err() {
                return;
            }
            let mut hasher = Sha256::new();
            loop {
                let mut buf = vec![0u8; chunk];
                let n = match file.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.send(Err(Status::unavailable(format!("reading checkpoint: {e}")))).await;
                        return;
                    }
                };
                buf.truncate(n);
                hasher.update(&buf);
                if tx
                    .send(Ok(pb::CheckpointPart { part: Some(pb::checkpoint_part::Part::Safetensors(buf)) }))
                    .await
                    .is_err()
                {
                    return;
                }
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
}
