//! What a simulation leaves behind: per-round metrics as CSV and JSON, plots, a summary
//! table, and the comparison of two runs.

/// One round of one run of one configuration. A scenario that sweeps a parameter (e.g.
/// μ) or repeats seeds produces one series per (config, seed).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundMetrics {
    /// Configuration label, e.g. "mu=0" or "synthetic(1,1) mu=1".
    pub config: String,
    pub seed: u64,
    pub round: u32,
    pub selected: u32,
    pub reported: u32,
    /// Selected clients whose update was not counted (dropped out, late, rejected).
    pub dropped: u32,
    /// Sample-weighted mean training loss reported by clients after local training.
    #[serde(with = "crate::report::serde_nan", default = "crate::report::serde_nan::nan")]
    pub train_loss: f64,
    /// Sample-weighted mean loss of the round's global model on the clients' training
    /// data (the loss the FedProx paper plots), from the clients' `loss_before` of the
    /// next round; NaN when not measured.
    #[serde(with = "crate::report::serde_nan", default = "crate::report::serde_nan::nan")]
    pub global_train_loss: f64,
    /// Federated evaluation on held-out splits (NaN when not measured).
    #[serde(with = "crate::report::serde_nan", default = "crate::report::serde_nan::nan")]
    pub test_loss: f64,
    #[serde(with = "crate::report::serde_nan", default = "crate::report::serde_nan::nan")]
    pub test_accuracy: f64,
    /// Bytes of parameters sent to clients in this round (selected × parameters × 4).
    pub bytes_out: u64,
    /// Bytes of the updates counted in this round as they crossed the wire: the encoded
    /// chunk messages, as the coordinator counted them (its Aggregated event).
    pub bytes_in: u64,
    #[serde(with = "crate::report::serde_nan", default = "crate::report::serde_nan::nan")]
    pub wall_seconds: f64,
}

impl RoundMetrics {
    /// A round with no counts yet and every measurement missing (NaN), to be filled in.
    pub fn empty(config: &str, seed: u64, round: u32) -> Self {
        Self {
            config: config.to_string(),
            seed,
            round,
            selected: 0,
            reported: 0,
            dropped: 0,
            train_loss: f64::NAN,
            global_train_loss: f64::NAN,
            test_loss: f64::NAN,
            test_accuracy: f64::NAN,
            bytes_out: 0,
            bytes_in: 0,
            wall_seconds: 0.0,
        }
    }
}

pub mod compression;
pub mod files;
pub mod plots;
pub mod serde_nan;
mod series;
pub mod summary;

pub use files::{read_csv, read_json, write_csv, write_json};
pub use plots::{Metric, plot_metric};
pub use summary::{ConfigSummary, MeanStd, compare, final_by_config, summary_table};
