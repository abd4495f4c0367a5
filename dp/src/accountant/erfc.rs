//! `ln(erfc(x))` far into the tail, which the fractional-order RDP series needs at arguments
//! where `erfc` itself underflows to zero.
//!
//! Kept in its own file because it is a verbatim port of fdlibm, whose constants should be
//! checkable against the source without the accounting code around them.

/// `ln(erfc(x))`, accurate in relative terms far into the tail where `erfc` itself
/// underflows (the fractional-order series evaluates it at arguments in the hundreds).
///
/// A port of FreeBSD's `s_erf.c` (Sun Microsystems, 1993; "Permission to use, copy, modify,
/// and distribute this software is freely granted, provided that this notice is preserved"),
/// as in the `libm` crate, except that for `x ≥ 1.25` the logarithm of its asymptotic form
/// `erfc(x) = exp(−x² − 0.5625 + R(1/x²)/S(1/x²)) / x` is returned directly instead of
/// exponentiating, so there is no underflow at `x ≥ 28`.
pub(super) fn ln_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x >= 1.25 {
        return erfc_tail_log(x);
    }
    if x <= -1.25 {
        // erfc(x) = 2 − erfc(|x|), with erfc(|x|) < 0.08 here.
        return (2.0 - erfc_tail_log(-x).exp()).ln();
    }
    erfc_central(x).ln()
}

/// `erfc(x)` for `|x| < 1.25` (fdlibm, cases 1 and 2).
// Constants verbatim from fdlibm, so they can be checked against the source.
#[allow(clippy::excessive_precision)]
fn erfc_central(x: f64) -> f64 {
    const ERX: f64 = 8.45062911510467529297e-01;
    const PP0: f64 = 1.28379167095512558561e-01;
    const PP1: f64 = -3.25042107247001499370e-01;
    const PP2: f64 = -2.84817495755985104766e-02;
    const PP3: f64 = -5.77027029648944159157e-03;
    const PP4: f64 = -2.37630166566501626084e-05;
    const QQ1: f64 = 3.97917223959155352819e-01;
    const QQ2: f64 = 6.50222499887672944485e-02;
    const QQ3: f64 = 5.08130628187576562776e-03;
    const QQ4: f64 = 1.32494738004321644526e-04;
    const QQ5: f64 = -3.96022827877536812320e-06;
    const PA0: f64 = -2.36211856075265944077e-03;
    const PA1: f64 = 4.14856118683748331666e-01;
    const PA2: f64 = -3.72207876035701323847e-01;
    const PA3: f64 = 3.18346619901161753674e-01;
    const PA4: f64 = -1.10894694282396677476e-01;
    const PA5: f64 = 3.54783043256182359371e-02;
    const PA6: f64 = -2.16637559486879084300e-03;
    const QA1: f64 = 1.06420880400844228286e-01;
    const QA2: f64 = 5.40397917702171048937e-01;
    const QA3: f64 = 7.18286544141962662868e-02;
    const QA4: f64 = 1.26171219808761642112e-01;
    const QA5: f64 = 1.36370839120290507362e-02;
    const QA6: f64 = 1.19844998467991074170e-02;

    let ax = x.abs();
    if ax < 0.84375 {
        if ax < 2f64.powi(-56) {
            return 1.0 - x;
        }
        let z = x * x;
        let r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
        let s = 1.0 + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
        let y = r / s;
        if x < 0.25 {
            return 1.0 - (x + x * y);
        }
        return 0.5 - (x - 0.5 + x * y);
    }
    let s = ax - 1.0;
    let p = PA0 + s * (PA1 + s * (PA2 + s * (PA3 + s * (PA4 + s * (PA5 + s * PA6)))));
    let q = 1.0 + s * (QA1 + s * (QA2 + s * (QA3 + s * (QA4 + s * (QA5 + s * QA6)))));
    if x > 0.0 { 1.0 - ERX - p / q } else { 1.0 + ERX + p / q }
}

/// `ln(erfc(x))` for `x ≥ 1.25` (fdlibm, cases 3 to 5, in log form).
// Constants verbatim from fdlibm, so they can be checked against the source.
#[allow(clippy::excessive_precision)]
fn erfc_tail_log(x: f64) -> f64 {
    const RA: [f64; 8] = [
        -9.86494403484714822705e-03,
        -6.93858572707181764372e-01,
        -1.05586262253232909814e+01,
        -6.23753324503260060396e+01,
        -1.62396669462573470355e+02,
        -1.84605092906711035994e+02,
        -8.12874355063065934246e+01,
        -9.81432934416914548592e+00,
    ];
    const SA: [f64; 9] = [
        1.0,
        1.96512716674392571292e+01,
        1.37657754143519042600e+02,
        4.34565877475229228821e+02,
        6.45387271733267880336e+02,
        4.29008140027567833386e+02,
        1.08635005541779435134e+02,
        6.57024977031928170135e+00,
        -6.04244152148580987438e-02,
    ];
    const RB: [f64; 7] = [
        -9.86494292470009928597e-03,
        -7.99283237680523006574e-01,
        -1.77579549177547519889e+01,
        -1.60636384855821916062e+02,
        -6.37566443368389627722e+02,
        -1.02509513161107724954e+03,
        -4.83519191608651397019e+02,
    ];
    const SB: [f64; 8] = [
        1.0,
        3.03380607434824582924e+01,
        3.25792512996573918826e+02,
        1.53672958608443695994e+03,
        3.19985821950859553908e+03,
        2.55305040643316442583e+03,
        4.74528541206955367215e+02,
        -2.24409524465858183362e+01,
    ];
    fn horner(coefficients: &[f64], s: f64) -> f64 {
        coefficients.iter().rev().fold(0.0, |acc, c| acc * s + c)
    }
    if x == f64::INFINITY {
        return f64::NEG_INFINITY;
    }
    let s = 1.0 / (x * x);
    let correction = if x < 1.0 / 0.35 { horner(&RA, s) / horner(&SA, s) } else { horner(&RB, s) / horner(&SB, s) };
    -x * x - 0.5625 + correction - x.ln()
}
