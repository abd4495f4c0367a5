//! L2 clipping of `f32` updates, shared by the client (which clips) and the coordinator (which
//! verifies), so that both compute the norm the same way.
//!
//! The DP guarantee rests on every accepted update having L2 norm at most `C`. Scaling in `f32`
//! rounds each coordinate, so a naively scaled update can come out a few ulps above `C`;
//! [`clip_l2`] scales to slightly below the bound instead, and the verifier allows
//! [`CLIP_TOLERANCE`] for the rounding of its own norm computation.

use super::NoiseError;

/// Relative slack a verifier must allow: an update clipped by [`clip_l2`] to `bound` has
/// [`l2_norm`] at most `bound·(1 + CLIP_TOLERANCE)`. Callers that turn the bound into a DP
/// sensitivity should use `bound·(1 + CLIP_TOLERANCE)`.
pub const CLIP_TOLERANCE: f64 = 1e-6;

/// Clipping scales to `bound·(1 − CLIP_SHRINK)/norm`; the shrink covers the `f32` rounding of
/// each scaled coordinate (relative `2⁻²⁴ ≈ 6e-8`) and the error of the `f64` norm.
const CLIP_SHRINK: f64 = 1e-7;

/// What [`clip_l2`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipOutcome {
    /// L2 norm before clipping (as computed by [`l2_norm`]).
    pub norm_before: f64,
    /// Whether the values were scaled down.
    pub clipped: bool,
}

/// L2 norm with `f64` accumulation (eight independent partial sums, which vectorises and keeps
/// the rounding error around `n·2⁻⁵³` relative). Non-finite values give a non-finite norm.
pub fn l2_norm(values: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            let v = f64::from(v);
            *a += v * v;
        }
    }
    let mut sum = acc.iter().sum::<f64>();
    for &v in tail {
        sum += f64::from(v) * f64::from(v);
    }
    sum.sqrt()
}

/// Scales `values` in place so that `l2_norm(values) ≤ bound·(1 + CLIP_TOLERANCE)`; values
/// already within `bound` are left bit-for-bit untouched.
///
/// # Errors
/// [`NoiseError::InvalidParameter`] if `bound` is not finite and positive;
/// [`NoiseError::NonFiniteUpdate`] if a value is NaN or infinite (nothing is changed).
pub fn clip_l2(values: &mut [f32], bound: f64) -> Result<ClipOutcome, NoiseError> {
    if !(bound.is_finite() && bound > 0.0) {
        return Err(NoiseError::InvalidParameter { what: "clipping bound", value: bound });
    }
    let norm = l2_norm(values);
    if !norm.is_finite() {
        let index = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(NoiseError::NonFiniteUpdate { index });
    }
    if norm <= bound {
        return Ok(ClipOutcome { norm_before: norm, clipped: false });
    }
    let scale = bound / norm * (1.0 - CLIP_SHRINK);
    for v in values.iter_mut() {
        *v = (f64::from(*v) * scale) as f32;
    }
    Ok(ClipOutcome { norm_before: norm, clipped: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn norm_of_known_vectors() {
        assert_eq!(l2_norm(&[]), 0.0);
        assert_eq!(l2_norm(&[3.0, 4.0]), 5.0);
        let v = vec![1.0f32; 100];
        assert!((l2_norm(&v) - 10.0).abs() < 1e-12);
        assert!(l2_norm(&[1.0, f32::NAN]).is_nan());
    }

    #[test]
    fn rejects_bad_bound_and_non_finite_values() {
        let mut v = vec![1.0f32, 2.0];
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(clip_l2(&mut v, bad), Err(NoiseError::InvalidParameter { .. })));
        }
        let mut v = vec![1.0f32, f32::INFINITY, 2.0];
        assert!(matches!(clip_l2(&mut v, 1.0), Err(NoiseError::NonFiniteUpdate { index: 1 })));
        assert_eq!(v, vec![1.0, f32::INFINITY, 2.0]);
    }

    #[test]
    fn large_norms_near_f32_max_clip_cleanly() {
        let mut v = vec![f32::MAX; 1000];
        let out = clip_l2(&mut v, 1.0).unwrap();
        assert!(out.clipped);
        assert!(l2_norm(&v) <= 1.0 + CLIP_TOLERANCE);
    }

    proptest! {
        #[test]
        fn clipped_norm_is_within_bound(
            values in prop::collection::vec(-1e6f32..1e6f32, 1..2000),
            bound in 1e-6f64..1e6,
        ) {
            let mut v = values.clone();
            let out = clip_l2(&mut v, bound).unwrap();
            prop_assert!(l2_norm(&v) <= bound * (1.0 + CLIP_TOLERANCE), "{} > {}", l2_norm(&v), bound);
            prop_assert_eq!(out.norm_before, l2_norm(&values));
            prop_assert_eq!(out.clipped, out.norm_before > bound);
            if out.clipped {
                // Direction preserved: every coordinate scaled by the same factor (up to rounding).
                let scale = bound / out.norm_before;
                for (a, b) in values.iter().zip(&v) {
                    let expect = f64::from(*a) * scale;
                    prop_assert!((f64::from(*b) - expect).abs() <= expect.abs() * 2e-7 + 1e-37);
                }
            }
        }

        #[test]
        fn update_within_bound_is_untouched(values in prop::collection::vec(-10f32..10f32, 0..500), extra in 0f64..10.0) {
            let mut v = values.clone();
            let bound = l2_norm(&values) + extra + 1e-30;
            let out = clip_l2(&mut v, bound).unwrap();
            prop_assert!(!out.clipped);
            prop_assert!(values.iter().zip(&v).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
