//! The provenance manifest written beside every checkpoint, and what the round engine
//! hands the checkpoint layer to publish one.

use super::ArtifactLocation;
use crate::ids::{CheckpointId, ClientId, RegionId, RunId};
use crate::model::{ModelSpec, TensorLayout};
use chrono::{DateTime, Utc};
use fedra_types::metrics::TrainingMetrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// `Checkpoints::write_server_state`), which a restart resumes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_state_sha256: Option<String>,
    /// Per region copy: the sha256 of its drift reference (`reference.json`, see
    /// `fedra_types::drift`), so that the signature covers it too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reference_sha256: BTreeMap<RegionId, String>,
    /// With a robust aggregation rule: the rule and what it did to individual updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<RobustProvenance>,
}

/// What a robust aggregation rule did in the round (absent for FedAvg's mean).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobustProvenance {
    /// The rule with its parameters, e.g. `trimmed_mean(trim = 0.2)`.
    pub rule: String,
    /// Clients whose update was left out of the aggregate (Multi-Krum's unselected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<ClientId>,
    /// Clients whose delta was scaled down, with the factor applied (norm bounding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scaled: Vec<(ClientId, f64)>,
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
    /// The round attempt publishing (its copies go to a directory of their own).
    pub attempt: u32,
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
    /// A robust rule's record for the manifest.
    pub aggregation: Option<RobustProvenance>,
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
    /// Each region's weights (the manifest and signature lie beside them).
    pub locations: Vec<(RegionId, ArtifactLocation)>,
    /// Thread CPU seconds of encoding, digesting and signing (cost attribution).
    pub cpu_seconds: f64,
}
