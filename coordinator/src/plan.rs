//! Run plans: what a data scientist asks the coordinator to do. A [`RunPlan`] can only be
//! built through [`RunPlan::new`], which checks every field, so a plan that was admitted
//! cannot fail at round 5 for a reason visible at submit time.
//!
//! The plan's vocabulary (strategy, optimizer, local training, evaluation, privacy) is
//! shared with the `fedra` CLI's plan file and defined once in `fedra_types::plan`; it is
//! re-exported here. What is the coordinator's own is the judgement: the bounds, the
//! checks, and the validated [`RunPlan`].

use crate::ids::{CheckpointId, RegionId};
use crate::model::ModelSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

pub use fedra_types::plan::{
    Aggregator, Clipping, Compression, DpMechanism, EvaluationPlan, GateMetric, LocalTraining, Optimizer, OverBound,
    PrivacyPlan, PromoteTo, PromotionPlan, Sampling, SchedulePlan, ServerOptimizer, Strategy,
};

/// Upper bounds that keep a typo from scheduling a year-long run.
pub const MAX_ROUNDS: u32 = 100_000;
pub const MAX_CLIENTS_PER_ROUND: u32 = 100_000;
pub const MAX_DEADLINE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A plan field is invalid. Messages name the field and the bad value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("{field} must be in {min}..={max}, got {got}")]
    OutOfRange { field: &'static str, min: f64, max: f64, got: f64 },
    #[error("{field} must be in (0, 1], got {got}")]
    Fraction { field: &'static str, got: f64 },
    #[error("min_clients ({min}) must not exceed clients_per_round ({target})")]
    QuorumAboveTarget { min: u32, target: u32 },
    #[error("strategy is unspecified: choose fed_avg")]
    MissingStrategy,
    #[error("privacy: {0}")]
    Privacy(String),
    #[error("aggregator: {0}")]
    Aggregator(String),
}

/// A server optimizer's hyperparameters: η in (0, 100], β's in [0, 1), τ in [1e-12, 1].
fn validate_strategy(s: &Strategy) -> Result<(), PlanError> {
    let Strategy::Server(o) = s else { return Ok(()) };
    range("strategy.server_learning_rate", o.learning_rate(), 1e-12, 100.0)?;
    let beta = |field: &'static str, b: f64| range(field, b, 0.0, 0.999_999);
    match *o {
        ServerOptimizer::FedAvgM { momentum, .. } => beta("strategy.momentum", momentum),
        ServerOptimizer::FedAdagrad { beta1, tau, .. } => {
            beta("strategy.beta1", beta1)?;
            range("strategy.tau", tau, 1e-12, 1.0)
        }
        ServerOptimizer::FedAdam { beta1, beta2, tau, .. } | ServerOptimizer::FedYogi { beta1, beta2, tau, .. } => {
            beta("strategy.beta1", beta1)?;
            beta("strategy.beta2", beta2)?;
            range("strategy.tau", tau, 1e-12, 1.0)
        }
    }
}

/// The privacy section's values: a bad one is reported as `privacy: <field> ...`.
fn validate_privacy(p: &PrivacyPlan, clients_per_round: u32) -> Result<(), PlanError> {
    let bad = |m: String| Err(PlanError::Privacy(m));
    let z = p.noise_multiplier;
    if !(z.is_finite() && (0.01..=1000.0).contains(&z)) {
        return bad(format!("noise_multiplier must be in 0.01..=1000, got {z}"));
    }
    let c = p.clipping.initial_norm();
    if !(c.is_finite() && c > 0.0 && c <= 1e9) {
        return bad(format!("clipping norm must be in (0, 1e9], got {c}"));
    }
    if let Clipping::Adaptive { target_quantile, learning_rate, count_noise_std, .. } = p.clipping {
        if !(target_quantile > 0.0 && target_quantile < 1.0) {
            return bad(format!("clipping.target_quantile must be in (0, 1), got {target_quantile}"));
        }
        if !(learning_rate.is_finite() && learning_rate > 0.0 && learning_rate <= 10.0) {
            return bad(format!("clipping.learning_rate must be in (0, 10], got {learning_rate}"));
        }
        if !(count_noise_std.is_finite() && count_noise_std >= 0.0) {
            return bad(format!("clipping.count_noise_std must be >= 0, got {count_noise_std}"));
        }
        if p.mechanism == DpMechanism::Local {
            return bad(
                "adaptive clipping needs the central mechanism (the clipped-count query is noised by the coordinator)"
                    .into(),
            );
        }
    }
    if let Sampling::Poisson { rate } = p.sampling
        && !(rate > 0.0 && rate <= 1.0)
    {
        return bad(format!("sampling.rate must be in (0, 1], got {rate}"));
    }
    if p.expected_clients == 0 || p.expected_clients > MAX_CLIENTS_PER_ROUND {
        return bad(format!("expected_clients must be in 1..={MAX_CLIENTS_PER_ROUND}, got {}", p.expected_clients));
    }
    if p.sampling == Sampling::Fixed && p.expected_clients > clients_per_round {
        return bad(format!(
            "expected_clients ({}) must not exceed clients_per_round ({clients_per_round}) with fixed sampling",
            p.expected_clients
        ));
    }
    Ok(())
}

/// Regions a run may use; empty means every region.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegionSet(BTreeSet<RegionId>);

impl RegionSet {
    pub fn new(regions: impl IntoIterator<Item = RegionId>) -> Self {
        Self(regions.into_iter().collect())
    }
    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }
    pub fn allows(&self, region: &RegionId) -> bool {
        self.0.is_empty() || self.0.contains(region)
    }
    pub fn iter(&self) -> impl Iterator<Item = &RegionId> {
        self.0.iter()
    }
}

/// The fields of a plan before validation.
#[derive(Debug, Clone)]
pub struct RawPlan {
    pub model: ModelSpec,
    pub initial_checkpoint: Option<CheckpointId>,
    pub strategy: Option<Strategy>,
    pub aggregator: Aggregator,
    pub rounds: u32,
    pub clients_per_round: u32,
    pub min_clients: u32,
    pub over_selection: f64,
    pub round_deadline: f64,
    pub local: LocalTraining,
    pub regions: RegionSet,
    pub seed: u64,
    pub evaluation: EvaluationPlan,
    pub privacy: Option<PrivacyPlan>,
    /// Scheduling priority (higher first), in `MIN_PRIORITY..=MAX_PRIORITY`.
    pub priority: i32,
    pub promotion: PromotionPlan,
    pub schedule: SchedulePlan,
    pub compression: Compression,
}

/// Scheduling priorities a plan may ask for.
pub const MIN_PRIORITY: i32 = -100;
pub const MAX_PRIORITY: i32 = 100;

/// A validated run plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub model: ModelSpec,
    pub initial_checkpoint: Option<CheckpointId>,
    pub strategy: Strategy,
    /// How the round's updates become one aggregate (FedAvg's mean or a robust rule).
    #[serde(default)]
    pub aggregator: Aggregator,
    pub rounds: u32,
    pub clients_per_round: u32,
    pub min_clients: u32,
    pub over_selection: f64,
    pub round_deadline: Duration,
    pub local: LocalTraining,
    pub regions: RegionSet,
    pub seed: u64,
    #[serde(default)]
    pub evaluation: EvaluationPlan,
    /// Client-level differential privacy; `None` is a non-private run.
    #[serde(default)]
    pub privacy: Option<PrivacyPlan>,
    /// Scheduling priority: when runs compete for the same clients, higher goes first;
    /// equal priorities take turns. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// The promotion gate and canary rule for the published checkpoint (see `registry`).
    #[serde(default)]
    pub promotion: PromotionPlan,
    /// When rounds may run (carbon-aware deferral, see `crate::carbon`).
    #[serde(default)]
    pub schedule: SchedulePlan,
    /// How clients compress their updates (none by default; never with privacy).
    #[serde(default)]
    pub compression: Compression,
}

/// The longest a round may wait for a cleaner window: a week.
pub const MAX_SCHEDULE_DELAY_SECONDS: f64 = 7.0 * 86_400.0;

fn range(field: &'static str, got: f64, min: f64, max: f64) -> Result<(), PlanError> {
    if got.is_finite() && got >= min && got <= max {
        Ok(())
    } else {
        Err(PlanError::OutOfRange { field, min, max, got })
    }
}

/// A robust rule's parameters, against the quorum (every aggregated round has at least
/// `min_clients` updates) and privacy.
fn validate_aggregator(a: &Aggregator, min_clients: u32, private: bool) -> Result<(), PlanError> {
    if private && a.is_robust() {
        return Err(PlanError::Privacy(format!(
            "aggregator {} is not accounted: DP-FedAvg's ε covers the noised sum of clipped updates, and a \
             robust rule's sensitivity to one client is not that sum's; clipping already bounds each client's \
             influence, so use aggregator = \"mean\" with [privacy]",
            a.name()
        )));
    }
    match *a {
        Aggregator::Mean | Aggregator::Median => Ok(()),
        // trim < ½ keeps 2·⌊trim·n⌋ < n: something survives the trim at every n.
        Aggregator::TrimmedMean { trim } => range("aggregator.trim", trim, 1e-6, 0.499_999),
        Aggregator::MultiKrum { byzantine, select } => {
            // Krum's guarantee needs n ≥ 2f + 3; the quorum is the smallest n aggregated.
            if u64::from(min_clients) < 2 * u64::from(byzantine) + 3 {
                return Err(PlanError::Aggregator(format!(
                    "multi_krum with byzantine = {byzantine} needs min_clients >= 2 * byzantine + 3 = {}, got {min_clients}",
                    2 * u64::from(byzantine) + 3
                )));
            }
            if select > min_clients - byzantine {
                return Err(PlanError::Aggregator(format!(
                    "multi_krum select = {select} exceeds min_clients - byzantine = {} (0 means n - byzantine)",
                    min_clients - byzantine
                )));
            }
            Ok(())
        }
        Aggregator::NormBound { factor } => range("aggregator.factor", factor, 1e-3, 1e6),
    }
}

/// `top_k`'s fraction in (0, 1]; and no compression with privacy: the accountant charges
/// the Gaussian mechanism for the sensitivity C of a clipped update, which a quantized or
/// sparsified update (and a top-k residual carried across rounds) no longer has.
fn validate_compression(c: &Compression, private: bool) -> Result<(), PlanError> {
    if let Compression::TopK { fraction } = *c
        && !(fraction.is_finite() && fraction > 0.0 && fraction <= 1.0)
    {
        return Err(PlanError::Fraction { field: "compression.fraction", got: fraction });
    }
    if private && *c != Compression::None {
        return Err(PlanError::Privacy(format!(
            "compression {} cannot be combined with differential privacy: the accountant charges for the \
             sensitivity of a clipped f32 update, which a quantized or sparsified update (and a top_k residual \
             carried across rounds) does not have; quantize-after-clip accounting is future work, so remove \
             [compression] or [privacy]",
            c.name()
        )));
    }
    Ok(())
}

fn validate_promotion(p: &PromotionPlan) -> Result<(), PlanError> {
    range("promotion.tolerance", p.tolerance, 0.0, 1e6)?;
    range("promotion.min_samples", p.min_samples as f64, 0.0, 1e15)?;
    range("promotion.max_region_gap", p.max_region_gap, 0.0, 1.0)?;
    range("promotion.canary_fraction", p.canary_fraction, 0.001, 0.999)?;
    range("promotion.canary_min_requests", p.canary_min_requests as f64, 0.0, 1e12)?;
    range("promotion.canary_max_error_rate", p.canary_max_error_rate, 0.0, 1.0)
}

impl RunPlan {
    /// Validates every field. A zero seed is replaced by a random one so the stored plan
    /// always says which seed was used.
    ///
    /// # Errors
    /// The first invalid field, by name.
    pub fn new(raw: RawPlan) -> Result<Self, PlanError> {
        let strategy = raw.strategy.ok_or(PlanError::MissingStrategy)?;
        validate_strategy(&strategy)?;
        validate_aggregator(&raw.aggregator, raw.min_clients, raw.privacy.is_some())?;
        range("rounds", f64::from(raw.rounds), 1.0, f64::from(MAX_ROUNDS))?;
        range("clients_per_round", f64::from(raw.clients_per_round), 1.0, f64::from(MAX_CLIENTS_PER_ROUND))?;
        range("min_clients", f64::from(raw.min_clients), 1.0, f64::from(MAX_CLIENTS_PER_ROUND))?;
        if raw.min_clients > raw.clients_per_round {
            return Err(PlanError::QuorumAboveTarget { min: raw.min_clients, target: raw.clients_per_round });
        }
        range("over_selection", raw.over_selection, 0.0, 10.0)?;
        range("round_deadline_seconds", raw.round_deadline, 0.1, MAX_DEADLINE.as_secs_f64())?;
        range("local.epochs", f64::from(raw.local.epochs), 1.0, 10_000.0)?;
        range("local.batch_size", f64::from(raw.local.batch_size), 1.0, 1_000_000.0)?;
        range("local.learning_rate", raw.local.learning_rate, 1e-12, 1e6)?;
        range("local.proximal_mu", raw.local.proximal_mu, 0.0, 1e6)?;
        range("local.momentum", raw.local.momentum, 0.0, 0.999)?;
        range("evaluation.every_rounds", f64::from(raw.evaluation.every_rounds), 0.0, f64::from(raw.rounds))?;
        range("priority", f64::from(raw.priority), f64::from(MIN_PRIORITY), f64::from(MAX_PRIORITY))?;
        if let Some(p) = &raw.privacy {
            validate_privacy(p, raw.clients_per_round)?;
            if raw.evaluation.every_rounds > 0 {
                return Err(PlanError::Privacy(
                    "federated evaluation would release clients' held-out results that the run's ε does not cover: \
                     set evaluation.every_rounds = 0 and evaluate the published checkpoint outside the run"
                        .into(),
                ));
            }
        }
        validate_compression(&raw.compression, raw.privacy.is_some())?;
        validate_promotion(&raw.promotion)?;
        range("schedule.max_delay_seconds", raw.schedule.max_delay_seconds, 0.0, MAX_SCHEDULE_DELAY_SECONDS)?;
        let seed = if raw.seed == 0 { rand::random::<u64>().max(1) } else { raw.seed };
        Ok(Self {
            model: raw.model,
            initial_checkpoint: raw.initial_checkpoint,
            strategy,
            aggregator: raw.aggregator,
            rounds: raw.rounds,
            clients_per_round: raw.clients_per_round,
            min_clients: raw.min_clients,
            over_selection: raw.over_selection,
            round_deadline: Duration::from_secs_f64(raw.round_deadline),
            local: raw.local,
            regions: raw.regions,
            seed,
            evaluation: raw.evaluation,
            privacy: raw.privacy,
            priority: raw.priority,
            promotion: raw.promotion,
            schedule: raw.schedule,
            compression: raw.compression,
        })
    }

    /// Updates a round needs to be aggregated. Poisson-sampled private rounds need none:
    /// their denominator is fixed and a round with few (or no) clients is still a sound
    /// release, while failing it would bias who gets counted.
    pub fn quorum(&self) -> u32 {
        match self.privacy.as_ref().map(|p| p.sampling) {
            Some(Sampling::Poisson { .. }) => 0,
            _ => self.min_clients,
        }
    }

    /// How many clients to select: the target inflated by the over-selection factor.
    pub fn selection_size(&self) -> usize {
        (f64::from(self.clients_per_round) * (1.0 + self.over_selection)).ceil() as usize
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::model::Architecture;

    pub fn raw_plan() -> RawPlan {
        RawPlan {
            model: ModelSpec::new("lr", Architecture::LogisticRegression { input_dim: 4, classes: 3 }).unwrap(),
            initial_checkpoint: None,
            strategy: Some(Strategy::FedAvg),
            aggregator: Aggregator::Mean,
            rounds: 3,
            clients_per_round: 4,
            min_clients: 2,
            over_selection: 0.5,
            round_deadline: 30.0,
            local: LocalTraining {
                epochs: 1,
                batch_size: 8,
                learning_rate: 0.1,
                proximal_mu: 0.0,
                optimizer: Optimizer::Sgd,
                momentum: 0.0,
            },
            regions: RegionSet::default(),
            seed: 1,
            evaluation: EvaluationPlan::default(),
            privacy: None,
            priority: 0,
            promotion: Default::default(),
            schedule: Default::default(),
            compression: Compression::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::raw_plan;
    use super::*;

    #[test]
    fn valid_plan_and_selection_size() {
        let p = RunPlan::new(raw_plan()).unwrap();
        assert_eq!(p.selection_size(), 6);
        let mut raw = raw_plan();
        raw.seed = 0;
        assert_ne!(RunPlan::new(raw).unwrap().seed, 0);
    }

    #[test]
    fn robust_rules_are_checked_against_the_quorum_and_privacy() {
        let with = |a: Aggregator, min: u32| {
            let mut raw = raw_plan();
            raw.clients_per_round = 8;
            raw.min_clients = min;
            raw.aggregator = a;
            RunPlan::new(raw).map(|p| p.aggregator).map_err(|e| e.to_string())
        };
        assert_eq!(with(Aggregator::TrimmedMean { trim: 0.25 }, 4), Ok(Aggregator::TrimmedMean { trim: 0.25 }));
        assert!(with(Aggregator::TrimmedMean { trim: 0.5 }, 4).unwrap_err().starts_with("aggregator.trim"));
        assert_eq!(with(Aggregator::MultiKrum { byzantine: 2, select: 5 }, 7).map(|a| a.name()), Ok("multi_krum"));
        let e = with(Aggregator::MultiKrum { byzantine: 2, select: 6 }, 7).unwrap_err();
        assert!(e.contains("select = 6 exceeds min_clients - byzantine = 5"), "{e}");
        assert!(
            with(Aggregator::MultiKrum { byzantine: 3, select: 0 }, 8)
                .unwrap_err()
                .contains(">= 2 * byzantine + 3 = 9")
        );
        assert!(with(Aggregator::NormBound { factor: 0.0 }, 4).unwrap_err().starts_with("aggregator.factor"));
        let mut raw = raw_plan();
        raw.aggregator = Aggregator::Median;
        raw.privacy = Some(PrivacyPlan {
            mechanism: DpMechanism::Central,
            noise_multiplier: 1.0,
            clipping: Clipping::Fixed { norm: 1.0 },
            over_bound: OverBound::Reject,
            sampling: Sampling::Fixed,
            expected_clients: raw.clients_per_round,
        });
        let e = RunPlan::new(raw).unwrap_err();
        assert!(matches!(&e, PlanError::Privacy(m) if m.contains("aggregator median is not accounted")), "{e}");
    }

    #[test]
    fn rejections_name_the_field() {
        let mut raw = raw_plan();
        raw.rounds = 0;
        assert_eq!(RunPlan::new(raw).unwrap_err().to_string(), "rounds must be in 1..=100000, got 0");
        let mut raw = raw_plan();
        raw.min_clients = 9;
        assert!(RunPlan::new(raw).unwrap_err().to_string().contains("min_clients (9)"));
        let mut raw = raw_plan();
        raw.local.learning_rate = f64::NAN;
        assert!(RunPlan::new(raw).unwrap_err().to_string().starts_with("local.learning_rate"));
        let mut raw = raw_plan();
        raw.strategy = None;
        assert_eq!(RunPlan::new(raw).unwrap_err(), PlanError::MissingStrategy);
    }

    #[test]
    fn compression_is_validated_and_refused_with_privacy() {
        let mut raw = raw_plan();
        raw.compression = Compression::TopK { fraction: 0.1 };
        assert_eq!(RunPlan::new(raw).unwrap().compression, Compression::TopK { fraction: 0.1 });
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            let mut raw = raw_plan();
            raw.compression = Compression::TopK { fraction: bad };
            let e = RunPlan::new(raw).unwrap_err().to_string();
            assert!(e.starts_with("compression.fraction must be in (0, 1], got"), "{e}");
        }
        let mut raw = raw_plan();
        raw.compression = Compression::Int8;
        raw.privacy = Some(dp());
        let e = RunPlan::new(raw).unwrap_err();
        assert!(matches!(e, PlanError::Privacy(_)), "{e}");
        assert!(e.to_string().contains("compression int8 cannot be combined with differential privacy"), "{e}");
        // Stored plans from before the key read as uncompressed.
        let mut json = serde_json::to_value(RunPlan::new(raw_plan()).unwrap()).unwrap();
        json.as_object_mut().unwrap().remove("compression");
        let p: RunPlan = serde_json::from_value(json).unwrap();
        assert_eq!(p.compression, Compression::None);
    }

    fn dp() -> PrivacyPlan {
        PrivacyPlan {
            mechanism: DpMechanism::Central,
            noise_multiplier: 1.0,
            clipping: Clipping::Fixed { norm: 1.0 },
            over_bound: OverBound::Reject,
            sampling: Sampling::Fixed,
            expected_clients: 4,
        }
    }

    #[test]
    fn privacy_plans_are_validated_by_field() {
        let mut raw = raw_plan();
        raw.privacy = Some(dp());
        assert!(RunPlan::new(raw).is_ok());
        type Mutation = Box<dyn Fn(&mut PrivacyPlan)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|p| p.noise_multiplier = 0.0), "noise_multiplier"),
            (Box::new(|p| p.clipping = Clipping::Fixed { norm: f64::INFINITY }), "clipping norm"),
            (Box::new(|p| p.expected_clients = 5), "expected_clients (5)"),
            (Box::new(|p| p.sampling = Sampling::Poisson { rate: 1.5 }), "sampling.rate"),
            (
                Box::new(|p| {
                    p.mechanism = DpMechanism::Local;
                    p.clipping = Clipping::Adaptive {
                        initial_norm: 1.0,
                        target_quantile: 0.5,
                        learning_rate: 0.2,
                        count_noise_std: 0.0,
                    };
                }),
                "adaptive clipping needs the central mechanism",
            ),
        ];
        for (edit, want) in cases {
            let mut p = dp();
            edit(&mut p);
            let mut raw = raw_plan();
            raw.privacy = Some(p);
            let e = RunPlan::new(raw).unwrap_err().to_string();
            assert!(e.starts_with("privacy: ") && e.contains(want), "{e} should mention {want}");
        }
    }
}
