//! The vocabulary of run plans: what a data scientist can ask for (aggregation strategy,
//! local optimizer and hyperparameters, federated evaluation, client-level differential
//! privacy). The `fedra` CLI's plan file and the coordinator's validated plan are built
//! from these same types, so a new option or a renamed variant cannot drift between them.
//!
//! These types shape values; they do not judge them. The coordinator's `RunPlan::new`
//! checks every range and names the bad field, so a plan is refused in one place.
//!
//! The serde forms are the coordinator's stored plan format (run plans are persisted as
//! JSON). `#[serde(default)]` fields may be omitted, which is also how the plan file's
//! TOML tables read them; the `[privacy]` table has its own file syntax (see the CLI's
//! `plan_file`) and is parsed into [`PrivacyPlan`].

use serde::{Deserialize, Serialize};

pub use crate::aggregator::Aggregator;

/// Aggregation strategy: how a round's sample-weighted mean of the clients' models becomes
/// the next global model.
///
/// Stored and written as `"fed_avg"` (the plain mean is the next model) or as a table
/// `{ kind = "fed_adam", server_learning_rate = 0.01, … }` for a server optimizer (Reddi et
/// al. 2021, "Adaptive Federated Optimization"): the mean's difference from the global
/// model, Δ, is a pseudo-gradient that the optimizer applies with its own learning rate and
/// state. Without bias correction, as in the paper's Algorithm 2, with v₋₁ = τ²:
///
/// ```text
/// FedAvgM:    m ← β·m + Δ                                 x ← x + η·m
/// FedAdagrad: m ← β₁·m + (1−β₁)·Δ   v ← v + Δ²            x ← x + η·m / (√v + τ)
/// FedAdam:    m ← β₁·m + (1−β₁)·Δ   v ← β₂·v + (1−β₂)·Δ²   x ← x + η·m / (√v + τ)
/// FedYogi:    m ← β₁·m + (1−β₁)·Δ   v ← v − (1−β₂)·Δ²·sign(v − Δ²)   (then as FedAdam)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(into = "StrategyForm")]
pub enum Strategy {
    /// The sample-count weighted average of the clients' models is the next model.
    #[default]
    FedAvg,
    /// The average's difference from the global model drives a server optimizer.
    Server(ServerOptimizer),
}

/// A server optimizer and its hyperparameters (see [`Strategy`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerOptimizer {
    FedAvgM {
        server_learning_rate: f64,
        /// β, the server momentum.
        momentum: f64,
    },
    FedAdagrad {
        server_learning_rate: f64,
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// τ, the adaptivity: how far a coordinate's step may grow when its v is small.
        #[serde(default = "default_tau")]
        tau: f64,
    },
    FedAdam {
        server_learning_rate: f64,
        #[serde(default = "default_beta1")]
        beta1: f64,
        #[serde(default = "default_beta2")]
        beta2: f64,
        #[serde(default = "default_tau")]
        tau: f64,
    },
    FedYogi {
        server_learning_rate: f64,
        #[serde(default = "default_beta1")]
        beta1: f64,
        #[serde(default = "default_beta2")]
        beta2: f64,
        #[serde(default = "default_tau")]
        tau: f64,
    },
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.99
}
fn default_tau() -> f64 {
    1e-3
}

impl ServerOptimizer {
    /// The plan-file name of the optimizer.
    pub fn name(&self) -> &'static str {
        match self {
            Self::FedAvgM { .. } => "fed_avg_m",
            Self::FedAdagrad { .. } => "fed_adagrad",
            Self::FedAdam { .. } => "fed_adam",
            Self::FedYogi { .. } => "fed_yogi",
        }
    }

    /// η.
    pub fn learning_rate(&self) -> f64 {
        match *self {
            Self::FedAvgM { server_learning_rate, .. }
            | Self::FedAdagrad { server_learning_rate, .. }
            | Self::FedAdam { server_learning_rate, .. }
            | Self::FedYogi { server_learning_rate, .. } => server_learning_rate,
        }
    }

    /// Whether the optimizer keeps a second moment v (every one but FedAvgM).
    pub fn has_second_moment(&self) -> bool {
        !matches!(self, Self::FedAvgM { .. })
    }
}

/// The written form of [`Strategy`]: a bare name, or a server optimizer table.
#[derive(Serialize)]
#[serde(untagged)]
enum StrategyForm {
    Name(&'static str),
    Table(ServerOptimizer),
}

/// Reads `"fed_avg"` or a server optimizer table, with the table's own errors (unknown
/// kind, missing or unknown key) rather than an untagged enum's "no variant matched".
impl<'de> Deserialize<'de> for Strategy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Strategy;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"fed_avg\" or a table with kind = fed_avg_m | fed_adagrad | fed_adam | fed_yogi")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Strategy, E> {
                match v {
                    "fed_avg" => Ok(Strategy::FedAvg),
                    other => Err(E::custom(format!(
                        "unknown strategy {other:?}: \"fed_avg\", or a [strategy] table with kind = fed_avg_m | fed_adagrad | fed_adam | fed_yogi"
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Strategy, A::Error> {
                ServerOptimizer::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Strategy::Server)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl From<Strategy> for StrategyForm {
    fn from(s: Strategy) -> Self {
        match s {
            Strategy::FedAvg => StrategyForm::Name("fed_avg"),
            Strategy::Server(o) => StrategyForm::Table(o),
        }
    }
}

/// Per-run compression of client updates (the plan file's `[compression]`). Compressed
/// uploads carry the update Δ = local − global, never the model; the coordinator decodes
/// each chunk straight into the upload's staging buffer as global + Δ̂, so aggregation and
/// server optimizers see a full model as with an uncompressed upload.
///
/// Written `kind = "none" | "int8" | "top_k"` (with `fraction` for `top_k`). Stored as
/// `{"kind":"int8"}`, `{"kind":"top_k","fraction":0.1}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "CompressionTable")]
pub enum Compression {
    /// Little-endian `f32` values, as without the key.
    #[default]
    None,
    /// 8-bit stochastic quantization with one `f32` scale per chunk: s = max|Δᵢ|/127 and
    /// qᵢ ∈ [−127, 127] rounded up with probability equal to the fractional part of Δᵢ/s, so
    /// E[s·qᵢ] = Δᵢ (unbiased); |s·qᵢ − Δᵢ| < s. About a quarter of the `f32` bytes.
    Int8,
    /// Top-k sparsification with error feedback: the client sends the k = ⌈fraction·P⌉
    /// coordinates of largest |Δᵢ + eᵢ| as (index, value) pairs and keeps the rest, e, for
    /// its next round of the same run. 8 bytes per sent coordinate.
    TopK {
        /// Share of the coordinates sent, in (0, 1].
        fraction: f64,
    },
}

/// The written form of [`Compression`], read strictly: serde's internally tagged enums let
/// unknown keys through on unit variants, so the table is read as a struct first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompressionTable {
    kind: CompressionKind,
    #[serde(default)]
    fraction: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum CompressionKind {
    None,
    Int8,
    TopK,
}

impl TryFrom<CompressionTable> for Compression {
    type Error = String;
    fn try_from(t: CompressionTable) -> Result<Self, String> {
        match (t.kind, t.fraction) {
            (CompressionKind::TopK, Some(fraction)) => Ok(Self::TopK { fraction }),
            (CompressionKind::TopK, None) => Err("compression kind top_k needs a fraction in (0, 1]".into()),
            (CompressionKind::None, None) => Ok(Self::None),
            (CompressionKind::Int8, None) => Ok(Self::Int8),
            (CompressionKind::None | CompressionKind::Int8, Some(_)) => {
                Err("compression.fraction applies to kind top_k only".into())
            }
        }
    }
}

impl Compression {
    /// The plan-file name of the kind.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Int8 => "int8",
            Self::TopK { .. } => "top_k",
        }
    }

    /// Coordinates a `top_k` update of a `params`-parameter model may carry: ⌈fraction·P⌉
    /// (at least 1, at most P); `params` for the other kinds.
    pub fn max_sent(&self, params: usize) -> usize {
        match *self {
            Self::TopK { fraction } => ((fraction * params as f64).ceil() as usize).clamp(1.min(params), params),
            Self::None | Self::Int8 => params,
        }
    }
}

/// Local optimizer clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// Minibatch SGD, with heavy-ball momentum when [`LocalTraining::momentum`] > 0.
    #[default]
    Sgd,
    /// Adam with the usual defaults (β1 0.9, β2 0.999, ε 1e-8).
    Adam,
}

/// Local training hyperparameters sent with each task (the plan file's `[local]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalTraining {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    /// FedProx proximal weight μ; 0 is plain local training.
    #[serde(default)]
    pub proximal_mu: f64,
    #[serde(default)]
    pub optimizer: Optimizer,
    /// SGD heavy-ball momentum in [0, 1).
    #[serde(default)]
    pub momentum: f64,
}

/// Federated evaluation of published checkpoints on clients' held-out splits (the plan
/// file's `[evaluation]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationPlan {
    /// Evaluate after every N-th round and after the last; 0 disables evaluation.
    pub every_rounds: u32,
    /// Clients asked per evaluation; 0 means every eligible client.
    #[serde(default)]
    pub clients: u32,
}

impl EvaluationPlan {
    /// Whether the checkpoint of `round` (of `rounds`) is evaluated.
    pub fn after_round(&self, round: u32, rounds: u32) -> bool {
        self.every_rounds > 0 && (round.is_multiple_of(self.every_rounds) || round == rounds)
    }
}

/// What a passing candidate becomes in a region's model registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromoteTo {
    /// It stays a candidate until an approver promotes it.
    #[default]
    None,
    Canary,
    Serving,
}

/// The plan's `[schedule]`: when its rounds may run.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulePlan {
    /// Start each round in the lowest-carbon window the coordinator's carbon feed shows for
    /// the run's regions within `max_delay_seconds`, and prefer clients in cleaner regions
    /// when more are eligible than the round needs (fixed selection only: Poisson sampling
    /// must stay uniform for its privacy amplification).
    #[serde(default)]
    pub prefer_low_carbon: bool,
    /// How long a round may wait for a cleaner window.
    #[serde(default)]
    pub max_delay_seconds: f64,
}

/// The metric a promotion gate compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateMetric {
    /// Held-out accuracy: higher is better.
    #[default]
    Accuracy,
    /// Held-out loss: lower is better.
    Loss,
}

/// The plan file's `[promotion]`: the gate a run's published checkpoint must pass in each
/// region before it serves there, and the canary rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromotionPlan {
    pub promote_to: PromoteTo,
    pub metric: GateMetric,
    /// How much worse than the region's serving checkpoint the candidate may be.
    pub tolerance: f64,
    /// Evaluation samples the candidate needs in a region.
    pub min_samples: u64,
    /// Largest allowed gap between the best and worst region's accuracy; 0: no bound.
    pub max_region_gap: f64,
    /// A canary's share of requests, in (0, 1).
    pub canary_fraction: f64,
    /// Canary requests after which the rule decides; 0: by command only.
    pub canary_min_requests: u64,
    /// The canary's error rate above which the rule rolls it back.
    pub canary_max_error_rate: f64,
    /// When an inference node reports drift against the serving checkpoint, submit this
    /// run's plan again, starting from that checkpoint (once per serving checkpoint).
    pub retrain_on_drift: bool,
}

impl Default for PromotionPlan {
    fn default() -> Self {
        Self {
            promote_to: PromoteTo::None,
            metric: GateMetric::Accuracy,
            tolerance: 0.0,
            min_samples: 1,
            max_region_gap: 0.0,
            canary_fraction: 0.1,
            canary_min_requests: 0,
            canary_max_error_rate: 0.0,
            retrain_on_drift: false,
        }
    }
}

/// Who adds the noise of a differentially private run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpMechanism {
    /// Clients clip; the coordinator verifies the bound, sums, and adds Gaussian noise to
    /// the sum (DP-FedAvg, McMahan et al. 2018). Trusts the coordinator.
    Central,
    /// Each client clips and noises its own update before upload (local DP), for
    /// deployments that do not trust the coordinator. Far noisier for the same ε.
    Local,
}

/// How the clipping norm C is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Clipping {
    /// C stays fixed.
    Fixed { norm: f64 },
    /// C follows the `target_quantile` γ of update norms: after each round
    /// C ← C·exp(−η·(b̃ − γ)), b̃ the noised fraction of clients whose norm was ≤ C
    /// (Andrew et al. 2021). `count_noise_std` is σ_b, the noise on Σ(bᵢ − ½); 0 means the
    /// paper's default, expected clients / 20.
    Adaptive { initial_norm: f64, target_quantile: f64, learning_rate: f64, count_noise_std: f64 },
}

impl Clipping {
    /// C for the first round.
    pub fn initial_norm(&self) -> f64 {
        match *self {
            Self::Fixed { norm } => norm,
            Self::Adaptive { initial_norm, .. } => initial_norm,
        }
    }
}

/// What the coordinator does with an update whose norm exceeds C (beyond float tolerance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverBound {
    /// Refuse the update (the client sees why; the participation is recorded as rejected).
    #[default]
    Reject,
    /// Scale it back to C and record that it was re-clipped.
    Reclip,
}

/// How clients are sampled into rounds — and so which accountant is sound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Sampling {
    /// The usual selection of `clients_per_round`; accounted with zCDP and no
    /// amplification by sampling (the conservative default).
    Fixed,
    /// Each eligible client joins each round independently with probability `rate`;
    /// accounted with the Rényi-DP accountant of the Poisson-sampled Gaussian mechanism.
    Poisson { rate: f64 },
}

impl Sampling {
    /// q, the probability that a given client takes part in a round (1 for fixed selection).
    pub fn rate(&self) -> f64 {
        match *self {
            Self::Fixed => 1.0,
            Self::Poisson { rate } => rate,
        }
    }
}

/// Client-level differential privacy for a run: neighbouring datasets differ by one
/// client's whole contribution to a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyPlan {
    pub mechanism: DpMechanism,
    /// z: the noise standard deviation is z·C on the sum of clipped updates.
    pub noise_multiplier: f64,
    pub clipping: Clipping,
    #[serde(default)]
    pub over_bound: OverBound,
    pub sampling: Sampling,
    /// The fixed denominator of the average (DP-FedAvg): a dropout changes nothing about
    /// the privacy analysis. For Poisson sampling, rate × population.
    pub expected_clients: u32,
}

impl PrivacyPlan {
    /// σ_b, the noise on the clipped-count query Σ(bᵢ − ½), when clipping is adaptive.
    pub fn count_noise_std(&self) -> Option<f64> {
        match self.clipping {
            Clipping::Adaptive { count_noise_std, .. } => {
                Some(if count_noise_std > 0.0 { count_noise_std } else { f64::from(self.expected_clients) / 20.0 })
            }
            Clipping::Fixed { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run plans are stored as JSON: these forms must not change under stored rows.
    #[test]
    fn stored_json_forms_are_stable() {
        let p = PrivacyPlan {
            mechanism: DpMechanism::Central,
            noise_multiplier: 1.0,
            clipping: Clipping::Adaptive {
                initial_norm: 1.0,
                target_quantile: 0.5,
                learning_rate: 0.2,
                count_noise_std: 0.0,
            },
            over_bound: OverBound::Reclip,
            sampling: Sampling::Poisson { rate: 0.5 },
            expected_clients: 4,
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"mechanism":"central","noise_multiplier":1.0,"clipping":{"kind":"adaptive","initial_norm":1.0,"target_quantile":0.5,"learning_rate":0.2,"count_noise_std":0.0},"over_bound":"reclip","sampling":{"kind":"poisson","rate":0.5},"expected_clients":4}"#
        );
        assert_eq!(serde_json::from_str::<PrivacyPlan>(&json).unwrap(), p);
        let local = LocalTraining {
            epochs: 1,
            batch_size: 8,
            learning_rate: 0.1,
            proximal_mu: 0.0,
            optimizer: Optimizer::Adam,
            momentum: 0.0,
        };
        let json = serde_json::to_string(&local).unwrap();
        assert_eq!(
            json,
            r#"{"epochs":1,"batch_size":8,"learning_rate":0.1,"proximal_mu":0.0,"optimizer":"adam","momentum":0.0}"#
        );
        assert_eq!(serde_json::to_string(&Strategy::FedAvg).unwrap(), r#""fed_avg""#);
        let adam = Strategy::Server(ServerOptimizer::FedAdam {
            server_learning_rate: 0.01,
            beta1: 0.9,
            beta2: 0.99,
            tau: 0.001,
        });
        let json = serde_json::to_string(&adam).unwrap();
        assert_eq!(json, r#"{"kind":"fed_adam","server_learning_rate":0.01,"beta1":0.9,"beta2":0.99,"tau":0.001}"#);
        assert_eq!(serde_json::from_str::<Strategy>(&json).unwrap(), adam);
        assert_eq!(serde_json::from_str::<Strategy>(r#""fed_avg""#).unwrap(), Strategy::FedAvg);
        // Defaults fill β₁, β₂ and τ; an unknown key or kind is refused.
        let yogi: Strategy = serde_json::from_str(r#"{"kind":"fed_yogi","server_learning_rate":0.1}"#).unwrap();
        assert_eq!(
            yogi,
            Strategy::Server(ServerOptimizer::FedYogi {
                server_learning_rate: 0.1,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-3
            })
        );
        assert!(serde_json::from_str::<Strategy>(r#"{"kind":"fed_adam","server_learning_rate":0.1,"eta":1}"#).is_err());
        assert!(serde_json::from_str::<Strategy>(r#""fed_sgd""#).is_err());
    }

    #[test]
    fn compression_forms_and_refusals() {
        assert_eq!(serde_json::to_string(&Compression::None).unwrap(), r#"{"kind":"none"}"#);
        assert_eq!(serde_json::to_string(&Compression::Int8).unwrap(), r#"{"kind":"int8"}"#);
        let top = Compression::TopK { fraction: 0.1 };
        let json = serde_json::to_string(&top).unwrap();
        assert_eq!(json, r#"{"kind":"top_k","fraction":0.1}"#);
        assert_eq!(serde_json::from_str::<Compression>(&json).unwrap(), top);
        let e = serde_json::from_str::<Compression>(r#"{"kind":"int4"}"#).unwrap_err().to_string();
        assert!(e.contains("none") && e.contains("int8") && e.contains("top_k"), "{e}");
        assert!(serde_json::from_str::<Compression>(r#"{"kind":"int8","fraction":0.1}"#).is_err());
        assert!(serde_json::from_str::<Compression>(r#"{"kind":"top_k"}"#).is_err());
        assert_eq!(top.max_sent(650), 65);
        assert_eq!(Compression::TopK { fraction: 0.001 }.max_sent(650), 1);
        assert_eq!(Compression::TopK { fraction: 1.0 }.max_sent(650), 650);
        assert_eq!(Compression::Int8.max_sent(650), 650);
    }

    #[test]
    fn optional_fields_default_and_unknown_ones_are_refused() {
        let l: LocalTraining = serde_json::from_str(r#"{"epochs":1,"batch_size":8,"learning_rate":0.1}"#).unwrap();
        assert_eq!((l.proximal_mu, l.optimizer, l.momentum), (0.0, Optimizer::Sgd, 0.0));
        assert!(
            serde_json::from_str::<LocalTraining>(r#"{"epochs":1,"batch_size":8,"learning_rate":0.1,"epoch":2}"#)
                .is_err()
        );
        let e: EvaluationPlan = serde_json::from_str(r#"{"every_rounds":2}"#).unwrap();
        assert_eq!(e, EvaluationPlan { every_rounds: 2, clients: 0 });
        assert!(e.after_round(2, 5) && e.after_round(5, 5) && !e.after_round(3, 5));
    }

    #[test]
    fn derived_privacy_values() {
        let adaptive =
            Clipping::Adaptive { initial_norm: 2.0, target_quantile: 0.5, learning_rate: 0.2, count_noise_std: 0.0 };
        let p = PrivacyPlan {
            mechanism: DpMechanism::Central,
            noise_multiplier: 1.0,
            clipping: adaptive,
            over_bound: OverBound::Reject,
            sampling: Sampling::Fixed,
            expected_clients: 40,
        };
        assert_eq!((p.clipping.initial_norm(), p.count_noise_std(), p.sampling.rate()), (2.0, Some(2.0), 1.0));
        let fixed = PrivacyPlan { clipping: Clipping::Fixed { norm: 1.5 }, ..p };
        assert_eq!((fixed.clipping.initial_norm(), fixed.count_noise_std()), (1.5, None));
    }
}
