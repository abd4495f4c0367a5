//! A server optimizer's state, written beside each round's checkpoint so that a restart
//! resumes it exactly (see [`crate::aggregation::server_opt`]). One object per run and
//! round in the default artifact store, outside the regions' trees (it is the
//! coordinator's own, not an inference artifact):
//!
//! ```text
//! <default store>/.server-state/<run id>/round-0003.safetensors   tensors "m" and "v"
//! ```
//!
//! The round's manifest records the object's sha256 (`server_state_sha256`); a state whose
//! object is missing or differs is refused, never silently restarted from zero.

use super::{CheckpointError, Checkpoints, Object, round_dir};
use crate::aggregation::server_opt::ServerState;
use crate::ids::RunId;
use bytes::Bytes;
use fedra_types::plan::ServerOptimizer;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use sha2::{Digest, Sha256};

/// The directory (key prefix) of the coordinator's optimizer states.
const STATE_DIR: &str = ".server-state";

/// Encodes a state as safetensors; returns the bytes and their sha256. CPU work.
///
/// # Errors
/// Encoding failure.
pub fn encode_server_state(state: &ServerState) -> Result<(Bytes, String), CheckpointError> {
    let m = fedra_proto::chunking::encode_le(&state.m);
    let v = fedra_proto::chunking::encode_le(&state.v);
    let mut views = vec![("m".to_string(), view(&m, state.m.len())?)];
    if !state.v.is_empty() {
        views.push(("v".to_string(), view(&v, state.v.len())?));
    }
    let bytes = safetensors::tensor::serialize(views, None).map_err(|e| CheckpointError::Format(e.to_string()))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    Ok((Bytes::from(bytes), sha))
}

impl Checkpoints {
    /// Where round `round`'s optimizer state of `run` lies.
    pub fn server_state_object(&self, run: &RunId, round: u32) -> Object {
        let name = format!("{}.safetensors", round_dir(round, 1));
        self.artifacts().default_store().object(&[STATE_DIR, run.as_str(), &name])
    }

    /// Writes the state after round `round` (encoded by [`encode_server_state`]).
    ///
    /// # Errors
    /// The store refuses the write.
    pub async fn write_server_state(&self, run: &RunId, round: u32, encoded: Bytes) -> Result<(), CheckpointError> {
        self.server_state_object(run, round).put(encoded).await
    }

    /// Reads round `round`'s state back, checking the digest its manifest recorded and
    /// that it fits `opt` and a model of `len` values (decoding on a blocking thread).
    ///
    /// # Errors
    /// A missing or corrupt object, or a state of the wrong shape.
    pub async fn load_server_state(
        &self,
        run: &RunId,
        round: u32,
        sha256: &str,
        opt: &ServerOptimizer,
        len: usize,
    ) -> Result<ServerState, CheckpointError> {
        let object = self.server_state_object(run, round);
        let bytes = object.get().await?;
        let (shown, sha256, opt) = (object.location().to_string(), sha256.to_string(), *opt);
        tokio::task::spawn_blocking(move || decode(&bytes, &shown, &sha256, &opt, len))
            .await
            .map_err(|e| CheckpointError::Format(format!("decoding the optimizer state failed: {e}")))?
    }
}

fn decode(
    bytes: &[u8],
    shown: &str,
    sha256: &str,
    opt: &ServerOptimizer,
    len: usize,
) -> Result<ServerState, CheckpointError> {
    let computed = hex::encode(Sha256::digest(bytes));
    if !computed.eq_ignore_ascii_case(sha256) {
        return Err(CheckpointError::Digest { path: shown.into(), recorded: sha256.into(), computed });
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Format(e.to_string()))?;
    let read = |name: &str| -> Result<Vec<f32>, CheckpointError> {
        let Ok(t) = st.tensor(name) else { return Ok(Vec::new()) };
        if t.dtype() != Dtype::F32 || t.shape().len() != 1 {
            return Err(CheckpointError::Layout {
                path: shown.into(),
                reason: format!("tensor {name:?} is not f32[n]"),
            });
        }
        let mut out = vec![0.0f32; t.shape()[0]];
        fedra_proto::chunking::decode_le_into(t.data(), &mut out);
        Ok(out)
    };
    let state = ServerState { m: read("m")?, v: read("v")? };
    state.check(opt, len).map_err(|e| CheckpointError::Layout { path: shown.into(), reason: e.to_string() })?;
    Ok(state)
}

fn view(bytes: &[u8], n: usize) -> Result<TensorView<'_>, CheckpointError> {
    TensorView::new(Dtype::F32, vec![n], bytes).map_err(|e| CheckpointError::Format(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::{ArtifactStore, StoreOptions, StoreSpec};
    use super::*;
    use object_store::memory::InMemory;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    async fn round_trip(cps: &Checkpoints) {
        let run = RunId::generate();
        let opt = ServerOptimizer::FedAdam { server_learning_rate: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 };
        let state = ServerState { m: vec![0.5, -1.25, 3.0], v: vec![1e-6, 2.0, 0.25] };
        let (bytes, sha) = encode_server_state(&state).unwrap();
        cps.write_server_state(&run, 2, bytes).await.unwrap();
        assert_eq!(cps.load_server_state(&run, 2, &sha, &opt, 3).await.unwrap(), state);
        // Another optimizer or model size does not fit.
        let momentum = ServerOptimizer::FedAvgM { server_learning_rate: 1.0, momentum: 0.9 };
        assert!(matches!(
            cps.load_server_state(&run, 2, &sha, &momentum, 3).await,
            Err(CheckpointError::Layout { .. })
        ));
        assert!(matches!(cps.load_server_state(&run, 2, &sha, &opt, 4).await, Err(CheckpointError::Layout { .. })));
        // FedAvgM's state has no v.
        let m_only = ServerState { m: vec![1.0; 3], v: Vec::new() };
        let (bytes, sha_m) = encode_server_state(&m_only).unwrap();
        cps.write_server_state(&run, 3, bytes).await.unwrap();
        assert_eq!(cps.load_server_state(&run, 3, &sha_m, &momentum, 3).await.unwrap(), m_only);
        let object = cps.server_state_object(&run, 2);
        let mut bytes = object.get().await.unwrap().to_vec();
        *bytes.last_mut().unwrap() ^= 1;
        object.put(Bytes::from(bytes)).await.unwrap();
        assert!(matches!(cps.load_server_state(&run, 2, &sha, &opt, 3).await, Err(CheckpointError::Digest { .. })));
        assert!(matches!(cps.load_server_state(&run, 9, &sha, &opt, 3).await, Err(CheckpointError::Missing { .. })));
    }

    #[tokio::test]
    async fn state_round_trips_and_a_changed_object_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cps = Checkpoints::with_ephemeral_key(dir.path());
        round_trip(&cps).await;
        assert!(dir.path().join(STATE_DIR).is_dir());
        let bucket = StoreSpec::bucket(Arc::new(InMemory::new()), "memory://state", "fedra");
        round_trip(&Checkpoints::ephemeral(
            ArtifactStore::open(&bucket, &BTreeMap::new(), StoreOptions::default()).unwrap(),
        ))
        .await;
    }
}
