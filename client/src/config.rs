//! Sidecar configuration: one TOML file (plus `FEDRA_COORDINATOR` / flags for the
//! endpoint), parsed strictly and validated once. Environment variables are read here only.

use crate::data::Dataset;
use crate::data::csv::{CsvError, load_csv};
use crate::data::synthetic::{BlobSpec, try_gaussian_blobs};
use crate::session::SidecarSettings;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CLIENT_CONFIG_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("dataset: {0}")]
    Csv(#[from] CsvError),
    #[error("dataset: {0}")]
    Data(#[from] crate::data::DataError),
}

/// Where the sidecar's local training data comes from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatasetSource {
    /// Feature columns then an integer label column.
    Csv {
        path: PathBuf,
        classes: usize,
        #[serde(default)]
        header: bool,
    },
    /// Seeded Gaussian blobs (simulation and demos).
    Synthetic {
        dim: usize,
        classes: usize,
        samples: usize,
        seed: u64,
        #[serde(default)]
        task_seed: u64,
        #[serde(default)]
        client_shift: f32,
    },
}

impl DatasetSource {
    /// Loads the dataset. Relative CSV paths are resolved against `base`.
    ///
    /// # Errors
    /// The loader's error, naming the file and line.
    pub fn load(&self, name: &str, base: &Path) -> Result<Dataset, ClientConfigError> {
        Ok(match self {
            DatasetSource::Csv { path, classes, header } => load_csv(&base.join(path), *classes, *header)?,
            DatasetSource::Synthetic { dim, classes, samples, seed, task_seed, client_shift } => {
                let mut spec = BlobSpec::new(*dim, *classes, *samples, *seed);
                spec.task_seed = *task_seed;
                spec.client_shift = *client_shift;
                try_gaussian_blobs(name, &spec)?
            }
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial_ms: Option<u64>,
    max_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientConfig {
    version: u32,
    client_id: String,
    region: String,
    coordinator: Option<String>,
    #[serde(default)]
    devices: Vec<String>,
    dataset: DatasetSource,
    backoff: Option<RawBackoff>,
}

/// A validated sidecar configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub settings: SidecarSettings,
    pub dataset: DatasetSource,
    /// Directory of the config file: relative dataset paths are resolved against it.
    pub base_dir: PathBuf,
}

fn valid_id(key: &'static str, v: &str) -> Result<(), ClientConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
        && !v.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ClientConfigError::Invalid {
            key,
            message: format!("{v:?} must be 1..=128 chars of letters, digits, '.', '_', '-', ':'"),
        })
    }
}

impl ClientConfig {
    /// Reads and validates a config file; `endpoint` (flag) overrides `FEDRA_COORDINATOR`,
    /// which overrides the file's `coordinator`.
    ///
    /// # Errors
    /// Unreadable file, unknown keys (with line/column) or invalid values (by key).
    pub fn load(path: &Path, endpoint: Option<String>) -> Result<Self, ClientConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ClientConfigError::Read { path: path.display().to_string(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(
            &text,
            &path.display().to_string(),
            base,
            endpoint.or_else(|| std::env::var("FEDRA_COORDINATOR").ok()),
        )
    }

    /// # Errors
    /// As [`Self::load`].
    pub fn parse(
        text: &str,
        origin: &str,
        base_dir: PathBuf,
        endpoint: Option<String>,
    ) -> Result<Self, ClientConfigError> {
        let raw: RawClientConfig = toml::from_str(text).map_err(|e| ClientConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        if raw.version != CLIENT_CONFIG_VERSION {
            return Err(ClientConfigError::Invalid {
                key: "version",
                message: format!("{} is not supported (expected {CLIENT_CONFIG_VERSION})", raw.version),
            });
        }
        valid_id("client_id", &raw.client_id)?;
        valid_id("region", &raw.region)?;
        let endpoint = endpoint.or(raw.coordinator).unwrap_or_else(|| "http://127.0.0.1:7070".into());
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ClientConfigError::Invalid {
                key: "coordinator",
                message: format!("{endpoint:?} must start with http:// or https://"),
            });
        }
        let backoff = raw.backoff.unwrap_or(RawBackoff { initial_ms: None, max_ms: None });
        let initial = Duration::from_millis(backoff.initial_ms.unwrap_or(200));
        let max = Duration::from_millis(backoff.max_ms.unwrap_or(10_000));
        if initial.is_zero() || max < initial {
            return Err(ClientConfigError::Invalid {
                key: "backoff",
                message: format!("need 0 < initial_ms <= max_ms, got {initial:?} and {max:?}"),
            });
        }
        let devices = if raw.devices.is_empty() { vec!["cpu".to_string()] } else { raw.devices };
        Ok(Self {
            settings: SidecarSettings {
                endpoint,
                client_id: raw.client_id,
                region: raw.region,
                devices,
                backoff_initial: initial,
                backoff_max: max,
            },
            dataset: raw.dataset,
            base_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
version = 1
client_id = "eu-1"
region = "eu"
coordinator = "http://127.0.0.1:7070"

[dataset]
kind = "synthetic"
dim = 4
classes = 3
samples = 50
seed = 1
"#;

    #[test]
    fn shipped_example_is_valid() {
        let c =
            ClientConfig::parse(include_str!("../fedra-client.example.toml"), "example", PathBuf::new(), None).unwrap();
        assert_eq!(c.dataset.load("eu-1", Path::new(".")).unwrap().len(), 500);
    }

    #[test]
    fn parses_and_validates() {
        let c = ClientConfig::parse(CFG, "c.toml", PathBuf::new(), None).unwrap();
        assert_eq!(c.settings.client_id, "eu-1");
        assert_eq!(c.dataset.load("eu-1", Path::new(".")).unwrap().len(), 50);
        let c = ClientConfig::parse(CFG, "c.toml", PathBuf::new(), Some("http://10.0.0.1:1".into())).unwrap();
        assert_eq!(c.settings.endpoint, "http://10.0.0.1:1");
        let e =
            ClientConfig::parse(&CFG.replace("region = \"eu\"", "region = \"e u\""), "c.toml", PathBuf::new(), None)
                .unwrap_err();
        assert!(e.to_string().starts_with("region:"));
        let e = ClientConfig::parse(&CFG.replace("seed = 1", "seed = 1\nsede = 2"), "c.toml", PathBuf::new(), None)
            .unwrap_err();
        assert!(e.to_string().contains("sede"), "{e}");
    }
}
