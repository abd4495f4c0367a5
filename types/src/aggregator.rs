//! How a round's client models become one aggregate (the plan file's `aggregator`).
//!
//! Plain FedAvg takes the sample-weighted mean, so a single client that boosts its update
//! ×100 moves the model wherever it likes. The Byzantine-robust rules bound what a
//! minority of faulty or hostile clients can do:
//!
//! - `median`: the coordinate-wise median of the clients' models (Yin et al. 2018);
//! - `trimmed_mean`: per coordinate, drop the ⌊β·n⌋ smallest and largest values and average
//!   the rest (Yin et al. 2018);
//! - `multi_krum`: score each model by the summed squared distances to its n − f − 2
//!   nearest others, keep the m best-scored and average them (Blanchard et al. 2017);
//! - `norm_bound`: scale each client's delta (model − global) to at most `factor` × the
//!   round's median delta norm, then take the sample-weighted mean (Sun et al. 2019).
//!
//! Median, trimmed mean and Multi-Krum are unweighted: a client's sample count is its own
//! claim (bounded only by what it registered), so weighting by it would hand a liar the
//! weight the rule takes away. Norm bounding keeps FedAvg's weights; it bounds the size of
//! each delta instead. Whatever the rule, its output is the round's aggregate `y`: a
//! server optimizer (see [`crate::plan::Strategy`]) then steps with `y − x` as before.
//!
//! Written as a bare name (`"mean"`, `"median"`) or a table with `kind` and the rule's
//! parameters.

use serde::{Deserialize, Serialize};

/// The aggregation rule of a run (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(into = "AggregatorForm")]
pub enum Aggregator {
    /// FedAvg's sample-weighted mean.
    #[default]
    Mean,
    /// Coordinate-wise median.
    Median,
    /// Coordinate-wise mean after dropping the ⌊trim·n⌋ lowest and highest values.
    TrimmedMean { trim: f64 },
    /// Multi-Krum with `byzantine` (f) tolerated attackers, averaging the `select` (m)
    /// best-scored models; `select = 0` means n − f.
    MultiKrum { byzantine: u32, select: u32 },
    /// Each delta scaled to at most `factor` × the round's median delta norm.
    NormBound { factor: f64 },
}

/// The table form of the parameterised rules.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum AggregatorTable {
    Mean,
    Median,
    TrimmedMean {
        trim: f64,
    },
    MultiKrum {
        byzantine: u32,
        #[serde(default)]
        select: u32,
    },
    NormBound {
        factor: f64,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum AggregatorForm {
    Name(&'static str),
    Table(AggregatorTable),
}

const EXPECTING: &str = "\"mean\", \"median\", or a table with kind = mean | median | trimmed_mean (trim) | multi_krum (byzantine, select) | norm_bound (factor)";

impl Aggregator {
    /// The plan-file name of the rule.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Median => "median",
            Self::TrimmedMean { .. } => "trimmed_mean",
            Self::MultiKrum { .. } => "multi_krum",
            Self::NormBound { .. } => "norm_bound",
        }
    }

    /// Whether the rule needs every update of the round at once (everything but the
    /// streaming mean).
    pub fn is_robust(&self) -> bool {
        !matches!(self, Self::Mean)
    }
}

impl std::fmt::Display for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Mean | Self::Median => f.write_str(self.name()),
            Self::TrimmedMean { trim } => write!(f, "trimmed_mean(trim = {trim})"),
            Self::MultiKrum { byzantine, select } => {
                write!(f, "multi_krum(byzantine = {byzantine}, select = {select})")
            }
            Self::NormBound { factor } => write!(f, "norm_bound(factor = {factor})"),
        }
    }
}

/// The command-line form: `mean`, `median`, `trimmed_mean:TRIM`, `multi_krum:F[:M]`,
/// `norm_bound:FACTOR` (the plan's `[aggregator]` table in one word).
impl std::str::FromStr for Aggregator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(':');
        let kind = parts.next().unwrap_or_default();
        let args: Vec<&str> = parts.collect();
        let num = |i: usize| -> Result<f64, String> {
            args.get(i)
                .ok_or_else(|| format!("{kind} needs a parameter: {s:?}"))?
                .parse::<f64>()
                .map_err(|e| format!("{s:?}: {e}"))
        };
        let count = |i: usize| -> Result<u32, String> {
            args.get(i).map_or(Ok(0), |a| a.parse::<u32>().map_err(|e| format!("{s:?}: {e}")))
        };
        let (rule, takes) = match kind {
            "mean" => (Self::Mean, 0),
            "median" => (Self::Median, 0),
            "trimmed_mean" => (Self::TrimmedMean { trim: num(0)? }, 1),
            "multi_krum" => {
                num(0)?;
                (Self::MultiKrum { byzantine: count(0)?, select: count(1)? }, 2)
            }
            "norm_bound" => (Self::NormBound { factor: num(0)? }, 1),
            other => {
                return Err(format!(
                    "unknown aggregator {other:?}: mean, median, trimmed_mean:TRIM, multi_krum:F[:M] or norm_bound:FACTOR"
                ));
            }
        };
        if args.len() > takes {
            return Err(format!("{s:?}: {kind} takes at most {takes} parameter(s)"));
        }
        Ok(rule)
    }
}

impl From<AggregatorTable> for Aggregator {
    fn from(t: AggregatorTable) -> Self {
        match t {
            AggregatorTable::Mean => Self::Mean,
            AggregatorTable::Median => Self::Median,
            AggregatorTable::TrimmedMean { trim } => Self::TrimmedMean { trim },
            AggregatorTable::MultiKrum { byzantine, select } => Self::MultiKrum { byzantine, select },
            AggregatorTable::NormBound { factor } => Self::NormBound { factor },
        }
    }
}

impl From<Aggregator> for AggregatorForm {
    fn from(a: Aggregator) -> Self {
        match a {
            Aggregator::Mean => Self::Name("mean"),
            Aggregator::Median => Self::Name("median"),
            Aggregator::TrimmedMean { trim } => Self::Table(AggregatorTable::TrimmedMean { trim }),
            Aggregator::MultiKrum { byzantine, select } => {
                Self::Table(AggregatorTable::MultiKrum { byzantine, select })
            }
            Aggregator::NormBound { factor } => Self::Table(AggregatorTable::NormBound { factor }),
        }
    }
}

/// Reads a bare name or a table, with the table's own errors (unknown kind, missing or
/// unknown key) rather than an untagged enum's "no variant matched".
impl<'de> Deserialize<'de> for Aggregator {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Aggregator;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(EXPECTING)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Aggregator, E> {
                match v {
                    "mean" => Ok(Aggregator::Mean),
                    "median" => Ok(Aggregator::Median),
                    other => Err(E::custom(format!("unknown aggregator {other:?}: expected {EXPECTING}"))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Aggregator, A::Error> {
                AggregatorTable::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Aggregator::from)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tables_round_trip() {
        for (a, json) in [
            (Aggregator::Mean, r#""mean""#),
            (Aggregator::Median, r#""median""#),
            (Aggregator::TrimmedMean { trim: 0.2 }, r#"{"kind":"trimmed_mean","trim":0.2}"#),
            (Aggregator::MultiKrum { byzantine: 2, select: 5 }, r#"{"kind":"multi_krum","byzantine":2,"select":5}"#),
            (Aggregator::NormBound { factor: 3.0 }, r#"{"kind":"norm_bound","factor":3.0}"#),
        ] {
            assert_eq!(serde_json::to_string(&a).unwrap(), json);
            assert_eq!(serde_json::from_str::<Aggregator>(json).unwrap(), a);
        }
        // Tables for the bare names, and Multi-Krum's default m.
        assert_eq!(serde_json::from_str::<Aggregator>(r#"{"kind":"median"}"#).unwrap(), Aggregator::Median);
        assert_eq!(
            serde_json::from_str::<Aggregator>(r#"{"kind":"multi_krum","byzantine":1}"#).unwrap(),
            Aggregator::MultiKrum { byzantine: 1, select: 0 }
        );
    }

    #[test]
    fn the_command_line_form() {
        assert_eq!("median".parse::<Aggregator>(), Ok(Aggregator::Median));
        assert_eq!("trimmed_mean:0.1".parse::<Aggregator>(), Ok(Aggregator::TrimmedMean { trim: 0.1 }));
        assert_eq!("multi_krum:2".parse::<Aggregator>(), Ok(Aggregator::MultiKrum { byzantine: 2, select: 0 }));
        assert_eq!("multi_krum:2:5".parse::<Aggregator>(), Ok(Aggregator::MultiKrum { byzantine: 2, select: 5 }));
        assert_eq!("norm_bound:3".parse::<Aggregator>(), Ok(Aggregator::NormBound { factor: 3.0 }));
        for bad in ["krum", "trimmed_mean", "median:1", "multi_krum:x", "norm_bound:1:2"] {
            assert!(bad.parse::<Aggregator>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_rules_and_keys_are_refused_by_name() {
        let e = serde_json::from_str::<Aggregator>(r#""krum""#).unwrap_err().to_string();
        assert!(e.contains("unknown aggregator \"krum\"") && e.contains("trimmed_mean"), "{e}");
        let e = serde_json::from_str::<Aggregator>(r#"{"kind":"trimmed_mean","beta":0.2}"#).unwrap_err().to_string();
        assert!(e.contains("beta"), "{e}");
        assert!(serde_json::from_str::<Aggregator>(r#"{"kind":"norm_bound"}"#).is_err());
    }
}
