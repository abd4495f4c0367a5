//! The run plan file a data scientist writes (`fedra run submit plan.toml`). Parsed
//! strictly (unknown keys are errors with line and column) into the shared plan
//! vocabulary of `fedra_types::plan`, the same types the coordinator's validated plan is
//! made of; the coordinator validates the values themselves at submit time and names any
//! bad field.

use fedra_types::model::Architecture;
use fedra_types::plan::{
    Clipping, DpMechanism, EvaluationPlan, LocalTraining, OverBound, PrivacyPlan, Sampling, Strategy,
};
use serde::Deserialize;
use std::path::Path;

pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot read plan {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("plan {path}: {message}")]
    Parse { path: String, message: String },
    #[error("plan {path}: version {version} is not supported (expected {PLAN_VERSION})")]
    Version { path: String, version: u32 },
}

/// `[model]`: which network to train: a `name` plus an architecture, written as in
/// [`Architecture`] (`kind = "logistic_regression" | "mlp" | "cnn"`).
///
/// The table as written, not a `fedra_types::model::ModelSpec`: a `ModelSpec` is validated
/// (name rules, every dimension in range) and only the coordinator builds one, so a bad
/// model is refused in one place, with the coordinator's message naming the field.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSection {
    pub name: String,
    pub architecture: Architecture,
}

// Written by hand because serde's `flatten` cannot reject unknown keys: `name` is taken
// out and the rest must be exactly one architecture's keys.
impl<'de> Deserialize<'de> for ModelSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        let name = match table.remove("name") {
            Some(toml::Value::String(s)) => s,
            Some(other) => return Err(D::Error::custom(format!("model.name must be a string, got {other}"))),
            None => return Err(D::Error::missing_field("name")),
        };
        let architecture = Architecture::deserialize(toml::Value::Table(table))
            .map_err(|e| D::Error::custom(format!("model: {}", e.message())))?;
        Ok(Self { name, architecture })
    }
}

/// `[privacy]` as written: fixed clipping is `clip_norm`, adaptive clipping a
/// `[privacy.adaptive]` table, Poisson sampling a `sampling_rate`. A file syntax only, read
/// straight into the shared [`PrivacyPlan`] by [`deserialize_privacy`]; not a domain type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivacyTable {
    mechanism: DpMechanism,
    noise_multiplier: f64,
    #[serde(default)]
    clip_norm: Option<f64>,
    #[serde(default)]
    adaptive: Option<AdaptiveTable>,
    #[serde(default)]
    over_bound: OverBound,
    #[serde(default)]
    sampling_rate: Option<f64>,
    expected_clients: u32,
}

/// `[privacy.adaptive]`: adaptive clipping (Andrew et al. 2021); see [`Clipping::Adaptive`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdaptiveTable {
    initial_norm: f64,
    #[serde(default = "default_quantile")]
    target_quantile: f64,
    #[serde(default = "default_clip_lr")]
    learning_rate: f64,
    /// 0 = expected_clients / 20.
    #[serde(default)]
    count_noise_std: f64,
}

fn default_quantile() -> f64 {
    0.5
}

fn default_clip_lr() -> f64 {
    0.2
}

/// Reads an optional `[privacy]` table (client-level DP, DP-FedAvg) into the shared
/// [`PrivacyPlan`]: `mechanism` (`central`: the coordinator adds the noise; `local`: each
/// client does), `noise_multiplier` z, exactly one of `clip_norm` (fixed C) or
/// `[privacy.adaptive]` (`initial_norm`, `target_quantile` = 0.5, `learning_rate` = 0.2,
/// `count_noise_std` = 0), `over_bound` (`reject` or `reclip`), `sampling_rate` (Poisson
/// sampling; absent = fixed selection, no amplification claimed) and `expected_clients`.
/// Only the shape is checked here; the coordinator judges the values. For
/// `#[serde(default, deserialize_with = "...")]` on an `Option<PrivacyPlan>` field, here
/// and in `fedra-sim`'s scenario files.
///
/// # Errors
/// Unknown keys, or not exactly one kind of clipping.
pub fn deserialize_privacy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PrivacyPlan>, D::Error> {
    use serde::de::Error;
    let t = PrivacyTable::deserialize(d)?;
    let clipping = match (t.clip_norm, t.adaptive) {
        (Some(norm), None) => Clipping::Fixed { norm },
        (None, Some(a)) => Clipping::Adaptive {
            initial_norm: a.initial_norm,
            target_quantile: a.target_quantile,
            learning_rate: a.learning_rate,
            count_noise_std: a.count_noise_std,
        },
        _ => {
            return Err(D::Error::custom(
                "[privacy] needs exactly one of clip_norm (fixed clipping) or [privacy.adaptive]",
            ));
        }
    };
    Ok(Some(PrivacyPlan {
        mechanism: t.mechanism,
        noise_multiplier: t.noise_multiplier,
        clipping,
        over_bound: t.over_bound,
        sampling: t.sampling_rate.map_or(Sampling::Fixed, |rate| Sampling::Poisson { rate }),
        expected_clients: t.expected_clients,
    }))
}

/// A run plan as written in TOML.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub version: u32,
    pub model: ModelSection,
    #[serde(default)]
    pub initial_checkpoint: Option<String>,
    #[serde(default)]
    pub strategy: Strategy,
    /// `aggregator = "median"` or an `[aggregator]` table (robust aggregation rules).
    #[serde(default)]
    pub aggregator: fedra_types::plan::Aggregator,
    pub rounds: u32,
    pub clients_per_round: u32,
    pub min_clients: u32,
    #[serde(default)]
    pub over_selection: f64,
    pub round_deadline_seconds: f64,
    /// `[local]`.
    pub local: LocalTraining,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub seed: u64,
    /// `[evaluation]`: federated evaluation of checkpoints on clients' held-out splits.
    #[serde(default)]
    pub evaluation: EvaluationPlan,
    /// `[privacy]`; see [`deserialize_privacy`] for its syntax.
    #[serde(default, deserialize_with = "deserialize_privacy")]
    pub privacy: Option<PrivacyPlan>,
    /// Scheduling priority in -100..=100: when runs compete for the same clients the
    /// higher goes first, equal priorities take turns. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// `[promotion]`: the gate the published checkpoint must pass in each region's model
    /// registry, what passing makes it (none, canary, serving), and the canary rule.
    #[serde(default)]
    pub promotion: fedra_types::plan::PromotionPlan,
    /// `[schedule]`: `prefer_low_carbon = true` and `max_delay = "6h"`.
    #[serde(default, deserialize_with = "deserialize_schedule")]
    pub schedule: fedra_types::plan::SchedulePlan,
    /// `[compression]`: `kind = "none" | "int8" | "top_k"` (with `fraction` for top_k).
    #[serde(default)]
    pub compression: fedra_types::plan::Compression,
}

/// `[schedule]` as written: `prefer_low_carbon` and `max_delay`, a duration such as `"90s"`,
/// `"30m"`, `"6h"` or `"1d"`.
///
/// # Errors
/// Unknown keys, or a duration that is not a number followed by s, m, h or d.
pub fn deserialize_schedule<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<fedra_types::plan::SchedulePlan, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        #[serde(default)]
        prefer_low_carbon: bool,
        #[serde(default)]
        max_delay: Option<String>,
    }
    let t = Table::deserialize(d)?;
    let max_delay_seconds = match t.max_delay.as_deref() {
        None => 0.0,
        Some(text) => duration_seconds(text).ok_or_else(|| {
            D::Error::custom(format!(
                "schedule.max_delay: {text:?} is not a duration like \"90s\", \"30m\", \"6h\" or \"1d\""
            ))
        })?,
    };
    Ok(fedra_types::plan::SchedulePlan { prefer_low_carbon: t.prefer_low_carbon, max_delay_seconds })
}

/// `"6h"` → 21600.
fn duration_seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    let unit = match text.chars().last()? {
        's' => 1.0,
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86_400.0,
        _ => return None,
    };
    let n: f64 = text[..text.len() - 1].trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n * unit)
}

impl PlanFile {
    /// # Errors
    /// An unreadable file, or as [`PlanFile::parse`].
    pub fn load(path: &Path) -> Result<Self, PlanFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PlanFileError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// # Errors
    /// Bad TOML, unknown keys, a `[privacy]` table without exactly one kind of clipping, or
    /// an unsupported version.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PlanFileError> {
        let plan: PlanFile = toml::from_str(text).map_err(|e| PlanFileError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        if plan.version != PLAN_VERSION {
            return Err(PlanFileError::Version { path: origin.to_string(), version: plan.version });
        }
        Ok(plan)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    proptest::proptest! {
        /// The plan-file parser on mutated plans: a plan or a named error, never a panic.
        #[test]
        fn mutated_plan_files_never_panic(
            mutations in proptest::collection::vec(
                (<proptest::sample::Index as proptest::arbitrary::Arbitrary>::arbitrary(), 0u8..128),
                1..6,
            ),
        ) {
            let mut text = include_str!("../../sim/plans/quickstart.toml").as_bytes().to_vec();
            for (i, b) in mutations {
                let at = i.index(text.len());
                text[at] = b;
            }
            let _ = PlanFile::parse(&String::from_utf8_lossy(&text), "fuzz.toml");
        }
    }

    use super::*;

    pub(crate) const PLAN: &str = r#"
version = 1
rounds = 3
clients_per_round = 5
min_clients = 3
round_deadline_seconds = 60
regions = ["eu"]

[model]
kind = "logistic_regression"
name = "demo"
input_dim = 20
classes = 4

[local]
epochs = 2
batch_size = 32
learning_rate = 0.1
"#;

    #[test]
    fn strategy_is_a_name_or_a_server_optimizer_table() {
        use fedra_types::plan::{ServerOptimizer, Strategy};
        assert_eq!(PlanFile::parse(PLAN, "p").unwrap().strategy, Strategy::FedAvg);
        let named = PLAN.replace("regions = [\"eu\"]", "regions = [\"eu\"]\nstrategy = \"fed_avg\"");
        assert_eq!(PlanFile::parse(&named, "p").unwrap().strategy, Strategy::FedAvg);
        let adam = format!("{PLAN}[strategy]\nkind = \"fed_adam\"\nserver_learning_rate = 0.03\nbeta2 = 0.999\n");
        assert_eq!(
            PlanFile::parse(&adam, "p").unwrap().strategy,
            Strategy::Server(ServerOptimizer::FedAdam {
                server_learning_rate: 0.03,
                beta1: 0.9,
                beta2: 0.999,
                tau: 1e-3
            })
        );
        // Each mistake is named: an unknown kind, a missing rate, an unknown key, a bad name.
        for (bad, says) in [
            ("[strategy]\nkind = \"fed_sgd\"\nserver_learning_rate = 1.0\n", "fed_sgd"),
            ("[strategy]\nkind = \"fed_yogi\"\n", "server_learning_rate"),
            ("[strategy]\nkind = \"fed_avg_m\"\nserver_learning_rate = 1.0\nmomentum = 0.9\nbeta = 1\n", "beta"),
        ] {
            let e = PlanFile::parse(&format!("{PLAN}{bad}"), "p").unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        let e = PlanFile::parse(&named.replace("\"fed_avg\"", "\"fedavg\""), "p").unwrap_err().to_string();
        assert!(e.contains("unknown strategy \"fedavg\""), "{e}");
    }

    #[test]
    fn parses_mlp_cnn_and_evaluation() {
        let mlp = PLAN.replace("kind = \"logistic_regression\"", "kind = \"mlp\"\nhidden = [200, 200]")
            + "optimizer = \"adam\"\n[evaluation]\nevery_rounds = 2\n";
        let p = PlanFile::parse(&mlp, "p").unwrap();
        assert_eq!(p.model.architecture, Architecture::Mlp { input_dim: 20, hidden: vec![200, 200], classes: 4 });
        assert_eq!(p.local.optimizer, fedra_types::plan::Optimizer::Adam);
        assert_eq!(p.evaluation.every_rounds, 2);
        let cnn = r#"
version = 1
rounds = 1
clients_per_round = 1
min_clients = 1
round_deadline_seconds = 10
[model]
name = "digits-cnn"
kind = "cnn"
height = 8
width = 8
channels = 1
conv = [{ filters = 16, kernel = 3 }, { filters = 32, kernel = 3 }]
dense = [64]
classes = 10
[local]
epochs = 1
batch_size = 10
learning_rate = 0.05
"#;
        let p = PlanFile::parse(cnn, "p").unwrap();
        assert_eq!(p.model.architecture.layout().tensors[2].shape, vec![32, 16, 3, 3]);
        let e = PlanFile::parse(&cnn.replace("dense = [64]", "dense = [64]\ndropout = 0.5"), "p").unwrap_err();
        assert!(e.to_string().contains("dropout"), "{e}");
    }

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let p = PlanFile::parse(PLAN, "plan.toml").unwrap();
        assert_eq!(p.rounds, 3);
        assert_eq!(
            p.model,
            ModelSection {
                name: "demo".into(),
                architecture: Architecture::LogisticRegression { input_dim: 20, classes: 4 }
            }
        );
        let bad = PLAN.replace("epochs = 2", "epochs = 2\nepoch = 3");
        let e = PlanFile::parse(&bad, "plan.toml").unwrap_err().to_string();
        assert!(e.contains("epoch") && e.contains("line"), "{e}");
        let e = PlanFile::parse(&PLAN.replace("version = 1", "version = 9"), "p").unwrap_err();
        assert!(matches!(e, PlanFileError::Version { version: 9, .. }));
    }

    #[test]
    fn privacy_tables_become_the_shared_privacy_plan() {
        let privacy = |table: &str| PlanFile::parse(&format!("{PLAN}[privacy]\n{table}"), "p.toml");
        let fixed = "mechanism = \"central\"\nnoise_multiplier = 1.0\nexpected_clients = 2\nclip_norm = 0.5\n";
        let p = privacy(fixed).unwrap().privacy.unwrap();
        assert_eq!(
            p,
            PrivacyPlan {
                mechanism: DpMechanism::Central,
                noise_multiplier: 1.0,
                clipping: Clipping::Fixed { norm: 0.5 },
                over_bound: OverBound::Reject,
                sampling: Sampling::Fixed,
                expected_clients: 2,
            }
        );
        let adaptive = fixed.replace("clip_norm = 0.5\n", "sampling_rate = 0.5\nover_bound = \"reclip\"\n")
            + "[privacy.adaptive]\ninitial_norm = 2.0\n";
        let p = privacy(&adaptive).unwrap().privacy.unwrap();
        assert_eq!(
            p.clipping,
            Clipping::Adaptive { initial_norm: 2.0, target_quantile: 0.5, learning_rate: 0.2, count_noise_std: 0.0 }
        );
        assert_eq!((p.sampling, p.over_bound), (Sampling::Poisson { rate: 0.5 }, OverBound::Reclip));
        for bad in [format!("{fixed}[privacy.adaptive]\ninitial_norm = 2.0\n"), fixed.replace("clip_norm = 0.5\n", "")]
        {
            let e = privacy(&bad).unwrap_err().to_string();
            assert!(
                e.starts_with("plan p.toml: ") && e.contains("exactly one of clip_norm") && !e.contains('\n'),
                "{e}"
            );
        }
        let e = privacy(&fixed.replace("clip_norm", "clip")).unwrap_err().to_string();
        assert!(e.contains("clip") && e.contains("line"), "{e}");
    }

    #[test]
    fn schedule_tables_take_a_written_duration() {
        let schedule = |table: &str| PlanFile::parse(&format!("{PLAN}[schedule]\n{table}"), "p.toml");
        let p = schedule("prefer_low_carbon = true\nmax_delay = \"6h\"\n").unwrap().schedule;
        assert_eq!((p.prefer_low_carbon, p.max_delay_seconds), (true, 21_600.0));
        assert_eq!(schedule("max_delay = \"90s\"\n").unwrap().schedule.max_delay_seconds, 90.0);
        assert_eq!(schedule("max_delay = \"1.5d\"\n").unwrap().schedule.max_delay_seconds, 129_600.0);
        assert_eq!(PlanFile::parse(PLAN, "p").unwrap().schedule, fedra_types::plan::SchedulePlan::default());
        for bad in ["max_delay = \"6 hours\"\n", "max_delay = \"-1h\"\n", "delay = \"1h\"\n"] {
            let e = schedule(bad).unwrap_err().to_string();
            assert!(e.starts_with("plan p.toml: ") && e.contains("delay"), "{e}");
        }
    }
}
