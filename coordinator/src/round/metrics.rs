//! Sample-weighted round means of the training metrics clients report. The metrics type
//! itself is shared vocabulary (`fedra_types::metrics`), re-exported here so that
//! `crate::round::TrainingMetrics` keeps resolving; the averaging is the engine's own.

pub use fedra_types::metrics::TrainingMetrics;

/// Sample-weighted running mean of [`TrainingMetrics`].
#[derive(Debug, Clone, Default)]
pub struct MetricsMean {
    weight: f64,
    sum: TrainingMetrics,
}

impl MetricsMean {
    pub fn add(&mut self, m: &TrainingMetrics, samples: u64) {
        let w = samples as f64;
        self.weight += w;
        self.sum.loss_before += w * m.loss_before;
        self.sum.loss_after += w * m.loss_after;
        self.sum.accuracy_after += w * m.accuracy_after;
        // Wall time is not weighted: the round's cost is the slowest client's, but the mean
        // is still the most useful single number to show.
        self.sum.train_seconds += w * m.train_seconds;
    }

    pub fn mean(&self) -> TrainingMetrics {
        if self.weight == 0.0 {
            return TrainingMetrics::default();
        }
        let w = self.weight;
        TrainingMetrics {
            loss_before: self.sum.loss_before / w,
            loss_after: self.sum.loss_after / w,
            accuracy_after: self.sum.accuracy_after / w,
            train_seconds: self.sum.train_seconds / w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_by_samples() {
        let mut m = MetricsMean::default();
        m.add(&TrainingMetrics { loss_before: 1.0, loss_after: 0.5, accuracy_after: 0.2, train_seconds: 1.0 }, 1);
        m.add(&TrainingMetrics { loss_before: 3.0, loss_after: 1.5, accuracy_after: 0.6, train_seconds: 1.0 }, 3);
        let mean = m.mean();
        assert!((mean.loss_before - 2.5).abs() < 1e-12);
        assert!((mean.loss_after - 1.25).abs() < 1e-12);
        assert!((mean.accuracy_after - 0.5).abs() < 1e-12);
    }
}
