//! What a round cost in one region, as the coordinator measures it at commit (see the
//! coordinator's `cost` module) and `fedra run show` and the dashboard report it.

use crate::ids::RegionId;
use serde::{Deserialize, Serialize};

/// A round's measured cost in one region (stored with the round as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionCost {
    pub region: RegionId,
    /// Counted updates from the region.
    pub updates: u32,
    pub update_bytes: u64,
    pub broadcast_bytes: u64,
    pub coordinator_cpu_seconds: f64,
    /// Training seconds the region's contributors reported (0 for a private run: they
    /// follow the clients' data sizes, which such a run does not disclose).
    pub client_train_seconds: f64,
    /// The priced total, in `currency`, when prices were configured at commit.
    pub cost: Option<f64>,
    pub currency: Option<String>,
}
