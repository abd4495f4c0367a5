//! Documented bounds for everything a caller sends, checked at the edge before any of it is
//! stored, summed or echoed. Each bound is far above what a real deployment sends and far
//! below what could overflow a sum, a signed 64-bit column or a JSON manifest.
//!
//! | what | bound |
//! |---|---|
//! | a dataset's, an update's or an evaluation's sample count | 1..=2^40 (≈ 1.1 × 10^12) |
//! | datasets per registration | 1..=64 |
//! | devices per registration | 0..=16 |
//! | a dataset name or device label | 1..=128 bytes |
//! | features / classes of a dataset | 0..=2^24 |
//! | loss values (training, evaluation) | finite, 0..=10^12 |
//! | accuracy | 0..=1 |
//! | train_seconds | 0..=604,800 (a week) |
//! | privacy scopes an aggregate reports | 0..=16, each a scope name of ≤ 256 bytes, ε finite and ≥ 0, δ in [0, 1) |
//! | a FleetService message | one chunk (≤ 3 MiB) + 64 KiB |
//! | a RunService message (a plan) | 1 MiB |
//! | any other request message | 64 KiB |
//!
//! With these bounds a round's sample total stays below 2^60 for up to 2^20 clients, and the
//! sample-weighted metric sums below 10^30: no overflow, no infinity in a manifest.

use super::ApiError;
use fedra_types::identity::truncated;

pub const MAX_SAMPLES: u64 = 1 << 40;
pub const MAX_DATASETS: usize = 64;
pub const MAX_DEVICES: usize = 16;
pub const MAX_LABEL_BYTES: usize = 128;
pub const MAX_DIMENSION: u32 = 1 << 24;
pub const MAX_LOSS: f64 = 1e12;
pub const MAX_TRAIN_SECONDS: f64 = 7.0 * 86_400.0;
/// Clients one regional aggregator may stand for (`RegisterRequest.members`), and client
/// updates one aggregate may hold (`UpdateTrailer.contributors`).
pub const MAX_MEMBERS: u32 = 1_000_000;
/// Privacy scopes one regional aggregate may report (`UpdateTrailer.scopes`).
pub const MAX_SCOPES: usize = 16;
const MAX_SCOPE_BYTES: usize = 256;
pub const FLEET_MAX_MESSAGE_BYTES: usize = fedra_proto::chunking::MAX_CHUNK_BYTES + (64 << 10);
pub const RUN_MAX_MESSAGE_BYTES: usize = 1 << 20;
pub const READ_MAX_MESSAGE_BYTES: usize = 64 << 10;

/// `v` in 1..=[`MAX_SAMPLES`] (`allow_zero`: 0 too).
///
/// # Errors
/// INVALID_ARGUMENT naming `field` and the value.
pub fn samples(field: &str, v: u64, allow_zero: bool) -> Result<u64, ApiError> {
    if (v == 0 && !allow_zero) || v > MAX_SAMPLES {
        let lo = if allow_zero { 0 } else { 1 };
        return Err(ApiError::Invalid(format!("{field} must be in {lo}..={MAX_SAMPLES}, got {v}")));
    }
    Ok(v)
}

/// A count of clients in 0..=[`MAX_MEMBERS`] (0 is read as 1: a client stands for itself).
///
/// # Errors
/// INVALID_ARGUMENT naming `field` and the value.
pub fn members(field: &str, v: u32) -> Result<u32, ApiError> {
    if v > MAX_MEMBERS {
        return Err(ApiError::Invalid(format!("{field} must be in 0..={MAX_MEMBERS}, got {v}")));
    }
    Ok(v.max(1))
}

/// A regional aggregate's reported ε per scope: at most [`MAX_SCOPES`], names of at most
/// 256 bytes, ε finite and non-negative, δ in [0, 1). Whether each scope is the
/// aggregator's own is the round engine's check.
///
/// # Errors
/// INVALID_ARGUMENT naming `field` and what is wrong.
pub fn scopes(
    field: &str,
    scopes: Vec<fedra_proto::pb::ScopeSpent>,
) -> Result<Vec<crate::checkpoint::ScopeEpsilon>, ApiError> {
    if scopes.len() > MAX_SCOPES {
        return Err(ApiError::Invalid(format!("{field} holds {} scopes, at most {MAX_SCOPES}", scopes.len())));
    }
    scopes
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            if s.scope.is_empty() || s.scope.len() > MAX_SCOPE_BYTES {
                return Err(ApiError::Invalid(format!(
                    "{field}[{i}].scope must be 1..={MAX_SCOPE_BYTES} bytes, got {:?}",
                    truncated(&s.scope)
                )));
            }
            if !(s.epsilon.is_finite() && s.epsilon >= 0.0 && (0.0..1.0).contains(&s.delta)) {
                return Err(ApiError::Invalid(format!(
                    "{field}[{i}] must have a finite ε ≥ 0 and δ in [0, 1), got ε {} δ {}",
                    s.epsilon, s.delta
                )));
            }
            Ok(crate::checkpoint::ScopeEpsilon { scope: s.scope, epsilon: s.epsilon, delta: s.delta })
        })
        .collect()
}

/// A loss: finite and in 0..=[`MAX_LOSS`].
///
/// # Errors
/// INVALID_ARGUMENT naming `field` and the value.
pub fn loss(field: &str, v: f64) -> Result<f64, ApiError> {
    if !(v.is_finite() && (0.0..=MAX_LOSS).contains(&v)) {
        return Err(ApiError::Invalid(format!("{field} must be finite and in 0..={MAX_LOSS:e}, got {v}")));
    }
    Ok(v)
}

/// A value in `lo..=hi` (finite).
///
/// # Errors
/// INVALID_ARGUMENT naming `field` and the value.
pub fn within(field: &str, v: f64, lo: f64, hi: f64) -> Result<f64, ApiError> {
    if !(v.is_finite() && (lo..=hi).contains(&v)) {
        return Err(ApiError::Invalid(format!("{field} must be in {lo}..={hi}, got {v}")));
    }
    Ok(v)
}

/// A non-empty label of at most [`MAX_LABEL_BYTES`].
///
/// # Errors
/// INVALID_ARGUMENT naming `field`, quoting at most 64 characters.
pub fn label(field: &str, v: String) -> Result<String, ApiError> {
    if v.is_empty() || v.len() > MAX_LABEL_BYTES {
        return Err(ApiError::Invalid(format!(
            "{field} must be 1..={MAX_LABEL_BYTES} bytes, got {} ({:?})",
            v.len(),
            truncated(&v)
        )));
    }
    Ok(v)
}

/// At most `max` items.
///
/// # Errors
/// INVALID_ARGUMENT naming `field`.
pub fn count<T>(field: &str, items: &[T], min: usize, max: usize) -> Result<(), ApiError> {
    if !(min..=max).contains(&items.len()) {
        return Err(ApiError::Invalid(format!("{field} must hold {min}..={max} items, got {}", items.len())));
    }
    Ok(())
}

/// A dimension in 0..=[`MAX_DIMENSION`].
///
/// # Errors
/// INVALID_ARGUMENT naming `field`.
pub fn dimension(field: &str, v: u32) -> Result<u32, ApiError> {
    if v > MAX_DIMENSION {
        return Err(ApiError::Invalid(format!("{field} must be in 0..={MAX_DIMENSION}, got {v}")));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_refuse_what_would_overflow_and_name_the_field() {
        assert!(samples("s", 0, false).is_err());
        assert_eq!(samples("s", 0, true).unwrap(), 0);
        let e = samples("trailer.samples", u64::MAX, false).unwrap_err().to_string();
        assert!(e.starts_with("trailer.samples must be in 1..=1099511627776"), "{e}");
        assert!(loss("l", 1.7e308).is_err() && loss("l", f64::NAN).is_err() && loss("l", -1.0).is_err());
        assert!(within("a", 1.5, 0.0, 1.0).is_err());
        let e = label("datasets[0].name", "x".repeat(100_000)).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
        assert!(count("datasets", &[0; 65], 1, MAX_DATASETS).is_err());
        assert!(dimension("f", MAX_DIMENSION + 1).is_err());
    }
}
