//! Checkpoints: the aggregated model of each completed round, written as safetensors plus
//! a JSON provenance manifest and its signature, into artifact stores laid out by region:
//!
//! ```text
//! <store>/<region>/<model name>/<run id>/round-0003/model.safetensors
//!                                                  /manifest.json
//!                                                  /manifest.sig
//!                                                  /reference.json   (when released)
//! ```
//!
//! `<store>` is the artifact directory by default, or per region an object store
//! ([`ArtifactStore`]: `s3://fedra-eu/checkpoints` for eu keeps eu's copies in eu's bucket).
//!
//! Every manifest is signed with the coordinator's Ed25519 key ([`fedra_pki::signing`]):
//! `manifest.sig` beside it covers the manifest's exact bytes, and the manifest carries the
//! weights' digests, so a verifier holding the deployment's trusted keys can tell a
//! checkpoint this deployment published from anything else (`fedra checkpoint verify`).
//!
//! Each target region gets its own copy, so that a regional inference node only ever reads
//! its own region's tree. Every object is put whole (atomically; a file is synced before the
//! put returns), and the round is recorded in the store only after every copy is written,
//! so a crash never leaves a recorded checkpoint half-written; what a crash leaves
//! unrecorded is removed at the next start ([`Checkpoints::remove_unrecorded`]).
//!
//! Two digests are recorded: `weights_sha256` is the sha256 of the flat little-endian f32
//! parameter vector (the same digest `FetchModel` declares), `file_sha256` the sha256 of the
//! safetensors file as stored (what `sha256sum model.safetensors` prints).

pub mod artifacts;
mod location;
mod manifest;
mod publish;
mod reconcile;
mod server_state;
mod weights;

pub use artifacts::{ArtifactStore, Object, StoreOptions, StoreSpec};
pub use fedra_pki::signing::{ManifestSigner, SIGNATURE_FILE};
pub use location::ArtifactLocation;
pub use manifest::{
    Contributor, Manifest, PrivacyProvenance, PublishRequest, Published, RegionContribution, ScopeEpsilon,
};
pub use reconcile::Recorded;
pub use server_state::encode_server_state;
pub use weights::{decode_safetensors, encode_safetensors};

use crate::model::TensorLayout;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    #[error("artifact store {location}: {source}")]
    Store { location: String, source: object_store::Error },
    #[error("artifact {location} does not exist")]
    Missing { location: String },
    #[error("artifact store {url}: {reason}")]
    StoreUrl { url: String, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.display().to_string(), source }
}

/// Writes and reads checkpoints in the artifact stores, signing every manifest it writes.
/// Cheap to clone (the stores and the key are shared).
#[derive(Debug, Clone)]
pub struct Checkpoints {
    artifacts: Arc<ArtifactStore>,
    signer: Arc<ManifestSigner>,
}

impl Checkpoints {
    pub fn new(artifacts: Arc<ArtifactStore>, signer: Arc<ManifestSigner>) -> Self {
        Self { artifacts, signer }
    }

    /// Checkpoints in the directory `root`, signed with a fresh in-memory key (tests,
    /// benchmarks).
    ///
    /// # Panics
    /// The directory cannot be created.
    pub fn with_ephemeral_key(root: impl Into<PathBuf>) -> Self {
        Self::ephemeral(ArtifactStore::dir(root).expect("the artifact directory can be created"))
    }

    /// Checkpoints in `artifacts`, signed with a fresh in-memory key (tests).
    pub fn ephemeral(artifacts: ArtifactStore) -> Self {
        let (signer, _) = ManifestSigner::generate().expect("an Ed25519 key generates");
        Self::new(Arc::new(artifacts), Arc::new(signer))
    }

    pub fn signer(&self) -> &ManifestSigner {
        &self.signer
    }

    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// Where one region's copy of a round's checkpoint goes: its weights object.
    pub fn weights_object(
        &self,
        region: &crate::ids::RegionId,
        model: &str,
        run: &crate::ids::RunId,
        round: u32,
    ) -> Object {
        let round = round_dir(round);
        self.artifacts.for_region(region).object(&[region.as_str(), model, run.as_str(), &round, WEIGHTS_FILE])
    }

    /// Reads a checkpoint's weights back from `weights`, verifying the file digest recorded
    /// in its manifest (digest and decoding on a blocking thread).
    ///
    /// # Errors
    /// Missing object, digest mismatch, or a layout that differs from `layout`.
    pub async fn load(
        &self,
        weights: &ArtifactLocation,
        file_sha256: &str,
        layout: &TensorLayout,
    ) -> Result<Vec<f32>, CheckpointError> {
        let bytes = self.artifacts.resolve(weights)?.get().await?;
        let (at, sha, layout) = (weights.to_string(), file_sha256.to_string(), layout.clone());
        tokio::task::spawn_blocking(move || {
            let computed = hex::encode(Sha256::digest(&bytes));
            if !computed.eq_ignore_ascii_case(&sha) {
                return Err(CheckpointError::Digest { path: at, recorded: sha, computed });
            }
            decode_safetensors(&bytes, &layout, Path::new(&at))
        })
        .await
        .map_err(|e| CheckpointError::Format(format!("decoding {weights} failed: {e}")))?
    }
}

/// A round's directory name in the layout.
fn round_dir(round: u32) -> String {
    format!("round-{round:04}")
}
