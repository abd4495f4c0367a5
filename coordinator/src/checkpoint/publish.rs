//! Publication: a round's model becomes one signed copy per target region. The CPU part
//! (digests, signing) runs on a blocking thread; the writes are async puts, one object after
//! another, the signature last. The weights file is a small safetensors head followed by
//! the model's own buffer (shared, never copied), and every region's put shares both.

use super::{
    CheckpointError, Checkpoints, MANIFEST_FILE, MANIFEST_FORMAT, Manifest, PublishRequest, Published, REFERENCE_FILE,
    RegionContribution, SIGNATURE_FILE, WEIGHTS_FILE,
};
use crate::ids::RegionId;
use bytes::Bytes;
use chrono::Utc;
use fedra_proto::chunking::SharedParams;
use fedra_types::metrics::TrainingMetrics;
use object_store::PutPayload;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// A checkpoint digested and signed, not yet written.
struct Prepared {
    manifest: Manifest,
    manifest_json: String,
    signature_json: String,
    /// The safetensors head, then a view of the model's buffer.
    file: PutPayload,
    references: BTreeMap<RegionId, String>,
}

impl Checkpoints {
    /// Writes the checkpoint of `params` into every region in `req.regions`. `params` is
    /// shared, not copied: the caller may go on reading it (the next round broadcasts it)
    /// while it is digested and written.
    ///
    /// # Errors
    /// Encoding or store failures; nothing is recorded then, and leftovers are only
    /// objects that no store row names (removed at the next start).
    pub async fn publish(&self, req: PublishRequest, params: SharedParams) -> Result<Published, CheckpointError> {
        let this = self.clone();
        let (prepared, req) = tokio::task::spawn_blocking(move || {
            let (prepared, cpu) = crate::cost::cpu_timed(|| this.prepare(&req, &params));
            (prepared.map(|p| (p, cpu)), req)
        })
        .await
        .map_err(|e| CheckpointError::Format(format!("encoding the checkpoint failed: {e}")))?;
        let (Prepared { manifest, manifest_json, signature_json, file, references }, cpu_seconds) = prepared?;
        let mut locations = Vec::with_capacity(req.regions.len());
        for region in &req.regions {
            let weights = self.weights_object(region, req.model.name(), &req.run, req.round, req.attempt);
            weights.put(file.clone()).await?;
            weights.sibling(MANIFEST_FILE).put(Bytes::from(manifest_json.clone())).await?;
            if let Some(json) = references.get(region) {
                weights.sibling(REFERENCE_FILE).put(Bytes::from(json.clone())).await?;
            }
            weights.sibling(SIGNATURE_FILE).put(Bytes::from(signature_json.clone())).await?;
            locations.push((region.clone(), weights.location().clone()));
            if locations.len() < req.regions.len() {
                crate::crash::point("mid_publication");
            }
        }
        Ok(Published { manifest, manifest_json, signature_json, locations, cpu_seconds })
    }

    /// Digests and signs a checkpoint, and lays out its file: CPU work, for a blocking thread.
    fn prepare(&self, req: &PublishRequest, params: &SharedParams) -> Result<Prepared, CheckpointError> {
        let layout = req.model.layout();
        super::weights::check_len(&layout, params.len())?;
        // The little-endian bytes: the model's own buffer on little-endian targets.
        let data = params.chunk(0..params.len());
        let weights_sha256 = fedra_proto::chunking::sha256_bytes_hex(&data);
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), MANIFEST_FORMAT.to_string());
        meta.insert("checkpoint_id".to_string(), req.id.to_string());
        meta.insert("weights_sha256".to_string(), weights_sha256.clone());
        let head = super::weights::safetensors_head(&layout, meta)?;
        let file_sha256 = hex::encode(Sha256::new().chain_update(&head).chain_update(&data).finalize());
        let file = PutPayload::from_iter([Bytes::from(head), data]);
        // A private run's manifest names no contributor and withholds sample counts and
        // training metrics: its ε covers the weights only (see `round::disclosure`).
        let private = req.privacy.is_some();
        let mut regions = BTreeMap::<RegionId, RegionContribution>::new();
        for c in &req.contributors {
            let e = regions.entry(c.region.clone()).or_insert(RegionContribution { clients: 0, samples: 0 });
            e.clients += c.clients;
            if !private {
                e.samples += c.samples;
            }
        }
        let references = region_references(&req.references, &req.regions)?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            checkpoint_id: req.id.clone(),
            run_id: req.run.clone(),
            round: req.round,
            parent_checkpoint: req.parent.clone(),
            model: req.model.clone(),
            layout,
            strategy: format!(
                "{}{}",
                if req.privacy.is_some() { "dp_" } else { "" },
                req.server_state.as_ref().map_or("fed_avg", |(name, _)| name)
            ),
            contributors: if private { Vec::new() } else { req.contributors.clone() },
            total_samples: if private { 0 } else { req.contributors.iter().map(|c| c.samples).sum() },
            regions,
            metrics: if private { TrainingMetrics::default() } else { req.metrics },
            weights_file: WEIGHTS_FILE.into(),
            weights_sha256,
            file_sha256,
            published_to: req.regions.clone(),
            created_at: Utc::now(),
            privacy: req.privacy.clone(),
            policy_sha256: req.policy_sha256.clone(),
            server_state_sha256: req.server_state.as_ref().map(|(_, sha)| sha.clone()),
            aggregation: req.aggregation.clone(),
            reference_sha256: references
                .iter()
                .map(|(r, json)| (r.clone(), hex::encode(Sha256::digest(json))))
                .collect(),
        };
        let manifest_json =
            serde_json::to_string_pretty(&manifest).map_err(|e| CheckpointError::Format(e.to_string()))?;
        let signature_json = self.signer.sign_json(manifest_json.as_bytes());
        Ok(Prepared { manifest, manifest_json, signature_json, file, references })
    }
}

/// Each target region's `reference.json`: its own contributors' statistics, or for a
/// region that contributed none, every region's merged.
fn region_references(
    references: &BTreeMap<RegionId, fedra_types::drift::DataReference>,
    regions: &[RegionId],
) -> Result<BTreeMap<RegionId, String>, CheckpointError> {
    let mut merged: Option<fedra_types::drift::DataReference> = None;
    let mut out = BTreeMap::new();
    for region in regions {
        let reference = match references.get(region) {
            Some(r) => r.clone(),
            None => {
                if merged.is_none() {
                    let mut all = references.values();
                    let Some(first) = all.next() else { continue };
                    let mut m = first.clone();
                    for r in all {
                        m.merge(r).map_err(|e| CheckpointError::Format(format!("drift reference: {e}")))?;
                    }
                    merged = Some(m);
                }
                merged.clone().expect("set above")
            }
        };
        let json = serde_json::to_string(&reference).map_err(|e| CheckpointError::Format(e.to_string()))?;
        out.insert(region.clone(), json);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{ArtifactStore, CheckpointError, Contributor, StoreOptions, StoreSpec, WEIGHTS_FILE};
    use super::*;
    use crate::ids::{CheckpointId, ClientId, RunId};
    use crate::model::{Architecture, ModelSpec};
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    fn request(model: &ModelSpec) -> PublishRequest {
        let run = RunId::generate();
        let contributor = |client: &str, region: &str, samples| Contributor {
            client: ClientId::new(client).unwrap(),
            region: RegionId::new(region).unwrap(),
            samples,
            clients: 1,
            scopes: vec![],
        };
        PublishRequest {
            id: CheckpointId::for_round(&run, crate::ids::RoundNumber(1)),
            run: run.clone(),
            round: 1,
            attempt: 1,
            parent: None,
            model: model.clone(),
            contributors: vec![contributor("a", "eu", 10), contributor("b", "us", 5)],
            metrics: TrainingMetrics::default(),
            regions: vec![RegionId::new("eu").unwrap(), RegionId::new("us").unwrap()],
            privacy: None,
            policy_sha256: None,
            server_state: None,
            references: BTreeMap::new(),
            aggregation: None,
        }
    }

    fn model() -> ModelSpec {
        ModelSpec::new("lr", Architecture::LogisticRegression { input_dim: 3, classes: 2 }).unwrap()
    }

    /// Publishes to `cps`, then checks every copy: the weights load back, the manifest is
    /// the one returned, the signature verifies, and a flipped byte is refused.
    async fn round_trip(cps: &Checkpoints) -> Published {
        let trust = fedra_pki::signing::TrustedKeys::of(cps.signer());
        let model = model();
        let params: Vec<f32> = (0..8).map(|i| i as f32 * 0.25 - 1.0).collect();
        let shared = SharedParams::new(params.clone());
        let p = cps.publish(request(&model), shared.clone()).await.unwrap();
        assert!(shared.try_into_vec().is_ok(), "publication lets go of the model's buffer");
        assert_eq!(p.locations.len(), 2);
        assert_eq!(p.manifest.total_samples, 15);
        assert_eq!(p.manifest.regions[&RegionId::new("eu").unwrap()].samples, 10);
        for (_, location) in &p.locations {
            let loaded = cps.load(location, &p.manifest.file_sha256, &model.layout()).await.unwrap();
            assert_eq!(loaded, params);
            let weights = cps.artifacts().resolve(location).unwrap();
            let manifest = weights.sibling(MANIFEST_FILE).get().await.unwrap();
            assert_eq!(serde_json::from_slice::<Manifest>(&manifest).unwrap(), p.manifest);
            let bundle = fedra_pki::checkpoint::Bundle {
                manifest: manifest.to_vec(),
                signature: weights.sibling(SIGNATURE_FILE).get().await.unwrap().to_vec(),
                weights: weights.get().await.unwrap().to_vec(),
            };
            let view =
                fedra_pki::checkpoint::verify_bundle(p.manifest.checkpoint_id.as_str(), &bundle, &trust).unwrap();
            assert_eq!(view.weights_sha256, p.manifest.weights_sha256);
            assert_eq!(hex::encode(Sha256::digest(&bundle.weights)), p.manifest.file_sha256);
        }
        // A flipped byte is caught by the digest.
        let weights = cps.artifacts().resolve(&p.locations[0].1).unwrap();
        let mut bytes = weights.get().await.unwrap().to_vec();
        *bytes.last_mut().unwrap() ^= 1;
        weights.put(Bytes::from(bytes)).await.unwrap();
        assert!(matches!(
            cps.load(&p.locations[0].1, &p.manifest.file_sha256, &model.layout()).await,
            Err(CheckpointError::Digest { .. })
        ));
        p
    }

    #[tokio::test]
    async fn publish_and_load_round_trip_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = round_trip(&Checkpoints::with_ephemeral_key(dir.path())).await;
        // Locations are paths, as older versions recorded them.
        let eu = &p.locations[0].1;
        let expected = dir.path().join("eu/lr").join(p.manifest.run_id.as_str()).join("round-0001").join(WEIGHTS_FILE);
        assert_eq!(eu.file_path().unwrap(), expected);
        assert!(expected.with_file_name(MANIFEST_FILE).is_file() && expected.with_file_name(SIGNATURE_FILE).is_file());
    }

    #[tokio::test]
    async fn each_region_goes_to_its_own_bucket() {
        let (eu, us): (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>) =
            (Arc::new(InMemory::new()), Arc::new(InMemory::new()));
        let dir = tempfile::tempdir().unwrap();
        let regions = BTreeMap::from([
            (RegionId::new("eu").unwrap(), StoreSpec::bucket(Arc::clone(&eu), "memory://fedra-eu", "checkpoints")),
            (RegionId::new("us").unwrap(), StoreSpec::bucket(Arc::clone(&us), "memory://fedra-us", "")),
        ]);
        let store = ArtifactStore::open(&StoreSpec::dir(dir.path()), &regions, StoreOptions::default()).unwrap();
        let p = round_trip(&Checkpoints::ephemeral(store)).await;
        let run = p.manifest.run_id.as_str();
        assert_eq!(
            p.locations[0].1.as_str(),
            format!("memory://fedra-eu/checkpoints/eu/lr/{run}/round-0001/model.safetensors")
        );
        assert_eq!(p.locations[1].1.as_str(), format!("memory://fedra-us/us/lr/{run}/round-0001/model.safetensors"));
        let keys = |store: Arc<dyn ObjectStore>| async move {
            let mut keys: Vec<String> =
                store.list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
            keys.sort();
            keys
        };
        let files = ["manifest.json", "manifest.sig", "model.safetensors"];
        let eu_keys = keys(eu).await;
        assert_eq!(eu_keys, files.map(|f| format!("checkpoints/eu/lr/{run}/round-0001/{f}")));
        assert_eq!(keys(us).await, files.map(|f| format!("us/lr/{run}/round-0001/{f}")));
        // Nothing went to the default directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
