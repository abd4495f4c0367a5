//! `fedra checkpoint verify DIR|URL|ID`: the signature, the digests and the parent chain of
//! a checkpoint, offline from an artifact directory or an object store's round
//! (`s3://bucket/…/<run>/round-NNNN`, read through the coordinator's artifact stores), or
//! online through the coordinator.

use crate::control::{ControlClient, ControlError};
use fedra_coordinator::checkpoint::{ArtifactLocation, ArtifactStore};
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

/// Verifies the checkpoint stored at `round` (an object store's round directory,
/// `s3://bucket/…/<region>/<model>/<run>/round-NNNN`) and its ancestors among the run's
/// other rounds, with each round's drift reference, reading through `store`.
///
/// # Errors
/// The first mismatch, named, or a store that cannot be read.
pub async fn verify_stored(
    round: &str,
    store: &ArtifactStore,
    trust: &TrustedKeys,
) -> Result<Vec<ManifestView>, String> {
    let round = round.trim_end_matches('/');
    let read = |dir: &str, file: &str| {
        let location = ArtifactLocation::new(format!("{dir}/{file}"));
        async move {
            match store.resolve(&location) {
                Ok(object) => object.get_if_exists().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let claimed = |bytes: &[u8]| -> Option<(String, Option<String>)> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let id = v.get("checkpoint_id")?.as_str()?.to_string();
        Some((id, v.get("parent_checkpoint").and_then(|p| p.as_str()).map(str::to_string)))
    };
    let head_manifest = read(round, "manifest.json").await?.ok_or_else(|| format!("{round}: no manifest.json"))?;
    let (head, _) = claimed(&head_manifest).ok_or_else(|| format!("{round}: no readable manifest.json"))?;
    // The run's rounds by the id their manifests claim (unverified: only to find parents).
    let mut rounds: HashMap<String, String> = HashMap::new();
    if let Some((run_dir, _)) = round.rsplit_once('/') {
        for dir in store.list_dirs(&ArtifactLocation::new(run_dir)).await.map_err(|e| e.to_string())? {
            if let Some((id, _)) = read(dir.as_str(), "manifest.json").await?.as_deref().and_then(claimed) {
                rounds.insert(id, dir.to_string());
            }
        }
    }
    rounds.insert(head.clone(), round.to_string());
    let mut bundles: HashMap<String, (Bundle, Option<Vec<u8>>)> = HashMap::new();
    let mut next = Some(head.clone());
    while let Some(id) = next.take() {
        let Some(dir) = rounds.get(&id) else { break };
        if bundles.len() >= MAX_CHAIN || bundles.contains_key(&id) {
            break;
        }
        let missing = |file: &str| format!("{dir}: no {file}");
        let manifest = read(dir, "manifest.json").await?.ok_or_else(|| missing("manifest.json"))?;
        next = claimed(&manifest).and_then(|(_, parent)| parent);
        let bundle = Bundle {
            manifest: manifest.to_vec(),
            signature: read(dir, SIGNATURE_FILE).await?.ok_or_else(|| missing(SIGNATURE_FILE))?.to_vec(),
            weights: read(dir, "model.safetensors").await?.ok_or_else(|| missing("model.safetensors"))?.to_vec(),
        };
        let reference = read(dir, "reference.json").await?.map(|b| b.to_vec());
        bundles.insert(id, (bundle, reference));
    }
    let chain = verify_chain(&head, trust, |id| {
        bundles.get(id).map(|(b, _)| b.clone()).ok_or_else(|| format!("no round beside {round} holds it"))
    })
    .map_err(|e| e.to_string())?;
    for view in &chain {
        if let Some((_, Some(reference))) = bundles.get(&view.checkpoint_id) {
            check_reference_bytes(view, reference)?;
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
