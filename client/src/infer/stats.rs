//! An inference node's live statistics: per arm (checkpoint) the requests, rows, errors,
//! latency quantiles and CPU time; per serving checkpoint the sketch of live inputs and
//! predicted classes that drift is judged on.

use fedra_types::drift::{self, DataReference};
use fedra_types::serving::{ArmStats, DriftSummary, FeatureDriftStat};
use std::collections::BTreeMap;
use std::time::Duration;

/// Log-spaced latency buckets: 1 µs × 1.05^k, up to about a minute; quantiles are exact to
/// 5 %, in constant memory whatever the request count.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

const GROWTH: f64 = 1.05;
const BUCKETS: usize = 370;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { counts: vec![0; BUCKETS], total: 0 }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, d: Duration) {
        let micros = d.as_secs_f64() * 1e6;
        let k = if micros <= 1.0 { 0 } else { (micros.ln() / GROWTH.ln()).ceil() as usize };
        self.counts[k.min(BUCKETS - 1)] += 1;
        self.total += 1;
    }

    /// The q-quantile in milliseconds (the bucket's upper bound); 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (k, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return GROWTH.powi(k as i32) / 1e3;
            }
        }
        GROWTH.powi(BUCKETS as i32 - 1) / 1e3
    }
}

#[derive(Debug, Clone, Default)]
struct Arm {
    canary: bool,
    requests: u64,
    rows: u64,
    errors: u64,
    cpu: Duration,
    latency: LatencyHistogram,
}

/// The live inputs and predictions since the serving checkpoint was loaded.
#[derive(Debug, Clone)]
struct Live {
    checkpoint: String,
    inputs: DataReference,
    predicted: Vec<u64>,
}

/// Drift settings: the PSI above which a feature (or the prediction mix) counts as
/// drifted, and the rows needed before anything is called drift.
#[derive(Debug, Clone, Copy)]
pub struct DriftSettings {
    pub psi_threshold: f64,
    pub min_rows: u64,
}

impl Default for DriftSettings {
    fn default() -> Self {
        Self { psi_threshold: 0.25, min_rows: 500 }
    }
}

/// Everything the node counts.
#[derive(Debug, Default)]
pub struct NodeStats {
    arms: BTreeMap<String, Arm>,
    live: Option<Live>,
}

/// Features listed in a drift report.
const REPORTED_FEATURES: usize = 16;

impl NodeStats {
    /// Starts counting `checkpoint` as an arm (kept when it is already counted).
    pub fn arm(&mut self, checkpoint: &str, canary: bool) {
        self.arms.entry(checkpoint.to_string()).or_default().canary = canary;
    }

    /// Forgets arms no longer served.
    pub fn retain_arms(&mut self, live: &[&str]) {
        self.arms.retain(|k, _| live.contains(&k.as_str()));
    }

    /// One answered (or failed) request on `checkpoint`'s arm.
    pub fn record(&mut self, checkpoint: &str, canary: bool, rows: usize, latency: Duration, cpu: Duration, ok: bool) {
        let arm = self.arms.entry(checkpoint.to_string()).or_default();
        arm.canary = canary;
        arm.requests += 1;
        if ok {
            arm.rows += rows as u64;
        } else {
            arm.errors += 1;
        }
        arm.cpu += cpu;
        arm.latency.record(latency);
        // Prometheus (fedra-infer --metrics-listen): labelled by arm kind, never by checkpoint.
        let arm_kind = if canary { "canary" } else { "serving" };
        let outcome = if ok { "ok" } else { "error" };
        metrics::counter!("fedra_infer_requests_total", "arm" => arm_kind, "outcome" => outcome).increment(1);
        if ok {
            metrics::counter!("fedra_infer_rows_total", "arm" => arm_kind).increment(rows as u64);
        }
        metrics::histogram!("fedra_infer_request_seconds", "arm" => arm_kind).record(latency.as_secs_f64());
        metrics::histogram!("fedra_infer_cpu_seconds", "arm" => arm_kind).record(cpu.as_secs_f64());
    }

    /// Adds a request's inputs and predicted classes to the live sketch of the serving
    /// checkpoint (restarted when the serving checkpoint changed).
    pub fn observe(&mut self, serving: &str, features: usize, classes: usize, inputs: &[f32], predicted: &[u32]) {
        let fresh = self.live.as_ref().is_none_or(|l| l.checkpoint != serving);
        if fresh {
            self.live = Some(Live {
                checkpoint: serving.to_string(),
                inputs: DataReference::new(features, classes),
                predicted: vec![0; classes],
            });
        }
        let live = self.live.as_mut().expect("set above");
        for row in inputs.chunks_exact(features) {
            if live.inputs.add_row(row, None).is_err() {
                break;
            }
        }
        for &p in predicted {
            if let Some(c) = live.predicted.get_mut(p as usize) {
                *c += 1;
            }
        }
    }

    /// Each arm's statistics; costs at `price_per_cpu_hour`.
    pub fn arms(&self, price_per_cpu_hour: f64) -> Vec<ArmStats> {
        self.arms
            .iter()
            .map(|(checkpoint, a)| {
                let cpu = a.cpu.as_secs_f64();
                let per_1000 = if a.rows == 0 { 0.0 } else { cpu * 1000.0 / a.rows as f64 };
                ArmStats {
                    checkpoint: checkpoint.clone(),
                    canary: a.canary,
                    requests: a.requests,
                    rows: a.rows,
                    errors: a.errors,
                    p50_ms: a.latency.quantile_ms(0.5),
                    p99_ms: a.latency.quantile_ms(0.99),
                    cpu_seconds: cpu,
                    cpu_seconds_per_1000: per_1000,
                    cost_per_1000: per_1000 / 3600.0 * price_per_cpu_hour,
                }
            })
            .collect()
    }

    /// The live inputs against `reference` (the serving checkpoint's), or `None` before any
    /// request reached it.
    pub fn drift(
        &self,
        serving: &str,
        reference: Option<&DataReference>,
        settings: DriftSettings,
    ) -> Option<DriftSummary> {
        let live = self.live.as_ref().filter(|l| l.checkpoint == serving)?;
        let rows = live.inputs.rows();
        let Some(reference) = reference else {
            return Some(DriftSummary {
                checkpoint: serving.to_string(),
                rows,
                has_reference: false,
                ..Default::default()
            });
        };
        let features = drift::compare(reference, &live.inputs).ok()?;
        let max_psi = features.iter().map(|f| f.psi).fold(0.0, f64::max);
        let max_ks = features.iter().map(|f| f.ks).fold(0.0, f64::max);
        let prediction_psi = drift::categorical_psi(&reference.class_counts, &live.predicted);
        let drifted =
            rows >= settings.min_rows && (max_psi > settings.psi_threshold || prediction_psi > settings.psi_threshold);
        Some(DriftSummary {
            checkpoint: serving.to_string(),
            rows,
            features: features.iter().take(REPORTED_FEATURES).map(FeatureDriftStat::from).collect(),
            max_psi,
            max_ks,
            prediction_psi,
            drifted,
            has_reference: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_five_percent() {
        let mut h = LatencyHistogram::default();
        for i in 1..=1000u64 {
            h.record(Duration::from_micros(i * 10));
        }
        let p50 = h.quantile_ms(0.5);
        let p99 = h.quantile_ms(0.99);
        assert!((p50 - 5.0).abs() / 5.0 < 0.06, "p50 {p50}");
        assert!((p99 - 9.9).abs() / 9.9 < 0.06, "p99 {p99}");
        assert_eq!(LatencyHistogram::default().quantile_ms(0.5), 0.0);
    }

    #[test]
    fn costs_follow_cpu_time_per_row() {
        let mut s = NodeStats::default();
        s.record("a", false, 500, Duration::from_millis(1), Duration::from_millis(250), true);
        s.record("a", false, 500, Duration::from_millis(1), Duration::from_millis(250), true);
        s.record("a", false, 9, Duration::from_millis(1), Duration::ZERO, false);
        let a = &s.arms(3.6)[0];
        assert_eq!((a.requests, a.rows, a.errors), (3, 1000, 1));
        assert!((a.cpu_seconds_per_1000 - 0.5).abs() < 1e-9);
        assert!((a.cost_per_1000 - 0.0005).abs() < 1e-12);
    }

    #[test]
    fn requests_are_counted_for_prometheus_by_arm_and_outcome() {
        fedra_telemetry::metrics();
        let mut s = NodeStats::default();
        s.record("a", false, 500, Duration::from_millis(1), Duration::from_millis(2), true);
        s.record("b", true, 7, Duration::from_millis(3), Duration::ZERO, false);
        let text = fedra_telemetry::render();
        assert!(text.contains("fedra_infer_requests_total{arm=\"serving\",outcome=\"ok\"} 1"), "{text}");
        assert!(text.contains("fedra_infer_requests_total{arm=\"canary\",outcome=\"error\"} 1"), "{text}");
        assert!(text.contains("fedra_infer_rows_total{arm=\"serving\"} 500"), "{text}");
        assert!(text.contains("fedra_infer_request_seconds_count{arm=\"canary\"} 1"), "{text}");
    }
}
