//! What a client reports about one local training task. The sidecar's trainer produces
//! it, the coordinator averages it per round and stores it, and the CLI shows it: one type
//! for all three, so that a new field cannot be dropped silently by one of them.

use serde::{Deserialize, Serialize};

/// Metrics of local training, as reported by a client (or averaged over a round).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetrics {
    /// Mean cross-entropy on the local training data under the received global model.
    pub loss_before: f64,
    /// Mean cross-entropy on the local training data after local training.
    pub loss_after: f64,
    /// Accuracy on the local training data after local training.
    pub accuracy_after: f64,
    /// Wall-clock seconds of local training.
    pub train_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checkpoint manifests and stored rounds hold this as JSON: the field names are part
    /// of their format.
    #[test]
    fn json_field_names_are_stable() {
        let m = TrainingMetrics { loss_before: 1.0, loss_after: 0.5, accuracy_after: 0.25, train_seconds: 2.0 };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"loss_before":1.0,"loss_after":0.5,"accuracy_after":0.25,"train_seconds":2.0}"#);
        assert_eq!(serde_json::from_str::<TrainingMetrics>(&json).unwrap(), m);
    }
}
