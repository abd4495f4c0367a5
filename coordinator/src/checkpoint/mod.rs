//! Checkpoints: the aggregated model of each completed round, written as safetensors plus
//! a JSON provenance manifest and its signature, into an artifact directory laid out by
//! region:
//!
//! ```text
//! <artifacts>/<region>/<model name>/<run id>/round-0003/model.safetensors
//!                                                      /manifest.json
//!                                                      /manifest.sig
//! ```
//!
//! Every manifest is signed with the coordinator's Ed25519 key ([`fedra_pki::signing`]):
//! `manifest.sig` beside it covers the manifest's exact bytes, and the manifest carries the
//! weights' digests, so a verifier holding the deployment's trusted keys can tell a
//! checkpoint this deployment published from anything else (`fedra checkpoint verify`).
//!
//! Each target region gets its own copy, so that a regional inference node only ever reads
//! its own region's tree. Files are written to a temporary name and renamed, so a crash
//! never leaves a half-written checkpoint under its final name.
//!
//! Two digests are recorded: `weights_sha256` is the sha256 of the flat little-endian f32
//! parameter vector (the same digest `FetchModel` declares), `file_sha256` the sha256 of the
//! safetensors file as stored (what `sha256sum model.safetensors` prints).

mod server_state;

use crate::ids::{CheckpointId, ClientId, RegionId, RunId};
use crate::model::{ModelSpec, TensorLayout};
use chrono::{DateTime, Utc};
use fedra_types::metrics::TrainingMetrics;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use fedra_pki::signing::{ManifestSigner, SIGNATURE_FILE};

/// Manifest format identifier; bump when fields change meaning.
pub const MANIFEST_FORMAT: &str = "fedra.checkpoint.v1";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const MANIFEST_FILE: &str = "manifest.json";
/// The drift reference beside a region's copy (see `fedra_types::drift`).
pub const REFERENCE_FILE: &str = "reference.json";

/// Writing or reading a checkpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint i/o at {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("safetensors: {0}")]
    Format(String),
    #[error("checkpoint {path} does not match the model layout: {reason}")]
    Layout { path: String, reason: String },
    #[error("checkpoint {path} is corrupt: sha256 {computed} differs from recorded {recorded}")]
    Digest { path: String, recorded: String, computed: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.display().to_string(), source }
}

/// One contributor in a manifest: a client, or at the global tier a region's aggregator
/// (then `client` names the aggregator, `clients` how many client updates its aggregate
/// holds, and `samples` their total).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contributor {
    pub client: ClientId,
    pub region: RegionId,
    pub samples: u64,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub clients: u32,
    /// A private regional aggregate's ε per scope, charged in its region's ledger (the
    /// global tier draws no noise of its own; see `hierarchy::private_cohorts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<ScopeEpsilon>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Per-region totals in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionContribution {
    pub clients: u32,
    pub samples: u64,
}

/// The provenance manifest written next to every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub checkpoint_id: CheckpointId,
    pub run_id: RunId,
    pub round: u32,
    pub parent_checkpoint: Option<CheckpointId>,
    pub model: ModelSpec,
    pub layout: TensorLayout,
    pub strategy: String,
    pub contributors: Vec<Contributor>,
    pub regions: BTreeMap<RegionId, RegionContribution>,
    pub total_samples: u64,
    pub metrics: TrainingMetrics,
    pub weights_file: String,
    pub weights_sha256: String,
    pub file_sha256: String,
    pub published_to: Vec<RegionId>,
    pub created_at: DateTime<Utc>,
    /// Present when the run is differentially private: what this checkpoint has cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyProvenance>,
    /// The sha256 of the policy set in force when the checkpoint was published (absent
    /// when the coordinator runs without a policy set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_sha256: Option<String>,
    /// With a server optimizer: the sha256 of its state file after this round (see
    /// `CheckpointDir::server_state_path`), which a restart resumes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_state_sha256: Option<String>,
    /// Per region copy: the sha256 of its drift reference (`reference.json`, see
    /// `fedra_types::drift`), so that the signature covers it too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reference_sha256: BTreeMap<RegionId, String>,
}

/// The privacy guarantee a published checkpoint carries (client-level DP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyProvenance {
    /// `central` or `local`.
    pub mechanism: String,
    /// `zcdp` (no amplification) or `poisson_rdp`.
    pub accountant: String,
    /// z as planned, and the multiplier equivalent to the round after discretisation.
    pub noise_multiplier: f64,
    pub effective_noise_multiplier: f64,
    /// C used in this round.
    pub clip_norm: f64,
    /// q, the sampling rate the accountant assumes (1 with fixed selection).
    pub sampling_rate: f64,
    /// Std of the noise actually added per coordinate (central: on the sum).
    pub noise_std: f64,
    pub expected_clients: u32,
    /// Private rounds of this run up to and including this one.
    pub rounds: u32,
    /// ε at δ per scope, cumulative over everything the scope's ledger holds.
    pub scopes: Vec<ScopeEpsilon>,
    /// The largest ε over the scopes, and its δ.
    pub epsilon: f64,
    pub delta: f64,
    /// Contributors, their sample counts and the round's training metrics are left out of
    /// this manifest and the run's events (not covered by the ε above); the regions keep
    /// their contributor counts.
    #[serde(default)]
    pub metrics_withheld: bool,
    /// Where the noise was drawn and charged when not by the publishing coordinator:
    /// `regional` at a global coordinator, whose regions each noised their own sum with the
    /// mechanism above (`noise_std` is each region's) and reported their scopes' ε.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noised_by: Option<String>,
}

/// One scope's cumulative ε in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeEpsilon {
    pub scope: String,
    pub epsilon: f64,
    pub delta: f64,
}

/// What the round engine knows when it publishes a round.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub id: CheckpointId,
    pub run: RunId,
    pub round: u32,
    pub parent: Option<CheckpointId>,
    pub model: ModelSpec,
    pub contributors: Vec<Contributor>,
    pub metrics: TrainingMetrics,
    pub regions: Vec<RegionId>,
    pub privacy: Option<PrivacyProvenance>,
    /// The policy set in force, recorded in the manifest.
    pub policy_sha256: Option<String>,
    /// A server optimizer's name and the sha256 of its state file after this round.
    pub server_state: Option<(&'static str, String)>,
    /// The contributors' training data statistics per region: each region's copy gets its
    /// own region's as `reference.json` (a region that contributed nothing gets all
    /// regions' merged). Empty: no reference (a private run).
    pub references: BTreeMap<RegionId, fedra_types::drift::DataReference>,
}

/// A written checkpoint: its manifest and where each region's copy lies.
#[derive(Debug, Clone)]
pub struct Published {
    pub manifest: Manifest,
    pub manifest_json: String,
    /// `manifest.sig`: the coordinator's signature over `manifest_json`'s bytes.
    pub signature_json: String,
    pub locations: Vec<(RegionId, PathBuf)>,
}

/// Writes and reads checkpoints under one artifact root, signing every manifest it writes.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    root: PathBuf,
    signer: Arc<ManifestSigner>,
}

/// Encodes `params` as a safetensors file with one tensor per layout entry.
///
/// # Errors
/// [`CheckpointError::Layout`] when `params` does not have the layout's length.
pub fn encode_safetensors(
    layout: &TensorLayout,
    params: &[f32],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, CheckpointError> {
    if layout.total() != params.len() {
        return Err(CheckpointError::Layout {
            path: "<memory>".into(),
            reason: format!("{} values for a layout of {}", params.len(), layout.total()),
        });
    }
    let mut encoded = Vec::with_capacity(layout.tensors.len());
    let mut offset = 0usize;
    for t in &layout.tensors {
        let n = t.numel();
        encoded.push((t.name.clone(), t.shape.clone(), fedra_proto::chunking::encode_le(&params[offset..offset + n])));
        offset += n;
    }
    let views = encoded
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| CheckpointError::Format(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| CheckpointError::Format(e.to_string()))
}

/// Decodes a safetensors file into a flat vector laid out by `layout`, checking that every
/// tensor is present as f32 with the expected shape.
///
/// # Errors
/// [`CheckpointError::Format`] or [`CheckpointError::Layout`].
pub fn decode_safetensors(bytes: &[u8], layout: &TensorLayout, path: &Path) -> Result<Vec<f32>, CheckpointError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| CheckpointError::Format(e.to_string()))?;
    let layout_err = |reason: String| CheckpointError::Layout { path: path.display().to_string(), reason };
    let mut out = vec![0.0f32; layout.total()];
    let mut offset = 0usize;
    for t in &layout.tensors {
        let view = st.tensor(&t.name).map_err(|_| layout_err(format!("tensor {:?} is missing", t.name)))?;
        let shape: Vec<usize> = view.shape().to_vec();
        if view.dtype() != Dtype::F32 || shape != t.shape {
            return Err(layout_err(format!(
                "tensor {:?} is {:?}{:?}, expected F32{:?}",
                t.name,
                view.dtype(),
                shape,
                t.shape
            )));
        }
        let n = t.numel();
        fedra_proto::chunking::decode_le_into(view.data(), &mut out[offset..offset + n]);
        offset += n;
    }
    if st.len() != layout.tensors.len() {
        return Err(layout_err(format!("{} tensors, expected {}", st.len(), layout.tensors.len())));
    }
    Ok(out)
}

/// The extension of a file being written (renamed over its final name once synced).
const TMP_EXTENSION: &str = "tmp";

/// The subdirectories of `dir` whose names do not start with `.` (none if `dir` is absent).
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io(&path))?.is_dir() && !name_of(&path).is_some_and(|n| n.starts_with('.')) {
            out.push(path);
        }
    }
    Ok(out)
}

fn name_of(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

/// Writes `bytes` to a uniquely named file beside `path`, syncs it and renames it over
/// `path`: readers see the old file or the new one, and two writers of the same checkpoint
/// (a re-run attempt, a second coordinator) never share a temporary file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let tmp = path.with_extension(format!("{:016x}.{TMP_EXTENSION}", rand::random::<u64>()));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    let f = std::fs::File::open(&tmp).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    // The rename is durable only once the directory entry is.
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io(parent))?;
    }
    Ok(())
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

impl CheckpointDir {
    pub fn new(root: impl Into<PathBuf>, signer: Arc<ManifestSigner>) -> Self {
        Self { root: root.into(), signer }
    }

    /// A directory signing with a fresh in-memory key (tests, benchmarks).
    pub fn with_ephemeral_key(root: impl Into<PathBuf>) -> Self {
        let (signer, _) = ManifestSigner::generate().expect("an Ed25519 key generates");
        Self::new(root, Arc::new(signer))
    }

    pub fn signer(&self) -> &ManifestSigner {
        &self.signer
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of one region's copy of a round's checkpoint.
    pub fn dir_for(&self, region: &RegionId, model: &str, run: &RunId, round: u32) -> PathBuf {
        self.root.join(region.as_str()).join(model).join(run.as_str()).join(format!("round-{round:04}"))
    }

    /// Writes the checkpoint into every region in `req.regions`. Blocking I/O: call from a
    /// blocking thread.
    ///
    /// # Errors
    /// I/O or encoding failures; nothing is registered then, and leftovers are only files
    /// that no store row points to.
    pub fn publish(&self, req: &PublishRequest, params: &[f32]) -> Result<Published, CheckpointError> {
        let layout = req.model.layout();
        let weights_sha256 = fedra_proto::chunking::sha256_hex(params);
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), MANIFEST_FORMAT.to_string());
        meta.insert("checkpoint_id".to_string(), req.id.to_string());
        meta.insert("weights_sha256".to_string(), weights_sha256.clone());
        let file = encode_safetensors(&layout, params, meta)?;
        let file_sha256 = hex::encode(Sha256::digest(&file));
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
            reference_sha256: references
                .iter()
                .map(|(r, json)| (r.clone(), hex::encode(Sha256::digest(json))))
                .collect(),
        };
        let manifest_json =
            serde_json::to_string_pretty(&manifest).map_err(|e| CheckpointError::Format(e.to_string()))?;
        let signature_json = self.signer.sign_json(manifest_json.as_bytes());
        let mut locations = Vec::with_capacity(req.regions.len());
        for region in &req.regions {
            let dir = self.dir_for(region, req.model.name(), &req.run, req.round);
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let weights = dir.join(WEIGHTS_FILE);
            write_atomic(&weights, &file)?;
            write_atomic(&dir.join(MANIFEST_FILE), manifest_json.as_bytes())?;
            if let Some(json) = references.get(region) {
                write_atomic(&dir.join(REFERENCE_FILE), json.as_bytes())?;
            }
            write_atomic(&dir.join(SIGNATURE_FILE), signature_json.as_bytes())?;
            locations.push((region.clone(), weights));
            if locations.len() < req.regions.len() {
                crate::crash::point("mid_publication");
            }
        }
        Ok(Published { manifest, manifest_json, signature_json, locations })
    }

    /// Makes the files agree with the records after a crash: removes every round directory
    /// (`<region>/<model>/<run>/round-NNNN`) whose checkpoint `recorded` does not list for
    /// that region (its files were written, or partly written, and the round was never
    /// recorded: it was not published, and its re-run writes it again), and every temporary
    /// file a crash left mid-write. Paths that do not follow the layout are left alone, and
    /// so are directories whose names start with `.` (server-optimizer state). Blocking
    /// I/O; call at start-up, before any run is active. Returns what it removed.
    ///
    /// # Errors
    /// The artifact directory cannot be read, or a leftover cannot be removed.
    pub fn remove_unrecorded(
        &self,
        recorded: &std::collections::HashSet<(RegionId, CheckpointId)>,
    ) -> Result<Vec<PathBuf>, CheckpointError> {
        let mut removed = Vec::new();
        for region_dir in subdirs(&self.root)? {
            let Some(region) = name_of(&region_dir).and_then(|n| RegionId::new(n).ok()) else { continue };
            for model_dir in subdirs(&region_dir)? {
                for run_dir in subdirs(&model_dir)? {
                    let Some(run) = name_of(&run_dir).and_then(|n| RunId::new(n).ok()) else { continue };
                    for round_dir in subdirs(&run_dir)? {
                        let round = name_of(&round_dir)
                            .and_then(|n| n.strip_prefix("round-"))
                            .and_then(|n| n.parse::<u32>().ok());
                        let Some(round) = round else { continue };
                        let id = CheckpointId::for_round(&run, crate::ids::RoundNumber(round));
                        if recorded.contains(&(region.clone(), id)) {
                            for entry in std::fs::read_dir(&round_dir).map_err(io(&round_dir))? {
                                let path = entry.map_err(io(&round_dir))?.path();
                                if path.extension().is_some_and(|e| e == TMP_EXTENSION) {
                                    std::fs::remove_file(&path).map_err(io(&path))?;
                                    removed.push(path);
                                }
                            }
                        } else {
                            std::fs::remove_dir_all(&round_dir).map_err(io(&round_dir))?;
                            removed.push(round_dir);
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Reads a checkpoint's weights back, verifying the file digest recorded in its manifest.
    ///
    /// # Errors
    /// Missing file, digest mismatch, or a layout that differs from `layout`.
    pub fn load(weights: &Path, file_sha256: &str, layout: &TensorLayout) -> Result<Vec<f32>, CheckpointError> {
        let bytes = std::fs::read(weights).map_err(io(weights))?;
        let computed = hex::encode(Sha256::digest(&bytes));
        if !computed.eq_ignore_ascii_case(file_sha256) {
            return Err(CheckpointError::Digest {
                path: weights.display().to_string(),
                recorded: file_sha256.into(),
                computed,
            });
        }
        decode_safetensors(&bytes, layout, weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Architecture;

    #[test]
    fn publish_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cps = CheckpointDir::with_ephemeral_key(dir.path());
        let trust = fedra_pki::signing::TrustedKeys::of(cps.signer());
        let model = ModelSpec::new("lr", Architecture::LogisticRegression { input_dim: 3, classes: 2 }).unwrap();
        let params: Vec<f32> = (0..8).map(|i| i as f32 * 0.25 - 1.0).collect();
        let run = RunId::generate();
        let req = PublishRequest {
            id: CheckpointId::for_round(&run, crate::ids::RoundNumber(1)),
            run: run.clone(),
            round: 1,
            parent: None,
            model: model.clone(),
            contributors: vec![
                Contributor {
                    client: ClientId::new("a").unwrap(),
                    region: RegionId::new("eu").unwrap(),
                    samples: 10,
                    clients: 1,
                    scopes: vec![],
                },
                Contributor {
                    client: ClientId::new("b").unwrap(),
                    region: RegionId::new("us").unwrap(),
                    samples: 5,
                    clients: 1,
                    scopes: vec![],
                },
            ],
            metrics: TrainingMetrics::default(),
            regions: vec![RegionId::new("eu").unwrap(), RegionId::new("us").unwrap()],
            privacy: None,
            policy_sha256: None,
            server_state: None,
            references: BTreeMap::new(),
        };
        let p = cps.publish(&req, &params).unwrap();
        assert_eq!(p.locations.len(), 2);
        assert_eq!(p.manifest.total_samples, 15);
        assert_eq!(p.manifest.regions[&RegionId::new("eu").unwrap()].samples, 10);
        for (_, path) in &p.locations {
            let back = CheckpointDir::load(path, &p.manifest.file_sha256, &model.layout()).unwrap();
            assert_eq!(back, params);
            let m: Manifest =
                serde_json::from_str(&std::fs::read_to_string(path.with_file_name(MANIFEST_FILE)).unwrap()).unwrap();
            assert_eq!(m, p.manifest);
            let bundle = fedra_pki::checkpoint::Bundle {
                manifest: std::fs::read(path.with_file_name(MANIFEST_FILE)).unwrap(),
                signature: std::fs::read(path.with_file_name(SIGNATURE_FILE)).unwrap(),
                weights: std::fs::read(path).unwrap(),
            };
            let view =
                fedra_pki::checkpoint::verify_bundle(p.manifest.checkpoint_id.as_str(), &bundle, &trust).unwrap();
            assert_eq!(view.weights_sha256, p.manifest.weights_sha256);
        }
        // A flipped byte is caught by the digest.
        let path = &p.locations[0].1;
        let mut bytes = std::fs::read(path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(path, bytes).unwrap();
        assert!(matches!(
            CheckpointDir::load(path, &p.manifest.file_sha256, &model.layout()),
            Err(CheckpointError::Digest { .. })
        ));
    }
}
