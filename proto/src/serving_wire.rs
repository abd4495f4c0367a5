//! Inference nodes' reports (`fedra_types::serving`) on the wire, both ways: the node
//! writes them, the coordinator reads them and hands them to `fedra drift status`.

use crate::pb;
use fedra_types::serving::{ArmStats, DriftSummary, FeatureDriftStat, ServingReport};

pub fn report_to_pb(r: &ServingReport) -> pb::ServingReport {
    pb::ServingReport {
        node: r.node.clone(),
        region: r.region.clone(),
        model_name: r.model.clone(),
        arms: r
            .arms
            .iter()
            .map(|a| pb::ArmStats {
                checkpoint_id: a.checkpoint.clone(),
                canary: a.canary,
                requests: a.requests,
                rows: a.rows,
                errors: a.errors,
                p50_ms: a.p50_ms,
                p99_ms: a.p99_ms,
                cpu_seconds: a.cpu_seconds,
                cpu_seconds_per_1000: a.cpu_seconds_per_1000,
                cost_per_1000: a.cost_per_1000,
            })
            .collect(),
        drift: r.drift.as_ref().map(|d| pb::DriftReport {
            checkpoint_id: d.checkpoint.clone(),
            rows: d.rows,
            features: d
                .features
                .iter()
                .map(|f| pb::FeatureDrift {
                    feature: f.feature,
                    psi: f.psi,
                    ks: f.ks,
                    reference_mean: f.reference_mean,
                    live_mean: f.live_mean,
                })
                .collect(),
            max_psi: d.max_psi,
            max_ks: d.max_ks,
            prediction_psi: d.prediction_psi,
            drifted: d.drifted,
            has_reference: d.has_reference,
        }),
        refused: r.refused.clone(),
    }
}

/// Reads a report; every number is taken as sent (the coordinator bounds the sizes).
pub fn report_from_pb(r: &pb::ServingReport) -> ServingReport {
    ServingReport {
        node: r.node.clone(),
        region: r.region.clone(),
        model: r.model_name.clone(),
        arms: r
            .arms
            .iter()
            .map(|a| ArmStats {
                checkpoint: a.checkpoint_id.clone(),
                canary: a.canary,
                requests: a.requests,
                rows: a.rows,
                errors: a.errors,
                p50_ms: a.p50_ms,
                p99_ms: a.p99_ms,
                cpu_seconds: a.cpu_seconds,
                cpu_seconds_per_1000: a.cpu_seconds_per_1000,
                cost_per_1000: a.cost_per_1000,
            })
            .collect(),
        drift: r.drift.as_ref().map(|d| DriftSummary {
            checkpoint: d.checkpoint_id.clone(),
            rows: d.rows,
            features: d
                .features
                .iter()
                .map(|f| FeatureDriftStat {
                    feature: f.feature,
                    psi: f.psi,
                    ks: f.ks,
                    reference_mean: f.reference_mean,
                    live_mean: f.live_mean,
                })
                .collect(),
            max_psi: d.max_psi,
            max_ks: d.max_ks,
            prediction_psi: d.prediction_psi,
            drifted: d.drifted,
            has_reference: d.has_reference,
        }),
        refused: r.refused.clone(),
    }
}
