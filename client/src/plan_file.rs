//! The run plan file a data scientist writes (`fedra run submit plan.toml`). Parsed
//! strictly (unknown keys are errors with line and column); the coordinator validates the
//! values themselves at submit time and names any bad field.

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
/// [`fedra_proto::model::Architecture`] (`kind = "logistic_regression" | "mlp" | "cnn"`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSection {
    pub name: String,
    pub architecture: fedra_proto::model::Architecture,
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
        let architecture = fedra_proto::model::Architecture::deserialize(toml::Value::Table(table))
            .map_err(|e| D::Error::custom(format!("model: {}", e.message())))?;
        Ok(Self { name, architecture })
    }
}

/// Local optimizer.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerName {
    #[default]
    Sgd,
    Adam,
}

/// `[evaluation]`: federated evaluation of checkpoints on clients' held-out splits.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSection {
    /// Evaluate after every N-th round and after the last; 0 disables it.
    pub every_rounds: u32,
    /// Clients asked each time; 0 means every eligible client.
    #[serde(default)]
    pub clients: u32,
}

/// `[privacy]`: client-level differential privacy (DP-FedAvg). The coordinator validates
/// the values; this only shapes them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    /// `central` (the coordinator adds the noise) or `local` (each client does).
    pub mechanism: MechanismName,
    /// z: noise std = z · clip norm.
    pub noise_multiplier: f64,
    /// Fixed clipping norm C (give this or `[privacy.adaptive]`).
    #[serde(default)]
    pub clip_norm: Option<f64>,
    #[serde(default)]
    pub adaptive: Option<AdaptiveSection>,
    /// `reject` (default) or `reclip` updates whose norm exceeds C.
    #[serde(default)]
    pub over_bound: OverBoundName,
    /// Poisson sampling rate q; absent = fixed selection (no amplification claimed).
    #[serde(default)]
    pub sampling_rate: Option<f64>,
    /// The fixed denominator of the average.
    pub expected_clients: u32,
}

/// `[privacy.adaptive]`: adaptive clipping (Andrew et al. 2021).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveSection {
    pub initial_norm: f64,
    #[serde(default = "default_quantile")]
    pub target_quantile: f64,
    #[serde(default = "default_clip_lr")]
    pub learning_rate: f64,
    /// 0 = expected_clients / 20.
    #[serde(default)]
    pub count_noise_std: f64,
}

fn default_quantile() -> f64 {
    0.5
}

fn default_clip_lr() -> f64 {
    0.2
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MechanismName {
    Central,
    Local,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverBoundName {
    #[default]
    Reject,
    Reclip,
}

/// `[local]`: local training hyperparameters.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalSection {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    #[serde(default)]
    pub proximal_mu: f64,
    #[serde(default)]
    pub optimizer: OptimizerName,
    /// SGD momentum in [0, 1).
    #[serde(default)]
    pub momentum: f64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    #[default]
    FedAvg,
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
    pub strategy: StrategyName,
    pub rounds: u32,
    pub clients_per_round: u32,
    pub min_clients: u32,
    #[serde(default)]
    pub over_selection: f64,
    pub round_deadline_seconds: f64,
    pub local: LocalSection,
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub evaluation: EvaluationSection,
    #[serde(default)]
    pub privacy: Option<PrivacySection>,
    /// Scheduling priority in -100..=100 (higher first when runs compete for clients).
    #[serde(default)]
    pub priority: i32,
}

impl PlanFile {
    /// # Errors
    /// Unreadable file, bad TOML, unknown keys or an unsupported version.
    pub fn load(path: &Path) -> Result<Self, PlanFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PlanFileError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// # Errors
    /// Bad TOML, unknown keys or an unsupported version.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PlanFileError> {
        let plan: PlanFile = toml::from_str(text).map_err(|e| PlanFileError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        if plan.version != PLAN_VERSION {
            return Err(PlanFileError::Version { path: origin.to_string(), version: plan.version });
        }
        if let Some(p) = &plan.privacy
            && p.clip_norm.is_some() == p.adaptive.is_some()
        {
            return Err(PlanFileError::Parse {
                path: origin.to_string(),
                message: "[privacy] needs exactly one of clip_norm (fixed clipping) or [privacy.adaptive]".into(),
            });
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
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
    fn parses_mlp_cnn_and_evaluation() {
        let mlp = PLAN.replace("kind = \"logistic_regression\"", "kind = \"mlp\"\nhidden = [200, 200]")
            + "optimizer = \"adam\"\n[evaluation]\nevery_rounds = 2\n";
        let p = PlanFile::parse(&mlp, "p").unwrap();
        assert_eq!(
            p.model.architecture,
            fedra_proto::model::Architecture::Mlp { input_dim: 20, hidden: vec![200, 200], classes: 4 }
        );
        assert_eq!(p.local.optimizer, OptimizerName::Adam);
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
                architecture: fedra_proto::model::Architecture::LogisticRegression { input_dim: 20, classes: 4 }
            }
        );
        let bad = PLAN.replace("epochs = 2", "epochs = 2\nepoch = 3");
        let e = PlanFile::parse(&bad, "plan.toml").unwrap_err().to_string();
        assert!(e.contains("epoch") && e.contains("line"), "{e}");
        let e = PlanFile::parse(&PLAN.replace("version = 1", "version = 9"), "p").unwrap_err();
        assert!(matches!(e, PlanFileError::Version { version: 9, .. }));
    }
}
