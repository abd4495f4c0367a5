//! Run plans: what a data scientist asks the coordinator to do. A [`RunPlan`] can only be
//! built through [`RunPlan::new`], which checks every field, so a plan that was admitted
//! cannot fail at round 5 for a reason visible at submit time.

use crate::ids::{CheckpointId, RegionId};
use crate::model::ModelSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

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
    #[error("min_clients ({min}) must not exceed clients_per_round ({target})")]
    QuorumAboveTarget { min: u32, target: u32 },
    #[error("strategy is unspecified: choose fed_avg")]
    MissingStrategy,
}

/// Aggregation strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Sample-count weighted average of the clients' models.
    FedAvg,
}

/// Local optimizer clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    #[default]
    Sgd,
    Adam,
}

/// Local training hyperparameters sent with each task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalTraining {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    pub proximal_mu: f64,
    #[serde(default)]
    pub optimizer: Optimizer,
    /// SGD heavy-ball momentum in [0, 1).
    #[serde(default)]
    pub momentum: f64,
}

/// Federated evaluation of published checkpoints on clients' held-out splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EvaluationPlan {
    /// Evaluate after every N-th round and after the last; 0 disables evaluation.
    pub every_rounds: u32,
    /// Clients asked per evaluation; 0 means every eligible client.
    pub clients: u32,
}

impl EvaluationPlan {
    /// Whether the checkpoint of `round` (of `rounds`) is evaluated.
    pub fn after_round(&self, round: u32, rounds: u32) -> bool {
        self.every_rounds > 0 && (round.is_multiple_of(self.every_rounds) || round == rounds)
    }
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
    pub rounds: u32,
    pub clients_per_round: u32,
    pub min_clients: u32,
    pub over_selection: f64,
    pub round_deadline: f64,
    pub local: LocalTraining,
    pub regions: RegionSet,
    pub seed: u64,
    pub evaluation: EvaluationPlan,
}

/// A validated run plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub model: ModelSpec,
    pub initial_checkpoint: Option<CheckpointId>,
    pub strategy: Strategy,
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
}

fn range(field: &'static str, got: f64, min: f64, max: f64) -> Result<(), PlanError> {
    if got.is_finite() && got >= min && got <= max {
        Ok(())
    } else {
        Err(PlanError::OutOfRange { field, min, max, got })
    }
}

impl RunPlan {
    /// Validates every field. A zero seed is replaced by a random one so the stored plan
    /// always says which seed was used.
    ///
    /// # Errors
    /// The first invalid field, by name.
    pub fn new(raw: RawPlan) -> Result<Self, PlanError> {
        let strategy = raw.strategy.ok_or(PlanError::MissingStrategy)?;
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
        let seed = if raw.seed == 0 { rand::random::<u64>().max(1) } else { raw.seed };
        Ok(Self {
            model: raw.model,
            initial_checkpoint: raw.initial_checkpoint,
            strategy,
            rounds: raw.rounds,
            clients_per_round: raw.clients_per_round,
            min_clients: raw.min_clients,
            over_selection: raw.over_selection,
            round_deadline: Duration::from_secs_f64(raw.round_deadline),
            local: raw.local,
            regions: raw.regions,
            seed,
            evaluation: raw.evaluation,
        })
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
}
