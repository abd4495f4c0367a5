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
//! (`round-0003-a2/` for the round's second attempt: see `round_dir`.)
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
    Contributor, Manifest, PrivacyProvenance, PublishRequest, Published, RegionContribution, RobustProvenance,
    ScopeEpsilon,
};
pub use reconcile::Recorded;
pub use server_state::encode_server_state;
pub use weights::decode_safetensors;

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
        attempt: u32,
    ) -> Object {
        let round = round_dir(round, attempt);
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

/// A round attempt's directory name in the layout: `round-0003` for a round's first
/// attempt, `round-0003-a2` for its second. Attempts never share a directory, so a deposed
/// coordinator that wakes up mid-publication (see `crate::leadership`) writes into its own
/// attempt's directory, which no record names and the next start removes, and can never
/// overwrite the files of the attempt another coordinator re-ran and recorded.
fn round_dir(round: u32, attempt: u32) -> String {
    if attempt <= 1 { format!("round-{round:04}") } else { format!("round-{round:04}-a{attempt}") }
}

/// The round and attempt a round directory's name states (the inverse of `round_dir`).
fn parse_round_dir(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("round-")?;
    let (round, attempt) = match rest.split_once("-a") {
        Some((round, attempt)) => (round, attempt.parse::<u32>().ok().filter(|a| *a >= 2)?),
        None => (rest, 1),
    };
    if round.is_empty() || !round.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((round.parse().ok()?, attempt))
}

/// The attempt whose copy `weights` (a recorded checkpoint location) is, from its round
/// directory's name; 1 for a location outside the layout.
pub fn attempt_of(weights: &ArtifactLocation) -> u32 {
    let text = weights.as_str();
    let mut parts = text.rsplit('/');
    let _file = parts.next();
    parts.next().and_then(parse_round_dir).map_or(1, |(_, attempt)| attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attempt_has_a_round_directory_of_its_own() {
        assert_eq!(round_dir(3, 1), "round-0003");
        assert_eq!(round_dir(3, 2), "round-0003-a2");
        assert_eq!(round_dir(12_345, 10), "round-12345-a10");
        for (round, attempt) in [(1, 1), (3, 2), (12_345, 10)] {
            assert_eq!(parse_round_dir(&round_dir(round, attempt)), Some((round, attempt)));
        }
        for name in ["round-", "round-00a3", "round-0003-a1", "round-0003-a", "round-0003-x2", "rounds-0003", ".x"] {
            assert_eq!(parse_round_dir(name), None, "{name}");
        }
        assert_eq!(attempt_of(&ArtifactLocation::new("/a/eu/m/r/round-0003-a2/model.safetensors")), 2);
        assert_eq!(attempt_of(&ArtifactLocation::new("s3://b/p/eu/m/r/round-0003/model.safetensors")), 1);
    }
}
