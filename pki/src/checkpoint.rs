//! Verifying a published checkpoint before use: the manifest's signature, the weights
//! file's digests, and the chain of parents back to the run's start. Shared by
//! `fedra checkpoint verify|pull` and the inference node, so that every consumer refuses
//! the same things for the same reasons.

use crate::signing::{SignatureError, TrustedKeys};
use fedra_types::model::{ModelSpec, TensorLayout};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// What a verifier reads from a manifest (`fedra.checkpoint.v1`); the coordinator's
/// `checkpoint::Manifest` is the full type. Unknown fields are ignored here on purpose: the
/// signature, not this parser, is what vouches for the bytes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ManifestView {
    pub format: String,
    pub checkpoint_id: String,
    pub run_id: String,
    pub round: u32,
    pub parent_checkpoint: Option<String>,
    pub model: ModelSpec,
    pub layout: TensorLayout,
    pub weights_sha256: String,
    pub file_sha256: String,
    #[serde(default)]
    pub published_to: Vec<String>,
    /// Per region copy: the sha256 of the drift reference (`reference.json`) published
    /// beside the weights, when the run released one.
    #[serde(default)]
    pub reference_sha256: BTreeMap<String, String>,
}

/// One checkpoint as a verifier holds it: the three files' bytes.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: Vec<u8>,
    pub signature: Vec<u8>,
    pub weights: Vec<u8>,
}

/// The first thing found wrong with a checkpoint; every variant names the checkpoint.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyError {
    #[error("checkpoint {checkpoint}: manifest signature: {source}")]
    Signature { checkpoint: String, source: SignatureError },
    #[error("checkpoint {checkpoint}: the manifest is not a fedra.checkpoint.v1 manifest: {reason}")]
    Manifest { checkpoint: String, reason: String },
    #[error("checkpoint {checkpoint}: {what} sha256 {computed} differs from the manifest's {recorded}")]
    Digest { checkpoint: String, what: &'static str, recorded: String, computed: String },
    #[error("checkpoint {checkpoint}: the weights file does not match the manifest's layout: {reason}")]
    Layout { checkpoint: String, reason: String },
    #[error("checkpoint {checkpoint}: parent chain: {reason}")]
    Chain { checkpoint: String, reason: String },
}

/// Verifies one bundle: the signature over the manifest's bytes first (nothing in an
/// unsigned manifest is trusted), then the weights file's sha256 and the sha256 of its
/// tensors' bytes in layout order (the `weights_sha256` that training used).
///
/// `expected` names the checkpoint the caller asked for, so that a valid manifest of a
/// different checkpoint is refused too.
///
/// # Errors
/// The first [`VerifyError`].
pub fn verify_bundle(expected: &str, bundle: &Bundle, trust: &TrustedKeys) -> Result<ManifestView, VerifyError> {
    trust
        .verify(&bundle.manifest, &bundle.signature)
        .map_err(|source| VerifyError::Signature { checkpoint: expected.to_string(), source })?;
    let manifest: ManifestView = serde_json::from_slice(&bundle.manifest)
        .map_err(|e| VerifyError::Manifest { checkpoint: expected.to_string(), reason: e.to_string() })?;
    let checkpoint = manifest.checkpoint_id.clone();
    if manifest.format != "fedra.checkpoint.v1" {
        return Err(VerifyError::Manifest { checkpoint, reason: format!("format {}", manifest.format) });
    }
    if checkpoint != expected {
        return Err(VerifyError::Manifest {
            checkpoint: expected.to_string(),
            reason: format!("it describes checkpoint {checkpoint}"),
        });
    }
    if manifest.layout != manifest.model.layout() {
        return Err(VerifyError::Layout { checkpoint, reason: "the layout differs from the model's".into() });
    }
    let file = hex::encode(Sha256::digest(&bundle.weights));
    if !file.eq_ignore_ascii_case(&manifest.file_sha256) {
        return Err(VerifyError::Digest {
            checkpoint,
            what: "weights file",
            recorded: manifest.file_sha256.clone(),
            computed: file,
        });
    }
    let weights = weights_sha256(&bundle.weights, &manifest.layout)
        .map_err(|reason| VerifyError::Layout { checkpoint: checkpoint.clone(), reason })?;
    if !weights.eq_ignore_ascii_case(&manifest.weights_sha256) {
        return Err(VerifyError::Digest {
            checkpoint,
            what: "parameters",
            recorded: manifest.weights_sha256.clone(),
            computed: weights,
        });
    }
    Ok(manifest)
}

/// The sha256 of a safetensors file's f32 tensors, concatenated in `layout` order: the
/// flat little-endian parameter vector's digest, without decoding to floats.
fn weights_sha256(file: &[u8], layout: &TensorLayout) -> Result<String, String> {
    let st = safetensors::SafeTensors::deserialize(file).map_err(|e| e.to_string())?;
    if st.len() != layout.tensors.len() {
        return Err(format!("{} tensors, expected {}", st.len(), layout.tensors.len()));
    }
    let mut hasher = Sha256::new();
    for t in &layout.tensors {
        let view = st.tensor(&t.name).map_err(|_| format!("tensor {:?} is missing", t.name))?;
        if view.dtype() != safetensors::Dtype::F32 || view.shape() != t.shape.as_slice() {
            return Err(format!(
                "tensor {:?} is {:?}{:?}, expected F32{:?}",
                t.name,
                view.dtype(),
                view.shape(),
                t.shape
            ));
        }
        hasher.update(view.data());
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Verifies `head` and every ancestor in its run, following `parent_checkpoint` until a
/// checkpoint of another run (the run's initial model) or none. `fetch` returns a
/// checkpoint's bundle by id, or why it cannot. Returns the chain, head first.
///
/// # Errors
/// The first [`VerifyError`] along the chain; a parent that cannot be fetched, a round
/// number that does not descend, or a cycle is a [`VerifyError::Chain`].
pub fn verify_chain(
    head: &str,
    trust: &TrustedKeys,
    mut fetch: impl FnMut(&str) -> Result<Bundle, String>,
) -> Result<Vec<ManifestView>, VerifyError> {
    let chain_err =
        |checkpoint: &str, reason: String| VerifyError::Chain { checkpoint: checkpoint.to_string(), reason };
    let bundle = fetch(head).map_err(|e| chain_err(head, e))?;
    let first = verify_bundle(head, &bundle, trust)?;
    let mut chain = vec![first];
    loop {
        let child = chain.last().expect("the chain is never empty");
        let Some(parent) = child.parent_checkpoint.clone() else { break };
        let bundle = match fetch(&parent) {
            Ok(b) => b,
            // A parent from another run (an initial model) is where this run starts; its
            // own chain is verified by verifying it.
            Err(_) if !parent.starts_with(&format!("{}.", child.run_id)) => break,
            Err(e) => return Err(chain_err(&child.checkpoint_id, format!("parent {parent}: {e}"))),
        };
        let view = verify_bundle(&parent, &bundle, trust)?;
        if view.run_id != child.run_id {
            break;
        }
        if view.round >= child.round || chain.len() > 100_000 {
            return Err(chain_err(
                &child.checkpoint_id,
                format!("parent {parent} is round {}, not before round {}", view.round, child.round),
            ));
        }
        chain.push(view);
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::ManifestSigner;
    use fedra_types::model::Architecture;
    use std::collections::HashMap;

    fn bundle(signer: &ManifestSigner, id: &str, round: u32, parent: Option<&str>, values: &[f32]) -> Bundle {
        let model = ModelSpec::new("lr", Architecture::LogisticRegression { input_dim: 1, classes: 2 }).unwrap();
        let layout = model.layout();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (w, b) = bytes.split_at(layout.tensors[0].numel() * 4);
        let views = vec![
            (
                layout.tensors[0].name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, layout.tensors[0].shape.clone(), w)
                    .unwrap(),
            ),
            (
                layout.tensors[1].name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, layout.tensors[1].shape.clone(), b)
                    .unwrap(),
            ),
        ];
        let weights = safetensors::tensor::serialize(views, None::<HashMap<String, String>>).unwrap();
        let manifest = serde_json::json!({
            "format": "fedra.checkpoint.v1", "checkpoint_id": id, "run_id": "run", "round": round,
            "parent_checkpoint": parent, "model": model, "layout": layout,
            "weights_sha256": hex::encode(Sha256::digest(&bytes)),
            "file_sha256": hex::encode(Sha256::digest(&weights)),
        })
        .to_string()
        .into_bytes();
        Bundle { signature: signer.sign_json(&manifest).into_bytes(), manifest, weights }
    }

    #[test]
    fn every_tampering_is_named() {
        let (signer, _) = ManifestSigner::generate().unwrap();
        let trust = TrustedKeys::of(&signer);
        let good = bundle(&signer, "run.r0001", 1, None, &[0.5, -1.0, 2.0, 0.25]);
        assert_eq!(verify_bundle("run.r0001", &good, &trust).unwrap().round, 1);
        assert!(matches!(verify_bundle("run.r0002", &good, &trust), Err(VerifyError::Manifest { .. })));

        let mut weights = good.clone();
        let last = weights.weights.len() - 1;
        weights.weights[last] ^= 1;
        assert!(matches!(
            verify_bundle("run.r0001", &weights, &trust),
            Err(VerifyError::Digest { what: "weights file", .. })
        ));

        let mut manifest = good.clone();
        manifest.manifest =
            String::from_utf8(manifest.manifest).unwrap().replace("\"round\":1", "\"round\":7").into_bytes();
        assert!(matches!(verify_bundle("run.r0001", &manifest, &trust), Err(VerifyError::Signature { .. })));

        // A re-signed manifest whose parameter digest lies is caught by the tensor digest.
        let mut resigned = good.clone();
        let text = String::from_utf8(resigned.manifest).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let lie = text.replace(v["weights_sha256"].as_str().unwrap(), &"0".repeat(64));
        resigned.signature = signer.sign_json(lie.as_bytes()).into_bytes();
        resigned.manifest = lie.into_bytes();
        assert!(matches!(
            verify_bundle("run.r0001", &resigned, &trust),
            Err(VerifyError::Digest { what: "parameters", .. })
        ));
    }

    #[test]
    fn the_chain_is_walked_to_the_runs_start_and_a_broken_link_is_named() {
        let (signer, _) = ManifestSigner::generate().unwrap();
        let trust = TrustedKeys::of(&signer);
        let mut store: HashMap<String, Bundle> = HashMap::new();
        store.insert("run.r0001".into(), bundle(&signer, "run.r0001", 1, Some("init.r0001"), &[0.0; 4]));
        store.insert("run.r0002".into(), bundle(&signer, "run.r0002", 2, Some("run.r0001"), &[1.0; 4]));
        store.insert("run.r0003".into(), bundle(&signer, "run.r0003", 3, Some("run.r0002"), &[2.0; 4]));
        let fetch = |s: &HashMap<String, Bundle>, id: &str| s.get(id).cloned().ok_or_else(|| format!("{id} not found"));
        let chain = verify_chain("run.r0003", &trust, |id| fetch(&store, id)).unwrap();
        assert_eq!(chain.iter().map(|m| m.round).collect::<Vec<_>>(), vec![3, 2, 1]);

        store.get_mut("run.r0001").unwrap().weights[10] ^= 1;
        let err = verify_chain("run.r0003", &trust, |id| fetch(&store, id)).unwrap_err();
        assert!(err.to_string().contains("run.r0001"), "{err}");
        store.remove("run.r0002");
        let err = verify_chain("run.r0003", &trust, |id| fetch(&store, id)).unwrap_err();
        assert!(matches!(err, VerifyError::Chain { .. }) && err.to_string().contains("run.r0002"), "{err}");
    }
}
