//! `fedra checkpoint verify DIR|ID`: the signature, the digests and the parent chain of a
//! checkpoint, offline from an artifact directory or online through the coordinator.

use crate::control::{ControlClient, ControlError};
use fedra_pki::checkpoint::{Bundle, ManifestView, VerifyError, verify_chain};
use fedra_pki::signing::{SIGNATURE_FILE, TrustedKeys};
use fedra_proto::pb;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The most ancestors followed (a run has at most this many rounds).
const MAX_CHAIN: usize = 100_000;

/// A region copy's drift reference must be one the signed manifest names.
///
/// # Errors
/// The reference's digest, when the manifest does not list it.
pub fn check_reference(view: &ManifestView, info: &pb::CheckpointInfo) -> Result<(), String> {
    check_reference_bytes(view, info.reference_json.as_bytes())
}

fn check_reference_bytes(view: &ManifestView, reference: &[u8]) -> Result<(), String> {
    if reference.is_empty() {
        return Ok(());
    }
    let sha = hex::encode(Sha256::digest(reference));
    if view.reference_sha256.values().any(|r| r.eq_ignore_ascii_case(&sha)) {
        Ok(())
    } else {
        Err(format!("checkpoint {}: drift reference sha256 {sha} is not one its manifest names", view.checkpoint_id))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn bundle_in(dir: &Path) -> Result<Bundle, String> {
    Ok(Bundle {
        manifest: read(&dir.join("manifest.json"))?,
        signature: read(&dir.join(SIGNATURE_FILE))?,
        weights: read(&dir.join("model.safetensors"))?,
    })
}

/// The checkpoint id a directory's manifest claims (unverified: only to find parents).
fn claimed_id(dir: &Path) -> Option<String> {
    let bytes = std::fs::read(dir.join("manifest.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("checkpoint_id")?.as_str().map(str::to_string)
}

/// Verifies the checkpoint in `dir` and its ancestors among its sibling directories (an
/// artifact tree's `<run>/round-NNNN/`), with each directory's drift reference.
///
/// # Errors
/// The first mismatch, named.
pub fn verify_dir(dir: &Path, trust: &TrustedKeys) -> Result<Vec<ManifestView>, String> {
    let head = claimed_id(dir).ok_or_else(|| format!("{}: no readable manifest.json", dir.display()))?;
    let mut dirs: HashMap<String, PathBuf> = HashMap::new();
    if let Some(parent) = dir.parent()
        && let Ok(siblings) = std::fs::read_dir(parent)
    {
        for entry in siblings.flatten() {
            let path = entry.path();
            if let Some(id) = claimed_id(&path) {
                dirs.insert(id, path);
            }
        }
    }
    dirs.insert(head.clone(), dir.to_path_buf());
    let chain = verify_chain(&head, trust, |id| {
        let d = dirs.get(id).ok_or_else(|| format!("no directory beside {} holds it", dir.display()))?;
        bundle_in(d)
    })
    .map_err(|e| e.to_string())?;
    for view in &chain {
        let d = &dirs[&view.checkpoint_id];
        match std::fs::read(d.join("reference.json")) {
            Ok(bytes) => check_reference_bytes(view, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", d.join("reference.json").display())),
        }
    }
    Ok(chain)
}

/// Verifies checkpoint `id` and its ancestors as the coordinator serves them.
///
/// # Errors
/// The first mismatch, or a checkpoint that cannot be fetched.
pub async fn verify_remote(
    client: &mut ControlClient,
    id: &str,
    trust: &TrustedKeys,
) -> Result<Vec<ManifestView>, ControlError> {
    // Fetch the chain first (following the manifests' unverified parent pointers), then
    // verify it as a whole: verification trusts nothing it fetched.
    let mut fetched: HashMap<String, Result<Bundle, String>> = HashMap::new();
    let mut next = Some(id.to_string());
    while let Some(current) = next.take() {
        if fetched.len() >= MAX_CHAIN || fetched.contains_key(&current) {
            break;
        }
        match client.fetch_checkpoint(&current, None).await {
            Ok((info, weights)) => {
                let check = fedra_pki::checkpoint::verify_bundle(
                    &current,
                    &Bundle {
                        manifest: info.manifest_json.clone().into_bytes(),
                        signature: info.signature_json.clone().into_bytes(),
                        weights: Vec::new(),
                    },
                    trust,
                );
                // Only a signed manifest's own run is followed further.
                let parent = serde_json::from_str::<serde_json::Value>(&info.manifest_json)
                    .ok()
                    .and_then(|v| v.get("parent_checkpoint")?.as_str().map(str::to_string));
                if let Err(VerifyError::Digest { .. } | VerifyError::Layout { .. }) | Ok(_) = &check {
                    next = parent;
                }
                if !info.reference_json.is_empty()
                    && let Ok(view) = serde_json::from_str::<ManifestView>(&info.manifest_json)
                {
                    check_reference(&view, &info).map_err(ControlError::Untrusted)?;
                }
                let bundle = Bundle {
                    manifest: info.manifest_json.into_bytes(),
                    signature: info.signature_json.into_bytes(),
                    weights,
                };
                fetched.insert(current, Ok(bundle));
            }
            Err(e) => {
                fetched.insert(current, Err(e.to_string()));
            }
        }
    }
    verify_chain(id, trust, |want| match fetched.get(want) {
        Some(Ok(b)) => Ok(b.clone()),
        Some(Err(e)) => Err(e.clone()),
        None => Err("not fetched".into()),
    })
    .map_err(|e| ControlError::Untrusted(e.to_string()))
}
