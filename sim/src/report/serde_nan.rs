//! Serde helper for `f64` fields that may be NaN ("not measured").
//!
//! JSON has no NaN, and `serde_json` refuses to read `null` into an `f64`. Used as
//! `#[serde(with = "crate::report::serde_nan", default = "crate::report::serde_nan::nan")]`
//! on the float fields of [`RoundMetrics`](super::RoundMetrics), it makes the contract:
//!
//! - NaN is serialized as a missing value (`serialize_none`): `null` in JSON, an empty
//!   cell in CSV; every other value as `Some(v)`.
//! - A missing value (`null`, an empty CSV cell, or — thanks to `default` — an absent
//!   field) deserializes as NaN; a number as itself (CSV's `NaN` text reads back as NaN
//!   as well).
//! - ±∞ is passed through as a number: CSV writes `inf`/`-inf` and reads them back, but
//!   `serde_json` writes any non-finite number as `null`, so in JSON ±∞ comes back NaN.

use serde::{Deserialize, Deserializer, Serializer};

/// The value of a float field that is absent: NaN.
pub fn nan() -> f64 {
    f64::NAN
}

/// Serializes NaN as none, any other value as some.
pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.is_nan() { serializer.serialize_none() } else { serializer.serialize_some(value) }
}

/// Deserializes none as NaN, a number as itself.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}
