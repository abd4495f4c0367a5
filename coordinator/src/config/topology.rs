//! `role` and `[upstream]`: which tier this coordinator serves (see [`crate::hierarchy`]).

use super::ConfigError;
use crate::hierarchy::Tier;
use crate::ids::{ClientId, RegionId};
use serde::Deserialize;
use std::path::PathBuf;

/// The `[upstream]` table of a regional aggregator: its global coordinator.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// The global coordinator's URL (`https://global.example:7070`).
    pub url: Option<String>,
    /// This aggregator's participant name upstream: the name of its
    /// `fedra://regional-aggregator/<location>/<name>` certificate.
    pub name: Option<String>,
    /// Identity directory of that certificate (`fedra pki issue --role regional-aggregator`).
    pub tls_dir: Option<PathBuf>,
}

/// How a regional aggregator reaches its global coordinator (validated).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub url: String,
    pub name: ClientId,
    /// `None` only for an `--insecure` coordinator (plain text upstream too).
    pub tls_dir: Option<fedra_pki::IdentityDir>,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// Validates `role`, `location` and `[upstream]` together. Returns the tier and, for a
/// regional aggregator, its upstream.
///
/// # Errors
/// An unknown role; a regional aggregator without `location` or a complete `[upstream]`;
/// an `[upstream]` on another tier.
pub fn validate(
    role: Option<&str>,
    location: Option<&str>,
    upstream: Option<RawUpstream>,
    insecure: bool,
) -> Result<(Tier, Option<UpstreamConfig>), ConfigError> {
    let role = role.unwrap_or("standalone");
    match role {
        "standalone" | "global" => {
            if upstream.is_some() {
                return Err(invalid(
                    "upstream",
                    format!("is only for role = \"regional\"; this coordinator is {role}"),
                ));
            }
            Ok((if role == "global" { Tier::Global } else { Tier::Standalone }, None))
        }
        "regional" => {
            let location = location.ok_or_else(|| {
                invalid(
                    "location",
                    "is required with role = \"regional\": the region whose clients this aggregator serves",
                )
            })?;
            let location = RegionId::new(location).map_err(|e| invalid("location", e.to_string()))?;
            let up = upstream.ok_or_else(|| {
                invalid(
                    "upstream",
                    "is required with role = \"regional\": url, name and tls_dir of the global coordinator",
                )
            })?;
            let url = up.url.filter(|u| !u.is_empty()).ok_or_else(|| invalid("upstream.url", "is required"))?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid(
                    "upstream.url",
                    format!("must start with https:// (or http:// with --insecure), got {url:?}"),
                ));
            }
            let name = up.name.ok_or_else(|| invalid("upstream.name", "is required"))?;
            let name = ClientId::new(name).map_err(|e| invalid("upstream.name", e.to_string()))?;
            let tls_dir = match (up.tls_dir, insecure) {
                (Some(dir), _) => Some(fedra_pki::IdentityDir::new(dir)),
                (None, true) => None,
                (None, false) => {
                    return Err(invalid(
                        "upstream.tls_dir",
                        "is required: the aggregator's identity (`fedra pki issue --role regional-aggregator`)",
                    ));
                }
            };
            Ok((Tier::Regional { location }, Some(UpstreamConfig { url, name, tls_dir })))
        }
        other => Err(invalid("role", format!("must be standalone, global or regional, got {other:?}"))),
    }
}

/// `policy_dir` and `location`: both or neither, and never beside config budgets (the
/// policy set is then the only source of budgets).
pub(super) fn policy(
    dir: Option<PathBuf>,
    location: Option<String>,
    config_budgets: bool,
) -> Result<Option<crate::governance::PolicyConfig>, ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid { key: key.into(), message };
    match (dir, location) {
        (None, None) => Ok(None),
        (None, Some(_)) => {
            Err(invalid("location", "is used only with policy_dir (the policy set it names a region of)".into()))
        }
        (Some(_), None) => Err(invalid(
            "location",
            "is required with policy_dir: the region this coordinator runs in, one of the policy set's regions".into(),
        )),
        (Some(_), Some(_)) if config_budgets => Err(invalid(
            "privacy.budgets",
            "must be empty when policy_dir is set: budgets come from the policy set's [[privacy]] rules".into(),
        )),
        (Some(dir), Some(location)) => {
            let location = crate::ids::RegionId::new(location).map_err(|e| invalid("location", e.to_string()))?;
            Ok(Some(crate::governance::PolicyConfig { dir, location, aggregate_in_region: false }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(url: &str) -> Option<RawUpstream> {
        Some(RawUpstream { url: Some(url.into()), name: Some("agg-eu".into()), tls_dir: Some("pki/agg".into()) })
    }

    #[test]
    fn tiers_validate_with_named_refusals() {
        assert_eq!(validate(None, None, None, false).unwrap().0, Tier::Standalone);
        assert_eq!(validate(Some("global"), None, None, false).unwrap().0, Tier::Global);
        let (tier, upstream) = validate(Some("regional"), Some("eu-west"), up("https://g:7070"), false).unwrap();
        assert_eq!(tier, Tier::Regional { location: RegionId::new("eu-west").unwrap() });
        assert_eq!(upstream.unwrap().name.as_str(), "agg-eu");
        let err = |r: Result<_, ConfigError>| r.unwrap_err().to_string();
        assert!(err(validate(Some("edge"), None, None, false)).contains("role"));
        assert!(err(validate(Some("regional"), None, up("https://g"), false)).contains("location"));
        assert!(err(validate(Some("regional"), Some("eu"), None, false)).contains("upstream"));
        assert!(err(validate(Some("regional"), Some("eu"), up("g:7070"), false)).contains("upstream.url"));
        assert!(err(validate(Some("global"), None, up("https://g"), false)).contains("only for role"));
        let no_tls = Some(RawUpstream { tls_dir: None, ..up("https://g").unwrap() });
        assert!(err(validate(Some("regional"), Some("eu"), no_tls.clone(), false)).contains("upstream.tls_dir"));
        assert!(validate(Some("regional"), Some("eu"), no_tls, true).unwrap().1.unwrap().tls_dir.is_none());
    }
}
