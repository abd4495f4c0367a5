//! Carbon- and cost-aware scheduling: a carbon-intensity signal per region (a time series
//! the operator keeps up to date in a file), the choice of when a round should start
//! within a plan's allowed delay, and the energy and carbon a round's training cost.
//!
//! The signal file (`carbon_file` in the coordinator config, `FEDRA_CARBON_FILE`):
//!
//! ```toml
//! [[region]]
//! name = "eu-west"
//! # grams of CO2-equivalent per kWh from `from` until the next point (a step function)
//! intensity = [
//!   { from = "2026-12-01T00:00:00Z", g_per_kwh = 320 },
//!   { from = "2026-12-01T11:00:00Z", g_per_kwh = 90 },   # midday solar
//! ]
//! ```
//!
//! The file is read at start (a bad file fails the start) and read again whenever its
//! modification time changes; a later bad version is refused with a warning and the last
//! good one kept, so a half-written update never stops scheduling.
//!
//! Energy is estimated, not metered: clients report the seconds they trained, and the
//! configured `client_watts` turns them into kWh; carbon is that energy times the region's
//! intensity when the round was committed.

use crate::ids::RegionId;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A carbon file that cannot be used, naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum CarbonError {
    #[error("carbon file {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    #[serde(default)]
    region: Vec<RawRegion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    name: String,
    intensity: Vec<RawPoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoint {
    from: DateTime<Utc>,
    g_per_kwh: f64,
}

/// Carbon intensity per region: a step function of time, points sorted by `from`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CarbonFeed {
    regions: BTreeMap<RegionId, Vec<(DateTime<Utc>, f64)>>,
}

/// When a round should start to train on cleaner power, and the intensities compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deferral {
    pub until: DateTime<Utc>,
    /// Mean intensity over the run's regions now, and at `until` (g CO2e/kWh).
    pub now_g_per_kwh: f64,
    pub then_g_per_kwh: f64,
}

impl CarbonFeed {
    /// Parses and validates a feed: known keys only, region names valid and unique,
    /// intensities finite and ≥ 0, points in strictly increasing time order.
    ///
    /// # Errors
    /// The first problem, with its region.
    pub fn parse(text: &str, path: &str) -> Result<Self, CarbonError> {
        let invalid = |message: String| CarbonError::Invalid { path: path.to_string(), message };
        let raw: RawFeed = toml::from_str(text).map_err(|e| invalid(e.to_string().trim().replace('\n', " ")))?;
        let mut regions = BTreeMap::new();
        for r in raw.region {
            let name = RegionId::new(r.name.as_str()).map_err(|e| invalid(format!("region {:?}: {e}", r.name)))?;
            if r.intensity.is_empty() {
                return Err(invalid(format!("region {name}: intensity is empty")));
            }
            let mut points = Vec::with_capacity(r.intensity.len());
            for p in r.intensity {
                if !(p.g_per_kwh.is_finite() && p.g_per_kwh >= 0.0) {
                    return Err(invalid(format!(
                        "region {name}: g_per_kwh must be a finite number ≥ 0, got {}",
                        p.g_per_kwh
                    )));
                }
                if points.last().is_some_and(|(at, _)| *at >= p.from) {
                    return Err(invalid(format!(
                        "region {name}: points must be in increasing time order ({})",
                        p.from
                    )));
                }
                points.push((p.from, p.g_per_kwh));
            }
            if regions.insert(name.clone(), points).is_some() {
                return Err(invalid(format!("region {name} is listed twice")));
            }
        }
        Ok(Self { regions })
    }

    /// The regions the feed has a series for.
    pub fn regions(&self) -> impl Iterator<Item = &RegionId> {
        self.regions.keys()
    }

    /// The intensity in `region` at `at`; `None` when the feed has nothing for it then.
    pub fn intensity(&self, region: &RegionId, at: DateTime<Utc>) -> Option<f64> {
        let points = self.regions.get(region)?;
        points.iter().rev().find(|(from, _)| *from <= at).map(|(_, g)| *g)
    }

    /// The mean intensity over the `regions` the feed knows at `at`.
    pub fn mean_intensity(&self, regions: &[RegionId], at: DateTime<Utc>) -> Option<f64> {
        let known: Vec<f64> = regions.iter().filter_map(|r| self.intensity(r, at)).collect();
        (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
    }

    /// Whether a round over `regions` should wait for cleaner power: the earliest time in
    /// `(now, now + max_delay]` with the lowest mean intensity over them, when that is lower
    /// than now's. `None`: start now (already the cleanest, or the feed knows nothing).
    pub fn defer(&self, regions: &[RegionId], now: DateTime<Utc>, max_delay: chrono::Duration) -> Option<Deferral> {
        let current = self.mean_intensity(regions, now)?;
        let horizon = now + max_delay;
        let mut best: Option<(DateTime<Utc>, f64)> = None;
        let mut changes: Vec<DateTime<Utc>> = regions
            .iter()
            .filter_map(|r| self.regions.get(r))
            .flatten()
            .map(|(at, _)| *at)
            .filter(|at| *at > now && *at <= horizon)
            .collect();
        changes.sort_unstable();
        changes.dedup();
        for at in changes {
            if let Some(g) = self.mean_intensity(regions, at)
                && best.is_none_or(|(_, b)| g < b)
            {
                best = Some((at, g));
            }
        }
        let (until, then) = best?;
        (then < current).then_some(Deferral { until, now_g_per_kwh: current, then_g_per_kwh: then })
    }
}

/// Watts a training client is assumed to draw when `client_watts` is not configured: a
/// busy server-class CPU socket.
pub const DEFAULT_CLIENT_WATTS: f64 = 150.0;

/// Estimated kWh of `seconds` of training at `watts`.
pub fn energy_kwh(seconds: f64, watts: f64) -> f64 {
    seconds * watts / 3.6e6
}

/// A round's (or a run's) estimated energy and carbon in one region.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegionEnergy {
    pub region: RegionId,
    /// Training seconds the region's clients reported.
    pub compute_seconds: f64,
    pub energy_kwh: f64,
    /// `None` when the carbon feed had no intensity for the region then.
    pub carbon_g: Option<f64>,
}

/// The signal file, re-read when it changes.
#[derive(Debug)]
pub struct CarbonSignal {
    path: PathBuf,
    current: Mutex<(Option<SystemTime>, Arc<CarbonFeed>)>,
}

impl CarbonSignal {
    /// Reads `path` once.
    ///
    /// # Errors
    /// The file cannot be read or is not a valid feed.
    pub fn open(path: &Path) -> Result<Self, CarbonError> {
        let (modified, feed) = read(path)?;
        Ok(Self { path: path.to_path_buf(), current: Mutex::new((modified, Arc::new(feed))) })
    }

    /// The file the feed is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The feed as the file says now (re-read if it changed since the last call; the last
    /// good feed if the new version is invalid).
    pub fn feed(&self) -> Arc<CarbonFeed> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified != current.0 {
            match read(&self.path) {
                Ok((m, feed)) => *current = (m, Arc::new(feed)),
                Err(e) => {
                    tracing::warn!(error = %e, "carbon file refused; keeping the previous version");
                    current.0 = modified;
                }
            }
        }
        Arc::clone(&current.1)
    }
}

fn read(path: &Path) -> Result<(Option<SystemTime>, CarbonFeed), CarbonError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| CarbonError::Invalid { path: shown.clone(), message: e.to_string() })?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((modified, CarbonFeed::parse(&text, &shown)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegionId {
        RegionId::new(s).unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    const FEED: &str = r#"
[[region]]
name = "eu"
intensity = [
  { from = "2026-12-01T00:00:00Z", g_per_kwh = 300 },
  { from = "2026-12-01T04:00:00Z", g_per_kwh = 100 },
  { from = "2026-12-01T08:00:00Z", g_per_kwh = 400 },
]
[[region]]
name = "us"
intensity = [{ from = "2026-12-01T00:00:00Z", g_per_kwh = 200 }]
"#;

    #[test]
    fn a_round_waits_for_the_cleanest_window_within_its_delay() {
        let feed = CarbonFeed::parse(FEED, "c.toml").unwrap();
        let now = t("2026-12-01T01:00:00Z");
        assert_eq!(feed.intensity(&r("eu"), now), Some(300.0));
        assert_eq!(feed.intensity(&r("eu"), t("2026-11-30T23:00:00Z")), None, "before the first point");
        let d = feed.defer(&[r("eu"), r("us")], now, chrono::Duration::hours(6)).unwrap();
        assert_eq!((d.until, d.now_g_per_kwh, d.then_g_per_kwh), (t("2026-12-01T04:00:00Z"), 250.0, 150.0));
        // The window lies beyond the allowed delay: start now.
        assert_eq!(feed.defer(&[r("eu")], now, chrono::Duration::hours(2)), None);
        // Already in the clean window: nothing cleaner ahead.
        assert_eq!(feed.defer(&[r("eu")], t("2026-12-01T05:00:00Z"), chrono::Duration::hours(6)), None);
        // A region the feed does not know: no signal, no deferral.
        assert_eq!(feed.defer(&[r("ap")], now, chrono::Duration::hours(6)), None);
    }

    #[test]
    fn bad_feeds_are_refused_naming_the_problem() {
        let cases = [
            ("[[region]]\nname = \"eu\"\nintensity = []\n", "intensity is empty"),
            (
                "[[region]]\nname = \"eu\"\nintensity = [{ from = \"2026-12-01T00:00:00Z\", g_per_kwh = -1 }]\n",
                "finite number ≥ 0",
            ),
            (
                "[[region]]\nname = \"eu\"\nintensity = [{ from = \"2026-12-01T01:00:00Z\", g_per_kwh = 1 }, { from = \"2026-12-01T00:00:00Z\", g_per_kwh = 2 }]\n",
                "increasing time order",
            ),
            ("[[region]]\nname = \"eu\"\nintensity = [{ from = \"x\", g_per_kwh = 1 }]\n", "c.toml"),
            ("[[region]]\nnme = \"eu\"\n", "unknown field"),
        ];
        for (text, needle) in cases {
            let e = CarbonFeed::parse(text, "c.toml").unwrap_err().to_string();
            assert!(e.contains(needle) && e.starts_with("carbon file c.toml: "), "{e}");
        }
        assert!((energy_kwh(3600.0, 100.0) - 0.1).abs() < 1e-12);
    }
}
