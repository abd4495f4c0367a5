//! The engine's tunables, from validated configuration.

#[cfg(test)]
use crate::ids::ClientId;
use crate::privacy::Budgets;
use std::time::Duration;

/// Default for [`EngineSettings::max_model_parameters`]: 2^27 (128 Mi) parameters, about
/// 1.5 GiB of coordinator memory per active run.
pub const DEFAULT_MAX_MODEL_PARAMETERS: u64 = 1 << 27;

/// Engine tunables (validated configuration).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How often clients are asked to heartbeat.
    pub heartbeat_interval: Duration,
    /// A client silent for this long is not selected.
    pub client_timeout: Duration,
    /// Payload bytes per parameter chunk announced to clients.
    pub chunk_bytes: usize,
    /// How often deadlines, liveness and scheduling are re-checked.
    pub tick: Duration,
    /// Runs whose rounds make progress at once; further runs wait in the queue.
    pub max_active_runs: usize,
    /// Tasks (of different runs) one client may hold at once.
    pub max_concurrent_tasks: u32,
    /// Largest model (in parameters) a run may train: the coordinator holds about 12 bytes
    /// per parameter per active run (model, f64 running sum), so this bounds its memory.
    /// Checked at submit and again when a stored run is activated.
    pub max_model_parameters: u64,
    /// Privacy budgets and the noise lattice's slack.
    pub privacy: PrivacySettings,
    /// The policy set in force, if any (residency, budgets, approvals).
    pub governance: crate::governance::Governance,
    /// Standalone, global (participants are regional aggregators) or regional.
    pub tier: crate::hierarchy::Tier,
    /// The carbon-intensity feed, if the operator configured one.
    pub carbon: Option<std::sync::Arc<crate::carbon::CarbonSignal>>,
    /// Watts one training client draws (the energy estimate's factor).
    pub client_watts: f64,
    /// Prices that turn each round's measured cost into money (`[cost]`; `None`: unpriced).
    pub prices: Option<crate::cost::Prices>,
    /// Where robust aggregation spills a round's updates (unlinked files; see
    /// `aggregation::robust`): `data_dir/scratch` in a deployment.
    pub scratch_dir: std::path::PathBuf,
    /// Bytes of the block buffer robust aggregation reads the spilled updates into.
    pub robust_block_budget: usize,
    /// Test fault: folding this client's update panics.
    #[cfg(test)]
    pub fold_fault: Option<ClientId>,
}

/// Deployment-wide privacy settings (validated configuration).
#[derive(Debug, Clone)]
pub struct PrivacySettings {
    pub budgets: Budgets,
    /// g·√d ≤ slack·C for the noise lattice (see `fedra_dp::noise::LatticeGaussian`).
    pub lattice_slack: f64,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self { budgets: Budgets::default(), lattice_slack: crate::privacy::mechanism::DEFAULT_LATTICE_SLACK }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            client_timeout: Duration::from_secs(20),
            chunk_bytes: fedra_proto::chunking::DEFAULT_CHUNK_BYTES,
            tick: Duration::from_millis(100),
            max_active_runs: 16,
            max_concurrent_tasks: 1,
            max_model_parameters: DEFAULT_MAX_MODEL_PARAMETERS,
            privacy: PrivacySettings::default(),
            governance: crate::governance::Governance::disabled(),
            tier: crate::hierarchy::Tier::Standalone,
            carbon: None,
            client_watts: crate::carbon::DEFAULT_CLIENT_WATTS,
            prices: None,
            scratch_dir: std::env::temp_dir(),
            robust_block_budget: crate::aggregation::robust::DEFAULT_BLOCK_BUDGET_BYTES,
            #[cfg(test)]
            fold_fault: None,
        }
    }
}
