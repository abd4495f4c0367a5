//! What an inference node reports about the checkpoints it serves: each arm's live
//! statistics (the serving checkpoint and, during a canary, the canary) and the drift of
//! its inputs against the checkpoint's training reference. The node builds these, the
//! coordinator keeps the latest per node and acts on the canary arm (the canary rule).

use serde::{Deserialize, Serialize};

/// One arm's statistics since the node loaded its checkpoint.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ArmStats {
    pub checkpoint: String,
    pub canary: bool,
    pub requests: u64,
    pub rows: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_seconds: f64,
    /// CPU seconds per 1,000 predictions (rows).
    pub cpu_seconds_per_1000: f64,
    /// At the node's configured price per CPU-hour; 0 without one.
    pub cost_per_1000: f64,
}

/// One feature's drift.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FeatureDriftStat {
    pub feature: u32,
    pub psi: f64,
    pub ks: f64,
    pub reference_mean: f64,
    pub live_mean: f64,
}

impl From<&crate::drift::FeatureDrift> for FeatureDriftStat {
    fn from(f: &crate::drift::FeatureDrift) -> Self {
        Self { feature: f.feature, psi: f.psi, ks: f.ks, reference_mean: f.reference_mean, live_mean: f.live_mean }
    }
}

/// The node's inputs and predictions against the serving checkpoint's reference.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DriftSummary {
    pub checkpoint: String,
    pub rows: u64,
    /// The most drifted features, largest PSI first.
    pub features: Vec<FeatureDriftStat>,
    pub max_psi: f64,
    pub max_ks: f64,
    pub prediction_psi: f64,
    pub drifted: bool,
    /// False when the checkpoint carries no reference (a private run).
    pub has_reference: bool,
}

/// One report of an inference node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServingReport {
    pub node: String,
    pub region: String,
    pub model: String,
    pub arms: Vec<ArmStats>,
    pub drift: Option<DriftSummary>,
    /// Checkpoints the node refused to load (failed verification), with why; latest first.
    pub refused: Vec<String>,
}

impl ServingReport {
    /// The arm serving `checkpoint`, if the node reports one.
    pub fn arm(&self, checkpoint: &str) -> Option<&ArmStats> {
        self.arms.iter().find(|a| a.checkpoint == checkpoint)
    }
}
