//! Coordinator configuration: a TOML file, then `FEDRA_*` environment variables, then
//! command-line flags, each overriding the previous, validated once into [`Config`].
//! Environment variables are read here and nowhere else.

use crate::hierarchy::Tier;
use crate::round::EngineSettings;
use crate::store::StoreLocation;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod artifacts;
pub mod cost;
pub mod topology;
pub mod web;

pub use artifacts::{ArtifactsConfig, RawArtifacts};

/// The only config format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// Configuration is invalid; the message names the file, key or variable and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config version {0} is not supported (this build reads version {CONFIG_VERSION})")]
    Version(u32),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// Config as written in the file: every field optional, unknown keys rejected.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub version: Option<u32>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Where the store lives: `sqlite://PATH` (default: `<data_dir>/fedra.db`) or a
    /// PostgreSQL URL (`postgres://USER@HOST[:PORT]/DATABASE`).
    pub store_url: Option<String>,
    /// The directory checkpoints are published into, laid out by region (default:
    /// `<data_dir>/artifacts`), unless `[artifacts]` names other stores.
    pub artifact_dir: Option<PathBuf>,
    /// `[artifacts]`: a default store and one per region, by URL (see [`artifacts`]).
    pub artifacts: Option<RawArtifacts>,
    pub chunk_bytes: Option<u64>,
    pub max_concurrent_uploads: Option<u64>,
    /// Bytes all staged uploads may hold together (see `aggregation::StagingPool`).
    pub staging_budget_bytes: Option<u64>,
    /// Model downloads streamed at once; the others wait their turn.
    pub max_concurrent_downloads: Option<u64>,
    pub heartbeat_interval_seconds: Option<f64>,
    pub client_timeout_seconds: Option<f64>,
    /// Runs whose rounds make progress at once; the others wait in the queue.
    pub max_active_runs: Option<u64>,
    /// Tasks (of different runs) one client may hold at once.
    pub max_concurrent_tasks: Option<u64>,
    /// Largest model a run may train, in parameters (bounds coordinator memory).
    pub max_model_parameters: Option<u64>,
    /// `[privacy]`: budgets per scope and the noise lattice's slack.
    pub privacy: Option<RawPrivacy>,
    /// `[tls]`: the coordinator's identity directory and the CA's revocation list.
    pub tls: Option<RawTls>,
    /// The policy set in force (`policies/`): residency, privacy budgets, approvals, roles.
    /// With it, privacy budgets come from the policy set only. Needs `location`.
    pub policy_dir: Option<PathBuf>,
    /// The region this coordinator runs in (where it aggregates raw updates); one of the
    /// policy set's regions. Required for a regional aggregator.
    pub location: Option<String>,
    /// `standalone` (default), `global` (its participants are regional aggregators) or
    /// `regional` (next to one region's clients, under a global coordinator: `[upstream]`).
    pub role: Option<String>,
    /// `[upstream]`: a regional aggregator's global coordinator.
    pub upstream: Option<topology::RawUpstream>,
    /// The Ed25519 key that signs checkpoint manifests (`checkpoint-signing.key`). Default:
    /// the one `fedra pki issue --role coordinator` put in the identity directory, else one
    /// created in `data_dir` on first start (its public half beside it).
    pub signing_key: Option<PathBuf>,
    /// Carbon intensity per region, a time series the operator keeps up to date (see
    /// `crate::carbon`): plans with `[schedule] prefer_low_carbon` wait for its clean
    /// windows, and every round's carbon is estimated with it.
    pub carbon_file: Option<PathBuf>,
    /// Watts one training client draws, for the energy estimate of each round (default 150).
    pub client_watts: Option<f64>,
    /// `[cost]`: prices for each round's measured cost (see [`cost`]); unpriced without it.
    pub cost: Option<cost::RawCost>,
    /// How long the coordinator lease lasts without renewal (default 10 s): with several
    /// coordinators on one store, a standby takes over within this bound of the leader's
    /// death (`crate::leadership`).
    pub lease_ttl_seconds: Option<f64>,
    /// This coordinator's name in the lease (default `<hostname>-<pid>-<random>`).
    pub node_name: Option<String>,
    /// `[web]`: the read-only dashboard (see [`web`]); off without `listen`.
    pub web: Option<web::RawWeb>,
    /// The ops port (`/metrics`, `/healthz`, `/readyz`, no auth; any address).
    pub metrics_listen: Option<String>,
    /// Plain-text gRPC without identities. Only from the `--insecure` flag, never from a
    /// file or the environment, and refused unless `listen` is a loopback address.
    #[serde(skip)]
    pub insecure: bool,
    /// Object-store provider settings (`AWS_*`, `GOOGLE_*`, `AZURE_*`), from the environment
    /// only: credentials never sit in a config file.
    #[serde(skip)]
    pub provider_env: Vec<(String, String)>,
}

/// The `[tls]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Identity directory (`ca.pem`, `cert.pem`, `key.pem`), as `fedra pki issue --role
    /// coordinator` writes it.
    pub dir: Option<PathBuf>,
    /// The CA's `crl.pem`; re-read whenever it changes, so revocations apply without a restart.
    pub crl: Option<PathBuf>,
    /// Seconds a new connection has to complete its TLS handshake (default 10).
    pub handshake_timeout_seconds: Option<f64>,
    /// Open connections one certified identity may hold at once (default 8, 1..=1024). Each
    /// connection may make the coordinator buffer up to its per-connection bound (SECURITY.md),
    /// so this caps what one certificate can pin. A sidecar needs one (two while it
    /// reconnects), a CLI command one.
    pub max_connections_per_identity: Option<u64>,
}

/// How the coordinator's endpoint is secured.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// Mutual TLS 1.3: every caller presents a certificate of the deployment's CA.
    Mutual {
        identity: fedra_pki::IdentityDir,
        crl: Option<PathBuf>,
        handshake_timeout: Duration,
        max_connections_per_identity: usize,
    },
    /// `--insecure`: plain text on loopback, no identities.
    Insecure,
}

/// The `[privacy]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrivacy {
    /// g·√d ≤ lattice_slack·C (default 1e-3): how much discretising the noise may add to
    /// the sensitivity.
    pub lattice_slack: Option<f64>,
    #[serde(default)]
    pub budgets: Vec<crate::privacy::budget::RawBudgetRule>,
}

impl RawConfig {
    /// Parses a TOML file.
    ///
    /// # Errors
    /// Unreadable file, bad TOML or unknown keys (with line and column).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// # Errors
    /// Bad TOML or unknown keys.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })
    }

    /// Overrides fields from `FEDRA_*` environment variables.
    ///
    /// # Errors
    /// A variable whose value does not parse, naming the variable.
    pub fn merge_env(mut self) -> Result<Self, ConfigError> {
        fn var<T: std::str::FromStr>(name: &str) -> Result<Option<T>, ConfigError> {
            match std::env::var(name) {
                Ok(v) => v.parse().map(Some).map_err(|_| ConfigError::Invalid {
                    key: name.to_string(),
                    message: format!("cannot parse {v:?}"),
                }),
                Err(_) => Ok(None),
            }
        }
        self.listen = var("FEDRA_LISTEN")?.or(self.listen);
        self.data_dir = var("FEDRA_DATA_DIR")?.or(self.data_dir);
        self.store_url = var("FEDRA_STORE_URL")?.or(self.store_url);
        self.artifact_dir = var("FEDRA_ARTIFACT_DIR")?.or(self.artifact_dir);
        if let Some(default) = var::<String>("FEDRA_ARTIFACT_STORE_DEFAULT")? {
            self.artifacts.get_or_insert_with(RawArtifacts::default).default = Some(default);
        }
        self.provider_env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| crate::checkpoint::artifacts::OPTION_PREFIXES.iter().any(|p| k.starts_with(p)))
            .collect();
        self.signing_key = var("FEDRA_SIGNING_KEY")?.or(self.signing_key);
        self.carbon_file = var("FEDRA_CARBON_FILE")?.or(self.carbon_file);
        self.client_watts = var("FEDRA_CLIENT_WATTS")?.or(self.client_watts);
        self.lease_ttl_seconds = var("FEDRA_LEASE_TTL_SECONDS")?.or(self.lease_ttl_seconds);
        self.node_name = var("FEDRA_NODE_NAME")?.or(self.node_name);
        self.metrics_listen = var("FEDRA_METRICS_LISTEN")?.or(self.metrics_listen);
        self.chunk_bytes = var("FEDRA_CHUNK_BYTES")?.or(self.chunk_bytes);
        self.max_model_parameters = var("FEDRA_MAX_MODEL_PARAMETERS")?.or(self.max_model_parameters);
        self.max_concurrent_uploads = var("FEDRA_MAX_CONCURRENT_UPLOADS")?.or(self.max_concurrent_uploads);
        self.staging_budget_bytes = var("FEDRA_STAGING_BUDGET_BYTES")?.or(self.staging_budget_bytes);
        self.max_concurrent_downloads = var("FEDRA_MAX_CONCURRENT_DOWNLOADS")?.or(self.max_concurrent_downloads);
        self.heartbeat_interval_seconds = var("FEDRA_HEARTBEAT_INTERVAL_SECONDS")?.or(self.heartbeat_interval_seconds);
        self.client_timeout_seconds = var("FEDRA_CLIENT_TIMEOUT_SECONDS")?.or(self.client_timeout_seconds);
        self.policy_dir = var("FEDRA_POLICY_DIR")?.or(self.policy_dir);
        self.location = var("FEDRA_LOCATION")?.or(self.location);
        self.role = var("FEDRA_ROLE")?.or(self.role);
        let tls_dir: Option<PathBuf> = var("FEDRA_TLS_DIR")?;
        let tls_crl: Option<PathBuf> = var("FEDRA_TLS_CRL")?;
        let per_identity: Option<u64> = var("FEDRA_TLS_MAX_CONNECTIONS_PER_IDENTITY")?;
        if tls_dir.is_some() || tls_crl.is_some() || per_identity.is_some() {
            let mut tls = self.tls.take().unwrap_or_default();
            tls.dir = tls_dir.or(tls.dir);
            tls.crl = tls_crl.or(tls.crl);
            tls.max_connections_per_identity = per_identity.or(tls.max_connections_per_identity);
            self.tls = Some(tls);
        }
        Ok(self)
    }

    /// Overrides fields that are set in `other`.
    pub fn merge(mut self, other: RawConfig) -> Self {
        self.version = other.version.or(self.version);
        self.listen = other.listen.or(self.listen);
        self.data_dir = other.data_dir.or(self.data_dir);
        self.store_url = other.store_url.or(self.store_url);
        self.artifact_dir = other.artifact_dir.or(self.artifact_dir);
        self.artifacts = other.artifacts.or(self.artifacts);
        if !other.provider_env.is_empty() {
            self.provider_env = other.provider_env;
        }
        self.signing_key = other.signing_key.or(self.signing_key);
        self.carbon_file = other.carbon_file.or(self.carbon_file);
        self.client_watts = other.client_watts.or(self.client_watts);
        self.cost = other.cost.or(self.cost);
        self.lease_ttl_seconds = other.lease_ttl_seconds.or(self.lease_ttl_seconds);
        self.node_name = other.node_name.or(self.node_name);
        self.metrics_listen = other.metrics_listen.or(self.metrics_listen);
        self.chunk_bytes = other.chunk_bytes.or(self.chunk_bytes);
        self.max_concurrent_uploads = other.max_concurrent_uploads.or(self.max_concurrent_uploads);
        self.staging_budget_bytes = other.staging_budget_bytes.or(self.staging_budget_bytes);
        self.max_concurrent_downloads = other.max_concurrent_downloads.or(self.max_concurrent_downloads);
        self.heartbeat_interval_seconds = other.heartbeat_interval_seconds.or(self.heartbeat_interval_seconds);
        self.client_timeout_seconds = other.client_timeout_seconds.or(self.client_timeout_seconds);
        self.max_active_runs = other.max_active_runs.or(self.max_active_runs);
        self.max_concurrent_tasks = other.max_concurrent_tasks.or(self.max_concurrent_tasks);
        self.max_model_parameters = other.max_model_parameters.or(self.max_model_parameters);
        self.privacy = other.privacy.or(self.privacy);
        self.policy_dir = other.policy_dir.or(self.policy_dir);
        self.location = other.location.or(self.location);
        self.role = other.role.or(self.role);
        self.upstream = other.upstream.or(self.upstream);
        self.web = web::merge(self.web, other.web);
        self.tls = match (self.tls, other.tls) {
            (Some(mine), Some(theirs)) => Some(RawTls {
                dir: theirs.dir.or(mine.dir),
                crl: theirs.crl.or(mine.crl),
                handshake_timeout_seconds: theirs.handshake_timeout_seconds.or(mine.handshake_timeout_seconds),
                max_connections_per_identity: theirs.max_connections_per_identity.or(mine.max_connections_per_identity),
            }),
            (mine, theirs) => theirs.or(mine),
        };
        self.insecure |= other.insecure;
        self
    }
}

/// Validated coordinator configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The store to open (`store_url`).
    pub store: StoreLocation,
    /// Where checkpoints are published (`artifact_dir`, `[artifacts]`).
    pub artifacts: ArtifactsConfig,
    pub max_concurrent_uploads: usize,
    pub staging_budget_bytes: usize,
    pub max_concurrent_downloads: usize,
    pub transport: Transport,
    /// `policy_dir` and `location`; `None`: no policy (plan regions and config budgets only).
    pub policy: Option<crate::governance::PolicyConfig>,
    /// A regional aggregator's global coordinator (`engine.tier` says which tier this is).
    pub upstream: Option<topology::UpstreamConfig>,
    /// Where the checkpoint signing key comes from.
    pub signing_key: SigningKey,
    /// This coordinator's claim to lead among those sharing the store.
    pub lease: crate::leadership::LeaseSettings,
    /// The dashboard (`[web]`); `None`: off.
    pub web: Option<web::WebConfig>,
    /// The ops port ([`fedra_telemetry::serve_ops`]), bound before the coordinator leads.
    pub metrics_listen: Option<SocketAddr>,
    pub engine: EngineSettings,
}

/// Where the checkpoint signing key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningKey {
    /// A provisioned key (`signing_key`, or the identity directory's): it must exist.
    File(PathBuf),
    /// The data directory's own key, created with its `.pub` on first start.
    DataDir { key: PathBuf, public: PathBuf },
}

impl SigningKey {
    /// Loads (or, for [`SigningKey::DataDir`], creates) the key.
    ///
    /// # Errors
    /// A missing provisioned key, or one that is not an Ed25519 PKCS#8 PEM key.
    pub fn load(&self) -> Result<fedra_pki::signing::ManifestSigner, fedra_pki::PkiError> {
        match self {
            Self::File(path) => fedra_pki::signing::ManifestSigner::load(path),
            Self::DataDir { key, public } => {
                if let Some(parent) = key.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|source| fedra_pki::PkiError::Io { path: parent.display().to_string(), source })?;
                }
                fedra_pki::signing::ManifestSigner::load_or_create(key, public)
            }
        }
    }
}

fn signing_key(explicit: Option<PathBuf>, transport: &Transport, data_dir: &Path) -> SigningKey {
    if let Some(path) = explicit {
        return SigningKey::File(path);
    }
    if let Transport::Mutual { identity, .. } = transport {
        let provisioned = identity.dir.join(fedra_pki::signing::SIGNING_KEY_FILE);
        if provisioned.exists() {
            return SigningKey::File(provisioned);
        }
    }
    SigningKey::DataDir {
        key: data_dir.join(fedra_pki::signing::SIGNING_KEY_FILE),
        public: data_dir.join(fedra_pki::signing::TRUST_FILE),
    }
}

fn seconds(key: &str, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(ConfigError::Invalid { key: key.into(), message: format!("must be in (0, 86400] seconds, got {v}") })
    }
}

impl Config {
    /// Validates a merged raw config, filling defaults.
    ///
    /// # Errors
    /// The first invalid key, by name.
    pub fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        let version = raw.version.unwrap_or(CONFIG_VERSION);
        if version != CONFIG_VERSION {
            return Err(ConfigError::Version(version));
        }
        let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:7070".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| ConfigError::Invalid {
            key: "listen".into(),
            message: format!("{listen_text:?} is not an address like 127.0.0.1:7070"),
        })?;
        let data_dir = raw.data_dir.unwrap_or_else(|| PathBuf::from("fedra-data"));
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid { key: "data_dir".into(), message: "must not be empty".into() });
        }
        let store = match raw.store_url.as_deref() {
            None => StoreLocation::default_in(&data_dir),
            Some(url) => StoreLocation::parse(url)
                .map_err(|message| ConfigError::Invalid { key: "store_url".into(), message })?,
        };
        let provider_options = crate::checkpoint::StoreOptions::from_vars(raw.provider_env);
        let artifacts = ArtifactsConfig::validate(raw.artifacts, raw.artifact_dir, &data_dir, provider_options)?;
        let chunk_bytes = raw.chunk_bytes.unwrap_or(fedra_proto::chunking::DEFAULT_CHUNK_BYTES as u64);
        let (lo, hi) = (fedra_proto::chunking::MIN_CHUNK_BYTES as u64, fedra_proto::chunking::MAX_CHUNK_BYTES as u64);
        if !(lo..=hi).contains(&chunk_bytes) || !chunk_bytes.is_multiple_of(4) {
            return Err(ConfigError::Invalid {
                key: "chunk_bytes".into(),
                message: format!("must be a multiple of 4 in {lo}..={hi}, got {chunk_bytes}"),
            });
        }
        let uploads = raw.max_concurrent_uploads.unwrap_or(8);
        if !(1..=1024).contains(&uploads) {
            return Err(ConfigError::Invalid {
                key: "max_concurrent_uploads".into(),
                message: format!("must be in 1..=1024, got {uploads}"),
            });
        }
        let staging = raw.staging_budget_bytes.unwrap_or(crate::aggregation::DEFAULT_STAGING_BUDGET_BYTES as u64);
        if !((1 << 20)..=(1 << 40)).contains(&staging) {
            return Err(ConfigError::Invalid {
                key: "staging_budget_bytes".into(),
                message: format!("must be in 1 MiB..=1 TiB, got {staging}"),
            });
        }
        let downloads = raw.max_concurrent_downloads.unwrap_or(32);
        if !(1..=4096).contains(&downloads) {
            return Err(ConfigError::Invalid {
                key: "max_concurrent_downloads".into(),
                message: format!("must be in 1..=4096, got {downloads}"),
            });
        }
        let active = raw.max_active_runs.unwrap_or(16);
        if !(1..=1024).contains(&active) {
            return Err(ConfigError::Invalid {
                key: "max_active_runs".into(),
                message: format!("must be in 1..=1024, got {active}"),
            });
        }
        let per_client = raw.max_concurrent_tasks.unwrap_or(1);
        if !(1..=64).contains(&per_client) {
            return Err(ConfigError::Invalid {
                key: "max_concurrent_tasks".into(),
                message: format!("must be in 1..=64, got {per_client}"),
            });
        }
        let max_params = raw.max_model_parameters.unwrap_or(crate::round::DEFAULT_MAX_MODEL_PARAMETERS);
        if !(1..=(1u64 << 34)).contains(&max_params) {
            return Err(ConfigError::Invalid {
                key: "max_model_parameters".into(),
                message: format!("must be in 1..=2^34, got {max_params}"),
            });
        }
        let heartbeat = seconds("heartbeat_interval_seconds", raw.heartbeat_interval_seconds, 5.0)?;
        let timeout = seconds("client_timeout_seconds", raw.client_timeout_seconds, 20.0)?;
        if timeout < heartbeat * 2 {
            return Err(ConfigError::Invalid {
                key: "client_timeout_seconds".into(),
                message: format!(
                    "must be at least twice heartbeat_interval_seconds ({:?}), got {timeout:?}",
                    heartbeat
                ),
            });
        }
        let transport = transport(raw.insecure, raw.tls, listen)?;
        let web = web::validate(raw.web, raw.insecure)?;
        let raw_privacy = raw.privacy.unwrap_or_default();
        let lattice_slack = raw_privacy.lattice_slack.unwrap_or(crate::privacy::mechanism::DEFAULT_LATTICE_SLACK);
        if !(lattice_slack > 0.0 && lattice_slack <= 0.1) {
            return Err(ConfigError::Invalid {
                key: "privacy.lattice_slack".into(),
                message: format!("must be in (0, 0.1], got {lattice_slack}"),
            });
        }
        let (tier, upstream) =
            topology::validate(raw.role.as_deref(), raw.location.as_deref(), raw.upstream, raw.insecure)?;
        // A regional aggregator names its location without necessarily having a policy set.
        let location =
            if raw.policy_dir.is_none() && matches!(tier, Tier::Regional { .. }) { None } else { raw.location };
        let mut policy = topology::policy(raw.policy_dir, location, !raw_privacy.budgets.is_empty())?;
        if let Some(p) = &mut policy {
            p.aggregate_in_region = tier.is_global();
        }
        let budgets = crate::privacy::Budgets::new(raw_privacy.budgets).map_err(|e| ConfigError::Invalid {
            key: format!("privacy.budgets[{}].{}", e.index, e.field),
            message: e.message,
        })?;
        let signing_key = signing_key(raw.signing_key, &transport, &data_dir);
        let client_watts = raw.client_watts.unwrap_or(crate::carbon::DEFAULT_CLIENT_WATTS);
        if !(client_watts > 0.0 && client_watts <= 1e6) {
            return Err(ConfigError::Invalid {
                key: "client_watts".into(),
                message: format!("must be in (0, 1e6], got {client_watts}"),
            });
        }
        let carbon = match &raw.carbon_file {
            None => None,
            Some(path) => Some(std::sync::Arc::new(
                crate::carbon::CarbonSignal::open(path)
                    .map_err(|e| ConfigError::Invalid { key: "carbon_file".into(), message: e.to_string() })?,
            )),
        };
        let lease = crate::leadership::LeaseSettings::new(raw.node_name, raw.lease_ttl_seconds)
            .map_err(|(key, message)| ConfigError::Invalid { key: key.into(), message })?;
        let metrics_listen = raw.metrics_listen.map(|a| a.parse()).transpose().map_err(|_| ConfigError::Invalid {
            key: "metrics_listen".into(),
            message: "must be an address like 0.0.0.0:9463".into(),
        })?;
        Ok(Self {
            signing_key,
            lease,
            web,
            metrics_listen,
            listen,
            data_dir,
            store,
            artifacts,
            max_concurrent_uploads: uploads as usize,
            staging_budget_bytes: staging as usize,
            max_concurrent_downloads: downloads as usize,
            transport,
            policy,
            upstream,
            engine: EngineSettings {
                heartbeat_interval: heartbeat,
                client_timeout: timeout,
                chunk_bytes: chunk_bytes as usize,
                max_active_runs: active as usize,
                max_concurrent_tasks: per_client as u32,
                max_model_parameters: max_params,
                privacy: crate::round::PrivacySettings { budgets, lattice_slack },
                tier,
                carbon,
                client_watts,
                prices: raw.cost.map(cost::RawCost::validate).transpose()?,
                ..EngineSettings::default()
            },
        })
    }

    /// Defaults for an in-process coordinator (sim, tests) keeping its state in `data_dir`
    /// and listening on an ephemeral loopback port, with mutual TLS from the identity
    /// directory `tls` (and the CRL `crl`).
    pub fn local(data_dir: impl Into<PathBuf>, tls: &Path, crl: Option<&Path>) -> Self {
        let raw = RawConfig {
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(data_dir.into()),
            tls: Some(RawTls {
                dir: Some(tls.to_path_buf()),
                crl: crl.map(Path::to_path_buf),
                handshake_timeout_seconds: None,
                max_connections_per_identity: None,
            }),
            // A coordinator restarted after a crash waits for its predecessor's lease to run
            // out; simulations and tests restart often, so theirs is short.
            lease_ttl_seconds: Some(LOCAL_LEASE_TTL_SECONDS),
            ..RawConfig::default()
        };
        Self::validate(raw).expect("local defaults are valid")
    }
}

/// The coordinator lease length of [`Config::local`] coordinators (sim, tests), in seconds.
pub const LOCAL_LEASE_TTL_SECONDS: f64 = 2.0;

/// See [`RawTls::max_connections_per_identity`].
pub const DEFAULT_CONNECTIONS_PER_IDENTITY: u64 = 8;

fn transport(insecure: bool, tls: Option<RawTls>, listen: SocketAddr) -> Result<Transport, ConfigError> {
    if insecure {
        if !listen.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                key: "--insecure".into(),
                message: format!("plain text is allowed only on a loopback address, not on {listen}"),
            });
        }
        return Ok(Transport::Insecure);
    }
    let tls = tls.unwrap_or_default();
    let Some(dir) = tls.dir else {
        return Err(ConfigError::Invalid {
            key: "tls.dir".into(),
            message: "is required: the coordinator serves mutual TLS (create an identity with `fedra pki issue --role coordinator`), or pass --insecure on a loopback address".into(),
        });
    };
    let handshake_timeout = seconds("tls.handshake_timeout_seconds", tls.handshake_timeout_seconds, 10.0)?;
    let per_identity = tls.max_connections_per_identity.unwrap_or(DEFAULT_CONNECTIONS_PER_IDENTITY);
    if !(1..=1024).contains(&per_identity) {
        return Err(ConfigError::Invalid {
            key: "tls.max_connections_per_identity".into(),
            message: format!("must be in 1..=1024, got {per_identity}"),
        });
    }
    Ok(Transport::Mutual {
        identity: fedra_pki::IdentityDir::new(dir),
        crl: tls.crl,
        handshake_timeout,
        max_connections_per_identity: per_identity as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::arbitrary::Arbitrary;

    #[test]
    fn unknown_key_is_rejected_with_location() {
        let e = RawConfig::from_toml("version = 1\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n", "c.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("c.toml") && msg.contains("listen_port") && msg.contains("line 3"), "{msg}");
    }

    fn insecure() -> RawConfig {
        RawConfig { insecure: true, ..RawConfig::default() }
    }

    #[test]
    fn transport_is_mutual_tls_unless_insecure_on_loopback() {
        let e = Config::validate(RawConfig::default()).unwrap_err().to_string();
        assert!(e.starts_with("tls.dir: is required"), "{e}");
        let raw = RawConfig { listen: Some("0.0.0.0:7070".into()), ..insecure() };
        let e = Config::validate(raw).unwrap_err().to_string();
        assert!(e.contains("only on a loopback address"), "{e}");
        assert_eq!(Config::validate(insecure()).unwrap().transport, Transport::Insecure);
        let raw = RawConfig::from_toml("[tls]\ndir = \"id\"\ncrl = \"ca/crl.pem\"\n", "c.toml").unwrap();
        let Transport::Mutual { identity, crl, .. } = Config::validate(raw).unwrap().transport else { panic!() };
        assert_eq!(identity.cert(), PathBuf::from("id/cert.pem"));
        assert_eq!(crl, Some(PathBuf::from("ca/crl.pem")));
        assert!(RawConfig::from_toml("insecure = true\n", "c.toml").is_err(), "--insecure is a flag only");
    }

    #[test]
    fn connections_per_identity_default_and_bounds() {
        let limit = |text: &str| {
            Config::validate(RawConfig::from_toml(text, "c.toml").unwrap()).map(|c| match c.transport {
                Transport::Mutual { max_connections_per_identity, .. } => max_connections_per_identity,
                Transport::Insecure => unreachable!(),
            })
        };
        assert_eq!(limit("[tls]\ndir = \"id\"\n").unwrap(), DEFAULT_CONNECTIONS_PER_IDENTITY as usize);
        assert_eq!(limit("[tls]\ndir = \"id\"\nmax_connections_per_identity = 2\n").unwrap(), 2);
        for bad in [0, 1025] {
            let e = limit(&format!("[tls]\ndir = \"id\"\nmax_connections_per_identity = {bad}\n")).unwrap_err();
            assert!(e.to_string().starts_with("tls.max_connections_per_identity: must be in 1..=1024"), "{e}");
        }
    }

    #[test]
    fn validation_names_the_key() {
        let raw = RawConfig { chunk_bytes: Some(3), ..insecure() };
        assert!(Config::validate(raw).unwrap_err().to_string().starts_with("chunk_bytes:"));
        let raw = RawConfig { listen: Some("nowhere".into()), ..insecure() };
        assert!(Config::validate(raw).unwrap_err().to_string().starts_with("listen:"));
        let raw = RawConfig { version: Some(2), ..insecure() };
        assert!(matches!(Config::validate(raw), Err(ConfigError::Version(2))));
        let raw = RawConfig { heartbeat_interval_seconds: Some(10.0), client_timeout_seconds: Some(5.0), ..insecure() };
        assert!(Config::validate(raw).unwrap_err().to_string().starts_with("client_timeout_seconds"));
    }

    #[test]
    fn shipped_example_is_valid() {
        let raw =
            RawConfig::from_toml(include_str!("../../coordinator.example.toml"), "coordinator.example.toml").unwrap();
        let c = Config::validate(raw).unwrap();
        assert_eq!(c.listen.port(), 7070);
    }

    proptest::proptest! {
        /// The config parser on mutated example files: a config or a named error, never a panic.
        #[test]
        fn mutated_config_files_never_panic(
            mutations in proptest::collection::vec((proptest::sample::Index::arbitrary(), 0u8..128), 1..6),
        ) {
            let mut text = include_str!("../../coordinator.example.toml").as_bytes().to_vec();
            for (i, b) in mutations {
                let at = i.index(text.len());
                text[at] = b;
            }
            let text = String::from_utf8_lossy(&text);
            if let Ok(raw) = RawConfig::from_toml(&text, "fuzz.toml") {
                let _ = Config::validate(raw);
            }
        }
    }

    #[test]
    fn the_store_is_sqlite_in_the_data_dir_unless_store_url_names_one() {
        let c = Config::validate(RawConfig { data_dir: Some("d".into()), ..insecure() }).unwrap();
        assert_eq!(c.store, StoreLocation::Sqlite(PathBuf::from("d/fedra.db")));
        let raw = RawConfig::from_toml("store_url = \"postgres://fedra@db:5432/fedra\"\n", "c.toml").unwrap();
        let c = Config::validate(RawConfig { insecure: true, ..raw }).unwrap();
        assert!(matches!(&c.store, StoreLocation::Postgres(url) if url.expose() == "postgres://fedra@db:5432/fedra"));
        let raw = RawConfig { store_url: Some("sqlite:///var/fedra.db".into()), ..insecure() };
        assert_eq!(Config::validate(raw).unwrap().store, StoreLocation::Sqlite(PathBuf::from("/var/fedra.db")));
        let raw = RawConfig { store_url: Some("mysql://root:hunter2@db/fedra".into()), ..insecure() };
        let e = Config::validate(raw).unwrap_err().to_string();
        assert!(e.starts_with("store_url: ") && e.contains("use sqlite://PATH or postgres://"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn defaults_and_merge() {
        let c = Config::validate(insecure()).unwrap();
        assert_eq!(c.artifacts, ArtifactsConfig::dir("fedra-data/artifacts"));
        let merged = RawConfig { listen: Some("127.0.0.1:1".into()), ..RawConfig::default() }
            .merge(RawConfig { listen: Some("127.0.0.1:2".into()), ..RawConfig::default() });
        assert_eq!(merged.listen.as_deref(), Some("127.0.0.1:2"));
    }
}
