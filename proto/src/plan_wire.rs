//! Writing the shared plan types (`fedra_types::plan`) as protobuf: the CLI sends plans and
//! the coordinator echoes them back (run views), so both sides need the same conversion.
//! Reading them back is the coordinator's own business (it validates at its edge).

use crate::pb;
use fedra_types::plan::{
    Aggregator, Clipping, Compression, DpMechanism, GateMetric, LocalTraining, Optimizer, OverBound, PrivacyPlan,
    PromoteTo, PromotionPlan, Sampling, SchedulePlan, ServerOptimizer, Strategy,
};

/// A plan's `[schedule]` on the wire.
pub fn schedule_to_pb(s: &SchedulePlan) -> pb::Schedule {
    pb::Schedule { prefer_low_carbon: s.prefer_low_carbon, max_delay_seconds: s.max_delay_seconds }
}

/// Reads `[schedule]` back (the coordinator validates the numbers).
pub fn schedule_from_pb(s: &pb::Schedule) -> SchedulePlan {
    SchedulePlan { prefer_low_carbon: s.prefer_low_carbon, max_delay_seconds: s.max_delay_seconds }
}

/// A plan's `[promotion]` on the wire (enums as their plan-file names).
pub fn promotion_to_pb(p: &PromotionPlan) -> pb::Promotion {
    pb::Promotion {
        promote_to: match p.promote_to {
            PromoteTo::None => "none",
            PromoteTo::Canary => "canary",
            PromoteTo::Serving => "serving",
        }
        .into(),
        metric: match p.metric {
            GateMetric::Accuracy => "accuracy",
            GateMetric::Loss => "loss",
        }
        .into(),
        tolerance: p.tolerance,
        min_samples: p.min_samples,
        max_region_gap: p.max_region_gap,
        canary_fraction: p.canary_fraction,
        canary_min_requests: p.canary_min_requests,
        canary_max_error_rate: p.canary_max_error_rate,
        retrain_on_drift: p.retrain_on_drift,
    }
}

/// Reads `[promotion]` back; an unknown name is refused naming the field. Zero
/// `canary_fraction` (an older sender) takes the default.
pub fn promotion_from_pb(p: &pb::Promotion) -> Result<PromotionPlan, String> {
    let promote_to = match p.promote_to.as_str() {
        "" | "none" => PromoteTo::None,
        "canary" => PromoteTo::Canary,
        "serving" => PromoteTo::Serving,
        other => return Err(format!("promotion.promote_to: {other:?} is not none, canary or serving")),
    };
    let metric = match p.metric.as_str() {
        "" | "accuracy" => GateMetric::Accuracy,
        "loss" => GateMetric::Loss,
        other => return Err(format!("promotion.metric: {other:?} is not accuracy or loss")),
    };
    let defaults = PromotionPlan::default();
    Ok(PromotionPlan {
        promote_to,
        metric,
        tolerance: p.tolerance,
        min_samples: p.min_samples,
        max_region_gap: p.max_region_gap,
        canary_fraction: if p.canary_fraction == 0.0 { defaults.canary_fraction } else { p.canary_fraction },
        canary_min_requests: p.canary_min_requests,
        canary_max_error_rate: p.canary_max_error_rate,
        retrain_on_drift: p.retrain_on_drift,
    })
}

/// A plan's aggregation rule on the wire; the mean is written as absent.
pub fn aggregator_to_pb(a: &Aggregator) -> Option<pb::Aggregator> {
    use pb::aggregator::Kind;
    let m = match *a {
        Aggregator::Mean => return None,
        Aggregator::Median => pb::Aggregator { kind: Kind::Median as i32, ..Default::default() },
        Aggregator::TrimmedMean { trim } => {
            pb::Aggregator { kind: Kind::TrimmedMean as i32, trim, ..Default::default() }
        }
        Aggregator::MultiKrum { byzantine, select } => {
            pb::Aggregator { kind: Kind::MultiKrum as i32, byzantine, select, ..Default::default() }
        }
        Aggregator::NormBound { factor } => {
            pb::Aggregator { kind: Kind::NormBound as i32, factor, ..Default::default() }
        }
    };
    Some(m)
}

/// Reads the aggregation rule back (absent = the mean); an unknown kind is refused by
/// number. The coordinator validates the parameters.
pub fn aggregator_from_pb(a: Option<&pb::Aggregator>) -> Result<Aggregator, String> {
    use pb::aggregator::Kind;
    let Some(a) = a else { return Ok(Aggregator::Mean) };
    let kind = Kind::try_from(a.kind).map_err(|_| format!("aggregator.kind: unknown value {}", a.kind))?;
    Ok(match kind {
        Kind::Mean => Aggregator::Mean,
        Kind::Median => Aggregator::Median,
        Kind::TrimmedMean => Aggregator::TrimmedMean { trim: a.trim },
        Kind::MultiKrum => Aggregator::MultiKrum { byzantine: a.byzantine, select: a.select },
        Kind::NormBound => Aggregator::NormBound { factor: a.factor },
    })
}

/// A plan's strategy as its wire enum and, for a server optimizer, its hyperparameters.
pub fn strategy_to_pb(s: &Strategy) -> (pb::Strategy, Option<pb::ServerOptimizer>) {
    let Strategy::Server(o) = s else { return (pb::Strategy::FedAvg, None) };
    let eta = o.learning_rate();
    match *o {
        ServerOptimizer::FedAvgM { momentum, .. } => (
            pb::Strategy::FedAvgM,
            Some(pb::ServerOptimizer { server_learning_rate: eta, momentum, ..Default::default() }),
        ),
        ServerOptimizer::FedAdagrad { beta1, tau, .. } => (
            pb::Strategy::FedAdagrad,
            Some(pb::ServerOptimizer { server_learning_rate: eta, beta1, tau, ..Default::default() }),
        ),
        ServerOptimizer::FedAdam { beta1, beta2, tau, .. } => (
            pb::Strategy::FedAdam,
            Some(pb::ServerOptimizer { server_learning_rate: eta, momentum: 0.0, beta1, beta2, tau }),
        ),
        ServerOptimizer::FedYogi { beta1, beta2, tau, .. } => (
            pb::Strategy::FedYogi,
            Some(pb::ServerOptimizer { server_learning_rate: eta, momentum: 0.0, beta1, beta2, tau }),
        ),
    }
}

/// A run plan's `[privacy]` as its wire message.
pub fn privacy_to_pb(p: &PrivacyPlan) -> pb::PrivacyPlan {
    use pb::privacy_plan::Clipping as C;
    pb::PrivacyPlan {
        mechanism: match p.mechanism {
            DpMechanism::Central => pb::DpMechanism::Central,
            DpMechanism::Local => pb::DpMechanism::Local,
        } as i32,
        noise_multiplier: p.noise_multiplier,
        clipping: Some(match p.clipping {
            Clipping::Fixed { norm } => C::Fixed(pb::FixedClipping { norm }),
            Clipping::Adaptive { initial_norm, target_quantile, learning_rate, count_noise_std } => {
                C::Adaptive(pb::AdaptiveClipping { initial_norm, target_quantile, learning_rate, count_noise_std })
            }
        }),
        over_bound: match p.over_bound {
            OverBound::Reject => pb::OverBound::Reject,
            OverBound::Reclip => pb::OverBound::Reclip,
        } as i32,
        poisson: match p.sampling {
            Sampling::Poisson { rate } => Some(pb::PoissonSampling { rate }),
            Sampling::Fixed => None,
        },
        expected_clients: p.expected_clients,
    }
}

/// A plan's `[local]` training hyperparameters as their wire message.
pub fn local_to_pb(l: &LocalTraining) -> pb::LocalTraining {
    pb::LocalTraining {
        epochs: l.epochs,
        batch_size: l.batch_size,
        learning_rate: l.learning_rate,
        proximal_mu: l.proximal_mu,
        optimizer: match l.optimizer {
            Optimizer::Sgd => pb::Optimizer::Sgd,
            Optimizer::Adam => pb::Optimizer::Adam,
        } as i32,
        momentum: l.momentum,
    }
}

/// A plan's `[compression]` on the wire.
pub fn compression_to_pb(c: &Compression) -> pb::Compression {
    match *c {
        Compression::None => pb::Compression { kind: pb::CompressionKind::None as i32, fraction: 0.0 },
        Compression::Int8 => pb::Compression { kind: pb::CompressionKind::Int8 as i32, fraction: 0.0 },
        Compression::TopK { fraction } => pb::Compression { kind: pb::CompressionKind::TopK as i32, fraction },
    }
}

/// Reads `[compression]` back (absent is none); an unknown kind is refused naming the
/// field. The coordinator validates `fraction`.
///
/// # Errors
/// An unknown `kind` value.
pub fn compression_from_pb(c: Option<&pb::Compression>) -> Result<Compression, String> {
    let Some(c) = c else { return Ok(Compression::None) };
    match pb::CompressionKind::try_from(c.kind) {
        Ok(pb::CompressionKind::None) => Ok(Compression::None),
        Ok(pb::CompressionKind::Int8) => Ok(Compression::Int8),
        Ok(pb::CompressionKind::TopK) => Ok(Compression::TopK { fraction: c.fraction }),
        Err(_) => Err(format!("compression.kind: unknown value {}: none, int8 or top_k", c.kind)),
    }
}
