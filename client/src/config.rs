//! Sidecar configuration: one TOML file (plus `FEDRA_COORDINATOR` / flags for the
//! endpoint), parsed strictly and validated once. Environment variables are read here only.
//!
//! The `[dataset]` table ([`DatasetSource`]) is checked in two steps: parsing rejects unknown
//! keys and values that do not fit together (naming the key, e.g. `dataset.alpha`), so a bad
//! config exits before anything is read; [`DatasetSource::load`] then reads the files, whose
//! errors name the file and line or row. Nothing is downloaded: `digits` is embedded.

use crate::data::csv::{CsvError, CsvSchema, LabelColumn, load_csv_with};
use crate::data::digits::load_digits;
use crate::data::npy::{NpyError, NpySchema, load_npy};
use crate::data::partition::{Partition, partition};
use crate::data::split::{MAX_HOLDOUT_FRACTION, seed_from_name};
use crate::data::synthetic::{BlobSpec, try_gaussian_blobs};
use crate::data::{Dataset, LocalData};
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
    Npy(#[from] NpyError),
    #[error("dataset: {0}")]
    Data(#[from] crate::data::DataError),
    #[error("tls: {0}")]
    Tls(#[from] fedra_pki::PkiError),
}

/// Where the sidecar's local training data comes from — the validated `[dataset]` table —
/// and how much of it to hold out for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSource {
    /// A CSV file checked against `schema` (see [`crate::data::csv`]); a relative `path` is
    /// resolved against the config file's directory.
    Csv { path: PathBuf, schema: CsvSchema, holdout: HoldoutSpec },
    /// A pair of NumPy `.npy` files (see [`crate::data::npy`]); relative paths as for CSV.
    Npy { features_path: PathBuf, labels_path: PathBuf, schema: NpySchema, holdout: HoldoutSpec },
    /// Seeded Gaussian blobs named after the client (simulation and demos).
    Synthetic { spec: BlobSpec, holdout: HoldoutSpec },
    /// Part `index` of the embedded 8x8 digits (1797 x 64, 10 classes, features in [0, 1];
    /// see [`crate::data::digits`]) split across `clients` clients by `partition` with
    /// `seed`, which every client of one federation must share.
    Digits { clients: usize, index: usize, partition: Partition, seed: u64, holdout: HoldoutSpec },
}

/// The held-out part of a client's data (see [`Dataset::split_holdout`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HoldoutSpec {
    /// Share of rows held out, in `[0, 0.9]`; 0 holds out nothing.
    pub fraction: f64,
    /// Shuffle seed; `None` derives it from the client id ([`seed_from_name`]), so each
    /// client holds out its own rows and keeps them across restarts.
    pub seed: Option<u64>,
}

impl DatasetSource {
    /// Loads the dataset and carves off the configured holdout. `name` is the client id: it
    /// names synthetic datasets and seeds the default holdout. Relative paths are resolved
    /// against `base` (the config file's directory).
    ///
    /// # Errors
    /// The loader's error, naming the file and line or row; a [`crate::data::DataError`]
    /// when the data cannot be generated, partitioned or split.
    pub fn load(&self, name: &str, base: &Path) -> Result<LocalData, ClientConfigError> {
        let (dataset, holdout): (Dataset, &HoldoutSpec) = match self {
            DatasetSource::Csv { path, schema, holdout } => (load_csv_with(&base.join(path), schema)?, holdout),
            DatasetSource::Npy { features_path, labels_path, schema, holdout } => {
                (load_npy(&base.join(features_path), &base.join(labels_path), schema)?, holdout)
            }
            DatasetSource::Synthetic { spec, holdout } => (try_gaussian_blobs(name, spec)?, holdout),
            DatasetSource::Digits { clients, index, partition: scheme, seed, holdout } => {
                if index >= clients {
                    return Err(invalid("dataset.index", format!("{index} is not below clients = {clients}")));
                }
                let mut parts = partition(&load_digits()?, *clients, *scheme, *seed)?;
                (parts.swap_remove(*index), holdout)
            }
        };
        let seed = holdout.seed.unwrap_or_else(|| seed_from_name(name));
        let (train, holdout) = dataset.split_holdout(holdout.fraction, seed)?;
        Ok(LocalData { train, holdout })
    }
}

// ---- The raw `[dataset]` table. ----
//
// Parsed in two passes so that errors keep their position: the first pass (with the rest of
// the file) reads only `kind`; the second deserializes the whole file again into the plain
// struct of that kind, whose errors (unknown key, wrong type) point at the offending line.
// (A serde internally tagged enum would buffer the table and lose the key and line.)

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum DatasetKind {
    Csv,
    Npy,
    Synthetic,
    Digits,
}

/// First pass: only `kind`; other keys are left to the second pass.
#[derive(Debug, Clone, Copy, Deserialize)]
struct RawDatasetKind {
    kind: DatasetKind,
}

/// Second pass: the file seen as just its `[dataset]` table.
#[derive(Debug, Deserialize)]
struct DatasetDoc<T> {
    dataset: T,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCsv {
    #[serde(rename = "kind")]
    _kind: serde::de::IgnoredAny,
    path: PathBuf,
    classes: usize,
    #[serde(default)]
    header: bool,
    #[serde(default)]
    label_column: LabelColumn,
    features: Option<usize>,
    #[serde(default)]
    holdout_fraction: f64,
    holdout_seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNpy {
    #[serde(rename = "kind")]
    _kind: serde::de::IgnoredAny,
    features_path: PathBuf,
    labels_path: PathBuf,
    classes: usize,
    features: Option<usize>,
    #[serde(default)]
    holdout_fraction: f64,
    holdout_seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSynthetic {
    #[serde(rename = "kind")]
    _kind: serde::de::IgnoredAny,
    dim: usize,
    classes: usize,
    samples: usize,
    seed: u64,
    #[serde(default)]
    task_seed: u64,
    #[serde(default)]
    client_shift: f32,
    #[serde(default)]
    holdout_fraction: f64,
    holdout_seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDigits {
    #[serde(rename = "kind")]
    _kind: serde::de::IgnoredAny,
    clients: usize,
    index: usize,
    #[serde(default)]
    partition: PartitionKind,
    alpha: Option<f64>,
    shards_per_client: Option<usize>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    holdout_fraction: f64,
    holdout_seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum PartitionKind {
    #[default]
    Iid,
    Dirichlet,
    Shards,
}

/// `label_column` is an integer (0-based index) or a string (header name).
impl<'de> Deserialize<'de> for LabelColumn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = LabelColumn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a 0-based column index or a header column name")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<LabelColumn, E> {
                usize::try_from(v)
                    .map(LabelColumn::Index)
                    .map_err(|_| E::custom(format!("column index {v} is too large")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<LabelColumn, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("label_column {v} must be a 0-based index (not negative)")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LabelColumn, E> {
                if v.is_empty() {
                    return Err(E::custom("label_column must not be an empty name"));
                }
                Ok(LabelColumn::Name(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ClientConfigError {
    ClientConfigError::Invalid { key, message: message.into() }
}

fn positive(key: &'static str, v: usize) -> Result<(), ClientConfigError> {
    if v == 0 { Err(invalid(key, "must be at least 1")) } else { Ok(()) }
}

fn holdout(fraction: f64, seed: Option<u64>) -> Result<HoldoutSpec, ClientConfigError> {
    if !(0.0..=MAX_HOLDOUT_FRACTION).contains(&fraction) {
        return Err(invalid("dataset.holdout_fraction", format!("{fraction} is not in [0, {MAX_HOLDOUT_FRACTION}]")));
    }
    Ok(HoldoutSpec { fraction, seed })
}

/// Second pass over `text` for a `[dataset]` of `kind`, then the checks serde cannot make:
/// ranges and keys that only make sense together, each error naming its key.
fn parse_dataset(text: &str, origin: &str, kind: DatasetKind) -> Result<DatasetSource, ClientConfigError> {
    fn table<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T, ClientConfigError> {
        toml::from_str::<DatasetDoc<T>>(text).map(|doc| doc.dataset).map_err(|e| parse_error(origin, &e))
    }
    Ok(match kind {
        DatasetKind::Csv => {
            let raw: RawCsv = table(text, origin)?;
            positive("dataset.classes", raw.classes)?;
            raw.features.map_or(Ok(()), |f| positive("dataset.features", f))?;
            if let (LabelColumn::Name(name), false) = (&raw.label_column, raw.header) {
                return Err(invalid(
                    "dataset.label_column",
                    format!("{name:?} is a column name, which needs header = true"),
                ));
            }
            DatasetSource::Csv {
                path: raw.path,
                schema: CsvSchema {
                    classes: raw.classes,
                    header: raw.header,
                    label_column: raw.label_column,
                    features: raw.features,
                },
                holdout: holdout(raw.holdout_fraction, raw.holdout_seed)?,
            }
        }
        DatasetKind::Npy => {
            let raw: RawNpy = table(text, origin)?;
            positive("dataset.classes", raw.classes)?;
            raw.features.map_or(Ok(()), |f| positive("dataset.features", f))?;
            DatasetSource::Npy {
                features_path: raw.features_path,
                labels_path: raw.labels_path,
                schema: NpySchema { classes: raw.classes, features: raw.features },
                holdout: holdout(raw.holdout_fraction, raw.holdout_seed)?,
            }
        }
        DatasetKind::Synthetic => {
            let raw: RawSynthetic = table(text, origin)?;
            let mut spec = BlobSpec::new(raw.dim, raw.classes, raw.samples, raw.seed);
            spec.task_seed = raw.task_seed;
            spec.client_shift = raw.client_shift;
            DatasetSource::Synthetic { spec, holdout: holdout(raw.holdout_fraction, raw.holdout_seed)? }
        }
        DatasetKind::Digits => {
            let raw: RawDigits = table(text, origin)?;
            positive("dataset.clients", raw.clients)?;
            if raw.index >= raw.clients {
                return Err(invalid("dataset.index", format!("{} is not below clients = {}", raw.index, raw.clients)));
            }
            DatasetSource::Digits {
                clients: raw.clients,
                index: raw.index,
                partition: partition_scheme(raw.partition, raw.alpha, raw.shards_per_client)?,
                seed: raw.seed,
                holdout: holdout(raw.holdout_fraction, raw.holdout_seed)?,
            }
        }
    })
}

/// `partition` with its own parameter: `alpha` only with (and required by) `dirichlet`,
/// `shards_per_client` only with (and required by) `shards`.
fn partition_scheme(
    kind: PartitionKind,
    alpha: Option<f64>,
    shards_per_client: Option<usize>,
) -> Result<Partition, ClientConfigError> {
    let only = |key: &'static str, wanted: &str| {
        invalid(key, format!("only applies to partition = \"{wanted}\" (partition is {kind:?})"))
    };
    match (kind, alpha, shards_per_client) {
        (PartitionKind::Dirichlet, None, _) => {
            Err(invalid("dataset.alpha", "required with partition = \"dirichlet\" (e.g. 0.5)"))
        }
        (PartitionKind::Dirichlet, Some(a), _) if !(a.is_finite() && a > 0.0) => {
            Err(invalid("dataset.alpha", format!("{a} must be a positive number")))
        }
        (PartitionKind::Dirichlet, Some(_), Some(_)) => Err(only("dataset.shards_per_client", "shards")),
        (PartitionKind::Dirichlet, Some(alpha), None) => Ok(Partition::Dirichlet { alpha }),
        (PartitionKind::Shards, _, None) => {
            Err(invalid("dataset.shards_per_client", "required with partition = \"shards\" (e.g. 2)"))
        }
        (PartitionKind::Shards, _, Some(0)) => Err(invalid("dataset.shards_per_client", "must be at least 1")),
        (PartitionKind::Shards, Some(_), Some(_)) => Err(only("dataset.alpha", "dirichlet")),
        (PartitionKind::Shards, None, Some(per_client)) => Ok(Partition::Shards { per_client }),
        (PartitionKind::Iid, Some(_), _) => Err(only("dataset.alpha", "dirichlet")),
        (PartitionKind::Iid, None, Some(_)) => Err(only("dataset.shards_per_client", "shards")),
        (PartitionKind::Iid, None, None) => Ok(Partition::Iid),
    }
}

fn parse_error(origin: &str, e: &toml::de::Error) -> ClientConfigError {
    ClientConfigError::Parse { path: origin.to_string(), message: e.to_string().trim().replace('\n', " ") }
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
    dataset: RawDatasetKind,
    backoff: Option<RawBackoff>,
    /// Identity directory (`ca.pem`, `cert.pem`, `key.pem`) from `fedra pki issue --role
    /// client`; relative to the config file.
    tls_dir: Option<PathBuf>,
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

/// The coordinators a sidecar may connect to: one URL, or several separated by commas (the
/// coordinators sharing one store, of which the leader answers), tried in order.
fn parse_endpoints(list: &str) -> Result<Vec<String>, ClientConfigError> {
    let endpoints: Vec<String> = list.split(',').map(|e| e.trim().to_string()).collect();
    for e in &endpoints {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(ClientConfigError::Invalid {
                key: "coordinator",
                message: format!("{e:?} must start with http:// or https:// (several are separated by commas)"),
            });
        }
    }
    Ok(endpoints)
}

impl ClientConfig {
    /// Reads and validates a config file; `endpoint` (flag) overrides `FEDRA_COORDINATOR`,
    /// which overrides the file's `coordinator`.
    ///
    /// # Errors
    /// Unreadable file, unknown keys (with line/column) or invalid values (by key).
    /// `insecure` (the `--insecure` flag) connects in plain text without a certificate;
    /// otherwise `tls_dir` (or `FEDRA_TLS_DIR`) is required and loaded here.
    pub fn load(path: &Path, endpoint: Option<String>, insecure: bool) -> Result<Self, ClientConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ClientConfigError::Read { path: path.display().to_string(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(
            &text,
            &path.display().to_string(),
            base,
            endpoint.or_else(|| std::env::var("FEDRA_COORDINATOR").ok()),
            std::env::var("FEDRA_TLS_DIR").ok().map(PathBuf::from),
            insecure,
        )
    }

    /// # Errors
    /// As [`Self::load`].
    pub fn parse(
        text: &str,
        origin: &str,
        base_dir: PathBuf,
        endpoint: Option<String>,
        tls_dir: Option<PathBuf>,
        insecure: bool,
    ) -> Result<Self, ClientConfigError> {
        let raw: RawClientConfig = toml::from_str(text).map_err(|e| parse_error(origin, &e))?;
        if raw.version != CLIENT_CONFIG_VERSION {
            return Err(ClientConfigError::Invalid {
                key: "version",
                message: format!("{} is not supported (expected {CLIENT_CONFIG_VERSION})", raw.version),
            });
        }
        valid_id("client_id", &raw.client_id)?;
        valid_id("region", &raw.region)?;
        let endpoints =
            parse_endpoints(&endpoint.or(raw.coordinator).unwrap_or_else(|| "http://127.0.0.1:7070".into()))?;
        let backoff = raw.backoff.unwrap_or(RawBackoff { initial_ms: None, max_ms: None });
        let initial = Duration::from_millis(backoff.initial_ms.unwrap_or(200));
        let max = Duration::from_millis(backoff.max_ms.unwrap_or(10_000));
        if initial.is_zero() || max < initial {
            return Err(ClientConfigError::Invalid {
                key: "backoff",
                message: format!("need 0 < initial_ms <= max_ms, got {initial:?} and {max:?}"),
            });
        }
        let tls = if insecure {
            fedra_pki::ClientTls::Insecure
        } else {
            let Some(dir) = tls_dir.or(raw.tls_dir) else {
                return Err(ClientConfigError::Invalid {
                    key: "tls_dir",
                    message: "is required: the coordinator speaks mutual TLS (create an identity with `fedra pki issue --role client`), or pass --insecure".into(),
                });
            };
            fedra_pki::ClientTls::load(&fedra_pki::IdentityDir::new(base_dir.join(dir)))?
        };
        let dataset = parse_dataset(text, origin, raw.dataset.kind)?;
        let devices = if raw.devices.is_empty() { vec!["cpu".to_string()] } else { raw.devices };
        Ok(Self {
            settings: SidecarSettings {
                endpoints,
                tls,
                client_id: raw.client_id,
                region: raw.region,
                devices,
                backoff_initial: initial,
                backoff_max: max,
            },
            dataset,
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
        let c = ClientConfig::parse(
            include_str!("../fedra-client.example.toml"),
            "example",
            PathBuf::new(),
            None,
            None,
            true,
        )
        .unwrap();
        let data = c.dataset.load("eu-1", Path::new(".")).unwrap();
        assert_eq!(data.train.len(), 400);
        assert_eq!(data.holdout.map(|h| h.len()), Some(100));
    }

    /// Parses `text` as `c.toml` for an `--insecure` sidecar (no identity directory needed).
    fn parse_insecure(text: &str) -> Result<ClientConfig, ClientConfigError> {
        ClientConfig::parse(text, "c.toml", PathBuf::new(), None, None, true)
    }

    #[test]
    fn parses_and_validates() {
        let c = parse_insecure(CFG).unwrap();
        assert_eq!(c.settings.client_id, "eu-1");
        assert_eq!(c.dataset.load("eu-1", Path::new(".")).unwrap().train.len(), 50);
        let c =
            ClientConfig::parse(CFG, "c.toml", PathBuf::new(), Some("http://10.0.0.1:1".into()), None, true).unwrap();
        assert_eq!(c.settings.endpoints, ["http://10.0.0.1:1"]);
        let e = parse_insecure(&CFG.replace("region = \"eu\"", "region = \"e u\"")).unwrap_err();
        assert!(e.to_string().starts_with("region:"));
        let e = parse_insecure(&CFG.replace("seed = 1", "seed = 1\nsede = 2")).unwrap_err();
        assert!(e.to_string().contains("sede"), "{e}");
    }

    /// The `[dataset]` table of `CFG` replaced by `dataset`.
    fn with_dataset(dataset: &str) -> Result<ClientConfig, ClientConfigError> {
        let head = &CFG[..CFG.find("[dataset]").unwrap()];
        parse_insecure(&format!("{head}[dataset]\n{dataset}"))
    }

    fn load(dataset: &str, base: &Path) -> Result<LocalData, ClientConfigError> {
        with_dataset(dataset)?.dataset.load("eu-1", base)
    }

    #[test]
    fn csv_schema_keys_and_holdout() {
        let dir = tempfile::tempdir().unwrap();
        let rows: String = (0..20).map(|i| format!("{},{i},{}\n", i % 2, i * 2)).collect();
        std::fs::write(dir.path().join("eu.csv"), format!("y,a,b\n{rows}")).unwrap();
        let csv = r#"kind = "csv"
path = "eu.csv"
classes = 2
header = true
label_column = "y"
features = 2
holdout_fraction = 0.25
"#;
        let data = load(csv, dir.path()).unwrap();
        let holdout = data.holdout.unwrap();
        assert_eq!((data.train.len(), holdout.len(), data.train.dim), (15, 5, 2));
        assert_eq!(holdout.name, "eu.holdout");
        // Label by index, and the declared width is enforced naming file and line.
        let by_index = csv.replace("label_column = \"y\"", "label_column = 0");
        assert_eq!(load(&by_index, dir.path()).unwrap().train.len(), 15);
        let e = load(&csv.replace("features = 2", "features = 3"), dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("dataset: ") && e.contains("eu.csv:1: header has 3 columns"), "{e}");

        let e = with_dataset(&csv.replace("header = true", "header = false")).unwrap_err().to_string();
        assert!(e.starts_with("dataset.label_column: \"y\" is a column name"), "{e}");
        let e = with_dataset(&csv.replace("label_column = \"y\"", "label_column = -1")).unwrap_err().to_string();
        assert!(e.contains("not negative"), "{e}");
        let e = with_dataset(&csv.replace("features = 2", "features = 0")).unwrap_err().to_string();
        assert!(e.starts_with("dataset.features: must be at least 1"), "{e}");
        let e = with_dataset(&csv.replace("0.25", "0.95")).unwrap_err().to_string();
        assert!(e.starts_with("dataset.holdout_fraction: 0.95 is not in [0, 0.9]"), "{e}");
        let e = with_dataset(&csv.replace("classes = 2", "classes = 2\nlabel = \"y\"")).unwrap_err().to_string();
        assert!(e.contains("unknown field `label`"), "{e}");
        // Type errors point at the key's line (line 14 of the whole file).
        let e = with_dataset(&csv.replace("0.25", "\"0.25\"")).unwrap_err().to_string();
        assert!(
            e.contains("line 14") && e.contains("holdout_fraction = \"0.25\"") && e.contains("expected f64"),
            "{e}"
        );
    }

    #[test]
    fn default_holdout_seed_follows_the_client_id() {
        let blobs = "kind = \"synthetic\"\ndim = 2\nclasses = 2\nsamples = 40\nseed = 3\nholdout_fraction = 0.5\n";
        let holdout = |extra: &str, client: &str| {
            let source = with_dataset(&format!("{blobs}{extra}")).unwrap().dataset;
            source.load(client, Path::new(".")).unwrap().holdout.unwrap().features
        };
        assert_eq!(holdout("", "eu-1"), holdout("", "eu-1"), "stable across loads (restarts)");
        assert_ne!(holdout("", "eu-1"), holdout("", "eu-2"), "each client its own rows");
        let derived = format!("holdout_seed = {}\n", seed_from_name("eu-2"));
        assert_eq!(holdout(&derived, "eu-1"), holdout("", "eu-2"), "the default is the client id's hash");
        assert_eq!(holdout("holdout_seed = 9\n", "eu-1"), holdout("holdout_seed = 9\n", "eu-2"));
    }

    #[test]
    fn npy_pair_loads_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let x: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
        crate::data::npy::tests::write_npy(&dir.path().join("x.npy"), "<f4", false, &[4, 3], &x);
        crate::data::npy::tests::write_npy(&dir.path().join("y.npy"), "|u1", false, &[4], &[0, 1, 2, 0]);
        let npy = "kind = \"npy\"\nfeatures_path = \"x.npy\"\nlabels_path = \"y.npy\"\nclasses = 3\nfeatures = 3\n";
        let data = load(npy, dir.path()).unwrap();
        assert_eq!((data.train.len(), data.train.dim), (4, 3));
        assert!(data.holdout.is_none());
        let e = load(&npy.replace("classes = 3", "classes = 2"), dir.path()).unwrap_err().to_string();
        assert!(e.starts_with("dataset: ") && e.ends_with("y.npy: row 2: label 2 is not in 0..2"), "{e}");
        let e = load(&npy.replace("features = 3", "features = 4"), dir.path()).unwrap_err().to_string();
        assert!(e.ends_with("x.npy: 3 features per row, the schema declares 4"), "{e}");
    }

    #[test]
    fn digits_parts_are_disjoint_across_clients() {
        let digits =
            |index: usize, extra: &str| format!("kind = \"digits\"\nclients = 4\nindex = {index}\nseed = 11\n{extra}");
        for extra in ["", "partition = \"dirichlet\"\nalpha = 0.3\n", "partition = \"shards\"\nshards_per_client = 2\n"]
        {
            let parts: Vec<Dataset> = (0..4).map(|i| load(&digits(i, extra), Path::new(".")).unwrap().train).collect();
            assert_eq!(parts.iter().map(Dataset::len).sum::<usize>(), 1797, "{extra}");
            assert!(parts.iter().all(|p| p.dim == 64 && p.classes == 10 && !p.is_empty()));
            assert_eq!(parts[3].name, "digits.part3");
        }
        let data = load(&digits(1, "holdout_fraction = 0.1\n"), Path::new(".")).unwrap();
        assert_eq!(data.train.len() + data.holdout.unwrap().len(), 449);

        let err = |index: usize, extra: &str| with_dataset(&digits(index, extra)).unwrap_err().to_string();
        assert!(err(4, "").starts_with("dataset.index: 4 is not below clients = 4"));
        assert!(err(0, "partition = \"dirichlet\"\n").starts_with("dataset.alpha: required"));
        assert!(err(0, "partition = \"dirichlet\"\nalpha = -1.0\n").starts_with("dataset.alpha: -1 must be"));
        assert!(err(0, "alpha = 0.5\n").starts_with("dataset.alpha: only applies to partition = \"dirichlet\""));
        assert!(err(0, "partition = \"shards\"\n").starts_with("dataset.shards_per_client: required"));
        assert!(
            err(0, "partition = \"shards\"\nshards_per_client = 0\n").starts_with("dataset.shards_per_client: must")
        );
        assert!(err(0, "shards_per_client = 2\n").starts_with("dataset.shards_per_client: only applies"));
        assert!(err(0, "partition = \"pathological\"\n").contains("pathological"));
        assert!(err(0, "alfa = 1.0\n").contains("unknown field `alfa`"));
        let e = with_dataset("kind = \"mnist\"\n").unwrap_err().to_string();
        assert!(e.contains("mnist"), "{e}");
        // More shards than samples fails at load, naming the problem.
        let e = load(&digits(0, "partition = \"shards\"\nshards_per_client = 1000\n"), Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("dataset: dataset digits: cannot partition: 1797 samples cannot make 4 clients x 1000"),
            "{e}"
        );
    }
}
