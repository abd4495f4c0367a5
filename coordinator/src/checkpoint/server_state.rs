//! A server optimizer's state, written beside each round's checkpoint so that a restart
//! resumes it exactly (see [`crate::aggregation::server_opt`]). One file per run and round,
//! outside the regions' trees (it is the coordinator's own, not an inference artifact):
//!
//! ```text
//! <artifacts>/.server-state/<run id>/round-0003.safetensors   tensors "m" and "v"
//! ```
//!
//! The round's manifest records the file's sha256 (`server_state_sha256`); a state whose
//! file is missing or differs is refused, never silently restarted from zero.

use super::{CheckpointDir, CheckpointError, io, write_atomic};
use crate::aggregation::server_opt::ServerState;
use crate::ids::RunId;
use fedra_types::plan::ServerOptimizer;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

impl CheckpointDir {
    /// Where round `round`'s optimizer state of `run` lies.
    pub fn server_state_path(&self, run: &RunId, round: u32) -> PathBuf {
        self.root.join(".server-state").join(run.as_str()).join(format!("round-{round:04}.safetensors"))
    }

    /// Writes the state after round `round`; returns the file's sha256. Blocking I/O.
    ///
    /// # Errors
    /// I/O or encoding failure.
    pub fn write_server_state(&self, run: &RunId, round: u32, state: &ServerState) -> Result<String, CheckpointError> {
        let path = self.server_state_path(run, round);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let m = fedra_proto::chunking::encode_le(&state.m);
        let v = fedra_proto::chunking::encode_le(&state.v);
        let mut views = vec![("m".to_string(), view(&m, state.m.len())?)];
        if !state.v.is_empty() {
            views.push(("v".to_string(), view(&v, state.v.len())?));
        }
        let bytes = safetensors::tensor::serialize(views, None).map_err(|e| CheckpointError::Format(e.to_string()))?;
        write_atomic(&path, &bytes)?;
        Ok(hex::encode(Sha256::digest(&bytes)))
    }

    /// Reads round `round`'s state back, checking the digest its manifest recorded and
    /// that it fits `opt` and a model of `len` values. Blocking I/O.
    ///
    /// # Errors
    /// A missing or corrupt file, or a state of the wrong shape.
    pub fn load_server_state(
        &self,
        run: &RunId,
        round: u32,
        sha256: &str,
        opt: &ServerOptimizer,
        len: usize,
    ) -> Result<ServerState, CheckpointError> {
        let path = self.server_state_path(run, round);
        let shown = path.display().to_string();
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let computed = hex::encode(Sha256::digest(&bytes));
        if !computed.eq_ignore_ascii_case(sha256) {
            return Err(CheckpointError::Digest { path: shown, recorded: sha256.into(), computed });
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| CheckpointError::Format(e.to_string()))?;
        let read = |name: &str| -> Result<Vec<f32>, CheckpointError> {
            let Ok(t) = st.tensor(name) else { return Ok(Vec::new()) };
            if t.dtype() != Dtype::F32 || t.shape().len() != 1 {
                return Err(CheckpointError::Layout {
                    path: shown.clone(),
                    reason: format!("tensor {name:?} is not f32[n]"),
                });
            }
            let mut out = vec![0.0f32; t.shape()[0]];
            fedra_proto::chunking::decode_le_into(t.data(), &mut out);
            Ok(out)
        };
        let state = ServerState { m: read("m")?, v: read("v")? };
        state.check(opt, len).map_err(|e| CheckpointError::Layout { path: shown, reason: e.to_string() })?;
        Ok(state)
    }
}

fn view(bytes: &[u8], n: usize) -> Result<TensorView<'_>, CheckpointError> {
    TensorView::new(Dtype::F32, vec![n], bytes).map_err(|e| CheckpointError::Format(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_changed_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cps = CheckpointDir::with_ephemeral_key(dir.path());
        let run = RunId::generate();
        let opt = ServerOptimizer::FedAdam { server_learning_rate: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 };
        let state = ServerState { m: vec![0.5, -1.25, 3.0], v: vec![1e-6, 2.0, 0.25] };
        let sha = cps.write_server_state(&run, 2, &state).unwrap();
        assert_eq!(cps.load_server_state(&run, 2, &sha, &opt, 3).unwrap(), state);
        // Another optimizer or model size does not fit.
        let momentum = ServerOptimizer::FedAvgM { server_learning_rate: 1.0, momentum: 0.9 };
        assert!(matches!(cps.load_server_state(&run, 2, &sha, &momentum, 3), Err(CheckpointError::Layout { .. })));
        assert!(matches!(cps.load_server_state(&run, 2, &sha, &opt, 4), Err(CheckpointError::Layout { .. })));
        // FedAvgM's state has no v.
        let m_only = ServerState { m: vec![1.0; 3], v: Vec::new() };
        let sha_m = cps.write_server_state(&run, 3, &m_only).unwrap();
        assert_eq!(cps.load_server_state(&run, 3, &sha_m, &momentum, 3).unwrap(), m_only);
        let path = cps.server_state_path(&run, 2);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(cps.load_server_state(&run, 2, &sha, &opt, 3), Err(CheckpointError::Digest { .. })));
    }
}
