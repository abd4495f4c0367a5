//! `[artifacts]`: where checkpoints are published. The artifact directory by default; or a
//! default store and one per region (a region-per-bucket layout keeps each region's
//! checkpoints in its own bucket):
//!
//! ```toml
//! [artifacts]
//! default = "file:///var/lib/fedra/artifacts"   # optional; else artifact_dir
//! [artifacts.regions]
//! eu = "s3://fedra-eu/checkpoints"
//! us = "s3://fedra-us/checkpoints"
//! ```
//!
//! Object stores take their endpoint, credentials and region from the provider's standard
//! environment variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ALLOW_HTTP`; `GOOGLE_*`, `AZURE_*`), read with the other variables in
//! [`super::RawConfig::merge_env`].

use super::ConfigError;
use crate::checkpoint::{ArtifactStore, CheckpointError, StoreOptions, StoreSpec};
use crate::ids::RegionId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `[artifacts]` table as written.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawArtifacts {
    /// The store for regions not listed below, and for the coordinator's own state (a
    /// server optimizer's): a URL (`file:///PATH`, `s3://BUCKET/PREFIX`, `gs://…`, `az://…`).
    pub default: Option<String>,
    /// Region name → store URL.
    #[serde(default)]
    pub regions: BTreeMap<String, String>,
}

/// Validated `[artifacts]`: every URL parsed and its store client built (nothing is sent
/// until the first write or read).
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactsConfig {
    pub default: StoreSpec,
    pub regions: BTreeMap<RegionId, StoreSpec>,
    /// The provider settings from the environment, for buckets named by older records.
    pub options: StoreOptions,
}

impl ArtifactsConfig {
    /// Everything in the directory `dir` (the default: `artifact_dir`).
    pub fn dir(dir: impl Into<PathBuf>) -> Self {
        Self { default: StoreSpec::dir(dir), regions: BTreeMap::new(), options: StoreOptions::default() }
    }

    /// Validates the table; `artifact_dir` is the directory used when no default is given.
    ///
    /// # Errors
    /// A malformed or unsupported URL, a bad region name, or both `artifact_dir` and
    /// `[artifacts] default`, each naming the key.
    pub fn validate(
        raw: Option<RawArtifacts>,
        artifact_dir: Option<PathBuf>,
        data_dir: &Path,
        options: StoreOptions,
    ) -> Result<Self, ConfigError> {
        let raw = raw.unwrap_or_default();
        let invalid = |key: String, e: CheckpointError| ConfigError::Invalid { key, message: e.to_string() };
        let default = match (raw.default, artifact_dir) {
            (Some(_), Some(dir)) => {
                return Err(ConfigError::Invalid {
                    key: "artifacts.default".into(),
                    message: format!("is given together with artifact_dir ({}); set one of them", dir.display()),
                });
            }
            (Some(url), None) => {
                StoreSpec::parse(&url, &options).map_err(|e| invalid("artifacts.default".into(), e))?
            }
            (None, dir) => StoreSpec::dir(dir.unwrap_or_else(|| data_dir.join("artifacts"))),
        };
        let mut regions = BTreeMap::new();
        for (name, url) in raw.regions {
            let key = format!("artifacts.regions.{name}");
            let region = RegionId::new(name.as_str())
                .map_err(|e| ConfigError::Invalid { key: key.clone(), message: e.to_string() })?;
            let spec = StoreSpec::parse(&url, &options).map_err(|e| invalid(key, e))?;
            regions.insert(region, spec);
        }
        Ok(Self { default, regions, options })
    }

    /// Checks every configured region against the regions a policy set declares.
    ///
    /// # Errors
    /// The first region the set does not declare, naming the declared ones.
    pub fn check_regions(&self, known: impl Fn(&RegionId) -> bool, declared: &str) -> Result<(), ConfigError> {
        match self.regions.keys().find(|r| !known(r)) {
            None => Ok(()),
            Some(region) => Err(ConfigError::Invalid {
                key: format!("artifacts.regions.{region}"),
                message: format!("{region} is not a region of the policy set in force (declared: {declared})"),
            }),
        }
    }

    /// The directory of the default store, when it is one.
    pub fn local_dir(&self) -> Option<&Path> {
        self.default.local_dir()
    }

    /// Opens the stores (creating directories).
    ///
    /// # Errors
    /// A directory cannot be created.
    pub fn open(&self) -> Result<ArtifactStore, CheckpointError> {
        ArtifactStore::open(&self.default, &self.regions, self.options.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, RawConfig};
    use super::*;

    fn validate(toml: &str) -> Result<Config, ConfigError> {
        let raw = RawConfig::from_toml(toml, "c.toml")?;
        Config::validate(RawConfig { insecure: true, ..raw })
    }

    #[test]
    fn the_artifact_dir_stays_the_default() {
        let c = validate("data_dir = \"d\"\n").unwrap();
        assert_eq!(c.artifacts.local_dir(), Some(std::path::absolute("d/artifacts").unwrap().as_path()));
        assert!(c.artifacts.regions.is_empty());
        let c = validate("artifact_dir = \"/srv/a\"\n").unwrap();
        assert_eq!(c.artifacts.local_dir(), Some(Path::new("/srv/a")));
    }

    #[test]
    fn regions_get_their_own_buckets() {
        let c = validate(
            "[artifacts]\ndefault = \"file:///var/lib/fedra/artifacts\"\n[artifacts.regions]\neu = \"s3://fedra-eu/checkpoints\"\nus = \"s3://fedra-us\"\n",
        )
        .unwrap();
        assert_eq!(c.artifacts.local_dir(), Some(Path::new("/var/lib/fedra/artifacts")));
        let described: Vec<_> = c.artifacts.regions.iter().map(|(r, s)| format!("{r}={}", s.describe())).collect();
        assert_eq!(described, ["eu=s3://fedra-eu/checkpoints", "us=s3://fedra-us"]);
    }

    #[test]
    fn bad_artifact_settings_name_their_key() {
        for (toml, key, why) in [
            ("[artifacts]\nregions = { eu = \"ftp://x/y\" }\n", "artifacts.regions.eu: ", "unsupported scheme"),
            ("[artifacts]\nregions = { eu = \"s3://\" }\n", "artifacts.regions.eu: ", "names no bucket"),
            ("[artifacts]\nregions = { \"EU west\" = \"s3://b\" }\n", "artifacts.regions.EU west: ", ""),
            ("[artifacts]\ndefault = \"/var/fedra\"\n", "artifacts.default: ", "is not a URL"),
            ("artifact_dir = \"/a\"\n[artifacts]\ndefault = \"s3://b\"\n", "artifacts.default: ", "set one of them"),
        ] {
            let e = validate(toml).unwrap_err().to_string();
            assert!(e.starts_with(key) && e.contains(why), "{toml}: {e}");
        }
        let e = validate("[artifacts]\nbucket = \"s3://b\"\n").unwrap_err().to_string();
        assert!(e.contains("bucket") && e.contains("line 2"), "unknown keys are refused: {e}");
    }

    #[test]
    fn regions_are_checked_against_the_policy_set() {
        let c = validate("[artifacts.regions]\neu = \"s3://fedra-eu\"\napac = \"s3://fedra-apac\"\n").unwrap();
        let known = |r: &RegionId| r.as_str() == "eu";
        let e = c.artifacts.check_regions(known, "eu").unwrap_err().to_string();
        assert_eq!(e, "artifacts.regions.apac: apac is not a region of the policy set in force (declared: eu)");
        assert!(c.artifacts.check_regions(|_| true, "").is_ok());
    }
}
